//! The connection pool: one per client (and its clones), shared by every
//! request.
//!
//! # State ownership
//! ```text
//! Pool
//! `-- PoolInner
//!     |-- origins: RwLock<HashMap<PoolKey, Arc<Origin>>>   (read on every request)
//!     `-- Budget (Arc, shared by origins)                 lock domain B
//!         |-- open: AtomicUsize            total slots, <= max_connections_total
//!         |-- starving: Mutex<VecDeque<Weak<Origin>>>  origins waiting on total
//!         `-- heartbeat / freeze state
//! Origin (Arc)                                            lock domain O (one per origin)
//! `-- Mutex<Guarded>
//!     |-- OriginState (state.rs): idle LIFO, shared h2 conns, FIFO waiters, slots
//!     `-- leases: who holds connections now (for diagnosis)
//! ```
//! An origin lock and the budget's starving lock are never held together:
//! code that changes total capacity releases the origin lock first.
//!
//! # Request lifecycle
//! ```text
//! checkout --(idle, validated)------------------------------> Lease
//!          --(h2 stream free)---------------------------------> Lease
//!          --(slot free) reserve slot, enqueue, spawn dial --+
//!          --(no slot) enqueue (FIFO) -----------------------+--> wait <= pool_timeout
//!                 dial done: oldest waiter | idle <----------+
//! Lease --body read to end--> release: oldest waiter | idle (LIFO)
//!       --dropped early / error--> discard: connection closes
//! socket closed (driver task ends) --> SlotGuard drop: slot freed,
//!       waiters without a dial get one (no waiter starves while a slot is free)
//! ```

pub(crate) mod key;
pub(crate) mod state;
#[cfg(test)]
mod model_tests;

use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::config::PoolConfig;
use crate::connect::{tcp, Connector, NewConnection, Sender};
use crate::error::{fmt_duration, Error, Kind};
use crate::health::{Clock, SuspendWatch, HEARTBEAT};
use crate::stats::{CloseReason, Counters, LeaseInfo, OriginStats, PoolStats};
use key::{KeyParts, KeyView, PoolKey, SecurityContext};
use state::{Acquire, Channel, Handoff, Idle, Limits, OriginState, Protocol, Shared, TotalBudget};

/// An HTTP/1 connection as the pool holds it.
pub(crate) struct H1Conn {
    pub sender: http1::SendRequest<RequestBody>,
    pub socket: Weak<TcpStream>,
    /// The address dialed (direct connections), to follow DNS changes.
    pub peer: Option<std::net::SocketAddr>,
}

impl Channel for H1Conn {
    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
    fn max_streams(&self) -> u32 {
        1
    }
}

/// An HTTP/2 connection's sender and the limit its server announced.
#[derive(Clone)]
pub(crate) struct H2Conn {
    pub sender: http2::SendRequest<RequestBody>,
    pub announced: u32,
    /// The address dialed (direct connections), to follow DNS changes.
    pub peer: Option<std::net::SocketAddr>,
}

impl Channel for H2Conn {
    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
    fn max_streams(&self) -> u32 {
        // From the server's first SETTINGS (see connect/preface.rs). A later
        // lowering makes h2 queue extra streams inside the connection, which
        // costs latency, never correctness.
        self.announced
    }
}

type State = OriginState<H1Conn, H2Conn>;

struct Guarded {
    state: State,
    leases: HashMap<u64, LeaseRecord>,
}

/// Who holds a connection, since when; `reported` once flagged as a leak.
#[derive(Clone, Copy)]
struct LeaseRecord {
    since: Instant,
    caller: &'static Location<'static>,
    reported: bool,
}

/// Total capacity shared by all origins of a pool.
pub(crate) struct Budget {
    open: AtomicUsize,
    limit: usize,
    starving: Mutex<std::collections::VecDeque<Weak<Origin>>>,
    next_id: AtomicU64,
    /// Monotonic nanoseconds (since `epoch`) of the last heartbeat.
    last_beat: AtomicU64,
    /// Instant of the last detected freeze, as nanoseconds since `epoch`.
    freeze_at: AtomicU64,
    freezes: AtomicU64,
    epoch: Instant,
}

impl TotalBudget for Budget {
    fn try_reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }
}

impl Budget {
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// One origin's pool partition.
pub(crate) struct Origin {
    pub key: PoolKey,
    pub label: Arc<str>,
    config: Arc<PoolConfig>,
    limits: Limits,
    connector: Arc<Connector>,
    budget: Arc<Budget>,
    guarded: Mutex<Guarded>,
    pub counters: Counters,
    next_lease: AtomicU64,
    /// The resolver generation last checked (see `follow_dns`).
    dns_seen: AtomicU64,
    /// 0 unknown, 1 answers `100 Continue`, 2 ignores `Expect`.
    expect_100: std::sync::atomic::AtomicU8,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the bookkeeping half-done
    // in a way worse than losing the pool; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds one slot (per-host and total) until the connection's socket is
/// gone: owned by the dial, then by the connection's driver task.
pub(crate) struct SlotGuard {
    origin: Arc<Origin>,
    conn_id: u64,
    since: Instant,
}

impl SlotGuard {
    fn new(origin: &Arc<Origin>, conn_id: u64) -> SlotGuard {
        SlotGuard {
            origin: origin.clone(),
            conn_id,
            since: Instant::now(),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.origin
            .counters
            .metrics
            .connection_lived(self.since.elapsed());
        self.origin.slot_freed(self.conn_id);
    }
}

impl Origin {
    fn lock(&self) -> MutexGuard<'_, Guarded> {
        lock(&self.guarded)
    }

