//! The per-origin pool state machine: pure bookkeeping, no I/O, no async.
//!
//! Everything here runs under one origin's mutex and returns decisions
//! ("dial for waiter 7", "this idle connection expired") for the caller to
//! act on after the lock is released. That keeps lock hold times to a few
//! pointer moves and lets `tests/pool_model.rs`-style property tests drive
//! it through arbitrary sequences without sockets.
//!
//! # Invariants (checked by [`OriginState::check`] in tests)
//! 1. `slots <= limit`: slots count connections that exist or are being
//!    dialed; a slot is freed only when its socket is gone.
//! 2. Every idle or shared entry is a connection holding a slot:
//!    `idle.len() + shared.len() + leased_h1 + dialing <= slots`.
//! 3. FIFO: a returned connection goes to the oldest live waiter.
//! 4. No starvation: after any operation, if a live waiter exists, a slot is
//!    free and total capacity allows, a dial is running for some waiter
//!    (or a connection that will serve it is being dialed).
//! 5. `live_waiters` equals the number of waiters whose receivers exist.

mod dials;
mod entries;

pub(crate) use entries::*;

use std::collections::VecDeque;

use tokio::sync::oneshot;

use super::idle::IdleList;
use super::Stamp;
use crate::error::Error;
use crate::stats::CloseReason;

/// (`repr(C)`: the fields a checkout and a return read, in the order they
/// come, then the rest; see `Origin` in pool/mod.rs.)
#[repr(C)]
pub(crate) struct OriginState<C, S> {
    pub shared: Vec<Shared<S>>,
    /// Connections that exist or are being dialed, each holding one slot.
    pub slots: usize,
    /// Dials in progress (a subset of `slots`).
    pub dialing: usize,
    pub live_waiters: usize,
    pub waiters: VecDeque<Waiter<C, S>>,
    /// Newest at the back (LIFO reuse keeps the warm ones warm and lets the
    /// cold ones age out), oldest at the front (evicted first).
    pub idle: IdleList<C>,
    pub protocol: Protocol,
    /// Waiting on total capacity: registered once in the budget's list.
    /// (The pool counts the origins with it set: `OriginLock`.)
    pub starving: bool,
    /// Became starving since the owner last registered it for wake-up.
    pub newly_starving: bool,
    /// Idle connections of other origins closed for this one while it
    /// starves (`Pool::relieve_total`), whose freed capacity has not yet
    /// reached it. Bounds the closes by what its waiters can use
    /// (`wants_relief`). Cleared with `starving`.
    pub reliefs: u32,
    /// The stream limit the newest shared (HTTP/2) connection announced.
    /// When every shared connection is gone (a GOAWAY, a reset of all
    /// flows), this is what a dial in flight will carry once it lands, so
    /// a queue of waiters gets enough dials for itself, not one each.
    pub streams_per_conn: u32,
    /// The pool is gone (its last client dropped), or forgets this origin
    /// (`Pool::forget_unused`): nothing may come to rest here any more,
    /// and no request may queue or dial (`Acquire::Retired`). A connection
    /// returned or dialed after that is handed back to be closed: at rest
    /// it would stay open for good, since its driver task holds this
    /// origin (see `Pool`'s `Drop`).
    pub retired: bool,
    /// A dial failed before the protocol was known: dials no longer
    /// coalesce (a bet on HTTP/2) until a connection lands and says which.
    pub unknown_dial_failed: bool,
    /// The client speaks only HTTP/2 here (prior knowledge, or ALPN `h2`
    /// only): while the protocol is unknown, it will be HTTP/2.
    pub http2_only: bool,
    /// At least the number of live waiters marked `dialing`: every mark
    /// adds one, waiters leaving subtract nothing, and `service` sets it
    /// to the true count whenever it must count. So `service` counts (an
    /// O(queue) scan under this lock) only when it may exceed `dialing`,
    /// not on every HTTP/2 stream end of a saturated origin with a long
    /// queue.
    marks: usize,
    /// Dedicated retry dials in flight (counted in `dialing` too; each
    /// serves only its own request). While any is, a waiter's mark is not
    /// passed on (`pass_mark_on`): `service` cannot tell dials for the
    /// queue from `dialing`, which counts these. (It ends with the dial, in
    /// the same locked step as its dial count, or before it on a failure:
    /// `DedicatedGuard::settle`.)
    pub dedicated: usize,
    next_waiter: u64,
}

