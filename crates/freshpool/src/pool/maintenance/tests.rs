//! The heartbeat's unit tests: freeze judgement, sweeps, replaced
//! heartbeats, the coarse clock and retiring unused origins.

use super::*;
use crate::health::SystemClock;

fn pool() -> Pool {
    pool_with(Arc::new(SystemClock))
}

/// A clock whose boot time a test moves by hand (a machine suspend).
fn fake_clock() -> Arc<crate::health::FakeClock> {
    Arc::new(crate::health::FakeClock {
        mono: AtomicU64::new(1_000),
        boot: AtomicU64::new(1_000),
    })
}

std::thread_local! {
    /// How long a beat on this thread that judges a freeze pauses
    /// before it discounts the leases (0: not at all): to let a test
    /// run a sweep meanwhile. (Per thread: other tests' beats never.)
    static JUDGEMENT_PAUSE_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
/// Set when a beat reaches that pause.
static JUDGEMENT_PAUSED: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    /// How long a freeze's eviction on this thread pauses before it
    /// starts (0: not at all): to let a test check out meanwhile.
    static EVICTION_PAUSE_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
/// Set when an eviction reaches that pause.
static EVICTION_PAUSED: AtomicBool = AtomicBool::new(false);

/// Waits (at most 5 s) until `flag` is set.
fn until_set(flag: &AtomicBool, what: &str) {
    let started = Instant::now();
    while !flag.load(Ordering::Acquire) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no {what} within 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A test server, on a multi-thread runtime of its own (kept with it).
fn serve(
    config: freshpool_testkit::ServerConfig,
) -> (tokio::runtime::Runtime, freshpool_testkit::TestServer) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt.block_on(async {
        tokio::spawn(freshpool_testkit::TestServer::start(config))
            .await
            .unwrap()
    });
    (server_rt, server)
}

/// An HTTP/2 test server, a client of it (HTTP/2 only) and a
/// current-thread runtime, after one request (`first`: the id of the
/// connection it went on).
struct OneH2Stream {
    _server_rt: tokio::runtime::Runtime,
    _server: freshpool_testkit::TestServer,
    client: crate::Client,
    rt: tokio::runtime::Runtime,
    url: String,
    conn_id: fn(&http::Response<crate::Body>) -> http::HeaderValue,
    first: http::HeaderValue,
}

impl OneH2Stream {
    fn new() -> OneH2Stream {
        let (server_rt, server) = serve(freshpool_testkit::ServerConfig {
            protocol: freshpool_testkit::Protocol::Http2,
            ..Default::default()
        });
        let client = crate::Client::builder()
            .http_version(crate::HttpVersion::Http2Only)
            .build()
            .unwrap();
        let rt = current_thread();
        let url = server.url("/");
        let conn_id: fn(&http::Response<crate::Body>) -> http::HeaderValue =
            |response| response.headers()["x-conn-id"].clone();
        let first = conn_id(&rt.block_on(client.get(&url)).unwrap());
        OneH2Stream {
            _server_rt: server_rt,
            _server: server,
            client,
            rt,
            url,
            conn_id,
            first,
        }
    }
}

pub(super) fn pause_in_eviction() {
    let ms = EVICTION_PAUSE_MS.with(|p| p.get());
    if ms > 0 {
        EVICTION_PAUSED.store(true, Ordering::Release);
        pause(ms);
    }
}

pub(super) fn pause_in_judgement() {
    let ms = JUDGEMENT_PAUSE_MS.with(|p| p.get());
    if ms > 0 {
        JUDGEMENT_PAUSED.store(true, Ordering::Release);
        pause(ms);
    }
}

/// Set by a test to end a pause before its time.
static PAUSE_RELEASED: AtomicBool = AtomicBool::new(false);
/// Set as a pause ends (released or not).
static PAUSE_ENDED: AtomicBool = AtomicBool::new(false);

/// Sleeps `ms`, or less if the test releases the pause meanwhile.
fn pause(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until && !PAUSE_RELEASED.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(2));
    }
    PAUSE_ENDED.store(true, Ordering::Release);
}

