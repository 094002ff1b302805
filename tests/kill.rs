//! kill -9 of the real `jobq serve` under concurrent HTTP writers, at random moments
//! and at named crash points (before the fsync, before the answer, before a new
//! file's rename), and of `jobq compact` before and after its switch. One writer
//! pushes large batches (MiB frames) of records whose layout collides with a frame
//! header (project 83, `{"spider":"s"}` by an unnamed key): kills land inside them.
//! After every kill the store opens, and every acknowledged write is present with
//! its exact content. At least 200 kills; `JOBQ_KILL_ROUNDS` changes the number of
//! random ones.

mod harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::{Rng, BIN};
use jobq::model::{JobKey, JobState};
use jobq::{Options, Store};

const KEY: &str = "killtest";
/// Pushes one writer makes in a round (then it waits for the kill).
const PUSHES_PER_ROUND: u64 = 40;
/// Jobs in one large batch: about 1.1 MiB of records in one frame.
const BATCH: usize = 9_000;
/// Large batches one writer pushes in a round.
const BATCHES_PER_ROUND: usize = 1;

/// An acknowledged large batch: its first and last job (ids are consecutive).
type Batch = (JobKey, JobKey);

/// A job a writer was told is stored, with what it must hold.
#[derive(Clone, Debug)]
struct Acked {
    n: u64,
    finished: bool,
}

struct Proc {
    child: Child,
    addr: String,
}

fn start(dir: &Path, crash_at: Option<&str>) -> Proc {
    start_with(dir, crash_at, &[])
}

fn start_with(dir: &Path, crash_at: Option<&str>, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    // Small index files: index publishes and merges run often, so kills land in them.
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--drain-timeout", "1", "--index-every", "128"])
        .args(extra)
        .arg("--data")
        .arg(dir);
    cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(p) = crash_at {
        cmd.env("JOBQ_CRASH_AT", p);
    }
    let mut child = cmd.spawn().expect("start jobq serve");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let said = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = said.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix("listen=")) {
                let _ = tx.send(a.to_string());
            }
            log.lock().unwrap().push(line);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            let said = said.lock().unwrap().join("\n");
            if crash_at.is_some() && said.contains("crash point") {
                // The crash point fired before the server listened (background
                // compaction or an index publish starts with the store): a kill like
                // any other, and the restart must open what it left.
                return start_with(dir, None, extra);
            }
            panic!("jobq serve did not start ({e}; {status:?}); it said:\n{said}")
        }
    };
    Proc { child, addr }
}

/// One request; `None` when the connection fails or the answer is cut (the server
/// died). The body: its JSON lines.
fn post(addr: &str, target: &str, body: &str) -> Option<(u16, String)> {
    let r = harness::try_post(addr, target, &format!("{KEY}:"), body)?;
    let lines = r.text().lines().filter(|l| l.starts_with('{')).collect::<Vec<_>>().join("\n");
    Some((r.status, lines))
}

