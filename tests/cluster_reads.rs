//! Linearizable reads under concurrency, three `jobq serve --node-id` on
//! loopback (issue 14): readers at a follower and at the leader, while writers
//! push, each see every push acknowledged before they began; with
//! `--no-read-lease` the read indexes are shared (src/server/raft/batch.rs):
//! fewer `/_raft/read-index` round trips than reads at the follower, fewer
//! heartbeat rounds than read indexes asked of the leader (`jobq_read_index_*`
//! on `/metrics`); with the leader's lease (the default) the leader answers
//! them without a heartbeat round. A leader stopped past its lease while the
//! others elect another and take a write answers a read it held with that
//! write, or refuses it (a resumed node mostly hears of the new term first:
//! the lease's arithmetic is checked by src/server/raft/mod.rs's unit test).
#![cfg(feature = "cluster")]

mod harness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::Server;

const ADMIN: &str = "admin:";

struct Three {
    _dirs: Vec<tempfile::TempDir>,
    _key: tempfile::NamedTempFile,
    nodes: Vec<Server>,
}

fn three(extra: &[&str]) -> Three {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "a-cluster-key-of-some-length\n").unwrap();
    let dirs: Vec<_> = (0..3).map(|_| harness::tempdir()).collect();
    let addrs = harness::free_ports(3);
    let peers: Vec<String> = addrs.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
    let nodes = (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let mut args = vec!["--api-key", "admin", "--node-id", &id];
            if !extra.contains(&"--election-ms") {
                args.extend(["--election-ms", "300"]);
            }
            for p in &peers {
                args.extend(["--peer", p]);
            }
            args.extend(["--cluster-key-file", key.path().to_str().unwrap()]);
            args.extend(extra);
            Server::start_at(dirs[i].path(), &addrs[i], &args)
        })
        .collect();
    Three { _dirs: dirs, _key: key, nodes }
}

