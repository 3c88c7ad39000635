//! Total capacity (`max_connections_total`) shared by origins: a slot that
//! frees goes to the origin that waits for it, whichever way it frees (a
//! body read to its end, an idle HTTP/2 connection, a last stream ending),
//! and a timeout caused by the total limit says so. Real loopback servers
//! (HTTP/1.1, and HTTP/2 over TLS).

use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::{Protocol, ServerConfig, TestServer};

/// Library bug (reported; model: `pool::model_tests::
/// origin_starving_after_service_is_woken_when_total_capacity_returns`):
/// with the total budget held by another origin, an HTTPS origin's first
/// dial lands as HTTP/2 with one stream; `add_connection`'s `service()`
/// wants a second connection for the next waiter, finds the budget
/// exhausted and sets `starving`, but only `checkout` registers an origin
/// for `wake_starving`. When the other origin frees its slot, nobody looks
/// here: the waiter times out although capacity is free.
#[test]
fn an_origin_starved_by_service_is_woken_when_total_capacity_frees() {
    use freshpool_testkit::TestCa;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ca = TestCa::new();
        let h2 = TestServer::start(ServerConfig {
            protocol: Protocol::Http2,
            tls: Some(ServerConfig::tls_config(&ca, &[b"h2"])),
            max_concurrent_streams: Some(1),
            ..ServerConfig::default()
        })
        .await;
        let h1 = TestServer::http1().await;
        let client = Client::builder()
            .add_root_certificate(ca.ca_cert_der())
            .max_connections_per_host(2)
            .max_connections_total(2)
            .pool_timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        // Origin Y holds one total slot: a response whose body we keep.
        let held = client.get(&h1.url("/stream/200000")).await.unwrap();
        // Origin X: R1 dials, R2 queues behind the dial (coalescing).
        let r1 = {
            let (c, u) = (client.clone(), h2.url("/delay/6000"));
            tokio::spawn(async move { c.get(&u).await?.into_body().bytes().await })
        };
        let r2 = {
            let (c, u) = (client.clone(), h2.url("/"));
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let r = c.get(&u).await;
                (r.map(|_| ()), started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Y's slot frees: X's waiter can have a second connection now.
        drop(held);
        let (r2, waited) = r2.await.unwrap();
        assert!(
            r2.is_ok() && waited < Duration::from_secs(2),
            "R2 waited {waited:?} after total capacity was freed: {:?}\n{}",
            r2.err(),
            client.stats()
        );
        r1.abort();
    });
}

/// Two origins and one connection for both (per host and in total).
async fn two_origins_one_slot(pool_timeout: Duration) -> (TestServer, TestServer, Client) {
    let a = TestServer::http1().await;
    let b = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .max_connections_total(1)
        .pool_timeout(pool_timeout)
        .build()
        .unwrap();
    (a, b, client)
}

/// Waits until `n` requests to `server` queue in `client`'s pool.
async fn until_waiting(client: &Client, server: &TestServer, n: usize) {
    let port = server.addr().port().to_string();
    freshpool_testkit::eventually("requests to queue", || {
        client
            .stats()
            .origins
            .iter()
            .any(|o| o.origin.contains(&port) && o.waiting == n)
    })
    .await;
}

/// With `held` (a response whose body is unread) keeping the only slot,
/// starts a GET of `waiter` (another origin), waits until it queues, reads
/// `held` to the end, and returns how long after that the GET was served.
async fn served_after_release(
    client: &Client,
    held: http::Response<freshpool::Body>,
    waiter: &TestServer,
) -> Duration {
    let waiting = {
        let (c, u) = (client.clone(), waiter.url("/"));
        tokio::spawn(async move {
            let r = c.get(&u).await?.into_body().bytes().await;
            r.map(|_| std::time::Instant::now())
        })
    };
    // It queues (starving: the total limit, not its own, holds it).
    until_waiting(client, waiter, 1).await;
    // The holder reads to the end: its connection comes back with nobody
    // at its own origin waiting for it.
    held.into_body().bytes().await.unwrap();
    let returned = std::time::Instant::now();
    let served = waiting.await.unwrap();
    let served = served.unwrap_or_else(|e| panic!("not served: {e}\n{}", client.stats()));
    served.saturating_duration_since(returned)
}

