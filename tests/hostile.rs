//! Hostile clients against the real `jobq serve`: a client without a key must
//! not be able to stall or exhaust the server. Unauthenticated 16 MiB bodies,
//! slow headers, idle and half-sent requests, a full connection table and few
//! file descriptors, clients that leave while their answer is rendered, job-key
//! user names with a wrong token, SIGTERM while a reader is stalled. Every
//! refusal must come within a second.

#[path = "harness/mod.rs"]
mod harness;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use harness::{basic, cpu_ticks, read_one_response, rss_kib, tempdir, Resp, Server};

const KEY: &str = "KEY:";
const ARGS: &[&str] = &["--api-key", "KEY", "--api-key", "SCOPED:53"];
const SOON: Duration = Duration::from_secs(1);

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(&s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Send a request head (no body) and time the answer.
fn head_only(s: &Server, head: &str) -> (Option<Resp>, Duration) {
    let mut c = connect(s);
    let started = Instant::now();
    c.write_all(head.as_bytes()).unwrap();
    let r = read_one_response(&mut c);
    (r, started.elapsed())
}

fn push_one(s: &Server, project: u32, line: &str) -> String {
    let r = s.post(&format!("/jobq/{project}/push"), KEY, line);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

#[test]
fn unauthenticated_bodies_are_refused_from_the_head_without_memory_growth() {
    const CLIENTS: usize = 40;
    const BODY: usize = 16 << 20;
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    let running = push_one(&s, 53, r#"{"spider":"s","state":"running"}"#);
    let pid = s.pid();
    let before = rss_kib(pid);
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let credentials = [None, Some("WRONG:".to_string()), Some(format!("{running}:not-its-token"))];
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = s.addr.clone();
            let auth = credentials[i % credentials.len()].as_ref().map(|c| format!("Authorization: {}\r\n", basic(c)));
            thread::spawn(move || {
                let mut c = TcpStream::connect(&addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let head = format!(
                    "POST /jobq/53/push HTTP/1.1\r\nHost: x\r\n{}Content-Length: {BODY}\r\n\r\n",
                    auth.unwrap_or_default()
                );
                let started = Instant::now();
                c.write_all(head.as_bytes()).unwrap();
                let mut sender = c.try_clone().unwrap();
                let send = thread::spawn(move || {
                    let chunk = vec![b'x'; 64 << 10];
                    for _ in 0..BODY / chunk.len() {
                        if sender.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                });
                let r = read_one_response(&mut c);
                let took = started.elapsed();
                send.join().unwrap();
                (r, took)
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    let grew = peak.load(Ordering::Relaxed).saturating_sub(before);
    println!("RSS {before} KiB before, {grew} KiB more at the peak; slowest refusal {slowest:?}");
    assert!(grew < 100 << 10, "the server grew by {grew} KiB reading bodies it refused");
    assert!(slowest < SOON, "a client waited {slowest:?} for its 401");
    for (i, (r, _)) in answers.into_iter().enumerate() {
        let r = r.unwrap_or_else(|| panic!("client {i} got no answer"));
        r.assert_error(401, "");
        assert_eq!(r.header("connection"), Some("close"), "an unread body closes the connection");
    }
    assert_eq!(s.get("/jobq/53/count?state=pending", KEY).text(), "0\n", "nothing was stored");
}

#[test]
fn refusals_that_need_only_the_head_come_before_the_body_in_the_documented_order() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "KEY", "--api-key", "SCOPED:53", "--max-body", "1MiB"]);
    let auth = |cred: &str| format!("Authorization: {}\r\n", basic(cred));
    // A body is announced and never sent: only the head can decide.
    for (method, path, cred, status, needle) in [
        ("POST", "/jobq/53/push", None, 401, "authentication required"),
        ("POST", "/nope", None, 401, "authentication required"),
        ("POST", "/jobq/53/push", Some("WRONG:"), 401, "unknown API key"),
        ("POST", "/nope", Some(KEY), 404, "no such endpoint"),
        ("POST", "/jobq/abc/push", Some(KEY), 400, "project id"),
        ("POST", "/jobq/54/push", Some("SCOPED:"), 403, "project 54"),
        ("POST", "/jobq/53/count", Some(KEY), 405, "GET"),
        ("PUT", "/jobq/53/push", Some(KEY), 405, "POST"),
    ] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 1000000\r\n\r\n",
            cred.map(auth).unwrap_or_default()
        );
        let (r, took) = head_only(&s, &head);
        let r = r.unwrap_or_else(|| panic!("{method} {path}: no answer without the body"));
        r.assert_error(status, needle);
        assert_eq!(r.header("connection"), Some("close"), "{method} {path}");
        assert!(took < SOON, "{method} {path}: {took:?}");
    }
    // Over the limit by its declared length: 413 before reading it.
    let head = format!("POST /jobq/53/push HTTP/1.1\r\nHost: x\r\n{}Content-Length: 2000000000\r\n\r\n", auth(KEY));
    let (r, took) = head_only(&s, &head);
    r.expect("413 without the body").assert_error(413, "limit");
    assert!(took < SOON);
    // A head over 64 KiB: 431 at once.
    let head = format!("GET /jobq/53/count HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "p".repeat(70 << 10));
    let mut c = connect(&s);
    let started = Instant::now();
    let _ = c.write_all(head.as_bytes());
    let r = read_one_response(&mut c).expect("an answer to a huge head");
    assert_eq!(r.status, 431);
    assert!(started.elapsed() < SOON);
    assert_eq!(s.get("/jobq/53/count?state=pending", KEY).text(), "0\n");
}

/// True once the server has closed the connection.
fn closed_by_server(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1024];
    let closed = loop {
        match (&mut &*c).read(&mut b) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    c.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn slow_headers_idle_connections_and_slow_bodies_are_cut_off() {
    const SLOW: usize = 300;
    let dir = tempdir();
    let s = Server::start(
        dir.path(),
        &["--api-key", "KEY", "--header-timeout", "1", "--idle-timeout", "2", "--body-timeout", "1"],
    );
    // Slowloris: heads trickled a byte at a time, never finished.
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| connect(&s)).collect();
    for c in &mut slow {
        c.write_all(b"GET /jobq/53/count HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = s.addr.clone();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let asked = Instant::now();
        let r = harness::request(&addr, "GET", "/jobq/53/count", Some(KEY), b"");
        tx.send((r.status, asked.elapsed())).unwrap();
    });
    while started.elapsed() < Duration::from_millis(2500) {
        for c in &mut slow {
            let _ = c.write_all(b"X");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let (status, took) = rx.recv().unwrap();
    assert_eq!(status, 200, "a real client is served beside {SLOW} slow ones");
    assert!(took < SOON, "the real client waited {took:?}");
    let open = slow.iter().filter(|c| !closed_by_server(c)).count();
    println!("{open} of {SLOW} slowloris connections open 2.5 s after their start (--header-timeout 1)");
    assert_eq!(open, 0);

    // Keep-alive: a second request in time is served; then the idle connection is closed.
    let mut c = connect(&s);
    let get = format!("GET /jobq/53/count HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", basic(KEY));
    c.write_all(get.as_bytes()).unwrap();
    assert_eq!(read_one_response(&mut c).expect("first").status, 200);
    thread::sleep(Duration::from_millis(1000));
    c.write_all(get.as_bytes()).unwrap();
    assert_eq!(read_one_response(&mut c).expect("second, within the idle timeout").status, 200);
    thread::sleep(Duration::from_millis(2800));
    assert!(closed_by_server(&c), "an idle keep-alive connection is closed after --idle-timeout");

    // A client that reads none of a long answer: dropped after --idle-timeout.
    let key = big_job(&s, 53, "pending", 100 << 10);
    let get = format!(
        "GET /jobq/53/jobsummary?jobmeta=pad&{} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        format!("key={key}&").repeat(1000),
        basic(KEY)
    );
    let mut c = connect(&s);
    c.write_all(get.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(3500));
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(got < 100_000_000, "the whole answer came ({got} bytes): the stalled connection was kept");

    // A body that stops coming: 408, and the connection is closed.
    let mut c = connect(&s);
    let started = Instant::now();
    let head = format!(
        "POST /jobq/53/push HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 100\r\n\r\n{{\"spi",
        basic(KEY)
    );
    c.write_all(head.as_bytes()).unwrap();
    let r = read_one_response(&mut c).expect("an answer to a stalled body");
    r.assert_error(408, "--body-timeout");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

fn keep_alive_request(s: &Server) -> TcpStream {
    let mut c = connect(s);
    let get = format!("GET /jobq/53/count HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", basic(KEY));
    c.write_all(get.as_bytes()).unwrap();
    assert_eq!(read_one_response(&mut c).expect("an answer").status, 200);
    c
}

#[test]
fn a_full_connection_table_or_few_descriptors_never_lock_real_clients_out() {
    let dir = tempdir();
    // At most 4 connections. Taken by idle keep-alive connections: they are closed
    // for a newcomer at once.
    let s = Server::start(&dir.path().join("a"), &["--api-key", "KEY", "--max-connections", "4"]);
    let idle: Vec<TcpStream> = (0..4).map(|_| keep_alive_request(&s)).collect();
    let asked = Instant::now();
    let r = harness::request(&s.addr, "GET", "/jobq/53/count", Some(KEY), b"");
    assert_eq!(r.status, 200);
    assert!(asked.elapsed() < SOON, "waited {:?} behind idle connections", asked.elapsed());
    assert!(s.log_shows("connection limit reached"), "{}", s.log());
    // The closes are sent as the newcomer is served; their FINs may still be on the way.
    let deadline = Instant::now() + Duration::from_secs(3);
    let closed = loop {
        let closed = idle.iter().filter(|c| closed_by_server(c)).count();
        if closed >= 3 || Instant::now() > deadline {
            break closed;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(closed >= 3, "only {closed} idle connections were closed to make room");
    // Taken by sockets that send nothing: their heads get a second, not --header-timeout.
    let silent: Vec<TcpStream> = (0..4).map(|_| connect(&s)).collect();
    thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    let r = harness::request(&s.addr, "GET", "/jobq/53/count", Some(KEY), b"");
    assert_eq!(r.status, 200);
    let waited = asked.elapsed();
    assert!(waited > Duration::from_millis(500) && waited < Duration::from_secs(3), "waited {waited:?}");
    drop(silent);

    // 256 descriptors in all: the server lowers its cap to keep some for the store
    // (listen.rs's FD_RESERVE, 128), never fails to accept, and serves a real client
    // beside 150 silent sockets.
    let s = Server::start_with_fd_limit(&dir.path().join("b"), &["--api-key", "KEY"], 256);
    let cap: usize = s
        .log()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("max_connections="))
        .expect("the start line names the connection cap")
        .parse()
        .unwrap();
    assert!(cap <= 256 - 128, "cap {cap}");
    assert!(s.log_shows("open-file limit"), "{}", s.log());
    let silent: Vec<TcpStream> = (0..150).map(|_| connect(&s)).collect();
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = harness::request(&s.addr, "POST", "/jobq/53/push", Some(KEY), b"{\"spider\":\"s\"}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
    drop(silent);
    let (status, log) = s.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// A job whose metadata is `bytes` long: rendering one of its fields, or reading it,
/// takes time proportional to that.
fn big_job(s: &Server, project: u32, state: &str, bytes: usize) -> String {
    push_one(s, project, &format!(r#"{{"spider":"s","state":"{state}","pad":"{}"}}"#, "x".repeat(bytes)))
}

/// CPU the server spends over `window`, starting `after` from now.
fn cpu_spent(s: &Server, after: Duration, window: Duration) -> Duration {
    thread::sleep(after);
    let t0 = cpu_ticks(s.pid());
    thread::sleep(window);
    Duration::from_millis((cpu_ticks(s.pid()) - t0) * 10)
}

#[test]
fn a_client_that_leaves_stops_the_rendering_of_its_answer() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    // Rows of `small` are quick and long (its note), rows of `big` slow and short
    // (every one reads and scans 15 MiB, and it has no note).
    let small = push_one(&s, 53, &format!(r#"{{"spider":"s","note":"{}"}}"#, "n".repeat(1000)));
    let big = big_job(&s, 53, "pending", 15 << 20);
    let get = |keys: &str| {
        format!(
            "GET /jobq/53/jobsummary?jobmeta=note{keys} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            basic(KEY)
        )
    };
    // Seconds before the first byte.
    let slow_start = get(&format!("&key={big}").repeat(1000));
    let mut c = connect(&s);
    c.write_all(slow_start.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(300));
    c.shutdown(Shutdown::Both).unwrap();
    drop(c);
    let spent = cpu_spent(&s, Duration::from_millis(500), Duration::from_secs(2));
    assert!(spent < Duration::from_millis(400), "{spent:?} of CPU after the client left");
    // Quick rows first, then slow ones: the client leaves after the first bytes.
    let mid_stream = get(&format!("{}{}", format!("&key={small}").repeat(100), format!("&key={big}").repeat(900)));
    let mut c = connect(&s);
    c.write_all(mid_stream.as_bytes()).unwrap();
    let mut first = [0u8; 4096];
    let n = c.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"), "the answer started");
    c.shutdown(Shutdown::Both).unwrap();
    drop(c);
    let spent = cpu_spent(&s, Duration::from_millis(200), Duration::from_millis(1500));
    assert!(spent < Duration::from_millis(400), "{spent:?} of CPU after the client left mid-stream");
    assert_eq!(s.get("/jobq/53/count?state=pending", KEY).text(), "2\n", "the server still answers");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_job_key_with_a_wrong_token_is_refused_quickly_whatever_the_job() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    let key = big_job(&s, 53, "running", 15 << 20);
    let missing = "53/1/999";
    let time_401 = |user: &str| {
        let started = Instant::now();
        s.get(&format!("/jobs/{user}"), &format!("{user}:wrong-token")).assert_error(401, "job token");
        started.elapsed()
    };
    let (mut existing, mut absent) = (Vec::new(), Vec::new());
    for _ in 0..25 {
        existing.push(time_401(&key));
        absent.push(time_401(missing));
    }
    let (e, a) = (median(existing.clone()), median(absent));
    println!("time to 401: {e:?} for a 15 MiB running job's key, {a:?} for a missing key");
    assert!(existing.iter().all(|t| *t < SOON));
    assert!(e < a + Duration::from_millis(5), "an existing job's key costs more: {e:?} vs {a:?}");
}

#[test]
fn sigterm_with_a_stalled_reader_still_closes_the_store_cleanly() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "KEY", "--drain-timeout", "1"]);
    let key = big_job(&s, 53, "pending", 100 << 10);
    // About 100 MB of answer: far more than the socket buffers hold.
    let get = format!(
        "GET /jobq/53/jobsummary?jobmeta=pad&{} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        format!("key={key}&").repeat(1000),
        basic(KEY)
    );
    let mut stalled = connect(&s);
    stalled.write_all(get.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(1000));
    let started = Instant::now();
    let (status, log) = s.stop();
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(log.contains("store closed"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    drop(stalled);
    let again = Server::start(dir.path(), &["--api-key", "KEY"]);
    assert!(again.log().contains("replayed 0 log frames"), "a clean close leaves nothing to replay:\n{}", again.log());
}

/// `jobq_http_buffered_bytes` from /metrics.
fn buffered(s: &Server) -> u64 {
    let text = s.get("/metrics", KEY).text();
    let line = text.lines().find(|l| l.starts_with("jobq_http_buffered_bytes ")).expect("the gauge");
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// One key holder with many connections cannot make the server hold more than
/// `--max-buffered` of request bodies and whole answers: a large body waits for
/// room (small requests go on), a large answer finds none and is a 503 at once,
/// and what a closed connection held is given back.
#[test]
fn bodies_and_answers_held_stay_within_max_buffered() {
    let dir = tempdir();
    // Answers larger than what the kernel's socket buffers absorb (a few MiB).
    let args = ["--api-key", "KEY", "--max-body", "12MiB", "--max-buffered", "24MiB", "--body-timeout", "20"];
    let s = Server::start(dir.path(), &args);
    let head = |len: usize| {
        format!(
            "POST /jobq/53/push HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {len}\r\n\r\n",
            basic(KEY)
        )
    };
    // Two bodies of 12 MiB, a little of each sent: the whole budget.
    let mut holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(head(12 << 20).as_bytes()).unwrap();
            c.write_all(&[b' '; 1000]).unwrap();
            c
        })
        .collect();
    wait_for("two bodies hold the budget", || buffered(&s) == 24 << 20);
    // A third waits for room, though all of it was sent; small requests go on.
    let body = format!(r#"{{"spider":"big","pad":"{}"}}"#, "x".repeat(10 << 20));
    let mut third = connect(&s);
    third.write_all(head(body.len()).as_bytes()).unwrap();
    // Sent from a thread: the server reads none of it while it waits.
    let sender = {
        let mut w = third.try_clone().unwrap();
        thread::spawn(move || w.write_all(body.as_bytes()))
    };
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut byte = [0u8; 1];
    let waited = third.read(&mut byte);
    assert!(
        matches!(&waited, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
        "{waited:?}"
    );
    assert_eq!(s.post("/jobq/53/push", KEY, r#"{"spider":"small"}"#).status, 200);
    assert_eq!(buffered(&s), 24 << 20, "never more than --max-buffered");
    // One holder leaves: the third is read and answered.
    drop(holders.pop());
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = read_one_response(&mut third).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    sender.join().unwrap().unwrap();
    let key = r.json()["key"].as_str().unwrap().to_string();
    drop(holders);
    wait_for("bodies given back", || buffered(&s) == 0);
    // Answers of 10 MiB to readers that read nothing: two fit, the third is a 503.
    let get = format!("GET /jobs/{key} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", basic(KEY));
    let readers: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(get.as_bytes()).unwrap();
            c
        })
        .collect();
    wait_for("two answers held", || buffered(&s) > 20 << 20);
    let r = s.get(&format!("/jobs/{key}"), KEY);
    r.assert_error(503, "--max-buffered");
    assert_eq!(r.header("retry-after"), Some("1"));
    // So is a listing whose first row is that large (a streamed answer).
    let r = s.get("/jobq/53/list?spider=big&jobmeta=pad&state=pending", KEY);
    r.assert_error(503, "--max-buffered");
    drop(readers);
    wait_for("answers given back once their connections closed", || buffered(&s) == 0);
    let r = s.get(&format!("/jobs/{key}"), KEY);
    assert_eq!((r.status, r.body.len() > 10 << 20), (200, true));
    let r = s.get("/jobq/53/list?spider=big&jobmeta=pad&state=pending", KEY);
    assert_eq!((r.status, r.body.len() > 10 << 20), (200, true));
    // Streamed chunks past the first take their share as they go (one that finds
    // no room waits: body.rs's unit test). With 10 MiB held by an unread answer,
    // a summary of three 6 MiB rows (a chunk each; its first chunk is two of
    // them, 12 MiB) is answered whole.
    let mut keys = String::new();
    for _ in 0..3 {
        let line = format!(r#"{{"spider":"mid","pad":"{}"}}"#, "y".repeat(6 << 20));
        keys += &format!("&key={}", push_one(&s, 53, &line));
    }
    let mut reader = connect(&s);
    reader.write_all(get.as_bytes()).unwrap();
    wait_for("one answer held", || buffered(&s) > 10 << 20);
    let r = s.get(&format!("/jobq/53/jobsummary?jobmeta=pad{keys}"), KEY);
    assert_eq!((r.status, r.body.len() > 18 << 20), (200, true));
    drop(reader);
    wait_for("all given back", || buffered(&s) == 0);
}

/// Parsing a body holds more than its bytes (about a job's worth a line): a push
/// of many small lines takes its share of `--max-buffered` for that too, so that
/// concurrent ones cannot hold many times the budget (16 MiB of tiny lines took
/// 600 MB to parse).
#[test]
fn a_body_of_many_lines_takes_its_parsing_memory_from_max_buffered() {
    let dir = tempdir();
    let args = ["--api-key", "KEY", "--max-body", "12MiB", "--max-buffered", "16MiB", "--body-timeout", "1"];
    let s = Server::start(dir.path(), &args);
    // An answer of 10 MiB to a reader that reads none of it holds most of the budget.
    let key = push_one(&s, 53, &format!(r#"{{"spider":"big","pad":"{}"}}"#, "x".repeat(10 << 20)));
    let get = format!("GET /jobs/{key} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", basic(KEY));
    let mut reader = connect(&s);
    reader.write_all(get.as_bytes()).unwrap();
    wait_for("the unread answer's share", || buffered(&s) > 9 << 20);
    // 300 KB of 20,000 lines: more to parse than the budget has left.
    let lines = "{\"spider\":\"a\"}\n".repeat(20_000);
    let r = s.post("/jobq/53/push", KEY, &lines);
    r.assert_error(503, "--max-buffered");
    assert_eq!(s.get("/jobq/53/count?state=pending&spider=a", KEY).text().trim(), "0");
    // Small pushes go on; once the reader leaves, the large one is taken.
    assert_eq!(s.post("/jobq/53/push", KEY, r#"{"spider":"small"}"#).status, 200);
    drop(reader);
    wait_for("the answer's share given back", || buffered(&s) == 0);
    let r = s.post("/jobq/53/push", KEY, &lines);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("/jobq/53/count?state=pending&spider=a", KEY).text().trim(), "20000");
}
