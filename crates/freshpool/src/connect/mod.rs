//! Turning a pool key into a ready HTTP connection: resolve, TCP, TLS, and
//! the HTTP/1.1 or HTTP/2 handshake; then the driver task whose end is the
//! connection's end.
//!
//! ```text
//! dial(key) --resolve--> addrs --happy eyeballs--> TcpStream
//!   --(https) rustls handshake, ALPN--> h2 | http/1.1
//!   --hyper handshake--> SendRequest + driver task
//!                           driver ends ==> the slot guard drops: freed
//! ```
//! The slot a connection holds in the pool is released by its driver task
//! when the socket is really closed, so the pool's count of open connections
//! always equals the sockets that exist, whatever path a connection dies by.

pub(crate) mod driver;
pub(crate) mod preface;
pub(crate) mod proxy;
pub(crate) mod socket;
pub(crate) mod tcp;
pub(crate) mod tls;

use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::body::RequestBody;
use crate::config::{ConnConfig, HttpVersion};
use crate::error::{fmt_duration, Error, Kind};
use crate::pool::key::{PoolKey, Scheme};
pub use proxy::Proxy;
pub use tcp::{Resolve, ResolveFuture, ResolveTtlFuture, SystemResolver};

use driver::Driver;
pub(crate) use driver::DriverLost;
use preface::{Preface, PrefaceIo};
pub(crate) use preface::{StreamLimit, DEFAULT_MAX_STREAMS};
use tcp::{TcpIo, TcpSettings};

/// How long an HTTP/2 dial whose connection ended before the server's
/// SETTINGS waits for the driver to say why (it says so as the connection
/// ends; this only bounds an end of stream that hyper has yet to see).
const FAILURE_WAIT: Duration = Duration::from_millis(100);

/// The request half of a live connection.
pub(crate) enum Sender {
    H1(http1::SendRequest<RequestBody>),
    /// With the stream limit its server announces, followed as it changes,
    /// and the pool's hold on it.
    H2(http2::SendRequest<RequestBody>, StreamLimit, PoolHold),
}

/// How long an HTTP/2 connection the pool let go of (with no stream in
/// flight) may take to close by itself: h2 sends GOAWAY and closes once
/// that is written. A server that stopped reading (its window, and the
/// socket's buffers, full of an upload it never took) lets nothing be
/// written, and without a bound the socket, the driver task and the
/// connection's slot stayed for as long as the server held on. After
/// this, the socket is shut (as `Drop for H1Conn` does at once: HTTP/1
/// has nothing to say before it closes).
const H2_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The pool's hold on an HTTP/2 connection: in its record (`Shared`), so
/// it drops when the pool lets go of the connection (and when a parked
/// upload's watch, which keeps one too, ends). Its driver then
/// gives h2 [`H2_CLOSE_GRACE`] to close, and shuts the socket if it has
/// not, unless [`PoolHold::let_finish`] said streams are still in flight
/// (a pool dropped while bodies are read), which h2 then carries to
/// their end.
pub(crate) struct PoolHold {
    _released: tokio::sync::oneshot::Sender<()>,
    let_finish: Arc<std::sync::atomic::AtomicBool>,
}

