//! Integration tests of `ChaosProxy` over real loopback sockets.

mod support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use freshpool_testkit::{ChaosProxy, ProxyStats, TestServer};
use support::*;

async fn setup() -> (TestServer, ChaosProxy) {
    let server = TestServer::http1().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    (server, proxy)
}

#[tokio::test]
async fn forwards_requests() {
    let (server, proxy) = setup().await;
    assert!(proxy.url("/a").starts_with("http://127.0.0.1:"));
    let mut c = h1_connect(proxy.addr()).await;
    for k in 1..=2 {
        let (resp, body) = send(&mut c, get("/")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(&body[..], b"ok");
        assert_eq!(header(&resp, "x-request-count"), k.to_string());
    }
    // A body that spans several reads and a chunked response.
    let big = vec![b'z'; 200_000];
    let req = http::Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "x")
        .body(http_body_util::Full::new(bytes::Bytes::from(big.clone())))
        .unwrap();
    let (_, body) = send(&mut c, req).await;
    assert_eq!(body.len(), big.len());
    let (_, body) = send(&mut c, get("/stream/50000")).await;
    assert_eq!(body.len(), 50_000);

    assert_eq!(
        proxy.stats(),
        ProxyStats {
            connections_accepted: 1,
            open_connections: 1,
            peak_open_connections: 1,
            resets_sent: 0,
            requests_forwarded: 4,
        }
    );
    assert_eq!(server.stats().connections_accepted(), 1);
    drop(c);
    eventually("proxy conn closed", || proxy.stats().open_connections == 0).await;
}

