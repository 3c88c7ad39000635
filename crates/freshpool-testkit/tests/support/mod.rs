//! Small raw clients shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound for any single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(5);

/// A hyper HTTP/1 client connection plus the task driving it.
pub struct H1 {
    pub sender: SendRequest<Full<Bytes>>,
    pub conn: JoinHandle<Result<(), hyper::Error>>,
}

pub async fn h1_connect(addr: SocketAddr) -> H1 {
    let stream = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    H1 {
        sender,
        conn: tokio::spawn(conn),
    }
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub fn empty_get(uri: &str) -> Request<Empty<Bytes>> {
    Request::builder().uri(uri).body(Empty::new()).unwrap()
}

pub async fn send(h1: &mut H1, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let resp = timeout(WAIT, h1.sender.send_request(req))
        .await
        .expect("response timeout")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = timeout(WAIT, body.collect())
        .await
        .expect("body timeout")
        .expect("body")
        .to_bytes();
    (Response::from_parts(parts, ()), body)
}

pub fn header<'a>(resp: &'a Response<()>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

/// Reads from `stream` until EOF, an error, or `WAIT`; returns what arrived
/// and how reading ended (`Ok(())` = EOF).
pub async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => return (out, Err(std::io::ErrorKind::TimedOut.into())),
            Ok(Ok(0)) => return (out, Ok(())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (out, Err(e)),
        }
    }
}

/// Reads one `Content-Length` HTTP/1 response (head and body).
pub async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(pos) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..pos]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if data.len() >= pos + 4 + len {
                return (head, data[pos + 4..pos + 4 + len].to_vec());
            }
        }
        let n = timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("read timeout")
            .expect("read");
        assert!(
            n > 0,
            "EOF before a full response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect")
}

pub async fn raw_get(stream: &mut TcpStream, path: &str) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
}

pub use freshpool_testkit::eventually;
