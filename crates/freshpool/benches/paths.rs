//! The pool's cost on request paths other than `request`'s small GET:
//! HTTP/2 (h2c) multiplexing, a large response body, and a POST with a
//! body, each through freshpool and through hand-held hyper connections
//! (the limit) in alternating rounds of one run
//! (`cargo bench -p freshpool --bench paths`).
//!
//! Each line gives both clients' requests per second and client CPU per
//! request (the client runs on this thread's current-thread runtime, its
//! connections' tasks too, so the thread's CPU time is all of the client's
//! work; the server runs on its own 1-worker runtime), then the ratios
//! freshpool ÷ limit. Knobs: `FRESHPOOL_PATHS_ROUNDS` (default 5),
//! `FRESHPOOL_PATHS_SCALE` (default 1: multiplies each scenario's request
//! count); for profiling, `FRESHPOOL_PATHS_ONLY=<index>` runs one scenario
//! and `FRESHPOOL_PATHS_CLIENT=freshpool|hand-held` one client (the
//! ratios then print NaN); `FRESHPOOL_PATHS_ROUNDS=0` runs only the setup
//! (both clients' connections and warm-up), which `bench/instructions.sh`
//! counts once and takes off each client's count.

use std::time::{Duration, Instant};

use bytes::Bytes;
use freshpool::{Client, HttpVersion};
use freshpool_testkit::{Protocol, ServerConfig, TestServer};
use http::header::HOST;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// One scenario: which server, how many tasks, requests per task, and what
/// each request is.
#[derive(Clone)]
struct Scenario {
    name: &'static str,
    http2: bool,
    tasks: usize,
    per_task: usize,
    method: Method,
    path: &'static str,
    body: Bytes,
    /// Bytes each response carries (checked).
    response_len: usize,
}

