//! `RAFT`: a cluster node's vote and purge point, 64 bytes, replaced whole
//! (temp file, fsync, rename, fsync directory) before the vote is used
//! (format-spec/layout.md, "RAFT").
//!
//! ```text
//! 0  [u8; 8] magic      "JOBQRAFT"
//! 8  u32     version    1
//! 12 u32     flags      bit 0 vote set, bit 1 vote committed, bit 2 purge point set
//! 16 u64     vote term
//! 24 u64     vote node id
//! 32 u64     purged index
//! 40 u64     purged term
//! 48 u64     purged leader node id
//! 56 u32     reserved   0
//! 60 u32     masked CRC-32 (IEEE) of bytes 0..60
//! ```

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem};

pub const RAFT_FILE: &str = crate::store::layout::RAFT;
const MAGIC: &[u8; 8] = b"JOBQRAFT";
const LEN: usize = 64;
const VOTE_SET: u32 = 1;
const VOTE_COMMITTED: u32 = 2;
const PURGED_SET: u32 = 4;

/// A vote as stored: term, node, committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredVote {
    pub term: u64,
    pub node: u64,
    pub committed: bool,
}

/// A log id as stored: index, term, leader node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredLogId {
    pub index: u64,
    pub term: u64,
    pub leader: u64,
}

/// What `RAFT` holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    pub vote: Option<StoredVote>,
    pub purged: Option<StoredLogId>,
    /// The node this directory belongs to (0: not recorded, a version-1 file).
    pub owner: u32,
}

pub fn encode(s: &RaftState) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(MAGIC);
    // Version 2 records the owner (bytes 56..60, reserved in version 1).
    LE::write_u32(&mut b[8..12], if s.owner == 0 { 1 } else { 2 });
    LE::write_u32(&mut b[56..60], s.owner);
    let mut flags = 0;
    if let Some(v) = s.vote {
        flags |= VOTE_SET | if v.committed { VOTE_COMMITTED } else { 0 };
        LE::write_u64(&mut b[16..24], v.term);
        LE::write_u64(&mut b[24..32], v.node);
    }
    if let Some(p) = s.purged {
        flags |= PURGED_SET;
        LE::write_u64(&mut b[32..40], p.index);
        LE::write_u64(&mut b[40..48], p.term);
        LE::write_u64(&mut b[48..56], p.leader);
    }
    LE::write_u32(&mut b[12..16], flags);
    let crc = checksum(&[&b[0..60]]);
    LE::write_u32(&mut b[60..64], crc);
    b
}

pub fn decode(path: &Path, b: &[u8]) -> Result<RaftState> {
    if b.len() != LEN || &b[0..8] != MAGIC {
        return Err(Error::corrupt(path, 0, "not a jobq RAFT file"));
    }
    if checksum(&[&b[0..60]]) != LE::read_u32(&b[60..64]) {
        return Err(Error::corrupt(path, 60, "RAFT checksum mismatch"));
    }
    let version = LE::read_u32(&b[8..12]);
    if !(1..=2).contains(&version) {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!("RAFT file version {version} (this jobq reads 1 and 2)"),
        });
    }
    let flags = LE::read_u32(&b[12..16]);
    let owner = LE::read_u32(&b[56..60]);
    if flags & !(VOTE_SET | VOTE_COMMITTED | PURGED_SET) != 0 || (owner == 0) != (version == 1) {
        return Err(Error::corrupt(path, 12, "unknown RAFT flags, or an owner that does not match the version"));
    }
    let vote = (flags & VOTE_SET != 0).then(|| StoredVote {
        term: LE::read_u64(&b[16..24]),
        node: LE::read_u64(&b[24..32]),
        committed: flags & VOTE_COMMITTED != 0,
    });
    let purged = (flags & PURGED_SET != 0).then(|| StoredLogId {
        index: LE::read_u64(&b[32..40]),
        term: LE::read_u64(&b[40..48]),
        leader: LE::read_u64(&b[48..56]),
    });
    Ok(RaftState { vote, purged, owner })
}

/// The state in `dir`, or the empty state when there is no `RAFT` yet.
pub fn read(fsys: &dyn FileSystem, dir: &Path) -> Result<RaftState> {
    let path = dir.join(RAFT_FILE);
    if !fsys.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
        return Ok(RaftState::default());
    }
    let b = fs::read_all(fsys, &path).map_err(|e| Error::io("read", &path, e))?;
    decode(&path, &b)
}

/// Replace `RAFT` durably.
pub fn write(fsys: &dyn FileSystem, dir: &Path, s: &RaftState) -> Result<()> {
    fs::publish_file(fsys, dir, RAFT_FILE, &encode(s)).map_err(|e| Error::io("publish", dir.join(RAFT_FILE), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_every_flipped_bit_is_refused() {
        let p = Path::new("RAFT");
        let full = RaftState {
            vote: Some(StoredVote { term: 9, node: 2, committed: true }),
            purged: Some(StoredLogId { index: 40, term: 8, leader: 3 }),
            owner: 0,
        };
        let owned = RaftState { owner: 3, ..full };
        for s in [RaftState::default(), full, owned] {
            let b = encode(&s);
            assert_eq!(decode(p, &b).unwrap(), s);
            for bit in 0..LEN * 8 {
                let mut bad = b;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(p, &bad).is_err(), "bit {bit}");
            }
        }
        assert!(decode(p, &encode(&full)[..63]).is_err());
        assert_eq!(encode(&full)[8], 1, "no owner: version 1, as older jobq wrote");
        assert_eq!(encode(&owned)[8], 2);
    }
}
