//! The caller's `Content-Length` header against the body it comes with.
//!
//! hyper sends a caller's `Content-Length` as given and frames the body by
//! it. Over HTTP/1 a body shorter than the header leaves the server
//! waiting for bytes that never come: the request hangs until some timeout
//! ends it. A longer body is cut to the header's length without a word: the
//! server answers a truncated body. Over HTTP/2 the server resets the
//! stream or the whole connection, and the error reads as the server's (a
//! POST on a reused connection even reads "may or may not have been
//! processed"). Go's transport refuses the same request up front
//! (`http: ContentLength=10 with Body length 5`).
//!
//! So the rule, enforced here once per request before anything is sent
//! (a request that also has a `Transfer-Encoding` is framed by that, and its
//! `Content-Length` is removed):
//! * a header that is not one byte count (`abc`, `-1`, two different
//!   values) is the caller's error, [`Kind::Body`];
//! * a body whose length is known (in memory, or a stream that announced
//!   it) must have exactly the header's length, or the same error says
//!   both numbers;
//! * a streamed body of unknown length cannot be checked up front under
//!   `Content-Length: 0` (hyper never polls a body framed as empty, so its
//!   bytes would vanish): refused the same way;
//! * any other streamed body of unknown length is held to the header as it goes
//!   (`RequestBody::hold_to_length`): ending short or running long fails
//!   the request with [`Kind::Body`] on every protocol;
//! * without the header, an HTTP/1.0 request with a streamed body of
//!   unknown length is refused the same way (`unframed`: HTTP/1.0 has no
//!   chunked encoding, and hyper would send no body at all).

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderValue, Request};

use crate::body::RequestBody;
use crate::error::{Error, Kind};

/// Checks `request`'s `Content-Length` header (if any) against its body,
/// binding a streamed body of unknown length to it.
#[inline]
pub(super) fn check(request: &mut Request<RequestBody>) -> Result<(), Error> {
    // (The common request has no such header: one lookup, and none at all
    // in an empty header map.)
    let mut values = request.headers().get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return unframed(request);
    };
    // With its own Transfer-Encoding the body is framed by that, and a
    // Content-Length beside it must not be sent (RFC 9112 section 6.2):
    // hyper drops it over HTTP/1, but over HTTP/2 drops the
    // Transfer-Encoding and keeps it, and the server reset a stream whose
    // body disagreed. Removed here, for both.
    if request.headers().contains_key(TRANSFER_ENCODING) {
        request.headers_mut().remove(CONTENT_LENGTH);
        return unframed(request);
    }
    let refuse = |why: String| {
        Err(Error::new(
            Kind::Body,
            format!(
                "{} {} was not sent: {why}",
                request.method(),
                super::span_uri::SpanUri(request.uri())
            ),
        ))
    };
    let Some(announced) = byte_count(first) else {
        return refuse(format!(
            "its Content-Length header {first:?} is not a byte count"
        ));
    };
    if let Some(other) = values.find(|v| byte_count(v) != Some(announced)) {
        return refuse(format!(
            "it has two different Content-Length headers ({first:?} and {other:?})"
        ));
    }
    match request.body().len() {
        Some(len) if len == announced => Ok(()),
        Some(len) => refuse(format!(
            "its Content-Length header says {announced} bytes but its body has {len}"
        )),
        // (hyper does not poll a body framed as empty: over HTTP/1 its
        // bytes, if any, would be dropped unseen.)
        None if announced == 0 => refuse(
            "its Content-Length header says 0 bytes but its body is a stream of unknown \
             length (send no body, or a body whose size hint is exact)"
                .to_owned(),
        ),
        None => {
            request.body_mut().hold_to_length(announced);
            Ok(())
        }
    }
}

/// A request without `Content-Length` (or with a `Transfer-Encoding`,
/// which HTTP/1.0 does not know either). An HTTP/1.0 request has no chunked
/// encoding, so hyper frames a streamed body of unknown length as empty
/// and never polls it: its bytes would vanish while the request
/// "succeeded". Refused instead, naming the fix. (Over HTTP/1.1 a GET or
/// HEAD with such a body is framed chunked by `prepare`.)
#[inline]
fn unframed(request: &Request<RequestBody>) -> Result<(), Error> {
    if request.version() != http::Version::HTTP_10 || request.body().len().is_some() {
        return Ok(());
    }
    Err(Error::new(
        Kind::Body,
        format!(
            "{} {} was not sent: an HTTP/1.0 request cannot carry a body of unknown length \
             (HTTP/1.0 has no chunked encoding); give it a Content-Length header or a body \
             whose size hint is exact",
            request.method(),
            super::span_uri::SpanUri(request.uri())
        ),
    ))
}

