//! Name resolution with memory: [`CachingResolver`] keeps each host's
//! addresses for a TTL, refreshes them in the background once they expire,
//! and tells the pool (through [`Resolve::current`]) when a host's address
//! set changed, so connections to addresses DNS no longer lists are retired
//! gracefully: idle ones are closed, busy ones finish their requests and are
//! closed when returned, HTTP/2 ones take no new streams.
//!
//! ```text
//! dial --resolve()--> cache hit (fresh) | lookup + store (generation += 1 if the set changed)
//! checkout (each origin at most every 50 ms) --current()--> cached set + generation
//!                                 (expired: refresh in the background)
//!   generation moved --> idle connections to addresses not in the set: closed;
//!                        the set is kept by the origin: busy ones close on return
//!   no entry (let go) --> the origin asks resolve() once, in the background
//! new host stored, map past `sweep_at` --> answers past use let go (`sweep`)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::RuntimeFlavor;

use crate::connect::{Resolve, ResolveFuture, ResolveTtlFuture};

pub(crate) mod flight;

/// A resolver's current answer for one host, as [`Resolve::current`]
/// reports it to the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Changes whenever the address set changes (and only then); the pool
    /// re-checks its connections to the host when it moves.
    pub generation: u64,
    /// The addresses in preference order. (`CachingResolver`: the last
    /// answer's, then those earlier answers listed within its
    /// [`retire_after`](CachingResolver::retire_after).)
    pub addrs: Arc<[SocketAddr]>,
}

/// Caches another resolver's answers for a time to live, and reports
/// address changes so the pool can follow DNS.
///
/// Answers are kept for the TTL the inner resolver reports through
/// [`Resolve::resolve_with_ttl`] (DNS record TTLs, e.g. with
/// `HickoryResolver` behind the `hickory` feature), clamped to between 1 s
/// and the configured [`CachingResolver::ttl`] (default 30 s); resolvers
/// that report none (such as [`crate::SystemResolver`]) get the configured
/// TTL. Expired entries are still served to the pool's
/// [`Resolve::current`] checks while a background lookup refreshes them; a
/// dial with an expired entry looks up in the foreground. A failed lookup
/// (or one that answers no address) keeps the last good answer (up to 5 minutes past its TTL): a dial uses it, and
/// the next lookup waits a second; a lookup with no answer after a second
/// also lets the dial go on with it (the lookup finishing in the
/// background), and so do dials while a lookup for the host runs. A
/// refresh that returns the same addresses in a new order changes the
/// order dials try them in, not the generation. An address an answer no
/// longer lists stays current for [`retire_after`](CachingResolver::retire_after)
/// (60 s): DNS that rotates a few of many addresses into each answer does
/// not retire the pool's connections every TTL. On a multi-thread runtime,
/// dials to a host with no answer to fall back on share one lookup, which
/// runs to its end (and its answer is kept) even when they all give up on
/// it first. Of an answer with more than 32 addresses, a dial is given
/// the first 32 of each family (IPv4, IPv6), in the answer's order; the
/// set of addresses the pool follows is the whole answer.
///
/// ```
/// use std::time::Duration;
/// use freshpool::{CachingResolver, Client, SystemResolver};
/// let client = Client::builder()
///     .resolver(CachingResolver::new(SystemResolver).ttl(Duration::from_secs(10)))
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
pub struct CachingResolver<R> {
    shared: Arc<Shared<R>>,
}

struct Shared<R> {
    inner: R,
    ttl: Duration,
    /// See [`CachingResolver::retire_after`].
    retire_after: Duration,
    /// Lower-case host -> (port, entry): looked up without allocating.
    entries: Mutex<Entries>,
    next_generation: AtomicU64,
    /// Hosts the map may hold before the next sweep of answers too old to
    /// serve (`sweep`): twice what the last one left, so sweeps cost O(1)
    /// per new host, and a process that meets ever new hosts (a crawler, a
    /// webhook sender) does not keep every one it ever resolved. (Read and
    /// written under the `entries` lock.)
    sweep_at: AtomicUsize,
    /// Lookups with no answer to fall back on, shared by their dials.
    flights: flight::Flights,
}

