//! A configurable loopback HTTP/1.1 + HTTP/2 (cleartext or TLS) test server.
//!
//! [`TestServer`] binds `127.0.0.1:0`, serves a handful of fixed routes (see
//! the crate docs) with hyper, and records what it saw in [`ServerStats`]:
//! connections, TLS handshakes and resumptions, requests processed (with
//! `x-request-id` duplicate detection) and peak concurrency. It can misbehave
//! on purpose: idle-close keep-alive connections, advertise `Keep-Alive`
//! hints, close after N requests, ignore `Expect: 100-continue`, send GOAWAY
//! or drop every connection on demand.
//!
//! Dropping a [`TestServer`] stops its accept loop and closes all of its
//! connections; no task outlives it.

mod handler;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::io::{Activity, ExpectStripper, Tracked};
use crate::tls::{provider, TestCa};
use handler::ConnCtx;

/// How long a connection closed for idleness may take to finish its graceful
/// shutdown (HTTP/2 GOAWAY exchange) before it is dropped outright.
const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Which HTTP version(s) the server speaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 only.
    #[default]
    Http1,
    /// HTTP/2 only (prior knowledge on cleartext, or via ALPN on TLS).
    Http2,
    /// Either, decided per connection by `hyper_util::server::conn::auto`
    /// (HTTP/2 connection preface sniffing).
    Auto,
}

/// How a [`TestServer`] behaves. Start from [`ServerConfig::default`] and set
/// the fields you need.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// HTTP version(s) spoken. Default [`Protocol::Http1`].
    pub protocol: Protocol,
    /// TLS configuration; `None` (default) serves cleartext. See
    /// [`ServerConfig::tls_config`].
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to clients.
    pub max_concurrent_streams: Option<u32>,
    /// Close a connection after it carried no bytes (and had no request in
    /// flight) for this long: HTTP/1 gets a FIN, HTTP/2 a GOAWAY followed by
    /// FIN (forced after a short grace period). Also bounds the TLS handshake.
    pub idle_timeout: Option<Duration>,
    /// Adds `Keep-Alive: timeout=N` to every HTTP/1 response.
    pub keep_alive_hint: Option<u32>,
    /// `true` (default): hyper answers `Expect: 100-continue` with
    /// `100 Continue` when a handler reads the body. `false`: the server
    /// ignores `Expect` entirely and never sends `100 Continue` (the header is
    /// hidden from hyper by renaming it on the incoming byte stream); a
    /// client must time out waiting for 100 and send its body anyway.
    pub expect_continue: bool,
    /// The N-th response of each connection carries `Connection: close` and
    /// the connection is closed after it (on HTTP/2: GOAWAY after the N-th
    /// request).
    pub close_after_requests: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            protocol: Protocol::Http1,
            tls: None,
            max_concurrent_streams: None,
            idle_timeout: None,
            keep_alive_hint: None,
            expect_continue: true,
            close_after_requests: None,
        }
    }
}

impl ServerConfig {
    /// A rustls server config with a certificate for `localhost` and
    /// `127.0.0.1` signed by `ca`, the given ALPN protocols (e.g.
    /// `&[b"h2", b"http/1.1"]`), stateless session tickets (rustls
    /// `Ticketer`) and a server-side session cache, so TLS 1.2 and 1.3
    /// resumption both work. No client authentication.
    pub fn tls_config(ca: &TestCa, protocols: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        ServerConfig::tls_config_for(ca, &["localhost", "127.0.0.1"], protocols)
    }

    /// Like [`ServerConfig::tls_config`], with a certificate for `names`
    /// instead: a server reached under another name (through a
    /// [`crate::proxy::TestProxy`] that takes it for loopback, or a
    /// resolver that does).
    pub fn tls_config_for(
        ca: &TestCa,
        names: &[&str],
        protocols: &[&[u8]],
    ) -> Arc<rustls::ServerConfig> {
        let (chain, key) = ca.server_cert(names);
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server cert");
        Arc::new(finish_tls(cfg, protocols))
    }

    /// Like [`ServerConfig::tls_config`] but requires a client certificate
    /// signed by `ca` (see [`TestCa::client_cert`]) — for mutual-TLS tests.
    pub fn tls_config_with_client_auth(
        ca: &TestCa,
        protocols: &[&[u8]],
    ) -> Arc<rustls::ServerConfig> {
        let (chain, key) = ca.server_cert(&["localhost", "127.0.0.1"]);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(ca.root_store()),
            provider(),
        )
        .build()
        .expect("client verifier");
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server cert");
        Arc::new(finish_tls(cfg, protocols))
    }
}

fn finish_tls(mut cfg: rustls::ServerConfig, protocols: &[&[u8]]) -> rustls::ServerConfig {
    cfg.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().expect("ticketer");
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    cfg
}

/// Counters describing what a [`TestServer`] saw. All reads are snapshots.
#[derive(Debug, Default)]
pub struct ServerStats {
    connections_accepted: AtomicU64,
    open_connections: AtomicU64,
    peak_open_connections: AtomicU64,
    requests: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_resumed: AtomicU64,
    tls_handshake_failures: AtomicU64,
    idle_closes: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
    request_ids: Mutex<HashMap<String, u64>>,
}

