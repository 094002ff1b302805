//! The `jobq` command line: `serve`, `import`, `export`, `query`, `check`, `compact`,
//! `repair`, `backup`.
//! Exit status: 0 done, 1 failed (the reason on stderr), 2 bad usage.

/// A line to stdout; one that cannot be written (a closed pipe, a full disk)
/// is dropped rather than panicking (`println!` would, after the work is done).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// A line to stderr, dropped when it cannot be written (as [`say!`]).
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod data;
mod maintain;
mod query;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::server::auth::KeySpec;

#[derive(Parser)]
#[command(name = "jobq", version, about = "A persistent JobQ: crawl-job metadata over the Scrapinghub JobQ HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the JobQ HTTP API.
    Serve(Box<ServeArgs>),
    /// Bulk-load jobs (JSON lines in the export format) as one transaction.
    Import(ImportArgs),
    /// Write every job (or one project's) as JSON lines: its whole metadata plus `key`.
    Export(ExportArgs),
    /// Answer request paths read from stdin (`jobq/53/list?state=finished`), one JSON line each.
    Query(QueryArgs),
    /// Verify every checksum, the indexes against the log, and the store's invariants
    /// (read-only). Exit 0: clean; 1: damage found; 2: could not run.
    Check(CheckArgs),
    /// Rewrite the log without superseded versions and rebuild the indexes, offline and
    /// atomically (a crash leaves the old store or the new one).
    Compact(CompactArgs),
    /// Salvage a store whose log is damaged: keep every valid frame before the damage,
    /// move the rest aside (to DIR/salvaged-<ms>/) and report what was dropped. Offline.
    Repair(RepairArgs),
    /// Copy a store, beside a running server, as of one log position (printed); run
    /// again on the same destination, it copies only what is new.
    Backup(BackupArgs),
}

#[derive(Args)]
pub struct BackupArgs {
    /// The data directory (read-only: a server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data: std::path::PathBuf,
    /// Where the copy goes (created when missing; a store that `serve --data` opens).
    #[arg(long, value_name = "DEST")]
    pub to: std::path::PathBuf,
}

#[derive(Args)]
pub struct RepairArgs {
    /// The data directory (not while a server holds it).
    #[arg(long, value_name = "DIR")]
    pub data: std::path::PathBuf,
}

#[derive(Args)]
pub struct CheckArgs {
    /// The data directory (opened read-only).
    #[arg(long, value_name = "DIR")]
    pub data: std::path::PathBuf,
}

