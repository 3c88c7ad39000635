//! `tcp_user_timeout`: a connection whose peer stops taking data is ended
//! by the kernel after that long, and the request's error says so.
//!
//! Loopback cannot drop packets, so the peer here stops *reading*: its
//! receive window closes, the client's kernel probes it, and Linux ends
//! the connection when `TCP_USER_TIMEOUT` passes without progress, as it
//! would for writes into a black hole (a NAT that forgot the connection).
//! Without the setting the same request waits for as long as the peer
//! holds the socket.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use freshpool::{Client, Kind};

/// A server that accepts connections and never reads from them, for at
/// most 60 s (its task then ends and drops them).
async fn unread_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = common::small_buffer_listener();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        })
        .await;
    });
    (addr, task)
}

/// Far more than the socket buffers hold on loopback (the client's send
/// buffer grows to `tcp_wmem`'s limit, 4 MiB by default).
fn large_body() -> Bytes {
    Bytes::from(vec![b'x'; 32 << 20])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_peer_stops_taking_fails_after_tcp_user_timeout() {
    let (addr, server) = unread_server().await;
    let url = format!("http://{addr}/upload");
    let client = Client::builder()
        .tcp_user_timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), client.post(&url, large_body()))
        .await
        .expect("the kernel ends the connection long before 30 s")
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Io, "{err}");
    let text = err.to_string();
    assert!(text.contains("tcp_user_timeout"), "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
    // Part of the request reached the server: it may have acted on it.
    assert!(err.is_possibly_processed(), "{text}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // (Its task ends a moment after the request's error.)
    freshpool_testkit::eventually("the dead connection closed", || {
        client.stats().open_connections == 0
    })
    .await;

    // Without the setting, the same upload is still waiting.
    let plain = Client::new();
    let waiting =
        tokio::time::timeout(Duration::from_secs(3), plain.post(&url, large_body())).await;
    assert!(waiting.is_err(), "{waiting:?}");
    server.abort();
}

/// A request that gives up on an upload the peer stopped taking (its
/// `timeout` fired, or its caller dropped it) closes the connection. hyper
/// flushes what it holds before it closes a socket, which never ends while
/// the peer's window stays shut: dropping the connection kept its socket,
/// its task, its slot and the rest of the upload for as long as the peer
/// held on (60 s here), and the origin's next requests waited for a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_given_up_closes_its_connection() {
    let (addr, server) = unread_server().await;
    let url = format!("http://{addr}/upload");
    let client = Client::builder()
        .max_connections_per_host(1)
        .timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), client.post(&url, large_body()))
        .await
        .expect("the request's timeout ends it")
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    freshpool_testkit::eventually("the timed-out upload's connection closed", || {
        client.stats().open_connections == 0
    })
    .await;

    // Dropped by its caller mid-upload.
    let plain = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    let request = tokio::spawn({
        let (plain, url) = (plain.clone(), url.clone());
        async move { plain.post(&url, large_body()).await }
    });
    freshpool_testkit::eventually("the upload's connection opened", || {
        plain.stats().open_connections == 1
    })
    .await;
    // (Long enough for the upload to fill both sockets' buffers.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    request.abort();
    freshpool_testkit::eventually("the dropped upload's connection closed", || {
        plain.stats().open_connections == 0
    })
    .await;
    server.abort();
}

/// The longest value the kernel takes (2^31-1 ms) works; one more is
/// refused by `build()`, naming the setting (the kernel refused it at
/// every dial: `EINVAL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernels_longest_tcp_user_timeout_works_and_longer_is_refused() {
    let server = freshpool_testkit::TestServer::http1().await;
    let longest = Duration::from_millis(i32::MAX as u64);
    let client = Client::builder()
        .tcp_user_timeout(Some(longest))
        .build()
        .unwrap();
    let response = client.get(&server.url("/")).await.unwrap();
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    let err = Client::builder()
        .tcp_user_timeout(Some(longest + Duration::from_millis(1)))
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(err.to_string().contains("tcp_user_timeout"), "{err}");
}
