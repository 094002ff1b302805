//! The command line around the store: graceful shutdown and restart, import,
//! export (also beside a running server), query.

#[path = "harness/mod.rs"]
mod harness;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use harness::{tempdir, Server, BIN};

const KEY: &str = "K:";

fn jobq(args: &[&str], dir: &std::path::Path, stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jobq");
    // The command may refuse before reading its input: a closed pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sigterm_drains_then_closes_and_acknowledged_writes_survive() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "K"]);
    let addr = s.addr.clone();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let a = addr.clone();
            let progress = progress.clone();
            std::thread::spawn(move || {
                let mut acked = 0u64;
                for i in 0..200 {
                    let body = format!("{{\"spider\":\"w{w}\",\"i\":{i}}}");
                    let Ok(mut sock) = std::net::TcpStream::connect(&a) else { break };
                    let head = format!(
                        "POST /jobq/1/push HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        harness::basic(KEY),
                        body.len()
                    );
                    if sock.write_all(head.as_bytes()).is_err() {
                        break;
                    }
                    let mut all = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut sock, &mut all);
                    if all.is_empty() {
                        break;
                    }
                    let r = harness::parse_response(&all);
                    assert!(r.status == 200 || r.status == 503, "{} {}", r.status, r.text());
                    if r.status == 200 {
                        acked += 1;
                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                acked
            })
        })
        .collect();
    // Stop while pushes are in flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 40 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (status, log) = s.stop();
    let acked: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("SIGTERM received") && log.contains("store closed"), "{log}");
    assert!(acked > 0);
    let again = Server::start(dir.path(), &["--api-key", "K"]);
    assert!(again.log().contains("log tail clean"), "{}", again.log());
    let n: u64 = again.get("/jobq/1/count?state=pending", KEY).text().trim().parse().unwrap();
    assert_eq!(n, acked, "every acknowledged push is there, nothing else");
}

fn fill(s: &Server) {
    let lines = [
        json!({"spider": "a", "tags": ["x"], "deep": {"u": "é", "n": [1, 2.50]}}),
        json!({"spider": "b", "priority": 4, "unique": "one"}),
        json!({"spider": "a", "state": "running"}),
    ];
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    assert_eq!(s.post("/jobq/53/push", KEY, &body.join("\n")).status, 200);
    assert_eq!(s.post("/jobq/54/push", KEY, "{\"spider\":\"c\"}").status, 200);
    s.post("/jobq/53/update", KEY, "{\"key\":\"53/1/1\",\"state\":\"finished\",\"close_reason\":\"ok\"}");
}

#[test]
fn export_and_query_beside_a_server_then_import_round_trips() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "K"]);
    fill(&s);
    let out = jobq(&["export"], dir.path(), b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = text(&out.stdout);
    // A catalog line per spider (a, b; c), each project's first, then the jobs.
    let catalog = |t: &str| t.lines().filter(|l| l.starts_with("{\"spider_catalog\":")).count();
    assert_eq!((exported.lines().count(), catalog(&exported)), (4 + 3, 3), "{exported}");
    let one = text(&jobq(&["export", "--project", "54"], dir.path(), b"").stdout);
    assert_eq!(
        one,
        "{\"spider_catalog\":{\"project\":54,\"id\":1,\"name\":\"c\",\"next_job\":2}}\n".to_string()
            + one.lines().nth(1).unwrap()
            + "\n"
    );
    let first: Value = serde_json::from_str(exported.lines().nth(2).unwrap()).unwrap();
    assert!(first["key"].is_string() && first["spider"].is_string() && first["state"].is_string());
    let locked = jobq(&["import"], dir.path(), exported.as_bytes());
    assert!(!locked.status.success() && text(&locked.stderr).contains("stop the server"), "{}", text(&locked.stderr));
    let queries = "jobq/53/count\njobq/53/list?state=pending&state=running\n\njobq/53/summary/finished\njobq/53/jobsummary?key=53/1/1&jobmeta=close_reason\njobs/53/1/1/deep\njobs/53/9/9\nids/53/spider/b\n";
    let q = jobq(&["query"], dir.path(), queries.as_bytes());
    assert!(q.status.success(), "{}", text(&q.stderr));
    let answers: Vec<Value> = text(&q.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 7);
    assert_eq!(answers[0], json!(1));
    assert_eq!(
        answers[1].as_array().unwrap().iter().map(|r| r["key"].clone()).collect::<Vec<_>>(),
        ["53/1/2", "53/2/1"]
    );
    assert_eq!(answers[2].as_array().unwrap()[0]["count"], 1);
    assert_eq!(answers[3][0]["close_reason"], "ok");
    assert_eq!(answers[4], json!({"u": "é", "n": [1, 2.50]}));
    assert_eq!(answers[5], Value::Null);
    assert_eq!(answers[6], json!(2));
    let bad = jobq(&["query"], dir.path(), b"jobq/53/list?state=nope\njobq/53/count\n");
    assert!(!bad.status.success());
    let lines: Vec<&str> =
        text(&bad.stdout).lines().map(str::to_owned).collect::<Vec<_>>().leak().iter().map(String::as_str).collect();
    assert!(lines[0].contains("\"error\"") && lines[0].contains("unknown state"), "{lines:?}");
    assert_eq!(lines[1], "1");
    // A line that is not UTF-8 gets its error; the lines after it their answers.
    let mixed = jobq(&["query"], dir.path(), b"jobq/53/count?spider=\xff\njobq/53/count\n");
    assert!(!mixed.status.success());
    let lines: Vec<String> = text(&mixed.stdout).lines().map(str::to_owned).collect();
    assert!(lines[0].contains("\"error\"") && lines[0].contains("not UTF-8"), "{lines:?}");
    assert_eq!(lines[1], "1");
    drop(s);
    let copy = tempdir();
    let imported = jobq(&["import"], copy.path(), exported.as_bytes());
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert!(text(&imported.stderr).contains("imported 4 jobs"), "{}", text(&imported.stderr));
    let again = jobq(&["export"], copy.path(), b"");
    assert_eq!(text(&again.stdout), exported, "export, import, export gives the same lines");
    let s2 = Server::start(copy.path(), &["--api-key", "K"]);
    assert_eq!(s2.get("/jobq/53/list?state=running", KEY).json()["key"], "53/1/2");
    let dup = s2.post("/jobq/53/push", KEY, "{\"spider\":\"b\",\"unique\":\"one\"}");
    assert!(dup.json()["error"].as_str().unwrap().contains("Active job"), "imported jobs keep their unique");
    assert_eq!(s2.post("/jobq/53/push", KEY, "{\"spider\":\"a\"}").json()["key"], "53/1/3", "ids are not reused");
}

