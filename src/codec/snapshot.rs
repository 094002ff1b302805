//! A cluster snapshot stream's head and table (format-spec/snapshot.md): a 32-byte head, a
//! table (the snapshot's last log id, membership, and its members: log segments
//! with their lengths and checksums), then the members' bytes back to back.
//!
//! ```text
//! head   0 [u8; 8] "JOBQSNAP" | 8 u32 version 1 | 12 u32 table_len
//!        16 u64 data_len | 24 u32 reserved 0 | 28 u32 masked CRC-32 of 0..28
//! table  u64 last index, u64 last term, u64 last leader, u64 next_seq,
//!        u64 source generation, u32 membership_len, membership (JSON),
//!        u32 n, n x (u32 segment number, u64 length, u32 masked CRC-32),
//!        u32 masked CRC-32 of the table's bytes before it
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::codec::frame::checksum;

pub const MAGIC: &[u8; 8] = b"JOBQSNAP";
pub const VERSION: u32 = 1;
pub const HEAD_LEN: usize = 32;
/// The largest table a reader accepts (about 5 million segments' worth).
pub const MAX_TABLE: u32 = 64 << 20;
const FIXED: usize = 5 * 8 + 4;
const MEMBER_LEN: usize = 16;

/// One member: a log segment's bytes (its durable marks zeroed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub segment: u32,
    pub len: u64,
    pub crc: u32,
}

/// What the table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The snapshot's last entry: index, term, leader.
    pub last: (u64, u64, u64),
    /// The sequence number after the last entry's frames.
    pub next_seq: u64,
    /// The generation the members were taken from.
    pub generation: u64,
    /// openraft's `StoredMembership` as of the last entry, as JSON.
    pub membership: Vec<u8>,
    pub members: Vec<Member>,
}

impl Table {
    /// Bytes of the members together.
    pub fn data_len(&self) -> u64 {
        self.members.iter().map(|m| m.len).sum()
    }

    /// The head and the table: the stream's first bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(FIXED + self.membership.len() + 4 + self.members.len() * MEMBER_LEN + 4);
        for v in [self.last.0, self.last.1, self.last.2, self.next_seq, self.generation] {
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.extend_from_slice(&(self.membership.len() as u32).to_le_bytes());
        t.extend_from_slice(&self.membership);
        t.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for m in &self.members {
            t.extend_from_slice(&m.segment.to_le_bytes());
            t.extend_from_slice(&m.len.to_le_bytes());
            t.extend_from_slice(&m.crc.to_le_bytes());
        }
        let crc = checksum(&[&t]);
        t.extend_from_slice(&crc.to_le_bytes());
        let mut out = vec![0u8; HEAD_LEN];
        out[0..8].copy_from_slice(MAGIC);
        LE::write_u32(&mut out[8..12], VERSION);
        LE::write_u32(&mut out[12..16], t.len() as u32);
        LE::write_u64(&mut out[16..24], self.data_len());
        let crc = checksum(&[&out[0..28]]);
        LE::write_u32(&mut out[28..32], crc);
        out.extend_from_slice(&t);
        out
    }
}

/// The head: the table's and the data's lengths.
pub fn decode_head(b: &[u8]) -> Result<(u32, u64), String> {
    if b.len() < HEAD_LEN || &b[0..8] != MAGIC {
        return Err("not a jobq snapshot (magic)".into());
    }
    if checksum(&[&b[0..28]]) != LE::read_u32(&b[28..32]) {
        return Err("snapshot head checksum mismatch".into());
    }
    if LE::read_u32(&b[8..12]) != VERSION || LE::read_u32(&b[24..28]) != 0 {
        return Err(format!("snapshot version {} is not one this jobq reads", LE::read_u32(&b[8..12])));
    }
    let table_len = LE::read_u32(&b[12..16]);
    if !(FIXED as u32 + 8..=MAX_TABLE).contains(&table_len) {
        return Err(format!("snapshot table of {table_len} bytes"));
    }
    Ok((table_len, LE::read_u64(&b[16..24])))
}