type Entries = HashMap<String, Vec<(u16, Entry)>>;

struct Entry {
    /// The last answer, in its order: what dials use.
    answer: Arc<[SocketAddr]>,
    /// What the pool follows: `answer`, then the addresses earlier answers
    /// listed within `retire_after` (`listed`).
    resolved: Resolved,
    /// Each address an answer listed within `retire_after`, with when the
    /// last one did.
    listed: Vec<(SocketAddr, Instant)>,
    expires: Instant,
    /// When the last answer's TTL ended (or ends): it is served after a
    /// failed lookup only up to `MAX_STALE` past this. (Counted from the
    /// answer itself, any `ttl` over 5 minutes left no fallback at all:
    /// the answer was already that old when it expired.)
    ttl_end: Instant,
    /// Since when a lookup for it runs (one at a time: see
    /// `resolve_with_ttl`). Past `REFRESH_PATIENCE` the mark no longer
    /// holds others back: that lookup hangs, or waits on a current-thread
    /// runtime nobody drives now, and would keep every other runtime on
    /// the old answer for `MAX_STALE`.
    refreshing: Option<Instant>,
    /// Lookups for it still running (`LookupDone`s alive), however long
    /// ago they began. At `MOST_REFRESHES` no other starts, patience or
    /// not: a resolver that hangs (an NSS module that never returns) got
    /// one more task per host every `REFRESH_PATIENCE`, each waiting for
    /// good. (A review found it.)
    lookups: u8,
    /// The last lookup failed and the answer is past `MAX_STALE`: kept
    /// (for `current` and the wait before the next lookup) but never
    /// served to a dial.
    gone: bool,
}

/// Clones share one cache (give clients built apart the same answers).
///
/// ```
/// let cached = freshpool::CachingResolver::new(freshpool::SystemResolver);
/// let a = freshpool::Client::builder().resolver(cached.clone()).build().unwrap();
/// let b = freshpool::Client::builder().resolver(cached).build().unwrap();
/// # drop((a, b));
/// ```
impl<R> Clone for CachingResolver<R> {
    fn clone(&self) -> Self {
        CachingResolver {
            shared: self.shared.clone(),
        }
    }
}

impl<R> fmt::Debug for CachingResolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver")
            .field("ttl", &self.shared.ttl)
            .finish_non_exhaustive()
    }
}

impl<R: Resolve> CachingResolver<R> {
    /// Caches `inner`'s answers for 30 s.
    ///
    /// ```
    /// let cached = freshpool::CachingResolver::new(freshpool::SystemResolver);
    /// # drop(cached);
    /// ```
    pub fn new(inner: R) -> CachingResolver<R> {
        CachingResolver {
            shared: Arc::new(Shared {
                inner,
                ttl: Duration::from_secs(30),
                retire_after: Duration::from_secs(60),
                entries: Mutex::default(),
                next_generation: AtomicU64::new(1),
                sweep_at: AtomicUsize::new(SWEEP_MIN),
                flights: flight::Flights::default(),
            }),
        }
    }

    /// How long an answer is used before it is looked up again: the cap on
    /// DNS TTLs, and the TTL for resolvers that report none. At most a day
    /// (longer is taken as a day: DNS itself caps TTLs there in practice).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cached = freshpool::CachingResolver::new(freshpool::SystemResolver)
    ///     .ttl(Duration::from_secs(5));
    /// # drop(cached);
    /// ```
    ///
    /// # Panics
    /// If called after the resolver was cloned into a client (it is a
    /// construction-time setting).
    pub fn ttl(mut self, ttl: Duration) -> CachingResolver<R> {
        Arc::get_mut(&mut self.shared)
            .expect("set the TTL before sharing the resolver")
            .ttl = ttl.min(MAX_TTL);
        self
    }

