//! GET /metrics and GET /health of the real server: the counters move with the
//! requests made, the text parses strictly with the official Python parser,
//! `--metrics-listen` and `--metrics-key`, /health while serving, after a
//! failed write (the file-size limit makes the log's append fail) and during
//! the drain after SIGTERM.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::endpoints::{push, ARGS, KEY};
use crate::harness::{request, signal, tempdir, Resp, Server};

/// One scrape: every sample line by its series (`name{labels}` as written).
struct Scrape {
    text: String,
    series: BTreeMap<String, f64>,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }
}

fn parse(r: &Resp) -> Scrape {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(series.insert(name.to_string(), value).is_none(), "{name} twice");
    }
    Scrape { text, series }
}

fn scrape(addr: &str, auth: Option<&str>) -> Scrape {
    parse(&request(addr, "GET", "/metrics", auth, b""))
}

fn requests(endpoint: &str, status: u16) -> String {
    format!("jobq_http_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}}")
}

fn jobs(state: &str) -> String {
    format!("jobq_jobs{{state=\"{state}\"}}")
}

#[test]
fn the_counters_move_with_the_requests() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    let a = scrape(&s.addr, None);
    assert_eq!(a.get("jobq_http_requests_in_flight"), 1.0, "the scrape itself");
    let lines: Vec<Value> = (0..5).map(|i| json!({"spider": "sp", "i": i})).collect();
    push(&s, 7, &lines);
    let finish = r#"{"key":"7/1/1","state":"finished"}"#.to_string() + "\n" + r#"{"key":"7/1/2","state":"finished"}"#;
    assert_eq!(s.post("/jobq/7/update", KEY, &finish).status, 200);
    assert_eq!(s.post("/jobq/7/startjob", KEY, "").status, 200);
    push(&s, 8, &[json!({"spider": "other"})]);
    assert_eq!(s.get("/jobq/7/count", KEY).text(), "2\n");
    assert_eq!(s.get("/nowhere", KEY).status, 404);
    assert_eq!(s.req("GET", "/jobq/7/count", None, b"").status, 401);
    assert_eq!(s.req("HEAD", "/health", None, b"").status, 200);
    let b = scrape(&s.addr, None);
    let moved = |series: &str| b.get(series) - a.get(series);
    for (endpoint, status, n) in [
        ("push", 200, 2.0),
        ("update", 200, 1.0),
        ("startjob", 200, 1.0),
        ("count", 200, 1.0),
        ("count", 401, 1.0),
        ("not_found", 404, 1.0),
        ("health", 200, 1.0),
        ("metrics", 200, 1.0),
    ] {
        assert_eq!(moved(&requests(endpoint, status)), n, "{endpoint} {status}\n{}", b.text);
    }
    let latency = |e: &str| format!("jobq_http_request_duration_seconds_count{{endpoint=\"{e}\"}}");
    assert_eq!(moved(&latency("push")), 2.0);
    assert_eq!(moved("jobq_http_request_duration_seconds_bucket{endpoint=\"push\",le=\"+Inf\"}"), 2.0);
    // Four writes, one after another: each waited for its own fsync.
    assert!(moved("jobq_fsync_duration_seconds_count") >= 4.0, "{}", b.text);
    assert_eq!(moved("jobq_commit_batch_writes_count"), moved("jobq_fsync_duration_seconds_count"));
    assert!(moved("jobq_commit_batch_writes_sum") >= 4.0);
    assert_eq!(
        [b.get(&jobs("pending")), b.get(&jobs("running")), b.get(&jobs("finished")), b.get(&jobs("deleted"))],
        [3.0, 1.0, 2.0, 0.0],
        "jobs per state, over both projects"
    );
    assert!(moved("jobq_durable_seq") >= 4.0);
    assert!(b.get("jobq_log_bytes") > a.get("jobq_log_bytes"));
    assert!(moved("jobq_connections_accepted_total") >= 9.0);
    assert_eq!(b.get("jobq_poisoned"), 0.0);
    // HEAD: the headers of the answer, no body.
    let head = s.req("HEAD", "/metrics", None, b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty() && head.header("content-length").is_some_and(|l| l != "0"));
    // Every family is in README.md's table.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for line in b.text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split(' ').next().unwrap();
        assert!(readme.contains(&format!("`{name}`")), "README.md does not list {name}");
    }
}

/// The official parser, made strict (tests/python/check_metrics.py), reads a
/// real scrape; and the same check refuses a broken one.
#[test]
fn prometheus_client_parses_the_answer_strictly() {
    if std::env::var("JOBQ_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("JOBQ_SKIP_PYTHON=1: the prometheus_client check is skipped");
        return;
    }
    let python = crate::pyenv::python_with(&["prometheus_client"], &[crate::pyenv::PROMETHEUS_CLIENT]);
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 1, &[json!({"spider": "a"}), json!({"spider": "b"})]);
    assert_eq!(s.get("/jobq/1/list?count=1", KEY).status, 200);
    let text = scrape(&s.addr, None).text;
    let check = |text: &str| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_metrics.py");
        let mut child = Command::new(&python)
            .arg(script)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = check(&text);
    assert!(ok, "{said}\n{text}");
    assert!(said.starts_with("ok: "), "{said}");
    let count_line = text.lines().find(|l| l.starts_with("jobq_fsync_duration_seconds_count ")).unwrap();
    let broken = [
        format!("{text}jobq_bad{{x=\"1}} 2\n"),
        format!("{text}jobq_untyped 1\n"),
        text.replace(count_line, "jobq_fsync_duration_seconds_count 999"),
    ];
    for b in broken {
        let (ok, said) = check(&b);
        assert!(!ok && said.contains("BAD METRICS"), "a broken answer passed: {said}");
    }
}

