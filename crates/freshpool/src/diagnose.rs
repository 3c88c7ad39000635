//! Process-wide diagnosis of the pool-per-request anti-pattern.
//!
//! A pool is worth having only if it is shared. When many pools in one
//! process each open connections to the same origin, someone is building a
//! client per request (the failure behind 30 s connect timeouts under bursts
//! of 6-9 calls). We count, per origin, how many pools have connected to it
//! and warn once, naming the code that builds the clients.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Pools per origin at which we warn.
pub(crate) const POOLS_PER_ORIGIN_WARNING: usize = 10;

static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// How many pool-per-request warnings this process has logged.
///
/// ```
/// assert_eq!(freshpool::pool_per_request_warnings(), 0);
/// ```
pub fn pool_per_request_warnings() -> u64 {
    WARNINGS.load(Ordering::Relaxed)
}

/// Called when a pool uses an origin for the first time (a cold path).
pub(crate) fn pool_met_origin(origin: &str, built_at: &'static Location<'static>) {
    static SEEN: OnceLock<Mutex<HashMap<String, (usize, bool)>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let entry = seen.entry(origin.to_owned()).or_insert((0, false));
    entry.0 += 1;
    if entry.0 >= POOLS_PER_ORIGIN_WARNING && !entry.1 {
        entry.1 = true;
        WARNINGS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            origin,
            pools = entry.0,
            client_built_at = %built_at,
            "{} separate connection pools have connected to {origin}: a Client is being built per \
             request (last at {built_at}). Build one Client and clone it; clones share one pool.",
            entry.0
        );
    }
}
