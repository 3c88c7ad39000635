//! What the per-origin state machine holds and hands out: idle and shared
//! connections, waiters and their hand-offs, and the limits it obeys.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::super::Stamp;
use crate::error::Error;
use crate::stats::CloseReason;

/// A connection taken while it rested (see `take_resting`): held only to
/// be dropped, which closes it, after the origin's lock is released.
#[allow(dead_code)]
pub(crate) enum Resting<C, S> {
    Exclusive(Idle<C>),
    Shared(Shared<S>),
}

/// What the pool still held of a connection whose socket went
/// (`slot_freed`).
pub(crate) enum Forgotten<C> {
    /// Resting in the idle list: its record, to judge why it went.
    Idle(Idle<C>),
    /// A shared (HTTP/2) connection, with the pool's reason if it was
    /// draining it (its close is counted for that reason, not as the
    /// server's: a connection drained as `Unresponsive` or past its
    /// lifetime ends as its last stream does, often by its socket's end).
    Shared(Option<CloseReason>),
}

/// What a waiter is eventually handed.
pub(crate) enum Handoff<C, S> {
    /// An HTTP/1 connection, exclusively.
    Exclusive(Idle<C>),
    /// A stream on a shared (HTTP/2) connection; `first`: the first it
    /// carries (not a reuse).
    Stream {
        conn_id: u64,
        sender: S,
        first: bool,
    },
    /// Nothing: check out again (the dial this waiter counted on was
    /// dropped unrun with its runtime; see `dial_never_ran`). Sent, not
    /// signalled by dropping the sender, so that the sender counts the
    /// waiter out of `live_waiters` as for any answer (invariant 5).
    AskAgain,
}

/// An HTTP/1 connection at rest, with what we know of its freshness.
///
/// Boxed once when the connection is made: between checkouts the record
/// moves (idle list → `Acquire` → lease → back) as a pointer instead of
/// ~140 bytes each time; profiles showed ~20 such copies per
/// checkout+return.
pub(crate) struct Idle<C>(Box<IdleRecord<C>>);

impl<C> Idle<C> {
    pub(crate) fn new(record: IdleRecord<C>) -> Idle<C> {
        Idle(Box::new(record))
    }
}

impl<C> std::ops::Deref for Idle<C> {
    type Target = IdleRecord<C>;
    fn deref(&self) -> &IdleRecord<C> {
        &self.0
    }
}

impl<C> std::ops::DerefMut for Idle<C> {
    fn deref_mut(&mut self) -> &mut IdleRecord<C> {
        &mut self.0
    }
}

/// The fields of an [`Idle`] connection.
///
/// Layout (`repr(C)`, 64-byte aligned): the record is boxed once per
/// connection, and everything a checkout and its return read or write
/// lies in its first cache line: the times and the count, then the
/// sender and the origin's reference at the start of `conn` (`H1Conn`:
/// 24 + 8 bytes at offset 32). Only
/// the freshness peek (`conn.socket`, after `validate_after_idle`), a
/// resolver change (`conn.peer`) and the id (eviction, removal) reach the
/// second line. With the connection first, the expiry and the times
/// spilled into the second line: one more cache miss per checkout and one
/// per return of an origin not in cache (cachegrind, BENCHMARKS.md).
#[repr(C, align(64))]
pub(crate) struct IdleRecord<C> {
    /// From this instant on it must not be reused (idle timeout,
    /// keep-alive hint, lifetime: the earliest of them; `Stamp::NEVER`:
    /// none applies).
    pub expires_at: Stamp,
    /// When it was last returned; equals `created` for a new connection.
    pub idle_since: Stamp,
    /// Requests it has carried (0: never used, see [`fresh`](Self::fresh)).
    pub requests: u64,
    pub created: Stamp,
    pub conn: C,
    pub id: u64,
}

impl<C> IdleRecord<C> {
    /// Whether the connection never carried a request (a dial that has not
    /// served yet). Derived, not stored: one field fewer to keep in step.
    pub(crate) fn fresh(&self) -> bool {
        self.requests == 0
    }

    /// Whether it rested across the freeze detected at `freeze_at` (ns on
    /// the budget's clock; 0: none yet). Strictly before: a connection
    /// returned at the freeze's instant (the coarse clock reads the beat
    /// that detected it) came back after the process resumed.
    pub(crate) fn rested_across(&self, freeze_at: u64) -> bool {
        freeze_at != 0 && self.idle_since.nanos() < freeze_at
    }
}

