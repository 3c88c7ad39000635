//! The heartbeat: expiry sweeps, leak reports, and freeze detection.

use super::*;

impl Pool {
    /// Starts the heartbeat on the caller's runtime unless it runs. It
    /// runs until the pool drops, or until its runtime does: a client that
    /// outlives the runtime it was first used on (shared by several) gets
    /// a new heartbeat at the next checkout (`HeartbeatRunning`). Outside
    /// any runtime it does not start, and the next checkout tries again.
    ///
    /// A heartbeat whose runtime lives on but is no longer driven (a
    /// current-thread runtime kept by a synchronous wrapper after the first
    /// request, while the traffic moved to another runtime) stops without
    /// ending: one silent for `HEARTBEAT_SILENT` is replaced by a new one
    /// on the caller's runtime. Each start is a new generation
    /// (`heartbeat_gen`): an older task ends at its next tick, should its
    /// runtime run again, and its end no longer says "none runs".
    /// `now_ns`: the checkout's clock.
    pub(super) fn ensure_heartbeat(&self, now_ns: u64) {
        let inner = &self.inner;
        // (Acquire: a heartbeat seen started comes with its tick, below.)
        if inner.heartbeat_started.load(Ordering::Acquire) {
            let tick = inner.heartbeat_tick.load(Ordering::Relaxed);
            if now_ns.saturating_sub(tick) < HEARTBEAT_SILENT.as_nanos() as u64 {
                return;
            }
            self.replace_silent_heartbeat(tick, now_ns);
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // (The tick before the flag: a checkout that sees the flag set
        // must not take a stale tick for a silent heartbeat and start
        // another beside this one.)
        inner.heartbeat_tick.fetch_max(now_ns, Ordering::Release);
        if inner.heartbeat_started.swap(true, Ordering::AcqRel) {
            return;
        }
        self.spawn_heartbeat(handle, now_ns);
    }

    /// (Out of line: rare.) One caller takes over a silent heartbeat.
    #[cold]
    #[inline(never)]
    fn replace_silent_heartbeat(&self, tick: u64, now_ns: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let taken = self.inner.heartbeat_tick.compare_exchange(
            tick,
            now_ns,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if taken.is_ok() {
            self.spawn_heartbeat(handle, now_ns);
        }
    }

    fn spawn_heartbeat(&self, handle: tokio::runtime::Handle, now_ns: u64) {
        // (Counted from now: a task spawned on a runtime never driven
        // again is silent from its start.)
        self.inner.heartbeat_tick.store(now_ns, Ordering::Relaxed);
        // A suspend since the last heartbeat (a runtime per invocation,
        // the machine asleep between two) is judged now, before the
        // checkout that starts this one takes a connection from before it;
        // the new task would see it only at its first tick.
        if let Some(threshold) = self.inner.config.freeze_threshold {
            let suspended = lock(&self.inner.suspend).poll(threshold);
            if let Some(gap) = suspended {
                // (A stop in the same gap judged first: the detection
                // below moves the beat, which would hide it.)
                self.check_freeze(now_ns);
                self.freeze_detected(Stamp::from_nanos(now_ns), gap, "machine suspend");
            }
        }
        let weak = Arc::downgrade(&self.inner);
        let generation = self.inner.heartbeat_gen.fetch_add(1, Ordering::AcqRel) + 1;
        let running = HeartbeatRunning(weak.clone(), generation);
        let budget = &self.inner.budget;
        // The first start sets the clock going. A restart (the last
        // heartbeat's runtime shut down) must not move the last beat: the
        // gap since it may hold a freeze (a sandbox frozen between two
        // invocations, each with a runtime of its own), which the next
        // beat judges. Moved to now, the gap, and the freeze, were gone.
        let now = budget.stamp(Instant::now()).nanos();
        let _ = budget
            .last_beat
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        handle.spawn(async move {
            // (Moved in whole: the task owns the guard, not a copy of its
            // generation field, which a closure's precise capture would
            // take, dropping the guard at once.)
            let mut running = running;
            let mut ticker = tokio::time::interval(HEARTBEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beats = 0u64;
            // The tick when this task found itself replaced (see below).
            let mut replaced_at: Option<u64> = None;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let pool = Pool { inner };
                let now = pool.inner.budget.stamp(Instant::now());
                // Replaced meanwhile (this runtime went undriven, or only
                // stalled): it waits, doing nothing, until the replacement
                // ticks (then it ends) or is silent in turn (it went to a
                // runtime nobody drives: this one takes the heartbeat back).
                let current = pool.inner.heartbeat_gen.load(Ordering::Acquire);
                if current != running.1 {
                    // (Beats only a ticking task counts: a checkout's write
                    // to the tick is no sign of the replacement's life.)
                    let beaten = pool.inner.heartbeat_beats.load(Ordering::Acquire);
                    let Some(since) = replaced_at else {
                        replaced_at = Some(beaten);
                        continue;
                    };
                    if beaten > since {
                        return;
                    }
                    let tick = pool.inner.heartbeat_tick.load(Ordering::Acquire);
                    let silent =
                        now.nanos().saturating_sub(tick) >= HEARTBEAT_SILENT.as_nanos() as u64;
                    if !silent {
                        continue;
                    }
                    let taken = (pool.inner.heartbeat_gen)
                        .compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    // (Replaced again meanwhile: judged anew.)
                    replaced_at = None;
                    if !taken {
                        continue;
                    }
                    running.1 = current + 1;
                    // (Its replacement's end may have cleared the flag.)
                    pool.inner.heartbeat_started.store(true, Ordering::Release);
                }
                pool.inner.heartbeat_beats.fetch_add(1, Ordering::AcqRel);
                pool.inner
                    .heartbeat_tick
                    .fetch_max(now.nanos(), Ordering::Relaxed);
                // (The beat first: a suspend detected below moves it, and
                // would hide a process stop in the same gap.)
                pool.check_freeze(now.nanos());
                let threshold = pool.inner.config.freeze_threshold;
                if let Some(threshold) = threshold {
                    // (The pool's watch, not the task's: a suspend between
                    // this task and the last one counts too.)
                    let suspended = lock(&pool.inner.suspend).poll(threshold);
                    if let Some(gap) = suspended {
                        pool.freeze_detected(now, gap, "machine suspend");
                    }
                }
                beats += 1;
                // Sweep expired idle connections about once a second.
                if beats.is_multiple_of(4) {
                    pool.sweep(now);
                }
            }
        });
    }
}

/// Owned by the heartbeat task of one generation: when the task goes (its
/// runtime shut down, or the pool dropped), the next checkout may start a
/// new one, unless a newer generation already runs.
struct HeartbeatRunning(Weak<PoolInner>, u64);

impl Drop for HeartbeatRunning {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            if inner.heartbeat_gen.load(Ordering::Acquire) == self.1 {
                inner.heartbeat_started.store(false, Ordering::Release);
            }
        }
    }
}

