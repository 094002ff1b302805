//! `jobq serve`: check the flags, set up logging, run the server.

use std::time::Duration;

use super::{parse_metrics_key, ServeArgs};
use crate::server::auth::{parse_key_file, Auth};
use crate::server::raft::{routes::parse_peers, sign::ClusterKey, ReadConsistency};
use crate::server::{serve, ClusterConfig, ServeConfig, Timeouts};

pub fn run(a: ServeArgs) -> Result<(), String> {
    let mut specs = a.api_keys;
    if let Some(path) = &a.api_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        specs.extend(parse_key_file(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let auth = match (specs.is_empty(), a.insecure_no_auth) {
        (true, false) => {
            return Err("refusing to serve without authentication: give --api-key KEY (or --api-key-file FILE), \
                 or --insecure-no-auth to let anyone who can connect read and write every project"
                .into())
        }
        (false, true) => return Err("--insecure-no-auth cannot be combined with API keys".into()),
        (true, true) => Auth::Open,
        (false, false) => Auth::from_specs(specs)?,
    };
    let metrics_key = match (&a.metrics_key, &a.metrics_key_file) {
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            match (lines.next(), lines.next()) {
                (Some(key), None) => Some(parse_metrics_key(key).map_err(|e| format!("{}: {e}", path.display()))?),
                _ => return Err(format!("{}: expected the metrics key on one line", path.display())),
            }
        }
        (key, None) => key.clone(),
    };
    let cluster = match a.node_id {
        None => None,
        Some(id) => {
            let path = a.cluster_key_file.as_ref().ok_or("--node-id needs --cluster-key-file")?;
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let key = ClusterKey::from_file_text(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let consistency = if a.read_consistency == "stale" {
                ReadConsistency::Stale
            } else {
                ReadConsistency::Linearizable { lease: !a.no_read_lease }
            };
            Some(ClusterConfig {
                id,
                peers: parse_peers(&a.peers, id)?,
                key,
                consistency,
                election_ms: a.election_ms,
                snapshot_every: a.snapshot_every,
                member_catch_up: Duration::from_secs(a.member_catch_up),
            })
        }
    };
    init_logging();
    if matches!(auth, Auth::Open) {
        tracing::warn!(
            "serving WITHOUT authentication (--insecure-no-auth): anyone who can connect may read and write"
        );
    }
    serve(ServeConfig {
        data: a.data,
        listen: a.listen,
        auth,
        max_body: a.max_body,
        max_buffered: a.max_buffered,
        max_count: a.max_count,
        drain: Duration::from_secs(a.drain_timeout),
        index_every: a.index_every as usize,
        compaction: crate::server::Compaction {
            when: a.compact_when.0,
            every: a.compact_every,
            retain_deleted: a.retain_deleted,
            segment_bytes: a.segment_bytes as u64,
        },
        timeouts: Timeouts {
            header: Duration::from_secs(a.header_timeout),
            idle: Duration::from_secs(a.idle_timeout),
            body: Duration::from_secs(a.body_timeout),
        },
        max_connections: a.max_connections as usize,
        keep_free: a.keep_free.0,
        metrics_listen: a.metrics_listen,
        metrics_key,
        cluster,
    })
}

/// Logs to stderr, filtered by RUST_LOG (default: info). A log line that cannot
/// be written (stderr on a full disk, a closed pipe) is dropped: the server goes on
/// (tracing's own report of it would panic on that same stderr).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
}