    fn slot_freed(self: &Arc<Self>, conn_id: u64) {
        self.budget.open.fetch_sub(1, Ordering::AcqRel);
        let (was_pooled, dials) = {
            let mut g = self.lock();
            let was_pooled = g.state.slot_freed(conn_id);
            let dials = g.state.service(self.limits, &*self.budget);
            self.publish(&g.state);
            (was_pooled, dials)
        };
        if was_pooled {
            self.counters.closed(CloseReason::ServerClose);
        }
        self.spawn_dials(dials);
        // The freed total slot may be what another origin is waiting for.
        wake_starving(&self.budget);
    }

    fn spawn_dials(self: &Arc<Self>, waiter_ids: Vec<u64>) {
        if waiter_ids.is_empty() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime (shutting down): fail those waiters rather than
            // leave them without a dial.
            let mut g = self.lock();
            for id in waiter_ids {
                g.state.dial_done();
                g.state.slots -= 1;
                self.budget.open.fetch_sub(1, Ordering::AcqRel);
                g.state.fail_waiter(
                    id,
                    Error::new(Kind::Closed, "the async runtime is shutting down"),
                );
            }
            return;
        };
        for waiter_id in waiter_ids {
            let origin = self.clone();
            handle.spawn(async move { origin.dial_for(waiter_id).await });
        }
    }

    async fn dial_for(self: Arc<Self>, waiter_id: u64) {
        let conn_id = self.budget.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = SlotGuard::new(&self, conn_id);
        let started = Instant::now();
        let result = self.connector.dial(&self.key, slot).await;
        match result {
            Ok(conn) => {
                self.counters.created(started.elapsed());
                tracing::debug!(origin = %self.label, conn_id, elapsed = ?started.elapsed(), "connection opened");
                self.add_connection(conn_id, conn);
            }
            Err(err) => {
                self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(origin = %self.label, error = %err, "connect failed");
                let dials = {
                    let mut g = self.lock();
                    g.state.dial_done();
                    g.state.fail_waiter(waiter_id, err);
                    // A waiter whose dial failed is answered; others that had
                    // counted on this dial (coalesced HTTP/2) need their own.
                    g.state.service(self.limits, &*self.budget)
                };
                self.spawn_dials(dials);
            }
        }
    }

    /// Dials a connection for one requester only (see
    /// [`Pool::checkout_dedicated`]). If the requester is gone when it
    /// lands, it joins the pool like any other.
    async fn dial_dedicated(
        self: Arc<Self>,
        tx: tokio::sync::oneshot::Sender<Result<Handoff<H1Conn, H2Conn>, Error>>,
    ) {
        let conn_id = self.budget.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = SlotGuard::new(&self, conn_id);
        let started = Instant::now();
        match self.connector.dial(&self.key, slot).await {
            Ok(NewConnection {
                sender: Sender::H1(sender),
                socket,
                resumed_tls,
                peer,
                ..
            }) => {
                if resumed_tls {
                    self.counters.tls_resumed.fetch_add(1, Ordering::Relaxed);
                }
                self.counters.created(started.elapsed());
                let now = Instant::now();
                let idle = Idle {
                    id: conn_id,
                    conn: H1Conn {
                        sender,
                        socket,
                        peer,
                    },
                    created: now,
                    idle_since: now,
                    expires_at: self.expiry(now, now, None),
                    requests: 0,
                    fresh: true,
                };
                self.lock().state.dial_done();
                if let Err(Ok(Handoff::Exclusive(idle))) = tx.send(Ok(Handoff::Exclusive(idle))) {
                    let surplus = self.lock().state.offer_idle(idle, self.limits);
                    drop(surplus);
                }
            }
            Ok(other) => {
                // The origin moved to HTTP/2: share it like any new connection.
                self.counters.created(started.elapsed());
                self.add_connection(conn_id, other);
                drop(tx); // the requester falls back to a normal checkout
            }
            Err(err) => {
                self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                let dials = {
                    let mut g = self.lock();
                    g.state.dial_done();
                    g.state.service(self.limits, &*self.budget)
                };
                self.spawn_dials(dials);
                let _ = tx.send(Err(err));
            }
        }
    }

