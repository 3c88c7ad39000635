//! Unit tests of the caching resolver (`CachingResolver`), against
//! resolvers that switch, fail or go silent on command.

use super::*;
use std::sync::atomic::AtomicUsize;

/// Answers the current list, or fails while `addrs` is empty (a DNS
/// outage).
struct Switch {
    addrs: Mutex<Vec<SocketAddr>>,
    lookups: AtomicUsize,
}

impl Resolve for Arc<Switch> {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let addrs = self.addrs.lock().unwrap().clone();
        Box::pin(async move {
            if addrs.is_empty() {
                return Err(std::io::Error::other("SERVFAIL"));
            }
            Ok(addrs)
        })
    }
}

fn switch(addrs: &[&str]) -> Arc<Switch> {
    Arc::new(Switch {
        addrs: Mutex::new(addrs.iter().map(|a| addr(a)).collect()),
        lookups: AtomicUsize::new(0),
    })
}

/// Answers once, then never again (a DNS server gone silent).
struct SilentAfterFirst(AtomicUsize);

impl Resolve for SilentAfterFirst {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let first = self.0.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            if !first {
                std::future::pending::<()>().await;
            }
            Ok(vec![addr("127.0.0.2:80")])
        })
    }
}

/// A lookup that neither answers nor fails does not hold a dial for
/// its whole connect_timeout while a good answer is at hand: after
/// `STALE_AFTER` the dial goes on with the last answer.
#[tokio::test]
async fn a_silent_lookup_falls_back_to_the_last_good_answer() {
    let cached =
        CachingResolver::new(SilentAfterFirst(AtomicUsize::new(0))).ttl(Duration::from_millis(50));
    cached.resolve("h", 80).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), cached.resolve("h", 80))
        .await
        .expect("not held by the silent lookup")
        .unwrap();
    assert_eq!(answer, [addr("127.0.0.2:80")]);
    assert!(started.elapsed() >= STALE_AFTER);
    // That lookup still runs (in the background): the next dial does
    // not start another, and goes on with the last answer at once.
    let started = Instant::now();
    assert_eq!(
        cached.resolve("h", 80).await.unwrap(),
        [addr("127.0.0.2:80")]
    );
    assert!(started.elapsed() < STALE_AFTER);
    // A name never answered has nothing to fall back on: it waits.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), cached.resolve("other", 80))
            .await
            .is_err()
    );
}

/// A dial whose connect_timeout is shorter than `STALE_AFTER` drops its
/// lookup before the fallback: that dropped the lookup itself too, so the
/// next dial started another and was dropped the same way, and every dial
/// failed for as long as DNS stayed silent, with a good answer at hand.
/// The lookup now runs on its own: the dials after the first go on with
/// the last answer at once.
#[tokio::test]
async fn a_lookup_outlives_a_dial_that_gave_up_on_it() {
    let cached =
        CachingResolver::new(SilentAfterFirst(AtomicUsize::new(0))).ttl(Duration::from_millis(50));
    cached.resolve("h", 80).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let short = Duration::from_millis(300);
    assert!(short < STALE_AFTER);
    // The first dial after expiry gives up first (its timeout is short).
    assert!(tokio::time::timeout(short, cached.resolve("h", 80))
        .await
        .is_err());
    // The lookup goes on: the next dials take the last answer at once.
    for _ in 0..3 {
        let answer = tokio::time::timeout(short, cached.resolve("h", 80))
            .await
            .expect("the last good answer, at once")
            .unwrap();
        assert_eq!(answer, [addr("127.0.0.2:80")]);
    }
}

/// DNS round-robin: the same addresses in a new order. Dials try them
/// in the new order (Happy Eyeballs starts with the first), and no
/// connection is retired for it.
#[tokio::test]
async fn a_new_order_of_the_same_set_is_followed_without_a_new_generation() {
    let switch = switch(&["127.0.0.2:80", "127.0.0.3:80"]);
    let cached = CachingResolver::new(switch.clone()).ttl(Duration::from_millis(50));
    cached.resolve("h", 80).await.unwrap();
    let first = cached.current("h", 80).unwrap();
    *switch.addrs.lock().unwrap() = vec![addr("127.0.0.3:80"), addr("127.0.0.2:80")];
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        cached.resolve("h", 80).await.unwrap(),
        [addr("127.0.0.3:80"), addr("127.0.0.2:80")]
    );
    let now = cached.current("h", 80).unwrap();
    assert_eq!(now.generation, first.generation);
    assert_eq!(now.addrs, cached.resolve("h", 80).await.unwrap().into());
}

