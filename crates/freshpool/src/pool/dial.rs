//! Dialing for an origin: the slot a dial holds ([`SlotGuard`]), dials
//! spawned for waiters, and what a dial's end does: a new connection
//! added (idle, or shared over HTTP/2), or a slot given back.

use super::*;
use crate::catch_panic::CatchPanic;

/// Holds one slot (per-host and total) until the connection's socket is
/// gone: owned by the dial, then by the connection's driver task.
///
/// It also owns the "dial in flight" count until the connection is
/// established: `dialing` is claimed (swapped to false) by whichever comes
/// first, the dial task handing the connection to the pool or this guard
/// dropping because the dial failed. A failed dial thus releases its slot
/// and its dial count in one locked step, so `dialing <= slots` always
/// holds under the lock.
///
/// It is made when the slot is reserved, before the dial task is spawned,
/// and moves into the task: a task dropped before it ever ran (spawned on
/// a runtime that is shutting down) still gives its slot back. Until the
/// task starts (`started`), the waiter the dial was for is sent back to
/// ask again from its own runtime instead (`Origin::dial_never_ran`).
pub(crate) struct SlotGuard {
    pub(super) origin: Arc<Origin>,
    pub(super) conn_id: u64,
    pub(super) since: Instant,
    pub(super) dialing: Arc<std::sync::atomic::AtomicBool>,
    /// The dial task ran (false: reserved, spawned, never polled).
    pub(super) started: bool,
    /// The waiter the dial is for (None: a dedicated dial).
    pub(super) waiter: Option<u64>,
    /// The connection was made (`DialSlot::established`): only then is
    /// its life an `http.client.connection.duration`. (Not a dial that
    /// failed, nor one cancelled under way: its runtime shut down.)
    pub(super) established: bool,
    /// It ended without a word from its server (`DialSlot::ended_unanswered`).
    pub(super) unanswered: bool,
}

impl SlotGuard {
    /// The guard for a slot just reserved, and the dial flag the dial
    /// task keeps to claim the dial count on success.
    pub(super) fn new(origin: &Arc<Origin>, waiter: Option<u64>) -> (SlotGuard, Arc<AtomicBool>) {
        let dialing = Arc::new(AtomicBool::new(true));
        let guard = SlotGuard {
            origin: origin.clone(),
            conn_id: origin.budget.next_id.fetch_add(1, Ordering::Relaxed),
            since: Instant::now(),
            dialing: dialing.clone(),
            started: false,
            waiter,
            established: false,
            unanswered: false,
        };
        (guard, dialing)
    }
}

impl crate::connect::DialSlot for SlotGuard {
    /// `http.client.connection.duration` counts from here: a connection's
    /// life, not its dial (lookup, connect, TLS) too.
    fn established(&mut self) {
        self.since = Instant::now();
        self.established = true;
    }

    fn ended_unanswered(&mut self) {
        self.unanswered = true;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let was_dialing = self.dialing.swap(false, Ordering::AcqRel);
        if !self.started {
            self.origin.dial_never_ran(self.waiter, was_dialing);
            return;
        }
        // `http.client.connection.duration` is of established connections.
        if self.established {
            self.origin
                .counters
                .metrics
                .connection_lived(self.since.elapsed());
        }
        self.origin
            .slot_freed(self.conn_id, was_dialing, self.unanswered);
    }
}

