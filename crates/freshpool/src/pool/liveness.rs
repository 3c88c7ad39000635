//! Whether the process ran: a process-wide thread that wakes every
//! [`PERIOD`] and adds up how long it was kept from running beyond that.
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// How often the thread wakes.
const PERIOD: Duration = Duration::from_millis(50);
/// Lateness below this is scheduling, not a stall (the shortest
/// `freeze_threshold` is 100 ms).
const MIN_STALL: Duration = Duration::from_millis(100);

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Nanoseconds since `EPOCH` of the thread's last wake-up (0: never ran).
static LAST_RUN: AtomicU64 = AtomicU64::new(0);
/// Total nanoseconds the thread woke late by, counting stalls of at least
/// `MIN_STALL`.
static STALLED: AtomicU64 = AtomicU64::new(0);
/// Until when (nanoseconds since `EPOCH`) the thread acts frozen: see
/// [`simulate_freeze`].
static FROZEN_UNTIL: AtomicU64 = AtomicU64::new(0);

fn since_epoch(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    // (+1: a reading at the epoch itself is not "never".)
    at.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

/// Starts the thread, once per process.
pub(super) fn start() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
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
                    let late = now.saturating_duration_since(last).saturating_sub(PERIOD);
                    if late >= MIN_STALL {
                        STALLED.fetch_add(late.as_nanos() as u64, Ordering::AcqRel);
                    }
                    // After the stall is counted: whoever sees this run
                    // sees the stall before it.
                    LAST_RUN.store(since_epoch(now), Ordering::Release);
                    last = now;
                }
            });
        if spawned.is_err() {
            LAST_RUN.store(0, Ordering::Release);
        }
    });
}

/// For tests and benchmarks that simulate a process freeze by blocking the
/// client's runtime thread for `d`: the liveness thread stops for that long
/// too, as it would in a real freeze (SIGSTOP stops every thread).
pub(crate) fn simulate_freeze(d: Duration) {
    start();
    let until = since_epoch(Instant::now()).saturating_add(d.as_nanos() as u64);
    FROZEN_UNTIL.store(until, Ordering::Release);
}

/// What the thread has seen so far, to compare with a later reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Reading {
    /// `STALLED` at the time.
    pub stalled_ns: u64,
    /// `LAST_RUN` at the time.
    pub last_run_ns: u64,
}

/// The thread's counters now. (Its last run first: a run seen implies
/// the stall counted before it.)
pub(super) fn read() -> Reading {
    let last_run_ns = LAST_RUN.load(Ordering::Acquire);
    Reading {
        stalled_ns: STALLED.load(Ordering::Acquire),
        last_run_ns,
    }
}

/// Whether the process was stopped for `threshold` or more since the
/// thread's stall count was `stalled_before`: it stalled that long since,
/// or has not run for that long (after a freeze it may wake later than the
/// caller).
pub(super) fn stopped_since(stalled_before: u64, now: Reading, threshold: Duration) -> bool {
    if now.last_run_ns == 0 {
        return true; // never ran: no evidence either way
    }
    let stalled = Duration::from_nanos(now.stalled_ns.saturating_sub(stalled_before));
    let silent = Duration::from_nanos(since_epoch(Instant::now()).saturating_sub(now.last_run_ns));
    stalled >= threshold || silent >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that ran throughout shows no stop; one that has not run
    /// for the threshold does.
    #[test]
    fn a_running_process_is_not_stopped_and_a_silent_one_is() {
        start();
        let before = read();
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        assert!(now.last_run_ns > before.last_run_ns, "the thread runs");
        // (A host stealing the CPU for 10 s would be a stop.)
        assert!(!stopped_since(
            before.stalled_ns,
            now,
            Duration::from_secs(10)
        ));
        let silent = Reading {
            last_run_ns: 1,
            ..now
        };
        assert!(stopped_since(
            before.stalled_ns,
            silent,
            Duration::from_millis(100)
        ));
        let stalled = Reading {
            stalled_ns: before.stalled_ns + 2_000_000_000,
            ..now
        };
        assert!(stopped_since(
            before.stalled_ns,
            stalled,
            Duration::from_secs(1)
        ));
    }
}