/// A DNS outage: a dial gets the last good answer instead of an error,
/// and the next lookup waits `MIN_TTL` instead of starting at every
/// check. A host never resolved still fails.
#[tokio::test]
async fn a_failed_lookup_serves_the_last_good_answer_and_waits_before_the_next() {
    let switch = switch(&["127.0.0.2:80"]);
    let cached = CachingResolver::new(switch.clone()).ttl(Duration::from_millis(50));
    cached.resolve("h", 80).await.unwrap();
    switch.addrs.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        cached.resolve("h", 80).await.expect("the last good answer"),
        [addr("127.0.0.2:80")]
    );
    assert_eq!(switch.lookups.load(Ordering::SeqCst), 2);
    // Within MIN_TTL of the failure: neither a dial nor a check looks up.
    cached.resolve("h", 80).await.unwrap();
    assert!(cached.current("h", 80).is_some());
    tokio::task::yield_now().await;
    assert_eq!(switch.lookups.load(Ordering::SeqCst), 2);
    assert!(
        cached.resolve("other", 80).await.is_err(),
        "nothing to fall back on"
    );
}

fn refreshing(cached: &CachingResolver<impl Resolve>, host: &str) -> bool {
    find(&mut cached.shared.lock(), host, 80)
        .unwrap()
        .refreshing
        .is_some()
}

/// A refresh started by `current` on a runtime that then shut down
/// left the host marked as being looked up: no later check refreshed
/// it, so connections no longer followed DNS.
#[test]
fn a_refresh_dropped_with_its_runtime_does_not_stop_later_ones() {
    let cached =
        CachingResolver::new(SilentAfterFirst(AtomicUsize::new(0))).ttl(Duration::from_millis(50));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        cached.resolve("h", 80).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cached.current("h", 80).is_some());
        tokio::task::yield_now().await;
    });
    assert!(refreshing(&cached, "h"), "the refresh runs (and hangs)");
    // ... and is counted while it lives (`Entry::lookups`), until its
    // runtime drops it.
    let lookups = || find(&mut cached.shared.lock(), "h", 80).unwrap().lookups;
    assert_eq!(lookups(), 1);
    drop(runtime);
    assert!(!refreshing(&cached, "h"));
    assert_eq!(lookups(), 0);
}

/// An answer past `MAX_STALE` is not served after a failed lookup, and
/// not for `MIN_TTL` after it either: the failure is the answer.
#[tokio::test]
async fn an_answer_too_old_to_stand_in_is_not_served_after_a_failure() {
    let switch = switch(&["127.0.0.2:80"]);
    let cached = CachingResolver::new(switch.clone()).ttl(Duration::from_millis(50));
    cached.resolve("h", 80).await.unwrap();
    switch.addrs.lock().unwrap().clear();
    {
        let mut entries = cached.shared.lock();
        let entry = find(&mut entries, "h", 80).unwrap();
        let Some(long_ago) = Instant::now().checked_sub(MAX_STALE + Duration::from_secs(1)) else {
            return; // (a machine up for less than MAX_STALE)
        };
        entry.ttl_end = long_ago;
        entry.expires = long_ago;
    }
    assert!(cached.resolve("h", 80).await.is_err());
    assert!(
        cached.resolve("h", 80).await.is_err(),
        "within MIN_TTL of the failure too"
    );
    // An answer ends it.
    *switch.addrs.lock().unwrap() = vec![addr("127.0.0.3:80")];
    assert_eq!(
        cached.resolve("h", 80).await.unwrap(),
        [addr("127.0.0.3:80")]
    );
}

/// A `ttl` over `MAX_STALE` keeps the fallback: an answer stands in for
/// a failed lookup up to `MAX_STALE` past its TTL, not past its arrival.
/// (Counted from its arrival, a 10-minute TTL left no fallback: the
/// answer was already too old when it expired.)
#[test]
fn a_long_ttl_keeps_the_last_good_answer_after_it_expires() {
    let cached = CachingResolver::new(switch(&["127.0.0.2:80"])).ttl(Duration::from_secs(600));
    cached.shared.store("h", 80, &[addr("127.0.0.2:80")], None);
    let mut entries = cached.shared.lock();
    let entry = find(&mut entries, "h", 80).unwrap();
    let expired = entry.expires;
    assert_eq!(entry.last_good(expired), Some(vec![addr("127.0.0.2:80")]));
    assert!(entry.last_good(expired + MAX_STALE).is_some());
    assert!(entry
        .last_good(expired + MAX_STALE + Duration::from_secs(1))
        .is_none());
    assert!(!entry.outlived(expired + MAX_STALE));
}

/// Reports a DNS TTL, as hickory does.
struct WithTtl(Arc<Switch>, Duration);

impl Resolve for WithTtl {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        self.0.resolve(host, port)
    }
    fn resolve_with_ttl(&self, host: &str, port: u16) -> ResolveTtlFuture {
        let lookup = self.0.resolve(host, port);
        let ttl = self.1;
        Box::pin(async move { lookup.await.map(|a| (a, Some(ttl))) })
    }
}

