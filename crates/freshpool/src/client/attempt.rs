//! One request's way through the pool: checkout, HTTP/1 preparation, send
//! under the response-head timeout, and the safe-retry loop around them.
//!
//! The loop's rule, written where it is enforced (`send`): a request that
//! was never written goes again on any method; one that may have been
//! written goes again only when [`decide`](crate::retry::decide) says so
//! (idempotent, or an `Idempotency-Key`, or opted in), over HTTP/1 on a
//! newly dialed connection where the per-host and total limits leave a
//! slot for one (`Pool::checkout_dedicated`); at a limit, or over HTTP/2,
//! as any checkout: an idle connection that passes the checks before
//! reuse, a free stream, or a wait.

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::HeaderName;
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use super::prepare::{refused_expect, refuses_our_expect, unprepared};
use super::retry_copy::{clone_request, BareRequest, UnsentAttempts};
use super::sending::{Plain, Returning, Sending, Sent};
use super::Client;
use crate::body::{Body, GateState, RequestBody};
use crate::connect::proxy;
use crate::deadline::{Elapsed, MaybeTimeout, OverallDeadline, RequestDeadline};
use crate::error::{self, Error, Kind};
use crate::health::reuse_hints;
use crate::metrics::Stopwatch;
use crate::pool::{Checkout, Lease, LeaseKind};
use crate::retry::{decide, is_idempotent, Attempt, RetryDecision};
use crate::stats::CloseReason;

/// Header names as constants: a `&str` name is parsed on every lookup.
pub(super) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Its older spelling, which Go reads too (and Stripe-era APIs send).
const X_IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");

impl Client {
    /// The request loop: checkout, send, and on failure the retry rule.
    ///
    /// Why a `fn` returning an `async move` block rather than an `async fn`,
    /// here and in `dispatch`: an async fn stores each argument twice (the
    /// captured argument and its rebinding as a local) for its whole life,
    /// and the request is 232 bytes that the executor moves with the
    /// future. The block uses its captures in place. Likewise the attempt's
    /// temporaries live in inner blocks that end before the `.await`, so
    /// they hold no slot while the request is in flight.
    ///
    /// Its steps (`prepare`, `dispatch`, `sent`, `finish`) are
    /// `#[inline(always)]`: each runs once per attempt, and out of line
    /// each passed the request, hyper's future or the response (150-232
    /// bytes) through memory across the call (callgrind, a GET: 21,382 ->
    /// 21,060 instructions, of which `memcpy` 1,514 -> 1,294).
    pub(super) fn send(
        self,
        request: Request<RequestBody>,
        caller: &'static Location<'static>,
        // The overall timeout (if any: the `timeout` setting or the
        // request's own `Timeout`): it bounds the response body too
        // (`finish`).
        body_deadline: Option<OverallDeadline>,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + Send + 'static {
        let mut pending = Some(request);
        async move {
            // Set once an attempt that may have reached the server is
            // retried: whatever ends the request later (a refused dial, an
            // unsent second attempt), the first may have been acted on.
            let mut written = false;
            let result = self
                .send_loop(&mut pending, caller, &body_deadline, &mut written)
                .await;
            result.map_err(|e| {
                if written {
                    e.mark_possibly_processed()
                } else {
                    e
                }
            })
        }
    }

