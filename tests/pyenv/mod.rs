//! A Python interpreter that has the packages the tests need, on a fresh machine
//! too: the system `python3` when it imports them, else a virtual environment
//! under the target directory (made once, shared by every test binary, with the
//! pinned versions installed from the package index). Only when neither works
//! (no Python, no `venv` module, no package index) does a test fail, saying how
//! to fix it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The pinned client the real-client tests run (what `jobq` is checked against).
pub const SCRAPINGHUB: &str = "scrapinghub==2.9.0";

/// The pinned zstd binding the spec reader decodes packed documents with (format 7).
pub const ZSTANDARD: &str = "zstandard==0.23.0";

/// The pinned Prometheus client whose parser checks `/metrics`.
pub const PROMETHEUS_CLIENT: &str = "prometheus-client==0.21.1";

fn imports(python: &Path, modules: &[&str]) -> bool {
    let code = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    Command::new(python).args(["-c", &code]).output().is_ok_and(|o| o.status.success())
}

/// A Python that imports every one of `modules`, installing `packages` (pip
/// requirement specs) into the shared virtual environment when needed.
pub fn python_with(modules: &[&str], packages: &[&str]) -> PathBuf {
    let system = PathBuf::from(std::env::var("JOBQ_PYTHON").unwrap_or_else(|_| "python3".into()));
    if imports(&system, modules) {
        return system;
    }
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jobq-pyenv");
    let python = root.join("bin").join("python3");
    let lock = root.with_extension("lock");
    let _guard = DirLock::take(&lock);
    if !imports(&python, modules) {
        if !python.exists() {
            run(&system, &["-m", "venv", &root.to_string_lossy()], "create a virtual environment");
        }
        let mut args = vec!["-m", "pip", "install", "--quiet", "--disable-pip-version-check"];
        args.extend_from_slice(packages);
        run(&python, &args, "install the test's Python packages");
        assert!(imports(&python, modules), "{} still cannot import {modules:?}", python.display());
    }
    python
}

fn run(program: &Path, args: &[&str], what: &str) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot {what}: {} does not run ({e}). Install Python 3 (with its venv module), \
             or point JOBQ_PYTHON at a Python that has the packages",
            program.display()
        )
    });
    assert!(
        out.status.success(),
        "cannot {what} ({} {}): {}\nInstall them by hand (pip install ...) or set JOBQ_PYTHON to a Python that has them",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A lock between test processes: a directory that exists while held.
struct DirLock(PathBuf);

impl DirLock {
    fn take(path: &Path) -> DirLock {
        let started = Instant::now();
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => return DirLock(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A holder that died leaves the directory: take it over after a while.
                    if started.elapsed() > Duration::from_secs(300) {
                        let _ = std::fs::remove_dir(path);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot take {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
