//! kill -9 of the real `jobq serve` while writers push and move jobs and a
//! follower long-polls the change feed. After each restart the feed, read from
//! the start, holds every acknowledged write, in each writer's order, with a
//! `prevstate` chain without gaps for every job (its first change creates it,
//! each next one names the state of the one before); a write in flight at the
//! kill may follow, last. Everything the follower was answered before the kill
//! is there, at the same position: the feed never answers before durability.

mod harness;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{basic, signal, tempdir, Server};
use serde_json::Value;

const KEY: &str = "feedkill";
const WRITERS: usize = 4;
const ROUNDS: u64 = 6;

/// One change as the feed reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    seq: u64,
    key: String,
    state: String,
    prevstate: Option<String>,
}

impl Seen {
    fn of(v: &Value) -> Seen {
        Seen {
            seq: v["seq"].as_u64().unwrap(),
            key: v["key"].as_str().unwrap().to_string(),
            state: v["state"].as_str().unwrap().to_string(),
            prevstate: v["prevstate"].as_str().map(str::to_string),
        }
    }
}

/// One request; `None` when the server is gone. Returns status, `X-Jobq-Seq`, lines.
fn call(addr: &str, method: &str, target: &str, body: &str) -> Option<(u16, Option<u64>, Vec<Value>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        basic(&format!("{KEY}:")),
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    let text = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let seq = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-jobq-seq:").map(|v| v.trim().parse().unwrap()));
    let lines = body.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    Some((status, seq, lines))
}

/// Push a job, then move it through running to finished (or deleted), one write
/// at a time; each acknowledged write is noted as `(key, state, prevstate)`.
fn writer(addr: &str, t: usize, stop: &AtomicBool, acked: &Mutex<Vec<(String, String, Option<String>)>>) {
    let project = 1 + t % 2;
    while !stop.load(Ordering::Relaxed) {
        let Some((200, _, lines)) =
            call(addr, "POST", &format!("/jobq/{project}/push"), &format!("{{\"spider\":\"w{t}\"}}"))
        else {
            return;
        };
        let key = lines[0]["key"].as_str().unwrap().to_string();
        acked.lock().unwrap().push((key.clone(), "pending".into(), None));
        let last = if key.ends_with('3') { "deleted" } else { "finished" };
        for (state, before) in [("running", "pending"), (last, "running")] {
            let body = format!("{{\"key\":\"{key}\",\"state\":\"{state}\"}}");
            let Some((200, _, answer)) = call(addr, "POST", &format!("/jobq/{project}/update"), &body) else { return };
            assert_eq!(answer[0]["prevstate"], before);
            acked.lock().unwrap().push((key.clone(), state.into(), Some(before.into())));
        }
    }
}

/// Follow project 1's feed with long polls until the server is gone.
fn follower(addr: &str, mut since: u64, seen: &Mutex<Vec<Seen>>) {
    loop {
        let Some((200, Some(next), lines)) = call(addr, "GET", &format!("/jobq/1/changes?since={since}&wait=5"), "")
        else {
            return;
        };
        seen.lock().unwrap().extend(lines.iter().map(Seen::of));
        since = next;
    }
}

/// The whole feed of a project, from the start, page by page.
fn feed(addr: &str, project: u32) -> Vec<Seen> {
    let (mut since, mut out) = (0, Vec::new());
    loop {
        let (status, next, lines) = call(addr, "GET", &format!("/jobq/{project}/changes?since={since}"), "").unwrap();
        assert_eq!(status, 200);
        if lines.is_empty() {
            return out;
        }
        out.extend(lines.iter().map(Seen::of));
        since = next.unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_in_the_feed_in_order_without_gaps() {
    let dir = tempdir();
    let args = ["--api-key", KEY, "--compact-when", "off", "--index-every", "64"];
    let acked: Vec<Arc<Mutex<Vec<_>>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let mut followed: Vec<Seen> = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..ROUNDS {
        let s = Server::start(dir.path(), &args);
        let now = call(&s.addr, "GET", "/jobq/1/changes", "").unwrap().1.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut threads: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (addr, stop, acked) = (s.addr.clone(), stop.clone(), acked[t].clone());
                std::thread::spawn(move || writer(&addr, t, &stop, &acked))
            })
            .collect();
        threads.push({
            let (addr, seen) = (s.addr.clone(), seen.clone());
            std::thread::spawn(move || follower(&addr, now, &seen))
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(150 + rng % 500));
        signal(s.pid(), "KILL");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        drop(s);
        followed.extend(seen.lock().unwrap().drain(..));
        let s = Server::start(dir.path(), &args);
        let mut all: BTreeMap<u64, Seen> = BTreeMap::new();
        for project in [1, 2] {
            let f = feed(&s.addr, project);
            assert!(f.windows(2).all(|w| w[0].seq < w[1].seq), "round {round}: positions ascend");
            all.extend(f.into_iter().map(|c| (c.seq, c)));
        }
        // Each job's changes chain: created first, then each names the state before.
        let mut per_key: HashMap<String, Vec<&Seen>> = HashMap::new();
        for c in all.values() {
            let chain = per_key.entry(c.key.clone()).or_default();
            let want = chain.last().map(|p| p.state.clone());
            assert_eq!(c.prevstate, want, "round {round}: a gap before {c:?}");
            chain.push(c);
        }
        // Every acknowledged write, in its writer's order; at most one write (in flight) after.
        for (t, a) in acked.iter().enumerate() {
            let a = a.lock().unwrap();
            let mut last_seq = 0;
            for (key, state, prev) in a.iter() {
                let chain = per_key.get(key).unwrap_or_else(|| panic!("round {round}: writer {t}: {key} missing"));
                let c = chain.iter().find(|c| &c.state == state && &c.prevstate == prev).unwrap_or_else(|| {
                    panic!("round {round}: {key} -> {state} acknowledged, not in the feed: {chain:?}")
                });
                assert!(c.seq > last_seq, "round {round}: writer {t}'s writes out of order at {c:?}");
                last_seq = c.seq;
            }
            for (key, chain) in &per_key {
                let n = a.iter().filter(|w| &w.0 == key).count();
                if n > 0 {
                    assert!(chain.len() <= n + 1, "round {round}: {key}: {chain:?} beyond {n} acknowledged writes");
                }
            }
        }
        // What the follower was answered had been durable.
        for c in &followed {
            assert_eq!(all.get(&c.seq), Some(c), "round {round}: answered before the kill, lost after it");
        }
        assert!(!followed.is_empty() || round == 0, "the follower saw changes");
        drop(s);
    }
    let writes: usize = acked.iter().map(|a| a.lock().unwrap().len()).sum();
    println!("{ROUNDS} kills: {writes} acknowledged writes, {} changes followed live, none lost", followed.len());
}
