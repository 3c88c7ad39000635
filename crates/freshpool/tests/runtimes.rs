//! One client shared by several tokio runtimes, one of which shuts down:
//! a static client used by many `#[tokio::test]`s, or an application with
//! more than one runtime. The pool's tasks (dials, the heartbeat) run on
//! whichever runtime started them; when that runtime goes, the pool must
//! neither lose the slots those tasks held nor stop its maintenance.

use std::time::{Duration, Instant};

use freshpool::Client;
use freshpool_testkit::TestServer;

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    if workers == 0 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (at most 10 s) until `done` holds.
fn wait_until(what: &str, client: &Client, done: impl Fn(&freshpool::PoolStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.stats();
        if done(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within 10 s:\n{stats}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A test server, on a multi-thread runtime of its own (kept with it).
fn serve() -> (tokio::runtime::Runtime, TestServer) {
    let server_rt = runtime(1);
    let server = server_rt.block_on(async { tokio::spawn(TestServer::http1()).await.unwrap() });
    (server_rt, server)
}

/// A GET of `url` read to the end, as a future owning its client: to block
/// on or spawn on any runtime.
fn fetch(
    client: &Client,
    url: String,
) -> impl std::future::Future<Output = Result<String, freshpool::Error>> + Send + 'static {
    let client = client.clone();
    async move { client.get(&url).await?.into_body().text().await }
}

/// A GET of `/` queued behind a held one on current-thread runtime `rt`:
/// `client` allows one connection per host, held by the returned response
/// of `/bytes/10`, and the GET, polled on `rt` for 200 ms, waits in its
/// queue (it fails the test if served).
fn queued_behind_held(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    server: &TestServer,
) -> (
    http::Response<freshpool::Body>,
    std::pin::Pin<Box<impl std::future::Future<Output = Result<String, freshpool::Error>> + Send>>,
) {
    let held = rt.block_on(client.get(&server.url("/bytes/10"))).unwrap();
    let mut waiting = Box::pin(fetch(client, server.url("/")));
    rt.block_on(async {
        tokio::select! {
            biased;
            r = &mut waiting => panic!("served while the connection is held: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    });
    (held, waiting)
}

/// `fut` run to its end by runtime `rt` on a thread of its own, waited for
/// up to 10 s (a future that never ends fails the test rather than hang
/// it); `rt` comes back with its answer, alive.
fn finish_elsewhere<T: Send + 'static>(
    rt: tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> (T, tokio::runtime::Runtime) {
    let (done, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = rt.block_on(fut);
        let _ = done.send((out, rt));
    });
    answer
        .recv_timeout(Duration::from_secs(10))
        .expect("answered within 10 s")
}

/// Runtime A holds the origin's only connection; a request from runtime B
/// waits for it. A shuts down: its connection goes, and the pool reserves
/// the freed slot for B's request and spawns that dial on the runtime that
/// freed it, A, which drops the task unrun. That slot used to be lost for
/// good: B's request failed with PoolTimeout, and so did every later one.
/// (Both multi-thread: a current-thread runtime's connections are its own,
/// and B would not wait for A's.)
#[test]
fn a_dial_dropped_unrun_by_a_dying_runtime_gives_its_slot_back() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let slow = server.url("/delay/30000");
    let url = server.url("/");

    let rt_a = runtime(1);
    let in_flight = client.clone();
    rt_a.spawn(async move {
        let _ = in_flight.get(&slow).await;
    });
    // Drive A until its request holds the connection.
    rt_a.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.stats().origins.first().is_none_or(|o| o.active == 0) {
            assert!(Instant::now() < deadline, "A's request within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let rt_b = runtime(1);
    let waiting = client.clone();
    let answer = rt_b.spawn(async move {
        let response = waiting.get(&url).await?;
        response.into_body().text().await
    });
    wait_until("B's request queued", &client, |s| {
        s.origins.first().is_some_and(|o| o.waiting == 1)
    });

    drop(rt_a);
    let body = rt_b
        .block_on(answer)
        .unwrap()
        .expect("B's request is served after A shut down");
    assert_eq!(body, "ok");
    // The slot is usable again, and the books balance: one connection, idle.
    let again = client.clone();
    let url = server.url("/");
    let body = rt_b
        .block_on(async move { again.get(&url).await?.into_body().text().await })
        .expect("a later request");
    assert_eq!(body, "ok");
    assert_books_balance_with_one_idle_connection(&client);
}

/// One connection open, idle: nothing active, connecting or waiting.
fn assert_books_balance_with_one_idle_connection(client: &Client) {
    let stats = client.stats();
    assert_eq!(stats.open_connections, 1, "{stats}");
    let origin = &stats.origins[0];
    assert_eq!(
        (origin.active, origin.connecting, origin.waiting),
        (0, 0, 0),
        "{stats}"
    );
}

/// The heartbeat (expiry sweeps, leak reports) runs on the runtime of the
/// first checkout. When that runtime shuts down, the next checkout on
/// another one starts it again: an expired idle connection is closed by
/// the sweep, without any further request.
#[test]
fn the_heartbeat_restarts_on_another_runtime_when_its_own_shuts_down() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let url = server.url("/");

    let get = |rt: &tokio::runtime::Runtime| rt.block_on(fetch(&client, url.clone())).expect("GET");
    let rt_a = runtime(1);
    assert_eq!(get(&rt_a), "ok");
    drop(rt_a);

    let rt_b = runtime(1);
    assert_eq!(get(&rt_b), "ok");
    assert_eq!(client.stats().open_connections, 1);
    // Idle past its timeout: only a running heartbeat closes it now.
    wait_until("the expired idle connection swept", &client, |s| {
        s.open_connections == 0
    });
    drop(rt_b);
}

/// The heartbeat's runtime lives on but is no longer driven (a synchronous
/// wrapper's current-thread runtime, kept after the first request while
/// the traffic moved to another runtime): the heartbeat stopped without
/// ending, so no other started, and expired idle connections were never
/// swept (nor leaks reported, nor suspends seen). A silent one is now
/// replaced on the runtime of the next checkout.
#[test]
fn a_heartbeat_on_a_runtime_nobody_drives_is_replaced() {
    let server_rt = runtime(1);
    let (first, second) = server_rt.block_on(async {
        let first = tokio::spawn(TestServer::http1()).await.unwrap();
        let second = tokio::spawn(TestServer::http1()).await.unwrap();
        (first, second)
    });
    let client = Client::builder()
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let get =
        |rt: &tokio::runtime::Runtime, url: String| rt.block_on(fetch(&client, url)).expect("GET");
    // The first request, on a current-thread runtime kept but not driven:
    // the heartbeat starts there. (Its connection's task lives there too,
    // so the test watches another origin's.)
    let undriven = runtime(0);
    assert_eq!(get(&undriven, first.url("/")), "ok");
    let driven = runtime(1);
    // Past the silence that marks a heartbeat as stopped.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(get(&driven, second.url("/")), "ok");
    // Idle past its timeout: only a running heartbeat closes it now.
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.stats().open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "the expired idle connection swept within 10 s:\n{}",
            client.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop((undriven, driven));
}

/// A current-thread runtime driven only inside `block_on` (a synchronous
/// wrapper calling the client now and then): between calls no task runs,
/// so the heartbeat's gap looked like a frozen process, and each call
/// found its idle connection evicted as "suspect after a freeze". The
/// process ran all along (a process-wide thread saw it run), so the
/// connection is kept and reused.
#[test]
fn a_runtime_idle_between_block_on_calls_is_not_a_freeze() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::http1());
    let client = Client::new();
    let url = server.url("/");
    let get = || async {
        let body = client.get(&url).await.unwrap().into_body();
        body.bytes().await.unwrap();
    };
    rt.block_on(get());
    std::thread::sleep(Duration::from_millis(2_500));
    rt.block_on(get());
    let stats = client.stats();
    assert_eq!(stats.freezes_detected, 0, "{stats}");
    assert_eq!(stats.created(), 1, "{stats}");
}

/// A connection dialed on runtime A carries a request made on runtime B
/// when A shuts down, which drops the task that drove the connection. An
/// idempotent request goes again on a new connection and succeeds. A POST
/// may have reached the server, so it is not retried: it fails as
/// `PossiblyProcessed`, and the error says the connection's runtime shut
/// down (it read "invalid or truncated HTTP message").
#[test]
fn a_request_whose_connection_runtime_ends_is_retried_or_told_why() {
    let (_server_rt, server) = serve();
    let rt_b = runtime(1);
    for (method, expect_ok) in [(http::Method::GET, true), (http::Method::POST, false)] {
        // (A client each: the GET's retry leaves a connection driven by B.)
        let client = Client::new();
        // A dials the connection (its driver task lives on A) and leaves it idle.
        let rt_a = runtime(1);
        let dialer = client.clone();
        let url = server.url("/");
        rt_a.block_on(async move { dialer.get(&url).await?.into_body().text().await })
            .unwrap();
        // B's request takes that connection and waits for a slow answer.
        let request = http::Request::builder()
            .method(method.clone())
            .uri(server.url("/delay/1500"))
            .body(freshpool::RequestBody::from("x"))
            .unwrap();
        let sender = client.clone();
        let before = server.stats().requests();
        let answer =
            rt_b.spawn(async move { sender.request(request).await?.into_body().text().await });
        wait_until("B's request on A's connection", &client, |s| {
            s.origins
                .first()
                .is_some_and(|o| o.active == 1 && o.idle == 0)
        });
        // The server has it (a fixed sleep could end before A's driver
        // took it from hyper's queue: handed back unsent, even the POST
        // would rightly go again).
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.stats().requests() == before {
            assert!(
                Instant::now() < deadline,
                "{method} reached the server within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(rt_a);
        let result = rt_b.block_on(answer).unwrap();
        if expect_ok {
            assert_eq!(result.expect("GET goes again on a new connection"), "ok");
            let stats = client.stats();
            assert_eq!(stats.origins[0].retries, 1, "{stats}");
        } else {
            let err = result.expect_err("a POST is not sent twice");
            assert_eq!(err.kind(), freshpool::Kind::PossiblyProcessed, "{err}");
            let chain = format!("{err:#}");
            assert!(chain.contains("runtime"), "{method}: {chain}");
            assert!(!chain.contains("invalid or truncated"), "{method}: {chain}");
        }
    }
}

/// A current-thread runtime runs its connections' tasks only while a
/// thread is inside its `block_on`. A client used in one (A, then kept
/// alive but idle) and then on another runtime used to lend the other
/// runtime A's idle connection, and that request waited for A, here until
/// its 5 s timeout (reqwest issue 2501: hyper-util's pool does the same).
/// Requests on a current-thread runtime now use connections of their own,
/// and others leave them alone.
#[test]
fn a_current_thread_runtimes_connections_are_not_lent_to_other_runtimes() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .unwrap();
    let get = |rt: &tokio::runtime::Runtime| rt.block_on(fetch(&client, server.url("/")));
    let rt_a = runtime(0);
    assert_eq!(get(&rt_a).unwrap(), "ok");
    // A lives on, undriven, its connection idle.
    for (name, other) in [("current-thread", runtime(0)), ("multi-thread", runtime(1))] {
        for _ in 0..2 {
            let body = get(&other).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(body, "ok");
        }
    }
    // A's own requests still take A's connection.
    assert_eq!(get(&rt_a).unwrap(), "ok");
    let stats = client.stats();
    // One connection each for A, the other current-thread runtime and the
    // multi-thread one, each reused once.
    assert_eq!((stats.created(), stats.reused()), (3, 3), "{stats}");
    let a = stats
        .origins
        .iter()
        .find(|o| o.runtime == Some(runtime_id(&rt_a)));
    assert_eq!(a.map(|o| (o.created, o.reused)), Some((1, 1)), "{stats}");
    assert!(
        stats.to_string().contains("current-thread runtime"),
        "{stats}"
    );
}

/// tokio's id of `rt`, as `OriginStats::runtime` shows it.
fn runtime_id(rt: &tokio::runtime::Runtime) -> u64 {
    rt.handle().id().to_string().parse().unwrap()
}

/// A current-thread runtime's connections are driven by that runtime, also
/// when a slot it waited for is freed by a task elsewhere. Here the one
/// connection `max_connections_total` allows is the shared partition's,
/// driven by multi-thread runtime Z; runtime X's request closes it to make
/// room, and Z's task, finishing it, dialed for X on Z. X's connection then
/// died with Z: X's next request found it gone and dialed again.
#[test]
fn a_dial_for_a_current_thread_runtime_runs_on_it_whoever_frees_the_slot() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_total(1)
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |client: &Client, rt: &tokio::runtime::Runtime, url| rt.block_on(fetch(client, url));
    let rt_z = runtime(1);
    assert_eq!(get(&client, &rt_z, server.url("/")).unwrap(), "ok");

    let (served, z_gone) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
    let x = std::thread::spawn({
        let (client, url) = (client.clone(), server.url("/"));
        move || {
            let rt_x = runtime(0);
            let first = get(&client, &rt_x, url.clone());
            served.0.send(()).unwrap();
            z_gone.1.recv().unwrap();
            (first, get(&client, &rt_x, url), runtime_id(&rt_x))
        }
    });
    served.1.recv().unwrap();
    drop(rt_z);
    z_gone.0.send(()).unwrap();
    let (first, second, x_id) = x.join().unwrap();
    assert_eq!(
        (first.unwrap(), second.unwrap()),
        ("ok".into(), "ok".into())
    );
    let stats = client.stats();
    let x = stats
        .origins
        .iter()
        .find(|o| o.runtime == Some(x_id))
        .unwrap();
    assert_eq!((x.created, x.reused, x.retries), (1, 1, 0), "{stats}");
}

/// A current-thread runtime built per call and dropped after it (a sync
/// wrapper) makes an origin partition per call, and with no runtime living
/// on between the calls no sweep runs. Each new partition forgets those
/// found unused at two looks: 20 calls leave two origins, not 20.
#[test]
fn a_runtime_per_call_leaves_no_origin_per_call_behind() {
    let (_server_rt, server) = serve();
    let client = Client::new();
    for _ in 0..20 {
        let body = runtime(0).block_on(fetch(&client, server.url("/")));
        assert_eq!(body.unwrap(), "ok");
    }
    // (Two are kept: each partition is forgotten at its second look. A sweep
    // in between could only have forgotten more.)
    let stats = client.stats();
    let kept = stats.origins.len();
    assert!(kept <= 2, "{stats}");
    assert_eq!(
        (kept as u64 + stats.forgotten.origins, stats.created()),
        (20, 20),
        "{stats}"
    );
}

/// The shared partition's connections are driven by multi-thread runtimes
/// only. Here the one connection `max_connections_total` allows is
/// current-thread runtime X's; a request on multi-thread runtime M closes
/// it to make room, and X's task, finishing it when X runs, dialed for M
/// on X. M's connection then served only while X ran: M's next request
/// waited for X, until its 5 s timeout.
#[test]
fn a_shared_dial_never_runs_on_a_current_thread_runtime() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_total(1)
        .max_connections_per_host(1)
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .unwrap();
    let rt_x = runtime(0);
    assert_eq!(
        rt_x.block_on(fetch(&client, server.url("/"))).unwrap(),
        "ok"
    );
    let rt_m = runtime(1);
    let first = rt_m.spawn(fetch(&client, server.url("/")));
    wait_until("M's request waiting", &client, |s| {
        s.origins
            .iter()
            .any(|o| o.runtime.is_none() && o.waiting == 1)
    });
    // X runs a moment: its closed connection's task ends there.
    rt_x.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    assert_eq!(rt_m.block_on(first).unwrap().unwrap(), "ok");
    let again = rt_m.block_on(fetch(&client, server.url("/")));
    assert_eq!(again.expect("M's connection is M's"), "ok");
    let stats = client.stats();
    let shared = stats.origins.iter().find(|o| o.runtime.is_none()).unwrap();
    assert_eq!((shared.created, shared.reused), (1, 1), "{stats}");
}

/// A queued request whose future moves to another runtime while it waits
/// (first polled on current-thread runtime A, then finished on B) and is
/// sent back to ask again (A shut down, dropping the dial it had started
/// for it) asks in B's partition. It asked A's, whose dials are refused on
/// B, and was sent back at once, again and again: a spin past any
/// `pool_timeout`.
#[test]
fn a_queued_request_moved_to_another_runtime_asks_there() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let rt_a = runtime(0);
    let (held, waiting) = queued_behind_held(&rt_a, &client, &server);
    drop(held);
    drop(rt_a);
    // (Without the fix it never returns.)
    let (body, _rt_b) = finish_elsewhere(runtime(1), waiting);
    assert_eq!(body.expect("served on B"), "ok");
}

/// A connection of current-thread runtime A, handed to a request queued on
/// A whose future another runtime, B, polls by then, goes back to A's
/// partition, and the request is served in B's. It used to go out on A's
/// connection, which only A drives: with A alive and idle, it waited for
/// good.
#[test]
fn a_connection_handed_to_a_request_that_moved_runtimes_goes_back() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    let rt_a = runtime(0);
    let (held, waiting) = queued_behind_held(&rt_a, &client, &server);
    // Read to its end: A's connection is handed to the queued request.
    rt_a.block_on(held.into_body().bytes()).unwrap();
    // A lives on, undriven; B finishes the request (without the fix it
    // never returns). B lives on too, and so does its connection.
    let (body, rt_b) = finish_elsewhere(runtime(0), waiting);
    assert_eq!(body.expect("served on B"), "ok");
    let b_id = runtime_id(&rt_b);
    let stats = client.stats();
    let of = |id: u64| {
        stats
            .origins
            .iter()
            .find(|o| o.runtime == Some(id))
            .unwrap_or_else(|| panic!("no partition {id}: {stats}"))
    };
    let (a, b) = (of(runtime_id(&rt_a)), of(b_id));
    assert_eq!((a.created, a.idle, a.active), (1, 1, 0), "{stats}");
    assert_eq!((b.created, b.idle), (1, 1), "{stats}");
}