#[tokio::test]
async fn dns_ttls_are_honoured_within_the_configured_cap() {
    let switch = Arc::new(Switch {
        addrs: Mutex::new(vec![addr("127.0.0.2:80")]),
        lookups: AtomicUsize::new(0),
    });
    // A 1 s DNS TTL under a 30 s cap: looked up again after 1 s.
    let short = CachingResolver::new(WithTtl(switch.clone(), Duration::from_secs(1)));
    short.resolve("h", 80).await.unwrap();
    let (_, left) = short.resolve_with_ttl("h", 80).await.unwrap();
    assert!(left.unwrap() <= Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1050)).await;
    short.resolve("h", 80).await.unwrap();
    assert_eq!(switch.lookups.load(Ordering::SeqCst), 2);
    // A day-long DNS TTL is capped by the configured TTL.
    let capped = CachingResolver::new(WithTtl(switch.clone(), Duration::from_secs(86_400)))
        .ttl(Duration::from_millis(50));
    capped.resolve("h", 80).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    capped.resolve("h", 80).await.unwrap();
    assert_eq!(switch.lookups.load(Ordering::SeqCst), 4);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TTL past the clock's range panicked on the first answer.
#[tokio::test]
async fn an_endless_ttl_is_capped_not_a_panic() {
    let switch = switch(&["127.0.0.2:80"]);
    let cached = CachingResolver::new(switch.clone()).ttl(Duration::MAX);
    cached.resolve("h", 80).await.unwrap();
    cached.resolve("127.0.0.1", 80).await.unwrap();
    let (_, left) = cached.resolve_with_ttl("h", 80).await.unwrap();
    assert!(left.unwrap() <= MAX_TTL);
    assert_eq!(
        switch.lookups.load(Ordering::SeqCst),
        2,
        "one per host, then cached"
    );
}

#[tokio::test]
async fn caches_for_the_ttl_and_bumps_the_generation_only_on_change() {
    let switch = switch(&["127.0.0.2:80"]);
    // (500 ms, not 50: a thread preempted between two lookups outlived
    // 50 ms on a loaded machine.)
    let cached = CachingResolver::new(switch.clone())
        .ttl(Duration::from_millis(500))
        .retire_after(Duration::ZERO);
    assert_eq!(
        cached.current("h", 80),
        None,
        "nothing known before a lookup"
    );
    assert_eq!(
        cached.resolve("h", 80).await.unwrap(),
        vec![addr("127.0.0.2:80")]
    );
    assert_eq!(
        cached.resolve("H", 80).await.unwrap(),
        vec![addr("127.0.0.2:80")]
    );
    assert_eq!(
        switch.lookups.load(Ordering::SeqCst),
        1,
        "served from cache"
    );
    let first = cached.current("h", 80).unwrap();

    // Expired, same answer: looked up again, same generation.
    tokio::time::sleep(Duration::from_millis(600)).await;
    cached.resolve("h", 80).await.unwrap();
    assert_eq!(switch.lookups.load(Ordering::SeqCst), 2);
    assert_eq!(
        cached.current("h", 80).unwrap().generation,
        first.generation
    );

    // The host moves; after the TTL a current() check refreshes it in
    // the background and the generation moves.
    *switch.addrs.lock().unwrap() = vec![addr("127.0.0.3:80")];
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stale = cached.current("h", 80).unwrap();
    assert_eq!(
        stale.generation, first.generation,
        "served while refreshing"
    );
    let mut now = stale;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        now = cached.current("h", 80).unwrap();
        if now.generation != first.generation {
            break;
        }
    }
    assert_ne!(now.generation, first.generation);
    assert_eq!(&now.addrs[..], &[addr("127.0.0.3:80")]);
}

/// Answers every name with one address.
struct AnyName;

impl Resolve for AnyName {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        Box::pin(async { Ok(vec![addr("127.0.0.3:80")]) })
    }
}

/// An answer past use (expired, older than `MAX_STALE`, no lookup for it
/// running) is swept: the cache kept every host it ever resolved, growing
/// without bound in a process that meets ever new hosts. Recent answers
/// and running lookups stay. (Judged at a later instant rather than with
/// answers planted in the past: the monotonic clock of a machine up for
/// less than `MAX_STALE` cannot go that far back.)
/// An entry for 127.0.0.9:80 whose answer expires at `ttl_end`, with one
/// lookup running since `refreshing` if given.
fn entry_until(ttl_end: Instant, refreshing: Option<Instant>) -> Entry {
    Entry {
        answer: vec![addr("127.0.0.9:80")].into(),
        listed: Vec::new(),
        resolved: Resolved {
            generation: 1,
            addrs: vec![addr("127.0.0.9:80")].into(),
        },
        expires: ttl_end,
        ttl_end,
        refreshing,
        lookups: u8::from(refreshing.is_some()),
        gone: false,
    }
}

#[test]
fn answers_past_use_are_swept() {
    let now = Instant::now();
    let entry =
        |ttl_end: Instant, refreshing: bool| entry_until(ttl_end, refreshing.then_some(now));
    let mut entries = Entries::new();
    entries.insert(
        "old.test".into(),
        vec![(80, entry(now, false)), (81, entry(now + MAX_STALE, false))],
    );
    entries.insert("gone.test".into(), vec![(80, entry(now, false))]);
    entries.insert("looking.test".into(), vec![(80, entry(now, true))]);
    entries.insert(
        "recent.test".into(),
        vec![(80, entry(now + MAX_STALE, false))],
    );
    sweep(&mut entries, now + MAX_STALE + Duration::from_secs(60));
    let ports = |host: &str| {
        entries
            .get(host)
            .map(|p| p.iter().map(|(port, _)| *port).collect::<Vec<_>>())
    };
    assert_eq!(
        ports("old.test"),
        Some(vec![81]),
        "only the answer past use goes"
    );
    assert_eq!(ports("gone.test"), None, "a host with no answer left stays");
    assert_eq!(
        ports("looking.test"),
        Some(vec![80]),
        "a running lookup's entry went"
    );
    assert_eq!(ports("recent.test"), Some(vec![80]));
}

