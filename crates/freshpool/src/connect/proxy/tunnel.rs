//! Going through a proxy: reaching it, CONNECT tunnels, forward-proxy
//! request rewriting, and the errors that name the proxy.

use http::{Request, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::body::RequestBody;
use crate::connect::tcp::TcpIo;
use crate::connect::ConnectDeadline;
use crate::error::{fmt_duration, Error, Kind};

use super::url::{authority, ProxyUrl};
use super::Route;

/// Turns an HTTP/1 request prepared for an origin into one for a forward
/// proxy: absolute-form target (without userinfo) and `Proxy-Authorization`.
pub(crate) fn to_forward_form(request: &mut Request<RequestBody>, uri: &Uri, route: &Route) {
    let mut parts = uri.clone().into_parts();
    if let Some(authority) = &parts.authority {
        if let Some((_, host)) = authority.as_str().rsplit_once('@') {
            parts.authority = host.parse().ok();
        }
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(absolute) = Uri::from_parts(parts) {
        *request.uri_mut() = absolute;
    }
    if let Some(auth) = route.url.authorization() {
        request
            .headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, auth);
    }
}

/// A forward proxy's own refusal (407), as an error naming the proxy.
pub(crate) fn forward_refusal(status: http::StatusCode, route: &Route) -> Option<Error> {
    (status == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED).then(|| auth_error(&route.url))
}

fn auth_error(url: &ProxyUrl) -> Error {
    let what = if url.user.is_some() {
        "rejected the credentials"
    } else {
        "requires credentials (none were given)"
    };
    Error::new(
        Kind::ProxyAuth,
        format!("proxy {url} {what} (407 Proxy Authentication Required)"),
    )
}

/// The proxy itself could not be reached. Past `connect_timeout` that is
/// a `ConnectTimeout` (code retries on timeouts), naming the proxy.
pub(crate) fn unreachable(url: &ProxyUrl, err: Error) -> Error {
    let (kind, what) = if err.kind() == Kind::ConnectTimeout {
        (Kind::ConnectTimeout, "timed out connecting to proxy")
    } else {
        (Kind::Proxy, "cannot connect to proxy")
    };
    Error::new(kind, format!("{what} {url}")).with_source(err)
}

/// The longest CONNECT response head we accept.
const MAX_HEAD: usize = 16 * 1024;

/// Asks the proxy for a tunnel to `host:port` and reads its answer. On
/// success the stream is a byte pipe to the origin.
pub(crate) async fn connect_tunnel(
    io: &mut TcpIo,
    url: &ProxyUrl,
    host: &str,
    port: u16,
    deadline: ConnectDeadline,
) -> Result<(), Error> {
    let target = authority(host, port);
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = url.authorization() {
        head.push_str("Proxy-Authorization: ");
        head.push_str(auth.to_str().unwrap_or_default());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let io_err = |e: std::io::Error| {
        Error::new(Kind::Proxy, format!("proxy {url} failed during CONNECT")).with_source(e)
    };
    let exchange = async {
        io.write_all(head.as_bytes()).await.map_err(io_err)?;
        // Read the head without reading past it: the origin may speak first
        // (an HTTP/2 server sends SETTINGS at once), and those bytes belong
        // to the connection, not to the CONNECT answer. Asking for at most
        // the bytes that could still end the head never overshoots it.
        let mut buf = Vec::with_capacity(256);
        // Bytes of interim (1xx) heads skipped: they count toward MAX_HEAD.
        let mut skipped = 0;
        loop {
            let mut chunk = [0u8; 2];
            let want = bytes_that_may_end_head(&buf);
            let n = io.read(&mut chunk[..want]).await.map_err(io_err)?;
            if n == 0 {
                return Err(Error::new(
                    Kind::Proxy,
                    format!("proxy {url} closed the connection before answering CONNECT"),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            if head_ended(&buf) {
                // An interim response (`100 Continue`, `102`, `103`) comes
                // before the real answer: skipped, as RFC 9110 section 15.2
                // requires of a client.
                if is_interim(&buf) {
                    skipped += buf.len();
                    buf.clear();
                    continue;
                }
                let end = buf.len();
                return Ok((buf, end));
            }
            if skipped + buf.len() > MAX_HEAD {
                return Err(Error::new(
                    Kind::Proxy,
                    format!("proxy {url} sent a CONNECT response head over {MAX_HEAD} bytes"),
                ));
            }
        }
    };
    let (buf, end) = tokio::time::timeout_at(deadline.at, exchange).await.map_err(|_| {
        Error::new(
            Kind::ConnectTimeout,
            format!(
                "proxy {url} did not answer CONNECT within connect_timeout ({}, which the connect to the proxy shares)",
                fmt_duration(deadline.limit)
            ),
        )
    })??;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status_line = head.lines().next().unwrap_or("");
    let mut words = status_line.splitn(3, ' ');
    let version = words.next().unwrap_or("");
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    let reason = words.next().unwrap_or("").trim();
    let code = match code {
        Some(code) if version.starts_with("HTTP/1.") => code,
        _ => {
            return Err(Error::new(
                Kind::Proxy,
                format!(
                    "proxy {url} sent an invalid CONNECT response ({:?})",
                    shown(status_line)
                ),
            ))
        }
    };
    if code == 407 {
        return Err(auth_error(url));
    }
    if !(200..300).contains(&code) {
        return Err(Error::new(
            Kind::Proxy,
            format!(
                "proxy {url} refused the CONNECT tunnel: {code} {}",
                shown(reason)
            ),
        ));
    }
    Ok(())
}

/// Text the proxy sent, as a message may show it: without control
/// characters (terminal escapes, a lone CR would reach logs and terminals
/// as the proxy chose) and at most 200 characters (a head may be 16 KiB).
fn shown(text: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if text.chars().filter(|c| !c.is_control()).nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// Whether a complete head is an interim (1xx) response, other than `101
/// Switching Protocols`, which would be a final answer (a refusal here).
fn is_interim(head: &[u8]) -> bool {
    match head {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', b'1', d1, d2, b' ' | b'\r' | b'\n', ..] => {
            d1.is_ascii_digit() && d2.is_ascii_digit() && (*d1, *d2) != (b'0', b'1')
        }
        _ => false,
    }
}

/// Whether `buf` ends with the empty line that ends a head. Lines end in
/// CRLF, or a bare LF, which RFC 9112 section 2.2 lets a recipient accept
/// (curl does; some proxies send it).
fn head_ended(buf: &[u8]) -> bool {
    buf.ends_with(b"\n\n") || buf.ends_with(b"\n\r\n")
}

/// How many bytes may be read without passing the end of the head: one
/// when the next could end it (after LF, or LF CR), else two (the shortest
/// end is LF LF; after a CR it is CR LF LF).
fn bytes_that_may_end_head(buf: &[u8]) -> usize {
    if buf.ends_with(b"\n") || buf.ends_with(b"\n\r") {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::time::Duration;

    use super::super::url::base64;
    use super::*;
    use crate::config::HttpVersion;
    use crate::pool::key::SecurityContext;

    /// A refusal's reason is the proxy's text: shown without control
    /// characters and cut to 200 characters.
    #[tokio::test]
    async fn a_refusal_reason_is_shown_clean_and_short() {
        static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let answer = ANSWER.get_or_init(|| {
            let mut a = b"HTTP/1.1 403 \x1b[2J\x1b[31mDenied\rX".to_vec();
            a.extend(std::iter::repeat_n(b'y', 5000));
            a.extend_from_slice(b"\r\n\r\n");
            a
        });
        let (result, _io, _) = fake_connect(answer).await;
        let msg = result.unwrap_err().to_string();
        assert!(!msg.contains('\x1b') && !msg.contains('\r'), "{msg:?}");
        assert!(msg.contains("403 [2J[31mDeniedX"), "{msg:?}");
        assert!(msg.len() < 512 && msg.ends_with('…'), "{msg:?}");
    }

    /// A fake proxy that answers the CONNECT with `answer` in one write.
    async fn fake_connect(answer: &'static [u8]) -> (Result<(), Error>, TcpIo, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.unwrap();
            // Keep the socket open until the client is done.
            let _ = s.read(&mut buf).await;
            String::from_utf8(seen).unwrap()
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut io, _weak) = TcpIo::new(stream);
        let url = ProxyUrl::parse(&format!("http://u:p@{addr}")).unwrap();
        let result = connect_tunnel(
            &mut io,
            &url,
            "::1",
            443,
            ConnectDeadline::start(Duration::from_secs(5)),
        )
        .await;
        io.shutdown().await.unwrap();
        (result, io, server.await.unwrap())
    }

    #[tokio::test]
    async fn connect_keeps_bytes_the_origin_sent_right_after_the_answer() {
        let (result, mut io, request) =
            fake_connect(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nSETTINGS").await;
        result.unwrap();
        assert!(request.starts_with("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n"));
        assert!(request.contains(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64(b"u:p")
        )));
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"SETTINGS", "nothing after the head was swallowed");
    }

    /// Bare LF line ends (RFC 9112 2.2 lets a recipient accept them): the
    /// answer is read, not waited on until connect_timeout; and bytes the
    /// origin sent right after are kept, whatever the line ends.
    #[tokio::test]
    async fn a_connect_answer_with_bare_line_feeds_is_read() {
        for answer in [
            &b"HTTP/1.1 200 OK\n\nSETTINGS"[..],
            b"HTTP/1.1 200 OK\r\nVia: x\n\r\nSETTINGS",
            b"HTTP/1.1 200 OK\nVia: x\r\n\nSETTINGS",
        ] {
            let (result, mut io, _) = fake_connect(answer).await;
            result.unwrap();
            let mut rest = Vec::new();
            io.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"SETTINGS", "{:?}", String::from_utf8_lossy(answer));
        }
    }

    /// Interim (1xx) answers before the proxy's real one are skipped (RFC
    /// 9110 section 15.2): a `100 Continue` first was read as the answer
    /// and reported as a refusal. A `101` is final: a refusal.
    #[tokio::test]
    async fn interim_answers_to_connect_are_skipped() {
        for answer in [
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nSETTINGS"[..],
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nSETTINGS",
            b"HTTP/1.0 102\n\nHTTP/1.1 200 OK\n\nSETTINGS",
        ] {
            let (result, mut io, _) = fake_connect(answer).await;
            let shown = String::from_utf8_lossy(answer);
            result.unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            let mut rest = Vec::new();
            io.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"SETTINGS", "{shown:?}");
        }
        let (result, _, _) =
            fake_connect(b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\n\r\n").await;
        assert_eq!(result.unwrap_err().kind(), Kind::Proxy);
    }

    /// The reader never asks for a byte past the end of a head, however the
    /// head is cut into reads.
    #[test]
    fn the_head_reader_never_reads_past_the_end() {
        for head in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\n\n",
            b"A\r\nB\n\r\n",
            b"A\nB\r\n\n",
        ] {
            let mut buf = Vec::new();
            while !head_ended(&buf) {
                let want = bytes_that_may_end_head(&buf);
                let take = want.min(head.len() - buf.len());
                assert!(
                    buf.len() + want <= head.len(),
                    "would read past the end of {head:?}"
                );
                buf.extend_from_slice(&head[buf.len()..buf.len() + take]);
            }
            assert_eq!(buf, head);
        }
    }

    #[tokio::test]
    async fn connect_refusals_are_typed() {
        let (result, _, _) =
            fake_connect(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        assert_eq!(result.unwrap_err().kind(), Kind::ProxyAuth);
        let (result, _, _) =
            fake_connect(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), Kind::Proxy);
        assert!(err.to_string().contains("403 Forbidden"), "{err}");
        assert!(!err.to_string().contains("::1"), "names the origin: {err}");
        let (result, _, _) = fake_connect(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert_eq!(result.unwrap_err().kind(), Kind::Proxy);
    }

    #[test]
    fn forward_form_is_absolute_without_userinfo() {
        let route = Route {
            url: Arc::new(ProxyUrl::parse("http://u:p@proxy:1").unwrap()),
            security: SecurityContext::intern(crate::pool::key::SecuritySettings {
                tls: Default::default(),
                http_version: HttpVersion::Auto,
                proxy: None,
            }),
            forward: true,
        };
        let uri: Uri = "http://me:pw@origin.test:8080/a?b=1".parse().unwrap();
        let mut req = Request::new(RequestBody::empty());
        to_forward_form(&mut req, &uri, &route);
        assert_eq!(req.uri().to_string(), "http://origin.test:8080/a?b=1");
        assert_eq!(
            req.headers()["proxy-authorization"],
            format!("Basic {}", base64(b"u:p"))
        );
    }
}
