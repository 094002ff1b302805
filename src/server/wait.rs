//! Long polls: `GET jobq/:pid/changes?wait=SECS` and `POST jobq/:pid/startjob?wait=SECS`.
//!
//! A waiting request holds no thread and does no work while it waits: it parks on
//! the durable position (a `watch` the store's group commit updates once per
//! durable batch, after its fsync) and on the shutdown signal, with a deadline.
//! When the position moves it reads the log from where its last read ended (the
//! feed's mark: no lookup) and parks again if nothing matched. So it answers only
//! with durable writes, and as soon as the batch that holds a matching one is
//! durable. That read (the frames just synced, from the page cache) runs right
//! there, up to [`INLINE_SCAN_BYTES`]; longer reads run on the blocking pool.
//!
//! A client that goes away drops the request's future: a wait ends there and
//! nothing more is done for it (hyper reads the socket while an answer is
//! pending and ends the connection at EOF). A `startjob` that was already
//! starting a job when its client left is like any `startjob` whose client left:
//! the job is running, its answer lost.
//!
//! The connection's timeouts do not end a wait: a connection is busy from the
//! request head to the answer, and `--idle-timeout` only counts between requests
//! or while the client reads none of an answer. The shutdown does: a waiting
//! request answers at once with what it has (the drain then closes its connection).
//!
//! A busy connection is never closed for a newcomer (conn.rs), so at most half
//! the connection slots wait at once ([`LongPolls`]): a long poll past that is
//! answered at once, as with `wait=0` (what a wait that times out answers: its
//! client asks again), and the other slots stay free for everyone else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::http::App;
use jobq::api::changes::{self, parse_wait, ChangesRequest};
use jobq::api::{self, write, Caller, Response};
use jobq::model::JobState;
use jobq::query::ChangeFilter;
use jobq::store::{FeedFrom, FeedPage};
use jobq::{Error, Store};

/// The long polls waiting at once: at most half the connection slots.
pub struct LongPolls {
    places: Arc<Semaphore>,
    cap: usize,
    /// Long polls answered at once for want of a place.
    cut: AtomicU64,
}

/// A long poll's place, held while it waits (None: it does not wait).
type Place = Option<OwnedSemaphorePermit>;

impl LongPolls {
    pub fn new(max_connections: usize) -> LongPolls {
        let cap = (max_connections / 2).max(1);
        LongPolls { places: Arc::new(Semaphore::new(cap)), cap, cut: AtomicU64::new(0) }
    }

    /// The deadline of a wait of `wait`, with the place it holds until then;
    /// without a place free, now (it answers at once, as with `wait=0`).
    fn admit(&self, wait: Duration) -> (Instant, Place) {
        let now = Instant::now();
        if wait.is_zero() {
            return (now, None);
        }
        match self.places.clone().try_acquire_owned() {
            Ok(place) => (now + wait, Some(place)),
            Err(_) => {
                self.cut.fetch_add(1, Ordering::Relaxed);
                (now, None)
            }
        }
    }

    /// Long polls waiting now.
    pub fn waiting(&self) -> usize {
        self.cap - self.places.available_permits()
    }

    /// Long polls answered at once because half the slots were waiting.
    pub fn cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }
}

/// What a parked request waits for.
enum Woken {
    /// The durable position moved.
    Durable,
    /// The deadline passed, or the server is shutting down.
    Done,
}

/// Park until the durable position moves past what `durable` has seen, the
/// deadline, or the shutdown.
async fn park(durable: &mut watch::Receiver<u64>, closing: &mut watch::Receiver<bool>, deadline: Instant) -> Woken {
    if *closing.borrow() {
        return Woken::Done;
    }
    tokio::select! {
        r = durable.changed() => if r.is_ok() { Woken::Durable } else { Woken::Done },
        _ = tokio::time::sleep_until(deadline) => Woken::Done,
        _ = closing.wait_for(|c| *c) => Woken::Done,
    }
}

/// Frame bytes a read may go through on the async threads: after a wake, the
/// frames of the batch just made durable, from the page cache (a thread handoff
/// per waiter would cost more than the read). A read that needs more goes on
/// the blocking pool.
const INLINE_SCAN_BYTES: u64 = 64 << 10;

/// Read the feed for `req` from `from`: right after a wake (`woken`), here, a
/// little; here too from the feed's end (nothing to read: a follower asking
/// again); else on the blocking pool.
async fn read(app: &Arc<App>, req: &Arc<ChangesRequest>, from: FeedFrom, woken: bool) -> Result<FeedPage, Response> {
    let at_end = matches!(from, FeedFrom::Seq(s) if s >= app.store.feed_position());
    if woken || at_end {
        let (r, s) = (req, &app.store);
        return s.changes_scanning(r.project, from, &r.filter, r.count, INLINE_SCAN_BYTES).map_err(|e| fault(&e));
    }
    let r = req.clone();
    blocking(&app.store, move |s| changes::read(s, &r, from)).await
}

