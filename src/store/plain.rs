//! Listing rows without `jobmeta`, a page at a time (issue 11): the common row
//! (a compact record, a spider name the catalog keeps as JSON, short tags that
//! need no escape) decoded and written in one pass straight into the output,
//! without building a [`crate::codec::row::RowView`]. Every other row returns
//! `None` and takes the general path (`Snapshot::render_plain`), which writes
//! the same bytes and names any damage.
//!
//! A row is written into a scratch row first ([`Room`]): constant strings are
//! copied with a fixed length (the bytes past the piece are written over next),
//! so that no piece of a row calls `memcpy`; the row then goes to the output in
//! one copy.

use crate::codec::compact;
use crate::codec::json::plain_run;
use crate::codec::record::{split_word, RECORD_PREFIX};
use crate::model::doc::{eight_digits, ASCII_ZEROS};
use crate::model::JobState;

/// Bytes of the scratch row a fast row may use (what it writes past its end
/// included): 88 before the name, at most `MAX_NAME`, 261 after it without
/// the tags, then each tag at most `MAX_TAG + 3` while below `ROW_ROOM - 128`.
const ROW_ROOM: usize = 2048;
/// Output bytes reserved a row of a page (a compare-data row is about 250), for
/// at most `RESERVED_ROWS` rows (the output grows as usual past them).
const TYPICAL_ROW: usize = 256;
const RESERVED_ROWS: usize = 4096;
const MAX_NAME: usize = 256;
const MAX_TAG: usize = 64;

const E8: u64 = 100_000_000;

/// `","state":"<state>","spider":` of each state code, padded to 32 bytes, and
/// its length.
const STATE_PIECES: [([u8; 32], usize); 5] = [
    pad(b"\",\"state\":\"pending\",\"spider\":"),
    pad(b"\",\"state\":\"running\",\"spider\":"),
    pad(b"\",\"state\":\"finished\",\"spider\":"),
    pad(b"\",\"state\":\"deleted\",\"spider\":"),
    pad(b"\",\"state\":\"purged\",\"spider\":"),
];

/// `,"<name>_time":` of each time slot (as `read.rs`'s `TIME_KEYS`), padded.
const TIME_PIECES: [([u8; 32], usize); 4] =
    [pad(b",\"pending_time\":"), pad(b",\"running_time\":"), pad(b",\"finished_time\":"), pad(b",\"deleted_time\":")];

const fn pad(s: &[u8]) -> ([u8; 32], usize) {
    let mut a = [0u8; 32];
    let mut i = 0;
    while i < s.len() {
        a[i] = s[i];
        i += 1;
    }
    (a, s.len())
}

/// The output of a page, and a scratch row that a fast row is written into
/// first (zeroed once a page, `ROW_ROOM` bytes): pieces are copied with fixed
/// lengths past their ends, so a row needs room past its last byte. A written
/// row is copied to the output's end in one copy, into reserved capacity.
pub(super) struct Room<'o> {
    buf: &'o mut Vec<u8>,
    row: Box<[u8; ROW_ROOM]>,
}

impl<'o> Room<'o> {
    /// `rows`: how many rows the page will hold (reserved for, at a typical row size).
    pub fn new(buf: &'o mut Vec<u8>, rows: usize) -> Room<'o> {
        buf.reserve(rows.min(RESERVED_ROWS) * TYPICAL_ROW);
        Room { buf, row: Box::new([0; ROW_ROOM]) }
    }

    /// The output so far, for a general renderer to append to.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        self.buf
    }

    /// Append the first `n` bytes of the scratch row to the output.
    #[inline]
    fn push_row(&mut self, n: usize) {
        self.buf.extend_from_slice(&self.row[..n]);
    }
}

/// What a page's rows share: its project's spider names and key prefix, and the
/// digits of the last time's high part (rows of a page are mostly close in time).
pub(super) struct PlainPage<'a> {
    names: &'a [Option<Box<[u8]>>],
    project: u32,
    /// `{"key":"<project>/`, padded, and its length.
    prefix: [u8; 32],
    prefix_len: usize,
    /// `(v / 10^8, its digits as written, their number)` of the last time written,
    /// and of the last `elapsed`.
    high: (u64, u64, usize),
    elapsed_high: (u64, u64, usize),
    /// The digits of each spider id (below 10^8) as written and their number,
    /// by id; 0 digits until first needed.
    spiders: Vec<(u64, usize)>,
}

