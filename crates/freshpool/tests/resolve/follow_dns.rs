//! Connections follow DNS when a host moves from 127.0.0.2 to 127.0.0.3:
//! through `max_lifetime`, through a `CachingResolver` that reports the
//! change, and when a dial lands after (or before) the pool saw the move.
//! No request fails meanwhile.

use super::*;

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
            .proxy_from_env(false)
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
                .proxy_from_env(false)
                .resolver(
                    CachingResolver::new(switch.clone())
                        .ttl(ttl)
                        .retire_after(Duration::ZERO),
                )
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
            .proxy_from_env(false)
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
            .proxy_from_env(false)
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
    let client = builder
        .proxy_from_env(false)
        .resolver(resolver.clone())
        .build()
        .unwrap();
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

/// A busy HTTP/2 connection whose address DNS dropped is drained only
/// while a slot can replace it: at the per-host limit it goes on serving
/// (drained at once, it kept its only slot until its long request ended,
/// and every other request waited into `PoolTimeout`), and a later sweep
/// drains it once it is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http2_connection_dns_dropped_serves_on_while_no_slot_can_replace_it() {
    let old = IpServer::start("127.0.0.2").await;
    let new = IpServer::start("127.0.0.3").await;
    let switch = Switch::new(vec![old.addr]);
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(
            CachingResolver::new(switch.clone())
                .ttl(Duration::from_millis(200))
                .retire_after(Duration::ZERO),
        )
        .http_version(freshpool::HttpVersion::Http2Only)
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://switch.test:{}", old.addr.port());
    assert_eq!(
        text(&client, &format!("{url}/")).await.unwrap(),
        "127.0.0.2"
    );
    let long = {
        let (client, url) = (client.clone(), format!("{url}/slow"));
        tokio::spawn(async move { text(&client, &url).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    switch.set(vec![new.addr]);
    // Requests meanwhile see the change (a TTL, then a background lookup)
    // and are served by the busy connection all the same.
    for _ in 0..6 {
        let got = text(&client, &format!("{url}/")).await;
        assert_eq!(
            got.as_deref().ok(),
            Some("127.0.0.2"),
            "{got:?}\n{}",
            client.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(long.await.unwrap().unwrap(), "127.0.0.2");
    // Free now: the next sweep drains it, and requests go to the new address.
    timeout(Duration::from_secs(10), async {
        while text(&client, &format!("{url}/")).await.ok().as_deref() != Some("127.0.0.3") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still on the old address:\n{}", client.stats()));
}

/// DNS that rotates addresses in and out of its answers (a few of many,
/// as S3 and large load balancers answer) does not cost the pool its
/// connections: an address left out of an answer stays current for the
/// caching resolver's `retire_after` (60 s by default), and the idle
/// connection to it goes on serving. With `retire_after(ZERO)` the next
/// answer without it retires the connection, and a new one is dialed.
/// (Every answer retired the connections to the addresses it left out:
/// each lasted about one TTL, a new handshake each time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_an_address_dns_rotates_out_are_kept_for_retire_after() {
    timeout(Duration::from_secs(20), async {
        for strict in [false, true] {
            let a = IpServer::start("127.0.0.2").await;
            let b = IpServer::start("127.0.0.3").await;
            let switch = Switch::new(vec![a.addr]);
            let ttl = Duration::from_millis(200);
            let mut cached = CachingResolver::new(switch.clone()).ttl(ttl);
            if strict {
                cached = cached.retire_after(Duration::ZERO);
            }
            let client = Client::builder()
                .proxy_from_env(false)
                .resolver(cached)
                .build()
                .unwrap();
            let url = "http://rotating.test/";
            assert_eq!(text(&client, url).await.unwrap(), "127.0.0.2");
            // The next answers list only B; A's idle connection serves on.
            switch.set(vec![b.addr]);
            let mut served_by = Vec::new();
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                served_by.push(text(&client, url).await.unwrap());
            }
            let stats = client.stats();
            let retired = stats.closed_for(CloseReason::Lifetime);
            if strict {
                assert_eq!(served_by.last().unwrap(), "127.0.0.3", "{served_by:?}");
                assert_eq!(retired, 1, "{stats}");
            } else {
                assert!(
                    served_by.iter().all(|ip| ip == "127.0.0.2"),
                    "{served_by:?}"
                );
                assert_eq!(retired, 0, "{stats}");
                assert_eq!(a.connections.load(Ordering::SeqCst), 1);
                assert_eq!(b.connections.load(Ordering::SeqCst), 0);
            }
        }
    })
    .await
    .unwrap();
}
