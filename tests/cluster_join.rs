//! A node added to a running cluster whose log was purged behind a snapshot
//! (issue 14): `POST /cluster/members` makes it a learner, it receives the
//! leader's snapshot over `/_raft/snapshot`, installs it as a new generation,
//! catches up from the log and becomes a voter that serves the same jobs.
#![cfg(feature = "cluster")]

mod harness;

use std::time::{Duration, Instant};

use harness::Server;

const ADMIN: &str = "admin:";

fn free_ports(n: usize) -> Vec<String> {
    let ls: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    ls.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
}

fn spawn(dir: &std::path::Path, id: usize, addrs: &[String], key: &std::path::Path) -> Server {
    let id_s = id.to_string();
    let peers: Vec<String> = addrs.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
    let mut args = vec!["--api-key", "admin", "--node-id", &id_s, "--election-ms", "300", "--snapshot-every", "20"];
    for p in &peers {
        args.extend(["--peer", p]);
    }
    args.extend(["--cluster-key-file", key.to_str().unwrap()]);
    Server::start_at(dir, &addrs[id - 1], &args)
}

fn leader(nodes: &[&Server]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let named: Vec<Option<u64>> =
            nodes.iter().map(|s| s.get("/cluster", ADMIN).json()["leader"].as_u64()).collect();
        if let Some(Some(l)) = named.first() {
            if named.iter().all(|n| *n == Some(*l)) {
                return *l as usize;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {named:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn generation(dir: &std::path::Path) -> u64 {
    jobq::store::layout::read_current(&jobq::fs::RealFs, dir).unwrap().unwrap()
}

#[test]
fn a_node_added_after_the_log_was_purged_catches_up_from_a_snapshot() {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "a-cluster-key-of-some-length\n").unwrap();
    let dirs: Vec<_> = (0..4).map(|_| harness::tempdir()).collect();
    let addrs = free_ports(4);
    let first3 = &addrs[..3];
    let nodes: Vec<Server> = (1..=3).map(|id| spawn(dirs[id - 1].path(), id, first3, key.path())).collect();
    let l = leader(&nodes.iter().collect::<Vec<_>>());
    let at = &nodes[l - 1];
    const JOBS: usize = 120;
    for i in 0..JOBS {
        let r = at.post("/jobq/1/push", ADMIN, &format!(r#"{{"spider":"s{}","n":{i}}}"#, i % 5));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let snaps = |d: &std::path::Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("snap-"))
            .count()
    };
    assert!(snaps(dirs[l - 1].path()) >= 1, "the leader snapshotted");
    // Its log is purged behind the snapshot (openraft purges after the build).
    let deadline = Instant::now() + Duration::from_secs(20);
    while at.get("/cluster", ADMIN).json()["purged"].as_u64().unwrap_or(0) < 50 {
        assert!(Instant::now() < deadline, "the leader never purged: {}", at.get("/cluster", ADMIN).text());
        std::thread::sleep(Duration::from_millis(20));
    }

    // Node 4 starts knowing every member, and is added at the leader.
    let fourth = spawn(dirs[3].path(), 4, &addrs, key.path());
    let body = format!(r#"{{"add":{{"id":4,"addr":"{}"}}}}"#, addrs[3]);
    let r = at.post("/cluster/members", ADMIN, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let st = at.get("/cluster", ADMIN).json();
    assert_eq!(st["members"].as_array().unwrap().len(), 4, "{st}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = fourth.get("/jobq/1/count?state=pending", ADMIN);
        if r.status == 200 && r.text().trim() == JOBS.to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 counts {} {}", r.status, r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(generation(dirs[3].path()) > 1, "node 4 installed a snapshot (a new generation)");
    // It serves the same listing, and writes through it reach every node.
    let keys = |s: &Server| -> Vec<String> {
        let r = s.get("/jobq/1/list?state=pending&count=1000", ADMIN);
        r.lines().iter().map(|l| l["key"].as_str().unwrap().to_string()).collect()
    };
    let want = keys(at);
    assert_eq!(want.len(), JOBS);
    assert!(keys(&fourth) == want, "node 4 lists other jobs");
    let r = fourth.post("/jobq/1/push", ADMIN, r#"{"spider":"via-four"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for s in nodes.iter().chain([&fourth]) {
        let r = s.get("/jobq/1/count?state=pending", ADMIN);
        assert_eq!(r.text().trim(), (JOBS + 1).to_string());
    }
}

/// Out-of-range or cluster-unsafe flags are refused at start, before anything
/// is served or written: `--snapshot-every 0`, and `--retain-deleted` on a node.
#[test]
fn a_node_refuses_bad_snapshot_and_retention_flags() {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "a-cluster-key-of-some-length\n").unwrap();
    let dir = harness::tempdir();
    let addr = free_ports(1).remove(0);
    let peer = format!("1={addr}");
    let base = ["serve", "--listen", &addr, "--api-key", "admin", "--node-id", "1", "--peer", &peer];
    for (extra, needle) in [
        (&["--snapshot-every", "0"][..], "--snapshot-every"),
        (&["--snapshot-every=-5"][..], "--snapshot-every"),
        (&["--retain-deleted", "30d"][..], "--retain-deleted"),
    ] {
        let out = std::process::Command::new(harness::BIN)
            .args(base)
            .args(["--cluster-key-file", key.path().to_str().unwrap(), "--data"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{extra:?}: {err}");
        assert!(!dir.path().join("RAFT").exists(), "{extra:?}: nothing is written");
    }
}

/// A store a single node wrote holds jobs in no Raft entry: no other node would
/// ever get them, so it never becomes a cluster node; it stays a single node's.
#[test]
fn a_single_nodes_store_with_jobs_is_refused_as_a_cluster_node() {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "a-cluster-key-of-some-length\n").unwrap();
    let dir = harness::tempdir();
    let single = Server::start(dir.path(), &["--api-key", "admin"]);
    assert_eq!(single.post("/jobq/1/push", "admin:", "{\"spider\":\"s\"}").status, 200);
    let (status, _) = single.stop();
    assert!(status.success());
    let addrs = free_ports(2);
    let out = std::process::Command::new(harness::BIN)
        .args(["serve", "--listen", &addrs[0], "--api-key", "admin", "--node-id", "1"])
        .args(["--peer", &format!("1={}", addrs[0]), "--peer", &format!("2={}", addrs[1])])
        .args(["--cluster-key-file", key.path().to_str().unwrap(), "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("written by a single node"), "{err}");
    assert!(!dir.path().join("RAFT").exists(), "nothing marks it a node's");
    let single = Server::start(dir.path(), &["--api-key", "admin"]);
    assert_eq!(single.get("/jobq/1/count?state=pending", "admin:").text(), "1\n");
}