    /// How long an address stays current after the last answer that
    /// listed it: until then the pool keeps its connections to it (and
    /// dials only the last answer's). DNS servers that put a few of many
    /// addresses into each answer (Amazon S3, large load balancers) list a
    /// connection's address only now and then; retired at the first answer
    /// without it, each connection to such a host lasted about one TTL.
    /// `Duration::ZERO` follows each answer exactly (a host that moves all
    /// at once). Default 60 s; at most 5 minutes (an answer unused that
    /// long past its TTL is let go, and with it what it listed), and at
    /// most the 64 most recently listed addresses besides the last
    /// answer's.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cached = freshpool::CachingResolver::new(freshpool::SystemResolver)
    ///     .retire_after(Duration::ZERO);
    /// # drop(cached);
    /// ```
    ///
    /// # Panics
    /// If called after the resolver was cloned into a client.
    pub fn retire_after(mut self, after: Duration) -> CachingResolver<R> {
        Arc::get_mut(&mut self.shared)
            .expect("set retire_after before sharing the resolver")
            .retire_after = after.min(MAX_STALE);
        self
    }
}

impl<R> Shared<R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Entry {
    /// The last good answer, if it may still stand in for a lookup that
    /// failed or hangs (see `MAX_STALE`).
    fn last_good(&self, now: Instant) -> Option<Vec<SocketAddr>> {
        (now.duration_since(self.ttl_end) <= MAX_STALE).then(|| self.answer.to_vec())
    }

    /// Whether a lookup for it started within `REFRESH_PATIENCE`, or
    /// `MOST_REFRESHES` still run.
    fn refresh_running(&self, now: Instant) -> bool {
        self.lookups >= MOST_REFRESHES
            || self
                .refreshing
                .is_some_and(|since| now.duration_since(since) < REFRESH_PATIENCE)
    }

    /// Of no more use: expired, too old to stand in for a failed lookup,
    /// and no lookup running for it. The next dial looks it up afresh.
    fn outlived(&self, now: Instant) -> bool {
        // (Any lookup still marked keeps it, however long it runs: its
        // answer is stored here.)
        self.refreshing.is_none()
            && self.lookups == 0
            && now >= self.expires
            && now.duration_since(self.ttl_end) > MAX_STALE
    }
}

/// Drops the entries that `outlived` their use at `now`.
fn sweep(entries: &mut Entries, now: Instant) {
    entries.retain(|_, ports| {
        ports.retain(|(_, entry)| !entry.outlived(now));
        !ports.is_empty()
    });
}

impl<R: Resolve> Shared<R> {
    /// Stores a fresh answer; bumps the generation only if the set the
    /// pool follows changed (an address new, or unlisted past
    /// `retire_after`).
    fn store(&self, host: &str, port: u16, addrs: &[SocketAddr], dns_ttl: Option<Duration>) {
        let ttl = dns_ttl.map_or(self.ttl, |t| t.clamp(MIN_TTL.min(self.ttl), self.ttl));
        let now = Instant::now();
        let expires = now + ttl;
        let mut entries = self.lock();
        if let Some(entry) = find(&mut entries, host, port) {
            entry.expires = expires;
            entry.ttl_end = expires;
            entry.refreshing = None;
            entry.gone = false;
            entry.answer = capped(addrs.to_vec()).into();
            let followed = note_listed(&mut entry.listed, addrs, now, self.retire_after);
            if !same_set(&entry.resolved.addrs, &followed) {
                entry.resolved = Resolved {
                    generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
                    addrs: followed.into(),
                };
            } else if entry.resolved.addrs[..] != followed[..] {
                // The same set in a new order (DNS round-robin): dials follow
                // the new preference; the generation stays, as no connection
                // is to an address DNS dropped.
                entry.resolved.addrs = followed.into();
            }
            return;
        }
        let resolved = Resolved {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            addrs: addrs.into(),
        };
        entries.entry(host.to_ascii_lowercase()).or_default().push((
            port,
            Entry {
                answer: capped(addrs.to_vec()).into(),
                resolved,
                listed: addrs.iter().map(|a| (*a, now)).collect(),
                expires,
                ttl_end: expires,
                refreshing: None,
                lookups: 0,
                gone: false,
            },
        ));
        if entries.len() >= self.sweep_at.load(Ordering::Relaxed) {
            sweep(&mut entries, Instant::now());
            let next = (entries.len() * 2).max(SWEEP_MIN);
            self.sweep_at.store(next, Ordering::Relaxed);
        }
    }

