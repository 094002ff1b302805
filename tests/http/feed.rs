//! Our extensions over plain HTTP: the change feed (`changes`, long-polled with
//! `wait`, filtered, paged by `X-Jobq-Seq`, 410 after compaction) and
//! `startjob?wait` (distinct jobs to concurrent waiters, nothing for a client that
//! left); errors, limits, auth; the shutdown ends waits.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::endpoints::{push, ARGS, KEY};
use crate::harness::{basic, tempdir, Resp, Server};

fn seq_of(r: &Resp) -> u64 {
    r.header("x-jobq-seq").unwrap_or_else(|| panic!("no X-Jobq-Seq: {r:?}")).parse().unwrap()
}

fn changes(s: &Server, project: u32, query: &str) -> Resp {
    let r = s.get(&format!("/jobq/{project}/changes?{query}"), KEY);
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// `(key, state, prevstate)` of each line.
fn triples(r: &Resp) -> Vec<(String, String, Value)> {
    r.lines()
        .iter()
        .map(|l| (l["key"].as_str().unwrap().into(), l["state"].as_str().unwrap().into(), l["prevstate"].clone()))
        .collect()
}

fn post(s: &Server, path: &str, body: &str) {
    let r = s.post(path, KEY, body);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A request sent now, answered on another thread.
fn later(s: &Server, method: &'static str, target: String) -> std::thread::JoinHandle<(Resp, Duration)> {
    let addr = s.addr.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = crate::harness::request(&addr, method, &target, Some(KEY), b"");
        (r, t.elapsed())
    })
}

#[test]
fn the_feed_reports_each_version_with_its_position() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &[ARGS, &["--max-count", "3"]].concat());
    // From now: nothing yet, and where now is.
    let r = changes(&s, 7, "");
    assert_eq!((r.body.len(), r.header("content-type")), (0, Some("application/x-jsonlines")));
    let start = seq_of(&r);
    push(&s, 7, &[json!({"spider": "a", "tags": ["x", "y"]}), json!({"spider": "b", "tags": ["x"]})]);
    push(&s, 8, &[json!({"spider": "a"})]);
    post(&s, "/jobq/7/update", r#"{"key":"7/1/1","state":"finished","close_reason":"failed"}"#);
    post(&s, "/jobq/7/update", r#"{"key":"7/2/1","state":"deleted"}"#);
    let r = changes(&s, 7, &format!("since={start}&count=100"));
    let lines = r.lines();
    assert_eq!(lines.len(), 3, "count is capped at --max-count: {lines:?}");
    let first = &lines[0];
    let text = r.text();
    let line = text.lines().next().unwrap();
    let at: Vec<usize> = ["\"seq\":", "\"key\":", "\"state\":", "\"prevstate\":", "\"ts\":", "\"spider\":"]
        .iter()
        .map(|f| line.find(f).unwrap_or_else(|| panic!("{f} missing: {line}")))
        .collect();
    assert!(at[0] == 1 && at.windows(2).all(|w| w[0] < w[1]), "the documented fields, in order: {line}");
    assert_eq!(first.as_object().unwrap().len(), 6, "{first}");
    assert_eq!(
        (first["key"].clone(), first["spider"].clone(), first["prevstate"].clone()),
        (json!("7/1/1"), json!("a"), Value::Null)
    );
    assert_eq!(seq_of(&r), lines[2]["seq"].as_u64().unwrap(), "a full page ends at its last line");
    let rest = changes(&s, 7, &format!("since={}", seq_of(&r)));
    let all: Vec<_> = triples(&r).into_iter().chain(triples(&rest)).collect();
    let s7 = |k: &str, st: &str, p: Value| (k.to_string(), st.to_string(), p);
    assert_eq!(
        all,
        [
            s7("7/1/1", "pending", Value::Null),
            s7("7/2/1", "pending", Value::Null),
            s7("7/1/1", "finished", json!("pending")),
            s7("7/2/1", "deleted", json!("pending")),
        ]
    );
    assert_eq!(rest.lines()[0]["deleted"], json!(true));
    assert!(r.lines()[2].get("deleted").is_none());
    let now = seq_of(&rest);
    assert!(now > lines[2]["seq"].as_u64().unwrap());
    // A quiet feed moves on: other projects' writes advance the position.
    push(&s, 8, &[json!({"spider": "a"})]);
    let quiet = changes(&s, 7, &format!("since={now}"));
    assert!(quiet.body.is_empty() && seq_of(&quiet) > now);
    // Filters.
    let only = |q: &str| {
        triples(&changes(&s, 7, &format!("since={start}&{q}"))).into_iter().map(|t| (t.0, t.1)).collect::<Vec<_>>()
    };
    let kv = |k: &str, st: &str| (k.to_string(), st.to_string());
    assert_eq!(only("spider=b"), [kv("7/2/1", "pending"), kv("7/2/1", "deleted")]);
    assert_eq!(only("state=finished&state=deleted"), [kv("7/1/1", "finished"), kv("7/2/1", "deleted")]);
    assert_eq!(only("has_tag_all=x&has_tag_all=y"), [kv("7/1/1", "pending"), kv("7/1/1", "finished")]);
    assert_eq!(only("has_tag=y&lacks_tag=x"), []);
    assert_eq!(only("close_reason=failed&close_reason=other&unknown=1"), [kv("7/1/1", "finished")]);
    // HEAD says the length and the position.
    let h = s.req("HEAD", &format!("/jobq/7/changes?since={start}"), Some(KEY), b"");
    assert_eq!((h.status, h.body.len(), seq_of(&h)), (200, 0, lines[2]["seq"].as_u64().unwrap()));
}

#[test]
fn bad_parameters_auth_and_methods_are_refused() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "alice=KEY1", "--api-key", "bob=KEY2:9"]);
    push(&s, 7, &[json!({"spider": "a"})]);
    for (q, name) in [
        ("since=x", "since"),
        ("since=-1", "since"),
        ("since=99999", "since"),
        ("count=1.5", "count"),
        ("wait=soon", "wait"),
        ("wait=99999999999999999999", "wait"),
        ("state=done", "state"),
        ("has_tag_all=", "has_tag_all"),
        (&*format!("close_reason={}", "x".repeat(1025)), "close_reason"),
        ("spider=", "spider"),
    ] {
        s.get(&format!("/jobq/7/changes?{q}"), KEY).assert_error(400, name);
    }
    assert_eq!(s.req("GET", "/jobq/7/changes", None, b"").status, 401);
    s.get("/jobq/7/changes", "KEY2:").assert_error(403, "project 7");
    let r = s.post("/jobq/7/changes", KEY, "");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    s.post("/jobq/7/startjob?wait=x", KEY, "").assert_error(400, "wait");
    s.post("/jobq/7/startjob?wait=1", KEY, "[1]").assert_error(400, "line 1");
    assert_eq!(s.get("/jobq/7/count?state=pending", KEY).text(), "1\n", "a refused startjob starts nothing");
}

