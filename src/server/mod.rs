//! `jobq serve`: the JobQ HTTP API on hyper. Lifecycle: open the store (logging
//! what recovery did), listen (and on `--metrics-listen`), answer until SIGTERM
//! or SIGINT, then let in-flight requests finish (up to the drain timeout) while
//! new connections get one 503 answer each (`/health`: "closing"), then drop
//! whatever connections remain (their renders stop), close the store cleanly,
//! exit 0.

pub mod auth;
mod body;
mod budget;
mod conn;
mod http;
mod listen;
mod metrics;
mod ops;
mod prom;
pub mod raft;
mod scrape;
mod wait;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::Auth;
pub use conn::Timeouts;
use jobq::store::OpenReport;
use jobq::{Durability, Options, Store};
use metrics::{ConnectionStats, ServerMetrics};
use ops::{Ops, Port};
use tokio::sync::watch;

/// Connections the `--metrics-listen` listener serves at once.
pub const METRICS_CONNECTIONS: usize = 16;
/// Connections accepted at once during the drain (each answered once with 503).
pub const DRAIN_CONNECTIONS: usize = 64;

/// Everything `jobq serve` was told.
pub struct ServeConfig {
    pub data: PathBuf,
    pub listen: String,
    pub auth: Auth,
    pub max_body: usize,
    /// Most bytes large request bodies and whole answers hold at once (budget.rs).
    pub max_buffered: usize,
    pub max_count: u64,
    pub drain: Duration,
    /// Jobs written between index files (`Options::memtable_entries`).
    pub index_every: usize,
    pub compaction: Compaction,
    pub timeouts: Timeouts,
    /// Most connections open at once (lowered to what the open-file limit allows).
    pub max_connections: usize,
    /// Serve /metrics (and /health) on this address, not on the API's.
    pub metrics_listen: Option<String>,
    /// /metrics needs this key as basic-auth user name.
    pub metrics_key: Option<String>,
    /// `--node-id` and the rest: serve as one node of a cluster.
    pub cluster: Option<ClusterConfig>,
    /// `Options::keep_free`.
    pub keep_free: Option<u64>,
}

/// A cluster node's flags.
pub struct ClusterConfig {
    pub id: u64,
    /// Every member's address, this node's too.
    pub peers: std::collections::BTreeMap<u64, String>,
    pub key: raft::sign::ClusterKey,
    pub consistency: raft::ReadConsistency,
    pub election_ms: u64,
    pub snapshot_every: u64,
    /// How long an added member may take to catch up (`--member-catch-up`).
    pub member_catch_up: Duration,
}

/// Online compaction and the log's segments (`Options::compact_when` and the rest).
pub struct Compaction {
    pub when: Option<f64>,
    pub every: Duration,
    pub retain_deleted: Option<Duration>,
    pub segment_bytes: u64,
}

/// One line about what opening the store found and did.
pub fn describe_open(r: &OpenReport) -> String {
    let mut s = if r.created {
        "created an empty store".to_string()
    } else {
        format!(
            "generation {}, {} index files, replayed {} log frames from segment {} offset {}",
            r.generation,
            r.indexes.len(),
            r.replayed_frames,
            r.replay_from.segment,
            r.replay_from.offset
        )
    };
    match &r.cut {
        Some(c) => s.push_str(&format!(
            "; cut {} bytes of log tail at segment {} offset {} ({}){}",
            c.bytes,
            c.at.segment,
            c.at.offset,
            c.reason,
            if c.lost_durable { ", LOSING ACKNOWLEDGED WRITES" } else { "" }
        )),
        None => s.push_str("; log tail clean"),
    }
    for (file, why) in &r.discarded {
        s.push_str(&format!("; set aside {file} ({why})"));
    }
    s.push_str(&format!("; {} ms", r.millis));
    s
}

