//! Snapshots (docs/cluster.md, "Snapshots and catch-up"; format-spec/snapshot.md):
//! a node's log up to its applied end, sent to a node that is new or behind the
//! leader's purge point, and installed there as a new generation. One concern a
//! file: [`crate::codec::snapshot`] the stream's bytes, [`stream`] openraft's `SnapshotData`,
//! [`build`] making one, [`install`] installing one, [`receive`] taking its chunks
//! without campaigning meanwhile.

pub mod build;
pub mod install;
pub mod receive;
pub mod stream;

use std::path::Path;

use super::{log_id, StoredMembership};
use crate::codec::snapshot::{decode_head, decode_table, Table, HEAD_LEN};
use crate::error::Error;

pub use stream::SnapshotStream;

/// A built snapshot's head and table, in its directory.
pub const HEAD_FILE: &str = "SNAPSHOT";

pub type SnapMeta = openraft::SnapshotMeta<u64, openraft::BasicNode>;

pub(crate) fn io<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

/// The masked CRC-32 of `len` bytes of `src` from `from`, read in 4 MiB
/// chunks; each chunk is also written to `copy` (at its offset from `from`).
pub(crate) fn checksum_range(
    src: &dyn crate::fs::FsFile,
    src_path: &Path,
    from: u64,
    len: u64,
    copy: Option<(&dyn crate::fs::FsFile, &Path)>,
) -> crate::error::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = Vec::new();
    let mut done = 0;
    while done < len {
        buf.resize((len - done).min(4 << 20) as usize, 0);
        crate::fs::read_exact_at(src, &mut buf, from + done).map_err(io("read", src_path))?;
        h.update(&buf);
        if let Some((dst, dst_path)) = copy {
            crate::fs::write_all_at(dst, &buf, done).map_err(io("write", dst_path))?;
        }
        done += buf.len() as u64;
    }
    Ok(crate::codec::frame::mask_crc(h.finalize()))
}

/// A stream's head and table, exactly.
pub fn decode(b: &[u8]) -> Result<Table, String> {
    let (table_len, data_len) = decode_head(b)?;
    if b.len() != HEAD_LEN + table_len as usize {
        return Err(format!("{} bytes of head and table, the head says {}", b.len(), HEAD_LEN + table_len as usize));
    }
    decode_table(&b[HEAD_LEN..], data_len)
}

/// openraft's meta of a snapshot with `table`.
pub fn meta_of(t: &Table) -> Result<SnapMeta, String> {
    let last_membership: StoredMembership =
        serde_json::from_slice(&t.membership).map_err(|e| format!("the snapshot's membership: {e}"))?;
    let (index, term, leader) = t.last;
    // Two nodes' snapshots of one entry differ in bytes (segment boundaries,
    // headers): the id names the table's checksum too, so that a receiver never
    // continues one node's stream with another's chunks.
    let encoded = t.encode();
    let crc = u32::from_le_bytes(encoded[encoded.len() - 4..].try_into().expect("4 bytes"));
    Ok(SnapMeta {
        last_log_id: Some(log_id(term, leader, index)),
        last_membership,
        snapshot_id: format!("{index}-{term}-{leader}-{crc:08x}"),
    })
}