/// Library bug (found reading `relieve_total`): an origin waiting for total
/// capacity was helped only when its request queued (by closing an idle
/// connection elsewhere then). A connection another origin returned later
/// went idle and kept the capacity: the waiter sat until `pool_timeout`.
/// Now a connection returned while another origin starves and no waiter
/// here wants it is closed, and its slot goes to the starving origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_returned_while_another_origin_starves_gives_it_the_capacity() {
    let (a, b, client) = two_origins_one_slot(Duration::from_secs(4)).await;
    // A holds the only slot: a response whose body is still unread.
    let held = client.get(&a.url("/stream/200000")).await.unwrap();
    let waited = served_after_release(&client, held, &b).await;
    assert!(
        waited < Duration::from_secs(2),
        "B waited {waited:?} after A's connection came back\n{}",
        client.stats()
    );
    assert_eq!(a.stats().connections_accepted(), 1);
    assert_eq!(b.stats().connections_accepted(), 1);
}

/// An origin that starved with several requests queued is registered for
/// the freed capacity once, not once per request: a stale registration
/// would make later returns (even its own) close their connection, as if
/// some origin still waited for capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starving_origin_with_many_waiters_leaves_no_stale_claim() {
    let (a, b, client) = two_origins_one_slot(Duration::from_secs(4)).await;
    let held = client.get(&a.url("/stream/200000")).await.unwrap();
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (c, u) = (client.clone(), b.url("/"));
            tokio::spawn(async move { c.get(&u).await?.into_body().bytes().await })
        })
        .collect();
    until_waiting(&client, &b, 5).await;
    held.into_body().bytes().await.unwrap();
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    // Nobody waits any more: B's connection rests and is reused.
    for _ in 0..3 {
        let response = client.get(&b.url("/")).await.unwrap();
        response.into_body().bytes().await.unwrap();
    }
    let stats = client.stats();
    assert_eq!(b.stats().connections_accepted(), 1, "{stats}");
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Surplus),
        1,
        "{stats}"
    );
}

/// The pool-timeout report names the pool-wide limit when that is the one
/// reached (the origin's own numbers would read as "should have dialed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_caused_by_the_total_limit_says_so() {
    let (a, b, client) = two_origins_one_slot(Duration::from_millis(300)).await;
    let held = client.get(&a.url("/stream/200000")).await.unwrap();
    let err = client.get(&b.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::PoolTimeout);
    let msg = err.to_string();
    assert!(
        msg.contains("max_connections_total 1 reached, 1 of them to other origins")
            && msg.contains("raise max_connections_total"),
        "{msg}"
    );
    drop(held);
}

/// An HTTP/2 (TLS) origin and an HTTP/1 one, one connection for both.
async fn h2_and_h1_one_slot(pool_timeout: Duration) -> (TestServer, TestServer, Client) {
    let ca = freshpool_testkit::TestCa::new();
    let h2 = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        tls: Some(ServerConfig::tls_config(&ca, &[b"h2"])),
        ..ServerConfig::default()
    })
    .await;
    let h1 = TestServer::http1().await;
    let client = Client::builder()
        .add_root_certificate(ca.ca_cert_der())
        .max_connections_per_host(1)
        .max_connections_total(1)
        .pool_timeout(pool_timeout)
        .build()
        .unwrap();
    (h2, h1, client)
}

/// Library bug (noticed while fixing the one above): relief under the total
/// limit only ever closed idle HTTP/1 connections. An HTTP/2 connection
/// with no stream in flight kept its slot while another origin timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gives_its_slot_to_a_starving_origin() {
    let (h2, h1, client) = h2_and_h1_one_slot(Duration::from_secs(3)).await;
    // X: one HTTP/2 connection, now without streams, holds the only slot.
    let body = client.get(&h2.url("/")).await.unwrap().into_body().bytes();
    body.await.unwrap();
    assert_eq!(client.stats().open_connections, 1);
    // Y must get it.
    let started = std::time::Instant::now();
    let r = client.get(&h1.url("/")).await;
    let waited = started.elapsed();
    assert!(
        r.is_ok() && waited < Duration::from_secs(2),
        "Y waited {waited:?}: {:?}\n{}",
        r.err(),
        client.stats()
    );
}