    /// A lookup failed: the last good answer stays, for `MIN_TTL` more
    /// before the next lookup (during an outage every checkout would
    /// otherwise start one), and is returned for a dial to use, unless it
    /// is older than `MAX_STALE` (then the name may really be gone).
    fn refresh_failed(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let mut entries = self.lock();
        let entry = find(&mut entries, host, port)?;
        let now = Instant::now();
        entry.refreshing = None;
        entry.expires = now + MIN_TTL;
        let good = entry.last_good(now);
        // (Else, fresh for `MIN_TTL` again, the old answer would go to
        // dials that much longer: the failure is the answer now.)
        entry.gone = good.is_none();
        good
    }
}

/// Counts a lookup of an entry as running (`Entry::lookups`) while it
/// lives, and clears the entry's `refreshing` mark when it ends, however.
struct LookupDone<R> {
    shared: Arc<Shared<R>>,
    host: String,
    port: u16,
}

impl<R> LookupDone<R> {
    fn start(shared: Arc<Shared<R>>, host: String, port: u16) -> LookupDone<R> {
        if let Some(entry) = find(&mut shared.lock(), &host, port) {
            entry.lookups = entry.lookups.saturating_add(1);
        }
        LookupDone { shared, host, port }
    }
}

impl<R> Drop for LookupDone<R> {
    fn drop(&mut self) {
        if let Some(entry) = find(&mut self.shared.lock(), &self.host, self.port) {
            entry.refreshing = None;
            entry.lookups = entry.lookups.saturating_sub(1);
        }
    }
}

/// Refreshes of one entry that may run at once, hung ones included (as
/// `flight::MOST_RUNNING` bounds the system resolver's lookups).
const MOST_REFRESHES: u8 = 2;

/// The shortest time an answer is kept, whatever DNS says: a TTL of 0
/// would otherwise mean a lookup per request. Also the wait after a
/// failed lookup before the next.
const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest `ttl` (an answer's expiry is `Instant::now() + ttl`, which
/// overflowed and panicked for `Duration::MAX`).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a dial waits for a lookup that neither answers nor fails
/// before it uses the last good answer (see `resolve_with_ttl`).
const STALE_AFTER: Duration = Duration::from_secs(1);

/// How long past its TTL an answer still stands in for a failed lookup
/// (an outage of DNS, not of the host). Past it, the failure is the
/// answer: the name may be gone (NXDOMAIN).
const MAX_STALE: Duration = Duration::from_secs(300);

/// How long a lookup's `refreshing` mark holds other lookups of its host
/// back (see `Entry::refreshing`): longer than a lookup takes (glibc's
/// resolver gives up after 5 s per server and attempt by default), short
/// enough that a parked one delays DNS changes by seconds, not minutes.
const REFRESH_PATIENCE: Duration = Duration::from_secs(10);

/// The most addresses kept current per host beyond its last answer (see
/// `note_listed`): bounds the work of each refresh, under the cache's
/// lock, and of the pool's checks of its connections against the set.
const MAX_LISTED: usize = 64;

/// The most addresses of each family (IPv4, IPv6) a dial is given from
/// one answer (see `capped`). A dial never gets far through more (four
/// attempts in flight, each given up after 2 s), and each dial copies its
/// list; 32 of each family keep Happy Eyeballs' choice of family whatever
/// the answer's order. (The set the pool follows is the whole answer: a
/// DNS that shuffles a large answer would otherwise change a capped set
/// at every refresh, and retire connections for it.)
const MAX_PER_FAMILY: usize = 32;

/// The answer's first [`MAX_PER_FAMILY`] addresses of each family, in
/// its order.
fn capped(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if addrs.len() <= MAX_PER_FAMILY {
        return addrs;
    }
    let (mut v4, mut v6) = (0, 0);
    addrs.retain(|a| {
        let seen = if a.is_ipv4() { &mut v4 } else { &mut v6 };
        *seen += 1;
        *seen <= MAX_PER_FAMILY
    });
    addrs
}

/// The fewest hosts the cache holds before it sweeps (see `sweep_at`).
const SWEEP_MIN: usize = 1024;

/// The entry for `host:port`; allocates only for a host with upper case.
fn find<'a>(entries: &'a mut Entries, host: &str, port: u16) -> Option<&'a mut Entry> {
    let ports = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        entries.get_mut(&host.to_ascii_lowercase())
    } else {
        entries.get_mut(host)
    }?;
    ports.iter_mut().find(|(p, _)| *p == port).map(|(_, e)| e)
}

