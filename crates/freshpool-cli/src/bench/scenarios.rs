//! The six scenarios, each modelling an incident from the field. Every cell
//! gets its own fresh servers, so server counters (connections, peaks,
//! duplicates) belong to that cell alone. Every loop is bounded in count and
//! in time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshpool_testkit::{ChaosProxy, Protocol, ServerConfig, ServerStats, TestCa, TestServer};

use super::cell::{Cell, Recorder};
use super::driver::{Driver, Req, Settings, Strategy};

/// A failure mode from the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Waves of 9 concurrent requests over TLS (HTTP/1.1 and HTTP/2): the first cold, the next on what the strategy kept.
    Burst,
    /// 64 concurrent workers, as many requests as possible.
    Throughput,
    /// Request gaps straddling the server's 300 ms idle timeout.
    StaleFin,
    /// Connections silently dropped while the client process is frozen.
    Freeze,
    /// Slow responses, a per-host limit of 2 and held (unread) bodies.
    Starvation,
    /// 300 concurrent slow requests: how many connections get opened.
    Unbounded,
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Burst,
        Scenario::Throughput,
        Scenario::StaleFin,
        Scenario::Freeze,
        Scenario::Starvation,
        Scenario::Unbounded,
    ];

    /// The command-line / report name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Burst => "burst",
            Scenario::Throughput => "throughput",
            Scenario::StaleFin => "stale-fin",
            Scenario::Freeze => "freeze",
            Scenario::Starvation => "starvation",
            Scenario::Unbounded => "unbounded",
        }
    }
}

/// What every cell of a run shares.
pub struct Ctx {
    /// Fewer requests and waves (< 60 s in all).
    pub quick: bool,
    /// The CA the TLS servers' certificates are signed by.
    pub ca: Arc<TestCa>,
    /// Each cell's time limit, when not the default (tests).
    pub cell_limit: Option<Duration>,
}

impl Ctx {
    fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Request timeout of every strategy (except where a scenario sets its own).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The idle timeout of the stale-fin server.
pub const STALE_IDLE: Duration = Duration::from_millis(300);
/// How long the client process is frozen in the freeze scenario.
pub const FREEZE: Duration = Duration::from_millis(1600);

fn settings() -> Settings {
    Settings {
        timeout: TIMEOUT,
        per_host: None,
        pool_timeout: None,
        ca: None,
    }
}

/// An HTTPS server with a `ca` certificate: HTTP/2 and HTTP/1.1 (ALPN) for
/// [`Protocol::Auto`], else only the one protocol.
pub async fn tls_server(ca: &TestCa, protocol: Protocol) -> TestServer {
    let alpn: &[&[u8]] = match protocol {
        Protocol::Http1 => &[b"http/1.1"],
        Protocol::Http2 => &[b"h2"],
        _ => &[b"h2", b"http/1.1"],
    };
    TestServer::start(ServerConfig {
        protocol,
        tls: Some(ServerConfig::tls_config(ca, alpn)),
        ..ServerConfig::default()
    })
    .await
}

/// A cleartext HTTP/1.1 server with the given idle timeout.
pub async fn h1_server(idle_timeout: Option<Duration>) -> TestServer {
    TestServer::start(ServerConfig {
        idle_timeout,
        ..ServerConfig::default()
    })
    .await
}

/// Runs one cell, bounded by `limit` overall.
pub async fn run_cell(scenario: Scenario, strategy: Strategy, ctx: &Ctx) -> Result<Cell, String> {
    let started = Instant::now();
    let limit = ctx
        .cell_limit
        .unwrap_or_else(|| ctx.pick(Duration::from_secs(30), Duration::from_secs(120)));
    let work = async {
        match scenario {
            Scenario::Burst => burst(strategy, ctx).await,
            Scenario::Throughput => throughput(strategy, ctx).await,
            Scenario::StaleFin => stale_fin(strategy, ctx).await,
            Scenario::Freeze => freeze(strategy, ctx).await,
            Scenario::Starvation => starvation(strategy, ctx).await,
            Scenario::Unbounded => unbounded(strategy, ctx).await,
        }
    };
    let (rec, servers) = tokio::time::timeout(limit, work).await.map_err(|_| {
        format!(
            "{}/{}: cell exceeded {limit:?}",
            scenario.name(),
            strategy.name()
        )
    })??;
    let mut cell = Cell {
        scenario: scenario.name().into(),
        strategy: strategy.name().into(),
        elapsed_s: started.elapsed().as_secs_f64(),
        ..Cell::default()
    };
    for stats in servers {
        cell.connections_opened += stats.connections_accepted();
        cell.peak_open_connections = cell
            .peak_open_connections
            .max(stats.peak_open_connections());
        cell.duplicated_posts += stats.duplicated_request_ids().len() as u64;
    }
    rec.fill(&mut cell);
    Ok(cell)
}

type Outcome = Result<(Recorder, Vec<Arc<ServerStats>>), String>;

async fn burst(strategy: Strategy, ctx: &Ctx) -> Outcome {
    // Alternate waves between HTTPS over HTTP/1.1 and over HTTP/2.
    let servers = [
        tls_server(&ctx.ca, Protocol::Http1).await,
        tls_server(&ctx.ca, Protocol::Http2).await,
    ];
    let driver = Driver::new(
        strategy,
        &Settings {
            ca: Some(ctx.ca.ca_cert_der()),
            ..settings()
        },
    )?;
    let (waves, budget) = ctx.pick((10, 8), (40, 30));
    let deadline = Instant::now() + Duration::from_secs(budget);
    let rec = Recorder::default();
    for w in 0..waves {
        if Instant::now() > deadline {
            break;
        }
        let url = servers[w % 2].url("/");
        rec.wave(&driver, (0..9).map(|_| Req::get(&url)).collect())
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((rec, servers.iter().map(TestServer::stats_handle).collect()))
}

async fn throughput(strategy: Strategy, ctx: &Ctx) -> Outcome {
    let server = h1_server(None).await;
    let driver = Driver::new(strategy, &settings())?;
    let (total, budget) = ctx.pick((4_000u64, 6), (20_000, 30));
    let deadline = Instant::now() + Duration::from_secs(budget);
    let rec = Recorder::default();
    let next = Arc::new(AtomicU64::new(0));
    let url: Arc<str> = server.url("/").into();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (driver, rec, next, url) = (driver.clone(), rec.clone(), next.clone(), url.clone());
        set.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                rec.timed(&driver, Req::get(&url)).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    rec.add_busy(started.elapsed());
    Ok((rec, vec![server.stats_handle()]))
}

async fn stale_fin(strategy: Strategy, ctx: &Ctx) -> Outcome {
    let server = h1_server(Some(STALE_IDLE)).await;
    let driver = Driver::new(strategy, &settings())?;
    let (waves, budget) = ctx.pick((12u64, 8), (40, 30));
    let deadline = Instant::now() + Duration::from_secs(budget);
    let rec = Recorder::default();
    let url = server.url("/");
    for w in 0..waves {
        // The pause before each wave but the first, and none after the
        // last: the server's idle closes then counted (below) are each
        // followed by a wave that meets them. (A pause after the last
        // wave, or before a deadline's stop, counted up to 8 closes that
        // no request met.)
        if w > 0 {
            if Instant::now() > deadline {
                break;
            }
            // 296..=304 ms: straddles the server's 300 ms idle timeout, so
            // the server's close and the next request often land in the
            // same millisecond: the stale-connection race.
            tokio::time::sleep(Duration::from_millis(296 + (w * 4) % 9)).await;
        }
        rec.wave(&driver, (0..8).map(|_| Req::get(&url)).collect())
            .await;
    }
    // (Within 300 ms of the last wave: its connections are not closed yet.)
    rec.add_faults_hit(server.stats().idle_closes());
    Ok((rec, vec![server.stats_handle()]))
}

/// Runs `f` on a thread of its own with a single-threaded runtime, so the
/// client side can be frozen (the thread blocked) while the servers, on the
/// main runtime, keep running.
fn on_own_thread<F, Fut, T>(f: F) -> impl Future<Output = Result<T, String>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f()))
                .map_err(|e| format!("cannot start the client runtime: {e}"));
            let _ = tx.send(result);
        });
    async move {
        spawned.map_err(|e| format!("cannot start the client thread: {e}"))?;
        rx.await
            .map_err(|_| "the client thread panicked".to_string())?
    }
}