/// Resets the pauses' flags, for a test that releases its pause.
fn new_pause() {
    PAUSE_RELEASED.store(false, Ordering::Release);
    PAUSE_ENDED.store(false, Ordering::Release);
}

/// Ends the pause, after checking it had not ended by itself: what the
/// test did meanwhile happened while it lasted. Then waits for it to end
/// and clears the release (else later tests' pauses ended at once, and
/// their races went untested).
fn release_pause() {
    assert!(
        !PAUSE_ENDED.load(Ordering::Acquire),
        "the pause ended before the test's request did"
    );
    PAUSE_RELEASED.store(true, Ordering::Release);
    until_set(&PAUSE_ENDED, "the pause's end");
    PAUSE_RELEASED.store(false, Ordering::Release);
}

/// A sweep that runs while another beat judges a freeze (at a thaw the
/// first checkout and the overdue heartbeat run at once, on two
/// workers) waits for the judgement. The judging beat used to move the
/// beat first: the sweep's own beat then saw no gap, and it reported
/// the lease held across the pause before its discount.
#[test]
fn a_sweep_during_a_freezes_judgement_does_not_report_the_pause() {
    let _turn = liveness::TEST_TURN
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let (_server_rt, server) = serve(freshpool_testkit::ServerConfig::default());
    let client = crate::Client::builder()
        .lease_warn_after(Some(Duration::from_millis(1500)))
        .build()
        .unwrap();
    // (Its heartbeat runs on `rt`, which nobody drives from here on:
    // the pool does nothing until the two beats below.)
    let rt = current_thread();
    let url = server.url("/bytes/10");
    let held = rt.block_on(client.get(&url)).unwrap();
    liveness::simulate_freeze(Duration::from_millis(2500));
    std::thread::sleep(Duration::from_millis(2700));
    let pool = client.pool();
    let now = || pool.inner.budget.stamp(Instant::now());
    JUDGEMENT_PAUSED.store(false, Ordering::Release);
    std::thread::scope(|s| {
        // The checkout's beat: it judges the gap (and pauses).
        s.spawn(|| {
            JUDGEMENT_PAUSE_MS.with(|p| p.set(500));
            pool.check_freeze(now().nanos());
        });
        until_set(&JUDGEMENT_PAUSED, "the judgement's pause");
        // The heartbeat's beat and sweep, during the judgement.
        s.spawn(|| {
            let at = now();
            pool.check_freeze(at.nanos());
            pool.sweep(at);
        });
    });
    let stats = client.stats();
    assert_eq!(stats.freezes_detected, 1, "{stats}");
    let reported = stats.origins[0].leaks_reported;
    assert_eq!(reported, 0, "{stats}");
    drop(held);
}

fn pool_with(clock: Arc<dyn Clock>) -> Pool {
    Pool::new(
        PoolConfig::default(),
        clock,
        key::DialSettings::of(&crate::config::ConnConfig::default()),
        crate::connect::SystemResolver::shared(),
        Location::caller(),
    )
}

/// A freeze is found by the beat that spans it, also when another beat
/// (a checkout whose coarse clock was read before the stop) came in
/// between: an earlier version kept a per-pool baseline of the
/// liveness thread's stalls that such a beat moved past the stop.
#[test]
fn a_beat_with_a_stale_clock_does_not_hide_a_freeze() {
    let _turn = liveness::TEST_TURN
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let pool = pool();
    let budget = &pool.inner.budget;
    let real = || budget.stamp(Instant::now()).nanos();
    let before = real();
    pool.check_freeze(before);
    liveness::simulate_freeze(Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(1700));
    pool.check_freeze(before + 2_000_000);
    pool.check_freeze(real());
    assert_eq!(budget.freezes.load(Ordering::Relaxed), 1);
}

