//! `jobq serve`: the JobQ HTTP API on axum. Lifecycle: open the store (logging
//! what recovery did), listen, answer until SIGTERM or SIGINT, let in-flight
//! requests finish (up to the drain timeout), then close the store cleanly.

pub mod auth;
mod body;
mod http;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use axum::Router;

use auth::Auth;
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
    runtime.block_on(run(config))
}

async fn run(config: ServeConfig) -> Result<(), String> {
    let opts = Options {
        durability: Durability::Sync,
        background: true,
        memtable_entries: config.index_every,
        ..Options::default()
    };
    let data = config.data.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data, opts))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the store in {}: {e}", config.data.display()))?;
    let recovery = describe_open(store.report());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        data = %config.data.display(),
        listen = %local,
        auth = %config.auth.describe(),
        recovery = %recovery,
        "jobq serving"
    );
    let store = Arc::new(store);
    let app = Arc::new(http::App {
        store: store.clone(),
        auth: config.auth,
        config: jobq::api::Config { max_count: config.max_count },
        max_body: config.max_body,
    });
    let router = Router::new().fallback(http::handle).layer(DefaultBodyLimit::disable()).with_state(app);
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .into_future();
    let drain = config.drain;
    let deadline = async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tracing::info!(timeout_secs = drain.as_secs(), "shutting down: finishing in-flight requests");
        tokio::time::sleep(drain).await;
    };
    let drained = tokio::select! {
        r = server => {
            r.map_err(|e| format!("the server failed: {e}"))?;
            true
        }
        _ = deadline => false,
    };
    if drained {
        close(store, Duration::from_secs(30)).await
    } else {
        tracing::warn!("requests still in flight after the drain timeout; closing what can be closed");
        close(store, Duration::from_secs(1)).await
    }
}

/// Close the store once the last in-flight engine call has let go of it (waiting
/// at most `wait`). Without a clean close, acknowledged writes are still safe in
/// the log: the next start replays them.
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

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