async fn freeze(strategy: Strategy, ctx: &Ctx) -> Outcome {
    let server = h1_server(None).await;
    let proxy = Arc::new(ChaosProxy::start(server.addr()).await);
    let rounds = ctx.pick(2, 6);
    let tag = strategy.name();
    let rec = Recorder::default();
    let (r, p) = (rec.clone(), proxy.clone());
    let client_side = on_own_thread(move || async move {
        let driver = Driver::new(strategy, &settings())?;
        let (get, echo) = (p.url("/"), p.url("/echo"));
        r.wave(&driver, (0..8).map(|_| Req::get(&get)).collect())
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        for round in 0..rounds {
            if Instant::now() > deadline {
                break;
            }
            // The NAT forgets every flow while the process is frozen: the
            // client's thread (its runtime, timers, pool) does not run, and
            // neither does freshpool's liveness thread, as in a real freeze
            // (without the hook, a runtime that is merely not driven).
            r.add_faults_hit(p.kill_all_silently() as u64);
            freshpool::__simulate_freeze(FREEZE);
            std::thread::sleep(FREEZE);
            let posts = (0..8)
                .map(|i| {
                    Req::post(
                        &echo,
                        format!("order {round}-{i}"),
                        format!("{tag}-{round}-{i}"),
                    )
                })
                .collect();
            r.wave(&driver, posts).await;
            r.wave(&driver, (0..8).map(|_| Req::get(&get)).collect())
                .await;
        }
        Ok::<(), String>(())
    });
    client_side.await??;
    Ok((rec, vec![server.stats_handle()]))
}

async fn starvation(strategy: Strategy, ctx: &Ctx) -> Outcome {
    let server = h1_server(None).await;
    let driver = Driver::new(
        strategy,
        &Settings {
            timeout: Duration::from_secs(3),
            per_host: Some(2),
            pool_timeout: Some(Duration::from_secs(1)),
            ca: None,
        },
    )?;
    let waves = ctx.pick(1, 3);
    let rec = Recorder::default();
    let url = server.url("/delay/200");
    for _ in 0..waves {
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..12 {
            let mut req = Req::get(&url);
            if i < 3 {
                // A caller that forgot to read (or drop) its body.
                req.hold = Some(Duration::from_millis(1500));
            }
            let (driver, rec) = (driver.clone(), rec.clone());
            set.spawn(async move { rec.timed(&driver, req).await });
            if i == 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while set.join_next().await.is_some() {}
        rec.add_busy(started.elapsed());
    }
    Ok((rec, vec![server.stats_handle()]))
}

async fn unbounded(strategy: Strategy, ctx: &Ctx) -> Outcome {
    let server = h1_server(None).await;
    let driver = Driver::new(strategy, &settings())?;
    let (waves, delay) = ctx.pick((1, 300), (2, 500));
    let rec = Recorder::default();
    let url = server.url(&format!("/delay/{delay}"));
    for _ in 0..waves {
        rec.wave(&driver, (0..300).map(|_| Req::get(&url)).collect())
            .await;
    }
    Ok((rec, vec![server.stats_handle()]))
}