/// A heartbeat started again on another runtime (the first one's shut
/// down) left the gap since the last beat unjudged: it moved the last
/// beat to now, so a freeze between two runtimes (a serverless sandbox
/// frozen between invocations, each with a runtime of its own) was
/// never detected, and the dead idle connections were reused.
#[test]
fn a_freeze_between_two_runtimes_is_detected() {
    let _turn = liveness::TEST_TURN
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let pool = pool();
    let budget = &pool.inner.budget;
    let real = || budget.stamp(Instant::now()).nanos();
    let first = current_thread();
    first.block_on(async {
        pool.ensure_heartbeat(real(), false);
        pool.check_freeze(real());
    });
    drop(first);
    assert!(!pool.inner.heartbeat_started.load(Ordering::Acquire));
    liveness::simulate_freeze(Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(1700));
    current_thread().block_on(async {
        // As a checkout does: the heartbeat first, then the beat.
        pool.ensure_heartbeat(real(), false);
        pool.check_freeze(real());
    });
    assert_eq!(budget.freezes.load(Ordering::Relaxed), 1);
}

/// Likewise a machine suspend between two heartbeat tasks: each task
/// took its own baseline of suspended time, so the new one counted
/// from after the suspend.
#[test]
fn a_suspend_between_two_heartbeats_is_detected() {
    let clock = fake_clock();
    let pool = pool_with(clock.clone());
    current_thread().block_on(async { pool.ensure_heartbeat(1, false) });
    assert!(!pool.inner.heartbeat_started.load(Ordering::Acquire));
    // Suspended for 10 s while no heartbeat ran.
    clock.boot.fetch_add(10_000, Ordering::SeqCst);
    current_thread().block_on(async {
        pool.ensure_heartbeat(1, false);
        // At once, before the checkout that starts it takes anything.
        assert_eq!(pool.inner.budget.freezes.load(Ordering::Relaxed), 1);
        tokio::time::sleep(HEARTBEAT * 2).await;
    });
    assert_eq!(pool.inner.budget.freezes.load(Ordering::Relaxed), 1);
}

/// A machine suspend is judged by the first checkout after it, not only
/// at the heartbeat's next tick: a current-thread runtime driven by
/// `block_on` (a synchronous wrapper) polls the request before its timers,
/// so that checkout took a connection from before the suspend, unchecked
/// (a NAT may have forgotten it meanwhile), while the monotonic clock,
/// stopped during the suspend, showed no idle time to peek for.
#[test]
fn a_checkout_right_after_a_suspend_judges_it() {
    let clock = fake_clock();
    let pool = pool_with(clock.clone());
    let budget = &pool.inner.budget;
    let real = || budget.stamp(Instant::now()).nanos();
    let rt = current_thread();
    rt.block_on(async {
        pool.ensure_heartbeat(real(), false);
        pool.check_freeze(real());
    });
    assert!(pool.inner.heartbeat_started.load(Ordering::Acquire));
    // Suspended for 10 s; the heartbeat's next tick is not due yet.
    clock.boot.fetch_add(10_000, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2));
    rt.block_on(async {
        // As a checkout does.
        pool.ensure_heartbeat(real(), false);
        pool.check_freeze(real());
        assert_eq!(budget.freezes.load(Ordering::Relaxed), 1);
    });
}

/// A process stop and a machine suspend in the same gap: both are
/// freezes, and the stop is measured (what waits and leases are not
/// charged). The suspend's detection, found first when a heartbeat
/// starts, moved the beat before any beat judged the gap, which hid
/// the stop: one freeze, nothing measured.
#[test]
fn a_stop_in_the_gap_of_a_suspend_is_judged_too() {
    let _turn = liveness::TEST_TURN
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let clock = fake_clock();
    let pool = pool_with(clock.clone());
    let budget = &pool.inner.budget;
    let real = || budget.stamp(Instant::now()).nanos();
    current_thread().block_on(async {
        pool.ensure_heartbeat(real(), false);
        pool.check_freeze(real());
    });
    // Stopped for 1.5 s, and suspended for 10 s, while no heartbeat ran.
    liveness::simulate_freeze(Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(1700));
    clock.boot.fetch_add(10_000, Ordering::SeqCst);
    current_thread().block_on(async { pool.ensure_heartbeat(real(), false) });
    assert_eq!(budget.freezes.load(Ordering::Relaxed), 2);
    let frozen = Duration::from_nanos(budget.frozen_ns.load(Ordering::Acquire));
    assert!(frozen >= Duration::from_millis(1400), "{frozen:?}");
}

