//! Response bodies. A [`Reply`] is a whole answer, nothing (HEAD), or a stream
//! of [`Rows`]: each chunk rendered on the blocking pool when hyper asks for
//! more, so a slow reader holds no thread and a long listing is never in memory
//! whole. A rendering failure aborts the response (the client sees a cut-off
//! chunked body, never a short but valid answer). Dropping a streamed body
//! (the client left, the connection was closed) cancels its rows: a render in
//! progress stops at the next row.
//!
//! Every reply holds the connection's [`InFlight`] guard and the request's
//! metrics record ([`Held`]): the request counts as in progress until hyper
//! drops the body, and is counted as done (with its latency) then.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use super::budget::Share;
use super::conn::InFlight;
use super::metrics::Observed;
use jobq::api::{Cancel, Rows};

/// What a reply keeps until hyper drops it (for what their drops do).
#[allow(dead_code)]
pub struct Held {
    pub in_flight: InFlight,
    pub observed: Observed,
}

/// A whole answer's bytes with their share of `--max-buffered` (budget.rs):
/// hyper may drop the body before it wrote the bytes, so the share lives as
/// long as the bytes do.
struct Buffered {
    body: Vec<u8>,
    _share: Share,
}

impl AsRef<[u8]> for Buffered {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

pub struct Reply {
    kind: Kind,
    _held: Held,
}

enum Kind {
    Whole(Option<Bytes>),
    /// No body, and no length said (HEAD of a streamed answer).
    Nothing,
    Stream(RowsBody),
}

impl Reply {
    pub fn whole(body: Vec<u8>, share: Share, held: Held) -> Reply {
        let bytes = match share.bytes() {
            0 => Bytes::from(body),
            _ => Bytes::from_owner(Buffered { body, _share: share }),
        };
        Reply { kind: Kind::Whole((!bytes.is_empty()).then_some(bytes)), _held: held }
    }

    pub fn nothing(held: Held) -> Reply {
        Reply { kind: Kind::Nothing, _held: held }
    }

    /// Send `first`, then render the rest of `rows`; `cancel` is the rows' flag.
    pub fn stream(first: Vec<u8>, rows: Rows, cancel: Cancel, held: Held) -> Reply {
        let state = State::Ready(Bytes::from(first), rows);
        Reply { kind: Kind::Stream(RowsBody { state, cancel }), _held: held }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.kind {
            Kind::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Nothing => Poll::Ready(None),
            Kind::Stream(s) => s.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole(b) => b.is_none(),
            Kind::Nothing => true,
            Kind::Stream(s) => matches!(s.state, State::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Nothing => SizeHint::with_exact(0),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}

type Rendered = (Rows, Option<jobq::Result<Vec<u8>>>);

enum State {
    /// A chunk ready to send, and the rows after it.
    Ready(Bytes, Rows),
    Idle(Rows),
    Rendering(JoinHandle<Rendered>),
    Done,
}

struct RowsBody {
    state: State,
    cancel: Cancel,
}

impl Drop for RowsBody {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl RowsBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Ready(chunk, rows) => {
                    self.state = State::Idle(rows);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                State::Idle(mut rows) => {
                    self.state = State::Rendering(tokio::task::spawn_blocking(move || {
                        let next = rows.next();
                        (rows, next)
                    }));
                }
                State::Rendering(mut task) => match Pin::new(&mut task).poll(cx) {
                    Poll::Pending => {
                        self.state = State::Rendering(task);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(join)) => {
                        tracing::error!(error = %join, "rendering a streamed answer failed");
                        return Poll::Ready(Some(Err(io::Error::other(join.to_string()))));
                    }
                    Poll::Ready(Ok((_, None))) => return Poll::Ready(None),
                    Poll::Ready(Ok((rows, Some(Ok(chunk))))) => {
                        self.state = State::Ready(Bytes::from(chunk), rows);
                    }
                    Poll::Ready(Ok((_, Some(Err(e))))) => {
                        tracing::error!(error = %e, "reading the store while streaming an answer failed; aborting it");
                        return Poll::Ready(Some(Err(io::Error::other(e.to_string()))));
                    }
                },
                State::Done => return Poll::Ready(None),
            }
        }
    }
}