#[tokio::test]
async fn idle_close() {
    let (_server, proxy) = setup().await;
    proxy.set_idle_close(Some(Duration::from_millis(200)));
    // (Started before the request: the close comes at least 200 ms after
    // the response's last byte, whenever this task sees the response.)
    let started = Instant::now();
    let mut c = h1_connect(proxy.addr()).await;
    send(&mut c, get("/")).await;
    timeout(WAIT, c.conn)
        .await
        .expect("idle close did not happen")
        .unwrap()
        .unwrap();
    // (199: the proxy stamps activity in whole milliseconds, rounded down.)
    assert!(started.elapsed() >= Duration::from_millis(199));
    // The proxy only sees bytes: a connection waiting on a slow response
    // carries none and is closed as idle too.
    let mut c = h1_connect(proxy.addr()).await;
    let res = timeout(WAIT, c.sender.send_request(get("/delay/600")))
        .await
        .expect("no reaction");
    assert!(res.is_err(), "idle close should have cut the slow request");
    proxy.set_idle_close(None);
    let mut c = h1_connect(proxy.addr()).await;
    let (resp, _) = send(&mut c, get("/delay/300")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn kill_all_silently_resets_on_next_write() {
    let (server, proxy) = setup().await;
    let mut s = raw_connect(proxy.addr()).await;
    raw_get(&mut s, "/").await;
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(body, b"ok");

    assert_eq!(proxy.kill_all_silently(), 1);
    assert_eq!(proxy.kill_all_silently(), 0, "already dead");
    // Silent: the client sees neither data nor FIN.
    let mut buf = [0u8; 64];
    assert!(timeout(Duration::from_millis(200), s.read(&mut buf))
        .await
        .is_err());
    // The upstream side was closed.
    eventually("upstream closed", || server.stats().open_connections() == 0).await;

    raw_get(&mut s, "/").await; // the write itself succeeds (kernel buffer)
    match timeout(WAIT, s.read(&mut buf))
        .await
        .expect("no reaction to write")
    {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => assert_eq!(n, 0, "got data from a dead connection"),
    }
    eventually("reset counted", || proxy.stats().resets_sent == 1).await;
    eventually("closed", || proxy.stats().open_connections == 0).await;
    assert_eq!(server.stats().requests(), 1);

    // New connections are fine.
    let mut c = h1_connect(proxy.addr()).await;
    let (resp, _) = send(&mut c, get("/")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn blackhole_new_and_existing() {
    let (server, proxy) = setup().await;
    let mut existing = raw_connect(proxy.addr()).await;
    raw_get(&mut existing, "/").await;
    read_response(&mut existing).await;

    proxy.set_blackhole(true);
    let mut buf = [0u8; 64];
    raw_get(&mut existing, "/").await;
    assert!(timeout(Duration::from_millis(300), existing.read(&mut buf))
        .await
        .is_err());
    let mut fresh = raw_connect(proxy.addr()).await;
    raw_get(&mut fresh, "/").await;
    assert!(timeout(Duration::from_millis(300), fresh.read(&mut buf))
        .await
        .is_err());
    assert_eq!(server.stats().requests(), 1);
    assert_eq!(
        server.stats().connections_accepted(),
        1,
        "blackholed conns are not connected upstream"
    );

    proxy.set_blackhole(false);
    raw_get(&mut fresh, "/").await;
    let (head, _) = read_response(&mut fresh).await;
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(proxy.stats().requests_forwarded, 2);
}

#[tokio::test]
async fn truncate_next_response() {
    let (_server, proxy) = setup().await;
    let mut s = raw_connect(proxy.addr()).await;
    raw_get(&mut s, "/").await;
    read_response(&mut s).await; // untouched
    proxy.truncate_next_response(10);
    raw_get(&mut s, "/bytes/1000").await;
    let (data, end) = read_to_end(&mut s).await;
    assert!(end.is_ok(), "expected FIN, got {end:?}");
    assert_eq!(data, b"HTTP/1.1 2");
    // Only once.
    let mut s = raw_connect(proxy.addr()).await;
    raw_get(&mut s, "/bytes/1000").await;
    let (_, body) = read_response(&mut s).await;
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn garbage_next_response() {
    let (server, proxy) = setup().await;
    proxy.garbage_next_response(b"garbage\r\n\r\n".to_vec());
    let mut s = raw_connect(proxy.addr()).await;
    raw_get(&mut s, "/").await;
    let (data, end) = read_to_end(&mut s).await;
    assert!(end.is_ok(), "expected FIN, got {end:?}");
    assert_eq!(data, b"garbage\r\n\r\n");
    assert_eq!(server.stats().requests(), 0);
    assert_eq!(proxy.stats().requests_forwarded, 0);

    let mut c = h1_connect(proxy.addr()).await;
    let (resp, _) = send(&mut c, get("/")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn half_close_next() {
    let (_server, proxy) = setup().await;
    proxy.half_close_next();
    let mut s = raw_connect(proxy.addr()).await;
    raw_get(&mut s, "/bytes/100").await;
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(body.len(), 100);
    let mut buf = [0u8; 16];
    let n = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0, "expected FIN after the response");
    // The proxy still reads: writing more is accepted, never answered.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(proxy.stats().open_connections, 1);
    assert_eq!(proxy.stats().resets_sent, 0);
}

#[tokio::test]
async fn accept_delay() {
    let (_server, proxy) = setup().await;
    // (A delay far above what a loopback request takes on a loaded
    // machine, so that "without it" is told apart without a tight bound.)
    let delay = Duration::from_secs(2);
    proxy.set_accept_delay(Some(delay));
    let started = Instant::now();
    let mut c = h1_connect(proxy.addr()).await;
    send(&mut c, get("/")).await;
    assert!(started.elapsed() >= delay);
    proxy.set_accept_delay(None);
    let mut c = h1_connect(proxy.addr()).await;
    let started = Instant::now();
    send(&mut c, get("/")).await;
    assert!(started.elapsed() < delay);
}

#[tokio::test]
async fn drop_closes_everything() {
    let (server, proxy) = setup().await;
    let mut s = raw_connect(proxy.addr()).await;
    raw_get(&mut s, "/").await;
    read_response(&mut s).await;
    drop(proxy);
    let (data, end) = read_to_end(&mut s).await;
    assert!(data.is_empty());
    assert!(!matches!(end, Err(ref e) if e.kind() == ErrorKind::TimedOut));
    eventually("upstream closed", || server.stats().open_connections() == 0).await;
}
