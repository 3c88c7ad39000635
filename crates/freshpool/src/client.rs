//! The [`Client`]: a cheap handle to one shared pool, and the request path
//! (checkout, send, timeouts, safe retry).

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONNECTION, EXPECT, HOST};
use http::{Request, Response, Uri};

use crate::body::{Body, Gate, GateState, RequestBody};
use crate::builder::ClientBuilder;
use crate::connect::{proxy, Connector};
use crate::error::{self, Error, Kind};
use crate::health::parse_keep_alive;
use crate::pool::key::SecurityContext;
use crate::pool::{Lease, LeaseKind, Pool};
use crate::retry::{decide, Attempt, RetryDecision};
use crate::stats::PoolStats;

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
        let caller = Location::caller();
        let client = self.clone();
        let request = request.map(Into::into);
        async move { client.execute(request, caller).await }
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
        let caller = Location::caller();
        let client = self.clone();
        let request = build_request(http::Method::GET, uri, RequestBody::empty());
        async move { client.execute(request?, caller).await }
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
        let caller = Location::caller();
        let client = self.clone();
        let request = build_request(http::Method::POST, uri, body.into());
        async move { client.execute(request?, caller).await }
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
    /// In-flight requests are not affected.
    ///
    /// ```
    /// freshpool::Client::new().on_resume();
    /// ```
    pub fn on_resume(&self) {
        self.inner.pool.on_resume();
    }

    /// Closes idle connections that have expired, now rather than at the
    /// next sweep. (Also see [`Client::on_resume`].)
    ///
    /// ```
    /// freshpool::Client::new().evict_idle();
    /// ```
    pub fn evict_idle(&self) {
        self.inner.pool.evict_all(Instant::now(), None);
    }

    /// Benchmark hook: one checkout and release of a connection to `uri`,
    /// without sending anything. Not a stable API.
    #[doc(hidden)]
    #[track_caller]
    pub fn __checkout_release(
        &self,
        uri: &Uri,
    ) -> impl Future<Output = Result<bool, Error>> + Send + 'static {
        let caller = Location::caller();
        let client = self.clone();
        let uri = uri.clone();
        async move {
            let inner = &client.inner;
            let security = inner
                .routes
                .select(&uri)
                .map_or(&inner.security, |r| &r.security);
            let lease = inner
                .pool
                .checkout(&uri, security, &inner.connector, caller)
                .await?;
            let reused = lease.reused;
            lease.release();
            Ok(reused)
        }
    }

    async fn execute(
        &self,
        request: Request<RequestBody>,
        caller: &'static Location<'static>,
    ) -> Result<Response<Body>, Error> {
        use tracing::Instrument;
        // Quiet by default (DEBUG); a disabled span costs a static check.
        let span = tracing::debug_span!(
            "freshpool.request",
            method = %request.method(),
            uri = %request.uri(),
            reused = tracing::field::Empty,
            retries = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        self.execute_timed(request, caller).instrument(span).await
    }

    async fn execute_timed(
        &self,
        request: Request<RequestBody>,
        caller: &'static Location<'static>,
    ) -> Result<Response<Body>, Error> {
        match self.inner.connector.config.timeout {
            None => self.send(request, caller).await,
            Some(limit) => {
                let origin = request
                    .uri()
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tokio::time::timeout(limit, self.send(request, caller))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::timeout(Kind::Timeout, "request", &origin, limit))
                    })
            }
        }
    }

    async fn send(
        &self,
        request: Request<RequestBody>,
        caller: &'static Location<'static>,
    ) -> Result<Response<Body>, Error> {
        let inner = &self.inner;
        let cfg = &inner.connector.config;
        let uri = request.uri().clone();
        // Validate before touching the pool: a bad URI is the caller's error.
        crate::pool::key::PoolKey::view(&uri, inner.security.id)?;
        // The proxy for this URI (env, NO_PROXY) picks the pool key.
        let route = inner.routes.select(&uri);
        let security = route.map_or(&inner.security, |r| &r.security);
        let forward = route.filter(|r| r.forward);
        let has_key = request.headers().contains_key("idempotency-key");
        let mut retries = 0u32;
        let mut unsent_retries = 0u32;
        let mut pending = Some(request);
        let mut dedicated = false;
        loop {
            let request = pending.take().expect("a request for every attempt");
            let mut lease = if dedicated {
                inner
                    .pool
                    .checkout_dedicated(&uri, security, &inner.connector, caller)
                    .await?
            } else {
                inner
                    .pool
                    .checkout(&uri, security, &inner.connector, caller)
                    .await?
            };
            let reused = lease.reused;
            // Keep a copy only where a retry is possible (reused connection
            // or HTTP/2, where a refused stream is retried).
            let spare = if reused || lease.is_h2() {
                clone_request(&request)
            } else {
                None
            };
            let (mut request, gate) = self.prepare(request, &mut lease);
            if let Some(route) = forward.filter(|_| !lease.is_h2()) {
                proxy::to_forward_form(&mut request, &uri, route);
            }
            let method = request.method().clone();
            let sent_at = Instant::now();
            match self.dispatch(&mut lease, request).await {
                Ok(response) => {
                    if let Some(err) =
                        forward.and_then(|r| proxy::forward_refusal(response.status(), r))
                    {
                        lease.discard();
                        return Err(err);
                    }
                    lease.origin().counters.metrics.request(sent_at.elapsed());
                    let span = tracing::Span::current();
                    span.record("reused", reused);
                    span.record("retries", retries);
                    span.record("status", response.status().as_u16());
                    return Ok(self.finish(response, lease, gate));
                }
                Err(Failure::Unsent(request, err)) => {
                    // The connection closed before the request was written:
                    // it never reached the server, so any method may go again.
                    lease.discard();
                    unsent_retries += 1;
                    if unsent_retries > 3 {
                        return Err(err);
                    }
                    pending = Some(strip_expect(*request));
                }
                Err(Failure::Sent(err, not_processed)) => {
                    let idle_since = lease.idle_since();
                    let origin = lease.origin().clone();
                    lease.discard();
                    if err.kind() == Kind::ResponseHeaderTimeout {
                        return Err(err);
                    }
                    let withheld = not_processed
                        || gate
                            .as_ref()
                            .is_some_and(|g| !g.released.load(Ordering::Acquire));
                    let attempt = Attempt {
                        method: &method,
                        has_idempotency_key: has_key,
                        reused_connection: reused || not_processed,
                        response_started: false,
                        body_replayable: spare.is_some(),
                        body_withheld: withheld,
                        retry_non_idempotent: cfg.retry_non_idempotent,
                        retries,
                    };
                    let decision = decide(&attempt);
                    tracing::debug!(origin = %origin.label, ?decision, error = %err, "request failed");
                    match (decision, spare) {
                        (RetryDecision::Retry, Some(spare)) => {
                            retries += 1;
                            origin.counters.retried();
                            // Its siblings idled as long: likely dead too.
                            if let Some(since) = idle_since {
                                origin.evict_idle_since(since);
                            }
                            pending = Some(spare);
                            dedicated = true;
                        }
                        (RetryDecision::NotIdempotent, _) => {
                            return Err(err.with_kind(
                                Kind::PossiblyProcessed,
                                format!(
                                    "{method} {uri} failed on a reused connection after it was sent; \
                                     the server may or may not have processed it, so it was not retried \
                                     (add an Idempotency-Key header or enable retry_non_idempotent to allow a retry)"
                                ),
                            ));
                        }
                        _ => return Err(err.mark_reused(reused)),
                    }
                }
            }
        }
    }

    /// Sets what HTTP/1 needs (Host, origin-form target) and, for a body
    /// about to go over a connection that idled long, `Expect: 100-continue`.
    fn prepare(
        &self,
        mut request: Request<RequestBody>,
        lease: &mut Lease,
    ) -> (Request<RequestBody>, Option<Arc<GateState>>) {
        let cfg = &self.inner.connector.config;
        if lease.is_h2() {
            return (request, None);
        }
        if !request.headers().contains_key(HOST) {
            if let Some(host) = host_header(request.uri()) {
                request.headers_mut().insert(HOST, host);
            }
        }
        let origin_form = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *request.uri_mut() = origin_form;
        let has_body = request.body().len() != Some(0);
        let idled = lease.idle_for(Instant::now());
        let learned = lease.origin().expect_continue_supported();
        if cfg.expect_continue
            && has_body
            && lease.reused
            && idled >= self.inner.pool.config().validate_after_idle
            && learned != Some(false)
            && !request.headers().contains_key(EXPECT)
        {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let tx = Mutex::new(Some(tx));
            let state = Arc::new(GateState::default());
            hyper::ext::on_informational(&mut request, move |res| {
                if res.status() == http::StatusCode::CONTINUE {
                    if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = tx.send(());
                    }
                }
            });
            request
                .headers_mut()
                .insert(EXPECT, HeaderValue::from_static("100-continue"));
            let gate = Gate {
                open: rx,
                timer: Box::pin(tokio::time::sleep(cfg.expect_continue_timeout)),
                state: state.clone(),
            };
            let request = request.map(|b| b.gated(gate));
            return (request, Some(state));
        }
        (request, None)
    }

    async fn dispatch(
        &self,
        lease: &mut Lease,
        request: Request<RequestBody>,
    ) -> Result<Response<hyper::body::Incoming>, Failure> {
        let cfg = &self.inner.connector.config;
        let origin = lease.origin_label().clone();
        let sent = match lease.kind_mut() {
            LeaseKind::H1(idle) => {
                // hyper's HTTP/1 dispatcher says it is ready for the next
                // request a moment after the previous response ends; wait
                // for that rather than mistake "not yet" for "closed".
                if let Err(e) = idle.conn.sender.ready().await {
                    return Err(Failure::Unsent(
                        Box::new(request),
                        error::from_hyper(e, &origin),
                    ));
                }
                Either::H1 {
                    f: idle.conn.sender.try_send_request(request),
                }
            }
            LeaseKind::H2 { sender, .. } => Either::H2 {
                f: sender.try_send_request(request),
            },
        };
        let result = match cfg.response_header_timeout {
            None => sent.await,
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Failure::Sent(
                        Error::timeout(
                            Kind::ResponseHeaderTimeout,
                            "waiting for the response head",
                            &origin,
                            limit,
                        ),
                        false,
                    ))
                }
            },
        };
        result.map_err(|mut e| match e.take_message() {
            Some(request) => Failure::Unsent(
                Box::new(request),
                error::from_hyper(e.into_error(), &origin),
            ),
            None => {
                let hyper_err = e.into_error();
                // HTTP/2 REFUSED_STREAM, or a stream beyond GOAWAY's last
                // stream id: RFC 9113 section 8.7 says it was not processed.
                let not_processed = refused_stream(&hyper_err);
                Failure::Sent(error::from_hyper(hyper_err, &origin), not_processed)
            }
        })
    }

    fn finish(
        &self,
        response: Response<hyper::body::Incoming>,
        mut lease: Lease,
        gate: Option<Arc<GateState>>,
    ) -> Response<Body> {
        let origin = lease.origin_label().clone();
        if let Some(state) = &gate {
            let by_server = state.by_server.load(Ordering::Acquire);
            let released = state.released.load(Ordering::Acquire);
            lease.origin().learn_expect_continue(by_server);
            if !released {
                // A final answer before we sent the body: the connection
                // still owes the body; do not reuse it.
                lease.reusable = false;
            }
        }
        let headers = response.headers();
        if !lease.is_h2() {
            if headers
                .get(CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            {
                lease.reusable = false;
            }
            lease.keep_alive_hint = headers
                .get("keep-alive")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_keep_alive);
            if lease.keep_alive_hint == Some(Duration::ZERO) {
                lease.reusable = false;
            }
        }
        let (parts, incoming) = response.into_parts();
        if hyper::body::Body::is_end_stream(&incoming) {
            lease.release();
            return Response::from_parts(parts, Body::new(incoming, None, origin));
        }
        Response::from_parts(parts, Body::new(incoming, Some(lease), origin))
    }
}

