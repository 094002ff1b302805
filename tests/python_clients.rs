//! The real Scrapinghub Python clients against the real `jobq serve`:
//! `tests/python/test_clients.py`. The client comes from the system's Python when
//! it has it, else from a virtual environment the test makes under the target
//! directory (tests/pyenv). JOBQ_SKIP_PYTHON=1 skips it.

#[path = "harness/mod.rs"]
mod harness;
#[path = "pyenv/mod.rs"]
mod pyenv;

use std::process::Command;

use harness::{tempdir, Server};

#[test]
fn real_scrapinghub_clients() {
    if std::env::var("JOBQ_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("JOBQ_SKIP_PYTHON=1: the Python client checks are skipped");
        return;
    }
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--api-key", "tester=PYKEY"]);
    run_checks(&server);
}

/// The same checks against a follower of a three-node cluster (issue 14): its
/// writes are forwarded to the leader, its reads linearizable.
#[test]
fn real_scrapinghub_clients_at_a_follower() {
    if std::env::var("JOBQ_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("JOBQ_SKIP_PYTHON=1: the Python client checks are skipped");
        return;
    }
    let dirs: Vec<_> = (0..3).map(|_| tempdir()).collect();
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "a-cluster-key-for-the-python-checks\n").unwrap();
    let addrs = harness::free_ports(3);
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let mut args = vec!["--api-key", "tester=PYKEY", "--node-id", &id, "--election-ms", "300"];
            args.extend(["--cluster-key-file", key.path().to_str().unwrap()]);
            for p in &peers {
                args.extend(["--peer", p.as_str()]);
            }
            Server::start_at(dirs[i].path(), &addrs[i], &args)
        })
        .collect();
    // Node 1 forms the cluster and leads it at first; node 2 is then a follower.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let leader = loop {
        let r = nodes[1].get("/cluster", "PYKEY:");
        if let Some(l) = r.json()["leader"].as_u64() {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no leader");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let follower = if leader == 2 { &nodes[2] } else { &nodes[1] };
    run_checks(follower);
}

fn run_checks(server: &Server) {
    let python = pyenv::python_with(&["scrapinghub"], &[pyenv::SCRAPINGHUB]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/test_clients.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(format!("http://{}/", server.addr))
        .arg("PYKEY")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the Python checks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "Python client checks failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
