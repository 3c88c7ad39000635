//! One error type for everything the client can fail with.
//!
//! Every failure carries a [`Kind`] (what class of thing went wrong, for
//! programs), a message with the numbers a human needs (which limit, which
//! host, which timeout, how long), and the underlying cause as its
//! [`std::error::Error::source`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error, the currency of `source()` chains.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What class of failure an [`Error`] is.
///
/// ```
/// use freshpool::{Client, Kind};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let client = Client::new();
/// let err = client.get("not a url").await.unwrap_err();
/// assert_eq!(err.kind(), Kind::InvalidUri);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// Waited longer than `pool_timeout` for a connection slot.
    PoolTimeout,
    /// `max_pending` requests with no connection on its way were already
    /// waiting for this origin.
    PoolFull,
    /// The connection could not be established: the name lookup failed,
    /// the TCP connect failed, or the connection ended before the
    /// server's HTTP/2 SETTINGS; or a TLS alert ended it after the
    /// handshake (such as a server refusing the client certificate under
    /// TLS 1.3, which over HTTP/1 comes as the answer to the first
    /// request: not possibly processed then).
    Connect,
    /// Connecting took too long: name lookup, TCP connect and a proxy's
    /// CONNECT together past `connect_timeout`, or no HTTP/2 SETTINGS from
    /// the server within `tls_handshake_timeout`.
    ConnectTimeout,
    /// The TLS handshake failed (certificate, protocol) or took longer than
    /// `tls_handshake_timeout`. (A client certificate the server refuses
    /// after the handshake, as TLS 1.3 lets it, is [`Kind::Connect`]
    /// naming the alert.)
    Tls,
    /// An I/O error on an established connection.
    Io,
    /// The peer broke the HTTP protocol (garbage, truncated message).
    Protocol,
    /// No response head arrived within `response_header_timeout`.
    ResponseHeaderTimeout,
    /// The whole request (response body included) took longer than the
    /// request `timeout`.
    Timeout,
    /// The request URI cannot be sent (no scheme, no host, unsupported scheme).
    InvalidUri,
    /// A builder setting is invalid (zero limit, contradictory timeouts).
    Config,
    /// A request without a safe retry (not idempotent, no
    /// `Idempotency-Key`) died on a reused connection after it may have
    /// reached the server: it may or may not have been processed. (Other
    /// failures after a possible write keep their kind and say so through
    /// [`Error::is_possibly_processed`].)
    PossiblyProcessed,
    /// The request body failed while being produced or sent, or disagrees
    /// with the request's own `Content-Length` header (for a body of known
    /// length that is found before anything is sent; a stream is held to
    /// the header as it goes, and fails where it leaves it).
    Body,
    /// No tokio runtime can drive the request: polled outside any
    /// runtime, or its runtime is shutting down.
    Closed,
    /// The proxy could not be reached, refused the CONNECT tunnel (a
    /// non-2xx answer) or broke the protocol (a timeout reaching it or
    /// waiting for its answer is [`Kind::ConnectTimeout`], naming the
    /// proxy). The message names the proxy
    /// (never its credentials: `http://***@host:port`), not the origin; for
    /// a proxy environment variable that cannot be used, the variable and
    /// the request.
    Proxy,
    /// The proxy wants credentials or rejected the ones given (407 Proxy
    /// Authentication Required). The message names the proxy, never the
    /// password.
    ProxyAuth,
    /// The request asks for what the client does not send: an HTTP
    /// version other than 1.0, 1.1 and 2, the `CONNECT` method, or a
    /// protocol upgrade (`Upgrade` with `Connection: upgrade`).
    /// Refused before anything is sent.
    Unsupported,
}