#[test]
fn import_refuses_a_bad_line_and_stores_nothing() {
    let dir = tempdir();
    let file = dir.path().join("jobs.jsonl");
    let good =
        |j: u32| format!("{{\"key\":\"1/1/{j}\",\"spider\":\"s\",\"state\":\"finished\",\"finished_time\":{j}}}\n");
    let mut body = good(1) + &good(2);
    body.push_str("{\"key\":\"1/1/3\",\"spider\":\"s\",\"state\":\"finished\"}\n");
    std::fs::write(&file, body + &good(4)).unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN).arg("import").arg("--data").arg(&data).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("finished_time") && err.contains("nothing of it was stored"),
        "{err}"
    );
    let exported = jobq(&["export"], &data, b"");
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    assert_eq!(exported.stdout.len(), 0);
    let missing = jobq(&["export"], &dir.path().join("nowhere"), b"");
    assert!(!missing.status.success() && text(&missing.stderr).contains("no store"));
    let from_stdin = jobq(&["import"], &data, (good(1) + &good(2)).as_bytes());
    assert!(from_stdin.status.success(), "{}", text(&from_stdin.stderr));
    let q = jobq(&["query"], &data, b"jobq/1/count\n");
    assert_eq!(text(&q.stdout), "2\n");
}

#[test]
fn check_finds_damage_repair_salvages_it_and_check_is_clean_again() {
    let dir = tempdir();
    let lines: String = (1..=50)
        .map(|j| {
            format!("{{\"key\":\"5/1/{j}\",\"spider\":\"s\",\"state\":\"finished\",\"finished_time\":{}}}\n", 1000 + j)
        })
        .collect();
    assert!(jobq(&["import"], dir.path(), lines.as_bytes()).status.success());
    assert_eq!(jobq(&["check"], dir.path(), b"").status.code(), Some(0));
    assert!(jobq(&["repair"], dir.path(), b"").status.success(), "nothing to repair is a success");
    // Damage a byte in the middle of the log (inside the imported frames).
    let seg = dir.path().join("gen-0000000000000001/log-0000000001.jql");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = 12288 + (bytes.len() - 12288) / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let out = jobq(&["check"], dir.path(), b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("log-0000000001.jql at offset"), "{}", text(&out.stdout));
    let out = jobq(&["repair"], dir.path(), b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("moved aside to") && err.contains("salvaged-"), "{err}");
    assert!(text(&out.stdout).lines().all(|l| l.starts_with("dropped version: 5/1/")), "{}", text(&out.stdout));
    let out = jobq(&["check"], dir.path(), b"");
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let salvaged = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("salvaged-"));
    assert!(salvaged);
}

/// Flags that cannot work together are refused at start, before a store is made.
#[test]
fn serve_refuses_a_buffer_budget_below_the_body_limit() {
    let dir = tempdir();
    let data = dir.path().join("data");
    for (extra, needle) in [
        (&["--max-body", "2MiB", "--max-buffered", "1MiB"][..], "--max-buffered"),
        (&["--max-buffered", "lots"][..], "--max-buffered"),
        (&["--member-catch-up", "5"][..], "--node-id"),
    ] {
        let out = jobq(&[&["serve", "--listen", "127.0.0.1:0", "--api-key", "K"][..], extra].concat(), &data, b"");
        assert!(!out.status.success() && text(&out.stderr).contains(needle), "{extra:?}: {}", text(&out.stderr));
        assert!(!data.join("CURRENT").exists(), "{extra:?}: no store made");
    }
}

