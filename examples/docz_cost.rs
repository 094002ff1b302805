//! What packing one metadata document costs, and which zstd settings make it
//! cheaper (issue 11, packing, second pass): ns a document and bytes a document
//! for the store's own `Packer` and for variants of its compression context,
//! on the compare data's documents (the best pass of 10,000 documents).
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

/// Best of many passes over slices of `docs` (the minimum resists a busy
/// machine): ns a document; and stored bytes a document over all of `docs` (a
/// document stays text unless packing saves bytes).
fn time(docs: &[Vec<u8>], mut pack: impl FnMut(&[u8]) -> Option<usize>) -> (f64, f64) {
    let stored: usize = docs.iter().map(|d| pack(d).unwrap_or(d.len())).sum();
    let mut best = f64::MAX;
    for _ in 0..3 {
        for part in docs.chunks(10_000) {
            let t = Instant::now();
            for d in part {
                std::hint::black_box(pack(d));
            }
            best = best.min(t.elapsed().as_nanos() as f64 / part.len() as f64);
        }
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

    // `... JSONL N K`: variant K alone, ten passes, no timing: for `perf stat`
    // (task-clock and instructions count this process's CPU only; K = none
    // measures the rest: reading, training).
    let only = args.get(3).cloned();
    let passes = if only.is_some() { 10 } else { 1 };
    let run = |label: &str, pack: &mut dyn FnMut(&[u8]) -> Option<usize>| match &only {
        None => {
            let (ns, b) = time(&docs, pack);
            println!("| {label} | {ns:.0} | {b:.1} |");
        }
        Some(k) if k == label => {
            for _ in 0..passes {
                for d in &docs {
                    std::hint::black_box(pack(d));
                }
            }
        }
        Some(_) => {}
    };
    println!("| variant | ns/doc | B/doc |");
    println!("|---|---:|---:|");
    let mut p = Packer::new(Arc::new(Dict::new(1, &dict).expect("dict"))).expect("packer");
    run("Packer", &mut |d| p.pack(d).map(<[u8]>::len));
    let mut out = Vec::with_capacity(1 << 16);
    for level in [-1, 1, 2, 3, 4] {
        let cd = CDict::create(&dict, level);
        for (name, attach, lit) in [
            ("", None, None),
            (" copy", Some(DictAttachPref::ForceCopy), None),
            (" rawlit", None, Some(ParamSwitch::Disable)),
        ] {
            if (attach.is_some() || lit.is_some()) && level != 1 && level != 3 {
                continue;
            }
            // Referenced before every frame (as the first Packer did) ...
            let mut c = cctx(attach, lit);
            run(&format!("L{level}{name} each"), &mut |d| {
                out.clear();
                c.ref_cdict(&cd).unwrap();
                let k = c.compress2(&mut out, d).unwrap();
                (k + 3 < d.len()).then_some(k)
            });
            // ... and once.
            let mut c = cctx(attach, lit);
            c.ref_cdict(&cd).unwrap();
            run(&format!("L{level}{name} once"), &mut |d| {
                out.clear();
                let k = c.compress2(&mut out, d).unwrap();
                (k + 3 < d.len()).then_some(k)
            });
        }
    }
    groups(&docs, &dict);
}

/// Documents packed in groups of `g` (one frame a group): ns and bytes a
/// document to pack, and ns to unpack a group (what reading one document of it
/// would cost), as a format with grouped documents would pay them.
fn groups(docs: &[Vec<u8>], dict: &[u8]) {
    println!();
    println!("| group | pack ns/doc | B/doc | unpack ns/group |");
    println!("|---:|---:|---:|---:|");
    let cd = CDict::create(dict, 3);
    let dd = zstd::zstd_safe::DDict::create(dict);
    for g in [1usize, 4, 8, 16, 32, 64] {
        let mut c = cctx(None, None);
        c.ref_cdict(&cd).unwrap();
        let mut d = zstd::zstd_safe::DCtx::create();
        d.set_parameter(zstd::zstd_safe::DParameter::Format(FrameFormat::Magicless)).unwrap();
        let mut joined = Vec::new();
        let mut out = Vec::with_capacity(1 << 20);
        let mut back: Vec<u8> = Vec::with_capacity(1 << 20);
        let (mut pack_best, mut unpack_best, mut bytes) = (f64::MAX, f64::MAX, 0usize);
        for pass in 0..3 {
            for part in docs.chunks(10_000) {
                let t = Instant::now();
                let mut frames = Vec::new();
                for grp in part.chunks(g) {
                    joined.clear();
                    for x in grp {
                        joined.extend_from_slice(x);
                    }
                    out.clear();
                    let k = c.compress2(&mut out, &joined).unwrap();
                    if pass == 0 {
                        bytes += k;
                    }
                    frames.push((out[..k].to_vec(), joined.len()));
                }
                pack_best = pack_best.min(t.elapsed().as_nanos() as f64 / part.len() as f64);
                let t = Instant::now();
                for (f, _) in &frames {
                    back.clear();
                    std::hint::black_box(d.decompress_using_ddict(&mut back, f, &dd).unwrap());
                }
                unpack_best = unpack_best.min(t.elapsed().as_nanos() as f64 / frames.len() as f64);
            }
        }
        println!("| {g} | {pack_best:.0} | {:.1} | {unpack_best:.0} |", bytes as f64 / docs.len() as f64);
    }
}