    fn add_connection(self: &Arc<Self>, conn_id: u64, conn: NewConnection) {
        if conn.resumed_tls {
            self.counters.tls_resumed.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let mut surplus = None;
        let dials = {
            let mut g = self.lock();
            g.state.dial_done();
            match conn.sender {
                Sender::H1(sender) => {
                    g.state.protocol = Protocol::Http1;
                    let idle = Idle {
                        id: conn_id,
                        conn: H1Conn {
                            sender,
                            socket: conn.socket,
                            peer: conn.peer,
                        },
                        created: now,
                        idle_since: now,
                        expires_at: self.expiry(now, now, None),
                        requests: 0,
                        fresh: true,
                    };
                    surplus = g.state.offer_idle(idle, self.limits);
                }
                Sender::H2(sender) => {
                    g.state.protocol = Protocol::Http2;
                    g.state.add_shared(Shared {
                        id: conn_id,
                        sender: H2Conn {
                            sender,
                            announced: conn.max_streams.unwrap_or(1),
                            peer: conn.peer,
                        },
                        in_flight: 0,
                        created: now,
                        draining: false,
                    });
                }
            }
            let dials = g.state.service(self.limits, &*self.budget);
            self.publish(&g.state);
            dials
        };
        if surplus.is_some() {
            self.counters.closed(CloseReason::Surplus);
        }
        drop(surplus);
        self.spawn_dials(dials);
    }

    /// The earliest of idle timeout, keep-alive hint and lifetime.
    fn expiry(&self, now: Instant, created: Instant, hint: Option<Duration>) -> Option<Instant> {
        let cfg = &self.config;
        let idle = cfg.idle_timeout.map(|t| now + t);
        let hinted = hint.map(|h| now + h.saturating_sub(cfg.keep_alive_margin));
        let life = cfg.max_lifetime.map(|l| created + l);
        [idle, hinted, life].into_iter().flatten().min()
    }

    fn close_reason(&self, idle: &Idle<H1Conn>, now: Instant) -> CloseReason {
        let cfg = &self.config;
        if cfg.max_lifetime.is_some_and(|l| now >= idle.created + l) {
            CloseReason::Lifetime
        } else if cfg.idle_timeout.is_some_and(|t| now >= idle.idle_since + t) {
            CloseReason::IdleTimeout
        } else if idle.conn.is_closed() {
            CloseReason::ServerClose
        } else {
            CloseReason::KeepAliveHint
        }
    }

    /// Evicts idle connections that expired or (after a freeze) are suspect.
    fn evict(&self, now: Instant, frozen_since: Option<Instant>) {
        let mut dropped = Vec::new();
        {
            let mut g = self.lock();
            let mut keep = std::collections::VecDeque::with_capacity(g.state.idle.len());
            while let Some(idle) = g.state.idle.pop_front() {
                let reason = if frozen_since.is_some_and(|f| idle.idle_since <= f) {
                    Some(CloseReason::FreezeEviction)
                } else if idle.expires_at.is_some_and(|t| now >= t) || idle.conn.is_closed() {
                    Some(self.close_reason(&idle, now))
                } else {
                    None
                };
                match reason {
                    Some(r) => dropped.push((r, idle)),
                    None => keep.push_back(idle),
                }
            }
            g.state.idle = keep;
            if frozen_since.is_some() {
                // HTTP/2 connections with no streams: stop using them; a
                // dead one would otherwise take the next burst down with it.
                for s in g.state.shared.iter_mut().filter(|s| s.in_flight == 0) {
                    s.draining = true;
                }
                g.state.shared.retain(|s| !s.draining || s.in_flight > 0);
            }
            if let Some(life) = self.config.max_lifetime {
                for s in g.state.shared.iter_mut() {
                    if now >= s.created + life {
                        s.draining = true;
                    }
                }
                g.state.shared.retain(|s| !(s.draining && s.in_flight == 0));
            }
        }
        for (reason, idle) in dropped {
            self.counters.closed(reason);
            drop(idle);
        }
    }

    fn register_lease(&self, g: &mut Guarded, caller: &'static Location<'static>) -> u64 {
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        g.leases.insert(
            id,
            LeaseRecord {
                since: Instant::now(),
                caller,
                reported: false,
            },
        );
        id
    }

    /// Publishes the open-connection gauges (idle / active).
    fn publish(&self, st: &State) {
        let idle = st.idle.len() + st.shared.iter().filter(|s| s.in_flight == 0).count();
        let established = st.slots.saturating_sub(st.dialing);
        self.counters
            .metrics
            .open(idle, established.saturating_sub(idle));
    }

    /// Reports leases held past `lease_warn_after`, once each.
    fn report_leaks(&self, now: Instant) {
        let Some(limit) = self.config.lease_warn_after else {
            return;
        };
        let mut found = Vec::new();
        {
            let mut g = self.lock();
            for record in g.leases.values_mut() {
                if !record.reported && now.saturating_duration_since(record.since) >= limit {
                    record.reported = true;
                    found.push(*record);
                }
            }
        }
        for record in found {
            self.counters.leaks_reported.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                origin = %self.label,
                held = ?now.saturating_duration_since(record.since),
                caller = %record.caller,
                "a connection has been held for {} by the request made at {}: read its response body to \
                 the end or drop it, or the pool will run dry",
                fmt_duration(now.saturating_duration_since(record.since)),
                record.caller
            );
        }
    }

