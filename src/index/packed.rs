//! Packed columns (index version 3, format-spec/index.md "Packed column"): values
//! in blocks of 128, each block a line (`base`, `slope`) plus bit-packed
//! non-negative residuals of one width, so that a value is read in place with one
//! header read, one multiply and one unaligned load.
//!
//! ```text
//! nb = ceil(n / 128) block headers of 24 bytes:
//!   u64 base, i64 slope (32.32 fixed point), u32 data offset (from the column's start),
//!   u8 width (0..=64), 3 bytes 0
//! then the blocks' data back to back: ceil(count × width / 8) bytes each
//! value j of a block = base + floor(slope × j / 2^32) + residual j   (mod 2^64)
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

/// Values per block.
pub const BLOCK: usize = 128;
/// Bytes of a block header.
pub const BLOCK_HEADER: usize = 24;

/// The line's value at position `j` of a block, before the residual.
#[inline]
fn line(base: u64, slope: i64, j: u64) -> u64 {
    // j < 128: both factors as signed 64-bit numbers, one 64x64->128 multiply.
    base.wrapping_add(offset(slope, j))
}

fn width_of(range: u128) -> u32 {
    128 - range.leading_zeros()
}

/// A block's `(base, slope, width)` for `vals`: the line through its first and
/// last value, or a flat one (frame of reference), whichever packs narrower
/// (the flat one on a tie). A sloped line leaves its rise at each position in
/// `offsets`.
fn fit(vals: &[u64], offsets: &mut [u64; BLOCK]) -> (u64, i64, u32) {
    let (lo, hi) = vals.iter().fold((u64::MAX, 0), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let flat = (lo.min(hi), 0i64, 64 - (hi.saturating_sub(lo)).leading_zeros());
    if vals.len() < 2 {
        return flat;
    }
    let rise = (i128::from(vals[vals.len() - 1]) - i128::from(vals[0])) << 32;
    let slope = (rise / (vals.len() as i128 - 1)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let sloped = match flat.2 {
        // Values within 2^61 of each other and |line offset| < 2^39: every
        // `v - offset - vals[0]` lies within ±2^62, exact as an i64.
        0..=61 => {
            let (mut lo, mut hi) = (0i64, 0i64);
            for ((j, v), o) in vals.iter().enumerate().zip(offsets.iter_mut()) {
                *o = offset(slope, j as u64);
                let d = v.wrapping_sub(*o).wrapping_sub(vals[0]) as i64;
                lo = lo.min(d);
                hi = hi.max(d);
            }
            Some((vals[0].wrapping_add(lo as u64), 64 - (hi.wrapping_sub(lo) as u64).leading_zeros()))
        }
        _ => sloped_span_wide(vals, slope).inspect(|_| {
            for (j, o) in offsets.iter_mut().enumerate().take(vals.len()) {
                *o = offset(slope, j as u64);
            }
        }),
    };
    match sloped {
        Some((base, w)) if w < flat.2 => (base, slope, w),
        _ => flat,
    }
}

/// The line's rise at position `j` (< 128) of a block: below 2^39 either way.
#[inline]
fn offset(slope: i64, j: u64) -> u64 {
    ((i128::from(slope) * i128::from(j as i64)) >> 32) as u64
}

/// `(base, width)` of the residuals above the line of `slope`, in 128-bit
/// arithmetic (values spread over more than 2^61); None when wider than 64 bits.
fn sloped_span_wide(vals: &[u64], slope: i64) -> Option<(u64, u32)> {
    let (mut lo, mut hi) = (i128::MAX, i128::MIN);
    for (j, v) in vals.iter().enumerate() {
        let d = i128::from(*v) - i128::from(offset(slope, j as u64) as i64);
        lo = lo.min(d);
        hi = hi.max(d);
    }
    let w = width_of((hi - lo) as u128);
    (w <= 64).then_some((lo as u64, w))
}

/// Bytes of packed data for `count` values of `width` bits.
pub fn data_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8)
}

/// Packs a column of a known number of values as they come: the block headers
/// and the data apart, joined by [`Packer::finish`].
pub struct Packer {
    /// Values still to come.
    left: usize,
    data_start: usize,
    headers: Vec<u8>,
    data: Vec<u8>,
    pending: Box<[u64; BLOCK]>,
    len: usize,
}

impl Packer {
    /// A column of `n` values.
    pub fn new(n: usize) -> Packer {
        let data_start = n.div_ceil(BLOCK) * BLOCK_HEADER;
        let headers = Vec::with_capacity(data_start);
        Packer { left: n, data_start, headers, data: Vec::new(), pending: Box::new([0; BLOCK]), len: 0 }
    }

