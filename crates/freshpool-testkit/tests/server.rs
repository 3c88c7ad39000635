//! Integration tests of `TestServer` over real loopback sockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use freshpool_testkit::{Protocol, ServerConfig, TestCa, TestServer};
use support::*;

#[tokio::test]
async fn http1_ok_headers_and_reuse() {
    let server = TestServer::http1().await;
    assert!(server.url("/x").starts_with("http://127.0.0.1:"));
    let mut c = h1_connect(server.addr()).await;
    for k in 1..=3 {
        let (resp, body) = send(&mut c, get("/")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(&body[..], b"ok");
        assert_eq!(header(&resp, "x-conn-id"), "1");
        assert_eq!(header(&resp, "x-request-count"), k.to_string());
    }
    let mut c2 = h1_connect(server.addr()).await;
    let (resp, _) = send(&mut c2, get("/")).await;
    assert_eq!(header(&resp, "x-conn-id"), "2");
    assert_eq!(header(&resp, "x-request-count"), "1");

    let stats = server.stats();
    assert_eq!(stats.connections_accepted(), 2);
    assert_eq!(stats.open_connections(), 2);
    assert_eq!(stats.peak_open_connections(), 2);
    assert_eq!(stats.requests(), 4);
    assert_eq!(stats.max_in_flight(), 1);
    drop(c2);
    eventually("connection close counted", || stats.open_connections() == 1).await;
}

#[tokio::test]
async fn routes() {
    let server = TestServer::http1().await;
    let mut c = h1_connect(server.addr()).await;

    let (resp, body) = send(&mut c, get("/bytes/5000")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), "5000");
    assert_eq!(body.len(), 5000);

    let (resp, body) = send(&mut c, get("/stream/3000")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "transfer-encoding"), "chunked");
    assert_eq!(body.len(), 3000);

    let echo = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "x")
        .body(Full::new(Bytes::from_static(b"hello world")))
        .unwrap();
    let (resp, body) = send(&mut c, echo).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&body[..], b"hello world");

    let (resp, _) = send(&mut c, get("/status/503")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (resp, _) = send(&mut c, get("/nope")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let started = std::time::Instant::now();
    let (resp, body) = send(&mut c, get("/delay/100")).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!((resp.status(), &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(header(&resp, "x-request-count"), "6");
    assert_eq!(server.stats().requests(), 6);
}

#[tokio::test]
async fn request_id_duplicates() {
    let server = TestServer::http1().await;
    let mut c = h1_connect(server.addr()).await;
    for id in ["a", "b", "a"] {
        let mut req = get("/");
        req.headers_mut()
            .insert("x-request-id", id.parse().unwrap());
        send(&mut c, req).await;
    }
    let counts = server.stats().request_id_counts();
    assert_eq!(counts.get("a"), Some(&2));
    assert_eq!(counts.get("b"), Some(&1));
    assert_eq!(
        server.stats().duplicated_request_ids(),
        vec!["a".to_string()]
    );
}

#[tokio::test]
async fn idle_timeout_closes_connection() {
    let server = TestServer::start(ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    })
    .await;
    // (Started before the request: the response comes after its 300 ms,
    // and the close at least 200 ms after that, however late this task
    // runs.)
    let started = std::time::Instant::now();
    let mut c = h1_connect(server.addr()).await;
    let (resp, _) = send(&mut c, get("/delay/300")).await; // longer than idle: in flight is not idle
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(server.stats().idle_closes(), 0, "busy, not idle");
    let res = timeout(WAIT, c.conn)
        .await
        .expect("connection not closed by idle timeout");
    assert!(res.unwrap().is_ok());
    assert!(started.elapsed() >= Duration::from_millis(500));
    eventually("open_connections == 0", || {
        server.stats().open_connections() == 0
    })
    .await;
    assert_eq!(server.stats().idle_closes(), 1);
}

#[tokio::test]
async fn keep_alive_hint_and_close_after_requests() {
    let server = TestServer::start(ServerConfig {
        keep_alive_hint: Some(7),
        close_after_requests: Some(2),
        ..Default::default()
    })
    .await;
    let mut c = h1_connect(server.addr()).await;
    let (resp, _) = send(&mut c, get("/")).await;
    assert_eq!(header(&resp, "keep-alive"), "timeout=7");
    assert!(resp.headers().get("connection").is_none());
    let (resp, _) = send(&mut c, get("/")).await;
    assert_eq!(header(&resp, "connection"), "close");
    timeout(WAIT, c.conn)
        .await
        .expect("not closed")
        .unwrap()
        .unwrap();
}

async fn expect_exchange(server: &TestServer) -> (Option<Vec<u8>>, String) {
    let mut s = raw_connect(server.addr()).await;
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1024];
    // What the server says before it got the body (within 1 s: a loaded
    // machine may take a while to run the server's task; the silent case
    // waits that long).
    let interim = match timeout(Duration::from_secs(1), s.read(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Ok(Err(e)) => panic!("read error {e}"),
        Err(_) => None,
    };
    s.write_all(b"hello").await.unwrap();
    let (head, body) = read_response(&mut s).await;
    assert_eq!(body, b"hello");
    (interim, head)
}

#[tokio::test]
async fn expect_continue_on_and_off() {
    let on = TestServer::http1().await;
    let (interim, head) = expect_exchange(&on).await;
    assert_eq!(
        interim.as_deref(),
        Some(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
    );
    assert!(head.starts_with("HTTP/1.1 200"));

    let off = TestServer::start(ServerConfig {
        expect_continue: false,
        ..Default::default()
    })
    .await;
    let (interim, head) = expect_exchange(&off).await;
    assert_eq!(
        interim, None,
        "server must stay silent until the body arrives"
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("100 Continue"));
    assert_eq!(off.stats().requests(), 1);
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2_over<T>(io: T) -> (H2Sender, tokio::task::JoinHandle<Result<(), hyper::Error>>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

async fn h2_get(sender: &mut H2Sender, uri: &str) -> (http::response::Parts, Bytes) {
    timeout(WAIT, sender.ready()).await.unwrap().unwrap();
    let resp = timeout(WAIT, sender.send_request(empty_get(uri)))
        .await
        .expect("timeout")
        .expect("h2 response");
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

async fn tls_connect(
    server: &TestServer,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = raw_connect(server.addr()).await;
    let name = ServerName::try_from("localhost").unwrap();
    timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .expect("tls timeout")
}

#[tokio::test]
async fn tls_h2_alpn_and_resumption() {
    let ca = TestCa::new();
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        tls: Some(ServerConfig::tls_config(&ca, &[b"h2"])),
        ..Default::default()
    })
    .await;
    assert!(server.url("/").starts_with("https://localhost:"));
    let client_cfg = ca.client_config(&[b"h2"]);

    let tls = tls_connect(&server, client_cfg.clone()).await.expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = h2_over(tls).await;
    let (parts, body) = h2_get(&mut sender, &server.url("/")).await;
    assert_eq!(parts.version, Version::HTTP_2);
    assert_eq!(&body[..], b"ok");
    assert_eq!(parts.headers["x-conn-id"], "1");
    drop(sender);
    let _ = timeout(WAIT, conn).await.expect("h2 conn end");

    let tls = tls_connect(&server, client_cfg).await.expect("tls 2");
    let (mut sender, _conn) = h2_over(tls).await;
    let (parts, _) = h2_get(&mut sender, &server.url("/")).await;
    assert_eq!(parts.headers["x-conn-id"], "2");

    let stats = server.stats();
    assert_eq!(stats.tls_handshakes(), 2);
    assert_eq!(stats.tls_resumed(), 1);
    assert_eq!(stats.requests(), 2);
}

#[tokio::test]
async fn tls_rejects_untrusted_and_mtls() {
    let ca = TestCa::new();
    assert!(ca.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    // A server with a self-signed leaf is not trusted by clients of `ca`.
    let (chain, key) = freshpool_testkit::self_signed(&["localhost"]);
    let bad_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let bad = TestServer::start(ServerConfig {
        tls: Some(Arc::new(bad_cfg)),
        ..Default::default()
    })
    .await;
    assert!(tls_connect(&bad, ca.client_config(&[])).await.is_err());

    // Mutual TLS: only a client with a certificate from `ca` gets in.
    let server = TestServer::start(ServerConfig {
        tls: Some(ServerConfig::tls_config_with_client_auth(
            &ca,
            &[b"http/1.1"],
        )),
        ..Default::default()
    })
    .await;
    let (chain, key) = ca.client_cert("test-client");
    let mut with_cert = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.root_store())
    .with_client_auth_cert(chain, key)
    .unwrap();
    with_cert.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tls = tls_connect(&server, Arc::new(with_cert))
        .await
        .expect("mtls");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = timeout(WAIT, tls.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // Without a client certificate the handshake fails (TLS 1.3 reports it
    // on the first read).
    let outcome = match tls_connect(&server, ca.client_config(&[])).await {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            matches!(
                timeout(WAIT, s.read(&mut buf)).await.unwrap(),
                Err(_) | Ok(0)
            )
        }
    };
    assert!(outcome);
    eventually("handshake failure counted", || {
        server.stats().tls_handshake_failures() == 1
    })
    .await;
}

#[tokio::test]
async fn max_concurrent_streams_is_applied() {
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        max_concurrent_streams: Some(1),
        ..Default::default()
    })
    .await;
    let tcp = raw_connect(server.addr()).await;
    let (sender, _conn) = h2_over(tcp).await;
    // Let the client see the server's SETTINGS before opening streams.
    let mut probe = sender.clone();
    h2_get(&mut probe, &server.url("/")).await;
    let url = server.url("/delay/150");
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut s = sender.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(
            async move { h2_get(&mut s, &url).await.0.status },
        ));
    }
    for t in tasks {
        assert_eq!(timeout(WAIT, t).await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(server.stats().max_in_flight(), 1);
    assert_eq!(server.stats().requests(), 4);
    assert_eq!(server.stats().connections_accepted(), 1);
}

#[tokio::test]
async fn auto_protocol_serves_h1_and_h2c() {
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Auto,
        ..Default::default()
    })
    .await;
    let mut c = h1_connect(server.addr()).await;
    let (resp, _) = send(&mut c, get("/")).await;
    assert_eq!(resp.version(), Version::HTTP_11);
    let (mut sender, _conn) = h2_over(raw_connect(server.addr()).await).await;
    let (parts, body) = h2_get(&mut sender, &server.url("/")).await;
    assert_eq!(parts.version, Version::HTTP_2);
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn goaway_all_and_close_all() {
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        ..Default::default()
    })
    .await;
    let (mut sender, conn) = h2_over(raw_connect(server.addr()).await).await;
    h2_get(&mut sender, &server.url("/")).await;
    server.goaway_all();
    timeout(WAIT, conn)
        .await
        .expect("goaway did not end the connection")
        .unwrap()
        .unwrap();
    // Still accepting.
    let (mut sender, _conn) = h2_over(raw_connect(server.addr()).await).await;
    h2_get(&mut sender, &server.url("/")).await;

    let h1 = TestServer::http1().await;
    let mut c = h1_connect(h1.addr()).await;
    send(&mut c, get("/")).await;
    h1.goaway_all();
    timeout(WAIT, c.conn)
        .await
        .expect("h1 idle conn not closed")
        .unwrap()
        .unwrap();

    let mut c = h1_connect(h1.addr()).await;
    send(&mut c, get("/")).await;
    h1.close_all();
    let _ = timeout(WAIT, c.conn)
        .await
        .expect("close_all did not close");
    eventually("all closed", || h1.stats().open_connections() == 0).await;
    let mut c = h1_connect(h1.addr()).await;
    let (resp, _) = send(&mut c, get("/")).await;
    assert_eq!(header(&resp, "x-conn-id"), "3");
}

