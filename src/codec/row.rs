//! The fields of a listing row, read from a record in place: key, state, times
//! and tags, with no allocation and without looking at the metadata document.
//!
//! This decoder checks no checksum and no UTF-8: it is for records already
//! checked whole by [`super::record::decode_job`] (the log reader does that at a
//! record's first read, see `RecordReader::with_checked_record`). It still
//! bounds-checks every length and refuses unknown codes, so that no byte string
//! makes it panic or read past the record.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::compact;
use super::record::{split_word, RECORD_FIXED, RECORD_PREFIX};
use super::DecodeError;
use crate::model::{JobKey, JobState};

/// Offsets within a wide record (from its length field): see record.rs.
const KEY_AT: usize = RECORD_PREFIX;
const STATE_AT: usize = RECORD_PREFIX + 12;
const MASK_AT: usize = STATE_AT + 1;
const TIMES_AT: usize = RECORD_PREFIX + 32;
const NTAGS_AT: usize = TIMES_AT + 32;

/// A listing row's fields, borrowed from a record.
#[derive(Clone, Copy, Debug)]
pub struct RowView<'a> {
    pub key: JobKey,
    pub state: JobState,
    pub times: [Option<u64>; 4],
    /// The tag list as stored: `ntags` × (length, bytes), bounds-checked; the
    /// lengths are varints in a compact record, u16 in a wide one.
    tags: &'a [u8],
    ntags: u16,
    compact: bool,
}

impl<'a> RowView<'a> {
    /// The time of the current state (the `ts` of the listing order).
    pub fn ts(&self) -> u64 {
        self.times[self.state.time_slot()].unwrap_or(0)
    }

    pub fn has_tags(&self) -> bool {
        self.ntags > 0
    }

    /// The tags' bytes, in stored order.
    pub fn tags(&self) -> Tags<'a> {
        Tags { rest: self.tags, left: self.ntags, compact: self.compact }
    }
}

/// The tags of a [`RowView`].
pub struct Tags<'a> {
    rest: &'a [u8],
    left: u16,
    compact: bool,
}

impl<'a> Iterator for Tags<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Bounds were checked by decode_row.
        if self.compact {
            let mut at = 0;
            let tag = compact::next_str(self.rest, &mut at)?;
            self.rest = &self.rest[at..];
            return Some(tag);
        }
        let n = usize::from(LE::read_u16(self.rest.get(..2)?));
        let tag = self.rest.get(2..2 + n)?;
        self.rest = &self.rest[2 + n..];
        Some(tag)
    }
}

/// The row fields of the record at the start of `buf` (a record checked whole
/// before: see the module comment).
pub fn decode_row(buf: &[u8]) -> Result<RowView<'_>, DecodeError> {
    let bad = |at: usize, what: &str| DecodeError::new(at, what);
    let word = buf.get(..4).ok_or_else(|| bad(0, "record shorter than its length"))?;
    let (body_len, is_compact) = split_word(LE::read_u32(word));
    if is_compact {
        return decode_compact_row(buf, body_len);
    }
    let fixed = buf.get(..RECORD_PREFIX + RECORD_FIXED).ok_or_else(|| bad(0, "record shorter than its fixed part"))?;
    let end = RECORD_PREFIX.checked_add(body_len).filter(|&e| e <= buf.len() && body_len >= RECORD_FIXED + 4);
    let end = end.ok_or_else(|| bad(0, "record length out of bounds"))?;
    let key = JobKey {
        project: LE::read_u32(&fixed[KEY_AT..]),
        spider: LE::read_u32(&fixed[KEY_AT + 4..]),
        job: LE::read_u32(&fixed[KEY_AT + 8..]),
    };
    let state = JobState::from_code(fixed[STATE_AT]).ok_or_else(|| bad(STATE_AT, "unknown state code"))?;
    let mask = fixed[MASK_AT];
    let mut times = [None; 4];
    for (i, t) in times.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            *t = Some(LE::read_u64(&fixed[TIMES_AT + 8 * i..]));
        }
    }
    let ntags = LE::read_u16(&fixed[NTAGS_AT..]);
    // Walk the tag list once to bound it.
    let mut at = NTAGS_AT + 2;
    for _ in 0..ntags {
        let len = buf.get(at..at + 2).filter(|_| at + 2 <= end).ok_or_else(|| bad(at, "tag runs past the record"))?;
        let next = at + 2 + usize::from(LE::read_u16(len));
        if next > end {
            // The error names the tag's length field, inside the record.
            return Err(bad(at, "tag runs past the record"));
        }
        at = next;
    }
    Ok(RowView { key, state, times, tags: &buf[NTAGS_AT + 2..at], ntags, compact: false })
}

fn decode_compact_row(buf: &[u8], body_len: usize) -> Result<RowView<'_>, DecodeError> {
    let end = RECORD_PREFIX.checked_add(body_len).filter(|&e| e <= buf.len() && body_len >= compact::MIN_BODY);
    let body = &buf[RECORD_PREFIX..end.ok_or_else(|| DecodeError::new(0, "record length out of bounds"))?];
    // The common case without building errors; the slow path says what is wrong.
    compact_row(body).map_or_else(|| compact_row_error(body), Ok)
}

