//! Which connections a checkout may use: those of its current-thread
//! runtime, or the shared ones.
//!
//! Why: a connection is driven by a task on the runtime that opened it
//! (hyper's dispatcher: it writes requests and reads responses). A
//! multi-thread runtime runs its tasks as long as it lives, so any caller
//! may use its connections. A current-thread runtime runs its tasks only
//! while some thread is inside its `block_on`. A request from elsewhere
//! (another runtime, a `block_on` of another current-thread runtime) that
//! lands on such a connection waits until that runtime is driven again:
//! with no `timeout`, for good. hyper-util's pool (so reqwest's) does this
//! (reqwest issue 2501: a client used once in a current-thread runtime
//! then times out in any other).
//!
//! Rule: a checkout on a current-thread runtime takes and opens connections
//! of that runtime's own partition of the origin (the pool key carries the
//! runtime: see `PoolKey::runtime`); every other checkout (a multi-thread
//! runtime's, or one outside any runtime) uses the shared partition. Each
//! partition is an origin of its own, with its own per-host limit, queue
//! and statistics entry; the total limit still bounds them all. Where it
//! is enforced: the key (`origin_for`), and `Origin::spawn_dials`, which
//! dials only on a runtime of the origin's partition (a slot freed by
//! another runtime's task sends the waiters back to ask again from their
//! own). A current-thread runtime's connections close when it is dropped;
//! its partition is forgotten once found unused at two looks, each when
//! another such partition is made (`Pool::forget_empty_partitions`: a
//! runtime per call runs no sweeps) or by the sweep.
//!
//! Cost: tokio tells which runtime runs the caller only by a clone of its
//! handle (an atomic count that every worker of a multi-thread runtime
//! shares), about 20 ns per checkout (`checkout_release/uncontended`,
//! 113 -> 132 ns); over whole requests, 64 concurrent on a multi-thread
//! runtime, no change showed in the peers bench. A per-thread memo keyed
//! by the task id was tried and dropped: a task's id stays set inside a
//! nested `block_on` (a sync wrapper run under `block_in_place` or
//! `spawn_blocking`), where the runtime is another one.

use std::hash::{Hash, Hasher};

use tokio::runtime::{Handle, RuntimeFlavor};

/// The partition of checkouts that are not on a current-thread runtime.
pub(crate) const SHARED: u64 = 0;

/// The partition the caller's checkouts use (see the module doc).
pub(crate) fn current() -> u64 {
    Handle::try_current().map_or(SHARED, |handle| of(&handle))
}

/// The partition whose connections `handle`'s runtime may drive.
pub(crate) fn of(handle: &Handle) -> u64 {
    match handle.runtime_flavor() {
        RuntimeFlavor::CurrentThread => number(handle.id()),
        _ => SHARED,
    }
}

/// A runtime's id as a number, never `SHARED`. (tokio shows its ids only by
/// `Display` and `Hash`: an id hashes as the one integer it is, which this
/// hasher keeps; were that to change, equal ids still give equal numbers.)
fn number(id: tokio::runtime::Id) -> u64 {
    struct Keep(u64);
    impl Hasher for Keep {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
        fn finish(&self) -> u64 {
            self.0
        }
    }
    let mut keep = Keep(0);
    id.hash(&mut keep);
    keep.0.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::current_thread;

    #[test]
    fn each_current_thread_runtime_is_a_partition_and_the_rest_share_one() {
        assert_eq!(current(), SHARED, "outside any runtime");
        let (a, b) = (current_thread(), current_thread());
        let in_a = a.block_on(async { current() });
        let in_b = b.block_on(async { current() });
        assert!(in_a != SHARED && in_b != SHARED && in_a != in_b);
        // The same from a task as from `block_on`, and on every call.
        let task = a.block_on(async { tokio::spawn(async { (current(), current()) }).await });
        assert_eq!(task.unwrap(), (in_a, in_a));
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert_eq!(multi.block_on(async { current() }), SHARED);
        let task = multi.block_on(async { tokio::spawn(async { current() }).await });
        assert_eq!(task.unwrap(), SHARED);
    }

    /// A thread that drives two runtimes in turn gives each its own, also
    /// from a `block_on` nested in a task of another runtime (where that
    /// task's id stays set).
    #[test]
    fn a_thread_driving_two_runtimes_in_turn_keeps_them_apart() {
        let (a, b) = (current_thread(), current_thread());
        let mut seen = Vec::new();
        for _ in 0..3 {
            for rt in [&a, &b] {
                seen.push(rt.block_on(async { tokio::spawn(async { current() }).await.unwrap() }));
            }
        }
        assert!(seen[0] != seen[1]);
        assert_eq!(seen, [seen[0], seen[1]].repeat(3));
        // A sync wrapper in `spawn_blocking`, a runtime per call.
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let nested = multi.block_on(async {
            tokio::task::spawn_blocking(|| {
                let outer = current();
                let calls: Vec<u64> = (0..2)
                    .map(|_| current_thread().block_on(async { current() }))
                    .collect();
                (outer, calls)
            })
            .await
            .unwrap()
        });
        assert_eq!(nested.0, SHARED, "the blocking pool's runtime");
        assert!(nested.1[0] != SHARED && nested.1[1] != SHARED && nested.1[0] != nested.1[1]);
    }
}
