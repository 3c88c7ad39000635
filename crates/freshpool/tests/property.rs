//! Property tests against a real loopback server (HTTP/1.1, or HTTP/2 with
//! prior knowledge) behind the chaos proxy:
//! random sequences of requests, cancellations (the request future dropped
//! after a random short delay), response bodies dropped unread, abrupt
//! server closes, silent connection deaths, truncated and garbage
//! responses. After each sequence (and a
//! bounded settle time) the books must balance: no lease active, no
//! waiter, and the connections the proxy still has open are exactly the
//! pool's idle connections (none leaked, none forgotten).

use std::time::Duration;

use freshpool::{Client, HttpVersion, Kind};
use freshpool_testkit::{ChaosProxy, Protocol, ServerConfig, TestServer};
use proptest::prelude::*;

mod common;

/// One thing that happens to the client or the network.
#[derive(Clone, Debug)]
enum Action {
    /// Concurrent requests, each maybe cancelled, maybe dropping its body.
    Requests(Vec<Req>),
    /// Every server connection closes abruptly (a restart).
    ServerCloseAll,
    /// Every proxied connection dies silently (a NAT forgot the flows).
    Freeze,
    /// The next response is cut after this many bytes.
    Truncate(u8),
    /// The next request is answered with garbage.
    Garbage,
    /// Wait a little (lets closes propagate, idle connections age).
    Pause(u16),
}

#[derive(Clone, Debug)]
struct Req {
    path: Path,
    /// Drop the request future after this many milliseconds.
    cancel_after_ms: Option<u16>,
    /// Drop the response without reading its body.
    drop_body: bool,
    method_post: bool,
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Root,
    Delay(u16),
    Bytes(u32),
    Stream(u32),
}

impl Path {
    fn as_str(self) -> String {
        match self {
            Path::Root => "/".into(),
            Path::Delay(ms) => format!("/delay/{ms}"),
            Path::Bytes(n) => format!("/bytes/{n}"),
            Path::Stream(n) => format!("/stream/{n}"),
        }
    }
}

fn path() -> impl Strategy<Value = Path> {
    prop_oneof![
        3 => Just(Path::Root),
        2 => (0u16..60).prop_map(Path::Delay),
        2 => (0u32..40_000).prop_map(Path::Bytes),
        1 => (0u32..40_000).prop_map(Path::Stream),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    (
        path(),
        prop::option::weighted(0.3, 0u16..40),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(path, cancel_after_ms, drop_body, method_post)| Req {
            path,
            cancel_after_ms,
            drop_body,
            method_post,
        })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => prop::collection::vec(req(), 1..12).prop_map(Action::Requests),
        1 => Just(Action::ServerCloseAll),
        1 => Just(Action::Freeze),
        1 => any::<u8>().prop_map(Action::Truncate),
        1 => Just(Action::Garbage),
        1 => (0u16..80).prop_map(Action::Pause),
    ]
}

/// What a request ended with, for the failure message.
#[derive(Debug, Default)]
struct Outcomes {
    ok: u32,
    cancelled: u32,
    errors: Vec<Kind>,
}

async fn one_request(client: &Client, base: &str, r: &Req) -> Result<(), freshpool::Error> {
    let uri = format!("{base}{}", r.path.as_str());
    let response = if r.method_post {
        client.post(&uri, "property body").await?
    } else {
        client.get(&uri).await?
    };
    if r.drop_body {
        drop(response);
        return Ok(());
    }
    response.into_body().bytes().await.map(|_| ())
}