#[tokio::test]
async fn drop_stops_server_and_connections() {
    let server = TestServer::http1().await;
    let addr = server.addr();
    let stats = server.stats_handle();
    let mut c = h1_connect(addr).await;
    send(&mut c, get("/")).await;
    drop(server);
    let _ = timeout(WAIT, c.conn)
        .await
        .expect("connection outlived the server");
    eventually("tasks ended", || stats.open_connections() == 0).await;
    // Accept loop gone: connecting now fails, or (the port reused by a
    // test running beside this one) reaches another server: this one
    // accepts nothing more.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let accepted = stats.connections_accepted();
    if let Ok(mut s) = TcpStream::connect(addr).await {
        raw_get(&mut s, "/").await;
        let _ = timeout(WAIT, read_to_end(&mut s)).await;
    }
    assert_eq!(stats.connections_accepted(), accepted);
}

#[tokio::test]
async fn h2_idle_timeout_and_close_after_requests() {
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        idle_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    })
    .await;
    let (mut sender, conn) = h2_over(raw_connect(server.addr()).await).await;
    h2_get(&mut sender, &server.url("/")).await;
    timeout(WAIT, conn)
        .await
        .expect("h2 idle connection not closed")
        .unwrap()
        .unwrap();

    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        close_after_requests: Some(2),
        ..Default::default()
    })
    .await;
    let (mut sender, conn) = h2_over(raw_connect(server.addr()).await).await;
    h2_get(&mut sender, &server.url("/")).await;
    let (parts, _) = h2_get(&mut sender, &server.url("/")).await;
    assert_eq!(parts.headers["x-request-count"], "2");
    timeout(WAIT, conn)
        .await
        .expect("GOAWAY after N requests did not end the connection")
        .unwrap()
        .unwrap();
}
