//! The client side of cluster traffic: signed POSTs to a peer over hyper's
//! HTTP/1.1 client on a tokio TcpStream, with a connect and a request timeout.
//! A [`Link`] keeps one connection to its peer open between requests and opens
//! a new one when that one is gone; a [`Pool`] keeps idle links for the next
//! caller (forwards, read indexes, and openraft's leadership checks, which make
//! a new network client for every heartbeat round).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header;

/// The node a Raft request is meant for: a process that is another node (a
/// `--peer` address naming the wrong node, a directory started under another
/// `--node-id`) refuses it, so that no process counts as two nodes. Not signed:
/// it guards against mistakes; the signature guards against strangers.
pub const TO_NODE: &str = "x-jobq-to-node";
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::sign::ClusterKey;

/// The longest a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The largest answer read from a peer.
pub const MAX_ANSWER: usize = 256 << 20;

/// A request body sent whole.
pub struct Whole(Option<Bytes>);

impl Body for Whole {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// Why a request to a peer failed.
#[derive(Debug)]
pub enum Failed {
    /// No connection to send it on: the peer never got the request.
    NotSent(String),
    /// A broken connection, or no answer in time: the peer may have got it.
    Unreachable(String),
    /// The peer answered with this status and body (not 200).
    Status(u16, Vec<u8>),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::NotSent(why) | Failed::Unreachable(why) => f.write_str(why),
            Failed::Status(s, body) => write!(f, "answered {s}: {}", String::from_utf8_lossy(body).trim()),
        }
    }
}

/// An answer from a peer.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One peer's address and, between requests, an open connection to it.
pub struct Link {
    pub addr: String,
    key: ClusterKey,
    conn: Option<SendRequest<Whole>>,
}

impl Link {
    pub fn new(addr: String, key: ClusterKey) -> Link {
        Link { addr, key, conn: None }
    }

    /// It holds a connection that was open after its last answer.
    pub fn is_open(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.is_closed())
    }

    async fn connect(&mut self) -> Result<SendRequest<Whole>, Failed> {
        if let Some(c) = self.conn.take() {
            if !c.is_closed() {
                return Ok(c);
            }
        }
        let not_sent = |why: String| Failed::NotSent(format!("{}: {why}", self.addr));
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| not_sent("connect timed out".into()))?
            .map_err(|e| not_sent(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) =
            http1::handshake(TokioIo::new(tcp)).await.map_err(|e| not_sent(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// POST `body` to `path`, signed; the whole answer within `timeout`.
    pub async fn post(&mut self, path: &str, body: Vec<u8>, timeout: Duration) -> Result<Answer, Failed> {
        self.post_to(path, body, timeout, None).await
    }

    /// [`Link::post`] addressed to node `to` (the [`TO_NODE`] header): a
    /// process that is not that node refuses it.
    pub async fn post_to(
        &mut self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        to: Option<u64>,
    ) -> Result<Answer, Failed> {
        let fut = async {
            let mut sender = self.connect().await?;
            let signature = self.key.sign("POST", path, &body);
            let mut req = hyper::Request::post(path)
                .header(header::HOST, self.addr.as_str())
                .header(header::AUTHORIZATION, signature)
                .header(header::CONTENT_LENGTH, body.len());
            if let Some(to) = to {
                req = req.header(TO_NODE, to);
            }
            let req =
                req.body(Whole(Some(Bytes::from(body)))).map_err(|e| Failed::Unreachable(format!("request: {e}")))?;
            sender.ready().await.map_err(|e| Failed::NotSent(format!("{}: {e}", self.addr)))?;
            let resp =
                sender.send_request(req).await.map_err(|e| Failed::Unreachable(format!("{}: {e}", self.addr)))?;
            let (parts, incoming) = resp.into_parts();
            let body =
                read_all(incoming, MAX_ANSWER).await.map_err(|e| Failed::Unreachable(format!("{}: {e}", self.addr)))?;
            Ok((sender, Answer { status: parts.status.as_u16(), body }))
        };
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(Failed::Unreachable(format!("{}: no answer within {} ms", self.addr, timeout.as_millis()))),
            Ok(Err(e)) => Err(e),
            Ok(Ok((sender, answer))) => {
                self.conn = Some(sender);
                Ok(answer)
            }
        }
    }

    /// [`Link::post_to`], then the 200 answer's body.
    pub async fn call(&mut self, path: &str, body: Vec<u8>, timeout: Duration, to: u64) -> Result<Vec<u8>, Failed> {
        let a = self.post_to(path, body, timeout, Some(to)).await?;
        match a.status {
            200 => Ok(a.body),
            s => Err(Failed::Status(s, a.body)),
        }
    }
}

/// Idle links shared by a node's callers, at most [`Pool::PER_PEER`] a peer.
#[derive(Clone)]
pub struct Pool {
    key: ClusterKey,
    idle: Arc<Mutex<Vec<Link>>>,
}

impl Pool {
    pub const PER_PEER: usize = 32;

    pub fn new(key: ClusterKey) -> Pool {
        Pool { key, idle: Arc::new(Mutex::new(Vec::new())) }
    }

    /// An idle link to `addr`, or a new one (it connects on its first request).
    pub fn take(&self, addr: &str) -> Link {
        let mut idle = self.idle.lock();
        match idle.iter().rposition(|l| l.addr == addr) {
            Some(i) => idle.swap_remove(i),
            None => Link::new(addr.to_string(), self.key.clone()),
        }
    }

    /// Keep `link` for the next caller if its connection is still open.
    pub fn give_back(&self, link: Link) {
        if !link.is_open() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.iter().filter(|l| l.addr == link.addr).count() < Pool::PER_PEER {
            idle.push(link);
        }
    }
}

/// A body whole, refused past `limit` bytes.
pub async fn read_all<B>(mut body: B, limit: usize) -> Result<Vec<u8>, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Ok(out),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if out.len() + data.len() > limit {
                        return Err(format!("the answer is over {limit} bytes"));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}