/// The table (exactly `table_len` bytes), checked: checksum, lengths, members
/// in rising, contiguous segment order, their lengths adding up to `data_len`.
pub fn decode_table(t: &[u8], data_len: u64) -> Result<Table, String> {
    let short = || "snapshot table cut short".to_string();
    if t.len() < FIXED + 8 {
        return Err(short());
    }
    let (body, crc) = t.split_at(t.len() - 4);
    if checksum(&[body]) != LE::read_u32(crc) {
        return Err("snapshot table checksum mismatch".into());
    }
    let u64_at = |i: usize| LE::read_u64(&body[i * 8..i * 8 + 8]);
    let last = (u64_at(0), u64_at(1), u64_at(2));
    let (next_seq, generation) = (u64_at(3), u64_at(4));
    let m_len = LE::read_u32(&body[40..44]) as usize;
    let membership = body.get(44..44 + m_len).ok_or_else(short)?.to_vec();
    let rest = &body[44 + m_len..];
    let n = LE::read_u32(rest.get(0..4).ok_or_else(short)?) as usize;
    let list = &rest[4..];
    if list.len() != n.checked_mul(MEMBER_LEN).ok_or_else(short)? {
        return Err(format!("snapshot table: {n} members do not fill its {} bytes", list.len()));
    }
    let members: Vec<Member> = list
        .chunks_exact(MEMBER_LEN)
        .map(|c| Member {
            segment: LE::read_u32(&c[0..4]),
            len: LE::read_u64(&c[4..12]),
            crc: LE::read_u32(&c[12..16]),
        })
        .collect();
    if members.is_empty() {
        return Err("a snapshot without log segments".into());
    }
    if members.windows(2).any(|w| w[0].segment.checked_add(1) != Some(w[1].segment)) || members[0].segment == 0 {
        return Err("snapshot segments are not numbered 1 or more, contiguous and rising".into());
    }
    let sum = members.iter().try_fold(0u64, |a, m| a.checked_add(m.len));
    if sum != Some(data_len) {
        return Err(format!("snapshot members' lengths do not add up to its {data_len} data bytes"));
    }
    Ok(Table { last, next_seq, generation, membership, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            last: (40, 3, 2),
            next_seq: 900,
            generation: 1,
            membership: br#"{"log_id":null}"#.to_vec(),
            members: vec![Member { segment: 4, len: 10_000, crc: 7 }, Member { segment: 5, len: 5_000, crc: 9 }],
        }
    }

    #[test]
    fn tables_round_trip_and_every_flipped_bit_is_refused() {
        let t = table();
        let b = t.encode();
        let (tl, dl) = decode_head(&b).unwrap();
        assert_eq!((tl as usize, dl), (b.len() - HEAD_LEN, 15_000));
        assert_eq!(decode_table(&b[HEAD_LEN..], dl).unwrap(), t);
        for bit in 0..b.len() * 8 {
            let mut bad = b.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let ok = decode_head(&bad).and_then(|(tl, dl)| {
                let end = HEAD_LEN + tl as usize;
                decode_table(bad.get(HEAD_LEN..end).ok_or("short")?, dl)
            });
            assert!(ok.is_err(), "bit {bit}");
        }
        for cut in 0..b.len() {
            let ok = decode_head(&b[..cut]).and_then(|(_, dl)| decode_table(&b[HEAD_LEN.min(cut)..cut], dl));
            assert!(ok.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn members_out_of_order_or_short_are_refused() {
        let mut t = table();
        t.members[1].segment = 7;
        assert!(decode_table(&t.encode()[HEAD_LEN..], 15_000).is_err());
        let t = table();
        assert!(decode_table(&t.encode()[HEAD_LEN..], 15_001).is_err());
    }
}
