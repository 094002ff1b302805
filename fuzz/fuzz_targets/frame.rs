//! Log frames: arbitrary bytes as a sequence of frames, and structured frames
//! through an encode → decode round trip.
//!
//! Modes (first input byte):
//! - bytes: a stream of frames as recovery reads it (`decode_header`, then
//!   `verify`, then the payload decoder of the frame's kind; after a bad frame the
//!   next byte offset is tried, as recovery's rescan does). A frame that verifies
//!   must re-encode to the same bytes, and its payload's decoded value must
//!   re-encode to the same payload;
//! - resealed bytes: the same, with each frame's and each record's checksum
//!   recomputed first, so that the payload decoders see arbitrary payloads;
//! - mark slots: arbitrary bytes as a durable-mark slot of segment 1, generation 1
//!   (and with its checksum recomputed): a slot that decodes re-encodes to the
//!   same bytes, and every damaged byte of a valid slot is refused;
//! - (every mode) a Raft entry frame's payload decodes only when valid and
//!   re-encodes to itself;
//! - structured: arbitrary frames (any kind, flags, sequence numbers, jobs,
//!   spiders, catalogs, commits, including invalid ids) are encoded back to back
//!   and decoded again: the header decodes exactly when its fields are valid, and
//!   the payload decodes exactly when its values are valid, to the values encoded.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use jobq::codec::frame::{self, FrameKind, FLAG_RELOCATED, FLAG_TXN, HEADER_LEN};
use jobq::codec::record;
use jobq_fuzz::gen::{ArbJob, ArbSpider};
use jobq_fuzz::{check_decoded_record, check_error_offset, reseal};
use libfuzzer_sys::fuzz_target;

/// Decode a payload by kind; check what decodes. Returns whether it decoded.
fn payload(kind: FrameKind, count: u32, p: &[u8]) -> bool {
    match kind {
        FrameKind::Jobs => match record::decode_jobs(p, count) {
            Ok(views) => {
                assert_eq!(views.len(), count as usize, "decode_jobs returned another number of records");
                for (i, (off, view)) in views.iter().enumerate() {
                    let end = views.get(i + 1).map_or(p.len(), |n| n.0);
                    assert!(*off < end && end <= p.len(), "record offsets out of order");
                    check_decoded_record(&p[*off..end], view, end - off);
                }
                true
            }
            Err(e) => {
                check_error_offset(&e, p.len());
                false
            }
        },
        FrameKind::Spider => match record::decode_spider(p) {
            Ok(s) => {
                assert!(s.project != 0 && s.spider != 0 && !s.name.is_empty() && s.next_job == 0);
                let mut again = Vec::new();
                record::encode_spider(s.project, s.spider, &s.name, &mut again);
                assert_eq!(again, p, "spider payload does not re-encode to itself");
                true
            }
            Err(e) => {
                check_error_offset(&e, p.len());
                false
            }
        },
        FrameKind::Catalog => match record::decode_catalog(p) {
            Ok(c) => {
                assert!(c.iter().all(|s| s.project != 0 && s.spider != 0 && s.next_job != 0 && !s.name.is_empty()));
                let mut again = Vec::new();
                record::encode_catalog(&c, &mut again);
                assert_eq!(again, p, "catalog payload does not re-encode to itself");
                true
            }
            Err(e) => {
                check_error_offset(&e, p.len());
                false
            }
        },
        // A dictionary: any bytes zstd takes (raw content included) round-trip.
        FrameKind::Dict => match jobq::codec::docz::decode_dict(p) {
            Ok(d) => {
                let mut again = Vec::new();
                jobq::codec::docz::encode_dict(&d, &mut again);
                assert_eq!(again, p, "dictionary payload does not re-encode to itself");
                true
            }
            Err(e) => {
                check_error_offset(&e, p.len());
                false
            }
        },
        // A Raft entry frame (format 8): a head that decodes re-encodes to itself.
        FrameKind::Entry => match jobq::codec::entry::decode(p) {
            Ok((head, body)) => {
                let mut again = Vec::new();
                jobq::codec::entry::encode(&head, body, &mut again);
                assert_eq!(again, p, "entry payload does not re-encode to itself");
                assert!(head.committed.is_none_or(|c| c < head.index));
                true
            }
            Err(e) => {
                check_error_offset(&e, p.len());
                false
            }
        },
        FrameKind::Commit => match record::decode_commit(p) {
            Ok(seq) => {
                let mut again = Vec::new();
                record::encode_commit(seq, &mut again);
                assert_eq!(again, p);
                true
            }
            Err(e) => {
                check_error_offset(&e, p.len());
                false
            }
        },
    }
}

