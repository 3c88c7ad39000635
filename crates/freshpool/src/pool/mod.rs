//! The connection pool: one per client (and its clones), shared by every
//! request.
//!
//! # State ownership
//! ```text
//! Pool
//! `-- PoolInner
//!     |-- origins: RwLock<OriginMap>   by key and by spelling (read on a memo miss,
//!     |                                made on first use: lookup;
//!     |                                a key includes the caller's current-thread
//!     |                                runtime, if any: partition;
//!     |                                each thread remembers its last origin: origin_memo;
//!     |                                an origin found here is prefetched: prefetch)
//!     `-- Budget (Arc, shared by origins)                 lock domain B
//!         |-- open: AtomicUsize            total slots, <= max_connections_total
//!         |-- starving: Mutex<VecDeque<Weak<Origin>>>  origins waiting on total
//!         |-- starving_origins: AtomicUsize  how many wait now (kept by each
//!         |                                origin's lock guard, `OriginLock`)
//!         |-- heartbeat / freeze state
//!         `-- judging: Mutex<()>          held while a beat judges a freeze
//!                                         (outermost: taken with no other lock)
//! Origin (Arc, repr(C): what a checkout reads first)      lock domain O (one per origin)
//! `-- Mutex<Guarded>
//!     |-- reused: u64, the one counter the hot path bumps (under this lock)
//!     |-- OriginState (state/): idle LIFO, shared h2 conns, FIFO waiters, slots
//!     |-- dns_addrs: the host's addresses when DNS last moved (follow_dns,
//!     |              at most every 50 ms; a return to an address not in it closes)
//!     `-- leases: LeaseTable, who holds connections now (for diagnosis):
//!                 one inline, more in a slab (lease_table)
//! ```
//! An origin lock and the budget's starving lock are never held together,
//! nor an origin lock and the `origins` map lock:
//! code that changes total capacity releases the origin lock first.
//!
//! # Who keeps an origin alive
//! The map holds every origin the pool created until the pool drops or
//! forgets it (`Pool::forget_unused`: one with no connection, no waiter,
//! no lease and no use for `forget_origin_after`, retired first under its
//! lock, so it takes no new connection or waiter afterwards). A checkout
//! borrows its origin from this thread's memo, which holds a reference
//! (`origin_memo`), and counts none itself (`OriginRef`); a checkout that
//! finds its origin retired takes the map's current one for that key.
//! Each HTTP/1 connection's record holds one (`H1Conn::origin`), and so
//! does each HTTP/2 stream's lease, the connection's driver task
//! (`SlotGuard`) and a queued request: what outlives a checkout (a
//! response body still being read after the last client dropped) keeps its
//! origin. A checkout and its return thus move a reference, never count
//! one: those were two atomic updates, on a cache line every thread using
//! the origin writes, per request.
//!
//! # Request lifecycle
//! ```text
//! checkout --(idle, validated)------------------------------> Lease
//!          --(h2 stream free)---------------------------------> Lease
//!          --(slot free) reserve slot, enqueue, spawn dial --+
//!          --(no slot) enqueue (FIFO) -----------------------+--> wait <= pool_timeout
//!                 dial done: oldest waiter | idle <----------+
//! (`checkout` is a plain function: only the "wait" arm builds a future.)
//! Lease --body read to end--> release: oldest waiter | idle (LIFO)
//!       --dropped early / error--> discard: connection closes
//! socket closed (driver task ends) --> SlotGuard drop: slot freed,
//!       waiters without a dial get one (no waiter starves while a slot is free)
//! dial task dropped unrun (spawned on a runtime shutting down) --> SlotGuard
//!       drop: slot freed; its waiter, and any the slot would now dial for,
//!       get `AskAgain` and check out again from their own runtime,
//!       keeping their place in the queue (never `PoolFull`)
//! ```