/// A heartbeat replaced for silence (its runtime undriven between two
/// `block_on` calls) ends when that runtime runs again: each quiet
/// spell had left one more task sweeping every origin for good.
#[test]
fn a_replaced_heartbeat_ends_instead_of_piling_up() {
    let pool = pool();
    let budget = &pool.inner.budget;
    let real = || budget.stamp(Instant::now()).nanos();
    let rt = current_thread();
    rt.block_on(async { pool.ensure_heartbeat(real(), false) });
    for round in 0..2 {
        std::thread::sleep(HEARTBEAT_SILENT + Duration::from_millis(100));
        rt.block_on(async {
            pool.ensure_heartbeat(real(), false);
            tokio::time::sleep(HEARTBEAT * 2).await;
        });
        // One task (two weak references: its own and its guard's).
        let tasks = Arc::weak_count(&pool.inner) / 2;
        assert_eq!(tasks, 1, "round {round}: {tasks} heartbeats");
    }
    assert!(pool.inner.heartbeat_started.load(Ordering::Acquire));
}

/// A heartbeat mistaken for silent (its runtime only stalled) and
/// replaced on a runtime nobody drives takes the heartbeat back: it
/// ended, and nothing ticked at all.
#[test]
fn a_stalled_heartbeat_takes_back_over_from_an_undriven_replacement() {
    let pool = pool();
    let budget = &pool.inner.budget;
    let real = || budget.stamp(Instant::now()).nanos();
    let driven = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    driven.block_on(async { pool.ensure_heartbeat(real(), false) });
    // Its only worker blocked for longer than the silence allowed.
    driven.spawn(async { std::thread::sleep(HEARTBEAT_SILENT + Duration::from_millis(600)) });
    std::thread::sleep(HEARTBEAT_SILENT + Duration::from_millis(300));
    let undriven = current_thread();
    undriven.block_on(async { pool.ensure_heartbeat(real(), false) });
    // The stalled one runs again; the replacement never does, and is
    // found silent in turn.
    std::thread::sleep(HEARTBEAT_SILENT + Duration::from_millis(500));
    let beat = budget.last_beat.load(Ordering::Acquire);
    std::thread::sleep(HEARTBEAT * 3);
    assert!(
        budget.last_beat.load(Ordering::Acquire) > beat,
        "no heartbeat ticks"
    );
    drop((driven, undriven));
}

#[test]
fn the_coarse_clock_follows_the_beats_and_is_never_ahead() {
    let pool = pool();
    let budget = &pool.inner.budget;
    let real = || budget.stamp(Instant::now());
    // No beat yet: the real clock.
    let before = real();
    let read = budget.coarse_now();
    assert!(read >= before && read <= real());
    // A checkout's beat: the coarse clock reads it, not later.
    let beat = real();
    pool.check_freeze(beat.nanos());
    let read = budget.coarse_now();
    assert!(read <= beat && beat.since(read) < Duration::from_micros(1));
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(budget.coarse_now(), read, "no beat, no change");
    assert!(budget.coarse_now() < real());
    // A resume is a beat too (returns after it are not suspects).
    pool.on_resume();
    let read = budget.coarse_now();
    assert!(read > beat && read <= real());
    assert_eq!(read.nanos(), budget.freeze_at.load(Ordering::Acquire));
}

