//! Tests of the sequence-number cursor, on logs written by the log writer over the
//! simulated file system.

use super::*;
use crate::codec::frame::FLAG_TXN;
use crate::fs::SimFs;
use crate::log::writer::LogWriter;

fn dir() -> &'static Path {
    Path::new("/log")
}

fn sim() -> (Arc<dyn FileSystem>, LogWriter) {
    let fs: Arc<dyn FileSystem> = Arc::new(SimFs::new());
    fs.create_dir(dir()).unwrap();
    let w = LogWriter::create(fs.clone(), dir(), 1, 1, 64 << 10).unwrap();
    (fs, w)
}

/// A payload that names its frame's first sequence number and `tag`.
fn payload(seq: u64, tag: u8, len: usize) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.resize(len.max(9), tag);
    p
}

/// Frames of 1 to 3 sequence numbers and payloads of up to 20 KiB, over several
/// segments; returns each frame's `(first_seq, count)`.
fn fill(w: &mut LogWriter, frames: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    for i in 0..frames {
        let (count, len) = (1 + (i % 3) as u32, ((i * 7919) % (20 << 10)) as usize);
        let seq = w.next_seq();
        w.append(FrameKind::Jobs, 0, count, 0, &payload(seq, 1, len)).unwrap();
        out.push((seq, count));
    }
    w.sync().unwrap();
    out
}

fn read_all(c: &mut LogCursor<'_>) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    while let Next::Frame(f) = c.next_frame().unwrap() {
        assert_eq!(&c.payload(&f)[..8], &f.header.first_seq.to_le_bytes());
        out.push((f.header.first_seq, f.header.count));
    }
    out
}

#[test]
fn every_sequence_number_is_found_and_read_on_from() {
    let (fs, mut w) = sim();
    let frames = fill(&mut w, 300);
    assert!(segment::list(&*fs, dir()).unwrap().len() > 20, "several segments");
    let last = w.next_seq() - 1;
    let index = SeqIndex::default();
    // Twice: the second pass finds the samples the first one noted.
    for _ in 0..2 {
        for seq in 1..=last {
            let Seek::At(mut c) = index.seek(&*fs, dir(), seq, last).unwrap() else { panic!("gone") };
            let got = read_all(&mut c);
            let from = frames.iter().position(|&(s, n)| s <= seq && seq < s + u64::from(n)).unwrap();
            assert_eq!(got, frames[from..], "from {seq}");
            assert_eq!(c.at().seq, last + 1);
        }
    }
    // A lower limit: nothing past it, and the cursor stops before the frame that crosses it.
    let limit = frames[100].0 + 1;
    let Seek::At(mut c) = index.seek(&*fs, dir(), 1, limit).unwrap() else { panic!("gone") };
    let got = read_all(&mut c);
    assert!(got.iter().all(|&(s, n)| s + u64::from(n) - 1 <= limit));
    assert_eq!(got.len(), 100 + usize::from(frames[100].1 <= 2));
}

#[test]
fn a_position_before_the_first_segment_is_gone() {
    let (fs, mut w) = sim();
    fill(&mut w, 60);
    let last = w.next_seq() - 1;
    let index = SeqIndex::default();
    let numbers = segment::list(&*fs, dir()).unwrap();
    let Seek::At(_) = index.seek(&*fs, dir(), 1, last).unwrap() else { panic!("gone") };
    index.retire(&numbers[..2]);
    for n in &numbers[..2] {
        fs.remove_file(&path_of(dir(), *n)).unwrap();
    }
    let third =
        segment::read_header(&*fs.open(&path_of(dir(), numbers[2]), OpenMode::Read).unwrap(), dir()).unwrap().first_seq;
    for seq in [1, third - 1] {
        assert!(matches!(index.seek(&*fs, dir(), seq, last).unwrap(), Seek::Gone { first_seq } if first_seq == third));
    }
    let Seek::At(mut c) = index.seek(&*fs, dir(), third, last).unwrap() else { panic!("gone") };
    assert_eq!(read_all(&mut c)[0].0, third);
}

#[test]
fn a_read_resumes_where_the_last_one_ended() {
    let (fs, mut w) = sim();
    fill(&mut w, 10);
    let limit = w.next_seq() - 1;
    let index = SeqIndex::default();
    let Seek::At(mut c) = index.seek(&*fs, dir(), 1, limit).unwrap() else { panic!("gone") };
    read_all(&mut c);
    let end = c.at();
    index.note_end(end);
    let more = fill(&mut w, 40);
    let limit = w.next_seq() - 1;
    let mut c = index.resume(&*fs, dir(), end, limit).unwrap().expect("the segment is there");
    assert_eq!(read_all(&mut c), more, "across the segments written since");
    let Seek::At(mut c) = index.seek(&*fs, dir(), end.seq, limit).unwrap() else { panic!("gone") };
    assert_eq!(read_all(&mut c), more);
}