mod budget;
mod checkout;
mod coarse_clock;
mod dedicated;
mod dial;
mod idle;
pub(crate) mod key;
mod lease;
mod lease_table;
mod liveness;
pub(crate) use liveness::simulate_freeze;
mod lookup;
mod maintenance;
#[cfg(test)]
mod model_tests;
mod origin;
mod origin_dns;
mod origin_map;
mod origin_memo;
mod partition;
mod prefetch;
pub(crate) mod state;

use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};

use crate::body::RequestBody;
use crate::config::PoolConfig;
use crate::connect::{tcp, Connector, NewConnection, Sender, StreamLimit};
use crate::error::{fmt_duration, Error, Kind};
use crate::health::{Clock, SuspendWatch, HEARTBEAT, HEARTBEAT_SILENT};
use crate::stats::{CloseReason, Counters, LeaseInfo, OriginStats, PoolStats};
use budget::{wake_starving, Budget, StarvingList};
pub(crate) use checkout::Checkout;
pub(crate) use coarse_clock::Stamp;
use dial::SlotGuard;
use key::{PoolKey, SecurityContext};
use lease::KeepAlive;
use lease::WaiterGuard;
pub(crate) use lease::{Lease, LeaseKind};
use origin_map::OriginMap;
use state::{
    Acquire, Channel, Forgotten, Handoff, Idle, IdleRecord, Limits, OriginState, Protocol, Shared,
    SharedExpiry, TotalBudget,
};

/// An HTTP/1 connection as the pool holds it. (`repr(C)`: the sender,
/// read on every checkout and return, first, so it lies in the idle
/// record's first cache line; see `IdleRecord`.)
#[repr(C)]
pub(crate) struct H1Conn {
    pub sender: http1::SendRequest<RequestBody>,
    /// The origin it belongs to: the reference its lease holds while it
    /// is lent (see "Who keeps an origin alive" above). Beside the sender,
    /// in the record's first line: a checkout and its return read both.
    pub origin: Arc<Origin>,
    pub socket: Weak<crate::connect::tcp::Socket>,
    /// The address dialed (direct connections), to follow DNS changes.
    pub peer: Option<std::net::SocketAddr>,
    /// Over TLS: the alert that ended its reads, if one did (see
    /// `connect::tcp::AlertSeen`).
    pub tls_alert: Option<Arc<tcp::AlertSeen>>,
    /// Set if its driver task was dropped before it ended: its runtime
    /// shut down (see `connect::driver`).
    pub driver_lost: Option<Arc<crate::connect::DriverLost>>,
}

/// A connection the pool lets go is shut, whatever the path (an error, a
/// sweep, surplus, a lifetime, a freeze, a slot given to another origin,
/// the pool dropped). Dropping the sender alone lets hyper close the
/// socket only after it flushed what it holds, which never ends while a
/// peer that stopped reading keeps its window shut: an upload given up by
/// a timeout or its caller, or an in-memory body still queued after an
/// early answer, kept the socket, the driver task, the slot and the rest
/// of the body for as long as the peer held on. Shut, the flush fails and
/// the driver task ends, freeing the slot. (A connection already closed
/// has no socket left to shut: `Weak`.)
impl Drop for H1Conn {
    fn drop(&mut self) {
        crate::connect::tcp::shut_down(&self.socket);
    }
}

impl Channel for H1Conn {
    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
    fn max_streams(&self) -> u32 {
        1
    }
}

/// An HTTP/2 connection's sender and the stream limit its server announces.
#[derive(Clone)]
pub(crate) struct H2Conn {
    pub sender: http2::SendRequest<RequestBody>,
    /// Follows every SETTINGS frame the server sends (connect/preface.rs).
    pub limit: StreamLimit,
    /// The address dialed (direct connections), to follow DNS changes.
    pub peer: Option<std::net::SocketAddr>,
}

