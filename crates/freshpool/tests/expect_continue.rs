//! `Expect: 100-continue` on long-idle connections: the body waits for the
//! server's `100 Continue`, or for `expect_continue_timeout`, or for the
//! server's final answer, whichever comes first.
//!
//! (Its own test binary: the panic hook below is process-wide.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use freshpool::{Client, Kind};
use freshpool_testkit::TestServer;

mod common;
use common::expect::{gating_client, raw_server, rest_a_connection, text};

/// A server that answers before reading the body (its `/` handler never
/// reads it, so hyper sends no `100 Continue`) drops the client's
/// informational callback: the gate's channel closes while its timer still
/// runs. The gate polled that finished channel again when the timer woke
/// it, and tokio's oneshot panics when polled after completion: the panic
/// took down the connection's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_answer_before_100_continue_releases_the_body_without_a_panic() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let server = TestServer::http1().await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(10))
        .expect_continue_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = server.url("/");
    assert_eq!(text(&client, client.get(&url)).await, "ok");
    for round in 0..3 {
        // Idle past validate_after_idle: the POST's body is gated.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let post = client.post(&url, vec![b'x'; 1000]);
        assert_eq!(text(&client, post).await, "ok", "round {round}");
        // Past the gate's timer, which wakes the body again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            panics.load(Ordering::SeqCst),
            0,
            "round {round}: a task panicked"
        );
    }
    // The pool still works (whatever became of those connections).
    assert_eq!(text(&client, client.get(&url)).await, "ok");
}

/// A request body stream that fails is the caller's body error
/// (`Kind::Body`), not the server breaking the protocol, nor "possibly
/// processed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_request_body_is_a_body_error() {
    let server = TestServer::http1().await;
    let client = Client::builder().expect_continue(false).build().unwrap();
    let url = server.url("/echo");
    // Warm: the failing POST goes over a reused connection, where a
    // failure after sending used to be worded "possibly processed".
    assert_eq!(text(&client, client.get(&server.url("/"))).await, "ok");
    for _ in 0..2 {
        let body = freshpool::RequestBody::wrap(Scripted {
            chunks: [
                Ok(&b"part"[..]),
                Err(std::io::Error::other("the upload's source broke")),
            ]
            .into(),
            exact: None,
        });
        let request = http::Request::post(&url).body(body).unwrap();
        let err = client.request(request).await.unwrap_err();
        assert_eq!(err.kind(), Kind::Body, "{err}");
        assert!(
            format!("{err:?}").contains("the upload's source broke"),
            "{err:?}"
        );
    }
}

/// A request body that yields the given chunks (an `Err` fails it there),
/// then ends; `exact` is its announced length. `is_end_stream` stays false
/// (the default), as for `StreamBody`.
struct Scripted {
    chunks: std::collections::VecDeque<std::io::Result<&'static [u8]>>,
    exact: Option<u64>,
}

impl http_body::Body for Scripted {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        let next = self.chunks.pop_front();
        std::task::Poll::Ready(next.map(|c| c.map(|b| http_body::Frame::data(b.into()))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.exact.map_or_else(
            http_body::SizeHint::default,
            http_body::SizeHint::with_exact,
        )
    }
}

/// A server that answers each request as soon as it has the head, and
/// keeps reading whatever follows (a raw socket: hyper's server would close
/// a connection whose request body it did not read).
async fn early_answering_server() -> std::net::SocketAddr {
    answering_server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await
}

/// A raw server that answers the first request head on each connection
/// with "ok" at once, then reads nothing more while it keeps the socket
/// open (a server done with a request whose body it does not want).
async fn answering_then_deaf_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw_server(|mut socket| async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

/// An in-memory body is taken by hyper whole and queued to be written;
/// the response can end before it is. With a server that answered early
/// and stopped reading, that connection went back to the pool and the next
/// request waited in hyper's readiness for as long as the server kept the
/// socket (no timeout covers that wait). A pooled connection not ready
/// within a moment is now shut down and the request, never sent, goes on
/// another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_writing_an_in_memory_body_does_not_hold_up_the_next_request() {
    let addr = answering_then_deaf_server().await;
    let url = format!("http://{addr}/");
    // One connection per host: the stuck one must also give its slot back
    // (its task went on writing to the deaf server, holding it).
    let client = Client::builder()
        .expect_continue(false)
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let upload = http::Request::post(&url).body(vec![0u8; 64 << 20]).unwrap();
    assert_eq!(text(&client, client.request(upload)).await, "ok");
    let next = tokio::time::timeout(Duration::from_secs(5), text(&client, client.get(&url)))
        .await
        .expect("the next request is not stuck behind the queued body");
    assert_eq!(next, "ok");
    assert_eq!(client.stats().origins[0].created, 2, "{}", client.stats());
}

/// The same connection closed by the pool rather than reused (here:
/// `max_idle_per_host(0)`; also a sweep, a lifetime, a freeze, a slot
/// given to another origin): hyper's task went on writing the queued body
/// to the deaf server, and kept the socket, its task and the slot for as
/// long as the server held on. Every connection the pool closes is shut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_still_writing_an_in_memory_body_frees_its_slot() {
    let addr = answering_then_deaf_server().await;
    let url = format!("http://{addr}/");
    let client = Client::builder()
        .expect_continue(false)
        .max_connections_per_host(1)
        .max_idle_per_host(0)
        .build()
        .unwrap();
    let upload = http::Request::post(&url).body(vec![0u8; 64 << 20]).unwrap();
    assert_eq!(text(&client, client.request(upload)).await, "ok");
    freshpool_testkit::eventually("the closed connection's slot is free", || {
        client.stats().open_connections == 0
    })
    .await;
}