/// The sweep comes as new hosts come, each time the map has doubled since
/// the last: O(1) per new host.
#[tokio::test]
async fn the_sweep_comes_as_the_map_doubles() {
    let cached = CachingResolver::new(AnyName);
    for i in 0..SWEEP_MIN - 1 {
        cached.resolve(&format!("h{i}.test"), 80).await.unwrap();
    }
    assert_eq!(cached.shared.sweep_at.load(Ordering::Relaxed), SWEEP_MIN);
    cached.resolve("last.test", 80).await.unwrap();
    // Swept at SWEEP_MIN hosts (all recent: all stay); the next at twice.
    assert_eq!(cached.shared.lock().len(), SWEEP_MIN);
    assert_eq!(
        cached.shared.sweep_at.load(Ordering::Relaxed),
        2 * SWEEP_MIN
    );
}

/// An origin whose answer the cache let go (unused for minutes, swept as
/// new hosts came) asks for it again at its next DNS check: else, with
/// idle connections serving its requests, DNS changes would go unseen
/// until its next dial, which might never come. It asks once: a lookup
/// that fails is not repeated at every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_relearns_an_answer_the_cache_let_go() {
    let server = freshpool_testkit::TestServer::http1().await;
    let switch = switch(&[&server.addr().to_string()]);
    let cached = CachingResolver::new(switch.clone());
    let client = crate::Client::builder()
        .proxy_from_env(false)
        .resolver(cached.clone())
        .idle_timeout(None)
        .build()
        .unwrap();
    let url = format!("http://relearn.test:{}/", server.addr().port());
    // (Well past `DNS_CHECK_EVERY`, 50 ms, between requests, with the
    // coarse clock's lag: each one checks.)
    let get = || async {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let response = client.get(&url).await.unwrap();
        response.into_body().bytes().await.unwrap();
    };
    let held =
        |cached: &CachingResolver<Arc<Switch>>| cached.shared.lock().contains_key("relearn.test");
    get().await;
    assert_eq!(switch.lookups.load(Ordering::SeqCst), 1);
    // The cache lets the answer go (what its sweep does).
    cached.shared.lock().clear();
    get().await;
    freshpool_testkit::eventually("the answer relearned", || held(&cached)).await;
    assert_eq!(switch.lookups.load(Ordering::SeqCst), 2);
    get().await;
    get().await;
    assert_eq!(
        switch.lookups.load(Ordering::SeqCst),
        2,
        "asked again with a view"
    );
    assert_eq!(
        server.stats().connections_accepted(),
        1,
        "the idle connection served all"
    );
    // Let go again, and the lookup fails (a DNS outage): asked once only.
    switch.addrs.lock().unwrap().clear();
    cached.shared.lock().clear();
    get().await;
    freshpool_testkit::eventually("the lookup ran", || {
        switch.lookups.load(Ordering::SeqCst) == 3
    })
    .await;
    get().await;
    get().await;
    assert_eq!(
        switch.lookups.load(Ordering::SeqCst),
        3,
        "a failing lookup repeated"
    );
    assert!(!held(&cached));
}

/// Answers with whatever `answer` holds, an empty list included (a
/// service-registry resolver mid-deploy).
struct Answers(Mutex<Vec<SocketAddr>>);

impl Resolve for Arc<Answers> {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let addrs = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
}

/// An answer with no address counts as a failed lookup: the last good
/// answer stands in, as for an error, and its generation stays (no
/// connection is retired). It used to be stored as the answer: the
/// generation moved, every connection to the host was retired, and every
/// dial failed ("resolved to no addresses") for the whole TTL.
#[tokio::test]
async fn an_empty_answer_is_a_failed_lookup_not_the_answer() {
    let inner = Arc::new(Answers(Mutex::new(vec![addr("127.0.0.2:80")])));
    let cached = CachingResolver::new(inner.clone()).ttl(Duration::from_millis(50));
    assert_eq!(
        cached.resolve("h", 80).await.unwrap(),
        [addr("127.0.0.2:80")]
    );
    let before = cached.current("h", 80).expect("cached").generation;
    inner.0.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(60)).await;
    // A dial's lookup.
    assert_eq!(
        cached.resolve("h", 80).await.unwrap(),
        [addr("127.0.0.2:80")]
    );
    // The pool's check (`current`), which refreshes in the background.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = cached.current("h", 80);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = cached.current("h", 80).expect("still cached");
    assert_eq!(now.generation, before, "an empty answer moved the host");
    assert_eq!(&now.addrs[..], [addr("127.0.0.2:80")]);
    // A real change still moves it.
    inner.0.lock().unwrap().push(addr("127.0.0.3:80"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        cached.resolve("h", 80).await.unwrap(),
        [addr("127.0.0.3:80")]
    );
    assert_ne!(cached.current("h", 80).unwrap().generation, before);
    // A name never answered: the empty answer is passed on (the dial
    // then says it resolved to no addresses) and not stored.
    inner.0.lock().unwrap().clear();
    assert!(cached.resolve("other", 80).await.unwrap().is_empty());
    assert!(cached.current("other", 80).is_none());
}