impl Channel for H2Conn {
    /// Closed, or the server sent GOAWAY (or ended the connection): no
    /// new streams (RFC 9113 section 6.8), while those in flight finish.
    /// (hyper's sender learns of a GOAWAY only when handed the next
    /// request, which it gives back unsent: that cost a retry per
    /// connection at every deploy. The socket wrapper reads it as it comes:
    /// `StreamLimit::peer_signed_off`.)
    fn is_closed(&self) -> bool {
        self.sender.is_closed() || self.limit.peer_signed_off()
    }
    fn max_streams(&self) -> u32 {
        // Read at each decision: a server that lowers its limit gets no
        // more streams than it allows (h2 would queue the rest inside the
        // connection, behind streams that may run for long), and one that
        // raises it gets them from the next checkout or stream end on.
        self.limit.get()
    }
}

type State = OriginState<H1Conn, H2Conn>;

/// (`repr(C)`, hot fields first: see `Origin`.)
#[repr(C)]
struct Guarded {
    /// Checkouts served by a connection that had served before (stats).
    /// Here rather than in `Counters`: it changes on every checkout, under
    /// this lock anyway, and a plain add is one atomic update fewer.
    reused: u64,
    state: State,
    /// The addresses DNS listed when `follow_dns` last saw the resolver's
    /// answer change (None: never, or a resolver that does not report):
    /// a connection returned to an address not in it closes.
    dns_addrs: Option<Arc<[std::net::SocketAddr]>>,
    /// Who holds each leased connection: one inline, more in a slab (see
    /// `lease_table`). A lease's id is its slot, so taking and returning a
    /// connection register and forget it without hashing. After the state,
    /// beside `dns_addrs` (read on every return): the inline slot extends
    /// the hot span by 24 bytes, where in front of the state it pushed the
    /// state's fields onto one more line (cachegrind).
    leases: lease_table::LeaseTable,
}

/// Connection ids are sequential and internal (not
/// attacker-chosen): a multiplicative hash is enough and ~10x cheaper than
/// SipHash.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

