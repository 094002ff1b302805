//! How well zstd with a trained dictionary packs the compare data's metadata
//! documents (format-spec: issue 11, the disk goal): bytes a document and
//! ns a document to compress and decompress, per level and dictionary size.
//!
//! `cargo run --release --example docz -- JSONL [N]` (the compare data file).

use std::time::Instant;

use jobq::codec::json::{scan_object, RawField};

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

fn doc_of(line: &str, out: &mut Vec<u8>) {
    let mut fs: Vec<RawField<'_>> = Vec::new();
    scan_object(line, &mut fs).expect("a JSON object");
    out.clear();
    out.push(b'{');
    let mut first = true;
    for x in fs.iter().filter(|x| !ROW.contains(&x.name)) {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(x.name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(x.value.as_bytes());
    }
    out.push(b'}');
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: docz JSONL [N]");
    let n: usize = args.get(2).map_or(200_000, |s| s.parse().expect("N"));
    let text = std::fs::read_to_string(path).expect("read the data");
    let mut docs: Vec<Vec<u8>> = Vec::with_capacity(n);
    for line in text.lines().take(n) {
        let mut d = Vec::new();
        doc_of(line, &mut d);
        docs.push(d);
    }
    let raw: usize = docs.iter().map(Vec::len).sum();
    println!("{} documents, {:.1} B a document raw", docs.len(), raw as f64 / docs.len() as f64);
    // Train on the first 20,000 (import would sample its input); measure on all.
    let samples = &docs[..docs.len().min(20_000)];
    println!("| dict KiB | level | train ms | B/doc | stored raw | compress ns/doc | decompress ns/doc |");
    println!("|---|---|---|---|---|---|---|");
    for kib in [16usize, 32, 64, 110] {
        let t = Instant::now();
        let dict = zstd::dict::from_samples(samples, kib * 1024).expect("train");
        let train_ms = t.elapsed().as_millis();
        for level in [1, 2, 3] {
            let edict = zstd::dict::EncoderDictionary::copy(&dict, level);
            let mut c = zstd::bulk::Compressor::with_prepared_dictionary(&edict).expect("compressor");
            c.include_checksum(false).unwrap();
            c.include_contentsize(false).unwrap();
            c.include_dictid(false).unwrap();
            c.include_magicbytes(false).unwrap();
            let mut packed: Vec<Option<Vec<u8>>> = Vec::with_capacity(docs.len());
            let t = Instant::now();
            for d in &docs {
                let z = c.compress(d).expect("compress");
                packed.push((z.len() < d.len()).then_some(z));
            }
            let cns = t.elapsed().as_nanos() as f64 / docs.len() as f64;
            let stored: usize = packed.iter().zip(&docs).map(|(p, d)| p.as_ref().map_or(d.len(), Vec::len)).sum();
            let raw_kept = packed.iter().filter(|p| p.is_none()).count();
            let ddict = zstd::dict::DecoderDictionary::copy(&dict);
            let mut dctx = zstd::bulk::Decompressor::with_prepared_dictionary(&ddict).expect("decompressor");
            dctx.set_parameter(zstd::zstd_safe::DParameter::Format(zstd::zstd_safe::FrameFormat::Magicless)).unwrap();
            let mut out = vec![0u8; 64 * 1024];
            let t = Instant::now();
            let mut total = 0usize;
            for (p, d) in packed.iter().zip(&docs) {
                if let Some(p) = p {
                    let k = dctx.decompress_to_buffer(p, &mut out).expect("decompress");
                    assert_eq!(&out[..k], &d[..]);
                    total += k;
                }
            }
            let dns = t.elapsed().as_nanos() as f64 / docs.len() as f64;
            assert!(total > 0);
            println!(
                "| {kib} | {level} | {train_ms} | {:.1} | {raw_kept} | {cns:.0} | {dns:.0} |",
                stored as f64 / docs.len() as f64
            );
        }
    }
}