impl Pool {
    /// Beats (checkouts beat too) and reads the gap since the last beat:
    /// one far beyond the heartbeat's period means the process did not run
    /// (SIGSTOP, cgroup freeze, a paused serverless sandbox). The last beat
    /// is also the pool's coarse clock (`Budget::coarse_now`), so it is kept
    /// even when freeze detection is off.
    /// (`now_n`: nanoseconds since the budget's epoch.)
    #[inline]
    pub(super) fn check_freeze(&self, now_n: u64) {
        // A beat less than 1 ms old: nothing to learn, and no write to a
        // cache line every thread shares. (Inline: every checkout asks.)
        let seen = self.inner.budget.last_beat.load(Ordering::Acquire);
        if seen != 0 && now_n.saturating_sub(seen) < 1_000_000 {
            return;
        }
        self.beat(now_n);
    }

    /// A beat: the coarse clock moves, and a gap since the last one may be
    /// a freeze. (Out of line: at most once a millisecond.)
    #[inline(never)]
    fn beat(&self, now_n: u64) {
        let budget = &self.inner.budget;
        // (Never backwards: a checkout whose clock was read before another
        // beat, or before a freeze, must not move the beat, the coarse
        // clock, back across it.)
        let move_beat = || budget.last_beat.fetch_max(now_n, Ordering::AcqRel);
        let Some(threshold) = self.inner.config.freeze_threshold else {
            move_beat();
            return;
        };
        let is_long = |last: u64| {
            last != 0 && Duration::from_nanos(now_n.saturating_sub(last)) > threshold + HEARTBEAT
        };
        if !is_long(budget.last_beat.load(Ordering::Acquire)) {
            move_beat();
            return;
        }
        // Judged under the budget's `judging` lock, with the beat still
        // where it was: a beat moved before the leases were discounted let
        // a sweep on another worker (the heartbeat, due at the same thaw)
        // see no gap and report every lease held across the pause.
        let _judging = lock(&budget.judging);
        // (Another beat may have judged this gap meanwhile.)
        let last = budget.last_beat.load(Ordering::Acquire);
        let gap = Duration::from_nanos(now_n.saturating_sub(last));
        // A gap alone may be a runtime nobody drove (a current-thread one
        // between `block_on` calls) while the process ran: a freeze only if
        // the process-wide liveness thread stopped too (one stop of the
        // threshold in the gap: see `liveness`).
        let evidence = liveness::watching();
        if is_long(last) && liveness::stopped_within(gap, threshold) {
            let now = Stamp::from_nanos(now_n);
            // The stop, not the whole gap (a runtime nobody drove may have
            // run around it), is not the lease holders' time. (A machine
            // suspend, detected elsewhere, is no part of the monotonic
            // clock's time anyway.)
            let frozen = liveness::stopped_for(gap);
            #[cfg(test)]
            tests::pause_in_judgement();
            for origin in self.origins() {
                origin.discount_freeze(now, frozen);
            }
            // (And the waits for a connection's: see `Queued::wait`. Only
            // what the liveness thread saw: without it every long gap is
            // taken for a freeze, to evict, and a wait's own gap credited
            // as one would extend it again at every timeout.)
            if evidence {
                budget
                    .frozen_ns
                    .fetch_add(frozen.as_nanos() as u64, Ordering::AcqRel);
            }
            // (Moves the beat.)
            self.freeze_detected(now, gap, "heartbeat gap");
        } else {
            move_beat();
        }
    }