/// The sweep's watch: an origin is retired only once it has been
/// found unused, with no use counted in between, for the whole delay.
#[test]
fn an_origin_is_retired_only_after_a_whole_unused_spell() {
    let client = crate::Client::new();
    let o = origin_of(&client, "http://unused.test/");
    let after = Duration::from_secs(300);
    let t0 = Stamp::from_nanos(1_000);
    assert!(!o.retire_if_unused(t0, after), "the watch starts");
    assert!(!o.retire_if_unused(t0.after(after / 2), after));
    // A request used it meanwhile (a connection made and closed
    // between two sweeps): the spell starts again.
    o.counters.created.fetch_add(1, Ordering::Relaxed);
    assert!(!o.retire_if_unused(t0.after(after), after));
    assert!(!o.retire_if_unused(t0.after(after * 2 - after / 4), after));
    assert!(!o.lock().state.retired);
    assert!(o.retire_if_unused(t0.after(after * 2), after));
    assert!(o.lock().state.retired);
    assert!(!o.retire_if_unused(t0.after(after * 3), after), "once");
}

/// A checkout that recalls an origin the sweep has just retired (still
/// in the map: the sweep takes it out after) goes to a successor: the
/// request is served there, and the retired one gains nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_origin_hands_its_requests_to_a_successor() {
    let server = freshpool_testkit::TestServer::http1().await;
    let client = crate::Client::builder()
        .idle_timeout(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    let url = server.url("/");
    let get = || async {
        let response = client.get(&url).await.unwrap();
        response.into_body().bytes().await.unwrap();
    };
    get().await;
    // (This thread's memo now holds it too: the next request recalls it.)
    let old = origin_of(&client, &url);
    freshpool_testkit::eventually("its connection closed", || old.lock().state.slots == 0).await;
    // What `retire_if_unused` does once the spell is over.
    old.lock().state.retired = true;
    get().await;
    let new = origin_of(&client, &url);
    assert!(!Arc::ptr_eq(&old, &new), "served by the retired origin");
    assert_eq!(old.counters.created.load(Ordering::Relaxed), 1);
    assert_eq!(old.lock().state.slots, 0, "the retired origin dialed");
    assert_eq!(new.counters.created.load(Ordering::Relaxed), 1);
    let map = client.pool().read_origins();
    assert_eq!(map.values().count(), 1);
    assert!(Arc::ptr_eq(map.values().next().unwrap(), &new));
    drop(map);
    // The sweep's own removal, after, leaves the successor in place.
    client
        .pool()
        .write_origins()
        .forget(std::slice::from_ref(&old));
    assert!(Arc::ptr_eq(&origin_of(&client, &url), &new));
}

/// Library bug (found by a read-only review): a freeze's detection moved
/// the pool's beat before it evicted, so a checkout on another worker that
/// saw the fresh beat went on while the eviction ran, and could take a
/// stream on an HTTP/2 connection the eviction had not reached yet (with
/// many origins, milliseconds), dead as the freeze may have left it. The
/// beat now moves once the eviction is done: such a checkout waits for the
/// judgement, as for one still judging the gap.
#[test]
fn a_checkout_during_a_freezes_eviction_waits_for_it() {
    let _turn = liveness::TEST_TURN
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let h2 = OneH2Stream::new();
    let (client, rt, url, conn_id) = (&h2.client, &h2.rt, &h2.url, h2.conn_id);
    let before = h2.first;
    liveness::simulate_freeze(Duration::from_millis(2500));
    std::thread::sleep(Duration::from_millis(2700));
    let pool = client.pool();
    let now = || pool.inner.budget.stamp(Instant::now());
    EVICTION_PAUSED.store(false, Ordering::Release);
    let after = std::thread::scope(|s| {
        // The heartbeat's beat: it judges the gap, and pauses as its
        // eviction begins.
        s.spawn(|| {
            EVICTION_PAUSE_MS.with(|p| p.set(500));
            pool.check_freeze(now().nanos());
        });
        until_set(&EVICTION_PAUSED, "the eviction's pause");
        // A request meanwhile.
        conn_id(&rt.block_on(client.get(url)).unwrap())
    });
    let stats = client.stats();
    assert_ne!(
        after, before,
        "a stream on the connection from before the freeze\n{stats}"
    );
    assert_eq!(stats.freezes_detected, 1, "{stats}");
}