std::thread_local! {
    /// Set while what a request held is dropped because the request timed
    /// out waiting for its response head: the limit that ran out (see
    /// `ended_by_timeout`).
    static TIMED_OUT: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Runs `drop_it`, which drops what a request held (its lease, or the
/// future holding it) because the request timed out after `limit` waiting
/// for its response head: `Origin::abandon_stream` judges the connection
/// by it.
pub(crate) fn ended_by_timeout(limit: Duration, drop_it: impl FnOnce()) {
    /// Puts the flag back as it was, also when `drop_it` panics.
    struct Restore(Option<Duration>);
    impl Drop for Restore {
        fn drop(&mut self) {
            TIMED_OUT.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TIMED_OUT.with(|t| t.replace(Some(limit))));
    drop_it();
}

/// Who holds a connection, since when; `reported` once flagged as a leak.
#[derive(Clone, Copy)]
struct LeaseRecord {
    since: Stamp,
    caller: &'static Location<'static>,
    /// When its holder last showed progress (its response head came late,
    /// or its body was read: see `Lease::note_progress`), in units of
    /// [`ACTIVE_UNIT_MS`] after `since` (0: none noted, as a note needs 100
    /// ms). The leak report looks at this, not at the age. (32 bits keep
    /// the record in 24 bytes, the inline slot on the checkout's lines:
    /// in milliseconds they ran out at 49.7 days, and a stream read
    /// longer, a watch or an event feed, was then reported as a leak.)
    /// Moved on by the length of each process freeze detected meanwhile
    /// (`LeaseTable::discount_freeze`): time the holder did not run.
    active: u32,
    /// `PROGRESSED`, `REPORTED`, `AWAITED` (one byte: the record stays
    /// 24 bytes).
    flags: u8,
    /// HTTP/2: its connection's read count (`StreamLimit::reads`, the low
    /// 16 bits: the record stays 24 bytes) when the stream was taken, to
    /// tell a connection that read nothing since (`Origin::abandon_stream`).
    reads_at_take: u16,
}

/// `LeaseRecord::flags`: progress was noted at least once by
/// `Lease::note_progress` (a late response head, or a body frame read).
const PROGRESSED: u8 = 1;
/// `LeaseRecord::flags`: the leak report named it (once each).
const REPORTED: u8 = 2;
/// `LeaseRecord::flags`: its response body's reader waits for the next
/// frame (`Lease::note_awaited`): an event stream quiet for minutes is no
/// leak, however long the server stays quiet.
const AWAITED: u8 = 4;

/// The unit of `LeaseRecord::active`: 16 ms, finer than the 100 ms
/// between progress notes, and 2.2 years in 32 bits.
const ACTIVE_UNIT_MS: u64 = 16;

/// `d` in units of `ACTIVE_UNIT_MS` (rounded down, saturating).
fn active_units(d: Duration) -> u32 {
    u32::try_from(d.as_millis() / u128::from(ACTIVE_UNIT_MS)).unwrap_or(u32::MAX)
}

impl LeaseRecord {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// When its holder last showed progress (or took it).
    fn last_active(&self) -> Stamp {
        self.since.after(Duration::from_millis(
            u64::from(self.active) * ACTIVE_UNIT_MS,
        ))
    }
}

/// One origin's pool partition.
///
/// Field order is layout (`repr(C)`): what every checkout and return reads
/// comes first, then the lock and the hot part of its state (see
/// `Guarded`), then the metric handle every request records to; the other statistics
/// and metric handles, touched on rarer events, come last. So a checkout
/// of an origin that is not in cache reads the first 392 bytes of its
/// 1,464-byte `Arc` allocation (seven or eight cache lines), not lines
/// scattered over it, and `prefetch` can start them all at once. (Cachegrind, rotating over 3,000 origins,
/// with `IdleRecord`'s layout: 17.6 → 15.7 L1 misses per checkout+return;
/// on its own the wall clock did not measurably move, with `prefetch`
/// 938 → 826 ns at 10,000 origins: BENCHMARKS.md, the rotating-origins
/// curve.)
#[repr(C)]
pub(crate) struct Origin {
    limits: Limits,
    budget: Arc<Budget>,
    connector: Arc<Connector>,
    config: Arc<PoolConfig>,
    /// The resolver generation last checked (see `follow_dns`).
    dns_seen: AtomicU64,
    /// When `follow_dns` last asked the resolver (coarse clock, ns since the
    /// budget's epoch; 0 never): it asks at most every `DNS_CHECK_EVERY`.
    dns_checked_ns: AtomicU64,
    pub key: PoolKey,
    guarded: Mutex<Guarded>,
    /// (Its first field, the request-duration handle, is recorded to on
    /// every request: see `metrics::OriginMetrics`.)
    pub counters: Counters,
    pub label: Arc<str>,
    /// 0 unknown, 1 answers `100 Continue`; n >= 2: ignored our `Expect`,
    /// learned at n - 2 ms on the budget's clock (see
    /// `expect_continue_supported`).
    expect_100: AtomicU64,
    /// The `Host` value most requests to this origin carry, built once so
    /// HTTP/1 requests clone a shared value instead of allocating one.
    host_header: std::sync::OnceLock<HostHeader>,
    /// Since when (ns on the budget's clock; 0: not found unused), and at
    /// which count of uses (`Origin::uses`), the sweep has found this
    /// origin unused (see `Origin::retire_if_unused`, which alone touches
    /// them, under the origin's lock; atomics only to stay out of the
    /// lock's hot lines).
    unused_since_ns: AtomicU64,
    unused_uses: AtomicU64,
    /// Its counters went to the pool's `forgotten` totals (`fold_into`).
    folded: AtomicBool,
    /// The name (and port) whose DNS answers its connections follow
    /// (`follow_dns`): its host, or through a proxy, the proxy's, since
    /// its connections go to the proxy (the target's addresses are the
    /// proxy's business, and looking them up here is what a remote-DNS
    /// proxy setup avoids). `None` through a proxy given by address.
    dns_name: Option<(Box<str>, u16)>,
    /// Itself, for the rare paths that need a counted reference from a
    /// borrowed origin (an HTTP/2 stream's lease, a queued request, a dial).
    this: Weak<Origin>,
}

/// A `Host` value and the URI spelling (scheme, authority) it was derived
/// from: see `Origin::host_header`.
struct HostHeader {
    https: bool,
    authority: Box<str>,
    value: http::HeaderValue,
}

/// An origin lent to one checkout (see "Who keeps an origin alive"):
/// a hit of this thread's memo, given back when this drops, or counted
/// when it came from the map (a miss: the memo may not have kept it). Not
/// `Send` (a raw pointer): a hit must be given back on the thread that
/// took it.
pub(crate) struct OriginRef<'a> {
    origin: *const Origin,
    owned: Option<Arc<Origin>>,
    _pool: std::marker::PhantomData<&'a Pool>,
}

impl OriginRef<'_> {
    /// # Safety
    /// `origin` is a hit of `origin_memo::recall`, lent until this drops
    /// (which gives it back): the memo keeps it alive meanwhile.
    #[inline(always)]
    unsafe fn memo(origin: *const Origin) -> Self {
        OriginRef {
            origin,
            owned: None,
            _pool: std::marker::PhantomData,
        }
    }

    fn owned(origin: Arc<Origin>) -> Self {
        OriginRef {
            origin: Arc::as_ptr(&origin),
            owned: Some(origin),
            _pool: std::marker::PhantomData,
        }
    }
}

impl Drop for OriginRef<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.owned.is_none() {
            origin_memo::give_back();
        }
    }
}