/// A request queued on current-thread runtime A, whose future B polls
/// while A, alive, is not driven, asks again in B's partition at B's first
/// poll. It used to wait on A's queue, and its `pool_timeout` on A's timer:
/// neither runs until A does, so it waited for good.
#[test]
fn a_request_queued_on_an_undriven_runtime_is_served_where_it_moved() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let rt_a = runtime(0);
    let (held, waiting) = queued_behind_held(&rt_a, &client, &server);
    let (body, _rt_b) = finish_elsewhere(runtime(0), waiting);
    assert_eq!(body.expect("served on B"), "ok");
    // It left A's queue; A's connection is still held.
    let stats = client.stats();
    let a = stats
        .origins
        .iter()
        .find(|o| o.runtime == Some(runtime_id(&rt_a)))
        .unwrap_or_else(|| panic!("no partition for A: {stats}"));
    assert_eq!((a.waiting, a.active), (0, 1), "{stats}");
    drop(held);
}

/// A moved request leaves its old queue before it asks in its new
/// runtime's partition. With `max_connections_total` reached, runtime A's
/// connection, handed to it meanwhile, then rests in A, and the relief of
/// the total limit closes it to make room for a dial on B. The request used
/// to ask first, found nothing idle to close, and waited out its
/// `pool_timeout` while A's connection rested. (A is driven throughout, on
/// a thread of its own: only its task can free A's slot.)
#[test]
fn a_moved_request_gets_room_from_its_old_runtimes_connection() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .max_connections_total(1)
        .pool_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let rt_a = runtime(0);
    let a = rt_a.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        rt_a.block_on(async {
            let _ = stopped.await;
        })
    });
    let on_a = |fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        let (done, finished) = std::sync::mpsc::channel();
        a.spawn(async move {
            fut.await;
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("done on A");
    };
    let (c, url) = (client.clone(), server.url("/bytes/10"));
    let (give, held) = std::sync::mpsc::channel();
    on_a(Box::pin(async move {
        let _ = give.send(c.get(&url).await.unwrap());
    }));
    let held = held.recv().unwrap();
    let mut waiting = Box::pin(fetch(&client, server.url("/")));
    let (give, queued) = std::sync::mpsc::channel();
    on_a(Box::pin(async move {
        tokio::select! {
            biased;
            r = &mut waiting => panic!("served while the connection is held: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let _ = give.send(waiting);
    }));
    let waiting = queued.recv().unwrap();
    // Read to its end on A: A's connection is handed to the queued request.
    on_a(Box::pin(async move {
        held.into_body().bytes().await.unwrap();
    }));
    let (body, _rt_b) = finish_elsewhere(runtime(0), waiting);
    assert_eq!(body.expect("served on B"), "ok");
    let _ = stop.send(());
    driver.join().unwrap();
}

/// A queued request whose future is then polled outside any tokio runtime
/// fails with a typed error: it panicked in tokio ("no reactor running")
/// when it asked again there and made its next timer.
#[test]
fn a_queued_request_polled_outside_any_runtime_gets_an_error() {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    let rt_a = runtime(0);
    let (held, mut waiting) = queued_behind_held(&rt_a, &client, &server);
    let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    let polled = std::thread::spawn(move || {
        let mut cx = std::task::Context::from_waker(&waker);
        std::future::Future::poll(waiting.as_mut(), &mut cx)
    })
    .join()
    .expect("no panic");
    match polled {
        std::task::Poll::Ready(Err(e)) => {
            assert_eq!(e.kind(), freshpool::Kind::Closed, "{e}");
            assert!(e.to_string().contains("outside any tokio runtime"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    drop(held);
}

/// A request queued on current-thread runtime A, finished by a
/// multi-thread runtime B whose partition has an idle connection, is
/// served by asking there. Its wait is recorded in B's partition, which
/// served it: it went to A's, whose figures then read a wait that A's
/// queue never ended (and which, once A's entry is forgotten, was lost).
#[test]
fn a_moved_requests_wait_is_recorded_where_it_was_served() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    let rt_b = runtime(1);
    // B's partition: one connection, idle (its dial was a wait too).
    assert_eq!(
        rt_b.block_on(fetch(&client, server.url("/"))).unwrap(),
        "ok"
    );
    let rt_a = runtime(0);
    let (held, waiting) = queued_behind_held(&rt_a, &client, &server);
    let (body, _rt_b) = finish_elsewhere(rt_b, waiting);
    assert_eq!(body.expect("served on B"), "ok");
    let stats = client.stats();
    let a_id = runtime_id(&rt_a);
    let a = stats.origins.iter().find(|o| o.runtime == Some(a_id));
    let b = stats.origins.iter().find(|o| o.runtime.is_none());
    let (a, b) = (a.expect("A's partition"), b.expect("B's partition"));
    assert_eq!(b.created, 1, "served by B's idle connection: {stats}");
    assert_eq!(a.pool_wait.count, 1, "A's dial only: {stats}");
    assert_eq!(b.pool_wait.count, 2, "B's dial and the moved wait: {stats}");
    drop(held);
}

/// The first request runs in a current-thread runtime's `block_on` (a
/// synchronous wrapper), which is then kept and never driven again; the
/// traffic moves to a multi-thread runtime and stops within the 2 s a
/// silent heartbeat is given. The heartbeat stayed on the undriven
/// runtime: no sweep ran, and the idle connection outlived `idle_timeout`
/// until the next request. It moves to the multi-thread runtime at its
/// first checkout. (A review found it.)
#[test]
fn the_heartbeat_moves_to_a_multi_thread_runtime_that_drives_it() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .idle_timeout(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let rt_c = runtime(0);
    assert_eq!(
        rt_c.block_on(fetch(&client, server.url("/"))).unwrap(),
        "ok"
    );
    let rt_m = runtime(1);
    assert_eq!(
        rt_m.block_on(fetch(&client, server.url("/"))).unwrap(),
        "ok"
    );
    wait_until(
        "the multi-thread runtime's idle connection swept",
        &client,
        |stats| {
            stats
                .origins
                .iter()
                .find(|o| o.runtime.is_none())
                .is_some_and(|o| o.idle == 0 && o.created == 1)
        },
    );
    drop(rt_c);
}

/// A response body read on a runtime of its own after the runtime that
/// made the request shut down (a runtime per call in a blocking wrapper,
/// `#[tokio::test]`s sharing a client) is read to its end: the `timeout`
/// timer of its body, made on the first runtime, panicked when polled
/// there ("A Tokio 1.x context was found, but it is being shutdown").
/// (Its connection, dialed by a runtime that lives on, is driven still.)
#[test]
fn a_body_read_after_its_requests_runtime_shut_down_is_read_to_its_end() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let (lasting, short_lived) = lasting_and_short_lived(&client, &server);
    let response = short_lived.block_on(fetch_response(&client, server.url("/stall/300")));
    drop(short_lived);
    let body = lasting.block_on(response.into_body().bytes());
    assert!(body.is_ok(), "{body:?}");
}

/// A response dropped on a plain thread (no runtime there: a sync part of
/// an application that was handed the response) before its body was read
/// takes its connection with it, which frees the origin's only slot for a
/// request queued on a runtime: that request is served. (No dial can be
/// spawned on the plain thread; the slot is freed by the connection's
/// driver, on its runtime, which dials for the queued request there.)
#[test]
fn a_slot_freed_on_a_thread_without_a_runtime_serves_the_queued_request() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .max_connections_per_host(1)
        .pool_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let rt = runtime(1);
    // A body far larger than any drain on drop: the connection closes.
    let held = rt
        .block_on(client.get(&server.url("/bytes/50000000")))
        .unwrap();
    let waiting = rt.spawn(fetch(&client, server.url("/")));
    wait_until("the request queued", &client, |s| {
        s.origins.first().is_some_and(|o| o.waiting == 1)
    });

    std::thread::spawn(move || drop(held)).join().unwrap();

    let body = rt
        .block_on(waiting)
        .unwrap()
        .expect("the queued request is served after the slot was freed");
    assert_eq!(body, "ok");
    assert_books_balance_with_one_idle_connection(&client);
}

/// A runtime per call (a blocking wrapper: `Runtime::new()` and
/// `block_on` for each request), each living a few milliseconds: the pool's
/// sweep (expiry, leak reports, forgetting unused origins) runs on the
/// heartbeat, which each such runtime starts anew. Each heartbeat task
/// counted its own beats and swept at its fourth, 750 ms on: never, with
/// such runtimes, so an origin once used stayed for good (a service
/// meeting new hosts over days grew without bound). The sweep now comes
/// about once a second, whichever heartbeat task ticks.
#[test]
fn a_runtime_per_call_still_sweeps_unused_origins_away() {
    let (_server_rt, once) = serve();
    let (_server_rt_b, busy) = serve();
    let client = Client::builder()
        .forget_origin_after(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let call = |url: String| {
        let rt = runtime(1);
        let body = rt.block_on(fetch(&client, url)).unwrap();
        assert_eq!(body, "ok");
    };
    call(once.url("/"));
    let once_port = once.addr().port();
    let known = |client: &Client| {
        client
            .stats()
            .origins
            .iter()
            .any(|o| o.origin.ends_with(&format!(":{once_port}")))
    };
    assert!(known(&client), "{}", client.stats());
    let deadline = Instant::now() + Duration::from_secs(10);
    while known(&client) {
        assert!(
            Instant::now() < deadline,
            "the unused origin forgotten within 10 s:\n{}",
            client.stats()
        );
        call(busy.url("/"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(client.stats().forgotten.origins >= 1, "{}", client.stats());
}

/// Library bug (found by a read-only review): a `read_timeout` wait kept
/// the timer made by the runtime that polled the body when the wait began,
/// also when the same wait went on under another runtime; after the first
/// one shut down, polling that timer panicked ("A Tokio 1.x context was
/// found, but it is being shutdown") instead of timing the quiet. (A body
/// handed between runtimes mid-wait: an outer `timeout` or `select!` gave
/// up on a read, and another runtime reads on.)
#[test]
fn a_read_timeout_wait_goes_on_under_another_runtime() {
    use http_body_util::BodyExt;
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .read_timeout(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let (lasting, short_lived) = lasting_and_short_lived(&client, &server);
    // "partial", then nothing for 30 s.
    let mut body = short_lived
        .block_on(fetch_response(&client, server.url("/stall/30000")))
        .into_body();
    // The wait for what follows "partial" begins here, and is given up.
    let gave_up = short_lived.block_on(async {
        tokio::time::timeout(Duration::from_millis(100), async {
            while let Some(frame) = body.frame().await {
                frame.expect("a frame");
            }
        })
        .await
    });
    assert!(gave_up.is_err(), "the body stalls after its first frame");
    drop(short_lived);
    let started = Instant::now();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lasting.block_on(body.frame())
    }));
    let err = match read.expect("no panic") {
        Some(Err(err)) => err,
        other => panic!("expected the read_timeout error, got {other:?}"),
    };
    assert_eq!(err.kind(), freshpool::Kind::Timeout, "{err}");
    assert!(err.to_string().contains("(read_timeout)"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Two runtimes for one client: `lasting`, which dialed (and drives) a
/// connection to `server`, and `short_lived`, for the test to drop.
fn lasting_and_short_lived(
    client: &Client,
    server: &TestServer,
) -> (tokio::runtime::Runtime, tokio::runtime::Runtime) {
    let lasting = runtime(1);
    lasting.block_on(fetch(client, server.url("/"))).unwrap();
    (lasting, runtime(1))
}

/// The response of a GET of `url`, as a future owning its client.
fn fetch_response(
    client: &Client,
    url: String,
) -> impl std::future::Future<Output = http::Response<freshpool::Body>> + Send + 'static {
    let client = client.clone();
    async move { client.get(&url).await.expect("a response") }
}

/// The same for `response_header_timeout` (same review): its timer, made
/// by the runtime that dispatched the request, was kept when the request's
/// future went on under another runtime (which the `Client` docs allow),
/// and polled after the first one shut down it panicked.
#[test]
fn a_response_header_wait_goes_on_under_another_runtime() {
    let (_server_rt, server) = serve();
    let client = Client::builder()
        .response_header_timeout(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let (lasting, short_lived) = lasting_and_short_lived(&client, &server);
    // Dispatched under `short_lived`; its head comes after 3 s.
    let mut request = Box::pin(fetch(&client, server.url("/delay/3000")));
    let gave_up = short_lived.block_on(async {
        tokio::time::timeout(Duration::from_millis(100), request.as_mut()).await
    });
    assert!(gave_up.is_err(), "no head within 100 ms");
    drop(short_lived);
    let started = Instant::now();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lasting.block_on(request.as_mut())
    }));
    let err = read.expect("no panic").unwrap_err();
    assert_eq!(err.kind(), freshpool::Kind::ResponseHeaderTimeout, "{err}");
    assert!(err.to_string().contains("response_header_timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

/// A response body cut off because the runtime that drove its connection
/// shut down (a client shared by a runtime per call, or by several
/// `#[tokio::test]`s) says so, as a response head cut off so does: it read
/// as the server's broken message ("response body from ... failed", kind
/// `Protocol`), which sends the reader to look at the server.
#[test]
fn a_body_cut_off_by_its_connections_runtime_says_why() {
    let (_server_rt, server) = serve();
    body_cut_off_by_its_connections_runtime(&server, Client::new());
    let server_rt = runtime(1);
    let h2 = server_rt.block_on(async {
        tokio::spawn(TestServer::start(freshpool_testkit::ServerConfig {
            protocol: freshpool_testkit::Protocol::Http2,
            ..Default::default()
        }))
        .await
        .unwrap()
    });
    let client = Client::builder()
        .http_version(freshpool::HttpVersion::Http2Only)
        .build()
        .unwrap();
    body_cut_off_by_its_connections_runtime(&h2, client);
}

fn body_cut_off_by_its_connections_runtime(server: &TestServer, client: Client) {
    // Twice: the body read after the runtime is gone, and read meanwhile
    // on another thread, woken as the runtime drops the connection's tasks
    // (in no set order: each must mark the connection before it drops it).
    for read_meanwhile in [false, true] {
        // The connection is dialed, and driven, by a runtime that will go.
        let short_lived = runtime(1);
        short_lived
            .block_on(fetch(&client, server.url("/")))
            .unwrap();
        let reader = runtime(1);
        // Its head comes at once, the rest of its body only after 1.5 s.
        let response = reader.block_on(fetch_response(&client, server.url("/stall/1500")));
        let read = if read_meanwhile {
            let read = reader.spawn(response.into_body().bytes());
            // (The read is waiting for the rest when the runtime goes.)
            std::thread::sleep(Duration::from_millis(100));
            drop(short_lived);
            reader.block_on(read).unwrap()
        } else {
            drop(short_lived);
            reader.block_on(response.into_body().bytes())
        };
        let err = read.expect_err("the body's connection is gone");
        let chain = format!("{err:#}");
        assert_eq!(err.kind(), freshpool::Kind::Io, "{chain}");
        let why = "was cut off: the runtime that drove its connection shut down \
                   (or code it ran panicked)";
        assert!(err.to_string().contains(why), "{chain}");
    }
}
