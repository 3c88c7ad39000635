//! Counters the pool keeps per origin, and the snapshot users read.
//!
//! Counters are relaxed atomics bumped on paths that already do work (a
//! connect, a close); the hot path (checkout and return of a warm
//! connection) bumps none: its `reused` count is kept under the origin's
//! lock, which that path holds anyway. A snapshot takes each origin's
//! lock once, briefly, so calling [`crate::Client::stats`] every second is
//! cheap.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Idle longer than `idle_timeout`.
    IdleTimeout,
    /// Reached the server's `Keep-Alive: timeout` hint (minus the margin),
    /// or the hint was 0 (no reuse). Also when the server's own close came
    /// after that expiry but before the pool's sweep acted on it.
    KeepAliveHint,
    /// Older than `max_lifetime`, or its address left the resolver's
    /// answers (`CachingResolver::retire_after`).
    Lifetime,
    /// Carried `max_requests_per_connection` requests.
    MaxRequests,
    /// The server closed it while it sat in the pool (before any of the
    /// pool's own expiries), or said it would
    /// (`Connection: close`), or answered in HTTP/1.0 (whose next requests
    /// hyper would send as HTTP/1.0, without chunked uploads), or it was
    /// found closed as it came to the pool (new, or handed back).
    ServerClose,
    /// Found dead (FIN, reset, stray bytes) by the check before reuse, or
    /// by the request given to it: a pooled HTTP/1 connection that the
    /// server closed or reset before answering (its close crossed the
    /// checkout). Not counted as `Error`: nothing failed on the server's
    /// part, and the request went again if that was safe.
    StaleDetected,
    /// Dropped after the process was found to have been frozen.
    FreezeEviction,
    /// Failed during a request, or its response was not read to the end.
    Error,
    /// More idle connections than `max_idle_per_host`, closed to make
    /// room for another origin under `max_connections_total`, or no longer
    /// wanted: the pool was dropped (its last client gone), or
    /// [`Client::close_idle_connections`](crate::Client::close_idle_connections).
    Surplus,
    /// HTTP/2: read nothing while a request on it waited until it timed
    /// out or was given up (a NAT or peer that dropped it silently), or
    /// left its keep-alive PING unanswered (`http2_keep_alive_interval`), or
    /// took nothing of an upload for 5 s after answering it in full (the
    /// upload is given up, and its stream stays the server's).
    Unresponsive,
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 10] = [
        CloseReason::IdleTimeout,
        CloseReason::KeepAliveHint,
        CloseReason::Lifetime,
        CloseReason::MaxRequests,
        CloseReason::ServerClose,
        CloseReason::StaleDetected,
        CloseReason::FreezeEviction,
        CloseReason::Error,
        CloseReason::Surplus,
        CloseReason::Unresponsive,
    ];

    /// A stable snake_case name (used as a metric label).
    ///
    /// ```
    /// use freshpool::CloseReason;
    /// assert_eq!(CloseReason::IdleTimeout.as_str(), "idle_timeout");
    /// assert_eq!(CloseReason::StaleDetected.as_str(), "stale_detected");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::KeepAliveHint => "keep_alive_hint",
            CloseReason::Lifetime => "lifetime",
            CloseReason::MaxRequests => "max_requests",
            CloseReason::ServerClose => "server_close",
            CloseReason::StaleDetected => "stale_detected",
            CloseReason::FreezeEviction => "freeze_eviction",
            CloseReason::Error => "error",
            CloseReason::Surplus => "surplus",
            CloseReason::Unresponsive => "unresponsive",
        }
    }
}

/// A log-bucketed latency histogram (powers of two of microseconds).
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; 32],
    count: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let bucket = (64 - us.leading_zeros()).min(31) as usize;
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let quantile = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            let target = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= target {
                    // Upper bound of bucket i: values < 2^i microseconds.
                    return Duration::from_micros(if i == 0 { 0 } else { 1u64 << i });
                }
            }
            Duration::from_micros(self.max_us.load(Relaxed))
        };
        let max = Duration::from_micros(self.max_us.load(Relaxed));
        LatencySummary {
            count,
            // A bucket's upper bound can exceed the largest value seen.
            p50: quantile(0.50).min(max),
            p99: quantile(0.99).min(max),
            max,
        }
    }
}

