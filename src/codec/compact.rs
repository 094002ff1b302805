//! The compact job record (format 6, written in version-5 log segments): the
//! fixed-width fields first, then varints, only the present times, and the
//! document as the rest of the body (format-spec/log.md, "Compact record").
//!
//! ```text
//! u32 word                bit 31 set (compact), bits 0..30 body_len
//! u32 crc                 masked CRC-32 of the body
//! u8  state, u8 times_mask, u8 flags, u8 prev     as in the wide record
//! u64 order_seq           fixed width: patched after encoding (import)
//! varint project, varint spider, varint job
//! varint zigzag(priority)
//! the present times, by slot: the first as a varint, each later one as a
//!                         varint zigzag(t - the time before it), wrapping
//! varint ntags, ntags × (varint len, UTF-8)
//! [varint len, UTF-8]     unique, when flagged
//! UTF-8                   the metadata document: the rest of the body
//! ```
//!
//! Format 7: with flag bit 1 (packed) the document is instead varint dictionary
//! id, varint length of its text, and a zstd frame: the rest of the body
//! ([`super::docz`]).
//!
//! A varint is unsigned LEB128 of at most 10 bytes, in its shortest form.

use byteorder::{ByteOrder, LittleEndian as LE};

use std::borrow::Cow;

use super::record::{Doc, JobView, Prev, RecordHead, FLAG_PACKED, FLAG_UNIQUE, RECORD_PREFIX};
use super::DecodeError;
use crate::model::{JobKey, JobState};

/// Bit 31 of a record's first word: the record is compact.
pub const COMPACT_BIT: u32 = 1 << 31;
/// Offsets within a compact record (from its first word).
pub const STATE_AT: usize = RECORD_PREFIX;
pub const FLAGS_AT: usize = RECORD_PREFIX + 2;
pub const PREV_AT: usize = RECORD_PREFIX + 3;
pub const ORDER_SEQ_AT: usize = RECORD_PREFIX + 4;
/// Where the varints start.
pub const VARINTS_AT: usize = RECORD_PREFIX + 12;
/// The shortest body: the fixed part, three one-byte ids, priority, one time,
/// the tag count and `{}`.
pub const MIN_BODY: usize = 12 + 3 + 1 + 1 + 1 + 2;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Read the varint at `*at` of `buf` (shortest form only); advances `*at`.
#[inline(always)]
pub fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let rest = buf.get(*at..)?;
    match rest.first() {
        Some(&b) if b < 0x80 => {
            *at += 1;
            Some(u64::from(b))
        }
        Some(_) => get_long_varint(rest, at),
        None => None,
    }
}

/// A varint of two bytes or more: up to 8 at once from one load when the
/// slice holds 8 bytes (listing rows decode several per record).
#[inline]
fn get_long_varint(rest: &[u8], at: &mut usize) -> Option<u64> {
    if let Some(word) = rest.first_chunk::<8>() {
        let w = u64::from_le_bytes(*word);
        let ends = !w & 0x8080_8080_8080_8080;
        if ends != 0 {
            let len = (ends.trailing_zeros() / 8 + 1) as usize;
            if (w >> (8 * (len - 1))) as u8 == 0 {
                return None; // not the shortest form
            }
            // Keep the varint's bytes, then pack their 7-bit groups without a loop.
            let x = if len == 8 { w } else { w & ((1u64 << (8 * len)) - 1) };
            let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
            let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
            let v = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
            *at += len;
            return Some(v);
        }
    }
    let mut v = 0u64;
    for i in 0..10 {
        let b = *rest.get(i)?;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // Shortest form: a last byte of 0 only when it is the only one.
            if b == 0 && i > 0 {
                return None;
            }
            *at += i + 1;
            return Some(v);
        }
    }
    None
}

/// Skip the length-prefixed string at `*at` (bounds-checked); its bytes.
#[inline(always)]
pub fn next_str<'a>(body: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let mut p = *at;
    let n = get_varint(body, &mut p)?;
    let end = usize::try_from(n).ok().and_then(|n| p.checked_add(n)).filter(|&e| e <= body.len())?;
    *at = end;
    Some(&body[p..end])
}

