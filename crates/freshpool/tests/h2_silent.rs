//! HTTP/2 connections that went silent while in use (a NAT dropped the
//! flow: no FIN, no RST): retired after a request on one timed out with
//! nothing read meanwhile, and only then (cleartext HTTP/2 with prior
//! knowledge, through the chaos proxy); and idle ones found by PINGs
//! (`http2_keep_alive_interval`, `http2_keep_alive_timeout`).

use std::time::Duration;

use freshpool::CloseReason;
use freshpool_testkit::ChaosProxy;

mod common;
use common::{h2_client, h2_server, text};

/// An HTTP/2 connection that went silent (a NAT dropped the flow: no FIN,
/// no RST, nothing read) is retired after a request on it timed out with
/// nothing read meanwhile, and the next request dials. It used to stay in
/// the pool taking streams, and every request after it timed out too,
/// until the kernel gave up on the socket (minutes); an HTTP/1 connection
/// that failed a request is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_connection_is_retired_after_a_request_on_it_timed_out() {
    let server = h2_server().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = h2_client()
        .response_header_timeout(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    assert_eq!(text(&client, &proxy.url("/")).await, "ok");
    assert_eq!(proxy.blackhole_existing(), 1);
    let err = client.get(&proxy.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::ResponseHeaderTimeout, "{err}");
    for _ in 0..3 {
        let got = client.get(&proxy.url("/")).await;
        let stats = client.stats();
        let response = got.unwrap_or_else(|e| panic!("{e}\n{stats}"));
        assert_eq!(response.into_body().text().await.unwrap(), "ok");
    }
    assert_eq!(proxy.stats().connections_accepted, 2);
    let stats = client.stats();
    assert_eq!(stats.closed_for(CloseReason::Unresponsive), 1, "{stats}");
    // A slow answer on a live connection is no reason: the server's
    // frames for other streams were read meanwhile.
    let slow = {
        let (client, url) = (client.clone(), proxy.url("/delay/3000"));
        tokio::spawn(async move { client.get(&url).await.map(|_| ()) })
    };
    for _ in 0..5 {
        assert_eq!(text(&client, &proxy.url("/")).await, "ok");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::ResponseHeaderTimeout, "{err}");
    assert_eq!(proxy.stats().connections_accepted, 2, "{}", client.stats());
}

/// The same when the caller's overall `timeout` gives up on the request
/// (its future is dropped, the stream with it); also with a `timeout`
/// shorter than the 750 ms of quiet asked when no
/// `response_header_timeout` is set: the quiet asked is 3/4 of the limit
/// that ran out. (Judged by a `response_header_timeout` the client did
/// not have, every 500 ms request timed out on the silent connection
/// until the kernel gave up on it, minutes later.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_connection_is_retired_after_the_request_timeout_too() {
    for limit_ms in [1500, 500] {
        let server = h2_server().await;
        let proxy = ChaosProxy::start(server.addr()).await;
        let client = h2_client()
            .timeout(Some(Duration::from_millis(limit_ms)))
            .build()
            .unwrap();
        assert_eq!(text(&client, &proxy.url("/")).await, "ok");
        proxy.blackhole_existing();
        let err = client.get(&proxy.url("/")).await.unwrap_err();
        assert_eq!(err.kind(), freshpool::Kind::Timeout, "{err}");
        let got = client.get(&proxy.url("/")).await;
        let stats = client.stats();
        let response = got.unwrap_or_else(|e| panic!("{limit_ms} ms: {e}\n{stats}"));
        assert_eq!(response.into_body().text().await.unwrap(), "ok");
        assert_eq!(proxy.stats().connections_accepted, 2);
        let stats = client.stats();
        assert_eq!(stats.closed_for(CloseReason::Unresponsive), 1, "{stats}");
    }
}