/// Count and quantiles of a latency. Quantiles are bucket upper bounds
/// (powers of two of microseconds): within 2x, never under-reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// How many were recorded.
    pub count: u64,
    /// Median (bucket upper bound).
    pub p50: Duration,
    /// 99th percentile (bucket upper bound).
    pub p99: Duration,
    /// Largest seen (exact).
    pub max: Duration,
}

/// Per-origin counters, mirrored to the metrics facade (see metrics.rs).
/// (`repr(C)`: the metric handles, whose gauges are set on every return,
/// first; see `Origin` in pool/mod.rs.)
#[repr(C)]
pub(crate) struct Counters {
    pub metrics: crate::metrics::OriginMetrics,
    pub created: AtomicU64,
    pub connect_errors: AtomicU64,
    pub retries: AtomicU64,
    pub pool_timeouts: AtomicU64,
    pub pool_full: AtomicU64,
    pub closed: [AtomicU64; 10],
    pub pool_wait: Histogram,
    pub connect_time: Histogram,
    pub leaks_reported: AtomicU64,
    pub tls_resumed: AtomicU64,
    /// The origin's label, for the events that have no request's span
    /// around them (a close by the sweep or a connection's task).
    pub origin: Arc<str>,
}

impl Counters {
    pub(crate) fn new(host: &str, port: u16, scheme: &'static str, origin: Arc<str>) -> Counters {
        Counters {
            created: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            pool_timeouts: AtomicU64::new(0),
            pool_full: AtomicU64::new(0),
            closed: Default::default(),
            pool_wait: Histogram::default(),
            connect_time: Histogram::default(),
            leaks_reported: AtomicU64::new(0),
            tls_resumed: AtomicU64::new(0),
            metrics: crate::metrics::OriginMetrics::new(host, port, scheme),
            origin,
        }
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        let i = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        self.closed[i].fetch_add(1, Relaxed);
        self.metrics.closed(i);
        tracing::debug!(
            origin = &*self.origin,
            reason = reason.as_str(),
            "connection closed"
        );
    }

    pub(crate) fn created(&self, connect: Duration) {
        self.created.fetch_add(1, Relaxed);
        self.connect_time.record(connect);
        self.metrics.created(connect);
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
        self.metrics.retried();
    }

    pub(crate) fn pool_timeout(&self) {
        self.pool_timeouts.fetch_add(1, Relaxed);
        self.metrics.pool_timeout();
    }

    /// A request refused at once: `max_pending` requests with no connection
    /// on its way already waited.
    pub(crate) fn pool_full(&self) {
        self.pool_full.fetch_add(1, Relaxed);
        self.metrics.pool_full();
    }

    pub(crate) fn waited(&self, d: Duration) {
        self.pool_wait.record(d);
        self.metrics.waited(d);
    }
}

/// A lease (a connection or stream handed to a caller) as seen in stats.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// How long it has been held.
    pub age: Duration,
    /// Where the request that holds it was made (`file:line:col`).
    pub caller: String,
}