/// Append the body of a compact record (after its 8-byte prefix); returns the
/// offset of `order_seq` within `out`.
pub fn encode_body(h: &RecordHead<'_>, out: &mut Vec<u8>, doc: impl FnOnce(&mut Vec<u8>)) -> usize {
    let mask = h.times.iter().enumerate().fold(0u8, |m, (i, t)| if t.is_some() { m | (1 << i) } else { m });
    out.extend_from_slice(&[h.state.code(), mask, if h.unique.is_some() { FLAG_UNIQUE } else { 0 }, h.prev.code()]);
    let seq_at = out.len();
    out.extend_from_slice(&h.order_seq.to_le_bytes());
    put_varint(out, u64::from(h.key.project));
    put_varint(out, u64::from(h.key.spider));
    put_varint(out, u64::from(h.key.job));
    put_varint(out, zigzag(h.priority));
    let mut last = None;
    for t in h.times.iter().flatten() {
        match last {
            None => put_varint(out, *t),
            Some(l) => put_varint(out, zigzag(t.wrapping_sub(l) as i64)),
        }
        last = Some(*t);
    }
    put_varint(out, h.tags.len() as u64);
    for tag in h.tags {
        put_varint(out, tag.len() as u64);
        out.extend_from_slice(tag.as_bytes());
    }
    if let Some(u) = h.unique {
        put_varint(out, u.len() as u64);
        out.extend_from_slice(u.as_bytes());
    }
    doc(out);
    seq_at
}

/// The fields a listing row needs, read from a compact record's body; `at` is
/// left at the tag count. Errors name offsets within `body`.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    pub key: JobKey,
    pub state: JobState,
    pub mask: u8,
    pub flags: u8,
    pub prev: Prev,
    pub priority: i64,
    pub order_seq: u64,
    pub times: [Option<u64>; 4],
}

#[inline]
pub fn decode_head(body: &[u8], at: &mut usize) -> Result<Head, DecodeError> {
    let fixed = body.get(..12).ok_or_else(|| DecodeError::new(0, "compact record shorter than its fixed part"))?;
    let state = JobState::from_code(fixed[0]).ok_or_else(|| DecodeError::new(0, "unknown state code"))?;
    let (mask, flags) = (fixed[1], fixed[2]);
    let prev = Prev::from_code(fixed[3]);
    let Some(prev) = prev.filter(|_| mask & !0xF == 0 && flags & !(FLAG_UNIQUE | FLAG_PACKED) == 0) else {
        return Err(DecodeError::new(0, "unknown bits in mask or flags, or an unknown previous state"));
    };
    if mask & (1 << state.time_slot()) == 0 {
        return Err(DecodeError::new(1, "the time of the current state is missing"));
    }
    let order_seq = LE::read_u64(&fixed[4..12]);
    *at = 12;
    let mut id = |what: &str| {
        let from = *at;
        get_varint(body, at)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v != 0)
            .ok_or_else(|| DecodeError::new(from, format!("{what}: a bad varint, zero or past 32 bits")))
    };
    let key = JobKey { project: id("project")?, spider: id("spider")?, job: id("job")? };
    let from = *at;
    let priority = unzigzag(get_varint(body, at).ok_or_else(|| DecodeError::new(from, "priority: a bad varint"))?);
    let mut times = [None; 4];
    let mut last: Option<u64> = None;
    for (i, t) in times.iter_mut().enumerate() {
        if mask & (1 << i) == 0 {
            continue;
        }
        let from = *at;
        let v = get_varint(body, at).ok_or_else(|| DecodeError::new(from, "time: a bad varint"))?;
        let v = match last {
            None => v,
            Some(l) => l.wrapping_add(unzigzag(v) as u64),
        };
        *t = Some(v);
        last = Some(v);
    }
    Ok(Head { key, state, mask, flags, prev, priority, order_seq, times })
}

