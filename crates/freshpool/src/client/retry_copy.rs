//! What the send loop keeps to send a request again: a copy of it (or,
//! for a bare request, the means to rebuild one), and the count of
//! attempts that went unsent.

use http::Request;

use crate::body::RequestBody;

/// Attempts that ended with the request unsent (the connection closed
/// before it was written), so that any method may go again.
///
/// On a reused connection that is the pool's news, not a failing server:
/// an idle HTTP/1 connection the peer closed, or an HTTP/2 one that had a
/// GOAWAY, which hyper notices only when handed the next request. Each
/// such attempt leaves that connection out of the pool (discarded, or its
/// sender closed), so they are bounded by the connections an origin may
/// have, not by the three tries a fresh dial gets.
#[derive(Default)]
pub(super) struct UnsentAttempts {
    fresh: usize,
    reused: usize,
    /// Requests that went again outside the retry budget (retries in the
    /// stats and the span): handed back unsent by hyper, or repeated
    /// without the `Expect` a server refused (417).
    pub(super) resent: u32,
}

impl UnsentAttempts {
    /// Counts one; whether the request may go again.
    #[cold]
    pub(super) fn another(&mut self, reused: bool, connections_per_host: usize) -> bool {
        if reused {
            self.reused += 1;
            self.reused <= connections_per_host
        } else {
            self.fresh += 1;
            self.fresh <= 3
        }
    }
}

/// What a retry copy of a request without headers or body holds (its URI
/// the send loop keeps anyway).
pub(super) struct BareRequest {
    method: http::Method,
    version: http::Version,
}

impl BareRequest {
    /// `Some` if the request has no headers, no extensions and no body
    /// (`RequestBody::empty`).
    pub(super) fn of(request: &Request<RequestBody>) -> Option<BareRequest> {
        let bare = request.headers().is_empty()
            && request.extensions().is_empty()
            && request.body().is_empty_in_memory();
        bare.then(|| BareRequest {
            method: request.method().clone(),
            version: request.version(),
        })
    }

    /// The unprepared request again: what `clone_request` would have kept.
    pub(super) fn rebuild(&self) -> Request<RequestBody> {
        unprepared(self.method.clone(), self.version, RequestBody::empty())
    }
}

/// A request with these parts, no headers and no URI (each attempt sets
/// the send loop's): how both retry copies start.
fn unprepared(
    method: http::Method,
    version: http::Version,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.version_mut() = version;
    request
}

/// The retry copy of an unprepared request: method, version, headers and a
/// replayable body (None if the body cannot be replayed). Not its URI: the
/// send loop holds that and sets it on every attempt.
pub(super) fn clone_request(request: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let body = request.body().try_clone()?;
    let mut copy = unprepared(request.method().clone(), request.version(), body);
    // A `post(url, body)` has no headers yet (Host comes in `prepare`):
    // keep the new request's empty map rather than clone an empty one over
    // it and drop it (~120 instructions per request).
    if !request.headers().is_empty() {
        *copy.headers_mut() = request.headers().clone();
    }
    // The caller's extensions (hyper's informational callback, an HTTP/2
    // extended CONNECT's protocol) go again too.
    if !request.extensions().is_empty() {
        *copy.extensions_mut() = request.extensions().clone();
    }
    Some(copy)
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Uri};

    use super::super::attempt::IDEMPOTENCY_KEY;
    use super::*;

    #[test]
    fn the_retry_copy_keeps_method_version_headers_and_body() {
        let mut original = Request::new(RequestBody::from("payload"));
        *original.method_mut() = http::Method::PUT;
        *original.uri_mut() = "http://a/p?q".parse().unwrap();
        *original.version_mut() = http::Version::HTTP_10;
        original
            .headers_mut()
            .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k1"));
        let copy = clone_request(&original).expect("an in-memory body replays");
        assert_eq!(copy.method(), original.method());
        // (The URI stays with the send loop, which sets it per attempt.)
        assert_eq!(copy.uri(), &Uri::default());
        assert_eq!(copy.version(), original.version());
        assert_eq!(copy.headers(), original.headers());
        assert_eq!(copy.body().len(), Some(7));
        // Extensions too (they were dropped: a caller's informational
        // callback did not see a retried request's 1xx).
        let mut with_extension = clone_request(&original).unwrap();
        with_extension.extensions_mut().insert(7u8);
        let copy = clone_request(&with_extension).unwrap();
        assert_eq!(copy.extensions().get::<u8>(), Some(&7));
        let mut bare_but_extended = Request::new(RequestBody::empty());
        bare_but_extended.extensions_mut().insert(7u8);
        assert!(BareRequest::of(&bare_but_extended).is_none());
        // Without headers the copy has none either.
        let bare = Request::new(RequestBody::empty());
        assert!(clone_request(&bare).unwrap().headers().is_empty());
    }

    #[test]
    fn a_bare_request_is_rebuilt_as_its_retry_copy_would_have_been() {
        let mut original = Request::new(RequestBody::empty());
        *original.method_mut() = http::Method::DELETE;
        *original.uri_mut() = "http://a:81/p?q".parse().unwrap();
        *original.version_mut() = http::Version::HTTP_10;
        let bare = BareRequest::of(&original).expect("no headers, no body");
        let rebuilt = bare.rebuild();
        let copy = clone_request(&original).unwrap();
        assert_eq!(rebuilt.method(), copy.method());
        assert_eq!(rebuilt.uri(), copy.uri());
        assert_eq!(rebuilt.version(), copy.version());
        assert!(rebuilt.headers().is_empty() && copy.headers().is_empty());
        assert_eq!(rebuilt.body().len(), Some(0));
        // A header or a body: the copy is made up front as before. (An
        // empty buffer is no body: `RequestBody::from("")` is `empty()`.)
        let mut with_header = Request::new(RequestBody::empty());
        with_header
            .headers_mut()
            .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k"));
        assert!(BareRequest::of(&with_header).is_none());
        assert!(BareRequest::of(&Request::new(RequestBody::from(""))).is_some());
        assert!(BareRequest::of(&Request::new(RequestBody::from("x"))).is_none());
        let stream = RequestBody::wrap(http_body_util::Empty::<bytes::Bytes>::new());
        assert!(BareRequest::of(&Request::new(stream)).is_none());
    }
}
