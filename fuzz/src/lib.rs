//! Helpers shared by the jobq fuzz targets: structured inputs (via `arbitrary`),
//! "resealing" (recomputing the checksums of mutated bytes so that the structural
//! checks behind them are reached), and the checks run on whatever decodes.
//!
//! Everything here panics on a broken property: a panic is what the fuzzer reports.

pub mod gen;
pub mod index;
pub mod reseal;

use std::sync::{Arc, OnceLock};

use jobq::codec::docz::{Dict, Dicts};
use jobq::codec::record::{self, JobView, RECORD_PREFIX};
use jobq::codec::DecodeError;

/// The fixed dictionary (id 1, raw content) packed records are fuzzed with.
pub const FUZZ_DICT: &[u8] =
    br#"{"units":1,"version":"1.4.27-py3","spider_args":{"url":"https://example.com/","pages":10},"scheduled_by":"user@example.org","close_reason":"finished"}"#;

/// The dictionaries packed records are unpacked with: [`FUZZ_DICT`] as id 1.
pub fn dicts() -> &'static Dicts {
    static D: OnceLock<Dicts> = OnceLock::new();
    D.get_or_init(|| {
        let d = Dicts::default();
        d.add(Arc::new(Dict::new(1, FUZZ_DICT).expect("the fuzz dictionary loads")));
        d
    })
}

/// Fixed offset, within a wide record (prefix included), of `times[0]`.
pub const TIMES_AT: usize = RECORD_PREFIX + 32;
/// Offset of the times mask within a wide record (prefix included).
pub const MASK_AT: usize = RECORD_PREFIX + 13;

/// Check a record that decoded: it re-encodes, in its own layout, to a record that
/// decodes to the same view; a compact one to the same bytes (varints in their
/// shortest form pin every byte), a wide one to bytes that differ at most in the
/// time slots whose mask bit is clear (the only bytes its decoder does not pin
/// down). Either layout also re-encodes as the other to the same view.
pub fn check_decoded_record(orig: &[u8], view: &JobView<'_>, used: usize) {
    assert!(used >= RECORD_PREFIX && used <= orig.len(), "decode_job used {used} of {} bytes", orig.len());
    let orig = &orig[..used];
    // The listing row decoder (no checksum, no UTF-8: for records checked whole
    // before) reads the same fields from every record that decodes whole.
    let row = jobq::codec::row::decode_row(orig).unwrap_or_else(|e| panic!("a whole record is refused as a row: {e:?}"));
    assert_eq!((row.key, row.state, row.times, row.ts()), (view.key, view.state, view.times, view.ts()));
    assert!(row.tags().eq(view.tags.iter().map(|t| t.as_bytes())), "row tags differ");
    let (checked, _) = record::decode_checked_job(orig).expect("a whole record decodes without its checksum");
    assert_eq!(&checked, view);
    if view.is_packed() {
        // Packed (format 7): kept byte for byte when written again; unpacked with the
        // fixed dictionary, or refused with an offset inside the record.
        let mut again = Vec::new();
        record::encode_view(view, &mut again);
        assert_eq!(again, orig, "a packed record re-encodes to other bytes");
        let mut v = view.clone();
        match v.unpack(dicts()) {
            Ok(()) => {
                assert!(v.doc().starts_with('{') && v.doc().ends_with('}'));
                let mut text = Vec::new();
                record::encode_view(&v, &mut text);
                let (t, _) = record::decode_job(&text).expect("the unpacked record decodes as text");
                assert_eq!(t.to_job(), v.to_job());
            }
            Err(e) => check_error_offset(&e, used),
        }
        return;
    }
    let job = view.to_job();
    let compact = record::split_word(u32::from_le_bytes(orig[..4].try_into().expect("four bytes"))).1;
    let mut other = Vec::new();
    if compact {
        record::encode_job_wide(&job, view.prev, &mut other);
    } else {
        record::encode_job(&job, view.prev, &mut other);
    }
    let (view3, _) = record::decode_job(&other).unwrap_or_else(|e| panic!("the other layout does not decode: {e:?}"));
    assert_eq!(&view3, view, "the other layout decodes to another view");
    let mut again = Vec::new();
    if compact {
        record::encode_job(&job, view.prev, &mut again);
        assert_eq!(again, orig, "a compact record re-encodes to other bytes");
    } else {
        record::encode_job_wide(&job, view.prev, &mut again);
    }
    let (view2, used2) = record::decode_job(&again).unwrap_or_else(|e| panic!("re-encoded record does not decode: {e:?}"));
    assert_eq!(used2, again.len(), "re-encoded record: length");
    assert_eq!(&view2, view, "decode(encode(decode(x))) != decode(x)");
    assert_eq!(view2.to_job(), job);
    assert_eq!(again.len(), orig.len(), "re-encoded record has another length");
    if again != orig {
        let mask = orig[MASK_AT];
        for (i, (a, b)) in orig.iter().zip(&again).enumerate() {
            if a == b {
                continue;
            }
            let in_clear_time_slot = (TIMES_AT..TIMES_AT + 32).contains(&i) && mask & (1 << ((i - TIMES_AT) / 8)) == 0;
            // The checksum differs when those bytes do.
            let in_crc = (4..8).contains(&i);
            assert!(in_clear_time_slot || in_crc, "re-encoded record differs at byte {i}: {a:#04x} vs {b:#04x}");
        }
    }
}

/// Decoding errors must point inside (or just past) the decoded slice.
pub fn check_error_offset(e: &DecodeError, len: usize) {
    assert!(e.offset <= len, "error offset {} past the {len}-byte input: {}", e.offset, e.what);
    assert!(!e.what.is_empty(), "an error without a reason");
}

/// `JOBQ_FUZZ_VERBOSE=1`: targets print what each input did (for checking a harness).
pub fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("JOBQ_FUZZ_VERBOSE").is_some_and(|v| v == "1"))
}
