//! A history of concurrent clients under kill -9, checked as Jepsen checks one:
//! clients push jobs (some with a `unique` value from a small pool, so that they
//! collide), take them with `startjob`, and finish or delete the ones they took;
//! the real `jobq serve` is killed at random moments and restarted. Every call is
//! logged with its outcome: acknowledged, refused, or in doubt (the connection
//! died before the answer: it may or may not have happened). After every kill the
//! store is opened and checked against the history:
//! - every acknowledged push exists, exactly once (no two jobs carry one push's
//!   marker, in-doubt pushes included);
//! - `startjob` never handed out one job twice, also across crashes;
//! - no two active (pending or running) jobs share a `unique` value;
//! - each job is in its last acknowledged state, or in a state that a later
//!   in-doubt call on it could have made.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::{Rng, Server};
use jobq::{Options, Store};

const KEY: &str = "historytest";
const PROJECT: u32 = 7;
const CLIENTS: usize = 6;

/// The states a job may be in after the calls made on it.
#[derive(Clone, Debug, Default)]
struct JobHistory {
    /// The push's marker (`n`).
    n: u64,
    unique: Option<String>,
    /// The state after the last acknowledged call (empty: known only from calls
    /// in doubt).
    acked: String,
    /// States in-doubt calls after it could have left.
    maybe: BTreeSet<String>,
}

#[derive(Default)]
struct History {
    jobs: BTreeMap<String, JobHistory>,
    /// Markers of pushes in doubt (no answer): each may exist once, or not at all.
    doubtful_pushes: BTreeSet<u64>,
    /// Every job an acknowledged `startjob` handed out, with the count.
    started: BTreeMap<String, u32>,
    calls: u64,
    in_doubt: u64,
}

/// One call over a fresh connection; `None`: no complete answer (in doubt).
fn call(addr: &str, target: &str, body: &str) -> Option<(u16, String)> {
    harness::try_post(addr, target, &format!("{KEY}:"), body).map(|r| (r.status, r.text()))
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// One client: random calls until `stop` or the server dies.
fn client(addr: &str, seed: u64, next_n: &AtomicU64, stop: &AtomicBool, h: &Mutex<History>) {
    let mut rng = Rng(seed | 1);
    let mut mine: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        h.lock().unwrap().calls += 1;
        match rng.below(10) {
            0..=4 => {
                let n = next_n.fetch_add(1, Ordering::Relaxed);
                let unique = (rng.below(3) == 0).then(|| format!("u{}", rng.below(4)));
                let u = unique.as_ref().map_or(String::new(), |u| format!(",\"unique\":\"{u}\""));
                let Some((200, text)) =
                    call(addr, &format!("/jobq/{PROJECT}/push"), &format!("{{\"spider\":\"s\",\"n\":{n}{u}}}"))
                else {
                    let mut h = h.lock().unwrap();
                    h.doubtful_pushes.insert(n);
                    h.in_doubt += 1;
                    return;
                };
                let line = &json_lines(&text)[0];
                if let Some(key) = line["key"].as_str() {
                    // Another client may have taken (and recorded) the job already.
                    let mut h = h.lock().unwrap();
                    let j = h.jobs.entry(key.to_string()).or_default();
                    (j.n, j.unique) = (n, unique);
                    if j.acked.is_empty() {
                        j.acked = "pending".into();
                    }
                } else {
                    assert!(line["error"].as_str().unwrap().contains("Active job"), "{text}");
                }
            }
            5..=7 => {
                let Some((200, text)) = call(addr, &format!("/jobq/{PROJECT}/startjob"), "{}") else {
                    h.lock().unwrap().in_doubt += 1;
                    return;
                };
                let Some(line) = json_lines(&text).into_iter().next() else { continue };
                let key = line["key"].as_str().expect("startjob names its job").to_string();
                let mut h = h.lock().unwrap();
                *h.started.entry(key.clone()).or_default() += 1;
                let j = h.jobs.entry(key.clone()).or_default();
                j.acked = "running".into();
                j.maybe.clear();
                mine.push(key);
            }
            _ => {
                let Some(key) = mine.pop() else { continue };
                let state = if rng.below(4) == 0 { "deleted" } else { "finished" };
                let body = format!("{{\"key\":\"{key}\",\"state\":\"{state}\"}}");
                let answer = call(addr, &format!("/jobq/{PROJECT}/update"), &body);
                let mut h = h.lock().unwrap();
                match answer {
                    Some((200, _)) => {
                        let j = h.jobs.entry(key).or_default();
                        j.acked = state.into();
                        j.maybe.clear();
                    }
                    Some((status, text)) => panic!("update {key} refused: {status} {text}"),
                    None => {
                        h.in_doubt += 1;
                        h.jobs.entry(key).or_default().maybe.insert(state.into());
                        return;
                    }
                }
            }
        }
    }
}

