//! [`ChaosProxy`]: a fault-injecting TCP proxy for loopback tests.
//!
//! Put it between a client and an upstream server (usually a
//! [`TestServer`](crate::TestServer)) and point the client at
//! [`ChaosProxy::url`]. Without faults it forwards bytes both ways
//! unchanged. Each connection is served by one task that copies the two
//! directions concurrently (read into a buffer, check fault flags, write),
//! sharing an `Arc` of flags and counters with the handle. Faults model what
//! real networks and servers do to pooled connections: idle timeouts, NATs
//! that silently forget flows, blackholes, truncated or garbage responses,
//! slow accepts and half-closed sockets.
//!
//! "Next request/response" is decided by a tolerant HTTP/1 boundary tracker
//! (see [`ProxyStats::requests_forwarded`]); for traffic that is not
//! cleartext HTTP/1 (TLS, HTTP/2) every chunk read from the socket counts as
//! one message instead.
//!
//! Dropping the proxy stops the accept loop and every connection task (their
//! sockets are closed).

mod forward;
mod http1;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::io::Activity;
use forward::{forward, Outcome};

const BUF_SIZE: usize = 16 * 1024;

/// A snapshot of the proxy's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Client connections currently open (a connection killed by
    /// [`ChaosProxy::kill_all_silently`] stays open until its reset is sent).
    pub open_connections: u64,
    /// Highest `open_connections` ever seen.
    pub peak_open_connections: u64,
    /// TCP resets sent to clients (killed connections that wrote again).
    pub resets_sent: u64,
    /// HTTP/1 requests forwarded upstream. Approximation: counts each point in
    /// the client→upstream stream where, after the previous request was
    /// complete (its head parsed and its `Content-Length` or chunked body
    /// consumed), bytes start with an uppercase method token followed by a
    /// space (`PRI` excluded). Only bytes actually forwarded count
    /// (blackholed or garbage-answered requests do not). TLS and HTTP/2
    /// traffic is never counted.
    pub requests_forwarded: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    resets: AtomicU64,
    requests: AtomicU64,
}

/// Per-connection control block.
struct ConnCtl {
    killed: AtomicBool,
    /// Blackholed for good (`blackhole_existing`).
    silenced: AtomicBool,
    kill: Notify,
    activity: Activity,
}

struct ConnHandle {
    abort: AbortHandle,
    ctl: Arc<ConnCtl>,
}

struct Shared {
    upstream: SocketAddr,
    idle_close: Mutex<Option<Duration>>,
    accept_delay: Mutex<Option<Duration>>,
    blackhole: AtomicBool,
    truncate_next: Mutex<Option<usize>>,
    garbage_next: Mutex<Option<Vec<u8>>>,
    half_close_next: AtomicBool,
    /// Bumped on every settings change to wake connection tasks.
    settings: watch::Sender<u64>,
    counters: Counters,
    conns: Mutex<HashMap<u64, ConnHandle>>,
}

impl Shared {
    fn changed(&self) {
        self.settings.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn blackholed(&self) -> bool {
        self.blackhole.load(Ordering::SeqCst)
    }

    /// Whether `ctl`'s connection discards what it carries: all are
    /// (`set_blackhole`), or it is (`blackhole_existing`).
    fn blackholed_for(&self, ctl: &ConnCtl) -> bool {
        self.blackholed() || ctl.silenced.load(Ordering::SeqCst)
    }

    fn idle_close(&self) -> Option<Duration> {
        *self.idle_close.lock().expect("lock")
    }
}

/// Lives in a connection task; marks the connection closed when dropped.
struct ConnGuard {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.counters.open.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut map) = self.shared.conns.lock() {
            map.remove(&self.id);
        }
    }
}

/// A fault-injecting TCP proxy on `127.0.0.1`. See the [module docs](self).
pub struct ChaosProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: AbortHandle,
}

