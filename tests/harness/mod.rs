//! Test harness: the real `jobq` binary on a free port of 127.0.0.1, and a small
//! HTTP/1.1 client over a TcpStream that shows exactly what was sent back
//! (status, headers, body bytes, how many chunks).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod cluster;

pub const BIN: &str = env!("CARGO_BIN_EXE_jobq");

/// The `jobq` binary servers run: `JOBQ_BIN` when set (a release build for a
/// soak, as `benches/cluster_failover.py` takes it), else this build's.
pub fn bin() -> String {
    std::env::var("JOBQ_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// `n` distinct loopback addresses free now, for nodes that must know each
/// other's before they start. Taken below the kernel's ephemeral range
/// (32768 and up on Linux): a port the kernel picked for a client connection
/// meanwhile (this test's, or another's) never lands on one. Held together so
/// that they differ; freed just before the nodes bind them.
pub fn free_ports(n: usize) -> Vec<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut held = Vec::new();
    for i in 0.. {
        let x = (seed ^ NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(i);
        let port = 15_000 + (x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 33) % 17_000;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(l);
            if held.len() == n {
                break;
            }
        }
    }
    held.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
}

/// A running `jobq serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Start `jobq serve --data DIR --listen 127.0.0.1:0 ARGS...` and wait until it listens.
    pub fn start(data: &Path, args: &[&str]) -> Server {
        Server::spawn(Command::new(bin()), data, args)
    }

    /// [`Server::start`] listening on `listen` (a cluster node's fixed address).
    pub fn start_at(data: &Path, listen: &str, args: &[&str]) -> Server {
        Server::spawn_at(Command::new(bin()), data, listen, args)
    }

    /// [`Server::start`] with the open-file limit (`ulimit -n`) lowered to `fds`.
    pub fn start_with_fd_limit(data: &Path, args: &[&str], fds: u32) -> Server {
        Server::start_with_shell(data, args, &format!("ulimit -n {fds}"))
    }

    /// [`Server::start`] from `sh`, after the shell commands `setup` (limits, traps).
    pub fn start_with_shell(data: &Path, args: &[&str], setup: &str) -> Server {
        let mut sh = Command::new("sh");
        sh.args(["-c", &format!("{setup} && exec \"$0\" \"$@\""), &bin()]);
        Server::spawn(sh, data, args)
    }

    fn spawn(command: Command, data: &Path, args: &[&str]) -> Server {
        Server::spawn_at(command, data, "127.0.0.1:0", args)
    }

    fn spawn_at(mut command: Command, data: &Path, listen: &str, args: &[&str]) -> Server {
        let mut child = command
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", listen])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jobq serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("listen=")) {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("jobq serve did not start:\n{}", log.lock().unwrap());
            }
        };
        Server { child: Some(child), addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait (at most 5 s) until the log holds `needle`.
    pub fn log_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then wait for the exit (at most 60 s).
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("jobq serve did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn req(&self, method: &str, target: &str, auth: Option<&str>, body: &[u8]) -> Resp {
        request(&self.addr, method, target, auth, body)
    }

    pub fn get(&self, target: &str, auth: &str) -> Resp {
        self.req("GET", target, Some(auth), b"")
    }

    pub fn post(&self, target: &str, auth: &str, body: &str) -> Resp {
        self.req("POST", target, Some(auth), body.as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill");
    assert!(ok.success(), "kill -{name} {pid}");
}

/// One answer as received.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Chunks of a chunked body (0 when it had a length).
    pub chunks: usize,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    /// The JSON lines, checked to be well formed: `\n` endings, no blank line.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let t = self.text();
        if t.is_empty() {
            return Vec::new();
        }
        assert!(t.ends_with('\n') && !t.contains("\n\n") && !t.contains('\r'), "not JSON lines: {t:?}");
        t.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
    }

    /// The one JSON line.
    pub fn json(&self) -> serde_json::Value {
        let mut l = self.lines();
        assert_eq!(l.len(), 1, "expected one line, got {:?} (status {})", self.text(), self.status);
        l.remove(0)
    }

    /// Assert an error status with an `{"error": ...}` line containing `needle`.
    pub fn assert_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let e = self.json();
        let msg = e["error"].as_str().unwrap_or_else(|| panic!("no error message: {e}"));
        assert!(msg.contains(needle), "error {msg:?} does not mention {needle:?}");
    }
}

pub fn basic(credentials: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = credentials.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// Send one request (`Connection: close`) and read the whole answer. `auth` is
/// `user:password` (`KEY:` for an API key).
pub fn request(addr: &str, method: &str, target: &str, auth: Option<&str>, body: &[u8]) -> Resp {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {}\r\n", basic(a)));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

/// A POST over a fresh connection (`Connection: close`) to a server that may die
/// at any moment: `None` when the connection fails or the answer is not whole (a
/// kill test's call in doubt). `auth` is `user:password`.
pub fn try_post(addr: &str, target: &str, auth: &str, body: &str) -> Option<Resp> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/x-jsonlines\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        basic(auth),
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    complete(&all).then(|| parse_response(&all))
}

/// Whether `all` holds a whole response (the server may die in the middle of one).
pub fn complete(all: &[u8]) -> bool {
    let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return all.ends_with(b"\r\n0\r\n\r\n") || all[end + 4..].starts_with(b"0\r\n\r\n");
    }
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    length.is_none_or(|n: usize| all.len() - end - 4 == n)
}

/// Send raw bytes (a hand-made request) and read the answer.
pub fn raw(addr: &str, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(bytes);
    read_response(&mut s)
}

pub fn read_response(s: &mut TcpStream) -> Resp {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    parse_response(&all)
}

/// Read one response (its head, then its `Content-Length` bytes) without waiting
/// for the connection to close; `None` if the connection ends or fails first.
pub fn read_one_response(s: &mut TcpStream) -> Option<Resp> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().expect("a length"));
            if all.len() >= end + 4 + length {
                return Some(parse_response(&all[..end + 4 + length]));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// A process's resident memory (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A process's CPU time so far (user + system), in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

pub fn parse_response(all: &[u8]) -> Resp {
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no complete response head in {:?}", String::from_utf8_lossy(all));
    });
    let head = std::str::from_utf8(&all[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &all[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if !chunked {
        return Resp { status, headers, body: rest.to_vec(), chunks: 0 };
    }
    let (mut body, mut chunks, mut at) = (Vec::new(), 0, 0);
    loop {
        let nl = rest[at..].windows(2).position(|w| w == b"\r\n").expect("chunk size line") + at;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[at..nl]).unwrap().trim(), 16).unwrap();
        at = nl + 2;
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[at..at + size]);
        chunks += 1;
        at += size + 2;
    }
    Resp { status, headers, body, chunks }
}

/// A fresh temporary data directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A xorshift generator: reproducible random choices for tests (seed not 0).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The `Authorization` of a cluster request (src/server/raft/sign.rs, written
/// here from docs/cluster.md): `JobqCluster <head tag> <body tag>`.
pub fn cluster_signature(key: &[u8], path: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let hex = |t: &[u8]| t.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(format!("POST\n{path}\n").as_bytes());
    m.update(body);
    let body_tag = hex(&m.finalize().into_bytes());
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(format!("head\nPOST\n{path}\n{}\n{body_tag}", body.len()).as_bytes());
    format!("JobqCluster {} {body_tag}", hex(&m.finalize().into_bytes()))
}
