//! Issue 4: stats after scripted workloads, leak reports, the
//! pool-per-request warning, and metrics seen by a real recorder.

use std::time::Duration;

use freshpool::{Client, CloseReason, Kind};
use freshpool_testkit::TestServer;

mod common;
use common::logs::{leak_reports, log_lines_with, logs};
use common::{fetch, SlowResolver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_after_scripted_workloads() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    for _ in 0..10 {
        fetch(&client, &server.url("/")).await;
    }
    let origin = format!("http://127.0.0.1:{}", server.addr().port());
    let s = client.stats();
    let o = s.origin(&origin).expect("origin listed");
    assert_eq!((o.created, o.reused), (1, 9));
    assert_eq!((o.idle, o.active, o.waiting), (1, 0, 0));
    assert_eq!(o.connect_time.count, 1);
    assert_eq!(s.open_connections, 1);
    // A forced idle timeout shows under its reason.
    freshpool_testkit::eventually("the idle timeout recorded", || {
        client.stats().closed_for(CloseReason::IdleTimeout) == 1
    })
    .await;
    let s = client.stats();
    assert_eq!(s.origin(&origin).unwrap().idle, 0);
    assert!(s.to_string().contains("idle_timeout 1"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_body_is_reported_as_a_leak_and_named_by_the_pool_timeout() {
    let _ = logs();
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_millis(1500))
        .lease_warn_after(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let held_line = line!() + 1;
    let held = client.get(&server.url("/stream/100000")).await.unwrap();
    let call_site = format!("observability.rs:{held_line}:");
    let err = client.get(&server.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PoolTimeout);
    assert!(
        err.to_string().contains(&call_site),
        "PoolTimeout names the holder: {err}"
    );
    // The heartbeat's leak sweep runs about once a second: the first one
    // after the lease turned 300 ms old reports it. Wait for it rather
    // than count on it having run within the 1.5 s pool_timeout (a loaded
    // machine can delay the heartbeat task).
    let origin = format!("127.0.0.1:{}", server.addr().port());
    let leaks = leak_reports(&origin).await;
    assert_eq!(leaks.len(), 1, "reported exactly once: {leaks:?}");
    assert!(leaks[0].contains(&call_site), "{}", leaks[0]);
    let stats = client.stats();
    assert_eq!(stats.origins[0].leaks_reported, 1);
    // The wait that ran out is in the wait figures (it was left out, so
    // starvation showed no waits at all).
    // (The first request's wait for its dial is the other one.)
    let wait = stats.origins[0].pool_wait;
    assert_eq!(wait.count, 2, "{stats}");
    assert!(wait.max >= Duration::from_millis(1500), "{stats}");
    assert!(stats.origins[0].oldest_leases[0]
        .caller
        .contains(&call_site));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_for_one_origin_warn_exactly_once() {
    let _ = logs();
    let server = TestServer::http1().await;
    let before = freshpool::pool_per_request_warnings();
    for _ in 0..50 {
        // The anti-pattern: a new client (and pool) per request.
        let client = Client::new();
        fetch(&client, &server.url("/")).await;
    }
    assert_eq!(freshpool::pool_per_request_warnings() - before, 1);
    let origin = format!("127.0.0.1:{}", server.addr().port());
    let warnings = log_lines_with("separate connection pools");
    let ours: Vec<_> = warnings.iter().filter(|l| l.contains(&origin)).collect();
    assert_eq!(ours.len(), 1, "{warnings:?}");
    assert!(
        ours[0].contains("observability.rs"),
        "names the builder's call site: {}",
        ours[0]
    );
    assert_eq!(
        server.stats().connections_accepted(),
        50,
        "the cost the warning is about"
    );
}

#[test]
fn a_metrics_recorder_sees_the_named_series() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run_recorded(&recorder, async {
        let server = TestServer::http1().await;
        let client = Client::new();
        for _ in 0..3 {
            fetch(&client, &server.url("/")).await;
        }
        client.on_resume(); // closes the idle connection: a close reason
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, label: Option<(&str, &str)>| {
        snapshot.iter().find(|(key, _, _, _)| {
            key.key().name() == name
                && label
                    .is_none_or(|(k, v)| key.key().labels().any(|l| l.key() == k && l.value() == v))
        })
    };
    let (_, _, _, created) = find("freshpool.connections.created", None).expect("created series");
    assert_eq!(*created, DebugValue::Counter(1));
    let (_, unit, _, requests) =
        find("http.client.request.duration", None).expect("request duration series");
    assert!(matches!(requests, DebugValue::Histogram(v) if v.len() == 3));
    // Described with its unit, as every series (an exporter passes it on).
    assert_eq!(*unit, Some(metrics::Unit::Seconds));
    let (_, unit, _, _) = find("freshpool.connections.created", None).unwrap();
    assert_eq!(*unit, Some(metrics::Unit::Count));
    assert!(find(
        "http.client.open_connections",
        Some(("http.connection.state", "idle"))
    )
    .is_some());
    assert!(find(
        "http.client.open_connections",
        Some(("http.connection.state", "active"))
    )
    .is_some());
    let (_, _, _, freeze) = find(
        "freshpool.connections.closed",
        Some(("reason", "freeze_eviction")),
    )
    .unwrap();
    assert_eq!(*freeze, DebugValue::Counter(1));
    assert!(find("freshpool.connect.duration", None).is_some());
    assert!(find(
        "http.client.request.duration",
        Some(("server.address", "127.0.0.1"))
    )
    .is_some());
}

/// A request refused with `PoolFull` is counted as
/// `freshpool.pool.full`, apart from the waits that timed out.
#[test]
fn a_refused_request_is_counted_as_pool_full() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run_recorded(&recorder, async {
        let server = TestServer::http1().await;
        let client = Client::builder()
            .max_connections_per_host(1)
            .max_pending(0)
            .build()
            .unwrap();
        let held = client.get(&server.url("/stream/100000")).await.unwrap();
        let err = client.get(&server.url("/")).await.unwrap_err();
        assert_eq!(err.kind(), freshpool::Kind::PoolFull);
        assert!(err.to_string().contains("no request may wait"), "{err}");
        drop(held);
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let value = |name: &str| {
        snapshot
            .iter()
            .find(|(key, _, _, _)| key.key().name() == name)
            .map(|(_, _, _, v)| v)
    };
    assert_eq!(value("freshpool.pool.full"), Some(&DebugValue::Counter(1)));
    assert_eq!(
        value("freshpool.pool.timeouts"),
        Some(&DebugValue::Counter(0))
    );
}

/// The open-connection gauges follow a lease within the once-a-second
/// sample: a response held unread shows its connection active (not idle,
/// as a gauge set only on returns left it), and reading it shows the
/// connection idle again.
#[test]
fn the_open_connection_gauges_show_a_held_lease_as_active() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run_recorded(&recorder, async {
        let server = TestServer::http1().await;
        let client = Client::new();
        // Once returned, the connection is idle; then leased again.
        fetch(&client, &server.url("/")).await;
        let held = client.get(&server.url("/")).await.unwrap();
        // Sweeps sample the gauges once a second (a busy machine may run
        // one late: polled, not slept for a guessed time).
        let gauges = || (gauge(&snapshotter, "active"), gauge(&snapshotter, "idle"));
        freshpool_testkit::eventually("a leased connection is active", || gauges() == (1.0, 0.0))
            .await;
        held.into_body().bytes().await.unwrap();
        freshpool_testkit::eventually("returned, it is idle", || gauges() == (0.0, 1.0)).await;
    });
}

/// A retry's dedicated connection shows as active when it lands, as any
/// new connection does: the gauges stayed as they were (no connection
/// active) until the next once-a-second sample.
#[test]
fn a_retrys_dedicated_connection_shows_as_active_when_it_lands() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let active = || gauge(&snapshotter, "active");
    run_recorded(&recorder, async {
        let (_server, proxy, client) = a_pooled_connection_killed_silently().await;
        let held = client.get(&proxy.url("/")).await.unwrap();
        let stats = client.stats();
        assert_eq!(
            stats.origins[0].retries, 1,
            "went through the retry: {stats}"
        );
        // At once, not at the next sample.
        assert_eq!(active(), 1.0, "{stats}");
        drop(held);
    });
}

/// `http.client.open_connections` for one `http.connection.state`.
fn gauge(snapshotter: &metrics_util::debugging::Snapshotter, state: &str) -> f64 {
    let snapshot = snapshotter.snapshot().into_vec();
    let (_, _, _, value) = snapshot
        .iter()
        .find(|(key, _, _, _)| {
            key.key().name() == "http.client.open_connections"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "http.connection.state" && l.value() == state)
        })
        .expect("the gauge is registered");
    match value {
        metrics_util::debugging::DebugValue::Gauge(v) => v.0,
        other => panic!("not a gauge: {other:?}"),
    }
}

/// Runs `work` on a current-thread runtime with `recorder` installed while
/// it runs (metric handles register with the recorder of the moment).
fn run_recorded(
    recorder: &metrics_util::debugging::DebuggingRecorder,
    work: impl std::future::Future<Output = ()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(recorder, || rt.block_on(work));
}

/// `http.client.connection.duration` is of established connections: a
/// refused dial added a sample (its slot guard timed the reservation).
#[test]
fn a_failed_dial_is_not_a_connection_duration() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run_recorded(&recorder, async {
        let port = common::closed_port();
        let client = Client::new();
        let err = client
            .get(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::Connect, "{err}");
        // And one that was made, for contrast.
        let server = TestServer::http1().await;
        let made = Client::builder().max_idle_per_host(0).build().unwrap();
        fetch(&made, &server.url("/")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let samples = connection_durations(&snapshotter).expect("registered");
    assert_eq!(samples, 1, "one connection was made");
}

/// A dial cancelled under way (its runtime shut down while the lookup
/// ran) made no connection: no `http.client.connection.duration` sample.
/// (Its slot guard recorded one, timed from the reservation.)
#[test]
fn a_cancelled_dial_is_not_a_connection_duration() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run_recorded(&recorder, async {
        let client = Client::builder()
            .proxy_from_env(false)
            .resolver(SlowResolver(Duration::from_secs(30)))
            .build()
            .unwrap();
        let request = client.clone();
        tokio::spawn(async move {
            let _ = request.get("http://slow-dns.test:1/").await;
        });
        // The dial is under way, waiting on the lookup, when this returns
        // and the runtime drops its tasks.
        freshpool_testkit::eventually("the dial under way", || {
            client
                .stats()
                .origins
                .first()
                .is_some_and(|o| o.connecting == 1)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let samples = connection_durations(&snapshotter).expect("the histogram is registered");
    assert_eq!(samples, 0, "no connection, no duration");
}

/// How many `http.client.connection.duration` samples were recorded
/// (`None`: the histogram was never registered).
fn connection_durations(snapshotter: &metrics_util::debugging::Snapshotter) -> Option<usize> {
    use metrics_util::debugging::DebugValue;
    let counts: Vec<usize> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "http.client.connection.duration")
        .map(|(_, _, _, value)| match value {
            DebugValue::Histogram(v) => v.len(),
            _ => 0,
        })
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// `http.client.connection.duration` is a connection's life from when it
/// was established: it counted from the slot's reservation, so a slow
/// lookup (or connect, or TLS handshake) made every connection look as
/// long-lived as its dial was slow.
#[test]
fn a_connection_duration_does_not_count_its_dial() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dial = Duration::from_millis(600);
    run_recorded(&recorder, async {
        let server = TestServer::http1().await;
        // No idle connections: it closes when its one request is done.
        let client = Client::builder()
            .proxy_from_env(false)
            .resolver(SlowResolver(dial))
            .max_idle_per_host(0)
            .build()
            .unwrap();
        let url = format!("http://slow-dns.test:{}/", server.addr().port());
        fetch(&client, &url).await;
        freshpool_testkit::eventually("the connection closed", || {
            server.stats().open_connections() == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let samples: Vec<f64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "http.client.connection.duration")
        .flat_map(|(_, _, _, value)| match value {
            DebugValue::Histogram(v) => v.into_iter().map(|s| s.0).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(samples.len(), 1, "one connection: {samples:?}");
    assert!(
        samples[0] < dial.as_secs_f64(),
        "{}s for a connection that served one request after a {dial:?} lookup",
        samples[0]
    );
}

/// A request made through `tower::Service::call` is named at the caller's
/// line (it was `client/mod.rs`, inside freshpool, in every leak report and
/// PoolTimeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_the_tower_service_is_named_at_the_callers_line() {
    use tower_service::Service;
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut service = client.clone();
    let request = http::Request::get(server.url("/stream/100000"))
        .body(freshpool::RequestBody::empty())
        .unwrap();
    let held_line = line!() + 1;
    let held = service.call(request).await.unwrap();
    let call_site = format!("observability.rs:{held_line}:");
    let err = client.get(&server.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::PoolTimeout);
    assert!(err.to_string().contains(&call_site), "{err}");
    drop(held);
}

/// Two clients to one host share the `http.client.open_connections`
/// series (same labels): each origin set the whole value, so the gauge
/// showed whichever wrote last. Each now adds its part, and takes it back
/// when its client goes.
#[test]
fn origins_with_the_same_labels_add_up_in_the_open_connections_gauge() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let idle = || -> f64 {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, _, _, _)| {
                key.key().name() == "http.client.open_connections"
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "http.connection.state" && l.value() == "idle")
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Gauge(v) => v.0,
                other => panic!("not a gauge: {other:?}"),
            })
            .expect("the gauge is registered")
    };
    run_recorded(&recorder, async {
        let server = TestServer::http1().await;
        let (a, b) = (Client::new(), Client::new());
        let url = server.url("/delay/50");
        let three = (0..3).map(|_| async {
            fetch(&a, &url).await;
        });
        futures_join_all(three).await;
        fetch(&b, &server.url("/")).await;
        assert_eq!(a.stats().open_connections, 3);
        // Sweeps sample the gauges once a second.
        freshpool_testkit::eventually("3 + 1 idle connections", || idle() == 4.0).await;
        drop(b);
        // (Once its connection has closed and let go of its origin.)
        freshpool_testkit::eventually("the dropped client's part is taken back", || idle() == 3.0)
            .await;
    });
}

/// Runs the futures concurrently on the current task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A connection handed to a queued request just as it gave up goes to the
/// next waiter or the idle list; with neither it closes, and is counted
/// as `Surplus` (it closed uncounted: created minus closed drifted above
/// the connections open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_handed_to_a_request_that_left_is_counted_when_it_closes() {
    let server = TestServer::http1().await;
    let client = Client::builder()
        .max_connections_per_host(1)
        .max_idle_per_host(0)
        .build()
        .unwrap();
    let held = client.get(&server.url("/bytes/10")).await.unwrap();
    let mut queued = Box::pin(client.get(&server.url("/")));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut queued)
            .await
            .is_err(),
        "the second request queues behind the first"
    );
    // The connection goes to the queued request, which is not polled...
    held.into_body().bytes().await.unwrap();
    // ...and leaves with it in hand.
    drop(queued);
    freshpool_testkit::eventually("the server saw the connection close", || {
        server.stats().open_connections() == 0
    })
    .await;
    let stats = client.stats();
    assert_eq!(stats.created(), 1, "{stats}");
    assert_eq!(stats.closed_for(CloseReason::Surplus), 1, "{stats}");
}

/// A process that meets many hosts keeps only those in use: an origin with
/// no connection, no lease and no use for `forget_origin_after` leaves the
/// stats (and the pool's map), its counts go to `forgotten`, so the pool's
/// totals stay whole, and a later request to it starts a new origin. One
/// whose response body is still held is kept however long that lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_origins_are_forgotten_and_their_counts_kept() {
    let servers = [
        TestServer::http1().await,
        TestServer::http1().await,
        TestServer::http1().await,
    ];
    let busy = TestServer::http1().await;
    let client = Client::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .forget_origin_after(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    for server in &servers {
        fetch(&client, &server.url("/")).await;
        fetch(&client, &server.url("/")).await;
    }
    // Its body never read: the lease stays out all along.
    let held = client.get(&busy.url("/")).await.unwrap();
    // Idle connections close at a sweep (once a second), their slots free
    // as their tasks end, and the next sweeps find the origins unused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.stats().forgotten.origins < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not forgotten: {}",
            client.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let origin = |s: &TestServer| format!("http://127.0.0.1:{}", s.addr().port());
    let stats = client.stats();
    let left: Vec<&str> = stats.origins.iter().map(|o| o.origin.as_str()).collect();
    assert_eq!(left, [origin(&busy)], "only the origin in use is kept");
    assert_eq!(stats.forgotten.origins, 3);
    assert_eq!(stats.forgotten.created, 3);
    assert_eq!(stats.forgotten.reused, 3);
    assert_eq!(stats.forgotten.closed_for(CloseReason::IdleTimeout), 3);
    assert_eq!((stats.created(), stats.reused()), (4, 3), "totals kept");
    assert!(stats.to_string().contains("forgotten origins (unused): 3"));
    // Met again: a new origin, counted from zero; the totals go on.
    fetch(&client, &servers[0].url("/")).await;
    let stats = client.stats();
    assert_eq!(stats.origins.len(), 2);
    assert_eq!(stats.origin(&origin(&servers[0])).unwrap().created, 1);
    assert_eq!(stats.created(), 5);
    drop(held);
}

/// `freshpool.connections.closed` counts the connections a dropped client
/// closes (resting HTTP/1 and HTTP/2 ones), as `Surplus`: once every
/// client is gone, closed equals created. (Their slots' guards found them
/// gone from the pool and counted nothing: closed fell short of created
/// by every connection a dropped client had.)
#[test]
fn connections_a_dropped_client_closes_are_counted_closed() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run_recorded(&recorder, async {
        let h1 = TestServer::http1().await;
        let (h2, h2_client) = common::http2_server_and_client(Client::builder()).await;
        let client = Client::new();
        fetch(&client, &h1.url("/")).await;
        fetch(&h2_client, &h2.url("/")).await;
        drop((client, h2_client));
        freshpool_testkit::eventually("both servers' connections closed", || {
            h1.stats().open_connections() == 0 && h2.stats().open_connections() == 0
        })
        .await;
    });
    let total = |name: &str, reason: Option<&str>| -> u64 {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, _, _, _)| {
                key.key().name() == name
                    && reason.is_none_or(|r| key.key().labels().any(|l| l.value() == r))
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(total("freshpool.connections.created", None), 2);
    assert_eq!(total("freshpool.connections.closed", None), 2);
    assert_eq!(total("freshpool.connections.closed", Some("surplus")), 2);
}

/// A retry's dedicated connection that lands just as its request is
/// dropped (the connection already handed over, not yet taken) joins the
/// pool, as one landing after the drop does. It was dropped with the
/// hand-off: counted as created and never as closed, so the stats' books
/// did not balance (created = open + closed).
#[test]
fn a_dedicated_connection_landing_as_its_request_is_dropped_joins_the_pool() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_server, proxy, client) = a_pooled_connection_killed_silently().await;
        let mut request = Box::pin(client.get(&proxy.url("/")));
        // Polled only until its retry waits for the dedicated dial, which
        // runs on this (current-thread) runtime once this task yields.
        let started = std::time::Instant::now();
        loop {
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(request.as_mut(), cx).is_ready())
            })
            .await;
            assert!(!polled, "answered before its retry's dial landed");
            let o = &client.stats().origins[0];
            if o.retries == 1 && o.connecting == 1 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the retry within 10 s: {}",
                client.stats()
            );
            tokio::task::yield_now().await;
        }
        freshpool_testkit::eventually("the dedicated dial lands", || {
            client.stats().origins[0].created == 2
        })
        .await;
        drop(request);

        let stats = client.stats();
        let origin = &stats.origins[0];
        assert_eq!((origin.active, origin.idle), (0, 1), "{stats}");
        let closed: u64 = origin.closed.iter().map(|(_, n)| n).sum();
        assert_eq!(
            origin.created,
            closed + origin.idle as u64,
            "created = closed + open: {stats}"
        );
        // And it serves the next request.
        fetch(&client, &proxy.url("/")).await;
        assert_eq!(client.stats().origins[0].created, 2, "{}", client.stats());
    });
}

/// A client whose one idle connection (through a chaos proxy) was killed
/// silently: its next request meets it dead and is retried on a dedicated
/// connection. (`validate_after_idle` long: the dead connection is reused,
/// not caught by a peek.)
async fn a_pooled_connection_killed_silently() -> (TestServer, freshpool_testkit::ChaosProxy, Client)
{
    let server = TestServer::http1().await;
    let proxy = freshpool_testkit::ChaosProxy::start(server.addr()).await;
    let client = Client::builder()
        .validate_after_idle(Duration::from_secs(60))
        .build()
        .unwrap();
    fetch(&client, &proxy.url("/")).await;
    proxy.kill_all_silently();
    (server, proxy, client)
}
