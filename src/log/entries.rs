//! The Raft entry rule of a cluster node's log (format-spec/log.md, "Raft
//! entry"): an entry frame announces how many data frames and bytes follow; from
//! the first entry frame on, every frame belongs to an entry, and indices rise by
//! one. Recovery checks it frame by frame; an entry left short at the log's end is
//! a torn tail, cut at its entry frame.

use super::LogPos;
use crate::codec::entry;
use crate::codec::frame::{FrameHeader, FrameKind};

/// An entry whose data frames are still expected.
#[derive(Clone, Copy, Debug)]
pub struct OpenEntry {
    /// Its entry frame.
    pub at: LogPos,
    /// The sequence number of its entry frame.
    pub seq: u64,
    frames_left: u32,
    bytes_left: u64,
}

/// The entry state along a validated range.
#[derive(Debug, Default)]
pub struct EntryTrack {
    /// An entry frame was seen: every later frame must belong to an entry.
    seen: bool,
    last_index: Option<u64>,
    pub open: Option<OpenEntry>,
}

impl EntryTrack {
    /// Account for a valid frame at `at`; an error says why it breaks the rule.
    pub fn frame(&mut self, at: LogPos, h: &FrameHeader, payload: &[u8]) -> Result<(), String> {
        if h.kind == FrameKind::Entry {
            if self.open.is_some() {
                return Err("a Raft entry frame inside the previous entry's data".into());
            }
            let (head, _) = entry::decode(payload).map_err(|e| e.what)?;
            if let Some(last) = self.last_index.filter(|l| head.index <= *l) {
                return Err(format!("Raft entry {} after entry {last}", head.index));
            }
            self.seen = true;
            self.last_index = Some(head.index);
            if head.frames > 0 {
                let bytes_left = u64::from(head.data_len);
                self.open = Some(OpenEntry { at, seq: h.first_seq, frames_left: head.frames, bytes_left });
            }
            return Ok(());
        }
        let Some(open) = self.open.as_mut() else {
            return match self.seen {
                true => Err("a frame outside any Raft entry".into()),
                false => Ok(()),
            };
        };
        if h.frame_len() > open.bytes_left {
            return Err("a Raft entry's data frames run past its data length".into());
        }
        open.bytes_left -= h.frame_len();
        open.frames_left -= 1;
        if open.frames_left == 0 {
            if open.bytes_left != 0 {
                return Err("a Raft entry's data frames end before its data length".into());
            }
            self.open = None;
        }
        Ok(())
    }
}
