//! Scaling curves of the pool (`cargo bench -p freshpool --bench scaling`).
//! Each must stay flat (O(1) or O(log n)) as n grows:
//!
//! 1. `origins`: checkout+return cost with n = 1, 100, 10,000 origins, each
//!    holding one idle connection. Origins are distinct host names
//!    (`http://h{i}.test:PORT/`) that a custom `freshpool::Resolve` maps to
//!    the one test server. Two access patterns: `hot` (always origin 0, the
//!    algorithmic cost) and `rotating` (origin i % n, adds cache misses).
//! 2. `idle`: checkout+return cost with n = 1, 100, 10,000 idle connections
//!    on one origin.
//! 3. `waiters`: with max_connections_per_host(1) and the connection held,
//!    n = 1, 100, 10,000 tasks queue for it; then it is released and the
//!    time until all n were served (each checks out and returns it, which
//!    hands it to the next) is measured; reported per waiter.
//!
//! This is a plain `harness = false` binary, not criterion: every case needs
//! seconds of setup (10,000 sockets) that criterion would repeat. It prints
//! median and worst batch per operation. The server runs in a child process
//! (this binary re-executed with FRESHPOOL_BENCH_ROLE=server) so the 10,000
//! server-side sockets do not count against this process' fd limit; both
//! raise their soft RLIMIT_NOFILE to the hard limit first.
//!
//! Knobs: FRESHPOOL_SCALING_SIZES (default `1,100,10000`),
//! FRESHPOOL_SCALING_OPS (checkouts measured per case, default 200000),
//! FRESHPOOL_SCALING_CURVES (default `origins,idle,waiters`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshpool::{Client, Resolve, ResolveFuture};
use freshpool_testkit::TestServer;
use http::Uri;

const BATCH: usize = 1000;

/// Every host resolves to the test server.
struct Fixed(SocketAddr);
impl Resolve for Fixed {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let addr = self.0;
        Box::pin(async move { Ok(vec![addr]) })
    }
}

fn raise_fd_limit() -> libc::rlim_t {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// Child role: serve until stdin closes; "close" on stdin closes every
/// connection server-side (so TIME_WAIT lands on the server's port, not on
/// the client's ephemeral ports).
fn serve() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::http1());
    println!("{}", server.addr());
    std::io::stdout().flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        match line.as_deref() {
            Ok("close") => {
                server.close_all();
                println!("closed");
                std::io::stdout().flush().unwrap();
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(server);
}

struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("FRESHPOOL_BENCH_ROLE", "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server child");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line.trim().parse().expect("server address");
        ServerProcess {
            child,
            stdin,
            stdout,
            addr,
        }
    }

    fn close_all(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "close").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

struct Timing {
    median: f64,
    mean: f64,
    worst: f64,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:>8.0} ns  mean {:>8.0} ns  worst batch {:>8.0} ns",
            self.median, self.mean, self.worst
        )
    }
}

/// Times `ops` checkouts (in batches of BATCH), `pick(i)` choosing the URI.
async fn time_checkouts(client: &Client, uris: &[Uri], ops: usize, rotate: bool) -> Timing {
    let mut batches = Vec::with_capacity(ops / BATCH);
    let mut i = 0usize;
    // Warm-up batch.
    for _ in 0..BATCH {
        let uri = if rotate {
            &uris[i % uris.len()]
        } else {
            &uris[0]
        };
        i += 1;
        assert!(client.__checkout_release(uri).await.unwrap(), "dialed");
    }
    for _ in 0..ops / BATCH {
        let start = Instant::now();
        for _ in 0..BATCH {
            let uri = if rotate {
                &uris[i % uris.len()]
            } else {
                &uris[0]
            };
            i += 1;
            let reused = client.__checkout_release(uri).await.unwrap();
            debug_assert!(reused);
        }
        batches.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    summarize(batches)
}

/// The once-a-second background sweep, run by hand: its cost is paid
/// every second by a runtime worker (and holds each origin's lock while it
/// walks that origin's idle list).
fn sweep(client: &Client) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        client.evict_idle();
        best = best.min(start.elapsed());
    }
    best
}