/// Push pairs of jobs and finish some, until the server stops answering.
fn writer(addr: &str, t: usize, base: u64, stop: &AtomicBool, acked: &Mutex<BTreeMap<JobKey, Acked>>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && i < PUSHES_PER_ROUND {
        let n = base + i;
        i += 1;
        let body = format!("{{\"spider\":\"w{t}\",\"n\":{n}}}\n{{\"spider\":\"w{t}\",\"n\":{n}}}");
        let Some((200, answer)) = post(addr, "/jobq/1/push", &body) else { return };
        let keys: Vec<JobKey> = answer
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["key"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(keys.len(), 2, "{answer}");
        for k in &keys {
            acked.lock().unwrap().insert(*k, Acked { n, finished: false });
        }
        if i.is_multiple_of(3) {
            let Some((200, _)) =
                post(addr, "/jobq/1/update", &format!("{{\"key\":\"{}\",\"state\":\"finished\"}}", keys[0]))
            else {
                return;
            };
            acked.lock().unwrap().get_mut(&keys[0]).unwrap().finished = true;
        }
    }
}

/// Push large batches of records that look like frame headers, until the server stops.
fn batch_writer(addr: &str, stop: &AtomicBool, batches: &Mutex<Vec<Batch>>) {
    let body = "{\"spider\":\"s\"}\n".repeat(BATCH);
    for _ in 0..BATCHES_PER_ROUND {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some((200, answer)) = post(addr, "/jobq/83/push", &body) else { return };
        let keys: Vec<&str> = answer.lines().collect();
        assert_eq!(keys.len(), BATCH, "one answer line per job");
        let key = |l: &str| -> JobKey {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"].as_str().unwrap().parse().unwrap()
        };
        batches.lock().unwrap().push((key(keys[0]), key(keys[BATCH - 1])));
    }
}

/// Every acknowledged write is there, with its content; pushes are whole.
fn verify(dir: &Path, acked: &BTreeMap<JobKey, Acked>, batches: &[Batch], context: &str) {
    let store = Store::open(dir, Options { read_only: true, create: false, ..Options::default() })
        .unwrap_or_else(|e| panic!("{context}: the store does not open: {e}"));
    let snap = store.snapshot();
    for (first, last) in batches {
        assert_eq!(last.job - first.job + 1, BATCH as u32, "{context}: batch ids are consecutive");
        let mid = JobKey::new(first.project, first.spider, first.job + BATCH as u32 / 2);
        for k in [first, &mid, last] {
            assert!(snap.get(*k).unwrap().is_some(), "{context}: acknowledged batch job {k} lost");
        }
    }
    let all = jobq::query::Filter::default();
    assert!(snap.count(83, &all).unwrap() >= (batches.len() * BATCH) as u64, "{context}: batch jobs lost");
    for (k, a) in acked {
        let j = snap.get(*k).unwrap().unwrap_or_else(|| panic!("{context}: acknowledged {k} lost"));
        assert_eq!(j.meta.get("n").map(|v| v.get().to_string()), Some(a.n.to_string()), "{context}: {k} content");
        if a.finished {
            assert_eq!(j.state, JobState::Finished, "{context}: acknowledged finish of {k} lost");
        }
    }
}

/// One round: writers until the server dies by itself (a crash point) or is
/// killed after `kill_after`; returns whether a crash point fired.
fn round(
    dir: &Path,
    crash_at: Option<&str>,
    kill_after: Duration,
    base: u64,
    acked: &Mutex<BTreeMap<JobKey, Acked>>,
    batches: Option<&Mutex<Vec<Batch>>>,
) -> bool {
    let mut p = start(dir, crash_at);
    let stop = AtomicBool::new(false);
    let mut fired = false;
    std::thread::scope(|s| {
        for t in 0..7 {
            let (addr, stop) = (&p.addr, &stop);
            s.spawn(move || writer(addr, t, base + t as u64 * 1_000_000, stop, acked));
        }
        if let Some(batches) = batches {
            let (addr, stop) = (&p.addr, &stop);
            s.spawn(move || batch_writer(addr, stop, batches));
        }
        let started = Instant::now();
        while started.elapsed() < kill_after {
            if let Ok(Some(status)) = p.child.try_wait() {
                fired = !status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !fired {
            harness::signal(p.child.id(), "KILL");
        }
        let _ = p.child.wait();
        stop.store(true, Ordering::Relaxed);
    });
    fired
}

#[test]
fn kill_9_at_random_moments_and_at_crash_points() {
    let dir = harness::tempdir();
    let acked = Mutex::new(BTreeMap::new());
    let batches = Mutex::new(Vec::new());
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let random: u64 = std::env::var("JOBQ_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(140);
    let mut kills = 0;
    let mut fired = BTreeMap::new();
    let mut plan: Vec<Option<&str>> = (0..random).map(|_| None).collect();
    for point in ["before_fsync", "before_ack", "publish_before_rename"] {
        plan.extend(std::iter::repeat_n(Some(point), 20));
    }
    // The log writer extending its segment with zeros (once a MiB of log): killed
    // before, and between the zeros and the frame that needed them.
    for point in ["before_preallocate", "after_preallocate"] {
        plan.extend(std::iter::repeat_n(Some(point), 5));
    }
    for (r, point) in plan.iter().enumerate() {
        // An index file is published every 128 jobs: a few hundred writes reach the n-th (n <= 4).
        let spread = match point {
            Some("publish_before_rename") => 4,
            Some("before_preallocate" | "after_preallocate") => 1,
            _ => 40,
        };
        let crash_at = point.map(|p| format!("{p}:{}", 1 + rng.below(spread)));
        let wait = match point {
            None => Duration::from_millis(5 + rng.below(150)),
            Some(_) => Duration::from_secs(3),
        };
        // Every other round has a large batch in flight (more would only grow the store).
        let big = (r % 2 == 0).then_some(&batches);
        if round(dir.path(), crash_at.as_deref(), wait, r as u64 * 10_000_000, &acked, big) {
            *fired.entry(point.unwrap_or("?")).or_insert(0) += 1;
        }
        kills += 1;
        let context = format!("after kill {kills} ({crash_at:?})");
        let all = acked.lock().unwrap();
        let batches = batches.lock().unwrap();
        if kills % 20 == 0 {
            verify(dir.path(), &all, &batches, &context);
        } else {
            let this: BTreeMap<JobKey, Acked> = all
                .range(JobKey::new(1, 1, 0)..)
                .filter(|(_, a)| a.n / 10_000_000 == r as u64)
                .map(|(k, a)| (*k, a.clone()))
                .collect();
            verify(dir.path(), &this, &batches[batches.len().saturating_sub(4)..], &context);
        }
    }
    // Compaction killed before and after its switch: the old or the new store, whole.
    for (i, point) in
        ["compact_before_switch", "compact_after_switch", "publish_before_rename"].iter().cycle().take(20).enumerate()
    {
        round(dir.path(), None, Duration::from_millis(30), 900_000_000 + i as u64 * 10_000, &acked, None);
        let status = Command::new(BIN)
            .args(["compact", "--data"])
            .arg(dir.path())
            .env("JOBQ_CRASH_AT", format!("{point}:1"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "compaction was to be killed at {point}");
        kills += 2;
        verify(
            dir.path(),
            &acked.lock().unwrap(),
            &batches.lock().unwrap(),
            &format!("after a compaction killed at {point}"),
        );
    }
    let acked = acked.into_inner().unwrap();
    let batches = batches.into_inner().unwrap();
    eprintln!(
        "kill -9: {kills} kills, {} acknowledged jobs and {} acknowledged batches of {BATCH}, 0 lost; crash points fired: {fired:?}",
        acked.len(),
        batches.len()
    );
    assert!(!batches.is_empty(), "no large batch was acknowledged");
    assert!(kills >= 200, "{kills}");
    assert!(acked.len() > 5000, "too few writes acknowledged: {}", acked.len());
    for p in ["before_fsync", "before_ack", "publish_before_rename"] {
        assert!(fired.get(p).copied().unwrap_or(0) >= 10, "crash point {p} fired only {fired:?}");
    }
    for p in ["before_preallocate", "after_preallocate"] {
        assert!(fired.get(p).copied().unwrap_or(0) >= 1, "crash point {p} fired only {fired:?}");
    }
    // A clean start sees everything too.
    let p = start(dir.path(), None);
    harness::signal(p.child.id(), "TERM");
    let mut child = p.child;
    child.wait().unwrap();
    verify(dir.path(), &acked, &batches, "after a clean restart");
}

/// Soak: kill -9 rounds for `JOBQ_SOAK_SECS` (default 60) seconds, printing progress.
/// `JOBQ_SOAK_SECS=3600 cargo test --release --test kill -- --ignored --nocapture`
#[test]
#[ignore = "soak: runs for JOBQ_SOAK_SECS seconds"]
fn soak_kill_9() {
    let secs: u64 = std::env::var("JOBQ_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let dir = harness::tempdir();
    let acked = Mutex::new(BTreeMap::new());
    let batches = Mutex::new(Vec::new());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64);
    let points = [None, None, None, Some("before_fsync"), Some("before_ack"), Some("publish_before_rename")];
    let started = Instant::now();
    let mut kills = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let point = points[rng.below(points.len() as u64) as usize];
        let spread = if point == Some("publish_before_rename") { 4 } else { 40 };
        let crash_at = point.map(|p| format!("{p}:{}", 1 + rng.below(spread)));
        let wait = Duration::from_millis(5 + rng.below(300));
        round(dir.path(), crash_at.as_deref(), wait, kills * 10_000_000, &acked, Some(&batches));
        kills += 1;
        if kills.is_multiple_of(25) {
            verify(dir.path(), &acked.lock().unwrap(), &batches.lock().unwrap(), &format!("soak kill {kills}"));
            eprintln!(
                "soak: {kills} kills, {} writes acknowledged, 0 lost, {:?}",
                acked.lock().unwrap().len(),
                started.elapsed()
            );
        }
    }
    verify(dir.path(), &acked.lock().unwrap(), &batches.lock().unwrap(), "soak end");
    eprintln!("soak done: {kills} kills, {} writes acknowledged, 0 lost", acked.lock().unwrap().len());
}

/// kill -9 of `jobq backup` (at random moments and at its commit point) beside a
/// serving server under writes, 200 times: the copy always opens, `check` finds
/// it clean, it holds only jobs the source has; a backup let run to the end holds
/// every write acknowledged before it started.
#[test]
fn kill_9_during_backups() {
    let src = harness::tempdir();
    let dest = harness::tempdir();
    let dest = dest.path().join("copy");
    let p = start(src.path(), None);
    let stop = AtomicBool::new(false);
    let acked: Mutex<Vec<JobKey>> = Mutex::new(Vec::new());
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let (mut kills, mut completed) = (0, 0);
    let read_only = || Options { read_only: true, create: false, ..Options::default() };
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let Some((200, answer)) = post(&p.addr, "/jobq/2/push", &format!("{{\"spider\":\"b\",\"n\":{n}}}"))
                else {
                    break;
                };
                let v: serde_json::Value = serde_json::from_str(answer.lines().next().unwrap()).unwrap();
                acked.lock().unwrap().push(v["key"].as_str().unwrap().parse().unwrap());
            }
        });
        for round in 0..220u64 {
            let finish = round % 20 == 19;
            let before: Vec<JobKey> = acked.lock().unwrap().clone();
            let mut cmd = Command::new(BIN);
            cmd.args(["backup", "--data"]).arg(src.path()).arg("--to").arg(&dest);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            if !finish && round % 3 == 0 {
                cmd.env("JOBQ_CRASH_AT", "backup_before_commit:1");
            }
            let mut child = cmd.spawn().unwrap();
            if finish {
                assert!(child.wait().unwrap().success(), "a backup let run failed");
                completed += 1;
            } else {
                std::thread::sleep(Duration::from_millis(rng.below(40)));
                let _ = child.kill();
                let _ = child.wait();
                kills += 1;
            }
            let context = format!("backup round {round}");
            if !dest.join("CURRENT").exists() {
                assert!(!finish, "{context}: no copy after a whole backup");
                continue;
            }
            let copy =
                Store::open(&dest, read_only()).unwrap_or_else(|e| panic!("{context}: the copy does not open: {e}"));
            let r = jobq::store::check(&dest, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
            assert!(r.is_clean(), "{context}: {:#?}", r.findings);
            let source = Store::open(src.path(), read_only()).unwrap();
            let (cs, ss) = (copy.snapshot(), source.snapshot());
            let all = jobq::query::Paging { count: u64::MAX, start: 0, stop: None, startafter: None };
            for hit in cs.list(2, &jobq::query::Filter::default(), &all).unwrap() {
                let k = JobKey::from_local(2, hit.local);
                assert!(ss.get(k).unwrap().is_some(), "{context}: the copy holds {k}, the source does not");
            }
            if finish {
                for k in &before {
                    assert!(cs.get(*k).unwrap().is_some(), "{context}: acknowledged {k} missing from a whole backup");
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    harness::signal(p.child.id(), "TERM");
    let mut child = p.child;
    child.wait().unwrap();
    eprintln!(
        "backups: {kills} killed, {completed} whole, {} writes acknowledged meanwhile",
        acked.lock().unwrap().len()
    );
    assert!(kills >= 200 && completed >= 10, "{kills} {completed}");
}

/// kill -9 of a server whose online compaction runs all the time (small segments,
/// a low ratio, checked every 50 ms) under writers that change the same jobs over
/// and over, at random moments and at named points (a segment removed, an index
/// file merged or renamed): at least 200 kills, every acknowledged write present.
#[test]
fn kill_9_during_online_compaction() {
    let dir = harness::tempdir();
    let extra = ["--segment-bytes", "48K", "--compact-when", "0.05", "--compact-every", "0.05"];
    // Per job: its writer, and the last acknowledged value of its counter (each job
    // has one writer, whose values only grow).
    let acked: Mutex<BTreeMap<JobKey, (u64, u64)>> = Mutex::new(BTreeMap::new());
    let mut rng = Rng(0x0DDB_A11C_0FFE_E123);
    let points = [
        None,
        None,
        Some("reclaim_start_moved"),
        Some("reclaim_segment_removed"),
        Some("merge_before_install"),
        Some("publish_before_rename"),
    ];
    let mut kills = 0;
    let mut fired = 0;
    for round in 0..210u64 {
        let point = points[rng.below(points.len() as u64) as usize];
        let crash_at = point.map(|p| format!("{p}:{}", 1 + rng.below(3)));
        let mut p = start_with(dir.path(), crash_at.as_deref(), &extra);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (addr, stop, acked) = (&p.addr, &stop, &acked);
                s.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let n = round * 1_000_000 + t * 100_000 + i;
                        // Mostly: a new value for one of this writer's jobs; sometimes a new job.
                        let mine: Vec<JobKey> =
                            acked.lock().unwrap().iter().filter(|(_, (w, _))| *w == t).map(|(k, _)| *k).collect();
                        if mine.len() < 30 || i.is_multiple_of(5) {
                            let body = format!("{{\"spider\":\"c{t}\",\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(300));
                            let Some((200, answer)) = post(addr, "/jobq/5/push", &body) else { return };
                            let v: serde_json::Value = serde_json::from_str(answer.lines().next().unwrap()).unwrap();
                            acked.lock().unwrap().insert(v["key"].as_str().unwrap().parse().unwrap(), (t, n));
                        } else {
                            let k = mine[(n % mine.len() as u64) as usize];
                            let body = format!("{{\"key\":\"{k}\",\"n\":{n}}}");
                            let Some((200, _)) = post(addr, "/jobq/5/update", &body) else { return };
                            acked.lock().unwrap().insert(k, (t, n));
                        }
                    }
                });
            }
            let wait = Duration::from_millis(if point.is_some() { 3000 } else { 30 + rng.below(300) });
            let started = Instant::now();
            let mut dead = false;
            while started.elapsed() < wait {
                if let Ok(Some(status)) = p.child.try_wait() {
                    fired += u32::from(!status.success());
                    dead = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if !dead {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
            stop.store(true, Ordering::Relaxed);
        });
        kills += 1;
        let store = Store::open(dir.path(), Options { read_only: true, create: false, ..Options::default() })
            .unwrap_or_else(|e| panic!("round {round} ({crash_at:?}): the store does not open: {e}"));
        let snap = store.snapshot();
        for (k, (_, n)) in acked.lock().unwrap().iter() {
            let j = snap.get(*k).unwrap().unwrap_or_else(|| panic!("round {round} ({crash_at:?}): {k} lost"));
            // A write answered by nothing (the kill came first) may be there too.
            let got: u64 = j.meta.get("n").map_or(0, |v| v.get().parse().unwrap());
            assert!(got >= *n, "round {round} ({crash_at:?}): {k} holds {got}, {n} was acknowledged");
        }
    }
    let segments = std::fs::read_dir(dir.path().join("gen-0000000000000001"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("log-")?.strip_suffix(".jql")?.parse::<u32>().ok())
        .min()
        .unwrap_or(1);
    eprintln!(
        "online compaction killed {kills} times ({fired} at crash points), {} jobs, first segment now {segments}",
        acked.lock().unwrap().len()
    );
    assert!(kills >= 200 && fired >= 20, "{kills} kills, {fired} at crash points");
    assert!(segments > 1, "compaction never removed a segment");
}