/// One origin's state and history.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OriginStats {
    /// `scheme://host:port`.
    pub origin: String,
    /// The client settings its connections were made with, where they
    /// differ from the defaults (a proxy, an HTTP version, TLS roots, a
    /// client certificate): clients sharing a pool with different settings
    /// keep apart connections to one origin, one entry each.
    pub settings: Option<String>,
    /// The current-thread runtime whose own connections these are (tokio's
    /// runtime id), or `None` for those every other caller shares: a
    /// current-thread runtime runs its connections only while it is
    /// driven, so requests on it use connections of their own (see
    /// "Runtimes" on [`Client`](crate::Client)), one entry each.
    pub runtime: Option<u64>,
    /// HTTP version in use (`"HTTP/1.1"`, `"HTTP/2"`, or `"unknown"`).
    pub protocol: &'static str,
    /// Connections open and resting in the pool (HTTP/2: open with no
    /// stream in flight).
    pub idle: usize,
    /// Connections open and carrying requests (HTTP/2: with at least one
    /// stream in flight, or an upload still going out).
    pub active: usize,
    /// Connections being dialed.
    pub connecting: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// `max_connections_per_host`.
    pub limit: usize,
    /// Connections ever opened.
    pub created: u64,
    /// Requests served by a pooled connection (not a new one). A try that
    /// failed on a pooled connection and went again is not counted: each
    /// request counts once, here or as the connection made for it.
    pub reused: u64,
    /// Dials that failed.
    pub connect_errors: u64,
    /// Times a request was sent again automatically: after a failure that
    /// made it safe to (see `docs/freshness.md`), because the connection
    /// closed before the request was written (a GOAWAY, an idle close), or
    /// once more without the pool's own `Expect: 100-continue` after a 417.
    /// Counted when the pool decides to go again: a retry whose own new
    /// connection then fails to open counts here, and its failure under
    /// `connect_errors`, though the request did not go out a second time.
    /// Not counted: a connection found closed before the request was
    /// written to it (the request takes another; nothing was sent twice).
    pub retries: u64,
    /// Requests that gave up waiting for a connection: `PoolTimeout`, or
    /// their own `timeout` while queued (a `Timeout` whose message then
    /// says why the pool was full).
    pub pool_timeouts: u64,
    /// Requests refused at once with `PoolFull`: `max_pending` requests
    /// with no connection on its way already waited for this origin.
    pub pool_full: u64,
    /// Closed connections by reason.
    pub closed: Vec<(CloseReason, u64)>,
    /// Time requests waited for a connection (only those that waited).
    pub pool_wait: LatencySummary,
    /// Time to establish a connection (name lookup, TCP, a proxy's CONNECT, TLS and HTTP handshakes).
    pub connect_time: LatencySummary,
    /// Leases held right now, oldest first (at most 5).
    pub oldest_leases: Vec<LeaseInfo>,
    /// Leases reported as possible leaks (held past `lease_warn_after`).
    pub leaks_reported: u64,
    /// New connections whose TLS handshake resumed a session.
    pub tls_resumed: u64,
}

impl OriginStats {
    /// How many connections closed for `reason`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// use freshpool::CloseReason;
    /// let client = freshpool::Client::new();
    /// client.get("http://127.0.0.1:8080/").await?.into_body().drain().await?;
    /// let stats = client.stats();
    /// if let Some(origin) = stats.origin("http://127.0.0.1:8080") {
    ///     println!("stale on reuse: {}", origin.closed_for(CloseReason::StaleDetected));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        count_for(&self.closed, reason)
    }
}

/// The count for `reason` in a list of closes by reason.
fn count_for(closed: &[(CloseReason, u64)], reason: CloseReason) -> u64 {
    closed
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

/// A snapshot of the whole pool.
///
/// ```
/// let client = freshpool::Client::new();
/// let stats = client.stats();
/// assert_eq!(stats.open_connections, 0);
/// assert!(stats.origins.is_empty());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PoolStats {
    /// One entry per origin the pool holds (an origin unused for
    /// `forget_origin_after`, or a current-thread runtime's share of one
    /// found unused twice, is forgotten: see `forgotten`).
    pub origins: Vec<OriginStats>,
    /// Connections open or being dialed, all origins. (Read after the
    /// per-origin entries, without stopping the pool: under load it may
    /// differ from their sum by what opened or closed meanwhile.)
    pub open_connections: usize,
    /// `max_connections_total`.
    pub total_limit: usize,
    /// Freezes (process suspensions) detected.
    pub freezes_detected: u64,
    /// What the origins the pool forgot had counted (unused for
    /// `forget_origin_after`): the sums below include them.
    pub forgotten: ForgottenOrigins,
}