    async fn send_loop(
        &self,
        pending: &mut Option<Request<RequestBody>>,
        caller: &'static Location<'static>,
        body_deadline: &Option<OverallDeadline>,
        written: &mut bool,
    ) -> Result<Response<Body>, Error> {
        let inner = &self.inner;
        let cfg = &inner.connector.config;
        // The URI is the loop's from here on: a request in `pending` (and
        // any retry copy) carries none, and each attempt gets the form its
        // connection needs from this one (`prepare`). Taking it rather than
        // cloning it saves a clone and the origin-form conversion's parse
        // and drops (~150 instructions and two atomic counts per request).
        let first = pending.as_mut().expect("a request to send");
        let uri = std::mem::take(first.uri_mut());
        // (Only where it decides: an idempotent method, or an opt-in,
        // allows a retry with or without a key.)
        let has_key = !is_idempotent(first.method())
            && !cfg.retry_non_idempotent
            && (first.headers().contains_key(IDEMPOTENCY_KEY)
                || first.headers().contains_key(X_IDEMPOTENCY_KEY));
        // A request with no headers and no body (a plain `get(url)`) needs no
        // retry copy made up front: one is rebuilt from its method, `uri`
        // and version if an attempt fails (`BareRequest`). Most attempts
        // succeed, and the copy and its drop cost ~340 instructions of every
        // request on a reused connection (callgrind, with the URI kept by
        // this loop, 2026-12-02).
        let bare = BareRequest::of(first);
        // Whether a request that may have been written can go again (the
        // method-level half of `decide`'s "safe"). A non-idempotent request
        // without a key on HTTP/1 can be retried only if its body was held
        // back (`long_idle_body`) or it was never written (and then hyper
        // hands it back): a copy would be made and dropped unused (~500
        // instructions per POST, callgrind, `paths` bench).
        let resend_allowed = is_idempotent(first.method()) || has_key || cfg.retry_non_idempotent;
        // (A bad URI fails in checkout, before anything is sent.)
        // The proxy for this URI (env, NO_PROXY) picks the pool key.
        let route = inner.routes.select(&uri)?;
        let security = route.map_or(&inner.security, |r| &r.security);
        let forward = route.filter(|r| r.forward);
        let mut retries = 0u32;
        let mut unsent = UnsentAttempts::default();
        let stale_limit = inner.pool.config().max_connections_per_host;
        let mut dedicated = false;
        // A server refused the `Expect: 100-continue` the pool added: the
        // request goes again once, without it.
        let mut expect_refused = false;
        loop {
            let mut lease = if dedicated {
                // Boxed: a retry is rare, and its 700-byte future would
                // otherwise be the largest part of every request's future
                // (`-Zprint-type-sizes`), which is moved with it.
                Box::pin(inner.pool.checkout_dedicated(
                    &uri,
                    security,
                    &inner.connector,
                    caller,
                    *body_deadline,
                ))
                .await?
            } else {
                // Only a request that must queue builds the waiting future.
                match inner
                    .pool
                    .checkout(&uri, security, &inner.connector, caller)?
                {
                    Checkout::Ready(lease) => lease,
                    Checkout::Queued(queued) => {
                        Box::pin(queued.wait(&inner.pool, caller, *body_deadline)).await?
                    }
                }
            };
            let reused = lease.reused;
            let stopwatch = Stopwatch::start();
            // hyper's HTTP/1 dispatcher says it is ready for the next
            // request a moment after the previous response ends; wait for
            // that rather than mistake "not yet" for "closed". (Before the
            // request is touched: it stays in `pending`, unprepared.)
            if let LeaseKind::H1(idle) = lease.kind_mut() {
                let conn = &mut idle.conn;
                let ready = match std::future::poll_fn(|cx| Poll::Ready(conn.sender.poll_ready(cx)))
                    .await
                {
                    Poll::Ready(ready) => {
                        ready.map_err(|e| error::from_hyper(e, &conn.origin.label))
                    }
                    Poll::Pending => ready_within(conn, READY_WAIT).await,
                };
                if let Err(err) = ready {
                    // (A refused TLS session: as below, for a connection
                    // that read the alert before the request came.)
                    if let Some(refused) = refused_session(&mut lease) {
                        lease.discard();
                        return Err(refused);
                    }
                    // (Closed: its dispatcher ended. Not so a connection
                    // still busy past `READY_WAIT`.)
                    let closed = error::peer_closed(&err);
                    if !unsent_try(lease, &mut unsent, reused, stale_limit, false, closed) {
                        return Err(err.mark_reused(reused));
                    }
                    continue;
                }
            }
            let gate;
            let request_done;
            let method;
            // Whether this attempt keeps a retry copy: in `pending`, or, for
            // a bare request, the means to rebuild it.
            let kept;
            let sent = {
                // Where a retry is possible (reused connection, or HTTP/2
                // where a refused stream is retried) a copy stays in
                // `pending`, unprepared, for the retry. The original goes to
                // hyper (which recycles its header map for the response's),
                // as a block-local that moves straight in: it takes no slot
                // in the request's future (a kept spare of 232 bytes did, in
                // every request's future, moved with it).
                let mut request = match (pending.take(), &bare) {
                    (Some(request), _) => request,
                    (None, Some(bare)) => bare.rebuild(),
                    (None, None) => unreachable!("a request for every attempt"),
                };
                kept = (reused || lease.is_h2())
                    && (bare.is_some()
                        || (resend_allowed
                            // HTTP/2: a refused stream goes again on any method.
                            || lease.is_h2()
                            || self.long_idle_body(&request, &lease))
                            && {
                                *pending = clone_request(&request);
                                pending.is_some()
                            });
                gate = self.prepare(&mut request, &mut lease, &uri, kept && !expect_refused);
                // (HTTP/1: its connection takes one request at a time;
                // HTTP/2: the stream counts until the upload ends.)
                request_done = request.body_mut().track_end(lease.is_h2());
                if let Some(route) = forward.filter(|_| !lease.is_h2()) {
                    proxy::to_forward_form(&mut request, &uri, route);
                }
                method = request.method().clone();
                self.dispatch(&mut lease, request, kept, gate.is_some())
            }
            .await;
            let sent = self.sent(sent, &lease, gate.is_some());
            match sent {
                // (Gated only with a kept copy and no 417 yet: see `prepare`.)
                Ok(response) if refuses_our_expect(&response, &gate) => {
                    // 417 to the expectation the pool added (the caller asked
                    // for none): repeat the request without it (RFC 9110
                    // section 10.1.1), from the copy kept for a held-back
                    // body. Any method: the server refused the request as
                    // a whole, whether or not the body went meanwhile.
                    // (An attempt that got its head: timed as one. Its
                    // repeat is a retry in the figures, outside the retry
                    // budget: it happens once at most.)
                    let counters = &lease.origin().counters;
                    counters.metrics.request(stopwatch.elapsed());
                    counters.retried();
                    unsent.resent += 1;
                    note_retries(retries + unsent.resent);
                    expect_refused = true;
                    refused_expect(lease);
                }
                Ok(response) => {
                    // (Each attempt that got its head, a proxy's refusal too.)
                    lease.origin().counters.metrics.request(stopwatch.elapsed());
                    if let Some(err) =
                        forward.and_then(|r| proxy::forward_refusal(response.status(), r))
                    {
                        lease.discard();
                        return Err(err);
                    }
                    if let Some(span) = request_span() {
                        // (As the stats count it: a dial's first request,
                        // or a never-used idle connection, is no reuse,
                        // though the retry rule treats it as one.)
                        span.record("reused", lease.counted_reuse());
                        span.record("retries", retries + unsent.resent);
                        span.record("status", response.status().as_u16());
                    }
                    return Ok(self.finish(
                        response,
                        lease,
                        gate,
                        request_done,
                        *body_deadline,
                        &uri,
                    ));
                }
                Err(Failure::Unsent(returned, err)) => {
                    // A server that refused this client's TLS session by a
                    // certificate alert, read before the request went (TLS
                    // 1.3): no new connection does better, and hyper's
                    // "channel closed" hid why.
                    if let Some(refused) = refused_session(&mut lease) {
                        lease.discard();
                        return Err(refused);
                    }
                    // The connection closed before the request was written:
                    // it never reached the server, so any method may go again.
                    if !unsent_try(lease, &mut unsent, reused, stale_limit, true, true) {
                        return Err(err.mark_reused(reused));
                    }
                    note_retries(retries + unsent.resent);
                    // The copy, if kept, is the unprepared one (or is
                    // rebuilt so); without one, hyper hands back what it was
                    // given (prepared).
                    if !kept {
                        match returned {
                            Some(request) => *pending = Some(unprepared(*request, &uri)),
                            // (Not expected: without a kept copy the request
                            // went by `try_send_request`, which returns it.)
                            None => return Err(err),
                        }
                    }
                }
                Err(Failure::Sent(err, not_processed)) => {
                    // The caller's own body failed: its error, whatever the
                    // protocol made of it (over HTTP/2 hyper returns the
                    // stream's reset, not the body's error).
                    let err = match request_done.as_ref().and_then(|u| u.failure()) {
                        Some(why) if err.kind() != Kind::Body => {
                            let origin = lease.origin_label();
                            let message =
                                format!("the request body failed while sending to {origin}");
                            Error::new(Kind::Body, message).with_source(why.clone())
                        }
                        _ => err,
                    };
                    let idle_since = lease.idle_since();
                    let counted_reuse = lease.counted_reuse();
                    let origin = lease.origin().clone();
                    // A pooled connection whose close crossed the checkout:
                    // stale, not an error (`CloseReason::StaleDetected`).
                    if reused && !lease.is_h2() && error::peer_closed(&err) {
                        lease.not_reusable.get_or_insert(CloseReason::StaleDetected);
                    }
                    if let (Kind::ResponseHeaderTimeout, Some(limit)) =
                        (err.kind(), cfg.response_header_timeout)
                    {
                        crate::pool::ended_by_timeout(limit, || lease.discard());
                    } else {
                        lease.discard();
                    }
                    // Not the connection's failure: the caller's own body
                    // broke (not replayable, so never retried either).
                    // Either way the request may have been acted on.
                    if matches!(err.kind(), Kind::ResponseHeaderTimeout | Kind::Body) {
                        return Err(err.mark_reused(reused).mark_possibly_processed());
                    }
                    // Held back, and the server had not begun to answer: a
                    // handler that acts on the head alone may have run once
                    // it answers, and may not have otherwise only if nothing
                    // came back (then the connection died as a stale one).
                    let withheld = not_processed
                        || gate.as_ref().is_some_and(|g| {
                            !g.released.load(Ordering::Acquire) && !g.answer_began()
                        });
                    let attempt = Attempt {
                        method: &method,
                        has_idempotency_key: has_key,
                        reused_connection: reused || not_processed,
                        // (hyper does not tell a head cut short from none:
                        // see the module doc of `retry`.)
                        response_started: false,
                        body_replayable: kept,
                        body_withheld: withheld,
                        retry_non_idempotent: cfg.retry_non_idempotent,
                        retries,
                    };
                    let decision = decide(&attempt);
                    tracing::debug!(origin = %origin.label, ?decision, error = %err, "request failed");
                    match (decision, kept) {
                        (RetryDecision::Retry, true) => {
                            *written |= !withheld;
                            if counted_reuse {
                                origin.uncount_reuse();
                            }
                            retries += 1;
                            origin.counters.retried();
                            note_retries(retries + unsent.resent);
                            // Its siblings idled as long: likely dead too.
                            if let Some(since) = idle_since {
                                origin.evict_idle_since(since);
                            }
                            dedicated = true;
                        }
                        (RetryDecision::NotIdempotent, _) => {
                            // (What happened to the connection stays in the
                            // message: the source shows only its own words.)
                            let what = err.message().to_owned();
                            return Err(err.mark_reused(true).with_kind(
                                Kind::PossiblyProcessed,
                                format!(
                                    "{method} {} failed on a reused connection after it was sent ({what}); \
                                     the server may or may not have processed it, so it was not retried \
                                     (add an Idempotency-Key header or enable retry_non_idempotent to allow a retry)",
                                    super::span_uri::SpanUri(&uri)
                                ),
                            ));
                        }
                        // (Not retried for another reason: a new connection,
                        // the one retry spent, a body that cannot go
                        // again. Unless it was held back unseen, the
                        // request may have been acted on.)
                        // (A certificate alert refuses a new session; on
                        // one that served requests it proves nothing.)
                        _ if withheld || (!reused && error::refused_tls_session(&err)) => {
                            return Err(err.mark_reused(reused))
                        }
                        _ => return Err(err.mark_reused(reused).mark_possibly_processed()),
                    }
                }
            }
        }
    }

