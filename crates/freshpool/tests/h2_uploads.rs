//! HTTP/2 streams whose request body is still going out when their
//! response has ended: the stream stays counted until the upload ends, as
//! the server counts it (against a hyper HTTP/2 server on 127.0.0.1 that
//! answers at once and reads the upload in the background); and an upload
//! that fails after its response began, over HTTP/2 and HTTP/1 (against a
//! server that echoes the upload as it comes).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use freshpool::{Client, CloseReason, HttpVersion};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

mod common;

/// An HTTP/2 server allowing `streams` streams per connection, answering
/// every request at once with `body()`; a request body is read to its end
/// in the background. Returns its address and the count of connections
/// accepted.
async fn answering_h2<B>(streams: u32, body: fn() -> B) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    h2_server(streams, body, false).await
}

/// `answering_h2`, or with `read_first` one that reads a request's body to
/// its end before it answers (an upload that goes on holds the head back).
async fn h2_server<B>(
    streams: u32,
    body: fn() -> B,
    read_first: bool,
) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut upload = req.into_body();
                        let read = async move { while let Some(Ok(_)) = upload.frame().await {} };
                        if read_first {
                            read.await;
                        } else {
                            tokio::spawn(read);
                        }
                        Ok::<_, Infallible>(hyper::Response::new(body()))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(streams)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// `answering_h2` with "ok" as every response.
async fn early_answering_h2_with(streams: u32) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    answering_h2(streams, || Full::new(Bytes::from_static(b"ok"))).await
}

async fn early_answering_h2() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    early_answering_h2_with(1).await
}

/// A request body fed from a channel: open until its sender is dropped.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// With one stream per connection, held by an upload still going out: a
/// GET of `url` is served on a second connection, the first still active.
async fn the_next_request_takes_a_second_connection(
    client: &Client,
    url: &str,
    accepted: &AtomicUsize,
) {
    let got = client.get(url).await;
    let stats = client.stats();
    let response = got.unwrap_or_else(|e| panic!("{e}\n{stats}"));
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().origins[0].active, 1, "{}", client.stats());
}

/// Once the upload ends, its stream goes back: nothing is active.
async fn the_uploads_stream_is_given_back(client: &Client) {
    freshpool_testkit::eventually("the upload's stream given back", || {
        client.stats().origins[0].active == 0
    })
    .await;
}

/// POSTs a body fed from a channel (one chunk sent, then open until the
/// returned sender is dropped) and returns the sender and the response.
async fn start_upload(
    client: &Client,
    url: &str,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    http::Response<freshpool::Body>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Bytes::from_static(b"first chunk")).await.unwrap();
    let request = http::Request::post(url)
        .body(freshpool::RequestBody::wrap(ChannelBody(rx)))
        .unwrap();
    (tx, client.request(request).await.unwrap())
}

/// The response of an upload ends while the upload goes on: the stream is
/// still the server's one allowed, so the next request goes to another
/// connection instead of waiting behind it (it was handed the same
/// connection, where h2 held it until the upload ended: here, never, so it
/// timed out), and the stream is given back when the upload ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_upload_goes_on_stays_counted_until_it_ends() {
    let (addr, accepted) = early_answering_h2().await;
    let client = Client::builder()
        .http_version(HttpVersion::Http2Only)
        .response_header_timeout(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    let url = format!("http://{addr}/");
    let (tx, response) = start_upload(&client, &url).await;
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    // The upload is still open: the next request needs another connection.
    the_next_request_takes_a_second_connection(&client, &url, &accepted).await;
    // The upload ends: its stream is given back.
    drop(tx);
    the_uploads_stream_is_given_back(&client).await;
}

/// The same when the response is dropped unread (`client.post(..).await?
/// .status()`): dropping it sends no reset while hyper still sends the
/// body, so the stream stays counted until the upload ends. A parked
/// stream is no leak: its response was dealt with, and the leak report
/// does not name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_response_was_dropped_stays_counted_until_its_upload_ends() {
    let (addr, accepted) = early_answering_h2().await;
    let client = Client::builder()
        .http_version(HttpVersion::Http2Only)
        .response_header_timeout(Some(Duration::from_secs(2)))
        .lease_warn_after(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let url = format!("http://{addr}/");
    let (tx, response) = start_upload(&client, &url).await;
    let status = response.status();
    drop(response);
    assert_eq!(status, 200);
    let got = client.get(&url).await;
    let stats = client.stats();
    let response = got.unwrap_or_else(|e| panic!("{e}\n{stats}"));
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = client.stats();
    assert_eq!(stats.origins[0].leaks_reported, 0, "{stats}");
    assert_eq!(stats.origins[0].active, 1, "{stats}");
    drop(tx);
    the_uploads_stream_is_given_back(&client).await;
}

