//! The operator's endpoints beside the JobQ API: `GET /health` (no key, from
//! memory and one `statvfs` of the data directory: no file is read) and `GET /metrics` (the Prometheus
//! text format; open, or behind `--metrics-key`). `/metrics` is served on the
//! API port, or only on `--metrics-listen` when that is given (then the API
//! port answers 404 for it). The metrics listener serves these two paths only.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::json;

use super::auth;
use super::http::App;
use super::metrics::Endpoint;
use super::prom;
use super::scrape;

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Api,
    Metrics,
}

/// Server-wide state of the operator's endpoints.
pub struct Ops {
    started: Instant,
    started_unix: f64,
    /// The signal that started the shutdown, once one did.
    closing: Mutex<Option<&'static str>>,
    /// Turns true with `closing`: long polls answer at once.
    closing_tx: tokio::sync::watch::Sender<bool>,
    /// SHA-256 of `--metrics-key`.
    metrics_key: Option<[u8; 32]>,
    /// `/metrics` has a listener of its own.
    separate: bool,
}

impl Ops {
    pub fn new(metrics_key: Option<&str>, separate: bool) -> Ops {
        let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Ops {
            started: Instant::now(),
            started_unix,
            closing: Mutex::new(None),
            closing_tx: tokio::sync::watch::Sender::new(false),
            metrics_key: metrics_key.map(|k| auth::digest(k.as_bytes())),
            separate,
        }
    }

    /// The server is shutting down (on `signal`): `/health` says so from now on.
    pub fn begin_closing(&self, signal: &'static str) {
        self.closing.lock().get_or_insert(signal);
        self.closing_tx.send_replace(true);
    }

    /// Turns true once the server is shutting down.
    pub fn closing_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing_tx.subscribe()
    }

    /// The signal the shutdown began with, while shutting down.
    pub fn closing(&self) -> Option<&'static str> {
        *self.closing.lock()
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// When the server started, in seconds since the Unix epoch.
    pub fn started_unix(&self) -> f64 {
        self.started_unix
    }
}

/// What a request path names, before any authentication.
pub enum Target {
    Health,
    Metrics,
    /// A path this listener does not serve (404, whoever asks).
    NotHere(String),
    /// The JobQ API.
    Api,
    /// A cluster node's `/_raft/*` (cluster key only).
    Raft,
    /// A cluster node's `/cluster` and `/cluster/members` (admin key).
    Cluster,
}

impl Target {
    pub fn of(app: &App, path: &str) -> Target {
        let p = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
        match (p, app.port) {
            ("/health", _) => Target::Health,
            ("/metrics", Port::Metrics) => Target::Metrics,
            ("/metrics", Port::Api) if !app.ops.separate => Target::Metrics,
            ("/metrics", Port::Api) => Target::NotHere("metrics are served on the --metrics-listen address".into()),
            (_, Port::Metrics) => {
                Target::NotHere(format!("no such endpoint: {path} (this listener serves /metrics and /health)"))
            }
            (p, Port::Api) if app.cluster.is_some() && p.starts_with("/_raft/") => Target::Raft,
            ("/cluster" | "/cluster/members", Port::Api) if app.cluster.is_some() => Target::Cluster,
            (_, Port::Api) => Target::Api,
        }
    }

    /// The endpoint label of a request for it.
    pub fn endpoint(&self, path: &str) -> Endpoint {
        match self {
            Target::Health => Endpoint::Health,
            Target::Metrics => Endpoint::Metrics,
            Target::NotHere(_) => Endpoint::NotFound,
            Target::Api => Endpoint::of_api_path(path),
            Target::Raft | Target::Cluster => Endpoint::Cluster,
        }
    }
}

/// An answer of the operator's endpoints.
pub struct OpsAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Ask for credentials (401).
    pub unauthorized: bool,
}

fn json_answer(status: u16, value: serde_json::Value) -> OpsAnswer {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    OpsAnswer { status, body, content_type: "application/json", unauthorized: false }
}

/// `GET /health`: 200 while the store takes writes and the server is not
/// shutting down, else 503 with the reason. Memory and one `statvfs`.
pub fn health(app: &App) -> OpsAnswer {
    let h = app.store.health();
    let (status, reason) = match (&h.poison, app.ops.closing()) {
        (Some(p), _) if p.disk_full => (
            "disk_full",
            Some(format!(
                "a write failed for want of disk space ({}); writes are refused until a restart with space free",
                p.cause
            )),
        ),
        (Some(p), _) => {
            ("poisoned", Some(format!("a write or fsync failed ({}); writes are refused until a restart", p.cause)))
        }
        (None, Some(signal)) => {
            ("closing", Some(format!("shutting down ({signal} received): finishing the requests in flight")))
        }
        (None, None) if !h.accepts_writes() => ("closing", Some("the store is closed".to_string())),
        (None, None) => match app.store.disk_space().filter(|d| d.is_low()) {
            Some(d) => (
                "disk_low",
                Some(format!(
                    "{} bytes free, less than the {} kept free (--keep-free): writes get 507 until space is freed",
                    d.available, d.keep_free
                )),
            ),
            None => ("ok", None),
        },
    };
    let mut body = json!({
        "status": status,
        "durable_seq": h.durable_seq,
        "uptime_secs": app.ops.uptime_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "requests_in_flight": app.metrics.in_flight(),
        "connections_open": app.metrics.connections.open.load(std::sync::atomic::Ordering::Relaxed),
    });
    if let Some(r) = reason {
        body["reason"] = r.into();
    }
    json_answer(if status == "ok" { 200 } else { 503 }, body)
}