/// A request the caller gives up on itself (its own timer, a `select!`, a
/// hedged request) says nothing of the connection: a slow answer on a live
/// one, nothing read meanwhile, leaves it serving. (Drained then, at the
/// per-host limit it kept its slot for the long request on it while every
/// other request waited into `PoolTimeout`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_caller_gave_up_on_leaves_its_http2_connection_serving() {
    let server = h2_server().await;
    let client = h2_client()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(text(&client, &server.url("/")).await, "ok");
    let long = {
        let (client, url) = (client.clone(), server.url("/delay/3000"));
        tokio::spawn(async move { text(&client, &url).await })
    };
    let gave_up = tokio::time::timeout(
        Duration::from_millis(1200),
        client.get(&server.url("/delay/2500")),
    )
    .await;
    assert!(gave_up.is_err(), "the caller's own timer");
    let got = client.get(&server.url("/")).await;
    let stats = client.stats();
    let response = got.unwrap_or_else(|e| panic!("{e}\n{stats}"));
    assert_eq!(response.into_body().text().await.unwrap(), "ok");
    assert_eq!(long.await.unwrap(), "ok");
    assert_eq!(server.stats().connections_accepted(), 1);
    let stats = client.stats();
    assert_eq!(stats.closed_for(CloseReason::Unresponsive), 0, "{stats}");
}

/// A caller that bounds requests with its own timer (no pool timeout set):
/// a second request given up on with nothing read since the first makes
/// the connection suspect, and the next request dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_connection_is_retired_after_two_requests_its_caller_gave_up_on() {
    let server = h2_server().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = h2_client().build().unwrap();
    assert_eq!(text(&client, &proxy.url("/")).await, "ok");
    proxy.blackhole_existing();
    for _ in 0..2 {
        let gave_up =
            tokio::time::timeout(Duration::from_secs(1), client.get(&proxy.url("/"))).await;
        assert!(gave_up.is_err(), "the dead connection answers nothing");
    }
    let got = tokio::time::timeout(Duration::from_secs(5), client.get(&proxy.url("/")))
        .await
        .unwrap_or_else(|_| panic!("still on the dead connection:\n{}", client.stats()));
    assert_eq!(got.unwrap().into_body().text().await.unwrap(), "ok");
    assert_eq!(proxy.stats().connections_accepted, 2);
    let stats = client.stats();
    assert_eq!(stats.closed_for(CloseReason::Unresponsive), 1, "{stats}");
}

/// `http2_keep_alive_interval` finds an idle connection gone silent: a
/// PING unanswered for `http2_keep_alive_timeout` closes it. The timeout
/// is a setting of its own (default 20 s): it was the interval itself, so
/// at 1 s a server slow to answer one PING lost every stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_ping_closes_its_connection_after_the_keep_alive_timeout() {
    let server = h2_server().await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = |timeout: Option<Duration>| {
        let builder = h2_client().http2_keep_alive_interval(Some(Duration::from_secs(1)));
        match timeout {
            Some(t) => builder.http2_keep_alive_timeout(t),
            None => builder,
        }
        .build()
        .unwrap()
    };
    let (quick, patient) = (client(Some(Duration::from_secs(1))), client(None));
    assert_eq!(text(&quick, &proxy.url("/")).await, "ok");
    assert_eq!(text(&patient, &proxy.url("/")).await, "ok");
    assert_eq!(proxy.blackhole_existing(), 2);
    // PING after 1 s of quiet, closed 1 s later: well within 5 s.
    freshpool_testkit::eventually("the quiet connection closed", || {
        quick.stats().open_connections == 0
    })
    .await;
    // Counted as a connection gone silent, not as the server's close (it
    // read as "the server closed it").
    let stats = quick.stats();
    assert_eq!(stats.closed_for(CloseReason::Unresponsive), 1, "{stats}");
    assert_eq!(stats.closed_for(CloseReason::ServerClose), 0, "{stats}");
    // The same silence is not yet 20 s unanswered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(patient.stats().open_connections, 1, "{}", patient.stats());
}

/// With PINGs on, a connection its server closes (GOAWAY, then its end)
/// still counts as the server's close: only one that ended without a word
/// from the server counts as unresponsive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pings_on_a_servers_goaway_still_counts_as_its_close() {
    let server = h2_server().await;
    let client = h2_client()
        .http2_keep_alive_interval(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    assert_eq!(text(&client, &server.url("/")).await, "ok");
    server.goaway_all();
    freshpool_testkit::eventually("the connection closed", || {
        client.stats().open_connections == 0
    })
    .await;
    let stats = client.stats();
    assert_eq!(stats.closed_for(CloseReason::ServerClose), 1, "{stats}");
    assert_eq!(stats.closed_for(CloseReason::Unresponsive), 0, "{stats}");
}
