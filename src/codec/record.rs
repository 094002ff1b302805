//! Jobs payloads: job versions (records). The other payloads (spider
//! registrations, the catalog, commits) are in [`super::catalog`], re-exported here.
//!
//! A jobs payload is `count` records back to back, each compact (format 6,
//! [`super::compact`]: bit 31 of its first word set) or wide (formats 1 to 5,
//! read in any segment: relocated copies keep their bytes). A wide record:
//!
//! ```text
//! u32 body_len            bytes of the body (after the crc)
//! u32 crc                 masked CRC-32 of the body
//! u32 project, u32 spider, u32 job
//! u8  state               0 pending, 1 running, 2 finished, 3 deleted
//! u8  times_mask          bit i: times[i] present (pending, running, finished, deleted)
//! u8  flags               bit 0: unique present
//! u8  prev                the job's state before this version: 0 not recorded
//!                         (format 2 and before), 1 none (created), 2 + state code
//! i64 priority
//! u64 order_seq
//! u64 times[4]            0 where absent
//! u16 ntags, then ntags × (u16 len, UTF-8)
//! [u16 len, UTF-8]        unique, when flagged
//! u32 doc_len, UTF-8      the metadata document, a JSON object
//! ```

use byteorder::{LittleEndian as LE, WriteBytesExt};

use std::borrow::Cow;

pub use super::catalog::{
    check_catalog, decode_catalog, decode_commit, decode_spider, encode_catalog, encode_commit, encode_spider,
    SpiderEntry,
};
use super::docz::{Dicts, Packer, Prepacked};
use super::{ByteReader, DecodeError};
use crate::model::{Job, JobKey, JobState, MetaDoc};

/// Fixed bytes of a record body before the tags.
pub const RECORD_FIXED: usize = 4 * 3 + 4 + 8 + 8 + 8 * 4 + 2;
pub(crate) const FLAG_UNIQUE: u8 = 1;
/// Compact records only (format 7): the document is packed.
pub(crate) const FLAG_PACKED: u8 = 2;
/// Offset of the `prev` byte in a record this build writes (compact), from the
/// record's start (its length field).
pub const PREV_AT: usize = super::compact::PREV_AT;
/// Offset of the `prev` byte in a wide record.
pub const WIDE_PREV_AT: usize = RECORD_PREFIX + 15;
/// The fewest bytes of any record, prefix included.
pub const MIN_RECORD: usize = {
    let wide = RECORD_PREFIX + RECORD_FIXED + 4;
    let compact = RECORD_PREFIX + super::compact::MIN_BODY;
    if wide < compact {
        wide
    } else {
        compact
    }
};

/// A record's body length and whether it is compact, from its first word.
#[inline]
pub fn split_word(word: u32) -> (usize, bool) {
    ((word & !super::compact::COMPACT_BIT) as usize, word & super::compact::COMPACT_BIT != 0)
}

/// The whole length (prefix included) of the record whose first word is `word`.
#[inline]
pub fn record_len(word: u32) -> usize {
    RECORD_PREFIX + split_word(word).0
}

/// What a record says of the job's version before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prev {
    /// Not recorded: the record was written by format 2 or before.
    #[default]
    Unrecorded,
    /// This version created the job.
    Created,
    /// The state of the job's previous version.
    State(JobState),
}

impl Prev {
    pub fn code(self) -> u8 {
        match self {
            Prev::Unrecorded => 0,
            Prev::Created => 1,
            Prev::State(s) => 2 + s.code(),
        }
    }

    pub fn from_code(code: u8) -> Option<Prev> {
        match code {
            0 => Some(Prev::Unrecorded),
            1 => Some(Prev::Created),
            c => JobState::from_code(c - 2).map(Prev::State),
        }
    }
}

/// A record's metadata document: its text, or packed with a dictionary (format 7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Doc<'a> {
    Text(Cow<'a, str>),
    Packed {
        dict: u32,
        /// Bytes of the text.
        len: u32,
        bytes: &'a [u8],
        /// Offset of `bytes` from the record's first byte (errors name it).
        at: u32,
    },
}

/// A record decoded without copying: borrowed strings. A packed document is
/// decompressed only when asked ([`JobView::unpack`]): listing rows need none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView<'a> {
    pub key: JobKey,
    pub state: JobState,
    pub priority: i64,
    pub times: [Option<u64>; 4],
    pub order_seq: u64,
    pub tags: Vec<&'a str>,
    pub unique: Option<&'a str>,
    pub doc: Doc<'a>,
    /// What the record says of the job's previous version.
    pub prev: Prev,
}

