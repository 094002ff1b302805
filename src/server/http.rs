//! The one axum handler: read the body (within the limit), then authenticate and
//! answer through `jobq::api` on the blocking pool (engine calls wait for fsync or
//! read the log), and turn the answer into an HTTP response.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use http_body::Body as _;

use super::auth::Auth;
use super::body::RowsBody;
use jobq::api::{self, Caller};
use jobq::Store;

pub const JSON_LINES: &str = "application/x-jsonlines";

/// What every request shares.
pub struct App {
    pub store: Arc<Store>,
    pub auth: Auth,
    pub config: api::Config,
    pub max_body: usize,
}

/// An answer ready to send: whole, or a first chunk and the rows after it.
enum Prepared {
    Whole { status: u16, allow: Option<&'static str>, body: Vec<u8>, unauthorized: bool },
    Streamed { first: Vec<u8>, rest: api::Rows },
}

fn whole(status: u16, body: Vec<u8>) -> Prepared {
    Prepared::Whole { status, allow: None, body, unauthorized: false }
}

pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let prepared = if declared.is_some_and(|n| n > app.max_body as u64) {
        too_large(app.max_body)
    } else {
        match read_body(body, app.max_body).await {
            Err(BodyError::TooLarge) => too_large(app.max_body),
            Err(BodyError::Read(e)) => whole(400, api::error_line(&format!("reading the request body failed: {e}"))),
            Ok(bytes) => {
                let auth_header = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
                let method = api::Method::parse(parts.method.as_str());
                let path = parts.uri.path().to_string();
                let query = parts.uri.query().unwrap_or("").to_string();
                let app2 = app.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let request = api::Request { method, path: &path, query: &query, body: &bytes, cancel: api::Cancel::new() };
                    answer(&app2, auth_header.as_deref(), &request)
                });
                match task.await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "a request handler failed");
                        whole(500, api::error_line("internal error: the request handler failed"))
                    }
                }
            }
        }
    };
    let status_of = |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (status, body, allow, unauthorized) = match prepared {
        Prepared::Whole { status, allow, body, unauthorized } => {
            (status_of(status), Body::from(body), allow, unauthorized)
        }
        Prepared::Streamed { first, rest } => (StatusCode::OK, Body::new(RowsBody::new(first, rest)), None, false),
    };
    let micros = started.elapsed().as_micros() as u64;
    if status.is_server_error() {
        tracing::warn!(method = %parts.method, path = %parts.uri.path(), status = status.as_u16(), micros, "request failed");
    } else {
        tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = status.as_u16(), micros, "request");
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_LINES));
    if let Some(a) = allow {
        h.insert(header::ALLOW, HeaderValue::from_static(a));
    }
    if unauthorized {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"jobq\""));
    }
    resp
}

fn too_large(limit: usize) -> Prepared {
    whole(413, api::error_line(&format!("the request body is over the {limit}-byte limit (--max-body)")))
}

/// Authenticate, answer, and render the first chunk of a streamed answer here, so
/// that a failure before anything was sent is still a proper error status, and a
/// short answer goes out whole (with a length, not chunked).
fn answer(app: &App, auth_header: Option<&[u8]>, request: &api::Request<'_>) -> Prepared {
    let caller: Caller = match app.auth.authenticate(&app.store, auth_header) {
        Ok(c) => c,
        // The clock is public (the hubstorage client asks for it without credentials).
        Err(_) if api::route::parse(request.path).is_ok_and(|r| r == api::Route::ServerTime) => {
            Caller { actor: None, scope: api::Scope::Projects(Vec::new()) }
        }
        Err(refused) => {
            let body = api::error_line(&refused.message());
            return Prepared::Whole { status: 401, allow: None, body, unauthorized: true };
        }
    };
    let resp = api::handle(&app.store, &caller, &app.config, request);
    match resp.body {
        api::Body::Full(body) => Prepared::Whole { status: resp.status, allow: resp.allow, body, unauthorized: false },
        api::Body::Stream(mut rows) => match rows.next() {
            None => whole(resp.status, Vec::new()),
            Some(Err(e)) => whole(api::status_of(&e), api::error_line(&e.to_string())),
            Some(Ok(mut first)) => match rows.next() {
                None => whole(resp.status, first),
                Some(Err(e)) => whole(api::status_of(&e), api::error_line(&e.to_string())),
                Some(Ok(second)) => {
                    first.extend_from_slice(&second);
                    Prepared::Streamed { first, rest: rows }
                }
            },
        },
    }
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// The whole request body, refused as soon as it passes `limit` bytes.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Ok(out),
            Some(Err(e)) => return Err(BodyError::Read(e)),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if out.len() + data.len() > limit {
                        return Err(BodyError::TooLarge);
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}
