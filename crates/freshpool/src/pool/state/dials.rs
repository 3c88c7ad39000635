//! Dials and waiters that leave: what a dial's end, a failed dial, a
//! waiter answered or gone, and a freed slot do to the origin's state.

use super::*;

impl<C: Channel, S: Channel + Clone> OriginState<C, S> {
    /// A dial finished (either way): one fewer in flight.
    pub(crate) fn dial_done(&mut self) {
        self.dialing -= 1;
    }

    /// Whether connections already being dialed will reach `waiter_id`,
    /// so that its wait is a connect's (which the connect timeouts bound),
    /// not the pool's. Each dial serves the oldest waiter (one on HTTP/1, a
    /// connection's streams on HTTP/2), so it is reached when no more live
    /// waiters are in line up to it than dials were started for waiters:
    /// the waiters marked `dialing`, counted no higher than `dialing` (a
    /// mark can outlive its dial until `service` runs; a dedicated retry
    /// dial counts in `dialing` but serves only its own request), or over
    /// HTTP/2 every dial in flight. While
    /// the protocol is unknown, every waiter rides on the first dial,
    /// until a dial failed (`unknown_dial_failed`): then each has its own,
    /// as over HTTP/1.
    /// O(queue): asked only when a wait reaches `pool_timeout`.
    pub(crate) fn dial_covers(&self, waiter_id: u64) -> bool {
        if self.dialing == 0 {
            return false;
        }
        if self.all_ride_on_one_dial() {
            return true;
        }
        let (mut in_line, mut marked) = (0usize, 0usize);
        for w in self.waiters.iter().filter(|w| !w.tx.is_closed()) {
            marked += usize::from(w.dialing);
            in_line += usize::from(w.id <= waiter_id);
        }
        // Over HTTP/2 every dial in flight serves the queue, whoever it was
        // started for (a dedicated retry dial, which serves only its own
        // request, is HTTP/1's alone), marked or not: a marked waiter that
        // gave up took its mark along.
        let (dials, per_dial) = match self.protocol {
            Protocol::Http2 => (self.dialing, self.streams_per_conn.max(1) as usize),
            _ => (marked.min(self.queue_dials()), 1),
        };
        in_line <= dials.saturating_mul(per_dial)
    }

    /// Before the protocol is known every waiter rides on the first dial
    /// (a bet on HTTP/2), until a dial failed (`unknown_dial_failed`).
    pub(super) fn all_ride_on_one_dial(&self) -> bool {
        self.protocol == Protocol::Unknown && !self.unknown_dial_failed
    }

    /// Live waiters marked `dialing` (O(queue)).
    pub(super) fn live_marked(&self) -> usize {
        (self.waiters.iter())
            .filter(|w| w.dialing && !w.tx.is_closed())
            .count()
    }

    /// A dial failed (its count already given back): delivers the error to
    /// the waiter it was for. The other waiters may have ridden on it
    /// (`should_coalesce`); left as they were, each would get a dial of its
    /// own in turn, one `connect_timeout` after the other, while
    /// `dial_covers` kept moving their `pool_timeout`: the 50th of 50
    /// requests to a host that drops SYNs failed after 50 connect timeouts.
    ///
    /// * Over HTTP/2, with no other dial in flight and no connection taking
    ///   streams, every waiter gets the error, as Go's HTTP/2 pool answers
    ///   every request waiting on a dial call.
    /// * Over HTTP/2 with other dials in flight, or a connection taking
    ///   streams, as many waiters as rode on this dial get the error too
    ///   (up to one connection's streams): the youngest, past those the
    ///   live connections' free streams and the other dials carry (those
    ///   serve the queue in order, so the youngest are the ones left
    ///   without a connection coming; they may have queued after the dial
    ///   began, on a connection whose streams are all busy).
    ///   Left waiting, each got a dial of its own from the freed slot, so
    ///   one waiter failed per failed dial while `dial_covers` kept moving
    ///   the others' `pool_timeout`: 300 requests queued behind 3 dials to
    ///   a host that drops SYNs took 100 connect timeouts to fail.
    /// * Before the protocol is known (HTTPS before ALPN) the bet on HTTP/2
    ///   is off: the others get a dial each from `service`, all at once, as
    ///   HTTP/1 requests would (the origin may well be HTTP/1, and one
    ///   failed handshake need not fail requests whose own dials succeed).
    pub(crate) fn fail_dial(&mut self, waiter_id: u64, err: Error) {
        let http2 = match self.protocol {
            Protocol::Http2 => true,
            Protocol::Unknown => self.http2_only,
            Protocol::Http1 => false,
        };
        if self.protocol == Protocol::Unknown && !http2 {
            self.unknown_dial_failed = true;
        }
        let rode_on_it =
            http2 && self.dialing == 0 && !self.shared.iter().any(|s| s.takes_streams());
        if rode_on_it {
            for waiter in std::mem::take(&mut self.waiters) {
                if waiter.id == waiter_id {
                    self.waiters.push_back(waiter);
                } else if waiter.tx.send(Err(err.for_another_waiter())).is_ok() {
                    self.waiter_left();
                }
            }
        } else if http2 && self.protocol == Protocol::Http2 {
            self.fail_riders(waiter_id, &err);
        }
        self.fail_waiter(waiter_id, err);
    }