/// A parked stream's release touches no other lease's record: the lease
/// table gives a freed id to the next lease, and the parked lease's later
/// release removed that one (it then went missing from `oldest_leases`
/// and the leak report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_streams_release_leaves_other_leases_records_alone() {
    // (One stream per connection: the held request goes to a second one,
    // so that the upload's release shows as one connection fewer active.)
    let (addr, accepted) = early_answering_h2().await;
    let client = common::h2_client().build().unwrap();
    let url = format!("http://{addr}/");
    let (tx, upload) = start_upload(&client, &url).await;
    upload.into_body().bytes().await.unwrap();
    // Takes the id the parked lease left; its body is held unread.
    let held = client.get(&url).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().origins[0].active, 2, "{}", client.stats());
    assert_eq!(client.stats().origins[0].oldest_leases.len(), 1);
    drop(tx);
    freshpool_testkit::eventually("the upload's stream given back", || {
        client.stats().origins[0].active == 1
    })
    .await;
    let stats = client.stats();
    assert_eq!(stats.origins[0].oldest_leases.len(), 1, "{stats}");
    drop(held);
}

/// A server that answers at once and echoes the request body as it comes:
/// its response body ends only when the upload does.
async fn streaming_echo(http2: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(hyper::Response::new(req.into_body()))
                });
                let io = TokioIo::new(stream);
                let _ = if http2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
            });
        }
    });
    addr
}

/// A [`streaming_echo`] server and a client that speaks only its protocol.
async fn streaming_echo_and_client(http2: bool) -> (std::net::SocketAddr, Client) {
    let version = if http2 {
        HttpVersion::Http2Only
    } else {
        HttpVersion::Http1Only
    };
    let client = Client::builder().http_version(version).build().unwrap();
    (streaming_echo(http2).await, client)
}

/// A request body fed from a channel, which may yield an error.
struct Fallible(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for Fallible {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}

/// The upload fails after the response head came (the server answers
/// before it reads the body): reading the response body then fails with the
/// caller's own `Kind::Body` and the body's words. Over HTTP/2 it read as
/// `Io`, "http2 error" (the stream's reset).
async fn an_upload_failing_after_the_head_is_the_callers_error(http2: bool) {
    let (addr, client) = streaming_echo_and_client(http2).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Ok(Bytes::from_static(b"first"))).await.unwrap();
    let request = http::Request::post(format!("http://{addr}/"))
        .body(freshpool::RequestBody::wrap(Fallible(rx)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    let why = std::io::Error::other("the disk went away");
    tx.send(Err(why)).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return err,
                None => panic!("the response body ended without the upload's error"),
            }
        }
    })
    .await
    .expect("the response body's end");
    assert_eq!(err.kind(), freshpool::Kind::Body, "{err}");
    let message = err.to_string();
    assert_eq!(
        message.matches("the disk went away").count(),
        1,
        "{message}"
    );
    assert!(message.contains("after its response began"), "{message}");
}

#[tokio::test]
async fn http2_an_upload_failing_after_the_head_is_the_callers_error() {
    an_upload_failing_after_the_head_is_the_callers_error(true).await;
}

#[tokio::test]
async fn http1_an_upload_failing_after_the_head_is_the_callers_error() {
    an_upload_failing_after_the_head_is_the_callers_error(false).await;
}

/// Request bodies a server holds unread (dropping them resets their
/// streams).
type HeldBodies = Arc<std::sync::Mutex<Vec<hyper::body::Incoming>>>;

/// An HTTP/2 server allowing one stream per connection that answers every
/// request at once and keeps its body unread until the test drops it; its
/// flow-control windows (stream and connection) are `window` bytes.
/// Returns its address, the count of connections accepted and of those
/// that ended, and the bodies held.
async fn early_answering_h2_holding_uploads(
    window: u32,
) -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    HeldBodies,
    Arc<AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let held = HeldBodies::default();
    let (count, bodies, ends) = (accepted.clone(), held.clone(), ended.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (bodies, ends) = (bodies.clone(), ends.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    bodies.lock().unwrap().push(req.into_body());
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1)
                    .initial_stream_window_size(window)
                    .initial_connection_window_size(window)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                ends.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, held, ended)
}

