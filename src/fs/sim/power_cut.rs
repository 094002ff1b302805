//! What a simulated power cut leaves of the bytes written but not synced.

use std::collections::BTreeMap;

use super::CrashMode;

/// Deterministic pseudo-random numbers (splitmix64) for damage patterns.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// The bytes a file holds after a power cut, given its durable bytes, its bytes
/// now, and the ranges written since the last sync. Bytes never written since
/// stay as they were durable; written ones in place (below both sizes) and the
/// appended tail are damaged per `mode`, each 512-byte sector on its own.
pub(super) fn damage(
    mode: CrashMode,
    synced: &[u8],
    pending: &[u8],
    dirty: &BTreeMap<usize, usize>,
    rng: &mut Rng,
) -> Vec<u8> {
    if mode == CrashMode::Drop || (pending.len() < synced.len() && rng.below(2) == 0) {
        // Nothing unsynced reached the disk (an unsynced truncation included).
        return synced.to_vec();
    }
    let base = synced.len().min(pending.len());
    let mut out = synced[..base].to_vec();
    for (&a, &b) in dirty.range(..base) {
        let (a, b) = (a, b.min(base));
        if mode == CrashMode::Cut {
            if rng.below(2) == 0 {
                out[a..b].copy_from_slice(&pending[a..b]);
            }
            continue;
        }
        let mut at = a;
        while at < b {
            let next = ((at / 512 + 1) * 512).min(b);
            sector(mode, &mut out[at..next], &pending[at..next], rng);
            at = next;
        }
    }
    let tail = &pending[base..];
    match mode {
        CrashMode::Drop => {}
        CrashMode::Cut => out.extend_from_slice(&tail[..rng.below(tail.len() as u64 + 1) as usize]),
        CrashMode::Zero => out.resize(pending.len(), 0),
        CrashMode::Garble => {
            let start = out.len();
            out.extend_from_slice(tail);
            let mut at = start;
            while at < out.len() {
                let next = ((at / 512 + 1) * 512).min(out.len());
                let new = pending[at..next].to_vec();
                sector(mode, &mut out[at..next], &new, rng);
                at = next;
            }
            let sectors = tail.len().div_ceil(512) as u64;
            let keep = start + (rng.below(sectors + 1) as usize) * 512;
            out.truncate(keep.max(start));
        }
    }
    out
}

/// One unsynced piece of a sector after a power cut: written, zeros or garbage.
fn sector(mode: CrashMode, out: &mut [u8], written: &[u8], rng: &mut Rng) {
    match (mode, rng.below(3)) {
        (CrashMode::Zero, _) | (CrashMode::Garble, 1) => out.fill(0),
        (CrashMode::Garble, 0) => out.copy_from_slice(written),
        (CrashMode::Garble, _) => out.iter_mut().for_each(|b| *b = rng.next() as u8),
        _ => out.copy_from_slice(written),
    }
}
