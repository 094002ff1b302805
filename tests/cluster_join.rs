//! A node added to a running cluster whose log was purged behind a snapshot
//! (issue 14): `POST /cluster/members` makes it a learner, it receives the
//! leader's snapshot over `/_raft/snapshot`, installs it as a new generation,
//! catches up from the log and becomes a voter that serves the same jobs.
#![cfg(feature = "cluster")]

mod harness;

use std::time::{Duration, Instant};

use harness::{free_ports, Server};

const ADMIN: &str = "admin:";

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

const CLUSTER_KEY: &str = "a-cluster-key-of-some-length";

fn key_file() -> tempfile::NamedTempFile {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), format!("{CLUSTER_KEY}\n")).unwrap();
    key
}

/// A store in `dir` that a single node wrote: each body pushed to project 1, then
/// `startjob` `started` times; the server stopped cleanly.
fn single_node_store(dir: &std::path::Path, bodies: &[String], started: usize) {
    let s = Server::start(dir, &["--api-key", "admin"]);
    for b in bodies {
        let r = s.post("/jobq/1/push", ADMIN, b);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for _ in 0..started {
        assert_eq!(s.post("/jobq/1/startjob", ADMIN, "").status, 200);
    }
    assert!(s.stop().0.success());
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
    let key = key_file();
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

/// Out-of-range snapshot flags are refused at start, before anything is served
/// or written.
#[test]
fn a_node_refuses_bad_snapshot_flags() {
    let key = key_file();
    let dir = harness::tempdir();
    let addr = free_ports(1).remove(0);
    let peer = format!("1={addr}");
    let base = ["serve", "--listen", &addr, "--api-key", "admin", "--node-id", "1", "--peer", &peer];
    for (extra, needle) in
        [(&["--snapshot-every", "0"][..], "--snapshot-every"), (&["--snapshot-every=-5"][..], "--snapshot-every")]
    {
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

/// A store a single node wrote holds jobs in no Raft entry: a node that does not
/// form the cluster (not the lowest id) never starts on it; it stays a single
/// node's.
#[test]
fn a_single_nodes_store_with_jobs_is_refused_as_a_joining_node() {
    let key = key_file();
    let dir = harness::tempdir();
    single_node_store(dir.path(), &[r#"{"spider":"s"}"#.to_string()], 0);
    let addrs = free_ports(2);
    let out = std::process::Command::new(harness::BIN)
        .args(["serve", "--listen", &addrs[1], "--api-key", "admin", "--node-id", "2"])
        .args(["--peer", &format!("1={}", addrs[0]), "--peer", &format!("2={}", addrs[1])])
        .args(["--cluster-key-file", key.path().to_str().unwrap(), "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("written by a single node"), "{err}");
    assert!(err.contains("only the node that forms the cluster"), "{err}");
    assert!(!dir.path().join("RAFT").exists(), "nothing marks it a node's");
    let single = Server::start(dir.path(), &["--api-key", "admin"]);
    assert_eq!(single.get("/jobq/1/count?state=pending", "admin:").text(), "1\n");
}

/// A single node's store seeds a new cluster: the node that forms it (the
/// lowest id) leads alone, snapshots and purges its log, adds the others as
/// learners (they install the snapshot) and makes them voters. Every node then
/// serves the single node's jobs, takes writes, restarts to them and checks clean.
#[test]
fn a_single_nodes_store_seeds_a_new_cluster() {
    let key = key_file();
    let dirs: Vec<_> = (0..3).map(|_| harness::tempdir()).collect();
    let addrs = free_ports(3);
    const JOBS: usize = 40;
    let bodies: Vec<String> =
        (0..JOBS).map(|i| format!(r#"{{"spider":"s{}","n":{i},"tags":["t{}"]}}"#, i % 3, i % 4)).collect();
    single_node_store(dirs[0].path(), &bodies, 1);
    let want = |s: &Server| -> Vec<String> {
        let r = s.get("/jobq/1/list?state=pending&state=running&count=1000", ADMIN);
        r.lines().iter().map(|l| format!("{} {}", l["key"], l["state"])).collect()
    };

    let mut nodes: Vec<Option<Server>> =
        (1..=3).map(|id| Some(spawn(dirs[id - 1].path(), id, &addrs, key.path()))).collect();
    let seeding = dirs[0].path().join("SEEDING");
    let mut saw_seeding = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = nodes[0].as_ref().unwrap().get("/cluster", ADMIN).json();
        let voters = st["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count());
        // The flag is cleared once the file's removal is durable.
        if voters == 3 && st["seeding"] == false {
            assert!(!seeding.exists(), "{st}");
            break;
        }
        if st["seeding"] == true {
            saw_seeding = true;
        }
        assert!(Instant::now() < deadline, "seeding did not finish: {st}\n{}", nodes[0].as_ref().unwrap().log());
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("GET /cluster said seeding while it was: {saw_seeding}");
    let expected = want(nodes[0].as_ref().unwrap());
    assert_eq!(expected.len(), JOBS, "{expected:?}");
    for n in nodes.iter().flatten() {
        assert_eq!(want(n), expected, "a node lists other jobs");
        assert_eq!(n.get("/jobq/1/count?state=running", ADMIN).text(), "1\n");
    }
    assert!(generation(dirs[1].path()) > 1, "node 2 installed the snapshot");
    let r = nodes[2].as_ref().unwrap().post("/jobq/1/push", ADMIN, r#"{"spider":"after"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for n in nodes.iter().flatten() {
        assert_eq!(n.get("/jobq/1/count?state=pending", ADMIN).text(), format!("{}\n", JOBS));
    }
    // Every node restarts to the same jobs; every directory checks clean.
    for n in nodes.iter_mut() {
        harness::signal(n.take().unwrap().pid(), "KILL");
    }
    for (i, d) in dirs.iter().enumerate() {
        assert!(harness::cluster::check(d.path()).is_ok(), "node {}: {:?}", i + 1, harness::cluster::check(d.path()));
    }
    // A stream a sender gave up on is removed at start.
    std::fs::write(dirs[1].path().join("snap-in.tmp"), vec![7u8; 100_000]).unwrap();
    let nodes: Vec<Server> = (1..=3).map(|id| spawn(dirs[id - 1].path(), id, &addrs, key.path())).collect();
    assert!(!dirs[1].path().join("snap-in.tmp").exists());
    let l = leader(&nodes.iter().collect::<Vec<_>>());
    let r = nodes[l - 1].post("/jobq/1/push", ADMIN, r#"{"spider":"restarted"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for n in &nodes {
        assert_eq!(n.get("/jobq/1/count?state=pending", ADMIN).text(), format!("{}\n", JOBS + 1));
    }
    assert!(!seeding.exists());
}

/// kill -9 of the forming node (and of a peer) at moments through the seeding:
/// a restart resumes it, and it ends with every node serving the seed's jobs.
#[test]
fn a_seeding_killed_at_any_moment_resumes_on_restart() {
    let key = key_file();
    let template = harness::tempdir();
    const JOBS: usize = 25;
    let bodies: Vec<String> = (0..JOBS).map(|i| format!(r#"{{"spider":"s{}"}}"#, i % 2)).collect();
    single_node_store(template.path(), &bodies, 0);
    for (round, delay_ms) in [0u64, 40, 120, 250, 500, 800].into_iter().enumerate() {
        let dirs: Vec<_> = (0..3).map(|_| harness::tempdir()).collect();
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", template.path().display()))
            .arg(dirs[0].path())
            .status()
            .unwrap();
        assert!(copied.success());
        let addrs = free_ports(3);
        let mut nodes: Vec<Server> = (1..=3).map(|id| spawn(dirs[id - 1].path(), id, &addrs, key.path())).collect();
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill_9(&nodes[0]);
        if round % 2 == 1 {
            kill_9(&nodes[1]);
            nodes[1] = spawn(dirs[1].path(), 2, &addrs, key.path());
        }
        nodes[0] = spawn(dirs[0].path(), 1, &addrs, key.path());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = nodes[0].get("/cluster", ADMIN).json();
            let voters = st["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count());
            if voters == 3 && !dirs[0].path().join("SEEDING").exists() {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: seeding did not finish: {st}\n{}", nodes[0].log());
            std::thread::sleep(Duration::from_millis(50));
        }
        for (i, n) in nodes.iter().enumerate() {
            let r = n.get("/jobq/1/count?state=pending", ADMIN);
            assert_eq!(r.text(), format!("{JOBS}\n"), "round {round} (kill after {delay_ms} ms), node {}", i + 1);
        }
    }
}

/// kill -9 `s` and wait until it is dead (its store's lock released), not reaped.
/// The leader thread shows Z as soon as it exited, while other threads (one in
/// an fdatasync, say) may still hold the open files and with them the lock: the
/// process is dead once its task list holds the leader alone.
fn kill_9(s: &Server) {
    harness::signal(s.pid(), "KILL");
    let stat = format!("/proc/{}/stat", s.pid());
    let tasks = format!("/proc/{}/task", s.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    // The state is the field after the command's closing parenthesis; Z: it exited.
    let zombie = || {
        std::fs::read_to_string(&stat)
            .map_or(true, |t| t.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
    };
    let threads = || std::fs::read_dir(&tasks).map_or(0, |d| d.count());
    while !(zombie() && threads() <= 1) {
        assert!(Instant::now() < deadline, "process {} did not die", s.pid());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A single node's store given to the lowest id once the cluster exists (its
/// disk replaced by a single node's): it would hold jobs no peer has, so the
/// node exits instead of joining.
#[test]
fn a_seed_is_refused_once_the_cluster_exists() {
    let key = key_file();
    let dirs: Vec<_> = (0..3).map(|_| harness::tempdir()).collect();
    let addrs = free_ports(3);
    let mut nodes: Vec<Server> = (1..=3).map(|id| spawn(dirs[id - 1].path(), id, &addrs, key.path())).collect();
    leader(&nodes.iter().collect::<Vec<_>>());
    harness::signal(nodes.remove(0).pid(), "KILL");
    let single = harness::tempdir();
    single_node_store(single.path(), &[r#"{"spider":"s"}"#.to_string()], 0);
    let peers: Vec<String> = addrs.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
    let mut cmd = std::process::Command::new(harness::BIN);
    cmd.args(["serve", "--listen", &addrs[0], "--api-key", "admin", "--node-id", "1", "--election-ms", "300"]);
    for p in &peers {
        cmd.args(["--peer", p]);
    }
    let out =
        cmd.args(["--cluster-key-file", key.path().to_str().unwrap(), "--data"]).arg(single.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a peer already holds a cluster"), "{err}");
    // The directory is a single node's again, its job there.
    assert!(!single.path().join("RAFT").exists() && !single.path().join("SEEDING").exists());
    let s = Server::start(single.path(), &["--api-key", "admin"]);
    assert_eq!(s.get("/jobq/1/count?state=pending", ADMIN).text(), "1\n");
    drop(s);
    // The two others still serve, without the stranger's job.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = nodes[0].get("/jobq/1/count?state=pending", ADMIN);
        if r.status == 200 {
            assert_eq!(r.text(), "0\n");
            break;
        }
        assert!(Instant::now() < deadline, "{} {}", r.status, r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// While the forming node waits for its peers before seeding, no other
/// cluster's entries, votes or snapshots reach its store.
#[test]
fn a_node_about_to_seed_takes_no_cluster_traffic() {
    let key = key_file();
    let dir = harness::tempdir();
    single_node_store(dir.path(), &[r#"{"spider":"s"}"#.to_string()], 0);
    // Node 2 never starts: node 1 waits for it, seeding, with no cluster yet.
    let addrs = free_ports(2);
    let node = spawn(dir.path(), 1, &addrs, key.path());
    assert_eq!(node.get("/cluster", ADMIN).json()["seeding"], true);
    for path in ["/_raft/vote", "/_raft/append", "/_raft/snapshot"] {
        let body = b"{}";
        let signature = harness::cluster_signature(CLUSTER_KEY.as_bytes(), path, body);
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {signature}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        harness::raw(&node.addr, req.as_bytes()).assert_error(503, "about to seed");
    }
}