impl ServerStats {
    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.connections_accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open (decremented when a connection's task
    /// ends, i.e. after its socket was closed).
    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// Highest value [`ServerStats::open_connections`] ever had.
    pub fn peak_open_connections(&self) -> u64 {
        self.peak_open_connections.load(Ordering::SeqCst)
    }

    /// Requests whose handler ran, i.e. that the server *processed*
    /// (`/echo` counts only once its body was read completely).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes (full and resumed).
    pub fn tls_handshakes(&self) -> u64 {
        self.tls_handshakes.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes for which rustls reports
    /// [`HandshakeKind::Resumed`].
    pub fn tls_resumed(&self) -> u64 {
        self.tls_resumed.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (bad certificate, client gave up, ...).
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_handshake_failures.load(Ordering::SeqCst)
    }

    /// Connections this server closed because they sat idle for its
    /// [`ServerConfig::idle_timeout`]: each was open at the client, which
    /// then holds a connection the server has given up on (the stale-FIN
    /// race, when the client's next request crosses the close).
    pub fn idle_closes(&self) -> u64 {
        self.idle_closes.load(Ordering::SeqCst)
    }

    /// `x-request-id` header value → number of times a request carrying it
    /// was processed.
    pub fn request_id_counts(&self) -> HashMap<String, u64> {
        self.request_ids.lock().expect("stats lock").clone()
    }

    /// The `x-request-id` values processed more than once (sorted).
    pub fn duplicated_request_ids(&self) -> Vec<String> {
        let mut dups: Vec<String> = self
            .request_ids
            .lock()
            .expect("stats lock")
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id.clone())
            .collect();
        dups.sort();
        dups
    }

    /// Peak number of requests being handled at the same time (server-wide).
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn record_request(&self, request_id: Option<&str>) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = request_id {
            *self
                .request_ids
                .lock()
                .expect("stats lock")
                .entry(id.to_owned())
                .or_insert(0) += 1;
        }
    }

    fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Ordering::SeqCst);
        let open = self.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_open_connections.fetch_max(open, Ordering::SeqCst);
    }
}

/// Control handle of one live connection.
struct ConnHandle {
    abort: AbortHandle,
    goaway: Arc<Notify>,
}

type Registry = Arc<Mutex<HashMap<u64, ConnHandle>>>;

/// Lives inside a connection task; its drop marks the connection closed.
struct ConnGuard {
    id: u64,
    registry: Registry,
    stats: Arc<ServerStats>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.stats.open_connections.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut map) = self.registry.lock() {
            map.remove(&self.id);
        }
    }
}

/// A running loopback test server. See the [module docs](self).
pub struct TestServer {
    addr: SocketAddr,
    tls: bool,
    stats: Arc<ServerStats>,
    registry: Registry,
    accept_task: AbortHandle,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Binds `127.0.0.1:0` and starts serving with `config`.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn start(config: ServerConfig) -> TestServer {
        let (listener, addr) = crate::bind_loopback().await;
        let stats = Arc::new(ServerStats::default());
        let registry: Registry = Arc::default();
        let tls = config.tls.is_some();
        let accept_task = tokio::spawn(accept_loop(
            listener,
            Arc::new(config),
            stats.clone(),
            registry.clone(),
        ))
        .abort_handle();
        TestServer {
            addr,
            tls,
            stats,
            registry,
            accept_task,
        }
    }

    /// A cleartext HTTP/1.1 server with the default configuration.
    pub async fn http1() -> TestServer {
        TestServer::start(ServerConfig::default()).await
    }

