//! Answers rendered lazily: a sequence of JSON lines produced a chunk at a time,
//! so that a server can stream a long listing without holding it whole, and stop
//! rendering as soon as nobody wants the rest ([`Cancel`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::Result;

/// A flag the consumer of an answer sets when it no longer wants it (the client
/// went away). Renderers check it between rows; clones share the flag. The
/// default is a flag of its own, never set unless someone calls [`Cancel::cancel`].
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Render about this many bytes before handing a chunk out.
pub const CHUNK_BYTES: usize = 32 << 10;

/// Chunks of JSON lines (each line ends with `\n`; no chunk is empty). After an
/// error the sequence ends. Once its [`Cancel`] is set the sequence ends early,
/// between two items, and a chunk being rendered is dropped: nothing cut short
/// is handed out.
pub struct Rows {
    inner: Box<dyn Iterator<Item = Result<Vec<u8>>> + Send>,
}

impl Rows {
    /// One line per item, as `render` writes it (without the newline); an item
    /// for which `render` writes nothing gives no line. Rendering stops when
    /// `cancel` is set (a slow `render` may check it too).
    pub fn new<T, F>(items: Vec<T>, cancel: Cancel, render: F) -> Rows
    where
        T: Send + 'static,
        F: FnMut(T, &mut Vec<u8>) -> Result<()> + Send + 'static,
    {
        Rows { inner: Box::new(Chunker { items: items.into_iter(), render, cancel, done: false, lines: false }) }
    }

    /// As [`Rows::new`], but `render` writes whole lines (each ending with `\n`,
    /// none empty), any number of them an item: a batch of rows rendered at once.
    pub fn lines<T, F>(items: Vec<T>, cancel: Cancel, render: F) -> Rows
    where
        T: Send + 'static,
        F: FnMut(T, &mut Vec<u8>) -> Result<()> + Send + 'static,
    {
        Rows { inner: Box::new(Chunker { items: items.into_iter(), render, cancel, done: false, lines: true }) }
    }

    /// Lines of `items` rendered a run at a time: `render(run, out, limit)`
    /// writes one line per item (each ending with `\n`) from the run's start,
    /// stops after the first that takes `out` to `limit` bytes or more, and
    /// says how many it wrote (at least one). A chunk holds about
    /// [`RUN_CHUNK_BYTES`], or one row larger than that: a row of megabytes is
    /// rendered alone, small ones up to [`MAX_RUN`] a call.
    pub fn runs<T, F>(items: Vec<T>, cancel: Cancel, render: F) -> Rows
    where
        T: Send + 'static,
        F: FnMut(&[T], &mut Vec<u8>, usize) -> Result<usize> + Send + 'static,
    {
        Rows { inner: Box::new(Runs { items, at: 0, render, cancel, done: false }) }
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
    cancel: Cancel,
    /// After an error or a cancel.
    done: bool,
    /// `render` ends its lines itself.
    lines: bool,
}

impl<T, F> Iterator for Chunker<T, F>
where
    F: FnMut(T, &mut Vec<u8>) -> Result<()>,
{
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        if self.done {
            return None;
        }
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 1024);
        for item in self.items.by_ref() {
            if self.cancel.is_cancelled() {
                break;
            }
            let before = buf.len();
            if let Err(e) = (self.render)(item, &mut buf) {
                self.done = true;
                return Some(Err(e));
            }
            if buf.len() > before && !self.lines {
                buf.push(b'\n');
            }
            if buf.len() >= CHUNK_BYTES {
                break;
            }
        }
        if self.cancel.is_cancelled() {
            self.done = true;
            return None;
        }
        (!buf.is_empty()).then_some(Ok(buf))
    }
}

/// Items a run renders at most.
pub const MAX_RUN: usize = 64;

/// Bytes a listing's chunk holds before it is handed out (or one row larger):
/// 64 rows of a few KiB, as whole batches of 64 rows were before; a row of
/// megabytes alone. (Fewer, larger chunks than [`CHUNK_BYTES`]: each chunk is a
/// render on the blocking pool.)
pub const RUN_CHUNK_BYTES: usize = 256 << 10;

struct Runs<T, F> {
    items: Vec<T>,
    at: usize,
    render: F,
    cancel: Cancel,
    done: bool,
}

impl<T, F> Iterator for Runs<T, F>
where
    F: FnMut(&[T], &mut Vec<u8>, usize) -> Result<usize>,
{
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        while self.at < self.items.len() && buf.len() < RUN_CHUNK_BYTES {
            if self.cancel.is_cancelled() {
                self.done = true;
                return None;
            }
            let run = &self.items[self.at..(self.at + MAX_RUN).min(self.items.len())];
            match (self.render)(run, &mut buf, RUN_CHUNK_BYTES) {
                // At least one: a renderer that wrote none would never end.
                Ok(n) => self.at += n.clamp(1, run.len()),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        if self.cancel.is_cancelled() {
            self.done = true;
            return None;
        }
        (!buf.is_empty()).then_some(Ok(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_lines_and_skips_empty_renders() {
        let rows = Rows::new((0..10_000u32).collect(), Cancel::new(), |i, out| {
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
        assert!(Rows::new(Vec::<u32>::new(), Cancel::new(), |_, _| Ok(())).next().is_none());
    }

    #[test]
    fn runs_hold_a_chunk_or_one_large_row() {
        // Rows of 100 bytes, then of 1 MiB, then small again.
        let sizes: Vec<usize> = [vec![100; 1000], vec![1 << 20; 5], vec![100; 1000]].concat();
        let runs = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = runs.clone();
        let rows = Rows::runs(sizes.clone(), Cancel::new(), move |run: &[usize], out, limit| {
            let mut done = 0;
            for n in run {
                out.extend(std::iter::repeat_n(b'x', n - 1).chain([b'\n']));
                done += 1;
                if out.len() >= limit {
                    break;
                }
            }
            seen.lock().push(done);
            Ok(done)
        });
        let chunks: Vec<Vec<u8>> = rows.map(|c| c.unwrap()).collect();
        let lines: Vec<usize> = chunks.concat().split(|b| *b == b'\n').map(|l| l.len() + 1).collect();
        assert_eq!(lines[..lines.len() - 1], sizes[..], "every row, in order");
        assert!(chunks.iter().all(|c| c.len() < RUN_CHUNK_BYTES + (1 << 20)), "no chunk holds two large rows");
        assert!(runs.lock().iter().all(|n| (1..=MAX_RUN).contains(n)));
        assert!(runs.lock().len() < 1000 / 8, "small rows are rendered many a run: {:?}", runs.lock());
        assert!(Rows::runs(Vec::<u32>::new(), Cancel::new(), |_: &[u32], _, _| Ok(0)).next().is_none());
    }

    #[test]
    fn a_cancel_stops_rendering_between_items() {
        let cancel = Cancel::new();
        let rendered = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (c, r) = (cancel.clone(), rendered.clone());
        let mut rows = Rows::new((0..1_000u32).collect(), cancel.clone(), move |i, out| {
            r.fetch_add(1, Ordering::Relaxed);
            if i == 10 {
                c.cancel();
            }
            out.extend_from_slice(b"{}");
            Ok(())
        });
        assert!(rows.next().is_none(), "the chunk being rendered when the cancel came is dropped");
        assert_eq!(rendered.load(Ordering::Relaxed), 11, "no item rendered after the cancel");
        assert!(rows.next().is_none());
        assert_eq!(rendered.load(Ordering::Relaxed), 11);
    }
}