/// A server whose stderr cannot be written (its log on a full disk) serves and
/// stops cleanly: log lines are dropped. It used to exit 101 at its first line
/// (tracing reported the failed write on that same stderr, which panicked).
#[test]
fn serve_goes_on_when_its_log_cannot_be_written() {
    let dir = tempdir();
    let addr = harness::free_ports(1).remove(0);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--api-key", "K", "--listen", &addr, "--data"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("jobq serve exited: {status:?}");
        }
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "jobq serve did not listen");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let r = harness::request(&addr, "POST", "/jobq/1/push", Some(KEY), br#"{"spider":"s"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(harness::request(&addr, "GET", "/jobq/1/count?state=pending", Some(KEY), b"").text(), "1\n");
    harness::signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success(), "a clean stop");
}

/// A store of more log segments than the soft open-file limit: `check`, `export`
/// and `backup` hold every segment open (read-only, beside a server's compaction),
/// so the binary raises its soft limit to the hard one.
#[test]
fn read_only_commands_run_on_more_segments_than_the_soft_file_limit() {
    use jobq::{Options, Store};
    let dir = tempdir();
    let store =
        Store::open(dir.path(), Options { background: false, segment_bytes: 4096, ..Options::default() }).unwrap();
    let line = format!(r#"{{"spider":"s","pad":"{}"}}"#, "x".repeat(1500));
    for _ in 0..300 {
        store.push(1, &[jobq::store::request::parse_push(&line).unwrap()], None).unwrap();
    }
    store.close().unwrap();
    let segments = std::fs::read_dir(dir.path().join("gen-0000000000000001"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("log-"))
        .count();
    assert!(segments > 120, "{segments} segments");
    let hard = Command::new("sh").args(["-c", "ulimit -Hn"]).output().unwrap();
    let hard = text(&hard.stdout).trim().to_string();
    if hard != "unlimited" && hard.parse::<usize>().is_ok_and(|h| h < segments + 64) {
        eprintln!("skipped: the hard open-file limit ({hard}) is below {segments} segments");
        return;
    }
    let backup = tempdir();
    for args in [
        vec!["check", "--data"],
        vec!["export", "--data"],
        vec!["backup", "--to", backup.path().to_str().unwrap(), "--data"],
    ] {
        let mut cmd = Command::new("sh");
        // The soft limit is lowered below the segment count; the hard one stays.
        cmd.args(["-c", "ulimit -Sn 64 && exec \"$0\" \"$@\"", BIN]).args(&args).arg(dir.path());
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {:?}\n{}", out.status, text(&out.stderr));
        if args[0] == "export" {
            assert_eq!(text(&out.stdout).lines().filter(|l| l.contains("\"key\"")).count(), 300);
        }
    }
}

/// A body limit no log frame could hold (a request's writes are one frame) is
/// refused at start, naming the flag.
#[test]
fn serve_refuses_body_limits_it_cannot_honour() {
    let dir = tempdir();
    let args = ["serve", "--api-key", "K", "--listen", "127.0.0.1:0", "--max-body", "257MiB", "--max-buffered", "1GiB"];
    let out = jobq(&args, dir.path(), b"");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--max-body is at most"), "{}", text(&out.stderr));
}

/// `jobq backup` compares DIR and DEST resolved: a destination inside the store
/// spelled through `.`, `..` or a symlink is refused (it was accepted, and a store
/// was backed up into itself); a new destination beside it is taken.
#[test]
fn backup_destinations_are_compared_resolved() {
    let root = tempdir();
    let store = root.path().join("store");
    let line = b"{\"key\":\"1/1/1\",\"spider\":\"s\",\"state\":\"pending\",\"pending_time\":1}\n";
    assert!(jobq(&["import"], &store, line).status.success());
    std::os::unix::fs::symlink(&store, root.path().join("link")).unwrap();
    let spelled = |p: &str| root.path().join(p).to_string_lossy().into_owned();
    for to in [spelled("store/./bk"), spelled("link/bk"), spelled("new/../store/bk"), spelled("store/x/../../store")] {
        let out = jobq(&["backup", "--to", &to], &store, b"");
        assert!(!out.status.success(), "{to}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("must lie outside the store"), "{to}: {}", text(&out.stderr));
    }
    assert!(!root.path().join("new").exists() && !store.join("bk").exists());
    let out = jobq(&["backup", "--to", &spelled("copies/../bk")], &store, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(root.path().join("bk/BACKUP-OF")).unwrap(),
        store.canonicalize().unwrap().as_os_str().as_encoded_bytes()
    );
}
