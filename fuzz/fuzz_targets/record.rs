//! Job records: `decode_job` / `decode_jobs` on arbitrary bytes (as they are, and
//! with each record's checksum recomputed so the body decoder is reached), and the
//! round trip of an arbitrary job through `encode_job`.
//!
//! Modes (first input byte):
//! - bytes: `decode_job` (and the row decoders, codec/row.rs and store/plain.rs) on the bytes, `decode_jobs` with a count from the input;
//!   whatever decodes re-encodes to the same record (up to the time slots whose
//!   mask bit is clear, which the decoder does not pin down);
//! - resealed bytes: the same after fixing every record's checksum;
//! - structured: an arbitrary job (any ids, state, times, tags, unique, metadata)
//!   is encoded, compact or wide (drawn per job), and decodes exactly when valid,
//!   to the same job; every truncation of it is refused.
//!
//! Records are compact (format 6) or wide (formats 1 to 5): the bytes modes reach
//! both, since bit 31 of a record's first word chooses the layout. Compact records
//! may be packed (format 7): the structured mode packs a job's document with a
//! fixed dictionary ([`jobq_fuzz::FUZZ_DICT`]) when that saves bytes, and every
//! mode unpacks what decodes with it.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use jobq::codec::record;
use jobq_fuzz::gen::ArbJob;
use jobq_fuzz::{check_decoded_record, check_error_offset, reseal};
use libfuzzer_sys::fuzz_target;

fn bytes(data: &[u8], resealed: bool) {
    let Some((count, rest)) = data.split_first_chunk::<4>() else { return };
    let count = u32::from_le_bytes(*count);
    let mut buf = rest.to_vec();
    if resealed {
        reseal::records(&mut buf);
    }
    let checked = match record::decode_job(&buf) {
        Ok((view, used)) => {
            check_decoded_record(&buf, &view, used);
            true
        }
        Err(e) => {
            check_error_offset(&e, buf.len());
            false
        }
    };
    // The row decoder never panics nor reads past the bytes, whatever they are.
    let row = jobq::codec::row::decode_row(&buf);
    match &row {
        Ok(row) => assert!(row.tags().map(<[u8]>::len).sum::<usize>() <= buf.len()),
        Err(e) => check_error_offset(e, buf.len()),
    }
    // Nor does a page's one-pass row (store/plain.rs); a row it writes of a
    // record checked whole (as every record it reads is) is JSON with the row
    // decoder's key, state and ts.
    let names: Vec<Option<Box<[u8]>>> =
        vec![None, Some(b"\"s\"".to_vec().into()), Some(b"\"\\u00e9\"".to_vec().into())];
    if let Some(line) = jobq::store::plain::one_pass_row(1, &names, &buf, 1 << 40) {
        let row = row.expect("a one-pass row is a row");
        assert_eq!(line.last(), Some(&b'\n'));
        if checked {
            let v: serde_json::Value = serde_json::from_slice(&line[..line.len() - 1]).expect("a one-pass row is JSON");
            assert_eq!(v["key"].as_str(), Some(row.key.to_string().as_str()));
            assert_eq!(v["state"].as_str(), Some(row.state.as_str()));
            assert_eq!(v["ts"].as_u64(), Some(row.ts()));
        }
    }
    // Counts as a frame header may carry them (a verified frame's count is not
    // bounded by its payload's size).
    let count = match count >> 30 {
        0 => count % 8,
        1 => count % 256,
        _ => count,
    };
    match record::decode_jobs(&buf, count) {
        Ok(views) => {
            assert_eq!(views.len(), count as usize);
            for (i, (off, view)) in views.iter().enumerate() {
                let end = views.get(i + 1).map_or(buf.len(), |n| n.0);
                check_decoded_record(&buf[*off..end], view, end - off);
            }
        }
        Err(e) => check_error_offset(&e, buf.len()),
    }
}

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(n) = u.int_in_range(1..=16) else { return };
    let Ok(jobs) = (0..n).map(|_| ArbJob::arbitrary(&mut u)).collect::<arbitrary::Result<Vec<_>>>() else { return };
    let jobs = &jobs[..];
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    let mut packer = jobq::codec::docz::Packer::new(jobq_fuzz::dicts().get(1).expect("dictionary 1"));
    for j in jobs {
        let layout = u.int_in_range(0..=2u8).unwrap_or(0);
        if layout == 2 && j.valid() {
            record::encode_job_packed(&j.to_job(), record::Prev::Created, &mut buf, packer.as_mut(), None);
        } else if layout != 1 {
            record::encode_job(&j.to_job(), record::Prev::Created, &mut buf);
        } else {
            record::encode_job_wide(&j.to_job(), record::Prev::Created, &mut buf);
        }
        ends.push(buf.len());
    }
    let mut start = 0;
    for (j, end) in jobs.iter().zip(&ends) {
        let one = &buf[start..*end];
        match record::decode_job(one) {
            Ok((mut view, used)) => {
                assert!(j.valid(), "an invalid job decoded: {j:?}");
                assert_eq!(used, one.len());
                check_decoded_record(one, &view, used);
                view.unpack(jobq_fuzz::dicts()).expect("a packed document of ours unpacks");
                assert_eq!(view.to_job(), j.to_job(), "job round trip");
                assert_eq!(view.ts(), j.to_job().ts());
            }
            Err(e) => {
                assert!(!j.valid(), "a valid job did not decode: {e:?}\n{j:?}");
                check_error_offset(&e, one.len());
            }
        }
        // A record cut anywhere is refused.
        let cut = u.int_in_range(0..=one.len().saturating_sub(1)).unwrap_or(0);
        assert!(record::decode_job(&one[..cut]).is_err(), "a record cut at {cut} decoded");
        start = *end;
    }
    let all = record::decode_jobs(&buf, jobs.len() as u32);
    assert_eq!(all.is_ok(), jobs.iter().all(ArbJob::valid), "decode_jobs of all: {all:?}");
    if let Ok(all) = all {
        for ((_, mut v), j) in all.into_iter().zip(jobs) {
            v.unpack(jobq_fuzz::dicts()).expect("a packed document of ours unpacks");
            assert_eq!(v.to_job(), j.to_job());
        }
        if !jobs.is_empty() {
            // One record more or fewer than the payload holds is refused.
            assert!(record::decode_jobs(&buf, jobs.len() as u32 + 1).is_err());
            assert!(record::decode_jobs(&buf, jobs.len() as u32 - 1).is_err());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => bytes(rest, false),
        1 => bytes(rest, true),
        _ => structured(rest),
    }
});