impl<'a> JobView<'a> {
    /// A view of an owned job (its previous version not recorded).
    pub fn of(job: &'a Job) -> JobView<'a> {
        JobView {
            prev: Prev::Unrecorded,
            key: job.key,
            state: job.state,
            priority: job.priority,
            times: job.times,
            order_seq: job.order_seq,
            tags: job.tags.iter().map(String::as_str).collect(),
            unique: job.unique.as_deref(),
            doc: Doc::Text(Cow::Borrowed(job.meta.as_str())),
        }
    }

    /// Decompress a packed document in place (a no-op for text). Errors name
    /// offsets from the record's first byte.
    pub fn unpack(&mut self, dicts: &Dicts) -> Result<(), DecodeError> {
        if let Doc::Packed { dict, len, bytes, at } = self.doc {
            let text = dicts
                .unpack(dict, bytes, len as usize)
                .map_err(|e| DecodeError::new(at as usize + e.offset, e.what))?;
            self.doc = Doc::Text(crate::model::doc::one_line(Cow::Owned(text)));
        }
        Ok(())
    }

    /// The document's text; `{}` for a document still packed (a caller's bug,
    /// caught by debug builds: every reader of a document unpacks it first).
    pub fn doc(&self) -> &str {
        match &self.doc {
            Doc::Text(t) => t,
            Doc::Packed { .. } => {
                debug_assert!(false, "a packed document read without unpacking it");
                "{}"
            }
        }
    }

    /// Whether the document is packed (format 7).
    pub fn is_packed(&self) -> bool {
        matches!(self.doc, Doc::Packed { .. })
    }

    pub fn ts(&self) -> u64 {
        self.times[self.state.time_slot()].unwrap_or(0)
    }

    /// The term this version is indexed under as `close_reason`, if any.
    pub fn close_reason(&self) -> Option<Cow<'_, str>> {
        let v = crate::model::doc::field(self.doc(), crate::model::CLOSE_REASON)?;
        crate::model::close_reason_term(v.get())
    }

    /// Append the raw JSON of one field of the job's whole metadata; false when the
    /// job does not have it.
    pub fn field_json(&self, name: &str, spider_name: &str, out: &mut Vec<u8>) -> bool {
        use crate::model::doc::write_json_str;
        use std::io::Write;
        match name {
            "project" => write!(out, "{}", self.key.project).is_ok(),
            "spider" => {
                write_json_str(out, spider_name);
                true
            }
            "state" => {
                write_json_str(out, self.state.as_str());
                true
            }
            "priority" => write!(out, "{}", self.priority).is_ok(),
            "unique" => self.unique.is_some_and(|u| {
                write_json_str(out, u);
                true
            }),
            "tags" => {
                crate::model::job::write_tags(&self.tags, out);
                true
            }
            _ => match crate::model::TIME_FIELDS.iter().position(|f| *f == name) {
                Some(i) => self.times[i].is_some_and(|t| write!(out, "{t}").is_ok()),
                None => crate::model::doc::field(self.doc(), name).is_some_and(|v| {
                    out.extend_from_slice(v.get().as_bytes());
                    true
                }),
            },
        }
    }

    pub fn to_job(&self) -> Job {
        Job {
            key: self.key,
            state: self.state,
            priority: self.priority,
            times: self.times,
            order_seq: self.order_seq,
            tags: self.tags.iter().map(|t| t.to_string()).collect(),
            unique: self.unique.map(str::to_string),
            meta: MetaDoc::from_trusted(self.doc().to_string()),
        }
    }
}

/// The fields of a record, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RecordHead<'a> {
    pub key: JobKey,
    pub state: JobState,
    pub priority: i64,
    pub times: [Option<u64>; 4],
    pub order_seq: u64,
    pub tags: &'a [&'a str],
    pub unique: Option<&'a str>,
    pub prev: Prev,
}

/// Append one record, compact. Lengths must fit their fields (checked by input validation).
pub fn encode_job(job: &Job, prev: Prev, out: &mut Vec<u8>) {
    encode_job_packed(job, prev, out, None, None);
}