/// Regression: a segment made by an import that was undone is removed and made
/// again under its number; a handle kept from before would read the undone frames.
#[test]
fn a_segment_made_again_after_an_undone_import_is_read_afresh() {
    let (fs, mut w) = sim();
    fill(&mut w, 5);
    let durable = w.next_seq() - 1;
    let index = SeqIndex::default();
    w.start_segment().unwrap();
    let undone = w.end();
    // Over several segments: undoing it removes them and makes its first one again.
    for _ in 0..5 {
        let seq = w.next_seq();
        w.append(FrameKind::Jobs, FLAG_TXN, 1, 0, &payload(seq, 7, 40 << 10)).unwrap();
    }
    assert!(w.end().segment > undone.segment + 1);
    // A seek beside the import opens its segment (the binary search reads its header).
    let Seek::At(mut c) = index.seek(&*fs, dir(), durable, durable).unwrap() else { panic!("gone") };
    assert_eq!(read_all(&mut c).len(), 1);
    w.truncate_to(undone, durable + 1).unwrap();
    for _ in 0..3 {
        let seq = w.next_seq();
        w.append(FrameKind::Jobs, 0, 1, 0, &payload(seq, 9, 200)).unwrap();
    }
    w.sync().unwrap();
    let Seek::At(mut c) = index.seek(&*fs, dir(), durable + 1, durable + 3).unwrap() else { panic!("gone") };
    let mut n = 0;
    while let Next::Frame(f) = c.next_frame().unwrap() {
        assert_eq!(
            (f.header.flags, c.payload(&f).len(), c.payload(&f)[8]),
            (0, 200, 9),
            "the frames written after the undo"
        );
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn an_import_counts_once_its_commit_is_within_the_limit() {
    let (fs, mut w) = sim();
    fill(&mut w, 3);
    let first = w.next_seq();
    for _ in 0..4 {
        let seq = w.next_seq();
        w.append(FrameKind::Jobs, FLAG_TXN, 2, 0, &payload(seq, 3, 50)).unwrap();
    }
    let commit = w.next_seq();
    let mut p = Vec::new();
    crate::codec::record::encode_commit(first, &mut p);
    w.append(FrameKind::Commit, 0, 1, 0, &p).unwrap();
    w.sync().unwrap();
    for (limit, committed) in [(commit - 1, false), (commit, true)] {
        let index = SeqIndex::default();
        let Seek::At(mut c) = index.seek(&*fs, dir(), first, limit).unwrap() else { panic!("gone") };
        for _ in 0..4 {
            let h = match c.next_frame().unwrap() {
                Next::Frame(f) => f.header,
                _ => panic!("a transaction frame"),
            };
            assert_eq!(c.txn_committed(&h).unwrap(), committed, "limit {limit}");
        }
    }
}

#[test]
fn a_segment_sealed_after_the_cursor_learnt_its_length_is_read_to_its_last_frame() {
    // The tail segment is preallocated with zeros, then cut back to its last frame
    // when sealed: a cursor that learnt the longer length reads on without error.
    let (fs, _) = sim();
    let d2 = Path::new("/log2");
    fs.create_dir(d2).unwrap();
    let mut w = LogWriter::create(fs.clone(), d2, 1, 1, 8 << 20).unwrap();
    // Frames of 100 KB: the cursor's second window read comes after the seal.
    for i in 0..4 {
        let seq = w.next_seq();
        w.append(FrameKind::Jobs, 0, 1, 0, &payload(seq, 2, (100 << 10) + i)).unwrap();
    }
    w.sync().unwrap();
    let last = w.next_seq() - 1;
    let index = SeqIndex::default();
    let Seek::At(mut c) = index.seek(&*fs, d2, 1, last).unwrap() else { panic!("gone") };
    let stale = c.len;
    w.rotate().unwrap();
    let seq = w.next_seq();
    w.append(FrameKind::Jobs, 0, 1, 0, &payload(seq, 3, 50)).unwrap();
    w.sync().unwrap();
    let sealed = fs.open(&path_of(d2, 1), OpenMode::Read).unwrap().len().unwrap();
    assert!(stale > sealed, "the cursor learnt the preallocated length ({stale} > {sealed})");
    assert_eq!(read_all(&mut c).len(), 4);
    assert_eq!(c.at().seq, last + 1);
}
