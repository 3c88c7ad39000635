//! One request's own overall timeout (`freshpool::Timeout` in its
//! extensions) in place of the client's `timeout` setting: for the head,
//! the body and the wait for the pool, against real hyper servers on
//! 127.0.0.1.

use std::time::{Duration, Instant};

use freshpool::{Client, Kind, Timeout};
use freshpool_testkit::TestServer;

mod common;

fn get_with(url: &str, timeout: Timeout) -> http::Request<()> {
    let mut request = http::Request::get(url).body(()).unwrap();
    request.extensions_mut().insert(timeout);
    request
}

/// A short `Timeout` on one request ends it, and names its own limit,
/// while the client's long one still applies to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_s_own_timeout_replaces_the_client_s() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    let started = Instant::now();
    let request = get_with(
        &server.url("/delay/10000"),
        Timeout::after(Duration::from_millis(300)),
    );
    let err = client.request(request).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    assert!(
        err.to_string().contains("timed out after 300ms (timeout)"),
        "{err}"
    );
    // (The server had it: it may have been acted on.)
    assert!(err.is_possibly_processed(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the 30 s applied"
    );
    // Without one, the client's setting: a 500 ms answer comes.
    let response = client.get(&server.url("/delay/500")).await.unwrap();
    assert!(response.status().is_success());
}

/// `Timeout::none()` lifts the client's timeout for one request (a long
/// download beside quick calls), for its head and its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_none_lifts_the_client_s_timeout_for_one_request() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let slow_head = client
        .request(get_with(&server.url("/delay/1000"), Timeout::none()))
        .await
        .expect("no timeout for this request");
    assert!(slow_head.status().is_success());
    slow_head.into_body().bytes().await.unwrap();
    let slow_body = client
        .request(get_with(&server.url("/stall/1000"), Timeout::none()))
        .await
        .unwrap();
    assert_eq!(slow_body.into_body().text().await.unwrap(), "partial");
    // The client's timeout still holds for the others.
    let err = client.get(&server.url("/delay/2000")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    assert!(
        err.to_string().contains("timed out after 300ms (timeout)"),
        "{err}"
    );
}

/// The request's own timeout bounds its response body, with no timeout
/// set on the client: a server that stalls mid-body fails the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_s_own_timeout_bounds_its_body() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let response = client
        .request(get_with(
            &server.url("/stall/30000"),
            Timeout::after(Duration::from_secs(1)),
        ))
        .await
        .unwrap();
    let (err, took) = common::body_failure(response).await;
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    let text = err.to_string();
    assert!(text.contains("timed out after 1.0s (timeout)"), "{text}");
    assert!(text.contains("response body was read"), "{text}");
    assert!(took < Duration::from_secs(5));
}

/// Ended while it waits for the pool, the request is told why the pool
/// was full, with its own limit, as with the client's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_s_own_timeout_in_the_queue_says_why_the_pool_was_full() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let held = client.get(&server.url("/stream/100000")).await.unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(get_with(
            &server.url("/"),
            Timeout::after(Duration::from_millis(300)),
        )),
    )
    .await
    .expect("the wait ends by the request's own timeout, not pool_timeout")
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    let text = err.to_string();
    assert!(text.contains("timed out after 300ms (timeout)"), "{text}");
    assert!(text.contains("limit 1, in use 1"), "{text}");
    assert!(!err.is_possibly_processed(), "{text}");
    assert_eq!(client.stats().origins[0].pool_timeouts, 1);
    drop(held);
}

/// A limit no timer can keep is a `Config` error, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_or_endless_request_timeout_is_refused_before_sending() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let err = client
        .request(get_with(&server.url("/"), Timeout::after(Duration::ZERO)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config, "{err}");
    assert!(err.to_string().contains("Timeout of zero"), "{err}");
    assert!(
        err.to_string().contains("127.0.0.1"),
        "names the host: {err}"
    );
    let err = client
        .request(get_with(&server.url("/"), Timeout::after(Duration::MAX)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config, "{err}");
    assert!(err.to_string().contains("longer than a year"), "{err}");
    assert_eq!(server.stats().connections_accepted(), 0, "nothing was sent");
    assert_eq!(client.stats().open_connections, 0);
}
