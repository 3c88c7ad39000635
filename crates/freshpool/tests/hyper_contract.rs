//! The hyper behaviour freshpool's retry rule is built on, pinned so that a
//! hyper upgrade that changes it fails here rather than in production.
//!
//! `client/sending.rs` sends with `send_request` where the send loop keeps
//! its own copy of the request, and reads `hyper::Error::is_canceled` as
//! "never written, safe to send again on any method". That holds only while
//! hyper raises `Canceled` for unwritten requests alone.

use std::time::Duration;

use bytes::Bytes;
use freshpool_testkit::{ChaosProxy, TestServer};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .header(http::header::HOST, "127.0.0.1")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn canceled_means_unwritten_and_a_written_request_is_never_canceled() {
    let server = TestServer::http1().await;
    let chaos = ChaosProxy::start(server.addr()).await;
    let stream = TcpStream::connect(chaos.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    // The first request is written and answered with garbage, then FIN. The
    // second finds the connection busy and is refused unwritten (hyper lets
    // a request wait in the queue only before the connection first says it
    // is ready).
    chaos.garbage_next_response(b"garbage\r\n\r\n".to_vec());
    sender.ready().await.unwrap();
    let written = sender.send_request(get("/"));
    let queued = sender.send_request(get("/"));
    let (written, queued) = timeout(LIMIT, async { tokio::join!(written, queued) })
        .await
        .expect("both requests settle");

    let written = written.expect_err("garbage is no response");
    assert!(
        !written.is_canceled(),
        "a written request must not look unwritten: {written:?}"
    );
    let queued = queued.expect_err("the connection closed under it");
    assert!(
        queued.is_canceled(),
        "an unwritten request must say so: {queued:?}"
    );
    assert_eq!(
        server.stats().requests(),
        0,
        "the proxy answered the first request itself; nothing reached the server"
    );

    // And on a connection that already closed, a new request is refused
    // unwritten.
    let late = timeout(LIMIT, sender.send_request(get("/")))
        .await
        .expect("refused at once")
        .expect_err("the connection is gone");
    assert!(late.is_canceled(), "{late:?}");
}
