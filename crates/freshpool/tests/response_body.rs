//! Reading a response body: `Body::bytes` and `Body::text` over any
//! framing (HTTP/1 chunked or sized, HTTP/2), and the overall request
//! `timeout` bounding the body as well as the head, against real hyper
//! servers on 127.0.0.1.

use std::time::Duration;

use freshpool::{Client, Kind};
use freshpool_testkit::TestServer;

mod common;
use common::{body_failure, fetch, http2_server_and_client, text_of};

/// The overall `timeout` bounds the response body too, as in reqwest and
/// Go: a server that sends its head and stalls mid-body fails the read
/// with `Kind::Timeout` (it used to hang for as long as the server
/// stalled), and the connection, which still owes the rest, is not
/// reused. A body read in time is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_bounds_the_response_body_too() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let response = client.get(&server.url("/stall/30000")).await.unwrap();
    let (err, took) = body_failure(response).await;
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    assert!(err.to_string().contains("response body"), "{err}");
    assert!(took < Duration::from_secs(5));
    assert_eq!(
        client.stats().closed_for(freshpool::CloseReason::Error),
        1,
        "the connection owing the rest is closed"
    );
    assert_eq!(
        client
            .get(&server.url("/stall/50"))
            .await
            .unwrap()
            .into_body()
            .text()
            .await
            .unwrap(),
        "partial"
    );
}

/// The same while the body keeps flowing, read slowly: every read finds
/// data ready, and the timeout still ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_ends_a_slow_read_of_a_flowing_body() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let response = client.get(&server.url("/stream/1048576")).await.unwrap();
    let mut body = response.into_body();
    let started = std::time::Instant::now();
    let err = loop {
        match http_body_util::BodyExt::frame(&mut body).await {
            Some(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Some(Err(e)) => break e,
            None => panic!("1 MiB read at 20 ms a frame within the 1 s timeout"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the timeout never ended the read"
        );
    };
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
}

/// `Body::bytes` gives every byte in order, whatever the framing: one
/// frame (returned as is), many (joined: `/stream` sends 1 KiB frames,
/// each a letter of its own), none; over HTTP/1 (chunked) and HTTP/2.
/// Each read to the end returns its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_reads_a_body_of_any_framing_whole_and_in_order() {
    let h1 = TestServer::http1().await;
    let (h2, h2_client) = http2_server_and_client(Client::builder()).await;
    let cases = [(&h1, Client::new()), (&h2, h2_client)];
    for (server, client) in cases {
        let base = server.url("");
        let n = 5 * 1024 + 100;
        let body = fetch(&client, &server.url(&format!("/stream/{n}"))).await;
        assert_eq!(body.len(), n, "{base}");
        for (k, frame) in body.chunks(1024).enumerate() {
            let letter = b'a' + (k % 26) as u8;
            assert!(frame.iter().all(|&b| b == letter), "{base}: frame {k}");
        }
        assert_eq!(fetch(&client, &server.url("/bytes/5")).await, "xxxxx");
        assert!(fetch(&client, &server.url("/status/204")).await.is_empty());
        let stats = client.stats();
        assert_eq!(stats.created(), 1, "{base}: {stats}");
        assert_eq!(stats.reused(), 2, "{base}: {stats}");
        assert_eq!(stats.idle(), 1, "{base}: {stats}");
    }
}