#[inline]
fn compact_row(body: &[u8]) -> Option<RowView<'_>> {
    let state = JobState::from_code(*body.first()?)?;
    let mask = *body.get(1)?;
    if mask & !0xF != 0 || mask & (1 << state.time_slot()) == 0 {
        return None;
    }
    let mut at = compact::VARINTS_AT - RECORD_PREFIX;
    let mut id = || u32::try_from(compact::get_varint(body, &mut at)?).ok().filter(|v| *v != 0);
    let key = JobKey { project: id()?, spider: id()?, job: id()? };
    compact::get_varint(body, &mut at)?; // priority
    let mut times = [None; 4];
    let mut last = None;
    for (i, t) in times.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            let v = compact::get_varint(body, &mut at)?;
            let v = last.map_or(v, |l: u64| l.wrapping_add(compact::unzigzag(v) as u64));
            *t = Some(v);
            last = Some(v);
        }
    }
    let ntags = u16::try_from(compact::get_varint(body, &mut at)?).ok()?;
    let tags_at = at;
    for _ in 0..ntags {
        compact::next_str(body, &mut at)?;
    }
    Some(RowView { key, state, times, tags: &body[tags_at..at], ntags, compact: true })
}

#[cold]
fn compact_row_error(body: &[u8]) -> Result<RowView<'_>, DecodeError> {
    let at_body = |e: DecodeError| DecodeError::new(RECORD_PREFIX + e.offset, e.what);
    let mut at = 0;
    let h = compact::decode_head(body, &mut at).map_err(at_body)?;
    let from = at;
    let ntags = compact::get_varint(body, &mut at)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| DecodeError::new(RECORD_PREFIX + from, "tag count: a bad varint"))?;
    // Walk the tag list once to bound it.
    let tags_at = at;
    for _ in 0..ntags {
        let from = at;
        compact::next_str(body, &mut at)
            .ok_or_else(|| DecodeError::new(RECORD_PREFIX + from, "tag runs past the record"))?;
    }
    Ok(RowView { key: h.key, state: h.state, times: h.times, tags: &body[tags_at..at], ntags, compact: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::record::{decode_job, encode_job, encode_job_wide, Prev};
    use crate::model::{Job, MetaDoc};

    fn job(tags: &[&str], times: [Option<u64>; 4], state: JobState) -> Job {
        Job {
            key: JobKey::new(3, 4, 5),
            state,
            priority: 7,
            times,
            order_seq: 9,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            unique: Some("u".into()),
            meta: MetaDoc::parse(r#"{"a":"\u00e9"}"#).unwrap(),
        }
    }

    #[test]
    fn rows_match_the_whole_decode() {
        let cases = [
            job(&[], [Some(1), None, None, None], JobState::Pending),
            job(&["a", "ünï", "", "q\"\\"], [Some(1), Some(2), Some(3), None], JobState::Finished),
            job(&["x"], [Some(1), None, None, Some(4)], JobState::Purged),
        ];
        for (j, compact) in cases.iter().flat_map(|j| [(j, true), (j, false)]) {
            let mut buf = Vec::new();
            if compact {
                encode_job(j, Prev::Created, &mut buf);
            } else {
                encode_job_wide(j, Prev::Created, &mut buf);
            }
            let (full, _) = decode_job(&buf).unwrap();
            let row = decode_row(&buf).unwrap();
            assert_eq!((row.key, row.state, row.times, row.ts()), (full.key, full.state, full.times, full.ts()));
            let tags: Vec<&[u8]> = row.tags().collect();
            assert_eq!(tags, full.tags.iter().map(|t| t.as_bytes()).collect::<Vec<_>>());
            assert_eq!(row.has_tags(), !full.tags.is_empty());
        }
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        let j = job(&["a", "bb", "ccc"], [Some(1), None, Some(3), None], JobState::Finished);
        let (mut wide, mut compact) = (Vec::new(), Vec::new());
        encode_job_wide(&j, Prev::Created, &mut wide);
        encode_job(&j, Prev::Created, &mut compact);
        for buf in [wide, compact] {
            truncate_and_flip(&buf);
        }
    }

    fn truncate_and_flip(buf: &[u8]) {
        for cut in 0..buf.len() {
            assert!(decode_row(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..buf.len() {
            for x in [0x55, 0xff, 0x80] {
                let mut bad = buf.to_vec();
                bad[i] ^= x;
                match decode_row(&bad) {
                    Ok(r) => {
                        let _ = r.tags().count();
                    }
                    // An error names an offset inside the bytes (found by fuzzing:
                    // a tag length running past the record named the offset after it).
                    Err(e) => assert!(e.offset <= bad.len(), "offset {} of {} bytes: {}", e.offset, bad.len(), e.what),
                }
            }
        }
    }
}