    /// Hands the request to the leased connection (whose HTTP/1 side
    /// said it is ready), under `response_header_timeout`. Not `async`: the
    /// request moves straight into hyper's future instead of being held by
    /// one of ours as well. `copy_kept`: the send loop holds its own copy
    /// for a retry, so hyper need not hand the request back (see
    /// `sending`).
    #[inline(always)]
    fn dispatch<'a>(
        &self,
        lease: &'a mut Lease,
        request: Request<RequestBody>,
        copy_kept: bool,
        gated: bool,
    ) -> MaybeTimeout<
        Sending<
            impl Future<Output = Plain> + Send + 'a,
            impl Future<Output = Returning> + Send + 'a,
            impl Future<Output = Plain> + Send + 'a,
            impl Future<Output = Returning> + Send + 'a,
        >,
    > {
        let sending = match (lease.kind_mut(), copy_kept) {
            (LeaseKind::H1(idle), true) => Sending::H1 {
                f: idle.conn.sender.send_request(request),
            },
            (LeaseKind::H1(idle), false) => Sending::H1Try {
                f: idle.conn.sender.try_send_request(request),
            },
            (LeaseKind::H2 { sender, .. }, true) => Sending::H2 {
                f: sender.send_request(request),
            },
            (LeaseKind::H2 { sender, .. }, false) => Sending::H2Try {
                f: sender.try_send_request(request),
            },
        };
        let cfg = &self.inner.connector.config;
        // The pool's own hold-back of a gated body is not the server's
        // delay: without this, a `response_header_timeout` under
        // `expect_continue_timeout` failed every gated request to a server
        // that ignores Expect, and the pool never learned that it does.
        let limit = cfg.response_header_timeout.map(|t| {
            if gated {
                t + cfg.expect_continue_timeout
            } else {
                t
            }
        });
        MaybeTimeout::new(sending, limit)
    }

    /// What became of a dispatched request, in the retry rule's terms.
    /// (The lease, not its origin's name: the name is looked up only for an
    /// error, off the path of a response.)
    #[inline(always)]
    fn sent(
        &self,
        result: Result<Sent, Elapsed>,
        lease: &Lease,
        gated: bool,
    ) -> Result<Response<Incoming>, Failure> {
        let result = match result {
            Ok(r) => r,
            Err(Elapsed) => {
                let origin = lease.origin_label();
                let cfg = &self.inner.connector.config;
                // (The limit `dispatch` set: with a held-back body, the
                // hold-back's wait on top.)
                let head = cfg.response_header_timeout.unwrap_or_default();
                let (limit, setting) = if gated {
                    let held = cfg.expect_continue_timeout;
                    let setting = format!(
                        "response_header_timeout {} + expect_continue_timeout {} for the \
                         body held back",
                        error::fmt_duration(head),
                        error::fmt_duration(held)
                    );
                    (head + held, setting)
                } else {
                    (head, "response_header_timeout".to_owned())
                };
                return Err(Failure::Sent(
                    Error::timeout(
                        Kind::ResponseHeaderTimeout,
                        "waiting for the response head",
                        origin,
                        limit,
                        &setting,
                    ),
                    false,
                ));
            }
        };
        result.map_err(|e| {
            let origin = lease.origin_label();
            if e.unsent {
                return Failure::Unsent(e.returned, error::from_hyper(e.error, origin));
            }
            // HTTP/2 REFUSED_STREAM, or a stream beyond GOAWAY's last
            // stream id: RFC 9113 section 8.7 says it was not processed.
            let not_processed = refused_stream(&e.error);
            Failure::Sent(error::from_hyper(e.error, origin), not_processed)
        })
    }

    #[inline(always)]
    fn finish(
        &self,
        response: Response<Incoming>,
        mut lease: Lease,
        gate: Option<Arc<GateState>>,
        request_done: Option<Arc<crate::body::UploadEnd>>,
        body_deadline: Option<OverallDeadline>,
        uri: &Uri,
    ) -> Response<Body> {
        if let Some(state) = &gate {
            // What the server showed of Expect: 100 Continue (it takes it),
            // or the wait ran out (it may ignore it). A final answer first
            // shows neither.
            // (A 100 that came after the timer let the body go still says
            // the server takes the expectation: learned "no" from one slow
            // handler, the origin was never gated again.)
            if state.by_server.load(Ordering::Acquire) || state.continued.load(Ordering::Acquire) {
                lease.origin().learn_expect_continue(true);
            } else if state.by_timer.load(Ordering::Acquire) {
                lease.origin().learn_expect_continue(false);
            }
            if state.answered_first() {
                // A final answer before we sent the body: the connection
                // still owes the body (or sends it after the answer, which
                // the server may not read); do not reuse it.
                lease.not_reusable = Some(CloseReason::Error);
            }
        }
        if !lease.is_h2() {
            let hints = reuse_hints(response.headers());
            if let Some(hint) = hints.keep_alive {
                lease.keep_alive_hint(hint, arrived_with_head(&response));
            }
            // (A server that keeps no connections is not failing: counted
            // as its choice, not as an error.)
            if hints.close {
                lease.not_reusable = Some(CloseReason::ServerClose);
            } else if hints.keep_alive == Some(Duration::ZERO) {
                lease.not_reusable = Some(CloseReason::KeepAliveHint);
            } else if response.version() == http::Version::HTTP_10 {
                // An answer in HTTP/1.0, kept alive or not: hyper sends
                // the connection's next requests as HTTP/1.0, which has no
                // chunked framing, so a streamed body of unknown length
                // went out as an empty one (the server answered a POST
                // whose upload was lost). The next request dials, and goes
                // as HTTP/1.1. (The server's choice, as a close it says.)
                lease.not_reusable = Some(CloseReason::ServerClose);
            }
        }
        // The head is progress too: a slow answer (a long poll) starts the
        // leak report's clock again here, so a body held briefly after a
        // late head is not taken for one held since the request began.
        // (A lock only for a head that came late: from about 100–350 ms
        // on, as the pool's beat, its coarse clock, tells.)
        lease.note_progress();
        let (parts, incoming) = response.into_parts();
        let mut body = Body::new(incoming, Some(lease), request_done);
        if hyper::body::Body::is_end_stream(&body) {
            body.finish();
        } else {
            if let Some(overall) = body_deadline {
                // The overall timeout bounds reading the body too.
                bound_body(&mut body, overall, uri);
            }
            if let Some(limit) = self.inner.connector.config.read_timeout {
                body.bound_reads(limit);
            }
        }
        Response::from_parts(parts, body)
    }
}