impl<C: Channel, S: Channel + Clone> OriginState<C, S> {
    pub(crate) fn new(protocol: Protocol) -> Self {
        OriginState {
            protocol,
            idle: IdleList::default(),
            shared: Vec::new(),
            waiters: VecDeque::new(),
            live_waiters: 0,
            slots: 0,
            dialing: 0,
            starving: false,
            newly_starving: false,
            reliefs: 0,
            streams_per_conn: 1,
            retired: false,
            unknown_dial_failed: false,
            http2_only: false,
            marks: 0,
            dedicated: 0,
            next_waiter: 0,
        }
    }

    /// A waiter id never given here before, later than every one given: a
    /// request that comes from a retired origin's queue, asking again
    /// (`Pool::take_from_successor`), takes the back of this queue under it,
    /// and is not refused for `max_pending`, as it was not where it queued.
    pub(crate) fn fresh_waiter_id(&mut self) -> u64 {
        self.next_waiter += 1;
        self.next_waiter
    }

    /// Nothing here and nothing coming: no connection open or being
    /// dialed, no request waiting, not retired yet. (The sweep forgets an
    /// origin that stays so, with no lease and no use: see
    /// `Origin::retire_if_unused`.)
    pub(crate) fn is_unused(&self) -> bool {
        !self.retired
            && self.slots == 0
            && self.live_waiters == 0
            && self.idle.is_empty()
            && self.shared.is_empty()
    }

    /// Takes a connection or a stream, or enqueues the caller.
    ///
    /// The idle connection returned may still be stale: the caller validates
    /// it outside the lock and calls again if it was bad.
    ///
    /// `asking_again`: the id of a waiter that was sent back to ask again
    /// (`Handoff::AskAgain`). It queued before everyone who came after it,
    /// so it takes its old place in the queue rather than the back, and is
    /// never refused for `max_pending`: it was already counted in the queue
    /// when it was admitted, and newcomers filling its place meanwhile must
    /// not turn its wait into `PoolFull`.
    pub(crate) fn acquire(
        &mut self,
        now: Stamp,
        limits: Limits,
        budget: &impl TotalBudget,
        // Where the request was made; the pool registers it with the lease.
        _caller: &'static std::panic::Location<'static>,
        expired: &mut Vec<Idle<C>>,
        asking_again: Option<u64>,
    ) -> Acquire<C, S> {
        // Streams that no event handed out (a server raised its limit) go
        // to the queue first: a newcomer takes one only behind it.
        if self.live_waiters > 0 && !self.shared.is_empty() {
            self.serve_streams();
        }
        if let Some((conn_id, sender, first, idle_since)) = self.take_stream() {
            return Acquire::Stream {
                conn_id,
                sender,
                first,
                idle_since,
            };
        }
        while let Some(idle) = self.idle.pop_back() {
            if now >= idle.expires_at || idle.conn.is_closed() {
                expired.push(idle);
                continue;
            }
            return Acquire::Idle(idle);
        }
        // A retired origin (its pool dropped, or forgetting it: see
        // `Pool::forget_unused`) takes no new connection and no waiter.
        // Its idle list and shared connections are empty, and stay so (what
        // comes back is handed back to close): the paths above never find
        // one. So the check costs nothing on them.
        if self.retired {
            return Acquire::Retired;
        }
        // Fairness: if others already wait, a new caller queues behind them
        // rather than racing them for the next slot.
        // (O(1): over HTTP/1 every dial in flight serves one waiter, so
        // waiters beyond `dialing` are the ones still without a connection
        // coming; over HTTP/2 `should_coalesce` weighs them, below.)
        // (The marks as they were: a request refused below never waits, so
        // what `may_dial` marks for it must not stay.)
        let marks = (self.starving, self.newly_starving);
        // Over HTTP/2 a dial carries many waiters, not one: a newcomer
        // beyond what the connections and the dials in flight carry dials
        // too (`should_coalesce` weighs them), FIFO still (a connection's
        // streams go to the oldest waiters first). Held to one waiter per
        // dial, it waited for those dials to land before its own began,
        // and past `max_pending` it was refused as `PoolFull` with slots
        // free. (A review found it.)
        let fair = self.protocol == Protocol::Http2 || self.live_waiters <= self.queue_dials();
        let dial = fair && self.may_dial(limits, budget, 1);
        // max_pending bounds the queue of requests with no connection on
        // the way; those a dial in flight will serve are not queued behind
        // anyone (over HTTP/2, all that ride on it: `should_coalesce`).
        if !dial && asking_again.is_none() {
            let queued = self.live_waiters.saturating_sub(self.served_by_dials());
            if queued >= limits.max_pending {
                // (Not queued after all: a mark `may_dial` set for it would
                // count this origin as starving with nobody waiting for
                // capacity, for good if nobody waits here at all.)
                (self.starving, self.newly_starving) = marks;
                return Acquire::Full {
                    waiting: queued,
                    behind_first_dial: self.protocol == Protocol::Unknown
                        && self.dialing > 0
                        && self.all_ride_on_one_dial(),
                };
            }
        }
        let (waiter_id, rx) = self.enqueue(dial, asking_again);
        Acquire::Wait {
            waiter_id,
            rx,
            dial,
        }
    }

