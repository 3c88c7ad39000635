//! What the pool learns of an origin's `Expect: 100-continue` support, and
//! the `417 Expectation Failed` to its own expectation (raw TCP servers
//! and a hyper test server on 127.0.0.1).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::TestServer;

mod common;
use common::expect::{gating_client, raw_server, rest_a_connection, text, RawRequests};

/// A server (or proxy) that refuses `Expect: 100-continue` with `417
/// Expectation Failed` (then closes the connection if `close`, else reads
/// on; a body sent after the refusal is read as the start of the next
/// head), and otherwise reads the body and answers "ok". Counts its 417s.
async fn expect_refusing_server(close: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let refusals = Arc::new(AtomicUsize::new(0));
    let counted = refusals.clone();
    let addr = raw_server(move |mut socket| {
        let refusals = counted.clone();
        async move {
            let mut reader = RawRequests::default();
            loop {
                let Some(head) = reader.head(&mut socket).await else {
                    return;
                };
                if head.contains("expect: 100-continue") {
                    refusals.fetch_add(1, Ordering::SeqCst);
                    let refusal: &[u8] = if close {
                        b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    } else {
                        b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\n\r\n"
                    };
                    if socket.write_all(refusal).await.is_err() || close {
                        return;
                    }
                    continue;
                }
                if reader.body(&mut socket, &head).await.is_none() {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if socket.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, refusals)
}

/// The pool adds `Expect: 100-continue` on its own (a body over a
/// connection that idled long). A server that refuses it with 417 got that
/// answer handed to the caller, who never asked for the expectation: RFC
/// 9110 section 10.1.1 says to repeat the request without it, as curl
/// does. The body was never sent, so this is safe for a POST too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_417_to_the_pools_own_expect_repeats_the_request_without_it() {
    a_417_is_repeated_once_and_learned(true).await;
}

/// The same with a server that keeps the connection after its 417. On
/// one thread hyper hands the gate the final answer before the send loop
/// sees the response, and the gate let the body go: the 417 was taken for
/// an answer to a body already sent and reached the caller, and the origin
/// was never learned, so every later gated POST got a 417 too.
#[tokio::test]
async fn a_417_on_a_kept_connection_is_repeated_too() {
    a_417_is_repeated_once_and_learned(false).await;
}

async fn a_417_is_repeated_once_and_learned(close: bool) {
    let (addr, refusals) = expect_refusing_server(close).await;
    let url = format!("http://{addr}/");
    let client = gating_client();
    rest_a_connection(&client, &url).await;
    let post = client.post(&url, "x");
    assert_eq!(text(&client, post).await, "ok");
    assert_eq!(refusals.load(Ordering::SeqCst), 1);
    // Sent twice: counted as a retry (it was not counted at all).
    let stats = client.stats();
    assert_eq!(stats.origins[0].retries, 1, "{stats}");
    // The origin is known not to take Expect now: no second refusal.
    rest_a_connection(&client, &url).await;
    assert_eq!(text(&client, client.post(&url, "y")).await, "ok");
    assert_eq!(refusals.load(Ordering::SeqCst), 1);
}

/// A server that answers before it reads the body (a 401, a redirect, a
/// handler that ignores bodies) sent its final answer instead of `100
/// Continue`: that says nothing of whether it takes the expectation, yet
/// the origin was marked as not taking it, for good, and later bodies lost
/// their "held back, so safe to retry" proof. Only a wait that runs out
/// marks the origin so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_final_answer_does_not_switch_the_gate_off() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_millis(10))
        // (The answer comes first anyway; a wait that ran out on a slow
        // machine would rightly switch the gate off and fail the test.)
        .expect_continue_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for round in 0..2 {
        // A long-idle reused connection, so the POST's body is gated.
        assert_eq!(text(&client, client.get(&server.url("/"))).await, "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let post = client.post(&server.url("/header/expect"), "x");
        assert_eq!(text(&client, post).await, "100-continue", "round {round}");
    }
}

/// A server that sends `100 Continue` only after 400 ms of work of its
/// own (past the 250 ms the pool waits), then reads the body and answers
/// "expect" if the request carried `Expect`, else "ok".
async fn slow_continue_server() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    raw_server(|mut socket| async move {
        let mut reader = RawRequests::default();
        loop {
            let Some(head) = reader.head(&mut socket).await else {
                return;
            };
            let expects = head.contains("expect: 100-continue");
            if expects {
                tokio::time::sleep(Duration::from_millis(400)).await;
                if socket
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if reader.body(&mut socket, &head).await.is_none() {
                return;
            }
            let answer: &[u8] = if expects {
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nexpect"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            };
            if socket.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A `100 Continue` that comes after the pool's wait ran out (a handler
/// that reads the body only after slow work of its own) still says the
/// server takes the expectation. It was learned as "ignores Expect", for
/// good: later bodies to that origin were never held back again, and lost
/// the safe retry a held-back body gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_100_continue_does_not_switch_the_gate_off() {
    let addr = slow_continue_server().await;
    let url = format!("http://{addr}/");
    let client = gating_client();
    for round in 0..2 {
        rest_a_connection(&client, &url).await;
        let post = client.post(&url, "x");
        assert_eq!(text(&client, post).await, "expect", "round {round}");
    }
}

/// A streamed body cannot be sent again, so a 417 to a gated one could
/// not be repeated and reached the caller. Such bodies are not gated: the
/// gate's point is a body the pool can send again once it is known unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_not_gated_so_no_417_reaches_the_caller() {
    let (addr, refusals) = expect_refusing_server(true).await;
    let url = format!("http://{addr}/");
    let client = gating_client();
    rest_a_connection(&client, &url).await;
    let whole = http_body_util::Full::new(bytes::Bytes::from_static(b"x"));
    let upload = http::Request::post(&url)
        .body(freshpool::RequestBody::wrap(whole))
        .unwrap();
    assert_eq!(text(&client, client.request(upload)).await, "ok");
    assert_eq!(refusals.load(Ordering::SeqCst), 0);
}

/// An HTTP/1.0 request is not gated: its servers ignore `Expect` (hyper's
/// does), so its body waited out the 250 ms timer, and the origin was then
/// marked as not taking the expectation, which took the gate from later
/// HTTP/1.1 bodies too. (A review found it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_is_not_gated_and_teaches_nothing() {
    let server = TestServer::http1().await;
    let client = gating_client();
    let url = server.url("/echo");
    rest_a_connection(&client, &server.url("/")).await;
    let request = http::Request::post(&url)
        .version(http::Version::HTTP_10)
        .header("content-length", "2")
        .body(freshpool::RequestBody::from("hi"))
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(text(&client, client.request(request)).await, "hi");
    let took = started.elapsed();
    // The next HTTP/1.1 body on a rested connection is still gated.
    let expect = server.url("/header/expect");
    rest_a_connection(&client, &server.url("/")).await;
    let post = client.post(&expect, "x");
    assert_eq!(
        text(&client, post).await,
        "100-continue",
        "(HTTP/1.0 took {took:?})"
    );
}

/// A 417 to the pool's `Expect` that comes after the wait let the body go
/// (a round trip longer than `expect_continue_timeout`, here a server that
/// takes 400 ms and reads the body first) is the server refusing the
/// expectation all the same: the request is repeated without it. It
/// reached the caller, who never asked for the expectation. (A review
/// found it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_417_after_the_wait_released_the_body_is_repeated_too() {
    use tokio::io::AsyncWriteExt;
    let refusals = Arc::new(AtomicUsize::new(0));
    let counted = refusals.clone();
    let addr = raw_server(move |mut socket| {
        let refusals = counted.clone();
        async move {
            let mut reader = RawRequests::default();
            while let Some(head) = reader.head(&mut socket).await {
                let expects = head.contains("expect: 100-continue");
                if expects {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                if reader.body(&mut socket, &head).await.is_none() {
                    return;
                }
                let answer: &[u8] = if expects {
                    refusals.fetch_add(1, Ordering::SeqCst);
                    b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                if socket.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let url = format!("http://{addr}/");
    let client = gating_client();
    rest_a_connection(&client, &url).await;
    assert_eq!(text(&client, client.post(&url, "x")).await, "ok");
    assert_eq!(refusals.load(Ordering::SeqCst), 1);
}