    fn snapshot(&self) -> OriginStats {
        let g = self.lock();
        let now = Instant::now();
        let st = &g.state;
        let mut leases: Vec<LeaseRecord> = g.leases.values().copied().collect();
        leases.sort_by_key(|r| r.since);
        let oldest_leases = leases
            .iter()
            .take(5)
            .map(|r| LeaseInfo {
                age: now.saturating_duration_since(r.since),
                caller: r.caller.to_string(),
            })
            .collect();
        let established = st.slots.saturating_sub(st.dialing);
        let idle = st.idle.len() + st.shared.iter().filter(|s| s.in_flight == 0).count();
        let c = &self.counters;
        OriginStats {
            origin: self.label.to_string(),
            protocol: match st.protocol {
                Protocol::Http1 => "HTTP/1.1",
                Protocol::Http2 => "HTTP/2",
                Protocol::Unknown => "unknown",
            },
            idle,
            active: established.saturating_sub(idle),
            connecting: st.dialing,
            waiting: st.live_waiters,
            limit: self.limits.per_host,
            created: c.created.load(Ordering::Relaxed),
            reused: c.reused.load(Ordering::Relaxed),
            connect_errors: c.connect_errors.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            pool_timeouts: c.pool_timeouts.load(Ordering::Relaxed),
            closed: CloseReason::ALL
                .iter()
                .zip(c.closed.iter())
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            pool_wait: c.pool_wait.summary(),
            connect_time: c.connect_time.summary(),
            oldest_leases,
            leaks_reported: c.leaks_reported.load(Ordering::Relaxed),
            tls_resumed: c.tls_resumed.load(Ordering::Relaxed),
        }
    }

    /// The message of a PoolTimeout: every number needed to fix it.
    fn starvation_report(&self, waited: Duration) -> String {
        let s = self.snapshot();
        let holder = s
            .oldest_leases
            .first()
            .map(|l| {
                format!(
                    "; longest lease held {} by the request made at {}",
                    fmt_duration(l.age),
                    l.caller
                )
            })
            .unwrap_or_default();
        format!(
            "timed out after {} (pool_timeout) waiting for a connection to {} (limit {}, in use {}, idle {}, connecting {}, waiting {}{}); \
             raise max_connections_per_host, read or drop response bodies sooner, or raise pool_timeout",
            fmt_duration(waited),
            self.label,
            s.limit,
            s.active,
            s.idle,
            s.connecting,
            s.waiting,
            holder
        )
    }
}

/// Gives freed total capacity to origins that were waiting for it.
fn wake_starving(budget: &Budget) {
    loop {
        if budget.open.load(Ordering::Acquire) >= budget.limit {
            return;
        }
        let next = lock(&budget.starving).pop_front();
        let Some(weak) = next else { return };
        let Some(origin) = weak.upgrade() else {
            continue;
        };
        let dials = {
            let mut g = origin.lock();
            g.state.starving = false;
            g.state.service(origin.limits, &*origin.budget)
        };
        let started = !dials.is_empty();
        origin.spawn_dials(dials);
        if started {
            return;
        }
    }
}

/// The shared pool behind a client and its clones.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: Arc<PoolConfig>,
    budget: Arc<Budget>,
    origins: RwLock<HashMap<PoolKey, Arc<Origin>>>,
    heartbeat_started: AtomicBool,
    clock: Arc<dyn Clock>,
    /// Where the client that made this pool was built (for the
    /// pool-per-request warning).
    built_at: &'static Location<'static>,
}

/// A connection (HTTP/1) or a stream (HTTP/2) lent to one request.
pub(crate) struct Lease {
    origin: Arc<Origin>,
    kind: Option<LeaseKind>,
    lease_id: u64,
    /// Taken from the pool, not freshly dialed.
    pub reused: bool,
    /// The server's `Keep-Alive: timeout` hint, read from the response.
    pub keep_alive_hint: Option<Duration>,
    /// The response said `Connection: close` (or the request failed).
    pub reusable: bool,
}

pub(crate) enum LeaseKind {
    H1(Idle<H1Conn>),
    H2 {
        conn_id: u64,
        sender: http2::SendRequest<RequestBody>,
    },
}

impl Lease {
    pub(crate) fn kind_mut(&mut self) -> &mut LeaseKind {
        self.kind.as_mut().expect("a live lease has its connection")
    }

    pub(crate) fn origin_label(&self) -> &Arc<str> {
        &self.origin.label
    }