    #[inline]
    pub fn push(&mut self, v: u64) {
        self.pending[self.len] = v;
        self.len += 1;
        self.left -= 1;
        if self.len == BLOCK || self.left == 0 {
            self.block();
        }
    }

    fn block(&mut self) {
        let vals = &self.pending[..self.len];
        let mut offsets = [0u64; BLOCK];
        let (base, slope, w) = fit(vals, &mut offsets);
        let mut h = [0u8; BLOCK_HEADER];
        LE::write_u64(&mut h[0..8], base);
        LE::write_i64(&mut h[8..16], slope);
        LE::write_u32(&mut h[16..20], (self.data_start + self.data.len()) as u32);
        h[20] = w as u8;
        self.headers.extend_from_slice(&h);
        if slope == 0 {
            offsets = [0; BLOCK];
        }
        // Residuals are below 2^w (the fit's width): ORed into a word at `bits`,
        // the word written out when full and the residual's high bits carried.
        let (mut word, mut bits) = (0u64, 0u32);
        for (v, o) in vals.iter().zip(&offsets) {
            let r = v.wrapping_sub(base).wrapping_sub(*o);
            word |= r << bits;
            bits += w;
            if bits >= 64 {
                self.data.extend_from_slice(&word.to_le_bytes());
                bits -= 64;
                // The `bits` high bits of `r` that did not fit (none when 0: r < 2^w).
                word = (r >> 1) >> (w - bits - 1);
            }
        }
        self.data.extend_from_slice(&word.to_le_bytes()[..bits.div_ceil(8) as usize]);
        self.len = 0;
    }

    /// The column's bytes: headers, then data. Exactly `n` values were pushed.
    pub fn finish(self) -> (Vec<u8>, Vec<u8>) {
        debug_assert_eq!(self.left, 0, "a packed column gets the values it was made for");
        (self.headers, self.data)
    }
}

/// Append `vals` as one packed column to `out`.
pub fn encode(vals: &[u64], out: &mut Vec<u8>) {
    let mut p = Packer::new(vals.len());
    vals.iter().for_each(|v| p.push(*v));
    let (h, d) = p.finish();
    out.extend_from_slice(&h);
    out.extend_from_slice(&d);
}

