//! The `/metrics` answer: the server's counters and the store's figures
//! (`Store::metrics`, `Store::report`) in the Prometheus text format. README.md
//! lists every metric. Nothing here reads a file (one `statvfs` of the data directory).

use std::sync::atomic::Ordering;

use super::http::App;
use super::metrics::{Dropped, Endpoint};
use super::prom::{Exposition, Kind};

/// Nanoseconds per second: durations are kept in ns and exported in seconds.
const NS: f64 = 1e9;

pub fn render(app: &App) -> String {
    let mut x = Exposition::default();
    server(app, &mut x);
    store(app, &mut x);
    if let Some(c) = &app.cluster {
        cluster(c, &mut x);
    }
    x.finish()
}

/// A cluster node's read indexes: the calls that waited for one and the rounds
/// that answered them (one round serves every call waiting, src/server/raft/batch.rs).
fn cluster(c: &super::raft::Cluster, x: &mut Exposition) {
    let ([leader, follower], lease) = c.read_index_counts();
    x.family(
        "jobq_read_index_waits_total",
        Kind::Counter,
        "Linearizable reads and followers' read-index requests that waited for a read index, by this node's role: \
         leader (a leadership confirmation) or follower (a request to the leader).",
    );
    x.sample("jobq_read_index_waits_total", &[("role", "leader")], leader.0);
    x.sample("jobq_read_index_waits_total", &[("role", "follower")], follower.0);
    x.family(
        "jobq_read_index_rounds_total",
        Kind::Counter,
        "Read-index rounds that answered them: heartbeat rounds confirming leadership (leader), \
         /_raft/read-index requests sent to the leader (follower).",
    );
    x.sample("jobq_read_index_rounds_total", &[("role", "leader")], leader.1);
    x.sample("jobq_read_index_rounds_total", &[("role", "follower")], follower.1);
    x.single(
        "jobq_read_index_lease_total",
        Kind::Counter,
        "Read indexes the leader answered from its lease, without a heartbeat round (not in the waits above).",
        lease,
    );
}