/// Append one compact record, its document packed with `packer` when that makes
/// it shorter (format 7; the writer, once the store has a dictionary). `pre`, a
/// document packed outside the writer lock, is used when it used `packer`'s
/// dictionary: the same bytes, without the work.
pub fn encode_job_packed(
    job: &Job,
    prev: Prev,
    out: &mut Vec<u8>,
    packer: Option<&mut Packer>,
    pre: Option<&Prepacked>,
) {
    let same = |x: &&Prepacked| x.len == job.meta.as_str().len();
    let pre = pre.filter(same).filter(|x| packer.as_ref().is_some_and(|p| std::sync::Arc::ptr_eq(&x.dict, p.dict())));
    encode_job_as(job, prev, out, |head, out, text| match pre {
        Some(Prepacked { dict, packed: Some(z), .. }) => {
            encode_packed(head, out, dict.id, text.len(), z);
        }
        Some(Prepacked { packed: None, .. }) => {
            encode_parts(head, out, |out| out.extend_from_slice(text));
        }
        None => {
            encode_text(head, out, text, packer);
        }
    });
}

/// Append one wide record, as formats 1 to 5 wrote them (tests and fuzzing).
pub fn encode_job_wide(job: &Job, prev: Prev, out: &mut Vec<u8>) {
    encode_job_as(job, prev, out, |head, out, text| {
        encode_wide_parts(head, out, |out| out.extend_from_slice(text));
    });
}

impl<'a> JobView<'a> {
    /// The fields an encoder writes before the document, as this view has them.
    fn head(&self) -> RecordHead<'_> {
        RecordHead {
            key: self.key,
            state: self.state,
            priority: self.priority,
            times: self.times,
            order_seq: self.order_seq,
            tags: &self.tags,
            unique: self.unique,
            prev: self.prev,
        }
    }
}

/// Append a decoded record again, compact (`jobq compact`): every field kept.
pub fn encode_view(v: &JobView<'_>, out: &mut Vec<u8>) {
    let head = v.head();
    match &v.doc {
        Doc::Text(t) => {
            encode_parts(&head, out, |out| out.extend_from_slice(t.as_bytes()));
        }
        Doc::Packed { dict, len, bytes, .. } => {
            encode_packed(&head, out, *dict, *len as usize, bytes);
        }
    }
}

/// [`encode_view`], packing a text document with `packer` when that saves bytes.
pub fn encode_view_packed(v: &JobView<'_>, out: &mut Vec<u8>, packer: Option<&mut Packer>) {
    match (&v.doc, packer) {
        (Doc::Text(t), Some(p)) => {
            encode_text(&v.head(), out, t.as_bytes(), Some(p));
        }
        _ => encode_view(v, out),
    }
}

/// Append one compact record whose document is `text`, packed by `packer`
/// when that saves bytes (format 7); returns the offset of `order_seq`.
pub fn encode_text(h: &RecordHead<'_>, out: &mut Vec<u8>, text: &[u8], packer: Option<&mut Packer>) -> usize {
    let start = out.len();
    let seq_at = encode_text_unsealed(h, out, text, packer);
    seal(out, start);
    seq_at
}

/// [`encode_text`] without the checksum: the record's checksum bytes are zero
/// until the caller, which patches it (the import's appender), [`seal`]s it.
pub fn encode_text_unsealed(h: &RecordHead<'_>, out: &mut Vec<u8>, text: &[u8], packer: Option<&mut Packer>) -> usize {
    if let Some(p) = packer {
        let id = p.dict_id();
        if let Some(z) = p.pack(text) {
            let start = out.len();
            let seq_at = encode_parts_unsealed(h, out, |out| {
                use super::compact::put_varint;
                put_varint(out, u64::from(id));
                put_varint(out, text.len() as u64);
                out.extend_from_slice(z);
            });
            out[start + super::compact::FLAGS_AT] |= FLAG_PACKED;
            return seq_at;
        }
    }
    encode_parts_unsealed(h, out, |out| out.extend_from_slice(text))
}

/// Append one compact record with a packed document: flag bit 1, then varint
/// dictionary id, varint text length, the zstd frame.
pub fn encode_packed(h: &RecordHead<'_>, out: &mut Vec<u8>, dict: u32, len: usize, z: &[u8]) -> usize {
    use super::compact::put_varint;
    let start = out.len();
    let seq_at = encode_parts_unsealed(h, out, |out| {
        put_varint(out, u64::from(dict));
        put_varint(out, len as u64);
        out.extend_from_slice(z);
    });
    out[start + super::compact::FLAGS_AT] |= FLAG_PACKED;
    seal(out, start);
    seq_at
}

