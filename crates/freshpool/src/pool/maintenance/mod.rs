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
    ///
    /// A caller on a multi-thread runtime (`on_multi_thread`) also takes
    /// the heartbeat from a current-thread runtime, which runs it only
    /// while driven: a process whose first request ran in a synchronous
    /// wrapper's `block_on`, its traffic then on a multi-thread runtime
    /// that went quiet within `HEARTBEAT_SILENT`, had no sweep at all
    /// (idle connections outlived `idle_timeout`) until its next request.
    /// `now_ns`: the checkout's clock.
    pub(super) fn ensure_heartbeat(&self, now_ns: u64, on_multi_thread: bool) {
        let inner = &self.inner;
        // (Acquire: a heartbeat seen started comes with its tick, below.)
        if inner.heartbeat_started.load(Ordering::Acquire) {
            let tick = inner.heartbeat_tick.load(Ordering::Relaxed);
            let silent = now_ns.saturating_sub(tick) >= HEARTBEAT_SILENT.as_nanos() as u64;
            let better_here =
                on_multi_thread && inner.heartbeat_on_current_thread.load(Ordering::Relaxed);
            if silent || better_here {
                self.replace_silent_heartbeat(tick, now_ns);
            }
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

    /// (Out of line: rare.) One caller takes over a silent heartbeat (or
    /// one on a current-thread runtime: see `ensure_heartbeat`).
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
        let current_thread =
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
        self.inner
            .heartbeat_on_current_thread
            .store(current_thread, Ordering::Relaxed);
        // A suspend since the last heartbeat (a runtime per invocation,
        // the machine asleep between two) is judged now, before the
        // checkout that starts this one takes a connection from before it;
        // the new task would see it only at its first tick.
        if let Some((gap, at)) = self.judge_suspend(now_ns) {
            // (A stop in the same gap judged first: the detection below
            // moves the beat, which would hide it.)
            self.check_freeze(now_ns);
            self.freeze_detected(at, gap, "machine suspend");
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
                    let current_thread = tokio::runtime::Handle::try_current().is_ok_and(|h| {
                        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
                    });
                    pool.inner
                        .heartbeat_on_current_thread
                        .store(current_thread, Ordering::Relaxed);
                }
                pool.inner.heartbeat_beats.fetch_add(1, Ordering::AcqRel);
                pool.inner
                    .heartbeat_tick
                    .fetch_max(now.nanos(), Ordering::Relaxed);
                // (The pool's watch, not the task's: a suspend between
                // this task and the last one counts too.)
                let suspended = pool.judge_suspend(now.nanos());
                // (The beat before the suspend's detection, which moves
                // it, and would hide a process stop in the same gap.)
                pool.check_freeze(now.nanos());
                if let Some((gap, at)) = suspended {
                    pool.freeze_detected(at, gap, "machine suspend");
                }
                // Sweep expired idle connections about once a second.
                if pool.sweep_due(now) {
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

/// How often the heartbeat sweeps: at its first tick at least this long
/// after the last sweep (four ticks, 1 s, on a heartbeat that runs on; a
/// tick's lateness does not push the sweep to the fifth).
const SWEEP_EVERY: Duration = Duration::from_millis(875);

impl Pool {
    /// Whether the heartbeat sweeps at this tick (and then it does: claimed
    /// here). Timed by the pool, not by the task's own count of beats: a
    /// runtime per call (a blocking wrapper) starts a heartbeat with each
    /// call, on a runtime that lives a few milliseconds, and a count that
    /// started again with each reached no sweep. Unused origins were then
    /// never forgotten, nor leaks reported.
    fn sweep_due(&self, now: Stamp) -> bool {
        let last = self.inner.last_sweep.load(Ordering::Acquire);
        now.nanos().saturating_sub(last) >= SWEEP_EVERY.as_nanos() as u64
            && self
                .inner
                .last_sweep
                .compare_exchange(last, now.nanos(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

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
    /// a freeze, or the machine was suspended. (Out of line: at most once
    /// a millisecond.)
    #[inline(never)]
    fn beat(&self, now_n: u64) {
        // A suspend stops the monotonic clock, so no gap shows it: the
        // boot clock does. Asked here as well as by the heartbeat, whose
        // next tick may come after a checkout (a runtime driven by
        // `block_on` polls the request before its timers): that checkout
        // took a connection from before the suspend, unchecked. (Asked
        // before the gap's judgement moves the beat: see `judge_suspend`.)
        let suspended = self.judge_suspend(now_n);
        self.judge_gap(now_n);
        if let Some((gap, at)) = suspended {
            #[cfg(test)]
            tests::pause_in_judgement();
            // (After the gap's judgement: the detection moves the beat,
            // which would hide a stop in the same gap.)
            self.freeze_detected(at, gap, "machine suspend");
        }
    }

    /// A machine suspend since the last look, if the boot clock shows one
    /// (`freeze_threshold` set). Found, it is marked as the pool's last
    /// freeze (`Budget::freeze_at`) at once, under the watch's lock, before
    /// anything moves the beat; the caller then judges the gap and evicts
    /// (`freeze_detected`). Why: a checkout on another worker that finds
    /// the beat moved skips the judgement (`check_freeze`), and one that
    /// polls the watch meanwhile finds the suspend taken: either went on
    /// and reused a connection from before the suspend, unchecked, until
    /// the detection was marked. Now both see the mark, by which a
    /// checkout refuses an idle connection that rested across it
    /// (`still_fresh`) and an idle HTTP/2 connection made before it
    /// (`Pool::take`).
    ///
    /// Returns the gap and the instant the suspend is marked at, read
    /// precisely: `now_n` may be a checkout's coarse reading, a tick
    /// behind, and the monotonic clock stood still through the suspend, so
    /// a connection made just before it could be stamped after that
    /// reading and pass for one made since. The detection (`freeze_detected`)
    /// goes by the same instant, beat included: a beat left at the coarse
    /// reading, below the mark, stamped connections returned meanwhile as
    /// rested across the suspend, to be closed for it at their next
    /// checkout.
    pub(super) fn judge_suspend(&self, now_n: u64) -> Option<(Duration, Stamp)> {
        let threshold = self.inner.config.freeze_threshold?;
        let mut watch = lock(&self.inner.suspend);
        let gap = watch.poll(threshold)?;
        let budget = &self.inner.budget;
        let at = now_n.max(budget.stamp(Instant::now()).nanos());
        budget.freeze_at.fetch_max(at, Ordering::AcqRel);
        drop(watch);
        Some((gap, Stamp::from_nanos(at)))
    }

    /// The gap since the last beat: a freeze, or the beat moves on.
    fn judge_gap(&self, now_n: u64) {
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
        budget.freeze_at.fetch_max(now.nanos(), Ordering::AcqRel);
        budget.freezes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(gap = ?gap, how, "process freeze detected; idle connections are suspect");
        self.evict_all(now, Some(now));
        // The detection is a beat too (see `on_resume`), once the eviction
        // is done: a checkout that saw the beat moved went on at once, and
        // took a stream on an HTTP/2 connection the eviction had not reached
        // yet. Until then a checkout finds the gap, and waits for this
        // judgement (`judge_gap`'s lock). (A connection returned meanwhile
        // is stamped with the old beat, and closed as one that rested
        // across the freeze: at worst a new connection.)
        budget.last_beat.fetch_max(now.nanos(), Ordering::AcqRel);
    }

    /// Closes every idle connection (HTTP/1 idle, HTTP/2 without a
    /// stream) of every origin, as `Client::close_idle_connections` asks.
    pub(crate) fn close_idle(&self) {
        for origin in self.origins() {
            origin.close_idle();
        }
    }

    /// Closes idle connections that have expired by now.
    pub(crate) fn evict_expired(&self) {
        self.evict_all(self.inner.budget.stamp(Instant::now()), None);
    }

    /// Closes idle connections that expired, or (with `frozen_since`) all
    /// that sat idle before that instant.
    pub(super) fn evict_all(&self, now: Stamp, frozen_since: Option<Stamp>) {
        #[cfg(test)]
        if frozen_since.is_some() {
            tests::pause_in_eviction();
        }
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
        // Marked before anything moves the beat (the judgement below may):
        // a checkout that finds the beat moved skips the judgement, and
        // must find the mark (see `judge_suspend`). Until the eviction
        // below reaches a connection, the mark keeps checkouts off it.
        budget.freeze_at.fetch_max(now.nanos(), Ordering::AcqRel);
        // The gap since the last beat judged first, as a beat would: moving
        // the beat below hid the freeze from the heartbeat, and leases held
        // across it were reported as if the process had run.
        self.check_freeze(now.nanos());
        // Also a beat, so connections returned from now on (coarse clock)
        // are not taken for ones that idled across the freeze.
        budget.last_beat.fetch_max(now.nanos(), Ordering::AcqRel);
        self.evict_all(now, Some(now));
    }
}

#[cfg(test)]
mod tests;