    /// Queues a waiter: a new one at the back, one asking again at the
    /// place its id had (ids grow, so the queue is sorted by them).
    fn enqueue(
        &mut self,
        dialing: bool,
        asking_again: Option<u64>,
    ) -> (u64, HandoffReceiver<C, S>) {
        let (tx, rx) = oneshot::channel();
        let id = match asking_again {
            Some(id) => {
                let place = self.waiters.partition_point(|w| w.id < id);
                self.waiters.insert(place, Waiter { id, tx, dialing });
                id
            }
            None => {
                self.next_waiter += 1;
                let id = self.next_waiter;
                self.waiters.push_back(Waiter { id, tx, dialing });
                id
            }
        };
        self.live_waiters += 1;
        self.marks += usize::from(dialing);
        (id, rx)
    }

    /// Reserve a slot for a dial if the per-host and total limits allow and
    /// the protocol does not tell us to coalesce onto a pending dial.
    /// `newcomers`: requests about to queue and not yet counted in
    /// `live_waiters` (1 from `acquire`, 0 from `service`).
    fn may_dial(&mut self, limits: Limits, budget: &impl TotalBudget, newcomers: usize) -> bool {
        if self.slots >= limits.per_host {
            return false;
        }
        if self.should_coalesce(newcomers) {
            return false;
        }
        if !budget.try_reserve() {
            if !self.starving {
                self.newly_starving = true;
            }
            self.starving = true;
            return false;
        }
        self.slots += 1;
        self.dialing += 1;
        true
    }

    /// Reserves a slot for a dedicated dial (a retry that must not meet
    /// another stale connection). Ignores queue fairness: the request had
    /// its turn already.
    pub(crate) fn reserve_dedicated(&mut self, limits: Limits, budget: &impl TotalBudget) -> bool {
        if self.protocol != Protocol::Http1
            || self.retired
            || self.slots >= limits.per_host
            || !budget.try_reserve()
        {
            return false;
        }
        self.slots += 1;
        self.dialing += 1;
        self.dedicated += 1;
        true
    }