/// A raw server that answers every request head with `answer`, at once,
/// and keeps reading whatever follows.
async fn answering_server(answer: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw_server(move |mut socket| async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let Ok(n) = socket.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
            // One answer per request head seen.
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                seen.drain(..end + 4);
                if socket.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// A request body stream the test feeds by hand.
struct Fed(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for Fed {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// A POST to `url` whose streamed body has sent its first part and goes on
/// while `feed` (returned) stays open.
fn unfinished_upload(
    url: &str,
) -> (
    tokio::sync::mpsc::Sender<bytes::Bytes>,
    http::Request<freshpool::RequestBody>,
) {
    let (feed, rx) = tokio::sync::mpsc::channel(1);
    feed.try_send(bytes::Bytes::from_static(b"first part"))
        .unwrap();
    let upload = http::Request::post(url)
        .body(freshpool::RequestBody::wrap(Fed(rx)))
        .unwrap();
    (feed, upload)
}

/// The response ended while the request body was still going out (the
/// server answered early; the caller still feeds the upload). Pooled, the
/// connection made the next request wait in hyper's readiness until that
/// upload ended, with no timeout covering the wait. Such a connection is
/// closed instead, as Go's transport does; one whose upload finished
/// first is reused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_sending_its_request_body_is_not_reused() {
    let addr = early_answering_server().await;
    let url = format!("http://{addr}/");
    let client = Client::builder().expect_continue(false).build().unwrap();
    let (feed, upload) = unfinished_upload(&url);
    assert_eq!(text(&client, client.request(upload)).await, "ok");
    // `feed` stays open: the upload is not over.
    let next = tokio::time::timeout(Duration::from_secs(3), text(&client, client.get(&url)))
        .await
        .expect("the next request is not stuck behind the unfinished upload");
    assert_eq!(next, "ok");
    drop(feed);

    // An upload that ended before its answer leaves a reusable connection.
    // (Of known length: the server above reads no chunked framing.)
    let before = client.stats().origins[0].created;
    let whole = http_body_util::Full::new(bytes::Bytes::from_static(b"all"));
    let upload = http::Request::post(&url)
        .body(freshpool::RequestBody::wrap(whole))
        .unwrap();
    assert_eq!(text(&client, client.request(upload)).await, "ok");
    assert_eq!(text(&client, client.get(&url)).await, "ok");
    assert_eq!(
        client.stats().origins[0].created,
        before,
        "{}",
        client.stats()
    );
}

/// As above, but the caller reads the answer's one data frame and drops
/// the body without polling for its end (as a proxy that forwards a body
/// of known length does). The body's drop gave the connection back with no
/// look at the upload, and the next request hung in hyper's readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_body_does_not_pool_a_connection_still_sending_its_request() {
    use http_body_util::BodyExt;
    let addr = early_answering_server().await;
    let url = format!("http://{addr}/");
    let client = Client::builder().expect_continue(false).build().unwrap();
    let (feed, upload) = unfinished_upload(&url);
    let mut body = client.request(upload).await.unwrap().into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "ok");
    assert!(http_body::Body::is_end_stream(&body), "all bytes read");
    drop(body);
    // `feed` stays open: the upload is not over.
    let next = tokio::time::timeout(Duration::from_secs(3), text(&client, client.get(&url)))
        .await
        .expect("the next request is not stuck behind the unfinished upload");
    assert_eq!(next, "ok");
    drop(feed);
}

/// A streamed body of known length that never says it ended (as
/// `StreamBody` over a file with a `Content-Length`): hyper stops polling it
/// once the length is written, so its end is seen when hyper drops it. Its
/// connection is reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_upload_of_known_length_leaves_a_reusable_connection() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let url = server.url("/echo");
    for round in 0..3 {
        let body = Scripted {
            chunks: [Ok(&b"12345"[..])].into(),
            exact: Some(5),
        };
        let upload = http::Request::post(&url)
            .body(freshpool::RequestBody::wrap(body))
            .unwrap();
        assert_eq!(
            text(&client, client.request(upload)).await,
            "12345",
            "round {round}"
        );
    }
    let stats = client.stats();
    assert_eq!(
        stats.origins[0].created, 1,
        "one connection for all: {stats}"
    );
}

