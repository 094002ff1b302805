//! Response bodies. A [`Reply`] is a whole answer, nothing (HEAD), or a stream
//! of [`Rows`]: each chunk rendered on the blocking pool when hyper asks for
//! more, under a render permit (budget.rs: held from the render to its bytes'
//! share, not while they are sent), so a slow reader holds no thread nor
//! permit, and a long listing is never in memory whole. A rendering failure
//! aborts the response (the client sees a cut-off chunked body, never a short
//! but valid answer). Dropping a streamed body (the client left, the
//! connection was closed) cancels its rows: a render in progress stops at the
//! next row.
//!
//! Every reply holds the connection's [`InFlight`] guard and the request's
//! metrics record ([`Held`]): the request counts as in progress until hyper
//! drops the body, and is counted as done (with its latency) then.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use super::budget::{Budget, Permit, Renders, Share};
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
        let bytes = with_share(body, share);
        Reply { kind: Kind::Whole((!bytes.is_empty()).then_some(bytes)), _held: held }
    }

    pub fn nothing(held: Held) -> Reply {
        Reply { kind: Kind::Nothing, _held: held }
    }

    /// Send `first` (with its `share`), then render the rest of `rows`, each
    /// chunk under a permit of `renders` and, over [`FREE`](super::budget::FREE),
    /// with its share of `budget` (waiting for room: the client is reading);
    /// `cancel` is the rows' flag.
    pub fn stream(
        first: Vec<u8>,
        share: Share,
        rows: Rows,
        (budget, renders): (Arc<Budget>, Arc<Renders>),
        cancel: Cancel,
        held: Held,
    ) -> Reply {
        let state = State::Ready(with_share(first, share), rows);
        Reply { kind: Kind::Stream(RowsBody { state, cancel, budget, renders }), _held: held }
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

/// The rows, their next chunk, and its share when the budget had room.
type Rendered = (Rows, Option<jobq::Result<(Vec<u8>, Option<Share>)>>);

/// `body` as bytes that hold `share` as long as they live.
fn with_share(body: Vec<u8>, share: Share) -> Bytes {
    match share.bytes() {
        0 => Bytes::from(body),
        _ => Bytes::from_owner(Buffered { body, _share: share }),
    }
}

type Covering = Pin<Box<dyn std::future::Future<Output = Share> + Send>>;
type Permitting = Pin<Box<dyn std::future::Future<Output = Permit> + Send>>;

enum State {
    /// A chunk ready to send, and the rows after it.
    Ready(Bytes, Rows),
    Idle(Rows),
    /// Waiting for a render permit.
    Permitting(Rows, Permitting),
    Rendering(JoinHandle<Rendered>),
    /// A large chunk waiting for its share of the budget.
    Covering(Vec<u8>, Rows, Covering),
    Done,
}

struct RowsBody {
    state: State,
    cancel: Cancel,
    budget: Arc<Budget>,
    renders: Arc<Renders>,
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
                State::Idle(rows) => {
                    let renders = self.renders.clone();
                    self.state = State::Permitting(rows, Box::pin(async move { renders.permit().await }));
                }
                State::Permitting(mut rows, mut permitting) => match permitting.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = State::Permitting(rows, permitting);
                        return Poll::Pending;
                    }
                    Poll::Ready(permit) => {
                        let budget = self.budget.clone();
                        self.state = State::Rendering(tokio::task::spawn_blocking(move || {
                            let next = rows.next().map(|r| {
                                r.map(|c| {
                                    let share = budget.try_cover(c.len());
                                    (c, share)
                                })
                            });
                            drop(permit);
                            (rows, next)
                        }));
                    }
                },
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
                    Poll::Ready(Ok((rows, Some(Ok((chunk, share)))))) => {
                        self.state = match share {
                            Some(share) => State::Ready(with_share(chunk, share), rows),
                            // Waited for without the permit: renders go on meanwhile.
                            None => {
                                let covering = self.budget.clone().covered(chunk.len());
                                State::Covering(chunk, rows, Box::pin(covering))
                            }
                        };
                    }
                    Poll::Ready(Ok((_, Some(Err(e))))) => {
                        tracing::error!(error = %e, "reading the store while streaming an answer failed; aborting it");
                        return Poll::Ready(Some(Err(io::Error::other(e.to_string()))));
                    }
                },
                State::Covering(chunk, rows, mut covering) => match covering.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = State::Covering(chunk, rows, covering);
                        return Poll::Pending;
                    }
                    Poll::Ready(share) => self.state = State::Ready(with_share(chunk, share), rows),
                },
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A chunk past the first that finds no room waits for it (no frame, the
    /// stream not ended, no render permit held), and goes out once room is given
    /// back, holding it.
    #[tokio::test]
    async fn a_large_chunk_waits_for_its_share() {
        let budget = Arc::new(Budget::new(1 << 20));
        let renders = Arc::new(Renders::new(1));
        let other = budget.try_cover(900 << 10).unwrap();
        let rows = Rows::new(vec![300usize << 10], Cancel::new(), |n, out| {
            out.resize(n, b'x');
            Ok(())
        });
        let mut body = RowsBody {
            state: State::Ready(Bytes::from_static(b"first\n"), rows),
            cancel: Cancel::new(),
            budget: budget.clone(),
            renders: renders.clone(),
        };
        let frame = poll_fn(|cx| body.poll_frame(cx)).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "first\n");
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(200), poll_fn(|cx| body.poll_frame(cx))).await;
        assert!(waiting.is_err(), "no room: it waits");
        assert!(matches!(body.state, State::Covering(..)));
        assert_eq!(renders.free(), 1, "a chunk waiting for room holds no render permit");
        drop(other);
        let frame = poll_fn(|cx| body.poll_frame(cx)).await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(data.len(), (300 << 10) + 1);
        assert!(budget.held() >= 300 << 10, "held while the bytes live");
        drop(data);
        assert_eq!(budget.held(), 0);
        assert!(poll_fn(|cx| body.poll_frame(cx)).await.is_none());
    }
}
