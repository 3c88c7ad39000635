//! Total capacity shared by a pool's origins (`max_connections_total`),
//! the origins waiting for it, and the pool-wide clock and freeze state.

use super::*;

/// Total capacity shared by all origins of a pool.
pub(crate) struct Budget {
    pub(super) open: AtomicUsize,
    pub(super) limit: usize,
    pub(super) starving: StarvingList,
    /// How many origins wait for total capacity now (`OriginState::
    /// starving` set; kept by `OriginLock`): what code that returns a
    /// connection asks. Not `starving`'s length: its entries outlive their
    /// claim (an origin served by its own returned connection stays listed
    /// until capacity frees), and read as claims they made the origin's
    /// own returns close for nobody.
    pub(super) starving_origins: AtomicUsize,
    /// When (nanoseconds since `epoch`) `relieve_total` last scanned every
    /// origin and found nothing idle to close (0: never).
    pub(super) fruitless_relief_at: AtomicU64,
    pub(super) next_id: AtomicU64,
    /// Monotonic nanoseconds (since `epoch`) of the last heartbeat.
    pub(super) last_beat: AtomicU64,
    /// Instant of the last detected freeze, as nanoseconds since `epoch`.
    pub(super) freeze_at: AtomicU64,
    pub(super) freezes: AtomicU64,
    /// How long the process was frozen in all, by the freezes the
    /// heartbeat-gap judgement found on the liveness thread's evidence
    /// (`liveness::stopped_for` of each), in nanoseconds: what a wait for a
    /// connection does not count.
    pub(super) frozen_ns: AtomicU64,
    /// Held while a beat judges a gap long enough to be a freeze (rare), so
    /// that the beat moves only once the leases are discounted: anyone who
    /// sees the new beat, a sweep about to report leaks among them, sees
    /// the discount too. Taken with no other lock held (it is the outermost).
    pub(super) judging: std::sync::Mutex<()>,
    /// What a checkout reads for "now" (see `coarse_clock`). Its epoch is
    /// what `nanos` counts from, so its readings need no conversion.
    pub(super) clock: coarse_clock::CoarseClock,
}

impl TotalBudget for Budget {
    fn try_reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }
    fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    /// Whether some origin waits for total capacity now.
    pub(super) fn any_starving(&self) -> bool {
        self.starving_origins.load(Ordering::Acquire) > 0
    }

    /// Connections that may still open under `max_connections_total` (a
    /// snapshot: other origins may take them meanwhile).
    pub(crate) fn spare(&self) -> usize {
        self.limit.saturating_sub(self.open.load(Ordering::Acquire))
    }

    /// `at` on the pool's timeline (see [`Stamp`]).
    pub(super) fn stamp(&self, at: Instant) -> Stamp {
        self.clock.stamp(at)
    }

    /// The last beat (a checkout within the last millisecond while requests
    /// flow, else the heartbeat's last tick, at most 250 ms ago): a clock
    /// read without a syscall, for the moment a connection is returned.
    ///
    /// It is never ahead of the real time, so what is computed from it errs
    /// one way only: an idle connection looks idle a little longer (checked
    /// or expired a little sooner), never fresher than it is. Reading the
    /// clock was a fifth of an uncontended checkout+return on this VM
    /// (`perf`: `__vdso_clock_gettime` 20 %, two reads per cycle).
    pub(super) fn coarse_now(&self) -> Stamp {
        match self.last_beat.load(Ordering::Acquire) {
            0 => self.stamp(Instant::now()),
            n => Stamp::from_nanos(n),
        }
    }
}

/// Origins waiting for total capacity, oldest first (entries may be stale:
/// gone, or no longer waiting; `wake_starving` skips those).
#[derive(Default)]
pub(super) struct StarvingList {
    pub(super) queue: Mutex<std::collections::VecDeque<Weak<Origin>>>,
}

impl StarvingList {
    pub(super) fn push(&self, origin: &Arc<Origin>) {
        lock(&self.queue).push_back(Arc::downgrade(origin));
    }

    pub(super) fn pop(&self) -> Option<Weak<Origin>> {
        lock(&self.queue).pop_front()
    }
}

/// Gives freed total capacity to origins that were waiting for it.
pub(super) fn wake_starving(budget: &Budget) {
    loop {
        if budget.open.load(Ordering::Acquire) >= budget.limit {
            return;
        }
        let next = budget.starving.pop();
        let Some(weak) = next else { return };
        let Some(origin) = weak.upgrade() else {
            continue;
        };
        let dials = {
            let mut g = origin.lock();
            g.state.starving = false;
            g.state.reliefs = 0;
            g.state.service(origin.limits, &*origin.budget)
        };
        let started = !dials.is_empty();
        origin.spawn_dials(dials);
        if started {
            return;
        }
    }
}
