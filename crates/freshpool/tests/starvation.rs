//! What a request that waited too long for the pool is told: the limit,
//! what is in use, who waits and who holds the connections, whichever
//! limit on its time ran out.

use std::time::Duration;

use freshpool::{Client, Kind};
use freshpool_testkit::TestServer;

mod common;

/// A request whose own `timeout` (shorter than `pool_timeout`, as most
/// are) runs out while it waits for the pool is told why the pool was
/// full, as a `PoolTimeout` is, and the wait is counted as one. It read
/// only "request to 127.0.0.1:… timed out after 300ms (timeout)", the
/// "a task was canceled" of the field reports, and the wait showed in no
/// figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_in_the_queue_says_why_the_pool_was_full() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let held_line = line!() + 1;
    let held = client.get(&server.url("/stream/100000")).await.unwrap();
    let call_site = format!("starvation.rs:{held_line}:");
    let started = std::time::Instant::now();
    let err = client.get(&server.url("/")).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    let text = err.to_string();
    assert!(text.contains("timed out after 300ms (timeout)"), "{text}");
    assert!(text.contains("limit 1, in use 1"), "{text}");
    assert!(text.contains("waiting 1"), "{text}");
    assert!(text.contains(&call_site), "names the holder: {text}");
    assert!(text.contains("raise timeout"), "{text}");
    // It never left the queue: nothing was sent.
    assert!(!err.is_possibly_processed(), "{text}");
    let stats = client.stats();
    let origin = &stats.origins[0];
    assert_eq!(origin.pool_timeouts, 1, "{stats}");
    // (The first request's wait for its dial is the other one.)
    assert_eq!(origin.pool_wait.count, 2, "{stats}");
    assert_eq!(origin.waiting, 0, "it left the queue: {stats}");
    drop(held);
}

/// A request whose own `timeout` runs out while the connection dialed for
/// it is still being made (here a TLS handshake a silent server never
/// answers) was told the pool was full ("raise max_connections_per_host")
/// and counted as a pool timeout, with a starvation WARN. It is told its
/// connection was being made. (A review found it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_during_its_own_dial_is_no_starvation() {
    // Accepts and never answers: the TLS handshake waits.
    let (port, silent) = common::silent_server().await;
    let client = Client::builder()
        .timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let err = client
        .get(&format!("https://localhost:{port}/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    let text = err.to_string();
    assert!(text.contains("while a connection was being made"), "{text}");
    assert!(!text.contains("max_connections_per_host"), "{text}");
    assert!(!err.is_possibly_processed(), "{text}");
    let stats = client.stats();
    assert_eq!(stats.origins[0].pool_timeouts, 0, "{stats}");
    silent.abort();
}

/// Requests beyond what a new origin's first connection will carry (its
/// protocol, and so its stream count, is not known before it lands) are
/// bounded by `max_pending` while that dial is slow, and the refusal says
/// so: raising the per-host limit would not help, as no other dial starts
/// before the first lands. (Every rider went uncounted: a server that
/// stalled the first handshake gathered any number of requests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_behind_a_slow_first_dial_are_bounded_and_told_why() {
    // Accepts and never answers: the TLS handshake waits.
    let (port, silent) = common::silent_server().await;
    let client = Client::builder().max_pending(2).build().unwrap();
    let url = format!("https://localhost:{port}/");
    let riders = 256 + 2;
    let tasks: Vec<_> = (0..riders)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    freshpool_testkit::eventually("every request queued", || {
        client.stats().origins.first().map(|o| o.waiting) == Some(riders)
    })
    .await;
    let err = client.get(&url).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PoolFull, "{err}");
    let text = err.to_string();
    assert!(text.contains("beyond the 256"), "{text}");
    assert!(
        text.contains("first connection, still being made"),
        "{text}"
    );
    assert!(!text.contains("raise max_connections_per_host"), "{text}");
    for task in tasks {
        task.abort();
    }
    silent.abort();
}

