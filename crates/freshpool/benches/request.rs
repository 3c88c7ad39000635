//! A full loopback request (`GET /`, 2-byte body, keep-alive) through
//! freshpool, through hand-held hyper connections ("the limit": what any
//! pool built on hyper can at best reach) and through reqwest's pool, all in
//! one criterion group so the ratios are side by side
//! (`cargo bench -p freshpool --bench request`).
//!
//! * `loopback_request/<client>/1`: one task, sequential requests (latency).
//! * `loopback_request/<client>/64`: 64 tasks each sending requests back to
//!   back (throughput; criterion's elements/s = requests/s). The hand-held
//!   baseline is 64 pre-opened hyper HTTP/1.1 connections, each driven by
//!   one task; freshpool and reqwest are warmed to 64 idle connections.
//!
//! The server (freshpool-testkit, hyper) runs on its own 1-worker runtime;
//! the clients on the bench thread's current-thread runtime
//! (FRESHPOOL_BENCH_CLIENT_THREADS=N for an N-worker runtime instead), so on
//! this 2-core machine each side gets about one core.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use freshpool::Client;
use freshpool_testkit::TestServer;
use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::Empty;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const CONCURRENCY: usize = 64;

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One pre-opened hyper HTTP/1.1 connection, driven by a spawned task.
async fn hyper_conn(addr: std::net::SocketAddr) -> SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn hyper_get(sender: &mut SendRequest<Empty<Bytes>>, host: &HeaderValue) {
    hyper_send(sender, host, http::Uri::from_static("/")).await;
}

/// As `hyper_get`, for the peer mode's URL: its path parsed per request,
/// as a client given a URL must.
async fn hyper_get_path(sender: &mut SendRequest<Empty<Bytes>>, host: &HeaderValue, path: &str) {
    hyper_send(sender, host, path.parse().expect("path")).await;
}

/// `GET target` on a hand-held connection, its body read.
async fn hyper_send(sender: &mut SendRequest<Empty<Bytes>>, host: &HeaderValue, target: http::Uri) {
    sender.ready().await.expect("ready");
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = target;
    request.headers_mut().insert(HOST, host.clone());
    let response = sender.send_request(request).await.expect("send");
    std::hint::black_box(
        freshpool::__read_to_bytes(response.into_body())
            .await
            .expect("body"),
    );
}

async fn freshpool_get(client: &Client, url: &str) {
    let response = client.get(url).await.expect("request");
    let body = response.into_body().bytes().await.expect("body");
    std::hint::black_box(body);
}

async fn reqwest_get(client: &reqwest::Client, url: &str) {
    let response = client.get(url).send().await.expect("request");
    let body = response.bytes().await.expect("body");
    std::hint::black_box(body);
}