    pub(super) fn freeze_detected(&self, now: Stamp, gap: Duration, how: &str) {
        let budget = &self.inner.budget;
        // The detection is a beat too (see `on_resume`).
        budget.last_beat.fetch_max(now.nanos(), Ordering::AcqRel);
        budget.freeze_at.store(now.nanos(), Ordering::Release);
        budget.freezes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(gap = ?gap, how, "process freeze detected; idle connections are suspect");
        self.evict_all(now, Some(now));
    }

    /// Closes idle connections that have expired by now.
    pub(crate) fn evict_expired(&self) {
        self.evict_all(self.inner.budget.stamp(Instant::now()), None);
    }

    /// Closes idle connections that expired, or (with `frozen_since`) all
    /// that sat idle before that instant.
    pub(super) fn evict_all(&self, now: Stamp, frozen_since: Option<Stamp>) {
        let origins = self.origins();
        let mut total_spare = self.inner.budget.spare();
        for origin in origins {
            origin.evict(now, frozen_since, &mut total_spare);
        }
    }

    /// The once-a-second pass over every origin: expired idle connections
    /// close, leases held too long are reported, and origins unused for
    /// `forget_origin_after` are forgotten.
    pub(super) fn sweep(&self, now: Stamp) {
        let origins = self.origins();
        let mut total_spare = self.inner.budget.spare();
        let forget_after = self.inner.config.forget_origin_after;
        let mut unused = Vec::new();
        for origin in &origins {
            origin.evict(now, None, &mut total_spare);
            origin.report_leaks(now);
            // A current-thread runtime's partition is forgotten as soon as
            // it is unused through a sweep, whatever the setting: a runtime
            // made per call (and dropped, closing its connections) would
            // otherwise leave an origin per call behind for the delay, or
            // for good (see also `forget_empty_partitions`).
            let forget_after = match origin.key.runtime {
                super::partition::SHARED => forget_after,
                _ => Some(Duration::ZERO),
            };
            if forget_after.is_some_and(|after| origin.retire_if_unused(now, after)) {
                unused.push(origin.clone());
            }
        }
        drop(origins);
        if !unused.is_empty() {
            self.forget_unused(unused);
        }
    }

