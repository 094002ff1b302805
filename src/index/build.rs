//! Building an index file image from job versions: per project, the docs sorted by
//! `ts` descending (ties: later `order_seq` first), their columns, the key lookup
//! table, and a posting list per state, spider, tag, priority, active `unique`
//! and `close_reason`.

use std::sync::Arc;

use byteorder::{LittleEndian as LE, WriteBytesExt};

use super::format::{self, field, DirEntry, Footer, SegmentMeta, SECTION_HEADER, TERM_ENTRY};
use super::{packed, posting};
use crate::codec::docz::Dict;
use crate::codec::frame::checksum;
use crate::codec::record::{encode_catalog, SpiderEntry};
use crate::hash::FastMap;
use crate::model::JobState;

/// One job version to index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocEntry {
    pub project: u32,
    /// `spider << 32 | job`.
    pub local: u64,
    pub ts: u64,
    pub order_seq: u64,
    pub state: JobState,
    pub priority: i64,
    pub tags: Arc<[Arc<str>]>,
    pub unique: Option<Arc<str>>,
    /// The `close_reason` term (`None`: no close_reason, or one too long to index).
    pub close_reason: Option<Arc<str>>,
    /// A running version's auth token (its last `auth` field, when a string).
    pub token: Option<Arc<str>>,
    /// Packed log position of the record.
    pub loc: u64,
}

impl DocEntry {
    /// The listing order: `ts` descending, then `order_seq` descending.
    pub fn order_key(&self) -> (u64, u64) {
        (self.ts, self.order_seq)
    }
}

fn pad8(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
}

/// Build the bytes of an index file. `docs` holds at most one version per key
/// (the caller keeps the newest); any order.
pub fn build(docs: Vec<DocEntry>, meta: SegmentMeta, catalog: &[SpiderEntry], dicts: &[Arc<Dict>]) -> Vec<u8> {
    // Sort small keys, not whole entries: project, then the listing order.
    let mut order: Vec<(u32, u64, u64, u32)> =
        docs.iter().enumerate().map(|(i, d)| (d.project, !d.ts, !d.order_seq, i as u32)).collect();
    order.sort_unstable();
    let sorted: Vec<&DocEntry> = order.iter().map(|o| &docs[o.3 as usize]).collect();
    let mut out = Vec::with_capacity(64 + docs.len() * 64);
    let meta = SegmentMeta { docs: docs.len() as u64, ..meta };
    out.extend_from_slice(&format::encode_header(&meta));
    let mut dir = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let project = sorted[i].project;
        let j = i + sorted[i..].partition_point(|d| d.project == project);
        pad8(&mut out);
        let start = out.len();
        build_section(project, &sorted[i..j], &mut out);
        let crc = checksum(&[&out[start..]]);
        dir.push(DirEntry {
            project,
            docs: (j - i) as u32,
            offset: start as u64,
            len: (out.len() - start) as u64,
            crc,
        });
        i = j;
    }
    let head: [u8; format::HEADER_LEN] = out[..format::HEADER_LEN].try_into().expect("header written");
    let tail = encode_tail(out.len() as u64, &head, &dir, catalog, dicts);
    out.extend_from_slice(&tail);
    out
}

/// What follows the last section when it ends at `at`: padding, the catalog, the
/// directory and the footer (whose CRC covers `head`, the header).
pub(crate) fn encode_tail(
    at: u64,
    head: &[u8],
    dir: &[DirEntry],
    catalog: &[SpiderEntry],
    dicts: &[Arc<Dict>],
) -> Vec<u8> {
    let mut out = Vec::new();
    let pad = |out: &mut Vec<u8>| {
        while !(at + out.len() as u64).is_multiple_of(8) {
            out.push(0);
        }
    };
    pad(&mut out);
    let cat_at = out.len();
    encode_catalog(catalog, &mut out);
    out.write_u32::<LE>(dicts.len() as u32).unwrap();
    for d in dicts {
        out.write_u32::<LE>(d.id).unwrap();
        out.write_u32::<LE>(d.raw().len() as u32).unwrap();
        out.extend_from_slice(d.raw());
    }
    let cat_len = out.len() - cat_at;
    pad(&mut out);
    let dir_at = out.len();
    out.write_u32::<LE>(dir.len() as u32).unwrap();
    out.write_u32::<LE>(0).unwrap();
    for d in dir {
        out.write_u32::<LE>(d.project).unwrap();
        out.write_u32::<LE>(d.docs).unwrap();
        out.write_u64::<LE>(d.offset).unwrap();
        out.write_u64::<LE>(d.len).unwrap();
        out.write_u32::<LE>(d.crc).unwrap();
        out.write_u32::<LE>(0).unwrap();
    }
    let footer = Footer {
        dir_offset: at + dir_at as u64,
        dir_len: (out.len() - dir_at) as u64,
        catalog_offset: at + cat_at as u64,
        catalog_len: cat_len as u64,
    };
    let f = format::encode_footer(&footer, |f| checksum(&[head, &out[dir_at..], &out[cat_at..cat_at + cat_len], f]));
    out.extend_from_slice(&f);
    out
}

