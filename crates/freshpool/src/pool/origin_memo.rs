//! Each thread remembers the last origin it looked up, by spelling.
//!
//! Why: every checkout must find its origin, and the shared map behind a
//! `RwLock` costs two atomic updates on one cache line that every thread
//! writes (the lock's reader count) plus a hash and a probe. Services send
//! runs of requests to the same origin, so a one-entry memo per thread,
//! checked by plain comparisons, serves most lookups without touching
//! anything shared. A miss costs a comparison and then the map, as before.
//!
//! Invariant that makes a memo never wrong: within one pool, the origin a
//! spelling (scheme, security context, authority bytes) goes to never
//! changes. Origins are never removed from a live pool's map, and the map
//! resolves a spelling through its canonical key, which depends on nothing
//! else (see `origin_map`). The memo is keyed by the pool's id (unique in
//! the process, never reused), so it cannot serve one pool's origin to
//! another. It holds the origin's address, no reference: the pool keeps
//! its origins alive, and lends a recalled one out only while it is
//! itself borrowed (`Pool::borrow_origin`). So a memo never keeps an origin
//! alive, and neither a hit nor a miss counts a reference (a `Weak` here
//! cost an atomic update per hit, to upgrade it, and two per miss).

use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Origin;

/// A fresh pool id: never 0 (the empty memo's), never reused.
pub(super) fn next_pool_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Memo {
    pool: u64,
    tag: u64,
    /// Reused across misses (cleared and refilled, not reallocated).
    authority: String,
    /// Not dereferenced here: see the module doc.
    origin: *const Origin,
}

thread_local! {
    static LAST: RefCell<Memo> = const {
        RefCell::new(Memo {
            pool: 0,
            tag: 0,
            authority: String::new(),
            origin: ptr::null(),
        })
    };
}

/// The origin this thread last found for this spelling in this pool.
#[inline]
pub(super) fn recall(pool: u64, tag: u64, authority: &str) -> Option<*const Origin> {
    LAST.try_with(|memo| {
        let memo = memo.try_borrow().ok()?;
        (memo.pool == pool && memo.tag == tag && memo.authority == authority).then_some(memo.origin)
    })
    .ok()
    .flatten()
}

/// Remembers `origin` as the one this spelling goes to in this pool.
pub(super) fn remember(pool: u64, tag: u64, authority: &str, origin: *const Origin) {
    // (An authority this long is not worth keeping a buffer for.)
    if authority.len() > 255 {
        return;
    }
    let _ = LAST.try_with(|memo| {
        if let Ok(mut memo) = memo.try_borrow_mut() {
            memo.pool = pool;
            memo.tag = tag;
            memo.authority.clear();
            memo.authority.push_str(authority);
            memo.origin = origin;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::origin_of;
    use std::sync::Arc;

    fn memo_points_at(origin: &Arc<Origin>) -> bool {
        LAST.with(|m| m.borrow().origin == Arc::as_ptr(origin))
    }

    #[test]
    fn a_hit_is_the_origin_the_map_holds() {
        let client = crate::Client::new();
        let first = origin_of(&client, "http://memo.test/");
        assert!(memo_points_at(&first), "a lookup is remembered");
        // Served from the memo now: the same origin the map holds.
        let again = origin_of(&client, "http://memo.test/x");
        assert!(Arc::ptr_eq(&first, &again));
        let map = client.pool().read_origins();
        let held = map.by_spelling(
            super::super::Scheme::Http,
            client.inner().security.id,
            "memo.test",
        );
        assert!(Arc::ptr_eq(&first, held.unwrap()));
    }

    #[test]
    fn another_pool_never_gets_this_pools_origin() {
        let a = crate::Client::new();
        let b = crate::Client::new();
        let in_a = origin_of(&a, "http://memo.test/");
        // Same thread, same spelling, same (default) security context.
        let in_b = origin_of(&b, "http://memo.test/");
        assert!(!Arc::ptr_eq(&in_a, &in_b));
        assert!(Arc::ptr_eq(&in_a, &origin_of(&a, "http://memo.test/")));
        assert_eq!(b.pool().read_origins().values().count(), 1);
    }

    #[test]
    fn the_memo_does_not_keep_an_origin_alive() {
        let client = crate::Client::new();
        let origin = origin_of(&client, "http://memo.test/");
        assert!(memo_points_at(&origin));
        let weak = Arc::downgrade(&origin);
        drop(origin);
        drop(client);
        assert!(weak.upgrade().is_none(), "origin outlived its pool");
    }

    #[test]
    fn alternating_spellings_each_find_their_own_origin() {
        let client = crate::Client::new();
        let a = origin_of(&client, "http://a.memo.test/");
        let b = origin_of(&client, "http://b.memo.test/");
        for _ in 0..3 {
            assert!(Arc::ptr_eq(&a, &origin_of(&client, "http://a.memo.test/")));
            assert!(Arc::ptr_eq(&b, &origin_of(&client, "http://b.memo.test/")));
            assert!(!Arc::ptr_eq(
                &a,
                &origin_of(&client, "https://a.memo.test/")
            ));
        }
    }
}
