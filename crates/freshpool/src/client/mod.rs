//! The [`Client`]: a cheap handle to one shared pool, and the request path
//! (checkout, send, timeouts, safe retry).

mod attempt;
mod content_length;
mod prepare;
mod retry_copy;
mod sending;
mod span_uri;
pub(crate) use span_uri::shown_url;
mod unsupported;
mod uri_memo;

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Uri};

use crate::body::{Body, RequestBody};
use crate::builder::ClientBuilder;
use crate::connect::{proxy, Connector};
use crate::deadline::{RequestDeadline, Timeout};
use crate::error::{Error, Kind};
use crate::pool::key::SecurityContext;
use crate::pool::Pool;
use crate::stats::PoolStats;

/// The name of each request's span (DEBUG), which the send loop checks
/// before it records a field on the current span (`attempt::request_span`).
const REQUEST_SPAN: &str = "freshpool.request";

/// An HTTP client over one shared, bounded connection pool.
///
/// Build one per process (or per distinct configuration) and clone it
/// freely: clones are an `Arc` bump and share the pool, so every caller
/// reuses the same warm connections.
///
/// ```no_run
/// # async fn run() -> Result<(), freshpool::Error> {
/// let client = freshpool::Client::builder()
///     .max_connections_per_host(32)
///     .build()?;
/// let response = client.get("http://127.0.0.1:8080/").await?;
/// assert!(response.status().is_success());
/// let body = response.into_body().bytes().await?;
/// # Ok(()) }
/// ```
///
/// # Runtimes
///
/// A client may be used from several tokio runtimes. Each connection is
/// driven by a task on the runtime that opened it. A multi-thread runtime
/// runs that task for as long as the runtime lives, so its connections are
/// shared by every caller. A *current-thread* runtime runs its tasks only
/// while a thread is inside its `block_on`, so a request from elsewhere on
/// one of its connections would wait until it is driven again (hyper-util's
/// pool, and so reqwest's, lets that happen). Here, requests on a
/// current-thread runtime use connections of their own, opened and driven
/// by that runtime, and no other request uses those:
///
/// - `max_connections_per_host` applies to each current-thread runtime's
///   share and to the shared one apart (`max_connections_total` bounds them
///   all);
/// - [`PoolStats`] shows one entry per share ([`OriginStats::runtime`](crate::OriginStats::runtime));
/// - a current-thread runtime's connections close when it is dropped, and
///   its share is forgotten once found unused twice (a runtime built per
///   call leaves at most two behind);
/// - a request waiting for a connection whose future another runtime polls
///   by then (moved between runtimes while it waited) leaves the first
///   runtime's queue and asks again in the runtime polling it.
///
/// A request polled outside any tokio runtime (a caller's own executor)
/// runs only on a warm connection that a multi-thread runtime drives, and
/// without timers: one that must wait for the pool or dial, or that has a
/// `timeout`, fails with [`Kind::Closed`](crate::Kind::Closed) saying so;
/// `response_header_timeout` is not applied there. A response body may be
/// read by another executor while the runtime that sent its request is
/// alive, its `timeout` included (after that runtime shut down, polling
/// that timer panics: tokio's); `read_timeout` does not apply outside a
/// runtime.
///
/// ```no_run
/// let client = freshpool::Client::new();
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// // This request uses a connection of `rt`'s own, driven by `rt`.
/// rt.block_on(client.get("http://127.0.0.1:8080/")).unwrap();
/// let stats = client.stats();
/// assert_eq!(stats.origins[0].runtime, Some(rt.handle().id().to_string().parse().unwrap()));
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub pool: Pool,
    pub connector: Arc<Connector>,
    /// The pool key's settings for requests that go direct.
    pub security: Arc<SecurityContext>,
    /// Which proxy (and so which security context) each URI uses.
    pub routes: proxy::Routes,
}

