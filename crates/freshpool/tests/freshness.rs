//! Issue 9: never hand out a stale connection. Every test runs against the
//! chaos proxy (freshpool-testkit) on 127.0.0.1.

use std::collections::HashMap;
use std::time::Duration;

use freshpool::{Client, Kind};
use freshpool_testkit::{ChaosProxy, ServerConfig, TestServer};
use tokio::time::timeout;

mod common;

const LIMIT: Duration = Duration::from_secs(20);

async fn get_ok(client: &Client, url: &str) -> Result<String, freshpool::Error> {
    let resp = client.get(url).await?;
    resp.into_body().text().await
}

/// The client made two connections, the first closed once for `reason`:
/// a suspect connection replaced, not reused.
fn assert_replaced_once(client: &Client, reason: freshpool::CloseReason) {
    let stats = client.stats();
    assert_eq!(stats.created(), 2, "{stats}");
    assert_eq!(stats.closed_for(reason), 1, "{stats}");
}

/// A response held on the client's connection, and a GET spawned behind it
/// (with a per-host limit of 1 it queues, once the caller yields).
async fn held_and_queued(
    client: &Client,
    server: &TestServer,
) -> (
    http::Response<freshpool::Body>,
    tokio::task::JoinHandle<Result<String, freshpool::Error>>,
) {
    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    let (client, url) = (client.clone(), server.url("/"));
    let queued = tokio::spawn(async move { get_ok(&client, &url).await });
    (held, queued)
}

async fn post(client: &Client, url: &str, id: String) -> Result<String, freshpool::Error> {
    let req = http::Request::post(url)
        .header("x-request-id", id)
        .body(format!("payload-{}", url.len()))
        .unwrap();
    client.request(req).await?.into_body().text().await
}