/// `Body::text` gives a body's text whole and in order, over one frame
/// or many, replaces what is not UTF-8 (U+FFFD) instead of failing, and
/// (valid) keeps no more memory than the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_reads_any_framing_and_replaces_invalid_utf8() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let n = 3 * 1024 + 7;
    let text = text_of(client.get(&server.url(&format!("/stream/{n}")))).await;
    assert_eq!(text.len(), n);
    for (k, frame) in text.as_bytes().chunks(1024).enumerate() {
        let letter = b'a' + (k % 26) as u8;
        assert!(frame.iter().all(|&b| b == letter), "frame {k}");
    }
    assert_eq!(text.capacity(), text.len());
    // 100 KiB echoed back: read in several frames, joined.
    let pattern = [b'o', b'k', 0xff, b'!'];
    let sent: Vec<u8> = pattern.iter().copied().cycle().take(100 * 1024).collect();
    let invalid = text_of(client.post(&server.url("/echo"), sent)).await;
    assert_eq!(invalid, "ok\u{fffd}!".repeat(25 * 1024));
    let short = text_of(client.post(&server.url("/echo"), pattern.to_vec())).await;
    assert_eq!(short, "ok\u{fffd}!");
    // One frame, valid: its String holds no more than it, not the read
    // buffer it came in, which it may be given whole once nothing else
    // holds it (here: connections closed after each request).
    let closing = Client::builder().max_idle_per_host(0).build().unwrap();
    for _ in 0..20 {
        let small = text_of(closing.get(&server.url("/bytes/5"))).await;
        assert_eq!(small, "xxxxx");
        assert_eq!(small.capacity(), 5);
    }
}

/// A body that had all come in when the overall `timeout` passed ends as
/// it would have: `None`, and its connection goes back to the pool. It
/// failed with `Timeout`, and the connection was closed.
#[tokio::test]
async fn a_body_all_in_when_the_deadline_passes_ends_without_error() {
    let server = freshpool_testkit::TestServer::http1().await;
    let client = freshpool::Client::builder()
        .timeout(Some(std::time::Duration::from_secs(1)))
        .build()
        .unwrap();
    let response = client.get(&server.url("/bytes/10")).await.unwrap();
    let mut body = response.into_body();
    let first = http_body_util::BodyExt::frame(&mut body).await;
    let data = first
        .expect("a frame")
        .expect("no error")
        .into_data()
        .unwrap();
    assert_eq!(data.len(), 10);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let end = http_body_util::BodyExt::frame(&mut body).await;
    assert!(end.is_none(), "{end:?}");
    let stats = client.stats();
    assert_eq!(
        (
            stats.idle(),
            stats.closed_for(freshpool::CloseReason::Error)
        ),
        (1, 0),
        "{stats}"
    );
}

/// A small body dropped unread (an error response a caller does not
/// want) is drained in the background and its connection goes back to the
/// pool: 20 such requests use one connection. Each closed its connection:
/// a handshake per error response, most under a storm of 503s. A body
/// with much left, or one that stalls past the drain's 100 ms, still
/// closes its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_dropped_unread_is_drained_and_its_connection_reused() {
    use freshpool::CloseReason;
    let server = TestServer::http1().await;
    let client = Client::new();
    for _ in 0..20 {
        let response = client.get(&server.url("/bytes/64")).await.unwrap();
        drop(response);
        freshpool_testkit::eventually("the drained connection is back", || {
            client.stats().idle() == 1
        })
        .await;
    }
    let stats = client.stats();
    assert_eq!(stats.created(), 1, "{stats}");
    assert_eq!(stats.closed_for(CloseReason::Error), 0, "{stats}");
    // Too much left: closed, as before.
    drop(client.get(&server.url("/bytes/1000000")).await.unwrap());
    freshpool_testkit::eventually("the large body's connection closed", || {
        client.stats().closed_for(CloseReason::Error) == 1
    })
    .await;
    // Stalled past the drain's time: closed.
    drop(client.get(&server.url("/stall/30000")).await.unwrap());
    freshpool_testkit::eventually("the stalled body's connection closed", || {
        client.stats().closed_for(CloseReason::Error) == 2
    })
    .await;
}

