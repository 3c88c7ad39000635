//! The soak's measurements and verdict: resource samples, drift, the
//! pass criteria, the printed summary and its JSON form.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::child::FAULTS;
use super::mix::{Class, Tally};
use super::SoakArgs;

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sample {
    at: f64,
    fds: i64,
    rss_kb: i64,
}

pub(super) fn open_fds() -> i64 {
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

/// Samples fds and RSS every second (and prints progress every ten) until
/// stopped.
pub(super) struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(super) fn spawn(started: Instant, tally: Arc<Tally>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let samples = samples.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                // (From a second in: a sample at the start, before any
                // connection, read as growth with `--warmup 0`.)
                let second = Duration::from_secs(1);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + second, second);
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
        Sampler {
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling; returns every sample taken.
    pub(super) async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.clone()
    }
}

/// How the pool and the sockets looked once the load stopped.
pub(super) struct Settled {
    pub active: usize,
    pub waiting: usize,
    pub idle: usize,
    pub proxy_open: u64,
    pub server_open: u64,
    pub created: u64,
    pub reused: u64,
    pub retries: u64,
    pub pool_timeouts: u64,
}

impl Settled {
    /// What is wrong with the pool 10 s after the load stopped, if
    /// anything: a lease or a waiter left, or the proxy holding other
    /// connections than the pool's idle ones (a connection the pool lost
    /// track of, or one it counts that is gone: the "zombie" the HTTP/2
    /// soak once found).
    pub(super) fn unsettled(&self) -> Option<String> {
        if self.active != 0 || self.waiting != 0 {
            return Some(format!(
                "the pool did not settle: {} active, {} waiting 10 s after the load stopped",
                self.active, self.waiting
            ));
        }
        if self.proxy_open != self.idle as u64 {
            return Some(format!(
                "the pool's books do not match the wire: {} idle in the pool, {} open at the proxy 10 s after the load stopped",
                self.idle, self.proxy_open
            ));
        }
        None
    }
}

/// What the child process reports at the end.
pub(super) struct ServerReport {
    pub server_requests: u64,
    pub faults: BTreeMap<String, u64>,
    /// Request ids the server processed more than once, by class.
    pub dup_by_class: BTreeMap<Class, u64>,
    /// The POSTs without key among them (must be none).
    pub bare_post_dups: Vec<String>,
}

