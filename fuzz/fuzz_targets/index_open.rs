//! `IndexSegment::open` on arbitrary bytes and on mutated real index images.
//!
//! Modes (first input byte):
//! - raw bytes as an index file (and as a posting list for `posting::validate`);
//!   the first 64 bytes drive the probes and filters, the rest is the file;
//! - raw bytes with their checksums recomputed ("resealed"), so the structural
//!   checks behind the checksums are reached;
//! - a valid image built with `jobq::index::build::build` from arbitrary docs: it
//!   must open, and every doc must be found with its columns and postings; then
//!   bit flips, byte writes, truncation, zeroed ranges and copied ranges, resealed
//!   or not, and opened again.
//!
//! - packed columns (index version 3) alone: arbitrary bytes checked as a column of
//!   `n` values (every value then read, and bounded), and arbitrary values packed,
//!   checked and read back exactly.
//!
//! Whenever `open` succeeds, every accessor, term lookup and posting cursor is
//! exercised (`seek`, `advance`, `fill_block`, `next_block`), and the planner and
//! executor run filters over each section, checked against a naive evaluation.

#![no_main]

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use jobq::fs::MappedBytes;
use jobq::index::packed;
use jobq::index::posting::{self, Posting};
use jobq::index::IndexSegment;
use jobq_fuzz::gen::Word;
use jobq_fuzz::index::{arb_filter, build, check_against_docs, check_cursor, exercise, posting_docs, ArbDoc};
use jobq_fuzz::reseal;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Mutation {
    Flip { at: u32, bit: u8 },
    Set { at: u32, val: u8 },
    Add { at: u32, val: u8 },
    U32 { at: u32, val: u32 },
    U64 { at: u32, val: u64 },
    Truncate { len: u32 },
    Zero { at: u32, len: u16 },
    Copy { from: u32, to: u32, len: u16 },
}

fn apply(b: &mut Vec<u8>, m: &Mutation) {
    if b.is_empty() {
        return;
    }
    let at = |x: u32| x as usize % b.len();
    match *m {
        Mutation::Flip { at: a, bit } => {
            let i = at(a);
            b[i] ^= 1 << (bit % 8);
        }
        Mutation::Set { at: a, val } => {
            let i = at(a);
            b[i] = val;
        }
        Mutation::Add { at: a, val } => {
            let i = at(a);
            b[i] = b[i].wrapping_add(val);
        }
        Mutation::U32 { at: a, val } => {
            let i = at(a);
            let n = (b.len() - i).min(4);
            b[i..i + n].copy_from_slice(&val.to_le_bytes()[..n]);
        }
        Mutation::U64 { at: a, val } => {
            let i = at(a);
            let n = (b.len() - i).min(8);
            b[i..i + n].copy_from_slice(&val.to_le_bytes()[..n]);
        }
        Mutation::Truncate { len } => {
            let l = at(len);
            b.truncate(l);
        }
        Mutation::Zero { at: a, len } => {
            let i = at(a);
            let e = (i + usize::from(len)).min(b.len());
            b[i..e].fill(0);
        }
        Mutation::Copy { from, to, len } => {
            let (f, t) = (at(from), at(to));
            let n = usize::from(len).min(b.len() - f).min(b.len() - t);
            b.copy_within(f..f + n, t);
        }
    }
}

fn probes(u: &mut Unstructured<'_>) -> Vec<u32> {
    let n = u.int_in_range(1..=16).unwrap_or(1);
    (0..n).map(|i| u.arbitrary::<u32>().unwrap_or(i * 7919)).collect()
}

fn open(bytes: Vec<u8>) -> jobq::Result<IndexSegment> {
    IndexSegment::open(MappedBytes::from_vec(bytes), Path::new("gen-1/idx-0000000000000001-0000000000000001.jqi"), false)
}

/// The first `RAW_HEAD` bytes drive probes and filters; the rest is the file.
const RAW_HEAD: usize = 64;