    /// A current-thread runtime's partition was just created (`fresh`):
    /// forget the other such partitions found unused (no connection,
    /// waiter or lease, and no use) both now and at the last look, by this
    /// or the sweep. A runtime built per call, and dropped after it (its
    /// connections close with it), makes a partition per call, and with no
    /// runtime living on between the calls no sweep runs: this keeps two.
    /// (Two looks, not one: a partition in use, empty for a moment between
    /// requests, is not forgotten and made again at every request of
    /// another runtime. O(origins), only when a partition is created.)
    pub(super) fn forget_empty_partitions(&self, fresh: &Arc<Origin>) {
        let now = self.inner.budget.stamp(Instant::now());
        let unused: Vec<Arc<Origin>> = self
            .origins()
            .into_iter()
            .filter(|o| {
                o.key.runtime != super::partition::SHARED
                    && !Arc::ptr_eq(o, fresh)
                    && o.retire_if_unused(now, Duration::ZERO)
            })
            .collect();
        if !unused.is_empty() {
            self.forget_unused(unused);
        }
    }

    /// Forgets origins `retire_if_unused` retired: out of the map (a
    /// request to one meets a new origin), their counters into the pool's
    /// `forgotten` totals. Their memory goes when the last reference does:
    /// now, or at the next miss of a thread whose memo holds one.
    ///
    /// Why a process must forget: every host it meets costs an origin
    /// (~1.5 KB with its statistics and metric handles), and a crawler or
    /// a webhook sender meets hosts without end. Go's transport drops a
    /// host's entry when its last idle connection goes; hyper-util's pool
    /// when its idle list empties. Here an origin also carries what was
    /// learned (HTTP/2 or not, `100 Continue`) and per-origin statistics,
    /// so it is kept until unused for a while (5 minutes by default).
    fn forget_unused(&self, gone: Vec<Arc<Origin>>) {
        // (The `forgotten` lock across the map's update and the fold:
        // `stats` takes it first, so it finds each origin in the map or in
        // the totals, never in both or neither.)
        let mut forgotten = lock(&self.inner.forgotten);
        self.write_origins().forget(&gone);
        for origin in &gone {
            origin.fold_into(&mut forgotten);
        }
        drop(forgotten);
        tracing::debug!(
            origins = gone.len(),
            "forgot origins unused for forget_origin_after (a current-thread runtime's: at two looks)"
        );
    }