/// The same for a body in memory larger than HTTP/2's flow-control
/// window: after the early answer hyper still holds most of it, unsent
/// until the server reads, so the stream is still the server's. It went
/// back to the pool at once, and the next request waited behind it for a
/// stream the server would not free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_in_memory_keeps_its_stream_until_it_is_sent() {
    // 8 MiB against hyper's default 1 MiB windows.
    a_body_in_memory_keeps_its_stream_while_the_window_holds_it(8 << 20, 1 << 20).await;
}

/// The same for a body just past the window, whose last chunk the window
/// nearly covers: hyper took it while one byte of window was free, and
/// the body ended with that byte (and the stream's end) still in h2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_one_byte_past_the_window_keeps_its_stream_until_it_is_sent() {
    a_body_in_memory_keeps_its_stream_while_the_window_holds_it(65_536, 65_535).await;
}

/// The same for a streamed body whose one (last) frame is 8 MiB: hyper
/// took the frame at the first byte of window and dropped the body, so
/// the upload read as done while h2 held most of it. (A review found it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_with_a_large_last_frame_keeps_its_stream_until_it_is_sent() {
    let body =
        || freshpool::RequestBody::wrap(http_body_util::Full::new(Bytes::from(vec![7u8; 8 << 20])));
    a_body_keeps_its_stream_while_the_window_holds_it(body, 1 << 20).await;
}

async fn a_body_in_memory_keeps_its_stream_while_the_window_holds_it(size: usize, window: u32) {
    let body = || freshpool::RequestBody::from(vec![7u8; size]);
    a_body_keeps_its_stream_while_the_window_holds_it(body, window).await;
}

async fn a_body_keeps_its_stream_while_the_window_holds_it(
    body: impl Fn() -> freshpool::RequestBody,
    window: u32,
) {
    let (addr, accepted, held, _) = early_answering_h2_holding_uploads(window).await;
    let client = Client::builder()
        .http_version(HttpVersion::Http2Only)
        .response_header_timeout(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    let url = format!("http://{addr}/");
    let request = http::Request::post(&url).body(body()).unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    the_next_request_takes_a_second_connection(&client, &url, &accepted).await;
    // The server drops the unread upload (a reset): its stream is given back.
    held.lock().unwrap().clear();
    the_uploads_stream_is_given_back(&client).await;
}

/// A request body that is not `Sync` (an axum request's body forwarded by
/// a gateway) goes out as it is, over both protocols. (`RequestBody::wrap`
/// asked for `Sync`, which such bodies are not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_sync_is_forwarded() {
    struct NotSync(std::cell::Cell<usize>, Vec<Bytes>);
    impl http_body::Body for NotSync {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            let n = self.0.get();
            self.0.set(n + 1);
            let next = self.1.get(n).cloned();
            std::task::Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
        }
    }
    for http2 in [false, true] {
        let (addr, client) = streaming_echo_and_client(http2).await;
        let chunks = vec![Bytes::from_static(b"not "), Bytes::from_static(b"sync")];
        let request = http::Request::post(format!("http://{addr}/"))
            .body(freshpool::RequestBody::wrap(NotSync(
                Default::default(),
                chunks,
            )))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.into_body().text().await.unwrap(), "not sync");
    }
}

/// A response body that sends a line every 100 ms, 200 of them.
struct Ticking {
    every: tokio::time::Interval,
    left: u32,
}

impl http_body::Body for Ticking {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.every.poll_tick(cx));
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"tick\n",
        )))))
    }
}

/// Like `early_answering_h2` (one stream per connection), but the
/// response body streams slowly: a client's `timeout` ends its read.
async fn slowly_answering_h2() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    answering_h2(1, || Ticking {
        every: tokio::time::interval(Duration::from_millis(100)),
        left: 200,
    })
    .await
}

