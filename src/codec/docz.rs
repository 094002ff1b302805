//! Packed metadata documents (format 7): zstd with a dictionary trained on the
//! store's own documents, one frame per document, so that a record still decodes
//! on its own (format-spec/log.md, "Packed documents" and "Dictionary frame").
//!
//! A packed document is a zstd frame without its magic number, content size,
//! dictionary id or checksum (the record's CRC covers it); the record gives the
//! dictionary's id and the document's length, so the output is bounded before a
//! byte is decompressed.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use parking_lot::RwLock;
use zstd::zstd_safe::{self, CCtx, CDict, CParameter, DCtx, DDict, DParameter, FrameFormat};

use super::DecodeError;

/// Bytes of a dictionary this build trains (benches/compare/README.md, "zstd
/// dictionaries": 16 KiB packs the compare data as well as 110 KiB).
pub const DICT_BYTES: usize = 16 << 10;
/// Largest dictionary a frame may carry.
pub const MAX_DICT: usize = 1 << 20;
/// Compression level of the dictionaries this build makes: 1 (zstd's `fast`
/// strategy) takes 4-5% less of an import's CPU than 3 for 0.7% more log bytes
/// (benches/compare/README.md, "Stop 40"). Readers do not depend on it.
pub const LEVEL: i32 = 1;
/// Largest decompressed document: the store's document limit and its slack.
pub const MAX_TEXT: usize = crate::store::fields::MAX_DOC + crate::store::fields::DOC_SLACK;
/// Fewest documents a dictionary is trained on.
pub const MIN_SAMPLES: usize = 1000;

/// One dictionary: its id within the store and its prepared forms.
pub struct Dict {
    pub id: u32,
    raw: Box<[u8]>,
    dec: DDict<'static>,
    enc: CDict<'static>,
}

impl std::fmt::Debug for Dict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dict({}, {} bytes)", self.id, self.raw.len())
    }
}

impl Dict {
    /// A dictionary from its raw bytes (a dictionary frame's); damage is an error.
    pub fn new(id: u32, raw: &[u8]) -> Result<Dict, DecodeError> {
        if id == 0 || raw.is_empty() || raw.len() > MAX_DICT {
            return Err(DecodeError::new(0, format!("dictionary {id}: a zero id, or a size of 0 or over {MAX_DICT}")));
        }
        let bad = || DecodeError::new(4, format!("dictionary {id}: zstd refuses its bytes"));
        let dec = DDict::try_create(raw).ok_or_else(bad)?;
        let enc = CDict::try_create(raw, LEVEL).ok_or_else(bad)?;
        Ok(Dict { id, raw: raw.into(), dec, enc })
    }

    /// Train a dictionary on `samples` (documents); None when zstd cannot.
    pub fn train<S: AsRef<[u8]>>(id: u32, samples: &[S]) -> Option<Dict> {
        if samples.len() < MIN_SAMPLES {
            return None;
        }
        let raw = zstd::dict::from_samples(samples, DICT_BYTES).ok()?;
        Dict::new(id, &raw).ok()
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Decompress a packed document of `len` bytes: a JSON object's UTF-8 text.
    /// Errors are offsets within `packed`.
    pub fn unpack(&self, packed: &[u8], len: usize) -> Result<String, DecodeError> {
        if len > MAX_TEXT {
            return Err(DecodeError::new(
                0,
                format!("a packed document of {len} bytes is over the {MAX_TEXT}-byte limit"),
            ));
        }
        let mut out: Vec<u8> = Vec::with_capacity(len);
        let r = DCTX.with(|c| {
            let mut c = c.borrow_mut();
            let dctx = match &mut *c {
                Some(d) => d,
                None => c.insert(new_dctx().ok_or_else(|| DecodeError::new(0, "zstd: no decompression context"))?),
            };
            dctx.decompress_using_ddict(&mut out, packed, &self.dec)
                .map_err(|code| DecodeError::new(0, format!("packed document: {}", zstd_safe::get_error_name(code))))
        })?;
        if r != len || out.len() != len {
            return Err(DecodeError::new(0, format!("packed document: {r} bytes where the record says {len}")));
        }
        let text = String::from_utf8(out).map_err(|_| DecodeError::new(0, "packed document: not UTF-8"))?;
        if !(text.len() >= 2 && text.starts_with('{') && text.ends_with('}')) {
            return Err(DecodeError::new(0, "packed document: not a JSON object"));
        }
        Ok(text)
    }
}

fn new_dctx() -> Option<DCtx<'static>> {
    let mut d = DCtx::try_create()?;
    d.set_parameter(DParameter::Format(FrameFormat::Magicless)).ok()?;
    Some(d)
}