/// The error returned by every fallible freshpool operation.
///
/// ```
/// use freshpool::Client;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = Client::builder().max_connections_per_host(0).build().unwrap_err();
/// assert!(err.is_config());
/// assert!(err.to_string().contains("max_connections_per_host"));
/// # }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    message: String,
    /// (Shared, so that one dial's failure can answer every request that
    /// waited for that dial: [`Error::for_another_waiter`].)
    source: Option<Arc<dyn StdError + Send + Sync>>,
    /// Set when the failure happened on a reused (pooled) connection before
    /// its response head was complete: the retry layer reads it.
    reused_connection: bool,
    /// The request failed after it may have been written, and nothing
    /// proves the server did not act on it (`is_possibly_processed`).
    possibly_processed: bool,
}

impl Error {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source: None,
                reused_connection: false,
                possibly_processed: false,
            }),
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.inner.source = Some(Arc::from(source.into()));
        self
    }

    /// The same failure for another request it answers (several requests
    /// waited for one HTTP/2 dial): same kind, message and source.
    pub(crate) fn for_another_waiter(&self) -> Error {
        Error {
            inner: Box::new(Inner {
                kind: self.inner.kind,
                message: self.inner.message.clone(),
                source: self.inner.source.clone(),
                reused_connection: self.inner.reused_connection,
                possibly_processed: self.inner.possibly_processed,
            }),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::new(Kind::Config, message)
    }

    pub(crate) fn invalid_uri(message: impl Into<String>) -> Error {
        Error::new(Kind::InvalidUri, message)
    }

    /// `{what} to {origin} timed out after {limit} ({setting})`: the
    /// message names the setting that ran out, as every timeout's does.
    pub(crate) fn timeout(
        kind: Kind,
        what: &str,
        origin: &str,
        limit: Duration,
        setting: &str,
    ) -> Error {
        Error::new(
            kind,
            format!(
                "{what} to {origin} timed out after {} ({setting})",
                fmt_duration(limit)
            ),
        )
    }

    pub(crate) fn mark_reused(mut self, reused: bool) -> Error {
        self.inner.reused_connection = reused;
        self
    }

    /// The request may have reached the server's application (it failed
    /// after it may have been written): see `is_possibly_processed`.
    pub(crate) fn mark_possibly_processed(mut self) -> Error {
        self.inner.possibly_processed = true;
        self
    }

    pub(crate) fn with_kind(mut self, kind: Kind, message: impl Into<String>) -> Error {
        self.inner.kind = kind;
        self.inner.message = message.into();
        self
    }

    /// What class of failure this is.
    ///
    /// ```
    /// use freshpool::{Client, Kind};
    /// let err = Client::builder().max_connections_per_host(0).build().unwrap_err();
    /// assert_eq!(err.kind(), Kind::Config);
    /// // `Kind` is non-exhaustive: a `match` on it needs a catch-all arm.
    /// let overloaded = match err.kind() {
    ///     Kind::PoolTimeout | Kind::PoolFull => true,
    ///     _ => false,
    /// };
    /// assert!(!overloaded);
    /// ```
    pub fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// The human message, without the source chain (`to_string()` appends
    /// the underlying cause, when there is one).
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = freshpool::Client::builder()
    ///     .pool_timeout(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.message().starts_with("pool_timeout must be greater than zero"));
    /// ```
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// True when the failure happened on a connection taken from the pool
    /// (as opposed to a fresh one).
    ///
    /// ```no_run
    /// # async fn run() {
    /// let client = freshpool::Client::new();
    /// if let Err(err) = client.get("http://127.0.0.1:8080/").await {
    ///     let connection = if err.is_reused_connection() { "pooled" } else { "new" };
    ///     eprintln!("request failed on a {connection} connection: {err}");
    /// }
    /// # }
    /// ```
    pub fn is_reused_connection(&self) -> bool {
        self.inner.reused_connection
    }

    /// Waited too long for a pool slot ([`Kind::PoolTimeout`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// use std::time::Duration;
    /// let client = freshpool::Client::builder()
    ///     .max_connections_per_host(1)
    ///     .pool_timeout(Duration::from_millis(100))
    ///     .build()?;
    /// // An HTTP/1.1 response whose body is not read yet holds the only connection.
    /// let held = client.get("http://127.0.0.1:8080/").await?;
    /// let err = client.get("http://127.0.0.1:8080/").await.unwrap_err();
    /// assert!(err.is_pool_timeout());
    /// # drop(held);
    /// # Ok(()) }
    /// ```
    pub fn is_pool_timeout(&self) -> bool {
        self.kind() == Kind::PoolTimeout
    }
    /// Too many waiters ([`Kind::PoolFull`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let client = freshpool::Client::builder()
    ///     .max_connections_per_host(1)
    ///     .max_pending(0)
    ///     .build()?;
    /// // An HTTP/1.1 response whose body is not read yet holds the only connection.
    /// let held = client.get("http://127.0.0.1:8080/").await?;
    /// let err = client.get("http://127.0.0.1:8080/").await.unwrap_err();
    /// assert!(err.is_pool_full());
    /// # drop(held);
    /// # Ok(()) }
    /// ```
    pub fn is_pool_full(&self) -> bool {
        self.kind() == Kind::PoolFull
    }
    /// Connecting failed or timed out.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A loopback port nothing listens on: the connection is refused.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// let client = freshpool::Client::builder().proxy_from_env(false).build().unwrap();
    /// let err = client.get(&format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    /// assert!(err.is_connect(), "{err}");
    /// # }
    /// ```
    pub fn is_connect(&self) -> bool {
        matches!(self.kind(), Kind::Connect | Kind::ConnectTimeout)
    }
    /// Any of the timeouts fired.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// // Accepts connections (the kernel does) but never answers.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let client = freshpool::Client::builder()
    ///     .response_header_timeout(Some(Duration::from_millis(50)))
    ///     .proxy_from_env(false)
    ///     .build()
    ///     .unwrap();
    /// let url = format!("http://{}/", silent.local_addr().unwrap());
    /// let err = client.get(&url).await.unwrap_err();
    /// assert!(err.is_timeout(), "{err}");
    /// # }
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind(),
            Kind::PoolTimeout | Kind::ConnectTimeout | Kind::ResponseHeaderTimeout | Kind::Timeout
        ) || (self.kind() == Kind::Tls && self.inner.message.contains("timed out"))
    }
    /// TLS failed.
    ///
    /// ```no_run
    /// # async fn run() {
    /// // A server whose certificate is not trusted (self-signed, say).
    /// let err = freshpool::Client::new().get("https://127.0.0.1:8443/").await.unwrap_err();
    /// assert!(err.is_tls());
    /// # }
    /// ```
    pub fn is_tls(&self) -> bool {
        self.kind() == Kind::Tls
    }
    /// A builder setting was invalid.
    ///
    /// ```
    /// let err = freshpool::Client::builder().max_connections_total(0).build().unwrap_err();
    /// assert!(err.is_config());
    /// ```
    pub fn is_config(&self) -> bool {
        self.kind() == Kind::Config
    }
    /// The peer broke the protocol.
    ///
    /// ```no_run
    /// # async fn run() {
    /// // A server that answers with something other than HTTP.
    /// let err = freshpool::Client::new().get("http://127.0.0.1:8080/").await.unwrap_err();
    /// assert!(err.is_protocol());
    /// # }
    /// ```
    pub fn is_protocol(&self) -> bool {
        self.kind() == Kind::Protocol
    }
    /// The proxy failed or refused ([`Kind::Proxy`] or [`Kind::ProxyAuth`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use freshpool::{Client, Proxy};
    /// // A proxy on a loopback port nothing listens on.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// let client = Client::builder()
    ///     .proxy(Proxy::all(&format!("http://127.0.0.1:{port}")).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let err = client.get("http://example.com/").await.unwrap_err();
    /// assert!(err.is_proxy(), "{err}");
    /// # }
    /// ```
    pub fn is_proxy(&self) -> bool {
        matches!(self.kind(), Kind::Proxy | Kind::ProxyAuth)
    }
    /// The request may have been acted on by the server: it failed after
    /// it may have been written, and nothing proves the server did not act
    /// on it, so a non-idempotent request must not be sent again blindly.
    ///
    /// True for [`Kind::PossiblyProcessed`] (declined a retry on a reused
    /// connection because not idempotent), for any other failure after
    /// the request may have gone (on a newly dialed connection, after its
    /// one retry, however that ended, a `ResponseHeaderTimeout`, a request
    /// body that failed midway, an error reading the response body), and
    /// for the overall `timeout` ([`Kind::Timeout`]), which may have ended
    /// the request before or after its write. False where the server did
    /// not get it, or got its head but provably not its body: a refused
    /// connection, a pool timeout, the overall `timeout` while the request
    /// waited for the pool (its message then says why the pool was full), a stale connection that closed before
    /// the write, an HTTP/2 stream the server refused, a body held back
    /// behind `Expect: 100-continue` with nothing read since.
    ///
    /// ```no_run
    /// # async fn run() {
    /// let client = freshpool::Client::new();
    /// match client.post("http://127.0.0.1:8080/orders", "{}").await {
    ///     Ok(response) => println!("{}", response.status()),
    ///     // Check whether the order exists before sending it again.
    ///     Err(err) if err.is_possibly_processed() => eprintln!("order state unknown: {err}"),
    ///     Err(err) => eprintln!("order not placed: {err}"),
    /// }
    /// # }
    /// ```
    pub fn is_possibly_processed(&self) -> bool {
        // (The overall timeout is marked where it ends a request that
        // may have been written: `RequestDeadline::poll_elapsed`.)
        self.kind() == Kind::PossiblyProcessed || self.inner.possibly_processed
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("freshpool::Error");
        d.field("kind", &self.inner.kind);
        d.field("message", &self.inner.message);
        d.field("reused_connection", &self.inner.reused_connection);
        d.field("possibly_processed", &self.is_possibly_processed());
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        // Show the root cause inline: users read error strings in logs, and
        // "connect error" alone has cost people days.
        if let Some(source) = &self.inner.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

/// A URL for an error message (a request's or a proxy's): its userinfo,
/// if any, replaced by `***`. The user name too: services put an API key
/// there (`http://<key>:@proxy`, `https://<token>@host`).
pub(crate) fn redact_userinfo(url: &str) -> String {
    let scheme_end = split_scheme(url).map_or(0, |(scheme, _)| scheme.len() + 3);
    // The last '@' anywhere after the scheme, not only before the first
    // '/': a password may hold an unencoded '/', '?' or '#', and then the
    // URL does not parse (or `http` reads part of it as a port, the rest
    // as the path), and this message must still hide it. (A path holding
    // an '@' reads oddly here; a leaked password is worse.)
    match url[scheme_end..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

/// `url`'s scheme and the rest, where it starts with one: a scheme token
/// (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`) before
/// `://`. Not the first `://` anywhere: in `alice:s3://x@proxy:3128` (a
/// scheme-less proxy URL whose password is `s3://x`) that split off
/// "alice:s3", and the password went into messages as the URL's rest.
pub(crate) fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// Formats a duration the way people read them: `250ms`, `1.5s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Classifies a hyper error into our kinds. A message cut short (EOF
/// before the announced length) or unparsable is the peer breaking the
/// protocol; other failures are I/O.
pub(crate) fn classify(err: &hyper::Error) -> Kind {
    // A TLS alert once the handshake was done (TLS 1.3 sends a server's
    // refusal of the client's certificate after the client's side is
    // over): the connection failed, not the request (as over HTTP/2,
    // where it ends the SETTINGS wait).
    if tls_alert_in(err).is_some() {
        return Kind::Connect;
    }
    let mut eof = false;
    let mut source = StdError::source(err);
    while let Some(s) = source {
        // The caller's own request body failing is a "user" error to hyper,
        // like the server's mistakes: told apart by the mark `RequestBody`
        // puts on it.
        if s.is::<RequestBodyError>() {
            return Kind::Body;
        }
        eof |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
        source = s.source();
    }
    if dispatch_gone(err) {
        return Kind::Io;
    }
    // (Before `is_user`, which hyper also says of it: the caller's body
    // ended short of the length it announced. Read as the server's broken
    // message, an idempotent request was sent again, short again.)
    if err.is_body_write_aborted() {
        return Kind::Body;
    }
    if err.is_parse() || err.is_incomplete_message() || err.is_user() || eof {
        return Kind::Protocol;
    }
    Kind::Io
}

/// A `Connect` error for a TLS session the server at `origin` ended with
/// `alert` after the handshake.
pub(crate) fn tls_alert(origin: &str, alert: rustls::AlertDescription) -> Error {
    let message = if is_certificate_alert(alert) {
        format!(
            "{origin} ended the TLS session after the handshake with alert {alert:?}: \
             it requires a client certificate, or does not accept the one sent"
        )
    } else {
        format!("{origin} ended the TLS session with alert {alert:?}")
    };
    Error::new(Kind::Connect, message)
}

/// The TLS alert the server sent, if that ended the connection.
/// (tokio-rustls wraps it in an `io::Error`, whose `source()` skips the
/// error it wraps: looked for with `get_ref`.)
fn tls_alert_in(err: &(dyn StdError + 'static)) -> Option<rustls::AlertDescription> {
    let alert_of = |e: &(dyn StdError + 'static)| match e.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
        _ => None,
    };
    let mut source = Some(err);
    while let Some(s) = source {
        let wrapped = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| alert_of(inner));
        if let Some(alert) = alert_of(s).or(wrapped) {
            return Some(alert);
        }
        source = s.source();
    }
    None
}

/// Whether `err` is a server's refusal of the TLS session by a certificate
/// alert after the handshake (a client certificate it requires, or does
/// not accept): then it processed no request on that connection, and the
/// request is no "possibly processed" failure.
pub(crate) fn refused_tls_session(err: &Error) -> bool {
    err.kind() == Kind::Connect && tls_alert_in(err).is_some_and(is_certificate_alert)
}

/// An alert that refuses the peer's certificate (or its lack of one).
pub(crate) fn is_certificate_alert(alert: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::HandshakeFailure
    )
}

/// The task that drove the connection was dropped with the request in
/// it: its runtime shut down (a client shared by several runtimes, such as
/// a static one used by many `#[tokio::test]`s), or code it ran panicked.
/// Not the peer's fault: hyper files it as a "user" error, which would
/// read as a broken HTTP message. (hyper has no predicate for it: its
/// text is the only mark, and if that changes this reads false and the
/// error keeps hyper's own words.)
fn dispatch_gone(err: &hyper::Error) -> bool {
    err.is_user() && err.to_string() == "dispatch task is gone"
}

/// The HTTP/2 error under hyper's, if there is one.
pub(crate) fn h2_error_in(err: &hyper::Error) -> Option<&h2::Error> {
    let mut source = StdError::source(err);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = s.source();
    }
    None
}

/// Wraps a hyper error with our kind and the origin.
pub(crate) fn from_hyper(err: hyper::Error, origin: &str) -> Error {
    let kind = classify(&err);
    let message = match kind {
        Kind::Io if dispatch_gone(&err) => format!(
            "the connection to {origin} was lost: the runtime that drove it shut down \
             (or code it ran panicked)"
        ),
        // (ETIMEDOUT on an open connection: hyper's words, "connection
        // error", hid the only part that says what to change.)
        Kind::Io if io_kind_in(&err) == Some(std::io::ErrorKind::TimedOut) => format!(
            "the connection to {origin} timed out in the kernel: the other end (the server, \
             or a proxy on the way) stopped acknowledging data (tcp_user_timeout) or \
             keep-alive probes (tcp_keepalive)"
        ),
        Kind::Protocol if err.is_incomplete_message() => {
            format!("connection closed before the response completed from {origin}")
        }
        Kind::Protocol => format!("invalid or truncated HTTP message from {origin}"),
        Kind::Connect => match tls_alert_in(&err) {
            Some(alert) => return tls_alert(origin, alert).with_source(err),
            None => connection_error(origin, &err),
        },
        // (hyper's own words, "error from user's Body stream", hide why:
        // the body's error is two sources down.)
        Kind::Body => match body_failure(&err) {
            Some(why) => format!("the request body failed while sending to {origin} ({why})"),
            None => format!("the request body failed while sending to {origin}"),
        },
        _ => connection_error(origin, &err),
    };
    Error::new(kind, message).with_source(err)
}

/// "connection error from {origin}", with what broke it: hyper's own
/// words are "connection error" and the cause (a reset, a broken pipe) is
/// sources below, where a log line that shows one level never reached:
/// "connection error from https://api:443: connection error".
fn connection_error(origin: &str, err: &hyper::Error) -> String {
    let cause = deepest_cause(err);
    if cause == err.to_string() {
        format!("connection error from {origin}")
    } else {
        format!("connection error from {origin} ({cause})")
    }
}

/// Whether `err` is the peer closing the connection under a request (its
/// FIN before the answer ended, a reset, a broken pipe, a dispatcher that
/// ended with it): on a pooled connection, the mark of one that died while
/// it idled.
pub(crate) fn peer_closed(err: &Error) -> bool {
    let mut source = StdError::source(err);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_closed())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return is_close_kind(io.kind());
        }
        source = s.source();
    }
    false
}

