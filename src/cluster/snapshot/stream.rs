//! openraft's `SnapshotData`: a stream of bytes it reads in chunks to send, or
//! writes chunk by chunk as they arrive. Sending reads a built snapshot's head
//! and member files in order without copying them together; receiving writes
//! one file. Both through the store's file system (reads and writes are plain
//! positioned calls on local files: they complete without waiting on the
//! network, so they are done inline).

use std::io::{self, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use crate::fs::{FileSystem, FsFile};

/// A part of the stream: bytes in memory, or the first `len` bytes of a file.
enum Part {
    Bytes(Vec<u8>),
    File { path: PathBuf, len: u64 },
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
}

/// A snapshot's bytes, to send or being received.
pub struct SnapshotStream {
    parts: Vec<Part>,
    /// Sending: the file system, and the one part's file open now (by index).
    fs: Option<Arc<dyn FileSystem>>,
    open: Mutex<Option<(usize, Arc<dyn FsFile>)>>,
    /// Receiving: the file written, and where it is.
    sink: Option<(Arc<dyn FsFile>, PathBuf)>,
    pos: u64,
    /// Sending a node's snapshot: its files stay while the stream lives.
    _lease: Option<super::build::Lease>,
}

/// The largest stream a node receives (a seek past it is refused): 16 TiB.
const MAX_RECEIVE: u64 = 1 << 44;

impl SnapshotStream {
    /// A stream reading `head` and then each file's first `len` bytes (a file is
    /// open only while the stream reads it).
    pub fn sending(fs: Arc<dyn FileSystem>, head: Vec<u8>, files: Vec<(PathBuf, u64)>) -> SnapshotStream {
        let mut parts = vec![Part::Bytes(head)];
        parts.extend(files.into_iter().map(|(path, len)| Part::File { path, len }));
        SnapshotStream { parts, fs: Some(fs), open: Mutex::new(None), sink: None, pos: 0, _lease: None }
    }

    /// A stream written into `file` (empty) at `path`.
    pub fn receiving(file: Arc<dyn FsFile>, path: PathBuf) -> SnapshotStream {
        SnapshotStream {
            parts: Vec::new(),
            fs: None,
            open: Mutex::new(None),
            sink: Some((file, path)),
            pos: 0,
            _lease: None,
        }
    }

    /// The stream holding `lease` on its snapshot's directory while it lives.
    pub fn leased(self, lease: Option<super::build::Lease>) -> SnapshotStream {
        SnapshotStream { _lease: lease, ..self }
    }

    /// Part `i`'s file (at `path`), opened unless it is the one open now.
    fn file(&self, i: usize, path: &std::path::Path) -> io::Result<Arc<dyn FsFile>> {
        let mut open = self.open.lock();
        if let Some((j, f)) = &*open {
            if *j == i {
                return Ok(f.clone());
            }
        }
        let fs = self.fs.as_ref().ok_or_else(|| io::Error::other("a snapshot stream without its file system"))?;
        let f = fs.open(path, crate::fs::OpenMode::Read)?;
        *open = Some((i, f.clone()));
        Ok(f)
    }

    /// The received file and its path (none when sending).
    pub fn received(&self) -> Option<&(Arc<dyn FsFile>, PathBuf)> {
        self.sink.as_ref()
    }

    fn len(&self) -> io::Result<u64> {
        match &self.sink {
            Some((f, _)) => f.len(),
            None => Ok(self.parts.iter().map(Part::len).sum()),
        }
    }

    fn read_at(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((f, _)) = &self.sink {
            return f.read_at(buf, self.pos);
        }
        let mut start = 0u64;
        for (i, p) in self.parts.iter().enumerate() {
            let end = start + p.len();
            if self.pos < end {
                let at = self.pos - start;
                let n = buf.len().min((end - self.pos) as usize);
                return match p {
                    Part::Bytes(b) => {
                        buf[..n].copy_from_slice(&b[at as usize..at as usize + n]);
                        Ok(n)
                    }
                    Part::File { path, .. } => {
                        crate::fs::read_exact_at(&*self.file(i, path)?, &mut buf[..n], at)?;
                        Ok(n)
                    }
                };
            }
            start = end;
        }
        Ok(0)
    }
}

impl tokio::io::AsyncRead for SnapshotStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.read_at(buf.initialize_unfilled());
        Poll::Ready(n.map(|n| {
            buf.advance(n);
            self.pos += n as u64;
        }))
    }
}

impl tokio::io::AsyncWrite for SnapshotStream {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let Some((file, _)) = &self.sink else {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::Unsupported, "a snapshot being sent is read-only")));
        };
        if self.pos.saturating_add(data.len() as u64) > MAX_RECEIVE {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidInput, "a snapshot over 16 TiB")));
        }
        let r = crate::fs::write_all_at(&**file, data, self.pos);
        Poll::Ready(r.map(|()| {
            self.pos += data.len() as u64;
            data.len()
        }))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The last chunk arrived: a stream that does not check whole is refused
        // here (the sender tries again) rather than at its install. Durability is
        // the install's business: it copies what it checked into synced files.
        let r = match &self.sink {
            Some((file, path)) => super::install::check_stream(&**file, path).map(drop).map_err(io::Error::other),
            None => Ok(()),
        };
        Poll::Ready(r)
    }
}

impl tokio::io::AsyncSeek for SnapshotStream {
    fn start_seek(mut self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, "a seek outside the snapshot");
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len()?.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let pos = pos.ok_or_else(bad)?;
        if pos > MAX_RECEIVE {
            return Err(bad());
        }
        self.pos = pos;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sending_stream_reads_its_parts_in_order_one_file_open_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn FileSystem> = Arc::new(crate::fs::RealFs);
        let mut want = b"head".to_vec();
        let mut files = Vec::new();
        for i in 0..40u8 {
            let p = dir.path().join(format!("f{i}"));
            let bytes: Vec<u8> = (0..100u32).map(|j| i.wrapping_mul(31).wrapping_add(j as u8)).collect();
            std::fs::write(&p, &bytes).unwrap();
            // The stream sends a prefix of each file.
            let len = 50 + u64::from(i);
            want.extend_from_slice(&bytes[..len as usize]);
            files.push((p, len));
        }
        let mut s = SnapshotStream::sending(fs, b"head".to_vec(), files);
        assert_eq!(s.len().unwrap(), want.len() as u64);
        for step in [1usize, 7, 64, 1000] {
            let mut got = Vec::new();
            s.pos = 0;
            loop {
                let mut buf = vec![0; step];
                let n = s.read_at(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                s.pos += n as u64;
                // Never more than the part being read is open.
                assert!(s.open.lock().as_ref().is_none_or(|(i, _)| *i >= 1));
            }
            assert_eq!(got, want, "reads of {step}");
        }
    }
}