impl PoolHold {
    /// Streams are still in flight on the connection the pool lets go of:
    /// no forced close.
    pub(crate) fn let_finish(&self) {
        self.let_finish
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Takes `let_finish` back: the stream it waited for was given up
    /// (`body::upload::watch_parked`), so the close is bounded again.
    pub(crate) fn bound(&self) {
        self.let_finish
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// A freshly made connection, before the pool takes it.
pub(crate) struct NewConnection {
    pub sender: Sender,
    pub socket: Weak<crate::connect::tcp::Socket>,
    pub resumed_tls: bool,
    /// The address connected to (direct connections only; through a proxy
    /// the origin's address is the proxy's business). The pool retires
    /// connections whose peer DNS no longer lists.
    pub peer: Option<std::net::SocketAddr>,
    /// HTTP/1 over TLS: the alert that ended its reads, if one does.
    pub tls_alert: Option<Arc<tcp::AlertSeen>>,
    /// HTTP/1: set if its driver task is dropped before it ends (HTTP/2
    /// keeps its mark in `StreamLimit`).
    pub driver_lost: Option<Arc<DriverLost>>,
}

/// Dials connections for one client's settings.
pub(crate) struct Connector {
    pub config: ConnConfig,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub resolver: Arc<dyn Resolve>,
}

/// `connect_timeout` as one deadline over a whole connection attempt: the
/// name lookup, the TCP connect (every address) and a proxy's CONNECT
/// share it. (TLS has its own `tls_handshake_timeout`.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectDeadline {
    pub at: tokio::time::Instant,
    /// The setting, for messages.
    pub limit: Duration,
}

impl ConnectDeadline {
    pub(crate) fn start(limit: Duration) -> ConnectDeadline {
        ConnectDeadline {
            at: tokio::time::Instant::now() + limit,
            limit,
        }
    }
}

/// The pool's accounting guard for a dial's slot (see [`Connector::dial`]):
/// told when the connection is established, where its lifetime starts.
pub(crate) trait DialSlot: Send + 'static {
    /// The connection is made (handshake done): the guard moves to its
    /// driver task now.
    fn established(&mut self);
    /// The connection ended without a word from its server (HTTP/2: an
    /// unanswered keep-alive PING, no GOAWAY, end of stream or reset):
    /// the server went silent, it did not close.
    fn ended_unanswered(&mut self);
}
impl Connector {
    pub(crate) fn new(config: ConnConfig, resolver: Arc<dyn Resolve>) -> Result<Connector, Error> {
        let tls = Some(tls::client_config(&config.tls, config.http_version)?);
        Ok(Connector {
            config,
            tls,
            resolver,
        })
    }

    /// Whether every connection will be HTTP/2 (this client speaks
    /// nothing else).
    pub(crate) fn only_multiplex(&self) -> bool {
        self.config.http_version == HttpVersion::Http2Only
    }

    /// Whether connections to this key will multiplex (so concurrent dials
    /// should coalesce into one), as far as we know before connecting.
    pub(crate) fn may_multiplex(&self, key: &PoolKey) -> bool {
        match (key.scheme, self.config.http_version) {
            (_, HttpVersion::Http1Only) => false,
            (_, HttpVersion::Http2Only) => true,
            (Scheme::Https, HttpVersion::Auto) => true,
            (Scheme::Http, HttpVersion::Auto) => false,
        }
    }

