//! A request future made outside any tokio runtime and awaited in one:
//! `rt.block_on(client.get(url))` evaluates `get` before `block_on` enters
//! the runtime. With the overall `timeout` set, making the future created
//! the deadline's tokio timer, which panicked there ("there is no reactor
//! running").

use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::TestServer;

#[test]
fn a_request_future_made_outside_a_runtime_runs_in_one_with_a_timeout() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(TestServer::http1());
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = rt.block_on(client.get(&server.url("/"))).unwrap();
    let body = rt.block_on(response.into_body().text()).unwrap();
    assert_eq!(body, "ok");
    // The deadline still bounds the request: a slow answer fails on time.
    let client = Client::builder()
        .timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let err = rt
        .block_on(client.get(&server.url("/delay/5000")))
        .unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Timeout, "{err}");
    assert!(err.to_string().contains("timed out after 200ms"), "{err}");
}

/// A multi-thread runtime of one worker: its tasks (the connections'
/// drivers, the server) run whoever polls the request.
fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `fut` to its end on this thread, outside any tokio runtime (a
/// caller's own executor, as `futures::executor::block_on`).
fn block_on_this_thread<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// With a `timeout` set, a response body read outside any runtime (the
/// connection driven by a multi-thread runtime's workers): its deadline's
/// timer was made at the body's first wait, where tokio panicked.
#[test]
fn a_response_body_read_outside_a_runtime_keeps_its_deadline() {
    let rt = one_worker_runtime();
    let server = rt.block_on(TestServer::http1());
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    // Five one-byte frames, 40 ms apart: the body waits between them.
    let response = rt.block_on(client.get(&server.url("/drip/5"))).unwrap();
    let body = block_on_this_thread(response.into_body().bytes()).unwrap();
    assert_eq!(body.len(), 5);
    // And the deadline still ends a body read there: 50 frames take 2 s.
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let response = rt.block_on(client.get(&server.url("/drip/50"))).unwrap();
    let err = block_on_this_thread(response.into_body().bytes()).unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Timeout, "{err}");
    assert!(err.is_possibly_processed(), "{err:?}");
}

/// A request that must queue (the only connection is held), polled
/// outside any runtime: its wait's timer panicked there ("no reactor
/// running"). It now fails with `Closed` saying why, as a request that
/// must dial there does, and the held connection still serves afterwards.
#[test]
fn a_request_that_must_queue_outside_a_runtime_fails_without_a_panic() {
    let rt = one_worker_runtime();
    let server = rt.block_on(TestServer::http1());
    let client = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    let held = rt
        .block_on(client.get(&server.url("/stream/100000")))
        .unwrap();
    let err = block_on_this_thread(client.get(&server.url("/"))).unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Closed, "{err}");
    assert!(
        err.to_string().contains("outside any tokio runtime"),
        "{err}"
    );
    drop(held);
    let response = rt.block_on(client.get(&server.url("/"))).unwrap();
    assert_eq!(rt.block_on(response.into_body().text()).unwrap(), "ok");
    assert_eq!(client.stats().origins[0].waiting, 0);
}

/// A request served by a warm connection (no wait, no dial) and polled
/// outside any runtime, its connection driven by a multi-thread runtime's
/// workers: with a `timeout` set, its deadline's timer was made at its
/// first wait, where tokio panicked ("no reactor running"). It now fails
/// with `Closed` saying why; without a timeout it is answered, and with a
/// `response_header_timeout` too (that timer is skipped there).
#[test]
fn a_request_on_a_warm_connection_outside_a_runtime_does_not_panic() {
    let rt = one_worker_runtime();
    let server = rt.block_on(TestServer::http1());
    let warm = |client: &Client| {
        let body = rt.block_on(async {
            let response = client.get(&server.url("/")).await.unwrap();
            response.into_body().text().await.unwrap()
        });
        assert_eq!(body, "ok");
    };
    let timed = Client::builder()
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    warm(&timed);
    let before = server.stats().requests();
    let err = block_on_this_thread(timed.get(&server.url("/delay/200"))).unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Closed, "{err}");
    assert!(
        err.to_string().contains("outside any tokio runtime"),
        "{err}"
    );
    // Failed before it went: nothing reached the server.
    assert!(!err.is_possibly_processed(), "{err:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.stats().requests(),
        before,
        "the request was not sent"
    );
    let header_timed = Client::builder()
        .response_header_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    warm(&header_timed);
    let response = block_on_this_thread(header_timed.get(&server.url("/delay/200"))).unwrap();
    let body = block_on_this_thread(response.into_body().text()).unwrap();
    assert_eq!(body, "ok");
}