/// A length-prefixed string's bytes at `*at`; advances `*at`.
#[inline]
pub fn get_bytes<'a>(body: &'a [u8], at: &mut usize, what: &str) -> Result<&'a [u8], DecodeError> {
    let from = *at;
    let n = get_varint(body, at).ok_or_else(|| DecodeError::new(from, format!("{what}: a bad length varint")))?;
    let end = usize::try_from(n).ok().and_then(|n| at.checked_add(n)).filter(|&e| e <= body.len());
    let end = end.ok_or_else(|| DecodeError::new(from, format!("{what} runs past the record")))?;
    let s = &body[*at..end];
    *at = end;
    Ok(s)
}

fn get_str<'a>(body: &'a [u8], at: &mut usize, what: &str) -> Result<&'a str, DecodeError> {
    let from = *at;
    let b = get_bytes(body, at, what)?;
    std::str::from_utf8(b).map_err(|_| DecodeError::new(from, format!("{what}: not UTF-8")))
}

/// Decode a compact record's body (checksum already checked when asked).
pub fn decode_body(body: &[u8]) -> Result<JobView<'_>, DecodeError> {
    let mut at = 0;
    let h = decode_head(body, &mut at)?;
    let from = at;
    let ntags = get_varint(body, &mut at).ok_or_else(|| DecodeError::new(from, "tag count: a bad varint"))?;
    // Each tag takes at least its length byte: never reserve more than that.
    if ntags > (body.len() - at) as u64 || ntags > u64::from(u16::MAX) {
        return Err(DecodeError::new(from, "more tags than the record can hold"));
    }
    let mut tags = Vec::with_capacity(ntags as usize);
    for _ in 0..ntags {
        tags.push(get_str(body, &mut at, "tag")?);
    }
    let unique = if h.flags & FLAG_UNIQUE != 0 { Some(get_str(body, &mut at, "unique")?) } else { None };
    let doc = if h.flags & FLAG_PACKED != 0 {
        let from = at;
        let dict = get_varint(body, &mut at)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v != 0)
            .ok_or_else(|| DecodeError::new(from, "dictionary id: a bad varint, zero or past 32 bits"))?;
        let from = at;
        let len = get_varint(body, &mut at)
            .filter(|v| (2..=super::docz::MAX_TEXT as u64).contains(v))
            .ok_or_else(|| DecodeError::new(from, "packed document length: a bad varint, below 2 or over the limit"))?;
        if at == body.len() {
            return Err(DecodeError::new(at, "packed document: no bytes"));
        }
        Doc::Packed { dict, len: len as u32, bytes: &body[at..], at: at as u32 }
    } else {
        let doc = std::str::from_utf8(&body[at..]).map_err(|_| DecodeError::new(at, "document: not UTF-8"))?;
        if !(doc.len() >= 2 && doc.starts_with('{') && doc.ends_with('}')) {
            return Err(DecodeError::new(at, "the document is not a JSON object"));
        }
        // Line breaks between tokens (a document stored before they were
        // dropped on write) never reach an answer.
        Doc::Text(crate::model::doc::one_line(Cow::Borrowed(doc)))
    };
    Ok(JobView {
        key: h.key,
        state: h.state,
        priority: h.priority,
        times: h.times,
        order_seq: h.order_seq,
        tags,
        unique,
        doc,
        prev: h.prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_long_forms() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at), Some(v));
            assert_eq!(at, b.len());
        }
        for bad in [&[0x80, 0x00][..], &[0x81, 0x80, 0x00], &[0xff; 10], &[0xff; 11], &[0x80]] {
            assert_eq!(get_varint(bad, &mut 0), None, "{bad:?}");
            // The same with bytes after it (the 8-byte load), and at an offset.
            let mut padded = vec![7u8];
            padded.extend_from_slice(bad);
            padded.extend_from_slice(&[0; 9]);
            assert_eq!(get_varint(&padded, &mut 1), None, "{bad:?} padded");
        }
        // Every value of every length, with and without bytes after it.
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) | 1] {
                let mut b = vec![0xAA];
                put_varint(&mut b, v);
                let end = b.len();
                for tail in [0usize, 3, 9] {
                    let mut t = b.clone();
                    t.extend(std::iter::repeat_n(0xff, tail));
                    let mut at = 1;
                    assert_eq!(get_varint(&t, &mut at), Some(v), "{v} with {tail} bytes after");
                    assert_eq!(at, end);
                }
            }
        }
        for v in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
