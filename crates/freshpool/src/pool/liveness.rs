//! Whether the process ran: a process-wide thread that wakes every
//! [`PERIOD`] and keeps the recent times it was kept from running (stops).
//!
//! Why a thread of its own: the heartbeat runs on the caller's runtime, and
//! a gap between its beats cannot tell a frozen process (SIGSTOP, a paused
//! serverless sandbox: the sockets' peers and NATs moved on) from a runtime
//! nobody drives (a current-thread runtime between `block_on` calls: the
//! process runs, its connections are as good as any idle ones). This thread
//! runs in the second case and not in the first, so a freeze is a heartbeat
//! gap during which this thread stalled too, or has not run since.
//!
//! It costs one sleeping thread per process, started with the first pool.
//! If it cannot be started, every heartbeat gap counts as a freeze (as
//! before it existed): never fewer evictions than needed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the thread wakes.
const PERIOD: Duration = Duration::from_millis(50);
/// Lateness below this is scheduling, not a stop (the shortest
/// `freeze_threshold` is 100 ms).
const MIN_STALL: Duration = Duration::from_millis(100);
/// How many recent stops are kept (stops are rare: seconds apart at most).
/// When none is dominated the kept stops get longer the older they are
/// (see `slot_to_replace`), and a new shorter one is dropped: the freeze
/// it was goes undetected. Freezes each shorter than the one before (idle
/// gaps between invocations shrinking as traffic grows) filled 8 slots.
/// Of n stops of lengths in no order, about ln(n) are not dominated: 32
/// slots fill only on a staircase of 32.
const KEPT: usize = 32;

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Nanoseconds since `EPOCH` of the thread's last wake-up (0: never ran).
static LAST_RUN: AtomicU64 = AtomicU64::new(0);
/// Up to `KEPT` stops, those no newer and longer one makes redundant (see
/// `slot_to_replace`), each as (end, length) in nanoseconds: one
/// continuous stop, not a sum (many short scheduling stalls on a starved
/// host are not a freeze). Written by the thread only.
static STOPS: [[AtomicU64; 2]; KEPT] = [const { [AtomicU64::new(0), AtomicU64::new(0)] }; KEPT];
/// The process the thread runs in (a forked child has none until started
/// again).
static PID: AtomicU32 = AtomicU32::new(0);
/// Until when (nanoseconds since `EPOCH`) the thread acts frozen: see
/// [`simulate_freeze`].
static FROZEN_UNTIL: AtomicU64 = AtomicU64::new(0);

