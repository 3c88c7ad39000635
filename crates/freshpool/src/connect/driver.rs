//! A connection's driver task, and what it tells when it is dropped
//! before its connection ended.
//!
//! hyper runs a connection as a future (`Connection`) that some task must
//! poll; the pool spawns one per connection, on the runtime that dialed
//! it. When that runtime shuts down (a runtime per call in a blocking
//! wrapper, a client shared by several `#[tokio::test]`s), the task is
//! dropped with the connection in it, and a response body still arriving
//! on it ends early with hyper's "connection closed before message
//! completed": the same words as a server that hung up mid-body. The
//! wrapper here marks the connection's [`DriverLost`] before the
//! connection is dropped, so the body that breaks can say why.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// Set when a connection's driver task was dropped before the connection
/// ended: its runtime shut down (or code it ran panicked). Not the
/// server's doing.
#[derive(Debug, Default)]
pub(crate) struct DriverLost(AtomicBool);

impl DriverLost {
    /// Whether the driver was dropped before the connection ended.
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pin_project_lite::pin_project! {
    /// `conn`, polled to its end; dropped before it, it marks `lost`
    /// first, then drops `conn` (whose body readers then wake and find the
    /// mark).
    pub(crate) struct Driver<F, L: AsRef<DriverLost>> {
        #[pin]
        conn: F,
        lost: L,
        ended: bool,
    }

    impl<F, L: AsRef<DriverLost>> PinnedDrop for Driver<F, L> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.ended {
                this.lost.as_ref().0.store(true, Ordering::Release);
            }
        }
    }
}

impl<F, L: AsRef<DriverLost>> Driver<F, L> {
    pub(crate) fn new(conn: F, lost: L) -> Self {
        Driver {
            conn,
            lost,
            ended: false,
        }
    }
}

impl<F: Future, L: AsRef<DriverLost>> Future for Driver<F, L> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.conn.poll(cx));
        *this.ended = true;
        Poll::Ready(out)
    }
}

/// The executor an HTTP/2 connection's hyper parts run on: tokio's, each
/// future inside a [`Driver`] that marks the connection's `DriverLost`.
/// hyper spawns the task that reads and writes the socket (h2's
/// connection, whose drop ends every body on it) through this executor,
/// apart from the future the pool drives itself; at a runtime's shutdown
/// tokio drops tasks in no set order, so each must mark before it drops
/// what it holds. (A future hyper spawns ends unless its runtime shuts
/// down: dropped unfinished, it marks rightly.)
#[derive(Clone)]
pub(crate) struct MarkingExecutor<L>(pub(crate) L);

impl<F, L> hyper::rt::Executor<F> for MarkingExecutor<L>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    L: AsRef<DriverLost> + Clone + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Driver::new(fut, self.0.clone()));
    }
}
