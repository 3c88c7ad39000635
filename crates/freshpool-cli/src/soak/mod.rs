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
//!
//! Modules: [`mix`] (the request loops and their tally), [`child`] (the
//! server process and its faults), [`summary`] (samples, drift, verdict).

mod child;
mod mix;
mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser as _;
use freshpool::Client;

use child::Child;
use mix::Tally;
use summary::{open_fds, Sampler, ServerReport, Settled, Summary};

/// Arguments of `freshpool soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long to run the load (e.g. `20s`, `10m`, `1h`; more than 0).
    #[arg(long, default_value = "60s", value_parser = crate::load::parse_positive_duration)]
    pub duration: Duration,
    /// Concurrent request loops (1 to 100000, as `load -c`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000).map(|n| n as usize))]
    pub concurrency: usize,
    /// Mean time between two injected faults (at least 50ms).
    #[arg(long, default_value = "1s", value_parser = parse_fault_every)]
    pub fault_every: Duration,
    /// Samples before this are not used for drift (default: a tenth of the
    /// duration, at least 5 s; any value at most half the duration).
    #[arg(long, value_parser = crate::load::parse_duration)]
    pub warmup: Option<Duration>,
    /// Allowed growth of open file descriptors after warm-up.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(i64).range(0..))]
    pub fd_tolerance: i64,
    /// Descriptors that may stay open once the client is dropped (compared
    /// with before it existed).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i64).range(0..))]
    pub fd_leak_tolerance: i64,
    /// Allowed growth of RSS after warm-up, in percent.
    #[arg(long, default_value_t = 20.0, value_parser = parse_percent)]
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

/// Runs `freshpool soak`.
pub async fn run(args: SoakArgs) -> Result<(), String> {
    if args.serve {
        return child::serve(args).await;
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

    // (Registered now: a lazily registered handler left a Ctrl-C before
    // its first poll to kill the soak the default way.)
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ctrl_c = watch_ctrl_c(interrupted.clone())?;
    let mut child = Child::spawn(seed, args.fault_every, args.http2).await?;
    let fds_before_client = open_fds();
    let client = soak_client(&args)?;

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let sampler = Sampler::spawn(started, tally.clone());
    child.send("FAULTS ON").await?;
    let loops = mix::spawn_loops(
        &client,
        &tally,
        seed,
        args.concurrency,
        child.port,
        started + args.duration,
        &interrupted,
    );
    println!("load running: Ctrl-C stops it and prints the summary");
    let mut panicked = 0;
    for l in loops {
        if l.await.is_err() {
            panicked += 1;
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    child.send("FAULTS OFF").await?;
    let samples = sampler.finish().await;

    let settled = settle(&client, &mut child).await?;
    drop(client);
    let fds_after_client = fds_after_drop(fds_before_client, args.fd_leak_tolerance).await;
    let server = ServerReport::from_json(&child.report().await?);

    let verdict = Summary {
        args: &args,
        seed,
        load_secs,
        panicked,
        tally: &tally,
        settled,
        server,
        samples,
        warmup,
        fds_before_client,
        fds_after_client,
    }
    .report();
    ctrl_c.abort();
    if !interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        return verdict;
    }
    let why = format!(
        "interrupted (Ctrl-C) after {load_secs:.1} s: the summary covers the requests sent until then"
    );
    Err(match verdict {
        Ok(()) => why,
        Err(failed) => format!("{why}; {failed}"),
    })
}

/// The first Ctrl-C stops the load (requests in flight finish, bounded by
/// the client's 10 s `timeout`) and the summary follows; a second one
/// quits at once (the server process ends as its stdin closes). The
/// handler is registered before this returns, and stays registered
/// between the two (a signal in between is not lost).
fn watch_ctrl_c(
    interrupted: Arc<std::sync::atomic::AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot watch for Ctrl-C: {e}"))?;
    Ok(tokio::spawn(async move {
        if signals.recv().await.is_none() {
            return;
        }
        interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "interrupted (Ctrl-C): finishing the requests in flight, then the summary (Ctrl-C again quits now)"
        );
        if signals.recv().await.is_some() {
            std::process::exit(130);
        }
    }))
}

/// `--fault-every`: a duration of at least 50 ms (the injector's floor; it
/// printed "a fault every ~0.0 s" and used 50 ms).
fn parse_fault_every(s: &str) -> Result<Duration, String> {
    let d = crate::load::parse_duration(s)?;
    if d < Duration::from_millis(50) {
        return Err(format!(
            "'{s}' is below 50ms, the shortest time between faults"
        ));
    }
    Ok(d)
}

/// A tolerance in percent: a finite number, not negative (NaN compared
/// false with every drift and so passed any run).
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("'{s}' is not a percentage (a number from 0 up)")),
    }
}