fn server(app: &App, x: &mut Exposition) {
    let m = &app.metrics;
    x.family("jobq_build_info", Kind::Gauge, "Always 1; its label is the version of jobq serving.");
    x.sample("jobq_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1u64);
    x.single(
        "jobq_start_time_seconds",
        Kind::Gauge,
        "When the server started, in seconds since the Unix epoch.",
        app.ops.started_unix(),
    );
    x.single(
        "jobq_closing",
        Kind::Gauge,
        "1 once SIGTERM or SIGINT was received: the server is finishing the requests in flight.",
        app.ops.closing().is_some(),
    );
    x.family(
        "jobq_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by endpoint (the kind of route, never a project or path) and status. \
         499: the connection went away before the answer.",
    );
    for ((endpoint, status), n) in m.requests() {
        x.sample("jobq_http_requests_total", &[("endpoint", endpoint.as_str()), ("status", &status.to_string())], n);
    }
    x.family(
        "jobq_http_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's head to its answer's last byte handed to the socket, by endpoint.",
    );
    for e in Endpoint::ALL {
        x.histogram("jobq_http_request_duration_seconds", &[("endpoint", e.as_str())], &m.latency(e), NS);
    }
    x.single("jobq_http_requests_in_flight", Kind::Gauge, "Requests being answered now.", m.in_flight());
    x.single(
        "jobq_http_buffered_bytes",
        Kind::Gauge,
        "Memory large request bodies and whole answers hold now, of --max-buffered.",
        app.budget.held() as u64,
    );
    x.single(
        "jobq_http_buffered_limit_bytes",
        Kind::Gauge,
        "--max-buffered: the most they may hold at once.",
        app.budget.total() as u64,
    );
    x.single(
        "jobq_http_long_polls_waiting",
        Kind::Gauge,
        "Long polls (changes and startjob with wait) waiting now; at most half of --max-connections.",
        app.long_polls.waiting() as u64,
    );
    x.single(
        "jobq_http_long_polls_cut_total",
        Kind::Counter,
        "Long polls answered at once, as with wait=0, because half of --max-connections were waiting.",
        app.long_polls.cut(),
    );
    let c = &m.connections;
    x.single(
        "jobq_connections_open",
        Kind::Gauge,
        "Client connections of the API listener open now.",
        c.open.load(Ordering::Relaxed),
    );
    x.single(
        "jobq_connections_max",
        Kind::Gauge,
        "The most API connections served at once (--max-connections, lowered to fit ulimit -n).",
        m.max_connections,
    );
    x.single(
        "jobq_connections_accepted_total",
        Kind::Counter,
        "API connections accepted.",
        c.accepted.load(Ordering::Relaxed),
    );
    x.single(
        "jobq_connection_limit_reached_total",
        Kind::Counter,
        "Times every connection slot was taken: accepting paused, new clients waited in the backlog.",
        c.limit_reached.load(Ordering::Relaxed),
    );
    x.single(
        "jobq_accept_errors_total",
        Kind::Counter,
        "Failed accepts (out of file descriptors: accepting pauses; or a client gone first).",
        c.accept_errors.load(Ordering::Relaxed),
    );
    x.family(
        "jobq_connections_dropped_total",
        Kind::Counter,
        "Connections the server dropped: no request head in time (head_timeout; crowded: within 1 s \
         while every slot was taken), or a client that read none of its answer (stalled_reader).",
    );
    for d in Dropped::ALL {
        x.sample("jobq_connections_dropped_total", &[("reason", d.as_str())], c.dropped_count(d));
    }
}

fn store(app: &App, x: &mut Exposition) {
    let e = app.store.metrics();
    let r = app.store.report();
    x.single("jobq_durable_seq", Kind::Gauge, "The highest log sequence number known durable.", e.durable_seq);
    x.single(
        "jobq_poisoned",
        Kind::Gauge,
        "1 when a write or fsync failed: the store refuses writes until a restart (see /health for why).",
        e.poison.is_some(),
    );
    x.single(
        "jobq_disk_full",
        Kind::Gauge,
        "1 when the store is poisoned by a write that failed for want of space (ENOSPC, EDQUOT).",
        e.poison.as_ref().is_some_and(|p| p.disk_full),
    );
    if let Some(d) = app.store.disk_space() {
        x.single(
            "jobq_disk_available_bytes",
            Kind::Gauge,
            "Bytes free on the data directory's file system (statvfs f_bavail).",
            d.available,
        );
        x.single(
            "jobq_disk_keep_free_bytes",
            Kind::Gauge,
            "Bytes the store keeps free (--keep-free): writes get 507 while less is available.",
            d.keep_free,
        );
        x.single("jobq_disk_low", Kind::Gauge, "1 while writes are refused for want of free space.", d.is_low());
    }
    x.family("jobq_jobs", Kind::Gauge, "Current jobs per state, over every project.");
    for (state, n) in e.jobs {
        x.sample("jobq_jobs", &[("state", state.as_str())], n);
    }
    x.single(
        "jobq_tail_jobs",
        Kind::Gauge,
        "Job versions in the log's tail not yet in an index file (what a restart replays).",
        e.tail_jobs,
    );
    x.single("jobq_log_segments", Kind::Gauge, "Log segment files.", e.log_segments);
    x.single(
        "jobq_log_bytes",
        Kind::Gauge,
        "Bytes of frames in the log segment files (preallocated zeros not counted).",
        e.log_bytes,
    );
    x.single("jobq_index_files", Kind::Gauge, "Index files in use.", e.index_files);
    x.single("jobq_index_bytes", Kind::Gauge, "Bytes in the index files in use.", e.index_bytes);
    x.single(
        "jobq_index_cached_bytes",
        Kind::Gauge,
        "Memory of the index files' caches of decoded posting blocks.",
        e.index_cached_bytes,
    );
    x.single("jobq_index_merges_total", Kind::Counter, "Merges of index files installed.", e.merges);
    x.single("jobq_index_merged_docs_total", Kind::Counter, "Docs written by index merges.", e.merged_docs);
    x.single("jobq_compactions_total", Kind::Counter, "Compactions done by this process.", e.compactions);
    x.single(
        "jobq_compaction_reclaimed_bytes_total",
        Kind::Counter,
        "Disk bytes the compactions of this process freed.",
        e.compaction_reclaimed_bytes,
    );
    x.single(
        "jobq_log_segments_held",
        Kind::Gauge,
        "Log segments compaction removed that old snapshots (answers still streaming) hold open.",
        e.segments_held,
    );
    x.single(
        "jobq_compactions_deferred_total",
        Kind::Counter,
        "Compaction cycles that waited because old snapshots held too many removed segments.",
        e.compactions_deferred,
    );
    x.single(
        "jobq_retention_purged_jobs_total",
        Kind::Counter,
        "Deleted jobs the retention (--retain-deleted) purged in this process.",
        e.purged_jobs,
    );
    x.single(
        "jobq_write_batches_cut_disk_full_total",
        Kind::Counter,
        "Write batches whose append met a full disk (ENOSPC, EDQUOT): cut from the log, answered 507, the store still taking writes.",
        e.writes_cut_disk_full,
    );
    if let Some(b) = e.superseded_bytes {
        x.single(
            "jobq_superseded_bytes",
            Kind::Gauge,
            "Log bytes holding only superseded job versions: what a compaction would free.",
            b,
        );
    }
    x.family(
        "jobq_fsync_duration_seconds",
        Kind::Histogram,
        "Group-commit syncs of the log (durable mark write and fdatasync) that acknowledged writes wait for.",
    );
    x.histogram("jobq_fsync_duration_seconds", &[], &e.fsync_ns, NS);
    x.family("jobq_commit_batch_writes", Kind::Histogram, "Writes made durable by each group-commit sync.");
    x.histogram("jobq_commit_batch_writes", &[], &e.batch_writes, 1.0);
    x.single(
        "jobq_open_duration_seconds",
        Kind::Gauge,
        "How long opening the store took at start (recovery included).",
        r.millis as f64 / 1e3,
    );
    x.single(
        "jobq_open_replayed_frames",
        Kind::Gauge,
        "Log frames replayed into the tail index at start.",
        r.replayed_frames,
    );
    x.single(
        "jobq_open_cut_bytes",
        Kind::Gauge,
        "Bytes of torn log tail recovery cut at start (writes never acknowledged).",
        r.cut.as_ref().map_or(0, |c| c.bytes),
    );
    x.single(
        "jobq_open_lost_durable",
        Kind::Gauge,
        "1 when recovery at start cut bytes that had been durable (acknowledged writes lost; see the log).",
        r.cut.as_ref().is_some_and(|c| c.lost_durable),
    );
    x.single(
        "jobq_open_index_files_set_aside",
        Kind::Gauge,
        "Index files recovery at start set aside (damaged, stale or covered) and rebuilt from the log.",
        r.discarded.len() as u64,
    );
}
