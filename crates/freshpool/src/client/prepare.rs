//! An attempt's request made ready for its connection: the target in the
//! form the connection needs, the Host header, and for a body about to go
//! over a connection that idled long, `Expect: 100-continue` with the gate
//! that holds the body back (and what follows a 417 to it).

use std::sync::{Arc, Mutex};

use http::header::{HeaderValue, EXPECT, HOST};
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use super::Client;
use crate::body::{Gate, GateState, RequestBody};
use crate::deadline::RuntimeTimer;
use crate::pool::Lease;
use crate::stats::CloseReason;

impl Client {
    /// Sets the target `uri` in the form the connection needs (HTTP/2: as
    /// given; HTTP/1: origin-form, with a Host header) and, for a body about
    /// to go over a connection that idled long, `Expect: 100-continue`.
    #[inline(always)]
    pub(super) fn prepare(
        &self,
        request: &mut Request<RequestBody>,
        lease: &mut Lease,
        uri: &Uri,
        // A copy is kept to send the request again (a gated body is held
        // back so that it can go again if the connection turns out dead,
        // or once more without Expect after a 417), and no 417 was had.
        may_gate: bool,
    ) -> Option<Arc<GateState>> {
        let cfg = &self.inner.connector.config;
        if lease.is_h2() {
            // (`:path` must start with '/', RFC 9113 section 8.3.1: for
            // `https://h?q` the `http` crate keeps the target as "?q",
            // which HTTP/2 servers refuse; HTTP/1's origin form adds it.)
            *request.uri_mut() = match uri.path_and_query() {
                Some(target) if target.as_str().starts_with('?') => rooted(uri),
                _ => uri.clone(),
            };
            // The caller's Host is the `:authority`, as over HTTP/1 it is
            // the Host line (RFC 9113 section 8.3.1: a request with both,
            // differing, is malformed; neither hyper nor h2 drops it), and
            // servers that route on `:authority` picked another host. (An
            // empty header map, as for every `get`, answers at once.)
            if let Some(host) = request.headers_mut().remove(HOST) {
                authority_from_host(request, host);
            }
            return None;
        }
        // (A request that came in over HTTP/2, forwarded: hyper's HTTP/1
        // encoder chunks only HTTP/1.1 requests, and framed a streamed body
        // of such a one as empty, dropping it unread.)
        if request.version() == http::Version::HTTP_2 {
            *request.version_mut() = http::Version::HTTP_11;
        }
        if !request.headers().contains_key(HOST) {
            if let Some(host) = lease.origin().host_header(uri) {
                request.headers_mut().insert(HOST, host);
            }
        }
        *request.uri_mut() = origin_form(uri);
        // (Most requests have no body: one test of them.)
        if !request.body().is_empty_in_memory() && request.body().len().is_none() {
            frame_streamed_body(request);
        }
        // (Not with extensions: they may hold the caller's own
        // informational callback, which the gate's would replace.)
        // (Not HTTP/1.0: its servers ignore Expect, RFC 9110 section
        // 10.1.1, so the body waited out the timer, and the origin was
        // then marked as not taking the expectation.)
        if may_gate
            && self.long_idle_body(request, lease)
            && request.version() == http::Version::HTTP_11
            && request.extensions().is_empty()
            && lease.origin().expect_continue_supported() != Some(false)
            && !request.headers().contains_key(EXPECT)
            // (Its timer needs a runtime: outside one, tokio panicked.)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let tx = Mutex::new(Some(tx));
            let reads = match lease.kind_mut() {
                crate::pool::LeaseKind::H1(idle) => {
                    crate::connect::tcp::ReadWatch::start(&idle.conn.socket)
                }
                crate::pool::LeaseKind::H2 { .. } => None,
            };
            let state = Arc::new(GateState {
                reads,
                ..GateState::default()
            });
            let seen = state.clone();
            hyper::ext::on_informational(request, move |res| {
                if res.status() == http::StatusCode::CONTINUE {
                    seen.continued
                        .store(true, std::sync::atomic::Ordering::Release);
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
                timer: Box::pin(RuntimeTimer::after(cfg.expect_continue_timeout)),
                state: state.clone(),
            };
            let body = std::mem::take(request.body_mut());
            *request.body_mut() = body.gated(gate);
            return Some(state);
        }
        None
    }

    /// A body about to go over an HTTP/1 connection that idled long: what
    /// `prepare` may hold back behind `Expect: 100-continue` (a body held
    /// back and never sent may go again on any method, so the send loop
    /// keeps a copy for it).
    #[inline(always)]
    pub(super) fn long_idle_body(&self, request: &Request<RequestBody>, lease: &Lease) -> bool {
        // Cheapest tests first: most requests have no body.
        self.inner.connector.config.expect_continue
            && request.body().len() != Some(0)
            && lease.reused
            && lease.idled() >= self.inner.pool.config().validate_after_idle
    }
}

/// A streamed body of unknown length on a GET or HEAD over HTTP/1.1, with
/// no framing header of the caller's: hyper frames it as empty ("GET,
/// HEAD, and CONNECT almost never have bodies") and never polls it, so the
/// caller's bytes vanished while the request succeeded. Framed chunked
/// instead, as hyper does for other methods and Go's transport does for a
/// GET whose body holds data. (HTTP/1.0 has no chunked encoding: such a
/// request is refused before it goes, in `content_length`.)
#[cold]
fn frame_streamed_body(request: &mut Request<RequestBody>) {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    let bodiless_method = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
    if bodiless_method
        && request.version() == http::Version::HTTP_11
        && !request.headers().contains_key(TRANSFER_ENCODING)
        && !request.headers().contains_key(CONTENT_LENGTH)
    {
        request
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
}

/// `uri` with its empty path made `/` (`https://h?q` -> `https://h/?q`).
#[cold]
fn rooted(uri: &Uri) -> Uri {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = parts
        .path_and_query
        .and_then(|target| format!("/{}", target.as_str()).parse().ok());
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// A request hyper handed back unwritten, as the caller gave it, so that
/// the next attempt prepares it afresh: what `prepare` changed that its
/// next run would not undo taken back (the pool's expectation, the
/// caller's `Host` moved into an HTTP/2 authority). The target and the
/// version each `prepare` sets anew.
pub(super) fn unprepared(request: Request<RequestBody>, uri: &Uri) -> Request<RequestBody> {
    let mut request = strip_expect(request);
    host_back(&mut request, uri);
    request
}

/// A request hyper handed back unwritten, without what `prepare` added for
/// an expectation. Only that: an `Expect` the caller set stays (its body
/// carries no gate of ours).
fn strip_expect(mut request: Request<RequestBody>) -> Request<RequestBody> {
    if !request.body().is_gated() {
        return request;
    }
    request.headers_mut().remove(EXPECT);
    // And the gate `prepare` put on its body with it: the next attempt's
    // `prepare` may add its own, and a gate inside a gate would wait on a
    // channel nobody answers (hyper keeps one informational callback).
    let body = std::mem::take(request.body_mut());
    *request.body_mut() = body.ungated();
    request
}

/// A request hyper handed back unwritten gets its caller's `Host` back:
/// over HTTP/2 `prepare` moved it into the URI's authority
/// (`authority_from_host`), which the next attempt's `prepare` resets to
/// the send loop's URI, and the retry went to the URI's host.
fn host_back(request: &mut Request<RequestBody>, uri: &Uri) {
    if request.headers().contains_key(HOST) {
        return;
    }
    let Some(authority) = request.uri().authority() else {
        return;
    };
    if Some(authority) == uri.authority() {
        return;
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(HOST, host);
    }
}

/// The origin-form target (`/path?query`) HTTP/1 sends to an origin server:
/// the path shared with `uri` (a reference count, no byte copied or
/// allocated, and unlike `Uri::from_parts` nothing validated again).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    }
}

/// The server refused the expectation the pool added: it does not take
/// Expect, and the connection still owes the body it never sent. (Out of
/// the send loop: rare, and inline it grew the loop past inlining.)
#[cold]
#[inline(never)]
pub(super) fn refused_expect(mut lease: Lease) {
    lease.uncount_reuse();
    lease.origin().learn_expect_continue(false);
    lease.not_reusable = Some(CloseReason::Error);
    lease.discard();
}

/// A `417 Expectation Failed` to the `Expect: 100-continue` the pool
/// added (`gate`), with no `100 Continue` before it: the server refused
/// the expectation, and processed nothing (RFC 9110 section 10.1.1: repeat
/// the request without it). Also after the gate's timer let the body go:
/// over a round trip longer than the wait (a far server, a gateway that
/// relays a backend's refusal) the 417 always comes after it, and reached
/// the caller, who never asked for the expectation.
#[inline(always)]
pub(super) fn refuses_our_expect(
    response: &Response<Incoming>,
    gate: &Option<Arc<GateState>>,
) -> bool {
    response.status() == http::StatusCode::EXPECTATION_FAILED
        && gate
            .as_ref()
            .is_some_and(|g| !g.continued.load(std::sync::atomic::Ordering::Acquire))
}

/// Over HTTP/2: `host`, the caller's `Host` header, as the request's
/// `:authority`. A value that is no authority stays a header, as given.
#[cold]
fn authority_from_host(request: &mut Request<RequestBody>, host: HeaderValue) {
    let mut parts = request.uri().clone().into_parts();
    parts.authority = http::uri::Authority::try_from(host.as_bytes()).ok();
    match parts.authority.is_some().then(|| Uri::from_parts(parts)) {
        Some(Ok(uri)) => *request.uri_mut() = uri,
        _ => {
            request.headers_mut().insert(HOST, host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query_only() {
        let form = |u: &str| origin_form(&u.parse().unwrap()).to_string();
        assert_eq!(form("http://u:p@a:8080/x/y?q=1&r"), "/x/y?q=1&r");
        assert_eq!(form("http://a"), "/");
        assert_eq!(form("https://a/?"), "/?");
        assert_eq!(form("/already"), "/already");
        let uri = origin_form(&"http://a/p?q".parse().unwrap());
        assert_eq!((uri.scheme(), uri.authority()), (None, None));
        assert_eq!((uri.path(), uri.query()), ("/p", Some("q")));
    }

    /// The caller's Host, moved into an HTTP/2 request's authority, goes
    /// back to the headers for a request handed back unsent; nothing
    /// changes for one whose authority is the URI's.
    #[test]
    fn host_back_restores_the_callers_host() {
        let uri: Uri = "http://127.0.0.1:1/x".parse().unwrap();
        let mut request = Request::new(RequestBody::empty());
        *request.uri_mut() = "http://api.example:8443/x".parse().unwrap();
        host_back(&mut request, &uri);
        assert_eq!(request.headers()[HOST], "api.example:8443");
        let mut plain = Request::new(RequestBody::empty());
        *plain.uri_mut() = uri.clone();
        host_back(&mut plain, &uri);
        assert!(plain.headers().get(HOST).is_none());
    }

    /// A request handed back unsent loses only the pool's expectation: a
    /// caller's own `Expect` on a body without the pool's gate stays (it
    /// was removed, and the request went again without it).
    #[test]
    fn strip_expect_removes_only_the_pools_expectation() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let with_expect = |body: RequestBody| {
            Request::post("/")
                .header(EXPECT, "100-continue")
                .body(body)
                .unwrap()
        };
        let callers = strip_expect(with_expect(RequestBody::from("abc")));
        assert!(callers.headers().contains_key(EXPECT), "the caller's own");
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let gate = crate::body::Gate {
            open: rx,
            timer: Box::pin(RuntimeTimer::after(std::time::Duration::from_secs(60))),
            state: Default::default(),
        };
        let ours = strip_expect(with_expect(RequestBody::from("abc").gated(gate)));
        assert!(!ours.headers().contains_key(EXPECT));
        assert!(!ours.body().is_gated() && ours.body().is_replayable());
    }
}