/// Runs `n` GETs and `m` POSTs concurrently; returns errors by kind.
async fn wave(
    client: &Client,
    url: &str,
    gets: usize,
    posts: usize,
    tag: &str,
) -> HashMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..gets {
        let (c, u) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move { ("GET", get_ok(&c, &u).await) }));
    }
    for i in 0..posts {
        let (c, u) = (client.clone(), url.replace("/delay/0", "/echo"));
        let id = format!("{tag}-{i}");
        tasks.push(tokio::spawn(
            async move { ("POST", post(&c, &u, id).await) },
        ));
    }
    let mut errors = HashMap::new();
    for t in tasks {
        let (method, result) = timeout(LIMIT, t).await.expect("wave bounded").unwrap();
        if let Err(e) = result {
            *errors
                .entry(format!("{method} {:?}", e.kind()))
                .or_default() += 1;
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fin_waves_straddling_the_server_idle_timeout_never_fail() {
    let server = TestServer::start(ServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    })
    .await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = Client::new();
    let url = proxy.url("/delay/0");
    let mut all_errors = HashMap::new();
    for i in 0..40u64 {
        for (k, v) in wave(&client, &url, 8, 0, "fin").await {
            *all_errors.entry(k).or_insert(0) += v;
        }
        // 280-320 ms: straddles the server's 300 ms idle close.
        tokio::time::sleep(Duration::from_millis(280 + (i * 7) % 41)).await;
    }
    assert!(all_errors.is_empty(), "errors: {all_errors:?}");
    assert!(server.stats().requests() >= 320);
    let stats = client.stats();
    assert!(
        stats.reused() > 0,
        "connections still valid must be reused: {stats:?}"
    );
    assert!(
        stats.created() < 320,
        "not one connection per request: {stats:?}"
    );
}

async fn freeze_rounds(
    server: &TestServer,
    proxy: &ChaosProxy,
    client: &Client,
    rounds: usize,
) -> (HashMap<String, usize>, Vec<u64>) {
    let url = proxy.url("/delay/0");
    // Warm up: 16 connections' worth.
    let warm = wave(client, &url, 8, 8, "warm").await;
    assert!(warm.is_empty(), "warm-up errors: {warm:?}");
    let mut errors = HashMap::new();
    let mut new_per_freeze = Vec::new();
    for round in 0..rounds {
        // Idle past validate_after_idle, then the "NAT" forgets every flow.
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.kill_all_silently();
        let before = server.stats().connections_accepted();
        for (k, v) in wave(client, &url, 8, 8, &format!("r{round}")).await {
            *errors.entry(k).or_insert(0) += v;
        }
        new_per_freeze.push(server.stats().connections_accepted() - before);
    }
    (errors, new_per_freeze)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_rst_gets_and_posts_succeed_when_the_server_answers_100_continue() {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(100))
        .build()
        .unwrap();
    let (errors, new_conns) = freeze_rounds(&server, &proxy, &client, 20).await;
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert!(
        server.stats().duplicated_request_ids().is_empty(),
        "POST processed twice"
    );
    for (round, n) in new_conns.iter().enumerate() {
        assert!(
            *n <= 16,
            "round {round}: {n} new connections for 16 concurrent requests"
        );
    }
    assert!(
        client.stats().origins[0].retries > 0,
        "the dead connections were retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_rst_against_a_server_ignoring_expect_never_duplicates_a_post() {
    let (server, proxy) = server_behind_proxy().await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(100))
        .build()
        .unwrap();
    let (errors, _) = freeze_rounds(&server, &proxy, &client, 6).await;
    assert!(
        server.stats().duplicated_request_ids().is_empty(),
        "POST processed twice"
    );
    for (kind, n) in &errors {
        assert!(kind.starts_with("POST"), "GET failed: {kind} x{n}");
        assert_eq!(
            kind, "POST PossiblyProcessed",
            "POST failures must say possibly processed"
        );
    }
}

/// A server behind the chaos proxy, neither asking for `Expect`, and a
/// client that sends none: a request on a dead reused connection is sent,
/// not held back.
async fn server_behind_proxy() -> (TestServer, ChaosProxy) {
    let server = TestServer::start(ServerConfig {
        expect_continue: false,
        ..ServerConfig::default()
    })
    .await;
    let proxy = ChaosProxy::start(server.addr()).await;
    (server, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_possibly_processed_error_says_so() {
    let (server, proxy) = server_behind_proxy().await;
    // No validation, no Expect: a POST on a dead reused connection.
    let client = Client::builder().expect_continue(false).build().unwrap();
    post(&client, &proxy.url("/echo"), "a".into())
        .await
        .unwrap();
    proxy.kill_all_silently();
    // (A pre-signed URL's signature: the message shows the URI without it.)
    let signed = proxy.url("/echo?X-Amz-Signature=s3cret");
    let err = match post(&client, &signed, "b".into()).await {
        Ok(body) => panic!(
            "the POST on a dead connection succeeded ({body}):\n{}",
            client.stats()
        ),
        Err(err) => err,
    };
    assert_eq!(err.kind(), Kind::PossiblyProcessed, "{err}");
    assert!(err.is_possibly_processed());
    // It failed on a pooled connection, and says so.
    assert!(err.is_reused_connection(), "{err:?}");
    assert!(
        err.to_string().contains("may or may not have processed"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("s3cret") && err.to_string().contains("X-Amz-Signature=REDACTED"),
        "{err}"
    );
    // With an Idempotency-Key the same failure is retried and succeeds.
    proxy.kill_all_silently();
    let req = http::Request::post(proxy.url("/echo"))
        .header("idempotency-key", "k1")
        .header("x-request-id", "c")
        .body("x")
        .unwrap();
    client
        .request(req)
        .await
        .unwrap()
        .into_body()
        .bytes()
        .await
        .unwrap();
    // And with its older spelling, which Go reads too.
    proxy.kill_all_silently();
    let req = http::Request::post(proxy.url("/echo"))
        .header("x-idempotency-key", "k2")
        .header("x-request-id", "x")
        .body("x")
        .unwrap();
    client
        .request(req)
        .await
        .expect("a POST with an X-Idempotency-Key is retried")
        .into_body()
        .bytes()
        .await
        .unwrap();
    // And so is a plain POST once the user opts in: the send loop must
    // have kept its copy for it.
    let opted_in = Client::builder()
        .expect_continue(false)
        .retry_non_idempotent(true)
        .build()
        .unwrap();
    post(&opted_in, &proxy.url("/echo"), "d".into())
        .await
        .unwrap();
    proxy.kill_all_silently();
    let body = post(&opted_in, &proxy.url("/echo"), "e".into())
        .await
        .expect("an opted-in POST is retried after a stale-connection failure");
    assert!(body.starts_with("payload-"), "{body}");
    assert_eq!(server.stats().request_id_counts().get("e"), Some(&1));
}

/// A streamed body made again for each attempt (`RequestBody::replayable`)
/// is retried as a body in memory is: a PUT on a pooled connection that
/// died under it goes again, whole, once, and the maker runs once per
/// attempt (the copy kept for a retry is made only when it is used). A
/// plain streamed body fails there, possibly processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayable_streamed_body_is_retried_on_a_dead_pooled_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (server, proxy) = server_behind_proxy().await;
    let client = Client::builder().expect_continue(false).build().unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let put = |id: &'static str| {
        let made = made.clone();
        http::Request::put(proxy.url("/echo"))
            .header("x-request-id", id)
            .body(freshpool::RequestBody::replayable(move || {
                made.fetch_add(1, Ordering::SeqCst);
                common::streamed_hello()
            }))
            .unwrap()
    };
    let first = client.request(put("a")).await.unwrap();
    assert_eq!(first.into_body().text().await.unwrap(), "hello");
    assert_eq!(
        made.load(Ordering::SeqCst),
        1,
        "no copy made for a retry not needed"
    );
    proxy.kill_all_silently();
    let body = client
        .request(put("b"))
        .await
        .expect("a replayable PUT is retried on a new connection")
        .into_body()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello", "the retry sent the whole body");
    assert_eq!(made.load(Ordering::SeqCst), 3, "made for each attempt");
    assert_eq!(server.stats().request_id_counts().get("b"), Some(&1));
    // The same body, streamed once: not retried.
    proxy.kill_all_silently();
    let plain = http::Request::put(proxy.url("/echo"))
        .header("x-request-id", "c")
        .body(common::streamed_hello())
        .unwrap();
    let err = client.request(plain).await.unwrap_err();
    assert!(err.is_possibly_processed(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_fails_with_response_header_timeout_and_the_pool_recovers() {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .response_header_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    get_ok(&client, &proxy.url("/")).await.unwrap();
    proxy.set_blackhole(true);
    let started = std::time::Instant::now();
    let err = get_ok(&client, &proxy.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::ResponseHeaderTimeout, "{err}");
    assert!(
        err.is_reused_connection(),
        "on the pooled connection: {err:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    proxy.set_blackhole(false);
    assert_eq!(get_ok(&client, &proxy.url("/")).await.unwrap(), "ok");
    let stats = client.stats();
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Error),
        1,
        "the blackholed connection was discarded"
    );
    assert_eq!(stats.created(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_and_garbage_are_protocol_errors_and_never_reused() {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = Client::new();
    get_ok(&client, &proxy.url("/")).await.unwrap();
    proxy.truncate_next_response(120);
    let resp = client.get(&proxy.url("/bytes/5000")).await;
    let err = match resp {
        Ok(r) => {
            let err = r.into_body().bytes().await.unwrap_err();
            let origin = proxy.addr().to_string();
            assert!(
                err.to_string().contains(&origin),
                "a body error names the origin: {err}"
            );
            err
        }
        Err(e) => e,
    };
    assert_eq!(err.kind(), Kind::Protocol, "{err}");
    proxy.garbage_next_response(b"garbage\r\n\r\n".to_vec());
    // A fresh connection (the truncated one is gone); garbage is not retried
    // blindly as a stale connection: it is the server's answer.
    let err = get_ok(&client, &proxy.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Protocol, "{err}");
    assert_eq!(get_ok(&client, &proxy.url("/")).await.unwrap(), "ok");
    let accepted = proxy.stats().connections_accepted;
    assert!(
        accepted >= 3,
        "each broken connection was replaced: {accepted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_closed_by_peer_is_detected_before_reuse() {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(50))
        .build()
        .unwrap();
    get_ok(&client, &proxy.url("/")).await.unwrap();
    proxy.set_idle_close(Some(Duration::from_millis(100)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.set_idle_close(None);
    assert_eq!(get_ok(&client, &proxy.url("/")).await.unwrap(), "ok");
    let stats = client.stats();
    assert_eq!(
        stats.origins[0].retries, 0,
        "no request was sent on the dead connection"
    );
    assert_eq!(stats.created(), 2);
}

/// A connection leased across a freeze (its response held, read after the
/// resume) is as suspect as one idle across it: it came back into the pool
/// looking fresh and carried the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_leased_across_a_freeze_is_not_pooled() {
    let server = TestServer::http1().await;
    let client = Client::new();
    // Taken from the pool (the checkout's clock differs from a dial's).
    get_ok(&client, &server.url("/")).await.unwrap();
    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    client.on_resume();
    held.into_body().bytes().await.unwrap();
    get_ok(&client, &server.url("/")).await.unwrap();
    assert_replaced_once(&client, freshpool::CloseReason::FreezeEviction);
}

/// A connection on its way to a queued request when a freeze is detected
/// (handed over, the request not yet woken) is as suspect as an idle one:
/// the detection's sweep cannot see it, and the request used it.
#[tokio::test]
async fn a_connection_handed_over_across_a_freeze_is_not_used() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    let (held, queued) = held_and_queued(&client, &server).await;
    // It queues; then the connection is handed over on return, and the
    // queued request has not run since.
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.into_body().bytes().await.unwrap();
    client.on_resume();
    assert_eq!(queued.await.unwrap().unwrap(), "ok");
    assert_replaced_once(&client, freshpool::CloseReason::FreezeEviction);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_resume_drops_idle_connections() {
    let server = TestServer::http1().await;
    let client = Client::new();
    get_ok(&client, &server.url("/")).await.unwrap();
    client.on_resume();
    get_ok(&client, &server.url("/")).await.unwrap();
    // Connections returned after the resume are not suspects: the pool
    // stamps returns with a coarse clock that may read the very instant of
    // the resume, which must not count as "idle across the freeze".
    for _ in 0..3 {
        get_ok(&client, &server.url("/")).await.unwrap();
    }
    let stats = client.stats();
    assert_eq!(stats.created(), 2);
    assert_eq!(stats.reused(), 3);
    assert_eq!(stats.closed_for(freshpool::CloseReason::FreezeEviction), 1);
}

/// A GET sent on a reused connection that turns out dead (the peer resets
/// it once the request is written) is retried on a new connection exactly
/// as it was asked for: same path and query, same `Host`. Once for a
/// request without headers or body (whose retry copy is rebuilt from its
/// method, URI and version) and once for one with a header (copied up
/// front).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_get_reaches_the_server_unchanged() {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        // Long: the dead connection must be reused, not caught by a peek.
        .validate_after_idle(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = proxy.url("/host?q=1");
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/host?q=1")
        .to_owned();
    // Both without a body; the second with a header.
    let request = |headers: bool| {
        let mut request = http::Request::get(&url);
        if headers {
            request = request.header("x-trace", "t1");
        }
        request.body(freshpool::RequestBody::empty()).unwrap()
    };
    let first = client.get(&url).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.into_body().text().await.unwrap(), host);
    for (retries, headers) in [(1, false), (2, true)] {
        // The "NAT" forgets the flow; the pool's connection looks fine.
        assert_eq!(proxy.kill_all_silently(), 1);
        let response = timeout(LIMIT, client.request(request(headers)))
            .await
            .expect("bounded")
            .unwrap();
        assert_eq!(response.status(), 200, "headers: {headers}");
        assert_eq!(response.into_body().text().await.unwrap(), host);
        let stats = client.stats();
        assert_eq!(
            stats.origins[0].retries, retries,
            "headers: {headers}: the request went through the retry"
        );
        // Each request is counted once: served by a connection made for
        // it (`created`) or by a pooled one (`reused`), not by both for a
        // failed try and its retry.
        assert_eq!(
            stats.created() + stats.reused(),
            1 + retries,
            "headers: {headers}:\n{stats}"
        );
    }
}

/// A connection the check before reuse finds dead is closed once and
/// counted once, as `StaleDetected` (it was also counted as `Error`, so the
/// reasons added up to more closes than there were). The client runs on a
/// current-thread runtime that is blocked while the peer closes, so the
/// connection's driver cannot notice the FIN first: the check does.
#[test]
fn a_connection_found_dead_before_reuse_is_counted_once() {
    peer_closes_while_the_client_is_blocked(Duration::from_millis(50));
}

/// A pooled connection whose close crosses its checkout (no check before
/// reuse: it idled less than `validate_after_idle`): the GET is written,
/// hyper then reads the FIN, and the GET goes again on a new connection.
/// It is closed as `StaleDetected`, not as `Error`: the stats read an error
/// where nothing failed.
#[test]
fn a_close_that_crosses_the_checkout_counts_as_stale_not_as_error() {
    peer_closes_while_the_client_is_blocked(Duration::from_secs(60));
}

/// One GET through a chaos proxy, then the proxy closes the idle
/// connection while the client's current-thread runtime is blocked (its
/// driver cannot see the FIN), then another GET: it succeeds on a second
/// connection, and the first closed once, as `StaleDetected`.
fn peer_closes_while_the_client_is_blocked(validate_after_idle: Duration) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (server, proxy) = server_rt.block_on(async {
        let server = TestServer::http1().await;
        let proxy = ChaosProxy::start(server.addr()).await;
        (server, proxy)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::builder()
        .validate_after_idle(validate_after_idle)
        .build()
        .unwrap();
    let url = proxy.url("/");
    rt.block_on(get_ok(&client, &url)).unwrap();
    proxy.set_idle_close(Some(Duration::from_millis(100)));
    std::thread::sleep(Duration::from_millis(400));
    proxy.set_idle_close(None);
    assert_eq!(rt.block_on(get_ok(&client, &url)).unwrap(), "ok");
    assert_replaced_once(&client, freshpool::CloseReason::StaleDetected);
    let stats = client.stats();
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Error),
        0,
        "{stats}"
    );
    drop(server);
}

/// A server that keeps no connections (`Connection: close` on every
/// response, or `Keep-Alive: timeout=0`) is not failing: its closes count
/// as its choice, not as errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_will_not_keep_are_not_counted_as_errors() {
    let closing = TestServer::start(ServerConfig {
        close_after_requests: Some(1),
        ..ServerConfig::default()
    })
    .await;
    let no_keep_alive = TestServer::start(ServerConfig {
        keep_alive_hint: Some(0),
        ..ServerConfig::default()
    })
    .await;
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(get_ok(&client, &closing.url("/")).await.unwrap(), "ok");
        assert_eq!(
            get_ok(&client, &no_keep_alive.url("/")).await.unwrap(),
            "ok"
        );
    }
    let stats = client.stats();
    assert_eq!(stats.created(), 6, "no connection was reused: {stats}");
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::ServerClose),
        3,
        "{stats}"
    );
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::KeepAliveHint),
        3,
        "{stats}"
    );
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Error),
        0,
        "{stats}"
    );
}

