//! `freshpool soak`: a chaos soak that counts every request.
//!
//! An HTTP/1.1 (or, with `--http2`, HTTP/2) test server sits behind the
//! fault-injecting [`ChaosProxy`], both in a child process (this same
//! binary, `soak --serve`), so that the file descriptors and RSS sampled
//! here are the client's alone (the test server remembers every request id
//! it saw, which grows by design). `--concurrency` workers send a mix of
//! GET, PUT, POST with an `Idempotency-Key` and POST without one (each with
//! a unique `x-request-id`), some of them dropping the response unread,
//! while the child injects, about once per `--fault-every`, one of: silent
//! death of every connection (a NAT forgetting its flows), a proxy idle
//! close, a truncated response, a garbage response, a short blackhole, or
//! an abrupt close of every server connection. Every second the soak
//! samples its open file descriptors (`/proc/self/fd`) and RSS (`VmRSS`).
//!
//! Pass criteria (exit status 1 otherwise):
//! - nothing lost: every request was answered or failed with a typed
//!   [`freshpool::Error`] (sent == answered + failed), none hung;
//! - no POST without `Idempotency-Key` was processed twice by the server
//!   (GET, PUT and keyed POST may legitimately be, after a safe retry:
//!   they are reported separately);
//! - after warm-up, fds and RSS are flat: the median of the last quarter of
//!   the samples is within `--fd-tolerance` descriptors and
//!   `--rss-tolerance` percent of the median of the first quarter, and once
//!   the load stops and the client is dropped, the descriptor count comes
//!   back within `--fd-leak-tolerance` (2) of what it was before the client
//!   existed (the soak's server closes idle connections after 4 s);
//! - once the load stops the pool settles: no active lease, no waiter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshpool::{Client, Kind};
use freshpool_testkit::{ChaosProxy, ServerConfig, TestServer};

/// Arguments of `freshpool soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long to run the load (e.g. `20s`, `10m`, `1h`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent request loops.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Mean time between two injected faults.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub fault_every: Duration,
    /// Samples before this are not used for drift (default: a tenth of the
    /// duration, at least 5 s).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Allowed growth of open file descriptors after warm-up.
    #[arg(long, default_value_t = 16)]
    pub fd_tolerance: i64,
    /// Descriptors that may stay open once the client is dropped (compared
    /// with before it existed).
    #[arg(long, default_value_t = 2)]
    pub fd_leak_tolerance: i64,
    /// Allowed growth of RSS after warm-up, in percent.
    #[arg(long, default_value_t = 20.0)]
    pub rss_tolerance: f64,
    /// The pool's per-host limit (below `--concurrency`, so requests queue).
    #[arg(long, default_value_t = 32)]
    pub max_connections_per_host: usize,
    /// Random seed for the request mix and the faults (default: the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Speak HTTP/2 (prior knowledge, cleartext) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// Internal: run the server, the proxy and the fault injector, driven
    /// by the parent soak over stdin/stdout.
    #[arg(long, hide = true)]
    pub serve: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 30s, 10m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (ms, s, m, h)")),
    };
    if !(0.0..=7.0 * 86400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A small deterministic generator (splitmix64): no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Get,
    GetDropped,
    Put,
    PostKeyed,
    PostBare,
}

impl Class {
    const ALL: [Class; 5] = [
        Class::Get,
        Class::GetDropped,
        Class::Put,
        Class::PostKeyed,
        Class::PostBare,
    ];
    fn prefix(self) -> &'static str {
        match self {
            Class::Get => "get",
            Class::GetDropped => "getdrop",
            Class::Put => "put",
            Class::PostKeyed => "postkey",
            Class::PostBare => "post",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Class::Get => "GET (body read)",
            Class::GetDropped => "GET (body dropped)",
            Class::Put => "PUT",
            Class::PostKeyed => "POST + Idempotency-Key",
            Class::PostBare => "POST (no key)",
        }
    }
    fn from_id(id: &str) -> Option<Class> {
        let prefix = id.split('-').next()?;
        Class::ALL.into_iter().find(|c| c.prefix() == prefix)
    }
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    hung: AtomicU64,
    per_class: Mutex<BTreeMap<Class, [u64; 3]>>,
    failures: Mutex<BTreeMap<String, u64>>,
    /// A sample message per failure kind, for the report.
    examples: Mutex<BTreeMap<String, String>>,
}

