//! Issue 2: one shared, bounded, fair pool, tested against real hyper
//! servers on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use freshpool::{Client, CloseReason, Kind};
use freshpool_testkit::{eventually, ServerConfig, TestServer};
use tokio::time::timeout;

mod common;
use common::{fetch, http2_server_and_client};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_respect_the_per_host_limit() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(8)
        .build()
        .unwrap();
    let url = server.url("/delay/5");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client.get(&url).await?;
            assert_eq!(resp.status(), 200);
            resp.into_body().text().await
        }));
    }
    for t in tasks {
        let body = timeout(LIMIT, t).await.unwrap().unwrap().unwrap();
        assert_eq!(body, "ok");
    }
    assert!(
        server.stats().peak_open_connections() <= 8,
        "peak {}",
        server.stats().peak_open_connections()
    );
    assert_eq!(server.stats().requests(), 100);
    let stats = client.stats();
    assert_eq!(stats.created(), server.stats().connections_accepted());
    assert_eq!(stats.created() + stats.reused(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_fifo_order() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    // Warm the single connection so every later request queues for it.
    fetch(&client, &server.url("/")).await;
    // Hold the connection: a response whose body is not read yet keeps its
    // lease until the test reads it, however long enqueueing takes (a
    // timed hold, e.g. `/delay/200`, could run out first on a loaded
    // machine and serve waiter 0 before waiter 9 was queued).
    let holder = client.get(&server.url("/stream/100000")).await.unwrap();
    let origin = format!("http://127.0.0.1:{}", server.addr().port());
    assert!(client
        .stats()
        .origin(&origin)
        .is_some_and(|o| o.active == 1));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..10usize {
        let c = client.clone();
        let url = server.url("/");
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let resp = c.get(&url).await.unwrap();
            order.lock().unwrap().push(i);
            resp.into_body().bytes().await.unwrap();
        }));
        // Enqueue strictly one after another.
        eventually("waiter enqueued", || {
            client
                .stats()
                .origin(&origin)
                .is_some_and(|o| o.waiting == i + 1)
        })
        .await;
    }
    // Reading the body to the end returns the connection: to waiter 0.
    assert_eq!(holder.into_body().bytes().await.unwrap().len(), 100_000);
    for t in tasks {
        timeout(LIMIT, t).await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(server.stats().connections_accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_burst_of_nine_opens_nine_and_later_waves_reuse_them() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(16)
        .build()
        .unwrap();
    let wave = |path: &'static str| {
        let futs: Vec<_> = (0..9)
            .map(|_| {
                let c = client.clone();
                let url = server.url(path);
                tokio::spawn(async move { fetch(&c, &url).await })
            })
            .collect();
        async move {
            for f in futs {
                timeout(LIMIT, f).await.unwrap().unwrap();
            }
        }
    };
    // The server holds each response briefly so the burst really overlaps.
    wave("/delay/50").await;
    assert_eq!(server.stats().connections_accepted(), 9);
    for _ in 0..100 {
        wave("/").await;
    }
    assert_eq!(
        server.stats().connections_accepted(),
        9,
        "later waves must reuse"
    );
    let stats = client.stats();
    assert_eq!(stats.created(), 9);
    assert_eq!(stats.reused(), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_fails_fast_with_the_numbers() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .max_pending(2)
        .build()
        .unwrap();
    // The only connection is held by a response whose body is not read
    // (not by a timed `/delay`, which could end before the queue is full
    // on a loaded machine); two requests queue behind it.
    let held = client.get(&server.url("/stream/100000")).await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let c = client.clone();
        let url = server.url("/");
        waiters.push(tokio::spawn(async move {
            c.get(&url).await?.into_body().bytes().await
        }));
    }
    let origin = format!("http://127.0.0.1:{}", server.addr().port());
    eventually("two waiting", || {
        client
            .stats()
            .origin(&origin)
            .is_some_and(|o| o.waiting == 2)
    })
    .await;
    let err = client.get(&server.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PoolFull);
    let msg = err.to_string();
    assert!(
        msg.contains("2 requests already wait for a connection to"),
        "{msg}"
    );
    assert!(
        msg.contains("max_pending 2") && msg.contains("limit 1") && msg.contains(&origin),
        "{msg}"
    );
    // The same numbers as a PoolTimeout's: who holds the connection.
    assert!(
        msg.contains("in use 1") && msg.contains("waiting 2") && msg.contains("tests/core.rs:"),
        "{msg}"
    );
    assert!(msg.contains("raise max_pending"), "{msg}");
    // Counted where users look, apart from the waits that timed out.
    let o = client.stats().origin(&origin).cloned().unwrap();
    assert_eq!((o.pool_full, o.pool_timeouts), (1, 0));
    assert!(client.stats().to_string().contains("pool_full 1"));
    // Dropping the unread body closes the connection; both waiters are
    // then served.
    drop(held);
    for h in waiters {
        timeout(LIMIT, h).await.unwrap().unwrap().unwrap();
    }
}

