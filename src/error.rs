//! The one error type of the engine. Every variant names what went wrong and where:
//! the file and offset for bad bytes on disk, the line and field for bad input.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in jobq.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// Bytes on disk do not decode: checksum, length, magic or field out of range.
    Corrupt { path: PathBuf, offset: u64, what: String },
    /// Less than the store keeps free is free on its file system: the write was
    /// refused before anything of it was written (the store stays sound and takes
    /// writes again once space is freed).
    LowSpace { path: PathBuf, available: u64, need: u64, keep: u64 },
    /// Another process (or handle) holds the store's lock.
    Locked { path: PathBuf },
    /// An earlier write or fsync failed; the store refuses writes until reopened.
    Poisoned { cause: String },
    /// The store was opened read-only.
    ReadOnly,
    /// The store is closed.
    Closed,
    /// A job key that is not `project/spider/job` with three positive integers.
    InvalidKey { input: String, reason: &'static str },
    /// Malformed input: a request, a JSON line, a parameter.
    InvalidInput { line: Option<u64>, field: Option<String>, message: String },
    /// The data directory has a layout or version this build does not know.
    Unsupported { path: PathBuf, what: String },
    /// A cluster node got what Raft forbids: a malformed replicated entry, an
    /// entry applied out of order, a cut into applied entries.
    Replication(String),
    /// A cluster node that is not the leader got a write; `leader`: the one it
    /// knows, if any. Nothing was written.
    NotLeader { leader: Option<u64> },
    /// A cluster write whose outcome is unknown: its entry was proposed and may
    /// still be committed by a new leader, or dropped.
    InDoubt(String),
    /// A cluster node cannot take writes now (no majority in time); nothing of
    /// the write was sent.
    Unavailable(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt { path: path.into(), offset, what: what.into() }
    }

    /// Bad input without a line number.
    pub fn input(message: impl Into<String>) -> Error {
        Error::InvalidInput { line: None, field: None, message: message.into() }
    }

    /// Bad input in a named field.
    pub fn field(field: &str, message: impl Into<String>) -> Error {
        Error::InvalidInput { line: None, field: Some(field.to_string()), message: message.into() }
    }

    /// Attach a 1-based line number to an input error (other errors pass through).
    pub fn at_line(self, n: u64) -> Error {
        match self {
            Error::InvalidInput { field, message, .. } => Error::InvalidInput { line: Some(n), field, message },
            Error::InvalidKey { input, reason } => Error::InvalidInput {
                line: Some(n),
                field: Some("key".into()),
                message: format!("invalid job key {input:?}: {reason}"),
            },
            other => other,
        }
    }

    /// True for a failed fdatasync or directory fsync: afterwards nothing is known
    /// of what reached the disk, and the sync is never retried.
    pub fn is_sync_failure(&self) -> bool {
        match self {
            Error::Io { op: "fdatasync" | "fsync dir", .. } => true,
            Error::Io { source, .. } => crate::fs::is_sync_failed(source),
            _ => false,
        }
    }

    /// True for a write that failed because the file system is out of space (or
    /// the user out of quota): ENOSPC, EDQUOT.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }

    /// True for a log append that failed for want of space, writing its frames
    /// or the next segment's file: what it wrote may be cut (not a sync's
    /// failure: that stays fatal).
    pub fn is_append_disk_full(&self) -> bool {
        self.is_disk_full_writing(&["append to", "create segment"])
    }

    /// True for a new index file that could not be written for want of space
    /// (its temp file's write or sync, before it is in use: it is left out).
    pub fn is_index_disk_full(&self) -> bool {
        self.is_disk_full_writing(&["publish index"])
    }

    /// A full disk met by a write (not a sync) of one of these operations.
    fn is_disk_full_writing(&self, ops: &[&str]) -> bool {
        self.is_disk_full() && !self.is_sync_failure() && matches!(self, Error::Io { op, .. } if ops.contains(op))
    }

    /// True for a write refused for want of space that left the store sound:
    /// refused before it wrote ([`Error::is_low_space`]), or cut from the log
    /// after its append met a full disk (store/queue.rs). Not a poison.
    pub fn is_refused_for_space(&self) -> bool {
        self.is_low_space() || self.is_append_disk_full()
    }

    /// True for a write refused for want of free space before it wrote anything.
    pub fn is_low_space(&self) -> bool {
        matches!(self, Error::LowSpace { .. })
    }

    /// The same failure for another write of a batch: a refusal for space, or an
    /// I/O error with its kind, OS code and sync mark (a full disk stays a full
    /// disk); anything else is a poison.
    pub(crate) fn again(&self) -> Error {
        match self {
            Error::LowSpace { path, available, need, keep } => {
                Error::LowSpace { path: path.clone(), available: *available, need: *need, keep: *keep }
            }
            Error::Io { op, path, source } => {
                let copy = match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                };
                let copy = match crate::fs::is_sync_failed(source) {
                    true => crate::fs::sync_failed(copy),
                    false => copy,
                };
                Error::Io { op, path: path.clone(), source: copy }
            }
            other => Error::Poisoned { cause: other.to_string() },
        }
    }

    /// True when a write that failed so leaves the store sound (nothing to
    /// poison): it is poisoned or closed already, a cluster's passing refusal,
    /// or refused for space ([`Error::is_refused_for_space`]).
    pub(crate) fn leaves_store_sound(&self) -> bool {
        matches!(self, Error::Poisoned { .. } | Error::Closed)
            || self.is_cluster_transient()
            || self.is_refused_for_space()
    }

    /// True for errors caused by the caller's input (HTTP 400), false for faults of the store.
    pub fn is_input(&self) -> bool {
        matches!(self, Error::InvalidInput { .. } | Error::InvalidKey { .. })
    }

    /// True for a cluster's refusals and lost leaderships: the store is sound.
    pub fn is_cluster_transient(&self) -> bool {
        matches!(self, Error::NotLeader { .. } | Error::InDoubt(_) | Error::Replication(_) | Error::Unavailable(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Corrupt { path, offset, what } => {
                write!(f, "corrupt data in {} at offset {offset}: {what}", path.display())
            }
            Error::LowSpace { path, available, need: 0, keep } => write!(
                f,
                "{} has {available} bytes free, less than the {keep} the store keeps free: \
                 writes are refused until space is freed (nothing of this one was written)",
                path.display()
            ),
            Error::LowSpace { path, available, need, keep } => write!(
                f,
                "{} has {available} bytes free, less than the {need} this write needs beside the {keep} \
                 the store keeps free: refused (nothing of it was written)",
                path.display()
            ),
            Error::Locked { path } => {
                write!(f, "the store at {} is in use by another process (its lock is held)", path.display())
            }
            Error::Poisoned { cause } => {
                write!(f, "the store refuses writes after a failed write or fsync ({cause}); reopen it")
            }
            Error::ReadOnly => write!(f, "the store is open read-only"),
            Error::Closed => write!(f, "the store is closed"),
            Error::InvalidKey { input, reason } => write!(f, "invalid job key {input:?}: {reason}"),
            Error::InvalidInput { line, field, message } => {
                if let Some(n) = line {
                    write!(f, "line {n}: ")?;
                }
                if let Some(name) = field {
                    write!(f, "field {name:?}: ")?;
                }
                f.write_str(message)
            }
            Error::Unsupported { path, what } => write!(f, "{}: {what}", path.display()),
            Error::Replication(what) => write!(f, "replication: {what}"),
            Error::NotLeader { leader: Some(id) } => write!(f, "this node is not the leader (node {id} is)"),
            Error::NotLeader { leader: None } => write!(f, "this node is not the leader, and no leader is known"),
            Error::InDoubt(what) => write!(f, "the write may or may not have been applied: {what}"),
            Error::Unavailable(what) => write!(f, "the cluster cannot take writes now: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
