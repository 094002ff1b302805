//! The parallel half of an import: worker threads turn chunks of whole input lines
//! into encoded records and index entries; the importing thread then writes them in
//! input order (import.rs).

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use super::import_fast::parse_job_fast;
use super::request::{parse_import_item, write_import_doc, ImportItem};
use crate::codec::docz::Packer;
use crate::codec::record::{encode_text_unsealed, Prev, RecordHead, SpiderEntry};
use crate::error::{Error, Result};
use crate::hash::{FastMap, Interner};
use crate::index::DocEntry;
use crate::model::{JobKey, JobState};

/// The longest line an import reads: over twice the longest line an export
/// writes (a 16 MiB + 64 KiB document, 1,000 tags of up to 1 KiB each written
/// with every byte escaped, and the rest of a job's fields).
pub const MAX_LINE: usize = 64 << 20;

/// One parsed line: its record in the chunk's payload and its index entry.
pub(crate) struct ParsedRec {
    /// 1-based line number within the chunk.
    pub line: u64,
    /// Offset of the record in the payload, and of its `order_seq` field.
    pub at: usize,
    pub seq_at: usize,
    pub spider: Arc<str>,
    pub entry: DocEntry,
    /// A running job's `auth` token (store/tokens.rs), when a string.
    pub token: Option<Arc<str>>,
}

/// A chunk of input lines, parsed.
pub(crate) struct ParsedChunk {
    pub payload: Vec<u8>,
    pub recs: Vec<ParsedRec>,
    /// Catalog lines: spiders with the id their next job gets.
    pub spiders: Vec<(u64, SpiderEntry)>,
    /// Lines and bytes the chunk held.
    pub lines: u64,
    pub bytes: u64,
    /// The first bad line (1-based within the chunk) and why.
    pub error: Option<(u64, Error)>,
}

/// Parse and encode every line of `bytes` (whole lines). Records carry
/// `order_seq` 0, no previous state and no checksum: the writer sets all three
/// (each record's checksum is computed once, there).
pub(crate) fn parse_chunk(
    bytes: &[u8],
    strings: &mut Strings,
    packer: Option<&mut Packer>,
    payload: Vec<u8>,
) -> ParsedChunk {
    parse_chunk_with(bytes, strings, packer, payload, true)
}

/// [`parse_chunk`], with the fast path (import_fast.rs) tried first or not.
pub(crate) fn parse_chunk_with(
    bytes: &[u8],
    strings: &mut Strings,
    mut packer: Option<&mut Packer>,
    payload: Vec<u8>,
    fast: bool,
) -> ParsedChunk {
    strings.bound();
    let mut payload = payload;
    payload.clear();
    payload.reserve(bytes.len() + bytes.len() / 4);
    let mut out = ParsedChunk {
        payload,
        recs: Vec::with_capacity(bytes.len() / 256),
        spiders: Vec::new(),
        // Counted as the lines are split (a chunk with a bad line is not counted).
        lines: 0,
        bytes: bytes.len() as u64,
        error: None,
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // The lines before the bad one come first: one of them may be bad too.
            let start = bytes[..e.valid_up_to()].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let mut out = parse_chunk_with(&bytes[..start], strings, packer, out.payload, fast);
            if out.error.is_none() {
                let line = bytes[..start].iter().filter(|b| **b == b'\n').count() as u64 + 1;
                out.error = Some((line, Error::input("not UTF-8")));
            }
            out.bytes = bytes.len() as u64;
            return out;
        }
    };
    let mut fields = Vec::with_capacity(32);
    let mut doc = Vec::new();
    let (mut fast_tags, mut names) = (Vec::with_capacity(16), Vec::with_capacity(32));
    for (i, line) in lines(text).enumerate() {
        let line_no = i as u64 + 1;
        out.lines = line_no;
        let line = line.trim_end_matches('\r');
        if line.len() > MAX_LINE {
            out.error = Some((line_no, too_long()));
            return out;
        }
        // Blank: JSON's whitespace only (other spaces are refused, as before an object).
        if line.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        if let Some(f) = fast.then(|| parse_job_fast(line, &mut doc, &mut fast_tags, &mut names)).flatten() {
            let token = (f.state == JobState::Running).then(|| f.auth.and_then(token_of_raw)).flatten();
            let row = Row {
                key: f.key,
                spider: f.spider,
                state: f.state,
                priority: f.priority,
                times: f.times,
                tags: &fast_tags,
                unique: f.unique,
                close_reason: f.close_reason.and_then(crate::model::close_reason_term),
                token,
            };
            push_row(&mut out, strings, packer.as_deref_mut(), line_no, row, &doc);
            continue;
        }
        let l = match parse_import_item(line, &mut fields) {
            Ok(ImportItem::Job(l)) => l,
            Ok(ImportItem::Spider(e)) => {
                out.spiders.push((line_no, e));
                continue;
            }
            Err(e) => {
                out.error = Some((line_no, e));
                return out;
            }
        };
        let tags: Vec<&str> = l.tags.iter().map(|t| t.as_ref()).collect();
        doc.clear();
        write_import_doc(&l.doc, &mut doc);
        let token = (l.state == JobState::Running).then(|| token_of(&l.doc)).flatten();
        let row = Row {
            key: l.key,
            spider: &l.spider,
            state: l.state,
            priority: l.priority,
            times: l.times,
            tags: &tags,
            unique: l.unique.as_deref(),
            close_reason: l.close_reason(),
            token,
        };
        push_row(&mut out, strings, packer.as_deref_mut(), line_no, row, &doc);
    }
    out
}

