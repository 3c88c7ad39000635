//! What one (scenario, strategy) cell measured.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::driver::{Driver, Failure, Req};

/// The result of one scenario run with one strategy.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Cell {
    /// Scenario name.
    pub scenario: String,
    /// Strategy name.
    pub strategy: String,
    /// Requests sent (ok + errors).
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Failures by kind (freshpool `Kind` Debug names; reqwest classes).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Wall time of the cell, seconds.
    pub elapsed_s: f64,
    /// Successful requests per second over the cell's busy time. (Not
    /// failures: a strategy failing fast would score best.)
    pub rps: f64,
    /// Median latency of successful requests, ms (`None`: none succeeded;
    /// a 0 read as the fastest).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of successful requests, ms.
    pub p99_ms: Option<f64>,
    /// Largest latency of a successful request, ms.
    pub max_ms: Option<f64>,
    /// TCP connections the server accepted.
    pub connections_opened: u64,
    /// Most TCP connections open at once at the server.
    pub peak_open_connections: u64,
    /// POST request ids the server processed more than once.
    pub duplicated_posts: u64,
    /// Connections the scenario's fault cut while the client held them
    /// (`stale-fin`: the server's idle closes; `freeze`: the flows the
    /// proxy dropped during the freezes). `None`: a scenario without a
    /// fault. A verdict over a fault that cut nothing tested nothing.
    #[serde(default)]
    pub faults_hit: Option<u64>,
}

#[derive(Default)]
struct Inner {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    busy: Duration,
    faults_hit: Option<u64>,
}

/// Collects latencies and failures from concurrent tasks.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Inner>>);

impl Recorder {
    /// Records one outcome.
    pub fn record(&self, took: Duration, result: Result<(), Failure>) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => inner.latencies.push(took),
            Err(f) => {
                *inner.errors.entry(f.kind.clone()).or_default() += 1;
                if inner.first_error.is_none() {
                    inner.first_error = Some(format!("{}: {}", f.kind, f.message));
                }
            }
        }
    }

    /// Adds time during which requests were in flight (for requests/s).
    pub fn add_busy(&self, d: Duration) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).busy += d;
    }

    /// Counts `n` connections cut by the scenario's fault.
    pub fn add_faults_hit(&self, n: u64) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *inner.faults_hit.get_or_insert(0) += n;
    }

    /// Sends `reqs` concurrently and waits for all of them.
    pub async fn wave(&self, driver: &Driver, reqs: Vec<Req>) {
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for req in reqs {
            let (driver, rec) = (driver.clone(), self.clone());
            set.spawn(async move { rec.timed(&driver, req).await });
        }
        while set.join_next().await.is_some() {}
        self.add_busy(started.elapsed());
    }

    /// Sends one request and records it.
    /// Sends `req` and records its latency: to its body's end, or, for a
    /// body held unread on purpose (`Req::hold`), to its response head
    /// (the hold is the caller's sleep: counted, it made `starvation`'s
    /// p50 the 1.5 s hold).
    pub async fn timed(&self, driver: &Driver, req: Req) {
        let hold = req.hold.unwrap_or_default();
        let t = Instant::now();
        let result = driver.send(req).await;
        self.record(t.elapsed().saturating_sub(hold), result);
    }

    /// Fills the request/latency fields of `cell`.
    pub fn fill(&self, cell: &mut Cell) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.latencies.sort();
        let ok = inner.latencies.len() as u64;
        cell.errors = inner.errors.values().sum();
        cell.requests = ok + cell.errors;
        cell.errors_by_kind = inner.errors.clone();
        cell.first_error = inner.first_error.clone();
        cell.faults_hit = inner.faults_hit;
        let q = |q: f64| -> Option<f64> {
            if inner.latencies.is_empty() {
                return None;
            }
            let i = ((inner.latencies.len() as f64 * q).ceil() as usize)
                .clamp(1, inner.latencies.len());
            Some(ms(inner.latencies[i - 1]))
        };
        cell.p50_ms = q(0.50);
        cell.p99_ms = q(0.99);
        cell.max_ms = inner.latencies.last().map(|d| ms(*d));
        let busy = inner.busy.as_secs_f64();
        cell.rps = if busy > 0.0 { ok as f64 / busy } else { 0.0 };
    }
}

impl Cell {
    /// A latency field in ms for a table, or `-` when no request succeeded.
    pub fn latency(ms: Option<f64>) -> String {
        ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}"))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::driver::Failure;

    fn failure() -> Failure {
        Failure {
            kind: "PoolTimeout".into(),
            message: "timed out".into(),
        }
    }

    /// Failures are neither throughput nor latency: a cell where nothing
    /// succeeded shows no latency (it showed 0.0 ms, the best figure in the
    /// table and the chart) and 0 successful requests/s.
    #[test]
    fn failures_count_as_neither_throughput_nor_latency() {
        let rec = Recorder::default();
        for _ in 0..10 {
            rec.record(Duration::from_millis(1), Err(failure()));
        }
        rec.add_busy(Duration::from_secs(1));
        let mut cell = Cell::default();
        rec.fill(&mut cell);
        assert_eq!((cell.requests, cell.errors), (10, 10));
        assert_eq!(cell.rps, 0.0);
        assert_eq!((cell.p50_ms, cell.p99_ms, cell.max_ms), (None, None, None));
        assert_eq!(Cell::latency(cell.p99_ms), "-");
        rec.record(Duration::from_millis(20), Ok(()));
        rec.record(Duration::from_millis(40), Ok(()));
        rec.fill(&mut cell);
        assert_eq!(cell.requests, 12);
        assert_eq!(cell.rps, 2.0, "2 successes in 1 s of busy time");
        assert_eq!(cell.max_ms, Some(40.0));
        assert_eq!(Cell::latency(cell.p50_ms), "20.0");
    }
}
