//! HTTP messages at the edges and what the pool does with their
//! connections: an HTTP/1.0 server that keeps connections alive, a
//! protocol upgrade, a scheme in capitals, and the caller's `Host` over
//! HTTP/2, against real servers on 127.0.0.1.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshpool::{Client, Kind};
use freshpool_testkit::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What the HTTP/1.0 server below saw: each request's line and body, and
/// how many connections it accepted.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, Vec<u8>)>,
    connections: usize,
}

/// An HTTP/1.0 server that keeps connections alive (`Connection:
/// keep-alive`, as old servers and appliances do) and echoes each request
/// body. It reads `Content-Length` and chunked bodies. (Raw: hyper's
/// server answers in the request's version.)
async fn http10_keep_alive_server() -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            record.lock().unwrap().connections += 1;
            let record = record.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let request_line = line.trim_end().to_owned();
                    let (mut length, mut chunked) = (0usize, false);
                    loop {
                        line.clear();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end().to_ascii_lowercase();
                        if header.is_empty() {
                            break;
                        }
                        if let Some(v) = header.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if header.starts_with("transfer-encoding:") && header.contains("chunked") {
                            chunked = true;
                        }
                    }
                    let mut body = Vec::new();
                    if chunked {
                        loop {
                            line.clear();
                            read.read_line(&mut line).await.unwrap();
                            let size = usize::from_str_radix(line.trim(), 16).unwrap();
                            let mut chunk = vec![0; size + 2];
                            read.read_exact(&mut chunk).await.unwrap();
                            if size == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..size]);
                        }
                    } else {
                        body.resize(length, 0);
                        read.read_exact(&mut body).await.unwrap();
                    }
                    let answer = format!(
                        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    record
                        .lock()
                        .unwrap()
                        .requests
                        .push((request_line, body.clone()));
                    if write.write_all(answer.as_bytes()).await.is_err()
                        || write.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

/// After an answer in HTTP/1.0, hyper sends the connection's next requests
/// as HTTP/1.0, which has no chunked framing: a streamed body of unknown
/// length went out as an empty one, and the server answered 200 to a POST
/// whose upload was lost. Such a connection is not reused (the next
/// request dials, and goes as HTTP/1.1), and its close is the server's
/// doing, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_upload_after_an_http10_answer_is_not_lost() {
    let (url, seen) = http10_keep_alive_server().await;
    let client = Client::new();
    let first = client.get(&format!("{url}/")).await.unwrap();
    assert_eq!(first.version(), http::Version::HTTP_10);
    assert!(first.into_body().bytes().await.unwrap().is_empty());
    let request = http::Request::post(format!("{url}/upload"))
        .body(common::streamed_hello())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(response.into_body().text().await.unwrap(), "hello");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 2);
    assert_eq!(seen.requests[1].1, b"hello", "the server got the upload");
    assert!(
        seen.requests[1].0.ends_with("HTTP/1.1"),
        "{:?}",
        seen.requests[1].0
    );
    assert_eq!(
        seen.connections, 2,
        "the HTTP/1.0 connection was not reused"
    );
    let stats = client.stats();
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Error),
        0,
        "{stats}"
    );
}

/// A protocol upgrade (WebSocket, h2c) is refused before anything is sent:
/// a connection handed over to another protocol cannot go back to the
/// pool. It went out, and the caller got a `101` it could not use, over
/// HTTP/1 (hyper's pooled connections take no upgrade), on a connection
/// then handed back to the pool as it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_is_refused_before_sending() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let request = http::Request::get(server.url("/"))
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "websocket")
        .body(())
        .unwrap();
    let err = client.request(request).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unsupported, "{err}");
    assert!(err.to_string().contains("Upgrade"), "{err}");
    assert!(!err.is_possibly_processed());
    assert_eq!(server.stats().connections_accepted(), 0, "nothing was sent");
    // A stray `Upgrade` without `Connection: upgrade` asks for nothing
    // (a gateway passing headers on): sent as any request.
    let stray = http::Request::get(server.url("/"))
        .header(http::header::UPGRADE, "h2c")
        .body(())
        .unwrap();
    let response = client.request(stray).await.unwrap();
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
}

/// A scheme is case-insensitive (RFC 3986 section 3.1): `HTTP` built with
/// `Uri::builder` (which keeps it as given) was refused as "unsupported
/// scheme".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_in_capitals_is_http() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let uri = http::Uri::builder()
        .scheme("HTTP")
        .authority(server.addr().to_string())
        .path_and_query("/")
        .build()
        .unwrap();
    assert_eq!(uri.scheme_str(), Some("HTTP"));
    let request = http::Request::get(uri).body(()).unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    // One origin with the lowercase spelling's.
    client.get(&server.url("/")).await.unwrap();
    let stats = client.stats();
    assert_eq!(stats.origins.len(), 1, "{stats}");
    assert_eq!(stats.created(), 1, "{stats}");
}

/// Over HTTP/2 the caller's `Host` becomes the `:authority` (RFC 9113
/// section 8.3.1: a request with both, differing, is malformed), as over
/// HTTP/1 it is the `Host` line: the request reaches the same virtual host
/// either way. HTTP/2 sent the URI's authority with the caller's `Host`
/// beside it, and servers that route on `:authority` picked another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_host_is_the_authority_over_http2() {
    let (server, client) = common::http2_server_and_client(Client::builder()).await;
    let request = http::Request::get(server.url("/authority"))
        .header(http::header::HOST, "api.example:8443")
        .body(())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let seen = response.into_body().text().await.unwrap();
    assert_eq!(seen, "authority=api.example:8443 host=-", "{seen}");
    // Without one, the URI's.
    let response = client.get(&server.url("/authority")).await.unwrap();
    let seen = response.into_body().text().await.unwrap();
    let expected = format!("authority={} host=-", server.addr());
    assert_eq!(seen, expected);
}