impl<'a> PlainPage<'a> {
    pub fn new(project: u32, names: &'a [Option<Box<[u8]>>]) -> PlainPage<'a> {
        let mut prefix = [0u8; 32];
        prefix[..8].copy_from_slice(b"{\"key\":\"");
        let mut p = put_u64(&mut prefix, 8, u64::from(project));
        prefix[p] = b'/';
        p += 1;
        let none = (u64::MAX, 0, 0);
        PlainPage { names, project, prefix, prefix_len: p, high: none, elapsed_high: none, spiders: Vec::new() }
    }

    /// Append the row of record `rec` and a newline; false, writing nothing,
    /// when the row takes the general path.
    #[inline]
    pub fn row(&mut self, rec: &[u8], now: u64, out: &mut Room<'_>) -> bool {
        match self.write(rec, now, &mut out.row[..]) {
            Some(n) => {
                out.push_row(n);
                true
            }
            None => false,
        }
    }

    /// The row and its newline at the start of `w` (`ROW_ROOM` bytes at least);
    /// its length.
    #[inline]
    fn write(&mut self, rec: &[u8], now: u64, w: &mut [u8]) -> Option<usize> {
        let (body_len, is_compact) = split_word(u32::from_le_bytes(*rec.first_chunk::<4>()?));
        if !is_compact || body_len < compact::MIN_BODY {
            return None;
        }
        let body = rec.get(RECORD_PREFIX..RECORD_PREFIX.checked_add(body_len)?)?;
        // As codec/row.rs reads a compact row.
        let state = JobState::from_code(body[0])?;
        let (mask, slot) = (body[1], state.time_slot());
        if mask & !0xF != 0 || mask & (1 << slot) == 0 {
            return None;
        }
        let mut at = compact::VARINTS_AT - RECORD_PREFIX;
        let project = id(body, &mut at)?;
        let spider = id(body, &mut at)?;
        let job = id(body, &mut at)?;
        varint(body, &mut at)?; // priority
        let mut times = [0u64; 4];
        let mut last = None;
        for (i, t) in times.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                let v = varint(body, &mut at)?;
                *t = last.map_or(v, |l: u64| l.wrapping_add(compact::unzigzag(v) as u64));
                last = Some(*t);
            }
        }
        let ntags = u16::try_from(varint(body, &mut at)?).ok()?;
        let name = self.names.get(spider as usize)?.as_deref().filter(|n| n.len() <= MAX_NAME)?;

        let mut p = if project == self.project {
            w[..32].copy_from_slice(&self.prefix);
            self.prefix_len
        } else {
            w[..8].copy_from_slice(b"{\"key\":\"");
            let p = put_u64(w, 8, u64::from(project));
            w[p] = b'/';
            p + 1
        };
        p = self.put_spider(w, p, spider);
        w[p] = b'/';
        p = put_u64(w, p + 1, u64::from(job));
        let (piece, n) = &STATE_PIECES[state as usize];
        w[p..p + 32].copy_from_slice(piece);
        p += n;
        w[p..p + name.len()].copy_from_slice(name);
        p += name.len();
        let ts = times[slot];
        w[p..p + 8].copy_from_slice(b",\"ts\":\0\0");
        let ts_at = p + 6;
        p = self.put_time(w, ts_at, ts);
        let ts_len = p - ts_at;
        w[p..p + 16].copy_from_slice(b",\"elapsed\":\0\0\0\0\0");
        p += 11;
        // As the general path: wrapping, for a time past 2^63 (any record bytes).
        let elapsed = (now as i64).wrapping_sub(ts as i64);
        if elapsed < 0 {
            w[p] = b'-';
            p += 1;
        }
        p = put_cached(w, p, elapsed.unsigned_abs(), &mut self.elapsed_high);
        for (i, t) in times.iter().enumerate() {
            if mask & (1 << i) != 0 {
                let (piece, n) = &TIME_PIECES[i];
                w[p..p + 32].copy_from_slice(piece);
                p += n;
                if i == slot {
                    // `ts` is this slot's time: its digits (at most 20) again.
                    w.copy_within(ts_at..ts_at + 24, p);
                    p += ts_len;
                } else {
                    p = self.put_time(w, p, *t);
                }
            }
        }
        if ntags > 0 {
            w[p..p + 16].copy_from_slice(b",\"tags\":[\0\0\0\0\0\0\0");
            p += 9;
            for _ in 0..ntags {
                let len = usize::from(*body.get(at).filter(|&&b| b < 0x80)?);
                at += 1;
                if len > MAX_TAG || p + 128 > ROW_ROOM {
                    return None;
                }
                w[p] = b'"';
                if let Some(words) = body.get(at..at + 16) {
                    let a = u64::from_le_bytes(words[..8].try_into().ok()?);
                    let b = u64::from_le_bytes(words[8..].try_into().ok()?);
                    if len > 16 || special(a) & keep(len) != 0 || special(b) & keep(len.saturating_sub(8)) != 0 {
                        return None;
                    }
                    w[p + 1..p + 17].copy_from_slice(words);
                } else {
                    let tag = body.get(at..at + len)?;
                    if plain_run(tag) != len {
                        return None;
                    }
                    w[p + 1..p + 1 + len].copy_from_slice(tag);
                }
                at += len;
                p += 1 + len;
                w[p..p + 2].copy_from_slice(b"\",");
                p += 2;
            }
            w[p - 1] = b']';
        }
        w[p..p + 2].copy_from_slice(b"}\n");
        Some(p + 2)
    }

    #[inline(always)]
    fn put_time(&mut self, w: &mut [u8], p: usize, v: u64) -> usize {
        put_cached(w, p, v, &mut self.high)
    }

    /// The digits of spider id `id`, computed once a page.
    #[inline(always)]
    fn put_spider(&mut self, w: &mut [u8], p: usize, id: u32) -> usize {
        let i = id as usize;
        if id >= E8 as u32 {
            return put_u64(w, p, u64::from(id));
        }
        if self.spiders.len() <= i {
            self.spiders.resize(i + 1, (0, 0));
        }
        if self.spiders[i].1 == 0 {
            self.spiders[i] = leading_word(eight_digits(id));
        }
        let (word, n) = self.spiders[i];
        w[p..p + 8].copy_from_slice(&word.to_le_bytes());
        p + n
    }
}