    /// Whether one more idle connection of another origin should close to
    /// make room here: fewer reliefs are on their way than the connections
    /// its uncovered waiters can use (one per HTTP/1 waiter, one per
    /// connection's streams over HTTP/2, one for all before the protocol
    /// is known while they ride on one dial), within its per-host room.
    /// Every queued request asked for a relief, so a burst to an HTTP/2
    /// origin closed a warm connection elsewhere per request, where one
    /// would do.
    pub(crate) fn wants_relief(&self, per_host: usize) -> bool {
        let room = per_host.saturating_sub(self.slots);
        let uncovered = self.live_waiters.saturating_sub(self.served_by_dials());
        let per_conn = match self.protocol {
            Protocol::Http1 => 1,
            Protocol::Http2 => self.streams_per_new_conn(),
            Protocol::Unknown if self.all_ride_on_one_dial() => usize::MAX,
            Protocol::Unknown => 1,
        };
        (self.reliefs as usize) < uncovered.div_ceil(per_conn).min(room)
    }

    /// The dials in flight that serve the queue: all but the dedicated
    /// retry dials.
    pub(super) fn queue_dials(&self) -> usize {
        self.dialing.saturating_sub(self.dedicated)
    }

    /// A dedicated retry dial ended, whichever way (its dial count is given
    /// back as any dial's).
    pub(crate) fn dedicated_done(&mut self) {
        self.dedicated -= 1;
    }

    /// HTTP/2 (or not-yet-known HTTPS): one dial in flight serves many
    /// waiters, so do not start another until it lands, unless the waiters
    /// already exceed what the connections we have and expect can carry.
    fn should_coalesce(&self, newcomers: usize) -> bool {
        match self.protocol {
            Protocol::Http1 => false,
            Protocol::Unknown => self.dialing > 0 && self.all_ride_on_one_dial(),
            Protocol::Http2 => {
                // (The newcomer counted: with one stream per connection, a
                // dial in flight for the one waiter is no ride for a second.)
                self.free_streams() + self.dialing.saturating_mul(self.streams_per_new_conn())
                    >= (self.live_waiters + newcomers).max(1)
            }
        }
    }

    /// What a new HTTP/2 connection will carry: what the last one
    /// announced when it landed (or a live one's limit, if higher). Not
    /// only the live limits: a server that lowered them to 1 under load
    /// would get a dial per waiter, and falling back to 1 dials once per
    /// waiter too.
    /// Streams the shared connections that take them can open now.
    pub(super) fn free_streams(&self) -> usize {
        (self.shared.iter())
            .filter(|s| s.takes_streams())
            .map(|s| (s.sender.max_streams() as usize).saturating_sub(s.in_flight as usize))
            .sum()
    }

    pub(super) fn streams_per_new_conn(&self) -> usize {
        self.shared
            .iter()
            .map(|s| s.sender.max_streams())
            .fold(self.streams_per_conn, u32::max)
            .max(1) as usize
    }

    /// How many waiters the dials in flight will serve: one each over
    /// HTTP/1; over HTTP/2 a connection's streams each; before the
    /// protocol is known, while every waiter rides on the first dial, as
    /// many as one connection carries at most (the stream cap). (All of
    /// them: a server that stalled the first dial's handshake gathered any
    /// number of requests, and `max_pending` never answered.)
    fn served_by_dials(&self) -> usize {
        match self.protocol {
            Protocol::Http1 => self.queue_dials(),
            Protocol::Unknown if self.dialing > 0 && self.all_ride_on_one_dial() => self
                .live_waiters
                .min(crate::connect::DEFAULT_MAX_STREAMS as usize),
            Protocol::Unknown => self.dialing,
            Protocol::Http2 => self.dialing.saturating_mul(self.streams_per_new_conn()),
        }
    }

    /// Drains the shared connections that `expiry` says have lived long
    /// enough at `now` (the checkout asks before taking a stream), and
    /// drops those without a stream in flight, so that their slots free
    /// now rather than at the next sweep (at the per-host limit a request
    /// would wait for it). Returns why each dropped one closed, to count.
    pub(crate) fn expire_shared(
        &mut self,
        now: Stamp,
        expiry: SharedExpiry,
        per_host: usize,
        spare_total: &mut usize,
    ) -> Vec<CloseReason> {
        self.drain_shared_where(per_host, spare_total, |conn| expiry.reason(conn, now));
        self.drop_idle_shared(usize::MAX)
    }