/// A response body read outside any runtime after the runtime that made
/// its request (and its `timeout` timer) shut down, its connection driven
/// by another runtime that lives on: polling that timer panicked ("A Tokio
/// 1.x context was found, but it is being shutdown"). No timer can be made
/// where it is read, so the read ends with the error that says so, as for
/// a body whose timer could not be made at all.
#[test]
fn a_body_read_outside_a_runtime_after_its_timers_runtime_shut_down_fails_without_a_panic() {
    read_outside_after_the_timers_runtime_shut_down(false);
}

/// The same, with first frames read outside any runtime while the
/// timer's runtime still ran: the pool asked that runtime whether it had
/// shut down by a task it spawned there, which ran. Taken for proof that
/// the runtime was alive at the next wait, after it shut down, it let
/// the timer be polled, and panic.
#[test]
fn a_body_read_outside_a_runtime_across_its_timers_runtime_shutting_down_fails_without_a_panic() {
    read_outside_after_the_timers_runtime_shut_down(true);
}

fn read_outside_after_the_timers_runtime_shut_down(first_frame_before: bool) {
    use http_body_util::BodyExt;
    let lasting = one_worker_runtime();
    let server = lasting.block_on(TestServer::http1());
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(20)))
        .build()
        .unwrap();
    // The connection, dialed (and driven) by `lasting`.
    lasting.block_on(async {
        let response = client.get(&server.url("/")).await.unwrap();
        response.into_body().bytes().await.unwrap();
    });
    let short_lived = one_worker_runtime();
    // Fifty one-byte frames, 40 ms apart: the body waits between them.
    let response = short_lived
        .block_on(client.get(&server.url("/drip/50")))
        .unwrap();
    let mut body = response.into_body();
    if first_frame_before {
        // (Three: the waits between them ask the runtime.)
        for _ in 0..3 {
            let frame = block_on_this_thread(body.frame()).expect("a frame");
            assert!(frame.is_ok(), "{frame:?}");
        }
        // (Time for the probe the wait spawned there to run.)
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(short_lived);
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on_this_thread(body.bytes())
    }));
    let err = read.expect("no panic").unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Closed, "{err}");
    assert!(
        err.to_string().contains("outside any tokio runtime"),
        "{err}"
    );
}

/// A GET polled outside any runtime whose warm connection turns out dead
/// (its response cut off before the head) goes again through a normal
/// checkout: it reserved a slot for a dial of its own first, found no
/// runtime to dial on, and failed with a bare "no async runtime". (Here
/// the other idle connection is found stale too, so the retry must wait
/// for a dial, and says why it cannot.)
#[test]
fn a_retry_outside_a_runtime_says_why_it_cannot_dial() {
    let rt = one_worker_runtime();
    let (server, proxy) = rt.block_on(async {
        let server = TestServer::http1().await;
        let proxy = freshpool_testkit::ChaosProxy::start(server.addr()).await;
        (server, proxy)
    });
    let client = Client::new();
    let url = proxy.url("/");
    // Two idle connections: two requests at once.
    rt.block_on(async {
        let (a, b) = tokio::join!(client.get(&url), client.get(&url));
        a.unwrap().into_body().text().await.unwrap();
        b.unwrap().into_body().text().await.unwrap();
    });
    proxy.truncate_next_response(0);
    let err = block_on_this_thread(client.get(&url)).unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::Closed, "{err}");
    assert!(
        err.to_string().contains("polled outside any tokio runtime"),
        "{err}"
    );
    assert_eq!(client.stats().origins[0].retries, 1, "{}", client.stats());
    drop(server);
}

/// A request on a runtime built without `enable_io`: tokio's connect
/// panics in the attempt's task ("IO is disabled"). The error says so,
/// with the address: the panic was joined without its address, and the
/// error read "tried 127.0.0.1:PORT (no answer)", a cause that was not.
#[test]
fn a_runtime_without_io_is_named_in_the_connect_error() {
    let rt = one_worker_runtime();
    let server = rt.block_on(TestServer::http1());
    let no_io = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let client = Client::new();
    let err = no_io.block_on(client.get(&server.url("/"))).unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(text.to_lowercase().contains("io is disabled"), "{text}");
    assert!(!text.contains("no answer"), "{text}");
}
