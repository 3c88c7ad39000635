//! Name resolution: Happy Eyeballs across a host's addresses, the connect
//! timeout over the whole attempt, errors listing every address tried, and
//! connections following DNS when a host moves from 127.0.0.2 to 127.0.0.3
//! (through `max_lifetime`, or because a `CachingResolver` reports the
//! change) without a single request failing.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshpool::{CachingResolver, Client, CloseReason, Kind, Resolve, ResolveFuture};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

#[path = "../common/mod.rs"]
mod common;
mod follow_dns;

/// Answers every name with the current list (switchable).
#[derive(Clone)]
struct Switch(Arc<Mutex<Vec<SocketAddr>>>);

impl Switch {
    fn new(addrs: Vec<SocketAddr>) -> Switch {
        Switch(Arc::new(Mutex::new(addrs)))
    }
    fn set(&self, addrs: Vec<SocketAddr>) {
        *self.0.lock().unwrap() = addrs;
    }
}

impl Resolve for Switch {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let addrs = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
}

/// A tiny HTTP/1.1 + HTTP/2 server on a given loopback IP whose responses
/// name the address that served them (after 5 ms; `/slow` after 3 s).
struct IpServer {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for IpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IpServer {
    async fn start(ip: &str) -> IpServer {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    let svc = service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| async move {
                            // (`/slow`: a long request, 3 s.)
                            let slow = req.uri().path() == "/slow";
                            let wait = if slow { 3000 } else { 5 };
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                addr.ip().to_string(),
                            ))))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        IpServer {
            addr,
            connections,
            task,
        }
    }
}

fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::closed_port()))
}

/// A loopback address that never answers a SYN: a listener with a full
/// accept queue (Linux drops further SYNs instead of refusing them). The
/// returned streams keep the queue full.
async fn blackhole() -> Option<(SocketAddr, Vec<TcpStream>, socket2::Socket)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .ok()?;
    socket.listen(0).ok()?;
    let addr = socket.local_addr().ok()?.as_socket()?;
    let mut held = Vec::new();
    for _ in 0..16 {
        match timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(_)) => return None, // refused: no blackhole on this kernel
            Err(_) => return Some((addr, held, socket)),
        }
    }
    None
}

async fn text(client: &Client, url: &str) -> Result<String, freshpool::Error> {
    client.get(url).await?.into_body().text().await
}

/// A GET that must fail: its error and how long it took.
async fn fails_in(client: &Client, url: &str) -> (freshpool::Error, Duration) {
    let started = Instant::now();
    let err = text(client, url).await.expect_err("the GET fails");
    (err, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_eyeballs_skips_a_refusing_address() {
    let server = IpServer::start("127.0.0.1").await;
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(vec![closed_addr(), server.addr]))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let body = text(&client, "http://multi.test/").await.unwrap();
    assert_eq!(body, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_eyeballs_races_past_a_blackholed_address_within_the_timeout() {
    let Some((hole, _held, _socket)) = blackhole().await else {
        eprintln!("skipped: this kernel refuses instead of dropping SYNs");
        return;
    };
    let server = IpServer::start("127.0.0.1").await;
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(vec![hole, server.addr]))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let body = text(&client, "http://multi.test/").await.unwrap();
    let took = started.elapsed();
    assert_eq!(body, "127.0.0.1");
    // RFC 8305: the second address is tried after the attempt delay
    // (250 ms), not after the first one times out.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // (One after the other: the 2 s connect timeout, and a failure.)
    assert!(took < Duration::from_millis(1800), "{took:?}");

    // Only blackholes: the connect timeout bounds the whole attempt and the
    // error lists every address.
    let Some((hole2, _held2, _socket2)) = blackhole().await else {
        return;
    };
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(vec![hole, hole2]))
        .connect_timeout(Duration::from_millis(600))
        .build()
        .unwrap();
    let (err, took) = fails_in(&client, "http://multi.test/").await;
    assert_eq!(err.kind(), Kind::ConnectTimeout, "{err}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let msg = err.to_string();
    for addr in [hole, hole2] {
        assert!(msg.contains(&addr.to_string()), "{msg}");
    }
}

/// Sockets of this process waiting for a SYN's answer (`SYN_SENT`) to any
/// of `ports` on 127.0.0.1, from `/proc/net/tcp`.
fn syn_sent_to(ports: &[u16]) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields
                .get(2)
                .and_then(|remote| remote.split(':').nth(1))
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            fields.get(3) == Some(&"02") && port.is_some_and(|p| ports.contains(&p))
        })
        .count() as u64
}