#[test]
fn a_waiting_feed_answers_with_the_first_matching_durable_write() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    let now = seq_of(&changes(&s, 7, ""));
    let waiter = later(&s, "GET", format!("/jobq/7/changes?since={now}&wait=30&state=finished"));
    std::thread::sleep(Duration::from_millis(300));
    // Writes that do not match: the wait goes on.
    push(&s, 7, &[json!({"spider": "a"})]);
    push(&s, 8, &[json!({"spider": "a", "state": "finished"})]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "answered before a matching write");
    let t = Instant::now();
    post(&s, "/jobq/7/update", r#"{"key":"7/1/1","state":"finished"}"#);
    let acked = t.elapsed();
    let (r, _) = waiter.join().unwrap();
    assert!(t.elapsed() < acked + Duration::from_secs(1), "answered within 1 s of the write's acknowledgement");
    assert_eq!(triples(&r), [("7/1/1".to_string(), "finished".to_string(), json!("pending"))]);
    assert_eq!(seq_of(&r), r.lines()[0]["seq"].as_u64().unwrap());
    // With nothing to report, a wait ends after `wait` seconds, empty, further on.
    let (r, took) = later(&s, "GET", format!("/jobq/7/changes?since={now}&wait=1&spider=nobody")).join().unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(5), "{took:?}");
    assert!(seq_of(&r) > now, "the wait read on past the writes that did not match");
    // A wait is capped at 60 s, and longer than the idle timeout is fine (the connection is busy).
    let s2_dir = tempdir();
    let s2 = Server::start(s2_dir.path(), &[ARGS, &["--idle-timeout", "1"]].concat());
    let waiter = later(&s2, "GET", "/jobq/1/changes?wait=600".to_string());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!waiter.is_finished(), "the idle timeout ended a wait");
    push(&s2, 1, &[json!({"spider": "a"})]);
    assert_eq!(waiter.join().unwrap().0.lines().len(), 1);
}