    /// Treat every idle connection as suspect now (the user says the process
    /// just resumed).
    pub(crate) fn on_resume(&self) {
        let budget = &self.inner.budget;
        let now = budget.stamp(Instant::now());
        // The gap since the last beat judged first, as a beat would: moving
        // the beat below hid the freeze from the heartbeat, and leases held
        // across it were reported as if the process had run.
        self.check_freeze(now.nanos());
        // Also a beat, so connections returned from now on (coarse clock)
        // are not taken for ones that idled across the freeze.
        budget.last_beat.fetch_max(now.nanos(), Ordering::AcqRel);
        budget.freeze_at.store(now.nanos(), Ordering::Release);
        self.evict_all(now, Some(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::SystemClock;

    fn pool() -> Pool {
        pool_with(Arc::new(SystemClock))
    }

    std::thread_local! {
        /// How long a beat on this thread that judges a freeze pauses
        /// before it discounts the leases (0: not at all): to let a test
        /// run a sweep meanwhile. (Per thread: other tests' beats never.)
        static JUDGEMENT_PAUSE_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    /// Set when a beat reaches that pause.
    static JUDGEMENT_PAUSED: AtomicBool = AtomicBool::new(false);

    pub(super) fn pause_in_judgement() {
        let ms = JUDGEMENT_PAUSE_MS.with(|p| p.get());
        if ms > 0 {
            JUDGEMENT_PAUSED.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(ms));
        }
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
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = server_rt.block_on(async {
            tokio::spawn(freshpool_testkit::TestServer::http1())
                .await
                .unwrap()
        });
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
            let paused = Instant::now();
            while !JUDGEMENT_PAUSED.load(Ordering::Acquire) {
                assert!(paused.elapsed() < Duration::from_secs(5), "no judgement");
                std::thread::sleep(Duration::from_millis(5));
            }
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
            pool.ensure_heartbeat(real());
            pool.check_freeze(real());
        });
        drop(first);
        assert!(!pool.inner.heartbeat_started.load(Ordering::Acquire));
        liveness::simulate_freeze(Duration::from_millis(1500));
        std::thread::sleep(Duration::from_millis(1700));
        current_thread().block_on(async {
            // As a checkout does: the heartbeat first, then the beat.
            pool.ensure_heartbeat(real());
            pool.check_freeze(real());
        });
        assert_eq!(budget.freezes.load(Ordering::Relaxed), 1);
    }

    /// Likewise a machine suspend between two heartbeat tasks: each task
    /// took its own baseline of suspended time, so the new one counted
    /// from after the suspend.
    #[test]
    fn a_suspend_between_two_heartbeats_is_detected() {
        let clock = Arc::new(crate::health::FakeClock {
            mono: AtomicU64::new(1_000),
            boot: AtomicU64::new(1_000),
        });
        let pool = pool_with(clock.clone());
        current_thread().block_on(async { pool.ensure_heartbeat(1) });
        assert!(!pool.inner.heartbeat_started.load(Ordering::Acquire));
        // Suspended for 10 s while no heartbeat ran.
        clock.boot.fetch_add(10_000, Ordering::SeqCst);
        current_thread().block_on(async {
            pool.ensure_heartbeat(1);
            // At once, before the checkout that starts it takes anything.
            assert_eq!(pool.inner.budget.freezes.load(Ordering::Relaxed), 1);
            tokio::time::sleep(HEARTBEAT * 2).await;
        });
        assert_eq!(pool.inner.budget.freezes.load(Ordering::Relaxed), 1);
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
        let clock = Arc::new(crate::health::FakeClock {
            mono: AtomicU64::new(1_000),
            boot: AtomicU64::new(1_000),
        });
        let pool = pool_with(clock.clone());
        let budget = &pool.inner.budget;
        let real = || budget.stamp(Instant::now()).nanos();
        current_thread().block_on(async {
            pool.ensure_heartbeat(real());
            pool.check_freeze(real());
        });
        // Stopped for 1.5 s, and suspended for 10 s, while no heartbeat ran.
        liveness::simulate_freeze(Duration::from_millis(1500));
        std::thread::sleep(Duration::from_millis(1700));
        clock.boot.fetch_add(10_000, Ordering::SeqCst);
        current_thread().block_on(async { pool.ensure_heartbeat(real()) });
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
        rt.block_on(async { pool.ensure_heartbeat(real()) });
        for round in 0..2 {
            std::thread::sleep(HEARTBEAT_SILENT + Duration::from_millis(100));
            rt.block_on(async {
                pool.ensure_heartbeat(real());
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
        driven.block_on(async { pool.ensure_heartbeat(real()) });
        // Its only worker blocked for longer than the silence allowed.
        driven.spawn(async { std::thread::sleep(HEARTBEAT_SILENT + Duration::from_millis(600)) });
        std::thread::sleep(HEARTBEAT_SILENT + Duration::from_millis(300));
        let undriven = current_thread();
        undriven.block_on(async { pool.ensure_heartbeat(real()) });
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
        freshpool_testkit::eventually("its connection closed", || old.lock().state.slots == 0)
            .await;
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
}