/// Runs `iters` requests spread over `tasks` tasks; returns the wall time.
async fn fan_out<F, Fut>(iters: u64, tasks: usize, make: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for k in 0..tasks as u64 {
        let n = iters / tasks as u64 + u64::from(k < iters % tasks as u64);
        handles.push(tokio::spawn(make(n)));
    }
    for h in handles {
        h.await.expect("task");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let server_rt = runtime(env_usize("FRESHPOOL_BENCH_SERVER_THREADS", 1));
    let server = server_rt.block_on(TestServer::http1());
    // Default: a current-thread client runtime (FRESHPOOL_BENCH_CLIENT_THREADS=0).
    // With a 1-worker multi-thread runtime every response also pays a
    // wake-up of the parked worker thread, and whether it had parked made
    // the sequential numbers jump between ~25 and ~70 us run to run.
    let client_threads = env_usize("FRESHPOOL_BENCH_CLIENT_THREADS", 0);
    let rt = if client_threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    } else {
        runtime(client_threads)
    };
    let url = server.url("/");
    let warm_url = server.url("/delay/100");
    let host = HeaderValue::from_str(&format!("127.0.0.1:{}", server.addr().port())).unwrap();

    let fresh = Client::builder()
        .max_connections_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let req = reqwest::Client::builder().build().expect("reqwest");
    let senders: Mutex<Vec<SendRequest<Empty<Bytes>>>> = Mutex::new(Vec::new());
    rt.block_on(async {
        // Warm both pools to 64 connections (64 overlapping slow requests).
        let mut handles = Vec::new();
        for _ in 0..CONCURRENCY {
            let (fresh, req, warm_url) = (fresh.clone(), req.clone(), warm_url.clone());
            handles.push(tokio::spawn(async move {
                freshpool_get(&fresh, &warm_url).await;
                reqwest_get(&req, &warm_url).await;
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut v = Vec::new();
        for _ in 0..CONCURRENCY {
            v.push(hyper_conn(server.addr()).await);
        }
        *senders.lock().unwrap() = v;
    });
    assert_eq!(fresh.stats().open_connections, CONCURRENCY);

    let mut group = c.benchmark_group("loopback_request");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));

    for tasks in [1usize, CONCURRENCY] {
        group.bench_with_input(
            BenchmarkId::new("hyper_handheld", tasks),
            &tasks,
            |b, &tasks| {
                b.to_async(&rt).iter_custom(|iters| {
                    let mut conns = std::mem::take(&mut *senders.lock().unwrap());
                    let host = host.clone();
                    let senders = &senders;
                    async move {
                        let start = Instant::now();
                        let mut handles = Vec::with_capacity(tasks);
                        for k in 0..tasks as u64 {
                            let n = iters / tasks as u64 + u64::from(k < iters % tasks as u64);
                            let mut sender = conns.pop().expect("a pre-opened connection");
                            let host = host.clone();
                            handles.push(tokio::spawn(async move {
                                for _ in 0..n {
                                    hyper_get(&mut sender, &host).await;
                                }
                                sender
                            }));
                        }
                        for h in handles {
                            conns.push(h.await.expect("task"));
                        }
                        let elapsed = start.elapsed();
                        *senders.lock().unwrap() = conns;
                        elapsed
                    }
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("freshpool", tasks), &tasks, |b, &tasks| {
            b.to_async(&rt).iter_custom(|iters| {
                let (fresh, url) = (fresh.clone(), url.clone());
                fan_out(iters, tasks, move |n| {
                    let (fresh, url) = (fresh.clone(), url.clone());
                    async move {
                        for _ in 0..n {
                            freshpool_get(&fresh, &url).await;
                        }
                    }
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("reqwest", tasks), &tasks, |b, &tasks| {
            b.to_async(&rt).iter_custom(|iters| {
                let (req, url) = (req.clone(), url.clone());
                fan_out(iters, tasks, move |n| {
                    let (req, url) = (req.clone(), url.clone());
                    async move {
                        for _ in 0..n {
                            reqwest_get(&req, &url).await;
                        }
                    }
                })
            })
        });
    }
    group.finish();
    let stats = fresh.stats();
    eprintln!(
        "request bench: freshpool open connections {} (created {})",
        stats.open_connections,
        stats.origins.iter().map(|o| o.created).sum::<u64>()
    );
    drop(server);
}

/// Peer mode (used by bench/peers/run.sh): with FRESHPOOL_PEER_URL set,
/// run C concurrent keep-alive GETs, N in total, through each Rust client
/// in FRESHPOOL_PEER_CLIENTS (default `freshpool,hyper,reqwest`; also
/// `hyper-lifo`) against that external server and print one parseable line
/// per client, in the same format as the Go and Python peers.
fn peer_main(url: String) {
    let c = env_usize("C", CONCURRENCY);
    let n = env_usize("N", 20_000);
    let clients = std::env::var("FRESHPOOL_PEER_CLIENTS")
        .unwrap_or_else(|_| "freshpool,hyper,reqwest".into());
    let rt = runtime(env_usize("FRESHPOOL_BENCH_CLIENT_THREADS", 2));
    let uri: http::Uri = url.parse().expect("FRESHPOOL_PEER_URL");
    for name in clients.split(',') {
        let before = scheduler_counts(&rt);
        let (elapsed, cpu, mut lat) = rt.block_on(peer_run(name, &url, &uri, c, n));
        print_scheduler_counts(name, n, before, scheduler_counts(&rt));
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e3;
        println!(
            "peer=rust-{name} concurrency={c} requests={n} seconds={:.3} rps={:.0} p50_us={:.0} p99_us={:.0} cpu_us={:.2} parks_per_1k={:.1}{} errors=0",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            cpu.own.as_secs_f64() * 1e6 / n as f64,
            cpu.parks as f64 * 1e3 / n as f64,
            cpu.server.map_or(String::new(), |s| format!(
                " server_cpu_us={:.2}",
                s.as_secs_f64() * 1e6 / n as f64
            ))
        );
    }
}

/// The runtime's scheduler counters (built with `--cfg tokio_unstable`
/// only): worker parks, no-op unparks, steals, local and remote schedules,
/// summed over the workers. They say why a client's workers park: a task
/// woken from another thread or pushed out of a worker's LIFO slot wakes a
/// parked worker to steal it.
#[cfg(tokio_unstable)]
fn scheduler_counts(rt: &tokio::runtime::Runtime) -> [u64; 7] {
    let m = rt.metrics();
    let mut sum = [0u64; 7];
    sum[6] = m.remote_schedule_count();
    for w in 0..m.num_workers() {
        sum[0] += m.worker_park_count(w);
        sum[1] += m.worker_noop_count(w);
        sum[2] += m.worker_steal_operations(w);
        sum[3] += m.worker_local_schedule_count(w);
        sum[4] += m.worker_poll_count(w);
        sum[5] += m.worker_overflow_count(w);
    }
    sum
}

#[cfg(not(tokio_unstable))]
fn scheduler_counts(_: &tokio::runtime::Runtime) -> [u64; 7] {
    [0; 7]
}

fn print_scheduler_counts(name: &str, n: usize, before: [u64; 7], after: [u64; 7]) {
    if cfg!(tokio_unstable) {
        let per_1k = |i: usize| (after[i] - before[i]) as f64 * 1e3 / n as f64;
        eprintln!(
            "scheduler rust-{name} per 1k requests: parks={:.1} noop_unparks={:.1} steals={:.1} local_schedules={:.1} polls={:.1} overflows={:.1} remote_schedules={:.1}",
            per_1k(0), per_1k(1), per_1k(2), per_1k(3), per_1k(4), per_1k(5), per_1k(6)
        );
    }
}

/// CPU counters read at the start and the end of a peer run.
#[derive(Clone, Copy)]
struct CpuMark {
    /// This process' CPU time so far (user + system, all threads): the
    /// client's own cost per request, which unlike throughput does not
    /// depend on how the server, sharing the machine, is paced.
    own: Duration,
    /// How many times its threads parked (voluntary context switches: a
    /// worker with nothing to run): a client that parks often does not fill
    /// its threads, so its req/s is paced by latency, not by its CPU, and
    /// compares less well.
    parks: u64,
    /// The server's CPU time so far, when `FRESHPOOL_PEER_SERVER_PID` names
    /// it (Linux `/proc`): what each client's requests cost the server that
    /// shares the machine with it. A client whose requests arrive with
    /// different timing can cost the same server more per request (more
    /// wake-ups, smaller batches per `epoll_wait`), and on two cores that
    /// CPU is taken from the client.
    server: Option<Duration>,
}

impl CpuMark {
    fn now() -> CpuMark {
        // SAFETY: getrusage fills the struct it is given.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        CpuMark {
            own: Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime)),
            parks: usage.ru_nvcsw as u64,
            server: server_cpu(),
        }
    }

    /// What was spent between `self` and `later`.
    fn until(self, later: CpuMark) -> CpuMark {
        CpuMark {
            own: later.own - self.own,
            parks: later.parks - self.parks,
            server: later.server.zip(self.server).map(|(b, a)| b - a),
        }
    }
}

/// The CPU time (user + system, all threads) of the process named by
/// `FRESHPOOL_PEER_SERVER_PID`, from fields 14 and 15 of `/proc/PID/stat`
/// (in clock ticks: 10 ms at the usual 100 Hz, so read over a run of
/// seconds, not per request).
fn server_cpu() -> Option<Duration> {
    let pid = std::env::var("FRESHPOOL_PEER_SERVER_PID").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_micros(ticks * 1_000_000 / hz as u64))
}

/// Returns the wall time, the CPU spent and parks over the same span
/// (see `CpuMark`), and every request's latency in nanoseconds.
async fn peer_run(
    name: &str,
    url: &str,
    uri: &http::Uri,
    c: usize,
    n: usize,
) -> (Duration, CpuMark, Vec<u64>) {
    enum Peer {
        Fresh(Client),
        Req(reqwest::Client),
        Hyper(Vec<SendRequest<Empty<Bytes>>>, HeaderValue),
    }
    let peer = match name {
        "freshpool" => Peer::Fresh(
            Client::builder()
                .max_connections_per_host(c)
                .build()
                .expect("client"),
        ),
        "reqwest" => Peer::Req(reqwest::Client::new()),
        "hyper" | "hyper-lifo" => {
            let authority = uri.authority().expect("authority").as_str().to_owned();
            let addr = tokio::net::lookup_host(&authority)
                .await
                .expect("resolve")
                .next()
                .expect("an address");
            let mut v = Vec::with_capacity(c);
            for _ in 0..c {
                v.push(hyper_conn(addr).await);
            }
            Peer::Hyper(v, HeaderValue::from_str(&authority).unwrap())
        }
        other => panic!("unknown peer client {other}"),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let (fresh, req, mut conns, host) = match peer {
        Peer::Fresh(f) => (Some(f), None, Vec::new(), None),
        Peer::Req(r) => (None, Some(r), Vec::new(), None),
        Peer::Hyper(v, h) => (None, None, v, Some(h)),
    };
    // `hyper-lifo`: the same hand-held connections, but shared by all
    // tasks through the least pool there is (a mutex over a LIFO stack):
    // what sharing connections costs by itself, before any pool logic.
    let lifo = (name == "hyper-lifo").then(|| Arc::new(Mutex::new(std::mem::take(&mut conns))));
    // Warm the pools: c overlapping requests open c connections.
    let mut warm = Vec::new();
    for _ in 0..c {
        let (fresh, req, url) = (fresh.clone(), req.clone(), url.to_owned());
        warm.push(tokio::spawn(async move {
            if let Some(f) = &fresh {
                freshpool_get(f, &url).await;
            } else if let Some(r) = &req {
                reqwest_get(r, &url).await;
            }
        }));
    }
    for w in warm {
        w.await.expect("warm-up");
    }
    let start = Instant::now();
    let cpu_start = CpuMark::now();
    // `FRESHPOOL_PEER_SPIN_NS`: hand-held hyper made slower by a busy
    // spin of that long per request, a synthetic client as slow as another
    // one: does the server's CPU per request follow a client's pace?
    let spin = Duration::from_nanos(env_usize("FRESHPOOL_PEER_SPIN_NS", 0) as u64);
    let mut handles = Vec::with_capacity(c);
    for k in 0..c {
        let count = n / c + usize::from(k < n % c);
        let (fresh, req, url, path, host) = (
            fresh.clone(),
            req.clone(),
            url.to_owned(),
            path.clone(),
            host.clone(),
        );
        let mut sender = conns.pop();
        let lifo = lifo.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                if let Some(f) = &fresh {
                    freshpool_get(f, &url).await;
                } else if let Some(r) = &req {
                    reqwest_get(r, &url).await;
                } else if let (Some(stack), Some(h)) = (lifo.as_ref(), host.as_ref()) {
                    let mut s = stack.lock().unwrap().pop().expect("an idle connection");
                    hyper_get_path(&mut s, h, &path).await;
                    stack.lock().unwrap().push(s);
                } else if let (Some(s), Some(h)) = (sender.as_mut(), host.as_ref()) {
                    hyper_get_path(s, h, &path).await;
                }
                // (Hand-held hyper only, not `hyper-lifo`. In the latency
                // figures too.)
                if !spin.is_zero() && sender.is_some() {
                    let began = Instant::now();
                    while began.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                }
                lat.push(t.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.await.expect("peer task"));
    }
    (start.elapsed(), cpu_start.until(CpuMark::now()), all)
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}

fn main() {
    if let Ok(url) = std::env::var("FRESHPOOL_PEER_URL") {
        return peer_main(url);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