/// A multiplexed (HTTP/2) connection and its stream accounting.
pub(crate) struct Shared<S> {
    pub id: u64,
    pub sender: S,
    pub in_flight: u32,
    pub created: Stamp,
    /// Why the connection takes no new streams (DNS moved away, freeze,
    /// lifetime, idle timeout): it closes for that reason once its last
    /// stream ends. A GOAWAY shows as a closed sender instead.
    pub draining: Option<CloseReason>,
    /// Streams it has carried (taken and not given back untouched): the
    /// first is not reuse, later ones are. A count, not a flag: a stream
    /// given back by a waiter that left must not make the connection look
    /// unused when others ran on it meanwhile.
    pub streams: u64,
    /// When its last stream ended (or it landed): `idle_timeout` closes
    /// it once it has carried none that long, as it does HTTP/1 ones.
    pub idle_since: Stamp,
    /// Its read count when a caller last gave up on a stream that had
    /// read nothing (`Origin::abandon_stream`): a second such abandonment
    /// with no read between makes it suspect.
    pub quiet_abandon: Option<u32>,
    /// The pool's hold on the connection (`connect::PoolHold`): dropped
    /// with the record, it lets the connection's driver close it (shut
    /// after a grace). Here, not in the sender that every stream's
    /// checkout clones. (None in the state's model tests.)
    pub hold: Option<Arc<crate::connect::PoolHold>>,
}

impl<S: Channel> Shared<S> {
    /// Whether it may carry new streams: not draining, and its sender
    /// still open (hyper closes it at a GOAWAY while the streams in flight
    /// finish, and the connection keeps its slot until they do).
    pub(super) fn takes_streams(&self) -> bool {
        self.draining.is_none() && !self.sender.is_closed()
    }

    /// Takes no new streams from now on, for `why` (the first reason
    /// given stays).
    pub(crate) fn drain(&mut self, why: CloseReason) {
        self.draining.get_or_insert(why);
    }
}

/// Whether and how a channel can take more work.
pub(crate) trait Channel {
    fn is_closed(&self) -> bool;
    /// Current stream limit for shared connections.
    fn max_streams(&self) -> u32;
}

pub(crate) struct Waiter<C, S> {
    pub id: u64,
    pub tx: oneshot::Sender<Result<Handoff<C, S>, Error>>,
    /// A dial is running on this waiter's behalf (its error goes here).
    pub dialing: bool,
}

/// Where a waiter receives its connection, stream, or dial error.
pub(crate) type HandoffReceiver<C, S> = oneshot::Receiver<Result<Handoff<C, S>, Error>>;

/// What the protocol of this origin turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Not connected yet; may multiplex (HTTPS with ALPN h2 offered).
    Unknown,
    Http1,
    Http2,
}

/// The outcome of [`OriginState::acquire`].
pub(crate) enum Acquire<C, S> {
    Idle(Idle<C>),
    Stream {
        conn_id: u64,
        sender: S,
        first: bool,
        /// When the connection's last stream ended (or it landed).
        idle_since: Stamp,
    },
    /// Enqueued; `dial` says the caller must start a dial for `waiter_id`.
    Wait {
        waiter_id: u64,
        rx: HandoffReceiver<C, S>,
        dial: bool,
    },
    /// `max_pending` waiters already queue here.
    Full {
        waiting: usize,
        /// Beyond the riders on a new origin's first dial (protocol not
        /// yet known), as many as one connection carries: no other dial
        /// starts before it lands, so no per-host limit would help.
        behind_first_dial: bool,
    },
    /// The origin is retired: ask the pool's current origin for the key.
    Retired,
}

/// Limits that apply to one origin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub per_host: usize,
    pub max_idle: usize,
    pub max_pending: usize,
}

/// When a shared (HTTP/2) connection has lived long enough: the pool's
/// `idle_timeout` (with no stream in flight) and `max_lifetime`. One rule
/// for the sweep and for the checkout, which must not hand out a stream
/// on a connection the sweep has not reached yet (a current-thread
/// runtime undriven for minutes runs no sweep before its next request).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SharedExpiry {
    pub idle_timeout: Option<std::time::Duration>,
    pub max_lifetime: Option<std::time::Duration>,
}

impl SharedExpiry {
    pub(crate) fn of(config: &crate::config::PoolConfig) -> SharedExpiry {
        SharedExpiry {
            idle_timeout: config.idle_timeout,
            max_lifetime: config.max_lifetime,
        }
    }

    /// Why `conn` must take no more streams at `now`, if it must.
    pub(crate) fn reason<S>(&self, conn: &Shared<S>, now: Stamp) -> Option<CloseReason> {
        if self
            .max_lifetime
            .is_some_and(|l| now >= conn.created.after(l))
        {
            return Some(CloseReason::Lifetime);
        }
        let idle = conn.in_flight == 0;
        if idle
            && self
                .idle_timeout
                .is_some_and(|t| now >= conn.idle_since.after(t))
        {
            return Some(CloseReason::IdleTimeout);
        }
        None
    }
}

/// The total-capacity budget shared by all origins.
pub(crate) trait TotalBudget {
    /// Reserve one connection of total capacity; false when exhausted.
    fn try_reserve(&self) -> bool;
    /// Give one back.
    fn release(&self);
}
