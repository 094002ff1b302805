//! Three `jobq serve --node-id` processes on loopback (issue 14): they form a
//! cluster and elect a leader, every node answers reads, `/_raft/*` refuses
//! requests without the cluster key's signature (API keys included), a
//! follower forwards writes to the leader and answers what it answered, and
//! after kill -9 of the leader the others elect a new one and keep answering.
#![cfg(feature = "cluster")]

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::cluster::{free_ports, Cluster, ADMIN, KEY};
use harness::BIN;

fn signed_post(addr: &str, path: &str, authorization: &str, body: &str) -> harness::Resp {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    harness::raw(addr, req.as_bytes())
}

#[test]
fn three_nodes_elect_read_refuse_strangers_forward_and_fail_over() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.agreed_leader(Duration::from_secs(20));
    let st = c.node(leader).get("/cluster", ADMIN).json();
    assert_eq!(st["state"], "Leader", "{st}");
    assert_eq!(st["members"].as_array().unwrap().len(), 3, "{st}");
    assert!(st["term"].as_u64().unwrap() >= 1);

    // A read at each node (linearizable: a read index from the leader first).
    for (_, s) in c.live() {
        let r = s.get("/jobq/1/count", ADMIN);
        assert_eq!((r.status, r.text()), (200, "0\n".to_string()));
    }

    // The cluster channel: no signature, an API key, a wrong signature: 401.
    let follower = (leader + 1) % 3;
    let addr = &c.node(follower).addr;
    let r = harness::request(addr, "POST", "/_raft/vote", None, b"{}");
    r.assert_error(401, "cluster key");
    let r = harness::request(addr, "POST", "/_raft/vote", Some(ADMIN), b"{}");
    r.assert_error(401, "cluster key");
    let r = signed_post(addr, "/_raft/vote", &format!("JobqCluster {} {}", "0".repeat(64), "1".repeat(64)), "{}");
    r.assert_error(401, "does not match");
    let r =
        signed_post(addr, "/_raft/append", &format!("JobqCluster {} {}", "ab".repeat(32), "cd".repeat(32)), "garbage");
    assert_eq!(r.status, 401);
    // A signature of another body: the head checks, the body does not.
    let good = sign("/_raft/vote", b"{}");
    let r = signed_post(addr, "/_raft/vote", &good, "[]");
    r.assert_error(401, "does not match");
    // A stranger's large body is refused from its head, before any of it is sent.
    let forged = format!("JobqCluster {} {}", "0".repeat(64), "1".repeat(64));
    let head = format!(
        "POST /_raft/append HTTP/1.1\r\nHost: x\r\nAuthorization: {forged}\r\nContent-Length: 200000000\r\n\r\n"
    );
    harness::raw(addr, head.as_bytes()).assert_error(401, "does not match");
    // No Content-Length (chunked): the signature cannot cover it.
    let chunked = format!(
        "POST /_raft/vote HTTP/1.1\r\nHost: x\r\nAuthorization: {good}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    assert_eq!(harness::raw(addr, chunked.as_bytes()).status, 411);
    // ... and the cluster scheme never works on the API.
    let r = signed_post(addr, "/jobq/1/push", &format!("JobqCluster {}", "0".repeat(64)), "{}");
    assert_eq!(r.status, 401, "{}", r.text());
    // /cluster needs an admin key.
    assert_eq!(harness::request(addr, "GET", "/cluster", None, b"").status, 401);

    // A write at a follower is the leader's to answer, unchanged.
    let at_leader = c.node(leader).post("/jobq/1/push", ADMIN, "not json");
    let at_follower = c.node(follower).post("/jobq/1/push", ADMIN, "not json");
    assert_eq!(at_leader.status, 400);
    assert_eq!((at_follower.status, at_follower.text()), (at_leader.status, at_leader.text()));
    assert!(c.node(follower).log_shows("jobq serving"));

    // Writes at every node (a follower's go to the leader); each one acknowledged
    // is then read back at every node (linearizable reads).
    let mut acked = Vec::new();
    for round in 0..4 {
        for (i, s) in c.live() {
            let r = s.post("/jobq/1/push", ADMIN, &format!("{{\"spider\":\"s{i}\",\"round\":{round}}}"));
            assert_eq!(r.status, 200, "push at node {}: {}", i + 1, r.text());
            acked.push(r.json()["key"].as_str().unwrap().to_string());
        }
    }
    for (_, s) in c.live() {
        assert_eq!(s.get("/jobq/1/count?state=pending", ADMIN).text(), format!("{}\n", acked.len()));
        for k in &acked {
            assert_eq!(s.get(&format!("/jobs/{k}"), ADMIN).status, 200, "{k}");
        }
    }

    // Read-your-writes across nodes: acknowledged at the leader, read at once
    // at a follower (fails with --read-consistency stale: the follower learns
    // the commit at the next heartbeat).
    for _ in 0..20 {
        let r = c.node(leader).post("/jobq/1/push", ADMIN, "{\"spider\":\"ryw\"}");
        let key = r.json()["key"].as_str().unwrap().to_string();
        assert_eq!(c.node(follower).get(&format!("/jobs/{key}"), ADMIN).status, 200, "{key}");
        acked.push(key);
    }

    // kill -9 of the leader: the two others elect another, and writes are
    // accepted again (here with short timeouts; the default's figure is in the README).
    let killed_at = Instant::now();
    c.kill(leader);
    let survivor = (leader + 1) % 3;
    let accepted = loop {
        let r = c.node(survivor).post("/jobq/1/push", ADMIN, "{\"spider\":\"after\"}");
        if r.status == 200 {
            acked.push(r.json()["key"].as_str().unwrap().to_string());
            break killed_at.elapsed();
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(killed_at.elapsed() < Duration::from_secs(20), "no write accepted after the kill");
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("writes accepted again {accepted:?} after the leader's kill");
    assert!(accepted < Duration::from_secs(3), "{accepted:?}");
    let next = c.agreed_leader(Duration::from_secs(20));
    assert_ne!(next, leader);
    let term = c.node(next).get("/cluster", ADMIN).json()["term"].as_u64().unwrap();
    assert!(term > st["term"].as_u64().unwrap());
    for (_, s) in c.live() {
        assert_eq!(s.get("/jobq/1/count?state=pending", ADMIN).text(), format!("{}\n", acked.len()));
    }

    // The killed node restarts from its log, rejoins as a follower, catches up.
    c.nodes[leader] = Some(c.spawn(leader, &[]));
    assert!(c.node(leader).log_shows("rejoining the cluster"), "{}", c.node(leader).log());
    let r = c.node(leader).post("/jobq/1/push", ADMIN, "{\"spider\":\"back\"}");
    assert_eq!(r.status, 200, "{}", r.text());
    acked.push(r.json()["key"].as_str().unwrap().to_string());
    for (_, s) in c.live() {
        assert_eq!(s.get("/jobq/1/count?state=pending", ADMIN).text(), format!("{}\n", acked.len()));
        for k in &acked {
            assert_eq!(s.get(&format!("/jobs/{k}"), ADMIN).status, 200, "{k}");
        }
    }
    assert_eq!(c.agreed_leader(Duration::from_secs(5)), next);
}

/// `--retain-deleted` on a cluster: only the leader purges, and its tombstones
/// reach every node as an entry, so all three drop the same jobs (and exactly
/// those: the purges counted over the nodes are the jobs deleted).
#[test]
fn deleted_jobs_expire_on_every_node_through_the_leader() {
    let c = Cluster::start(3, &["--retain-deleted", "1s", "--compact-every", "0.2"]);
    let leader = c.agreed_leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    let mut keys = Vec::new();
    for i in 0..6 {
        let r = c.node(follower).post("/jobq/1/push", ADMIN, &format!("{{\"spider\":\"s\",\"i\":{i}}}"));
        assert_eq!(r.status, 200, "{}", r.text());
        keys.push(r.json()["key"].as_str().unwrap().to_string());
    }
    let deletes: Vec<String> = keys[..3].iter().map(|k| format!("{{\"key\":\"{k}\",\"state\":\"deleted\"}}")).collect();
    let r = c.node(leader).post("/jobq/1/update", ADMIN, &deletes.join("\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    let count = |i: usize, state: &str| c.node(i).get(&format!("/jobq/1/count?state={state}"), ADMIN).text();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.live().any(|(i, _)| count(i, "deleted") != "0\n") {
        assert!(
            Instant::now() < deadline,
            "deleted jobs still counted: {:?}",
            c.live().map(|(i, _)| count(i, "deleted")).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut purged = 0.0;
    for (i, s) in c.live() {
        assert_eq!(count(i, "pending"), "3\n", "node {}", i + 1);
        for (n, k) in keys.iter().enumerate() {
            // An unknown job: an empty body (the spec).
            let r = s.get(&format!("/jobs/{k}"), ADMIN);
            assert_eq!((r.status, r.body.is_empty()), (200, n < 3), "{k} at node {}: {}", i + 1, r.text());
        }
        let m = s.get("/metrics", ADMIN).text();
        let line = m.lines().find(|l| l.starts_with("jobq_retention_purged_jobs_total ")).expect("the purge counter");
        purged += line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap();
    }
    assert_eq!(purged, 3.0, "each expired job purged once, by a leader");
}

#[test]
fn a_read_without_a_leader_is_refused_unless_stale() {
    // One node of three up: no leader can be elected.
    let c = Cluster::start(1, &[]);
    let mut alone = Cluster { addrs: free_ports(3), ..c };
    alone.nodes.clear();
    // A fresh directory: the one-node cluster above may have formed already.
    alone.dirs = vec![harness::tempdir()];
    let lin = alone.spawn(0, &[]);
    let r = lin.get("/jobq/1/count", ADMIN);
    r.assert_error(503, "linearizable read");
    assert!(r.header("retry-after").is_some());
    let w = lin.post("/jobq/1/push", ADMIN, "{\"spider\":\"s\"}");
    w.assert_error(503, "no leader");
    drop(lin);
    let stale = alone.spawn(0, &["--read-consistency", "stale"]);
    let r = stale.get("/jobq/1/count", ADMIN);
    assert_eq!((r.status, r.text()), (200, "0\n".to_string()));
}

#[test]
fn cluster_data_refuses_to_serve_alone() {
    let mut c = Cluster::start(3, &[]);
    c.agreed_leader(Duration::from_secs(20));
    for i in 0..3 {
        c.kill(i);
    }
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", "admin", "--data"])
        .arg(c.dirs[0].path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--node-id"), "{err}");
    assert!(Path::new(&c.dirs[0].path().join("RAFT")).exists());
    // Node 3's directory under node 1's id (a typo): refused, or it would lead
    // beside node 1 in the same term, and the logs would differ for good.
    let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--api-key", "admin", "--node-id", "1"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    for (j, a) in c.addrs.iter().enumerate() {
        args.extend(["--peer".to_string(), format!("{}={a}", j + 1)]);
    }
    args.extend(["--cluster-key-file".to_string(), c.key_file.path().to_string_lossy().into_owned()]);
    let out = std::process::Command::new(BIN).args(&args).arg("--data").arg(c.dirs[2].path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node 3's data directory, started as node 1"), "{err}");
}

#[test]
fn members_are_added_and_removed_at_run_time() {
    let catch_up = ["--member-catch-up", "5"];
    let mut c = Cluster::start(3, &catch_up);
    let leader = c.agreed_leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    let r = c.node(follower).post("/jobq/1/push", ADMIN, "{\"spider\":\"s\"}");
    assert_eq!(r.status, 200, "{}", r.text());
    // A fourth node, started empty: it waits to be contacted.
    c.addrs.push(free_ports(1).remove(0));
    c.dirs.push(harness::tempdir());
    c.nodes.push(Some(c.spawn(3, &catch_up)));
    assert!(c.node(3).log_shows("waiting for the lowest node id"));
    // Asked at a follower: the leader adds it as a learner, then as a voter.
    let add = format!("{{\"add\":{{\"id\":4,\"addr\":\"{}\"}}}}", c.addrs[3]);
    let r = c.node(follower).post("/cluster/members", ADMIN, &add);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["voters"], serde_json::json!([1, 2, 3, 4]));
    // It holds what was written before it came, and reads there are linearizable.
    let r = c.node(3).get("/jobq/1/count?state=pending", ADMIN);
    assert_eq!((r.status, r.text()), (200, "1\n".to_string()));
    assert_eq!(c.agreed_leader(Duration::from_secs(5)), leader);
    // Bad changes are refused; removing it leaves three voters.
    for bad in [
        "{}",
        "{\"remove\":9}",
        "{\"add\":{\"id\":0,\"addr\":\"\"}}",
        "{\"add\":{\"id\":5,\"addr\":\"not an addr\"}}",
        "not json",
        "{\"remove\":1,\"x\":2}",
    ] {
        assert_eq!(c.node(leader).post("/cluster/members", ADMIN, bad).status, 400, "{bad}");
    }
    // Another member's address: that process would count twice toward a quorum.
    let r = c.node(leader).post(
        "/cluster/members",
        ADMIN,
        &format!("{{\"add\":{{\"id\":6,\"addr\":\"{}\"}}}}", c.addrs[leader]),
    );
    r.assert_error(400, "address");
    // A Raft request meant for another node is refused by the one that got it.
    let body = "{}";
    let req = format!(
        "POST /_raft/vote HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nX-Jobq-To-Node: 9\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        sign("/_raft/vote", body.as_bytes()),
        body.len()
    );
    harness::raw(&c.node(follower).addr, req.as_bytes()).assert_error(421, "meant for node 9");
    let garbled = req.replace("X-Jobq-To-Node: 9", "X-Jobq-To-Node: nine");
    harness::raw(&c.node(follower).addr, garbled.as_bytes()).assert_error(421, "does not parse");
    // A node nothing answers at is not made a voter (openraft alone counted it
    // caught up at once): refused after --member-catch-up, and taken out again.
    let nobody = free_ports(1).remove(0);
    let started = Instant::now();
    let r = c.node(leader).post("/cluster/members", ADMIN, &format!("{{\"add\":{{\"id\":5,\"addr\":\"{nobody}\"}}}}"));
    r.assert_error(503, "did not catch up");
    assert!(started.elapsed() >= Duration::from_secs(5), "{:?}", started.elapsed());
    let members = c.status(leader)["members"].clone();
    assert!(members.as_array().unwrap().iter().all(|m| m["id"] != 5), "{members}");
    assert_eq!(c.node(follower).post("/jobq/1/push", ADMIN, "{\"spider\":\"s\"}").status, 200);
    let r = c.node(leader).post("/cluster/members", ADMIN, "{\"remove\":4}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["voters"], serde_json::json!([1, 2, 3]));
    // Only an admin key may change members.
    assert_eq!(harness::request(&c.node(leader).addr, "POST", "/cluster/members", None, b"{}").status, 401);
}

fn sign(path: &str, body: &[u8]) -> String {
    harness::cluster_signature(KEY.as_bytes(), path, body)
}

#[test]
fn hostile_cluster_requests_are_refused_not_fatal() {
    let c = Cluster::start(3, &[]);
    let leader = c.agreed_leader(Duration::from_secs(20));
    let addr = c.node(leader).addr.clone();
    let bodies: [&[u8]; 6] =
        [b"", b"null", b"{\"vote\":1}", b"\xff\xfe", b"[[[[[[[[[[[[[[[[[[[[", b"\x10\0\0\0{\"method\":\"POST\"}"];
    for path in ["/_raft/append", "/_raft/vote", "/_raft/snapshot", "/_raft/forward"] {
        for body in bodies {
            let req = [
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    sign(path, body),
                    body.len()
                )
                .as_bytes(),
                body,
            ]
            .concat();
            let r = harness::raw(&addr, &req);
            assert_eq!(r.status, 400, "{path} {body:?}: {}", r.text());
        }
    }
    // A forwarded request naming a scope that does not parse, and an unknown path.
    let body = b"\x31\0\0\0{\"method\":\"POST\",\"path\":\"/jobq/1/push\",\"query\":\"\"}";
    let r = signed_post(&addr, "/_raft/forward", &sign("/_raft/forward", body), std::str::from_utf8(body).unwrap());
    assert_eq!(r.status, 400, "{}", r.text());
    let r = signed_post(&addr, "/_raft/nothing", &sign("/_raft/nothing", b"{}"), "{}");
    assert_eq!(r.status, 404, "{}", r.text());
    // A body over the limit is refused before it is read.
    let req = format!(
        "POST /_raft/vote HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 100000000\r\n\r\n",
        sign("/_raft/vote", b"")
    );
    assert_eq!(harness::raw(&addr, req.as_bytes()).status, 413);
    // A signed read index at the leader works; the cluster still answers.
    let r = signed_post(&addr, "/_raft/read-index", &sign("/_raft/read-index", b""), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.agreed_leader(Duration::from_secs(5)), leader);
    for (_, s) in c.live() {
        assert_eq!(s.get("/jobq/1/count", ADMIN).status, 200);
    }
    // SIGTERM: each node stops Raft, closes its store and exits 0.
    let mut c = c;
    for i in 0..3 {
        let (status, log) = c.nodes[i].take().unwrap().stop();
        assert!(status.success() && log.contains("store closed"), "{status:?}\n{log}");
    }
}

/// Kill -9 of the leader, round after round, under four writers pushing at
/// every node: every acknowledged push is then on every live node, and each
/// data directory passes `jobq check` at the end.
#[test]
fn acknowledged_pushes_survive_leader_kills() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const ROUNDS: usize = 3;
    let mut c = Cluster::start(3, &[]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..ROUNDS {
        let leader = c.agreed_leader(Duration::from_secs(20));
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<String> = c.addrs.clone();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (stop, acked, addrs) = (stop.clone(), acked.clone(), addrs.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let addr = &addrs[(w + n) % addrs.len()];
                        let body = format!("{{\"spider\":\"w{w}\",\"round\":{round},\"n\":{n}}}");
                        match harness::try_post(addr, "/jobq/7/push", ADMIN, &body) {
                            Some(r) if r.status == 200 => {
                                acked.lock().unwrap().push(r.json()["key"].as_str().unwrap().to_string())
                            }
                            // Refused (503: no leader, in doubt) or cut off by the kill: not acknowledged.
                            _ => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        c.kill(leader);
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        c.nodes[leader] = Some(c.spawn(leader, &[]));
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} pushes acknowledged over {ROUNDS} leader kills", acked.len());
    assert!(acked.len() > 20, "only {} pushes acknowledged", acked.len());
    let distinct: BTreeSet<&String> = acked.iter().collect();
    assert_eq!(distinct.len(), acked.len(), "a key acknowledged twice");
    c.agreed_leader(Duration::from_secs(20));
    for (i, s) in c.live() {
        let n: usize = s.get("/jobq/7/count?state=pending", ADMIN).text().trim().parse().unwrap();
        assert!(n >= acked.len(), "node {}: {n} jobs, {} acknowledged", i + 1, acked.len());
        for k in &acked {
            assert_eq!(s.get(&format!("/jobs/{k}"), ADMIN).status, 200, "node {}: {k}", i + 1);
        }
    }
    for i in 0..3 {
        let (status, log) = c.nodes[i].take().unwrap().stop();
        assert!(status.success(), "{log}");
        harness::cluster::check(c.dirs[i].path()).unwrap_or_else(|e| panic!("node {}: {e}", i + 1));
    }
}
