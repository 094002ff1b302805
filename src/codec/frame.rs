//! Frame headers. A frame is a 32-byte header and a payload; its checksum covers
//! every byte of both except the checksum field itself, so zeros and garbage do not
//! decode as a frame.
//!
//! ```text
//! 0  u32 crc          masked CRC-32 (IEEE) of bytes 4 .. 32+len
//! 4  u32 len          payload length
//! 8  u8  kind         1 jobs, 2 spider, 3 catalog, 4 commit, 5 dictionary, 6 Raft entry
//! 9  u8  flags        bit 0: part of an open import transaction; bit 1: relocated
//! 10 u16 reserved     0
//! 12 u32 count        sequence numbers the frame uses (records in a jobs frame)
//! 16 u64 first_seq    sequence number of the first record
//! 24 u64 durable_seq  highest sequence number known durable when written
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

pub const HEADER_LEN: usize = 32;
/// Largest payload a frame may carry; longer lengths are damage.
pub const MAX_PAYLOAD: u32 = 1 << 30;
/// Flag: the frame belongs to an import transaction that a commit frame closes.
pub const FLAG_TXN: u8 = 1;
/// Flag (jobs frames only): the records are copies of current versions moved by
/// online compaction from an older segment; they change no job.
pub const FLAG_RELOCATED: u8 = 2;

const MASK_DELTA: u32 = 0xa282_ead8;

/// Mask a CRC so that a checksum stored in checksummed data does not checksum itself.
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// CRC-32 (IEEE) as stored: masked.
pub fn checksum(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    mask_crc(h.finalize())
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Job versions.
    Jobs = 1,
    /// A spider name registered with its id.
    Spider = 2,
    /// Every spider with its next job id (written by compaction).
    Catalog = 3,
    /// Closes the open import transaction.
    Commit = 4,
    /// A zstd dictionary for packed documents (format 7).
    Dict = 5,
    /// A Raft entry: the head of the data frames that follow (a cluster node's log).
    Entry = 6,
}

impl FrameKind {
    pub fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Jobs),
            2 => Some(FrameKind::Spider),
            3 => Some(FrameKind::Catalog),
            4 => Some(FrameKind::Commit),
            5 => Some(FrameKind::Dict),
            6 => Some(FrameKind::Entry),
            _ => None,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub crc: u32,
    pub len: u32,
    pub kind: FrameKind,
    pub flags: u8,
    pub count: u32,
    pub first_seq: u64,
    pub durable_seq: u64,
}

impl FrameHeader {
    /// Header plus payload length.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    /// The last sequence number this frame uses.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }

    pub fn is_txn(&self) -> bool {
        self.flags & FLAG_TXN != 0
    }

    /// The records were moved by compaction: copies, not new versions.
    pub fn is_relocation(&self) -> bool {
        self.flags & FLAG_RELOCATED != 0
    }
}

/// Append one whole frame to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    kind: FrameKind,
    flags: u8,
    first_seq: u64,
    count: u32,
    durable_seq: u64,
    payload: &[u8],
) {
    assert!(payload.len() as u64 <= u64::from(MAX_PAYLOAD), "frame payload over the limit");
    assert!(count > 0, "a frame uses at least one sequence number");
    let start = out.len();
    let mut h = [0u8; HEADER_LEN];
    LE::write_u32(&mut h[4..8], payload.len() as u32);
    h[8] = kind as u8;
    h[9] = flags;
    LE::write_u32(&mut h[12..16], count);
    LE::write_u64(&mut h[16..24], first_seq);
    LE::write_u64(&mut h[24..32], durable_seq);
    let crc = checksum(&[&h[4..], payload]);
    LE::write_u32(&mut h[0..4], crc);
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - start, HEADER_LEN + payload.len());
}

/// Decode a header's fields and check the ones that need no payload. The checksum
/// is checked by [`verify`] once the payload is read.
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<FrameHeader, &'static str> {
    let len = LE::read_u32(&h[4..8]);
    let kind = FrameKind::from_code(h[8]).ok_or("unknown frame kind")?;
    let flags = h[9];
    if flags & !(FLAG_TXN | FLAG_RELOCATED) != 0 {
        return Err("unknown frame flags");
    }
    if LE::read_u16(&h[10..12]) != 0 {
        return Err("reserved header bytes are not zero");
    }
    if len > MAX_PAYLOAD {
        return Err("payload length over the limit");
    }
    let count = LE::read_u32(&h[12..16]);
    if count == 0 {
        return Err("frame uses no sequence number");
    }
    if kind != FrameKind::Jobs && count != 1 {
        return Err("a spider, catalog or commit frame uses other than one sequence number");
    }
    let first_seq = LE::read_u64(&h[16..24]);
    if first_seq == 0 || first_seq.checked_add(u64::from(count)).is_none() {
        return Err("sequence number out of range");
    }
    Ok(FrameHeader {
        crc: LE::read_u32(&h[0..4]),
        len,
        kind,
        flags,
        count,
        first_seq,
        durable_seq: LE::read_u64(&h[24..32]),
    })
}

/// True when the checksum in `header` matches the header bytes and the payload.
pub fn verify(h: &[u8; HEADER_LEN], header: &FrameHeader, payload: &[u8]) -> bool {
    payload.len() == header.len as usize && checksum(&[&h[4..], payload]) == header.crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_matters() {
        let mut out = Vec::new();
        encode(&mut out, FrameKind::Jobs, 0, 7, 3, 6, b"hello");
        let h: [u8; HEADER_LEN] = out[..HEADER_LEN].try_into().unwrap();
        let hdr = decode_header(&h).unwrap();
        assert_eq!((hdr.len, hdr.count, hdr.first_seq, hdr.durable_seq, hdr.last_seq()), (5, 3, 7, 6, 9));
        assert!(verify(&h, &hdr, &out[HEADER_LEN..]));
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let h: [u8; HEADER_LEN] = bad[..HEADER_LEN].try_into().unwrap();
            let ok = decode_header(&h).is_ok_and(|hdr| verify(&h, &hdr, &bad[HEADER_LEN..]));
            assert!(!ok, "flipping bit {bit} went unnoticed");
        }
    }

    #[test]
    fn only_a_jobs_frame_uses_several_sequence_numbers() {
        for (kind, ok) in [
            (FrameKind::Jobs, true),
            (FrameKind::Spider, false),
            (FrameKind::Catalog, false),
            (FrameKind::Commit, false),
            (FrameKind::Dict, false),
        ] {
            let mut out = Vec::new();
            encode(&mut out, kind, 0, 7, 2, 0, b"x");
            let h: [u8; HEADER_LEN] = out[..HEADER_LEN].try_into().unwrap();
            assert_eq!(decode_header(&h).is_ok(), ok, "{kind:?} with count 2");
        }
    }

    #[test]
    fn zeros_are_not_a_frame() {
        let h = [0u8; HEADER_LEN];
        assert!(decode_header(&h).is_err());
    }
}