    /// Makes one connection. `slot` is the pool's accounting guard: the
    /// connection's driver task takes it and drops it when the socket is
    /// closed. A dial that fails before that leaves it with the caller, so
    /// the pool can answer the dial's waiter and free the slot in that
    /// order (freeing first would start a second dial for the same waiter).
    pub(crate) async fn dial<S: DialSlot>(
        &self,
        key: &PoolKey,
        slot: &mut Option<S>,
    ) -> Result<NewConnection, Error> {
        // (Bracketed for an IPv6 literal: "::1:8080" would be ambiguous.)
        let target = proxy::authority(&key.host, key.port);
        // One deadline for lookup, TCP connect and a proxy's CONNECT: each
        // with its own `connect_timeout`, a dial through a proxy took up to
        // three times the setting before TLS even began.
        let deadline = ConnectDeadline::start(self.config.connect_timeout);
        let settings = TcpSettings {
            nodelay: self.config.tcp_nodelay,
            keepalive: self.config.tcp_keepalive,
            user_timeout: self.config.tcp_user_timeout,
            deadline,
        };
        // The proxy is part of the key (see proxy.rs), so every connection
        // under this key goes through the same proxy as the same user.
        let via = match key.security.settings.proxy.as_deref() {
            Some(url) => Some(proxy::ProxyUrl::parse(url)?),
            None => None,
        };
        let (stream, peer) = match &via {
            None => {
                let addrs = self.resolve(&key.host, key.port, deadline).await?;
                let stream = tcp::connect(&target, addrs, settings).await?;
                let peer = stream.peer_addr().ok();
                (stream, peer)
            }
            Some(url) => {
                let reach = async {
                    let addrs = self.resolve(url.host(), url.port(), deadline).await?;
                    tcp::connect(&url.authority(), addrs, settings).await
                };
                let stream = reach.await.map_err(|e| proxy::unreachable(url, e))?;
                // The proxy's address: its connections follow the proxy's
                // DNS (see `Origin::dns_name`).
                let peer = stream.peer_addr().ok();
                (stream, peer)
            }
        };
        let (mut io, socket) = TcpIo::new(stream);
        if let Some(url) = &via {
            if !proxy::forwards(key.scheme, self.config.http_version) {
                proxy::connect_tunnel(&mut io, url, &key.host, key.port, deadline).await?;
            }
        }
        let mut conn = match key.scheme {
            Scheme::Http => {
                let h2 = self.config.http_version == HttpVersion::Http2Only;
                self.handshake(io, h2, socket, false, &target, slot).await?
            }
            Scheme::Https => {
                let plain = io.under_tls();
                let (tls, h2, resumed) = self.tls_handshake(io, key).await?;
                if h2 {
                    self.handshake(tls, h2, socket, resumed, &target, slot)
                        .await?
                } else {
                    // HTTP/1: its answers counted above TLS (`tcp::Counted`).
                    let alert = Arc::new(tcp::AlertSeen::default());
                    let tls = tcp::Counted::new(tls, plain, alert.clone());
                    let mut conn = self
                        .handshake(tls, h2, socket, resumed, &target, slot)
                        .await?;
                    conn.tls_alert = Some(alert);
                    conn
                }
            }
        };
        conn.peer = peer;
        Ok(conn)
    }

