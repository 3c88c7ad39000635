//! Dials and the waiters they are for: a failed dial leaves no waiter
//! without one, and a dial whose waiter was served otherwise, or gave up,
//! still covers the next waiter in line (real loopback servers).

use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::TestServer;

mod common;

/// Resolves to `addr`, except that call number `slow_fail` (0-based)
/// fails after `delay`.
struct FlakyResolver {
    addr: std::net::SocketAddr,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    slow_fail: usize,
    delay: Duration,
}

impl freshpool::Resolve for FlakyResolver {
    fn resolve(&self, _host: &str, _port: u16) -> freshpool::ResolveFuture {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (addr, delay, fail) = (self.addr, self.delay, n == self.slow_fail);
        Box::pin(async move {
            if fail {
                tokio::time::sleep(delay).await;
                return Err(std::io::Error::other("flaky DNS (test)"));
            }
            Ok(vec![addr])
        })
    }
}

/// Library bug (reported; model: `pool::model_tests::
/// failed_dial_for_a_served_waiter_leaves_the_next_waiter_without_a_dial`):
/// requests A and B each start a dial; B's dial lands first and, FIFO, the
/// connection goes to A; then A's dial fails. `fail_waiter(A)` finds
/// nobody, and B stays marked `dialing` with no dial in flight: it waits
/// for `pool_timeout` although a slot is free, and so does every request
/// that arrives while B waits.
#[test]
fn a_failed_dial_does_not_strand_the_next_waiter() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = TestServer::http1().await;
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client = Client::builder()
            .max_connections_per_host(2)
            .pool_timeout(Duration::from_secs(2))
            .proxy_from_env(false)
            .resolver(FlakyResolver {
                addr: server.addr(),
                calls: calls.clone(),
                slow_fail: 0,
                delay: Duration::from_millis(200),
            })
            .build()
            .unwrap();
        let url = |p: &str| format!("http://fake.test:{}{p}", server.addr().port());
        // A: holds whatever connection it gets for 3 s.
        let a = {
            let (c, u) = (client.clone(), url("/delay/3000"));
            tokio::spawn(async move { c.get(&u).await?.into_body().bytes().await })
        };
        // A's dial must be the one that fails: wait until it has asked the
        // resolver (a fixed sleep could end first on a loaded machine, and
        // B's dial would then take the failing lookup).
        freshpool_testkit::eventually("A's dial resolving", || {
            calls.load(std::sync::atomic::Ordering::SeqCst) == 1
        })
        .await;
        // B: its dial lands first (and serves A); A's dial then fails.
        let started = std::time::Instant::now();
        let b = client.get(&url("/")).await;
        let waited = started.elapsed();
        assert!(
            // (The bug: `pool_timeout`, 2 s.)
            b.is_ok() && waited < Duration::from_millis(1900),
            "B waited {waited:?} with a slot free: {:?}\n{}",
            b.err(),
            client.stats()
        );
        let _ = a.await;
    });
}

/// A dial still under way covers the next waiter in line when the waiter
/// it was started for got a returned connection instead: that waiter's
/// `pool_timeout` is then a connect's wait, and the dial serves it. (It
/// failed with `PoolTimeout` while the dial it would get was landing: the
/// mark of "has a dial" left the queue with the waiter served otherwise.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_whose_waiter_was_served_otherwise_covers_the_next_one() {
    let server = TestServer::http1().await;
    let s = common::behind_a_slow_dial(Client::builder(), server.addr()).await;
    // The held connection comes back and goes to W1, the oldest.
    s.held.into_body().bytes().await.unwrap();
    let _w1 =
        s.w1.await
            .unwrap()
            .expect("W1 served by the returned connection");
    let w2 = s.w2.await.unwrap();
    assert!(w2.is_ok(), "{:?}\n{}", w2.err(), s.client.stats());
    assert_eq!(server.stats().connections_accepted(), 2);
}

/// The same when the waiter a dial was started for gives up: the dial goes
/// on, and covers the next waiter in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_whose_waiter_gave_up_covers_the_next_one() {
    let server = TestServer::http1().await;
    let s = common::behind_a_slow_dial(Client::builder(), server.addr()).await;
    s.w1.abort();
    let w2 = s.w2.await.unwrap();
    assert!(w2.is_ok(), "{:?}\n{}", w2.err(), s.client.stats());
    assert_eq!(server.stats().connections_accepted(), 2);
}
