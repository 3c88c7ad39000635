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
    let client = Client::builder().proxy_from_env(false).build().unwrap();
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
        .proxy_from_env(false)
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

/// A POST with an `Idempotency-Key` written on a pooled connection that
/// then died goes again on a new connection; when that dial is refused,
/// the error is the dial's, but the first attempt may have been acted on.
/// (The mark was lost: `is_possibly_processed()` read false, "never
/// reached the server".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_could_not_dial_still_says_the_first_attempt_may_have_been_processed() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One connection only (the listener closes after it: the retry's dial
    // is refused). It answers a GET, then reads the POST's head and hangs
    // up without an answer.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        drop(listener);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut heads = 0;
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return heads;
            }
            seen.extend_from_slice(&buf[..n]);
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                seen.drain(..end + 4);
                heads += 1;
                if heads == 2 {
                    return heads; // the POST: hang up unanswered
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                stream.write_all(ok).await.unwrap();
            }
        }
        heads
    });
    let client = Client::builder().proxy_from_env(false).build().unwrap();
    let url = format!("http://{addr}/orders");
    let got = client.get(&url).await.unwrap();
    assert_eq!(got.into_body().text().await.unwrap(), "ok");
    let post = http::Request::post(&url)
        .header("idempotency-key", "order-42")
        .body(freshpool::RequestBody::from("{}"))
        .unwrap();
    let err = client.request(post).await.unwrap_err();
    assert_eq!(server.await.unwrap(), 2, "the POST reached the server");
    assert!(err.is_connect(), "the retry's dial was refused: {err}");
    assert!(err.is_possibly_processed(), "{err:?}");
}

/// An error reading the response body: the head came, so the server got
/// the request and may have acted on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_broke_off_may_have_been_processed() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        // Ten bytes promised, two sent, then the connection ends.
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok")
            .await;
    });
    let client = Client::builder().proxy_from_env(false).build().unwrap();
    let response = client.post(&format!("http://{addr}/"), "{}").await.unwrap();
    let err = response.into_body().bytes().await.unwrap_err();
    assert!(err.is_possibly_processed(), "{err:?}");
}