/// Answers `addrs`, or panics in `resolve` itself while `panics` is set
/// (a bug in user code).
struct PanicsOnCommand {
    addrs: Mutex<Vec<SocketAddr>>,
    panics: std::sync::atomic::AtomicBool,
}

impl Resolve for Arc<PanicsOnCommand> {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        assert!(!self.panics.load(Ordering::SeqCst), "resolver bug");
        let addrs = self.addrs.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
}

/// A resolver that panics when the pool asks whether DNS moved (`current`,
/// from a checkout) fails that lookup: the request's checkout does not
/// panic, and the name is refreshed later. (The panic reached the
/// request's future, and the entry stayed marked as being looked up, so
/// it was never refreshed again.)
#[tokio::test]
async fn a_resolver_panicking_in_a_refresh_fails_that_lookup_only() {
    let inner = Arc::new(PanicsOnCommand {
        addrs: Mutex::new(vec![addr("127.0.0.2:80")]),
        panics: std::sync::atomic::AtomicBool::new(false),
    });
    let cached = CachingResolver::new(inner.clone())
        .ttl(Duration::from_millis(50))
        .retire_after(Duration::ZERO);
    cached.resolve("h", 80).await.unwrap();
    inner.panics.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cached.current("h", 80)));
    let seen = seen
        .expect("current() does not panic")
        .expect("still cached");
    assert_eq!(&seen.addrs[..], [addr("127.0.0.2:80")]);
    // Later, a working resolver's new answer is taken up.
    inner.panics.store(false, Ordering::SeqCst);
    *inner.addrs.lock().unwrap() = vec![addr("127.0.0.3:80")];
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = cached.current("h", 80);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = cached.current("h", 80).unwrap();
    assert_eq!(&now.addrs[..], [addr("127.0.0.3:80")]);
    // A dial's own lookup that panics leaves no mark behind either.
    inner.panics.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dial = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cached.resolve("h", 80)));
    assert!(
        dial.is_err(),
        "the dial's lookup panics (CatchPanic turns it into its error)"
    );
    inner.panics.store(false, Ordering::SeqCst);
    *inner.addrs.lock().unwrap() = vec![addr("127.0.0.4:80")];
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = cached.current("h", 80);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        &cached.current("h", 80).unwrap().addrs[..],
        [addr("127.0.0.4:80")]
    );
}

/// Answers 127.0.0.2:80 (or fails, when `fail`) after `delay`, counting
/// lookups: DNS slower than a dial's patience.
struct Slow {
    delay: Duration,
    fail: bool,
    lookups: AtomicUsize,
}

impl Resolve for Arc<Slow> {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let (delay, fail) = (self.delay, self.fail);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                return Err(std::io::Error::other("SERVFAIL (slow)"));
            }
            Ok(vec![addr("127.0.0.2:80")])
        })
    }
}

fn slow(delay_ms: u64, fail: bool) -> Arc<Slow> {
    Arc::new(Slow {
        delay: Duration::from_millis(delay_ms),
        fail,
        lookups: AtomicUsize::new(0),
    })
}

/// A host with nothing cached: the dial that gives up on its lookup (a
/// `connect_timeout` shorter than DNS takes) no longer takes the lookup
/// with it. It finishes and is kept, so the next dial has the answer at
/// once. (It was dropped unstored: with DNS slower than the timeout,
/// every request failed, although every lookup would have answered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_lookup_outlives_a_dial_that_gave_up_on_it() {
    let dns = slow(300, false);
    let cached = CachingResolver::new(dns.clone());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), cached.resolve("h", 80))
            .await
            .is_err()
    );
    // The lookup goes on without the dial, and lands.
    freshpool_testkit::eventually("the lookup landed", || {
        cached.shared.flights.in_flight() == 0
    })
    .await;
    let answer = cached.resolve("h", 80).await.unwrap();
    assert_eq!(answer, [addr("127.0.0.2:80")]);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
    // (The lookup's task counts out just after it answers.)
    freshpool_testkit::eventually("the lookup counted out", || {
        cached.shared.flights.in_flight() == 0
    })
    .await;
}

/// Answers nothing: its lookup panics when first polled (a bug in user
/// code, inside the future rather than in `resolve` itself).
struct PanicsWhenPolled;

impl Resolve for PanicsWhenPolled {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        Box::pin(async { panic!("lookup bug") })
    }
}