/// Below its own limit, an origin's queue fills because the pool-wide
/// limit is reached by another origin's connection: the PoolFull message
/// names that limit, not the per-host one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_full_names_the_total_limit_when_it_is_the_one_reached() {
    let busy = TestServer::http1().await;
    let other = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .max_connections_total(1)
        .max_pending(1)
        .build()
        .unwrap();
    let held = client.get(&busy.url("/stream/100000")).await.unwrap();
    let c = client.clone();
    let url = other.url("/");
    let waiter = tokio::spawn(async move { c.get(&url).await?.into_body().bytes().await });
    let origin = format!("http://127.0.0.1:{}", other.addr().port());
    eventually("one waiting", || {
        client
            .stats()
            .origin(&origin)
            .is_some_and(|o| o.waiting == 1)
    })
    .await;
    let err = client.get(&other.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PoolFull);
    let msg = err.to_string();
    assert!(
        msg.starts_with("1 request already waits for a connection to")
            && msg.contains("max_connections_total 1 reached, 1 of them to other origins")
            && msg.contains("raise max_connections_total")
            && !msg.contains("raise max_connections_per_host"),
        "{msg}"
    );
    drop(held);
    timeout(LIMIT, waiter).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_timeout_reports_limit_use_waiters_and_the_holder() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    // A response whose body is never read holds the only connection.
    let held = client.get(&server.url("/stream/100000")).await.unwrap();
    let err = client.get(&server.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PoolTimeout);
    assert!(err.is_timeout());
    let msg = err.to_string();
    for needle in [
        "timed out after 200ms (pool_timeout)",
        "limit 1",
        "in use 1",
        "waiting 1",
        "core.rs:",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in {msg}");
    }
    assert!(
        msg.contains("max_connections_per_host"),
        "suggests the setting: {msg}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_body_closes_and_read_body_returns_the_connection() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let resp = client.get(&server.url("/stream/200000")).await.unwrap();
    drop(resp); // unread bytes: the connection cannot be reused
    eventually("server saw the close", || {
        server.stats().open_connections() == 0
    })
    .await;
    let resp = client.get(&server.url("/bytes/1000")).await.unwrap();
    assert_eq!(resp.into_body().bytes().await.unwrap().len(), 1000);
    fetch(&client, &server.url("/")).await;
    assert_eq!(server.stats().connections_accepted(), 2);
    let stats = client.stats();
    assert_eq!(stats.closed_for(CloseReason::Error), 1);
    assert_eq!(stats.reused(), 1);
    eventually("idle 1, active 0", || {
        let s = client.stats();
        s.idle() == 1 && s.active() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_lifetime_and_max_requests_evict() {
    let server = TestServer::http1().await;
    // Idle timeout.
    let client = Client::builder()
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    fetch(&client, &server.url("/")).await;
    eventually("idle timeout sweep", || {
        client.stats().closed_for(CloseReason::IdleTimeout) == 1
    })
    .await;
    eventually("server saw close", || {
        server.stats().open_connections() == 0
    })
    .await;
    // Max requests per connection.
    let client = Client::builder()
        .max_requests_per_connection(Some(3))
        .build()
        .unwrap();
    for _ in 0..7 {
        fetch(&client, &server.url("/")).await;
    }
    let s = client.stats();
    assert_eq!(s.created(), 3, "7 requests at 3 per connection");
    assert_eq!(s.closed_for(CloseReason::MaxRequests), 2);
    // Lifetime.
    let client = Client::builder()
        .idle_timeout(None)
        .max_lifetime(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    fetch(&client, &server.url("/")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    fetch(&client, &server.url("/")).await;
    let s = client.stats();
    assert_eq!(s.created(), 2);
    assert_eq!(s.closed_for(CloseReason::Lifetime), 1);
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let client = Client::new();
    for bad in ["not a url", "/relative", "ftp://127.0.0.1/x"] {
        let err = client.get(bad).await.unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidUri, "{bad}: {err}");
    }
    // The message shows the URI, but not a secret in its query (here a
    // pre-signed URL's token), parsed or not.
    for bad in [
        "/k?access_token=s3cret",
        "http://h/k?access_token=s3cret&a b",
    ] {
        let err = client.get(bad).await.unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidUri, "{bad}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("access_token=REDACTED") && !message.contains("s3cret"),
            "{bad}: {message}"
        );
    }
    // An IPv6 zone (RFC 6874) is refused by name, before any lookup: it
    // failed as a DNS lookup of the literal, which hid the reason.
    for zoned in ["http://[fe80::1%25lo]:9/", "http://[::1%251]/"] {
        let err = client.get(zoned).await.unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidUri, "{zoned}: {err}");
        assert!(
            err.to_string().contains("zone identifier"),
            "{zoned}: {err}"
        );
    }
    let err = Client::builder()
        .max_connections_per_host(0)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config);
    let err = Client::builder()
        .max_connections_per_host(100)
        .max_connections_total(10)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("exceeds max_connections_total"),
        "{err}"
    );
    // One setting alone builds: the defaults it would contradict (64 per
    // host, a 55 s idle timeout) yield to it.
    Client::builder().max_connections_total(32).build().unwrap();
    Client::builder()
        .max_lifetime(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    // A default fitted so is no setting to refuse when joining a pool: the
    // maker set both, the joiner the same lifetime only.
    let maker = Client::builder()
        .max_lifetime(Some(Duration::from_secs(30)))
        .idle_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    Client::builder()
        .max_lifetime(Some(Duration::from_secs(30)))
        .share_pool_with(&maker)
        .build()
        .unwrap();
    let err = Client::builder()
        .pool_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("pool_timeout"), "{err}");
}

