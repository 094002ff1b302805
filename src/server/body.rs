//! A response body streamed from [`Rows`]: each chunk is rendered on the blocking
//! pool when hyper asks for more, so a slow reader holds no thread and a long
//! listing is never in memory whole. A rendering failure aborts the response
//! (the client sees a cut-off chunked body, never a short but valid answer).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use jobq::api::Rows;

type Rendered = (Rows, Option<jobq::Result<Vec<u8>>>);

enum State {
    /// A chunk ready to send, and the rows after it.
    Ready(Bytes, Rows),
    Idle(Rows),
    Rendering(JoinHandle<Rendered>),
    Done,
}

pub struct RowsBody {
    state: State,
}

impl RowsBody {
    /// A body that sends `first`, then renders the rest of `rows`.
    pub fn new(first: Vec<u8>, rows: Rows) -> RowsBody {
        RowsBody { state: State::Ready(Bytes::from(first), rows) }
    }
}

impl Body for RowsBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
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

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
