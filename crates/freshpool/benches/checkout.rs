//! Checkout + return of an idle connection, uncontended and with 2/8/64
//! contending tasks (`cargo bench -p freshpool --bench checkout`).
//!
//! Uses the hidden `Client::__checkout_release` hook: one checkout and one
//! release of a pooled connection, no bytes sent. The pool is warmed first
//! so every checkout finds an idle connection (the benches assert that the
//! connection was reused). Like the request path, the hook takes and gives
//! back a free connection before it returns, and builds a future only for
//! a checkout that must queue; the future it returns otherwise only hands
//! over the outcome (until 2026-12-03 it was an `async` block holding the
//! lease: ~28 of 784 instructions per operation were its moves).
//!
//! * `checkout_release/uncontended`: one task, one thread.
//! * `checkout_release/contended/N`: N tasks on a 2-worker runtime (this
//!   machine has 2 cores), each looping checkout+release and yielding to the
//!   scheduler every 16 operations so all N interleave. The time reported
//!   is wall time / total operations, i.e. the amortised cost of one
//!   checkout+return while N tasks hammer the same origin.
//! * `checkout_release/yield_baseline/N`: the same loop without the pool
//!   (only the yields), to show how much of the contended number is the
//!   scheduler rather than the pool.
//! * `checkout_release/harness_baseline`: the uncontended loop with a
//!   future that does no pool work: what criterion's async iteration adds
//!   to the uncontended number.
//! * `checkout_release/lock_floor`: two uncontended lock/unlock pairs of a
//!   `std::sync::Mutex`, in the same async loop: what the pool's two lock
//!   domains (the origin's, taken once to check out and once to return)
//!   cost before any pool work. Each pair is two atomic read-modify-writes;
//!   on a virtualised host these dominate (see BENCHMARKS.md).
//! * `checkout_release/caching_resolver/{uncontended,contended/64}`: the
//!   same through a `CachingResolver` and a host name, so the pool's DNS
//!   check (`Origin::follow_dns`) runs as it does for such clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use freshpool::{CachingResolver, Client, Resolve, ResolveFuture};
use freshpool_testkit::TestServer;
use http::Uri;
use tokio::runtime::Runtime;

const YIELD_EVERY: u64 = 16;

fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Opens `n` connections at once (each request holds its connection for
/// 100 ms, so all `n` overlap), then lets them go idle.
async fn warm(client: &Client, server: &TestServer, n: usize) {
    warm_uri(client, &server.url("/").parse().expect("uri"), n).await
}

/// `warm` for any URI of the test server's.
async fn warm_uri(client: &Client, uri: &Uri, n: usize) {
    let url = format!("{uri}delay/100");
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let response = client.get(&url).await.expect("warm request");
            response.into_body().bytes().await.expect("warm body");
        }));
    }
    for t in tasks {
        t.await.expect("warm task");
    }
    let open = client.stats().open_connections;
    assert!(open >= n.min(64), "warmed {open} connections, wanted {n}");
}

/// Every host name is the test server.
struct Fixed(SocketAddr);
impl Resolve for Fixed {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let addr = self.0;
        Box::pin(async move { Ok(vec![addr]) })
    }
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// One task, checkout+release in a loop.
fn uncontended(group: &mut Group<'_>, name: &str, rt: &Runtime, client: &Client, uri: &Uri) {
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| {
            let f = client.__checkout_release(uri);
            async move {
                let reused = f.await.expect("checkout");
                debug_assert!(reused);
                reused
            }
        })
    });
}