#[tokio::test]
async fn connect_errors_name_the_address_and_timeouts_their_duration() {
    let port = common::closed_port();
    let client = Client::new();
    let err = client
        .get(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Connect);
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // A server that accepts but never answers: the header timeout fires.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            socks.push(s);
        }
    });
    let client = Client::builder()
        .response_header_timeout(Some(Duration::from_millis(150)))
        .build()
        .unwrap();
    let err = client.get(&format!("http://{addr}/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::ResponseHeaderTimeout);
    assert!(
        err.to_string().contains("150ms (response_header_timeout)"),
        "the head timeout names its setting: {err}"
    );
    let client = Client::builder()
        .timeout(Some(Duration::from_millis(100)))
        .build()
        .unwrap();
    let err = client.get(&format!("http://{addr}/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Timeout);
    let text = err.to_string();
    assert!(
        text.contains("100ms (timeout)") && text.contains(&addr.to_string()),
        "the overall timeout names its limit and the origin: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_hint_expires_connections_before_the_server_does() {
    let server = TestServer::start(ServerConfig {
        // It says 1 s and closes at 2 s: a sleep that overshoots on a
        // loaded machine must not let the server's close come first.
        keep_alive_hint: Some(1),
        idle_timeout: Some(Duration::from_secs(2)),
        ..ServerConfig::default()
    })
    .await;
    let client = Client::builder()
        .keep_alive_margin(Duration::from_millis(300))
        .build()
        .unwrap();
    for _ in 0..5 {
        fetch(&client, &server.url("/")).await;
        // Past the hint less the margin: 0.8 s > 1 s - 0.3 s.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    // Every request after a gap used a new connection (the hinted one had
    // expired), and none failed.
    assert_eq!(server.stats().connections_accepted(), 5);
    assert!(client.stats().closed_for(CloseReason::KeepAliveHint) >= 4);
}

/// A connection the hint expired is counted as expired by the hint, also
/// when the server's close comes before the sweep (once a second) takes
/// it: here the pool's expiry is at 0.5 s and the server closes at
/// 0.55 s, so the close usually comes first. It was counted as the
/// server's close then, which reads as "the server closes connections
/// before the pool does".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_expired_connection_the_server_closed_first_counts_as_expired() {
    let server = TestServer::start(ServerConfig {
        keep_alive_hint: Some(1),
        idle_timeout: Some(Duration::from_millis(550)),
        ..ServerConfig::default()
    })
    .await;
    let client = Client::builder()
        .keep_alive_margin(Duration::from_millis(500))
        .build()
        .unwrap();
    let rounds = 4;
    for _ in 0..rounds {
        fetch(&client, &server.url("/")).await;
        // (Closed by the server, or by a sweep that came first.)
        freshpool_testkit::eventually("the connection closed", || {
            client.stats().open_connections == 0
        })
        .await;
    }
    // The race this is about happened (a sweep falls in the 50 ms before
    // the server's close in one round of twenty).
    assert!(server.stats().idle_closes() > 0);
    let stats = client.stats();
    assert_eq!(
        stats.closed_for(CloseReason::KeepAliveHint),
        rounds,
        "{stats}"
    );
    assert_eq!(stats.closed_for(CloseReason::ServerClose), 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_one_pool_and_tower_service_works() {
    use tower_service::Service;
    let server = TestServer::http1().await;
    let client = Client::new();
    let mut svc = client.clone();
    std::future::poll_fn(|cx| Service::<http::Request<()>>::poll_ready(&mut svc, cx))
        .await
        .unwrap();
    let req = http::Request::get(server.url("/")).body(()).unwrap();
    svc.call(req)
        .await
        .unwrap()
        .into_body()
        .bytes()
        .await
        .unwrap();
    fetch(&client, &server.url("/")).await;
    assert_eq!(server.stats().connections_accepted(), 1);
    assert_eq!(client.stats().reused(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_client_closes_its_idle_connections() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let also = client.clone();
    fetch(&client, &server.url("/")).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.stats().open_connections(),
        1,
        "a clone still holds the pool"
    );
    drop(also);
    eventually("idle connection closed", || {
        server.stats().open_connections() == 0
    })
    .await;
}

/// A response body still being read when the last client goes: its
/// connection must not come to rest in a pool nobody can reach any more
/// (it would stay open, held by its own driver, for good).
/// `close_idle_connections` closes the idle connections, HTTP/1 and
/// HTTP/2, and leaves busy ones alone: a request in flight finishes and its
/// connection goes back to the pool, with no freeze counted (`on_resume`,
/// the nearest before, closed every busy one on its return too, as
/// frozen, and `evict_idle` only the expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_idle_connections_closes_only_the_idle() {
    let server = TestServer::http1().await;
    let client = Client::new();
    let held = client.get(&server.url("/stream/100000")).await.unwrap();
    fetch(&client, &server.url("/")).await;
    assert_eq!((client.stats().idle(), client.stats().active()), (1, 1));
    client.close_idle_connections();
    eventually("the idle connection closed", || {
        server.stats().open_connections() == 1
    })
    .await;
    assert_eq!(client.stats().idle(), 0);
    held.into_body().bytes().await.unwrap();
    let stats = client.stats();
    assert_eq!(
        stats.idle(),
        1,
        "the busy one went back to the pool: {stats}"
    );
    assert_eq!(stats.closed_for(CloseReason::FreezeEviction), 0, "{stats}");
    assert_eq!(stats.closed_for(CloseReason::Surplus), 1, "{stats}");
    // HTTP/2: a connection without a stream closes too.
    let (h2, h2_client) = http2_server_and_client(Client::builder()).await;
    fetch(&h2_client, &h2.url("/")).await;
    assert_eq!(h2_client.stats().open_connections, 1);
    h2_client.close_idle_connections();
    eventually("the idle HTTP/2 connection closed", || {
        h2_client.stats().open_connections == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_after_the_last_client_dropped_closes_its_connection() {
    let server = TestServer::http1().await;
    body_read_after_the_last_client_dropped(&server, Client::new()).await;
}

/// The same over HTTP/2: the stream's connection closes with the last
/// stream once the pool is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_read_after_the_last_client_dropped_closes_its_connection() {
    let (server, client) = http2_server_and_client(Client::builder()).await;
    body_read_after_the_last_client_dropped(&server, client).await;
}

/// A second request on the connection a first one opened; its body is read
/// only after `client`, the last, is dropped. Then the connection closes.
async fn body_read_after_the_last_client_dropped(server: &TestServer, client: Client) {
    fetch(&client, &server.url("/")).await;
    let response = client.get(&server.url("/stream/65536")).await.unwrap();
    drop(client);
    let body = response.into_body().bytes().await.unwrap();
    assert_eq!(body.len(), 65536);
    assert_eq!(server.stats().connections_accepted(), 1);
    eventually("the connection closed once its body was read", || {
        server.stats().open_connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_off_keeps_no_idle_http2_connection() {
    let (server, client) = http2_server_and_client(Client::builder().max_idle_per_host(0)).await;
    for _ in 0..3 {
        fetch(&client, &server.url("/")).await;
    }
    assert_eq!(server.stats().connections_accepted(), 3);
}

/// Different spellings of one origin (see also the unit tests of
/// `pool::origin_map`, which cover case and default ports by name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_origin_shares_its_connections() {
    let server = TestServer::http1().await;
    let port = server.addr().port();
    let client = Client::new();
    // Sequential: each request finds the previous one's connection idle,
    // whichever way the origin is spelled.
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://user:secret@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}"),
        format!("http://other:pw@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}/"),
    ] {
        assert_eq!(fetch(&client, &url).await, "ok", "{url}");
    }
    assert_eq!(server.stats().connections_accepted(), 1);
    let stats = client.stats();
    assert_eq!(stats.origins.len(), 1, "{stats:?}");
    assert_eq!(stats.reused(), 4);
    // Another port is another origin, with its own connection.
    let other = TestServer::http1().await;
    fetch(&client, &other.url("/")).await;
    assert_eq!(client.stats().origins.len(), 2);
    assert_eq!(server.stats().connections_accepted(), 1);
    assert_eq!(other.stats().connections_accepted(), 1);
    // Each spelling gets its own Host header, never the cached one of
    // another spelling (localhost is another origin), and never the userinfo.
    for (authority, host) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("u:p@127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("LOCALHOST:{port}"), format!("LOCALHOST:{port}")),
        (format!("localhost:{port}"), format!("localhost:{port}")),
        (format!("u@localhost:{port}"), format!("localhost:{port}")),
    ] {
        let url = format!("http://{authority}/host");
        assert_eq!(fetch(&client, &url).await, host.as_str(), "{url}");
    }
}

/// A URI's `user:password@` becomes `Authorization: Basic` and never goes
/// on the wire in the URI (HTTP/2's `:authority` carried it), nor into an
/// error message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_becomes_basic_authorization_and_leaves_the_uri() {
    let http1 = TestServer::http1().await;
    let (http2, h2_client) = common::http2_server_and_client(Client::builder()).await;
    let h1_client = Client::new();
    for (server, client) in [(&http1, &h1_client), (&http2, &h2_client)] {
        let port = server.addr().port();
        let url = |path: &str| format!("http://u%40x:s3cret@127.0.0.1:{port}{path}");
        assert_eq!(
            common::fetch(client, &url("/host")).await,
            format!("127.0.0.1:{port}")
        );
        // base64("u@x:s3cret"); twice: the second time the URL string is
        // this thread's remembered one (`uri_memo`), its '@' with it.
        for _ in 0..2 {
            assert_eq!(
                common::fetch(client, &url("/header/authorization")).await,
                "Basic dUB4OnMzY3JldA=="
            );
        }
        // The request's own Authorization wins.
        let own = http::Request::get(url("/header/authorization"))
            .header("authorization", "Bearer t")
            .body(())
            .unwrap();
        assert_eq!(common::send(client, own).await, "Bearer t");
    }
    let impatient = Client::builder()
        .timeout(Some(Duration::from_millis(100)))
        .build()
        .unwrap();
    let port = http1.addr().port();
    let err = impatient
        .get(&format!("http://u:s3cret@127.0.0.1:{port}/delay/2000"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Timeout, "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    // Passwords that keep the URI from parsing, or that `http` reads as a
    // port and a path (an unencoded '/', '?' or '#'), stay out of the
    // error too.
    for url in [
        format!("http://u:pa/ss3cret@127.0.0.1:{port}/"),
        format!("http://u:pa?ss3cret@127.0.0.1:{port}/"),
        format!("http://u:pa#ss3cret@127.0.0.1:{port}/"),
        format!("http://:pa#ss3cret@127.0.0.1:{port}/"),
        format!("http://u:se cret@127.0.0.1:{port}/"),
        "ftp://u:pa/ss3cret@127.0.0.1/".to_string(),
    ] {
        let err = impatient.get(&url).await.unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidUri, "{err}");
        let shown = format!("{err} {err:?}");
        for secret in ["pa/", "pa?", "pa#", ":pa", "\"pa\"", "cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}

/// HTTP/2 with prior knowledge against a server that speaks only HTTP/1:
/// the error says what went wrong (no SETTINGS frame, not an HTTP/2
/// server), and the failed dial is the only one: its slot is freed after
/// its waiter got the error, not before (which dialed again for a request
/// already answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_to_an_http1_server_fails_once_and_clearly() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .http_version(freshpool::HttpVersion::Http2Only)
        .build()
        .unwrap();
    for _ in 0..5 {
        let err = client.get(&server.url("/")).await.unwrap_err();
        assert_eq!(err.kind(), Kind::Protocol, "{err}");
        assert!(err.to_string().contains("not an HTTP/2 server?"), "{err}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.stats().connections_accepted(),
        5,
        "one dial per request"
    );
    let stats = client.stats();
    assert_eq!(stats.open_connections, 0, "{stats}");
}

/// A server that accepts and closes at once, before any HTTP/2 frame: the
/// error says it closed (it said "answered with a first frame other than
/// SETTINGS", which it never sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_a_server_that_closes_at_once_says_it_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            drop(stream);
        }
    });
    let client = Client::builder()
        .http_version(freshpool::HttpVersion::Http2Only)
        .build()
        .unwrap();
    let err = client.get(&format!("http://{addr}/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Protocol, "{err}");
    assert!(
        err.to_string()
            .contains("closed the connection before its HTTP/2 SETTINGS frame"),
        "{err}"
    );
    acceptor.abort();
}
