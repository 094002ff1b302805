//! The goals of issue 13 for the change feed, on the real `jobq serve` (this
//! build's binary) over loopback:
//!
//! 1. latency: writers push one job at a time and note when each push was
//!    acknowledged; waiters long-poll `changes?wait=30` (each re-asking with the
//!    `X-Jobq-Seq` it got) and note when each job reached them. Reported: the delay
//!    from a push's acknowledgement to its arrival at a waiter, p50/p99/max (goal:
//!    p99 <= 5 ms), with 1 waiter and with `JOBQ_FEED_FANOUT` (default 100).
//! 2. idle waiters: `JOBQ_FEED_IDLE` (default 1,000) connections each parked in
//!    `changes?wait=60` on a project nobody writes to. Reported: the server's RSS
//!    before and with them (goal: <= 50 MiB more), its CPU time over
//!    `JOBQ_FEED_IDLE_SECS` (default 10) of idleness (goal: none), and how long one
//!    write then takes to reach every one of them.
//!
//! Run: `cargo bench --bench feed` (`JOBQ_FEED_WRITES`, default 2,000 pushes per
//! latency run). `cargo test --benches` runs it small.

#[allow(dead_code)]
#[path = "support/timing.rs"]
mod timing;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timing::{fmt_ns, Summary};

const KEY: &str = "benchkey";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--max-connections", "4000"])
        .arg("--data")
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jobq serve");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix("listen=")) {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("jobq serve did not start");
    Server { child, addr }
}

/// A kept-alive HTTP/1.1 connection.
struct Conn {
    s: TcpStream,
    auth: String,
}

/// An answer: `X-Jobq-Seq` and the body.
struct Answer {
    seq: Option<u64>,
    body: String,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        // base64("benchkey:")
        Conn { s, auth: "YmVuY2hrZXk6".into() }
    }

    fn send(&mut self, method: &str, target: &str, body: &str) {
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.auth,
            body.len()
        );
        self.s.write_all(req.as_bytes()).expect("send");
    }

    fn receive(&mut self) -> Answer {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.s.read_exact(&mut b).expect("an answer");
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
        let len: usize = header("content-length:").expect("a length").parse().unwrap();
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).unwrap();
        Answer { seq: header("x-jobq-seq:").map(|v| v.parse().unwrap()), body: String::from_utf8(body).unwrap() }
    }

    fn call(&mut self, method: &str, target: &str, body: &str) -> Answer {
        self.send(method, target, body);
        self.receive()
    }
}

fn keys(body: &str) -> Vec<String> {
    body.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["key"].as_str().unwrap().to_string())
        .collect()
}

/// `waiters` long-polling followers of project `project` and one writer pushing
/// `writes` jobs one at a time: the delay from each acknowledgement to each arrival.
fn latency(addr: &str, project: u32, waiters: usize, writes: usize) -> Summary {
    let since = Conn::new(addr).call("GET", &format!("/jobq/{project}/changes"), "").seq.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let threads: Vec<_> = (0..waiters)
        .map(|_| {
            let (addr, stop, arrivals) = (addr.to_string(), stop.clone(), arrivals.clone());
            std::thread::spawn(move || {
                let mut c = Conn::new(&addr);
                let mut since = since;
                let mut got = 0;
                while got < writes && !stop.load(Ordering::Relaxed) {
                    let a = c.call("GET", &format!("/jobq/{project}/changes?since={since}&wait=30"), "");
                    let now = Instant::now();
                    let k = keys(&a.body);
                    got += k.len();
                    arrivals.lock().unwrap().extend(k.into_iter().map(|k| (k, now)));
                    since = a.seq.unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut w = Conn::new(addr);
    let mut acked = std::collections::HashMap::new();
    for i in 0..writes {
        let a = w.call("POST", &format!("/jobq/{project}/push"), &format!("{{\"spider\":\"s\",\"i\":{i}}}"));
        acked.insert(keys(&a.body).remove(0), Instant::now());
        // A pause, so that each push is waited for (not found already written).
        std::thread::sleep(Duration::from_micros(500));
    }
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), writes * waiters, "every waiter got every push");
    Summary::from(arrivals.iter().map(|(k, at)| at.saturating_duration_since(acked[k]).as_nanos() as u64).collect())
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let writes = env("JOBQ_FEED_WRITES", if full { 2000 } else { 50 }) as usize;
    let fanout = env("JOBQ_FEED_FANOUT", if full { 100 } else { 4 }) as usize;
    let idle = env("JOBQ_FEED_IDLE", if full { 1000 } else { 20 }) as usize;
    let idle_secs = env("JOBQ_FEED_IDLE_SECS", if full { 10 } else { 1 });
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let pid = server.child.id();
    println!("| measure | figure |\n|---|---|");
    for (project, waiters) in [(1, 1), (2, fanout)] {
        let (server_cpu, own_cpu, t) = (cpu_ticks(pid), cpu_ticks(std::process::id()), Instant::now());
        let s = latency(&server.addr, project, waiters, writes);
        let per_write = |ticks: u64| fmt_ns(ticks * 10_000_000 / writes as u64);
        println!(
            "| push acknowledged -> arrival at {waiters} waiter(s), {writes} pushes in {:.1} s | p50 {}, p99 {}, max {}; CPU a push: server {}, clients {} |",
            t.elapsed().as_secs_f64(),
            fmt_ns(s.p50()),
            fmt_ns(s.p99()),
            fmt_ns(s.quantile(1.0)),
            per_write(cpu_ticks(pid) - server_cpu),
            per_write(cpu_ticks(std::process::id()) - own_cpu),
        );
    }
    // Idle waiters on a project nobody writes to.
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(pid);
    let since = Conn::new(&server.addr).call("GET", "/jobq/9/changes", "").seq.unwrap();
    let mut parked: Vec<Conn> = (0..idle)
        .map(|_| {
            let mut c = Conn::new(&server.addr);
            c.send("GET", &format!("/jobq/9/changes?since={since}&wait=60"), "");
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let rss_with = rss_kib(pid);
    let cpu0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu1 = cpu_ticks(pid);
    let rss_after = rss_kib(pid);
    println!(
        "| server RSS: before / with {idle} parked waiters / after {idle_secs} s idle | {} / {} / {} MiB (+{:.1} MiB) |",
        rss_before / 1024,
        rss_with / 1024,
        rss_after / 1024,
        (rss_with.max(rss_after) - rss_before) as f64 / 1024.0
    );
    println!("| server CPU time over {idle_secs} s with {idle} parked waiters | {} ms |", (cpu1 - cpu0) * 10);
    // One write wakes them all.
    let t = Instant::now();
    Conn::new(&server.addr).call("POST", "/jobq/9/push", "{\"spider\":\"s\"}");
    let acked = t.elapsed();
    for c in &mut parked {
        assert_eq!(keys(&c.receive().body).len(), 1);
    }
    println!(
        "| one push -> answered to all {idle} parked waiters | {} after the acknowledgement |",
        fmt_ns((t.elapsed() - acked).as_nanos() as u64)
    );
}