/// Run the server until a signal; returns once the store is closed.
pub fn serve(config: ServeConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("jobq-http")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(run(config));
    // A render still finishing its row must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Largest `--max-body`: a request's writes go into one log frame (at most
/// 1 GiB, format-spec/log.md) with room to spare for what parsing adds.
const MAX_MAX_BODY: usize = 256 << 20;

async fn run(config: ServeConfig) -> Result<(), String> {
    if config.max_body > MAX_MAX_BODY {
        return Err(format!(
            "--max-body is at most {MAX_MAX_BODY} bytes (256 MiB): a request's writes are one log frame"
        ));
    }
    if config.max_buffered < config.max_body {
        return Err(format!(
            "--max-buffered ({} bytes) is less than --max-body ({} bytes): a body of the largest size could never be read",
            config.max_buffered, config.max_body
        ));
    }
    let raft_file = config.data.join(jobq::cluster::raft_file::RAFT_FILE);
    if config.cluster.is_none() && raft_file.exists() {
        return Err(format!(
            "{} holds a cluster node's data ({} is there): serve it with --node-id and the cluster's flags",
            config.data.display(),
            raft_file.display()
        ));
    }
    let opts = Options {
        durability: Durability::Sync,
        background: true,
        memtable_entries: config.index_every,
        compact_when: config.compaction.when,
        reclaim_every: config.compaction.every,
        retain_deleted: config.compaction.retain_deleted,
        segment_bytes: config.compaction.segment_bytes,
        keep_free: config.keep_free,
        ..Options::default()
    };
    let opts = match config.cluster {
        Some(_) => Options { raft_log: true, ..opts },
        None => opts,
    };
    let data = config.data.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data, opts))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the store in {}: {e}", config.data.display()))?;
    let recovery = describe_open(&store.report());
    // Watched from before the start is logged: a signal from then on is a shutdown.
    let signal = shutdown_signal()?;
    let mut listener = bind(&config.listen).await?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => {
            let l = bind(addr).await?;
            let at = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(metrics_listen = %at, "serving /metrics and /health on their own listener");
            Some(l)
        }
        None => None,
    };
    let max_connections = match listen::fd_room() {
        Some(room) if room < config.max_connections => {
            tracing::warn!(
                asked = config.max_connections,
                allowed = room.max(1),
                "the open-file limit (ulimit -n) leaves room for fewer connections than --max-connections; \
                 serving at most the lower number"
            );
            room.max(1)
        }
        _ => config.max_connections,
    };
    let store = Arc::new(store);
    let cluster = match &config.cluster {
        Some(cc) => Some(start_node(cc, &store, local).await?),
        None => None,
    };
    // Once nothing can refuse the start any more.
    tracing::info!(
        data = %config.data.display(),
        listen = %local,
        auth = %config.auth.describe(),
        max_connections,
        recovery = %recovery,
        "jobq serving"
    );
    let durable = wait::durable_watch(&store);
    let server_metrics = Arc::new(ServerMetrics::new(max_connections));
    let ops = Arc::new(Ops::new(config.metrics_key.as_deref(), metrics_listener.is_some()));
    let auth = Arc::new(config.auth);
    let budget = Arc::new(budget::Budget::new(config.max_buffered));
    let renders = Arc::new(budget::Renders::per_core());
    let long_polls = Arc::new(wait::LongPolls::new(max_connections));
    let app_on = |port| {
        Arc::new(http::App {
            store: store.clone(),
            auth: auth.clone(),
            config: jobq::api::Config { max_count: config.max_count },
            max_body: config.max_body,
            budget: budget.clone(),
            renders: renders.clone(),
            long_polls: long_polls.clone(),
            body_timeout: config.timeouts.body,
            metrics: server_metrics.clone(),
            ops: ops.clone(),
            port,
            durable: durable.clone(),
            cluster: cluster.clone(),
        })
    };
    let api = app_on(Port::Api);
    let timeouts = config.timeouts;
    // `drain`: finish the current request and close; `abort`: close now.
    let (drain_tx, drain_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    // The drain of connections that stay until the store closes.
    let (_never_tx, never_rx) = watch::channel(false);
    let (metrics_stop_tx, metrics_stop_rx) = watch::channel(false);
    let metrics_task = metrics_listener.map(|l| {
        let ends = (metrics_stop_rx, abort_rx.clone());
        tokio::spawn(serve_metrics_listener(l, app_on(Port::Metrics), timeouts, never_rx.clone(), ends))
    });
    let connections = server_metrics.connections.clone();
    let stop = {
        let ops = ops.clone();
        async move { ops.begin_closing(signal.await) }
    };
    let slots = listen::Slots::new(max_connections);
    let signals = conn::Signals { crowded: slots.crowded(), drain: drain_rx, stats: connections.clone() };
    listen::accept_loop(&mut listener, &slots, &connections, stop, |tcp, permit| {
        let guards = (permit, connections.opened());
        spawn_connection(tcp, guards, api.clone(), timeouts, signals.clone(), abort_rx.clone());
    })
    .await;
    let drain = config.drain;
    tracing::info!(timeout_secs = drain.as_secs(), "shutting down: finishing in-flight requests");
    let _ = drain_tx.send(true);
    // While the connections open at the signal finish, new ones are still
    // accepted, each answered once (503; /health says "closing") and closed.
    let late = listen::Slots::new(DRAIN_CONNECTIONS.min(max_connections));
    let late_signals = conn::Signals { crowded: late.crowded(), drain: never_rx.clone(), stats: connections.clone() };
    let mut timed_out = false;
    let drained = async {
        timed_out = tokio::time::timeout(drain, slots.all_free()).await.is_err();
    };
    listen::accept_loop(&mut listener, &late, &connections, drained, |tcp, permit| {
        let guards = (permit, connections.opened());
        spawn_connection(tcp, guards, api.clone(), timeouts, late_signals.clone(), abort_rx.clone());
    })
    .await;
    drop(listener);
    if timed_out {
        tracing::warn!("requests still in flight after the drain timeout; closing their connections");
    }
    let _ = abort_tx.send(true);
    slots.all_free().await;
    late.all_free().await;
    let _ = metrics_stop_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    drop(api);
    if let Some(c) = cluster {
        jobq::cluster::proposer::detach(&c.node);
        if let Err(e) = c.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        drop(c);
    }
    close(store, Duration::from_secs(30)).await
}

