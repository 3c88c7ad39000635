//! An HTTP/2 connection the pool lets go of closes even when its server
//! has stopped reading: h2 would first write its GOAWAY, which a full
//! socket never takes, so the socket, the driver task and the pool's slot
//! stayed for as long as the server held the connection.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use freshpool::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/2 frame: its 9-byte header, then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HTTP/2 server (raw frames) that opens its windows as wide as HTTP/2
/// allows, then never reads again: an upload fills the socket's buffers
/// and stays there. Holds its connections for at most 60 s.
async fn stops_reading_h2() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = common::small_buffer_listener();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok((mut conn, _)) = listener.accept().await {
                // The client's preface and SETTINGS (one read is enough on
                // loopback; nothing after them is read).
                let mut buf = vec![0; 4096];
                let _ = conn.read(&mut buf).await;
                let mut settings = Vec::new();
                // MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 2^31-1.
                settings.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
                settings.extend_from_slice(&[0, 4, 0x7f, 0xff, 0xff, 0xff]);
                let mut out = frame(4, 0, 0, &settings);
                // The connection's window: 2^31-1 too.
                out.extend(frame(8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
                out.extend(frame(4, 1, 0, &[])); // SETTINGS ACK
                let _ = conn.write_all(&out).await;
                held.push(conn);
            }
        })
        .await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_let_go_of_closes_though_its_server_stopped_reading() {
    let (addr, server) = stops_reading_h2().await;
    let client = common::h2_client().build().unwrap();
    let url = format!("http://{addr}/upload");
    // Far more than the socket buffers hold on loopback; given up by its
    // caller while it is stuck (hyper resets the stream, a frame that
    // cannot be written either).
    let upload = client.post(&url, Bytes::from(vec![b'x'; 32 << 20]));
    let given_up = tokio::time::timeout(Duration::from_millis(1500), upload).await;
    assert!(given_up.is_err(), "the server never answers: {given_up:?}");
    let stats = client.stats();
    assert_eq!(stats.open_connections, 1, "{stats:?}");
    // Let go of by the pool (no stream in flight): it closes, by itself or
    // by a shut socket, within a moment.
    client.close_idle_connections();
    freshpool_testkit::eventually("the connection closed", || {
        client.stats().open_connections == 0
    })
    .await;
    server.abort();
}

/// A connection its server said GOAWAY on carries its streams to their
/// end, the pool dropped meanwhile or not: the last client gone, a body
/// still being read is read to its end (its connection is not shut a
/// moment after the pool let go of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_after_goaway_and_the_clients_drop_ends_whole() {
    let (server, client) = common::http2_server_and_client(Client::builder()).await;
    // A first chunk, then the end 2 s later.
    let response = client.get(&server.url("/stall/2000")).await.unwrap();
    server.goaway_all();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // (A request after the GOAWAY ends hyper's dispatch on the first
    // connection, whose stream is still in flight; it goes on a new one.)
    let again = client.get(&server.url("/")).await.unwrap();
    assert_eq!(again.status(), 200);
    drop(again);
    drop(client);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().bytes())
        .await
        .expect("the body ends");
    assert!(body.is_ok(), "{body:?}");
}

/// A dial refused after its connection's driver started (here: the
/// server's first SETTINGS allows 0 streams) has its socket closed by the
/// time its error reaches the caller: the client's current-thread runtime
/// then sleeps without yielding, and the server (a thread of its own)
/// sees the close before that. (Here hyper's connection task closes it
/// first: this passes without the dial's own shutdown too, which is for a
/// connection whose task would not end so soon, its driver keeping the
/// socket up to a second while the freed slot let the pool dial again.)
#[test]
fn a_refused_http2_connection_is_shut_at_once() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf);
        // SETTINGS: MAX_CONCURRENT_STREAMS (0x3) = 0.
        socket
            .write_all(&frame(4, 0, 0, &[0, 3, 0, 0, 0, 0]))
            .unwrap();
        // Read (an ack, a GOAWAY) until the client's end closes.
        while let Ok(n) = socket.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        std::time::Instant::now()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::builder()
        .http_version(freshpool::HttpVersion::Http2Only)
        .build()
        .unwrap();
    let err = rt
        .block_on(client.get(&format!("http://{addr}/")))
        .expect_err("no stream allowed");
    assert!(
        err.to_string()
            .contains("allows 0 concurrent HTTP/2 streams"),
        "{err}"
    );
    // Nothing of the runtime runs while this thread sleeps.
    std::thread::sleep(Duration::from_millis(500));
    let woke = std::time::Instant::now();
    let closed = server.join().unwrap();
    assert!(
        closed < woke,
        "the socket closed only once the runtime ran again"
    );
    drop(rt);
}