/// A caller's own informational callback (`hyper::ext::on_informational`,
/// to see `103 Early Hints`) survives the pool's gating of a body on a
/// long-idle connection: the gate's callback replaced it, and the caller
/// saw no 1xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_informational_callback_is_kept() {
    let addr = answering_server(
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let url = format!("http://{addr}/");
    let client = gating_client();
    rest_a_connection(&client, &url).await;
    let hints = Arc::new(AtomicUsize::new(0));
    let mut post = http::Request::post(&url)
        .body(freshpool::RequestBody::from("x"))
        .unwrap();
    let seen = hints.clone();
    hyper::ext::on_informational(&mut post, move |res| {
        if res.status() == http::StatusCode::EARLY_HINTS {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(text(&client, client.request(post)).await, "ok");
    assert_eq!(hints.load(Ordering::SeqCst), 1);
}

/// `response_header_timeout` under `expect_continue_timeout` (800 ms
/// against 1 s): the pool's own hold-back of a gated body
/// counted against the server, so every gated POST to a server that
/// ignores Expect failed with ResponseHeaderTimeout, and the pool never
/// learned that the server ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_wait_for_100_continue_is_not_the_servers_delay() {
    let server = TestServer::start(freshpool_testkit::ServerConfig {
        expect_continue: false,
        ..Default::default()
    })
    .await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(10))
        // (Not 200 ms under the default 250: the server's answer to the
        // body must come within what is left, on a loaded machine too.)
        .expect_continue_timeout(Duration::from_secs(1))
        .response_header_timeout(Some(Duration::from_millis(800)))
        .build()
        .unwrap();
    let url = server.url("/echo");
    for _ in 0..2 {
        rest_a_connection(&client, &server.url("/")).await;
        assert_eq!(text(&client, client.post(&url, "x")).await, "x");
    }
}

/// A POST whose body was held back (the pool's `Expect: 100-continue`) is
/// not sent again once the server began to answer: a handler that acts on
/// the head alone may have run. (It was: the body withheld counted as
/// "not processed" even after response bytes arrived, and the POST ran
/// twice.) Here the server answers, and the connection dies five bytes
/// into the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_post_whose_answer_had_begun_is_not_sent_again() {
    let server = TestServer::http1().await;
    let chaos = freshpool_testkit::ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(10))
        .expect_continue_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    rest_a_connection(&client, &chaos.url("/")).await;
    chaos.truncate_next_response(5);
    let request = http::Request::post(chaos.url("/"))
        .header("x-request-id", "p1")
        .body(freshpool::RequestBody::from(vec![b'x'; 1000]))
        .unwrap();
    let err = client.request(request).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PossiblyProcessed, "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.stats().duplicated_request_ids(),
        Vec::<String>::new(),
        "the POST ran twice"
    );
}

/// A request body shorter than the `Content-Length` it announced is the
/// caller's error (`Kind::Body`), not the server's broken message: it is
/// not sent again on another connection. (It read as `Protocol`, blaming
/// the server, and a PUT on a reused connection went twice, short twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_the_callers_error() {
    let server = TestServer::http1().await;
    let client = Client::new();
    assert_eq!(text(&client, client.get(&server.url("/"))).await, "ok");
    let body = freshpool::RequestBody::wrap(Scripted {
        chunks: [Ok(&b"abc"[..])].into(),
        exact: Some(10),
    });
    let request = http::Request::put(server.url("/echo")).body(body).unwrap();
    let err = client.request(request).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Body, "{err}");
    assert_eq!(client.stats().origins[0].retries, 0, "{}", client.stats());
}

