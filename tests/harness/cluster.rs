//! `jobq serve --node-id` processes on loopback forming one cluster (issue 14):
//! start, kill -9, restart, the leader they agree on, and waiting until every
//! live node has applied everything the leader holds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::Server;

/// The admin API key, as `user:password`.
pub const ADMIN: &str = "admin:";
pub const KEY: &str = "a-cluster-key-of-some-length";
/// Short timeouts: elections in well under a second.
pub const ELECTION_MS: &str = "300";

pub struct Cluster {
    pub dirs: Vec<tempfile::TempDir>,
    pub key_file: tempfile::NamedTempFile,
    pub addrs: Vec<String>,
    pub nodes: Vec<Option<Server>>,
}

pub use super::free_ports;

impl Cluster {
    /// `n` nodes, each started with `extra` flags besides the cluster's own.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let key_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key_file.path(), format!("{KEY}\n")).unwrap();
        let mut c = Cluster {
            dirs: (0..n).map(|_| super::tempdir()).collect(),
            key_file,
            addrs: free_ports(n),
            nodes: Vec::new(),
        };
        for i in 0..n {
            let s = c.spawn(i, extra);
            c.nodes.push(Some(s));
        }
        c
    }

    pub fn spawn(&self, i: usize, extra: &[&str]) -> Server {
        let id = (i + 1).to_string();
        let mut args = vec!["--api-key", "admin", "--node-id", &id, "--election-ms", ELECTION_MS];
        let peers: Vec<String> = self.addrs.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
        for p in &peers {
            args.extend(["--peer", p]);
        }
        let key = self.key_file.path().to_str().unwrap();
        args.extend(["--cluster-key-file", key]);
        args.extend(extra);
        Server::start_at(self.dirs[i].path(), &self.addrs[i], &args)
    }

    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("running")
    }

    pub fn live(&self) -> impl Iterator<Item = (usize, &Server)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|s| (i, s)))
    }

    /// `GET /cluster` at node `i`.
    pub fn status(&self, i: usize) -> serde_json::Value {
        let r = self.node(i).get("/cluster", ADMIN);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// The leader every live node names (index into `nodes`), within `limit`.
    pub fn agreed_leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let named: BTreeSet<Option<u64>> = self.live().map(|(i, _)| self.status(i)["leader"].as_u64()).collect();
            if let [Some(l)] = named.iter().copied().collect::<Vec<_>>()[..] {
                let i = l as usize - 1;
                if self.nodes[i].is_some() {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within {limit:?}: {named:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (within `limit`) until the live nodes agree on a leader and each has
    /// applied the leader's last log index; that index.
    pub fn caught_up(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let leader = self.agreed_leader(deadline.saturating_duration_since(Instant::now()));
            let st = self.status(leader);
            let last = st["last_log_index"].as_u64().unwrap_or(0);
            let applied: Vec<(usize, Option<u64>)> =
                self.live().map(|(i, _)| (i + 1, self.status(i)["applied"].as_u64())).collect();
            if st["state"] == "Leader" && applied.iter().all(|(_, a)| *a == Some(last)) {
                return last;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = applied
                    .iter()
                    .filter(|(_, a)| *a != Some(last))
                    .map(|(id, _)| format!("node {id}'s log ends:\n{}", tail(&self.node(id - 1).log(), 40)))
                    .collect();
                self.keep_evidence();
                panic!(
                    "not caught up within {limit:?}: the leader (node {}) has {last}, applied {applied:?}\n{}\nthe leader's log ends:\n{}",
                    leader + 1,
                    logs.join("\n"),
                    tail(&self.node(leader).log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// With `JOBQ_KEEP_LOGS=DIR`: every live node's log and every data
    /// directory copied to DIR (a failure's evidence; temp dirs go on drop).
    pub fn keep_evidence(&self) {
        let Ok(keep) = std::env::var("JOBQ_KEEP_LOGS") else { return };
        let _ = std::fs::create_dir_all(&keep);
        for (i, d) in self.dirs.iter().enumerate() {
            let to = std::path::Path::new(&keep).join(format!("node-{}", i + 1));
            let _ = std::process::Command::new("cp").arg("-a").arg(d.path()).arg(&to).status();
            if let Some(s) = &self.nodes[i] {
                let _ = std::fs::write(to.with_extension("log"), s.log());
            }
        }
        eprintln!("logs and data directories kept in {keep}");
    }

    pub fn kill(&mut self, i: usize) {
        let s = self.nodes[i].take().expect("running");
        super::signal(s.pid(), "KILL");
        drop(s);
    }
}

/// The last `n` lines of `log`.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `jobq check --data DIR`: `Ok` when clean, else its report.
pub fn check(dir: &std::path::Path) -> Result<(), String> {
    let out = std::process::Command::new(super::bin()).arg("check").arg("--data").arg(dir).output().unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))),
    }
}