/// The little-endian u64 at `at`, bytes past the end of `s` read as zero.
#[inline]
fn load(s: &[u8], at: usize) -> u64 {
    match s.get(at..at + 8) {
        Some(b) => LE::read_u64(b),
        None => {
            let mut b = [0u8; 8];
            let tail = s.get(at..).unwrap_or(&[]);
            b[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(b)
        }
    }
}

/// Value `i` of the packed column at `col` in `s` (a checked section). Inlined:
/// a listing reads five columns a row.
#[inline(always)]
pub fn get(s: &[u8], col: usize, i: u32) -> u64 {
    let (b, j) = (i as usize / BLOCK, (i as usize % BLOCK) as u64);
    let h = &s[col + b * BLOCK_HEADER..col + (b + 1) * BLOCK_HEADER];
    let (base, slope, data, w) =
        (LE::read_u64(&h[0..8]), LE::read_i64(&h[8..16]), LE::read_u32(&h[16..20]) as usize, u32::from(h[20]));
    line(base, slope, j).wrapping_add(residual(s, col + data, j as usize, w))
}

#[inline(always)]
fn residual(s: &[u8], data: usize, j: usize, w: u32) -> u64 {
    let bit = j * w as usize;
    let (at, shift) = (data + bit / 8, (bit % 8) as u32);
    let mut r = load(s, at) >> shift;
    if shift + w > 64 {
        r |= u64::from(s[at + 8]) << (64 - shift);
    }
    // w is 0..=64: no bits for 0, all for 64.
    r & u64::MAX.checked_shr(64 - w).unwrap_or(0)
}

/// Check the packed column of `n` values at `col` in the section `s`: headers
/// and data inside `s`, widths at most 64, zero reserved bytes, data back to
/// back. Returns the column's end; on damage the offset and what is wrong.
pub fn check(s: &[u8], col: usize, n: u32) -> Result<usize, (usize, String)> {
    let nb = (n as usize).div_ceil(BLOCK);
    let mut at = nb * BLOCK_HEADER;
    if col.checked_add(at).is_none_or(|e| e > s.len()) {
        return Err((col, "packed column headers run outside the section".into()));
    }
    for b in 0..nb {
        let h = col + b * BLOCK_HEADER;
        let (data, w) = (LE::read_u32(&s[h + 16..h + 20]) as usize, u32::from(s[h + 20]));
        if w > 64 {
            return Err((h + 20, format!("packed block of width {w} (at most 64)")));
        }
        if s[h + 21..h + 24] != [0, 0, 0] {
            return Err((h + 21, "packed block header: reserved bytes not zero".into()));
        }
        if data != at {
            return Err((h + 16, format!("packed block data at {data}, expected {at} (back to back)")));
        }
        let count = (n as usize - b * BLOCK).min(BLOCK);
        at += data_len(count, w);
        if col + at > s.len() {
            return Err((h + 16, "packed block runs past the end of the section".into()));
        }
    }
    Ok(col + at)
}

/// Check that every value of the packed column at `col` (already [`check`]ed) is
/// below `limit`; a block whose line and width keep it below is not unpacked.
/// Returns the offset of the first block holding a value `>= limit`.
pub fn check_below(s: &[u8], col: usize, n: u32, limit: u64) -> Result<(), usize> {
    for b in 0..(n as usize).div_ceil(BLOCK) {
        let h = col + b * BLOCK_HEADER;
        let (base, slope, w) = (LE::read_u64(&s[h..h + 8]), LE::read_i64(&s[h + 8..h + 16]), u32::from(s[h + 20]));
        let count = (n as usize - b * BLOCK).min(BLOCK) as u64;
        // The line's ends bound it; the residual adds at most 2^w - 1.
        let ends = [0, count - 1].map(|j| i128::from(base) + ((i128::from(slope) * i128::from(j)) >> 32));
        let top = ends[0].max(ends[1]) + ((1i128 << w) - 1);
        if ends[0].min(ends[1]) >= 0 && top < i128::from(limit) {
            continue;
        }
        let first = (b * BLOCK) as u32;
        if (first..first + count as u32).any(|i| get(s, col, i) >= limit) {
            return Err(h);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(vals: &[u64]) -> usize {
        let mut out = vec![7u8; 5];
        encode(vals, &mut out);
        let end = check(&out, 5, vals.len() as u32).unwrap();
        assert_eq!(end, out.len());
        for (i, v) in vals.iter().enumerate() {
            assert_eq!(get(&out, 5, i as u32), *v, "value {i} of {}", vals.len());
        }
        out.len() - 5
    }

    #[test]
    fn values_come_back() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in [0usize, 1, 2, 127, 128, 129, 300, 1000] {
            round_trip(&(0..n).map(|_| rnd()).collect::<Vec<_>>());
            round_trip(&(0..n as u64).map(|i| 1_700_000_000_000 - i * 12_345 + rnd() % 1000).collect::<Vec<_>>());
            round_trip(&(0..n as u64).map(|i| i * 3 + rnd() % 4).collect::<Vec<_>>());
            round_trip(&(0..n).map(|i| [0, u64::MAX, 1 << 63, 5][i % 4]).collect::<Vec<_>>());
            round_trip(&vec![42; n]);
            round_trip(&(0..n as u64).map(|i| u64::MAX - i.wrapping_mul(1 << 60)).collect::<Vec<_>>());
        }
        // A line packs a steady descent in few bits.
        let steady: Vec<u64> = (0..1280u64).map(|i| 1_000_000_000 - i * 1_000 + i % 3).collect();
        assert!(round_trip(&steady) <= 10 * (BLOCK_HEADER + 32), "{}", round_trip(&steady));
    }

    /// A block's fit as format 6 made it: both lines in 128-bit arithmetic.
    fn fit_wide(vals: &[u64]) -> (u64, i64, u32) {
        let span = |slope: i64| -> Option<(i128, u32)> {
            let (mut lo, mut hi) = (i128::MAX, i128::MIN);
            for (j, v) in vals.iter().enumerate() {
                let d = i128::from(*v) - ((i128::from(slope) * j as i128) >> 32);
                lo = lo.min(d);
                hi = hi.max(d);
            }
            let w = width_of((hi - lo) as u128);
            (w <= 64).then_some((lo, w))
        };
        let (lo, w) = span(0).expect("a flat line spans at most 64 bits");
        let mut best = (lo as u64, 0i64, w);
        if vals.len() > 1 {
            let rise = (i128::from(vals[vals.len() - 1]) - i128::from(vals[0])) << 32;
            let slope = (rise / (vals.len() as i128 - 1)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            if let Some((lo, w)) = span(slope).filter(|(_, w)| *w < best.2) {
                best = (lo as u64, slope, w);
            }
        }
        best
    }

    /// The column as the byte-by-byte writer of format 6 wrote it.
    fn encode_bytewise(vals: &[u64]) -> Vec<u8> {
        let (mut headers, mut data) = (Vec::new(), Vec::new());
        let nb = vals.len().div_ceil(BLOCK);
        for block in vals.chunks(BLOCK) {
            let (base, slope, w) = fit_wide(block);
            let mut h = [0u8; BLOCK_HEADER];
            LE::write_u64(&mut h[0..8], base);
            LE::write_i64(&mut h[8..16], slope);
            LE::write_u32(&mut h[16..20], (nb * BLOCK_HEADER + data.len()) as u32);
            h[20] = w as u8;
            headers.extend_from_slice(&h);
            let at = data.len();
            data.resize(at + data_len(block.len(), w), 0);
            for (j, v) in block.iter().enumerate() {
                let bits = u128::from(v.wrapping_sub(line(base, slope, j as u64))) << (j * w as usize % 8);
                let bit = j * w as usize;
                for (k, byte) in data[at + bit / 8..at + (bit + w as usize).div_ceil(8)].iter_mut().enumerate() {
                    *byte |= (bits >> (8 * k)) as u8;
                }
            }
        }
        headers.extend_from_slice(&data);
        headers
    }

    proptest::proptest! {
        #[test]
        fn columns_are_byte_for_byte_as_before(
            vals in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..400),
            shift in 0u32..64,
            steady in proptest::prelude::any::<bool>(),
        ) {
            // Narrow and wide residuals, steady lines and noise.
            let vals: Vec<u64> = vals.iter().enumerate()
                .map(|(i, v)| if steady { (1u64 << 40).wrapping_add(i as u64 * 977).wrapping_add(v >> shift) } else { v >> shift })
                .collect();
            let mut out = Vec::new();
            encode(&vals, &mut out);
            proptest::prop_assert_eq!(out, encode_bytewise(&vals));
        }

        #[test]
        fn blocks_fit_as_in_wide_arithmetic(
            start in proptest::prelude::any::<u64>(),
            step in proptest::prelude::any::<i64>(),
            step_bits in 0u32..64,
            noise in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..=BLOCK),
            noise_bits in 0u32..=64,
            jump in proptest::option::of((0usize..BLOCK, proptest::prelude::any::<u64>())),
        ) {
            // Lines of any slope from any start, wrapping past 0 or 2^64, with
            // noise of any width and maybe one value anywhere.
            let mut vals: Vec<u64> = noise.iter().enumerate().map(|(j, n)| {
                let rise = ((step >> (63 - step_bits.min(63))) as u64).wrapping_mul(j as u64);
                start.wrapping_add(rise).wrapping_add(n.checked_shr(64 - noise_bits).unwrap_or(0))
            }).collect();
            if let Some((at, v)) = jump {
                let at = at % vals.len();
                vals[at] = v;
            }
            proptest::prop_assert_eq!(fit(&vals, &mut [0; BLOCK]), fit_wide(&vals));
        }
    }

    #[test]
    fn check_refuses_bad_widths_and_short_data() {
        let vals: Vec<u64> = (0..200).map(|i| i * 1_000_003 % 65_537).collect();
        let mut out = Vec::new();
        encode(&vals, &mut out);
        let mut bad = out.clone();
        bad[20] = 65;
        assert_eq!(check(&bad, 0, 200).unwrap_err().0, 20);
        let mut bad = out.clone();
        bad[BLOCK_HEADER + 16] ^= 1;
        assert_eq!(check(&bad, 0, 200).unwrap_err().0, BLOCK_HEADER + 16);
        assert!(check(&out[..out.len() - 1], 0, 200).is_err(), "last block past the end");
        assert!(check(&out[..30], 0, 200).is_err(), "headers past the end");
        assert_eq!(check_below(&out, 0, 200, 65_537), Ok(()));
        assert_eq!(check_below(&out, 0, 200, 65_000), Err(0));
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release --lib packed::speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing, not a check"]
    fn get_speed() {
        let n = 1u32 << 20;
        let vals: Vec<u64> =
            (0..u64::from(n)).map(|i| 1_700_000_000_000 - i * 200_000 + (i * 7919) % 3_000_000).collect();
        let mut col = Vec::new();
        encode(&vals, &mut col);
        let t = std::time::Instant::now();
        for _ in 0..8 {
            let mut out = Vec::new();
            encode(&vals, &mut out);
            assert_eq!(out, col);
        }
        eprintln!("encode: {:.2} ns a value", t.elapsed().as_nanos() as f64 / f64::from(8 * n));
        for (what, step) in [("sequential", 1u32), ("stride 97", 97)] {
            let t = std::time::Instant::now();
            let mut acc = 0u64;
            let mut i = 0u32;
            for _ in 0..n {
                acc = acc.wrapping_add(get(&col, 0, i));
                i = (i + step) % n;
            }
            let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
            eprintln!("{what}: {ns:.2} ns a value ({acc})");
        }
    }
}