/// The server's `Keep-Alive: timeout` runs from its response, not from
/// when the caller finishes reading it: a response held (or a buffered
/// body read slowly) for most of the hint came back with the whole hint
/// ahead of it, and carried the next request into the server's close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_hint_counts_from_the_response_not_the_read() {
    let server = TestServer::start(ServerConfig {
        keep_alive_hint: Some(1),
        ..ServerConfig::default()
    })
    .await;
    let client = Client::new();
    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    // 1 s hint less the 500 ms margin: past it by the time it is read.
    tokio::time::sleep(Duration::from_millis(800)).await;
    held.into_body().bytes().await.unwrap();
    get_ok(&client, &server.url("/")).await.unwrap();
    assert_replaced_once(&client, freshpool::CloseReason::KeepAliveHint);
}

/// A connection returned past its `max_lifetime` to a queued request is
/// closed, not handed over: the return judged expiry by the coarse clock,
/// which lags by up to a heartbeat, and the queued request got the
/// connection without a check of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_lifetime_does_not_go_to_a_waiter() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .idle_timeout(Some(Duration::from_millis(300)))
        .max_lifetime(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let (held, waiter) = held_and_queued(&client, &server).await;
    // Past the lifetime (counted from the dial) when it is returned.
    tokio::time::sleep(Duration::from_millis(350)).await;
    held.into_body().bytes().await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), "ok");
    assert_replaced_once(&client, freshpool::CloseReason::Lifetime);
}

