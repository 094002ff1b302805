//! Answers rendered lazily: a sequence of JSON lines produced a chunk at a time,
//! so that a server can stream a long listing without holding it whole.

use crate::error::Result;

/// Render about this many bytes before handing a chunk out.
pub const CHUNK_BYTES: usize = 32 << 10;

/// Chunks of JSON lines (each line ends with `\n`; no chunk is empty). After an
/// error the sequence ends.
pub struct Rows {
    inner: Box<dyn Iterator<Item = Result<Vec<u8>>> + Send>,
}

impl Rows {
    /// One line per item, as `render` writes it (without the newline); an item
    /// for which `render` writes nothing gives no line.
    pub fn new<T, F>(items: Vec<T>, render: F) -> Rows
    where
        T: Send + 'static,
        F: FnMut(T, &mut Vec<u8>) -> Result<()> + Send + 'static,
    {
        Rows { inner: Box::new(Chunker { items: items.into_iter(), render, failed: false }) }
    }

    /// Every chunk concatenated (for callers that want the whole answer).
    pub fn collect_bytes(self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in self {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

impl Iterator for Rows {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        self.inner.next()
    }
}

struct Chunker<T, F> {
    items: std::vec::IntoIter<T>,
    render: F,
    failed: bool,
}

impl<T, F> Iterator for Chunker<T, F>
where
    F: FnMut(T, &mut Vec<u8>) -> Result<()>,
{
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        if self.failed {
            return None;
        }
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 1024);
        for item in self.items.by_ref() {
            let before = buf.len();
            if let Err(e) = (self.render)(item, &mut buf) {
                self.failed = true;
                return Some(Err(e));
            }
            if buf.len() > before {
                buf.push(b'\n');
            }
            if buf.len() >= CHUNK_BYTES {
                break;
            }
        }
        (!buf.is_empty()).then_some(Ok(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_lines_and_skips_empty_renders() {
        let rows = Rows::new((0..10_000u32).collect(), |i, out| {
            if i % 2 == 0 {
                out.extend_from_slice(format!("{{\"i\":{i}}}").as_bytes());
            }
            Ok(())
        });
        let chunks: Vec<Vec<u8>> = rows.map(|c| c.unwrap()).collect();
        assert!(chunks.len() > 1);
        let all: Vec<u8> = chunks.concat();
        let text = String::from_utf8(all).unwrap();
        assert_eq!(text.lines().count(), 5000);
        assert!(text.ends_with("}\n") && !text.contains("\n\n"));
        assert!(Rows::new(Vec::<u32>::new(), |_, _| Ok(())).next().is_none());
    }
}