impl std::ops::Deref for OriginRef<'_> {
    type Target = Origin;

    #[inline(always)]
    fn deref(&self) -> &Origin {
        // SAFETY: alive while `self` is (see `OriginRef::memo`, `owned`).
        unsafe { &*self.origin }
    }
}

#[inline(always)]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the bookkeeping half-done
    // in a way worse than losing the pool; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The shared pool behind a client and its clones.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// Unique in the process (see `origin_memo`).
    id: u64,
    config: Arc<PoolConfig>,
    budget: Arc<Budget>,
    origins: RwLock<OriginMap>,
    heartbeat_started: AtomicBool,
    /// The heartbeat runs on a current-thread runtime, which runs it only
    /// while something drives that runtime (see `ensure_heartbeat`).
    heartbeat_on_current_thread: AtomicBool,
    /// When the heartbeat last ticked (ns on the budget's clock): one
    /// silent too long is replaced (see `ensure_heartbeat`).
    heartbeat_tick: AtomicU64,
    /// Bumped at each heartbeat start: older tasks end (see
    /// `ensure_heartbeat`).
    heartbeat_gen: AtomicU64,
    /// Beats of the current heartbeat task (only it counts them): how a
    /// replaced task learns that its replacement runs.
    heartbeat_beats: AtomicU64,
    /// When the last sweep ran (ns on the budget's clock, 0: the pool's
    /// start): the pool's, not a heartbeat task's, so that a runtime per
    /// call, each starting a heartbeat that lives a few milliseconds,
    /// still gets its sweep (see `Pool::sweep_due`).
    last_sweep: AtomicU64,
    /// Machine suspends (boottime past monotonic), polled by the heartbeat:
    /// the pool's, so that one between two heartbeat tasks counts too.
    suspend: Mutex<SuspendWatch>,
    /// Where the client that made this pool was built (for the
    /// pool-per-request warning).
    built_at: &'static Location<'static>,
    /// How that client dials, which clients sharing the pool must match
    /// (see `ClientBuilder::share_pool_with`), and its resolver, which
    /// they use.
    dial: key::DialSettings,
    resolver: Arc<dyn crate::Resolve>,
    /// The counters of the origins forgotten so far (`forget_unused`).
    forgotten: Mutex<crate::stats::ForgottenOrigins>,
}