/// With `max_pending(0)` a request that would ride on a new origin's slow
/// first dial is refused, and told it is by `max_pending` 0: it read
/// "0 requests already wait ... beyond the 256 that its first
/// connection will carry", with no request waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pending_behind_a_slow_first_dial_says_max_pending_0() {
    let (port, silent) = common::silent_server().await;
    let client = Client::builder().max_pending(0).build().unwrap();
    let url = format!("https://localhost:{port}/");
    let first = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).await }
    });
    freshpool_testkit::eventually("the first dial started", || {
        client.stats().origins.first().map(|o| o.connecting) == Some(1)
    })
    .await;
    let err = client.get(&url).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PoolFull, "{err}");
    let text = err.to_string();
    assert!(text.contains("no request may wait"), "{text}");
    assert!(text.contains("max_pending 0"), "{text}");
    assert!(!text.contains("beyond the 256"), "{text}");
    first.abort();
    silent.abort();
}

/// A retry that must queue (its first connection failed, and the slot it
/// freed went to a request queued meanwhile) waits under the request's
/// own `timeout` as its first checkout did, and runs out told why the pool
/// was full, counted as a pool timeout. It was told only "request to ...
/// timed out after 3.0s (timeout)", uncounted. The report says how much of
/// the timeout the wait took (the first attempt took the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_queues_runs_out_of_its_timeout_told_why() {
    let server = TestServer::http1().await;
    let proxy = freshpool_testkit::ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .timeout(Some(Duration::from_millis(3000)))
        .build()
        .unwrap();
    common::fetch(&client, &proxy.url("/")).await;
    // The next response is cut off before its head: the request, sent on
    // the reused connection, goes again (a GET).
    proxy.truncate_next_response(0);
    let retried = {
        let (client, url) = (client.clone(), proxy.url("/delay/1500"));
        tokio::spawn(async move { client.get(&url).await })
    };
    freshpool_testkit::eventually("the first attempt leased", || {
        client.stats().origins[0].active == 1
    })
    .await;
    // Queued meanwhile: it gets the slot the failed attempt frees, and
    // holds its connection (its body unread).
    let held = {
        let (client, url) = (client.clone(), proxy.url("/stream/100000"));
        tokio::spawn(async move { client.get(&url).await })
    };
    // (Queued while the first attempt waits 1.5 s for its answer.)
    freshpool_testkit::eventually("the other request queued", || {
        client.stats().origins[0].waiting == 1
    })
    .await;
    let err = retried.await.unwrap().unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), Kind::Timeout, "{text}");
    assert!(text.contains("timed out after 3.0s (timeout), "), "{text}");
    assert!(text.contains("of it waiting for a connection"), "{text}");
    assert!(text.contains("limit 1, in use 1"), "{text}");
    let stats = client.stats();
    assert_eq!(stats.origins[0].retries, 1, "{stats}");
    assert_eq!(stats.origins[0].pool_timeouts, 1, "{stats}");
    drop(held.await.unwrap().unwrap());
}

/// A retry's own dial (a GET failed on a reused connection, and goes again
/// on a new one) that the request's `timeout` cuts off says so, and why
/// there was a dial: it read "timed out after 1.5s (timeout)" alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_own_dial_runs_out_of_its_timeout_told_why() {
    let server = TestServer::http1().await;
    let proxy = freshpool_testkit::ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .timeout(Some(Duration::from_millis(1500)))
        .proxy_from_env(false)
        .resolver(common::SlowAfterFirst {
            addr: proxy.addr(),
            later: Duration::from_secs(20),
            calls: Default::default(),
        })
        .build()
        .unwrap();
    let url = format!("http://origin.test:{}/", proxy.addr().port());
    common::fetch(&client, &url).await;
    // The next response is cut off before its head: the GET, sent on the
    // reused connection, goes again on a connection of its own, whose
    // lookup takes 20 s.
    proxy.truncate_next_response(0);
    let err = tokio::time::timeout(Duration::from_secs(10), client.get(&url))
        .await
        .expect("the request's timeout ends it")
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), Kind::Timeout, "{text}");
    assert!(
        text.contains(
            "timed out after 1.5s (timeout) while a new connection was being made for its retry"
        ),
        "{text}"
    );
    assert!(text.contains("origin.test"), "{text}");
    assert_eq!(client.stats().origins[0].retries, 1, "{}", client.stats());
}