fn since_epoch(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    // (+1: a reading at the epoch itself is not "never".)
    at.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

/// Starts the thread unless it runs in this process (once per process;
/// again in a forked child, which inherits none).
pub(super) fn start() {
    let pid = std::process::id();
    let seen = PID.load(Ordering::Acquire);
    if seen == pid
        || PID
            .compare_exchange(seen, pid, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    LAST_RUN.store(since_epoch(Instant::now()), Ordering::Release);
    let spawned = std::thread::Builder::new()
        .name("freshpool-liveness".into())
        .spawn(|| {
            let mut last = Instant::now();
            loop {
                std::thread::sleep(PERIOD);
                let mut now = Instant::now();
                let frozen_until = FROZEN_UNTIL.load(Ordering::Acquire);
                let at = since_epoch(now);
                if at < frozen_until {
                    std::thread::sleep(Duration::from_nanos(frozen_until - at));
                    now = Instant::now();
                }
                // The whole time since the last wake-up: a stop's length
                // errs long by up to one period, toward "a freeze".
                let away = now.saturating_duration_since(last);
                if away.saturating_sub(PERIOD) >= MIN_STALL {
                    let len = away.as_nanos() as u64;
                    let kept = std::array::from_fn(|i| Stop {
                        end: STOPS[i][0].load(Ordering::Relaxed),
                        len: STOPS[i][1].load(Ordering::Relaxed),
                    });
                    if let Some(i) = slot_to_replace(&kept, len) {
                        STOPS[i][1].store(len, Ordering::Release);
                        STOPS[i][0].store(since_epoch(now), Ordering::Release);
                    }
                }
                // After the stop is kept: whoever sees this run sees it.
                LAST_RUN.store(since_epoch(now), Ordering::Release);
                last = now;
            }
        });
    if spawned.is_err() {
        LAST_RUN.store(0, Ordering::Release);
    }
}

/// A kept stop: its end and length, nanoseconds (0, 0 when empty).
#[derive(Clone, Copy)]
struct Stop {
    end: u64,
    len: u64,
}

/// Where a new stop of `len` (ending now) is kept, if anywhere: over a
/// kept stop that another ends no earlier and lasts no shorter than (the
/// new one, or another kept one). Windows always end now, so such a stop
/// adds nothing its dominator does not (an empty slot is dominated by
/// anything). If none is (the kept stops get longer the older they are),
/// the new stop is the shortest and is not kept: a long freeze no beat
/// has judged yet outlives any number of shorter stalls, however old it is
/// (a runtime nobody drives judges its gap only at its next call).
fn slot_to_replace(kept: &[Stop; KEPT], len: u64) -> Option<usize> {
    let dominated = |i: usize| {
        kept[i].len <= len
            || (0..KEPT).any(|j| j != i && kept[j].end >= kept[i].end && kept[j].len >= kept[i].len)
    };
    (0..KEPT)
        .filter(|&i| dominated(i))
        .min_by_key(|&i| kept[i].len)
}

/// Whether the thread was started in this process (and its spawn did
/// not fail): then its stops are evidence; without it a gap is taken for
/// a freeze on no evidence. (Asked before `stopped_within`, which starts
/// the thread in a forked child.)
pub(super) fn watching() -> bool {
    PID.load(Ordering::Acquire) == std::process::id() && LAST_RUN.load(Ordering::Acquire) != 0
}

/// For tests and benchmarks that simulate a process freeze by blocking the
/// client's runtime thread for `d`: the liveness thread stops for that long
/// too, as it would in a real freeze (SIGSTOP stops every thread).
pub(crate) fn simulate_freeze(d: Duration) {
    start();
    let until = since_epoch(Instant::now()).saturating_add(d.as_nanos() as u64);
    FROZEN_UNTIL.store(until, Ordering::Release);
}

/// Whether the process was stopped for `threshold` or more within the last
/// `window` (the heartbeat gap being judged): the thread had one stop whose
/// part inside the window is that long, or has not run for that long (after a freeze
/// it may wake later than the caller), or does not run in this process.
pub(super) fn stopped_within(window: Duration, threshold: Duration) -> bool {
    if PID.load(Ordering::Acquire) != std::process::id() {
        start(); // a forked child: from now on
        return true; // no evidence either way
    }
    let last_run = LAST_RUN.load(Ordering::Acquire);
    if last_run == 0 {
        return true;
    }
    let now = since_epoch(Instant::now());
    if Duration::from_nanos(now.saturating_sub(last_run)) >= threshold {
        return true;
    }
    // The part of a stop inside the window must reach the threshold (a
    // stop before the gap, already judged by an earlier beat, is not in
    // it). A little slack: the caller's "now" is a coarse reading, and a
    // stop's start errs early by up to one period.
    let from = now.saturating_sub((window + PERIOD).as_nanos() as u64);
    STOPS.iter().any(|slot| {
        let end = slot[0].load(Ordering::Acquire);
        let len = slot[1].load(Ordering::Acquire);
        let inside = end.saturating_sub(end.saturating_sub(len).max(from));
        end != 0 && Duration::from_nanos(inside) >= threshold
    })
}

/// How long the process was stopped within the last `window` (a freeze's
/// heartbeat gap, just judged by `stopped_within`): the parts of the stops
/// inside it, and the time since the thread last ran or a stop ended,
/// at most `window`. Without evidence (the thread has not run here), all
/// of it.
pub(super) fn stopped_for(window: Duration) -> Duration {
    if !watching() {
        return window;
    }
    let last_run = LAST_RUN.load(Ordering::Acquire);
    let now = since_epoch(Instant::now());
    let from = now.saturating_sub((window + PERIOD).as_nanos() as u64);
    let mut last_end = 0;
    let stops: u64 = STOPS
        .iter()
        .map(|slot| {
            let end = slot[0].load(Ordering::Acquire);
            let len = slot[1].load(Ordering::Acquire);
            last_end = last_end.max(end);
            end.saturating_sub(end.saturating_sub(len).max(from))
        })
        .sum();
    // (From the later of the two: a stop that ended after `LAST_RUN` was
    // read is counted above, not again here.)
    let still = now.saturating_sub(last_run.max(last_end));
    Duration::from_nanos(stops.saturating_add(still)).min(window)
}

/// Tests that stop the (process-wide) thread take turns.
#[cfg(test)]
pub(super) static TEST_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    /// The time stopped within a gap: the stop's part inside it.
    #[test]
    fn a_stop_is_measured_within_its_gap_only() {
        let _turn = TEST_TURN.lock().unwrap_or_else(|p| p.into_inner());
        start();
        // (Past any stop an earlier test simulated.)
        std::thread::sleep(Duration::from_millis(1500));
        // (Bounds loose for a loaded host: the thread wakes every 50 ms.)
        assert!(stopped_for(Duration::from_millis(400)) < Duration::from_millis(400));
        simulate_freeze(Duration::from_millis(600));
        std::thread::sleep(Duration::from_millis(800));
        let stopped = stopped_for(Duration::from_millis(1200));
        assert!(
            stopped >= Duration::from_millis(500) && stopped < Duration::from_millis(1000),
            "{stopped:?} of a 600 ms stop in a 1.2 s gap"
        );
        // A gap that began after the stop holds none of it.
        std::thread::sleep(Duration::from_millis(700));
        let later = stopped_for(Duration::from_millis(300));
        assert!(later < Duration::from_millis(250), "{later:?}");
    }

    /// A thread that ran throughout shows no stop; a simulated freeze of
    /// the threshold shows one, within the window that covers it only; many
    /// short stops do not add up to one.
    #[test]
    fn one_long_stop_is_a_stop_and_short_ones_do_not_add_up() {
        let _turn = TEST_TURN.lock().unwrap_or_else(|p| p.into_inner());
        start();
        // (Past any stop an earlier test simulated.)
        std::thread::sleep(Duration::from_millis(500));
        assert!(!stopped_within(
            Duration::from_secs(10),
            Duration::from_secs(10)
        ));
        for _ in 0..4 {
            simulate_freeze(Duration::from_millis(150));
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(
            !stopped_within(Duration::from_millis(1100), Duration::from_millis(500)),
            "four 150 ms stops are not one of 500 ms"
        );
        simulate_freeze(Duration::from_millis(600));
        std::thread::sleep(Duration::from_millis(800));
        assert!(stopped_within(
            Duration::from_secs(1),
            Duration::from_millis(500)
        ));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !stopped_within(Duration::from_millis(100), Duration::from_millis(500)),
            "a stop before the window is not in it"
        );
        // The next gap, measured from a beat just after the stop, does not
        // count the stop again (only its part inside the window counts).
        assert!(!stopped_within(
            Duration::from_millis(350),
            Duration::from_millis(500)
        ));
    }

    /// Which kept stop a new one replaces. A round-robin slot let eight
    /// short stalls erase a freeze no beat had judged yet; two first fixes
    /// (always the shortest; the oldest past 60 s) still lost it when old
    /// freezes filled the ring, or when a runtime went undriven for over a
    /// minute.
    #[test]
    fn a_freeze_outlives_shorter_stalls_and_dominated_stops_go_first() {
        let ms = 1_000_000u64;
        let now = 3_600_000 * ms;
        let stop = |ago_ms: u64, len_ms: u64| Stop {
            end: now - ago_ms * ms,
            len: len_ms * ms,
        };
        // A 5 s freeze, then stalls each shorter than the one before, in
        // every other slot: a shorter one still is not kept (nothing is
        // dominated).
        let mut kept = [stop(3000, 5000); KEPT];
        for (k, slot) in kept.iter_mut().enumerate().skip(1) {
            *slot = stop(2000 - 50 * k as u64, 200 - 5 * k as u64);
        }
        let shortest = 200 - 5 * (KEPT as u64 - 1);
        assert_eq!(slot_to_replace(&kept, (shortest - 1) * ms), None);
        // One as long as the shortest supersedes it.
        assert_eq!(slot_to_replace(&kept, shortest * ms), Some(KEPT - 1));
        // The same freeze two minutes ago (a runtime nobody drove), then
        // stalls that grew: the older, shorter ones go, never the freeze.
        let mut kept = [stop(120_000, 5000); KEPT];
        for (k, slot) in kept.iter_mut().enumerate().skip(1) {
            *slot = stop(100_000 - 1000 * k as u64, 150 + 100 * k as u64);
        }
        let i = slot_to_replace(&kept, 150 * ms).expect("a dominated stall");
        assert_ne!(i, 0);
        // Ten-minute freezes an hour ago and a 30 s one just now:
        // an older 10-minute freeze (dominated by a newer one) goes.
        let mut kept = [stop(3_000_000, 600_000); KEPT];
        for (k, slot) in kept.iter_mut().enumerate() {
            slot.end -= k as u64 * ms;
        }
        kept[7] = stop(500, 30_000);
        let i = slot_to_replace(&kept, 150 * ms).expect("a dominated freeze");
        assert!(i != 7 && i != 0, "{i}");
        // An empty slot first.
        let mut kept = [Stop { end: 0, len: 0 }; KEPT];
        kept[0] = stop(100, 5000);
        assert_eq!(slot_to_replace(&kept, 150 * ms), Some(1));
        // Eight freezes each shorter than the one before (idle gaps
        // shrinking as traffic grows), then a shorter freeze still: kept.
        // With 8 slots it was dropped, and the freeze went undetected.
        let mut kept = [Stop { end: 0, len: 0 }; KEPT];
        for (k, slot) in kept.iter_mut().take(8).enumerate() {
            *slot = stop(30_000 - 3_000 * k as u64, 2_400 - 100 * k as u64);
        }
        assert!(slot_to_replace(&kept, 1_500 * ms).is_some());
    }
}