impl Origin {
    /// `unanswered`: the connection ended without a word from its server
    /// (see `DialSlot::ended_unanswered`).
    pub(super) fn slot_freed(self: &Arc<Self>, conn_id: u64, was_dialing: bool, unanswered: bool) {
        self.budget.open.fetch_sub(1, Ordering::AcqRel);
        let (forgotten, dials) = {
            let mut g = self.lock();
            if was_dialing {
                g.state.dial_done();
            }
            let forgotten = g.state.slot_freed(conn_id);
            let dials = g.state.service(self.limits, &*self.budget);
            self.publish(&g.state);
            (forgotten, dials)
        };
        match forgotten {
            // Closed while it rested: the server's close, unless the pool's
            // own rule had expired it already and the sweep (once a second)
            // had not yet acted. A server that closes as its `Keep-Alive:
            // timeout` says, after the pool's margin, counted as its close
            // about half the time: read as "the server closes connections
            // before the pool does".
            Some(Forgotten::Idle(idle)) => {
                // (Precise: the coarse clock lags by up to a beat, and
                // the close comes moments after the expiry.)
                let now = self.budget.stamp(Instant::now());
                let reason = self.close_reason(&idle, now);
                self.counters.closed(reason);
                drop(idle);
            }
            // (An HTTP/2 connection whose keep-alive PING went unanswered
            // was counted as the server's close: the flow a NAT dropped
            // read as a server that closed.)
            Some(Forgotten::Shared(_)) if unanswered => {
                self.counters.closed(CloseReason::Unresponsive)
            }
            // (Draining already: for the pool's reason, as `drop_idle_shared`
            // counts one that goes with no stream. After an unanswered PING
            // above: a stream it carried was cut off, and that says so.)
            Some(Forgotten::Shared(Some(why))) => self.counters.closed(why),
            Some(Forgotten::Shared(None)) => self.counters.closed(CloseReason::ServerClose),
            None => {}
        }
        self.spawn_dials(dials);
        // The freed total slot may be what another origin is waiting for.
        wake_starving(&self.budget);
    }

    /// `service()` may have hit the total limit: make sure freed capacity
    /// elsewhere wakes this origin (`wake_starving`). Separate lock domain.
    pub(super) fn register_if_starving(self: &Arc<Self>) {
        let newly = std::mem::take(&mut self.lock().state.newly_starving);
        if newly {
            self.budget.starving.push(self);
        }
    }

