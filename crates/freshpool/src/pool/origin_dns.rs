//! One origin following DNS: when the resolver's answer for the name its
//! connections go to (its host, or its proxy's) changed, connections to
//! addresses no longer listed go.

use super::*;

impl Origin {
    /// When the resolver's answer for this host changed since we last
    /// looked: close idle connections to addresses it no longer lists and
    /// let HTTP/2 ones take no new streams (in-flight requests finish;
    /// leased HTTP/1 connections are checked when released, against the
    /// set kept here). Counted as [`CloseReason::Lifetime`]: the connection
    /// outlived its address.
    ///
    /// Asks the resolver at most every `DNS_CHECK_EVERY` per origin, not
    /// on every checkout: `CachingResolver::current` takes one process-wide
    /// lock, hashes the host and reads the clock, and two calls per request
    /// (here and on return) cost more than the rest of a checkout+return
    /// (`--bench checkout`, `caching_resolver`). `now_ns`: the coarse clock
    /// (ns since the budget's epoch).
    ///
    /// Two checks that race may leave `dns_seen` (and the kept set) at the
    /// older of two answers; the next check, within `DNS_CHECK_EVERY`, sees
    /// the generation differ and follows again.
    pub(super) fn follow_dns(&self, now_ns: u64) {
        let last = self.dns_checked_ns.load(Ordering::Relaxed);
        if last != 0 && now_ns.saturating_sub(last) < DNS_CHECK_EVERY.as_nanos() as u64 {
            return;
        }
        self.dns_checked_ns.store(now_ns.max(1), Ordering::Relaxed);
        self.follow_dns_now();
    }

    /// `follow_dns` without the rate limit, for a dial that just landed
    /// (rare, and its address may be newer than this origin's view).
    /// Returns the addresses the resolver lists now, if it keeps a view.
    pub(super) fn follow_dns_now(&self) -> Option<Arc<[std::net::SocketAddr]>> {
        // (Through a proxy, the proxy's name: see `Origin::dns_name`.)
        let (host, port) = self.dns_name.as_ref()?;
        let resolver = &self.connector.resolver;
        let Some(now) = resolver.current(host, *port) else {
            // It held a view before and holds none now: a cache that let
            // the answer go (`CachingResolver` drops answers unused for
            // minutes, a host a crawler met once). Ask it once to learn the
            // host again, or DNS changes would go unseen here until the
            // next dial, never with idle connections that keep serving.
            // (Once: `dns_seen` back at 0 asks no more until a view comes
            // back, so a failing lookup is not repeated every check.)
            // (A load first: most resolvers never hold a view, and a swap
            // would write a line every checkout reads.)
            if self.dns_seen.load(Ordering::Relaxed) != 0
                && self.dns_seen.swap(0, Ordering::AcqRel) != 0
            {
                self.relearn_dns();
            }
            return None;
        };
        // A load first: the generation rarely changes, and a swap on every
        // check would write a line every thread's checkouts share.
        if self.dns_seen.load(Ordering::Acquire) == now.generation
            || self.dns_seen.swap(now.generation, Ordering::AcqRel) == now.generation
        {
            return Some(now.addrs);
        }
        let gone =
            |peer: Option<std::net::SocketAddr>| peer.is_some_and(|p| !now.addrs.contains(&p));
        let (retired, retired_shared) = {
            let mut g = self.lock();
            let old = g.state.idle.take_where(|i| gone(i.conn.peer));
            // (As for HTTP/1 below: DNS no longer lists its address. A busy
            // one left serving for want of a slot to replace it is drained
            // by a later sweep, which asks `moved_away`.)
            let mut spare_total = self.budget.spare();
            g.state
                .drain_shared_where(self.limits.per_host, &mut spare_total, |s| {
                    gone(s.sender.peer).then_some(CloseReason::Lifetime)
                });
            let old_shared = g.state.drop_idle_shared(usize::MAX);
            g.dns_addrs = Some(now.addrs.clone());
            self.publish(&g.state);
            (old, old_shared)
        };
        self.count_closed(retired_shared);
        for _ in &retired {
            self.counters.closed(CloseReason::Lifetime);
        }
        if !retired.is_empty() {
            tracing::debug!(origin = %self.label, retired = retired.len(), "DNS changed; retired connections to old addresses");
        }
        Some(now.addrs)
    }

    /// Looks the host up in the background, for a resolver that forgot it
    /// (see `follow_dns_now`); the answer is the resolver's to keep.
    #[cold]
    fn relearn_dns(&self) {
        let Some((host, port)) = &self.dns_name else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let lookup = self.connector.resolver.resolve(host, *port);
            drop(handle.spawn(async move {
                let _ = lookup.await;
            }));
        }
    }
}

/// How often each origin asks the resolver whether DNS moved (see
/// `Origin::follow_dns`). Far below any TTL a cache keeps (at least 1 s,
/// `resolve::MIN_TTL`), so a change is followed within a TTL plus this.
const DNS_CHECK_EVERY: Duration = Duration::from_millis(50);

impl Guarded {
    /// Whether DNS, as `follow_dns` last saw it change, no longer lists the
    /// address this connection was dialed to. (By reference: the address
    /// sits in the idle record's second cache line, read only when DNS
    /// changed; copied in by value, it cost every return a cache miss on an
    /// origin not in cache.)
    pub(super) fn moved_away(&self, peer: &Option<std::net::SocketAddr>) -> bool {
        let Some(addrs) = &self.dns_addrs else {
            return false;
        };
        peer.is_some_and(|peer| !addrs.contains(&peer))
    }
}
