//! Helpers of the `Expect: 100-continue` tests (`expect_continue.rs`,
//! `expect_learning.rs`).
#![allow(dead_code)]

use std::time::Duration;

use freshpool::Client;

/// The text of `response`; a failure panics with the pool's stats.
pub async fn text(
    client: &Client,
    response: impl std::future::Future<
        Output = Result<http::Response<freshpool::Body>, freshpool::Error>,
    >,
) -> String {
    match response.await {
        Ok(response) => response.into_body().text().await.expect("body"),
        Err(e) => panic!("{e} ({:?})\n{}", e.kind(), client.stats()),
    }
}

/// A raw TCP server on loopback (hyper's server would not misbehave in
/// the ways these tests need): `serve` runs for each connection.
pub async fn raw_server<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    addr
}

/// A client that gates a body on a connection idle 10 ms or more.
pub fn gating_client() -> Client {
    Client::builder()
        .validate_after_idle(Duration::from_millis(10))
        .build()
        .unwrap()
}

/// Leaves `client` a connection to `url` that idled past 10 ms, so the
/// next body sent there is gated.
pub async fn rest_a_connection(client: &Client, url: &str) {
    assert_eq!(text(client, client.get(url)).await, "ok");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