impl Tally {
    fn class(&self, c: Class, slot: usize) {
        self.per_class
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(c)
            .or_default()[slot] += 1;
    }
    fn failure(&self, c: Class, what: String, message: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.class(c, 2);
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what.clone())
            .or_default() += 1;
        self.examples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_insert(message);
    }
}

const FAULTS: [&str; 6] = [
    "kill_all_silently",
    "idle_close",
    "truncate_next_response",
    "garbage_next_response",
    "blackhole",
    "server_close_all",
];

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    at: f64,
    fds: i64,
    rss_kb: i64,
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(-1)
}

fn rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(-1)
}

fn median(mut v: Vec<i64>) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs `freshpool soak`.
pub async fn run(args: SoakArgs) -> Result<(), String> {
    if args.serve {
        return serve(args).await;
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let warmup = args
        .warmup
        .unwrap_or_else(|| (args.duration / 10).max(Duration::from_secs(5)))
        .min(args.duration / 2);
    println!(
        "freshpool soak: {} over {} with {} concurrent loops, a fault every ~{}, seed {seed}",
        fmt_secs(args.duration),
        if args.http2 { "HTTP/2" } else { "HTTP/1.1" },
        args.concurrency,
        fmt_secs(args.fault_every)
    );

    let mut child = Child::spawn(seed, args.fault_every, args.http2).await?;
    let fds_before_client = open_fds();

    let client = Client::builder()
        .max_connections_per_host(args.max_connections_per_host)
        .http_version(if args.http2 {
            freshpool::HttpVersion::Http2Only
        } else {
            freshpool::HttpVersion::Auto
        })
        .pool_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .response_header_timeout(Some(Duration::from_secs(2)))
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| format!("cannot build the client: {e}"))?;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let deadline = started + args.duration;

    // Resource sampler.
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let samples = samples.clone();
        let stop = stop.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let s = Sample {
                    at: started.elapsed().as_secs_f64(),
                    fds: open_fds(),
                    rss_kb: rss_kb(),
                };
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                n += 1;
                if n == 10 {
                    n = 0;
                    println!(
                        "  t={:>5.0}s sent {:>8} answered {:>8} failed {:>6}  fds {:>4}  rss {:>6} KiB",
                        s.at,
                        tally.sent.load(Ordering::SeqCst),
                        tally.answered.load(Ordering::SeqCst),
                        tally.failed.load(Ordering::SeqCst),
                        s.fds,
                        s.rss_kb
                    );
                }
            }
        })
    };

    child.send("FAULTS ON").await?;

    // Request loops.
    let mut workers = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let client = client.clone();
        let tally = tally.clone();
        let next_id = next_id.clone();
        let base = format!("http://127.0.0.1:{}/", child.port);
        let mut rng = Rng(seed.wrapping_add(w as u64 * 7919));
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let class = match rng.below(10) {
                    0..=3 => Class::Get,
                    4 => Class::GetDropped,
                    5 | 6 => Class::Put,
                    7 => Class::PostKeyed,
                    _ => Class::PostBare,
                };
                let id = format!(
                    "{}-{}",
                    class.prefix(),
                    next_id.fetch_add(1, Ordering::Relaxed)
                );
                let path = match (class, rng.below(4)) {
                    (Class::Get, 0) => format!("delay/{}", rng.below(20)),
                    (Class::Get, 1) => format!("bytes/{}", rng.below(32 * 1024)),
                    (Class::GetDropped, _) => format!("stream/{}", 8 * 1024 + rng.below(64 * 1024)),
                    (Class::Get, _) => String::new(),
                    _ => "echo".to_string(),
                };
                let uri = format!("{base}{path}");
                let builder = http::Request::builder().header("x-request-id", &id);
                let body = format!("payload of {id}");
                let request = match class {
                    Class::Get | Class::GetDropped => {
                        builder.method("GET").uri(&uri).body(String::new())
                    }
                    Class::Put => builder.method("PUT").uri(&uri).body(body),
                    Class::PostKeyed => builder
                        .method("POST")
                        .uri(&uri)
                        .header("idempotency-key", &id)
                        .body(body),
                    Class::PostBare => builder.method("POST").uri(&uri).body(body),
                };
                let request = match request {
                    Ok(r) => r,
                    Err(e) => {
                        tally.sent.fetch_add(1, Ordering::SeqCst);
                        tally.class(class, 0);
                        tally.failure(class, "building the request".into(), e.to_string());
                        continue;
                    }
                };
                tally.sent.fetch_add(1, Ordering::SeqCst);
                tally.class(class, 0);
                // A guard far beyond every configured timeout: firing means
                // the request hung (lost), which the pass criteria forbid.
                let outcome = tokio::time::timeout(Duration::from_secs(60), async {
                    let response = client.request(request).await?;
                    if class == Class::GetDropped {
                        drop(response);
                        return Ok::<_, freshpool::Error>(());
                    }
                    response.into_body().bytes().await.map(|_| ())
                })
                .await;
                match outcome {
                    Ok(Ok(())) => {
                        tally.answered.fetch_add(1, Ordering::SeqCst);
                        tally.class(class, 1);
                    }
                    Ok(Err(e)) => {
                        tally.failure(class, kind_name(e.kind()), e.to_string());
                    }
                    Err(_) => {
                        tally.hung.fetch_add(1, Ordering::SeqCst);
                        tally.failure(class, "HUNG (no answer in 60 s)".into(), id.clone());
                    }
                }
            }
        }));
    }

    let mut panicked = 0;
    for w in workers {
        if w.await.is_err() {
            panicked += 1;
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    child.send("FAULTS OFF").await?;
    let _ = sampler.await;

    // Settle: the pool's books must balance against the sockets.
    let settle_deadline = Instant::now() + Duration::from_secs(10);
    let (mut active, mut waiting, mut idle, mut remote);
    loop {
        let st = client.stats();
        active = st.active();
        idle = st.idle();
        waiting = st.origins.iter().map(|o| o.waiting).sum::<usize>();
        remote = child.stats().await?;
        let proxy_open = remote["proxy_open"].as_u64().unwrap_or(u64::MAX) as usize;
        if (active == 0 && waiting == 0 && proxy_open == idle) || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = client.stats();
    let proxy_open = remote["proxy_open"].as_u64().unwrap_or(0);
    let server_open = remote["server_open"].as_u64().unwrap_or(0);
    drop(client);
    // Let the connection tasks notice the drop and close their sockets.
    let mut fds_after_client = open_fds();
    let leak_deadline = Instant::now() + Duration::from_secs(10);
    while fds_after_client - fds_before_client > args.fd_leak_tolerance
        && Instant::now() < leak_deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds_after_client = open_fds();
    }

    // What the server saw, and the faults injected.
    let report = child.report().await?;
    let mut dup_by_class: BTreeMap<Class, u64> = BTreeMap::new();
    let mut bare_post_dups = Vec::new();
    for id in report["duplicated"].as_array().cloned().unwrap_or_default() {
        let id = id.as_str().unwrap_or("?").to_string();
        let class = Class::from_id(&id).unwrap_or(Class::PostBare);
        *dup_by_class.entry(class).or_default() += 1;
        if class == Class::PostBare {
            bare_post_dups.push(id);
        }
    }
    let server_requests = report["server_requests"].as_u64().unwrap_or(0);
    let faults: BTreeMap<String, u64> = report["faults"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();

    // Drift.
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let steady: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.at >= warmup.as_secs_f64())
        .collect();
    let q = (steady.len() / 4).max(1);
    let first = &steady[..q.min(steady.len())];
    let last = &steady[steady.len().saturating_sub(q)..];
    let fd_first = median(first.iter().map(|s| s.fds).collect());
    let fd_last = median(last.iter().map(|s| s.fds).collect());
    let rss_first = median(first.iter().map(|s| s.rss_kb).collect());
    let rss_last = median(last.iter().map(|s| s.rss_kb).collect());
    let fd_drift = fd_last - fd_first;
    let rss_drift_pct = if rss_first > 0 {
        (rss_last - rss_first) as f64 * 100.0 / rss_first as f64
    } else {
        0.0
    };
    let fd_max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let rss_max = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let fd_leak = fds_after_client - fds_before_client;

    let sent = tally.sent.load(Ordering::SeqCst);
    let answered = tally.answered.load(Ordering::SeqCst);
    let failed = tally.failed.load(Ordering::SeqCst);
    let hung = tally.hung.load(Ordering::SeqCst);
    let lost = sent.saturating_sub(answered + failed) + hung;
    let faults_total: u64 = faults.values().sum();
    let failures = tally
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let examples = tally
        .examples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let per_class = tally
        .per_class
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();

    // Verdicts.
    let mut problems = Vec::new();
    if lost != 0 || sent != answered + failed {
        problems.push(format!(
            "{lost} requests lost (sent {sent} != answered {answered} + failed {failed}, hung {hung})"
        ));
    }
    if panicked != 0 {
        problems.push(format!("{panicked} request loops panicked"));
    }
    if !bare_post_dups.is_empty() {
        let shown: Vec<&str> = bare_post_dups.iter().take(5).map(String::as_str).collect();
        problems.push(format!(
            "{} POSTs without Idempotency-Key were processed twice (e.g. {})",
            bare_post_dups.len(),
            shown.join(", ")
        ));
    }
    if fd_drift > args.fd_tolerance {
        problems.push(format!(
            "open fds grew by {fd_drift} after warm-up (median {fd_first} -> {fd_last}; tolerance {})",
            args.fd_tolerance
        ));
    }
    if fd_leak > args.fd_leak_tolerance {
        problems.push(format!(
            "{fd_leak} more fds open 10 s after the client was dropped than before it existed (tolerance {})",
            args.fd_leak_tolerance
        ));
    }
    if rss_drift_pct > args.rss_tolerance {
        problems.push(format!(
            "RSS grew by {rss_drift_pct:.1}% after warm-up ({rss_first} -> {rss_last} KiB; tolerance {}%)",
            args.rss_tolerance
        ));
    }
    if active != 0 || waiting != 0 {
        problems.push(format!(
            "the pool did not settle: {active} active, {waiting} waiting 10 s after the load stopped"
        ));
    }
    if steady.len() < 2 {
        problems.push("too few resource samples after warm-up to judge drift (run longer)".into());
    }

    // Report.
    println!();
    println!("== freshpool soak summary ==");
    println!(
        "load              {load_secs:.1} s, {} loops, seed {seed}",
        args.concurrency
    );
    println!(
        "requests          sent {sent}  answered {answered}  failed {failed}  lost {lost}  ({:.0} req/s; the server processed {server_requests})",
        sent as f64 / load_secs.max(0.001)
    );
    println!();
    println!(
        "{:<24} {:>9} {:>9} {:>8} {:>11}",
        "class", "sent", "answered", "failed", "dup@server"
    );
    for c in Class::ALL {
        let [s, a, f] = per_class.get(&c).copied().unwrap_or_default();
        let d = dup_by_class.get(&c).copied().unwrap_or(0);
        println!("{:<24} {s:>9} {a:>9} {f:>8} {d:>11}", c.label());
    }
    println!();
    println!("{:<36} {:>8}", "failures by kind", "count");
    for (k, n) in &failures {
        println!("{k:<36} {n:>8}");
    }
    println!();
    println!("{:<36} {:>8}", "faults injected", "count");
    for f in FAULTS {
        println!("{f:<36} {:>8}", faults.get(f).copied().unwrap_or(0));
    }
    println!("{:<36} {faults_total:>8}", "total");
    println!();
    println!(
        "duplicates        POST without key {} (must be 0); retried GET/PUT/keyed POST seen twice: {}",
        bare_post_dups.len(),
        dup_by_class
            .iter()
            .filter(|(c, _)| **c != Class::PostBare)
            .map(|(_, n)| n)
            .sum::<u64>()
    );
    println!(
        "pool              created {}  reused {}  retries {}  pool timeouts {}  at end: idle {idle} active {active} waiting {waiting}; proxy open {proxy_open}, server open {server_open}",
        stats.created(),
        stats.reused(),
        stats.origins.iter().map(|o| o.retries).sum::<u64>(),
        stats.origins.iter().map(|o| o.pool_timeouts).sum::<u64>(),
    );
    println!(
        "fds               before client {fds_before_client}, median after warm-up {fd_first} -> last quarter {fd_last} (drift {fd_drift:+}, max {fd_max}), after client dropped {fds_after_client} (leak {fd_leak:+})"
    );
    println!(
        "rss               median after warm-up {rss_first} KiB -> last quarter {rss_last} KiB (drift {rss_drift_pct:+.1}%, max {rss_max} KiB)"
    );
    if !examples.is_empty() {
        println!();
        println!("a message per failure kind:");
        for (k, m) in &examples {
            let m: String = m.chars().take(200).collect();
            println!("  {k}: {m}");
        }
    }
    println!();
    let verdict = if problems.is_empty() { "PASS" } else { "FAIL" };
    println!("verdict           {verdict}");
    for p in &problems {
        println!("  - {p}");
    }

    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "seed": seed,
            "duration_s": load_secs,
            "concurrency": args.concurrency,
            "http2": args.http2,
            "sent": sent,
            "answered": answered,
            "failed": failed,
            "lost": lost,
            "hung": hung,
            "failures": failures,
            "faults": faults,
            "faults_total": faults_total,
            "duplicated_post_without_key": bare_post_dups.len(),
            "duplicated_retried_idempotent": dup_by_class.iter().filter(|(c, _)| **c != Class::PostBare).map(|(_, n)| n).sum::<u64>(),
            "server_requests": server_requests,
            "connections_created": stats.created(),
            "retries": stats.origins.iter().map(|o| o.retries).sum::<u64>(),
            "fd_before_client": fds_before_client,
            "fd_first": fd_first,
            "fd_last": fd_last,
            "fd_drift": fd_drift,
            "fd_max": fd_max,
            "fd_after_client": fds_after_client,
            "rss_first_kb": rss_first,
            "rss_last_kb": rss_last,
            "rss_drift_pct": rss_drift_pct,
            "rss_max_kb": rss_max,
            "settled": { "active": active, "waiting": waiting, "idle": idle, "proxy_open": proxy_open },
            "verdict": verdict,
            "problems": problems,
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("soak failed: {}", problems.join("; ")))
    }
}