/// The I/O error kinds of a peer that closed or reset the connection.
pub(crate) fn is_close_kind(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        kind,
        BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
    )
}

/// The kind of the first I/O error in `err`'s chain.
pub(crate) fn io_kind_in(err: &hyper::Error) -> Option<std::io::ErrorKind> {
    let mut source = StdError::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// The last error in `err`'s chain, as text.
pub(crate) fn deepest_cause(err: &hyper::Error) -> String {
    let mut deepest: &(dyn StdError + 'static) = err;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    deepest.to_string()
}

/// An error that more than one party reports (`Clone`: an `io::Error` or a
/// boxed error is not): a request body's error, which hyper may only log
/// and the request's own error carries; a shared lookup's, handed to each
/// dial that waited for it. Shows as the error it holds, whose source
/// chain it continues.
#[derive(Clone, Debug)]
pub(crate) struct SharedError(Arc<BoxError>);

impl SharedError {
    pub(crate) fn new(e: impl Into<BoxError>) -> SharedError {
        SharedError(Arc::new(e.into()))
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.0, f)
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&**self.0)
    }
}

/// The caller's body error in `err`'s chain, if that is what failed.
fn body_failure(err: &hyper::Error) -> Option<&BoxError> {
    let mut source = StdError::source(err);
    while let Some(s) = source {
        if let Some(RequestBodyError(why)) = s.downcast_ref::<RequestBodyError>() {
            return Some(why);
        }
        source = s.source();
    }
    None
}

/// A streamed request body's own error, as `RequestBody` hands it to
/// hyper: marked, so that `classify` can tell the caller's failure from
/// the server's.
#[derive(Debug)]
pub(crate) struct RequestBodyError(pub BoxError);

impl fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body: {}", self.0)
    }
}

impl StdError for RequestBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_source_and_numbers() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::new(Kind::Connect, "connect to 127.0.0.1:1 failed").with_source(io);
        assert_eq!(err.to_string(), "connect to 127.0.0.1:1 failed: refused");
        assert!(err.is_connect());
        assert!(err.source().is_some());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }
}
