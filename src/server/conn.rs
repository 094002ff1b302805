//! One client connection: hyper's HTTP/1.1 driver over the socket, watched so
//! that no client holds it open doing nothing. What it may wait for:
//!
//! - a request head: `header` from the connection's start or from the first byte
//!   of a next request (slow headers, slowloris); then it is dropped;
//! - nothing, between requests: `idle` (keep-alive); then hyper closes it;
//! - a request being answered: no limit while the server works, but `idle` once
//!   the client reads nothing of what is written; then it is dropped;
//! - a request body: `body`, enforced where the body is read (`http.rs`).
//!
//! While every connection slot is taken (`crowded`), idle connections are closed
//! at once and a request head gets at most [`CROWDED_HEADER`], so that clients
//! waiting to connect are let in soon: idle sockets cannot lock them out.
//!
//! A connection closed after a refusal that left the request body unread has its
//! write side shut and the input discarded for at most [`LINGER`], so that a
//! client still sending the body sees the answer, not a reset.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::http::{self, App};
use super::metrics::{ConnectionStats, Dropped};

/// How long a client may take, by phase (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub body: Duration,
}

/// The longest request line plus headers (431 beyond).
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// hyper's read and write buffers, per connection.
const MAX_BUFFER_BYTES: usize = 128 << 10;
/// How long unread input is discarded after the last answer.
pub const LINGER: Duration = Duration::from_secs(2);
/// The header timeout while every connection slot is taken.
pub const CROWDED_HEADER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head { since: Instant },
    /// Between requests.
    Idle { since: Instant },
    /// A request is being answered.
    Busy,
}

struct State {
    phase: Phase,
    /// Writes have been blocked (the client reads nothing) since.
    stalled_since: Option<Instant>,
    /// A request was answered without reading its body: linger at the end.
    body_left_unread: bool,
}

/// How a connection that overstayed is ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// Drop it: nothing owed to the client is lost.
    Now(Dropped, &'static str),
    /// It is between requests: let hyper close it once its last answer is out.
    Gracefully(&'static str),
}

/// What the connection is doing, shared by the socket wrapper, the handler (via
/// [`InFlight`]) and the watchdog.
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

impl Activity {
    fn new() -> Arc<Activity> {
        let state =
            State { phase: Phase::Head { since: Instant::now() }, stalled_since: None, body_left_unread: false };
        Arc::new(Activity { state: Mutex::new(state), changed: Notify::new() })
    }

    fn set(&self, p: Phase) {
        self.state.lock().phase = p;
        self.changed.notify_one();
    }

    /// A request head arrived: the connection is busy until the guard (held by
    /// the response body) is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.set(Phase::Busy);
        InFlight(self.clone())
    }

    /// The request being answered has a body that will not be read.
    pub fn body_left_unread(&self) {
        self.state.lock().body_left_unread = true;
    }

    fn read(&self, n: usize) {
        let mut s = self.state.lock();
        if let (Phase::Idle { .. }, true) = (s.phase, n > 0) {
            s.phase = Phase::Head { since: Instant::now() };
            drop(s);
            self.changed.notify_one();
        }
    }

    fn wrote(&self, blocked: bool) {
        let mut s = self.state.lock();
        match (s.stalled_since, blocked) {
            (None, true) => {
                s.stalled_since = Some(Instant::now());
                drop(s);
                self.changed.notify_one();
            }
            (Some(_), false) => s.stalled_since = None,
            _ => {}
        }
    }

    /// When the connection must end, and how. `closing`: a graceful close is
    /// already under way, so being idle no longer counts.
    fn deadline(&self, t: &Timeouts, crowded: bool, closing: bool) -> Option<(Instant, Close)> {
        let s = self.state.lock();
        if let Some(since) = s.stalled_since {
            return Some((
                since + t.idle,
                Close::Now(Dropped::StalledReader, "the client read none of the response for --idle-timeout"),
            ));
        }
        match s.phase {
            Phase::Head { since } if crowded => Some((
                since + t.header.min(CROWDED_HEADER),
                Close::Now(Dropped::Crowded, "no complete request head while every connection slot is taken"),
            )),
            Phase::Head { since } => Some((
                since + t.header,
                Close::Now(Dropped::HeadTimeout, "no complete request head within --header-timeout"),
            )),
            Phase::Idle { .. } if closing => None,
            Phase::Idle { since } if crowded => {
                Some((since, Close::Gracefully("idle while every connection slot is taken")))
            }
            Phase::Idle { since } => Some((since + t.idle, Close::Gracefully("idle longer than --idle-timeout"))),
            Phase::Busy => None,
        }
    }

    /// Resolves once the connection overstays.
    async fn expired(&self, t: &Timeouts, crowded: &mut watch::Receiver<bool>, closing: bool) -> Close {
        loop {
            let deadline = self.deadline(t, *crowded.borrow_and_update(), closing);
            let sleep = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            match deadline {
                Some((at, how)) if at <= Instant::now() => return how,
                _ => {
                    tokio::select! {
                        _ = sleep => {}
                        _ = self.changed.notified() => {}
                        // A closed channel: the server is stopping; `drain` says the rest.
                        r = crowded.changed() => if r.is_err() { std::future::pending::<()>().await },
                    }
                }
            }
        }
    }
}