/// The child process holding the server, the proxy and the fault injector.
struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    port: u16,
}

impl Child {
    async fn spawn(seed: u64, fault_every: Duration, http2: bool) -> Result<Child, String> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut proc = tokio::process::Command::new(exe)
            .args([
                "soak".to_string(),
                "--serve".to_string(),
                "--seed".to_string(),
                seed.to_string(),
                "--fault-every".to_string(),
                format!("{}ms", fault_every.as_millis()),
            ])
            .args(http2.then_some("--http2"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the server process: {e}"))?;
        let stdin = proc.stdin.take().ok_or("no stdin for the server process")?;
        let stdout = proc
            .stdout
            .take()
            .ok_or("no stdout for the server process")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| "the server process did not start in 20 s".to_string())?
            .map_err(|e| format!("reading the server process: {e}"))?
            .ok_or("the server process exited before it was ready")?;
        let port = ready
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("unexpected first line from the server process: {ready:?}"))?;
        Ok(Child {
            proc,
            stdin,
            lines,
            port,
        })
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("writing to the server process: {e}"))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("writing to the server process: {e}"))
    }

    async fn expect(&mut self, prefix: &str) -> Result<serde_json::Value, String> {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .map_err(|_| format!("no {prefix:?} answer from the server process in 20 s"))?
                .map_err(|e| format!("reading the server process: {e}"))?
                .ok_or("the server process exited")?;
            if let Some(json) = line.strip_prefix(prefix) {
                return serde_json::from_str(json)
                    .map_err(|e| format!("bad answer from the server process: {e}"));
            }
        }
    }

    async fn stats(&mut self) -> Result<serde_json::Value, String> {
        self.send("STATS").await?;
        self.expect("STATS ").await
    }

    async fn report(mut self) -> Result<serde_json::Value, String> {
        self.send("REPORT").await?;
        let report = self.expect("REPORT ").await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.proc.wait()).await;
        Ok(report)
    }
}