/// The store in `dir` against the history.
fn check(dir: &Path, h: &History, context: &str) {
    let store = Store::open(dir, Options { read_only: true, create: false, ..Options::default() })
        .unwrap_or_else(|e| panic!("{context}: the store does not open: {e}"));
    let mut out = Vec::new();
    store.export(Some(PROJECT), &mut out).unwrap();
    let mut by_n: BTreeMap<u64, String> = BTreeMap::new();
    let mut active_uniques: BTreeMap<String, String> = BTreeMap::new();
    let mut states: BTreeMap<String, String> = BTreeMap::new();
    for line in json_lines(&String::from_utf8(out).unwrap()) {
        let Some(key) = line["key"].as_str() else { continue };
        let key = key.to_string();
        let state = line["state"].as_str().unwrap().to_string();
        let n = line["n"].as_u64().unwrap_or_else(|| panic!("{context}: {key} has no marker"));
        if let Some(other) = by_n.insert(n, key.clone()) {
            panic!("{context}: push {n} stored twice, as {other} and {key}");
        }
        if matches!(state.as_str(), "pending" | "running") {
            if let Some(u) = line["unique"].as_str() {
                if let Some(other) = active_uniques.insert(u.to_string(), key.clone()) {
                    panic!("{context}: active jobs {other} and {key} share unique {u}");
                }
            }
        }
        states.insert(key, state);
    }
    for (key, j) in &h.jobs {
        let state = states.get(key).unwrap_or_else(|| panic!("{context}: acknowledged job {key} (push {}) lost", j.n));
        // n = 0: a job known from startjob alone (its push was in doubt).
        if j.n != 0 {
            assert_eq!(by_n.get(&j.n), Some(key), "{context}: push {} is not {key}", j.n);
        }
        let ok = *state == j.acked
            || j.maybe.contains(state)
            // A startjob in doubt may have taken a pending job, and a later update
            // in doubt on it cannot exist (nobody knew it was taken).
            || (j.acked == "pending" && state == "running");
        assert!(ok, "{context}: {key} is {state}; acknowledged {}, in doubt {:?}", j.acked, j.maybe);
    }
    for n in by_n.keys() {
        let known = h.jobs.values().any(|j| j.n == *n) || h.doubtful_pushes.contains(n);
        assert!(known, "{context}: push {n} stored but never acknowledged nor in doubt");
    }
    for (key, count) in &h.started {
        assert_eq!(*count, 1, "{context}: startjob handed out {key} {count} times");
    }
    store.close().unwrap();
}

fn run(rounds: u64, seed: u64) -> History {
    let dir = harness::tempdir();
    let h = Mutex::new(History::default());
    let next_n = AtomicU64::new(1);
    let mut rng = Rng(seed);
    for round in 0..rounds {
        let server = Server::start(dir.path(), &["--api-key", KEY, "--drain-timeout", "1", "--index-every", "64"]);
        let addr = server.addr.clone();
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(20 + rng.below(300));
        std::thread::scope(|s| {
            for c in 0..CLIENTS {
                let (addr, next_n, stop, h) = (&addr, &next_n, &stop, &h);
                let seed = rng.below(u64::MAX);
                s.spawn(move || client(addr, seed ^ c as u64, next_n, stop, h));
            }
            let started = Instant::now();
            while started.elapsed() < kill_after {
                std::thread::sleep(Duration::from_millis(5));
            }
            harness::signal(server.pid(), "KILL");
            drop(server);
            stop.store(true, Ordering::Relaxed);
        });
        check(dir.path(), &h.lock().unwrap(), &format!("after kill {}", round + 1));
    }
    h.into_inner().unwrap()
}

#[test]
fn clients_histories_hold_across_kill_9() {
    let rounds = std::env::var("JOBQ_HISTORY_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
    let h = run(rounds, 0x9E37_79B9_7F4A_7C15);
    eprintln!(
        "{rounds} kills: {} calls, {} jobs acknowledged, {} started, {} in doubt",
        h.calls,
        h.jobs.len(),
        h.started.len(),
        h.in_doubt
    );
    assert!(h.started.len() > 10 && h.jobs.len() > 50, "the history exercised too little");
}