    pub(crate) fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// When the HTTP/1 connection was last returned (None if fresh or h2).
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        match &self.kind {
            Some(LeaseKind::H1(idle)) if !idle.fresh => Some(idle.idle_since),
            _ => None,
        }
    }

    pub(crate) fn is_h2(&self) -> bool {
        matches!(self.kind, Some(LeaseKind::H2 { .. }))
    }

    /// The connection's idle time before this lease (zero if fresh or h2).
    pub(crate) fn idle_for(&self, now: Instant) -> Duration {
        match &self.kind {
            Some(LeaseKind::H1(idle)) if !idle.fresh => {
                now.saturating_duration_since(idle.idle_since)
            }
            _ => Duration::ZERO,
        }
    }

    /// The request is done and the connection is healthy: back to the pool.
    pub(crate) fn release(mut self) {
        let Some(kind) = self.kind.take() else { return };
        if !self.reusable {
            self.kind = Some(kind);
            return self.discard();
        }
        let origin = self.origin.clone();
        match kind {
            LeaseKind::H1(mut idle) => {
                let now = Instant::now();
                idle.requests += 1;
                idle.fresh = false;
                idle.idle_since = now;
                idle.expires_at = origin.expiry(now, idle.created, self.keep_alive_hint);
                let cfg = &origin.config;
                let spent = cfg
                    .max_requests_per_connection
                    .is_some_and(|m| idle.requests >= m);
                let expired = idle.expires_at.is_some_and(|t| t <= now);
                let moved = origin.moved_away(idle.conn.peer);
                if spent || expired || moved || idle.conn.is_closed() {
                    let reason = if spent {
                        CloseReason::MaxRequests
                    } else if moved {
                        CloseReason::Lifetime
                    } else {
                        origin.close_reason(&idle, now)
                    };
                    origin.counters.closed(reason);
                    lock(&origin.guarded).leases.remove(&self.lease_id);
                    return;
                }
                let surplus = {
                    let mut g = origin.lock();
                    g.leases.remove(&self.lease_id);
                    let surplus = g.state.offer_idle(idle, origin.limits);
                    origin.publish(&g.state);
                    surplus
                };
                if surplus.is_some() {
                    origin.counters.closed(CloseReason::Surplus);
                }
            }
            LeaseKind::H2 { conn_id, .. } => origin.release_stream(conn_id, self.lease_id),
        }
    }

    /// The connection cannot be reused (error, unread body): close it.
    pub(crate) fn discard(mut self) {
        let Some(kind) = self.kind.take() else { return };
        match kind {
            LeaseKind::H1(idle) => {
                self.origin.counters.closed(CloseReason::Error);
                lock(&self.origin.guarded).leases.remove(&self.lease_id);
                // Dropping the sender makes hyper close the socket; the
                // driver task then frees the slot.
                drop(idle);
            }
            // An h2 stream failing does not doom its connection; hyper
            // resets the stream.
            LeaseKind::H2 { conn_id, .. } => self.origin.release_stream(conn_id, self.lease_id),
        }
    }
}

impl Origin {
    fn release_stream(self: &Arc<Self>, conn_id: u64, lease_id: u64) {
        let dials = {
            let mut g = self.lock();
            g.leases.remove(&lease_id);
            g.state.release_stream(conn_id);
            // Drop draining connections once their last stream is done.
            g.state.shared.retain(|s| !(s.draining && s.in_flight == 0));
            g.state.service(self.limits, &*self.budget)
        };
        self.spawn_dials(dials);
    }

    /// A reused connection died silently: close its idle siblings that
    /// have been resting at least as long (a NAT or peer that dropped one
    /// dropped them all), so the retry does not meet another dead one.
    pub(crate) fn evict_idle_since(&self, since: Instant) {
        let stale: Vec<_> = {
            let mut g = self.lock();
            let (old, keep): (Vec<_>, Vec<_>) = g
                .state
                .idle
                .drain(..)
                .partition(|i| !i.fresh && i.idle_since <= since);
            g.state.idle = keep.into();
            old
        };
        for _ in &stale {
            self.counters.closed(CloseReason::StaleDetected);
        }
    }

    /// Whether DNS (as the resolver currently reports it) no longer lists
    /// the address this connection was dialed to.
    fn moved_away(&self, peer: Option<std::net::SocketAddr>) -> bool {
        let Some(peer) = peer else { return false };
        self.connector
            .resolver
            .current(&self.key.host, self.key.port)
            .is_some_and(|now| !now.addrs.contains(&peer))
    }

    /// When the resolver's answer for this host changed since we last
    /// looked: close idle connections to addresses it no longer lists and
    /// let HTTP/2 ones take no new streams (in-flight requests finish;
    /// leased HTTP/1 connections are checked when released). Counted as
    /// [`CloseReason::Lifetime`]: the connection outlived its address.
    fn follow_dns(&self) {
        let Some(now) = self
            .connector
            .resolver
            .current(&self.key.host, self.key.port)
        else {
            return;
        };
        if self.dns_seen.swap(now.generation, Ordering::AcqRel) == now.generation {
            return;
        }
        let gone =
            |peer: Option<std::net::SocketAddr>| peer.is_some_and(|p| !now.addrs.contains(&p));
        let retired: Vec<_> = {
            let mut g = self.lock();
            let (old, keep): (Vec<_>, Vec<_>) =
                g.state.idle.drain(..).partition(|i| gone(i.conn.peer));
            g.state.idle = keep.into();
            for s in g.state.shared.iter_mut().filter(|s| gone(s.sender.peer)) {
                s.draining = true;
            }
            g.state.shared.retain(|s| !(s.draining && s.in_flight == 0));
            self.publish(&g.state);
            old
        };
        for _ in &retired {
            self.counters.closed(CloseReason::Lifetime);
        }
        if !retired.is_empty() {
            tracing::debug!(origin = %self.label, retired = retired.len(), "DNS changed; retired connections to old addresses");
        }
    }