/// A body still coming after the head (here for 2.5 s, past the 2 s
/// hint) keeps its connection: the server's Keep-Alive timer starts when
/// it has sent the body, which the connection's return marks. Counted
/// from the head, every download longer than the hint lost its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_hint_waits_for_a_long_body_to_end() {
    let server = TestServer::start(ServerConfig {
        keep_alive_hint: Some(2),
        ..ServerConfig::default()
    })
    .await;
    let client = Client::new();
    let body = client
        .get(&server.url("/stall/2500"))
        .await
        .unwrap()
        .into_body()
        .bytes()
        .await
        .unwrap();
    assert!(!body.is_empty());
    get_ok(&client, &server.url("/")).await.unwrap();
    let stats = client.stats();
    assert_eq!(stats.created(), 1, "{stats}");
    assert_eq!(stats.reused(), 1, "{stats}");
}

/// A replayable body's retry is held to the caller's `Content-Length` as
/// its first attempt is: a maker that yields a longer body the second time
/// fails the retry as a `Body` error. (The check ran once, before the first
/// attempt: hyper cut the retry's body to the header's length, unseen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayable_bodys_retry_is_held_to_the_content_length() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (_server, proxy) = server_behind_proxy().await;
    let client = Client::builder().expect_continue(false).build().unwrap();
    // A connection to reuse.
    common::fetch(&client, &proxy.url("/")).await;
    proxy.kill_all_silently();
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let request = http::Request::put(proxy.url("/echo"))
        .header(http::header::CONTENT_LENGTH, "5")
        .body(freshpool::RequestBody::replayable(move || {
            let chunks: &[&'static [u8]] = if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                &[b"he", b"llo"]
            } else {
                &[b"he", b"llo!"]
            };
            freshpool::RequestBody::wrap(common::Chunks(chunks.iter().copied().collect()))
        }))
        .unwrap();
    let err = client.request(request).await.unwrap_err();
    assert_eq!(made.load(Ordering::SeqCst), 2, "retried: {err}");
    assert_eq!(err.kind(), Kind::Body, "{err}");
}
