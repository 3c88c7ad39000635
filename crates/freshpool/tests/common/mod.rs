//! Helpers shared by the integration tests (each test file that needs them
//! declares `mod common;`).

use freshpool::Client;

pub mod logs;

/// GETs `url` and reads the body to the end (returning the connection).
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn fetch(client: &Client, url: &str) -> bytes::Bytes {
    read(client.get(url)).await
}

#[allow(dead_code)]
async fn read(
    response: impl std::future::Future<
        Output = Result<http::Response<freshpool::Body>, freshpool::Error>,
    >,
) -> bytes::Bytes {
    response.await.unwrap().into_body().bytes().await.unwrap()
}

/// Reads the body of `response` (a request's future) as text.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn text_of(
    response: impl std::future::Future<
        Output = Result<http::Response<freshpool::Body>, freshpool::Error>,
    >,
) -> String {
    response.await.unwrap().into_body().text().await.unwrap()
}

/// Sends `request` and reads the body to the end.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn send<B: Into<freshpool::RequestBody>>(
    client: &Client,
    request: http::Request<B>,
) -> bytes::Bytes {
    read(client.request(request)).await
}

/// An HTTP/2-only (h2c) test server and a client that speaks only HTTP/2.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn http2_server_and_client(
    client: freshpool::ClientBuilder,
) -> (freshpool_testkit::TestServer, Client) {
    let server = freshpool_testkit::TestServer::start(freshpool_testkit::ServerConfig {
        protocol: freshpool_testkit::Protocol::Http2,
        ..freshpool_testkit::ServerConfig::default()
    })
    .await;
    let client = client
        .http_version(freshpool::HttpVersion::Http2Only)
        .build()
        .unwrap();
    (server, client)
}

/// A loopback port nobody listens on.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub fn closed_port() -> u16 {
    // Bound and never listening, for the rest of the test process: a
    // connect is refused, and no test running beside it can take the port
    // (one bound and let go could be).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    std::mem::forget(socket);
    port
}

/// GETs `url` and reads the body as text.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn text(client: &Client, url: &str) -> String {
    client
        .get(url)
        .await
        .unwrap()
        .into_body()
        .text()
        .await
        .unwrap()
}

/// Resolves every name to `addr`: at once the first time, then after
/// `later` (a dial that takes long).
#[allow(dead_code)]
pub struct SlowAfterFirst {
    pub addr: std::net::SocketAddr,
    pub calls: std::sync::atomic::AtomicUsize,
    pub later: std::time::Duration,
}

impl freshpool::Resolve for SlowAfterFirst {
    fn resolve(&self, _host: &str, _port: u16) -> freshpool::ResolveFuture {
        let first = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let wait = if first {
            std::time::Duration::ZERO
        } else {
            self.later
        };
        let addr = self.addr;
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            Ok(vec![addr])
        })
    }
}
