//! Request routing for [`TestServer`](super::TestServer).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::Notify;

use super::ServerStats;
use crate::io::Activity;

/// Response body type of the test server.
pub(crate) type RespBody = BoxBody<Bytes, Infallible>;

/// Size of one frame of `/stream/{n}`.
const STREAM_FRAME: usize = 1024;

/// Everything a handler needs to know about the connection it runs on.
pub(crate) struct ConnCtx {
    pub(crate) conn_id: u64,
    pub(crate) requests: AtomicU64,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) keep_alive_hint: Option<u32>,
    pub(crate) close_after: Option<u64>,
    /// Asks the connection driver for a graceful shutdown (h2 GOAWAY).
    pub(crate) goaway: Arc<Notify>,
}

/// Counts a request as in flight (server-wide and per connection) while alive.
struct InFlight<'a>(&'a ConnCtx);

impl<'a> InFlight<'a> {
    fn new(ctx: &'a ConnCtx) -> Self {
        let now = ctx.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        ctx.activity.in_flight.fetch_add(1, Ordering::SeqCst);
        ctx.activity.touch();
        InFlight(ctx)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.activity.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.activity.touch();
    }
}

fn full(data: impl Into<Bytes>) -> RespBody {
    Full::new(data.into()).boxed()
}

fn simple(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp
}

/// Handles one request: routes it, then stamps the bookkeeping headers.
pub(crate) async fn handle(req: Request<Incoming>, ctx: Arc<ConnCtx>) -> Response<RespBody> {
    let nth = ctx.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let is_h1 = req.version() < Version::HTTP_2;
    let mut resp = {
        let _flight = InFlight::new(&ctx);
        route(req, &ctx).await
    };
    let headers = resp.headers_mut();
    headers.insert("x-conn-id", HeaderValue::from(ctx.conn_id));
    headers.insert("x-request-count", HeaderValue::from(nth));
    let closing = ctx.close_after == Some(nth);
    if is_h1 {
        if let Some(secs) = ctx.keep_alive_hint {
            if let Ok(v) = HeaderValue::from_str(&format!("timeout={secs}")) {
                headers.insert("keep-alive", v);
            }
        }
        if closing {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    } else if closing {
        // HTTP/2 has no `Connection: close`; the equivalent is a GOAWAY.
        ctx.goaway.notify_one();
    }
    resp
}

fn parse_arg<T: std::str::FromStr>(arg: Option<&str>) -> Option<T> {
    arg.and_then(|a| a.parse().ok())
}

async fn route(req: Request<Incoming>, ctx: &ConnCtx) -> Response<RespBody> {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = req.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let first = parts.next().unwrap_or("");
    let arg = parts.next();
    let record = || ctx.stats.record_request(request_id.as_deref());

    match (first, arg) {
        ("", None) => {
            record();
            simple(StatusCode::OK, "ok")
        }
        ("host", None) => {
            // What the client named as the host: `Host` (HTTP/1.1) or the
            // `:authority` pseudo-header (HTTP/2).
            record();
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default();
            Response::new(full(host))
        }
        ("authority", None) => {
            // The URI's authority (`:authority` over HTTP/2, none in an
            // HTTP/1 origin-form request) and the `Host` header, apart.
            record();
            let authority = req
                .uri()
                .authority()
                .map_or_else(|| "-".to_owned(), |a| a.to_string());
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            Response::new(full(format!("authority={authority} host={host}")))
        }
        ("header", Some(name)) => {
            record();
            let value = req
                .headers()
                .get(name)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            Response::new(full(value))
        }
        ("delay", Some(ms)) => match parse_arg::<u64>(Some(ms)) {
            Some(ms) => {
                record();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                simple(StatusCode::OK, "ok")
            }
            None => bad_request(record),
        },
        ("bytes", Some(n)) => match parse_arg::<usize>(Some(n)) {
            Some(n) => {
                record();
                let mut resp = Response::new(full(vec![b'x'; n]));
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                resp
            }
            None => bad_request(record),
        },
        ("stall", Some(ms)) => match parse_arg::<u64>(Some(ms)) {
            Some(ms) => {
                record();
                Response::new(
                    StallingBody {
                        started: false,
                        end: Box::pin(tokio::time::sleep(Duration::from_millis(ms))),
                    }
                    .boxed(),
                )
            }
            None => bad_request(record),
        },
        ("drip", Some(n)) => match parse_arg::<usize>(Some(n)) {
            Some(n) => {
                record();
                Response::new(
                    DripBody {
                        remaining: n,
                        next: Box::pin(tokio::time::sleep(Duration::ZERO)),
                    }
                    .boxed(),
                )
            }
            None => bad_request(record),
        },
        ("stream", Some(n)) => match parse_arg::<usize>(Some(n)) {
            Some(n) => {
                record();
                Response::new(
                    StreamingBody {
                        remaining: n,
                        sent_frames: 0,
                        yield_next: false,
                    }
                    .boxed(),
                )
            }
            None => bad_request(record),
        },
        ("echo", None) => match req.into_body().collect().await {
            Ok(collected) => {
                record();
                Response::new(full(collected.to_bytes()))
            }
            // The body could not be read (client went away): not processed.
            Err(_) => simple(StatusCode::BAD_REQUEST, "body read failed"),
        },
        ("status", Some(code)) => {
            record();
            match parse_arg::<u16>(Some(code)).and_then(|c| StatusCode::from_u16(c).ok()) {
                Some(status) if status.as_u16() >= 200 => {
                    let mut resp = Response::new(full(Bytes::new()));
                    *resp.status_mut() = status;
                    resp
                }
                _ => simple(StatusCode::BAD_REQUEST, "bad status"),
            }
        }
        _ => {
            record();
            simple(StatusCode::NOT_FOUND, "not found")
        }
    }
}

fn bad_request(record: impl FnOnce()) -> Response<RespBody> {
    record();
    simple(StatusCode::BAD_REQUEST, "bad argument")
}

/// Body of `/stall/{ms}`: `partial` at once, then nothing until its end,
/// `ms` milliseconds later (a server that stalls mid-body).
struct StallingBody {
    started: bool,
    end: Pin<Box<tokio::time::Sleep>>,
}

impl Body for StallingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.started {
            self.started = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial")))));
        }
        std::task::ready!(std::future::Future::poll(self.end.as_mut(), cx));
        Poll::Ready(None)
    }
}