/// A cold lookup whose future panics fails the dials that share it with
/// the panic's message. Its task died, and every dial read "the lookup of
/// h ended without an answer (its runtime shut down)", with the runtime
/// running on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_lookup_that_panics_says_so() {
    let cached = CachingResolver::new(PanicsWhenPolled);
    let mut dials = tokio::task::JoinSet::new();
    for _ in 0..3 {
        dials.spawn(cached.resolve("h", 80));
    }
    while let Some(answer) = dials.join_next().await {
        let err = answer.unwrap().unwrap_err().to_string();
        assert!(
            err.contains("the resolver panicked looking up h: lookup bug"),
            "{err}"
        );
    }
    // (The lookup's task counts out just after it answers.)
    freshpool_testkit::eventually("the lookup counted out", || {
        cached.shared.flights.in_flight() == 0
    })
    .await;
}

/// Dials to a host with nothing cached share one lookup (they started
/// one each: a burst of 64 dials, 64 `getaddrinfo` threads for one
/// name). A failure reaches each of them with the resolver's words, and
/// is not kept: the next dial looks up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_to_a_cold_host_share_one_lookup() {
    let dns = slow(200, false);
    let cached = CachingResolver::new(dns.clone());
    let mut dials = tokio::task::JoinSet::new();
    for n in 0..20 {
        // (Either spelling of the host is the same name. A dial joins the
        // lookup when made, not when first polled: no scheduling here.)
        let host = if n % 2 == 0 { "h" } else { "H" };
        dials.spawn(cached.resolve(host, 80));
    }
    while let Some(answer) = dials.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), [addr("127.0.0.2:80")]);
    }
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
    // (The lookup's task counts out just after it answers.)
    freshpool_testkit::eventually("the lookup counted out", || {
        cached.shared.flights.in_flight() == 0
    })
    .await;

    let dns = slow(200, true);
    let cached = CachingResolver::new(dns.clone());
    let mut dials = tokio::task::JoinSet::new();
    for _ in 0..5 {
        dials.spawn(cached.resolve("h", 80));
    }
    while let Some(answer) = dials.join_next().await {
        let err = answer.unwrap().unwrap_err();
        assert!(err.to_string().contains("SERVFAIL (slow)"), "{err}");
    }
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
    assert!(cached.resolve("h", 80).await.is_err());
    assert_eq!(
        dns.lookups.load(Ordering::SeqCst),
        2,
        "a failure is not kept"
    );
}

/// A shared lookup whose runtime shuts down leaves the map (the next dial
/// starts another), and a dial waiting for it from elsewhere gets an
/// error rather than waiting for good. On a current-thread runtime, which
/// runs tasks only inside `block_on`, dials do not share: each looks up
/// in place.
#[test]
fn a_shared_lookup_ends_with_its_runtime_and_current_thread_dials_look_up_in_place() {
    let dns = slow(300, false);
    let cached = CachingResolver::new(dns.clone());
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // (Made on that runtime, the dial starts the shared lookup there.)
    let waiting = {
        let _on = first.enter();
        cached.resolve("h", 80)
    };
    assert_eq!(cached.shared.flights.in_flight(), 1);
    drop(first);
    assert_eq!(cached.shared.flights.in_flight(), 0);
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    other.block_on(async {
        let err = waiting.await.unwrap_err();
        assert!(err.to_string().contains("ended without an answer"), "{err}");
        let (a, b) = tokio::join!(cached.resolve("x", 80), cached.resolve("x", 80));
        assert_eq!(a.unwrap(), b.unwrap());
    });
    // One lookup for "h" (dropped with its runtime), two for "x".
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 3);
    assert_eq!(cached.shared.flights.in_flight(), 0);
}

/// Answers `first`, then hangs once (a refresh that never ends, or waits
/// on a runtime nobody drives), then answers `then`.
struct HangsOnce {
    calls: AtomicUsize,
    first: SocketAddr,
    then: SocketAddr,
}

impl Resolve for Arc<HangsOnce> {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = if call == 0 { self.first } else { self.then };
        Box::pin(async move {
            if call == 1 {
                std::future::pending::<()>().await;
            }
            Ok(vec![answer])
        })
    }
}