impl Drop for PoolInner {
    /// The last client is gone: close its resting connections now, and
    /// retire every origin so that busy ones (a response body still being
    /// read holds its lease) close when their request ends instead of
    /// coming to rest. Without this, each connection's driver task, which
    /// holds its origin, would keep those connections open forever.
    fn drop(&mut self) {
        let origins = self.origins.get_mut().unwrap_or_else(|p| p.into_inner());
        for origin in origins.values() {
            let (idle, shared) = {
                let mut g = origin.lock();
                // In the same locked step: a connection returned later (a
                // body still being read) is closed, not left to rest.
                g.state.retired = true;
                (
                    std::mem::take(&mut g.state.idle),
                    std::mem::take(&mut g.state.shared),
                )
            };
            // Those with streams in flight (a body still being read) end
            // with them: not shut a moment after the pool lets go.
            for busy in shared.iter().filter(|s| s.in_flight > 0) {
                if let Some(hold) = &busy.hold {
                    hold.let_finish();
                }
            }
            // Counted here: their slots' guards find them gone from the
            // pool, and count nothing (`freshpool.connections.closed` fell
            // short of `created` by every connection a dropped client had).
            for _ in 0..idle.len() + shared.len() {
                origin.counters.closed(CloseReason::Surplus);
            }
            drop((idle, shared));
        }
    }
}

impl Pool {
    pub(crate) fn new(
        config: PoolConfig,
        clock: Arc<dyn Clock>,
        dial: key::DialSettings,
        resolver: Arc<dyn crate::Resolve>,
        built_at: &'static Location<'static>,
    ) -> Pool {
        liveness::start();
        let budget = Arc::new(Budget {
            open: AtomicUsize::new(0),
            limit: config.max_connections_total,
            starving: StarvingList::default(),
            starving_origins: AtomicUsize::new(0),
            fruitless_relief_at: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            last_beat: AtomicU64::new(0),
            freeze_at: AtomicU64::new(0),
            freezes: AtomicU64::new(0),
            judging: Mutex::new(()),
            frozen_ns: AtomicU64::new(0),
            clock: coarse_clock::CoarseClock::new(),
        });
        Pool {
            inner: Arc::new(PoolInner {
                id: origin_memo::next_pool_id(),
                config: Arc::new(config),
                budget,
                origins: RwLock::default(),
                heartbeat_started: AtomicBool::new(false),
                heartbeat_on_current_thread: AtomicBool::new(false),
                heartbeat_tick: AtomicU64::new(0),
                heartbeat_gen: AtomicU64::new(0),
                heartbeat_beats: AtomicU64::new(0),
                last_sweep: AtomicU64::new(0),
                suspend: Mutex::new(SuspendWatch::new(clock)),
                built_at,
                dial,
                resolver,
                forgotten: Mutex::default(),
            }),
        }
    }

    pub(crate) fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// How the client that made the pool dials.
    pub(crate) fn dial_settings(&self) -> &key::DialSettings {
        &self.inner.dial
    }

    /// The resolver of the client that made the pool.
    pub(crate) fn resolver(&self) -> &Arc<dyn crate::Resolve> {
        &self.inner.resolver
    }

    pub(crate) fn stats(&self) -> PoolStats {
        // (First: an origin being forgotten is in the map or in these
        // totals, never in both or neither; see `forget_unused`.)
        let forgotten = lock(&self.inner.forgotten);
        let origins = self.origins();
        let mut list: Vec<OriginStats> = origins.iter().map(|o| o.snapshot()).collect();
        list.sort_by(|a, b| a.origin.cmp(&b.origin));
        PoolStats {
            origins: list,
            open_connections: self.inner.budget.open.load(Ordering::Acquire),
            total_limit: self.inner.budget.limit,
            freezes_detected: self.inner.budget.freezes.load(Ordering::Relaxed),
            forgotten: forgotten.clone(),
        }
    }
}

