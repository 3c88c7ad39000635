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

mod common;

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
/// name the address that served them.
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
                    let svc = service_fn(move |_req| async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            addr.ip().to_string(),
                        ))))
                    });
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
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Only blackholes: the connect timeout bounds the whole attempt and the
    // error lists every address.
    let Some((hole2, _held2, _socket2)) = blackhole().await else {
        return;
    };
    let client = Client::builder()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_address_fails_the_error_lists_each() {
    let addrs = vec![closed_addr(), closed_addr(), closed_addr()];
    let client = Client::builder()
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

/// Runs `workers` request loops against `url` until `stop`, recording when
/// each request started and which address answered it; any failed request
/// fails the test.
fn load(
    client: &Client,
    url: &'static str,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<Vec<(Instant, String)>>> {
    (0..workers)
        .map(|_| {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let body = text(&client, url)
                        .await
                        .unwrap_or_else(|e| panic!("a request failed during the switch: {e}"));
                    seen.push((started, body));
                }
                seen
            })
        })
        .collect()
}

async fn switch_under_load(client: &Client, switch: &Switch, new: SocketAddr, settle: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(client, "http://app.test/", 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    switch.set(vec![new]);
    let switched = Instant::now();
    tokio::time::sleep(settle + Duration::from_millis(600)).await;
    stop.store(true, Ordering::SeqCst);
    let mut before = 0;
    let mut late_old = Vec::new();
    let mut late_new = 0;
    for w in workers {
        for (at, who) in w.await.expect("no request failed") {
            if at + Duration::from_millis(50) < switched {
                assert_eq!(who, "127.0.0.2");
                before += 1;
            } else if at > switched + settle {
                if who == "127.0.0.3" {
                    late_new += 1;
                } else {
                    late_old.push(at - switched);
                }
            }
        }
    }
    assert!(before > 0, "load ran before the switch");
    assert!(late_new > 0, "requests moved to the new address");
    assert!(
        late_old.is_empty(),
        "requests still went to the old address {late_old:?} after the switch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_moves_connections_to_the_new_address() {
    timeout(Duration::from_secs(20), async {
        let old = IpServer::start("127.0.0.2").await;
        let new = IpServer::start("127.0.0.3").await;
        let switch = Switch::new(vec![old.addr]);
        let life = Duration::from_millis(300);
        let client = Client::builder()
            .resolver(switch.clone())
            .max_lifetime(Some(life))
            .idle_timeout(Some(life))
            .build()
            .unwrap();
        // Connections to the old address live at most `life` (plus a dial
        // that resolved just before the switch).
        switch_under_load(
            &client,
            &switch,
            new.addr,
            life + Duration::from_millis(200),
        )
        .await;
        assert!(new.connections.load(Ordering::SeqCst) > 0);
        let closed = &client.stats().origins[0].closed;
        let lifetime = closed
            .iter()
            .find(|(r, _)| *r == CloseReason::Lifetime)
            .map_or(0, |(_, n)| *n);
        assert!(lifetime > 0, "{closed:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_change_reported_by_the_caching_resolver_retires_old_connections() {
    for http2 in [false, true] {
        timeout(Duration::from_secs(20), async {
            let old = IpServer::start("127.0.0.2").await;
            let new = IpServer::start("127.0.0.3").await;
            let switch = Switch::new(vec![old.addr]);
            let ttl = Duration::from_millis(200);
            let mut builder = Client::builder()
                .resolver(CachingResolver::new(switch.clone()).ttl(ttl))
                // No lifetime: only the DNS change can move the connections.
                .max_lifetime(None)
                .idle_timeout(None);
            if http2 {
                builder = builder.http_version(freshpool::HttpVersion::Http2Only);
            }
            let client = builder.build().unwrap();
            // The change is seen within a TTL plus one background lookup.
            switch_under_load(&client, &switch, new.addr, ttl + Duration::from_millis(200)).await;
            let stats = client.stats();
            assert_eq!(stats.origins.len(), 1);
            if !http2 {
                let closed = &stats.origins[0].closed;
                let lifetime = closed
                    .iter()
                    .find(|(r, _)| *r == CloseReason::Lifetime)
                    .map_or(0, |(_, n)| *n);
                assert!(lifetime > 0, "{closed:?}");
            }
            assert!(old.connections.load(Ordering::SeqCst) > 0);
        })
        .await
        .unwrap();
    }
}

/// Reports a fixed answer through `Resolve::current` (generation 1) and
/// counts how often the pool asks.
#[derive(Clone)]
struct Reporting {
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    generation: Arc<AtomicU64>,
    asked: Arc<AtomicU64>,
}

impl Resolve for Reporting {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let addrs = self.addrs.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
    fn current(&self, _host: &str, _port: u16) -> Option<freshpool::Resolved> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Some(freshpool::Resolved {
            generation: self.generation.load(Ordering::SeqCst),
            addrs: self.addrs.lock().unwrap().clone().into(),
        })
    }
}

/// The pool asks the resolver whether DNS moved at most every 50 ms per
/// origin, not on every checkout and return (a `CachingResolver` answers
/// under one process-wide lock); a connection returned after the pool saw
/// its address leave DNS still closes instead of going back to the idle
/// list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_is_checked_at_most_every_50ms_and_a_moved_connection_closes_on_return() {
    timeout(Duration::from_secs(20), async {
        let old = IpServer::start("127.0.0.2").await;
        let new = IpServer::start("127.0.0.3").await;
        let resolver = Reporting {
            addrs: Arc::new(Mutex::new(vec![old.addr])),
            generation: Arc::new(AtomicU64::new(1)),
            asked: Arc::new(AtomicU64::new(0)),
        };
        let client = Client::builder()
            .resolver(resolver.clone())
            .max_lifetime(None)
            .idle_timeout(None)
            .build()
            .unwrap();
        let url = "http://app.test/";
        // Sequential requests for at least 150 ms (each takes >= 5 ms).
        let started = Instant::now();
        let mut requests = 0u64;
        while requests < 20 || started.elapsed() < Duration::from_millis(150) {
            assert_eq!(text(&client, url).await.unwrap(), "127.0.0.2");
            requests += 1;
        }
        let elapsed = started.elapsed();
        let asked = resolver.asked.load(Ordering::SeqCst);
        // (45, and one spare: the pool measures on a coarse clock whose
        // ticks are a few milliseconds.)
        let allowed = elapsed.as_millis() as u64 / 45 + 2;
        assert!(asked >= 1, "the pool never asked the resolver");
        assert!(
            asked <= allowed,
            "{asked} resolver checks for {requests} requests in {elapsed:?} (at most {allowed})"
        );

        // Hold the connection (a request in flight) while DNS moves and the
        // pool notices at a checkout of a second connection; the first is
        // closed when it comes back, not kept idle.
        let held = client.get(url).await.unwrap();
        *resolver.addrs.lock().unwrap() = vec![new.addr];
        resolver.generation.store(2, Ordering::SeqCst);
        // (Twice the check interval: the pool reads a coarse clock.)
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(text(&client, url).await.unwrap(), "127.0.0.3");
        assert_eq!(held.into_body().text().await.unwrap(), "127.0.0.2");
        let stats = client.stats();
        let lifetime = stats.origins[0]
            .closed
            .iter()
            .find(|(r, _)| *r == CloseReason::Lifetime)
            .map_or(0, |(_, n)| *n);
        assert_eq!(lifetime, 1, "{:?}", stats.origins[0].closed);
        assert_eq!(stats.origins[0].idle, 1, "only the new connection rests");
        // Every later request goes to the new address.
        for _ in 0..5 {
            assert_eq!(text(&client, url).await.unwrap(), "127.0.0.3");
        }
        assert_eq!(old.connections.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

/// Like `Reporting`, but each lookup takes the answer of the moment it
/// starts and then waits for `gate`: a dial that resolved the old address
/// lands after the pool already saw DNS move.
/// With `answer_late`, the lookup answers what is current when the gate
/// opens instead: a dial lands on an address newer than the pool's view.
#[derive(Clone)]
struct SlowLookup {
    reporting: Reporting,
    gate: Arc<tokio::sync::Semaphore>,
    answer_late: bool,
}

impl Resolve for SlowLookup {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let addrs = self.reporting.addrs.clone();
        let early = addrs.lock().unwrap().clone();
        let (gate, late) = (self.gate.clone(), self.answer_late);
        Box::pin(async move {
            drop(gate.acquire().await.expect("gate open"));
            Ok(if late {
                addrs.lock().unwrap().clone()
            } else {
                early
            })
        })
    }
    fn current(&self, host: &str, port: u16) -> Option<freshpool::Resolved> {
        self.reporting.current(host, port)
    }
}

impl SlowLookup {
    /// Answers `addr` (generation 1); lookups wait for `gate`.
    fn new(addr: SocketAddr, answer_late: bool) -> SlowLookup {
        SlowLookup {
            reporting: Reporting {
                addrs: Arc::new(Mutex::new(vec![addr])),
                generation: Arc::new(AtomicU64::new(1)),
                asked: Arc::new(AtomicU64::new(0)),
            },
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            answer_late,
        }
    }

    /// DNS moves to `addr` (generation 2).
    fn move_to(&self, addr: SocketAddr) {
        *self.reporting.addrs.lock().unwrap() = vec![addr];
        self.reporting.generation.store(2, Ordering::SeqCst);
    }
}

/// A GET in its own task.
fn spawn_text(client: &Client, url: &'static str) -> JoinHandle<Result<String, freshpool::Error>> {
    let client = client.clone();
    tokio::spawn(async move { text(&client, url).await })
}

/// Waits until the client's first origin is dialing.
async fn until_dialing(client: &Client) {
    while client
        .stats()
        .origins
        .first()
        .is_none_or(|o| o.connecting == 0)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An HTTP/2 connection dialed to an address DNS no longer lists, landing
/// after the pool saw the change, is not shared: one HTTP/2 connection
/// carries every later request, and nothing would move them off it (the
/// pool drains what it holds when it sees the change, and this one was not
/// there yet). The requests that waited for it go over a new dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_landing_after_dns_moved_is_not_shared() {
    timeout(Duration::from_secs(20), async {
        let old = IpServer::start("127.0.0.2").await;
        let new = IpServer::start("127.0.0.3").await;
        let resolver = SlowLookup::new(old.addr, false);
        let client = Client::builder()
            .resolver(resolver.clone())
            .http_version(freshpool::HttpVersion::Http2Only)
            .max_lifetime(None)
            .idle_timeout(None)
            .build()
            .unwrap();
        let url = "http://app.test/";
        // The first request's dial resolves the old address and waits.
        let first = spawn_text(&client, url);
        until_dialing(&client).await;
        // DNS moves; a checkout after the pool's 50 ms check interval sees it.
        resolver.move_to(new.addr);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = spawn_text(&client, url);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Now the old dial lands (and any later lookup answers at once).
        resolver.gate.add_permits(1000);
        for answer in [first.await.unwrap(), second.await.unwrap()] {
            answer.expect("the requests that waited succeed");
        }
        for _ in 0..5 {
            assert_eq!(text(&client, url).await.unwrap(), "127.0.0.3");
        }
        assert_eq!(new.connections.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

/// The other way round: the dial resolves the new address while the pool's
/// own view is still the old answer (no checkout since the change). The
/// connection is to where DNS points now: it is shared, not closed (closed,
/// each new dial landed there again, and a lone request waited for its
/// pool_timeout while the pool dialed and closed in a loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_to_the_new_address_is_kept_before_the_pool_saw_the_change() {
    timeout(Duration::from_secs(20), async {
        let builder = Client::builder()
            .http_version(freshpool::HttpVersion::Http2Only)
            .pool_timeout(Duration::from_secs(3));
        let (_client, old, new) = lone_dial_lands_on_the_new_address(builder).await;
        assert_eq!(new.connections.load(Ordering::SeqCst), 1, "one dial");
        assert_eq!(old.connections.load(Ordering::SeqCst), 0);
    })
    .await
    .unwrap();
}

/// A lone request whose checkout saw DNS at the old address (the first
/// generation) and whose dial resolved the new one: it is answered from
/// there. Returns the client and both servers (old, new).
async fn lone_dial_lands_on_the_new_address(
    builder: freshpool::ClientBuilder,
) -> (Client, IpServer, IpServer) {
    let old = IpServer::start("127.0.0.2").await;
    let new = IpServer::start("127.0.0.3").await;
    let resolver = SlowLookup::new(old.addr, true);
    let client = builder.resolver(resolver.clone()).build().unwrap();
    // The checkout sees generation 1 (the old address); its dial waits.
    let lone = spawn_text(&client, "http://app.test/");
    until_dialing(&client).await;
    resolver.move_to(new.addr);
    resolver.gate.add_permits(1000);
    assert_eq!(lone.await.unwrap().expect("the lone request"), "127.0.0.3");
    (client, old, new)
}

/// The same for HTTP/1: a connection dialed to the new address before the
/// pool's view caught up is where DNS points now. It rests after its
/// request and carries the next one (it used to be closed on its first
/// return, as if DNS had moved away from it, and every request until the
/// next 50 ms check paid a new dial).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_connection_to_the_new_address_is_kept_before_the_pool_saw_the_change() {
    timeout(Duration::from_secs(20), async {
        let (client, old, new) = lone_dial_lands_on_the_new_address(Client::builder()).await;
        let stats = client.stats();
        assert_eq!(stats.origins[0].idle, 1, "the connection rests: {stats}");
        assert_eq!(
            text(&client, "http://app.test/").await.unwrap(),
            "127.0.0.3"
        );
        assert_eq!(new.connections.load(Ordering::SeqCst), 1, "one dial");
        assert_eq!(old.connections.load(Ordering::SeqCst), 0);
    })
    .await
    .unwrap();
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
        .resolver(SlowAnswer(vec![refused, hole], Duration::from_millis(800)))
        .connect_timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    let (err, took) = fails_in(&client, "http://slow.test/").await;
    assert_eq!(err.kind(), Kind::ConnectTimeout, "{err}");
    // 800 ms of lookup + the rest of the 1 s: not 800 + 1000.
    assert!(took < Duration::from_millis(1500), "{took:?}: {err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{refused} (")), "{msg}");
    assert!(
        msg.to_lowercase().contains("refused"),
        "the reason is kept: {msg}"
    );
    assert!(msg.contains(&format!("{hole} (no answer)")), "{msg}");
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
    while client
        .stats()
        .origins
        .first()
        .is_none_or(|o| o.connecting == 0)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
        .resolver(Switch::new(vec![two.addr]))
        .proxy_from_env(false)
        .build()
        .unwrap();
    let own_resolver = Client::builder()
        .resolver(Switch::new(vec![closed_addr()]))
        .share_pool_with(&owner)
        .build()
        .unwrap_err();
    assert_eq!(own_resolver.kind(), Kind::Config);
    assert!(
        own_resolver.to_string().contains("resolver"),
        "{own_resolver}"
    );
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