/// Encode `job` with `encode`, given its record head and document text.
fn encode_job_as(job: &Job, prev: Prev, out: &mut Vec<u8>, encode: impl FnOnce(&RecordHead<'_>, &mut Vec<u8>, &[u8])) {
    let tags: Vec<&str> = job.tags.iter().map(String::as_str).collect();
    let head = RecordHead {
        key: job.key,
        state: job.state,
        priority: job.priority,
        times: job.times,
        order_seq: job.order_seq,
        tags: &tags,
        unique: job.unique.as_deref(),
        prev,
    };
    encode(&head, out, job.meta.as_str().as_bytes());
}

/// Bytes before a record's body: its length and its checksum.
pub const RECORD_PREFIX: usize = 8;

/// Append one compact record whose document `doc` writes (a JSON object). Returns
/// the offset of the record's `order_seq` field within `out`: a caller that
/// patches it must then [`seal`] the record again.
pub fn encode_parts(h: &RecordHead<'_>, out: &mut Vec<u8>, doc: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    let seq_at = encode_parts_unsealed(h, out, doc);
    seal(out, start);
    seq_at
}

/// [`encode_parts`] with the checksum left zero, for a caller that seals later.
fn encode_parts_unsealed(h: &RecordHead<'_>, out: &mut Vec<u8>, doc: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_PREFIX]);
    let seq_at = super::compact::encode_body(h, out, doc);
    let body = (out.len() - start - RECORD_PREFIX) as u32;
    out[start..start + 4].copy_from_slice(&(body | super::compact::COMPACT_BIT).to_le_bytes());
    seq_at
}

/// [`encode_parts`] in the wide layout of formats 1 to 5.
pub fn encode_wide_parts(h: &RecordHead<'_>, out: &mut Vec<u8>, doc: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_PREFIX]);
    out.write_u32::<LE>(h.key.project).unwrap();
    out.write_u32::<LE>(h.key.spider).unwrap();
    out.write_u32::<LE>(h.key.job).unwrap();
    out.push(h.state.code());
    let mask = h.times.iter().enumerate().fold(0u8, |m, (i, t)| if t.is_some() { m | (1 << i) } else { m });
    out.push(mask);
    out.push(if h.unique.is_some() { FLAG_UNIQUE } else { 0 });
    out.push(h.prev.code());
    out.write_i64::<LE>(h.priority).unwrap();
    let seq_at = out.len();
    out.write_u64::<LE>(h.order_seq).unwrap();
    for t in h.times {
        out.write_u64::<LE>(t.unwrap_or(0)).unwrap();
    }
    out.write_u16::<LE>(u16::try_from(h.tags.len()).expect("tag count validated")).unwrap();
    for tag in h.tags {
        put_str16(out, tag);
    }
    if let Some(u) = h.unique {
        put_str16(out, u);
    }
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    doc(out);
    let doc_len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&doc_len.to_le_bytes());
    let body = (out.len() - start - RECORD_PREFIX) as u32;
    out[start..start + 4].copy_from_slice(&body.to_le_bytes());
    seal(out, start);
    seq_at
}