/// Notes that an answer at `now` listed `answer`; forgets addresses no
/// answer listed within `retire_after`. Returns the set the pool follows:
/// `answer` in its order, then the others still listed, latest first.
fn note_listed(
    listed: &mut Vec<(SocketAddr, Instant)>,
    answer: &[SocketAddr],
    now: Instant,
    retire_after: Duration,
) -> Vec<SocketAddr> {
    // (Indexed: a scan per address was quadratic, seconds under the
    // cache's lock for a name that answers thousands.)
    let mut index: HashMap<SocketAddr, usize> = listed
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (*a, i))
        .collect();
    for addr in answer {
        match index.get(addr) {
            Some(&i) => listed[i].1 = now,
            None => {
                index.insert(*addr, listed.len());
                listed.push((*addr, now));
            }
        }
    }
    listed.retain(|(_, seen)| now.duration_since(*seen) <= retire_after);
    listed.sort_by_key(|(_, seen)| std::cmp::Reverse(*seen));
    // (A DNS that rotates through thousands of addresses: the most recent
    // are kept; the answer's own always, being the latest.)
    listed.truncate(MAX_LISTED + answer.len());
    let in_answer: std::collections::HashSet<&SocketAddr> = answer.iter().collect();
    let mut followed = answer.to_vec();
    followed.extend(
        listed
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| !in_answer.contains(a)),
    );
    followed
}

fn same_set(a: &[SocketAddr], b: &[SocketAddr]) -> bool {
    use std::collections::HashSet;
    if a.len() != b.len() {
        return false;
    }
    let (in_a, in_b): (HashSet<_>, HashSet<_>) = (a.iter().collect(), b.iter().collect());
    in_a == in_b
}

