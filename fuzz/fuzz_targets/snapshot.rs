//! A cluster snapshot's head and table (format-spec/snapshot.md): arbitrary
//! bytes, as received, or with both checksums recomputed first so that the
//! table's fields are exercised. What decodes re-encodes to the same bytes and
//! keeps the table's promises (contiguous rising segments, lengths adding up).

#![no_main]

use jobq::codec::frame::checksum;
use jobq::codec::snapshot::{decode_head, decode_table, HEAD_LEN};
use libfuzzer_sys::fuzz_target;

fn check(b: &[u8]) {
    let Ok((table_len, data_len)) = decode_head(b) else { return };
    let Some(t) = b.get(HEAD_LEN..HEAD_LEN + table_len as usize) else { return };
    let Ok(table) = decode_table(t, data_len) else { return };
    assert_eq!(table.data_len(), data_len);
    assert!(!table.members.is_empty() && table.members[0].segment >= 1);
    assert!(table.members.windows(2).all(|w| w[1].segment == w[0].segment + 1));
    assert_eq!(table.encode(), b[..HEAD_LEN + table_len as usize], "a decoded table does not re-encode to itself");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut b = rest.to_vec();
    if mode & 1 == 1 && b.len() >= HEAD_LEN + 4 {
        b[0..8].copy_from_slice(b"JOBQSNAP");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[24..28].fill(0);
        let table_len = (b.len() - HEAD_LEN) as u32;
        b[12..16].copy_from_slice(&table_len.to_le_bytes());
        let crc = checksum(&[&b[HEAD_LEN..b.len() - 4]]);
        let n = b.len();
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        if mode & 2 == 2 {
            // The data length the members add up to, when the table reaches that far.
            let m = b.get(HEAD_LEN + 40..HEAD_LEN + 44).map_or(0, |m| u32::from_le_bytes(m.try_into().unwrap()));
            let rows = (HEAD_LEN + 48).saturating_add(m as usize);
            let sum = b.get(rows..n - 4).map_or(0u64, |r| {
                r.chunks_exact(16).fold(0u64, |a, c| a.wrapping_add(u64::from_le_bytes(c[4..12].try_into().unwrap())))
            });
            b[16..24].copy_from_slice(&sum.to_le_bytes());
        }
        let crc = checksum(&[&b[0..28]]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
    }
    check(&b);
});