/// `tasks` tasks on the 2-worker runtime, each looping checkout+release
/// and yielding every YIELD_EVERY operations.
fn contended(
    group: &mut Group<'_>,
    name: &str,
    tasks: u64,
    rt: &Runtime,
    client: &Client,
    uri: &Uri,
) {
    group.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, &tasks| {
        let uri = Arc::new(uri.clone());
        b.to_async(rt).iter_custom(|iters| {
            let client = client.clone();
            let uri = uri.clone();
            async move {
                let start = Instant::now();
                let mut handles = Vec::with_capacity(tasks as usize);
                for k in 0..tasks {
                    let client = client.clone();
                    let uri = uri.clone();
                    let n = split(iters, tasks, k);
                    handles.push(tokio::spawn(async move {
                        for i in 0..n {
                            let reused = client.__checkout_release(&uri).await.expect("checkout");
                            assert!(reused, "a checkout dialed: pool not warm");
                            if i % YIELD_EVERY == YIELD_EVERY - 1 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }));
                }
                for h in handles {
                    h.await.expect("task");
                }
                start.elapsed()
            }
        })
    });
}

fn split(iters: u64, tasks: u64, k: u64) -> u64 {
    iters / tasks + u64::from(k < iters % tasks)
}

fn bench(c: &mut Criterion) {
    let server_rt = runtime(1);
    let server = server_rt.block_on(TestServer::http1());
    let rt = runtime(2);
    let client = Client::builder().build().expect("client");
    rt.block_on(warm(&client, &server, 64));
    let uri: Uri = server.url("/").parse().expect("uri");
    // Sanity: the hook reuses a pooled connection.
    assert!(rt
        .block_on(client.__checkout_release(&uri))
        .expect("checkout"));

    let mut group = c.benchmark_group("checkout_release");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));

    uncontended(&mut group, "uncontended", &rt, &client, &uri);
    // The uncontended loop without the pool: criterion's async iteration
    // (one future made, polled to completion and dropped per iteration),
    // which the uncontended number includes.
    group.bench_function("harness_baseline", |b| {
        b.to_async(&rt)
            .iter(|| async { std::hint::black_box(true) })
    });
    // The floor of any pool that takes a lock to check out and another to
    // return (freshpool's origin lock): two uncontended pairs, nothing else.
    let lock = std::sync::Mutex::new(0u64);
    group.bench_function("lock_floor", |b| {
        b.to_async(&rt).iter(|| {
            *std::hint::black_box(&lock).lock().expect("lock") += 1;
            *std::hint::black_box(&lock).lock().expect("lock") += 1;
            async { std::hint::black_box(true) }
        })
    });
    for tasks in [2u64, 8, 64] {
        contended(&mut group, "contended", tasks, &rt, &client, &uri);
        group.bench_with_input(
            BenchmarkId::new("yield_baseline", tasks),
            &tasks,
            |b, &tasks| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let start = Instant::now();
                    let mut handles = Vec::with_capacity(tasks as usize);
                    for k in 0..tasks {
                        let n = split(iters, tasks, k);
                        handles.push(tokio::spawn(async move {
                            for i in 0..n {
                                std::hint::black_box(i);
                                if i % YIELD_EVERY == YIELD_EVERY - 1 {
                                    tokio::task::yield_now().await;
                                }
                            }
                        }));
                    }
                    for h in handles {
                        h.await.expect("task");
                    }
                    start.elapsed()
                })
            },
        );
    }
    // The same through a `CachingResolver` (a host name, so the pool asks
    // the resolver whether DNS moved: `Origin::follow_dns`).
    let cached = Client::builder()
        .proxy_from_env(false)
        .resolver(CachingResolver::new(Fixed(server.addr())))
        .build()
        .expect("client");
    let named: Uri = format!("http://app.test:{}/", server.addr().port())
        .parse()
        .expect("uri");
    rt.block_on(warm_uri(&cached, &named, 64));
    uncontended(
        &mut group,
        "caching_resolver/uncontended",
        &rt,
        &cached,
        &named,
    );
    contended(
        &mut group,
        "caching_resolver/contended",
        64,
        &rt,
        &cached,
        &named,
    );
    group.finish();
    let stats = client.stats();
    eprintln!(
        "checkout bench: open connections {} (created {}, reused {})",
        stats.open_connections,
        stats.origins.iter().map(|o| o.created).sum::<u64>(),
        stats.origins.iter().map(|o| o.reused).sum::<u64>()
    );
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