/// A checkout on another worker while `on_resume` evicts takes no stream
/// on an HTTP/2 connection from before it. `on_resume` marked the freeze
/// before its eviction, but only the eviction drained HTTP/2 connections
/// (the checkout's own expiry did not read the mark): until it reached a
/// connection, a request took a stream on it, dead if a NAT dropped it.
#[test]
fn a_checkout_during_on_resumes_eviction_takes_no_stream_from_before() {
    let _turn = liveness::TEST_TURN
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let h2 = OneH2Stream::new();
    let (client, rt, url, conn_id) = (&h2.client, &h2.rt, &h2.url, h2.conn_id);
    let before = h2.first;
    // (Made at least a beat before the resume, on the coarse clock.)
    std::thread::sleep(Duration::from_millis(5));
    EVICTION_PAUSED.store(false, Ordering::Release);
    new_pause();
    let after = std::thread::scope(|s| {
        s.spawn(|| {
            EVICTION_PAUSE_MS.with(|p| p.set(5000));
            client.on_resume();
        });
        until_set(&EVICTION_PAUSED, "the eviction's pause");
        // A request meanwhile.
        let after = conn_id(&rt.block_on(client.get(url)).unwrap());
        release_pause();
        after
    });
    let stats = client.stats();
    assert_ne!(
        after, before,
        "a stream on the connection from before the resume\n{stats}"
    );
}

/// A checkout on another worker after a machine suspend, while the beat
/// that found the suspend has judged the gap but not yet marked the
/// suspend as a freeze, reuses no connection from before it. The gap's
/// judgement moved the beat first: the other checkout found it moved,
/// skipped the judgement, and took the idle connection unchecked (its
/// socket looks alive to a peek; a NAT may have dropped it meanwhile).
#[test]
fn a_checkout_while_a_suspend_is_judged_reuses_nothing_from_before() {
    struct Moved(Arc<crate::health::FakeClock>);
    impl Clock for Moved {
        fn monotonic(&self) -> Duration {
            self.0.monotonic()
        }
        fn boottime(&self) -> Duration {
            self.0.boottime()
        }
    }
    let _turn = liveness::TEST_TURN
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let (_server_rt, server) = serve(freshpool_testkit::ServerConfig::default());
    let clock = fake_clock();
    let client = crate::Client::builder()
        .clock(Moved(clock.clone()))
        .build()
        .unwrap();
    let rt = current_thread();
    let url = server.url("/");
    // (The body read: an HTTP/1 connection whose response is dropped
    // unread outside its runtime cannot be reused at all.)
    let get = || {
        rt.block_on(async {
            let response = client.get(&url).await.unwrap();
            let id = response.headers()["x-conn-id"].clone();
            response.into_body().drain().await.unwrap();
            id
        })
    };
    let before = get();
    // Suspended for 10 s (the monotonic clock stopped meanwhile).
    clock.boot.fetch_add(10_000, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(5));
    let pool = client.pool();
    let now = || pool.inner.budget.stamp(Instant::now());
    JUDGEMENT_PAUSED.store(false, Ordering::Release);
    new_pause();
    let after = std::thread::scope(|s| {
        // The first beat after the suspend: it pauses between the gap's
        // judgement and the suspend's detection.
        s.spawn(|| {
            JUDGEMENT_PAUSE_MS.with(|p| p.set(5000));
            pool.check_freeze(now().nanos());
        });
        until_set(&JUDGEMENT_PAUSED, "the judgement's pause");
        let after = get();
        release_pause();
        after
    });
    let stats = client.stats();
    assert_ne!(
        after, before,
        "the connection from before the suspend, reused\n{stats}"
    );
    assert_eq!(stats.freezes_detected, 1, "{stats}");
}