    /// Drains the shared connections with no stream in flight that were
    /// made before `freeze`: they crossed it (see `settle_streams`).
    pub(crate) fn drain_idle_shared_made_before(&mut self, freeze: Stamp) {
        for conn in self.shared.iter_mut() {
            if conn.in_flight == 0 && conn.created < freeze {
                conn.drain(CloseReason::FreezeEviction);
            }
        }
    }

    /// Drains the shared connections `why` gives a reason for. Rule: a
    /// busy one (streams in flight) keeps its slot until they end, so it
    /// is drained only while a slot is left to replace it, here (under
    /// `per_host`) and in `spare_total` (each such drain takes one);
    /// otherwise it goes on taking streams past its time and is drained at
    /// a later look, once a slot is free. Drained at a limit, it would
    /// leave new requests nothing to use or dial until its last stream
    /// ended (a long poll: indefinitely). An idle one is always drained:
    /// its slot frees as it goes.
    pub(crate) fn drain_shared_where(
        &mut self,
        per_host: usize,
        spare_total: &mut usize,
        mut why: impl FnMut(&Shared<S>) -> Option<CloseReason>,
    ) {
        let mut spare_here = per_host.saturating_sub(self.slots);
        for conn in self.shared.iter_mut().filter(|c| c.draining.is_none()) {
            let Some(reason) = why(conn) else { continue };
            if conn.in_flight > 0 {
                if spare_here == 0 || *spare_total == 0 {
                    continue;
                }
                spare_here -= 1;
                *spare_total -= 1;
            }
            conn.drain(reason);
        }
    }

    /// A stream on a connection with room for one; `true` with the first
    /// the connection carries, and when its last stream ended.
    fn take_stream(&mut self) -> Option<(u64, S, bool, Stamp)> {
        let conn = self
            .shared
            .iter_mut()
            .find(|s| s.takes_streams() && s.in_flight < s.sender.max_streams())?;
        conn.in_flight += 1;
        let first = conn.streams == 0;
        conn.streams += 1;
        Some((conn.id, conn.sender.clone(), first, conn.idle_since))
    }

    /// Decides which waiters get new dials after capacity changed. Returns
    /// the waiter ids to dial for; slots are already reserved.
    pub(crate) fn service(&mut self, limits: Limits, budget: &impl TotalBudget) -> Vec<u64> {
        let mut dials = Vec::new();
        self.serve_streams();
        // A waiter marked "dialing" may have been served by another
        // connection while its dial went to someone else, then that dial
        // failed: more marks than dials running means some mark is stale.
        // Unmark the youngest so they get dials below (invariant 4).
        // (Counted only when the bound says there may be more.)
        // (Against the dials for the queue: a dedicated retry dial serves
        // only its own request, and counted here it hid a stale mark.)
        let queue_dials = self.queue_dials();
        if self.marks > queue_dials {
            let mut marked = self.live_marked();
            for w in self.waiters.iter_mut().rev() {
                if marked <= queue_dials {
                    break;
                }
                if w.dialing && !w.tx.is_closed() {
                    w.dialing = false;
                    marked -= 1;
                }
            }
            self.marks = marked;
        }
        while let Some(pos) = self
            .waiters
            .iter()
            .position(|w| !w.dialing && !w.tx.is_closed())
        {
            if !self.may_dial(limits, budget, 0) {
                break;
            }
            self.waiters[pos].dialing = true;
            self.marks += 1;
            dials.push(self.waiters[pos].id);
        }
        if self.live_waiters == 0 {
            self.no_waiters_left();
        }
        dials
    }

    /// A waiter left the queue: served, failed, sent to ask again, or gone.
    fn waiter_left(&mut self) {
        self.live_waiters -= 1;
        if self.live_waiters == 0 {
            self.no_waiters_left();
        }
    }