/// A request in progress; the connection is idle again when it is dropped.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(Phase::Idle { since: Instant::now() });
    }
}

/// The socket, reporting reads and blocked writes to the [`Activity`].
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.activity.read(buf.filled().len() - before);
        }
        r
    }
}

impl Watched {
    fn track<T>(&self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &r {
            Poll::Pending => self.activity.wrote(true),
            Poll::Ready(Ok(_)) => self.activity.wrote(false),
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.track(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.track(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<hyper::Response<super::body::Reply>, Infallible>> + Send>>;

/// What a connection is told by the server as a whole.
#[derive(Clone)]
pub struct Signals {
    /// Every connection slot is taken.
    pub crowded: watch::Receiver<bool>,
    /// Finish the current request, then close.
    pub drain: watch::Receiver<bool>,
    /// Where the listener's connections are counted.
    pub stats: Arc<ConnectionStats>,
}

/// Serve one connection until the client leaves, a deadline passes, or (after
/// `drain` turns true) its current request is answered.
pub async fn serve(tcp: TcpStream, app: Arc<App>, timeouts: Timeouts, signals: Signals) {
    let Signals { mut crowded, mut drain, stats } = signals;
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let activity = Activity::new();
    let for_requests = activity.clone();
    let service = hyper::service::service_fn(move |req| -> HandlerFuture {
        let (app, activity) = (app.clone(), for_requests.clone());
        Box::pin(async move { Ok(http::handle(app, &activity, req).await) })
    });
    let mut conn = http1::Builder::new()
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_BUFFER_BYTES)
        .serve_connection(TokioIo::new(Watched { tcp, activity: activity.clone() }), service);
    // Once true, hyper closes the connection after its current answer.
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = drain.wait_for(|d| *d), if !closing => {
                closing = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            how = activity.expired(&timeouts, &mut crowded, closing) => match how {
                Close::Now(reason, why) => {
                    stats.dropped(reason);
                    tracing::debug!(reason = why, "dropping a connection");
                    return;
                }
                Close::Gracefully(why) => {
                    tracing::debug!(reason = why, "closing a connection");
                    closing = true;
                    Pin::new(&mut conn).graceful_shutdown();
                }
            },
        }
    };
    match ended {
        Ok(()) if activity.state.lock().body_left_unread => linger(conn.into_parts().io.into_inner().tcp).await,
        Ok(()) => {}
        Err(e) => tracing::debug!(error = %e, "connection ended"),
    }
}

/// Shut the write side, then read and drop what the client still sends until it
/// closes too, for at most [`LINGER`].
async fn linger(mut tcp: TcpStream) {
    if tcp.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 16 << 10];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
