//! What packing one metadata document costs, and which zstd settings make it
//! cheaper (issue 11, packing, second pass): ns a document and bytes a document
//! for the store's own `Packer` and for variants of its compression context,
//! on the compare data's documents (the best of three passes each).
//!
//! `cargo run --release --example docz_cost -- JSONL [N]` (the compare data file).

use std::sync::Arc;
use std::time::Instant;

use jobq::codec::docz::{Dict, Packer, DICT_BYTES};
use jobq::codec::json::{scan_object, RawField};
use zstd::zstd_safe::{CCtx, CDict, CParameter, DictAttachPref, FrameFormat, ParamSwitch};

/// The names an import keeps out of the document (row fields).
const ROW: &[&str] = &[
    "key",
    "spider",
    "state",
    "priority",
    "project",
    "tags",
    "unique",
    "pending_time",
    "running_time",
    "finished_time",
    "deleted_time",
];

fn doc_of(line: &str) -> Vec<u8> {
    let mut fs: Vec<RawField<'_>> = Vec::new();
    scan_object(line, &mut fs).expect("a JSON object");
    let mut out = vec![b'{'];
    for (i, x) in fs.iter().filter(|x| !ROW.contains(&x.name)).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("\"{}\":", x.name).as_bytes());
        out.extend_from_slice(x.value.as_bytes());
    }
    out.push(b'}');
    out
}

/// Best of three passes over `docs`: ns a document, and stored bytes a document
/// (a document stays text unless packing saves bytes).
fn time(docs: &[Vec<u8>], mut pack: impl FnMut(&[u8]) -> Option<usize>) -> (f64, f64) {
    let mut best = f64::MAX;
    let mut stored = 0usize;
    for _ in 0..3 {
        stored = 0;
        let t = Instant::now();
        for d in docs {
            stored += pack(d).unwrap_or(d.len());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / docs.len() as f64);
    }
    (best, stored as f64 / docs.len() as f64)
}

fn cctx(attach: Option<DictAttachPref>, literals: Option<ParamSwitch>) -> CCtx<'static> {
    let mut c = CCtx::create();
    for p in [
        CParameter::Format(FrameFormat::Magicless),
        CParameter::ContentSizeFlag(false),
        CParameter::ChecksumFlag(false),
        CParameter::DictIdFlag(false),
    ] {
        c.set_parameter(p).unwrap();
    }
    if let Some(a) = attach {
        c.set_parameter(CParameter::ForceAttachDict(a)).unwrap();
    }
    if let Some(l) = literals {
        c.set_parameter(CParameter::LiteralCompressionMode(l)).unwrap();
    }
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: docz_cost JSONL [N]");
    let n: usize = args.get(2).map_or(100_000, |s| s.parse().expect("N"));
    let text = std::fs::read_to_string(path).expect("read the data");
    let docs: Vec<Vec<u8>> = text.lines().take(n).map(doc_of).collect();
    let raw: usize = docs.iter().map(Vec::len).sum();
    println!("{} documents, {:.1} B a document raw", docs.len(), raw as f64 / docs.len() as f64);
    let samples = &docs[..docs.len().min(20_000)];
    let dict = zstd::dict::from_samples(samples, DICT_BYTES).expect("train");

    let mut p = Packer::new(Arc::new(Dict::new(1, &dict).expect("dict"))).expect("packer");
    let (ns, b) = time(&docs, |d| p.pack(d).map(<[u8]>::len));
    println!("| Packer (this build) | {ns:.0} | {b:.1} |");
    if args.get(3).is_some_and(|a| a == "packer") {
        return; // `... JSONL N packer`: the Packer alone (for a profiler)
    }

    let mut out = Vec::with_capacity(1 << 16);
    println!("| variant | ns/doc | B/doc |");
    println!("|---|---:|---:|");
    for level in [-5, -1, 1, 2, 3, 4, 6] {
        let cd = CDict::create(&dict, level);
        for (name, attach, lit) in [
            ("", None, None),
            (", force copy", Some(DictAttachPref::ForceCopy), None),
            (", literals raw", None, Some(ParamSwitch::Disable)),
        ] {
            if attach.is_some() && level != 1 {
                continue;
            }
            // Referenced before every frame (as the first Packer did) ...
            let mut c = cctx(attach, lit);
            let (ns, b) = time(&docs, |d| {
                out.clear();
                c.ref_cdict(&cd).unwrap();
                let k = c.compress2(&mut out, d).unwrap();
                (k + 3 < d.len()).then_some(k)
            });
            println!("| level {level}{name}, ref_cdict each frame | {ns:.0} | {b:.1} |");
            // ... and once.
            let mut c = cctx(attach, lit);
            c.ref_cdict(&cd).unwrap();
            let (ns, b) = time(&docs, |d| {
                out.clear();
                let k = c.compress2(&mut out, d).unwrap();
                (k + 3 < d.len()).then_some(k)
            });
            println!("| level {level}{name}, ref_cdict once | {ns:.0} | {b:.1} |");
        }
    }
}