#[derive(Args)]
pub struct CompactArgs {
    /// The data directory (not while a server holds it).
    #[arg(long, value_name = "DIR")]
    pub data: std::path::PathBuf,
    /// Also drop jobs deleted longer ago than this (`30d`, `12h`, `90m`, `3600s`).
    /// Their ids are never allocated again.
    #[arg(long, value_name = "DURATION", value_parser = maintain::parse_duration)]
    pub retain_deleted: Option<std::time::Duration>,
    /// Bytes left free on the data directory's file system, as `serve --keep-free`:
    /// a compaction whose copy would leave less is refused before it writes.
    #[arg(long, value_name = "BYTES|auto", default_value = "auto", value_parser = parse_keep_free)]
    pub keep_free: KeepFree,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The data directory (created when missing).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on (port 0: any free port, logged at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// An API key, optionally named (the name goes into `*_by` fields) and limited to
    /// projects. Repeatable.
    #[arg(long = "api-key", value_name = "[NAME=]KEY[:P1,P2,...]")]
    pub api_keys: Vec<KeySpec>,
    /// Read API keys from a file, one `[NAME=]KEY[:P1,...]` a line (`#` comments):
    /// keeps them out of the process list.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Serve without authentication: anyone who can connect may read and write
    /// every project. Refused together with API keys.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Largest request body (bytes; K, M, G, KiB, MiB, GiB suffixes allowed); larger gets 413.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Most memory that request bodies and whole answers of over 64 KiB may hold at
    /// once, over all connections (at least --max-body): past it a body waits for
    /// room while it may still arrive, an answer gets 503 with Retry-After.
    #[arg(long, value_name = "BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub max_buffered: usize,
    /// Largest `count` of one listing (the default count is 1000, or this when lower).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_count: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take before their
    /// connections are closed and the store closes anyway.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub drain_timeout: u64,
    /// A client must send a whole request head within this many seconds of
    /// connecting or of starting the head; else its connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub header_timeout: u64,
    /// A keep-alive connection with no request for this many seconds is closed, and
    /// so is one whose client reads none of its response for as long.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// A request body must arrive whole within this many seconds of its head; else
    /// 408 and the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub body_timeout: u64,
    /// Most client connections open at once; more wait (in the kernel's backlog)
    /// until one closes. Lowered to what the open-file limit allows.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Jobs written between index files: the log tail is frozen into a new index
    /// file (and merged in the background) after this many.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub index_every: u64,
    /// Online compaction: reclaim superseded versions in the background once they
    /// are this share of the log's records (0.05 to 0.95), or `off`.
    #[arg(long, value_name = "RATIO|off", default_value = "0.3", value_parser = parse_ratio)]
    pub compact_when: Ratio,
    /// How often (seconds, fractions allowed) online compaction looks whether it is due.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub compact_every: std::time::Duration,
    /// Purge, in the background, jobs deleted longer ago than this (`30d`, `12h`,
    /// `90m`, `3600s`): within `--compact-every` of their expiry they are gone from
    /// every answer; compaction then frees their space. Their ids are never given
    /// again. Kept forever without it.
    #[arg(long, value_name = "DURATION", value_parser = maintain::parse_duration)]
    pub retain_deleted: Option<std::time::Duration>,
    /// Size of a log segment (bytes of frames; K, M, G suffixes); compaction takes the
    /// oldest segments: at most four, and at most a tenth of the log (at least one).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub segment_bytes: usize,
    /// Bytes kept free on the data directory's file system (K, M, G suffixes):
    /// while less is free, writes get 507 and imports, index merges and
    /// compaction wait, with nothing written; they resume once space is freed.
    /// `auto`: 64MiB, or a twentieth of the file system when that is less; `0`: no check.
    #[arg(long, value_name = "BYTES|auto", default_value = "auto", value_parser = parse_keep_free)]
    pub keep_free: KeepFree,
    /// Serve /metrics (and /health) on this address instead: the API port then
    /// answers 404 for /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// /metrics asks for this key (HTTP basic auth, the key as user name);
    /// without it /metrics is open to whoever can connect.
    #[arg(long, value_name = "KEY", value_parser = parse_metrics_key)]
    pub metrics_key: Option<String>,
    /// The same, read from a file (its one non-blank line): kept out of the process list.
    #[arg(long, value_name = "FILE", conflicts_with = "metrics_key")]
    pub metrics_key_file: Option<PathBuf>,
    /// Serve as this node of a Raft cluster (docs/cluster.md); without it, one node alone.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          requires_all = ["peers", "cluster_key_file"])]
    pub node_id: Option<u64>,
    /// A member of the cluster and its address (repeated: every member, this node too).
    #[arg(long = "peer", value_name = "ID=HOST:PORT", requires = "node_id")]
    pub peers: Vec<String>,
    /// The shared cluster key (one line, at least 16 bytes): signs the nodes' traffic.
    #[arg(long, value_name = "FILE", requires = "node_id")]
    pub cluster_key_file: Option<PathBuf>,
    /// What a read at this node waits for: `linearizable` (the leader's read index,
    /// applied here) or `stale` (the local store at once; may lag the leader).
    #[arg(long, value_name = "LEVEL", default_value = "linearizable", value_parser = ["linearizable", "stale"])]
    pub read_consistency: String,
    /// Linearizable reads confirm the leadership with a heartbeat round every
    /// time, never with the leader's lease (which assumes the nodes' clocks run
    /// at about the same rate: docs/cluster.md, "Leader lease").
    #[arg(long, requires = "node_id")]
    pub no_read_lease: bool,
    /// The smallest Raft election timeout (ms); heartbeats at a fifth of it.
    #[arg(long, value_name = "MS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub election_ms: u64,
    /// Applied entries between two snapshots of this node's log (after each, Raft
    /// purges the log behind it but for the last 1,000 entries, or ENTRIES if fewer).
    #[arg(long, value_name = "ENTRIES", default_value_t = jobq::cluster::SNAPSHOT_EVERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// How long `POST /cluster/members` waits for an added node to catch up (a
    /// snapshot sent and installed included) before it takes it out again
    /// instead of making it a voter.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "node_id",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub member_catch_up: u64,
}

pub(crate) fn parse_metrics_key(s: &str) -> Result<String, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err("a metrics key is printable ASCII without spaces or ':'".into());
    }
    Ok(s.to_string())
}

