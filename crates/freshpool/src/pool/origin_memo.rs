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
//! spelling (scheme, security context, runtime partition, authority bytes) goes to changes
//! only when the pool forgets an unused origin (`Pool::forget_unused`),
//! and a forgotten origin is retired first: a checkout that recalls one
//! finds it retired under its lock and takes the pool's current origin
//! for that key instead (`Pool::take`), clearing the memo. The map
//! resolves a spelling through its canonical key, which depends on nothing
//! else (see `origin_map`). The memo is keyed by the pool's id (unique in
//! the process, never reused), so it cannot serve one pool's origin to
//! another.
//!
//! It holds a counted reference to the origin, and a hit lends the origin
//! out without counting one (a `Weak` here cost an atomic update per hit,
//! to upgrade it, and two per miss). What keeps a lent origin alive is the
//! memo's reference, and the memo does not let go of one while any hit is
//! lent out on its thread: hits are counted in a plain thread-local
//! (`LENT`, no atomics), and an origin the memo replaces meanwhile is
//! parked until the count is back at zero. That holds whatever runs while
//! a hit is lent, user code included (a resolver, a tracing subscriber)
//! that may itself make requests on this thread.
//!
//! The reference keeps at most one origin per thread alive after the pool
//! forgot it or dropped (and what the origin holds: its connector, with
//! the client's TLS settings and resolver): memory, not connections (a
//! dropped pool's origins are retired and emptied; a forgotten one was
//! empty), given back at the thread's next miss, or when the thread ends.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::origin_map::Tag;
use super::Origin;

/// A fresh pool id: never 0 (the empty memo's), never reused.
pub(super) fn next_pool_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Memo {
    pool: u64,
    tag: Tag,
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
    /// Hits lent out on this thread (`recall`) and not given back yet.
    static LENT: Cell<usize> = const { Cell::new(0) };
    /// Origins the memo let go of while hits were lent: dropped once none
    /// are. (`ANY_PARKED` spares the hot path a look at the list.)
    static PARKED: RefCell<Vec<Arc<Origin>>> = const { RefCell::new(Vec::new()) };
    static ANY_PARKED: Cell<bool> = const { Cell::new(false) };
}

/// The origin this thread last found for this spelling in this pool, lent
/// out: it stays alive until `give_back` (see the module doc).
#[inline]
pub(super) fn recall(pool: u64, tag: Tag, authority: &str) -> Option<*const Origin> {
    let hit = LAST
        .try_with(|memo| {
            let memo = memo.try_borrow().ok()?;
            if memo.pool == pool && memo.tag == tag && memo.authority == authority {
                memo.origin.as_ref().map(Arc::as_ptr)
            } else {
                None
            }
        })
        .ok()
        .flatten();
    if hit.is_some() {
        LENT.with(|n| n.set(n.get() + 1));
    }
    hit
}

/// A hit of `recall` is no longer used.
#[inline(always)]
pub(super) fn give_back() {
    let left = LENT.with(|n| {
        let left = n.get() - 1;
        n.set(left);
        left
    });
    if left == 0 && ANY_PARKED.with(Cell::get) {
        drop_parked();
    }
}

#[cold]
#[inline(never)]
fn drop_parked() {
    ANY_PARKED.with(|p| p.set(false));
    let parked = PARKED
        .try_with(|p| p.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)))
        .ok()
        .and_then(Result::ok);
    // (Out of the list first: dropping an origin may run code that
    // recalls, remembers and lets go again on this thread.)
    drop(parked);
}

/// Lets go of an origin the memo held: now, or parked while hits are lent.
fn let_go(old: Arc<Origin>) {
    if LENT.with(Cell::get) == 0 {
        drop(old);
        return;
    }
    let mut old = Some(old);
    let _ = PARKED.try_with(|p| {
        if let Ok(mut parked) = p.try_borrow_mut() {
            parked.extend(old.take());
        }
    });
    match old {
        // (The thread is ending and the list is gone: kept for good rather
        // than freed under a lent hit.)
        Some(old) => std::mem::forget(old),
        None => ANY_PARKED.with(|p| p.set(true)),
    }
}

/// Remembers `origin` as the one this spelling goes to in this pool.
pub(super) fn remember(pool: u64, tag: Tag, authority: &str, origin: &Arc<Origin>) {
    // (An authority this long is not worth keeping a buffer for.)
    if authority.len() > 255 {
        return;
    }
    let replaced = LAST.try_with(|memo| {
        let mut memo = memo.try_borrow_mut().ok()?;
        memo.pool = pool;
        memo.tag = tag;
        memo.authority.clear();
        memo.authority.push_str(authority);
        Some(memo.origin.replace(origin.clone()))
    });
    // (Let go outside the memo's borrow: the last reference to an origin
    // drops its state, and nothing of that may find the memo borrowed.)
    if let Ok(Some(Some(old))) = replaced {
        let_go(old);
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
    if let Some(old) = old {
        let_go(old);
    }
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

    /// The spelling tag of an `http` URI in `client`'s shared partition
    /// (these tests run outside any runtime).
    fn http_tag(client: &crate::Client) -> Tag {
        super::super::origin_map::tag(
            super::super::key::Scheme::Http,
            client.inner().security.id,
            super::super::partition::SHARED,
        )
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
        let held = map.by_spelling(http_tag(&client), "memo.test");
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
        let tag = http_tag(&client);
        let pool = client.pool().inner.id;
        assert!(recall(pool, tag, "memo.test").is_some());
        give_back();
        clear();
        assert!(recall(pool, tag, "memo.test").is_none());
        // (As the sweep does: retired, then out of the map.)
        origin.lock().state.retired = true;
        client.pool().write_origins().forget(&[origin]);
        assert!(weak.upgrade().is_none(), "nothing else held it");
    }

    /// A hit stays alive while lent, even when the memo lets go of it
    /// meanwhile and nothing else holds it: code running on this thread
    /// during a checkout (a resolver, a tracing subscriber) may make
    /// requests of its own, whose lookups replace the memo.
    #[test]
    fn a_lent_origin_outlives_the_memo_letting_go() {
        let client = crate::Client::new();
        let origin = origin_of(&client, "http://lent.test/");
        let weak = Arc::downgrade(&origin);
        origin.lock().state.retired = true;
        client.pool().write_origins().forget(&[origin]);
        let tag = http_tag(&client);
        let lent = recall(client.pool().inner.id, tag, "lent.test").expect("a hit");
        assert!(std::ptr::eq(lent, weak.as_ptr()));
        // Another lookup on this thread replaces the memo: only the lent
        // hit is left to keep the origin.
        let _ = origin_of(&client, "http://other.test/");
        assert!(weak.upgrade().is_some(), "freed while lent");
        give_back();
        assert!(weak.upgrade().is_none(), "kept once given back");
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
