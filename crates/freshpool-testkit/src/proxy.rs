//! A small HTTP proxy on `127.0.0.1` for testing clients' proxy support.
//!
//! [`TestProxy`] speaks HTTP/1.1 and does both jobs of a real proxy:
//!
//! * **forwarding**: a request with an absolute-form target
//!   (`GET http://127.0.0.1:8080/path HTTP/1.1`) is sent to that origin on a
//!   new connection and the response streamed back;
//! * **tunnelling**: `CONNECT host:port` opens a TCP connection to the
//!   target, answers `200`, and then copies bytes both ways (TLS to the
//!   origin runs inside).
//!
//! With users configured ([`TestProxy::with_users`]) every request and
//! every CONNECT must carry `Proxy-Authorization: Basic` for one of them,
//! or gets `407` (counted in [`TestProxyStats::auth_failures`]). A target
//! that cannot be reached gets `502`. Only loopback targets are ever
//! contacted (others get `403`), so a misdirected test cannot send traffic
//! off the machine.
//!
//! [`TestProxyStats`] counts client connections, tunnels, forwarded
//! requests and the users seen on each client connection, so tests can
//! assert that connections made for different credentials are never shared.
//!
//! ```no_run
//! # async fn demo() {
//! use freshpool_testkit::proxy::TestProxy;
//! let proxy = TestProxy::with_users(&[("alice", "secret")]).await;
//! let url = proxy.url_with("alice", "secret"); // http://alice:secret@127.0.0.1:PORT
//! // ... point a client at `url`, make requests, then:
//! assert_eq!(proxy.stats().auth_failures(), 0);
//! # }
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What a [`TestProxy`] saw.
#[derive(Debug, Default)]
pub struct TestProxyStats {
    connections: AtomicU64,
    tunnels: AtomicU64,
    forwarded: AtomicU64,
    auth_failures: AtomicU64,
    upstream_failures: AtomicU64,
    /// Client connection id -> users that authenticated on it.
    users: Mutex<HashMap<u64, BTreeSet<String>>>,
    /// `host:port` of every tunnel opened, in order.
    tunnel_targets: Mutex<Vec<String>>,
}

impl TestProxyStats {
    /// Client connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// CONNECT tunnels opened (answered `200`).
    pub fn tunnels(&self) -> u64 {
        self.tunnels.load(Ordering::SeqCst)
    }