#[derive(Args)]
pub struct ImportArgs {
    /// The data directory (created when missing). Not while a server holds it.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// JSON lines to import; stdin when absent.
    pub file: Option<PathBuf>,
    /// Bytes left free on the data directory's file system, as `serve --keep-free`:
    /// an import that would leave less is undone (nothing of it stored).
    #[arg(long, value_name = "BYTES|auto", default_value = "auto", value_parser = parse_keep_free)]
    pub keep_free: KeepFree,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The data directory (opened read-only: a server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Only this project.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..))]
    pub project: Option<u32>,
}

#[derive(Args)]
pub struct QueryArgs {
    /// The data directory (opened read-only: a server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Largest `count` of one listing, as for `serve`.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_count: u64,
}

/// A share, or none (`off`).
#[derive(Clone, Copy, Debug)]
pub struct Ratio(pub Option<f64>);

/// `0.3` (a share) or `off`.
fn parse_ratio(s: &str) -> Result<Ratio, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Ratio(None));
    }
    match s.trim().parse::<f64>() {
        Ok(r) if (0.05..=0.95).contains(&r) => Ok(Ratio(Some(r))),
        _ => Err(format!("expected a share between 0.05 and 0.95, or off; got {s:?}")),
    }
}

/// `--keep-free`: None for `auto`.
#[derive(Clone, Copy, Debug)]
pub struct KeepFree(pub Option<u64>);

fn parse_keep_free(s: &str) -> Result<KeepFree, String> {
    match s.trim() {
        "auto" => Ok(KeepFree(None)),
        "0" => Ok(KeepFree(Some(0))),
        other => parse_size(other).map(|n| KeepFree(Some(n as u64))),
    }
}

/// `10`, `0.5`: seconds.
fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!("expected seconds between 0 and 86400, got {s:?}")),
    }
}

/// `16MiB`, `64K`, `1048576`: a byte count.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("expected a number of bytes, got {s:?}"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?} is not a usable size")),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_file_limit();
    let (name, result) = match cli.command {
        Command::Check(a) => return maintain::check(a),
        Command::Compact(a) => ("compact", maintain::compact(a)),
        Command::Repair(a) => ("repair", maintain::repair(a)),
        Command::Backup(a) => ("backup", maintain::backup(a)),
        Command::Serve(a) => ("serve", serve::run(*a)),
        Command::Import(a) => ("import", data::import(a)),
        Command::Export(a) => ("export", data::export(a)),
        Command::Query(a) => ("query", query::run(a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            if !message.is_empty() {
                note!("jobq {name}: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Raise the soft limit of open files to the hard one, as Go programs do: a
/// read-only open (`check`, `export`, `backup`) holds every log segment open (a
/// server's compaction may remove them meanwhile), and a server holds one per
/// client; the usual soft limit of 1,024 is far below the usual hard one. A
/// failure leaves the limit as it was (what fails for want of descriptors then
/// says so).
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_keep_free, parse_size};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        for bad in ["", "0", "x", "5 parsecs", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    /// `--keep-free`: `auto`, `0` (no check) or a size; anything else refused.
    #[test]
    fn kept_free_space() {
        assert_eq!(parse_keep_free("auto").unwrap().0, None);
        assert_eq!(parse_keep_free("0").unwrap().0, Some(0));
        assert_eq!(parse_keep_free(" 2GiB ").unwrap().0, Some(2 << 30));
        for bad in ["", "-1", "AUTO1", "off", "1e9", "99999999999999999999G", "00x"] {
            assert!(parse_keep_free(bad).is_err(), "{bad}");
        }
    }
}
