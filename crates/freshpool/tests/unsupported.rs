//! Requests the client does not send are refused before anything is sent,
//! and requests at the edges of what it sends are sent right (real
//! servers on 127.0.0.1).

use std::time::Duration;

use freshpool::{Client, Kind};
use freshpool_testkit::TestServer;
use http::{Method, Request, Version};

mod common;

/// A request version hyper cannot write (HTTP/3, HTTP/0.9: a gateway
/// passing on what it received) is refused, unsent, and the pooled
/// connection serves on. (hyper's HTTP/1 encoder panicked on it in the
/// connection's task: the request failed as `Io`, the connection died,
/// and a GET on a reused connection was retried into a second panic.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_version_the_client_does_not_send_is_refused_unsent() {
    let server = TestServer::http1().await;
    let client = Client::new();
    assert_eq!(common::text(&client, &server.url("/")).await, "ok");
    for version in [Version::HTTP_3, Version::HTTP_09] {
        let mut request = Request::get(server.url("/")).body(()).unwrap();
        *request.version_mut() = version;
        let err = client.request(request).await.unwrap_err();
        assert_eq!(err.kind(), Kind::Unsupported, "{err}");
        assert!(err.to_string().contains(&format!("{version:?}")), "{err}");
        assert!(!err.is_possibly_processed(), "{err}");
    }
    // Nothing reached the server, and its one connection serves on.
    assert_eq!(common::text(&client, &server.url("/")).await, "ok");
    assert_eq!(server.stats().requests(), 2);
    assert_eq!(server.stats().connections_accepted(), 1);
    // HTTP/1.0 is sent.
    let mut old = Request::get(server.url("/")).body(()).unwrap();
    *old.version_mut() = Version::HTTP_10;
    assert_eq!(common::send(&client, old).await, "ok");
}

/// `CONNECT` is refused, unsent: it went out as `CONNECT / HTTP/1.1` (the
/// origin-form rewrite of every request), and a tunnel is no connection
/// to pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_unsent() {
    let server = TestServer::http1().await;
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(server.url("/"))
        .body(())
        .unwrap();
    let err = Client::new().request(request).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unsupported, "{err}");
    assert!(err.to_string().contains("ClientBuilder::proxy"), "{err}");
    assert_eq!(server.stats().connections_accepted(), 0);
}

/// A caller's `Transfer-Encoding` frames the body, and a `Content-Length`
/// beside it is not sent, over HTTP/2 as over HTTP/1. (hyper drops the
/// Content-Length over HTTP/1, but over HTTP/2 it dropped the
/// Transfer-Encoding and kept the Content-Length: `10` with a 5-byte body
/// made the server reset the stream, and the error read as the server's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_beside_content_length_frames_the_body_on_both_protocols() {
    let http1 = (TestServer::http1().await, Client::new());
    let http2 = common::http2_server_and_client(Client::builder()).await;
    for (server, client) in [&http1, &http2] {
        let request = Request::post(server.url("/echo"))
            .header("transfer-encoding", "chunked")
            .header("content-length", "10")
            .body("hello")
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), common::send(client, request))
            .await
            .expect("answered");
        assert_eq!(answer, "hello");
    }
}

/// "Unlimited" limits (`usize::MAX`) are accepted, and a resume with idle
/// connections (which counts the connections it drains against the
/// limits) does not overflow: it panicked in debug builds, and in release
/// wrapped to a tiny limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_limits_survive_a_resume() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(usize::MAX)
        .max_connections_total(usize::MAX)
        .build()
        .unwrap();
    assert_eq!(common::text(&client, &server.url("/")).await, "ok");
    client.on_resume();
    assert_eq!(common::text(&client, &server.url("/")).await, "ok");
}

/// A caller's HTTP/1.0 request: a server answers it without keep-alive
/// and closes, and its connection is not reused, nor is any request sent
/// twice for it, even back to back (hyper marks such a connection closed
/// as the response ends; a review suspected the pool would take it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_10_answer_without_keep_alive_is_not_pooled() {
    let server = TestServer::http1().await;
    let client = Client::new();
    for _ in 0..3 {
        let mut old = Request::get(server.url("/")).body(()).unwrap();
        *old.version_mut() = Version::HTTP_10;
        assert_eq!(common::send(&client, old).await, "ok");
    }
    let stats = client.stats();
    let origin = &stats.origins[0];
    assert_eq!(origin.retries, 0, "{stats}");
    assert_eq!(origin.reused, 0, "{stats}");
    assert_eq!(server.stats().connections_accepted(), 3);
}