/// The counters of origins the pool forgot, summed: an origin with no
/// connection, no waiting request and no use for `forget_origin_after` (a
/// current-thread runtime's share: found so twice) leaves `PoolStats::origins`, and its history lands here, so the pool's
/// totals never go down when an origin is forgotten. (`reused` alone may
/// read one less than a moment before: a try on a connection found dead
/// is taken back when its request goes again.)
///
/// ```
/// let stats = freshpool::Client::new().stats();
/// assert_eq!(stats.forgotten.origins, 0);
/// assert_eq!(stats.created(), 0);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ForgottenOrigins {
    /// Origins forgotten (one met again and forgotten again counts twice).
    pub origins: u64,
    /// Connections they had opened.
    pub created: u64,
    /// Requests pooled connections had served for them.
    pub reused: u64,
    /// Their failed dials.
    pub connect_errors: u64,
    /// Their automatic retries.
    pub retries: u64,
    /// Their requests that gave up waiting for a connection (see
    /// [`OriginStats::pool_timeouts`]).
    pub pool_timeouts: u64,
    /// Their requests refused with `PoolFull` (see
    /// [`OriginStats::pool_full`]).
    pub pool_full: u64,
    /// Their closed connections by reason.
    pub closed: Vec<(CloseReason, u64)>,
    /// Their leases reported as possible leaks.
    pub leaks_reported: u64,
    /// Their TLS handshakes that resumed a session.
    pub tls_resumed: u64,
}

impl ForgottenOrigins {
    /// Adds a forgotten origin's final counters.
    pub(crate) fn add(&mut self, o: &OriginStats) {
        self.origins += 1;
        self.created += o.created;
        self.reused += o.reused;
        self.connect_errors += o.connect_errors;
        self.retries += o.retries;
        self.pool_timeouts += o.pool_timeouts;
        self.pool_full += o.pool_full;
        self.leaks_reported += o.leaks_reported;
        self.tls_resumed += o.tls_resumed;
        for &(reason, n) in &o.closed {
            match self.closed.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, total)) => *total += n,
                None => self.closed.push((reason, n)),
            }
        }
    }

    /// How many of their connections closed for `reason`.
    ///
    /// ```
    /// use freshpool::CloseReason;
    /// let stats = freshpool::Client::new().stats();
    /// assert_eq!(stats.forgotten.closed_for(CloseReason::IdleTimeout), 0);
    /// ```
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        count_for(&self.closed, reason)
    }
}

impl PoolStats {
    /// The entry for an origin (`scheme://host:port`): the first, where
    /// clients with other settings or current-thread runtimes keep
    /// connections of their own to it (see [`OriginStats::settings`],
    /// [`OriginStats::runtime`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), freshpool::Error> {
    /// let client = freshpool::Client::new();
    /// client.get("http://127.0.0.1:8080/").await?.into_body().drain().await?;
    /// let stats = client.stats();
    /// let origin = stats.origin("http://127.0.0.1:8080").expect("used above");
    /// println!("{} idle, {} created", origin.idle, origin.created);
    /// # Ok(()) }
    /// ```
    pub fn origin(&self, origin: &str) -> Option<&OriginStats> {
        self.origins.iter().find(|o| o.origin == origin)
    }
    /// Connections created, summed over origins (forgotten ones too).
    ///
    /// ```
    /// assert_eq!(freshpool::Client::new().stats().created(), 0);
    /// ```
    pub fn created(&self) -> u64 {
        self.forgotten.created + self.origins.iter().map(|o| o.created).sum::<u64>()
    }
    /// Reuses, summed over origins (forgotten ones too).
    ///
    /// ```
    /// let stats = freshpool::Client::new().stats();
    /// // The share of requests served by a pooled connection.
    /// let served = stats.created() + stats.reused();
    /// let reuse_ratio = if served == 0 { 0.0 } else { stats.reused() as f64 / served as f64 };
    /// assert_eq!(reuse_ratio, 0.0);
    /// ```
    pub fn reused(&self) -> u64 {
        self.forgotten.reused + self.origins.iter().map(|o| o.reused).sum::<u64>()
    }
    /// Idle connections, summed over origins.
    ///
    /// ```
    /// assert_eq!(freshpool::Client::new().stats().idle(), 0);
    /// ```
    pub fn idle(&self) -> usize {
        self.origins.iter().map(|o| o.idle).sum()
    }
    /// Active connections, summed over origins.
    ///
    /// ```
    /// assert_eq!(freshpool::Client::new().stats().active(), 0);
    /// ```
    pub fn active(&self) -> usize {
        self.origins.iter().map(|o| o.active).sum()
    }
    /// Closed connections for `reason`, summed over origins (forgotten
    /// ones too).
    ///
    /// ```
    /// use freshpool::CloseReason;
    /// let stats = freshpool::Client::new().stats();
    /// assert_eq!(stats.closed_for(CloseReason::StaleDetected), 0);
    /// ```
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.forgotten.closed_for(reason)
            + self
                .origins
                .iter()
                .map(|o| o.closed_for(reason))
                .sum::<u64>()
    }
}