thread_local! {
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Compresses documents with one dictionary (one per thread: it holds a context).
pub struct Packer {
    cctx: CCtx<'static>,
    dict: Arc<Dict>,
    buf: Vec<u8>,
}

impl Packer {
    pub fn new(dict: Arc<Dict>) -> Option<Packer> {
        let mut cctx = CCtx::try_create()?;
        for p in [
            CParameter::Format(FrameFormat::Magicless),
            CParameter::ContentSizeFlag(false),
            CParameter::ChecksumFlag(false),
            CParameter::DictIdFlag(false),
        ] {
            cctx.set_parameter(p).ok()?;
        }
        // Referenced once: it stays for every later frame (the Packer owns the
        // dictionary, so it outlives the context's reference).
        cctx.ref_cdict(&dict.enc).ok()?;
        Some(Packer { cctx, dict, buf: Vec::new() })
    }

    /// The dictionary this packer packs with.
    pub fn dict(&self) -> &Arc<Dict> {
        &self.dict
    }

    pub fn dict_id(&self) -> u32 {
        self.dict.id
    }

    /// The packed form of `text`, when it is smaller than `text` by more than
    /// the varints a packed document adds; None keeps the document as text.
    pub fn pack(&mut self, text: &[u8]) -> Option<&[u8]> {
        if text.len() < 8 || text.len() > MAX_TEXT {
            return None;
        }
        self.buf.clear();
        self.buf.reserve(zstd_safe::compress_bound(text.len()));
        let n = self.cctx.compress2(&mut self.buf, text).ok()?;
        let overhead = varint_len(u64::from(self.dict.id)) + varint_len(text.len() as u64);
        (n + overhead < text.len()).then_some(&self.buf[..n])
    }
}

/// A document packed before the writer lock (a push's, final before it): what
/// the writer's packer, with the same dictionary, writes for it. The writer uses
/// it only while `dict` is still its newest dictionary.
#[derive(Debug, Clone)]
pub struct Prepacked {
    pub dict: Arc<Dict>,
    /// The document's length (a check that it is the one packed).
    pub len: usize,
    /// The packed frame; `None`: the document stays text.
    pub packed: Option<Box<[u8]>>,
}

thread_local! {
    static PACKER: RefCell<Option<Packer>> = const { RefCell::new(None) };
}

/// Pack `text` with `dict` as a [`Packer`] does, with this thread's packer (made
/// or remade for `dict` as needed; it keeps `dict` alive until then, or until the
/// thread ends); `None` when zstd gives no context.
pub fn prepack(dict: &Arc<Dict>, text: &[u8]) -> Option<Prepacked> {
    PACKER.with(|c| {
        let mut c = c.borrow_mut();
        if !c.as_ref().is_some_and(|p| Arc::ptr_eq(&p.dict, dict)) {
            *c = Some(Packer::new(dict.clone())?);
        }
        let p = c.as_mut()?;
        Some(Prepacked { dict: dict.clone(), len: text.len(), packed: p.pack(text).map(Box::from) })
    })
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The dictionaries of a store, by id (few; shared by readers and writers).
#[derive(Default, Debug)]
pub struct Dicts {
    all: RwLock<Vec<Arc<Dict>>>,
}

impl Dicts {
    pub fn get(&self, id: u32) -> Option<Arc<Dict>> {
        self.all.read().iter().find(|d| d.id == id).cloned()
    }

    /// Add a dictionary; one of the same id is kept (ids name one content).
    pub fn add(&self, d: Arc<Dict>) {
        let mut all = self.all.write();
        if !all.iter().any(|x| x.id == d.id) {
            all.push(d);
            all.sort_by_key(|d| d.id);
        }
    }

    /// Forget a dictionary whose frame was taken back (a failed import's).
    pub fn remove(&self, id: u32) {
        self.all.write().retain(|d| d.id != id);
    }

    /// The newest dictionary: the one writes pack with.
    pub fn latest(&self) -> Option<Arc<Dict>> {
        self.all.read().last().cloned()
    }

    pub fn all(&self) -> Vec<Arc<Dict>> {
        self.all.read().clone()
    }

    pub fn next_id(&self) -> u32 {
        self.all.read().last().map_or(1, |d| d.id + 1)
    }

    pub fn is_empty(&self) -> bool {
        self.all.read().is_empty()
    }

    /// The text of a packed document (see [`Dict::unpack`]).
    pub fn unpack(&self, id: u32, packed: &[u8], len: usize) -> Result<String, DecodeError> {
        let d = self.get(id).ok_or_else(|| {
            DecodeError::new(0, format!("the document is packed with dictionary {id}, which the store does not hold"))
        })?;
        d.unpack(packed, len)
    }
}

/// Dictionary payload: u32 id, then the dictionary's raw bytes.
pub fn encode_dict(d: &Dict, out: &mut Vec<u8>) {
    out.extend_from_slice(&d.id.to_le_bytes());
    out.extend_from_slice(&d.raw);
}

pub fn decode_dict(payload: &[u8]) -> Result<Dict, DecodeError> {
    let id = payload.first_chunk::<4>().map(|b| u32::from_le_bytes(*b));
    let id = id.ok_or_else(|| DecodeError::new(0, "dictionary payload shorter than its id"))?;
    Dict::new(id, &payload[4..])
}

/// A document's text, borrowed from a record or decompressed from it.
pub type DocText<'a> = Cow<'a, str>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Documents like the compare data's.
    pub fn sample_docs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    r#"{{"units":{},"version":"1.{}.{}","spider_args":{{"url":"https://site-{}.example.com/c/{}","pages":{}}},"scheduled_by":"user{}@example.org","close_reason":"{}"}}"#,
                    i % 3 + 1,
                    i % 7,
                    i % 31,
                    i * 7919 % 5000,
                    i * 104_729 % 100_000,
                    i % 500,
                    i % 300,
                    ["finished", "cancelled", "failed"][i % 3]
                )
            })
            .collect()
    }

    pub fn sample_dict(id: u32) -> Arc<Dict> {
        Arc::new(Dict::train(id, &sample_docs(2000)).expect("trains"))
    }

    #[test]
    fn documents_round_trip_smaller() {
        let d = sample_dict(1);
        let mut p = Packer::new(d.clone()).unwrap();
        let docs = sample_docs(300);
        let (mut raw, mut packed) = (0, 0);
        for doc in &docs {
            let z = p.pack(doc.as_bytes()).expect("packs").to_vec();
            raw += doc.len();
            packed += z.len();
            assert_eq!(d.unpack(&z, doc.len()).unwrap(), *doc);
        }
        assert!(packed * 3 < raw, "{packed} vs {raw}");
        // Tiny documents stay text.
        assert!(p.pack(b"{}").is_none());
        assert!(p.pack(br#"{"a":1}"#).is_none());
        // A dictionary survives its payload.
        let mut pl = Vec::new();
        encode_dict(&d, &mut pl);
        let again = decode_dict(&pl).unwrap();
        assert_eq!((again.id, again.raw()), (1, d.raw()));
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let d = sample_dict(3);
        let mut p = Packer::new(d.clone()).unwrap();
        let doc = &sample_docs(5)[4];
        let z = p.pack(doc.as_bytes()).unwrap().to_vec();
        // Wrong lengths: shorter, longer, over the limit (a bomb is refused before any work).
        assert!(d.unpack(&z, doc.len() - 1).is_err());
        assert!(d.unpack(&z, doc.len() + 1).is_err());
        assert!(d.unpack(&z, MAX_TEXT + 1).unwrap_err().what.contains("limit"));
        for cut in 0..z.len() {
            assert!(d.unpack(&z[..cut], doc.len()).is_err());
        }
        for i in 0..z.len() {
            for x in [1u8, 0x80, 0xff] {
                let mut bad = z.clone();
                bad[i] ^= x;
                if let Ok(t) = d.unpack(&bad, doc.len()) {
                    assert!(t.starts_with('{'));
                }
            }
        }
        // A frame that expands past the declared length: refused, the output bounded.
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(100_000));
        let z = p.pack(big.as_bytes()).unwrap().to_vec();
        assert!(z.len() < 1000);
        assert!(d.unpack(&z, 200).is_err());
        // Unknown dictionaries, bad dictionary payloads.
        let all = Dicts::default();
        all.add(d);
        assert!(all.unpack(9, &z, big.len()).unwrap_err().what.contains("dictionary 9"));
        assert_eq!(all.unpack(3, &z, big.len()).unwrap(), big);
        assert!(decode_dict(&[1, 0]).is_err());
        assert!(decode_dict(&[0, 0, 0, 0, 1, 2, 3]).is_err());
        let mut pl = 7u32.to_le_bytes().to_vec();
        pl.extend_from_slice(&0xEC30A437u32.to_le_bytes()); // the dictionary magic, then garbage
        pl.extend_from_slice(&[0xff; 64]);
        assert!(decode_dict(&pl).is_err());
    }

    #[test]
    fn every_packer_packs_a_document_alike() {
        // The writer trusts a document packed before its lock to be what its own
        // packer would write: a used context, a fresh one and this thread's
        // (switching dictionaries, after a large document) give the same bytes.
        let (d, other) = (sample_dict(2), sample_dict(4));
        let mut used = Packer::new(d.clone()).unwrap();
        let big = format!("{{\"x\":\"{}\"}}", "ab1".repeat(40_000));
        let mut docs = sample_docs(400);
        docs.insert(100, big.clone());
        docs.insert(200, "{}".into());
        for (i, doc) in docs.iter().enumerate() {
            let fresh = Packer::new(d.clone()).unwrap().pack(doc.as_bytes()).map(<[u8]>::to_vec);
            assert_eq!(used.pack(doc.as_bytes()).map(<[u8]>::to_vec), fresh, "document {i}");
            if i % 7 == 0 {
                prepack(&other, big.as_bytes()).unwrap();
            }
            let pre = prepack(&d, doc.as_bytes()).unwrap();
            assert!(Arc::ptr_eq(&pre.dict, &d));
            assert_eq!(pre.packed.as_deref(), fresh.as_deref(), "document {i}");
            assert_eq!(fresh.is_none(), doc.len() < 8, "document {i}");
        }
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [(0u64, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (u64::MAX, 10)] {
            assert_eq!(varint_len(v), n, "{v}");
        }
    }
}