/// One dial keeps at most four attempts in flight: at that, the next
/// address waits until the oldest attempt is 2 s old and takes its place
/// (every address is still tried in turn). A name whose addresses all
/// swallowed SYNs held a socket per address until `connect_timeout`, and
/// 64 dials to it thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_keeps_at_most_four_attempts_in_flight() {
    if !std::path::Path::new("/proc/net/tcp").exists() {
        eprintln!("skipped: no /proc/net/tcp");
        return;
    }
    let mut holes = Vec::new();
    for _ in 0..7 {
        let Some(hole) = blackhole().await else {
            eprintln!("skipped: this kernel refuses instead of dropping SYNs");
            return;
        };
        holes.push(hole);
    }
    let server = IpServer::start("127.0.0.1").await;
    let ports: Vec<u16> = holes.iter().map(|(addr, ..)| addr.port()).collect();
    let mut addrs: Vec<SocketAddr> = holes.iter().map(|(addr, ..)| *addr).collect();
    addrs.push(server.addr);
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(addrs))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (peak, done, ports) = (peak.clone(), done.clone(), ports.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(syn_sent_to(&ports), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    // The live address comes last: reached at about 2.75 s (four
    // attempts, then one more each 250 ms once the oldest is 2 s old).
    let body = text(&client, "http://multi.test/").await.unwrap();
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    assert_eq!(body, "127.0.0.1");
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak >= 3, "the watcher saw the race: {peak} at once");
    // (Four, and for a moment five: a given-up attempt's socket closes
    // when its cancelled task next runs, which may be after the next
    // attempt's SYN. Without the limit: seven.)
    assert!(peak <= 5, "{peak} attempts at once");
    // The given-up ones are said so when every address fails.
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(holes.iter().map(|(addr, ..)| *addr).collect()))
        .connect_timeout(Duration::from_millis(2500))
        .build()
        .unwrap();
    let (err, _) = fails_in(&client, "http://multi.test/").await;
    assert_eq!(err.kind(), Kind::ConnectTimeout, "{err}");
    assert!(
        err.to_string().contains("given up for the next address"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_address_fails_the_error_lists_each() {
    let addrs = vec![closed_addr(), closed_addr(), closed_addr()];
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(addrs.clone()))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = text(&client, "http://multi.test/").await.unwrap_err();
    assert_eq!(err.kind(), Kind::Connect, "{err}");
    let msg = err.to_string();
    for addr in &addrs {
        assert!(msg.contains(&addr.to_string()), "{addr} missing: {msg}");
    }
}

/// Answers after `delay`.
#[derive(Clone)]
struct SlowAnswer(Vec<SocketAddr>, Duration);

impl Resolve for SlowAnswer {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let (addrs, delay) = (self.0.clone(), self.1);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(addrs)
        })
    }
}

/// `connect_timeout` bounds the whole attempt: a slow lookup leaves the
/// TCP connect only what remains (each used to get the full setting, and
/// through a proxy the CONNECT a third). The timeout also keeps why each
/// address failed, and says which were never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_the_lookup_and_the_connect_together() {
    let Some((hole, _held, _socket)) = blackhole().await else {
        eprintln!("skipped: this kernel refuses instead of dropping SYNs");
        return;
    };
    let refused = closed_addr();
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(SlowAnswer(vec![refused, hole], Duration::from_millis(800)))
        .connect_timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    let (err, took) = fails_in(&client, "http://slow.test/").await;
    assert_eq!(err.kind(), Kind::ConnectTimeout, "{err}");
    // 800 ms of lookup + the rest of the 1 s: not 800 + 1000.
    assert!(took < Duration::from_millis(1700), "{took:?}: {err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{refused} (")), "{msg}");
    assert!(
        msg.to_lowercase().contains("refused"),
        "the reason is kept: {msg}"
    );
    assert!(msg.contains(&format!("{hole} (no answer)")), "{msg}");
}