/// Start Raft on `store`, and form the cluster in the background.
async fn start_node(cc: &ClusterConfig, store: &Arc<Store>, local: SocketAddr) -> Result<Arc<raft::Cluster>, String> {
    // Only the node that forms the cluster may seed it with a single node's store.
    let forms = cc.peers.keys().next() == Some(&cc.id);
    let node = jobq::cluster::Node::start_with(store.clone(), forms, Some(cc.id))
        .map_err(|e| format!("cannot start the cluster node: {e}"))?;
    let config = jobq::cluster::config_with(cc.election_ms, cc.snapshot_every).map_err(|e| e.to_string())?;
    let net = raft::net::HttpNet { pool: raft::client::Pool::new(cc.key.clone()), acks: Default::default() };
    let r = jobq::cluster::start(cc.id, node.clone(), config, net.clone()).await.map_err(|e| e.to_string())?;
    // The store's writes go through Raft from now on (refused while not the leader).
    let timeout = jobq::cluster::proposer::PROPOSE_TIMEOUT;
    jobq::cluster::proposer::attach(cc.id, &node, &r, tokio::runtime::Handle::current(), timeout);
    let election = Duration::from_millis(cc.election_ms);
    let mut c = raft::Cluster::new(cc.id, r, node, cc.key.clone(), cc.consistency, election, &net);
    c.member_catch_up = cc.member_catch_up;
    let c = Arc::new(c);
    tracing::info!(node = cc.id, address = %local, peers = ?cc.peers, read_consistency = ?cc.consistency, "cluster node started");
    c.hold_votes_after_start();
    tokio::spawn(raft::form(c.clone(), cc.peers.clone()));
    tokio::spawn(exit_when_raft_fails(c.raft.metrics()));
    Ok(c)
}