impl ServerReport {
    pub(super) fn from_json(report: &serde_json::Value) -> ServerReport {
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
        let faults = report["faults"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        ServerReport {
            server_requests: report["server_requests"].as_u64().unwrap_or(0),
            faults,
            dup_by_class,
            bare_post_dups,
        }
    }

    fn retried_dups(&self) -> u64 {
        self.dup_by_class
            .iter()
            .filter(|(c, _)| **c != Class::PostBare)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The median of the first and of the last quarter of the samples taken
/// after warm-up.
struct Drift {
    steady_samples: usize,
    fd_first: i64,
    fd_last: i64,
    fd_max: i64,
    rss_first: i64,
    rss_last: i64,
    rss_max: i64,
}

impl Drift {
    fn new(samples: &[Sample], warmup: Duration) -> Drift {
        let steady: Vec<Sample> = samples
            .iter()
            .copied()
            .filter(|s| s.at >= warmup.as_secs_f64())
            .collect();
        let q = (steady.len() / 4).max(1);
        let first = &steady[..q.min(steady.len())];
        let last = &steady[steady.len().saturating_sub(q)..];
        Drift {
            steady_samples: steady.len(),
            fd_first: median(first.iter().map(|s| s.fds).collect()),
            fd_last: median(last.iter().map(|s| s.fds).collect()),
            fd_max: samples.iter().map(|s| s.fds).max().unwrap_or(0),
            rss_first: median(first.iter().map(|s| s.rss_kb).collect()),
            rss_last: median(last.iter().map(|s| s.rss_kb).collect()),
            rss_max: samples.iter().map(|s| s.rss_kb).max().unwrap_or(0),
        }
    }

    fn fd(&self) -> i64 {
        self.fd_last - self.fd_first
    }

    fn rss_pct(&self) -> f64 {
        if self.rss_first > 0 {
            (self.rss_last - self.rss_first) as f64 * 100.0 / self.rss_first as f64
        } else {
            0.0
        }
    }
}

/// Everything the soak measured, judged against the pass criteria.
pub(super) struct Summary<'a> {
    pub args: &'a SoakArgs,
    pub seed: u64,
    pub load_secs: f64,
    pub panicked: usize,
    pub tally: &'a Tally,
    pub settled: Settled,
    pub server: ServerReport,
    pub samples: Vec<Sample>,
    pub warmup: Duration,
    pub fds_before_client: i64,
    pub fds_after_client: i64,
}

impl Summary<'_> {
    /// Prints the summary, writes the JSON if asked, and returns the
    /// verdict: `Err` with every criterion that failed.
    pub(super) fn report(&self) -> Result<(), String> {
        let t = self.tally;
        let sent = t.sent.load(Ordering::SeqCst);
        let answered = t.answered.load(Ordering::SeqCst);
        let failed = t.failed.load(Ordering::SeqCst);
        let hung = t.hung.load(Ordering::SeqCst);
        let lost = sent.saturating_sub(answered + failed) + hung;
        let drift = Drift::new(&self.samples, self.warmup);
        let fd_leak = self.fds_after_client - self.fds_before_client;
        let fd_leak_unmeasured = self.fds_before_client < 0 || self.fds_after_client < 0;
        let failures = t.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let examples = t.examples.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let per_class = t
            .per_class
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (args, s, srv) = (self.args, &self.settled, &self.server);
        let faults_total: u64 = srv.faults.values().sum();

        // Verdicts.
        let mut problems = Vec::new();
        // (A hung request is counted as failed too: said apart, or the
        // message read "sent 10 != answered 5 + failed 5".)
        let unaccounted = sent.saturating_sub(answered + failed);
        if unaccounted != 0 || sent != answered + failed {
            problems.push(format!(
                "{unaccounted} requests lost (sent {sent} != answered {answered} + failed {failed})"
            ));
        }
        if hung != 0 {
            problems.push(format!(
                "{hung} requests hung (no answer or error within 60 s; counted as failed)"
            ));
        }
        if answered == 0 {
            problems.push("no request was answered".into());
        }
        let bad_statuses: u64 = failures
            .iter()
            .filter(|(kind, _)| kind.starts_with("HTTP "))
            .map(|(_, n)| *n)
            .sum();
        if bad_statuses != 0 {
            problems.push(format!(
                "{bad_statuses} answers had a status other than 2xx, which the soak's server never sends"
            ));
        }
        let wrong: u64 = failures
            .iter()
            .filter(|(kind, _)| kind.as_str() == super::mix::WRONG_ANSWER)
            .map(|(_, n)| *n)
            .sum();
        if wrong != 0 {
            problems.push(format!(
                "{wrong} answers were not their request's own (an echo of another payload, or the wrong length)"
            ));
        }
        if self.panicked != 0 {
            problems.push(format!("{} request loops panicked", self.panicked));
        }
        if !srv.bare_post_dups.is_empty() {
            let shown: Vec<&str> = srv
                .bare_post_dups
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            problems.push(format!(
                "{} POSTs without Idempotency-Key were processed twice (e.g. {})",
                srv.bare_post_dups.len(),
                shown.join(", ")
            ));
        }
        if drift.fd_first < 0 || drift.rss_first < 0 || fd_leak_unmeasured {
            // (Else every reading is -1, no drift, no leak: a pass that
            // measured nothing.)
            problems.push(
                "open fds and RSS cannot be read on this system (no /proc): the leak checks did not run"
                    .into(),
            );
        }
        if drift.fd() > args.fd_tolerance {
            problems.push(format!(
                "open fds grew by {} after warm-up (median {} -> {}; tolerance {})",
                drift.fd(),
                drift.fd_first,
                drift.fd_last,
                args.fd_tolerance
            ));
        }
        if fd_leak > args.fd_leak_tolerance {
            problems.push(format!(
                "{fd_leak} more fds open 10 s after the client was dropped than before it existed (tolerance {})",
                args.fd_leak_tolerance
            ));
        }
        if drift.rss_pct() > args.rss_tolerance {
            problems.push(format!(
                "RSS grew by {:.1}% after warm-up ({} -> {} KiB; tolerance {}%)",
                drift.rss_pct(),
                drift.rss_first,
                drift.rss_last,
                args.rss_tolerance
            ));
        }
        if faults_total == 0 {
            // Otherwise a run shorter than --fault-every passes untested.
            problems.push(format!(
                "no fault was injected (the first comes 1.5 to 2.5 times --fault-every, {} to {}, after the load starts; run longer)",
                super::fmt_secs(args.fault_every.mul_f64(1.5)),
                super::fmt_secs(args.fault_every.mul_f64(2.5))
            ));
        }
        problems.extend(s.unsettled());
        if drift.steady_samples < 2 {
            problems
                .push("too few resource samples after warm-up to judge drift (run longer)".into());
        }

        let load_secs = self.load_secs;
        let verdict = if problems.is_empty() { "PASS" } else { "FAIL" };
        // The file first: the printing below ends the process quietly at
        // a closed stdout (`| head`), which lost the file.
        let mut written = Ok(());
        if let Some(path) = &args.json {
            let json = serde_json::json!({
                "seed": self.seed,
                "duration_s": load_secs,
                "concurrency": args.concurrency,
                "http2": args.http2,
                "sent": sent,
                "answered": answered,
                "failed": failed,
                "lost": lost,
                "hung": hung,
                "failures": failures,
                "faults": srv.faults,
                "faults_total": faults_total,
                "duplicated_post_without_key": srv.bare_post_dups.len(),
                "wrong_answers": wrong,
                "duplicated_retried_idempotent": srv.retried_dups(),
                "server_requests": srv.server_requests,
                "connections_created": s.created,
                "retries": s.retries,
                "fd_before_client": self.fds_before_client,
                "fd_first": drift.fd_first,
                "fd_last": drift.fd_last,
                "fd_drift": drift.fd(),
                "fd_max": drift.fd_max,
                "fd_after_client": self.fds_after_client,
                "rss_first_kb": drift.rss_first,
                "rss_last_kb": drift.rss_last,
                "rss_drift_pct": drift.rss_pct(),
                "rss_max_kb": drift.rss_max,
                "settled": { "active": s.active, "waiting": s.waiting, "idle": s.idle, "proxy_open": s.proxy_open },
                "verdict": verdict,
                "problems": problems,
            });
            // (Its failure is told after the report: a bad path must not
            // lose the summary of an hour's run.)
            written = std::fs::write(
                path,
                serde_json::to_string_pretty(&json).unwrap_or_default(),
            )
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
        }

        // Report.
        println!();
        println!("== freshpool soak summary ==");
        println!(
            "load              {load_secs:.1} s, {} loops, seed {}",
            args.concurrency, self.seed
        );
        println!(
            "requests          sent {sent}  answered {answered}  failed {failed}  lost {lost}  ({:.0} req/s; the server processed {})",
            sent as f64 / load_secs.max(0.001),
            srv.server_requests
        );
        println!();
        println!(
            "{:<24} {:>9} {:>9} {:>8} {:>11}",
            "class", "sent", "answered", "failed", "dup@server"
        );
        for c in Class::ALL {
            let [cs, ca, cf] = per_class.get(&c).copied().unwrap_or_default();
            let d = srv.dup_by_class.get(&c).copied().unwrap_or(0);
            println!("{:<24} {cs:>9} {ca:>9} {cf:>8} {d:>11}", c.label());
        }
        println!();
        println!("{:<36} {:>8}", "failures by kind", "count");
        for (k, n) in &failures {
            println!("{k:<36} {n:>8}");
        }
        println!();
        println!("{:<36} {:>8}", "faults injected", "count");
        for f in FAULTS {
            println!("{f:<36} {:>8}", srv.faults.get(f).copied().unwrap_or(0));
        }
        println!("{:<36} {faults_total:>8}", "total");
        println!();
        println!(
            "duplicates        POST without key {} (must be 0); retried GET/PUT/keyed POST seen twice: {}",
            srv.bare_post_dups.len(),
            srv.retried_dups()
        );
        println!(
            "pool              created {}  reused {}  retries {}  pool timeouts {}  at end: idle {} active {} waiting {}; proxy open {}, server open {}",
            s.created, s.reused, s.retries, s.pool_timeouts, s.idle, s.active, s.waiting, s.proxy_open, s.server_open
        );
        println!(
            "fds               before client {}, median after warm-up {} -> last quarter {} (drift {:+}, max {}), after client dropped {} (leak {fd_leak:+})",
            self.fds_before_client, drift.fd_first, drift.fd_last, drift.fd(), drift.fd_max, self.fds_after_client
        );
        println!(
            "rss               median after warm-up {} KiB -> last quarter {} KiB (drift {:+.1}%, max {} KiB)",
            drift.rss_first, drift.rss_last, drift.rss_pct(), drift.rss_max
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
        println!("verdict           {verdict}");
        for p in &problems {
            println!("  - {p}");
        }

        written?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("soak failed: {}", problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(active: usize, idle: usize, proxy_open: u64) -> Settled {
        Settled {
            active,
            waiting: 0,
            idle,
            proxy_open,
            server_open: 0,
            created: 0,
            reused: 0,
            retries: 0,
            pool_timeouts: 0,
        }
    }

    #[test]
    fn a_pool_whose_idle_count_differs_from_the_wire_is_not_settled() {
        assert_eq!(settled(0, 2, 2).unsettled(), None);
        assert!(settled(1, 2, 2).unsettled().unwrap().contains("1 active"));
        let zombie = settled(0, 2, 1)
            .unsettled()
            .expect("a mismatch is a problem");
        assert!(
            zombie.contains("2 idle in the pool, 1 open at the proxy"),
            "{zombie}"
        );
    }
}