fn run_sequence(limit: usize, h2: bool, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let server = TestServer::start(ServerConfig {
            protocol: if h2 { Protocol::Http2 } else { Protocol::Http1 },
            max_concurrent_streams: h2.then_some(4),
            ..ServerConfig::default()
        })
        .await;
        let proxy = ChaosProxy::start(server.addr()).await;
        let client = Client::builder()
            .max_connections_per_host(limit)
            .http_version(if h2 {
                HttpVersion::Http2Only
            } else {
                HttpVersion::Auto
            })
            .pool_timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .response_header_timeout(Some(Duration::from_secs(2)))
            .timeout(Some(Duration::from_secs(5)))
            .build()
            .expect("client");
        let base = proxy.url("");
        let base = base.trim_end_matches('/').to_string();
        let mut outcomes = Outcomes::default();
        for action in &actions {
            match action {
                Action::Requests(reqs) => {
                    let mut tasks = Vec::new();
                    for r in reqs.clone() {
                        let client = client.clone();
                        let base = base.clone();
                        tasks.push(tokio::spawn(async move {
                            match r.cancel_after_ms {
                                // On timeout the request future is dropped.
                                Some(ms) => tokio::time::timeout(
                                    Duration::from_millis(u64::from(ms)),
                                    one_request(&client, &base, &r),
                                )
                                .await
                                .ok(),
                                None => Some(one_request(&client, &base, &r).await),
                            }
                        }));
                    }
                    for t in tasks {
                        let joined = tokio::time::timeout(Duration::from_secs(15), t).await;
                        let Ok(joined) = joined else {
                            return Err(TestCaseError::fail(format!(
                                "a request hung for 15 s (every timeout is below 6 s); stats: {}",
                                client.stats()
                            )));
                        };
                        match joined.expect("request task panicked") {
                            Some(Ok(())) => outcomes.ok += 1,
                            Some(Err(e)) => outcomes.errors.push(e.kind()),
                            None => outcomes.cancelled += 1,
                        }
                    }
                }
                Action::ServerCloseAll => server.close_all(),
                Action::Freeze => {
                    proxy.kill_all_silently();
                }
                Action::Truncate(keep) => proxy.truncate_next_response(usize::from(*keep)),
                Action::Garbage => proxy.garbage_next_response(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort".to_vec(),
                ),
                Action::Pause(ms) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await;
                }
            }
        }
        // Settle: closes propagate, drivers end, slots are freed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        loop {
            let stats = client.stats();
            let waiting: usize = stats.origins.iter().map(|o| o.waiting).sum();
            let connecting: usize = stats.origins.iter().map(|o| o.connecting).sum();
            let proxy_open = proxy.stats().open_connections as usize;
            let balanced = stats.active() == 0
                && waiting == 0
                && connecting == 0
                && proxy_open == stats.idle()
                && stats.open_connections == stats.idle();
            if balanced {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TestCaseError::fail(format!(
                    "books do not balance 6 s after the sequence: active {}, waiting {waiting}, \
                     connecting {connecting}, pool idle {}, pool open {}, proxy open {proxy_open}, \
                     server open {}; outcomes {outcomes:?}\n{stats}",
                    stats.active(),
                    stats.idle(),
                    stats.open_connections,
                    server.stats().open_connections(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        max_shrink_iters: 64,
        // Each case runs real sockets; keep shrinking bounded too.
        max_shrink_time: 60_000,
        .. ProptestConfig::default()
    })]

    #[test]
    fn accounting_balances_after_random_chaos(
        limit in 1usize..=4,
        h2 in prop::bool::weighted(0.3),
        actions in prop::collection::vec(action(), 1..10),
    ) {
        run_sequence(limit, h2, actions)?;
    }
}

/// A dial that fails (nothing listens) is a prompt, typed error, the slot
/// comes back, and `stats()` stays sane afterwards. (Regression guard:
/// `connector.dial` drops the slot guard before `dial_for` calls
/// `dial_done()`, so for a moment `dialing > slots`; `slots - dialing` in
/// `Origin::publish` / `snapshot` must not underflow: see
/// `pool::model_tests::dial_failure_never_shows_more_dials_than_slots`.)
#[test]
fn refused_connection_fails_fast_and_frees_its_slot() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let port = common::closed_port();
        let client = Client::builder()
            .pool_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let err = client.get(&url).await.unwrap_err();
            assert_eq!(err.kind(), Kind::Connect, "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "a refused connection took {:?} to fail: {err}",
                started.elapsed()
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let stats = client.stats();
            let o = &stats.origins[0];
            if stats.open_connections == 0 && o.connecting == 0 && o.active == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slots not freed after refused dials: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// A resolver that answers nothing: no packet leaves the process.
struct Nowhere;

impl freshpool::Resolve for Nowhere {
    fn resolve(&self, host: &str, _port: u16) -> freshpool::ResolveFuture {
        let msg = format!("{host} does not resolve (test)");
        Box::pin(async move { Err(std::io::Error::new(std::io::ErrorKind::NotFound, msg)) })
    }
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        any::<u64>().prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_secs),
        (0u64..100_000).prop_map(Duration::from_millis),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// The bounded twin of `fuzz/fuzz_targets/config.rs`: any settings give
    /// a client or a `Kind::Config` error, never a panic.
    #[test]
    fn builder_returns_a_client_or_a_config_error(
        limits in (any::<usize>(), any::<usize>(), any::<usize>(), any::<usize>()),
        small in (0usize..4, 0usize..4),
        durations in prop::collection::vec(duration(), 8),
        options in prop::collection::vec(prop::option::of(duration()), 6),
        max_requests in prop::option::of(any::<u64>()),
        flags in (any::<bool>(), any::<bool>(), any::<bool>(), 0u8..3),
    ) {
        let (per_host, total, idle, pending) = if small.0 == 0 { limits } else {
            (small.0, small.1 + small.0, small.1, small.0)
        };
        let result = Client::builder()
            .max_connections_per_host(per_host)
            .max_connections_total(total)
            .max_idle_per_host(idle)
            .max_pending(pending)
            .pool_timeout(durations[0])
            .keep_alive_margin(durations[1])
            .validate_after_idle(durations[2])
            .connect_timeout(durations[3])
            .tls_handshake_timeout(durations[4])
            .expect_continue_timeout(durations[5])
            .idle_timeout(options[0])
            .max_lifetime(options[1])
            .freeze_threshold(options[2])
            .lease_warn_after(options[3])
            .response_header_timeout(options[4])
            .timeout(options[5])
            .tcp_keepalive(Some(durations[6]))
            .http2_keep_alive_interval(Some(durations[7]))
            .max_requests_per_connection(max_requests)
            .tcp_nodelay(flags.0)
            .retry_non_idempotent(flags.1)
            .expect_continue(flags.2)
            .http_version(match flags.3 {
                0 => freshpool::HttpVersion::Auto,
                1 => freshpool::HttpVersion::Http1Only,
                _ => freshpool::HttpVersion::Http2Only,
            })
            .build();
        if let Err(e) = result {
            prop_assert_eq!(e.kind(), Kind::Config, "{}", e);
        }
    }

    /// The bounded twin of `fuzz/fuzz_targets/request_uri.rs`: a request
    /// to any string is a typed error here (nothing resolves), never a
    /// panic or a hang, and leaves no slot behind.
    #[test]
    fn any_uri_gives_a_typed_error(uri in prop_oneof![
        ".{0,40}",
        "(https?|HTTP|ftp)://[a-zA-Z0-9.:@\\[\\]%_-]{0,24}(/.{0,8})?",
    ]) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = Client::builder()
            .proxy_from_env(false)
            .resolver(Nowhere)
            .pool_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let result = rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), client.get(&uri)).await });
        match result {
            Err(_) => prop_assert!(false, "GET {:?} hung", uri),
            Ok(Ok(_)) => prop_assert!(false, "GET {:?} got a response from nowhere", uri),
            Ok(Err(e)) => prop_assert!(
                matches!(e.kind(), Kind::InvalidUri | Kind::Connect | Kind::ConnectTimeout | Kind::Tls),
                "GET {:?}: unexpected {:?}: {}", uri, e.kind(), e
            ),
        }
        prop_assert_eq!(client.stats().open_connections, 0);
    }
}

