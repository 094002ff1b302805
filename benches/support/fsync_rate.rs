//! The machine's raw durable-write rate: append a small record to a file and
//! fdatasync it, in a loop, in a given directory (so on the same file system as
//! the store being measured).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Appends of `record` bytes + fdatasync per second, over about `time`.
pub fn appends_per_sec(dir: &Path, record: usize, time: Duration) -> f64 {
    let path = dir.join(format!("fdatasync-probe-{}", std::process::id()));
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path).expect("probe file");
    let buf = vec![b'x'; record];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < time {
        f.write_all(&buf).expect("probe write");
        f.sync_data().expect("probe fdatasync");
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    rate
}

/// Overwrites of the first `record` bytes + fdatasync per second (no size change).
pub fn overwrites_per_sec(dir: &Path, record: usize, time: Duration) -> f64 {
    use std::os::unix::fs::FileExt;
    let path = dir.join(format!("fdatasync-probe-{}", std::process::id()));
    let f = OpenOptions::new().create(true).truncate(true).write(true).open(&path).expect("probe file");
    let buf = vec![b'y'; record];
    f.write_all_at(&vec![0u8; 1 << 16], 0).expect("probe write");
    f.sync_all().expect("probe fsync");
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < time {
        f.write_all_at(&buf, 0).expect("probe write");
        f.sync_data().expect("probe fdatasync");
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    rate
}