    pub(super) fn spawn_dials(self: &Arc<Self>, waiter_ids: Vec<u64>) {
        self.register_if_starving();
        if waiter_ids.is_empty() {
            return;
        }
        // A dial runs on the runtime that will drive its connection, which
        // must be one of this partition's (see `partition`). A slot freed by
        // another partition's task (`wake_starving`: a connection driven by
        // another runtime closed) is no place for it, nor a thread with no
        // runtime at all (an HTTP/2 stream released there, a dial dropped
        // unrun there: `dial_never_ran` → `wake_starving`). The waiters ask
        // again from their own tasks, whose runtimes can dial, as for a dial
        // dropped unrun. (Without a runtime they used to be failed with "the
        // async runtime is shutting down", though theirs ran fine.)
        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|handle| super::partition::of(handle) == self.key.runtime);
        let Some(handle) = handle else {
            for waiter_id in waiter_ids {
                drop(SlotGuard::new(self, Some(waiter_id)));
            }
            return;
        };
        for waiter_id in waiter_ids {
            // The guard first: it owns the slot even if the task never runs.
            let (slot, dialing) = SlotGuard::new(self, Some(waiter_id));
            handle.spawn(self.clone().dial_for(waiter_id, slot, dialing));
        }
    }

    /// A dial task was dropped before it ever ran: its runtime is shutting
    /// down (a client shared by several runtimes, one of them dropped).
    /// Gives the slot and the dial count back, and sends the waiters that
    /// would dial now back to ask again (`OriginState::dial_never_ran`):
    /// each retry runs on its own runtime, where a dial can run. Nothing
    /// is spawned on this origin's behalf here: a spawn on the dying
    /// runtime would be dropped at once again.
    pub(super) fn dial_never_ran(self: &Arc<Self>, waiter: Option<u64>, was_dialing: bool) {
        self.budget.release();
        {
            let mut g = self.lock();
            g.state
                .dial_never_ran(waiter, was_dialing, self.limits, &*self.budget);
            self.publish(&g.state);
        }
        self.register_if_starving();
        // The freed total slot may be what another origin is waiting for.
        wake_starving(&self.budget);
    }

    /// One dial, for `dial_for` and `dial_dedicated`: the task runs now
    /// (the guard no longer sends its waiter back to ask again), and the
    /// connector hands the guard to the connection's driver, or leaves it
    /// here if the dial fails. Returns the connection's id, the guard (if
    /// left), when the dial began, and its outcome.
    async fn dial_once(
        &self,
        mut slot: SlotGuard,
    ) -> (
        u64,
        Option<SlotGuard>,
        Instant,
        Result<NewConnection, Error>,
    ) {
        slot.started = true;
        let conn_id = slot.conn_id;
        let mut slot = Some(slot);
        let started = Instant::now();
        // A panic in the dial (a `Resolve` impl's bug, say) is this dial's
        // failure: its waiter gets the error. Left to unwind, it ended the
        // task unanswered, and the freed slot dialed again for the same
        // waiter at once, and again, without end.
        let result = match CatchPanic::new(self.connector.dial(&self.key, &mut slot)).await {
            Ok(result) => result,
            Err(panic) => Err(Error::new(
                Kind::Connect,
                format!(
                    "connecting to {} failed: the dial panicked ({panic}); a bug in the resolver or connector",
                    self.label
                ),
            )),
        };
        (conn_id, slot, started, result)
    }

    pub(super) async fn dial_for(
        self: Arc<Self>,
        waiter_id: u64,
        slot: SlotGuard,
        dialing: Arc<AtomicBool>,
    ) {
        let (conn_id, slot, started, result) = self.dial_once(slot).await;
        match result {
            Ok(conn) => {
                self.counters.created(started.elapsed());
                tracing::debug!(origin = %self.label, conn_id, elapsed = ?started.elapsed(), "connection opened");
                self.add_connection(conn_id, conn, &dialing);
            }
            Err(err) => {
                self.dial_failed(&dialing, err, Some(waiter_id));
                // Only now free the slot: had it gone first, the pool would
                // have seen this waiter without a dial and dialed again.
                drop(slot);
            }
        }
    }

    /// Dials a connection for one requester only (see
    /// [`Pool::checkout_dedicated`]). If the requester is gone when it
    /// lands, it joins the pool like any other.
    pub(super) async fn dial_dedicated(
        self: Arc<Self>,
        tx: tokio::sync::oneshot::Sender<Result<Handoff<H1Conn, H2Conn>, Error>>,
        slot: SlotGuard,
        dialing: Arc<AtomicBool>,
        // Settled when the dial ends (or dropped with the task, unrun).
        mut dedicated: DedicatedGuard,
    ) {
        let (conn_id, slot, started, result) = self.dial_once(slot).await;
        match result {
            Ok(NewConnection {
                sender: Sender::H1(sender),
                socket,
                resumed_tls,
                peer,
                tls_alert,
                driver_lost,
            }) => {
                if resumed_tls {
                    self.counters.tls_resumed.fetch_add(1, Ordering::Relaxed);
                }
                self.counters.created(started.elapsed());
                tracing::debug!(origin = %self.label, conn_id, elapsed = ?started.elapsed(), "connection opened (dedicated to a retry)");
                let now = self.budget.stamp(Instant::now());
                let parts = H1Parts {
                    socket,
                    peer,
                    tls_alert,
                    driver_lost,
                };
                let idle = self.new_record(conn_id, sender, parts, now);
                let dials = {
                    let mut g = self.lock();
                    if dialing.swap(false, Ordering::AcqRel) {
                        g.state.dial_done();
                    }
                    dedicated.settle(&mut g);
                    // One dial fewer may leave a waiter without one.
                    let dials = g.state.service(self.limits, &*self.budget);
                    // (Connecting one fewer, active one more.)
                    self.publish(&g.state);
                    dials
                };
                self.spawn_dials(dials);
                if let Err(Ok(Handoff::Exclusive(idle))) = tx.send(Ok(Handoff::Exclusive(idle))) {
                    // Its request is gone.
                    self.offer_unused(idle);
                }
            }
            Ok(other) => {
                // The origin moved to HTTP/2: share it like any new connection.
                dedicated.settle(&mut self.lock());
                self.counters.created(started.elapsed());
                self.add_connection(conn_id, other, &dialing);
                drop(tx); // the requester falls back to a normal checkout
            }
            Err(err) => {
                // (Before `dial_failed` gives the dial count back and runs
                // `service`: meanwhile the queue's dials read one high,
                // which only holds a dial back.)
                dedicated.settle(&mut self.lock());
                if let Some(err) = self.dial_failed(&dialing, err, None) {
                    let _ = tx.send(Err(err));
                }
                drop(slot);
            }
        }
    }

    /// A dial failed: counted and logged, its dial count given back (the
    /// slot guard, which `connector.dial` keeps on a failure, has not
    /// counted it) and the waiter it was for (`waiter`) answered with
    /// `err`, in one locked step; then dials for whoever is left without
    /// one. A dial for no waiter (dedicated) gets `err` back to deliver.
    fn dial_failed(
        self: &Arc<Self>,
        dialing: &AtomicBool,
        err: Error,
        waiter: Option<u64>,
    ) -> Option<Error> {
        self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(origin = %self.label, error = %err, dedicated = waiter.is_none(), "connect failed");
        let (dials, unanswered) = {
            let mut g = self.lock();
            if dialing.swap(false, Ordering::AcqRel) {
                g.state.dial_done();
            }
            let unanswered = match waiter {
                Some(waiter_id) => {
                    g.state.fail_dial(waiter_id, err);
                    None
                }
                None => Some(err),
            };
            // A waiter whose dial failed is answered; others that had
            // counted on this dial (coalesced HTTP/2) are answered too when
            // nothing else can serve them, else get their own dial here.
            (g.state.service(self.limits, &*self.budget), unanswered)
        };
        self.spawn_dials(dials);
        unanswered
    }

    /// A connection handed to a request that had just gone: to the oldest
    /// waiter or the idle list, or, if neither takes it, closed (counted
    /// under why: `offer_idle`).
    pub(super) fn offer_unused(&self, idle: Idle<H1Conn>) {
        let surplus = self.offer_to_rest(&mut self.lock(), idle);
        if let Some((surplus, why)) = surplus {
            self.counters.closed(why);
            drop(surplus);
        }
    }

    /// The record of a newly made HTTP/1 connection (never used, resting
    /// since `now`), holding its reference to this origin.
    pub(super) fn new_record(
        self: &Arc<Self>,
        conn_id: u64,
        sender: http1::SendRequest<RequestBody>,
        parts: H1Parts,
        now: Stamp,
    ) -> Idle<H1Conn> {
        Idle::new(IdleRecord {
            id: conn_id,
            conn: H1Conn {
                sender,
                origin: self.clone(),
                socket: parts.socket,
                peer: parts.peer,
                tls_alert: parts.tls_alert,
                driver_lost: parts.driver_lost,
            },
            created: now,
            idle_since: now,
            expires_at: self.expiry(now, now, None),
            requests: 0,
        })
    }

    pub(super) fn add_connection(
        self: &Arc<Self>,
        conn_id: u64,
        conn: NewConnection,
        dialing: &std::sync::atomic::AtomicBool,
    ) {
        if conn.resumed_tls {
            self.counters.tls_resumed.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.budget.stamp(Instant::now());
        // The origin's own view of DNS (`dns_addrs`, which returns are
        // checked against) is only as new as its last check, and this dial
        // may have resolved a newer answer: brought up to date first (outside
        // the lock), or a connection to where DNS points now would count
        // as moved away and close on its first return. An HTTP/2 connection
        // to an address the resolver no longer lists is not shared (below).
        let current = self.follow_dns_now();
        let listed = match (&conn.sender, conn.peer) {
            (Sender::H2(..), Some(peer)) => current.map(|addrs| addrs.contains(&peer)),
            _ => None,
        };
        let mut surplus = None;
        let mut moved = None;
        let mut not_shared = None;
        let mut trimmed = Vec::new();
        // An HTTP/2 connection shared now (not closed at once, not moved).
        let mut shared_landed = false;
        let dials = {
            let mut g = self.lock();
            if dialing.swap(false, Ordering::AcqRel) {
                g.state.dial_done();
            }
            match conn.sender {
                Sender::H1(sender) => {
                    g.state.protocol = Protocol::Http1;
                    let parts = H1Parts {
                        socket: conn.socket,
                        peer: conn.peer,
                        tls_alert: conn.tls_alert,
                        driver_lost: conn.driver_lost,
                    };
                    let idle = self.new_record(conn_id, sender, parts, now);
                    // (To an address DNS no longer lists, it serves at most
                    // the request it goes to: its return closes it. If its
                    // request left, it yields to a starving origin as a
                    // returned one does.)
                    surplus = self.offer_to_rest(&mut g, idle);
                }
                Sender::H2(sender, limit, _hold) if listed == Some(false) => {
                    // Dialed before DNS moved away from its address: shared,
                    // it would carry every later stream there for good
                    // (`follow_dns` drains only what it finds when it sees
                    // the change). Closed instead; its waiters get a new
                    // dial from `service` below.
                    g.state.protocol = Protocol::Http2;
                    // (What it announced still says how many waiters one
                    // new dial serves.)
                    g.state.streams_per_conn = limit.get().max(1);
                    moved = Some(sender);
                }
                Sender::H2(sender, limit, hold) => {
                    g.state.protocol = Protocol::Http2;
                    not_shared = g.state.add_shared(Shared {
                        id: conn_id,
                        sender: H2Conn {
                            sender,
                            limit,
                            peer: conn.peer,
                        },
                        in_flight: 0,
                        created: now,
                        draining: None,
                        streams: 0,
                        idle_since: now,
                        quiet_abandon: None,
                        hold: Some(Arc::new(hold)),
                    });
                    shared_landed = not_shared.is_none();
                }
            }
            let dials = g.state.service(self.limits, &*self.budget);
            // A connection that lands with nobody to serve rests: beyond
            // `max_idle_per_host`, the one that rested longest goes, as at
            // a stream's end (else a burst's late dials stayed idle until
            // `idle_timeout`).
            if shared_landed {
                let keep = self.idle_shared_to_keep(&g);
                trimmed = g.state.drop_idle_shared(keep);
            }
            self.publish(&g.state);
            dials
        };
        self.count_closed(trimmed);
        if let Some((_, why)) = &surplus {
            self.counters.closed(*why);
        }
        drop(surplus);
        if let Some(why) = not_shared {
            self.counters.closed(why);
        }
        if moved.take().is_some() {
            self.counters.closed(CloseReason::Lifetime);
            tracing::debug!(origin = %self.label, conn_id, "DNS changed while dialing; closed the new connection to the old address");
        }
        self.spawn_dials(dials);
    }
}