/// The same when the HTTP/2 connection's last stream ends while the other
/// origin already waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_whose_last_stream_ends_gives_its_slot_to_a_starving_origin() {
    let (h2, h1, client) = h2_and_h1_one_slot(Duration::from_secs(4)).await;
    // X's only stream is still open (body unread) when Y queues.
    let held = client.get(&h2.url("/stream/200000")).await.unwrap();
    let waited = served_after_release(&client, held, &h1).await;
    assert!(
        waited < Duration::from_secs(2),
        "Y waited {waited:?} after X's stream ended\n{}",
        client.stats()
    );
}

/// Relief under the total limit closes what the starving origin can use,
/// not one idle connection of another origin per queued request: a burst
/// of ten to an HTTP/2 origin rides on one connection, so one of the other
/// origin's ten warm connections closes, not all ten. (A review found it.)
/// A current-thread runtime: the ten check out before any closed
/// connection's task runs and frees its slot.
#[tokio::test]
async fn a_burst_to_a_starving_http2_origin_closes_one_connection_elsewhere() {
    let warm = TestServer::http1().await;
    let h2 = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        ..ServerConfig::default()
    })
    .await;
    let client = Client::builder()
        .max_connections_total(10)
        .max_connections_per_host(10)
        .build()
        .unwrap();
    // Ten warm connections to the first origin, all idle.
    let held: Vec<_> = futures_all((0..10).map(|_| client.get(&warm.url("/")))).await;
    for response in held {
        response.unwrap().into_body().bytes().await.unwrap();
    }
    assert_eq!(client.stats().idle(), 10);
    let h2_client = Client::builder()
        .http_version(freshpool::HttpVersion::Http2Only)
        .share_pool_with(&client)
        .build()
        .unwrap();
    let burst: Vec<_> = futures_all((0..10).map(|_| h2_client.get(&h2.url("/")))).await;
    for response in burst {
        response.unwrap().into_body().bytes().await.unwrap();
    }
    let stats = client.stats();
    let warm_origin = format!("http://127.0.0.1:{}", warm.addr().port());
    let closed = stats
        .origin(&warm_origin)
        .map(|o| o.closed_for(freshpool::CloseReason::Surplus));
    assert_eq!(closed, Some(1), "{stats}");
}

/// Polls all of `futures` together in this task until each is done: each
/// is first polled before any other task runs.
async fn futures_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, result) in pending.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("done")).collect()
}

/// Library bug (found by a read-only review of the pool): an origin whose
/// own request had queued for total capacity still counted as starving
/// after a returned connection of its own served that request (only a new
/// dial or the sweep's service cleared the mark). Its connections then
/// came back to rest, as a starving origin's may, while another origin
/// waited for the capacity they held: that one sat until `pool_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_served_by_its_own_returned_connection_stops_holding_capacity() {
    let b = TestServer::http1().await;
    let starving = OwnRequestQueued::start().await;
    let (client, held) = (&starving.client, starving.first);
    // B queues too (nothing idle anywhere to close for it); the first held
    // body ends: its connection serves A's queued request, and comes back
    // when that one is read, with nobody at A waiting any more.
    let waited = served_after_release(client, held, &b).await;
    starving.third.await.unwrap().unwrap();
    assert!(
        waited < Duration::from_secs(2),
        "B waited {waited:?} after A's connection came back\n{}",
        client.stats()
    );
}

/// Resolves every name to one address, after a delay: a dial that lands
/// late.
struct Slow(std::net::SocketAddr, Duration);

impl freshpool::Resolve for Slow {
    fn resolve(&self, _host: &str, _port: u16) -> freshpool::ResolveFuture {
        let (addr, delay) = (self.0, self.1);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(vec![addr])
        })
    }
}