/// The same when the overall `timeout` ends the response body's read:
/// the stream stays counted until the upload ends. (It was given back at
/// once while hyper still sent the body: one stream more than the server
/// allows, and the next request, handed that connection, waited inside
/// h2 until its own timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_response_read_timed_out_stays_counted_until_its_upload_ends() {
    let (addr, accepted) = slowly_answering_h2().await;
    let client = Client::builder()
        .http_version(HttpVersion::Http2Only)
        .timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let url = format!("http://{addr}/");
    let (tx, response) = start_upload(&client, &url).await;
    let err = response.into_body().bytes().await.unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Timeout, "{err}");
    assert_eq!(client.stats().origins[0].active, 1, "{}", client.stats());
    let got = client.get(&url).await;
    let stats = client.stats();
    let response = got.unwrap_or_else(|e| panic!("{e}\n{stats}"));
    assert_eq!(response.status(), 200);
    drop(response);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    drop(tx);
    the_uploads_stream_is_given_back(&client).await;
}

/// HTTP/1: a server that answers an upload early and then keeps the
/// socket without reading it. The response read to its end closes the
/// connection (hyper takes no next request before the upload ends): it
/// was only marked closed, while hyper's task kept writing the upload and
/// held the socket and the pool's slot for as long as the peer kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_a_connection_closed_under_a_running_upload_frees_its_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        // Held, never read again, until the test ends.
        let _ = held_tx.send(socket);
    });
    let client = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    let (tx, response) = start_upload(&client, &format!("http://{addr}/")).await;
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    freshpool_testkit::eventually("the connection closed, its slot free", || {
        client.stats().open_connections == 0
    })
    .await;
    drop(tx);
    drop(held_rx);
}

/// A streamed request body that panics on its second poll (after "he").
struct PanicsOnSecondPoll(usize);

impl http_body::Body for PanicsOnSecondPoll {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0 += 1;
        if self.0 > 1 {
            panic!("the caller's body broke");
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"he")))))
    }
}

/// A caller's body that panics while it is sent fails its request as a
/// `Body` error naming the panic, over HTTP/1 and HTTP/2, and the pool
/// goes on serving. Over HTTP/2 the request hung (hyper's task that pipes
/// the body died, and the stream waited for the rest), over HTTP/1 it read
/// "the runtime that drove it shut down", and the panic took down the
/// connection's driver task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_panics_fails_its_request_as_a_body_error() {
    for version in [HttpVersion::Http1Only, HttpVersion::Http2Only] {
        let server = freshpool_testkit::TestServer::start(freshpool_testkit::ServerConfig {
            protocol: match version {
                HttpVersion::Http2Only => freshpool_testkit::Protocol::Http2,
                _ => freshpool_testkit::Protocol::Http1,
            },
            ..freshpool_testkit::ServerConfig::default()
        })
        .await;
        let client = Client::builder().http_version(version).build().unwrap();
        let request = http::Request::post(server.url("/echo"))
            .body(freshpool::RequestBody::wrap(PanicsOnSecondPoll(0)))
            .unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{version:?}: the request ends"))
            .unwrap_err();
        assert_eq!(err.kind(), freshpool::Kind::Body, "{version:?}: {err}");
        let chain = format!("{err:#}");
        assert!(
            chain.contains("the caller's body broke"),
            "{version:?}: {chain}"
        );
        let response = client.get(&server.url("/")).await.unwrap();
        assert_eq!(response.into_body().text().await.unwrap(), "ok");
    }
}