/// `v` in decimal, its digits above the last eight reused from `cache` (the last
/// number written this way) when they are the same.
#[inline(always)]
fn put_cached(w: &mut [u8], p: usize, v: u64, cache: &mut (u64, u64, usize)) -> usize {
    if !(E8..E8 * E8).contains(&v) {
        return put_u64(w, p, v);
    }
    let hi = v / E8;
    if hi != cache.0 {
        let (word, n) = leading_word(eight_digits(hi as u32));
        *cache = (hi, word, n);
    }
    w[p..p + 8].copy_from_slice(&cache.1.to_le_bytes());
    let p = p + cache.2;
    w[p..p + 8].copy_from_slice(&(eight_digits((v - hi * E8) as u32) | ASCII_ZEROS).to_le_bytes());
    p + 8
}

/// The one-pass row of the record at the start of `rec` (a page of project
/// `project` whose spider names are `names`), with its newline; `None` when the
/// row takes the general path. For the record fuzz target: on any bytes it
/// never panics, and a row it writes is the row of `codec::row::decode_row`.
#[doc(hidden)]
pub fn one_pass_row(project: u32, names: &[Option<Box<[u8]>>], rec: &[u8], now: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut room = Room::new(&mut out, 1);
    let written = PlainPage::new(project, names).row(rec, now, &mut room);
    written.then_some(out)
}

/// A varint of a compact record (shortest form only, as `compact::get_varint`).
#[inline(always)]
fn varint(body: &[u8], at: &mut usize) -> Option<u64> {
    let b = *body.get(*at)?;
    if b < 0x80 {
        *at += 1;
        return Some(u64::from(b));
    }
    // Up to 8 bytes from one load, as `compact::get_varint` does, but inline.
    if let Some(word) = body.get(*at..*at + 8) {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        let ends = !w & 0x8080_8080_8080_8080;
        if ends != 0 {
            // 2 to 8 bytes: the first one has its high bit set.
            let len = (ends.trailing_zeros() / 8 + 1) as usize;
            if (w >> (8 * (len - 1))) as u8 == 0 {
                return None; // not the shortest form
            }
            let x = w & (u64::MAX >> (64 - 8 * len));
            let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
            let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
            *at += len;
            return Some((x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4));
        }
    }
    compact::get_varint(body, at)
}

/// A key id: non-zero, 32 bits.
#[inline(always)]
fn id(body: &[u8], at: &mut usize) -> Option<u32> {
    u32::try_from(varint(body, at)?).ok().filter(|v| *v != 0)
}

/// The high bit of each byte of `w` that is a quote, a backslash or a control
/// character; exact up to the lowest flagged byte (as `json::plain_run`).
#[inline(always)]
fn special(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))) | below_space
}

/// The bits of the first `n` bytes of a word.
#[inline(always)]
fn keep(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Eight digit values as ASCII without their leading zeros (one `0` when all
/// are), in the low bytes of a word; and how many.
#[inline(always)]
fn leading_word(digits: u64) -> (u64, usize) {
    let zeros = ((digits | (1 << 56)).trailing_zeros() / 8) as usize;
    ((digits | ASCII_ZEROS) >> (8 * zeros), 8 - zeros)
}

/// `v` in decimal at `w[p..]` (24 bytes of room); the end.
#[inline(always)]
fn put_u64(w: &mut [u8], p: usize, v: u64) -> usize {
    let eight = |w: &mut [u8], p: usize, v: u64| {
        w[p..p + 8].copy_from_slice(&(eight_digits(v as u32) | ASCII_ZEROS).to_le_bytes());
        p + 8
    };
    let (top, rest) = if v < E8 {
        (v, 0)
    } else if v < E8 * E8 {
        (v / E8, 1)
    } else {
        (v / (E8 * E8), 2)
    };
    let (word, n) = leading_word(eight_digits(top as u32));
    w[p..p + 8].copy_from_slice(&word.to_le_bytes());
    let mut p = p + n;
    if rest == 2 {
        p = eight(w, p, v / E8 % E8);
    }
    if rest >= 1 {
        p = eight(w, p, v % E8);
    }
    p
}