    /// What we learned about this server and `Expect: 100-continue`:
    /// `Some(true)` it answers 100, `Some(false)` it ignored it.
    pub(crate) fn expect_continue_supported(&self) -> Option<bool> {
        match self.expect_100.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// Records whether the server answered 100 to our last Expect, so a
    /// server that ignores it costs the short wait once, not every time.
    pub(crate) fn learn_expect_continue(&self, answered: bool) {
        self.expect_100
            .store(if answered { 1 } else { 2 }, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.kind.is_some() {
            let kind = self.kind.take();
            let me = Lease {
                origin: self.origin.clone(),
                kind,
                lease_id: self.lease_id,
                reused: self.reused,
                keep_alive_hint: None,
                reusable: false,
            };
            me.discard();
        }
    }
}

/// Cancels a waiter when its request future is dropped or times out, and
/// puts back anything that was handed to it in the meantime.
struct WaiterGuard {
    origin: Arc<Origin>,
    rx: Option<tokio::sync::oneshot::Receiver<Result<Handoff<H1Conn, H2Conn>, Error>>>,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        match rx.try_recv() {
            Ok(Ok(Handoff::Exclusive(idle))) => {
                // Served just as we gave up: the connection goes to the next.
                let surplus = self
                    .origin
                    .lock()
                    .state
                    .offer_idle(idle, self.origin.limits);
                drop(surplus);
            }
            Ok(Ok(Handoff::Stream { conn_id, .. })) => {
                let dials = {
                    let mut g = self.origin.lock();
                    g.state.release_stream(conn_id);
                    g.state.service(self.origin.limits, &*self.origin.budget)
                };
                self.origin.spawn_dials(dials);
            }
            Ok(Err(_)) => {}
            Err(_) => {
                let mut g = self.origin.lock();
                g.state.cancel_waiter();
            }
        }
    }
}

impl Pool {
    pub(crate) fn new(
        config: PoolConfig,
        clock: Arc<dyn Clock>,
        built_at: &'static Location<'static>,
    ) -> Pool {
        let budget = Arc::new(Budget {
            open: AtomicUsize::new(0),
            limit: config.max_connections_total,
            starving: Mutex::default(),
            next_id: AtomicU64::new(1),
            last_beat: AtomicU64::new(0),
            freeze_at: AtomicU64::new(0),
            freezes: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        Pool {
            inner: Arc::new(PoolInner {
                config: Arc::new(config),
                budget,
                origins: RwLock::default(),
                heartbeat_started: AtomicBool::new(false),
                clock,
                built_at,
            }),
        }
    }

    pub(crate) fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    fn origin(
        &self,
        view: KeyView<'_>,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
    ) -> Arc<Origin> {
        if let Some(o) = self
            .inner
            .origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&view as &dyn KeyParts)
        {
            return o.clone();
        }
        let mut map = self
            .inner
            .origins
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(o) = map.get(&view as &dyn KeyParts) {
            return o.clone();
        }
        let key = view.to_owned(security.clone());
        let cfg = &self.inner.config;
        let protocol = if connector.may_multiplex(&key) {
            Protocol::Unknown
        } else {
            Protocol::Http1
        };
        let origin = Arc::new(Origin {
            label: Arc::from(key.origin()),
            key: key.clone(),
            config: cfg.clone(),
            limits: Limits {
                per_host: cfg.max_connections_per_host,
                max_idle: cfg.max_idle_per_host,
                max_pending: cfg.max_pending,
            },
            connector: connector.clone(),
            budget: self.inner.budget.clone(),
            guarded: Mutex::new(Guarded {
                state: OriginState::new(protocol),
                leases: HashMap::new(),
            }),
            counters: Counters::new(&key.host, key.port, key.scheme.as_str()),
            next_lease: AtomicU64::new(1),
            dns_seen: AtomicU64::new(0),
            expect_100: std::sync::atomic::AtomicU8::new(0),
        });
        map.insert(key, origin.clone());
        drop(map);
        crate::diagnose::pool_met_origin(&origin.label, self.inner.built_at);
        origin
    }

    /// Takes a connection for `uri`, waiting (FIFO, bounded by
    /// `pool_timeout`) when the origin is at its limit.
    pub(crate) async fn checkout(
        &self,
        uri: &http::Uri,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
        caller: &'static Location<'static>,
    ) -> Result<Lease, Error> {
        let view = PoolKey::view(uri, security.id)?;
        let origin = self.origin(view, security, connector);
        origin.follow_dns();
        self.ensure_heartbeat();
        let started = Instant::now();
        self.check_freeze(started);
        let cfg = &self.inner.config;
        loop {
            let now = Instant::now();
            let mut expired = Vec::new();
            let acquired = {
                let mut g = origin.lock();
                let acquired =
                    g.state
                        .acquire(now, origin.limits, &*origin.budget, caller, &mut expired);
                match acquired {
                    Acquire::Idle(idle) => {
                        let lease_id = origin.register_lease(&mut g, caller);
                        Ok((LeaseKind::H1(idle), lease_id))
                    }
                    Acquire::Stream { conn_id, sender } => {
                        let lease_id = origin.register_lease(&mut g, caller);
                        Ok((
                            LeaseKind::H2 {
                                conn_id,
                                sender: sender.sender,
                            },
                            lease_id,
                        ))
                    }
                    other => Err(other),
                }
            };
            for idle in expired {
                origin.counters.closed(origin.close_reason(&idle, now));
            }
            match acquired {
                Ok((kind, lease_id)) => {
                    let mut lease = Lease {
                        origin: origin.clone(),
                        kind: Some(kind),
                        lease_id,
                        reused: true,
                        keep_alive_hint: None,
                        reusable: true,
                    };
                    if let Some(LeaseKind::H1(idle)) = &lease.kind {
                        let fresh_enough = self.still_fresh(&origin, idle, now);
                        lease.reused = !idle.fresh;
                        if !fresh_enough {
                            lease.reusable = false;
                            lease.discard();
                            continue;
                        }
                    }
                    if lease.reused {
                        origin.counters.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(lease);
                }
                Err(Acquire::Full { waiting }) => {
                    return Err(Error::new(
                        Kind::PoolFull,
                        format!(
                            "{waiting} requests already wait for a connection to {} (max_pending {}, limit {})",
                            origin.label, cfg.max_pending, cfg.max_connections_per_host
                        ),
                    ))
                }
                Err(Acquire::Wait { waiter_id, rx, dial }) => {
                    let starving = !dial && origin.lock().state.starving;
                    if dial {
                        origin.spawn_dials(vec![waiter_id]);
                    } else if starving {
                        self.relieve_total(&origin);
                    }
                    let mut guard = WaiterGuard {
                        origin: origin.clone(),
                        rx: Some(rx),
                    };
                    let rx = guard.rx.as_mut().expect("just set");
                    let remaining = cfg.pool_timeout.saturating_sub(started.elapsed());
                    let outcome = tokio::time::timeout(remaining, rx).await;
                    match outcome {
                        Ok(Ok(result)) => {
                            guard.rx = None;
                            let handoff = result?;
                            let waited = started.elapsed();
                            origin.counters.waited(waited);
                            let (kind, reused) = match handoff {
                                Handoff::Exclusive(idle) => {
                                    let reused = !idle.fresh;
                                    (LeaseKind::H1(idle), reused)
                                }
                                Handoff::Stream { conn_id, sender } => {
                                    (LeaseKind::H2 { conn_id, sender: sender.sender }, true)
                                }
                            };
                            let lease_id = origin.register_lease(&mut origin.lock(), caller);
                            if reused {
                                origin.counters.reused.fetch_add(1, Ordering::Relaxed);
                            }
                            return Ok(Lease {
                                origin: origin.clone(),
                                kind: Some(kind),
                                lease_id,
                                reused,
                                keep_alive_hint: None,
                                reusable: true,
                            });
                        }
                        Ok(Err(_)) => {
                            // Sender dropped without an answer: ask again.
                            guard.rx = None;
                            origin.lock().state.cancel_waiter();
                            continue;
                        }
                        Err(_) => {
                            // Report before leaving the queue: "waiting"
                            // counts this request too.
                            origin.counters.pool_timeout();
                            let report = origin.starvation_report(cfg.pool_timeout);
                            drop(guard);
                            warn_starvation(&origin.label, &report);
                            return Err(Error::new(Kind::PoolTimeout, report));
                        }
                    }
                }
                Err(Acquire::Idle(_) | Acquire::Stream { .. }) => unreachable!("handled above"),
            }
        }
    }

    /// Like [`Pool::checkout`], but for a retry after a stale connection
    /// failed: the request gets a newly dialed HTTP/1 connection, never
    /// another idle one that may have died the same way. Falls back to a
    /// normal checkout when no slot is free (or the origin multiplexes).
    pub(crate) async fn checkout_dedicated(
        &self,
        uri: &http::Uri,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
        caller: &'static Location<'static>,
    ) -> Result<Lease, Error> {
        let view = PoolKey::view(uri, security.id)?;
        let origin = self.origin(view, security, connector);
        let reserved = origin
            .lock()
            .state
            .reserve_dedicated(origin.limits, &*origin.budget);
        if !reserved {
            return self.checkout(uri, security, connector, caller).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(origin.clone().dial_dedicated(tx))),
            Err(_) => return Err(Error::new(Kind::Closed, "no async runtime")),
        }
        match rx.await {
            Ok(Ok(Handoff::Exclusive(idle))) => {
                let lease_id = origin.register_lease(&mut origin.lock(), caller);
                Ok(Lease {
                    origin: origin.clone(),
                    kind: Some(LeaseKind::H1(idle)),
                    lease_id,
                    reused: false,
                    keep_alive_hint: None,
                    reusable: true,
                })
            }
            Ok(Err(err)) => Err(err),
            Ok(Ok(Handoff::Stream { .. })) | Err(_) => {
                self.checkout(uri, security, connector, caller).await
            }
        }
    }

    /// Whether an idle HTTP/1 connection may carry a request: not idle
    /// across a freeze, and (past `validate_after_idle`) its socket is
    /// quiet: no FIN, no reset, no stray bytes.
    fn still_fresh(&self, origin: &Origin, idle: &Idle<H1Conn>, now: Instant) -> bool {
        let budget = &self.inner.budget;
        let freeze_at = budget.freeze_at.load(Ordering::Acquire);
        if freeze_at != 0 && budget.nanos(idle.idle_since) <= freeze_at && !idle.fresh {
            origin.counters.closed(CloseReason::FreezeEviction);
            return false;
        }
        if now.saturating_duration_since(idle.idle_since) >= self.inner.config.validate_after_idle
            && tcp::peek(&idle.conn.socket) != tcp::Peek::Quiet
        {
            origin.counters.closed(CloseReason::StaleDetected);
            return false;
        }
        true
    }

    /// Total capacity is exhausted while this origin waits: close one idle
    /// connection of another origin so the budget can move here.
    fn relieve_total(&self, starving: &Arc<Origin>) {
        lock(&self.inner.budget.starving).push_back(Arc::downgrade(starving));
        let origins: Vec<Arc<Origin>> = self
            .inner
            .origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|o| !Arc::ptr_eq(o, starving))
            .cloned()
            .collect();
        for other in origins {
            let victim = other.lock().state.idle.pop_front();
            if let Some(victim) = victim {
                other.counters.closed(CloseReason::Surplus);
                drop(victim);
                return;
            }
        }
    }

