//! A model of one origin's pool state, driven by proptest.
//!
//! loom cannot reach the hyper/tokio code of the pool, but every decision
//! the pool makes is taken by [`OriginState`] under one mutex, and the only
//! lock-free piece is the total budget (a CAS to reserve, a `fetch_sub` to
//! release). So this model replays, step by step, what `pool/` does around
//! the state machine (checkout, `WaiterGuard` drop, `dial_for`,
//! `add_connection`, `checkout_dedicated` / `dial_dedicated`,
//! `Lease::release` / `discard`, `SlotGuard` drop, `wake_starving`,
//! `evict`, freeze eviction, connections that die before they land), with
//! tiny fake channels and a fake budget, in random orders chosen by
//! proptest, including the interleavings that the real code allows between
//! two critical sections (another origin taking the budget between a
//! `fetch_sub` and the `service()` that follows).
//!
//! After every step it checks:
//! - the state's own invariants ([`OriginState::check`]): slots within the
//!   per-host limit, idle + shared + dialing within slots, idle within
//!   `max_idle`, `live_waiters` equal to the live receivers;
//! - the total budget within its limit, and equal to this origin's slots plus
//!   what the "other origins" hold (no slot counted twice or lost);
//! - every slot has an owner in the model (a dial in flight or a socket),
//!   and every waiter marked `dialing` has a dial in flight;
//! - no starvation: a live waiter without a dial while a per-host slot and
//!   total capacity are free (and no dial is on its way that will serve it)
//!   is a violation;
//! - FIFO: a connection or stream handed out goes to the oldest live waiter.
//!
//! At the end it cancels, releases and closes everything and checks that no
//! slot leaked: `slots == 0`, `dialing == 0` and the budget is back to 0.

use std::collections::BTreeMap;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::oneshot;

use super::state::{
    Acquire, Channel, Handoff, Idle, IdleRecord, Limits, OriginState, Protocol, Shared, TotalBudget,
};
use super::Stamp;
use crate::error::{Error, Kind};

/// An HTTP/1 connection: closed when the peer closes it or when the pool
/// drops it (dropping hyper's sender closes the socket).
struct FakeH1 {
    closed: Arc<AtomicBool>,
}

impl Channel for FakeH1 {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
    fn max_streams(&self) -> u32 {
        1
    }
}

impl Drop for FakeH1 {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// An HTTP/2 connection's sender (cloned into every stream lease).
#[derive(Clone)]
struct FakeH2 {
    closed: Arc<AtomicBool>,
    max: u32,
}

impl Channel for FakeH2 {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
    fn max_streams(&self) -> u32 {
        self.max
    }
}

/// The same reservation as `pool::Budget`.
struct FakeBudget {
    open: AtomicUsize,
    limit: usize,
}

impl TotalBudget for FakeBudget {
    fn try_reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }
    fn release(&self) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "budget released below zero");
    }
}

type St = OriginState<FakeH1, FakeH2>;
type Rx = oneshot::Receiver<Result<Handoff<FakeH1, FakeH2>, Error>>;

/// A request waiting in checkout.
struct Req {
    waiter_id: u64,
    rx: Rx,
}

/// A request whose receiver has a value it has not looked at yet.
struct Answered {
    waiter_id: u64,
    result: Result<Handoff<FakeH1, FakeH2>, Error>,
    /// Its origin was forgotten since (a successor took over): asking
    /// again, it goes to the successor (`Pool::take_from_successor`).
    moved: bool,
}

/// A dial task in flight (it owns one slot through its `SlotGuard`).
struct Dial {
    conn_id: u64,
    waiter_id: u64,
    /// `Pool::checkout_dedicated` -> `dial_dedicated`: for one requester,
    /// outside the waiter queue; `Some(gone)` says whether it gave up.
    dedicated: Option<bool>,
}

/// Picks one of the items present when the step runs.
#[derive(Clone, Copy, Debug)]
struct Ix(usize);

impl Ix {
    fn index(self, len: usize) -> usize {
        self.0 % len
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// `Pool::checkout` -> `OriginState::acquire`.
    Acquire,
    /// A waiting request's future is dropped (or its pool_timeout fires):
    /// `WaiterGuard::drop`.
    CancelWaiting(Ix),
    /// An answered request is dropped before it looked at its answer:
    /// `WaiterGuard::drop` finds a value.
    CancelAnswered(Ix),
    /// An answered request's task runs: it takes its lease (or its error).
    Wake(Ix),
    /// `Lease::release` of an HTTP/1 lease (body read to the end).
    Release(Ix),
    /// `Lease::discard` of an HTTP/1 lease (body dropped unread, error).
    Discard(Ix),
    /// `Lease::release` / `discard` of an HTTP/2 stream.
    ReleaseStream(Ix),
    /// `Pool::checkout_dedicated` (a retry after a stale connection):
    /// `reserve_dedicated`, else a normal checkout.
    Dedicated,
    /// The requester of a dedicated dial gives up (its future is dropped).
    DropDedicated(Ix),
    /// `dial_for` succeeds: `add_connection`.
    DialOk(Ix),
    /// `dial_for` succeeds, but the new connection dies (and its driver
    /// task ends, dropping the `SlotGuard`) before `add_connection` takes
    /// the lock.
    DialOkDead(Ix),
    /// `dial_for` fails: the `SlotGuard` is dropped inside the dial, then
    /// the error goes to the waiter.
    DialFail(Ix),
    /// A dial task is dropped before it ever ran (spawned on a runtime
    /// that is shutting down): `SlotGuard::drop` -> `Origin::dial_never_ran`.
    /// A dedicated dial's requester sees its channel closed and checks out
    /// normally.
    DialNeverRan(Ix),
    /// The peer closes a connection (FIN/RST seen by hyper).
    PeerClose(Ix),
    /// A closed connection's driver task ends: `SlotGuard::drop`.
    /// With `race`, another origin takes the freed total slot between the
    /// `fetch_sub` and this origin's `service()`.
    DriverEnd(Ix, bool),
    /// A bare `service()` under the lock.
    Service,
    /// Time passes.
    Advance(u8),
    /// The heartbeat's `evict` sweep.
    Evict,
    /// A process freeze was detected: `evict` with `frozen_since`.
    Freeze,
    /// Another origin takes a total slot.
    ExternalTake,
    /// Another origin frees a total slot: `slot_freed` -> `wake_starving`.
    ExternalGive,
    /// The sweep's `Origin::retire_if_unused`, its time come: retires the
    /// origin if it is unused and no request holds a lease.
    Forget,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Acquire),
        2 => any::<usize>().prop_map(Ix).prop_map(Op::CancelWaiting),
        1 => any::<usize>().prop_map(Ix).prop_map(Op::CancelAnswered),
        4 => any::<usize>().prop_map(Ix).prop_map(Op::Wake),
        3 => any::<usize>().prop_map(Ix).prop_map(Op::Release),
        1 => any::<usize>().prop_map(Ix).prop_map(Op::Discard),
        2 => any::<usize>().prop_map(Ix).prop_map(Op::ReleaseStream),
        3 => any::<usize>().prop_map(Ix).prop_map(Op::DialOk),
        2 => any::<usize>().prop_map(Ix).prop_map(Op::DialFail),
        1 => any::<usize>().prop_map(Ix).prop_map(Op::DialNeverRan),
        1 => Just(Op::Dedicated),
        1 => any::<usize>().prop_map(Ix).prop_map(Op::DialOkDead),
        1 => any::<usize>().prop_map(Ix).prop_map(Op::DropDedicated),
        1 => any::<usize>().prop_map(Ix).prop_map(Op::PeerClose),
        2 => (any::<usize>().prop_map(Ix), prop::bool::weighted(0.2)).prop_map(|(i, r)| Op::DriverEnd(i, r)),
        1 => Just(Op::Service),
        1 => (0u8..80).prop_map(Op::Advance),
        1 => Just(Op::Evict),
        1 => Just(Op::Freeze),
        1 => Just(Op::ExternalTake),
        1 => Just(Op::ExternalGive),
        1 => Just(Op::Forget),
    ]
}