/// DNS slower than `connect_timeout` behind a `CachingResolver` (a
/// pod's `ndots:5` search list): the first request times out, but its
/// lookup goes on and is kept, so the requests after it connect. (Each
/// dial's lookup died with it, unstored: every request failed for as long
/// as DNS stayed slow.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_slower_than_connect_timeout_still_serves_the_next_requests() {
    let server = freshpool_testkit::TestServer::http1().await;
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(CachingResolver::new(SlowAnswer(
            vec![server.addr()],
            Duration::from_millis(400),
        )))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let url = format!("http://slow.test:{}/", server.addr().port());
    let (err, _) = fails_in(&client, &url).await;
    assert_eq!(err.kind(), Kind::ConnectTimeout, "{err}");
    assert!(err.to_string().contains("connect_timeout"), "{err}");
    // The lookup lands on its own (400 ms in all); bounded, not guessed.
    for attempt in 0.. {
        match text(&client, &url).await {
            Ok(body) => {
                assert_eq!(body, "ok");
                break;
            }
            Err(e) if attempt < 20 => assert_eq!(e.kind(), Kind::ConnectTimeout, "{e}"),
            Err(e) => panic!("the kept answer never served a request: {e}"),
        }
    }
    for _ in 0..3 {
        assert_eq!(text(&client, &url).await.expect("the kept answer"), "ok");
    }
}

/// `pool_timeout` bounds waiting for the pool, not the request's own dial:
/// with a dead host the request ends with the connect's error (which says
/// what is wrong), not PoolTimeout advising a larger pool while nothing
/// was in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_timeout_does_not_cut_off_the_requests_own_dial() {
    let Some((hole, _held, _socket)) = blackhole().await else {
        eprintln!("skipped: this kernel refuses instead of dropping SYNs");
        return;
    };
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(vec![hole]))
        .pool_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(1200))
        .build()
        .unwrap();
    let err = timeout(Duration::from_secs(10), text(&client, "http://dead.test/"))
        .await
        .expect("bounded by the connect timeouts")
        .unwrap_err();
    assert_eq!(err.kind(), Kind::ConnectTimeout, "{err}");
    // Another request behind it, with no dial of its own, still gets
    // PoolTimeout (the limit is 1 here).
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(vec![hole]))
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(1200))
        .build()
        .unwrap();
    let first = {
        let client = client.clone();
        tokio::spawn(async move { text(&client, "http://dead.test/").await })
    };
    freshpool_testkit::eventually("the first request's dial under way", || {
        client
            .stats()
            .origins
            .first()
            .is_some_and(|o| o.connecting > 0)
    })
    .await;
    let second = text(&client, "http://dead.test/").await.unwrap_err();
    assert_eq!(second.kind(), Kind::PoolTimeout, "{second}");
    assert_eq!(
        first.await.unwrap().unwrap_err().kind(),
        Kind::ConnectTimeout
    );
}

/// A shared pool's origins dial with whichever client's connector used
/// them first. A client sharing the pool with a resolver of its own had its
/// requests dialed where the first client's resolver said; now a client
/// that shares a pool uses the pool's resolver, and `build()` refuses a
/// resolver or dial settings of its own (a Config error naming them),
/// instead of a silent split or a new origin per such client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_a_pool_dial_the_pools_way() {
    let two = IpServer::start("127.0.0.2").await;
    let owner = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(vec![two.addr]))
        .proxy_from_env(false)
        .build()
        .unwrap();
    let own_resolver = Client::builder()
        .proxy_from_env(false)
        .resolver(Switch::new(vec![closed_addr()]))
        .share_pool_with(&owner)
        .build()
        .unwrap_err();
    assert_eq!(own_resolver.kind(), Kind::Config);
    assert!(
        own_resolver.to_string().contains("resolver"),
        "{own_resolver}"
    );
    // Nor a clock of its own, which the shared pool would not use for
    // freeze detection (it was dropped without a word).
    let own_clock = Client::builder()
        .clock(freshpool::SystemClock)
        .share_pool_with(&owner)
        .build()
        .unwrap_err();
    assert_eq!(own_clock.kind(), Kind::Config);
    assert!(own_clock.to_string().contains("clock"), "{own_clock}");
    let other_timeout = Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .share_pool_with(&owner)
        .build()
        .unwrap_err();
    assert_eq!(other_timeout.kind(), Kind::Config);
    assert!(
        other_timeout.to_string().contains("connect_timeout"),
        "{other_timeout}"
    );
    // A client that dials alike uses the pool's resolver, also when it is
    // the first to reach the origin, and shares its connections.
    let sharer = Client::builder()
        .proxy_from_env(false)
        .timeout(Some(Duration::from_secs(5)))
        .share_pool_with(&owner)
        .build()
        .unwrap();
    let url = "http://svc.test/";
    assert_eq!(text(&sharer, url).await.unwrap(), "127.0.0.2");
    assert_eq!(text(&owner, url).await.unwrap(), "127.0.0.2");
    assert_eq!(two.connections.load(Ordering::SeqCst), 1);
}

