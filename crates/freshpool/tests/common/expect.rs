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

/// Reads HTTP/1 requests off a raw socket, for servers that answer by
/// hand: each head (lower-cased), then its `Content-Length` body.
#[derive(Default)]
pub struct RawRequests {
    seen: Vec<u8>,
}

impl RawRequests {
    /// The next request head; `None` once the connection ends.
    pub async fn head(&mut self, socket: &mut tokio::net::TcpStream) -> Option<String> {
        loop {
            if let Some(end) = self.seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.seen[..end]).to_ascii_lowercase();
                self.seen.drain(..end + 4);
                return Some(head);
            }
            self.fill(socket).await?;
        }
    }

    /// Reads (and drops) the body `head` announces; `None` if the
    /// connection ends first.
    pub async fn body(&mut self, socket: &mut tokio::net::TcpStream, head: &str) -> Option<()> {
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while self.seen.len() < length {
            self.fill(socket).await?;
        }
        self.seen.drain(..length);
        Some(())
    }

    async fn fill(&mut self, socket: &mut tokio::net::TcpStream) -> Option<()> {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.seen.extend_from_slice(&buf[..n]);
                Some(())
            }
        }
    }
}