/// What a job line gives, by either path.
struct Row<'a> {
    key: JobKey,
    spider: &'a str,
    state: JobState,
    priority: i64,
    times: [Option<u64>; 4],
    tags: &'a [&'a str],
    unique: Option<&'a str>,
    close_reason: Option<Cow<'a, str>>,
    token: Option<Arc<str>>,
}

/// Encode a line's record (with its document `doc`) into the chunk's payload and
/// keep its index entry.
fn push_row(
    out: &mut ParsedChunk,
    strings: &mut Strings,
    packer: Option<&mut Packer>,
    line: u64,
    r: Row<'_>,
    doc: &[u8],
) {
    let head = RecordHead {
        key: r.key,
        state: r.state,
        priority: r.priority,
        times: r.times,
        order_seq: 0,
        tags: r.tags,
        unique: r.unique,
        prev: Prev::Unrecorded,
    };
    let at = out.payload.len();
    let seq_at = encode_text_unsealed(&head, &mut out.payload, doc, packer);
    let entry = DocEntry {
        project: r.key.project,
        local: r.key.local(),
        ts: r.times[r.state.time_slot()].unwrap_or(0),
        order_seq: 0,
        state: r.state,
        priority: r.priority,
        tags: strings.tags(r.tags),
        unique: r.unique.map(|u| strings.words.get(u)),
        close_reason: r.close_reason.map(|c| strings.words.get(&c)),
        token: r.token.clone(),
        loc: 0,
    };
    out.recs.push(ParsedRec { line, at, seq_at, spider: strings.words.get(r.spider), entry, token: r.token });
}

/// How the fast path (import_fast.rs) and the general path read `text` differently
/// (records, index entries, catalog lines, the error and its line): None when
/// alike, as they must be. For tests and the `json_scan` fuzz target.
#[doc(hidden)]
pub fn import_paths_differ(text: &str, packer: Option<&mut Packer>) -> Option<String> {
    let mut packer = packer;
    let mut summary = |fast: bool| {
        let c = parse_chunk_with(text.as_bytes(), &mut Strings::default(), packer.as_deref_mut(), Vec::new(), fast);
        let recs: Vec<_> = c.recs.iter().map(|r| (r.line, r.at, r.seq_at, &r.spider, &r.entry, &r.token)).collect();
        let error = c.error.as_ref().map(|(l, e)| (l, e.to_string()));
        format!("{:?}\n{recs:?}\n{:?}\n{error:?}\n{}", c.payload, c.spiders, c.lines)
    };
    let (fast, general) = (summary(true), summary(false));
    (fast != general).then(|| format!("fast path:\n{fast}\ngeneral path:\n{general}"))
}

/// The error of a line over [`MAX_LINE`].
pub(crate) fn too_long() -> Error {
    Error::input(format!("a line longer than {} MiB", MAX_LINE >> 20))
}

/// The lines of `text` as `str::split_terminator('\n')` gives them, found with
/// `memchr` (a vector scan; the split's own search is a word at a time).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        rest = next;
        Some(line)
    })
}