/// Which model of the world a case runs.
#[derive(Clone, Copy, Debug)]
struct Setup {
    limits: Limits,
    total: usize,
    /// `false`: HTTP/1 origin; `true`: HTTPS that turns out to be HTTP/2.
    h2: bool,
    h2_streams: u32,
    /// Idle timeout, in model milliseconds.
    idle_ms: u64,
    /// Check invariant 2 (`idle + shared + dialing <= slots`) also between
    /// the two critical sections of a failed dial (see
    /// `dial_failure_never_shows_more_dials_than_slots`).
    strict_dial_fail: bool,
    /// Report the two known starvation bugs (a waiter marked `dialing` with
    /// no dial in flight for it; an origin marked `starving` by `service()`
    /// that `wake_starving` never visits). When false, a case that reaches
    /// either state stops checking starvation (every other invariant is
    /// still checked).
    strict: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..=4,
        0usize..=4,
        1usize..=5,
        1usize..=6,
        any::<bool>(),
        1u32..=3,
        20u64..200,
    )
        .prop_map(
            |(per_host, max_idle, max_pending, total, h2, h2_streams, idle_ms)| Setup {
                limits: Limits {
                    per_host,
                    max_idle,
                    max_pending,
                },
                total,
                h2,
                h2_streams,
                idle_ms,
                strict_dial_fail: false,
                strict: false,
            },
        )
}

struct Model {
    setup: Setup,
    st: St,
    budget: FakeBudget,
    start: Stamp,
    now: Stamp,
    next_conn: u64,
    waiting: Vec<Req>,
    answered: Vec<Answered>,
    leases_h1: Vec<Idle<FakeH1>>,
    leases_h2: Vec<u64>,
    dials: Vec<Dial>,
    /// Established connections whose driver task still runs (each holds a
    /// slot), by id, with their "socket closed" flag.
    sockets: BTreeMap<u64, Arc<AtomicBool>>,
    /// Total slots held by other origins.
    external: usize,
    /// Entries of this origin in the budget's starving list.
    registered: usize,
    /// Log of what happened, printed on failure.
    log: Vec<String>,
    /// A known bug was reached (non-strict mode): starvation is no longer
    /// checked for this case.
    tainted: bool,
    /// `Op::Forget` retired the origin.
    forgotten: bool,
}

impl Model {
    fn new(setup: Setup) -> Model {
        let now = Stamp::from_nanos(1);
        Model {
            setup,
            st: OriginState::new(if setup.h2 {
                Protocol::Unknown
            } else {
                Protocol::Http1
            }),
            budget: FakeBudget {
                open: AtomicUsize::new(0),
                limit: setup.total,
            },
            start: now,
            now,
            next_conn: 1,
            waiting: Vec::new(),
            answered: Vec::new(),
            leases_h1: Vec::new(),
            leases_h2: Vec::new(),
            dials: Vec::new(),
            sockets: BTreeMap::new(),
            external: 0,
            registered: 0,
            log: Vec::new(),
            tainted: false,
            forgotten: false,
        }
    }

    fn limits(&self) -> Limits {
        self.setup.limits
    }

    fn expiry(&self, now: Stamp) -> Stamp {
        now.after(Duration::from_millis(self.setup.idle_ms))
    }

    /// `Origin::spawn_dials`: slots are already reserved.
    fn spawn_dials(&mut self, waiter_ids: Vec<u64>) {
        // Origin::spawn_dials: an origin service() newly found starved of
        // total capacity is registered for wake_starving.
        if std::mem::take(&mut self.st.newly_starving) {
            self.registered += 1;
        }
        for waiter_id in waiter_ids {
            let conn_id = self.next_conn;
            self.next_conn += 1;
            self.log
                .push(format!("  spawn dial #{conn_id} for waiter {waiter_id}"));
            self.dials.push(Dial {
                conn_id,
                waiter_id,
                dedicated: None,
            });
        }
    }

    fn service(&mut self) {
        let dials = self.st.service(self.setup.limits, &self.budget);
        self.spawn_dials(dials);
    }

    /// `wake_starving` (single origin registered in the list).
    fn wake_starving(&mut self) {
        loop {
            if self.budget.open.load(Ordering::Acquire) >= self.budget.limit {
                return;
            }
            if self.registered == 0 {
                return;
            }
            self.registered -= 1;
            self.st.starving = false;
            let dials = self.st.service(self.setup.limits, &self.budget);
            let started = !dials.is_empty();
            self.spawn_dials(dials);
            if started {
                return;
            }
        }
    }

    /// `Origin::slot_freed` (from `SlotGuard::drop`); with `race`, another
    /// origin grabs the freed total slot before this origin's `service()`.
    fn slot_freed(&mut self, conn_id: u64, race: bool) {
        self.budget.release();
        if race && self.budget.try_reserve() {
            self.external += 1;
            self.log
                .push("  (another origin took the freed total slot)".into());
        }
        let _was_pooled = self.st.slot_freed(conn_id);
        self.service();
        self.wake_starving();
    }

