//! What a random history is made of: the steps (`Op`) proptest draws, and
//! the world (`Setup`) a case runs in.

use super::*;

/// Picks one of the items present when the step runs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ix(pub(super) usize);

impl Ix {
    pub(super) fn index(self, len: usize) -> usize {
        self.0 % len
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
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

pub(super) fn op() -> impl Strategy<Value = Op> {
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
pub(super) struct Setup {
    pub(super) limits: Limits,
    pub(super) total: usize,
    /// `false`: HTTP/1 origin; `true`: HTTPS that turns out to be HTTP/2.
    pub(super) h2: bool,
    pub(super) h2_streams: u32,
    /// Idle timeout, in model milliseconds.
    pub(super) idle_ms: u64,
    /// Check invariant 2 (`idle + shared + dialing <= slots`) also between
    /// the two critical sections of a failed dial (see
    /// `dial_failure_never_shows_more_dials_than_slots`).
    pub(super) strict_dial_fail: bool,
    /// Report the two known starvation bugs (a waiter marked `dialing` with
    /// no dial in flight for it; an origin marked `starving` by `service()`
    /// that `wake_starving` never visits). When false, a case that reaches
    /// either state stops checking starvation (every other invariant is
    /// still checked).
    pub(super) strict: bool,
}

pub(super) fn setup() -> impl Strategy<Value = Setup> {
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
