//! Helpers shared by the integration tests (each test file that needs them
//! declares `mod common;`).

use freshpool::Client;

pub mod expect;
pub mod logs;

/// GETs `url` and reads the body to the end (returning the connection).
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn fetch(client: &Client, url: &str) -> bytes::Bytes {
    read(client.get(url)).await
}

#[allow(dead_code)]
async fn read(
    response: impl std::future::Future<
        Output = Result<http::Response<freshpool::Body>, freshpool::Error>,
    >,
) -> bytes::Bytes {
    response.await.unwrap().into_body().bytes().await.unwrap()
}

/// Reads the body of `response` (a request's future) as text.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn text_of(
    response: impl std::future::Future<
        Output = Result<http::Response<freshpool::Body>, freshpool::Error>,
    >,
) -> String {
    response.await.unwrap().into_body().text().await.unwrap()
}

/// Sends `request` and reads the body to the end.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn send<B: Into<freshpool::RequestBody>>(
    client: &Client,
    request: http::Request<B>,
) -> bytes::Bytes {
    read(client.request(request)).await
}

/// An HTTP/2-only (h2c) test server and a client that speaks only HTTP/2.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn http2_server_and_client(
    client: freshpool::ClientBuilder,
) -> (freshpool_testkit::TestServer, Client) {
    let server = freshpool_testkit::TestServer::start(freshpool_testkit::ServerConfig {
        protocol: freshpool_testkit::Protocol::Http2,
        ..freshpool_testkit::ServerConfig::default()
    })
    .await;
    let client = client
        .http_version(freshpool::HttpVersion::Http2Only)
        .build()
        .unwrap();
    (server, client)
}

/// A loopback port nobody listens on.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub fn closed_port() -> u16 {
    // Bound and never listening, for the rest of the test process: a
    // connect is refused, and no test running beside it can take the port
    // (one bound and let go could be).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    std::mem::forget(socket);
    port
}

/// GETs `url` and reads the body as text.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub async fn text(client: &Client, url: &str) -> String {
    client
        .get(url)
        .await
        .unwrap()
        .into_body()
        .text()
        .await
        .unwrap()
}

/// Resolves every name to 127.0.0.1 after a pause (a slow DNS server).
#[allow(dead_code)]
pub struct SlowResolver(pub std::time::Duration);

impl freshpool::Resolve for SlowResolver {
    fn resolve(&self, _host: &str, port: u16) -> freshpool::ResolveFuture {
        let pause = self.0;
        Box::pin(async move {
            tokio::time::sleep(pause).await;
            Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
        })
    }
}

/// Resolves every name to `addr`: at once the first time, then after
/// `later` (a dial that takes long).
#[allow(dead_code)]
pub struct SlowAfterFirst {
    pub addr: std::net::SocketAddr,
    pub calls: std::sync::atomic::AtomicUsize,
    pub later: std::time::Duration,
}

impl freshpool::Resolve for SlowAfterFirst {
    fn resolve(&self, _host: &str, _port: u16) -> freshpool::ResolveFuture {
        let first = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let wait = if first {
            std::time::Duration::ZERO
        } else {
            self.later
        };
        let addr = self.addr;
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            Ok(vec![addr])
        })
    }
}

type Answer = tokio::task::JoinHandle<Result<http::Response<freshpool::Body>, freshpool::Error>>;

/// Two requests queued behind a slow dial (see `behind_a_slow_dial`).
#[allow(dead_code)]
pub struct BehindASlowDial {
    pub client: Client,
    /// The response holding the first connection (its body unread).
    pub held: http::Response<freshpool::Body>,
    /// Queued, with the dial started for it.
    pub w1: Answer,
    /// Queued behind it, with no dial of its own (the per-host limit).
    pub w2: Answer,
}

/// A client from `builder` with two connections per host to `addr`, whose
/// dials after the first take 3 s, and `pool_timeout` 1.5 s: one
/// connection held, W1 queued with a dial for it, W2 queued behind with
/// none. (Each request keeps its response: dropped unread, it would close
/// its connection and free a slot for another dial.)
#[allow(dead_code)]
pub async fn behind_a_slow_dial(
    builder: freshpool::ClientBuilder,
    addr: std::net::SocketAddr,
) -> BehindASlowDial {
    let client = builder
        .proxy_from_env(false)
        .resolver(SlowAfterFirst {
            addr,
            calls: Default::default(),
            // (W2's `pool_timeout` runs from its start: the test must act
            // within it. 1.5 s leaves a loaded machine room; the dial
            // stays twice as long, so a W2 left without it still fails.)
            later: std::time::Duration::from_millis(3000),
        })
        .max_connections_per_host(2)
        .pool_timeout(std::time::Duration::from_millis(1500))
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://slow.test:{}/", addr.port());
    let waiting = |n: usize| {
        let client = client.clone();
        move || client.stats().origins.iter().any(|o| o.waiting == n)
    };
    let held = client.get(&url).await.unwrap();
    let get = || {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(&url).await })
    };
    let w1 = get();
    freshpool_testkit::eventually("W1 queued", waiting(1)).await;
    let w2 = get();
    freshpool_testkit::eventually("W2 queued", waiting(2)).await;
    BehindASlowDial {
        client,
        held,
        w1,
        w2,
    }
}

/// The testkit's HTTP/2 server (cleartext, prior knowledge).
#[allow(dead_code)]
pub async fn h2_server() -> freshpool_testkit::TestServer {
    freshpool_testkit::TestServer::start(freshpool_testkit::ServerConfig {
        protocol: freshpool_testkit::Protocol::Http2,
        ..freshpool_testkit::ServerConfig::default()
    })
    .await
}

/// A client builder speaking HTTP/2 only.
#[allow(dead_code)]
pub fn h2_client() -> freshpool::ClientBuilder {
    Client::builder().http_version(freshpool::HttpVersion::Http2Only)
}

/// A streamed request body of unknown length: "hello" in two chunks.
/// (Not every test file that declares `mod common;` uses it.)
#[allow(dead_code)]
pub struct Chunks(pub std::collections::VecDeque<&'static [u8]>);

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        let next = self.0.pop_front();
        std::task::Poll::Ready(
            next.map(|c| Ok(http_body::Frame::data(bytes::Bytes::from_static(c)))),
        )
    }
}

/// "hello" as a streamed body of unknown length.
#[allow(dead_code)]
pub fn streamed_hello() -> freshpool::RequestBody {
    freshpool::RequestBody::wrap(Chunks([&b"he"[..], b"llo"].into()))
}

/// A loopback server that accepts connections and never answers (a TLS
/// handshake, a request, waits on it), holding them until it is aborted:
/// its port and its task.
#[allow(dead_code)]
pub async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// Reads `response`'s body, which must fail within 10 s (a stalled body
/// that a timeout ends): the error, and how long the read took.
#[allow(dead_code)]
pub async fn body_failure(
    response: http::Response<freshpool::Body>,
) -> (freshpool::Error, std::time::Duration) {
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        response.into_body().bytes(),
    )
    .await
    .expect("a timeout ends the body read");
    (read.expect_err("the body read fails"), started.elapsed())
}

/// A listener on 127.0.0.1 whose accepted sockets have a small (64 KiB)
/// receive buffer: a server that stops reading fills it, and the
/// client's send buffer behind it, whatever the host's `tcp_rmem`.
#[allow(dead_code)]
pub fn small_buffer_listener() -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(16).unwrap()
}