    /// Absolute-form requests forwarded to their origin.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Requests or CONNECTs answered `407`.
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::SeqCst)
    }

    /// Targets that could not be reached (answered `502`) or were not
    /// loopback (answered `403`).
    pub fn upstream_failures(&self) -> u64 {
        self.upstream_failures.load(Ordering::SeqCst)
    }

    /// For each client connection that authenticated at least once, the
    /// users it authenticated as. A connection shared between credentials
    /// shows up as a set with more than one user.
    pub fn users_per_connection(&self) -> Vec<BTreeSet<String>> {
        let map = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<_> = map.keys().copied().collect();
        ids.sort_unstable();
        ids.iter().map(|id| map[id].clone()).collect()
    }

    /// `host:port` of every tunnel opened, in order.
    pub fn tunnel_targets(&self) -> Vec<String> {
        self.tunnel_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A forwarding and CONNECT-tunnelling HTTP/1.1 proxy on `127.0.0.1`.
/// Dropping it stops it and closes every connection and tunnel.
pub struct TestProxy {
    addr: SocketAddr,
    stats: Arc<TestProxyStats>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    loopback_names: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// Expected `Proxy-Authorization` values -> user; empty: no auth.
    accepted: HashMap<String, String>,
    stats: Arc<TestProxyStats>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Names the proxy takes for `127.0.0.1` (`TestProxy::loopback_name`).
    loopback_names: Arc<Mutex<HashSet<String>>>,
}

impl TestProxy {
    /// A proxy that requires no credentials.
    pub async fn start() -> TestProxy {
        TestProxy::with_users(&[]).await
    }

    /// A proxy that accepts exactly these `(user, password)` pairs.
    pub async fn with_users(users: &[(&str, &str)]) -> TestProxy {
        let (listener, addr) = crate::bind_loopback().await;
        let stats = Arc::new(TestProxyStats::default());
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted = users
            .iter()
            .map(|(u, p)| {
                (
                    format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
                    u.to_string(),
                )
            })
            .collect();
        let loopback_names: Arc<Mutex<HashSet<String>>> = Arc::default();
        let shared = Arc::new(Shared {
            accepted,
            stats: stats.clone(),
            tasks: tasks.clone(),
            loopback_names: loopback_names.clone(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared)).abort_handle();
        tasks.lock().unwrap().push(accept);
        TestProxy {
            addr,
            stats,
            tasks,
            loopback_names,
        }
    }

    /// From now on the proxy takes `name` (any port) for `127.0.0.1`, as a
    /// proxy would resolve a name its clients cannot: a request for a name
    /// that is not a loopback one, which a client sends through a proxy
    /// from the environment (clients send loopback hosts direct), still
    /// reaches a server of this machine. Nothing leaves it either way.
    pub fn loopback_name(&self, name: &str) {
        self.loopback_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase());
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:PORT` (no percent-encoding is done:
    /// pass URL-safe strings or encode them yourself).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &TestProxyStats {
        &self.stats
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

fn track(tasks: &Mutex<Vec<AbortHandle>>, handle: AbortHandle) {
    let mut tasks = tasks.lock().unwrap_or_else(|p| p.into_inner());
    tasks.retain(|t| !t.is_finished());
    tasks.push(handle);
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // e.g. EMFILE: back off briefly instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        next_id += 1;
        let conn_id = next_id;
        shared.stats.connections.fetch_add(1, Ordering::SeqCst);
        let conn_shared = shared.clone();
        let handle = tokio::spawn(async move {
            let svc_shared = conn_shared.clone();
            let service = service_fn(move |req| {
                let shared = svc_shared.clone();
                async move { Ok::<_, Infallible>(handle(req, conn_id, shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        })
        .abort_handle();
        track(&shared.tasks, handle);
    }
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut res = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *res.status_mut() = status;
    res
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res
}

async fn handle(req: Request<Incoming>, conn_id: u64, shared: Arc<Shared>) -> Response<ProxyBody> {
    let stats = &shared.stats;
    if !shared.accepted.is_empty() {
        let user = req
            .headers()
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| shared.accepted.get(v));
        match user {
            Some(user) => {
                stats
                    .users
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(conn_id)
                    .or_default()
                    .insert(user.clone());
            }
            None => {
                stats.auth_failures.fetch_add(1, Ordering::SeqCst);
                let mut res = text(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "who are you?");
                res.headers_mut().insert(
                    http::header::PROXY_AUTHENTICATE,
                    http::HeaderValue::from_static("Basic realm=\"testkit\""),
                );
                return res;
            }
        }
    }
    if req.method() == Method::CONNECT {
        return tunnel(req, shared).await;
    }
    forward(req, shared).await
}

/// Connects to `authority` if every address it names is loopback (a name
/// given to [`TestProxy::loopback_name`] names `127.0.0.1`).
async fn connect_loopback(authority: &str, shared: &Shared) -> Result<TcpStream, StatusCode> {
    let (host, port) = split_authority(authority).ok_or(StatusCode::BAD_REQUEST)?;
    let known = shared
        .loopback_names
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&host.to_ascii_lowercase());
    if known {
        return TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|_| StatusCode::BAD_GATEWAY);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?
        .filter(|a| a.ip().is_loopback())
        .collect();
    if addrs.is_empty() {
        return Err(StatusCode::FORBIDDEN);
    }
    TcpStream::connect(&addrs[..])
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)
}

/// `host:port`, `[v6]:port`, or either without a port (a forwarded
/// `http://name/`: 80): the host (without brackets) and the port. `None`
/// for a port that is no number.
fn split_authority(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = port.map_or(Some(80), |p| p.parse().ok())?;
    Some((host, port))
}

async fn tunnel(req: Request<Incoming>, shared: Arc<Shared>) -> Response<ProxyBody> {
    let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let mut upstream = match connect_loopback(&target, &shared).await {
        Ok(s) => s,
        Err(status) => {
            shared
                .stats
                .upstream_failures
                .fetch_add(1, Ordering::SeqCst);
            return empty(status);
        }
    };
    shared.stats.tunnels.fetch_add(1, Ordering::SeqCst);
    shared
        .stats
        .tunnel_targets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(target);
    let handle = tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    })
    .abort_handle();
    track(&shared.tasks, handle);
    empty(StatusCode::OK)
}

async fn forward(mut req: Request<Incoming>, shared: Arc<Shared>) -> Response<ProxyBody> {
    let uri = req.uri().clone();
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "a proxy request needs an absolute http:// target",
        );
    };
    let upstream = match connect_loopback(authority.as_str(), &shared).await {
        Ok(s) => s,
        Err(status) => {
            shared
                .stats
                .upstream_failures
                .fetch_add(1, Ordering::SeqCst);
            return empty(status);
        }
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(upstream)).await
    else {
        return empty(StatusCode::BAD_GATEWAY);
    };
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    })
    .abort_handle();
    track(&shared.tasks, driver);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .expect("a path is a valid URI");
    *req.uri_mut() = path;
    req.headers_mut().remove(http::header::PROXY_AUTHORIZATION);
    req.headers_mut().remove("proxy-connection");
    shared.stats.forwarded.fetch_add(1, Ordering::SeqCst);
    match sender.send_request(req).await {
        Ok(res) => res.map(|b| b.boxed()),
        Err(_) => empty(StatusCode::BAD_GATEWAY),
    }
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod authority_tests {
    use super::split_authority;

    #[test]
    fn authorities_split_with_port_80_by_default() {
        assert_eq!(split_authority("a.test:8080"), Some(("a.test", 8080)));
        assert_eq!(split_authority("a.test"), Some(("a.test", 80)));
        assert_eq!(split_authority("[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(split_authority("[::1]"), Some(("::1", 80)));
        assert_eq!(split_authority("a.test:x"), None);
    }
}