/// What the record of a new HTTP/1 connection keeps besides its sender
/// (see `H1Conn`).
pub(super) struct H1Parts {
    socket: Weak<crate::connect::tcp::Socket>,
    peer: Option<std::net::SocketAddr>,
    tls_alert: Option<Arc<crate::connect::tcp::AlertSeen>>,
    driver_lost: Option<Arc<crate::connect::DriverLost>>,
}

/// Counts a dedicated retry dial as in flight (`OriginState::dedicated`)
/// until the dial ends (`settle`, in the same locked step as its dial
/// count) or, if it never does, until the guard drops with its task.
/// Settled with the dial count, not later: in between, `queue_dials`
/// (dials minus dedicated ones) read one low, and `service` took a
/// waiter's mark for stale and dialed for it twice.
pub(super) struct DedicatedGuard {
    origin: Arc<Origin>,
    settled: bool,
}

impl DedicatedGuard {
    pub(super) fn new(origin: Arc<Origin>) -> DedicatedGuard {
        DedicatedGuard {
            origin,
            settled: false,
        }
    }

    /// The dial ended: its dedicated count goes, under the caller's lock.
    fn settle(&mut self, g: &mut Guarded) {
        if !std::mem::replace(&mut self.settled, true) {
            g.state.dedicated_done();
        }
    }
}

impl Drop for DedicatedGuard {
    fn drop(&mut self) {
        if !self.settled {
            self.origin.lock().state.dedicated_done();
        }
    }
}