    /// Collects answers that arrived on waiting receivers.
    fn collect(&mut self) -> Result<(), String> {
        let mut still = Vec::new();
        let mut newly = Vec::new();
        for mut req in std::mem::take(&mut self.waiting) {
            match req.rx.try_recv() {
                Ok(result) => newly.push(Answered {
                    waiter_id: req.waiter_id,
                    result,
                    moved: false,
                }),
                Err(oneshot::error::TryRecvError::Empty) => still.push(req),
                Err(oneshot::error::TryRecvError::Closed) => {
                    // Sender dropped without an answer: checkout cancels
                    // and asks again.
                    self.log
                        .push(format!("  waiter {} dropped unanswered", req.waiter_id));
                    self.st.cancel_waiter();
                    newly.push(Answered {
                        waiter_id: req.waiter_id,
                        result: Err(Error::new(Kind::Closed, "retry")),
                        moved: false,
                    });
                }
            }
        }
        // FIFO: every request handed a connection now is older than every
        // request still waiting.
        if let Some(oldest_waiting) = still.iter().map(|r| r.waiter_id).min() {
            for a in &newly {
                let served = matches!(a.result, Ok(Handoff::Exclusive(_) | Handoff::Stream { .. }));
                if served && a.waiter_id > oldest_waiting {
                    return Err(format!(
                        "FIFO: waiter {} was served while older waiter {} still waits",
                        a.waiter_id, oldest_waiting
                    ));
                }
            }
        }
        self.waiting = still;
        self.answered.extend(newly);
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), String> {
        self.log.push(format!("{op:?}"));
        match op {
            Op::Acquire => self.acquire(),
            Op::CancelWaiting(i) => {
                if !self.waiting.is_empty() {
                    let mut req = self.waiting.remove(i.index(self.waiting.len()));
                    self.log.push(format!("  cancel waiter {}", req.waiter_id));
                    self.waiter_guard_drop(&mut req.rx);
                }
            }
            Op::CancelAnswered(i) => {
                if !self.answered.is_empty() {
                    let a = self.answered.remove(i.index(self.answered.len()));
                    self.log
                        .push(format!("  drop answered waiter {}", a.waiter_id));
                    // WaiterGuard::drop with a value in the channel.
                    match a.result {
                        Ok(Handoff::Exclusive(idle)) => {
                            let surplus = self.st.offer_idle(idle, self.limits());
                            drop(surplus);
                        }
                        Ok(Handoff::Stream { conn_id, .. }) => {
                            self.st.untake_stream(conn_id);
                            self.service();
                        }
                        Ok(Handoff::AskAgain) | Err(_) => {}
                    }
                }
            }
            Op::Wake(i) => {
                if !self.answered.is_empty() {
                    let a = self.answered.remove(i.index(self.answered.len()));
                    match a.result {
                        Ok(Handoff::Exclusive(idle)) => self.leases_h1.push(idle),
                        Ok(Handoff::Stream { conn_id, .. }) => self.leases_h2.push(conn_id),
                        Ok(Handoff::AskAgain) if a.moved => self.acquire_moved(a.waiter_id)?,
                        Err(e) if a.moved && e.kind() == Kind::Closed => {
                            self.acquire_moved(a.waiter_id)?
                        }
                        Ok(Handoff::AskAgain) => self.acquire_again(a.waiter_id)?,
                        Err(e) if e.kind() == Kind::Closed => self.acquire_again(a.waiter_id)?,
                        Err(_) => {}
                    }
                }
            }
            Op::Release(i) => {
                if !self.leases_h1.is_empty() {
                    let mut idle = self.leases_h1.remove(i.index(self.leases_h1.len()));
                    let now = self.now;
                    idle.requests += 1;
                    idle.idle_since = now;
                    idle.expires_at = self.expiry(now);
                    let expired = idle.expires_at <= now;
                    if expired || idle.conn.is_closed() {
                        drop(idle);
                    } else {
                        let surplus = self.st.offer_idle(idle, self.limits());
                        drop(surplus);
                    }
                }
            }
            Op::Discard(i) => {
                if !self.leases_h1.is_empty() {
                    drop(self.leases_h1.remove(i.index(self.leases_h1.len())));
                }
            }
            Op::ReleaseStream(i) => {
                if !self.leases_h2.is_empty() {
                    let conn_id = self.leases_h2.remove(i.index(self.leases_h2.len()));
                    self.st.release_stream(conn_id, self.now);
                    drop(self.st.drop_idle_shared(true));
                    self.service();
                }
            }
            Op::Dedicated => {
                if self.st.reserve_dedicated(self.setup.limits, &self.budget) {
                    let conn_id = self.next_conn;
                    self.next_conn += 1;
                    self.log.push(format!("  dedicated dial #{conn_id}"));
                    self.dials.push(Dial {
                        conn_id,
                        waiter_id: 0,
                        dedicated: Some(false),
                    });
                } else {
                    self.acquire();
                }
            }
            Op::DropDedicated(i) => {
                let mine: Vec<usize> = (0..self.dials.len())
                    .filter(|&k| self.dials[k].dedicated == Some(false))
                    .collect();
                if !mine.is_empty() {
                    let k = mine[i.index(mine.len())];
                    self.dials[k].dedicated = Some(true);
                }
            }
            Op::DialOk(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    match dial.dedicated {
                        None => self.add_connection(dial.conn_id, false),
                        Some(gone) => self.dedicated_landed(dial.conn_id, gone),
                    }
                }
            }
            Op::DialOkDead(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    if dial.dedicated.is_none() {
                        // The driver ends first: SlotGuard::drop claims the
                        // dial count and frees the slot in one step.
                        self.st.dial_done();
                        self.slot_freed(dial.conn_id, false);
                        self.add_connection_claimed(dial.conn_id, true, false);
                    } else {
                        self.dials.push(dial);
                    }
                }
            }
            Op::DialFail(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    if dial.dedicated.is_some() {
                        // dial_dedicated's error path: the guard dropped in
                        // the failed dial already counted the dial done.
                        self.st.dial_done();
                        self.slot_freed(dial.conn_id, false);
                        self.service();
                        return self.collect().and_then(|()| self.invariants());
                    }
                    // Origin::dial_for's order: the dial's count, its
                    // waiter's answer (and its riders', `fail_dial`) and
                    // service() in one locked step; then the slot guard,
                    // which connector.dial keeps on failure, frees the slot.
                    self.st.dial_done();
                    self.st
                        .fail_dial(dial.waiter_id, Error::new(Kind::Connect, "refused"));
                    self.service();
                    if self.setup.strict_dial_fail {
                        self.st.check(self.limits())?;
                    }
                    self.slot_freed(dial.conn_id, false);
                }
            }
            Op::DialNeverRan(i) => {
                if !self.dials.is_empty() {
                    let dial = self.dials.remove(i.index(self.dials.len()));
                    self.budget.release();
                    let waiter = dial.dedicated.is_none().then_some(dial.waiter_id);
                    self.st
                        .dial_never_ran(waiter, true, self.setup.limits, &self.budget);
                    self.spawn_dials(Vec::new());
                    self.wake_starving();
                    if dial.dedicated == Some(false) {
                        self.acquire();
                    }
                }
            }
            Op::PeerClose(i) => {
                if !self.sockets.is_empty() {
                    let n = i.index(self.sockets.len());
                    let flag = self.sockets.values().nth(n).expect("in range");
                    flag.store(true, Ordering::SeqCst);
                }
            }
            Op::DriverEnd(i, race) => {
                let closed: Vec<u64> = self
                    .sockets
                    .iter()
                    .filter(|(_, f)| f.load(Ordering::SeqCst))
                    .map(|(id, _)| *id)
                    .collect();
                if !closed.is_empty() {
                    let id = closed[i.index(closed.len())];
                    self.sockets.remove(&id);
                    self.slot_freed(id, race);
                }
            }
            Op::Service => self.service(),
            Op::Advance(ms) => self.now = self.now.after(Duration::from_millis(u64::from(ms))),
            Op::Forget => {
                // (Answers not yet looked at may be there: an `AskAgain`
                // or an error holds no slot.)
                let leased = !self.leases_h1.is_empty() || !self.leases_h2.is_empty();
                if self.st.is_unused() && !leased {
                    self.log.push("  retired (forgotten)".into());
                    self.st.retired = true;
                    self.forgotten = true;
                }
            }
            Op::Evict => {
                let now = self.now;
                drop(
                    self.st
                        .idle
                        .take_where(|idle| now >= idle.expires_at || idle.conn.is_closed()),
                );
            }
            Op::Freeze => {
                // Origin::evict(now, Some(now)): every idle connection and
                // every HTTP/2 connection without streams is dropped.
                drop(self.st.idle.take_all());
                for sh in self.st.shared.iter_mut().filter(|sh| sh.in_flight == 0) {
                    sh.drain(crate::stats::CloseReason::FreezeEviction);
                }
                let gone: Vec<Arc<AtomicBool>> = self
                    .st
                    .shared
                    .iter()
                    .filter(|sh| sh.draining.is_some() && sh.in_flight == 0)
                    .map(|sh| sh.sender.closed.clone())
                    .collect();
                self.st
                    .shared
                    .retain(|sh| sh.draining.is_none() || sh.in_flight > 0);
                // Its last sender is gone: hyper closes the connection.
                for closed in gone {
                    closed.store(true, Ordering::SeqCst);
                }
            }
            Op::ExternalTake => {
                if self.budget.try_reserve() {
                    self.external += 1;
                }
            }
            Op::ExternalGive => {
                if self.external > 0 {
                    self.external -= 1;
                    self.budget.release();
                    self.wake_starving();
                }
            }
        }
        self.collect()?;
        self.invariants()
    }

    /// `Pool::checkout`, one pass.
    fn acquire(&mut self) {
        self.acquire_as(None);
    }

    /// `Queued::wait` after `AskAgain` (or a dropped sender): the waiter
    /// checks out again, keeping its place; never refused as `PoolFull`.
    fn acquire_again(&mut self, waiter_id: u64) -> Result<(), String> {
        self.log.push(format!("  waiter {waiter_id} asks again"));
        match self.acquire_as(Some(waiter_id)) {
            Some(waiting) => Err(format!(
                "waiter {waiter_id}, sent back to ask again, was refused as PoolFull ({waiting} waiting)"
            )),
            None => Ok(()),
        }
    }

    /// `acquire_again` for a waiter whose origin was forgotten meanwhile:
    /// its origin answers `Retired`, and it asks the successor, at the back
    /// of its queue, never refused as `PoolFull`.
    fn acquire_moved(&mut self, waiter_id: u64) -> Result<(), String> {
        self.log
            .push(format!("  waiter {waiter_id} (moved) asks again"));
        let id = self.st.fresh_waiter_id();
        match self.acquire_as(Some(id)) {
            Some(waiting) => Err(format!(
                "waiter {waiter_id}, moved to a successor origin, was refused as PoolFull ({waiting} waiting)"
            )),
            None => Ok(()),
        }
    }

    /// Returns the queue length when refused as full.
    fn acquire_as(&mut self, asking_again: Option<u64>) -> Option<usize> {
        let mut expired = Vec::new();
        let acquired = self.st.acquire(
            self.now,
            self.setup.limits,
            &self.budget,
            Location::caller(),
            &mut expired,
            asking_again,
        );
        drop(expired);
        match acquired {
            Acquire::Idle(idle) => {
                self.log.push(format!("  idle #{}", idle.id));
                self.leases_h1.push(idle);
            }
            Acquire::Stream { conn_id, .. } => {
                self.log.push(format!("  stream on #{conn_id}"));
                self.leases_h2.push(conn_id);
            }
            Acquire::Full { waiting } => {
                self.log.push(format!("  full ({waiting})"));
                return Some(waiting);
            }
            // The pool takes from the origin that replaced it
            // (`take_from_successor`): a new, empty one, asked afresh.
            Acquire::Retired => {
                self.log
                    .push("  retired: a successor origin takes over".into());
                let http2_only = self.st.http2_only;
                self.st = OriginState::new(if self.setup.h2 {
                    Protocol::Unknown
                } else {
                    Protocol::Http1
                });
                self.st.http2_only = http2_only;
                self.forgotten = false;
                self.registered = 0;
                for a in &mut self.answered {
                    a.moved = true;
                }
                let moved = asking_again.map(|_| self.st.fresh_waiter_id());
                return self.acquire_as(moved);
            }
            Acquire::Wait {
                waiter_id,
                rx,
                dial,
            } => {
                self.log
                    .push(format!("  wait as {waiter_id} (dial: {dial})"));
                let starving = !dial && self.st.starving;
                if dial {
                    self.spawn_dials(vec![waiter_id]);
                } else if starving {
                    self.registered += 1;
                }
                self.waiting.push(Req { waiter_id, rx });
            }
        }
        None
    }

    /// `WaiterGuard::drop` for a request still waiting.
    fn waiter_guard_drop(&mut self, rx: &mut Rx) {
        rx.close();
        match rx.try_recv() {
            Ok(Ok(Handoff::Exclusive(idle))) => {
                let surplus = self.st.offer_idle(idle, self.limits());
                drop(surplus);
            }
            Ok(Ok(Handoff::Stream { conn_id, .. })) => {
                self.st.untake_stream(conn_id);
                self.service();
            }
            Ok(Err(_) | Ok(Handoff::AskAgain)) => {}
            Err(_) => self.st.cancel_waiter(),
        }
    }

    /// `Origin::dial_dedicated`, HTTP/1 success: to its requester, or to
    /// the pool when the requester is gone.
    fn dedicated_landed(&mut self, conn_id: u64, gone: bool) {
        let closed = Arc::new(AtomicBool::new(false));
        self.sockets.insert(conn_id, closed.clone());
        let now = self.now;
        let idle = Idle::new(IdleRecord {
            id: conn_id,
            conn: FakeH1 { closed },
            created: now,
            idle_since: now,
            expires_at: self.expiry(now),
            requests: 0,
        });
        self.st.dial_done();
        // One dial fewer may leave a waiter without one (as the real code).
        self.service();
        if gone {
            let surplus = self.st.offer_idle(idle, self.limits());
            drop(surplus);
        } else {
            self.leases_h1.push(idle);
        }
    }

    /// `Origin::add_connection`.
    /// With `dead`, the connection's driver already ended (its slot is
    /// freed) and its sender reports closed.
    fn add_connection(&mut self, conn_id: u64, dead: bool) {
        self.add_connection_claimed(conn_id, dead, true)
    }

    /// `claim`: the dial task still owns the dial count (the slot guard did
    /// not claim it first).
    fn add_connection_claimed(&mut self, conn_id: u64, dead: bool, claim: bool) {
        let closed = Arc::new(AtomicBool::new(dead));
        if !dead {
            self.sockets.insert(conn_id, closed.clone());
        }
        let now = self.now;
        if claim {
            self.st.dial_done();
        }
        if self.setup.h2 {
            self.st.protocol = Protocol::Http2;
            let not_shared = self.st.add_shared(Shared {
                id: conn_id,
                sender: FakeH2 {
                    closed,
                    max: self.setup.h2_streams,
                },
                in_flight: 0,
                created: now,
                draining: None,
                streams: 0,
                idle_since: now,
            });
            // Not shared only if dead (or retired, which the model never
            // is), and then said so, to be counted.
            assert_eq!(
                not_shared,
                dead.then_some(crate::stats::CloseReason::ServerClose)
            );
        } else {
            self.st.protocol = Protocol::Http1;
            let idle = Idle::new(IdleRecord {
                id: conn_id,
                conn: FakeH1 { closed },
                created: now,
                idle_since: now,
                expires_at: self.expiry(now),
                requests: 0,
            });
            let surplus = self.st.offer_idle(idle, self.limits());
            drop(surplus);
        }
        self.service();
    }

    fn invariants(&mut self) -> Result<(), String> {
        let limits = self.limits();
        self.st.check(limits)?;
        // A forgotten origin stays empty: no dial, no waiter, nothing at
        // rest (so the pool may drop it from its map while one is lent).
        let st = &self.st;
        if self.forgotten
            && (st.slots > 0 || st.live_waiters > 0 || !st.idle.is_empty() || !st.shared.is_empty())
        {
            return Err(format!(
                "a forgotten origin gained something: slots {} waiters {} idle {} shared {}",
                st.slots,
                st.live_waiters,
                st.idle.len(),
                st.shared.len()
            ));
        }
        let open = self.budget.open.load(Ordering::SeqCst);
        if open > self.budget.limit {
            return Err(format!("budget {open} > total limit {}", self.budget.limit));
        }
        if open != self.st.slots + self.external {
            return Err(format!(
                "budget {open} != slots {} + other origins {}",
                self.st.slots, self.external
            ));
        }
        if self.st.dialing != self.dials.len() {
            return Err(format!(
                "dialing {} != dials in flight {}",
                self.st.dialing,
                self.dials.len()
            ));
        }
        if self.st.slots != self.dials.len() + self.sockets.len() {
            return Err(format!(
                "slots {} != dials {} + sockets {} (a slot without an owner)",
                self.st.slots,
                self.dials.len(),
                self.sockets.len()
            ));
        }
        // Every waiter marked `dialing` has a dial in flight that will
        // answer it (a connection goes to the oldest, so any dial will do).
        let flagged = self
            .st
            .waiters
            .iter()
            .filter(|w| w.dialing && !w.tx.is_closed())
            .count();
        if flagged > self.st.dialing {
            if self.setup.strict {
                return Err(format!(
                    "{flagged} live waiters are marked dialing but only {} dials are in flight",
                    self.st.dialing
                ));
            }
            if !self.tainted {
                self.log
                    .push("  (known bug reached: stale dialing flag)".into());
            }
            self.tainted = true;
        }
        if self.tainted {
            return Ok(());
        }
        // No starvation.
        let undialed = self
            .st
            .waiters
            .iter()
            .any(|w| !w.dialing && !w.tx.is_closed());
        let slot_free = self.st.slots < limits.per_host && open < self.budget.limit;
        let coming = match self.st.protocol {
            Protocol::Http1 => false,
            // One dial in flight will serve every waiter; a shared
            // connection with a free stream will be handed out by service.
            Protocol::Unknown | Protocol::Http2 => {
                self.st.dialing > 0
                    || self.st.shared.iter().any(|s| {
                        // A closed one counts too: `should_coalesce`
                        // counts its spare streams until its driver
                        // ends, and that end calls `service()`.
                        s.draining.is_none() && s.in_flight < s.sender.max
                    })
                    // A closed connection whose driver has not ended yet:
                    // that end calls `slot_freed` -> `service()`.
                    || self.sockets.values().any(|f| f.load(Ordering::SeqCst))
            }
        };
        if undialed && slot_free && !coming && self.st.starving && self.registered == 0 {
            // Known bug: `service()` set `starving`, but only `checkout`
            // registers an origin for `wake_starving`.
            if self.setup.strict {
                return Err(format!(
                    "starvation: total capacity came back but the origin was never registered \
                     for wake_starving (starving set by service(); slots {}/{}, budget {}/{})",
                    self.st.slots, limits.per_host, open, self.budget.limit
                ));
            }
            self.log
                .push("  (known bug reached: unregistered starving origin)".into());
            self.tainted = true;
            return Ok(());
        }
        if undialed && slot_free && !coming {
            return Err(format!(
                "starvation: a live waiter has no dial while a slot is free \
                 (slots {}/{}, budget {}/{}, dialing {}, starving {}, registered {})",
                self.st.slots,
                limits.per_host,
                open,
                self.budget.limit,
                self.st.dialing,
                self.st.starving,
                self.registered
            ));
        }
        Ok(())
    }

    /// Cancels, releases and closes everything; then nothing may be left.
    fn wind_down(&mut self) -> Result<(), String> {
        self.log.push("-- wind down --".into());
        for _ in 0..1000 {
            for mut req in std::mem::take(&mut self.waiting) {
                self.waiter_guard_drop(&mut req.rx);
            }
            for a in std::mem::take(&mut self.answered) {
                match a.result {
                    Ok(Handoff::Exclusive(idle)) => drop(idle),
                    Ok(Handoff::Stream { conn_id, .. }) => self.leases_h2.push(conn_id),
                    Ok(Handoff::AskAgain) | Err(_) => {}
                }
            }
            self.leases_h1.clear();
            for conn_id in std::mem::take(&mut self.leases_h2) {
                self.st.release_stream(conn_id, self.now);
            }
            while let Some(dial) = self.dials.pop() {
                self.slot_freed(dial.conn_id, false);
                self.st.dial_done();
                if dial.dedicated.is_none() {
                    self.st
                        .fail_waiter(dial.waiter_id, Error::new(Kind::Connect, "refused"));
                }
                self.service();
            }
            for flag in self.sockets.values() {
                flag.store(true, Ordering::SeqCst);
            }
            let ids: Vec<u64> = self.sockets.keys().copied().collect();
            for id in ids {
                self.sockets.remove(&id);
                self.slot_freed(id, false);
            }
            while self.external > 0 {
                self.external -= 1;
                self.budget.release();
                self.wake_starving();
            }
            self.collect()?;
            self.invariants()?;
            if self.waiting.is_empty()
                && self.answered.is_empty()
                && self.dials.is_empty()
                && self.sockets.is_empty()
                && self.leases_h2.is_empty()
            {
                break;
            }
        }
        let open = self.budget.open.load(Ordering::SeqCst);
        if self.st.slots != 0 || self.st.dialing != 0 || open != 0 {
            return Err(format!(
                "leak after closing everything: slots {}, dialing {}, budget {open}",
                self.st.slots, self.st.dialing
            ));
        }
        if self.st.live_waiters != 0 || !self.st.idle.is_empty() || !self.st.shared.is_empty() {
            return Err(format!(
                "left over: live_waiters {}, idle {}, shared {}",
                self.st.live_waiters,
                self.st.idle.len(),
                self.st.shared.len()
            ));
        }
        let _ = self.start;
        Ok(())
    }
}