fn soak_client(args: &SoakArgs) -> Result<Client, String> {
    Client::builder()
        // Its server and chaos proxy are its own, on 127.0.0.1: a proxy from
        // the environment would be soaked instead.
        .proxy_from_env(false)
        // Every loop may wait: the default queue bound (1024) refused the
        // loops beyond it at once, and they spun (see `spawn_loops`).
        .max_pending(args.concurrency.max(1024))
        .max_connections_per_host(args.max_connections_per_host)
        // (The total's default, 512, refused a per-host limit above it.)
        .max_connections_total(args.max_connections_per_host.max(512))
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
        .map_err(|e| format!("cannot build the client: {e}"))
}

/// Waits (up to 10 s) until the pool's books balance against the sockets:
/// no lease, no waiter, and the proxy holds exactly the idle connections.
async fn settle(client: &Client, child: &mut Child) -> Result<Settled, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = client.stats();
        let remote = child.stats().await?;
        let settled = Settled {
            active: st.active(),
            waiting: st.origins.iter().map(|o| o.waiting).sum(),
            idle: st.idle(),
            proxy_open: remote["proxy_open"].as_u64().unwrap_or(u64::MAX),
            server_open: remote["server_open"].as_u64().unwrap_or(0),
            created: st.created(),
            reused: st.reused(),
            retries: st.origins.iter().map(|o| o.retries).sum(),
            pool_timeouts: st.origins.iter().map(|o| o.pool_timeouts).sum(),
        };
        let balanced = settled.active == 0
            && settled.waiting == 0
            && settled.proxy_open == settled.idle as u64;
        if balanced || Instant::now() > deadline {
            return Ok(settled);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The open descriptors once the dropped client's connection tasks have
/// closed their sockets (waits up to 10 s for the count to come back).
async fn fds_after_drop(before: i64, tolerance: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now_open = open_fds();
    while now_open - before > tolerance && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now_open = open_fds();
    }
    now_open
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
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        soak: SoakArgs,
    }

    fn parse(args: &[&str]) -> Result<SoakArgs, String> {
        Cli::try_parse_from(std::iter::once("soak").chain(args.iter().copied()))
            .map(|c| c.soak)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_out_of_range_are_refused_by_name() {
        for (args, names) in [
            (&["--rss-tolerance", "NaN"][..], "rss-tolerance"),
            (&["--rss-tolerance", "inf"], "rss-tolerance"),
            (&["--rss-tolerance=-5"], "rss-tolerance"),
            (&["--fd-tolerance=-1"], "fd-tolerance"),
            (&["--fd-leak-tolerance=-1"], "fd-leak-tolerance"),
            (&["--concurrency", "0"], "concurrency"),
            (&["--concurrency", "100000000"], "concurrency"),
            (&["--fault-every", "0"], "fault-every"),
        ] {
            let err = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(err.contains(names), "{args:?}: {err}");
        }
        let ok = parse(&["--rss-tolerance", "12.5", "--fault-every", "50ms"]).unwrap();
        assert_eq!(ok.rss_tolerance, 12.5);
        assert_eq!(ok.fault_every, Duration::from_millis(50));
    }

    /// A per-host limit above the total's default (512) builds a client:
    /// it used to fail with "exceeds max_connections_total (512)", and no
    /// flag could raise the total.
    #[test]
    fn a_per_host_limit_above_512_builds_a_client() {
        let args = parse(&["--max-connections-per-host", "1000"]).unwrap();
        soak_client(&args).expect("a client");
    }
}
