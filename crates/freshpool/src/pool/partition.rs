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
//! and statistics entry; the total limit still bounds them all. A
//! current-thread runtime's connections close when it is dropped, and its
//! partition is forgotten once unused (`forget_origin_after`).
//!
//! Cost: asking tokio which runtime runs the caller clones its handle (an
//! atomic count every worker of a multi-thread runtime shares), so each
//! thread remembers the answer for the last task that asked: a task never
//! changes runtime, and a task usually sends many requests. (tokio's task
//! ids come from a process-wide counter; its docs allow an id to be reused
//! once its task and handles are gone. A reuse on another runtime, on the
//! same thread, would send that task's requests to the other partition
//! until it asks from a new task: the behaviour every request had before.)

use std::cell::Cell;
use std::hash::{Hash, Hasher};

use tokio::runtime::{Handle, RuntimeFlavor};

/// The partition of checkouts that are not on a current-thread runtime.
pub(crate) const SHARED: u64 = 0;

/// The partition the caller's checkouts use (see the module doc).
#[inline]
pub(crate) fn current() -> u64 {
    thread_local! {
        static LAST: Cell<Option<(tokio::task::Id, u64)>> = const { Cell::new(None) };
    }
    let Some(task) = tokio::task::try_id() else {
        // (Directly in a `block_on`, or outside any runtime.)
        return of_runtime();
    };
    if let Ok(Some((seen, partition))) = LAST.try_with(Cell::get) {
        if seen == task {
            return partition;
        }
    }
    let partition = of_runtime();
    let _ = LAST.try_with(|last| last.set(Some((task, partition))));
    partition
}

#[cold]
fn of_runtime() -> u64 {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::CurrentThread => {
            number(handle.id())
        }
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

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

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

    /// A task's remembered answer is not another task's: a thread that
    /// drives two runtimes in turn gives each its own.
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
    }
}