/// Test helper: a current-thread runtime with I/O and timers.
#[cfg(test)]
pub(crate) fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Test helper: the origin `url` goes to in `client`'s pool (as a request
/// would find it).
#[cfg(test)]
pub(crate) fn origin_of(client: &crate::Client, url: &str) -> Arc<Origin> {
    let inner = client.inner();
    let uri: http::Uri = url.parse().unwrap();
    inner
        .pool
        .origin_for(&uri, &inner.security, &inner.connector)
        .unwrap()
        .arc()
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// The layout the `repr(C)` orderings promise (see `Origin` and
    /// `IdleRecord`): a reordering that scatters the hot fields again
    /// fails here, not only in a cache simulation.
    #[test]
    fn checkout_fields_share_few_cache_lines() {
        type Record = IdleRecord<H1Conn>;
        assert_eq!(align_of::<Record>(), 64);
        // Two lines in all (its times are 8-byte `Stamp`s).
        assert_eq!(size_of::<Record>(), 128);
        assert_eq!(offset_of!(H1Conn, sender), 0);
        // Everything a checkout and its return touch: line 0 only (the
        // sender as a whole, so the pointer `is_closed` follows, wherever
        // hyper keeps it inside).
        let sender_end = offset_of!(Record, conn) + size_of::<http1::SendRequest<RequestBody>>();
        let origin_end = offset_of!(Record, conn) + offset_of!(H1Conn, origin) + 8;
        for (name, end) in [
            ("expires_at", offset_of!(Record, expires_at) + 8),
            ("idle_since", offset_of!(Record, idle_since) + 8),
            ("created", offset_of!(Record, created) + 8),
            ("requests", offset_of!(Record, requests) + 8),
            ("conn.sender", sender_end),
            ("conn.origin", origin_end),
        ] {
            assert!(end <= 64, "IdleRecord.{name} ends at byte {end}");
        }
        // The origin's hot fields come before its lock's state; the
        // statistics after it, the request-duration handle first.
        let guarded = offset_of!(Origin, guarded);
        for (name, at) in [
            ("limits", offset_of!(Origin, limits)),
            ("budget", offset_of!(Origin, budget)),
            ("connector", offset_of!(Origin, connector)),
            ("config", offset_of!(Origin, config)),
            ("dns_seen", offset_of!(Origin, dns_seen)),
            ("dns_checked_ns", offset_of!(Origin, dns_checked_ns)),
            ("key", offset_of!(Origin, key)),
        ] {
            assert!(at < guarded, "Origin.{name} at {at}, after the lock");
        }
        assert!(guarded < 128, "the lock starts at byte {guarded}");
        assert_eq!(
            offset_of!(Origin, counters),
            guarded + size_of::<Mutex<Guarded>>()
        );
        assert_eq!(offset_of!(Counters, metrics), 0);
        assert_eq!(offset_of!(Guarded, reused), 0);
        assert!(offset_of!(Guarded, state) < 64);
        // The inline lease slot (what a checkout registers) right after the
        // DNS answer a return reads.
        assert_eq!(
            offset_of!(Guarded, leases),
            offset_of!(Guarded, dns_addrs) + size_of::<Option<Arc<[std::net::SocketAddr]>>>()
        );
        // The state's counts and queue length before its idle list (whose
        // own order idle.rs's test checks).
        let idle = offset_of!(State, idle);
        assert_eq!(offset_of!(State, shared), 0);
        for (name, at) in [
            ("slots", offset_of!(State, slots)),
            ("dialing", offset_of!(State, dialing)),
            ("live_waiters", offset_of!(State, live_waiters)),
            ("waiters", offset_of!(State, waiters)),
        ] {
            assert!(at < idle, "OriginState.{name} at {at}, after the idle list");
        }
        // What `prefetch` starts, the allocation's first bytes up to the
        // request-duration handle (16 bytes), stays within seven lines.
        let hot = 2 * size_of::<usize>() + offset_of!(Origin, counters) + 16;
        assert!(hot <= 7 * 64, "the hot part of an origin is {hot} bytes");
    }
}