impl std::fmt::Debug for ChaosProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl ChaosProxy {
    /// Binds `127.0.0.1:0` and forwards every accepted connection to
    /// `upstream` (a new upstream connection per client connection; if the
    /// upstream refuses, the client connection is closed). Must be called
    /// inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> ChaosProxy {
        let (listener, addr) = crate::bind_loopback().await;
        let shared = Arc::new(Shared {
            upstream,
            idle_close: Mutex::new(None),
            accept_delay: Mutex::new(None),
            blackhole: AtomicBool::new(false),
            truncate_next: Mutex::new(None),
            garbage_next: Mutex::new(None),
            half_close_next: AtomicBool::new(false),
            settings: watch::channel(0).0,
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone())).abort_handle();
        ChaosProxy {
            addr,
            shared,
            accept_task,
        }
    }

    /// The proxy's listening address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn url(&self, path: &str) -> String {
        crate::loopback_url("http", "127.0.0.1", self.addr, path)
    }

    /// Closes (FIN in both directions) every connection that carried no
    /// bytes in either direction for `d`. `None` turns it off. Applies to
    /// existing connections too.
    pub fn set_idle_close(&self, d: Option<Duration>) {
        *self.shared.idle_close.lock().expect("lock") = d;
        self.shared.changed();
    }

    /// Marks every currently open connection dead, like a NAT that dropped
    /// its state: nothing more is forwarded in either direction and the
    /// upstream side is closed at once, but the client sees nothing until it
    /// sends again: the next bytes (or FIN) it sends are answered with a TCP
    /// RST (`SO_LINGER` 0, then close). Returns how many connections were
    /// newly marked.
    pub fn kill_all_silently(&self) -> usize {
        let map = self.shared.conns.lock().expect("lock");
        let mut n = 0;
        for conn in map.values() {
            if !conn.ctl.killed.swap(true, Ordering::SeqCst) {
                conn.ctl.kill.notify_one();
                n += 1;
            }
        }
        n
    }

    /// Blackhole on/off. While on, new and existing connections have the
    /// client's bytes read and discarded, nothing is forwarded or answered
    /// (upstream bytes and closes are swallowed too). New connections
    /// accepted while on are not connected upstream until it is turned off.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
        self.shared.changed();
    }

    /// Every connection open now goes silent for good, as through a NAT
    /// that dropped the flow and swallows its packets: bytes either way are
    /// read and discarded, nothing is answered, no FIN or RST is sent.
    /// Connections accepted later are unaffected. Returns how many.
    pub fn blackhole_existing(&self) -> usize {
        let map = self.shared.conns.lock().expect("lock");
        for conn in map.values() {
            conn.ctl.silenced.store(true, Ordering::SeqCst);
        }
        map.len()
    }

    /// The next response (on whichever connection carries one first) is
    /// forwarded only up to its first `keep` bytes, then the connection is
    /// closed (FIN to the client, upstream dropped).
    pub fn truncate_next_response(&self, keep: usize) {
        *self.shared.truncate_next.lock().expect("lock") = Some(keep);
    }

    /// The next request (on whichever connection carries one first) is not
    /// forwarded; the client gets `bytes` instead (e.g.
    /// `b"garbage\r\n\r\n"`), then the connection is closed (FIN).
    pub fn garbage_next_response(&self, bytes: Vec<u8>) {
        *self.shared.garbage_next.lock().expect("lock") = Some(bytes);
    }

    /// Delays each newly accepted connection by `d` before anything is
    /// forwarded (the TCP handshake itself completes in the kernel, so the
    /// client sees a connected socket that does not answer yet). Each
    /// connection is delayed independently. `None` = off.
    pub fn set_accept_delay(&self, d: Option<Duration>) {
        *self.shared.accept_delay.lock().expect("lock") = d;
    }

    /// After the next response (on whichever connection carries one first)
    /// has been forwarded completely, shut down the write side towards the
    /// client (FIN) but keep reading it: further client bytes are read and
    /// discarded (never answered); the upstream connection is closed.
    pub fn half_close_next(&self) {
        self.shared.half_close_next.store(true, Ordering::SeqCst);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            connections_accepted: c.accepted.load(Ordering::SeqCst),
            open_connections: c.open.load(Ordering::SeqCst),
            peak_open_connections: c.peak_open.load(Ordering::SeqCst),
            resets_sent: c.resets.load(Ordering::SeqCst),
            requests_forwarded: c.requests.load(Ordering::SeqCst),
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        let handles: Vec<ConnHandle> = match self.shared.conns.lock() {
            Ok(mut map) => map.drain().map(|(_, h)| h).collect(),
            Err(_) => return,
        };
        for h in handles {
            h.abort.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let client = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        next_id += 1;
        let c = &shared.counters;
        let open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_open.fetch_max(open, Ordering::SeqCst);
        let ctl = Arc::new(ConnCtl {
            killed: AtomicBool::new(false),
            silenced: AtomicBool::new(false),
            kill: Notify::new(),
            activity: Activity::new(),
        });
        ctl.activity.touch();
        let guard = ConnGuard {
            id: next_id,
            shared: shared.clone(),
        };
        // Hold the lock while spawning so the task cannot deregister first.
        let mut map = shared.conns.lock().expect("lock");
        let task = tokio::spawn(proxy_connection(client, shared.clone(), ctl.clone(), guard));
        map.insert(
            next_id,
            ConnHandle {
                abort: task.abort_handle(),
                ctl,
            },
        );
        // Counted once registered: a test that sees it counted can kill it.
        c.accepted.fetch_add(1, Ordering::SeqCst);
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

fn idle_deadline(shared: &Shared, ctl: &ConnCtl) -> Option<Instant> {
    shared
        .idle_close()
        .map(|d| Instant::now() + d.saturating_sub(ctl.activity.idle_for()))
}

fn is_idle(shared: &Shared, ctl: &ConnCtl) -> bool {
    shared
        .idle_close()
        .is_some_and(|d| ctl.activity.idle_for() >= d)
}

async fn proxy_connection(
    mut client: TcpStream,
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    _guard: ConnGuard,
) {
    let mut settings = shared.settings.subscribe();
    let delay = *shared.accept_delay.lock().expect("lock");
    if let Some(d) = delay {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = ctl.kill.notified() => return reset_on_next_bytes(client, &shared).await,
        }
    }
    if shared.blackholed() {
        let mut buf = vec![0u8; BUF_SIZE];
        while shared.blackholed() {
            let deadline = idle_deadline(&shared, &ctl);
            tokio::select! {
                r = client.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => ctl.activity.touch(),
                },
                _ = ctl.kill.notified() => return reset_on_next_bytes(client, &shared).await,
                Ok(()) = settings.changed() => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    if is_idle(&shared, &ctl) {
                        let _ = client.shutdown().await;
                        return;
                    }
                }
            }
        }
    }
    let mut upstream = tokio::select! {
        r = TcpStream::connect(shared.upstream) => match r {
            Ok(s) => s,
            Err(_) => return, // dropping the client closes it
        },
        _ = ctl.kill.notified() => return reset_on_next_bytes(client, &shared).await,
    };
    let _ = upstream.set_nodelay(true);

    let outcome = forward(&mut client, &mut upstream, &shared, &ctl, &mut settings).await;
    match outcome {
        Outcome::Done => {}
        Outcome::Close => {
            drop(upstream);
            close_gracefully(client).await;
        }
        Outcome::Killed { in_flight } => {
            drop(upstream);
            if in_flight {
                reset_now(client, &shared);
            } else {
                reset_on_next_bytes(client, &shared).await;
            }
        }
        Outcome::IdleClose => {
            let _ = upstream.shutdown().await;
            let _ = client.shutdown().await;
        }
        Outcome::Garbage(bytes) => {
            drop(upstream);
            let _ = client.write_all(&bytes).await;
            close_gracefully(client).await;
        }
        Outcome::HalfClosed => {
            drop(upstream);
            let mut buf = vec![0u8; BUF_SIZE];
            loop {
                tokio::select! {
                    r = client.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = ctl.kill.notified() => return reset_on_next_bytes(client, &shared).await,
                }
            }
        }
    }
}

/// FIN to the client, then drain what it still sends (briefly) so the close
/// does not turn into a reset because of unread data.
async fn close_gracefully(mut client: TcpStream) {
    let _ = client.shutdown().await;
    let mut buf = vec![0u8; BUF_SIZE];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The NAT forgot this flow: wait until the client sends anything (data or
/// FIN), then answer with a TCP RST.
async fn reset_on_next_bytes(mut client: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 1024];
    let _ = client.read(&mut buf).await;
    reset_now(client, shared);
}

/// Close with a TCP RST (`SO_LINGER` 0).
fn reset_now(client: TcpStream, shared: &Shared) {
    let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
    drop(client);
    shared.counters.resets.fetch_add(1, Ordering::SeqCst);
}