/// A term as stored: field code and term bytes.
pub(crate) type EncodedTerm = (u8, Vec<u8>);

/// Posting lists of one section, per field.
#[derive(Default)]
struct Terms<'a> {
    state: [Vec<u32>; 5],
    spider: FastMap<u32, Vec<u32>>,
    priority: FastMap<i64, Vec<u32>>,
    tag: FastMap<&'a str, Vec<u32>>,
    unique: FastMap<&'a str, Vec<u32>>,
    close_reason: FastMap<&'a str, Vec<u32>>,
    token: FastMap<&'a str, Vec<u32>>,
}

impl<'a> Terms<'a> {
    fn collect(docs: &[&'a DocEntry]) -> Terms<'a> {
        let mut t = Terms::default();
        for (doc, d) in docs.iter().enumerate() {
            let doc = doc as u32;
            t.state[d.state as usize].push(doc);
            t.spider.entry((d.local >> 32) as u32).or_default().push(doc);
            t.priority.entry(d.priority).or_default().push(doc);
            for tag in d.tags.iter() {
                let list = t.tag.entry(tag).or_default();
                if list.last() != Some(&doc) {
                    list.push(doc);
                }
            }
            if let (Some(u), true) = (&d.unique, d.state.is_active()) {
                t.unique.entry(u).or_default().push(doc);
            }
            if let Some(c) = &d.close_reason {
                t.close_reason.entry(c).or_default().push(doc);
            }
            if let (Some(k), JobState::Running) = (&d.token, d.state) {
                t.token.entry(k).or_default().push(doc);
            }
        }
        t
    }

    /// Every non-empty posting list with its encoded term, in dictionary order.
    fn sorted(self) -> Vec<(EncodedTerm, Vec<u32>)> {
        let mut out: Vec<(EncodedTerm, Vec<u32>)> = Vec::new();
        for (code, list) in self.state.into_iter().enumerate() {
            if !list.is_empty() {
                out.push(((field::STATE, vec![code as u8]), list));
            }
        }
        out.extend(self.spider.into_iter().map(|(s, l)| ((field::SPIDER, s.to_le_bytes().to_vec()), l)));
        out.extend(self.tag.into_iter().map(|(t, l)| ((field::TAG, t.as_bytes().to_vec()), l)));
        out.extend(self.priority.into_iter().map(|(p, l)| ((field::PRIORITY, p.to_le_bytes().to_vec()), l)));
        out.extend(self.unique.into_iter().map(|(u, l)| ((field::UNIQUE, u.as_bytes().to_vec()), l)));
        out.extend(self.close_reason.into_iter().map(|(c, l)| ((field::CLOSE_REASON, c.as_bytes().to_vec()), l)));
        out.extend(self.token.into_iter().map(|(k, l)| ((field::TOKEN, k.as_bytes().to_vec()), l)));
        sort_terms(&mut out);
        out
    }
}

/// One project's section; `docs` are in listing order.
fn build_section(project: u32, docs: &[&DocEntry], out: &mut Vec<u8>) {
    let mut cols = Columns::new(docs.len());
    for d in docs {
        cols.push(d.ts, d.order_seq, d.local, d.loc);
    }
    let terms = Terms::collect(docs).sorted();
    let start = out.len();
    cols.finish(project, terms.len(), &mut |piece| {
        out.extend_from_slice(piece);
        Ok(())
    })
    .expect("writing to memory");
    let dict_at = (out.len() - start) as u64;
    out.extend_from_slice(&encode_terms(&terms, dict_at));
}

/// A section's packed columns while its docs come in listing order; the key
/// table is made at the end.
pub(crate) struct Columns {
    n: usize,
    /// ts, seq, spider, job, loc.
    packers: [packed::Packer; 5],
    keys: Vec<(u64, u32)>,
}

impl Columns {
    pub(crate) fn new(n: usize) -> Columns {
        Columns { n, packers: std::array::from_fn(|_| packed::Packer::new(n)), keys: Vec::with_capacity(n) }
    }

    pub(crate) fn push(&mut self, ts: u64, order_seq: u64, local: u64, loc: u64) {
        let doc = self.keys.len() as u32;
        for (p, v) in self.packers.iter_mut().zip([ts, order_seq, local >> 32, local & 0xFFFF_FFFF, loc]) {
            p.push(v);
        }
        self.keys.push((local, doc));
    }

    /// Hand `write` the section from its start to its dictionary, in order: the
    /// header, the columns, the padding to 8. The dictionary follows at the
    /// offset the bytes handed add up to.
    pub(crate) fn finish(
        self,
        project: u32,
        terms: usize,
        write: &mut dyn FnMut(&[u8]) -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        let Columns { n, packers, mut keys } = self;
        keys.sort_unstable();
        let mut by_key = packed::Packer::new(n);
        keys.into_iter().for_each(|(_, doc)| by_key.push(u64::from(doc)));
        let cols: Vec<(Vec<u8>, Vec<u8>)> = packers.into_iter().chain([by_key]).map(|p| p.finish()).collect();
        let mut offsets = [0u64; 7];
        let mut at = SECTION_HEADER as u64;
        for (k, (h, d)) in cols.iter().enumerate() {
            offsets[k] = at;
            at += (h.len() + d.len()) as u64;
        }
        offsets[6] = at.div_ceil(8) * 8;
        write(&section_header(project, n, terms, &offsets))?;
        for (h, d) in &cols {
            write(h)?;
            write(d)?;
        }
        write(&[0u8; 8][..(offsets[6] - at) as usize])
    }
}

/// Terms in dictionary order: field code, then term bytes.
pub(crate) fn sort_terms(terms: &mut [(EncodedTerm, Vec<u32>)]) {
    terms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
}

/// A section's header: project, docs, terms, then the offsets (within the section)
/// of the ts, seq, spider, job, loc and `by_key` columns and of the dictionary.
pub(crate) fn section_header(project: u32, docs: usize, terms: usize, offsets: &[u64; 7]) -> [u8; SECTION_HEADER] {
    let mut h = [0u8; SECTION_HEADER];
    h[0..4].copy_from_slice(&project.to_le_bytes());
    h[4..8].copy_from_slice(&(docs as u32).to_le_bytes());
    h[8..12].copy_from_slice(&(terms as u32).to_le_bytes());
    for (k, v) in offsets.iter().enumerate() {
        h[16 + k * 8..24 + k * 8].copy_from_slice(&v.to_le_bytes());
    }
    h
}

/// The end of a section from its dictionary on (`dict_at`, 8-aligned, within the
/// section): the term entries, the term bytes, padding, the posting lists.
pub(crate) fn encode_terms(terms: &[(EncodedTerm, Vec<u32>)], dict_at: u64) -> Vec<u8> {
    let mut out = vec![0u8; terms.len() * TERM_ENTRY];
    for ((_, t), _) in terms {
        out.extend_from_slice(t);
    }
    pad8(&mut out);
    let mut term_off = 0u32;
    for (k, ((f, t), list)) in terms.iter().enumerate() {
        let posting_at = dict_at + out.len() as u64;
        posting::encode(list, &mut out);
        let e = &mut out[k * TERM_ENTRY..(k + 1) * TERM_ENTRY];
        e[0] = *f;
        e[1] = 0;
        e[2..4].copy_from_slice(&(t.len() as u16).to_le_bytes());
        e[4..8].copy_from_slice(&term_off.to_le_bytes());
        let posting_at = u32::try_from(posting_at).expect("a section is under 4 GiB (format-spec/index.md)");
        e[8..12].copy_from_slice(&posting_at.to_le_bytes());
        term_off += t.len() as u32;
    }
    out
}
