//! What the server counts: requests by endpoint and status, with a latency
//! histogram per endpoint; requests in flight; connections accepted, open,
//! and dropped. Every label comes from a fixed set (endpoint kinds, the
//! statuses the server answers with, drop reasons): nothing a client sends
//! (a project, a path) becomes a label, so the series stay bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use jobq::api::route::{self, RouteError};
use jobq::api::Route;
use jobq::histogram::{Histogram, HistogramSnapshot};

/// What a request asked for: the route kind, a server path, or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Count,
    List,
    Summary,
    JobSummary,
    Changes,
    Push,
    Update,
    StartJob,
    Cancel,
    CancelJob,
    Job,
    JobField,
    SpiderId,
    ServerTime,
    Health,
    Metrics,
    /// A path of no endpoint (404).
    NotFound,
    /// An endpoint's path with a malformed id or state (400).
    InvalidPath,
    /// A cluster node's `/_raft/*` and `/cluster` paths.
    Cluster,
}

impl Endpoint {
    pub const ALL: [Endpoint; 19] = [
        Endpoint::Count,
        Endpoint::List,
        Endpoint::Summary,
        Endpoint::JobSummary,
        Endpoint::Changes,
        Endpoint::Push,
        Endpoint::Update,
        Endpoint::StartJob,
        Endpoint::Cancel,
        Endpoint::CancelJob,
        Endpoint::Job,
        Endpoint::JobField,
        Endpoint::SpiderId,
        Endpoint::ServerTime,
        Endpoint::Health,
        Endpoint::Metrics,
        Endpoint::NotFound,
        Endpoint::InvalidPath,
        Endpoint::Cluster,
    ];

    /// The `endpoint` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Count => "count",
            Endpoint::List => "list",
            Endpoint::Summary => "summary",
            Endpoint::JobSummary => "jobsummary",
            Endpoint::Changes => "changes",
            Endpoint::Push => "push",
            Endpoint::Update => "update",
            Endpoint::StartJob => "startjob",
            Endpoint::Cancel => "cancel",
            Endpoint::CancelJob => "cancel_job",
            Endpoint::Job => "job",
            Endpoint::JobField => "job_field",
            Endpoint::SpiderId => "spider_id",
            Endpoint::ServerTime => "server_time",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::NotFound => "not_found",
            Endpoint::InvalidPath => "invalid_path",
            Endpoint::Cluster => "cluster",
        }
    }

    /// The endpoint of a JobQ API path.
    pub fn of_api_path(path: &str) -> Endpoint {
        match route::parse(path) {
            Ok(r) => Endpoint::of(&r),
            Err(RouteError::NotFound) => Endpoint::NotFound,
            Err(RouteError::Bad(_)) => Endpoint::InvalidPath,
        }
    }

    fn of(r: &Route) -> Endpoint {
        match r {
            Route::Count(_) => Endpoint::Count,
            Route::List(_) => Endpoint::List,
            Route::Summary { .. } => Endpoint::Summary,
            Route::JobSummary(_) => Endpoint::JobSummary,
            Route::Changes(_) => Endpoint::Changes,
            Route::Push(_) => Endpoint::Push,
            Route::Update(_) => Endpoint::Update,
            Route::StartJob(_) => Endpoint::StartJob,
            Route::Cancel(_) => Endpoint::Cancel,
            Route::CancelJob(_) => Endpoint::CancelJob,
            Route::Job(_) => Endpoint::Job,
            Route::JobField(..) => Endpoint::JobField,
            Route::SpiderId { .. } => Endpoint::SpiderId,
            Route::ServerTime => Endpoint::ServerTime,
        }
    }
}

/// Upper bounds of the request-latency buckets, in nanoseconds (250 µs to 30 s).
pub const LATENCY_BOUNDS_NS: [u64; 16] = [
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// The status recorded for a request whose answer was never sent: the
/// connection was dropped (the client left, a timeout, the drain ended) first.
pub const NO_ANSWER: u16 = 499;

/// Why the server dropped a connection without finishing with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// No complete request head within `--header-timeout`.
    HeadTimeout,
    /// No complete request head within 1 s while every slot was taken.
    Crowded,
    /// The client read none of an answer for `--idle-timeout`.
    StalledReader,
}