/// Run `f` on the blocking pool (engine calls read files or wait for fsync); its
/// error, or a 500 when it failed to run, as the answer.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, Error> + Send + 'static,
) -> Result<T, Response> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(|e| fault(&e)),
        Err(e) => {
            tracing::error!(error = %e, "a request handler failed");
            Err(Response::error(500, "internal error: the request handler failed"))
        }
    }
}

fn fault(e: &Error) -> Response {
    Response::from_error(e)
}

/// `GET jobq/:pid/changes`: read; while nothing matched and the request may
/// wait, park until the next durable batch and read on from where it stopped.
pub async fn changes(app: &Arc<App>, project: u32, params: &[(String, String)]) -> Response {
    let req = match ChangesRequest::parse(project, params, &app.config) {
        Ok(r) => Arc::new(r),
        Err(e) => return fault(&e),
    };
    let (deadline, _place) = app.long_polls.admit(req.wait);
    let (mut durable, mut closing) = (app.durable.clone(), app.ops.closing_watch());
    let since = req.since.unwrap_or_else(|| app.store.feed_position());
    let mut from = FeedFrom::Seq(since);
    let mut woken = false;
    loop {
        // Seen before the read: a batch made durable after it wakes the park below.
        durable.borrow_and_update();
        let page = match read(app, &req, from, std::mem::take(&mut woken)).await {
            Ok(p) => p,
            Err(answer) => return answer,
        };
        let (found, mark, caught_up) = match page {
            FeedPage::Changes { changes, mark, caught_up } => (changes, mark, caught_up),
            FeedPage::Gone { oldest } => return changes::gone(since, oldest),
        };
        let out_of_time = Instant::now() >= deadline || *closing.borrow();
        if !found.is_empty() || out_of_time {
            return changes::lines(&found, mark.seq);
        }
        from = FeedFrom::Mark(mark);
        if !caught_up {
            continue;
        }
        match park(&mut durable, &mut closing, deadline).await {
            Woken::Durable => woken = true,
            Woken::Done => return changes::lines(&[], mark.seq),
        }
    }
}

/// `POST jobq/:pid/startjob?wait=SECS`: start the next pending job; when there is
/// none, follow the project's changes (from a position taken before the first
/// attempt, so no push is missed) and try again at each new pending job, until
/// one is started or the time is up. Concurrent waiters never get the same job:
/// each attempt is an ordinary `startjob` (one write, under the writer lock).
pub async fn startjob(
    app: &Arc<App>,
    caller: &Caller,
    project: u32,
    params: &[(String, String)],
    body: &[u8],
) -> Response {
    let (wait, fields) = match (parse_wait(params), write::start_fields(body)) {
        (Ok(w), Ok(f)) => (w, Arc::new(f)),
        (Err(e), _) | (_, Err(e)) => return fault(&e),
    };
    let (deadline, _place) = app.long_polls.admit(wait);
    let (mut durable, mut closing) = (app.durable.clone(), app.ops.closing_watch());
    let pending = Arc::new(ChangesRequest {
        project,
        since: None,
        count: 1,
        wait,
        filter: ChangeFilter { states: vec![JobState::Pending], ..ChangeFilter::default() },
    });
    let mut from = FeedFrom::Seq(app.store.feed_position());
    let mut woken = false;
    loop {
        let (f, actor) = (fields.clone(), caller.actor.clone());
        match blocking(&app.store, move |s| write::start(s, project, &f, actor.as_deref())).await {
            Ok(Some(started)) => return started,
            Ok(None) => {}
            Err(answer) => return answer,
        }
        // Nothing pending: wait for a change that makes a job of the project pending.
        loop {
            if Instant::now() >= deadline || *closing.borrow() {
                return write::nothing_started();
            }
            durable.borrow_and_update();
            let page = match read(app, &pending, from, std::mem::take(&mut woken)).await {
                Ok(p) => p,
                Err(answer) => return answer,
            };
            match page {
                FeedPage::Changes { changes, mark, caught_up } => {
                    from = FeedFrom::Mark(mark);
                    if !changes.is_empty() {
                        break;
                    }
                    if !caught_up {
                        continue;
                    }
                }
                // Compaction removed what was not read yet: look at the project again.
                FeedPage::Gone { .. } => {
                    from = FeedFrom::Seq(app.store.feed_position());
                    break;
                }
            }
            match park(&mut durable, &mut closing, deadline).await {
                Woken::Durable => woken = true,
                Woken::Done => return write::nothing_started(),
            }
        }
    }
}

/// Does this request wait (and so go through this module)?
pub fn waits(route: &api::Route, params: &[(String, String)]) -> bool {
    match route {
        api::Route::Changes(_) => true,
        api::Route::StartJob(_) => params.iter().any(|(n, _)| n == "wait"),
        _ => false,
    }
}

/// The durable position, as the store's group commit moves it.
pub fn durable_watch(store: &Store) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(store.feed_position());
    store.on_durable(Box::new(move |seq| {
        tx.send_if_modified(|v| {
            let moved = seq > *v;
            *v = (*v).max(seq);
            moved
        });
    }));
    rx
}