/// `GET /metrics`, after checking `--metrics-key` (basic auth, the key as user name).
pub async fn metrics(app: &Arc<App>, authorization: Option<&[u8]>) -> OpsAnswer {
    if let Some(want) = &app.ops.metrics_key {
        let given = authorization.and_then(|h| auth::basic_credentials(h).ok()).map(|(user, _)| user);
        let ok = given.is_some_and(|user| auth::same(want, &auth::digest(user.as_bytes())));
        if !ok {
            let mut a = json_answer(
                401,
                json!({"error": "the metrics need --metrics-key: HTTP basic auth with the key as user name"}),
            );
            a.unauthorized = true;
            return a;
        }
    }
    // Jobs per state walk the index files' sections: off the async threads.
    let app = app.clone();
    match tokio::task::spawn_blocking(move || scrape::render(&app)).await {
        Ok(text) => {
            OpsAnswer { status: 200, body: text.into_bytes(), content_type: prom::CONTENT_TYPE, unauthorized: false }
        }
        Err(e) => json_answer(500, json!({"error": format!("rendering the metrics failed: {e}")})),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jobq::fs::{Fault, FaultKind, SimFs};
    use jobq::store::request::parse_push;
    use jobq::{Options, Store};

    use super::*;
    use crate::server::auth::Auth;
    use crate::server::metrics::ServerMetrics;

    fn app(sim: &SimFs) -> App {
        let opts = Options { fs: Arc::new(sim.clone()), background: false, ..Options::default() };
        let store = Arc::new(Store::open("/db", opts).unwrap());
        App {
            durable: crate::server::wait::durable_watch(&store),
            store,
            auth: Arc::new(Auth::Open),
            config: jobq::api::Config::default(),
            max_body: 1 << 20,
            budget: Arc::new(crate::server::budget::Budget::new(1 << 20)),
            renders: Arc::new(crate::server::budget::Renders::new(2)),
            long_polls: Arc::new(crate::server::wait::LongPolls::new(4)),
            body_timeout: std::time::Duration::from_secs(1),
            metrics: Arc::new(ServerMetrics::new(4)),
            ops: Arc::new(Ops::new(None, false)),
            port: Port::Api,
            cluster: None,
        }
    }

    fn status(a: &OpsAnswer) -> (u16, serde_json::Value) {
        (a.status, serde_json::from_slice(&a.body).unwrap())
    }

    /// 503 "disk_low" while less than what is kept free is free (writes get
    /// 507, the store stays sound); 200 again once space is freed.
    #[test]
    fn health_says_when_space_is_short() {
        let sim = SimFs::new();
        let app = app(&sim);
        let low = jobq::fs::Space { total: 1 << 40, available: 1 << 20 };
        sim.set_space(Some(low));
        let (code, body) = status(&health(&app));
        assert_eq!((code, body["status"].as_str()), (503, Some("disk_low")), "{body}");
        assert!(body["reason"].as_str().unwrap().contains("1048576 bytes free"), "{body}");
        std::thread::sleep(std::time::Duration::from_millis(150));
        let e = app.store.push(1, &[parse_push(r#"{"spider":"s"}"#).unwrap()], None).unwrap_err();
        assert_eq!(jobq::api::status_of(&e), 507, "{e}");
        sim.set_space(None);
        let (code, body) = status(&health(&app));
        assert_eq!((code, body["status"].as_str()), (200, Some("ok")), "{body}");
    }

    /// 200 while writes work; 503 "disk_full" after ENOSPC, "poisoned" after
    /// EIO (each with the failure), "closing" once a signal came.
    #[test]
    fn health_statuses() {
        for (fault, want) in
            [(Some(FaultKind::Enospc), "disk_full"), (Some(FaultKind::Eio), "poisoned"), (None, "closing")]
        {
            let sim = SimFs::new();
            let app = app(&sim);
            let (code, body) = status(&health(&app));
            assert_eq!((code, body["status"].as_str()), (200, Some("ok")), "{body}");
            match fault {
                Some(kind) => {
                    // Sticky: a failed write of preallocated zeros alone is no error.
                    sim.set_fault(Some(Fault { at: 0, kind, sticky: true }));
                    assert!(app.store.push(1, &[parse_push(r#"{"spider":"s"}"#).unwrap()], None).is_err());
                }
                None => app.ops.begin_closing("SIGTERM"),
            }
            let (code, body) = status(&health(&app));
            assert_eq!((code, body["status"].as_str()), (503, Some(want)), "{body}");
            let reason = body["reason"].as_str().unwrap();
            let cause = if fault == Some(FaultKind::Enospc) { "No space left" } else { "" };
            assert!(reason.contains(cause) && !reason.is_empty(), "{reason}");
        }
    }
}