/// Largest count handed to `decode_jobs` for a frame that did not verify (a
/// verified frame gets its header's count, whatever it is).
const UNVERIFIED_COUNT: u32 = 64;

fn stream(data: &[u8], resealed: bool) {
    let mut buf = data.to_vec();
    let mut pos = 0;
    let mut steps = 0;
    while pos + HEADER_LEN <= buf.len() && steps < 256 {
        steps += 1;
        if resealed {
            let len = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap()) as usize;
            let end = (pos + HEADER_LEN).saturating_add(len).min(buf.len());
            if buf[pos + 8] == FrameKind::Jobs as u8 {
                reseal::records(&mut buf[pos + HEADER_LEN..end]);
            }
            reseal::frame(&mut buf[pos..]);
        }
        let h: [u8; HEADER_LEN] = buf[pos..pos + HEADER_LEN].try_into().unwrap();
        let Ok(hd) = frame::decode_header(&h) else {
            pos += 1;
            continue;
        };
        // What decode_header promises.
        assert!(hd.count >= 1 && hd.first_seq >= 1 && hd.len <= frame::MAX_PAYLOAD);
        assert!(hd.flags & !(FLAG_TXN | FLAG_RELOCATED) == 0 && (hd.kind == FrameKind::Jobs || hd.count == 1));
        assert!(hd.first_seq.checked_add(u64::from(hd.count)).is_some());
        assert_eq!(hd.last_seq(), hd.first_seq + u64::from(hd.count) - 1);
        assert_eq!(hd.frame_len(), HEADER_LEN as u64 + u64::from(hd.len));
        let end = pos as u64 + hd.frame_len();
        if end > buf.len() as u64 {
            // Runs past the end: verify must refuse any shorter payload.
            assert!(!frame::verify(&h, &hd, &buf[pos + HEADER_LEN..]), "verify accepted a short payload");
            pos += 1;
            continue;
        }
        let end = end as usize;
        let p = &buf[pos + HEADER_LEN..end];
        if frame::verify(&h, &hd, p) {
            // A verified frame re-encodes to exactly its bytes.
            let mut again = Vec::new();
            frame::encode(&mut again, hd.kind, hd.flags, hd.first_seq, hd.count, hd.durable_seq, p);
            assert_eq!(again, &buf[pos..end], "a verified frame does not re-encode to itself");
            payload(hd.kind, hd.count, p);
            pos = end;
        } else {
            assert!(!resealed, "a resealed frame does not verify");
            // The decoders must not panic on payloads whose checksum failed either.
            payload(hd.kind, hd.count.min(UNVERIFIED_COUNT), p);
            pos += 1;
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Body {
    Jobs(Vec<ArbJob>),
    Spider(ArbSpider),
    Catalog(Vec<ArbSpider>),
    Commit(u64),
}

#[derive(Debug, Arbitrary)]
struct FrameSpec {
    flags: u8,
    first_seq: u64,
    durable_seq: u64,
    /// Extra sequence numbers claimed by a jobs frame (a count that disagrees with its records).
    extra: Option<u8>,
    body: Body,
}

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(n) = u.int_in_range(1..=16) else { return };
    let Ok(specs) = (0..n).map(|_| FrameSpec::arbitrary(&mut u)).collect::<arbitrary::Result<Vec<_>>>() else { return };
    let mut log = Vec::new();
    let mut expect = Vec::new();
    for s in &specs {
        let mut p = Vec::new();
        let (kind, count, valid) = match &s.body {
            Body::Jobs(jobs) => {
                let jobs = &jobs[..jobs.len().min(32)];
                for j in jobs {
                    record::encode_job(&j.to_job(), record::Prev::Created, &mut p);
                }
                let n = jobs.len() as u32;
                let count = (n + u32::from(s.extra.unwrap_or(0))).max(1);
                (FrameKind::Jobs, count, n >= 1 && count == n && jobs.iter().all(ArbJob::valid))
            }
            Body::Spider(sp) => {
                record::encode_spider(sp.project, sp.spider, &sp.name.0, &mut p);
                (FrameKind::Spider, 1, sp.valid_as_spider())
            }
            Body::Catalog(c) => {
                let e: Vec<_> = c.iter().map(ArbSpider::entry).collect();
                record::encode_catalog(&e, &mut p);
                (FrameKind::Catalog, 1, c.iter().all(ArbSpider::valid_in_catalog))
            }
            Body::Commit(seq) => {
                record::encode_commit(*seq, &mut p);
                (FrameKind::Commit, 1, true)
            }
        };
        let start = log.len();
        frame::encode(&mut log, kind, s.flags, s.first_seq, count, s.durable_seq, &p);
        assert_eq!(log.len() - start, HEADER_LEN + p.len());
        let header_ok = s.flags & !(FLAG_TXN | FLAG_RELOCATED) == 0
            && s.first_seq != 0
            && s.first_seq.checked_add(u64::from(count)).is_some();
        expect.push((start, kind, count, header_ok, valid));
    }
    for (i, (start, kind, count, header_ok, valid)) in expect.into_iter().enumerate() {
        let s = &specs[i];
        let h: [u8; HEADER_LEN] = log[start..start + HEADER_LEN].try_into().unwrap();
        let got = frame::decode_header(&h);
        assert_eq!(got.is_ok(), header_ok, "decode_header of {s:?}: {got:?}");
        let Ok(hd) = got else { continue };
        assert_eq!(
            (hd.kind, hd.flags, hd.count, hd.first_seq, hd.durable_seq),
            (kind, s.flags, count, s.first_seq, s.durable_seq)
        );
        let p = &log[start + HEADER_LEN..start + HEADER_LEN + hd.len as usize];
        assert!(frame::verify(&h, &hd, p), "an encoded frame does not verify");
        // Every single bit flip of the frame is noticed.
        if i == 0 && HEADER_LEN + p.len() <= 256 {
            let end = start + HEADER_LEN + p.len();
            let mut bad = log[start..end].to_vec();
            for bit in 0..bad.len() * 8 {
                bad[bit / 8] ^= 1 << (bit % 8);
                let bh: [u8; HEADER_LEN] = bad[..HEADER_LEN].try_into().unwrap();
                let ok = frame::decode_header(&bh).is_ok_and(|d| frame::verify(&bh, &d, &bad[HEADER_LEN..]));
                assert!(!ok, "flipping bit {bit} of a frame went unnoticed");
                bad[bit / 8] ^= 1 << (bit % 8);
            }
        }
        let decoded = payload(kind, count, p);
        assert_eq!(decoded, valid, "payload of {s:?} decoded: {decoded}, expected {valid}");
        if !decoded {
            continue;
        }
        match &s.body {
            Body::Jobs(jobs) => {
                let views = record::decode_jobs(p, count).expect("decoded above");
                for ((_, v), j) in views.iter().zip(jobs) {
                    assert_eq!(v.to_job(), j.to_job(), "job round trip");
                }
            }
            Body::Spider(sp) => {
                let e = record::decode_spider(p).expect("decoded above");
                assert_eq!(e, jobq::codec::record::SpiderEntry { next_job: 0, ..sp.entry() });
            }
            Body::Catalog(c) => {
                let got = record::decode_catalog(p).expect("decoded above");
                assert_eq!(got, c.iter().map(ArbSpider::entry).collect::<Vec<_>>());
            }
            Body::Commit(seq) => assert_eq!(record::decode_commit(p), Ok(*seq)),
        }
    }
}

/// A durable-mark slot: what decodes is exactly what encodes.
fn mark_slot(b: &[u8]) {
    use jobq::log::mark;
    let mut slot = [0u8; mark::SLOT_LEN];
    let n = b.len().min(mark::SLOT_LEN);
    slot[..n].copy_from_slice(&b[..n]);
    if b.len() > mark::SLOT_LEN && b[mark::SLOT_LEN] & 1 == 1 {
        let crc = frame::checksum(&[&slot[0..52]]);
        slot[52..56].copy_from_slice(&crc.to_le_bytes());
    }
    if let Some(m) = mark::decode(&slot, 1, 1) {
        assert!(m.epoch > 0, "a mark of epoch 0 decoded");
        assert_eq!(mark::encode(1, 1, &m), slot, "a mark slot does not re-encode to itself");
        for i in 0..mark::SLOT_LEN {
            let mut bad = slot;
            bad[i] ^= 0x80;
            assert_ne!(mark::decode(&bad, 1, 1), Some(m), "byte {i} of a mark slot changed unnoticed");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => stream(rest, false),
        1 => stream(rest, true),
        2 => mark_slot(rest),
        _ => structured(rest),
    }
});
