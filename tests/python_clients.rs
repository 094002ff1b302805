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
    let python = pyenv::python_with(&["scrapinghub"], &[pyenv::SCRAPINGHUB]);
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
