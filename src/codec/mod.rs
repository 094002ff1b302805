//! The bytes of the log: frame headers with their checksum, and the payloads of
//! each frame kind. Everything here is pure: slices in, values or errors out.
//! format-spec/log.md is the contract for every byte.

pub mod catalog;
pub mod compact;
pub mod docz;
pub mod entry;
pub mod frame;
pub mod json;
pub mod record;
pub mod row;
pub mod snapshot;

use byteorder::{ByteOrder, LittleEndian as LE};

/// A decoding failure: what is wrong and at which offset of the decoded slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub what: String,
}

impl DecodeError {
    pub fn new(offset: usize, what: impl Into<String>) -> DecodeError {
        DecodeError { offset, what: what.into() }
    }
}

/// A bounds-checked little-endian reader over a slice.
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8]) -> ByteReader<'a> {
        ByteReader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::new(self.pos, format!("{what}: needs {n} bytes, {} left", self.remaining())));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(LE::read_u16(self.bytes(2, what)?))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(LE::read_u32(self.bytes(4, what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(LE::read_u64(self.bytes(8, what)?))
    }
    pub fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(LE::read_i64(self.bytes(8, what)?))
    }

    /// A UTF-8 string of `n` bytes.
    pub fn str(&mut self, n: usize, what: &str) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let b = self.bytes(n, what)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::new(at, format!("{what}: not UTF-8")))
    }

    /// A string prefixed by its u16 length.
    pub fn str16(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let n = self.u16(what)?;
        self.str(usize::from(n), what)
    }
}