#[cold]
fn bound_body(body: &mut Body, overall: OverallDeadline, uri: &Uri) {
    body.bound_by(RequestDeadline::until(
        overall.at,
        overall.limit,
        uri.authority().cloned(),
    ));
}

enum Failure {
    /// It was never written; hyper hands the request back where the send
    /// loop kept no copy. (Boxed: the request is large and this is the rare
    /// path.)
    Unsent(Option<Box<Request<RequestBody>>>, Error),
    /// It may have been written; `bool`: the protocol proves it was not
    /// processed (HTTP/2 refused stream).
    Sent(Error, bool),
}

fn refused_stream(err: &hyper::Error) -> bool {
    // Only the peer can prove it: a GOAWAY or connection error raised by
    // our side (e.g. garbage received) fails streams the server may
    // already have processed.
    error::h2_error_in(err).is_some_and(|h2| {
        h2.is_remote() && (h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away())
    })
}

/// Whether a response most likely came whole with its head: no body, or
/// one short enough to share the head's packets (a `Content-Length` up to
/// 16 KiB). (See `Lease::keep_alive_hint`.)
fn arrived_with_head(response: &Response<Incoming>) -> bool {
    use hyper::body::Body as _;
    response.body().is_end_stream()
        || response
            .body()
            .size_hint()
            .exact()
            .is_some_and(|len| len <= 16 * 1024)
}