    /// With nobody queued the origin no longer waits for total capacity,
    /// however its waiters left. (Cleared only by `service` and
    /// `wake_starving`, a mark outlived waiters served by returned
    /// connections, and `offer_idle_or_yield` let this origin's returns
    /// rest while another origin starved for the capacity they held.)
    fn no_waiters_left(&mut self) {
        self.starving = false;
        self.reliefs = 0;
    }

    /// `serve_streams` for the sweep: free streams that no event made
    /// (a server that raised its limit) go to waiters. (Nothing to do
    /// without waiters or shared connections: a test and a return.)
    pub(crate) fn serve_waiting_streams(&mut self) {
        if self.live_waiters > 0 && !self.shared.is_empty() {
            self.serve_streams();
        }
    }

    /// Hands free streams on shared connections to waiters, oldest first.
    fn serve_streams(&mut self) {
        while self.live_waiters > 0 {
            let Some((conn_id, sender, first, _)) = self.take_stream() else {
                return;
            };
            let stream = Handoff::Stream {
                conn_id,
                sender,
                first,
            };
            if let Err(unused) = self.hand_to_oldest(stream) {
                if let Handoff::Stream { conn_id, .. } = unused {
                    self.untake_stream(conn_id);
                }
                return;
            }
        }
    }

    /// Gives `item` to the oldest live waiter; returns it if none is left.
    fn hand_to_oldest(&mut self, mut item: Handoff<C, S>) -> Result<(), Handoff<C, S>> {
        while let Some(waiter) = self.waiters.pop_front() {
            if waiter.tx.is_closed() {
                // Cancelled; its guard already adjusted live_waiters, or
                // will (`cancel_waiter`, which then finds it gone: its
                // dial's mark passes on here).
                if waiter.dialing {
                    self.pass_mark_on();
                }
                continue;
            }
            match waiter.tx.send(Ok(item)) {
                Ok(()) => {
                    self.waiter_left();
                    if waiter.dialing {
                        self.pass_mark_on();
                    }
                    return Ok(());
                }
                // Closed between the look and the send (its guard's
                // `rx.close()` takes no lock): gone, as a closed one above,
                // and its mark passes on too (its `cancel_waiter` will not
                // find it). It was lost: the next waiter looked uncovered.
                Err(Ok(back)) => {
                    item = back;
                    if waiter.dialing {
                        self.pass_mark_on();
                    }
                }
                Err(Err(_)) => unreachable!("we sent Ok"),
            }
        }
        Err(item)
    }

    /// A waiter marked `dialing` was served by something else (a returned
    /// connection, a freed stream), or gave up: its dial goes on, and will serve the
    /// oldest waiter when it lands. The mark passes to the oldest live
    /// waiter without one, so that `dial_covers` counts that dial for it
    /// (else its `pool_timeout` failed it while the dial that would serve
    /// it was landing) and `service` does not dial for it twice.
    pub(super) fn pass_mark_on(&mut self) {
        // (Not while a dedicated retry dial is in flight: `dialing` counts
        // it, so the passed mark would look covered by a dial that serves
        // only its own request, and `service` would give that waiter none
        // when a slot frees. The mark leaves with the waiter then, as it
        // used to.)
        if self.dedicated > 0 {
            return;
        }
        if let Some(next) = (self.waiters.iter_mut()).find(|w| !w.dialing && !w.tx.is_closed()) {
            next.dialing = true;
            self.marks += 1;
        }
    }

