//! Durable marks: where the synced part of a log segment ends, kept in two slots
//! in the segment's own header pages (format-spec/log.md, "Durable marks").
//!
//! A mark is written only with what an earlier fdatasync already made durable,
//! just before the next fdatasync of the same file, which makes the mark durable
//! in turn. So a mark never claims bytes that were not durable, and recovery needs
//! no search for "evidence" among bytes that a torn write may have left: a bad
//! frame before the mark's end is damage, one at or after it is a torn tail.
//!
//! The two slots sit on separate 4 KiB pages, written alternately: a torn write of
//! one slot leaves the other, older, mark intact (never overwrite the last durable
//! copy).
//!
//! ```text
//! slot, 56 bytes at offset 4096 (slot 0) or 8192 (slot 1):
//! 0  [u8; 8] magic "JOBQMRK\0"
//! 8  u32     segment number
//! 12 u32     reserved, 0
//! 16 u64     generation
//! 24 u64     epoch: 1 for the first mark of the segment, +1 for each mark after
//! 32 u64     durable_end: offset just after the last durable frame
//! 40 u64     next_seq: the sequence number of the frame at durable_end
//! 48 u32     reserved, 0
//! 52 u32     masked CRC-32 of bytes 0..52
//! ```

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FsFile};
use crate::log::segment::DATA_START_V2;

pub const MAGIC: &[u8; 8] = b"JOBQMRK\0";
pub const SLOT_LEN: usize = 56;
/// Where the two slots are: each on a 4 KiB page of its own.
pub const SLOT_OFFSETS: [u64; 2] = [4096, 8192];

/// What a mark says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub epoch: u64,
    pub durable_end: u64,
    pub next_seq: u64,
}

/// The slot a mark of `epoch` goes to: alternating, so the previous mark survives.
pub fn slot_of(epoch: u64) -> usize {
    (epoch % 2) as usize
}

pub fn encode(segment: u32, generation: u64, m: &Mark) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], segment);
    LE::write_u64(&mut b[16..24], generation);
    LE::write_u64(&mut b[24..32], m.epoch);
    LE::write_u64(&mut b[32..40], m.durable_end);
    LE::write_u64(&mut b[40..48], m.next_seq);
    let crc = checksum(&[&b[0..52]]);
    LE::write_u32(&mut b[52..56], crc);
    b
}

/// A slot's mark, when it is one of this segment's, its checksum matches, its epoch
/// is at least 1 and its end not before the frames start. An all-zero slot (never
/// written) and a torn one alike give `None`.
pub fn decode(b: &[u8], segment: u32, generation: u64) -> Option<Mark> {
    if b.len() < SLOT_LEN || &b[0..8] != MAGIC || checksum(&[&b[0..52]]) != LE::read_u32(&b[52..56]) {
        return None;
    }
    if LE::read_u32(&b[8..12]) != segment
        || LE::read_u64(&b[16..24]) != generation
        || LE::read_u32(&b[12..16]) != 0
        || LE::read_u32(&b[48..52]) != 0
    {
        return None;
    }
    let m = Mark {
        epoch: LE::read_u64(&b[24..32]),
        durable_end: LE::read_u64(&b[32..40]),
        next_seq: LE::read_u64(&b[40..48]),
    };
    (m.epoch > 0 && m.durable_end >= DATA_START_V2).then_some(m)
}

/// The newest valid mark of a segment file (the larger epoch of the two slots).
pub fn read(file: &dyn FsFile, path: &Path, segment: u32, generation: u64) -> Result<Option<Mark>> {
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut best: Option<Mark> = None;
    for (slot, at) in SLOT_OFFSETS.into_iter().enumerate() {
        if at + SLOT_LEN as u64 > len {
            continue;
        }
        let mut b = [0u8; SLOT_LEN];
        fs::read_exact_at(file, &mut b, at).map_err(|e| Error::io("read", path, e))?;
        // A mark is valid only in the slot its epoch goes to (so two never tie).
        if let Some(m) = decode(&b, segment, generation).filter(|m| slot_of(m.epoch) == slot) {
            if best.is_none_or(|x| m.epoch > x.epoch) {
                best = Some(m);
            }
        }
    }
    Ok(best)
}

/// Write `m` into its slot (not synced: the caller's next fdatasync covers it).
pub fn write(file: &dyn FsFile, path: &Path, segment: u32, generation: u64, m: &Mark) -> Result<()> {
    let at = SLOT_OFFSETS[slot_of(m.epoch)];
    fs::write_all_at(file, &encode(segment, generation, m), at).map_err(|e| Error::io("write mark of", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let m = Mark { epoch: 7, durable_end: 12_345, next_seq: 99 };
        assert_eq!(
            decode(&encode(3, 5, &Mark { durable_end: 100, ..m }), 3, 5),
            None,
            "an end inside the header pages"
        );
        let b = encode(3, 5, &m);
        assert_eq!(decode(&b, 3, 5), Some(m));
        assert_eq!(decode(&b, 4, 5), None, "another segment's mark");
        assert_eq!(decode(&b, 3, 6), None, "another generation's mark");
        assert_eq!(decode(&[0u8; SLOT_LEN], 3, 5), None);
        for bit in 0..SLOT_LEN * 8 {
            let mut bad = b;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(decode(&bad, 3, 5), Some(m), "flipping bit {bit} went unnoticed");
        }
        assert_ne!(slot_of(1), slot_of(2));
    }

    #[test]
    fn the_worked_example_of_format_spec() {
        let b = encode(1, 1, &Mark { epoch: 1, durable_end: 12461, next_seq: 3 });
        let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex[48..].join(" "), "00 00 00 00 d0 42 5c bb", "format-spec/log.md, durable marks");
        assert_eq!(SLOT_OFFSETS[slot_of(1)], 8192);
    }
}
