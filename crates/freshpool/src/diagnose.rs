//! Process-wide diagnosis of the pool-per-request anti-pattern.
//!
//! A pool is worth having only if it is shared. When many pools in one
//! process connect to the same origin in a short time, someone is building
//! a client per request (the failure behind 30 s connect timeouts under
//! bursts of 6-9 calls). We count, per origin, the distinct pools that met
//! it within the last minute and warn once, naming the code that builds
//! the clients. (Counted over a window, not over the process's life: a
//! long-running service that rebuilds its client now and then, or a test
//! suite with a client per test, is not the anti-pattern.)

use std::collections::{HashMap, VecDeque};
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Distinct pools meeting one origin within `WINDOW` at which we warn.
pub(crate) const POOLS_PER_ORIGIN_WARNING: usize = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Past this many origins, entries with no meeting in the window (and no
/// warning given) are dropped, at most once per window; origins met while
/// it is still full are not tracked. So the map does not grow with every
/// origin a process ever met, and a crawler meeting thousands a minute
/// does not pay a scan of it for each.
const MAX_ORIGINS: usize = 4096;

static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// How many pool-per-request warnings this process has logged.
///
/// ```
/// assert_eq!(freshpool::pool_per_request_warnings(), 0);
/// ```
pub fn pool_per_request_warnings() -> u64 {
    WARNINGS.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Seen {
    /// (when, pool id) of the latest meetings, within `WINDOW`, one per pool.
    recent: VecDeque<(Instant, u64)>,
    warned: bool,
}

/// Called when a pool uses an origin for the first time (a cold path).
pub(crate) fn pool_met_origin(origin: &str, pool_id: u64, built_at: &'static Location<'static>) {
    static SEEN: OnceLock<Mutex<Origins>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let met = meet(&mut seen, origin, pool_id, Instant::now());
    // (Let go before the warning: a tracing subscriber that ships events
    // through a `Client` of its own, to an origin its pool meets first,
    // comes back here on this thread, and deadlocked on the lock.)
    drop(seen);
    let Some(pools) = met else {
        return;
    };
    WARNINGS.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        origin,
        pools,
        client_built_at = %built_at,
        "{pools} separate connection pools have connected to {origin} within a minute: a Client \
         is being built per request (last at {built_at}). Build one Client and clone it; clones \
         share one pool."
    );
}

#[derive(Default)]
struct Origins {
    seen: HashMap<String, Seen>,
    pruned_at: Option<Instant>,
}

/// Records the meeting; `Some(pools)` when it is time to warn (once per
/// origin).
fn meet(origins: &mut Origins, origin: &str, pool_id: u64, now: Instant) -> Option<usize> {
    if origins.seen.len() >= MAX_ORIGINS && !origins.seen.contains_key(origin) {
        if origins
            .pruned_at
            .is_some_and(|at| now.duration_since(at) < WINDOW)
        {
            return None;
        }
        origins.pruned_at = Some(now);
        origins.seen.retain(|_, s| {
            s.warned
                || s.recent
                    .back()
                    .is_some_and(|(at, _)| now.duration_since(*at) < WINDOW)
        });
        if origins.seen.len() >= MAX_ORIGINS {
            return None;
        }
    }
    let entry = origins.seen.entry(origin.to_owned()).or_default();
    while entry
        .recent
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
    {
        entry.recent.pop_front();
    }
    // (One pool meets an origin once per security context: count it once.)
    if !entry.recent.iter().any(|(_, id)| *id == pool_id) {
        entry.recent.push_back((now, pool_id));
    }
    if entry.recent.len() >= POOLS_PER_ORIGIN_WARNING && !entry.warned {
        entry.warned = true;
        return Some(entry.recent.len());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_pools_within_a_minute_warn_once_and_spread_out_do_not() {
        let mut seen = Origins::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // One pool meeting the origin over and over: not the pattern.
        for k in 0..20 {
            assert_eq!(meet(&mut seen, "a", 1, at(k)), None);
        }
        // Ten pools, one every 10 s: never ten within a minute.
        for k in 0..30 {
            assert_eq!(meet(&mut seen, "b", 100 + k, at(10 * k)), None);
        }
        // Ten pools within a minute: one warning, then no more.
        let warned: Vec<_> = (0..30)
            .filter_map(|k| meet(&mut seen, "c", 200 + k, at(k)))
            .collect();
        assert_eq!(warned, [POOLS_PER_ORIGIN_WARNING]);
    }

    /// A tracing subscriber that meets an origin itself as it takes the
    /// warning (one shipping events through a `Client` of its own) comes
    /// back into `pool_met_origin` on the same thread: the warning was
    /// logged under the process-wide lock, and that deadlocked. (Should it
    /// come back, the stuck thread keeps that lock, and other tests that
    /// meet origins in this binary hang with it.)
    #[test]
    fn a_subscriber_of_the_warning_may_meet_an_origin_itself() {
        use std::sync::atomic::AtomicBool;
        use tracing_subscriber::layer::{Context, SubscriberExt};
        static SAW_THE_WARNING: AtomicBool = AtomicBool::new(false);
        struct MeetsAnOrigin;
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MeetsAnOrigin {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                if *event.metadata().level() == tracing::Level::WARN {
                    SAW_THE_WARNING.store(true, Ordering::SeqCst);
                }
                pool_met_origin("http://log-shipper.test", 1, Location::caller());
            }
        }
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let subscriber = tracing_subscriber::registry().with(MeetsAnOrigin);
            tracing::subscriber::with_default(subscriber, || {
                for pool in 0..POOLS_PER_ORIGIN_WARNING as u64 {
                    pool_met_origin("http://warned.test", 1000 + pool, Location::caller());
                }
            });
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the warning's subscriber met its origin without a deadlock");
        assert!(
            SAW_THE_WARNING.load(Ordering::SeqCst),
            "the warning reached the subscriber"
        );
    }

    /// Thousands of origins a minute: the map stays bounded and is scanned
    /// at most once per window.
    #[test]
    fn the_map_stays_bounded_and_is_pruned_once_per_window() {
        let mut seen = Origins::default();
        let t0 = Instant::now();
        for k in 0..(MAX_ORIGINS as u64 + 500) {
            meet(&mut seen, &format!("o{k}"), k, t0);
        }
        assert_eq!(seen.seen.len(), MAX_ORIGINS);
        let pruned = seen.pruned_at;
        assert!(pruned.is_some());
        meet(&mut seen, "late", 1, t0 + Duration::from_secs(1));
        assert_eq!(
            seen.pruned_at, pruned,
            "not scanned again within the window"
        );
        // A window later the stale entries go and new origins are tracked.
        meet(&mut seen, "later", 1, t0 + WINDOW + Duration::from_secs(1));
        assert!(seen.seen.contains_key("later"));
        assert!(seen.seen.len() < MAX_ORIGINS);
    }
}