/// A `Content-Length` value: decimal digits (RFC 9110 section 8.6), no
/// sign; a list of equal counts (`5, 5`: headers merged by a proxy) is
/// that count, as hyper and the RFC read it.
fn byte_count(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?;
    let mut counts = text.split(',').map(|item| {
        let digits = item.trim_matches([' ', '\t']);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok()
    });
    let first = counts.next()??;
    counts.all(|c| c == Some(first)).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    fn request(lengths: &[&'static str], body: RequestBody) -> Request<RequestBody> {
        let mut request = Request::post("http://127.0.0.1:1/up").body(body).unwrap();
        for v in lengths {
            request
                .headers_mut()
                .append(CONTENT_LENGTH, HeaderValue::from_static(v));
        }
        request
    }

    fn refusal(lengths: &[&'static str], body: RequestBody) -> String {
        let err = check(&mut request(lengths, body)).unwrap_err();
        assert_eq!(err.kind(), Kind::Body);
        err.to_string()
    }

    #[test]
    fn a_matching_header_or_none_passes() {
        assert!(check(&mut request(&[], RequestBody::from("hello"))).is_ok());
        assert!(check(&mut request(&["5"], RequestBody::from("hello"))).is_ok());
        assert!(check(&mut request(&["5", "5"], RequestBody::from("hello"))).is_ok());
        assert!(check(&mut request(&["5, 5"], RequestBody::from("hello"))).is_ok());
        assert!(check(&mut request(&["0"], RequestBody::empty())).is_ok());
    }

    #[test]
    fn a_known_length_that_differs_is_refused_with_both_numbers() {
        let message = refusal(&["10"], RequestBody::from("hello"));
        assert!(
            message.contains("POST http://127.0.0.1:1/up was not sent")
                && message.contains("says 10 bytes but its body has 5"),
            "{message}"
        );
        let message = refusal(&["3"], RequestBody::from("hello"));
        assert!(
            message.contains("says 3 bytes but its body has 5"),
            "{message}"
        );
        let message = refusal(&["1"], RequestBody::empty());
        assert!(
            message.contains("says 1 bytes but its body has 0"),
            "{message}"
        );
    }

    /// With its own Transfer-Encoding the Content-Length is not what frames
    /// the body (hyper drops it): nothing is checked or held.
    #[test]
    fn a_transfer_encoding_of_the_callers_own_leaves_the_length_alone() {
        let mut chunked = request(&["10"], RequestBody::from("hello"));
        chunked.headers_mut().insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(check(&mut chunked).is_ok());
    }

    #[test]
    fn a_header_that_is_not_one_byte_count_is_refused() {
        for bad in [
            "abc",
            "-1",
            "+5",
            "",
            "5,",
            "5, 6",
            "99999999999999999999999",
        ] {
            let message = refusal(&[bad], RequestBody::from("hello"));
            assert!(message.contains("is not a byte count"), "{bad}: {message}");
        }
        let message = refusal(&["5", "6"], RequestBody::from("hello"));
        assert!(
            message.contains("two different Content-Length headers"),
            "{message}"
        );
    }

    /// A streamed body in two chunks that does not say its length.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl http_body::Body for Chunks {
        type Data = bytes::Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>>
        {
            let next = self.0.pop_front();
            std::task::Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c.into()))))
        }
    }

    #[tokio::test]
    async fn a_stream_of_unknown_length_is_held_to_the_header() {
        use http_body_util::BodyExt;
        let stream = || RequestBody::wrap(Chunks([&b"he"[..], b"llo"].into()));
        let read = |body: RequestBody| async move {
            let collected = body.collect().await;
            collected.map(|c| c.to_bytes()).map_err(|e| e.to_string())
        };
        assert_eq!(stream().size_hint().exact(), None);
        let mut exact = request(&["5"], stream());
        check(&mut exact).unwrap();
        assert_eq!(exact.body().size_hint().exact(), Some(5));
        assert_eq!(read(exact.into_body()).await.unwrap(), "hello");
        let mut long = request(&["4"], stream());
        check(&mut long).unwrap();
        let err = read(long.into_body()).await.unwrap_err();
        assert!(
            err.contains("1 bytes more than its Content-Length header (4 bytes)"),
            "{err}"
        );
        let message = check(&mut request(&["0"], stream()))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("says 0 bytes but its body is a stream"),
            "{message}"
        );
        let mut short = request(&["7"], stream());
        check(&mut short).unwrap();
        let err = read(short.into_body()).await.unwrap_err();
        assert!(
            err.contains("ended 2 bytes short of its Content-Length header (7 bytes)"),
            "{err}"
        );
    }
}