/// A refresh that hangs holds the next ones back only for
/// `REFRESH_PATIENCE`: then a check starts another, and the pool follows
/// the new answer. (Its mark held every runtime on the old answer until
/// the answer was too old to serve, `MAX_STALE` past its TTL: a refresh
/// started by a current-thread runtime that its caller then left idle
/// kept a busy multi-thread runtime's connections on a moved host for
/// minutes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_hangs_holds_the_next_back_only_for_a_while() {
    let dns = Arc::new(HangsOnce {
        calls: AtomicUsize::new(0),
        first: addr("127.0.0.2:80"),
        then: addr("127.0.0.3:80"),
    });
    let cached = CachingResolver::new(dns.clone())
        .ttl(Duration::from_millis(50))
        .retire_after(Duration::ZERO);
    cached.resolve("h", 80).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let before = cached.current("h", 80).unwrap();
    freshpool_testkit::eventually("the hanging refresh started", || {
        dns.calls.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(refreshing(&cached, "h"), "the refresh hangs");
    // Within its patience: served the old answer, no second lookup.
    assert_eq!(cached.current("h", 80).unwrap(), before);
    assert_eq!(cached.resolve("h", 80).await.unwrap(), [dns.first]);
    assert_eq!(dns.calls.load(Ordering::SeqCst), 2);
    {
        let mut entries = cached.shared.lock();
        let entry = find(&mut entries, "h", 80).unwrap();
        let long_ago = Instant::now()
            .checked_sub(REFRESH_PATIENCE)
            .expect("a machine up for longer than REFRESH_PATIENCE");
        entry.refreshing = Some(long_ago);
    }
    // Past it: the next check starts a lookup of its own.
    assert_eq!(cached.current("h", 80).unwrap(), before);
    freshpool_testkit::eventually("the new answer", || {
        cached.current("h", 80).unwrap().generation != before.generation
    })
    .await;
    let after = cached.current("h", 80).unwrap();
    assert_eq!(after.addrs[..], [dns.then]);
    assert_ne!(after.generation, before.generation);
    assert_eq!(dns.calls.load(Ordering::SeqCst), 3);
}

/// DNS that rotates a few of many addresses into each answer (S3, large
/// load balancers): an address one answer leaves out stays current, so
/// the pool keeps its connections to it, until no answer listed it for
/// `retire_after`. Dials use the last answer only. (Each answer without
/// an address retired every connection to it: they lasted one TTL.)
#[tokio::test]
async fn an_address_an_answer_leaves_out_stays_current_for_retire_after() {
    let (a, b) = (addr("127.0.0.2:80"), addr("127.0.0.3:80"));
    let sw = switch(&["127.0.0.2:80"]);
    let cached = CachingResolver::new(sw.clone())
        .ttl(Duration::from_millis(50))
        .retire_after(Duration::from_millis(400));
    let answer = |cached: &CachingResolver<Arc<Switch>>| {
        let cached = cached.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            cached.resolve("h", 80).await.unwrap()
        }
    };
    assert_eq!(cached.resolve("h", 80).await.unwrap(), [a]);
    let first = cached.current("h", 80).unwrap();
    // B comes, A is left out: both current, a new generation (B is new).
    *sw.addrs.lock().unwrap() = vec![b];
    assert_eq!(answer(&cached).await, [b], "dials use the last answer");
    let both = cached.current("h", 80).unwrap();
    assert_eq!(both.addrs[..], [b, a]);
    assert_ne!(both.generation, first.generation);
    // A again, B left out: the same set, the same generation.
    *sw.addrs.lock().unwrap() = vec![a];
    assert_eq!(answer(&cached).await, [a]);
    let again = cached.current("h", 80).unwrap();
    assert_eq!(again.addrs[..], [a, b]);
    assert_eq!(again.generation, both.generation);
    // B unlisted for longer than retire_after: gone, and the pool told.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(cached.resolve("h", 80).await.unwrap(), [a]);
    let later = cached.current("h", 80).unwrap();
    assert_eq!(later.addrs[..], [a]);
    assert_ne!(later.generation, both.generation);
}

/// A DNS that rotates through more addresses than the cache keeps
/// current: the most recently listed stay, at most `MAX_LISTED` besides
/// the last answer.
#[test]
fn addresses_kept_current_are_bounded() {
    let mut listed = Vec::new();
    let start = Instant::now();
    let mut followed = Vec::new();
    for i in 0..200u16 {
        let answer = [SocketAddr::from(([127, 0, 0, 1], 1000 + i))];
        let at = start + Duration::from_millis(u64::from(i));
        followed = note_listed(&mut listed, &answer, at, Duration::from_secs(60));
    }
    // The answer's one, and the 64 listed last before it.
    assert_eq!(listed.len(), MAX_LISTED + 1);
    assert_eq!(followed.len(), MAX_LISTED + 1);
    assert_eq!(followed[0].port(), 1199, "the last answer first");
    assert_eq!(followed[MAX_LISTED].port(), 1199 - MAX_LISTED as u16);
}

/// A name that answers thousands of addresses: a dial gets the first 32
/// of each family, in the answer's order, so an answer that lists every
/// IPv6 address first still leaves IPv4 to try; the pool follows the whole
/// answer, and a refresh that answers the same set shuffled (a DNS that
/// load-balances a large answer) keeps the set and its generation (with
/// the set capped too, each refresh kept a different 32, and the pool
/// retired connections at every refresh). (Each refresh compared the sets
/// with a scan per address: quadratic under the cache's lock.)
#[tokio::test]
async fn a_huge_answer_is_dialed_capped_per_family_and_followed_whole() {
    let v6 = (0..5_000u16).map(|i| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 10_000 + i)));
    let v4 = (0..5_000u16).map(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + i)));
    let all: Vec<SocketAddr> = v6.chain(v4).collect();
    let dns = Arc::new(Switch {
        addrs: Mutex::new(all.clone()),
        lookups: AtomicUsize::new(0),
    });
    let cached = CachingResolver::new(dns.clone()).ttl(Duration::from_millis(50));
    let first = cached.resolve("h", 80).await.unwrap();
    let expected: Vec<SocketAddr> = all[..32]
        .iter()
        .chain(&all[5_000..5_032])
        .copied()
        .collect();
    assert_eq!(first, expected);
    assert_eq!(cached.current("h", 80).unwrap().addrs.len(), 10_000);
    // Served from the cache: the same.
    assert_eq!(cached.resolve("h", 80).await.unwrap(), expected);
    let generation = cached.current("h", 80).unwrap().generation;
    // Refreshed with the same set in another order (reversed): the dial
    // takes the new order's first 32 of each family; the set, and so the
    // generation, stays.
    let mut shuffled = all.clone();
    shuffled.reverse();
    *dns.addrs.lock().unwrap() = shuffled.clone();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let again = cached.resolve("h", 80).await.unwrap();
    assert_eq!(again.len(), 64);
    assert_eq!(again[0], shuffled[0]);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 2);
    let now = cached.current("h", 80).unwrap();
    assert_eq!(now.generation, generation);
    assert_eq!(now.addrs.len(), 10_000);
    // A short answer is untouched.
    assert_eq!(capped(all[..32].to_vec()), all[..32]);
}