    fn ensure_heartbeat(&self) {
        if self.inner.heartbeat_started.load(Ordering::Relaxed)
            || self.inner.heartbeat_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let clock = self.inner.clock.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let budget = &self.inner.budget;
        budget
            .last_beat
            .store(budget.nanos(Instant::now()), Ordering::Release);
        handle.spawn(async move {
            let mut suspend = SuspendWatch::new(clock);
            let mut ticker = tokio::time::interval(HEARTBEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beats = 0u64;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let pool = Pool { inner };
                let now = Instant::now();
                let threshold = pool.inner.config.freeze_threshold;
                if let Some(threshold) = threshold {
                    if let Some(gap) = suspend.poll(threshold) {
                        pool.freeze_detected(now, gap, "machine suspend");
                    }
                }
                pool.check_freeze(now);
                beats += 1;
                // Sweep expired idle connections about once a second.
                if beats.is_multiple_of(4) {
                    pool.evict_all(now, None);
                    pool.report_leaks(now);
                }
            }
        });
    }

    /// Reads the heartbeat: a gap far beyond its period means the process
    /// did not run (SIGSTOP, cgroup freeze, a paused serverless sandbox).
    fn check_freeze(&self, now: Instant) {
        let Some(threshold) = self.inner.config.freeze_threshold else {
            return;
        };
        let budget = &self.inner.budget;
        let now_n = budget.nanos(now);
        let last = budget.last_beat.swap(now_n, Ordering::AcqRel);
        if last == 0 || now_n <= last {
            return;
        }
        let gap = Duration::from_nanos(now_n - last);
        if gap > threshold + HEARTBEAT {
            self.freeze_detected(now, gap, "heartbeat gap");
        }
    }