impl Default for Client {
    // (Tracked: the pool-per-request warning names where clients are built.)
    #[track_caller]
    fn default() -> Self {
        Client::new()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("pool", self.inner.pool.config())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with the default settings (see [`ClientBuilder`]).
    ///
    /// ```
    /// let client = freshpool::Client::new();
    /// let same_pool = client.clone();
    /// # drop(same_pool);
    /// ```
    #[track_caller]
    pub fn new() -> Client {
        ClientBuilder::new()
            .build()
            .expect("the default configuration is valid")
    }

    /// Starts configuring a client.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = freshpool::Client::builder()
    ///     .pool_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn from_parts(inner: ClientInner) -> Client {
        Client {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &ClientInner {
        &self.inner
    }

    /// Sends a request and returns the response head with a streaming body.
    /// The request URI must be absolute (`http://host/path`).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let client = freshpool::Client::new();
    /// let request = http::Request::post("http://127.0.0.1:8080/echo")
    ///     .header("idempotency-key", "order-42")
    ///     .body("payload")
    ///     .unwrap();
    /// let response = client.request(request).await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn request<B: Into<RequestBody>>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + Send + 'static {
        let mut request = request.map(Into::into);
        lowercase_scheme(request.uri_mut());
        self.start(Ok((request, true)), Location::caller())
    }

    /// `GET uri`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let text = freshpool::Client::new().get("http://127.0.0.1:8080/").await?.into_body().text().await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn get(
        &self,
        uri: &str,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + Send + 'static {
        let request = build_request(http::Method::GET, uri, RequestBody::empty());
        self.start(request, Location::caller())
    }

    /// `POST uri` with a body.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let response = freshpool::Client::new().post("http://127.0.0.1:8080/echo", "hi").await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn post(
        &self,
        uri: &str,
        body: impl Into<RequestBody>,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + Send + 'static {
        let request = build_request(http::Method::POST, uri, body.into());
        self.start(request, Location::caller())
    }

    /// The future of one request: the send loop, polled in the request's
    /// span under the overall `timeout` by one layer, [`ResponseFuture`]
    /// (a wrapper per concern moved the send loop once more each). The
    /// send loop is boxed: callers embed the future they await and move it
    /// into place, twice per level of their async stack (callgrind), so it
    /// is 56 bytes instead of ~1,000.
    ///
    /// `request` comes with whether its URI may carry a `user:password@`
    /// (known from `uri_memo` for a URL string). Inlined into `get`,
    /// `post` and `request`, like `build_request`: out of line the request
    /// went through memory twice more (callgrind, a GET: -41 instructions).
    #[inline(always)]
    fn start(
        &self,
        request: Result<(Request<RequestBody>, bool), Error>,
        caller: &'static Location<'static>,
    ) -> ResponseFuture<impl Future<Output = Result<Response<Body>, Error>> + Send + 'static> {
        let (mut request, userinfo) = match request {
            Ok(request) => request,
            Err(error) => return ResponseFuture::Failed { error: Some(error) },
        };
        if userinfo {
            move_userinfo(&mut request);
        }
        if let Err(error) = unsupported::check(&request) {
            return ResponseFuture::Failed { error: Some(error) };
        }
        if let Err(error) = content_length::check(&mut request) {
            return ResponseFuture::Failed { error: Some(error) };
        }
        // Quiet by default (DEBUG); a disabled span costs a static check.
        let span = tracing::debug_span!(
            REQUEST_SPAN,
            method = %request.method(),
            uri = %span_uri::SpanUri(request.uri()),
            reused = tracing::field::Empty,
            retries = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let limit = match Timeout::take_from(&mut request, self.inner.connector.config.timeout) {
            Ok(limit) => limit,
            Err(error) => return ResponseFuture::Failed { error: Some(error) },
        };
        let deadline =
            limit.map(|limit| RequestDeadline::start(limit, request.uri().authority().cloned()));
        ResponseFuture::Running {
            // Allocated first, then written: the ~900-byte send loop is built in
            // its box instead of on the stack and copied in (callgrind: one
            // 904-byte memcpy per request fewer than `Box::pin(..)`).
            send: Box::into_pin(Box::write(
                Box::new_uninit(),
                self.clone()
                    .send(request, caller, deadline.as_ref().map(|d| d.overall())),
            )),
            span,
            deadline,
        }
    }

    /// A snapshot of the pool: per origin and in total.
    ///
    /// ```
    /// let stats = freshpool::Client::new().stats();
    /// assert_eq!(stats.open_connections, 0);
    /// ```
    pub fn stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Closes every idle connection now: call it when your runtime tells you
    /// the process just resumed (e.g. a serverless INVOKE after a freeze).
    /// In-flight requests are not affected; an HTTP/2 connection carrying
    /// them takes no new streams and closes when they end. A freeze since
    /// the pool's last beat is judged first, as the heartbeat would: counted
    /// (`freezes_detected`), and its time not counted against leases
    /// (`lease_warn_after`).
    ///
    /// ```
    /// freshpool::Client::new().on_resume();
    /// ```
    pub fn on_resume(&self) {
        self.inner.pool.on_resume();
    }

    /// Closes every idle connection now (HTTP/1 ones resting in the pool,
    /// HTTP/2 ones without a stream in flight), as Go's
    /// `Transport.CloseIdleConnections`: before a planned network change,
    /// or to let a server's deploy drain. Connections carrying requests are
    /// left alone and go back to the pool when they are done; nothing is
    /// counted as a freeze (that is [`Client::on_resume`]'s). Closed ones
    /// count as `surplus` (an HTTP/2 one already retiring keeps its
    /// reason).
    ///
    /// ```
    /// let client = freshpool::Client::new();
    /// client.close_idle_connections();
    /// assert_eq!(client.stats().idle(), 0);
    /// ```
    pub fn close_idle_connections(&self) {
        self.inner.pool.close_idle();
    }

    /// Closes idle connections that have expired, now rather than at the
    /// next sweep. (Also see [`Client::close_idle_connections`] and
    /// [`Client::on_resume`].)
    ///
    /// ```
    /// freshpool::Client::new().evict_idle();
    /// ```
    pub fn evict_idle(&self) {
        self.inner.pool.evict_expired();
    }

    /// Benchmark hook: one checkout and release of a connection to `uri`,
    /// without sending anything, the way a request takes it. Not a stable
    /// API.
    ///
    /// A connection that is free is taken and given back before this
    /// returns, as the request path does (it builds a future only for a
    /// request that must queue): the returned future then only hands over
    /// the outcome, so benchmarks measure the pool rather than the moves of
    /// a future that holds a lease.
    #[doc(hidden)]
    #[track_caller]
    pub fn __checkout_release<'a>(
        &'a self,
        uri: &'a Uri,
    ) -> impl Future<Output = Result<bool, Error>> + Send + 'a {
        let caller = Location::caller();
        let inner = &self.inner;
        let security = match inner.routes.select(uri) {
            Ok(route) => route.map_or(&inner.security, |r| &r.security),
            Err(e) => return CheckoutRelease::Done(Some(Err(e))),
        };
        let lease = match inner.pool.checkout(uri, security, &inner.connector, caller) {
            Ok(crate::pool::Checkout::Ready(lease)) => lease,
            Ok(crate::pool::Checkout::Queued(queued)) => {
                return CheckoutRelease::Waiting(Box::pin(async move {
                    let lease = queued.wait(&inner.pool, caller, None).await?;
                    let reused = lease.reused;
                    lease.release();
                    Ok(reused)
                }));
            }
            Err(e) => return CheckoutRelease::Done(Some(Err(e))),
        };
        let reused = lease.reused;
        lease.release();
        CheckoutRelease::Done(Some(Ok(reused)))
    }
}

