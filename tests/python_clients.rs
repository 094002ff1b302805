//! The real Scrapinghub Python clients against the real `jobq serve`:
//! `tests/python/test_clients.py` (needs `pip install scrapinghub`; set
//! JOBQ_SKIP_PYTHON=1 to skip on a machine without it).

#[path = "harness/mod.rs"]
mod harness;

use std::process::Command;

use harness::{tempdir, Server};

#[test]
fn real_scrapinghub_clients() {
    if std::env::var("JOBQ_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("JOBQ_SKIP_PYTHON=1: the Python client checks are skipped");
        return;
    }
    let python = std::env::var("JOBQ_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python).args(["-c", "import scrapinghub"]).output().unwrap_or_else(|e| {
        panic!("cannot run {python} ({e}): install Python 3 and `pip install scrapinghub`, or set JOBQ_SKIP_PYTHON=1")
    });
    assert!(
        probe.status.success(),
        "the scrapinghub package is missing: pip install scrapinghub (or set JOBQ_SKIP_PYTHON=1 to skip)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--api-key", "tester=PYKEY"]);
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