    /// Resolves with the client's resolver, bounded by `connect_timeout`.
    async fn resolve(
        &self,
        host: &str,
        port: u16,
        deadline: ConnectDeadline,
    ) -> Result<Vec<std::net::SocketAddr>, Error> {
        // An IP literal is its own address: no resolver is asked (as in
        // hyper-util and reqwest). A registry-backed resolver or a test
        // double that fails unknown names failed `http://127.0.0.1/`.
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![std::net::SocketAddr::new(ip, port)]);
        }
        tokio::time::timeout_at(deadline.at, self.resolver.resolve(host, port))
            .await
            .map_err(|_| {
                Error::new(
                    Kind::ConnectTimeout,
                    format!(
                        "resolving {host} timed out after {} (connect_timeout)",
                        fmt_duration(deadline.limit)
                    ),
                )
            })?
            .map_err(|e| {
                Error::new(Kind::Connect, format!("resolving {host} failed")).with_source(e)
            })
    }

    async fn tls_handshake(
        &self,
        io: TcpIo,
        key: &PoolKey,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpIo>, bool, bool), Error> {
        let config = self
            .tls
            .clone()
            .expect("TLS config is built with the connector");
        let name = rustls_pki_types::ServerName::try_from(key.host.to_string()).map_err(|e| {
            Error::new(
                Kind::Tls,
                format!("{:?} is not a valid TLS server name", key.host),
            )
            .with_source(e)
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let limit = self.config.tls_handshake_timeout;
        // (Bracketed if IPv6: `[::1]:443`, not `::1:443`.)
        let peer = proxy::authority(&key.host, key.port);
        let stream = match tokio::time::timeout(limit, connector.connect(name, io)).await {
            Err(_) => {
                return Err(Error::new(
                    Kind::Tls,
                    format!(
                        "TLS handshake with {peer} timed out after {} (tls_handshake_timeout)",
                        fmt_duration(limit)
                    ),
                ))
            }
            Ok(Err(e)) => {
                return Err(
                    Error::new(Kind::Tls, format!("TLS handshake with {peer} failed"))
                        .with_source(e),
                )
            }
            Ok(Ok(stream)) => stream,
        };
        let (_, session) = stream.get_ref();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        if self.config.http_version == HttpVersion::Http2Only && !h2 {
            return Err(Error::new(
                Kind::Protocol,
                format!("{peer} did not agree to HTTP/2 (http2 only was requested)"),
            ));
        }
        Ok((stream, h2, resumed))
    }

    async fn handshake<T, S: DialSlot>(
        &self,
        io: T,
        h2: bool,
        socket: Weak<crate::connect::tcp::Socket>,
        resumed_tls: bool,
        target: &str,
        slot: &mut Option<S>,
    ) -> Result<NewConnection, Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let hs_err = |e: hyper::Error| {
            Error::new(
                Kind::Protocol,
                format!("HTTP handshake with {target} failed"),
            )
            .with_source(e)
        };
        if !h2 {
            let (sender, conn) = http1::Builder::new()
                .handshake::<_, RequestBody>(TokioIo::new(io))
                .await
                .map_err(hs_err)?;
            let mut slot = slot.take();
            if let Some(slot) = &mut slot {
                slot.established();
            }
            let lost = Arc::new(DriverLost::default());
            let driver = Driver::new(conn, lost.clone());
            tokio::spawn(async move {
                let _ = driver.await;
                drop(slot);
            });
            return Ok(NewConnection {
                sender: Sender::H1(sender),
                socket,
                resumed_tls,
                peer: None,
                tls_alert: None,
                driver_lost: Some(lost),
            });
        }
        let (io, mut preface, stream_limit) = PrefaceIo::new(io);
        let mut builder =
            http2::Builder::new(driver::MarkingExecutor(stream_limit.driver_lost().clone()));
        builder.timer(TokioTimer::new());
        if let Some(interval) = self.config.http2_keep_alive_interval {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(self.config.http2_keep_alive_timeout)
                .keep_alive_while_idle(true);
        }
        let (sender, conn) = builder
            .handshake::<_, RequestBody>(TokioIo::new(io))
            .await
            .map_err(hs_err)?;
        // The driver gets the slot only once the connection is accepted
        // below: on a failure here the caller still holds it, answers the
        // dial's waiter and then frees it, in that order (see `dial`).
        // Handed over earlier, a connection that died during the wait
        // freed its slot first, and the pool dialed again for a waiter
        // about to get this dial's error.
        let (hand_slot, slot_for_driver) = tokio::sync::oneshot::channel::<Option<S>>();
        // Why the connection ended, if it failed before the SETTINGS: a
        // read error (a TLS alert that TLS 1.3 delivers after the client's
        // handshake, such as a missing client certificate; a reset) reaches
        // hyper, not the preface's watch.
        let (tell_failure, failure) = tokio::sync::oneshot::channel();
        let mut io_alive = preface.clone();
        let (released, pool_let_go) = tokio::sync::oneshot::channel::<()>();
        let let_finish = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hold = PoolHold {
            _released: released,
            let_finish: let_finish.clone(),
        };
        let shut = socket.clone();
        let (watched, pings) = (
            stream_limit.clone(),
            self.config.http2_keep_alive_interval.is_some(),
        );
        let driver = Driver::new(conn, stream_limit.driver_lost().clone());
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                let _ = tell_failure.send(e);
            }
            // hyper's request dispatch ends at a GOAWAY, while its
            // connection task still carries the streams in flight: the
            // socket, and so its slot, lives until that task drops the I/O
            // (and with it the preface's sender). Freed at `conn`'s end, a
            // draining connection let the pool dial past its limits.
            let io_gone = async { while io_alive.changed().await.is_ok() {} };
            tokio::pin!(io_gone);
            tokio::select! {
                () = &mut io_gone => {}
                _ = pool_let_go => {
                    if let_finish.load(std::sync::atomic::Ordering::Acquire) {
                        io_gone.await;
                    } else if tokio::time::timeout(H2_CLOSE_GRACE, &mut io_gone).await.is_err() {
                        tracing::debug!("HTTP/2 connection not closed {H2_CLOSE_GRACE:?} after the pool let go of it (its server takes nothing); shutting its socket");
                        tcp::shut_down(&shut);
                        io_gone.await;
                    }
                }
            }
            if let Ok(Some(mut slot)) = slot_for_driver.await {
                // (Only with PINGs on: otherwise nothing of the client's
                // ends a connection its pool holds.)
                if pings && !watched.peer_signed_off() {
                    slot.ended_unanswered();
                }
                drop(slot);
            }
        });
        // A connection refused below is shut at once: the driver spawned
        // above would keep its socket until hyper's task ends, up to
        // `H2_CLOSE_GRACE` after, while the slot this dial frees lets the
        // pool dial again, past its limits meanwhile. (A review found it.)
        let refuse = |e: Error| -> Result<NewConnection, Error> {
            tcp::shut_down(&socket);
            Err(e)
        };
        // Wait for the server's SETTINGS so the pool knows the stream limit
        // before it hands the connection out (see preface.rs). Bounded by
        // the handshake timeout, on cleartext too.
        let limit = self.config.tls_handshake_timeout;
        let seen = tokio::time::timeout(limit, preface.wait_for(|p| *p != Preface::Pending))
            .await
            .map(|seen| seen.ok().map(|p| *p));
        match seen {
            Ok(Some(Preface::Settings(_))) => {}
            Err(_) => {
                return refuse(Error::new(
                    Kind::ConnectTimeout,
                    format!(
                        "{target} sent no HTTP/2 SETTINGS frame within {} (tls_handshake_timeout)",
                        fmt_duration(limit)
                    ),
                ))
            }
            Ok(Some(Preface::Invalid)) => {
                return refuse(Error::new(
                    Kind::Protocol,
                    format!("{target} answered with a first frame other than HTTP/2 SETTINGS (not an HTTP/2 server?)"),
                ))
            }
            // (The preface's reader gone: the connection ended first too.)
            Ok(Some(Preface::Closed | Preface::Pending) | None) => {
                // (The driver tells, or drops its sender, as the connection
                // ends: at once when the reader is gone, moments after an
                // end of stream.)
                let why = tokio::time::timeout(FAILURE_WAIT, failure)
                    .await
                    .ok()
                    .and_then(Result::ok);
                let closed = || {
                    Error::new(
                        Kind::Protocol,
                        format!("{target} closed the connection before its HTTP/2 SETTINGS frame (not an HTTP/2 server?)"),
                    )
                };
                return refuse(match why {
                    // The server closed it (an HTTP/1 server that refuses
                    // the preface, a port that closes at once).
                    Some(e)
                        if crate::error::io_kind_in(&e)
                            .is_none_or(crate::error::is_close_kind) =>
                    {
                        closed().with_source(e)
                    }
                    // Something else ended it: say what. (Named here:
                    // hyper's and h2's words, "connection error" twice,
                    // come before the cause in the chain.)
                    Some(e) => {
                        // (A TLS alert arrives as text only: h2 keeps an
                        // I/O error's kind and words, not the error, so the
                        // kind stays `Connect`.)
                        let cause = crate::error::deepest_cause(&e);
                        Error::new(
                            Kind::Connect,
                            format!("the connection to {target} failed before its HTTP/2 SETTINGS frame ({cause})"),
                        )
                        .with_source(e)
                    }
                    None => closed(),
                });
            }
        }
        if stream_limit.get() == 0 {
            return refuse(Error::new(
                Kind::Protocol,
                format!("{target} allows 0 concurrent HTTP/2 streams"),
            ));
        }
        // (If the driver is gone, the slot is dropped here: freed.)
        let mut slot = slot.take();
        if let Some(slot) = &mut slot {
            slot.established();
        }
        let _ = hand_slot.send(slot);
        Ok(NewConnection {
            sender: Sender::H2(sender, stream_limit, hold),
            socket,
            resumed_tls,
            peer: None,
            tls_alert: None,
            driver_lost: None,
        })
    }
}