impl Dropped {
    pub const ALL: [Dropped; 3] = [Dropped::HeadTimeout, Dropped::Crowded, Dropped::StalledReader];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::HeadTimeout => "head_timeout",
            Dropped::Crowded => "crowded",
            Dropped::StalledReader => "stalled_reader",
        }
    }
}

/// Connections of the API listener.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    /// Times every slot was taken and accepting paused.
    pub limit_reached: AtomicU64,
    /// Failed accepts (out of file descriptors, a client gone before accept).
    pub accept_errors: AtomicU64,
    dropped: [AtomicU64; 3],
}

impl ConnectionStats {
    pub fn dropped(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped_count(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    /// Counts the connection open until the guard is dropped.
    pub fn opened(self: &Arc<Self>) -> OpenConnection {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// An open connection, counted in [`ConnectionStats::open`] while it lives.
pub struct OpenConnection(Arc<ConnectionStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The server's counters.
#[derive(Debug)]
pub struct ServerMetrics {
    requests: Mutex<BTreeMap<(Endpoint, u16), u64>>,
    latency: Vec<Histogram>,
    in_flight: AtomicU64,
    pub connections: Arc<ConnectionStats>,
    /// The most connections the API listener serves at once.
    pub max_connections: u64,
}

impl ServerMetrics {
    pub fn new(max_connections: usize) -> ServerMetrics {
        ServerMetrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Endpoint::ALL.iter().map(|_| Histogram::new(&LATENCY_BOUNDS_NS)).collect(),
            in_flight: AtomicU64::new(0),
            connections: Arc::default(),
            max_connections: max_connections as u64,
        }
    }

    /// A request to `endpoint` began: it counts in flight until the record is
    /// dropped, then by its status, with its latency.
    pub fn start(self: &Arc<Self>, endpoint: Endpoint) -> Observed {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Observed { metrics: self.clone(), endpoint, status: NO_ANSWER, started: Instant::now() }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests done, by endpoint and status (only pairs seen).
    pub fn requests(&self) -> Vec<((Endpoint, u16), u64)> {
        self.requests.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Latency of the requests done to `endpoint`, in nanoseconds.
    pub fn latency(&self, endpoint: Endpoint) -> HistogramSnapshot {
        self.latency[endpoint as usize].snapshot()
    }
}

/// One request being answered; recorded when dropped (after the answer's last
/// byte was handed to the socket, or when the connection went away).
pub struct Observed {
    metrics: Arc<ServerMetrics>,
    endpoint: Endpoint,
    status: u16,
    started: Instant,
}

impl Observed {
    /// The status the request was answered with.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let m = &self.metrics;
        *m.requests.lock().entry((self.endpoint, self.status)).or_insert(0) += 1;
        m.latency[self.endpoint as usize].observe(self.started.elapsed().as_nanos() as u64);
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_path() {
        let cases = [
            ("/jobq/1/count", "count"),
            ("/jobq/1/2/3/cancel", "cancel_job"),
            ("/jobs/1/2/3/tags", "job_field"),
            ("/ids/1/spider/a/b", "spider_id"),
            ("/system/ts", "server_time"),
            ("/jobq/x/count", "invalid_path"),
            ("/nope", "not_found"),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::of_api_path(path).as_str(), want, "{path}");
        }
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "ALL is in declaration order");
        }
        for (i, d) in Dropped::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
    }

    #[test]
    fn a_request_counts_in_flight_then_by_status() {
        let m = Arc::new(ServerMetrics::new(8));
        let mut o = m.start(Endpoint::Count);
        assert_eq!(m.in_flight(), 1);
        o.answered(200);
        drop(o);
        drop(m.start(Endpoint::Push));
        assert_eq!(m.in_flight(), 0);
        assert_eq!(m.requests(), vec![((Endpoint::Count, 200), 1), ((Endpoint::Push, NO_ANSWER), 1)]);
        assert_eq!(m.latency(Endpoint::Count).count, 1);
    }
}