/// `soak --serve`: the server, the proxy and the fault injector, driven
/// by the parent over stdin (`FAULTS ON`, `FAULTS OFF`, `STATS`, `REPORT`).
async fn serve(args: SoakArgs) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let seed = args.seed.unwrap_or(1);
    let server = Arc::new(
        TestServer::start(ServerConfig {
            // The server also closes idle keep-alive connections on its own.
            idle_timeout: Some(Duration::from_secs(4)),
            protocol: if args.http2 {
                freshpool_testkit::Protocol::Http2
            } else {
                freshpool_testkit::Protocol::Http1
            },
            // A handful of streams per connection, so HTTP/2 also opens
            // several connections.
            max_concurrent_streams: args.http2.then_some(8),
            ..ServerConfig::default()
        })
        .await,
    );
    let proxy = Arc::new(ChaosProxy::start(server.addr()).await);
    println!("READY {}", proxy.addr().port());
    let faults = Arc::new(Mutex::new(BTreeMap::<&'static str, u64>::new()));
    let mut injector: Option<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)> = None;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "FAULTS ON" if injector.is_none() => {
                let stop = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(inject(
                    proxy.clone(),
                    server.clone(),
                    stop.clone(),
                    faults.clone(),
                    args.fault_every,
                    seed,
                ));
                injector = Some((stop, task));
            }
            "FAULTS OFF" => {
                if let Some((stop, task)) = injector.take() {
                    stop.store(true, Ordering::SeqCst);
                    let _ = task.await;
                }
                proxy.set_idle_close(None);
                proxy.set_blackhole(false);
            }
            "STATS" => println!(
                "STATS {}",
                serde_json::json!({
                    "proxy_open": proxy.stats().open_connections,
                    "server_open": server.stats().open_connections(),
                })
            ),
            "REPORT" => {
                let faults = faults.lock().unwrap_or_else(|p| p.into_inner()).clone();
                println!(
                    "REPORT {}",
                    serde_json::json!({
                        "duplicated": server.stats().duplicated_request_ids(),
                        "server_requests": server.stats().requests(),
                        "faults": faults,
                        "proxy_accepted": proxy.stats().connections_accepted,
                        "proxy_resets": proxy.stats().resets_sent,
                    })
                );
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Injects one random fault about every `every` until `stop`.
async fn inject(
    proxy: Arc<ChaosProxy>,
    server: Arc<TestServer>,
    stop: Arc<AtomicBool>,
    faults: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    every: Duration,
    seed: u64,
) {
    let every = every.max(Duration::from_millis(50));
    let mut rng = Rng(seed ^ 0xFA17);
    let mut idle_close_on = false;
    // Let the pool warm up before the first fault.
    tokio::time::sleep(every).await;
    while !stop.load(Ordering::SeqCst) {
        let ms = every.as_millis() as u64;
        tokio::time::sleep(rng.millis(ms / 2, ms * 3 / 2)).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        match fault {
            "kill_all_silently" => {
                proxy.kill_all_silently();
            }
            "idle_close" => {
                idle_close_on = !idle_close_on;
                proxy.set_idle_close(idle_close_on.then(|| rng.millis(100, 1500)));
            }
            "truncate_next_response" => {
                proxy.truncate_next_response(rng.below(120) as usize);
            }
            "garbage_next_response" => {
                let bytes: &[u8] = match rng.below(3) {
                    0 => b"garbage\r\n\r\n",
                    1 => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
                    _ => b"\x00\x01\x02 not http at all",
                };
                proxy.garbage_next_response(bytes.to_vec());
            }
            "blackhole" => {
                proxy.set_blackhole(true);
                tokio::time::sleep(rng.millis(100, 800)).await;
                proxy.set_blackhole(false);
            }
            _ => server.close_all(),
        }
        *faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(fault)
            .or_default() += 1;
    }
}

fn kind_name(kind: Kind) -> String {
    format!("{kind:?}")
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 120.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn request_ids_map_back_to_their_class() {
        for c in Class::ALL {
            assert_eq!(Class::from_id(&format!("{}-17", c.prefix())), Some(c));
        }
    }
}