fn raw(data: &[u8], resealed: bool) {
    let (head, file) = data.split_at(data.len().min(RAW_HEAD));
    let mut u = Unstructured::new(head);
    let probes = probes(&mut u);
    let filters: Vec<_> = (0..2).filter_map(|_| arb_filter(&mut u).ok()).collect();
    let mut bytes = file.to_vec();
    // The same bytes as a posting list.
    let max_doc = probes[0] % 200_000;
    if let Ok(len) = posting::validate(&bytes, max_doc) {
        assert!(len <= bytes.len());
        let p = Posting::new(&bytes);
        let docs = posting_docs(&p, max_doc);
        check_cursor(&p, &docs, &probes);
    }
    if resealed {
        reseal::index(&mut bytes);
    }
    if let Ok(seg) = open(bytes) {
        exercise(&seg, &probes, &filters);
    }
}

#[derive(Debug)]
struct BuiltInput {
    docs: Vec<ArbDoc>,
    bulk: Option<u16>,
    catalog: Vec<(u32, u32, u32, Word)>,
    meta: (u64, u64, u64, u32, u32),
    mutations: Vec<Mutation>,
    reseal: bool,
}

fn some<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>, max: usize) -> arbitrary::Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| T::arbitrary(u)).collect()
}

impl<'a> Arbitrary<'a> for BuiltInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(BuiltInput {
            reseal: u.arbitrary()?,
            bulk: u.arbitrary()?,
            meta: u.arbitrary()?,
            mutations: some(u, 8)?,
            catalog: some(u, 16)?,
            docs: some(u, 64)?,
        })
    }
}

fn built(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(input) = BuiltInput::arbitrary(&mut u) else { return };
    // Thousands of docs (bitmap containers) for one input in 16: they are slow.
    let bulk = input.bulk.filter(|b| b % 16 == 0).map_or(0, |b| (b / 16) % 1100);
    let probes = probes(&mut u);
    let filters: Vec<_> = (0..3).filter_map(|_| arb_filter(&mut u).ok()).collect();
    let b = build(&input.docs, bulk, &input.catalog, input.meta);
    let seg = open(b.bytes.clone()).unwrap_or_else(|e| panic!("a freshly built index does not open: {e}"));
    check_against_docs(&seg, &b);
    exercise(&seg, &probes, &filters);
    drop(seg);
    if input.mutations.is_empty() {
        return;
    }
    let mut bytes = b.bytes;
    for m in &input.mutations {
        apply(&mut bytes, m);
    }
    if input.reseal {
        reseal::index(&mut bytes);
    }
    if let Ok(seg) = open(bytes) {
        exercise(&seg, &probes, &filters);
    }
}

/// A packed column decoder on arbitrary bytes (the first 4 give `n` and where the
/// column starts), then arbitrary values packed and read back.
fn packed_column(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<4>() else { return };
    let n = u32::from(u16::from_le_bytes([head[0], head[1]])) % 2000;
    let col = usize::from(head[2]) % (rest.len() + 1);
    if let Ok(end) = packed::check(rest, col, n) {
        assert!(end <= rest.len());
        let vals: Vec<u64> = (0..n).map(|i| packed::get(rest, col, i)).collect();
        let limit = u64::from(head[3]) << (head[3] % 57);
        match packed::check_below(rest, col, n, limit) {
            Ok(()) => assert!(vals.iter().all(|v| *v < limit), "check_below passed a value >= {limit}"),
            Err(at) => assert!(at >= col && at < end, "check_below named offset {at} outside the column"),
        }
    }
    let vals: Vec<u64> = rest.chunks(8).map(|c| c.iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b))).collect();
    let mut out = vec![0xAA; col % 8];
    packed::encode(&vals, &mut out);
    let end = packed::check(&out, col % 8, vals.len() as u32).expect("a packed column checks");
    assert_eq!(end, out.len());
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(packed::get(&out, col % 8, i as u32), *v, "value {i}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 6 {
        0 => raw(rest, false),
        1 => raw(rest, true),
        2 => packed_column(rest),
        _ => built(rest),
    }
});
