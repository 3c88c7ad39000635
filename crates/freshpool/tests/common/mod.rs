//! Helpers shared by the integration tests (each test file that needs them
//! declares `mod common;`).

use freshpool::Client;

/// GETs `url` and reads the body to the end (returning the connection).
pub async fn fetch(client: &Client, url: &str) -> bytes::Bytes {
    client
        .get(url)
        .await
        .unwrap()
        .into_body()
        .bytes()
        .await
        .unwrap()
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