    fn freeze_detected(&self, now: Instant, gap: Duration, how: &str) {
        let budget = &self.inner.budget;
        budget.freeze_at.store(budget.nanos(now), Ordering::Release);
        budget.freezes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(gap = ?gap, how, "process freeze detected; idle connections are suspect");
        self.evict_all(now, Some(now));
    }

    /// Closes idle connections that expired, or (with `frozen_since`) all
    /// that sat idle before that instant.
    pub(crate) fn evict_all(&self, now: Instant, frozen_since: Option<Instant>) {
        let origins: Vec<Arc<Origin>> = self
            .inner
            .origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for origin in origins {
            origin.evict(now, frozen_since);
        }
    }

    fn report_leaks(&self, now: Instant) {
        let origins: Vec<Arc<Origin>> = self
            .inner
            .origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for origin in origins {
            origin.report_leaks(now);
        }
    }

    /// Treat every idle connection as suspect now (the user says the process
    /// just resumed).
    pub(crate) fn on_resume(&self) {
        let now = Instant::now();
        let budget = &self.inner.budget;
        budget.freeze_at.store(budget.nanos(now), Ordering::Release);
        self.evict_all(now, Some(now));
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let origins: Vec<Arc<Origin>> = self
            .inner
            .origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut list: Vec<OriginStats> = origins.iter().map(|o| o.snapshot()).collect();
        list.sort_by(|a, b| a.origin.cmp(&b.origin));
        PoolStats {
            origins: list,
            open_connections: self.inner.budget.open.load(Ordering::Acquire),
            total_limit: self.inner.budget.limit,
            freezes_detected: self.inner.budget.freezes.load(Ordering::Relaxed),
        }
    }
}

/// Logs a starvation report at most once per 10 s per process, so a
/// starving service does not also drown its logs.
fn warn_starvation(origin: &str, report: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let now = epoch.elapsed().as_secs() + 1;
    let last = LAST.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 10)
        && LAST
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(origin, "{report}");
    }
}