/// A running job's token as store/tokens.rs reads it from the record: the
/// `auth` field (each name is once in an import document), when a string.
fn token_of(doc: &[crate::codec::json::RawField<'_>]) -> Option<Arc<str>> {
    let f = doc.iter().rev().find(|f| f.name().is_ok_and(|n| n == "auth"))?;
    token_of_raw(f.value)
}

/// The token of a raw `auth` value, when a string.
fn token_of_raw(raw: &str) -> Option<Arc<str>> {
    serde_json::from_str::<String>(raw).ok().map(Arc::from)
}

/// A worker's shared strings: tags, spiders, terms, and whole tag lists (most
/// jobs share theirs), so that an entry allocates nothing it can share.
#[derive(Default)]
pub(crate) struct Strings {
    words: Interner,
    lists: FastMap<usize, TagList>,
    scratch: Vec<Arc<str>>,
}

/// A job's tags, shared.
type TagList = Arc<[Arc<str>]>;

/// Strings a worker keeps at most (then it starts afresh: a bound, not a cache policy).
const MAX_HELD: usize = 1 << 16;

impl Strings {
    /// Start afresh past [`MAX_HELD`] strings (called between chunks).
    fn bound(&mut self) {
        if self.words.len() + self.lists.len() > MAX_HELD {
            *self = Strings::default();
        }
    }

    fn tags(&mut self, tags: &[&str]) -> TagList {
        self.scratch.clear();
        for t in tags {
            self.scratch.push(self.words.get(t));
        }
        // Lists of one tag or none repeat most: shared. Longer ones are the job's own
        // (their combinations are too many to keep).
        if tags.len() > 1 {
            return self.scratch.as_slice().into();
        }
        // Named by the address of its interned tag (0: none), alive as long as
        // `words` holds it: both are dropped together.
        let key = self.scratch.first().map_or(0, |t| t.as_ptr() as usize);
        if let Some(l) = self.lists.get(&key) {
            return l.clone();
        }
        let l: TagList = self.scratch.as_slice().into();
        self.lists.insert(key, l.clone());
        l
    }
}

/// Fill `buf` from `input` to `want` bytes (fewer only at the end); returns true
/// at the end. Where chunks end (and with them the import's frames) depends on
/// the input's bytes alone, not on how its reads split them. The bytes are read
/// into the buffer's spare room, which is not zeroed first.
pub(crate) fn read_more(input: &mut dyn std::io::Read, buf: &mut Vec<u8>, want: usize) -> Result<bool> {
    let (at, ask) = (buf.len(), want.saturating_sub(buf.len()));
    if ask == 0 {
        return Ok(false);
    }
    buf.reserve(ask);
    match Read::take(&mut *input, ask as u64).read_to_end(buf) {
        Ok(n) => Ok(n < ask),
        Err(e) => {
            buf.truncate(at);
            Err(Error::io("read", "import input", e))
        }
    }
}

/// Spare buffers handed back by the importing thread (input chunks, payloads), so
/// that each chunk does not map and fault in fresh memory. At most `keep` kept.
pub(crate) struct Pool {
    bufs: parking_lot::Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    pub fn new(keep: usize) -> Pool {
        Pool { bufs: parking_lot::Mutex::new(Vec::new()), keep }
    }

    /// A spare buffer (empty), or a new one.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut b = self.bufs.lock().pop().unwrap_or_default();
        b.clear();
        b.reserve(capacity);
        b
    }

    pub fn give(&self, b: Vec<u8>) {
        let mut bufs = self.bufs.lock();
        if bufs.len() < self.keep {
            bufs.push(b);
        }
    }
}

/// Split off the whole lines at the front of `buf` (all of it at the end of input);
/// `buf` keeps the partial line, with room for `room` bytes more.
pub(crate) fn take_lines(buf: &mut Vec<u8>, eof: bool, room: usize, pool: &Pool) -> Vec<u8> {
    let end = if eof { buf.len() } else { buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) };
    if end == 0 {
        return Vec::new();
    }
    let mut rest = pool.take(buf.len() - end + room);
    rest.extend_from_slice(&buf[end..]);
    buf.truncate(end);
    std::mem::replace(buf, rest)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_split_as_split_terminator() {
        for text in ["", "\n", "a", "a\n", "a\n\nb", "\n\na\r\nb\n", "é\nü\n\n", "x\n\n"] {
            let want: Vec<&str> = text.split_terminator('\n').collect();
            assert_eq!(super::lines(text).collect::<Vec<_>>(), want, "{text:?}");
        }
    }
}
