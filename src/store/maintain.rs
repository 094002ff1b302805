//! Index maintenance: persist index images once the log under them is durable,
//! merge adjacent index files of one size class, and remove files a durable merged
//! file covers. Runs on a background thread, or inline in tests.
//!
//! Every new file is written to a temp name, fsynced, renamed and its directory
//! fsynced before it is used; a file is removed only once a durable file covering
//! its range is in use.

use std::ops::Range;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use super::index_build::IndexBuild;
use super::version::SegmentSlot;
use super::{Durability, Inner, Options};
use crate::error::{Error, Result};
use crate::fs;
use crate::index::{format, merge, DeadSet, IndexSegment, SegmentMeta};

enum Msg {
    Work,
    Stop,
}

/// The maintenance thread.
pub(crate) struct Background {
    tx: Sender<Msg>,
    handle: JoinHandle<()>,
}

impl Background {
    pub fn start(inner: &Arc<Inner>) -> Background {
        let weak: Weak<Inner> = Arc::downgrade(inner);
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("jobq-index".into())
            .spawn(move || loop {
                match rx.recv() {
                    Ok(Msg::Work) => {}
                    _ => return,
                }
                loop {
                    match rx.try_recv() {
                        Ok(Msg::Work) => continue,
                        Ok(Msg::Stop) => return,
                        Err(_) => break,
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                if run(&inner).is_ok() {
                    // A failed training is no damage: the store stays unpacked (a
                    // failed write poisons it, as any write's would).
                    let _ = super::training::train_if_due(&inner);
                }
            })
            .expect("spawning the index thread");
        let bg = Background { tx, handle };
        bg.wake();
        bg
    }

    pub fn wake(&self) {
        let _ = self.tx.send(Msg::Work);
    }

    pub fn stop(self) {
        let _ = self.tx.send(Msg::Stop);
        let _ = self.handle.join();
    }
}

/// After a write froze the tail: wake the maintenance thread, or (no thread) run it.
pub(crate) fn after_freeze(inner: &Inner) -> Result<()> {
    match &*inner.maintenance.lock() {
        Some(bg) => {
            bg.wake();
            Ok(())
        }
        None => run(inner),
    }
}

/// Persist what is ready, merge what is due, remove what is covered. A failure
/// poisons the store.
pub(crate) fn run(inner: &Inner) -> Result<()> {
    let _one_at_a_time = inner.maint_lock.lock();
    let r = (|| {
        persist_ready(inner)?;
        while merge_once(inner)? {}
        sweep(inner)
    })();
    match r {
        // Not written for want of space (looked at, or met by the write of the
        // file: its temp file removed, nothing of it in use): the images stay in
        // memory (a reopen replays the tail they cover) until a later run finds room.
        Err(e) if e.is_low_space() || e.is_index_disk_full() => Ok(()),
        Err(e) => {
            if !matches!(e, Error::Poisoned { .. } | Error::Closed) {
                inner.commit.poison(&e);
            }
            Err(e)
        }
        Ok(()) => Ok(()),
    }
}

/// Publish the working version if readers may see all of it.
pub(crate) fn publish_if_clean(inner: &Inner, w: &super::writer::Writer) {
    if inner.opts.durability == Durability::Buffered || inner.commit.durable_seq() + 1 >= w.next_seq {
        inner.commit.publish_now(w.version());
    }
}

/// Write an image to its file and map it back.
pub(crate) fn write_file(inner: &Inner, seg: &IndexSegment) -> Result<IndexSegment> {
    if inner.commit.durable_seq() < seg.meta().hi_seq {
        // IMPORTANT: an index is never ahead of the durable log.
        inner.commit.wait_durable(seg.meta().hi_seq)?;
    }
    let fsys = &*inner.opts.fs;
    let name = seg.meta().file_name();
    let path = inner.gen_dir.join(&name);
    fs::publish_file(fsys, &inner.gen_dir, &name, seg.bytes()).map_err(|e| Error::io("publish index", &path, e))?;
    let bytes = fsys.map(&path).map_err(|e| Error::io("map", &path, e))?;
    seg.with_bytes(bytes, &path)
}

fn persist_ready(inner: &Inner) -> Result<()> {
    loop {
        let next = {
            let w = inner.writer.lock();
            w.segments.iter().find(|s| !s.seg.is_persisted()).map(|s| s.seg.clone())
        };
        let Some(seg) = next else { return Ok(()) };
        inner.space.check(&*inner.opts.fs, seg.bytes().len() as u64)?;
        let mapped = Arc::new(write_file(inner, &seg)?);
        let mut w = inner.writer.lock();
        if let Some(slot) = w.segments.iter_mut().find(|s| Arc::ptr_eq(&s.seg, &seg)) {
            slot.seg = mapped;
        }
        publish_if_clean(inner, &w);
    }
}

/// Size class of an index file of `live` docs: class `k` is centred on `fanout^k`
/// tails' worth, and spans a factor of `fanout` (class 0: below 2 tails with the
/// fanout 4). A tail is frozen at `memtable_entries` or a little past it (the
/// batch that crossed the line), so every frozen tail is in class 0, and `fanout`
/// files of class `k` merge into one of class `k + 1`.
fn class_of(live: u64, opts: &Options) -> u32 {
    let base = opts.memtable_entries.max(1) as f64;
    let f = opts.merge_fanout.max(2) as f64;
    let centred = live as f64 / base * f.sqrt();
    if centred < f {
        0
    } else {
        (centred.ln() / f.ln()) as u32
    }
}

/// The newest run of `fanout` or more adjacent files of one size class. When
/// there are too many files, the `fanout` adjacent ones with the fewest live docs
/// (the cheapest merge that takes `fanout - 1` files away; never the newest ones
/// blindly, which may hold a big file that every later freeze would rewrite).
fn pick(slots: &[SegmentSlot], opts: &Options) -> Option<Range<usize>> {
    pick_by(&slots.iter().map(SegmentSlot::live_docs).collect::<Vec<_>>(), opts)
}

fn pick_by(live: &[u64], opts: &Options) -> Option<Range<usize>> {
    let f = opts.merge_fanout.max(2);
    let classes: Vec<u32> = live.iter().map(|l| class_of(*l, opts)).collect();
    let mut end = live.len();
    while end > 0 {
        let c = classes[end - 1];
        let mut start = end - 1;
        while start > 0 && classes[start - 1] == c {
            start -= 1;
        }
        if end - start >= f {
            return Some(start..end);
        }
        end = start;
    }
    if live.len() <= 4 * f {
        return None;
    }
    let start = (0..=live.len() - f).min_by_key(|s| live[*s..*s + f].iter().sum::<u64>())?;
    Some(start..start + f)
}

fn merge_once(inner: &Inner) -> Result<bool> {
    let (inputs, range) = {
        let w = inner.writer.lock();
        match pick(&w.segments, &inner.opts) {
            Some(r) => (w.segments[r.clone()].to_vec(), r),
            None => return Ok(false),
        }
    };
    // IMPORTANT: only a version the merged range itself supersedes is dropped. A doc
    // superseded from outside (a later file, or the tail, whose record may not be
    // durable yet) stays in the merged file, marked dead in memory only: after a
    // crash that loses the newer record, this doc is the job's last durable version.
    let (first, last) = (inputs[0].seg.meta(), inputs[inputs.len() - 1].seg.meta());
    let meta = SegmentMeta { lo_seq: first.lo_seq, docs: 0, ..*last };
    // The merged file is at most its inputs' size.
    inner.space.check(&*inner.opts.fs, inputs.iter().map(|s| s.seg.bytes().len() as u64).sum())?;
    let upper: u64 = inputs.iter().map(|s| s.seg.meta().docs).sum();
    let mut out = IndexBuild::new(inner, upper, &format!("merge-{:016x}-{:016x}", meta.lo_seq, meta.hi_seq))?;
    let mut dead_outside: Vec<(u32, u64)> = Vec::new();
    for (at, slot) in inputs.iter().enumerate() {
        for (i, project) in slot.seg.projects().enumerate() {
            let sec = slot.seg.section_at(i);
            let mut dropped = DeadSet::new();
            for doc in slot.dead[i].docs() {
                let local = sec.local(doc);
                let within = inputs[at + 1..]
                    .iter()
                    .any(|later| later.seg.section(project).is_some_and(|s| s.find(local).is_some()));
                if within {
                    dropped.insert(doc);
                } else {
                    dead_outside.push((project, local));
                }
            }
            merge::for_live_entries(&sec, &dropped, merge::CHUNK_DOCS, &mut |docs| out.push(docs))?;
        }
    }
    let merged = out.publish(inner, meta, &inputs[inputs.len() - 1].seg.catalog())?;
    let merged = Arc::new(merged);
    crate::crashpoint::hit("merge_before_install");
    {
        let mut w = inner.writer.lock();
        let at =
            w.segments.iter().position(|s| Arc::ptr_eq(&s.seg, &inputs[0].seg) || same_file(&s.seg, &inputs[0].seg));
        let Some(at) = at.filter(|a| *a == range.start) else {
            return Err(Error::corrupt(merged.path(), 0, "index files changed under a merge"));
        };
        let mut slot = SegmentSlot::new(merged.clone());
        for (project, local) in dead_outside {
            if let Some(d) = merged.section(project).and_then(|m| m.find(local)) {
                slot.kill(project, d);
            }
        }
        for (old, now) in inputs.iter().zip(&w.segments[at..at + inputs.len()]) {
            for (i, project) in now.seg.projects().enumerate() {
                let sec = now.seg.section_at(i);
                for doc in now.dead[i].added_since(&old.dead[i]) {
                    if let Some(d) = merged.section(project).and_then(|m| m.find(sec.local(doc))) {
                        slot.kill(project, d);
                    }
                }
            }
        }
        w.segments.splice(at..at + inputs.len(), [slot]);
        publish_if_clean(inner, &w);
    }
    inner.counters.note_merge(merged.meta().docs);
    Ok(true)
}

fn same_file(a: &IndexSegment, b: &IndexSegment) -> bool {
    a.meta() == b.meta()
}

/// Remove index files that a durable file in use covers.
fn sweep(inner: &Inner) -> Result<()> {
    let fsys = &*inner.opts.fs;
    let used: Vec<(u64, u64, bool)> = {
        let w = inner.writer.lock();
        w.segments.iter().map(|s| (s.seg.meta().lo_seq, s.seg.meta().hi_seq, s.seg.is_persisted())).collect()
    };
    let mut removed = false;
    for name in fsys.read_dir(&inner.gen_dir).map_err(|e| Error::io("list", &inner.gen_dir, e))? {
        let Some((lo, hi)) = format::parse_name(&name) else {
            continue;
        };
        let in_use = used.iter().any(|&(l, h, _)| (l, h) == (lo, hi));
        let covered = used.iter().any(|&(l, h, mapped)| mapped && l <= lo && hi <= h);
        if !in_use && covered {
            let p = inner.gen_dir.join(&name);
            fsys.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            removed = true;
        }
    }
    if removed {
        // IMPORTANT: fsync folder, so removed files stay removed.
        fsys.sync_dir(&inner.gen_dir).map_err(|e| Error::io("fsync dir", &inner.gen_dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::fs::{CrashMode, SimFs};
    use crate::model::{JobKey, JobState, ManualClock};
    use crate::store::request::{parse_push, parse_update};
    use crate::{Durability, Options, Store};

    #[test]
    fn frozen_tails_share_a_class_and_merges_take_the_small_files() {
        let opts = Options { memtable_entries: 4096, merge_fanout: 4, ..Options::default() };
        let class = |n| super::class_of(n, &opts);
        // A tail frozen at the line or a batch past it, or cut short: class 0.
        for n in [0, 1, 2297, 4096, 4097, 4200, 8191] {
            assert_eq!(class(n), 0, "{n} docs");
        }
        // Four of a class make one of the next.
        assert_eq!(class(4 * 4096), 1);
        assert_eq!(class(4 * 4200), 1);
        assert_eq!(class(16 * 4096), 2);
        assert_eq!(class(64 * 4096), 3);
        // Newest run first: four class-0 files after a big one.
        let pick = |live: &[u64]| super::pick_by(live, &opts);
        assert_eq!(pick(&[1_000_000, 4096, 4099, 4096, 4107]), Some(1..5));
        assert_eq!(pick(&[1_000_000, 4096, 4099, 4096]), None);
        // Too many files and no run of four: the cheapest four adjacent ones,
        // never the big file.
        let mut live = vec![1_000_000, 16_384, 70_000, 4096, 20_000];
        live.extend([300_000, 4096, 18_000, 4096, 70_000, 300_000, 17_000, 400_000, 4096, 4096, 16_500, 4096]);
        let r = pick(&live).expect("too many files");
        assert_eq!(r.len(), 4);
        let cost: u64 = live[r.clone()].iter().sum();
        for s in 0..=live.len() - 4 {
            assert!(cost <= live[s..s + 4].iter().sum::<u64>(), "{r:?} is not the cheapest");
        }
        assert!(!r.contains(&0), "the big file is left alone");
    }

    /// A buffered store on `sim` that freezes tails of `tail` entries and merges
    /// `fanout` files at a time, inline.
    fn inline_merges(sim: &SimFs, tail: usize, fanout: usize) -> Options {
        Options {
            fs: Arc::new(sim.clone()),
            clock: Arc::new(ManualClock::new(5000)),
            durability: Durability::Buffered,
            background: false,
            memtable_entries: tail,
            merge_fanout: fanout,
            ..Options::default()
        }
    }

    /// Pushes in batches of 1 to 5 freeze tails of 64 to 68 docs. They merge
    /// into files a size class at a time: a doc is rewritten about once per class
    /// it passes, not each time the files pile up (the fallback once merged the
    /// newest files, big ones included, after most freezes).
    #[test]
    fn merges_rewrite_each_doc_a_few_times() {
        let sim = SimFs::new();
        let store = Store::open("/db", inline_merges(&sim, 64, 4)).unwrap();
        let spec = parse_push(r#"{"spider":"s"}"#).unwrap();
        let (mut pushed, mut r) = (0u64, 7u64);
        while pushed < 20_000 {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = 1 + (r >> 33) % 5;
            store.push(1, &vec![spec.clone(); n as usize], None).unwrap();
            pushed += n;
        }
        let m = store.metrics();
        // 20,000 docs pass at most log4(20000 / 64 * 2) + 1 = 5 classes.
        assert!(m.merged_docs <= 5 * pushed, "{} docs merged for {pushed} pushed", m.merged_docs);
        assert!(m.merges > 0);
        assert!(m.index_files <= 20, "{} index files", m.index_files);
    }

    /// A merge must keep a job's last version that the merged range holds when the
    /// newer version lives only in the tail: that record is not durable yet, and a
    /// power cut may take it (found by the power-cut soak).
    #[test]
    fn a_merge_keeps_versions_superseded_only_from_the_tail() {
        let sim = SimFs::new();
        let opts = inline_merges(&sim, 1000, 2);
        let store = Store::open("/db", opts.clone()).unwrap();
        let push = |spider: &str| store.push(1, &[parse_push(&format!(r#"{{"spider":"{spider}"}}"#)).unwrap()], None);
        push("k").unwrap();
        store.flush_indexes().unwrap();
        push("a").unwrap();
        {
            // A second index file, persisted, not yet merged.
            let inner = store.inner();
            let mut w = inner.writer.lock();
            assert!(w.freeze().unwrap());
            w.frozen = 0;
        }
        super::persist_ready(&store.inner()).unwrap();
        store.sync().unwrap();
        let k = JobKey::new(1, 1, 1);
        // The newer version of k: in the tail only, written but not synced.
        store.update(1, &[parse_update(r#"{"key":"1/1/1","state":"finished"}"#, 1).unwrap()], None).unwrap();
        assert!(super::merge_once(&store.inner()).unwrap(), "the two files merge");
        assert_eq!(store.snapshot().get(k).unwrap().unwrap().state, JobState::Finished);
        std::mem::forget(store);
        sim.crash(CrashMode::Drop, 1);
        let store = Store::open("/db", opts).unwrap();
        let job =
            store.snapshot().get(k).unwrap().expect("the durable version of 1/1/1 survives the merge and the crash");
        assert_eq!(job.state, JobState::Pending);
    }

    /// Tags are interned for a tail only: after a freeze the writer holds none of
    /// them (it kept every tag ever written, and a client writing new tags grew
    /// the server's memory without bound).
    #[test]
    fn frozen_tails_leave_no_interned_tags() {
        let opts =
            Options { fs: Arc::new(SimFs::new()), background: false, memtable_entries: 64, ..Options::default() };
        let store = Store::open("/db", opts).unwrap();
        for i in 0..200 {
            let line = format!(r#"{{"spider":"s","tags":["tag-{i}-a","tag-{i}-b"]}}"#);
            store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
        }
        let held = store.inner().writer.lock().tag_strings();
        assert!(held < 64 * 2 + 2, "{held} tags held after freezes");
        assert_eq!(
            store
                .snapshot()
                .count(
                    1,
                    &crate::query::Filter {
                        has_tags: vec!["tag-3-a".into()],
                        states: vec![JobState::Pending],
                        ..Default::default()
                    }
                )
                .unwrap(),
            1
        );
    }
}