/// Hangs at its first lookup (a custom resolver waiting on something
/// lost, an NSS module that never returns), then answers 127.0.0.2:80.
struct HangsFirst(AtomicUsize);

impl Resolve for Arc<HangsFirst> {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            return Box::pin(std::future::pending());
        }
        Box::pin(async { Ok(vec![addr("127.0.0.2:80")]) })
    }
}

/// Library bug (found by a read-only review): a cold lookup that never
/// ended held every later dial of its host for good: each joined it and
/// was cut off by `connect_timeout`, and the flight left the map only when
/// its task ended, which it never did. Past `flight::PATIENCE` the next
/// dial starts a lookup of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_lookup_that_hangs_does_not_hold_its_host_for_good() {
    let dns = Arc::new(HangsFirst(AtomicUsize::new(0)));
    let cached = CachingResolver::new(dns.clone());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), cached.resolve("h", 80))
            .await
            .is_err()
    );
    tokio::time::sleep(flight::PATIENCE + Duration::from_millis(100)).await;
    let answer = tokio::time::timeout(Duration::from_secs(2), cached.resolve("h", 80))
        .await
        .expect("a new lookup, not the hung one")
        .unwrap();
    assert_eq!(answer, [addr("127.0.0.2:80")]);
    assert_eq!(dns.0.load(Ordering::SeqCst), 2);
}

/// The lookup given up on is not cancelled (reviews of the fix above: my
/// first version aborted it, and then a host whose DNS took longer than
/// the patience was never resolved while dials kept coming; my second cut
/// every lookup off at a limit, which threw slow answers away too and
/// left blocking `getaddrinfo` threads to pile up): a slow one still lands
/// and is stored, and the next dial has its answer at once. And with a
/// resolver that hangs at every call, no more than two lookups of a host
/// run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_given_up_on_still_lands_and_no_third_one_starts() {
    // Answers after 1.3 s.
    let dns = slow(1300, false);
    let cached = CachingResolver::new(dns.clone());
    let _first = tokio::spawn(cached.resolve("h", 80));
    tokio::time::sleep(flight::PATIENCE + Duration::from_millis(600)).await;
    // A second lookup at 1.1 s (the first is past its patience; the second
    // would land at 2.4 s) ...
    let _second = tokio::spawn(cached.resolve("h", 80));
    // ... and the first lands meanwhile (at 1.3 s): stored. (Asked at
    // 1.85 s: 550 ms from either landing.)
    tokio::time::sleep(Duration::from_millis(750)).await;
    let answer = tokio::time::timeout(Duration::from_millis(200), cached.resolve("h", 80))
        .await
        .expect("the first lookup's answer, stored")
        .unwrap();
    assert_eq!(answer, [addr("127.0.0.2:80")]);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 2);

    // A resolver that hangs at every call: two lookups of "h" at most.
    let dns = Arc::new(Hangs(AtomicUsize::new(0)));
    let cached = CachingResolver::new(dns.clone());
    for _ in 0..3 {
        let _dial = tokio::spawn(cached.resolve("h", 80));
        tokio::time::sleep(flight::PATIENCE + Duration::from_millis(100)).await;
    }
    assert_eq!(dns.0.load(Ordering::SeqCst), 2);
}

/// Hangs at every lookup, counting them.
struct Hangs(AtomicUsize);

impl Resolve for Arc<Hangs> {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::pending())
    }
}

/// Lookups of a host that hang (a resolver that never returns) hold no
/// other back past `REFRESH_PATIENCE`, but no more than `MOST_REFRESHES`
/// run at once: each later checkout past the patience started one more,
/// a task per host every 10 s, each waiting for good. (A review found
/// it.)
#[test]
fn hung_refreshes_are_bounded() {
    let now = Instant::now();
    let mut entry = entry_until(now, Some(now));
    let later = now + REFRESH_PATIENCE + Duration::from_secs(1);
    assert!(entry.refresh_running(now));
    assert!(!entry.refresh_running(later), "one hung: another may start");
    entry.lookups = MOST_REFRESHES;
    assert!(entry.refresh_running(later), "at the bound, none more");
}