/// Write the checksum of the record starting at `start` of `buf`.
pub fn seal(buf: &mut [u8], start: usize) {
    let (body_len, _) = split_word(u32::from_le_bytes(buf[start..start + 4].try_into().expect("four bytes")));
    let body = start + RECORD_PREFIX;
    let crc = crate::codec::frame::checksum(&[&buf[body..body + body_len]]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub(super) fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.write_u16::<LE>(u16::try_from(s.len()).expect("string length validated")).unwrap();
    out.extend_from_slice(s.as_bytes());
}

/// Decode the record at the start of `buf`; returns it and the bytes it used.
pub fn decode_job(buf: &[u8]) -> Result<(JobView<'_>, usize), DecodeError> {
    decode_job_crc(buf, true)
}

/// [`decode_job`] without computing the checksum again, for a record whose
/// checksum was verified before and whose bytes cannot have changed since (a
/// record of a mapped segment, see log/reader.rs). Every other check is made.
pub fn decode_checked_job(buf: &[u8]) -> Result<(JobView<'_>, usize), DecodeError> {
    decode_job_crc(buf, false)
}

fn decode_job_crc(buf: &[u8], verify: bool) -> Result<(JobView<'_>, usize), DecodeError> {
    let mut r = ByteReader::new(buf);
    let (body_len, compact) = split_word(r.u32("record length")?);
    let crc = r.u32("record checksum")?;
    if body_len < if compact { super::compact::MIN_BODY } else { RECORD_FIXED + 4 } {
        return Err(DecodeError::new(0, format!("record length {body_len} is too short")));
    }
    let body = r.bytes(body_len, "record body")?;
    if verify && crate::codec::frame::checksum(&[body]) != crc {
        return Err(DecodeError::new(0, "record checksum mismatch"));
    }
    if compact {
        let mut view =
            super::compact::decode_body(body).map_err(|e| DecodeError::new(RECORD_PREFIX + e.offset, e.what))?;
        if let Doc::Packed { at, .. } = &mut view.doc {
            *at += RECORD_PREFIX as u32;
        }
        return Ok((view, RECORD_PREFIX + body_len));
    }
    let mut r = ByteReader::new(body);
    let view = decode_body(&mut r).map_err(|e| DecodeError::new(RECORD_PREFIX + e.offset, e.what))?;
    if r.remaining() != 0 {
        return Err(DecodeError::new(
            RECORD_PREFIX + r.pos(),
            format!("{} bytes left over after the record", r.remaining()),
        ));
    }
    Ok((view, RECORD_PREFIX + body_len))
}

fn decode_body<'a>(r: &mut ByteReader<'a>) -> Result<JobView<'a>, DecodeError> {
    let project = r.u32("project")?;
    let spider = r.u32("spider")?;
    let job = r.u32("job")?;
    if project == 0 || spider == 0 || job == 0 {
        return Err(DecodeError::new(0, "a key component is zero"));
    }
    let state_at = r.pos();
    let state = JobState::from_code(r.u8("state")?).ok_or_else(|| DecodeError::new(state_at, "unknown state code"))?;
    let mask = r.u8("times mask")?;
    let flags = r.u8("flags")?;
    let prev = Prev::from_code(r.u8("prev")?);
    let Some(prev) = prev.filter(|_| mask & !0xF == 0 && flags & !FLAG_UNIQUE == 0) else {
        return Err(DecodeError::new(state_at, "unknown bits in mask or flags, or an unknown previous state"));
    };
    if mask & (1 << state.time_slot()) == 0 {
        return Err(DecodeError::new(state_at, "the time of the current state is missing"));
    }
    let priority = r.i64("priority")?;
    let order_seq = r.u64("order_seq")?;
    let mut times = [None; 4];
    for (i, t) in times.iter_mut().enumerate() {
        let v = r.u64("time")?;
        if mask & (1 << i) != 0 {
            *t = Some(v);
        }
    }
    let ntags = r.u16("tag count")?;
    let mut tags = Vec::with_capacity(usize::from(ntags));
    for _ in 0..ntags {
        tags.push(r.str16("tag")?);
    }
    let unique = if flags & FLAG_UNIQUE != 0 { Some(r.str16("unique")?) } else { None };
    let doc_len = r.u32("document length")? as usize;
    let doc_at = r.pos();
    let doc = r.str(doc_len, "document")?;
    if !(doc.starts_with('{') && doc.ends_with('}')) {
        return Err(DecodeError::new(doc_at, "the document is not a JSON object"));
    }
    let doc = Doc::Text(crate::model::doc::one_line(Cow::Borrowed(doc)));
    Ok(JobView { key: JobKey { project, spider, job }, state, priority, times, order_seq, tags, unique, doc, prev })
}

/// Decode every record of a jobs payload that holds `count` records.
pub fn decode_jobs(payload: &[u8], count: u32) -> Result<Vec<(usize, JobView<'_>)>, DecodeError> {
    // `count` comes from disk: never reserve more than the payload can hold.
    let mut out = Vec::with_capacity((count as usize).min(payload.len() / RECORD_PREFIX));
    let mut pos = 0;
    for _ in 0..count {
        let (view, used) = decode_job(&payload[pos..]).map_err(|e| DecodeError::new(pos + e.offset, e.what))?;
        out.push((pos, view));
        pos += used;
    }
    if pos != payload.len() {
        return Err(DecodeError::new(pos, "bytes left over after the last record"));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