    /// The bound address (always `127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path`, or `https://localhost:PORT/path` when
    /// TLS is on (so SNI and the certificate name match). A missing leading
    /// `/` is added.
    pub fn url(&self, path: &str) -> String {
        if self.tls {
            crate::loopback_url("https", "localhost", self.addr, path)
        } else {
            crate::loopback_url("http", "127.0.0.1", self.addr, path)
        }
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// A shared handle to the counters that stays valid after the server is
    /// dropped.
    pub fn stats_handle(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Graceful shutdown of every open connection while still accepting new
    /// ones: HTTP/2 connections get a GOAWAY (in-flight streams finish),
    /// idle HTTP/1 connections are closed at once and busy ones right after
    /// their current response.
    pub fn goaway_all(&self) {
        if let Ok(map) = self.registry.lock() {
            for conn in map.values() {
                conn.goaway.notify_one();
            }
        }
    }

    /// Closes every open connection abruptly (its task is aborted and the
    /// socket dropped without any HTTP-level goodbye), as a server restart
    /// would. New connections are still accepted.
    pub fn close_all(&self) {
        let handles: Vec<ConnHandle> = match self.registry.lock() {
            Ok(mut map) => map.drain().map(|(_, h)| h).collect(),
            Err(_) => return,
        };
        for h in handles {
            h.abort.abort();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.close_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stats: Arc<ServerStats>,
    registry: Registry,
) {
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // e.g. EMFILE: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        stats.connection_opened();
        let goaway = Arc::new(Notify::new());
        let guard = ConnGuard {
            id: next_id,
            registry: registry.clone(),
            stats: stats.clone(),
        };
        // Hold the lock while spawning so the task cannot deregister itself
        // before it is registered.
        let mut map = registry.lock().expect("registry lock");
        let task = tokio::spawn(serve_connection(
            stream,
            next_id,
            config.clone(),
            stats.clone(),
            goaway.clone(),
            guard,
        ));
        map.insert(
            next_id,
            ConnHandle {
                abort: task.abort_handle(),
                goaway,
            },
        );
    }
}

/// A connection's socket with its guard, which drops first (before a
/// shutdown, or else as the first field): the open count goes down before
/// the socket sends its FIN, so a client that reads the close and connects
/// again never finds the old connection still counted open
/// (`peak_open_connections` read 2 for a client that never held two).
struct GuardedStream {
    guard: Option<ConnGuard>,
    stream: TcpStream,
}

impl tokio::io::AsyncRead for GuardedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        drop(self.guard.take());
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Any transport the server can speak HTTP over.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn serve_connection(
    stream: TcpStream,
    conn_id: u64,
    config: Arc<ServerConfig>,
    stats: Arc<ServerStats>,
    goaway: Arc<Notify>,
    guard: ConnGuard,
) {
    let activity = Arc::new(Activity::new());
    activity.touch();
    let stream = GuardedStream {
        guard: Some(guard),
        stream,
    };
    let tracked = Tracked::new(stream, activity.clone());
    let io: Box<dyn Io> = match &config.tls {
        None => Box::new(tracked),
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls.clone()).accept(tracked);
            let res = match config.idle_timeout {
                Some(d) => match tokio::time::timeout(d, accept).await {
                    Ok(res) => res,
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                },
                None => accept.await,
            };
            match res {
                Ok(tls_stream) => {
                    stats.tls_handshakes.fetch_add(1, Ordering::SeqCst);
                    if tls_stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                        stats.tls_resumed.fetch_add(1, Ordering::SeqCst);
                    }
                    Box::new(tls_stream)
                }
                Err(_) => {
                    stats.tls_handshake_failures.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    };
    let io: Box<dyn Io> = if config.expect_continue {
        io
    } else {
        Box::new(ExpectStripper::new(io))
    };
    let io = TokioIo::new(io);

    let idle_stats = stats.clone();
    let ctx = Arc::new(ConnCtx {
        conn_id,
        requests: AtomicU64::new(0),
        stats,
        activity: activity.clone(),
        keep_alive_hint: config.keep_alive_hint,
        close_after: config.close_after_requests,
        goaway: goaway.clone(),
    });
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handler::handle(req, ctx).await) }
    });
    let idle = Idle {
        timeout: config.idle_timeout,
        closes: &idle_stats.idle_closes,
    };

    match config.protocol {
        Protocol::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new());
            let conn = builder.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &goaway, &idle, &activity).await;
        }
        Protocol::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(config.max_concurrent_streams);
            let conn = builder.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &goaway, &idle, &activity).await;
        }
        Protocol::Auto => {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new());
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(config.max_concurrent_streams);
            let conn = builder.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &goaway, &idle, &activity).await;
        }
    }
}

/// A connection's idle timeout, and where its idle closes are counted.
struct Idle<'a> {
    timeout: Option<Duration>,
    closes: &'a AtomicU64,
}

/// Runs a hyper connection to completion while honouring GOAWAY requests and
/// the idle timeout. Errors of the connection are ignored (it just ends).
async fn drive<C, E>(
    conn: C,
    shutdown: impl Fn(Pin<&mut C>),
    goaway: &Notify,
    idle: &Idle<'_>,
    activity: &Activity,
) where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    let far = || Instant::now() + Duration::from_secs(86_400);
    let mut closing = false;
    let mut force_close_at: Option<Instant> = None;
    loop {
        let idle_check = match idle.timeout {
            Some(d) if !closing => {
                if activity.in_flight.load(Ordering::SeqCst) > 0 {
                    Some(Instant::now() + d)
                } else {
                    Some(Instant::now() + d.saturating_sub(activity.idle_for()))
                }
            }
            _ => None,
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = goaway.notified() => {
                if !closing {
                    closing = true;
                    shutdown(conn.as_mut());
                }
            }
            _ = tokio::time::sleep_until(idle_check.unwrap_or_else(far)), if idle_check.is_some() => {
                let d = idle.timeout.unwrap_or_default();
                if activity.in_flight.load(Ordering::SeqCst) == 0 && activity.idle_for() >= d {
                    idle.closes.fetch_add(1, Ordering::SeqCst);
                    closing = true;
                    force_close_at = Some(Instant::now() + IDLE_CLOSE_GRACE);
                    shutdown(conn.as_mut());
                }
            }
            _ = tokio::time::sleep_until(force_close_at.unwrap_or_else(far)), if force_close_at.is_some() => return,
        }
    }
}
