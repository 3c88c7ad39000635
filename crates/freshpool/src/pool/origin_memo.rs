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
//! spelling (scheme, security context, authority bytes) goes to changes
//! only when the pool forgets an unused origin (`Pool::forget_unused`),
//! and a forgotten origin is retired first: a checkout that recalls one
//! finds it retired under its lock and takes the pool's current origin
//! for that key instead (`Pool::take`), clearing the memo. The map
//! resolves a spelling through its canonical key, which depends on nothing
//! else (see `origin_map`). The memo is keyed by the pool's id (unique in
//! the process, never reused), so it cannot serve one pool's origin to
//! another.
//!
//! It holds a counted reference to the origin: a hit lends the origin out
//! for as long as this thread's memo is not replaced (until its next
//! `remember` or `clear`), without counting one per hit (a `Weak` here
//! cost an atomic update per hit, to upgrade it, and two per miss). The
//! reference keeps at most one origin per thread alive after the pool
//! forgot it or dropped: memory, not connections (a dropped pool's origins
//! are retired and emptied; a forgotten one was empty), given back at the
//! thread's next miss.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// See the module doc.
    origin: Option<Arc<Origin>>,
}

thread_local! {
    static LAST: RefCell<Memo> = const {
        RefCell::new(Memo {
            pool: 0,
            tag: 0,
            authority: String::new(),
            origin: None,
        })
    };
}

/// The origin this thread last found for this spelling in this pool.
///
/// It stays valid until this thread's next `remember` or `clear`: the memo
/// holds a reference to it.
#[inline]
pub(super) fn recall(pool: u64, tag: u64, authority: &str) -> Option<*const Origin> {
    LAST.try_with(|memo| {
        let memo = memo.try_borrow().ok()?;
        if memo.pool == pool && memo.tag == tag && memo.authority == authority {
            memo.origin.as_ref().map(Arc::as_ptr)
        } else {
            None
        }
    })
    .ok()
    .flatten()
}

/// Remembers `origin` as the one this spelling goes to in this pool.
/// Returns whether it did (the caller's borrow of `origin` may then rest
/// on the memo's reference, until this thread's next `remember`).
pub(super) fn remember(pool: u64, tag: u64, authority: &str, origin: &Arc<Origin>) -> bool {
    // (An authority this long is not worth keeping a buffer for.)
    if authority.len() > 255 {
        return false;
    }
    let replaced = LAST.try_with(|memo| {
        let mut memo = memo.try_borrow_mut().ok()?;
        memo.pool = pool;
        memo.tag = tag;
        memo.authority.clear();
        memo.authority.push_str(authority);
        Some(memo.origin.replace(origin.clone()))
    });
    // (Dropped outside the memo's borrow: the last reference to an origin
    // drops its state, and nothing of that may find the memo borrowed.)
    match replaced {
        Ok(Some(old)) => {
            drop(old);
            true
        }
        _ => false,
    }
}

/// Forgets this thread's memo (its origin was retired).
pub(super) fn clear() {
    let old = LAST
        .try_with(|memo| {
            let mut memo = memo.try_borrow_mut().ok()?;
            memo.pool = 0;
            memo.origin.take()
        })
        .ok()
        .flatten();
    drop(old);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::origin_of;
    use std::sync::Arc;

    fn memo_points_at(origin: &Arc<Origin>) -> bool {
        LAST.with(|m| {
            m.borrow()
                .origin
                .as_ref()
                .is_some_and(|o| Arc::ptr_eq(o, origin))
        })
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

    /// A memo keeps at most its one origin alive past its pool, and gives
    /// it up at the thread's next miss.
    #[test]
    fn the_memo_keeps_no_more_than_its_last_origin_alive() {
        let client = crate::Client::new();
        let origin = origin_of(&client, "http://memo.test/");
        assert!(memo_points_at(&origin));
        let weak = Arc::downgrade(&origin);
        drop(origin);
        drop(client);
        assert!(weak.upgrade().is_some(), "the memo holds its origin");
        let other = crate::Client::new();
        let _ = origin_of(&other, "http://other.memo.test/");
        assert!(weak.upgrade().is_none(), "kept past the next miss");
    }

    #[test]
    fn clear_gives_the_origin_up() {
        let client = crate::Client::new();
        let origin = origin_of(&client, "http://memo.test/");
        let weak = Arc::downgrade(&origin);
        let tag =
            super::super::origin_map::tag(super::super::Scheme::Http, client.inner().security.id);
        let pool = client.pool().inner.id;
        assert!(recall(pool, tag, "memo.test").is_some());
        clear();
        assert!(recall(pool, tag, "memo.test").is_none());
        drop(origin);
        client
            .pool()
            .write_origins()
            .forget(&[weak.upgrade().unwrap()]);
        assert!(weak.upgrade().is_none(), "nothing else held it");
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