/// What [`Client::__checkout_release`] returns: the outcome, or the wait of
/// a request that had to queue.
enum CheckoutRelease<'a> {
    Done(Option<Result<bool, Error>>),
    Waiting(Pin<Box<dyn Future<Output = Result<bool, Error>> + Send + 'a>>),
}

impl Future for CheckoutRelease<'_> {
    type Output = Result<bool, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            CheckoutRelease::Done(outcome) => {
                Poll::Ready(outcome.take().expect("polled after completion"))
            }
            CheckoutRelease::Waiting(wait) => wait.as_mut().poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// What `Client::request` returns: the send loop (polled in the
    /// request's span, under the overall timeout), or the error that
    /// stopped the request before it started (an invalid URI).
    ///
    /// Unlike `tracing::Instrumented`, it does not enter the span while the
    /// send loop is dropped: nothing on that path (a lease closing, a
    /// waiter leaving the queue) emits events.
    #[project = ResponseFutureProj]
    enum ResponseFuture<F> {
        Failed { error: Option<Error> },
        Running {
            send: Pin<Box<F>>,
            span: tracing::Span,
            // Boxed: only with a `timeout` set, and a `Sleep` is ~100 bytes
            // every request future would otherwise carry and copy. (The
            // send loop bounds the response body by the same instant.)
            deadline: Option<Pin<Box<RequestDeadline>>>,
        },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The deadline's timer before the request goes: outside any
        // runtime it cannot be made, and the request fails unsent.
        if let ResponseFutureProj::Running {
            deadline: Some(deadline),
            ..
        } = self.as_mut().project()
        {
            if let Err(error) = deadline.as_mut().arm() {
                self.set(ResponseFuture::Failed { error: None });
                return Poll::Ready(Err(error));
            }
        }
        let (timed_out, limit) = match self.as_mut().project() {
            ResponseFutureProj::Failed { error } => {
                return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                    Error::new(Kind::Closed, "request future polled after it finished")
                })))
            }
            ResponseFutureProj::Running {
                send,
                span,
                deadline,
            } => {
                let _entered = span.enter();
                // The answer first: one that is ready wins over the deadline.
                // (The send loop bounds the body by the same deadline:
                // handing this one on from here cost every request 3-5 more
                // copies of the response, callgrind.)
                if let Poll::Ready(result) = send.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                let Some(deadline) = deadline else {
                    return Poll::Pending;
                };
                match deadline.as_mut().poll_elapsed(cx, "") {
                    Poll::Ready(err) => (err, deadline.limit()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        // The send loop goes now, not whenever the caller drops this: what
        // it holds learns that its request timed out (an HTTP/2 stream's
        // connection may then be judged silent: `Origin::abandon_stream`),
        // which a caller's own drop does not say.
        crate::pool::ended_by_timeout(limit, || self.set(ResponseFuture::Failed { error: None }));
        Poll::Ready(Err(timed_out))
    }
}

/// `HTTP://` as `http://` (RFC 3986 section 3.1: a scheme is
/// case-insensitive). The `http` crate keeps a scheme given to
/// `Uri::builder` as it came, and the pool key, the proxy rules and the
/// Host header read it as written: `HTTP` was refused as "unsupported
/// scheme". (A URL string parses to lowercase already.)
#[inline]
fn lowercase_scheme(uri: &mut Uri) {
    let Some(scheme) = uri.scheme_str() else {
        return;
    };
    if scheme == "http" || scheme == "https" || !scheme.bytes().any(|b| b.is_ascii_uppercase()) {
        return;
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme = http::uri::Scheme::try_from(scheme.to_ascii_lowercase().as_str()).ok();
    if let Ok(lowered) = Uri::from_parts(parts) {
        *uri = lowered;
    }
}

/// A URI's `user:password@` becomes `Authorization: Basic` (unless the
/// request has its own), as curl, Go's net/http and reqwest do, and leaves
/// the URI: it must not go on the wire (HTTP/2's `:authority` may not carry
/// it, RFC 9113 section 8.3.1; HTTP/1's Host never did), nor into spans or
/// error messages.
#[inline]
fn move_userinfo(request: &mut Request<RequestBody>) {
    // (`contains` first: `rsplit_once` is a `memrchr` call, ~150
    // instructions per request, callgrind.)
    let Some((userinfo, host)) = request
        .uri()
        .authority()
        .filter(|a| a.as_str().contains('@'))
        .and_then(|a| a.as_str().rsplit_once('@'))
    else {
        return;
    };
    let authorization = proxy::userinfo_authorization(userinfo);
    let mut parts = request.uri().clone().into_parts();
    parts.authority = host.parse().ok();
    // (A URI that parsed with userinfo parses without it.)
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    if let Some(value) = authorization {
        if !request.headers().contains_key(http::header::AUTHORIZATION) {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
    }
}

/// A request from a URL string, and whether its URI may carry userinfo.
#[inline(always)]
fn build_request(
    method: http::Method,
    uri: &str,
    body: RequestBody,
) -> Result<(Request<RequestBody>, bool), Error> {
    let uri_memo::Parsed { uri, userinfo } = uri_memo::parse(uri).map_err(|e| {
        let shown = shown_url(uri);
        Error::invalid_uri(format!("invalid URI {shown:?}")).with_source(e)
    })?;
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    Ok((request, userinfo))
}

impl<B> tower_service::Service<Request<B>> for Client
where
    B: Into<RequestBody>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Back-pressure lives in the pool (limits, max_pending, pool_timeout)
        // where it can say which origin is full.
        Poll::Ready(Ok(()))
    }

    // (Tracked: leak reports and PoolTimeout name the caller's line.)
    #[track_caller]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(self.request(request))
    }
}
