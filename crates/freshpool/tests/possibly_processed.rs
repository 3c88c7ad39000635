//! `Error::is_possibly_processed`: true for every failure after the request
//! may have been written, false where it provably never reached the server
//! (against raw TCP servers on 127.0.0.1). It was true only for a request
//! freshpool declined to retry on a reused connection, so a POST that died
//! after being written on a new connection read as "not placed", and a
//! caller following the documented example sent the order twice.

use std::time::Duration;

use freshpool::{Client, Kind};
use tokio::io::AsyncReadExt;

/// A server that reads each request's head and closes the connection
/// without answering (it crashed while handling it, say). Returns its
/// address and a count of heads read.
async fn reads_then_hangs_up() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return; // drops the socket: no answer
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_died_after_it_was_written_on_a_new_connection_may_have_been_processed() {
    let (addr, heads) = reads_then_hangs_up().await;
    let client = Client::new();
    let err = client
        .post(&format!("http://{addr}/orders"), "{}")
        .await
        .unwrap_err();
    assert_eq!(
        heads.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "sent once"
    );
    assert!(!err.is_reused_connection(), "{err}");
    assert!(err.is_possibly_processed(), "{err:?}");
    // Its kind still says what happened to the connection.
    assert_ne!(err.kind(), Kind::PossiblyProcessed, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_timeout_may_have_been_processed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and reads, never answers.
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let client = Client::builder()
        .response_header_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let err = client
        .post(&format!("http://{addr}/orders"), "{}")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::ResponseHeaderTimeout, "{err}");
    assert!(err.is_possibly_processed(), "{err:?}");
    server.abort();
}

/// Where the request provably never reached the server, it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_left_was_not_processed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder().proxy_from_env(false).build().unwrap();
    let err = client
        .post(&format!("http://127.0.0.1:{port}/orders"), "{}")
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(!err.is_possibly_processed(), "{err:?}");
}