/// The leader every node names (an index into `nodes`).
fn agreed_leader(nodes: &[Server]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let named: Vec<Option<u64>> =
            nodes.iter().map(|s| s.get("/cluster", ADMIN).json()["leader"].as_u64()).collect();
        if let Some(l) = named[0].filter(|_| named.iter().all(|n| *n == named[0])) {
            return l as usize - 1;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {named:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/metrics`' samples by series (`name{labels}`).
fn metrics(s: &Server) -> BTreeMap<String, f64> {
    let r = s.get("/metrics", ADMIN);
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
        .collect()
}

/// Writers at the leader and at the other follower, eight readers at
/// `follower` and two at `leader` for three seconds; every read checked.
/// Returns (pushes acknowledged, reads at the follower, reads at the leader).
fn reads_under_writes(c: &Three, leader: usize, follower: usize) -> (u64, u64, u64) {
    let other = 3 - leader - follower;
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let refused = AtomicU64::new(0);
    let reads = [AtomicU64::new(0), AtomicU64::new(0)];
    let started = Instant::now();
    std::thread::scope(|s| {
        // Writers at the leader and at the other follower (forwarded): a push
        // counts once its 200 is in.
        for w in 0..4 {
            let node = &c.nodes[if w % 2 == 0 { leader } else { other }];
            let (acked, stop, refused) = (&acked, &stop, &refused);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let r = node.post("/jobq/1/push", ADMIN, &format!("{{\"spider\":\"w{w}\"}}"));
                    match r.status {
                        200 => acked.fetch_add(1, Ordering::SeqCst),
                        // Refused under load (in doubt when forwarded): never counted.
                        503 => refused.fetch_add(1, Ordering::SeqCst),
                        s => panic!("push answered {s}: {}", r.text()),
                    };
                }
            });
        }
        // Readers: eight at the follower, two at the leader. Each read's count
        // covers every push acknowledged before the read was sent.
        for r in 0..10 {
            let (at, n) = if r < 8 { (follower, &reads[0]) } else { (leader, &reads[1]) };
            let node = &c.nodes[at];
            let (acked, stop, refused) = (&acked, &stop, &refused);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let before = acked.load(Ordering::SeqCst);
                    let resp = node.get("/jobq/1/count?state=pending", ADMIN);
                    if resp.status == 503 {
                        // No read index in time on a loaded machine: refused, never stale.
                        refused.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    let seen: u64 = resp.text().trim().parse().unwrap();
                    assert!(
                        seen >= before,
                        "node {}: a read saw {seen} jobs, {before} pushes were acknowledged before it",
                        at + 1
                    );
                    n.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        while started.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let (acked, at_follower, at_leader) =
        (acked.into_inner(), reads[0].load(Ordering::SeqCst), reads[1].load(Ordering::SeqCst));
    let refused = refused.into_inner();
    eprintln!(
        "{acked} pushes acknowledged; {at_follower} reads at the follower, {at_leader} at the leader; {refused} refused"
    );
    assert!(acked >= 20 && at_follower >= 40 && at_leader >= 5, "too little load to show anything");
    assert!(refused * 20 < acked + at_follower + at_leader, "{refused} refused: the cluster was not serving");
    (acked, at_follower, at_leader)
}

fn sample(m: &BTreeMap<String, f64>, series: &str) -> u64 {
    m.get(series).copied().unwrap_or_else(|| panic!("no {series}")) as u64
}

#[test]
fn concurrent_linearizable_reads_see_every_earlier_acknowledgement_and_share_read_indexes() {
    let c = three(&["--no-read-lease"]);
    let leader = agreed_leader(&c.nodes);
    let follower = (leader + 1) % 3;
    let (_, at_follower, at_leader) = reads_under_writes(&c, leader, follower);

    // Sharing: at the follower, reads against /_raft/read-index requests; at the
    // leader, read indexes asked (its reads and the followers' requests)
    // against heartbeat rounds.
    let f = metrics(&c.nodes[follower]);
    let l = metrics(&c.nodes[leader]);
    let (f_waits, f_rounds) = (
        sample(&f, "jobq_read_index_waits_total{role=\"follower\"}"),
        sample(&f, "jobq_read_index_rounds_total{role=\"follower\"}"),
    );
    let (l_waits, l_rounds) = (
        sample(&l, "jobq_read_index_waits_total{role=\"leader\"}"),
        sample(&l, "jobq_read_index_rounds_total{role=\"leader\"}"),
    );
    eprintln!("follower: {f_waits} reads, {f_rounds} read-index requests; leader: {l_waits} asked, {l_rounds} heartbeat rounds");
    assert!(f_waits >= at_follower, "{f_waits} < {at_follower}");
    assert!(f_rounds < f_waits, "the follower's reads did not share read-index requests");
    assert!(l_waits >= at_leader + f_rounds, "every follower request and leader read asks the leader");
    assert!(l_rounds < l_waits, "the leader's read indexes did not share heartbeat rounds");
    assert_eq!(sample(&l, "jobq_read_index_rounds_total{role=\"follower\"}"), 0);
}

#[test]
fn the_leader_lease_answers_read_indexes_without_heartbeat_rounds() {
    let c = three(&[]);
    let leader = agreed_leader(&c.nodes);
    let follower = (leader + 1) % 3;
    let (_, at_follower, at_leader) = reads_under_writes(&c, leader, follower);
    let l = metrics(&c.nodes[leader]);
    let f = metrics(&c.nodes[follower]);
    let lease = sample(&l, "jobq_read_index_lease_total");
    let waits = sample(&l, "jobq_read_index_waits_total{role=\"leader\"}");
    let asked = sample(&f, "jobq_read_index_rounds_total{role=\"follower\"}");
    eprintln!(
        "leader: {lease} read indexes from the lease, {waits} by heartbeat rounds; {at_follower} reads at the follower"
    );
    assert_eq!(lease + waits, at_leader + asked, "every read at the leader and request from the follower");
    assert!(lease > waits, "the lease answered too few");
}

/// A leader stopped (SIGSTOP) past its lease while the two others elect
/// another and acknowledge a write: a read it holds when it resumes is
/// answered with that write, or refused; never from its old lease.
#[test]
fn a_leader_stopped_past_its_lease_does_not_answer_from_it() {
    use std::io::Write;
    let c = three(&[]);
    let old = agreed_leader(&c.nodes);
    let r = c.nodes[old].post("/jobq/1/push", ADMIN, "{\"spider\":\"before\"}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.nodes[old].get("/jobq/1/count?state=pending", ADMIN).text(), "1\n");
    // A connection to the leader open before it stops, for the read.
    let mut conn = std::net::TcpStream::connect(&c.nodes[old].addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    harness::signal(c.nodes[old].pid(), "STOP");
    let stopped = Instant::now();
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    // A write forwarded to the stopped leader is answered once another leads
    // (in doubt: it may have been committed), not after the forward's timeout.
    let follower = c.nodes[others[0]].addr.clone();
    let forwarded = std::thread::spawn(move || {
        let r = harness::request(&follower, "POST", "/jobq/1/push", Some(ADMIN), b"{\"spider\":\"forwarded\"}");
        (r, stopped.elapsed())
    });
    // The two others elect another; the write goes to the new one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let named: Vec<Option<u64>> =
            others.iter().map(|i| c.nodes[*i].get("/cluster", ADMIN).json()["leader"].as_u64()).collect();
        if let Some(l) = named[0].filter(|l| named[1] == Some(*l) && *l as usize - 1 != old) {
            let r = c.nodes[l as usize - 1].post("/jobq/1/push", ADMIN, "{\"spider\":\"after\"}");
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 503, "{}", r.text());
        }
        assert!(Instant::now() < deadline, "no new leader took a write: {named:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("a new leader took a write {:?} after the old one stopped", stopped.elapsed());
    let (r, took) = forwarded.join().unwrap();
    eprintln!("the write forwarded to the stopped leader: {} after {took:?}: {}", r.status, r.text().trim());
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(took < Duration::from_secs(15), "a forwarded write waited {took:?} for a stopped leader");
    let req = format!(
        "GET /jobq/1/count?state=pending HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        harness::basic(ADMIN)
    );
    conn.write_all(req.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    harness::signal(c.nodes[old].pid(), "CONT");
    let r = harness::read_one_response(&mut conn).expect("an answer");
    eprintln!("the old leader answered {}: {}", r.status, r.text().trim());
    match r.status {
        200 => assert_eq!(r.text(), "2\n", "a read at the resumed old leader missed an acknowledged write"),
        503 => {}
        s => panic!("answered {s}: {}", r.text()),
    }
    // Once it follows the new leader, it reads the write.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.nodes[old].get("/jobq/1/count?state=pending", ADMIN);
        if r.status == 200 {
            assert_eq!(r.text(), "2\n");
            break;
        }
        assert!(Instant::now() < deadline, "the old leader never answered: {}", r.text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node just started forgot when it last heard from a leader, whose lease
/// may count on it: for openraft's lease (1.5 election timeouts) it grants no
/// vote (and does not campaign).
#[test]
fn a_node_just_started_grants_no_vote() {
    let c = three(&["--election-ms", "10000"]);
    let signature = harness::cluster_signature(b"a-cluster-key-of-some-length", "/_raft/vote", b"{}");
    for s in &c.nodes {
        let req = format!(
            "POST /_raft/vote HTTP/1.1\r\nHost: x\r\nAuthorization: {signature}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let r = harness::raw(&s.addr, req.as_bytes());
        r.assert_error(503, "grants no vote yet");
    }
}

/// A job's token from a startjob the leader acknowledged works at once at a
/// follower (whose store may not have applied it yet: it waits for the read
/// index before refusing).
#[test]
fn a_job_token_works_at_a_follower_right_after_the_startjob() {
    let c = three(&[]);
    let leader = agreed_leader(&c.nodes);
    let follower = &c.nodes[(leader + 1) % 3];
    for i in 0..30 {
        let r = c.nodes[leader].post("/jobq/1/push", ADMIN, &format!("{{\"spider\":\"s{i}\"}}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let r = c.nodes[leader].post("/jobq/1/startjob", ADMIN, "");
        assert_eq!(r.status, 200, "{}", r.text());
        let started = r.json();
        let (key, token) = (started["key"].as_str().unwrap(), started["auth"].as_str().unwrap());
        let r = follower.get(&format!("/jobs/{key}"), &format!("{key}:{token}"));
        assert_eq!(r.status, 200, "round {i}: {}", r.text());
    }
}
