//! Raft entry frames (kind 6, format-spec/log.md "Raft entry"): a cluster node's
//! log is a run of entries, each an entry frame followed by the data frames it
//! carries (a normal entry's jobs, spider, catalog and dictionary frames, exactly
//! as a single node writes them). A single-node store never writes one.
//!
//! ```text
//! 0  u64 index       the entry's Raft log index
//! 8  u64 term        its leader's term
//! 16 u64 leader      its leader's node id
//! 24 u64 committed   the highest index the writing node knew committed (flag bit 0)
//! 32 u8  type        0 blank, 1 normal, 2 membership
//! 33 u8  flags       bit 0: `committed` is set
//! 34 u16 reserved    0
//! 36 u32 frames      data frames that follow and belong to the entry
//! 40 u32 data_len    their bytes, headers included
//! 44 u32 body_len    membership: the JSON body's length; else 0
//! 48 ..  body        membership: openraft's `Membership` as JSON
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

use super::DecodeError;

/// The fixed part of an entry frame's payload.
pub const ENTRY_FIXED: usize = 48;
/// Most data bytes one entry may carry (a write queue batch stays far below).
pub const MAX_ENTRY_DATA: u32 = 1 << 30;

const FLAG_COMMITTED: u8 = 1;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    /// A new leader's first entry.
    Blank = 0,
    /// Writes: the data frames that follow.
    Normal = 1,
    /// A membership change: the body.
    Membership = 2,
}

/// An entry frame's fixed fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHead {
    pub index: u64,
    pub term: u64,
    pub leader: u64,
    pub committed: Option<u64>,
    pub kind: EntryType,
    pub frames: u32,
    pub data_len: u32,
}

/// Append an entry frame's payload (`body`: a membership entry's JSON) to `out`.
pub fn encode(h: &EntryHead, body: &[u8], out: &mut Vec<u8>) {
    let mut b = [0u8; ENTRY_FIXED];
    LE::write_u64(&mut b[0..8], h.index);
    LE::write_u64(&mut b[8..16], h.term);
    LE::write_u64(&mut b[16..24], h.leader);
    LE::write_u64(&mut b[24..32], h.committed.unwrap_or(0));
    b[32] = h.kind as u8;
    b[33] = if h.committed.is_some() { FLAG_COMMITTED } else { 0 };
    LE::write_u32(&mut b[36..40], h.frames);
    LE::write_u32(&mut b[40..44], h.data_len);
    LE::write_u32(&mut b[44..48], body.len() as u32);
    out.extend_from_slice(&b);
    out.extend_from_slice(body);
}

/// Decode an entry frame's payload: its head and its body.
pub fn decode(p: &[u8]) -> Result<(EntryHead, &[u8]), DecodeError> {
    if p.len() < ENTRY_FIXED {
        return Err(DecodeError::new(0, format!("an entry frame needs {ENTRY_FIXED} bytes, has {}", p.len())));
    }
    let kind = match p[32] {
        0 => EntryType::Blank,
        1 => EntryType::Normal,
        2 => EntryType::Membership,
        t => return Err(DecodeError::new(32, format!("unknown entry type {t}"))),
    };
    let flags = p[33];
    if flags & !FLAG_COMMITTED != 0 {
        return Err(DecodeError::new(33, format!("unknown entry flags {flags:#04x}")));
    }
    if p[34] != 0 || p[35] != 0 {
        return Err(DecodeError::new(34, "reserved bytes are not zero"));
    }
    let committed = LE::read_u64(&p[24..32]);
    if flags & FLAG_COMMITTED == 0 && committed != 0 {
        return Err(DecodeError::new(24, "a committed index without its flag"));
    }
    let h = EntryHead {
        index: LE::read_u64(&p[0..8]),
        term: LE::read_u64(&p[8..16]),
        leader: LE::read_u64(&p[16..24]),
        committed: (flags & FLAG_COMMITTED != 0).then_some(committed),
        kind,
        frames: LE::read_u32(&p[36..40]),
        data_len: LE::read_u32(&p[40..44]),
    };
    let body_len = LE::read_u32(&p[44..48]) as usize;
    if body_len != p.len() - ENTRY_FIXED {
        return Err(DecodeError::new(44, format!("body length {body_len}, the frame has {}", p.len() - ENTRY_FIXED)));
    }
    let body = &p[ENTRY_FIXED..];
    match kind {
        EntryType::Normal if h.frames == 0 || h.data_len == 0 => {
            return Err(DecodeError::new(36, "a normal entry carries no frame"))
        }
        EntryType::Normal if h.data_len > MAX_ENTRY_DATA => {
            return Err(DecodeError::new(40, format!("entry data of {} bytes, over the limit", h.data_len)))
        }
        EntryType::Normal if !body.is_empty() => return Err(DecodeError::new(44, "a normal entry with a body")),
        EntryType::Blank if h.frames != 0 || h.data_len != 0 || !body.is_empty() => {
            return Err(DecodeError::new(36, "a blank entry carries data"))
        }
        EntryType::Membership if h.frames != 0 || h.data_len != 0 => {
            return Err(DecodeError::new(36, "a membership entry carries frames"))
        }
        EntryType::Membership if body.is_empty() => {
            return Err(DecodeError::new(44, "a membership entry without body"))
        }
        _ => {}
    }
    if let Some(c) = h.committed {
        if c >= h.index {
            return Err(DecodeError::new(24, format!("committed index {c} not below the entry's {}", h.index)));
        }
    }
    Ok((h, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(kind: EntryType) -> EntryHead {
        let (frames, data_len) = if kind == EntryType::Normal { (2, 100) } else { (0, 0) };
        EntryHead { index: 7, term: 3, leader: 2, committed: Some(5), kind, frames, data_len }
    }

    #[test]
    fn entries_round_trip() {
        for (kind, body) in [(EntryType::Blank, &b""[..]), (EntryType::Normal, b""), (EntryType::Membership, b"{}")] {
            let mut out = Vec::new();
            encode(&head(kind), body, &mut out);
            assert_eq!(decode(&out).unwrap(), (head(kind), body));
        }
        let mut out = Vec::new();
        encode(&EntryHead { committed: None, index: 0, ..head(EntryType::Blank) }, b"", &mut out);
        assert_eq!(decode(&out).unwrap().0.committed, None);
    }

    #[test]
    fn damaged_entries_are_refused_at_their_byte() {
        let mut good = Vec::new();
        encode(&head(EntryType::Normal), b"", &mut good);
        let cases: [(usize, u8, usize); 5] = [(32, 9, 32), (33, 4, 33), (34, 1, 34), (36, 0, 36), (24, 9, 24)];
        for (at, value, expected) in cases {
            let mut b = good.clone();
            b[at] = value;
            if at == 36 {
                b[37..40].fill(0);
            }
            assert_eq!(decode(&b).unwrap_err().offset, expected, "byte {at} = {value}");
        }
        assert_eq!(decode(&good[..40]).unwrap_err().offset, 0);
        let mut body = good.clone();
        body.push(b'x');
        assert_eq!(decode(&body).unwrap_err().offset, 44);
    }
}