enum Failure {
    /// hyper handed the request back: it was never written. (Boxed: the
    /// request is large and this is the rare path.)
    Unsent(Box<Request<RequestBody>>, Error),
    /// It may have been written; `bool`: the protocol proves it was not
    /// processed (HTTP/2 refused stream).
    Sent(Error, bool),
}

pin_project_lite::pin_project! {
    /// The two senders' futures as one type, without boxing.
    #[project = EitherProj]
    enum Either<A, B> {
        H1 { #[pin] f: A },
        H2 { #[pin] f: B },
    }
}

impl<A, B, T> Future for Either<A, B>
where
    A: Future<Output = T>,
    B: Future<Output = T>,
{
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            EitherProj::H1 { f } => f.poll(cx),
            EitherProj::H2 { f } => f.poll(cx),
        }
    }
}

fn refused_stream(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            // Only the peer can prove it: a GOAWAY or connection error
            // raised by our side (e.g. garbage received) fails streams
            // the server may already have processed.
            return h2.is_remote()
                && (h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away());
        }
        source = s.source();
    }
    false
}

fn strip_expect(mut request: Request<RequestBody>) -> Request<RequestBody> {
    request.headers_mut().remove(EXPECT);
    request
}

fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?;
    let host = authority.as_str().rsplit('@').next()?;
    let default_port = match uri.scheme_str() {
        Some("https") => ":443",
        _ => ":80",
    };
    HeaderValue::from_str(host.strip_suffix(default_port).unwrap_or(host)).ok()
}

fn clone_request(request: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

fn build_request(
    method: http::Method,
    uri: &str,
    body: RequestBody,
) -> Result<Request<RequestBody>, Error> {
    let uri: Uri = uri
        .parse()
        .map_err(|e| Error::invalid_uri(format!("invalid URI {uri:?}")).with_source(e))?;
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    Ok(request)
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(self.request(request))
    }
}