    /// A new or returned HTTP/1 connection: oldest waiter first, else idle.
    /// Returns a connection the caller must close, and why, to be counted:
    /// the peer closed it already (`ServerClose`, as `add_shared` says of
    /// an HTTP/2 one: it was counted `Surplus`), or the pool has no use for
    /// it (over `max_idle`, the pool gone: `Surplus`).
    pub(crate) fn offer_idle(
        &mut self,
        idle: Idle<C>,
        limits: Limits,
    ) -> Option<(Idle<C>, CloseReason)> {
        // (Nobody queued, the usual case: straight to the idle list, not
        // wrapped into a handoff and back.)
        let idle = if self.waiters.is_empty() {
            idle
        } else {
            match self.hand_to_oldest(Handoff::Exclusive(idle)) {
                Ok(()) => return None,
                Err(Handoff::Exclusive(idle)) => idle,
                Err(Handoff::Stream { .. } | Handoff::AskAgain) => {
                    unreachable!("offered an exclusive connection")
                }
            }
        };
        // Dead (its slot may be freed already), or no pool to rest in.
        if idle.conn.is_closed() {
            return Some((idle, CloseReason::ServerClose));
        }
        if self.retired {
            return Some((idle, CloseReason::Surplus));
        }
        self.idle.push_back(idle);
        if self.idle.len() > limits.max_idle {
            self.idle
                .pop_front()
                .map(|idle| (idle, CloseReason::Surplus))
        } else {
            None
        }
    }

    /// [`offer_idle`](Self::offer_idle), unless `others_starve` (some
    /// origin waits for total capacity: `Budget::any_starving`): then a waiter
    /// here still gets the connection, but rather than rest idle it is
    /// returned to be closed, so its total slot frees for the starving
    /// origin (unless this origin is the starving one). For every
    /// connection that comes to rest: one returned by its request, a new
    /// one whose request left before it landed, one handed to a request
    /// that had just gone.
    pub(crate) fn offer_idle_or_yield(
        &mut self,
        idle: Idle<C>,
        limits: Limits,
        others_starve: bool,
    ) -> Option<(Idle<C>, CloseReason)> {
        if others_starve && self.live_waiters == 0 && !self.starving {
            return Some((idle, CloseReason::Surplus));
        }
        self.offer_idle(idle, limits)
    }

    /// Takes a connection that rests: the oldest idle HTTP/1 one, else a
    /// shared (HTTP/2) one with no stream in flight that still takes them.
    /// For closing, to free its total slot for another origin. (Not one
    /// already going, draining or closed by its server: it frees its slot
    /// anyway, and taken it counted as a relief that freed nothing more,
    /// closed as `surplus` over its own reason.)
    pub(crate) fn take_resting(&mut self) -> Option<Resting<C, S>> {
        if let Some(idle) = self.idle.pop_front() {
            return Some(Resting::Exclusive(idle));
        }
        let i = (self.shared.iter()).position(|s| s.in_flight == 0 && s.takes_streams())?;
        Some(Resting::Shared(self.shared.swap_remove(i)))
    }

    /// A new shared connection: hand its streams to waiters.
    ///
    /// Returns why it closes instead, if it does: it died before it landed
    /// (never counted as spare streams), or the pool is gone. Dropped here,
    /// it closes; the caller counts it.
    pub(crate) fn add_shared(&mut self, shared: Shared<S>) -> Option<CloseReason> {
        self.streams_per_conn = shared.sender.max_streams().max(1);
        if shared.sender.is_closed() {
            return Some(CloseReason::ServerClose);
        }
        if self.retired {
            return Some(CloseReason::Surplus);
        }
        self.shared.push(shared);
        self.serve_streams();
        None
    }