#[test]
fn health_answers_from_memory_without_a_key() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 1, &[json!({"spider": "a"})]);
    let r = s.req("GET", "/health", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let h = r.json();
    assert_eq!(h["status"], "ok");
    assert!(h.get("reason").is_none());
    assert_eq!(h["durable_seq"].as_u64(), Some(scrape(&s.addr, None).get("jobq_durable_seq") as u64));
    assert!(h["uptime_secs"].is_u64() && h["version"].is_string());
    assert_eq!(s.req("GET", "/health/", None, b"").status, 200);
    let post = s.req("POST", "/health", None, b"");
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
}

/// The log's append fails (the file-size limit, `ulimit -f`, as a stand-in for
/// a failed disk: EFBIG, which even root gets): 503 for the write, and /health
/// says the store is poisoned and why.
#[test]
fn health_is_503_with_the_cause_once_a_write_failed() {
    let dir = tempdir();
    // 256 KiB (in 512-byte blocks) holds a new store; SIGXFSZ ignored: write(2) fails instead.
    let s = Server::start_with_shell(dir.path(), ARGS, "trap '' XFSZ && ulimit -f 512");
    push(&s, 1, &[json!({"spider": "a"})]);
    let big = json!({"spider": "a", "pad": "x".repeat(400 << 10)}).to_string();
    let r = s.post("/jobq/1/push", KEY, &big);
    assert_eq!(r.status, 500, "{}", r.text());
    let h = s.req("GET", "/health", None, b"");
    assert_eq!(h.status, 503, "{}", h.text());
    let h = h.json();
    assert_eq!(h["status"], "poisoned");
    let reason = h["reason"].as_str().unwrap();
    assert!(reason.contains("append to") && reason.contains("File too large"), "{reason}");
    let m = scrape(&s.addr, None);
    assert_eq!((m.get("jobq_poisoned"), m.get("jobq_disk_full")), (1.0, 0.0));
    assert_eq!(s.post("/jobq/1/push", KEY, r#"{"spider":"a"}"#).status, 503, "writes are refused");
}

/// A request left unfinished keeps the server draining after SIGTERM: new
/// connections are still answered, /health with 503 "closing", the API with 503.
#[test]
fn health_says_closing_during_the_drain() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "alice=KEY1", "--drain-timeout", "20"]);
    let mut stalled = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "POST /jobq/1/push HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 100\r\n\r\n{{",
        crate::harness::basic(KEY)
    );
    stalled.write_all(head.as_bytes()).unwrap();
    assert_eq!(s.req("GET", "/health", None, b"").status, 200);
    signal(s.pid(), "TERM");
    assert!(s.log_shows("shutting down"), "{}", s.log());
    let started = Instant::now();
    let h = s.req("GET", "/health", None, b"");
    // Answered at once, not after the drain (20 s): a loaded CI machine may be slow.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(h.status, 503, "{}", h.text());
    assert_eq!(h.header("connection"), Some("close"));
    let h = h.json();
    assert_eq!(h["status"], "closing");
    assert!(h["reason"].as_str().unwrap().contains("SIGTERM"), "{h}");
    assert_eq!(h["requests_in_flight"].as_u64(), Some(2), "the stalled push and this request");
    let api = s.get("/jobq/1/count", KEY);
    api.assert_error(503, "shutting down");
    let m = scrape(&s.addr, None);
    assert_eq!(m.get("jobq_closing"), 1.0);
    // The stalled push gives up: the drain ends, the store closes, exit 0.
    drop(stalled);
    let (status, log) = s.stop();
    assert!(status.success() && log.contains("store closed"), "{status:?}\n{log}");
}

#[test]
fn metrics_on_their_own_listener_and_behind_a_key() {
    let dir = tempdir();
    let args = ["--api-key", "alice=KEY1", "--metrics-listen", "127.0.0.1:0", "--metrics-key", "MK"];
    let s = Server::start(dir.path(), &args);
    let log = s.log();
    let at = log.split_whitespace().find_map(|w| w.strip_prefix("metrics_listen=")).expect("the address is logged");
    // The API port: no /metrics, with or without keys; /health stays.
    for auth in [None, Some(KEY), Some("MK:")] {
        let r = s.req("GET", "/metrics", auth, b"");
        r.assert_error(404, "--metrics-listen");
    }
    assert_eq!(s.req("GET", "/health", None, b"").status, 200);
    // The metrics port: the key as user name, nothing else.
    for auth in [None, Some("KEY1:"), Some("mk:"), Some("MKX:")] {
        let r = request(at, "GET", "/metrics", auth, b"");
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"jobq metrics\""));
    }
    let m = scrape(at, Some("MK:anything"));
    assert!(m.text.contains("\njobq_build_info{version=\""), "{}", m.text);
    assert_eq!(request(at, "GET", "/health", None, b"").status, 200);
    assert_eq!(request(at, "GET", "/jobq/1/count", Some(KEY), b"").status, 404);
    // The API's counters count the metrics port's requests too.
    assert!(scrape(at, Some("MK:")).get(&requests("metrics", 401)) >= 4.0);
}

#[test]
fn the_metrics_key_guards_metrics_on_the_api_port() {
    let dir = tempdir();
    let file = dir.path().join("metrics.key");
    std::fs::write(&file, "\n  MK \n").unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--api-key", "alice=KEY1", "--metrics-key-file", file.to_str().unwrap()]);
    for auth in [None, Some(KEY)] {
        let r = s.req("GET", "/metrics", auth, b"");
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
    }
    assert_eq!(s.req("GET", "/metrics", Some("MK:"), b"").status, 200);
    assert_eq!(s.req("GET", "/health", None, b"").status, 200, "/health never needs a key");
}