/// A held-back body's response-head timeout names the limit it ran to:
/// `response_header_timeout` plus the hold-back's `expect_continue_timeout`
/// (it named the first alone, 250 ms short by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_requests_head_timeout_names_the_limit_it_ran_to() {
    let addr = answering_then_deaf_server().await;
    let url = format!("http://{addr}/");
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(10))
        .response_header_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    rest_a_connection(&client, &url).await;
    let err = client
        .post(&url, vec![b'x'; 100])
        .await
        .expect_err("the server answers no more");
    assert_eq!(err.kind(), Kind::ResponseHeaderTimeout, "{err}");
    assert!(
        err.to_string()
            .contains("550ms (response_header_timeout 300ms + expect_continue_timeout 250ms"),
        "{err}"
    );
}

/// A PUT of `body` to an HTTP/2 server, which fails: its error.
async fn put_over_http2(body: Scripted) -> freshpool::Error {
    let (server, client) = common::http2_server_and_client(Client::builder()).await;
    let request = http::Request::put(server.url("/echo"))
        .body(freshpool::RequestBody::wrap(body))
        .unwrap();
    client.request(request).await.unwrap_err()
}

/// The same over HTTP/2, where hyper checks no length and returns the
/// stream's reset rather than the body's error: the request's error is
/// the body's (it was `Io`, "http2 error", read as the connection's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_length_is_the_callers_error_over_http2_too() {
    let err = put_over_http2(Scripted {
        chunks: [Ok(&b"abc"[..])].into(),
        exact: Some(10),
    })
    .await;
    assert_eq!(err.kind(), Kind::Body, "{err}");
    assert!(err.to_string().contains("7 bytes short"), "{err}");
}

/// Over HTTP/2 a failing body's error keeps its source chain, which leads
/// to the caller's own error as over HTTP/1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_body_over_http2_keeps_the_callers_error_as_source() {
    let err = put_over_http2(Scripted {
        chunks: [Ok(&b"ab"[..]), Err(std::io::Error::other("boom"))].into(),
        exact: None,
    })
    .await;
    assert_eq!(err.kind(), Kind::Body, "{err}");
    let mut source = std::error::Error::source(&err);
    let mut found = false;
    while let Some(s) = source {
        found |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.to_string() == "boom");
        source = s.source();
    }
    assert!(found, "the caller's io::Error in the chain: {err:?}");
}

/// Library bug (found by a read-only review): the gate's timer was made
/// by the runtime that sent the request, but it is polled by the
/// connection's task, which another runtime may drive. When the sender's
/// runtime shut down while the body waited at the gate, the connection's
/// task polled a timer of a runtime shut down and panicked ("A Tokio 1.x
/// context was found, but it is being shutdown"): the connection died, and
/// the request went again on another. (A request handed between runtimes
/// mid-flight: an outer `timeout` gave up on it under one, another awaits
/// it.)
#[test]
fn a_gated_upload_outlives_the_runtime_that_sent_it() {
    use common::expect::RawRequests;
    use tokio::io::AsyncWriteExt;
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    // Never says `100 Continue`: reads each body as it comes, then answers.
    let server_rt = runtime();
    let addr = server_rt.block_on(raw_server(|mut socket| async move {
        let mut requests = RawRequests::default();
        while let Some(head) = requests.head(&mut socket).await {
            if requests.body(&mut socket, &head).await.is_none() {
                return;
            }
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if socket.write_all(ok).await.is_err() {
                return;
            }
        }
    }));
    let url = format!("http://{addr}/");
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(10))
        .expect_continue_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    // The connection, dialed (and driven) by `lasting`, idle past 10 ms.
    let lasting = runtime();
    lasting.block_on(rest_a_connection(&client, &url));
    // The POST is sent under `short_lived`: its body waits at the gate
    // (400 ms) when that runtime is dropped.
    let short_lived = runtime();
    let mut post = Box::pin({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.post(&url, vec![b'x'; 1000]).await?;
            response.into_body().text().await
        }
    });
    let gave_up = short_lived
        .block_on(async { tokio::time::timeout(Duration::from_millis(100), post.as_mut()).await });
    assert!(gave_up.is_err(), "the body waits at the gate for 400 ms");
    drop(short_lived);
    let answer = lasting.block_on(post);
    assert_eq!(answer.expect("the POST's answer"), "ok");
    // On the connection it was sent on: the panic killed that one, and the
    // body (never written) went again on a new connection.
    let stats = client.stats();
    assert_eq!(stats.origins[0].created, 1, "{stats}");
    assert_eq!(
        stats.closed_for(freshpool::CloseReason::Error),
        0,
        "{stats}"
    );
}