/// A try that ended with the request unwritten (the connection was not
/// ready, or closed before the request went): the connection is
/// discarded, the reuse its checkout counted taken back, and the attempt
/// counted (`UnsentAttempts`). Returns whether the request may go again;
/// a request hyper handed back unsent (`sent_back`) then counts as a
/// retry (stats, metric, span), though not one `decide` bounds: nothing of
/// it was written. A pooled connection found `closed` (the server's close
/// crossed the checkout) closes as `StaleDetected`, as one the check
/// before reuse finds dead: it is not an error of the server's, and the
/// stats read "error" for it. (Out of the send loop: on its hot path, this
/// code made the loop's future move by copy.)
#[cold]
#[inline(never)]
fn unsent_try(
    mut lease: Lease,
    unsent: &mut UnsentAttempts,
    reused: bool,
    connections_per_host: usize,
    sent_back: bool,
    closed: bool,
) -> bool {
    if closed && reused && lease.not_reusable.is_none() {
        lease.not_reusable = Some(CloseReason::StaleDetected);
    }
    let again = unsent.another(reused, connections_per_host);
    lease.uncount_reuse();
    if again && sent_back {
        lease.origin().counters.retried();
        unsent.resent += 1;
    }
    lease.discard();
    again
}

/// The request's span learns each retry when it happens: a request that
/// then fails still shows it (the fields were recorded with the answer
/// only, so a failed retried GET read `retries` empty).
#[cold]
fn note_retries(retries: u32) {
    if let Some(span) = request_span() {
        span.record("retries", retries);
    }
}