fn run(setup: Setup, ops: &[Op]) -> Result<(), String> {
    let mut m = Model::new(setup);
    let result = ops
        .iter()
        .try_for_each(|op| m.step(*op))
        .and_then(|()| m.wind_down());
    result.map_err(|e| {
        let tail: Vec<&String> = m.log.iter().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
        format!("{e}\nsetup: {setup:?}\nlast steps:\n{}", tail.join("\n"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_shrink_iters: 20_000,
        .. ProptestConfig::default()
    })]

    /// Every invariant holds after every step of a random history, without
    /// other origins racing for the freed total slot. (Starvation is not
    /// checked past the known stale-dialing-flag bug; the strict variant
    /// below checks it.)
    #[test]
    fn origin_state_model(setup in setup(), ops in prop::collection::vec(op().prop_map(no_race), 0..120)) {
        run(setup, &ops).map_err(TestCaseError::fail)?;
    }

    /// As above, strictly: no known bug tolerated.
    #[test]
    fn origin_state_model_strict(setup in setup(), ops in prop::collection::vec(op().prop_map(no_race), 0..120)) {
        run(Setup { strict: true, ..setup }, &ops).map_err(TestCaseError::fail)?;
    }

    /// The same, with another origin allowed to take a total slot between
    /// a `fetch_sub` and this origin's `service()` (as threads can).
    #[test]
    fn origin_state_model_with_budget_races(setup in setup(), ops in prop::collection::vec(op(), 0..120)) {
        run(Setup { strict: true, ..setup }, &ops).map_err(TestCaseError::fail)?;
    }
}

fn no_race(op: Op) -> Op {
    match op {
        Op::DriverEnd(i, _) => Op::DriverEnd(i, false),
        other => other,
    }
}

fn h1_setup(per_host: usize, total: usize) -> Setup {
    Setup {
        limits: Limits {
            per_host,
            max_idle: per_host,
            max_pending: 8,
        },
        total,
        h2: false,
        h2_streams: 1,
        idle_ms: 1000,
        strict_dial_fail: false,
        strict: true,
    }
}

/// Fixed histories for the scenarios the issue names, so a regression is
/// reported by name.
#[test]
fn acquire_release_reuses_and_closes_cleanly() {
    use Op::*;
    let i0 = Ix(0);
    run(
        h1_setup(2, 4),
        &[
            Acquire,
            DialOk(i0),
            Wake(i0),
            Release(i0),
            Acquire,
            Release(i0),
        ],
    )
    .unwrap();
}

#[test]
fn fifo_waiters_get_released_connections_in_order() {
    use Op::*;
    let i0 = Ix(0);
    let mut m = Model::new(h1_setup(1, 4));
    for op in [Acquire, DialOk(i0), Wake(i0), Acquire, Acquire, Acquire] {
        m.step(op).unwrap();
    }
    assert_eq!(m.waiting.len(), 3);
    m.step(Release(i0)).unwrap();
    assert_eq!(m.answered.len(), 1);
    assert_eq!(m.answered[0].waiter_id, 2, "the oldest waiter is served");
    m.wind_down().unwrap();
}

/// A dial dropped unrun (its runtime shutting down) sends its waiters back
/// to ask again. Newcomers may fill the queue to `max_pending` before they
/// do: the waiters asking again were admitted already, so they keep their
/// places ahead of the newcomers instead of getting `PoolFull`.
#[test]
fn waiters_asking_again_keep_their_place_and_are_not_refused() {
    use Op::*;
    let i0 = Ix(0);
    let mut setup = h1_setup(1, 4);
    setup.limits.max_pending = 1;
    let mut m = Model::new(setup);
    // Waiter 1 with the origin's only dial; waiter 2 queued behind it.
    for op in [Acquire, Acquire, DialNeverRan(i0)] {
        m.step(op).unwrap();
    }
    let sent_back: Vec<u64> = m.answered.iter().map(|a| a.waiter_id).collect();
    assert_eq!(sent_back, [1, 2], "both sent back to ask again");
    // Newcomers: 3 gets the freed slot's dial, 4 fills the queue.
    for op in [Acquire, Acquire] {
        m.step(op).unwrap();
    }
    assert_eq!(m.waiting.len(), 2);
    assert_eq!(
        m.acquire_as(None),
        Some(1),
        "the queue is full for a newcomer"
    );
    // 1 and 2 ask again: admitted, at their old places.
    m.step(Wake(i0)).unwrap();
    m.step(Wake(i0)).unwrap();
    assert_eq!(m.waiting.len(), 4);
    // The one connection coming goes to waiter 1, the oldest.
    m.step(DialOk(i0)).unwrap();
    let served: Vec<u64> = m.answered.iter().map(|a| a.waiter_id).collect();
    assert_eq!(served, [1]);
    m.wind_down().unwrap();
}

/// `dial_covers` (is a connection on its way to this waiter, so that
/// `pool_timeout` must not cut its wait short?) counts only dials started
/// for waiters: a dedicated retry dial serves its own request, and a
/// waiter queued behind it gets `PoolTimeout` on time.
#[test]
fn a_dedicated_dial_does_not_cover_a_waiter() {
    use Op::*;
    let i0 = Ix(0);
    let mut m = Model::new(h1_setup(2, 4));
    // One connection busy; a dedicated retry dial takes the second slot.
    for op in [Acquire, DialOk(i0), Wake(i0), Dedicated] {
        m.step(op).unwrap();
    }
    assert_eq!(m.st.dialing, 1);
    m.step(Acquire).unwrap();
    let waiter = m.waiting.last().expect("queued behind the limit").waiter_id;
    assert!(!m.st.dial_covers(waiter), "nothing is dialed for it");
    // A waiter that has its own dial is covered.
    let mut m = Model::new(h1_setup(2, 4));
    m.step(Acquire).unwrap();
    let first = m.waiting[0].waiter_id;
    assert!(m.st.dial_covers(first));
    m.wind_down().unwrap();
}

#[test]
fn cancelled_waiter_with_a_dial_does_not_leak_the_connection() {
    use Op::*;
    let i0 = Ix(0);
    run(
        h1_setup(1, 1),
        &[
            Acquire,
            CancelWaiting(i0),
            DialOk(i0),
            Acquire,
            Wake(i0),
            Discard(i0),
            DriverEnd(i0, false),
        ],
    )
    .unwrap();
}

#[test]
fn dial_failure_frees_the_slot_and_answers_the_waiter() {
    use Op::*;
    let i0 = Ix(0);
    let mut m = Model::new(h1_setup(1, 1));
    m.step(Acquire).unwrap();
    m.step(Acquire).unwrap();
    m.step(DialFail(i0)).unwrap();
    // The first waiter got the error; the second got its own dial.
    assert_eq!(m.answered.len(), 1);
    assert!(m.answered[0].result.is_err());
    assert_eq!(m.dials.len(), 1);
    m.wind_down().unwrap();
}

/// Library bug (reported): `connector.dial` drops the `SlotGuard` (so
/// `Origin::slot_freed` runs: `slots -= 1`, `service()`, `publish()`)
/// *before* `dial_for` calls `dial_done()`. Between the two critical
/// sections the state has `dialing > slots` (invariant 2 broken), which any
/// concurrent `Client::stats()` can observe: `slots - dialing` in
/// `Origin::publish` / `Origin::snapshot` panicked in debug builds (now
/// masked with `saturating_sub`), and `connecting` is reported while the
/// slot is already gone.
#[test]
fn dial_failure_never_shows_more_dials_than_slots() {
    let mut setup = h1_setup(2, 4);
    setup.strict_dial_fail = true;
    let i0 = Ix(0);
    run(setup, &[Op::Acquire, Op::DialFail(i0)]).unwrap();
}

/// Library bug (reported): a total slot freed by this origin can be taken
/// by another origin before this origin's `service()`; `may_dial` then sets
/// `starving` but nothing registers the origin in the budget's starving
/// list (only `checkout` does, via `relieve_total`), so when the other
/// origin frees its slot, `wake_starving` does not look here: the waiter
/// sits with a free slot until `pool_timeout` or some unrelated event.
#[test]
fn waiter_is_woken_when_total_capacity_returns_after_a_race() {
    use Op::*;
    let i0 = Ix(0);
    // One connection (limit 2 per host, 2 in total); a second request
    // waits... for the per-host slot held by a dial that fails while
    // another origin steals the freed total slot, then gives it back.
    let mut m = Model::new(h1_setup(1, 1));
    m.step(Acquire).unwrap(); // waiter 1 dials
    m.step(DialOk(i0)).unwrap(); // connection 1 idle -> waiter 1
    m.step(Wake(i0)).unwrap(); // leased
    m.step(Acquire).unwrap(); // waiter 2 waits (per-host full, not starving)
    m.step(Discard(i0)).unwrap(); // connection closes
    m.step(DriverEnd(i0, true)).unwrap(); // slot freed, another origin races
    m.step(ExternalGive).unwrap(); // ...and gives it back
}

/// Library bug (reported): connections go to the oldest waiter, not to the
/// waiter a dial was started for, but the `dialing` flag stays on the
/// waiter. Waiters 1 and 2 each start a dial; dial 2 lands first and serves
/// waiter 1; dial 1 then fails: `fail_waiter(1)` finds nobody, `dialing`
/// drops to 0, yet waiter 2 is still marked `dialing`, so `service()` never
/// dials for it and `acquire` (live 1 > dialing 0) queues newcomers behind
/// it without dials: they wait for `pool_timeout` with a slot free.
#[test]
fn failed_dial_for_a_served_waiter_leaves_the_next_waiter_without_a_dial() {
    use Op::*;
    run(
        h1_setup(2, 3),
        &[Acquire, Acquire, DialOk(Ix(1)), DialFail(Ix(0)), Acquire],
    )
    .unwrap();
}

/// Library bug (reported), without any race: an HTTPS origin whose first
/// dial is in flight queues two more requests; another origin uses the
/// rest of the total budget; the dial lands as HTTP/2 with one stream, so
/// `add_connection`'s `service()` wants a second connection, finds the
/// budget exhausted and sets `starving`, but nothing puts the origin on the
/// budget's starving list. When the other origin frees its slot,
/// `wake_starving` finds an empty list: the waiter waits for
/// `pool_timeout` although a slot and total capacity are free.
#[test]
fn origin_starving_after_service_is_woken_when_total_capacity_returns() {
    use Op::*;
    let setup = Setup {
        limits: Limits {
            per_host: 2,
            max_idle: 2,
            max_pending: 4,
        },
        total: 2,
        h2: true,
        h2_streams: 1,
        idle_ms: 1000,
        strict_dial_fail: false,
        strict: true,
    };
    run(
        setup,
        &[
            Acquire,
            Acquire,
            ExternalTake,
            Acquire,
            DialOk(Ix(0)),
            ExternalGive,
        ],
    )
    .unwrap();
}

/// Regression (found by `origin_state_model`, fixed with a one-line guard
/// in `OriginState::offer_idle`): a connection handed to a waiter whose
/// request was dropped before it looked at it goes back through
/// `WaiterGuard::drop` -> `offer_idle`. If its socket closed meanwhile and
/// its driver already freed the slot, it used to be pooled as a zombie
/// (idle + shared + dialing > slots, counted against `max_idle`, and handed
/// to the next waiter as a dead connection).
#[test]
fn dead_connection_returned_by_a_cancelled_waiter_is_not_pooled() {
    use Op::*;
    let mut m = Model::new(h1_setup(2, 2));
    for op in [Acquire, DialOk(Ix(0)), Acquire, Wake(Ix(0)), DialOk(Ix(0))] {
        m.step(op).unwrap();
    }
    // Waiter 2 holds connection #2 unread; it dies and its driver ends.
    assert_eq!(m.answered.len(), 1);
    let conn = m.sockets.keys().copied().max().unwrap();
    m.sockets[&conn].store(true, Ordering::SeqCst);
    let i = m.sockets.keys().position(|k| *k == conn).unwrap();
    m.step(DriverEnd(Ix(i), false)).unwrap();
    // Now waiter 2's request is dropped: the dead connection must not be
    // pooled.
    m.step(CancelAnswered(Ix(0))).unwrap();
    assert!(m.st.idle.is_empty());
    m.wind_down().unwrap();
}

/// Regression (found by `tests/core.rs`,
/// `a_body_read_after_the_last_client_dropped_closes_its_connection`): a
/// connection returned after its pool was dropped came to rest in the
/// origin's idle list, where nothing would ever close it (its driver task
/// holds the origin). `Drop for PoolInner` now retires every origin, and a
/// retired origin hands back whatever is offered, to be closed.
#[test]
fn a_connection_returned_to_a_retired_origin_is_not_pooled() {
    use Op::*;
    let mut m = Model::new(h1_setup(2, 4));
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap();
    m.step(Wake(Ix(0))).unwrap();
    assert_eq!(m.leases_h1.len(), 1);
    m.st.retired = true;
    m.step(Release(Ix(0))).unwrap();
    assert_eq!(
        m.st.idle.len(),
        0,
        "a connection came to rest in a retired origin"
    );
    m.wind_down().unwrap();
}

/// Regression (found by `tests/property.rs` over HTTP/2 and reproduced
/// here; fixed with a one-line guard in `OriginState::add_shared`): an
/// HTTP/2 connection that dies before `add_connection` takes the lock (its
/// driver already freed the slot) used to be added to `shared` for good: a
/// zombie that `should_coalesce` counted as spare streams, so later
/// requests queued without a dial and failed with `PoolTimeout`.
#[test]
fn http2_connection_dead_on_arrival_is_not_shared() {
    use Op::*;
    let mut m = Model::new(h2_setup(false));
    m.step(Acquire).unwrap();
    m.step(DialOkDead(Ix(0))).unwrap();
    assert!(m.st.shared.is_empty(), "a dead connection was shared");
    m.wind_down().unwrap();
}

/// Regression (found by `freshpool soak --http2` under CPU load: open
/// descriptors grew from 19 to 45 after a fault): once every HTTP/2
/// connection of an origin was gone (all reset at once), `should_coalesce`
/// assumed one stream per connection and dialed once per waiter, 32
/// connections where the server's 8-stream limit needed 4. The limit the
/// last connection announced now stands in until a new one lands.
#[test]
fn http2_reconnect_after_every_connection_died_dials_by_the_stream_limit() {
    use Op::*;
    let mut m = Model::new(h2_setup_for_8());
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 4 streams per connection
    m.step(Wake(Ix(0))).unwrap();
    m.step(ReleaseStream(Ix(0))).unwrap();
    m.step(PeerClose(Ix(0))).unwrap();
    m.step(DriverEnd(Ix(0), false)).unwrap();
    assert!(m.st.shared.is_empty() && m.dials.is_empty());
    for _ in 0..8 {
        m.step(Acquire).unwrap();
    }
    // Any capacity change (a stream released, a slot freed) runs service().
    m.step(Service).unwrap();
    assert_eq!(m.dials.len(), 2, "8 waiters at 4 streams per connection");
    m.step(DialOk(Ix(0))).unwrap();
    m.step(DialOk(Ix(0))).unwrap();
    assert_eq!(m.answered.len(), 8, "the two connections serve all 8");
    m.wind_down().unwrap();
}

/// A server that lowers its stream limit (RFC 9113 section 6.5.2; the
/// pool follows the live limit since session 16). What one new dial
/// carries was read from the live limits only: lowered to 1, the pool
/// dialed once per waiter at the next `service()`. New connections
/// announce the server's own limit (4 here): 8 waiters need 2 dials.
#[test]
fn a_lowered_stream_limit_does_not_make_the_pool_dial_per_waiter() {
    use Op::*;
    let mut m = Model::new(h2_setup_for_8());
    m.step(Acquire).unwrap();
    m.step(DialOk(Ix(0))).unwrap(); // HTTP/2, 4 streams per connection
    m.step(Wake(Ix(0))).unwrap(); // one stream in flight
    m.st.shared[0].sender.max = 1; // the server lowers its limit
    for _ in 0..8 {
        m.step(Acquire).unwrap();
    }
    m.step(Service).unwrap();
    assert_eq!(
        m.dials.len(),
        2,
        "8 waiters at 4 streams per new connection"
    );
    m.step(DialOk(Ix(0))).unwrap();
    m.step(DialOk(Ix(0))).unwrap();
    assert_eq!(m.answered.len(), 8, "the two new connections serve all 8");
    m.wind_down().unwrap();
}

/// Waiters that rode on one HTTP/2 dial all get its error when it fails
/// and nothing else can serve them (`fail_dial`); before the protocol is
/// known (HTTPS before ALPN) they get dials of their own instead.
#[test]
fn a_failed_shared_dial_answers_its_riders_or_gives_them_dials() {
    use Op::*;
    for http2_only in [true, false] {
        let mut m = Model::new(Setup {
            limits: Limits {
                per_host: 4,
                max_idle: 4,
                max_pending: 8,
            },
            total: 4,
            ..h2_setup(true)
        });
        m.st.http2_only = http2_only;
        for _ in 0..3 {
            m.step(Acquire).unwrap();
        }
        assert_eq!(m.dials.len(), 1, "one dial for all three");
        m.step(DialFail(Ix(0))).unwrap();
        if http2_only {
            assert_eq!(m.answered.len(), 3, "all three get its error");
            assert!(m.answered.iter().all(|a| a.result.is_err()));
            assert!(m.dials.is_empty());
        } else {
            assert_eq!(m.answered.len(), 1, "only its own waiter");
            assert_eq!(m.dials.len(), 2, "a dial each for the other two");
        }
        m.wind_down().unwrap();
    }
    // One connection per host: the other two no longer ride on one dial,
    // so the one behind the second's dial is not covered by it (its
    // `pool_timeout` must not keep moving, one handshake timeout after
    // another).
    let mut m = Model::new(Setup {
        limits: Limits {
            per_host: 1,
            max_idle: 1,
            max_pending: 8,
        },
        total: 4,
        ..h2_setup(true)
    });
    for _ in 0..3 {
        m.step(Acquire).unwrap();
    }
    m.step(DialFail(Ix(0))).unwrap();
    assert_eq!(m.dials.len(), 1, "one slot: one dial, for the second");
    let (second, third) = (m.dials[0].waiter_id, m.dials[0].waiter_id + 1);
    assert!(m.st.dial_covers(second));
    assert!(!m.st.dial_covers(third));
    m.wind_down().unwrap();
}

/// `h2_setup` with room for 8 connections (and 16 queued requests).
fn h2_setup_for_8() -> Setup {
    Setup {
        limits: Limits {
            per_host: 8,
            max_idle: 8,
            max_pending: 16,
        },
        total: 8,
        ..h2_setup(true)
    }
}

fn h2_setup(strict: bool) -> Setup {
    Setup {
        limits: Limits {
            per_host: 1,
            max_idle: 1,
            max_pending: 4,
        },
        total: 4,
        h2: true,
        h2_streams: 4,
        idle_ms: 1000,
        strict_dial_fail: false,
        strict,
    }
}

/// Library bug (reported; same root cause as
/// `failed_dial_for_a_served_waiter_leaves_the_next_waiter_without_a_dial`):
/// the waiter whose dial delivered a connection that was already dead keeps
/// its `dialing` flag with no dial in flight, so `service()` never dials
/// for it, and `acquire` (live 1 > dialing 0) queues every newcomer behind
/// it without a dial. Under continuous load (always one waiter) nothing
/// calls `service()` again: every request ends in `PoolTimeout`.
#[test]
fn dead_on_arrival_connection_leaves_its_waiter_without_a_dial() {
    use Op::*;
    for setup in [h2_setup(true), h1_setup(1, 4)] {
        let mut m = Model::new(Setup {
            strict: true,
            ..setup
        });
        m.step(Acquire).unwrap();
        m.step(DialOkDead(Ix(0))).unwrap();
        m.step(Acquire).unwrap();
        assert_eq!(m.dials.len(), 1, "somebody must be dialing: {setup:?}");
    }
}

/// Bounded "arbitrary bytes" runs of the crate-private parsers that the
/// cargo-fuzz targets cannot reach without a public hook (see
/// RELIABILITY.md): the HTTP/2 frame reader and the pool key.
mod parsers {
    use proptest::prelude::*;

    use crate::connect::preface::{FrameReader, Preface};
    use crate::pool::key::{KeyParts, PoolKey};

    /// The whole first frame at once, by the letter of RFC 9113 §3.4/§6.5.
    #[allow(clippy::manual_is_multiple_of)] // rust-version 1.80
    fn reference(bytes: &[u8]) -> Option<Preface> {
        if bytes.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes[3] != 0x4 || bytes[4] & 0x1 != 0 || len % 6 != 0 || len > 6 * 64 {
            return Some(Preface::Invalid);
        }
        if bytes.len() < 9 + len {
            return None;
        }
        let max = bytes[9..9 + len]
            .chunks_exact(6)
            .filter(|e| u16::from_be_bytes([e[0], e[1]]) == 0x3)
            .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
            .next_back();
        Some(Preface::Settings(max))
    }

    /// Mostly plausible SETTINGS frames, sometimes garbage.
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            (
                prop::collection::vec((0u16..8, any::<u32>()), 0..10),
                prop::bool::weighted(0.1),
                prop::collection::vec(any::<u8>(), 0..16),
            )
                .prop_map(|(entries, bad_type, tail)| {
                    let len = entries.len() * 6;
                    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8];
                    f.push(if bad_type { 0x1 } else { 0x4 });
                    f.push(0);
                    f.extend_from_slice(&0u32.to_be_bytes());
                    for (id, v) in entries {
                        f.extend_from_slice(&id.to_be_bytes());
                        f.extend_from_slice(&v.to_be_bytes());
                    }
                    f.extend(tail);
                    f
                }),
        ]
    }

    /// Regression (found by `pool_key_view_never_panics`, fixed with a
    /// one-line change in `PoolKey::view`): `http://[]` parses, its host
    /// `[]` passed the emptiness check before the brackets were trimmed,
    /// and the key got an empty host.
    /// And (found by the same property test): `http` parses `[0]-:0` with
    /// port 0 while the key read port 80; junk after `]` is now an error.
    #[test]
    fn empty_bracketed_host_is_an_invalid_uri() {
        for s in ["http://[]", "https://[]:443/x", "HTTP://[0]-:0"] {
            let uri: http::Uri = s.parse().unwrap();
            let err = PoolKey::view(&uri, 1).unwrap_err();
            assert_eq!(err.kind(), crate::Kind::InvalidUri, "{s}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        /// However the bytes are split into reads, the reader never panics,
        /// decides on the first frame exactly what the whole-frame reference
        /// decides, and reports the same later SETTINGS frames as when fed
        /// everything at once.
        #[test]
        fn frame_reader_is_chunking_invariant(frames in prop::collection::vec(frame(), 1..4), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
            let bytes = frames.concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                reader.feed(&bytes[w[0]..w[1]], |seen| got.push(seen));
            }
            prop_assert_eq!(got.first().copied(), reference(&bytes));
            let mut whole = Vec::new();
            FrameReader::default().feed(&bytes, |seen| whole.push(seen));
            prop_assert_eq!(got, whole);
        }

        /// Any URI that `http` parses gives a key or a typed error; hosts
        /// compare case-insensitively; default ports are filled in.
        #[test]
        fn pool_key_view_never_panics(s in "(HTTP|https?|ftp|)(://)?[a-zA-Z0-9.:@\\[\\]_%-]{0,30}(/[ -~]{0,10})?") {
            let Ok(uri) = s.parse::<http::Uri>() else { return Ok(()) };
            match PoolKey::view(&uri, 7) {
                Ok(view) => {
                    prop_assert!(!view.host.is_empty());
                    prop_assert!(matches!(uri.scheme_str(), Some("http") | Some("https")));
                    let expected = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
                    prop_assert_eq!(view.port, expected);
                    let upper = s.to_ascii_uppercase().replacen("HTTPS", "https", 1).replacen("HTTP", "http", 1);
                    if let Ok(u2) = upper.parse::<http::Uri>() {
                        if let Ok(v2) = PoolKey::view(&u2, 7) {
                            prop_assert!(
                                (&view as &dyn KeyParts) == (&v2 as &dyn KeyParts),
                                "{} vs {}", s, upper
                            );
                        }
                    }
                }
                Err(e) => prop_assert_eq!(e.kind(), crate::Kind::InvalidUri),
            }
        }
    }
}