/// An upload its server answered in full and then took nothing more of
/// is given up after `PARKED_STALL` (5 s) without progress: its
/// connection takes no new streams and closes, freeing its slot. Its
/// stream stayed the server's for good: one stream fewer on that
/// connection per such upload (here, with one allowed, the connection
/// carried nothing again, and held its slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_upload_its_server_takes_nothing_of_is_given_up() {
    let (addr, accepted, held, _) = early_answering_h2_holding_uploads(1 << 20).await;
    let client = common::h2_client().build().unwrap();
    let url = format!("http://{addr}/");
    let request = http::Request::post(&url)
        .body(freshpool::RequestBody::from(vec![7u8; 8 << 20]))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    // Parked: the stream still counts.
    assert_eq!(client.stats().origins[0].active, 1);
    let started = std::time::Instant::now();
    loop {
        let stats = client.stats();
        if stats.open_connections == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = client.stats();
    assert_eq!(stats.closed_for(CloseReason::Unresponsive), 1, "{stats}");
    // The next request is served, on a new connection.
    let again = client.get(&url).await.unwrap();
    assert_eq!(again.into_body().text().await.unwrap(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    drop(held);
}

/// A parked upload held up by the caller's own body (a stream fed as
/// data comes), not by the server, is not given up however long it
/// waits: the server (which reads what comes) still takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_upload_waiting_for_its_own_body_is_not_given_up() {
    let (addr, _accepted) = early_answering_h2().await;
    let client = common::h2_client().build().unwrap();
    let url = format!("http://{addr}/");
    let (tx, response) = start_upload(&client, &url).await;
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    // Past `PARKED_STALL` (5 s) with nothing to send.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = client.stats();
    assert_eq!(stats.origins[0].active, 1, "{stats}");
    assert_eq!(stats.closed_for(CloseReason::Unresponsive), 0, "{stats}");
    // It goes on, and ends: its stream is given back.
    tx.send(Bytes::from_static(b"later chunk")).await.unwrap();
    drop(tx);
    the_uploads_stream_is_given_back(&client).await;
    assert_eq!(client.stats().closed_for(CloseReason::Unresponsive), 0);
}

/// The same when the last client is dropped while the upload is parked:
/// the pool's drop lets the connection's streams in flight (this upload)
/// run to their end, and once the upload is given up the connection is
/// still closed (it stayed open for as long as the server held on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_upload_given_up_after_the_clients_drop_still_closes() {
    let (addr, _, held, ended) = early_answering_h2_holding_uploads(1 << 20).await;
    let client = common::h2_client().build().unwrap();
    let request = http::Request::post(format!("http://{addr}/"))
        .body(freshpool::RequestBody::from(vec![7u8; 8 << 20]))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    drop(client);
    let started = std::time::Instant::now();
    while ended.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
}

/// An HTTP/2 server allowing one stream per connection that reads a
/// request's body to its end before it answers ("ok").
async fn reading_first_h2() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    h2_server(1, || Full::new(Bytes::from_static(b"ok")), true).await
}

/// POSTs a body fed from a channel (one chunk sent, then open until the
/// returned sender is dropped), under `within` if given (dropped then),
/// and returns the sender and how the request ended.
async fn try_upload(
    client: &Client,
    url: &str,
    within: Option<Duration>,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    Result<http::Response<freshpool::Body>, String>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Bytes::from_static(b"first chunk")).await.unwrap();
    let request = http::Request::post(url)
        .body(freshpool::RequestBody::wrap(ChannelBody(rx)))
        .unwrap();
    let sent = client.request(request);
    let ended = match within {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(got) => got.map_err(|e| format!("{:?}: {e}", e.kind())),
            Err(_) => Err("dropped".to_owned()),
        },
        None => sent.await.map_err(|e| format!("{:?}: {e}", e.kind())),
    };
    (tx, ended)
}

/// A request whose response head does not come while its upload goes on
/// (the server reads the whole body first), ended before its head by
/// `response_header_timeout`, by the overall `timeout`, or by its caller's
/// drop: hyper resets the stream (CANCEL) as the response future goes, so
/// the server no longer counts it, and the pool gives it back at once. (A
/// review took the stream for one the server still counted, as after a
/// response that ends early (parked, above): handed on, the next request
/// would wait inside h2 behind the upload, here for good. It gets its
/// answer at once, on this connection or, once the silent one is
/// suspected, on a new one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ended_before_its_head_is_reset_and_given_back() {
    for (how, builder, within) in [
        (
            "ResponseHeaderTimeout",
            Client::builder().response_header_timeout(Some(Duration::from_millis(300))),
            None,
        ),
        (
            "Timeout",
            Client::builder().timeout(Some(Duration::from_millis(300))),
            None,
        ),
        (
            "dropped",
            Client::builder(),
            Some(Duration::from_millis(300)),
        ),
    ] {
        let (addr, _accepted) = reading_first_h2().await;
        let client = builder
            .http_version(HttpVersion::Http2Only)
            .build()
            .unwrap();
        let url = format!("http://{addr}/");
        let (tx, ended) = try_upload(&client, &url, within).await;
        let err = ended.expect_err("no head before the upload ends");
        assert!(err.starts_with(how), "{how}: {err}");
        let got = tokio::time::timeout(Duration::from_secs(5), client.get(&url))
            .await
            .unwrap_or_else(|_| panic!("{how}: the next request waited\n{}", client.stats()))
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(got.into_body().text().await.unwrap(), "ok", "{how}");
        assert_eq!(
            client.stats().origins[0].active,
            0,
            "{how}: {}",
            client.stats()
        );
        drop(tx);
    }
}