/// The request's own span, if it is enabled (then it is the current one:
/// `ResponseFuture` enters it around the send loop).
///
/// A filter such as `freshpool=info,myapp=debug` passes the global level
/// check yet disables the request's span; entering a disabled span does
/// nothing, so the current span is then the caller's, and its `status`
/// or `retries` fields got the pool's values. (Finding the current span
/// costs a dispatcher lookup: only when a subscriber may want the fields.)
fn request_span() -> Option<tracing::Span> {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let span = tracing::Span::current();
    (span.metadata()?.name() == super::REQUEST_SPAN).then_some(span)
}

/// The error for a connection whose server ended its TLS session with a
/// certificate alert (see `connect::tcp::AlertSeen`), if it did.
#[cold]
fn refused_session(lease: &mut Lease) -> Option<Error> {
    let LeaseKind::H1(idle) = lease.kind_mut() else {
        return None;
    };
    let alert = idle.conn.tls_alert.as_ref()?.get()?;
    error::is_certificate_alert(alert).then(|| error::tls_alert(&idle.conn.origin.label, alert))
}

/// How long a pooled HTTP/1 connection may take to be ready for the next
/// request: a moment, after the previous response ended, for hyper's
/// dispatcher to run. One still writing an earlier request's body (hyper
/// took an in-memory body whole and queued it; the server answered early
/// and stopped reading) would never be: the request waited in `ready()`,
/// bounded by no timeout. Go does not reuse a connection whose request
/// write has not finished either (`wroteRequest`, 50 ms).
const READY_WAIT: Duration = Duration::from_millis(500);

/// The slow way to a ready HTTP/1 sender (see [`READY_WAIT`]). Past it the
/// connection is busy, not broken: the caller discards it and the request,
/// never sent, goes again.
#[cold]
async fn ready_within(conn: &mut crate::pool::H1Conn, limit: Duration) -> Result<(), Error> {
    let label = &conn.origin.label;
    if tokio::runtime::Handle::try_current().is_err() {
        // Outside any tokio runtime no timer can be made (tokio panicked):
        // the connection's own runtime drives it to ready or closed.
        return conn
            .sender
            .ready()
            .await
            .map_err(|e| error::from_hyper(e, label));
    }
    match tokio::time::timeout(limit, conn.sender.ready()).await {
        Ok(ready) => ready.map_err(|e| error::from_hyper(e, label)),
        Err(_) => {
            // (Its task would otherwise hold the slot for as long as the
            // peer keeps the socket without reading.)
            crate::connect::tcp::shut_down(&conn.socket);
            let message = format!(
                "a pooled connection to {label} was not ready for a new request within {} \
                 (still sending an earlier request's body?)",
                error::fmt_duration(limit)
            );
            Err(Error::new(Kind::Io, message))
        }
    }
}
