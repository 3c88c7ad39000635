//! Requests the client does not send, refused before anything is sent
//! ([`Kind::Unsupported`]) instead of handed to hyper.
//!
//! * An HTTP version other than 1.0, 1.1 and 2 (a gateway passing on a
//!   request it received over HTTP/3): hyper's HTTP/1 encoder panics on it,
//!   in the connection's task, which took the connection down, and, on a
//!   reused connection, a second one with the retry. (hyper-util refuses it
//!   the same way: `UserUnsupportedVersion`.)
//! * `CONNECT`: its target is an authority (`host:443`), which the pool's
//!   origin-form rewrite turned into `CONNECT / HTTP/1.1`, and the tunnel it
//!   opens is no connection to pool. A tunnel through a proxy is
//!   `ClientBuilder::proxy`'s.

use http::{Method, Request, Version};

use crate::body::RequestBody;
use crate::error::{Error, Kind};

/// `Err` for a request the client does not send. (Two compares per
/// request.)
#[inline]
pub(super) fn check(request: &Request<RequestBody>) -> Result<(), Error> {
    let version = request.version();
    let refuse = |why: String| {
        Err(Error::new(
            Kind::Unsupported,
            format!(
                "{} {} was not sent: {why}",
                request.method(),
                super::span_uri::SpanUri(request.uri())
            ),
        ))
    };
    if version != Version::HTTP_11 && version != Version::HTTP_2 && version != Version::HTTP_10 {
        return refuse(format!(
            "it asks for {version:?}, and freshpool sends HTTP/1.0, HTTP/1.1 and HTTP/2 \
             (leave the version at its default, HTTP/1.1: HTTP/2 is used where the server offers it)"
        ));
    }
    if request.method() == Method::CONNECT {
        return refuse(
            "CONNECT is not supported (a tunnel through a proxy is set with ClientBuilder::proxy)"
                .to_owned(),
        );
    }
    Ok(())
}