impl std::fmt::Display for PoolStats {
    /// A compact table, one block per origin.
    ///
    /// ```
    /// let text = freshpool::Client::new().stats().to_string();
    /// assert!(text.starts_with("pool: 0 open"));
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "pool: {} open / {} limit, {} freezes detected",
            self.open_connections, self.total_limit, self.freezes_detected
        )?;
        let gone = &self.forgotten;
        if gone.origins > 0 {
            writeln!(
                f,
                "forgotten origins (unused): {} (created {} reused {} connect_errors {} retries {} pool_timeouts {} pool_full {})",
                gone.origins, gone.created, gone.reused, gone.connect_errors, gone.retries, gone.pool_timeouts, gone.pool_full
            )?;
        }
        for o in &self.origins {
            write!(f, "{} ({}", o.origin, o.protocol)?;
            if let Some(settings) = &o.settings {
                write!(f, "; {settings}")?;
            }
            if let Some(runtime) = o.runtime {
                write!(f, "; current-thread runtime {runtime}")?;
            }
            writeln!(f, ")")?;
            writeln!(
                f,
                "  connections: idle {} active {} connecting {} (limit {}); waiting {}",
                o.idle, o.active, o.connecting, o.limit, o.waiting
            )?;
            writeln!(
                f,
                "  created {} reused {} connect_errors {} retries {} pool_timeouts {} pool_full {} tls_resumed {} leaks_reported {}",
                o.created, o.reused, o.connect_errors, o.retries, o.pool_timeouts, o.pool_full, o.tls_resumed, o.leaks_reported
            )?;
            let closed: Vec<String> = o
                .closed
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{} {n}", r.as_str()))
                .collect();
            writeln!(
                f,
                "  closed: {}",
                if closed.is_empty() {
                    "none".to_string()
                } else {
                    closed.join(", ")
                }
            )?;
            for (name, l) in [("pool wait", o.pool_wait), ("connect", o.connect_time)] {
                writeln!(
                    f,
                    "  {name}: n={} p50<={:?} p99<={:?} max={:?}",
                    l.count, l.p50, l.p99, l.max
                )?;
            }
            for lease in &o.oldest_leases {
                writeln!(f, "  lease held {:?} by {}", lease.age, lease.caller)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_upper_bounds() {
        let h = Histogram::default();
        for ms in [1u64, 2, 3, 100] {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 4);
        assert!(
            s.p50 >= Duration::from_millis(2) && s.p50 <= Duration::from_millis(5),
            "{s:?}"
        );
        assert!(s.p99 >= Duration::from_millis(100), "{s:?}");
        assert_eq!(s.max, Duration::from_millis(100));
    }
}