    /// A stream taken but handed to no one: as if never taken.
    pub(crate) fn untake_stream(&mut self, conn_id: u64) {
        if let Some(s) = self.shared.iter_mut().find(|s| s.id == conn_id) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.streams = s.streams.saturating_sub(1);
        }
    }

    /// Drops the shared connections without a stream in flight that
    /// drain, those whose server lowered their stream limit to 0 while
    /// requests wait, and of the others without a stream all but the
    /// `keep_idle` that rested least (`max_idle_per_host`, as for HTTP/1;
    /// 0: pooling off, or capacity wanted elsewhere). Returns why each went, to be
    /// counted outside the lock. One whose sender closed (the server went
    /// away) is left for `slot_freed`, which counts it as the server's
    /// close, unless it was draining already.
    pub(crate) fn drop_idle_shared(&mut self, keep_idle: usize) -> Vec<CloseReason> {
        let rests =
            |s: &Shared<S>| s.in_flight == 0 && !s.sender.is_closed() && s.draining.is_none();
        // Those that rested longest go first: the newest rest since, as
        // HTTP/1's idle list keeps its most recently returned.
        // Read once: `is_closed` is set from other threads (the
        // connection's read path, hyper's task ending). Counted, then
        // collected in a second pass, one connection closing in between
        // left fewer rests than the count: `since[surplus - 1]` panicked,
        // under the origin's lock, in a lease's drop.
        let mut since: Vec<Stamp> = Vec::new();
        if keep_idle < self.shared.len() {
            since.extend(
                self.shared
                    .iter()
                    .filter(|s| rests(s))
                    .map(|s| s.idle_since),
            );
        }
        let surplus = since.len().saturating_sub(keep_idle);
        // The `surplus`-th longest rest: all that rested longer go, and of
        // those that rested as long (the coarse clock makes ties common)
        // as many as still must.
        let (cutoff, mut ties_to_drop) = if surplus == 0 {
            (None, 0)
        } else {
            since.sort_unstable();
            let cutoff = since[surplus - 1];
            let longer = since.iter().filter(|t| **t < cutoff).count();
            (Some(cutoff), surplus - longer)
        };
        let mut gone = Vec::new();
        let waiting = self.live_waiters > 0;
        self.shared.retain(|s| {
            if s.in_flight > 0 {
                return true;
            }
            // Draining (closed by the server meanwhile too: a GOAWAY
            // crossed the pool's own reason): it goes now, counted for the
            // pool's reason. Left for `slot_freed`, its record kept the
            // pool's hold, and a connection whose server stopped reading
            // (an upload given up) was never shut.
            if let Some(why) = s.draining {
                gone.push(why);
                return false;
            }
            if s.sender.is_closed() {
                return true;
            }
            // Its server lowered its stream limit to 0 (a SETTINGS frame,
            // as some send before they go away): while requests wait, it
            // goes, and its slot can dial one that serves them. (Kept for
            // them as a rest, it held its per-host slot until
            // `idle_timeout`, past their `pool_timeout`. A review found
            // it.) Only one that carried streams: one that landed allowing
            // none would be dialed again and dropped again, in a loop.
            if waiting && s.streams > 0 && s.sender.max_streams() == 0 {
                gone.push(CloseReason::Surplus);
                return false;
            }
            let goes = match cutoff {
                Some(cutoff) if s.idle_since < cutoff => true,
                Some(cutoff) if s.idle_since == cutoff && ties_to_drop > 0 => {
                    ties_to_drop -= 1;
                    true
                }
                _ => false,
            };
            if goes {
                gone.push(CloseReason::Surplus);
            }
            !goes
        });
        gone
    }

    /// A stream ended at `now`.
    pub(crate) fn release_stream(&mut self, conn_id: u64, now: Stamp) {
        if let Some(s) = self.shared.iter_mut().find(|s| s.id == conn_id) {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = now;
            }
        }
    }

    /// Checks the invariants; used by tests after every step.
    #[cfg(test)]
    pub(crate) fn check(&self, limits: Limits) -> Result<(), String> {
        if self.slots > limits.per_host {
            return Err(format!("slots {} > limit {}", self.slots, limits.per_host));
        }
        if self.idle.len() + self.shared.len() + self.dialing > self.slots {
            return Err(format!(
                "idle {} + shared {} + dialing {} > slots {}",
                self.idle.len(),
                self.shared.len(),
                self.dialing,
                self.slots
            ));
        }
        if self.idle.len() > limits.max_idle {
            return Err("idle above max_idle".into());
        }
        self.idle.check()?;
        let marked = self.live_marked();
        if marked > self.marks {
            return Err(format!(
                "{marked} waiters marked dialing > bound {}",
                self.marks
            ));
        }
        let live = self.waiters.iter().filter(|w| !w.tx.is_closed()).count();
        if live != self.live_waiters {
            return Err(format!(
                "live waiters {live} != counter {}",
                self.live_waiters
            ));
        }
        Ok(())
    }
}
