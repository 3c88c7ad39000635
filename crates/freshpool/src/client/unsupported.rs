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
//! * A protocol upgrade (`Upgrade` with `Connection: upgrade`: WebSocket,
//!   h2c; a stray `Upgrade` alone is no request to switch): a connection handed
//!   over to another protocol cannot go back to the pool, and hyper's
//!   pooled connections take none: over HTTP/1 the caller got a `101` it
//!   could not use, on a connection handed back to the pool as it closed;
//!   over HTTP/2 hyper dropped the header and sent a plain request.

use http::header::UPGRADE;
use http::{Method, Request, Version};

use crate::body::RequestBody;
use crate::error::{Error, Kind};

/// `Err` for a request the client does not send. (Three compares per
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
    // (An empty header map, as for every `get` and `post`, answers at
    // once, without hashing the name.)
    if request.headers().contains_key(UPGRADE) && asks_to_upgrade(request.headers()) {
        return refuse(
            "Upgrade (WebSocket, h2c) is not supported: a connection handed over to another \
             protocol cannot go back to the pool (open one with hyper::client::conn, which \
             takes upgrades)"
                .to_owned(),
        );
    }
    if request.method() == Method::CONNECT {
        return refuse(
            "CONNECT is not supported (a tunnel through a proxy is set with ClientBuilder::proxy)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Whether `Connection` lists the `upgrade` token (RFC 9110 section 7.8:
/// without it, `Upgrade` asks for nothing).
#[cold]
fn asks_to_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}