    /// `fail_dial` over HTTP/2 while other capacity remains: the waiters
    /// that rode on the failed dial get its error (see there): those the
    /// free streams and the dials still in flight do not carry, up to one
    /// connection's streams, the youngest (the others serve the queue in
    /// order, oldest first). (The oldest beyond the free streams got it,
    /// the other dials' loads not counted: ten waiters behind two dials of
    /// 100 streams each all failed with the first dial, which the second
    /// alone would have served. A review found it.)
    fn fail_riders(&mut self, waiter_id: u64, err: &Error) {
        let per_ride = (self.streams_per_conn.max(1) as usize).saturating_sub(1);
        let others = (self.waiters.iter())
            .filter(|w| w.id != waiter_id && !w.tx.is_closed())
            .count();
        // (`dialing`: the failed dial's count is given back already.)
        let carried =
            self.free_streams() + (self.queue_dials()).saturating_mul(self.streams_per_new_conn());
        let mut riders = per_ride.min(others.saturating_sub(carried));
        if riders == 0 {
            return;
        }
        let mut kept = std::collections::VecDeque::with_capacity(self.waiters.len());
        while let Some(waiter) = self.waiters.pop_back() {
            if riders == 0 || waiter.id == waiter_id || waiter.tx.is_closed() {
                kept.push_front(waiter);
            } else {
                riders -= 1;
                if waiter.tx.send(Err(err.for_another_waiter())).is_ok() {
                    self.waiter_left();
                }
            }
        }
        self.waiters = kept;
    }

    /// Delivers a dial error to the waiter it was for, if it still waits.
    pub(crate) fn fail_waiter(&mut self, waiter_id: u64, err: Error) {
        if let Some(pos) = self.waiters.iter().position(|w| w.id == waiter_id) {
            let waiter = self.waiters.remove(pos).expect("position is in range");
            if waiter.tx.send(Err(err)).is_ok() {
                self.waiter_left();
            }
        }
    }

    /// A dial that never ran: its task was dropped unpolled, with the
    /// runtime it was spawned on. Gives back its slot and dial count (the
    /// budget's share is the caller's to give back, as for `slot_freed`)
    /// and sends the waiter it was for back to ask again, and with it every
    /// waiter the freed capacity would now get a dial for: their dials
    /// would go to the same dying runtime, while each one asking again
    /// dials on its own. So nothing is left to spawn, and no waiter is left
    /// without a dial while a slot is free.
    pub(crate) fn dial_never_ran(
        &mut self,
        waiter: Option<u64>,
        was_dialing: bool,
        limits: Limits,
        budget: &impl TotalBudget,
    ) {
        if was_dialing {
            self.dial_done();
        }
        self.slots -= 1;
        if let Some(id) = waiter {
            self.release_waiter(id);
        }
        loop {
            let dials = self.service(limits, budget);
            if dials.is_empty() {
                return;
            }
            for id in dials {
                self.dial_done();
                self.slots -= 1;
                budget.release();
                self.release_waiter(id);
            }
        }
    }

    /// Takes a waiter out of the queue with `AskAgain`: it checks out
    /// again, from its own task (`Queued::wait`).
    fn release_waiter(&mut self, waiter_id: u64) {
        if let Some(pos) = self.waiters.iter().position(|w| w.id == waiter_id) {
            let waiter = self.waiters.remove(pos).expect("position is in range");
            if waiter.tx.send(Ok(Handoff::AskAgain)).is_ok() {
                self.waiter_left();
            }
        }
    }

    /// Waiter `waiter_id` gave up (timeout or its future was dropped).
    /// Dead entries are skipped lazily; compact when they dominate so a
    /// long outage with many timeouts cannot grow the queue without bound.
    /// A dial it had goes on and will serve the next in line: its mark
    /// passes on (`pass_mark_on`). (Found by id: the queue is sorted.)
    pub(crate) fn cancel_waiter(&mut self, waiter_id: u64) {
        self.waiter_left();
        if let Ok(pos) = self.waiters.binary_search_by_key(&waiter_id, |w| w.id) {
            if std::mem::take(&mut self.waiters[pos].dialing) {
                self.pass_mark_on();
            }
        }
        if self.waiters.len() > 2 * self.live_waiters + 16 {
            // A closed one still marked has not been cancelled yet (its
            // `cancel_waiter` comes, and will not find it): its mark
            // passes on here, as `hand_to_oldest` passes a closed one's.
            let mut orphaned = 0;
            self.waiters.retain(|w| {
                let open = !w.tx.is_closed();
                orphaned += usize::from(!open && w.dialing);
                open
            });
            for _ in 0..orphaned {
                self.pass_mark_on();
            }
        }
    }

    /// A connection's socket is gone: forget it and free its slot.
    /// Returns what the pool still held of it, if anything (then the peer
    /// closed it while the pool held it, as opposed to a leased or
    /// discarded one): its idle record is the caller's, to judge why it
    /// went (an expiry the sweep had not yet acted on, or the server's
    /// close) and to drop outside the lock.
    pub(crate) fn slot_freed(&mut self, conn_id: u64) -> Option<Forgotten<C>> {
        self.slots -= 1;
        if let Some(idle) = self.idle.remove(conn_id) {
            return Some(Forgotten::Idle(idle));
        }
        if let Some(pos) = self.shared.iter().position(|s| s.id == conn_id) {
            let gone = self.shared.swap_remove(pos);
            return Some(Forgotten::Shared(gone.draining));
        }
        None
    }
}