#[test]
fn positions_compaction_removed_answer_410() {
    let dir = tempdir();
    let args = [ARGS, &["--segment-bytes", "8K", "--compact-when", "0.05", "--compact-every", "0.05"]].concat();
    let s = Server::start(dir.path(), &args);
    let pad = "p".repeat(300);
    // Every update a new version of 7/1/1: most of the log is superseded.
    for i in 0..40 {
        push(&s, 7, &[json!({"spider": "a", "pad": pad})]);
        post(&s, "/jobq/7/update", &format!(r#"{{"key":"7/1/1","note":{i}}}"#));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = s.get("/jobq/7/changes?since=0", KEY);
        if r.status == 410 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    r.assert_error(410, "compaction");
    let mut oldest = r.json()["oldest"].as_u64().unwrap();
    assert_eq!(seq_of(&r), oldest);
    // From the oldest position the feed answers (unless a later cycle moved it on again).
    let from_oldest = loop {
        let r = s.get(&format!("/jobq/7/changes?since={oldest}"), KEY);
        if r.status == 200 {
            break r;
        }
        let next = r.json()["oldest"].as_u64().unwrap_or_else(|| panic!("{} {}", r.status, r.text()));
        assert!(r.status == 410 && next > oldest && Instant::now() < deadline, "{}", r.text());
        oldest = next;
    };
    let seqs: Vec<u64> = from_oldest.lines().iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs.iter().all(|q| *q > oldest), "{seqs:?}");
    assert_eq!(s.get(&format!("/jobq/7/changes?since={}", oldest - 1), KEY).status, 410);
}

#[test]
fn waiting_startjobs_get_distinct_jobs_and_a_client_that_left_starts_nothing() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    // Nothing pending and no wait: an empty answer at once, as before.
    assert_eq!(s.post("/jobq/7/startjob", KEY, "").body.len(), 0);
    // A client that leaves while waiting starts nothing.
    let mut gone = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "POST /jobq/7/startjob?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 0\r\n\r\n",
        basic(KEY)
    );
    gone.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(gone);
    std::thread::sleep(Duration::from_millis(300));
    let waiters: Vec<_> = (0..3).map(|_| later(&s, "POST", "/jobq/7/startjob?wait=30".to_string())).collect();
    std::thread::sleep(Duration::from_millis(300));
    push(&s, 7, &[json!({"spider": "a"})]);
    push(&s, 7, &[json!({"spider": "a"}), json!({"spider": "a"})]);
    let mut started: Vec<String> = waiters
        .into_iter()
        .map(|w| {
            let (r, _) = w.join().unwrap();
            let j = r.json();
            assert_eq!(j["state"], "running", "{j}");
            j["key"].as_str().unwrap().to_string()
        })
        .collect();
    started.sort();
    assert_eq!(started, ["7/1/1", "7/1/2", "7/1/3"], "each waiter its own job, the client that left none");
    assert_eq!(s.get("/jobq/7/count?state=pending", KEY).text(), "0\n");
    // Time up: an empty answer.
    let (r, took) = later(&s, "POST", "/jobq/7/startjob?wait=1".to_string()).join().unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert!(took >= Duration::from_millis(950), "{took:?}");
    // A job pushed pending by an update counts too; fields of the body are merged.
    post(&s, "/jobq/7/update", r#"{"key":"7/1/1","state":"finished"}"#);
    let w = std::thread::spawn({
        let addr = s.addr.clone();
        move || crate::harness::request(&addr, "POST", "/jobq/7/startjob?wait=30", Some(KEY), br#"{"worker":"w1"}"#)
    });
    std::thread::sleep(Duration::from_millis(300));
    post(&s, "/jobq/7/update", r#"{"key":"7/1/1","state":"pending"}"#);
    let j = w.join().unwrap().json();
    assert_eq!((j["key"].clone(), j["worker"].clone()), (json!("7/1/1"), json!("w1")));
}

#[test]
fn shutdown_ends_waits_with_the_answer_so_far() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 7, &[json!({"spider": "a"})]);
    let now = seq_of(&changes(&s, 7, ""));
    let feed = later(&s, "GET", format!("/jobq/7/changes?since={now}&wait=60"));
    let start = later(&s, "POST", "/jobq/8/startjob?wait=60".to_string());
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let stopped = std::thread::spawn(move || s.stop());
    let (r, _) = feed.join().unwrap();
    assert_eq!((r.status, r.body.len(), seq_of(&r)), (200, 0, now));
    let (r, _) = start.join().unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let (status, log) = stopped.join().unwrap();
    assert!(status.success() && t.elapsed() < Duration::from_secs(10), "{log}");
}