/// Library bug (same review): a dial whose request had left (here: its own
/// `tokio::time::timeout`) put its connection to rest when it landed, even
/// while another origin waited for the total capacity it held, which then
/// sat until `pool_timeout`. A returned connection already yields its slot
/// then; a newly made one now does too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_landing_after_its_request_left_yields_to_a_starving_origin() {
    let a = TestServer::http1().await;
    let b = TestServer::http1().await;
    let client = Client::builder()
        .proxy_from_env(false)
        .resolver(Slow(a.addr(), Duration::from_millis(400)))
        .max_connections_per_host(1)
        .max_connections_total(1)
        .pool_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    // A (a name: the slow resolver answers it) dials; its request leaves
    // before the dial lands. The dial keeps the only total slot.
    let a_url = format!("http://slow.test:{}/", a.addr().port());
    let gave_up = tokio::time::timeout(Duration::from_millis(50), client.get(&a_url)).await;
    assert!(gave_up.is_err(), "A's dial cannot land within 50 ms");
    // B (an IP literal: no resolver) queues for that slot.
    let started = std::time::Instant::now();
    let response = client.get(&b.url("/")).await;
    let waited = started.elapsed();
    let response = response.unwrap_or_else(|e| panic!("B not served: {e}\n{}", client.stats()));
    response.into_body().bytes().await.unwrap();
    assert!(
        waited < Duration::from_secs(2),
        "B waited {waited:?} for the slot of A's unused dial\n{}",
        client.stats()
    );
    assert_eq!(a.stats().connections_accepted(), 1);
}

/// The diff review of the fix above: with the mark cleared as the last
/// waiter left, the origin's entry in the pool's list of starving origins
/// (taken out only when capacity frees) still read as a claim, and the
/// origin's own returns closed as `Surplus` for nobody. Whether some
/// origin starves is now a count of the marks, not the list's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_served_by_its_own_returned_connection_keeps_its_connections() {
    let starving = OwnRequestQueued::start().await;
    let (a, client) = (&starving.a, &starving.client);
    // A's own returns serve it, then rest: nobody else waits.
    starving.first.into_body().bytes().await.unwrap();
    starving.third.await.unwrap().unwrap();
    starving.second.into_body().bytes().await.unwrap();
    for _ in 0..3 {
        let response = client.get(&a.url("/")).await.unwrap();
        response.into_body().bytes().await.unwrap();
    }
    let stats = client.stats();
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Surplus),
        0,
        "{stats}"
    );
    assert_eq!(a.stats().connections_accepted(), 2, "{stats}");
}

/// The review of the fix above: a request refused by `max_pending(0)` at
/// the total limit left its origin marked as waiting for total capacity,
/// with no waiter to clear the mark: counted for good, it made every other
/// origin's returns close as `Surplus`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_at_the_total_limit_leaves_no_claim_behind() {
    let (a, b) = (TestServer::http1().await, TestServer::http1().await);
    let client = Client::builder()
        .max_connections_per_host(1)
        .max_connections_total(1)
        .max_pending(0)
        .build()
        .unwrap();
    let held = client.get(&b.url("/stream/200000")).await.unwrap();
    let err = client.get(&a.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::PoolFull, "{err}");
    held.into_body().bytes().await.unwrap();
    for _ in 0..3 {
        let response = client.get(&b.url("/")).await.unwrap();
        response.into_body().bytes().await.unwrap();
    }
    let stats = client.stats();
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Surplus),
        0,
        "{stats}"
    );
    assert_eq!(b.stats().connections_accepted(), 1, "{stats}");
}

/// Origin A starving with a request of its own queued: C holds one of the
/// three total slots for good, A the other two (`first`, `second`: bodies
/// unread), and `third`, to A, waits for total capacity (A's own limit is
/// 3).
struct OwnRequestQueued {
    a: TestServer,
    _c: TestServer,
    client: Client,
    _held_by_c: http::Response<freshpool::Body>,
    first: http::Response<freshpool::Body>,
    second: http::Response<freshpool::Body>,
    third: tokio::task::JoinHandle<Result<bytes::Bytes, freshpool::Error>>,
}

impl OwnRequestQueued {
    async fn start() -> OwnRequestQueued {
        let (a, c) = (TestServer::http1().await, TestServer::http1().await);
        let client = Client::builder()
            .max_connections_per_host(3)
            .max_connections_total(3)
            .pool_timeout(Duration::from_secs(4))
            .build()
            .unwrap();
        let held_by_c = client.get(&c.url("/stream/200000")).await.unwrap();
        let first = client.get(&a.url("/stream/200000")).await.unwrap();
        let second = client.get(&a.url("/stream/200000")).await.unwrap();
        let third = {
            let (client, url) = (client.clone(), a.url("/"));
            tokio::spawn(async move { client.get(&url).await?.into_body().bytes().await })
        };
        until_waiting(&client, &a, 1).await;
        OwnRequestQueued {
            a,
            _c: c,
            client,
            _held_by_c: held_by_c,
            first,
            second,
            third,
        }
    }
}