/// Body of `/drip/{n}`: `n` one-byte frames, `DRIP_EVERY` apart (an event
/// stream: each frame reaches the client on its own).
struct DripBody {
    remaining: usize,
    next: Pin<Box<tokio::time::Sleep>>,
}

const DRIP_EVERY: Duration = Duration::from_millis(40);

impl Body for DripBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        std::task::ready!(std::future::Future::poll(self.next.as_mut(), cx));
        self.remaining -= 1;
        let at = tokio::time::Instant::now() + DRIP_EVERY;
        self.next.as_mut().reset(at);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown: chunked on HTTP/1.
        SizeHint::default()
    }
}

/// Body of `/stream/{n}`: `n` bytes in 1 KiB frames, yielding to the
/// scheduler between frames so the response really goes out in pieces.
/// Frame k is all one letter, `a` + k mod 26, so a client that joins the
/// frames in the wrong order or loses one is seen to.
struct StreamingBody {
    remaining: usize,
    sent_frames: usize,
    yield_next: bool,
}

impl Body for StreamingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.yield_next {
            self.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = self.remaining.min(STREAM_FRAME);
        self.remaining -= n;
        self.yield_next = true;
        let letter = b'a' + (self.sent_frames % 26) as u8;
        self.sent_frames += 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![letter; n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        // Deliberately unknown so HTTP/1 uses chunked transfer encoding.
        SizeHint::default()
    }
}