/// A node whose Raft stopped on an error (a storage error openraft takes as
/// fatal) takes no part in the cluster any more while its HTTP side still
/// answers: the process exits instead (code 70), so that its supervisor restarts
/// it and it recovers from its data directory.
async fn exit_when_raft_fails(mut metrics: watch::Receiver<openraft::RaftMetrics<u64, openraft::BasicNode>>) {
    loop {
        match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) => return,
            Err(fatal) => {
                tracing::error!(error = %fatal, "Raft stopped on this node; exiting so that a restart recovers it");
                std::process::exit(70);
            }
            Ok(()) => {}
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// The listen backlog asked for (the kernel caps it at `net.core.somaxconn`):
/// clients wait there while every connection slot is taken. The usual 128 let a
/// crowd of slow sockets fill it, and a SYN beyond it is dropped (the client
/// waits seconds to retry).
pub const BACKLOG: u32 = 4096;

/// Listen on the first of `addr`'s addresses that binds (SO_REUSEADDR set, as
/// tokio's own `bind` does).
async fn bind(addr: &str) -> Result<tokio::net::TcpListener, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await.map_err(fail)? {
        match listen_on(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let none = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "could not resolve to any address");
    Err(fail(last.unwrap_or_else(none)))
}

fn listen_on(a: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(a)?;
    socket.listen(BACKLOG)
}

/// Serve one connection until it ends or `abort` turns true; the guards (its
/// slot, its place in the open count) are held until then.
fn spawn_connection<G: Send + 'static>(
    tcp: tokio::net::TcpStream,
    guards: G,
    app: Arc<http::App>,
    timeouts: Timeouts,
    signals: conn::Signals,
    mut abort: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = conn::serve(tcp, app, timeouts, signals) => {}
            _ = abort.wait_for(|a| *a) => {}
        }
        drop(guards);
    });
}

/// The `--metrics-listen` listener: /metrics and /health, through the drain,
/// until `stop` turns true; then its connections end with `abort`.
async fn serve_metrics_listener(
    mut listener: tokio::net::TcpListener,
    app: Arc<http::App>,
    timeouts: Timeouts,
    never: watch::Receiver<bool>,
    (mut stop, abort): (watch::Receiver<bool>, watch::Receiver<bool>),
) {
    let slots = listen::Slots::new(METRICS_CONNECTIONS);
    let stats = Arc::new(ConnectionStats::default());
    let signals = conn::Signals { crowded: slots.crowded(), drain: never, stats: stats.clone() };
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    listen::accept_loop(&mut listener, &slots, &stats, stopped, |tcp, permit| {
        spawn_connection(tcp, permit, app.clone(), timeouts, signals.clone(), abort.clone());
    })
    .await;
    drop(listener);
    slots.all_free().await;
}

/// Close the store once the last engine call has let go of it (waiting at most
/// `wait`). Once every connection is gone, only a blocking call already under
/// way holds it: a write waiting for its fsync, or a render (cancelled, it stops
/// at its next row). Without a clean close, acknowledged writes are still safe
/// in the log: the next start replays them.
async fn close(store: Arc<Store>, wait: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut store = store;
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => {
                tokio::task::spawn_blocking(move || s.close())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("closing the store failed: {e}"))?;
                tracing::info!("store closed");
                return Ok(());
            }
            Err(shared) if started.elapsed() < wait => {
                store = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                return Err(
                    "requests still hold the store; exiting without a clean close (the next start replays the log)"
                        .into(),
                )
            }
        }
    }
}

/// Resolves at SIGTERM or SIGINT, to its name.
fn shutdown_signal() -> Result<impl std::future::Future<Output = &'static str>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name} received");
        name
    })
}
