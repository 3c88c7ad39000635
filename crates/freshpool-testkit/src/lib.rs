//! Test support for `freshpool`: real loopback servers and a fault-injecting
//! TCP proxy, so connection-pool behaviour can be tested against actual
//! sockets instead of mocks.
//!
//! Everything binds to `127.0.0.1` on an ephemeral port, and every background
//! task belongs to a handle ([`TestServer`], [`ChaosProxy`]) whose drop stops
//! it, so tests never leak tasks or sockets. Server tasks never panic on I/O
//! errors; a failing connection is simply closed (and counted).
//!
//! # Pieces
//!
//! * [`tls`] — [`TestCa`], a throw-away certificate authority issuing server
//!   and client (mTLS) certificates, and [`self_signed`] for an untrusted
//!   leaf. Uses the *ring* provider explicitly.
//! * [`server`] — [`TestServer`], a hyper server (HTTP/1.1, HTTP/2 or both;
//!   cleartext or TLS with ALPN, session tickets and a session cache) with
//!   knobs for server-side idle timeout, `Keep-Alive` hints,
//!   `Connection: close` after N requests, ignoring `Expect: 100-continue`,
//!   GOAWAY and abrupt close of all connections. [`ServerStats`] counts
//!   connections, TLS handshakes/resumptions, processed requests (with
//!   `x-request-id` duplicate detection) and peak concurrency.
//! * [`chaos`] — [`ChaosProxy`], a TCP proxy placed between client and
//!   server that injects faults: idle close, silent connection death (RST on
//!   next write, like a NAT that forgot the flow), blackholing, truncated or
//!   garbage responses, accept delays and half-closes.
//! * [`h2_settings`] — [`SettingsProxy`], a cleartext HTTP/2 proxy that
//!   announces a new `MAX_CONCURRENT_STREAMS` to the client mid-connection,
//!   as a server under load may.
//!
//! # Server routes
//!
//! Any method. Every response carries `x-conn-id: N` (server-side connection
//! sequence number starting at 1) and `x-request-count: K` (K-th request on
//! that connection).
//!
//! | path | response |
//! |---|---|
//! | `/` | 200 `ok` |
//! | `/delay/{ms}` | sleeps `ms`, then 200 `ok` |
//! | `/bytes/{n}` | 200 with `n` bytes (`Content-Length` set) |
//! | `/stream/{n}` | 200 with `n` bytes streamed in 1 KiB frames (chunked on HTTP/1); frame k is all the letter `a` + k mod 26 |
//! | `/drip/{n}` | 200 with `n` frames of one byte, 40 ms apart (an event stream) |
//! | `/stall/{ms}` | 200, body `partial` at once, then its end only after `ms` (chunked) |
//! | `/echo` | 200 echoing the request body |
//! | `/host` | 200 with the `Host` header (HTTP/2: `:authority`) it received |
//! | `/authority` | 200 with `authority=A host=H`: the URI's authority (HTTP/2: `:authority`) and the `Host` header, `-` for none |
//! | `/header/{name}` | 200 with the value of request header `name` (empty if absent) |
//! | `/status/{code}` | that status, empty body |
//! | anything else | 404 |
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() {
//! use freshpool_testkit::{ChaosProxy, TestServer};
//! let server = TestServer::http1().await;
//! let proxy = ChaosProxy::start(server.addr()).await;
//! // point the client at proxy.url("/"), then e.g.
//! proxy.kill_all_silently();
//! assert_eq!(server.stats().duplicated_request_ids(), Vec::<String>::new());
//! # }
//! ```

#![warn(missing_docs)]

pub mod chaos;
pub mod h2_settings;
mod io;
pub mod proxy;
pub mod server;
pub mod tls;

pub use chaos::{ChaosProxy, ProxyStats};
pub use h2_settings::SettingsProxy;
pub use server::{Protocol, ServerConfig, ServerStats, TestServer};
pub use tls::{self_signed, TestCa};

/// Binds `127.0.0.1:0` (every server and proxy here listens on loopback).
async fn bind_loopback() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// `scheme://host:PORT/path` for a loopback listener (a missing leading
/// `/` is added).
fn loopback_url(scheme: &str, host: &str, addr: std::net::SocketAddr, path: &str) -> String {
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!("{scheme}://{host}:{}{slash}{path}", addr.port())
}

/// Polls `cond` every 5 ms until it holds; panics naming `what` after 5 s.
/// Tests use it to wait for an effect that happens on another task (a
/// socket close, a sweep) without sleeping for a guessed time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// freshpool_testkit::eventually("a true condition", || true).await;
/// # }
/// ```
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
