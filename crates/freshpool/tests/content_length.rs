//! A caller's `Content-Length` header that disagrees with its body: refused
//! before anything is sent when the body's length is known, and held to as
//! a streamed body goes (against hyper HTTP/1 and HTTP/2 servers on
//! 127.0.0.1). Before, over HTTP/1 a longer header hung the request and a
//! shorter one sent a truncated body that the server answered; over HTTP/2
//! the server's connection error read as the server's fault.

mod common;
use common::streamed_hello;

use std::time::Duration;

use freshpool::{Client, Kind, RequestBody};
use freshpool_testkit::TestServer;

/// POSTs `body` to `/echo` with `Content-Length: length`; the echoed text,
/// or the error. Bounded: a hang fails the test.
async fn post_with_length(
    client: &Client,
    server: &TestServer,
    length: &str,
    body: RequestBody,
) -> Result<String, freshpool::Error> {
    let request = http::Request::post(server.url("/echo"))
        .header(http::header::CONTENT_LENGTH, length)
        .body(body)
        .unwrap();
    let exchange = async {
        let response = client.request(request).await?;
        response.into_body().text().await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("Content-Length {length}: the request hung"))
}

async fn known_lengths_are_checked(server: TestServer, client: Client) {
    for (length, why) in [
        (
            "10",
            "its Content-Length header says 10 bytes but its body has 5",
        ),
        (
            "3",
            "its Content-Length header says 3 bytes but its body has 5",
        ),
        (
            "abc",
            "its Content-Length header \"abc\" is not a byte count",
        ),
    ] {
        let err = post_with_length(&client, &server, length, "hello".into())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::Body, "{length}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("was not sent") && message.contains(why),
            "{length}: {message}"
        );
    }
    assert_eq!(server.stats().connections_accepted(), 0, "nothing was sent");
    // The right length goes through, on the same client.
    let echoed = post_with_length(&client, &server, "5", "hello".into()).await;
    assert_eq!(echoed.unwrap(), "hello");
}

#[tokio::test]
async fn http1_a_content_length_that_disagrees_with_the_body_is_refused_unsent() {
    let server = TestServer::http1().await;
    known_lengths_are_checked(server, Client::new()).await;
}

#[tokio::test]
async fn http2_a_content_length_that_disagrees_with_the_body_is_refused_unsent() {
    let (server, client) = common::http2_server_and_client(Client::builder()).await;
    known_lengths_are_checked(server, client).await;
}

async fn streams_are_held_to_the_header(server: TestServer, client: Client) {
    // A stream under `Content-Length: 0` cannot be held to it: hyper would
    // not poll it (HTTP/1). Refused unsent.
    let err = post_with_length(&client, &server, "0", streamed_hello())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Body, "{err}");
    assert!(err.to_string().contains("was not sent"), "{err}");
    for (length, why) in [
        (
            "10",
            "ended 5 bytes short of its Content-Length header (10 bytes)",
        ),
        ("3", "2 bytes more than its Content-Length header (3 bytes)"),
        // The length reached at a chunk's end, more to come: over HTTP/1
        // hyper asked for nothing more and sent the first chunk alone.
        ("2", "3 bytes more than its Content-Length header (2 bytes)"),
    ] {
        let err = post_with_length(&client, &server, length, streamed_hello())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::Body, "{length}: {err}");
        assert!(err.to_string().contains(why), "{length}: {err}");
    }
    // Neither body reached the handler whole: the server answered none
    // (`requests` counts an echo once its body was read to the end).
    assert_eq!(server.stats().requests(), 0);
    let echoed = post_with_length(&client, &server, "5", streamed_hello()).await;
    assert_eq!(echoed.unwrap(), "hello");
    assert_eq!(server.stats().requests(), 1);
}

#[tokio::test]
async fn http1_a_streamed_body_is_held_to_the_callers_content_length() {
    let server = TestServer::http1().await;
    streams_are_held_to_the_header(server, Client::new()).await;
}

#[tokio::test]
async fn http2_a_streamed_body_is_held_to_the_callers_content_length() {
    let (server, client) = common::http2_server_and_client(Client::builder()).await;
    streams_are_held_to_the_header(server, client).await;
}

/// Sends `method` to `/echo` with a streamed body of unknown length and no
/// framing header; the echoed text, or the error. Bounded.
async fn streamed_without_length(
    client: &Client,
    server: &TestServer,
    method: http::Method,
    version: http::Version,
) -> Result<String, freshpool::Error> {
    let request = http::Request::builder()
        .method(method)
        .version(version)
        .uri(server.url("/echo"))
        .body(streamed_hello())
        .unwrap();
    let exchange = async {
        let response = client.request(request).await?;
        response.into_body().text().await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the request hung")
}

/// A GET with a streamed body of unknown length: hyper framed it as empty
/// over HTTP/1.1 and never polled it, so the server saw no body and the
/// request "succeeded". Now framed chunked; over HTTP/2 it always went.
#[tokio::test]
async fn a_streamed_get_body_reaches_the_server_on_both_protocols() {
    let server = TestServer::http1().await;
    let echoed = streamed_without_length(
        &Client::new(),
        &server,
        http::Method::GET,
        http::Version::HTTP_11,
    )
    .await;
    assert_eq!(echoed.unwrap(), "hello");
    let (server, client) = common::http2_server_and_client(Client::builder()).await;
    let echoed =
        streamed_without_length(&client, &server, http::Method::GET, http::Version::HTTP_11).await;
    assert_eq!(echoed.unwrap(), "hello");
}

/// HTTP/1.0 has no chunked encoding: a streamed body of unknown length
/// would go as none at all. Refused unsent, naming the fix.
#[tokio::test]
async fn an_http10_request_with_a_body_of_unknown_length_is_refused_unsent() {
    let server = TestServer::http1().await;
    let err = streamed_without_length(
        &Client::new(),
        &server,
        http::Method::POST,
        http::Version::HTTP_10,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), Kind::Body, "{err}");
    assert!(err.to_string().contains("HTTP/1.0"), "{err}");
    assert!(err.to_string().contains("Content-Length"), "{err}");
    assert_eq!(server.stats().requests(), 0, "nothing was sent");
}

/// A request whose version says HTTP/2 (one that came in over HTTP/2,
/// forwarded), with a streamed body of unknown length, to an HTTP/1
/// server: hyper chunks only HTTP/1.1 requests, so its body went as none
/// and the server answered an empty POST. It goes as HTTP/1.1 over HTTP/1
/// now. (A review found it.)
#[tokio::test]
async fn a_request_marked_http2_keeps_its_streamed_body_over_http1() {
    let server = TestServer::http1().await;
    let echoed = streamed_without_length(
        &Client::new(),
        &server,
        http::Method::POST,
        http::Version::HTTP_2,
    )
    .await;
    assert_eq!(echoed.unwrap(), "hello");
}