impl<R: Resolve> Resolve for CachingResolver<R> {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let lookup = self.resolve_with_ttl(host, port);
        Box::pin(async move { lookup.await.map(|(addrs, _)| addrs) })
    }

    fn resolve_with_ttl(&self, host: &str, port: u16) -> ResolveTtlFuture {
        let mut stale = None;
        if let Some(entry) = find(&mut self.shared.lock(), host, port) {
            let now = Instant::now();
            if now < entry.expires && !entry.gone {
                let addrs = entry.answer.to_vec();
                let left = entry.expires - now;
                return Box::pin(async move { Ok((addrs, Some(left))) });
            }
            if let Some(addrs) = entry.last_good(now) {
                // One lookup per host at a time: while one runs, dials go
                // on with the last answer (during an outage each would
                // otherwise start its own, each a blocking thread for the
                // system resolver).
                if entry.refresh_running(now) {
                    return Box::pin(async move { Ok((addrs, None)) });
                }
                entry.refreshing = Some(now);
                stale = Some(addrs);
            }
        }
        let shared = self.shared.clone();
        let owned_host = host.to_owned();
        // (Dropped unfinished, the lookup must not leave the host marked
        // as being looked up: dials would take the old answer until it is
        // too old to serve. Made before the inner resolver is called: one
        // that panics there, as it unwinds.)
        let done = stale
            .is_some()
            .then(|| LookupDone::start(shared.clone(), owned_host.clone(), port));
        let make_lookup = move || -> ResolveTtlFuture {
            let lookup = shared.inner.resolve_with_ttl(&owned_host, port);
            let host = owned_host;
            Box::pin(async move {
                let _done = done;
                match lookup.await {
                    Ok((addrs, ttl)) if !addrs.is_empty() => {
                        shared.store(&host, port, &addrs, ttl);
                        Ok((capped(addrs), ttl))
                    }
                    // An answer with no address is no answer to keep (a
                    // registry mid-deploy): as a failure, the last good one
                    // stands in; a name never answered passes it on, and the
                    // dial says it resolved to no addresses.
                    Ok((empty, ttl)) => match shared.refresh_failed(&host, port) {
                        Some(stale) => {
                            tracing::debug!(
                                host,
                                "lookup found no address; using the last good answer"
                            );
                            Ok((stale, None))
                        }
                        None => Ok((empty, ttl)),
                    },
                    // (Stale if error: a host whose DNS is down for a moment
                    // still has the addresses it answered before.)
                    Err(e) => match shared.refresh_failed(&host, port) {
                        Some(stale) => {
                            tracing::debug!(host, error = %e, "lookup failed; using the last good answer");
                            Ok((stale, None))
                        }
                        None => Err(e),
                    },
                }
            })
        };
        let Some(stale) = stale else {
            // Nothing to fall back on: one lookup for all the dials that
            // wait, as a task of its own (`flight.rs`), on a runtime that
            // runs it to its end.
            return match tokio::runtime::Handle::try_current() {
                Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
                    self.shared.flights.join(&runtime, host, port, make_lookup)
                }
                _ => make_lookup(),
            };
        };
        let lookup = make_lookup();
        // A DNS server that does not answer at all (no error either: the
        // common outage, getaddrinfo retrying for seconds) must not take
        // the whole connect_timeout while a good answer is at hand: after
        // STALE_AFTER the dial goes on with it. The lookup runs as a task
        // of its own from the start, so that it finishes (its answer, or
        // its failure, stored as above) even when the dial gives up on it
        // sooner (a connect_timeout under STALE_AFTER): meanwhile the next
        // dials go on with the last answer at once (`refreshing`).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return lookup;
        };
        let mut task = runtime.spawn(lookup);
        Box::pin(async move {
            match tokio::time::timeout(STALE_AFTER, &mut task).await {
                Ok(Ok(answer)) => answer,
                // (Still running, detached as `task` drops; or it died
                // with its runtime, and `LookupDone` cleared the mark.)
                Err(_) | Ok(Err(_)) => Ok((stale, None)),
            }
        })
    }

    fn current(&self, host: &str, port: u16) -> Option<Resolved> {
        let (resolved, refresh) = {
            let mut entries = self.shared.lock();
            let entry = find(&mut entries, host, port)?;
            let now = Instant::now();
            let refresh = !entry.refresh_running(now) && now >= entry.expires;
            if refresh {
                entry.refreshing = Some(now);
            }
            (entry.resolved.clone(), refresh)
        };
        if refresh {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    let shared = self.shared.clone();
                    // A resolver that panics here (a bug in user code)
                    // fails this lookup only: `current` runs in a
                    // request's checkout, which it must not take down.
                    let asked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.shared.inner.resolve_with_ttl(host, port)
                    }));
                    let Ok(lookup) = asked else {
                        drop(self.shared.refresh_failed(host, port));
                        return Some(resolved);
                    };
                    let host = host.to_owned();
                    // (Dropped with a runtime that shuts down, or by a
                    // panic of the lookup, the refresh must not leave the
                    // host marked as being looked up: no later check would
                    // refresh it.)
                    let done = LookupDone::start(shared.clone(), host.clone(), port);
                    handle.spawn(async move {
                        let _done = done;
                        match lookup.await {
                            Ok((addrs, ttl)) if !addrs.is_empty() => {
                                shared.store(&host, port, &addrs, ttl)
                            }
                            // (No address: a failure, as above.)
                            Ok(_) | Err(_) => drop(shared.refresh_failed(&host, port)),
                        }
                    });
                }
                Err(_) => drop(self.shared.refresh_failed(host, port)),
            }
        }
        Some(resolved)
    }
}

#[cfg(feature = "hickory")]
pub use self::hickory::HickoryResolver;

#[cfg(feature = "hickory")]
mod hickory;

#[cfg(test)]
mod tests;