/// The hand-held connection(s) a scenario's tasks use.
#[derive(Clone)]
enum Held {
    H1(Vec<std::sync::Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain libc call writing into a local struct.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

async fn hand_held(addr: std::net::SocketAddr, s: &Scenario) -> Held {
    if s.http2 {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        return Held::H2(sender);
    }
    let mut senders = Vec::new();
    for _ in 0..s.tasks {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        senders.push(std::sync::Arc::new(tokio::sync::Mutex::new(sender)));
    }
    Held::H1(senders)
}

/// One request on a hand-held connection, body read to the end.
async fn held_request(
    held: &Held,
    task: usize,
    s: &Scenario,
    host: &HeaderValue,
    url: &str,
) -> usize {
    let mut request = Request::new(Full::new(s.body.clone()));
    *request.method_mut() = s.method.clone();
    let response = match held {
        Held::H1(senders) => {
            *request.uri_mut() = http::Uri::from_static(s.path);
            request.headers_mut().insert(HOST, host.clone());
            let mut sender = senders[task].lock().await;
            sender.ready().await.expect("ready");
            sender.send_request(request).await.expect("send")
        }
        Held::H2(sender) => {
            // HTTP/2 takes the absolute URI (its :scheme and :authority).
            *request.uri_mut() = url.parse().expect("url");
            let mut sender = sender.clone();
            sender.ready().await.expect("ready");
            sender.send_request(request).await.expect("send")
        }
    };
    freshpool::__read_to_bytes(response.into_body())
        .await
        .expect("body")
        .len()
}

async fn pooled_request(client: &Client, s: &Scenario, url: &str) -> usize {
    let response = if s.method == Method::POST {
        client.post(url, s.body.clone()).await
    } else {
        client.get(url).await
    }
    .expect("request");
    response.into_body().bytes().await.expect("body").len()
}

/// Runs the scenario's tasks to the end: (wall, client CPU, bytes read).
async fn run(
    s: &Scenario,
    client: Option<&Client>,
    held: Option<&Held>,
    url: &str,
    host: &HeaderValue,
) -> (Duration, Duration, usize) {
    let cpu = thread_cpu();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..s.tasks {
        let client = client.cloned();
        let held = held.cloned();
        let url = url.to_owned();
        let host = host.clone();
        let scenario = s.clone();
        tasks.spawn_local(async move {
            let mut read = 0;
            for _ in 0..scenario.per_task {
                read += match (&client, &held) {
                    (Some(c), _) => pooled_request(c, &scenario, &url).await,
                    (None, Some(h)) => held_request(h, task, &scenario, &host, &url).await,
                    (None, None) => unreachable!("a client"),
                };
            }
            read
        });
    }
    let mut read = 0;
    while let Some(r) = tasks.join_next().await {
        read += r.expect("task");
    }
    (start.elapsed(), thread_cpu() - cpu, read)
}

fn main() {
    let rounds: usize = std::env::var("FRESHPOOL_PATHS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let scale: usize = std::env::var("FRESHPOOL_PATHS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let (h1, h2) = server_rt.block_on(async {
        tokio::spawn(async {
            let h1 = TestServer::http1().await;
            let h2 = TestServer::start(ServerConfig {
                protocol: Protocol::Http2,
                ..ServerConfig::default()
            })
            .await;
            (h1, h2)
        })
        .await
        .expect("servers")
    });
    let scenarios = [
        Scenario {
            name: "h2c GET /, 64 streams on one connection",
            http2: true,
            tasks: 64,
            per_task: 300 * scale,
            method: Method::GET,
            path: "/",
            body: Bytes::new(),
            response_len: 2,
        },
        Scenario {
            name: "HTTP/1.1 GET 1 MiB body, 4 connections",
            http2: false,
            tasks: 4,
            per_task: 50 * scale,
            method: Method::GET,
            path: "/bytes/1048576",
            body: Bytes::new(),
            response_len: 1 << 20,
        },
        Scenario {
            name: "HTTP/1.1 POST 1 KiB body (echoed), 64 connections",
            http2: false,
            tasks: 64,
            per_task: 300 * scale,
            method: Method::POST,
            path: "/echo",
            body: Bytes::from(vec![b'p'; 1024]),
            response_len: 1024,
        },
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let local = tokio::task::LocalSet::new();
    println!("## other request paths: freshpool vs hand-held hyper (the limit), {rounds} alternating rounds");
    println!(
        "{:<52} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8}",
        "scenario", "fp req/s", "hh req/s", "fp us/r", "hh us/r", "rps x", "cpu x"
    );
    // Profiling: one scenario (by its index) and/or one client only.
    let only: Option<usize> = std::env::var("FRESHPOOL_PATHS_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    let client_only = std::env::var("FRESHPOOL_PATHS_CLIENT").ok();
    for (index, s) in scenarios.iter().enumerate() {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let server = if s.http2 { &h2 } else { &h1 };
        let url = server.url(s.path);
        let host =
            HeaderValue::from_str(&format!("127.0.0.1:{}", server.addr().port())).expect("host");
        let version = if s.http2 {
            HttpVersion::Http2Only
        } else {
            HttpVersion::Http1Only
        };
        let client = Client::builder()
            .max_connections_per_host(s.tasks)
            .http_version(version)
            .build()
            .expect("client");
        let held = local.block_on(&rt, hand_held(server.addr(), s));
        // Warm both: the pool opens its connections, both fill their buffers.
        let warm = Scenario {
            per_task: 2,
            ..s.clone()
        };
        local.block_on(&rt, run(&warm, Some(&client), None, &url, &host));
        local.block_on(&rt, run(&warm, None, Some(&held), &url, &host));
        let (mut fp_rps, mut hh_rps, mut fp_cpu, mut hh_cpu, mut rps_x, mut cpu_x) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let n = (s.tasks * s.per_task) as f64;
        for round in 0..rounds {
            // Alternate which goes first.
            let mut results = [(Duration::ZERO, Duration::ZERO); 2];
            for i in 0..2 {
                let pooled = (i + round) % 2 == 0;
                match client_only.as_deref() {
                    Some("freshpool") if !pooled => continue,
                    Some("hand-held") if pooled => continue,
                    _ => {}
                }
                let (wall, cpu, read) = if pooled {
                    local.block_on(&rt, run(s, Some(&client), None, &url, &host))
                } else {
                    local.block_on(&rt, run(s, None, Some(&held), &url, &host))
                };
                assert_eq!(read, s.tasks * s.per_task * s.response_len, "bytes read");
                results[usize::from(!pooled)] = (wall, cpu);
            }
            let [(fw, fc), (hw, hc)] = results;
            if !fw.is_zero() {
                fp_rps.push(n / fw.as_secs_f64());
                fp_cpu.push(fc.as_secs_f64() * 1e6 / n);
            }
            if !hw.is_zero() {
                hh_rps.push(n / hw.as_secs_f64());
                hh_cpu.push(hc.as_secs_f64() * 1e6 / n);
            }
            if !fw.is_zero() && !hw.is_zero() {
                rps_x.push(hw.as_secs_f64() / fw.as_secs_f64());
                cpu_x.push(hc.as_secs_f64() / fc.as_secs_f64());
            }
        }
        println!(
            "{:<52} {:>10.0} {:>10.0} {:>9.1} {:>9.1} {:>8.3} {:>8.3}",
            s.name,
            median(&mut fp_rps),
            median(&mut hh_rps),
            median(&mut fp_cpu),
            median(&mut hh_cpu),
            median(&mut rps_x),
            median(&mut cpu_x),
        );
        println!(
            "    per round, rps x: {}; requests_per_round={} (per client)",
            fmt_all(&rps_x),
            s.tasks * s.per_task
        );
        assert_eq!(
            client.stats().open_connections,
            if s.http2 { 1 } else { s.tasks },
            "connections the pool opened"
        );
    }
    println!("(rps x = freshpool ÷ hand-held throughput; cpu x = hand-held ÷ freshpool client CPU per request; medians of the per-round ratios)");
    drop(h1);
    drop(h2);
}

/// (NaN when a client was left out: `FRESHPOOL_PATHS_CLIENT`.)
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn fmt_all(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}
