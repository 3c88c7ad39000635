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
