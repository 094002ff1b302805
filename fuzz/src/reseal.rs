//! Recompute checksums over mutated bytes, so that a mutation reaches the checks
//! that sit behind a checksum (random bytes almost never carry a matching CRC).

use jobq::codec::frame::{checksum, HEADER_LEN};
use jobq::codec::record::{split_word, RECORD_PREFIX};

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

/// Fix the checksum of every record of a jobs payload, following the records'
/// lengths for as long as they stay inside `payload`.
pub fn records(payload: &mut [u8]) {
    let mut pos = 0usize;
    while pos + RECORD_PREFIX <= payload.len() {
        let (body_len, _) = split_word(u32_at(payload, pos));
        let body = pos + RECORD_PREFIX;
        let Some(end) = body.checked_add(body_len).filter(|e| *e <= payload.len()) else { break };
        let crc = checksum(&[&payload[body..end]]);
        payload[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// Fix the checksum of the frame at the start of `frame` (header + payload of the
/// length its header gives, as far as the bytes go). Returns the frame's length.
pub fn frame(frame: &mut [u8]) -> Option<usize> {
    if frame.len() < HEADER_LEN {
        return None;
    }
    let len = u32_at(frame, 4) as usize;
    let end = HEADER_LEN.checked_add(len).filter(|e| *e <= frame.len())?;
    let crc = checksum(&[&frame[4..HEADER_LEN], &frame[HEADER_LEN..end]]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
    Some(end)
}

/// Fix an index image's section checksums (in the directory) and its footer
/// checksum, for whatever parts the footer and directory locate inside the file.
pub fn index(b: &mut [u8]) {
    const HEADER: usize = 64;
    const FOOTER: usize = 48;
    if b.len() < HEADER + FOOTER {
        return;
    }
    let foot = b.len() - FOOTER;
    let (dir_off, dir_len) = (u64_at(b, foot), u64_at(b, foot + 8));
    let (cat_off, cat_len) = (u64_at(b, foot + 16), u64_at(b, foot + 24));
    let inside = |off: u64, len: u64| off.checked_add(len).is_some_and(|e| e <= foot as u64);
    if !inside(dir_off, dir_len) || !inside(cat_off, cat_len) {
        return;
    }
    let (dir_off, dir_len) = (dir_off as usize, dir_len as usize);
    if dir_len >= 8 {
        let n = u32_at(b, dir_off) as usize;
        for i in 0..n.min((dir_len - 8) / 32) {
            let e = dir_off + 8 + i * 32;
            let (off, len) = (u64_at(b, e + 8), u64_at(b, e + 16));
            if inside(off, len) {
                let crc = checksum(&[&b[off as usize..(off + len) as usize]]);
                b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    let crc = checksum(&[
        &b[..HEADER],
        &b[dir_off..dir_off + dir_len],
        &b[cat_off as usize..(cat_off + cat_len) as usize],
        &b[foot..foot + 36],
    ]);
    b[foot + 36..foot + 40].copy_from_slice(&crc.to_le_bytes());
}