fn summarize(mut v: Vec<f64>) -> Timing {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Timing {
        median: v[v.len() / 2],
        mean: v.iter().sum::<f64>() / v.len() as f64,
        worst: *v.last().unwrap(),
    }
}

async fn origins_curve(server: &mut ServerProcess, sizes: &[usize], ops: usize) {
    println!("## checkout+return vs number of origins (one idle connection each)");
    for &n in sizes {
        let client = Client::builder()
            .proxy_from_env(false)
            .resolver(Fixed(server.addr))
            .max_connections_total(n + 64)
            .build()
            .unwrap();
        let port = server.addr.port();
        let uris: Vec<Uri> = (0..n)
            .map(|i| format!("http://h{i}.test:{port}/").parse().unwrap())
            .collect();
        let warm = Instant::now();
        for chunk in uris.chunks(256) {
            let mut handles = Vec::new();
            for uri in chunk {
                let (client, uri) = (client.clone(), uri.clone());
                handles.push(tokio::spawn(async move {
                    client.__checkout_release(&uri).await.unwrap();
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        }
        let open = client.stats().open_connections;
        assert_eq!(open, n, "origins {n}: {open} connections");
        let warm = warm.elapsed();
        let hot = time_checkouts(&client, &uris, ops, false).await;
        let rotating = time_checkouts(&client, &uris, ops, true).await;
        println!("origins {n:>6}  hot:      {hot}   (setup {warm:.1?})");
        println!("origins {n:>6}  rotating: {rotating}");
        println!(
            "origins {n:>6}  idle sweep (evict_idle, nothing expired): {:.1?}",
            sweep(&client)
        );
        server.close_all();
        drop(client);
        let (floor, chained) = hand_held_floor(server, &uris, ops).await;
        println!("origins {n:>6}  rotating, hand-held floor: {floor}");
        println!("origins {n:>6}  rotating, hand-held floor, chained: {chained}");
    }
    println!();
}

/// The least any pool does to hand out an idle connection of one of n
/// origins, measured on the same n real hyper connections: find the
/// origin's list in a map keyed by the URI's authority (foldhash, as the
/// spelling map), take its connection, ask hyper whether it is closed, put
/// it back. No lock, no lease, no expiry or limits. Rotating over all n, its
/// growth from n = 1 is the cache misses of touching n origins' entries and
/// n connections' state, which no pool avoids; freshpool's growth above it
/// is the pool's own.
///
/// Timed twice on the same connections. Free-running, one iteration's
/// cache misses may overlap the next ones' (its loop is short enough for
/// the CPU to run ahead). *Chained*, the next URI's index depends on the
/// value the previous iteration read from hyper's connection state, so no
/// lookup starts before the one before it has finished, as in a pool, where
/// a request's worth of work separates two checkouts: the like-for-like
/// floor for the pool's rotating curve. (Measured 2026-12-02, the two read
/// the same: the floor is low because it touches few lines, BENCHMARKS.md.)
///
/// Its connections are closed (server side) and their tasks awaited before
/// it returns, and it dials only once the pool's sockets are gone, so the
/// two sets never add up against the fd limit.
async fn hand_held_floor(server: &mut ServerProcess, uris: &[Uri], ops: usize) -> (Timing, Timing) {
    type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;
    wait_for_open_fds_at_most(256).await;
    let addr = server.addr;
    let mut by_authority: std::collections::HashMap<
        String,
        Vec<Sender>,
        foldhash::fast::RandomState,
    > = Default::default();
    let mut drivers = Vec::with_capacity(uris.len());
    for chunk in uris.chunks(256) {
        let mut handles = Vec::new();
        for uri in chunk {
            let authority = uri.authority().expect("absolute URI").to_string();
            handles.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                        .await
                        .expect("handshake");
                (authority, sender, tokio::spawn(conn))
            }));
        }
        for h in handles {
            let (authority, sender, driver) = h.await.unwrap();
            by_authority.entry(authority).or_default().push(sender);
            drivers.push(driver);
        }
    }
    // Returns whether the connection was closed (asserted false after each
    // batch, not here: the compiler would then know it and could drop the
    // chained loop's dependency on it).
    let mut take_and_return = |uri: &Uri| -> bool {
        let list = by_authority
            .get_mut(uri.authority().expect("absolute URI").as_str())
            .expect("an origin opened above");
        let sender = list.pop().expect("its connection");
        let closed = sender.is_closed();
        list.push(std::hint::black_box(sender));
        closed
    };
    let mut time = |chained: bool| {
        let mut batches = Vec::with_capacity(ops / BATCH);
        let mut i = 0usize;
        // `opaque` is 0, but the compiler cannot know it, so `step` is a
        // real data dependency on the value `take_and_return` loaded.
        let opaque = std::hint::black_box(0usize);
        for batch in 0..=ops / BATCH {
            let start = Instant::now();
            let mut any_closed = false;
            for _ in 0..BATCH {
                let closed = take_and_return(&uris[i % uris.len()]);
                any_closed |= closed;
                let step = if chained { closed as usize & opaque } else { 0 };
                i += 1 + step;
            }
            assert!(!any_closed, "a connection closed under the bench");
            // (Batch 0 warms up.)
            if batch > 0 {
                batches.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
            }
        }
        summarize(batches)
    };
    let free = time(false);
    let chained = time(true);
    drop(by_authority);
    server.close_all();
    for driver in drivers {
        let _ = driver.await;
    }
    (free, chained)
}

/// Waits (up to 30 s) until this process has at most `limit` open file
/// descriptors: closed connections' sockets are released by their tasks
/// a moment after the close.
async fn wait_for_open_fds_at_most(limit: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        if open <= limit || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn idle_curve(server: &mut ServerProcess, sizes: &[usize], ops: usize) {
    println!("## checkout+return vs idle connections on one origin");
    for &n in sizes {
        let client = Client::builder()
            .max_connections_per_host(n)
            .max_idle_per_host(n)
            .max_connections_total(n + 64)
            .max_pending(2 * n + 16)
            .pool_timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        // n requests held at once make n connections. They are started in
        // waves the server's accept queue can take: a burst of thousands of
        // SYNs overflows the listen backlog, the kernel answers with SYN
        // cookies and drops the final ACKs it has no room for, and the
        // client is left with half-open connections that no close reaches
        // (only TCP keepalive finds them, 30 s later). Each request lasts
        // long enough for the last wave to start while the first still runs.
        const WAVE: usize = 256;
        let waves = n.div_ceil(WAVE);
        let url = format!("http://{}/delay/{}", server.addr, 1000 + 100 * waves);
        let warm = Instant::now();
        let mut handles = Vec::new();
        for wave in 0..waves {
            if wave > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for _ in 0..WAVE.min(n - wave * WAVE) {
                let (client, url) = (client.clone(), url.clone());
                handles.push(tokio::spawn(async move {
                    let response = client.get(&url).await.unwrap();
                    response.into_body().bytes().await.unwrap();
                }));
            }
        }
        for h in handles {
            h.await.unwrap();
        }
        let open = client.stats().open_connections;
        if open != n {
            println!("idle {n:>6}  NOTE: only {open} of {n} connections stayed open");
        }
        let warm = warm.elapsed();
        let uris = [format!("http://{}/", server.addr).parse::<Uri>().unwrap()];
        let t = time_checkouts(&client, &uris, ops, false).await;
        let idle = client.stats().origins[0].idle;
        println!("idle {n:>6} (still idle after: {idle:>6})  {t}   (setup {warm:.1?})");
        println!(
            "idle {n:>6}  idle sweep (evict_idle, nothing expired): {:.1?}",
            sweep(&client)
        );
        // The server closes all n idle connections at once: how long until
        // the pool has forgotten them all (each close is one slot_freed).
        let start = Instant::now();
        server.close_all();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.stats().open_connections > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let closed_in = start.elapsed();
        println!(
            "idle {n:>6}  server closed all: pool emptied in {closed_in:.1?}, {:.1} us per close (left {})",
            closed_in.as_secs_f64() * 1e6 / n as f64,
            client.stats().open_connections
        );
        drop(client);
    }
    println!();
}

async fn waiters_curve(server: &mut ServerProcess, sizes: &[usize]) {
    println!("## wake-up: release one connection to n queued waiters (per_host 1)");
    println!("(per waiter = time from release until all n served / n; marginal = extra time per");
    println!(
        " extra waiter vs the smallest n, which removes the fixed cost of the release itself)"
    );
    let mut base: Option<(usize, f64)> = None;
    for &n in sizes {
        let client = Client::builder()
            .max_connections_per_host(1)
            .max_pending(n + 16)
            .pool_timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let hold_url = format!("http://{}/bytes/1", server.addr);
        let uri: Arc<Uri> = Arc::new(format!("http://{}/", server.addr).parse().unwrap());
        client
            .get(&hold_url)
            .await
            .unwrap()
            .into_body()
            .bytes()
            .await
            .unwrap();
        let rounds = match n {
            0..=10 => 200,
            11..=1000 => 30,
            _ => 5,
        };
        let mut per_waiter = Vec::with_capacity(rounds);
        let mut totals = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            // Hold the only connection: the response body is not read yet.
            let held = client.get(&hold_url).await.unwrap();
            let mut handles = Vec::with_capacity(n);
            for _ in 0..n {
                let (client, uri) = (client.clone(), uri.clone());
                handles.push(tokio::spawn(async move {
                    client.__checkout_release(&uri).await.unwrap();
                }));
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while client.stats().origins[0].waiting < n {
                assert!(Instant::now() < deadline, "waiters never queued");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let start = Instant::now();
            held.into_body().bytes().await.unwrap();
            for h in handles {
                h.await.unwrap();
            }
            let total = start.elapsed();
            totals.push(total.as_nanos() as f64);
            per_waiter.push(total.as_nanos() as f64 / n as f64);
        }
        let t = summarize(per_waiter);
        let total = summarize(totals);
        let marginal = match base {
            Some((n0, t0)) if n > n0 => {
                format!("{:.0} ns/waiter", (total.median - t0) / (n - n0) as f64)
            }
            _ => {
                base = Some((n, total.median));
                "-".into()
            }
        };
        println!(
            "waiters {n:>6}  per waiter: {t}   all served: median {:.1?}  marginal: {marginal}",
            Duration::from_nanos(total.median as u64)
        );
        let created: u64 = client.stats().origins.iter().map(|o| o.created).sum();
        assert_eq!(created, 1, "a second connection was dialed");
        server.close_all();
        drop(client);
    }
    println!();
}

fn main() {
    let fd_limit = raise_fd_limit();
    if std::env::var("FRESHPOOL_BENCH_ROLE").as_deref() == Ok("server") {
        serve();
        return;
    }
    let sizes: Vec<usize> = std::env::var("FRESHPOOL_SCALING_SIZES")
        .unwrap_or_else(|_| "1,100,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes"))
        .collect();
    let ops: usize = std::env::var("FRESHPOOL_SCALING_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // Each side holds at most max(sizes) sockets plus a few.
    let need = sizes.iter().max().copied().unwrap_or(0) as libc::rlim_t + 256;
    println!("fd soft limit: {fd_limit} (need about {need} per process)");
    if fd_limit < need {
        println!("WARNING: fd limit too low for the largest size; expect failures");
    }
    let mut server = ServerProcess::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let curves =
        std::env::var("FRESHPOOL_SCALING_CURVES").unwrap_or_else(|_| "origins,idle,waiters".into());
    rt.block_on(async {
        if curves.contains("origins") {
            origins_curve(&mut server, &sizes, ops).await;
        }
        if curves.contains("idle") {
            idle_curve(&mut server, &sizes, ops).await;
        }
        if curves.contains("waiters") {
            waiters_curve(&mut server, &sizes).await;
        }
    });
    drop(server);
}
