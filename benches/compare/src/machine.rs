//! Facts about this machine and process: peak memory, disk usage, load.

use std::path::Path;

/// Peak resident set of this process (VmHWM), KiB.
pub fn vm_hwm_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes allocated on disk under `dir` (like `du`).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// How fast the machine runs at the time, best of 3 each: milliseconds of a fixed
/// chain of ALU steps (the cores' clock), and nanoseconds a load of a chain of
/// dependent random loads over 64 MiB (memory and the shared cache). On the CI
/// machine kind (a VM) the first stays within 7% while the second moves from
/// one minute to the next with the neighbours' load, and listings with it
/// (stop 37: 108-149 ns, a page of 1,000 rows 150 or 250-280 us).
pub fn speed_probes() -> (f64, f64) {
    let best = |f: &mut dyn FnMut() -> f64| (0..3).map(|_| f()).fold(f64::MAX, f64::min);
    let alu = best(&mut || {
        let t = std::time::Instant::now();
        let (mut x, mut acc) = (0x9e37_79b9_7f4a_7c15u64, 0u64);
        for i in 0..std::hint::black_box(50_000_000u64) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc = acc.wrapping_add(x ^ i);
        }
        std::hint::black_box(acc);
        t.elapsed().as_secs_f64() * 1e3
    });
    // One random cycle through 16M slots (Sattolo's shuffle).
    let n = 16usize << 20;
    let mut next: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        next.swap(i, (x % i as u64) as usize);
    }
    const LOADS: u32 = 2_000_000;
    let load = best(&mut || {
        let t = std::time::Instant::now();
        let mut p = 0u32;
        for _ in 0..LOADS {
            p = next[p as usize];
        }
        std::hint::black_box(p);
        t.elapsed().as_secs_f64() * 1e9 / f64::from(LOADS)
    });
    (alu, load)
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// CPU model, cores, memory, kernel.
pub fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} · {cores} cores · {:.1} GiB RAM · Linux {}",
        model.unwrap_or("unknown CPU"),
        total as f64 / (1 << 20) as f64,
        kernel.trim()
    )
}