/// Dropping every clone of a client closes its pooled connections (a
/// process that builds clients per task or per tenant must not keep their
/// sockets until each server gives up on them).
///
/// Regression: each connection's driver task owns its `SlotGuard`, which
/// holds an `Arc<Origin>`, whose state holds the connection's sender; hyper
/// ends the connection only when that sender is dropped. This test found
/// the cycle (4 connections still open 3 s after the drop); fixed in the
/// pool ("dropping the last client closes idle connections").
#[test]
fn dropping_the_client_closes_its_idle_connections() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for protocol in [Protocol::Http1, Protocol::Http2] {
            // No server-side idle timeout: only the client can close them.
            let server = TestServer::start(ServerConfig {
                protocol: protocol.clone(),
                ..ServerConfig::default()
            })
            .await;
            let client = Client::builder()
                .http_version(if protocol == Protocol::Http2 {
                    HttpVersion::Http2Only
                } else {
                    HttpVersion::Auto
                })
                .build()
                .unwrap();
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (c, u) = (client.clone(), server.url("/delay/20"));
                tasks.push(tokio::spawn(async move {
                    c.get(&u).await.unwrap().into_body().bytes().await.unwrap()
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert!(server.stats().open_connections() > 0);
            drop(client);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while server.stats().open_connections() > 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{protocol:?}: {} connections still open 3 s after the client was dropped",
                    server.stats().open_connections()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
}

/// A POST without `Idempotency-Key` is never sent twice, over HTTP/2 too.
///
/// Found by `freshpool soak --http2` (7 POSTs processed twice in 2 min).
/// Garbage from the peer makes h2 fail the connection itself: every stream
/// in flight gets a *locally initiated* GOAWAY error, including streams the
/// server already processed. `client.rs::refused_stream` took any
/// `is_go_away()` as "provably not processed" and retried them.
#[test]
fn http2_connection_error_does_not_resend_processed_posts() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = TestServer::start(ServerConfig {
            protocol: Protocol::Http2,
            ..ServerConfig::default()
        })
        .await;
        let proxy = ChaosProxy::start(server.addr()).await;
        let client = Client::builder()
            .http_version(HttpVersion::Http2Only)
            .build()
            .unwrap();
        // Warm one HTTP/2 connection.
        let warm = client.get(&proxy.url("/")).await.unwrap();
        warm.into_body().bytes().await.unwrap();
        // Three POSTs in flight on it (the server handles them slowly)...
        let mut posts = Vec::new();
        for i in 0..3 {
            let c = client.clone();
            let request = http::Request::post(proxy.url("/delay/300"))
                .header("x-request-id", format!("post-{i}"))
                .body("once")
                .unwrap();
            posts.push(tokio::spawn(async move {
                c.request(request).await.map(|r| r.status())
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...then the peer sends garbage: h2 fails the whole connection.
        proxy.garbage_next_response(b"garbage\r\n\r\n not a frame".to_vec());
        let _ = client.get(&proxy.url("/")).await;
        for p in posts {
            let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            server.stats().duplicated_request_ids(),
            Vec::<String>::new(),
            "POSTs without Idempotency-Key were processed twice"
        );
    });
}
