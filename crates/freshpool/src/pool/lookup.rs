//! Which origin serves a request: this thread's memo, the map by the URL's
//! spelling, or the map by canonical key, where a new origin is made on
//! first use (see "Who keeps an origin alive" in the module above).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use super::key::{KeyParts, KeyView, PoolKey, Scheme, SecurityContext};
use super::origin_map::{self, OriginMap};
use super::state::{Limits, OriginState, Protocol};
use super::{
    lease_table, lock, origin_memo, partition, prefetch, Guarded, Origin, OriginRef, Pool,
};
use crate::connect::Connector;
use crate::error::Error;
use crate::stats::Counters;

impl Pool {
    pub(super) fn read_origins(&self) -> std::sync::RwLockReadGuard<'_, OriginMap> {
        self.inner.origins.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write_origins(&self) -> std::sync::RwLockWriteGuard<'_, OriginMap> {
        self.inner
            .origins
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The origin `uri` goes to, lent for one checkout: see "Who keeps an
    /// origin alive" above. By its spelling when seen before (the hot path:
    /// this thread's memo, which gives back only what it was given for this
    /// pool's id, never reused; else `origin_map`), else by its canonical
    /// key, created on first use.
    #[inline]
    pub(super) fn origin_for(
        &self,
        uri: &http::Uri,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
    ) -> Result<OriginRef<'_>, Error> {
        let scheme = match uri.scheme_str() {
            Some("http") => Some(Scheme::Http),
            Some("https") => Some(Scheme::Https),
            _ => None,
        };
        let spelled = scheme.zip(uri.authority().map(|a| a.as_str()));
        let pool_id = self.inner.id;
        let runtime = partition::current();
        if let Some((scheme, authority)) = spelled {
            let tag = origin_map::tag(scheme, security.id, runtime);
            if let Some(o) = origin_memo::recall(pool_id, tag, authority) {
                // SAFETY: a hit, lent until the `OriginRef` drops: the
                // memo keeps it alive meanwhile, whatever runs on this
                // thread (see `origin_memo`). An `OriginRef` is not `Send`.
                return Ok(unsafe { OriginRef::memo(o) });
            }
            let found = self.read_origins().by_spelling(tag, authority).map(|o| {
                prefetch::origin(o);
                o.clone()
            });
            if let Some(o) = found {
                origin_memo::remember(pool_id, tag, authority, &o);
                return Ok(OriginRef::owned(o));
            }
        }
        let view = KeyView {
            runtime,
            ..PoolKey::view(uri, security.id)?
        };
        // The series' units, before a new origin registers its series
        // (a recorder may fix them at registration), and outside the map's
        // lock: on this slow path only.
        crate::metrics::describe();
        let mut map = self.write_origins();
        let (origin, created) = self.by_key_or_new(&mut map, view, security, connector);
        let spelled = spelled
            .map(|(scheme, authority)| (origin_map::tag(scheme, security.id, runtime), authority));
        if let Some((tag, authority)) = spelled {
            map.learn_spelling(tag, authority, &origin);
        }
        drop(map);
        if let Some((tag, authority)) = spelled {
            origin_memo::remember(pool_id, tag, authority, &origin);
        }
        if created {
            crate::diagnose::pool_met_origin(&origin.label, pool_id, self.inner.built_at);
            if runtime != partition::SHARED {
                self.forget_empty_partitions(&origin);
            }
        }
        Ok(OriginRef::owned(origin))
    }

    /// The origin that takes over from `retired`, forgotten (or being
    /// forgotten) by this pool: the map's current one for its key, created
    /// if there is none yet. (Rare: a checkout that recalled an origin
    /// just as the sweep retired it.)
    #[cold]
    pub(super) fn successor_of(&self, retired: &Arc<Origin>) -> Arc<Origin> {
        // (This thread's memo may still lead to it.)
        origin_memo::clear();
        // (Order and reason as in `forget_unused`.)
        let mut forgotten = lock(&self.inner.forgotten);
        let mut map = self.write_origins();
        match map.by_key(&retired.key as &dyn KeyParts) {
            Some(o) if !Arc::ptr_eq(o, retired) => o.clone(),
            _ => {
                map.forget(std::slice::from_ref(retired));
                let key = &retired.key;
                let origin = self.new_origin(key.parts(), &key.security, &retired.connector);
                map.insert(origin.clone());
                drop(map);
                retired.fold_into(&mut forgotten);
                origin
            }
        }
    }

    /// The origin of `like`'s key in partition `runtime`, made if the map
    /// holds none: for a queued request whose future moved to another
    /// runtime while it waited (`Queued::wait`).
    #[cold]
    pub(super) fn in_partition(&self, like: &Origin, runtime: u64) -> Arc<Origin> {
        let view = KeyView {
            runtime,
            ..like.key.parts()
        };
        let mut map = self.write_origins();
        let (origin, created) =
            self.by_key_or_new(&mut map, view, &like.key.security, &like.connector);
        drop(map);
        // (As `origin_for` does: a partition made here counts as one made.)
        if created && runtime != partition::SHARED {
            self.forget_empty_partitions(&origin);
        }
        origin
    }

    /// The map's origin for `view`, or a new one put in it (`true`).
    fn by_key_or_new(
        &self,
        map: &mut OriginMap,
        view: KeyView<'_>,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
    ) -> (Arc<Origin>, bool) {
        if let Some(o) = map.by_key(&view as &dyn KeyParts) {
            return (o.clone(), false);
        }
        let origin = self.new_origin(view, security, connector);
        map.insert(origin.clone());
        (origin, true)
    }

    fn new_origin(
        &self,
        view: KeyView<'_>,
        security: &Arc<SecurityContext>,
        connector: &Arc<Connector>,
    ) -> Arc<Origin> {
        let key = view.to_owned(security.clone());
        let cfg = &self.inner.config;
        let protocol = if connector.may_multiplex(&key) {
            Protocol::Unknown
        } else {
            Protocol::Http1
        };
        let label: Arc<str> = Arc::from(key.origin());
        Arc::new_cyclic(|this| Origin {
            this: this.clone(),
            label: label.clone(),
            config: cfg.clone(),
            limits: Limits {
                per_host: cfg.max_connections_per_host,
                max_idle: cfg.max_idle_per_host,
                max_pending: cfg.max_pending,
            },
            connector: connector.clone(),
            budget: self.inner.budget.clone(),
            guarded: Mutex::new(Guarded {
                state: {
                    let mut state = OriginState::new(protocol);
                    state.http2_only = connector.only_multiplex();
                    state
                },
                leases: lease_table::LeaseTable::default(),
                reused: 0,
                dns_addrs: None,
            }),
            counters: Counters::new(&key.host, key.port, key.scheme.as_str(), label),
            dns_seen: AtomicU64::new(0),
            dns_checked_ns: AtomicU64::new(0),
            expect_100: AtomicU64::new(0),
            host_header: std::sync::OnceLock::new(),
            unused_since_ns: AtomicU64::new(0),
            unused_uses: AtomicU64::new(0),
            folded: AtomicBool::new(false),
            dns_name: dns_name(&key),
            key,
        })
    }

    /// The origins known now (a snapshot: the map lock is not held after).
    pub(super) fn origins(&self) -> Vec<Arc<Origin>> {
        self.read_origins().values().cloned().collect()
    }
}

/// The name whose DNS `key`'s connections follow (see `Origin::dns_name`).
fn dns_name(key: &PoolKey) -> Option<(Box<str>, u16)> {
    match key.security.settings.proxy.as_deref() {
        None => Some((Box::from(&*key.host), key.port)),
        Some(url) => {
            // (An unparsable proxy fails every dial with its own error.)
            let url = crate::connect::proxy::ProxyUrl::parse(url).ok()?;
            let literal = url.host().parse::<std::net::IpAddr>().is_ok();
            (!literal).then(|| (url.host().into(), url.port()))
        }
    }
}