/// A resolver that panics (a bug in user code, in `resolve` itself or in
/// the future it returns).
struct Panicking {
    calls: Arc<AtomicU64>,
    in_future: bool,
}

impl Resolve for Panicking {
    fn resolve(&self, host: &str, _port: u16) -> ResolveFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let host = host.to_owned();
        if !self.in_future {
            panic!("resolver bug for {host}");
        }
        Box::pin(async move { panic!("resolver bug (in its future) for {host}") })
    }
}

/// A dial that panics fails its request with a connect error that says so,
/// after one dial per request. It used to end the dial task without an
/// answer: the freed slot dialed again at once for the same waiter, and
/// again, without end, at full speed; the waiter's `pool_timeout` kept
/// being extended for the dial in flight, so the request never returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_resolver_fails_the_request_instead_of_hanging() {
    for (in_future, scheme) in [(false, "http"), (true, "http"), (true, "https")] {
        let calls = Arc::new(AtomicU64::new(0));
        let client = Client::builder()
            .proxy_from_env(false)
            .resolver(Panicking {
                calls: calls.clone(),
                in_future,
            })
            .pool_timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let url = format!("{scheme}://panicky.test:8080/");
        let result = timeout(Duration::from_secs(5), client.get(&url)).await;
        let err = result
            .unwrap_or_else(|_| {
                panic!(
                    "{url} (panic in future: {in_future}): no answer in 5 s after {} dials",
                    calls.load(Ordering::SeqCst)
                )
            })
            .expect_err("the dial panicked");
        assert_eq!(err.kind(), Kind::Connect, "{err}");
        assert!(err.to_string().contains("panicked"), "{err}");
        assert!(err.to_string().contains("resolver bug"), "{err}");
        // One dial (a retry of the request may add one): not a loop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dials = calls.load(Ordering::SeqCst);
        assert!((1..=2).contains(&dials), "{url}: {dials} dials");
        let stats = client.stats();
        assert_eq!(stats.open_connections, 0, "{stats}");
        assert!(
            stats
                .origins
                .iter()
                .all(|o| o.connecting == 0 && o.waiting == 0),
            "{stats}"
        );
    }
}

/// A resolver that knows no name (a registry-backed one, a test double).
struct KnowsNothing(Arc<AtomicU64>);

impl Resolve for KnowsNothing {
    fn resolve(&self, host: &str, _port: u16) -> ResolveFuture {
        self.0.fetch_add(1, Ordering::SeqCst);
        let host = host.to_owned();
        Box::pin(async move { Err(std::io::Error::other(format!("no such service: {host}"))) })
    }
}

/// An IP literal is dialed as it is, origin or proxy: the resolver is
/// asked for names only (as in hyper-util and reqwest). A request to
/// `http://127.0.0.1:port/` failed "resolving 127.0.0.1 failed" with a
/// resolver that knows no such name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_literal_never_goes_to_the_resolver() {
    let server = freshpool_testkit::TestServer::http1().await;
    let calls = Arc::new(AtomicU64::new(0));
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(KnowsNothing(calls.clone()))
        .build()
        .unwrap();
    let response = client.get(&server.url("/")).await.expect("dialed as it is");
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    let v6 = client.get("http://[::1]:1/").await.unwrap_err();
    assert_eq!(v6.kind(), Kind::Connect, "{v6}");
    assert!(!v6.to_string().contains("resolving"), "{v6}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A name still goes to it.
    let err = client.get("http://service.test/").await.unwrap_err();
    assert!(err.to_string().contains("resolving service.test"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