/// `read_timeout` bounds the quiet in a response body, not its length: a
/// server that stalls mid-body fails the read with a `Timeout` naming the
/// setting, and the connection (still owing the rest) closes; a body whose
/// frames come within the limit is read whole, however long it takes in
/// all. Over HTTP/2 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_ends_a_stalled_body_and_not_a_flowing_one() {
    use freshpool::CloseReason;
    let server = TestServer::http1().await;
    let client = Client::builder()
        .read_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let response = client.get(&server.url("/stall/30000")).await.unwrap();
    let (err, took) = body_failure(response).await;
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    assert!(
        err.to_string().contains("for 300ms (read_timeout)"),
        "{err}"
    );
    assert!(err.is_possibly_processed());
    assert!(took < Duration::from_secs(5));
    freshpool_testkit::eventually("the stalled connection closed", || {
        client.stats().closed_for(CloseReason::Error) == 1
    })
    .await;
    // Five frames 40 ms apart: 200 ms in all, never 300 ms quiet.
    let response = client.get(&server.url("/drip/5")).await.unwrap();
    assert_eq!(response.into_body().bytes().await.unwrap().len(), 5);
    // HTTP/2.
    let (h2, h2_client) =
        http2_server_and_client(Client::builder().read_timeout(Some(Duration::from_millis(300))))
            .await;
    let response = h2_client.get(&h2.url("/stall/30000")).await.unwrap();
    let (err, _) = body_failure(response).await;
    assert!(err.to_string().contains("(read_timeout)"), "{err}");
}

/// `read_timeout` counts the quiet from when the reader waits, not from
/// when it took the last frame: a reader that works on a frame longer than
/// the limit (its thread busy, the connection's task unable to run) found
/// the timer run out at its next wait, and a healthy body failed.
#[tokio::test(flavor = "current_thread")]
async fn read_timeout_does_not_count_the_readers_own_work() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .read_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let response = client.get(&server.url("/drip/5")).await.unwrap();
    let mut body = response.into_body();
    let mut read = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        read += frame.unwrap().into_data().map_or(0, |d| d.len());
        if read == 1 {
            // Work on the first frame that keeps this thread busy.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert_eq!(read, 5);
}

/// A body whose length is known gives its connection back with its last
/// frame: a reader that stops once it has the Content-Length it expected
/// (and keeps the body) holds no connection. It held it until it polled
/// once more for the end, or dropped the body.
#[tokio::test]
async fn a_body_read_to_its_length_gives_its_connection_back_with_its_last_frame() {
    use http_body_util::BodyExt;
    let server = TestServer::http1().await;
    let client = Client::new();
    let mut body = ten_bytes_read_without_asking_for_the_end(&client, &server).await;
    let stats = client.stats();
    let origin = &stats.origins[0];
    assert_eq!((origin.active, origin.idle), (0, 1), "{stats}");
    // The end, asked for afterwards, is there.
    assert!(body.frame().await.is_none());
    // And the connection serves the next request.
    fetch(&client, &server.url("/")).await;
    assert_eq!(client.stats().origins[0].created, 1, "{}", client.stats());
    drop(body);
}

/// The same over HTTP/2: the stream ends with its last DATA frame
/// (END_STREAM), and goes back then.
#[tokio::test]
async fn an_h2_body_read_to_its_end_stream_gives_its_stream_back_with_its_last_frame() {
    use http_body_util::BodyExt;
    let (server, client) = http2_server_and_client(Client::builder()).await;
    let mut body = ten_bytes_read_without_asking_for_the_end(&client, &server).await;
    let stats = client.stats();
    assert_eq!(stats.origins[0].active, 0, "{stats}");
    assert!(body.frame().await.is_none());
}

/// The body of `/bytes/10`, its 10 bytes read frame by frame and no poll
/// more (the end not asked for).
async fn ten_bytes_read_without_asking_for_the_end(
    client: &Client,
    server: &TestServer,
) -> freshpool::Body {
    use http_body_util::BodyExt;
    let response = client.get(&server.url("/bytes/10")).await.unwrap();
    let mut body = response.into_body();
    let mut read = 0;
    while read < 10 {
        let frame = body.frame().await.expect("a frame").unwrap();
        read += frame.into_data().map_or(0, |d| d.len());
    }
    body
}
