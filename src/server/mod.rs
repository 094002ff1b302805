//! `jobq serve`: the JobQ HTTP API on hyper. Lifecycle: open the store (logging
//! what recovery did), listen, answer until SIGTERM or SIGINT, stop accepting,
//! let in-flight requests finish (up to the drain timeout), then drop whatever
//! connections remain (their renders stop), close the store cleanly, exit 0.

pub mod auth;
mod body;
mod conn;
mod http;
mod listen;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::Auth;
pub use conn::Timeouts;
use jobq::store::OpenReport;
use jobq::{Durability, Options, Store};

/// Everything `jobq serve` was told.
pub struct ServeConfig {
    pub data: PathBuf,
    pub listen: String,
    pub auth: Auth,
    pub max_body: usize,
    pub max_count: u64,
    pub drain: Duration,
    /// Jobs written between index files (`Options::memtable_entries`).
    pub index_every: usize,
    pub compaction: Compaction,
    pub timeouts: Timeouts,
    /// Most connections open at once (lowered to what the open-file limit allows).
    pub max_connections: usize,
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

async fn run(config: ServeConfig) -> Result<(), String> {
    let opts = Options {
        durability: Durability::Sync,
        background: true,
        memtable_entries: config.index_every,
        compact_when: config.compaction.when,
        reclaim_every: config.compaction.every,
        retain_deleted: config.compaction.retain_deleted,
        segment_bytes: config.compaction.segment_bytes,
        ..Options::default()
    };
    let data = config.data.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data, opts))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the store in {}: {e}", config.data.display()))?;
    let recovery = describe_open(store.report());
    // Watched from before the start is logged: a signal from then on is a shutdown.
    let stop = shutdown_signal()?;
    let mut listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
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
    tracing::info!(
        data = %config.data.display(),
        listen = %local,
        auth = %config.auth.describe(),
        max_connections,
        recovery = %recovery,
        "jobq serving"
    );
    let store = Arc::new(store);
    let app = Arc::new(http::App {
        store: store.clone(),
        auth: config.auth,
        config: jobq::api::Config { max_count: config.max_count },
        max_body: config.max_body,
        body_timeout: config.timeouts.body,
    });
    let slots = listen::Slots::new(max_connections);
    // `drain`: finish the current request and close; `abort`: close now.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let (abort_tx, abort_rx) = tokio::sync::watch::channel(false);
    let signals = conn::Signals { crowded: slots.crowded(), drain: drain_rx };
    let timeouts = config.timeouts;
    listen::accept_loop(&mut listener, &slots, stop, |tcp, permit| {
        let (app, signals, mut abort) = (app.clone(), signals.clone(), abort_rx.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = conn::serve(tcp, app, timeouts, signals) => {}
                _ = abort.wait_for(|a| *a) => {}
            }
            drop(permit);
        });
    })
    .await;
    drop(listener);
    drop(app);
    let drain = config.drain;
    tracing::info!(timeout_secs = drain.as_secs(), "shutting down: finishing in-flight requests");
    let _ = drain_tx.send(true);
    if tokio::time::timeout(drain, slots.all_free()).await.is_err() {
        tracing::warn!("requests still in flight after the drain timeout; closing their connections");
        let _ = abort_tx.send(true);
        slots.all_free().await;
    }
    close(store, Duration::from_secs(30)).await
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

/// Resolves at SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
