//! Metrics through the [`metrics`] facade, named after the OpenTelemetry
//! HTTP semantic conventions where they exist, so any exporter (Prometheus,
//! OTLP) works.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `http.client.open_connections` | gauge | `http.connection.state` (`idle`/`active`), `server.address`, `server.port`, `url.scheme` | connections open now: updated when a connection opens or closes and sampled once a second (a connection leased since the last sample counts as idle until the next); origins with the same labels (two clients to one host) add up |
//! | `http.client.connection.duration` | histogram (s) | `server.address`, `server.port`, `url.scheme` | how long connections lived |
//! | `http.client.request.duration` | histogram (s) | `server.address`, `server.port`, `url.scheme` | connection handed to the request to response head (per attempt that got its response head; pool wait is separate) |
//! | `freshpool.pool.wait.duration` | histogram (s) | origin labels | time spent waiting for a connection |
//! | `freshpool.connect.duration` | histogram (s) | origin labels | name lookup + TCP (+ a proxy's CONNECT) + TLS + HTTP handshake |
//! | `freshpool.connections.created` | counter | origin labels | connections opened |
//! | `freshpool.connections.closed` | counter | origin labels, `reason` | connections closed, by [`crate::CloseReason`] |
//! | `freshpool.requests.retried` | counter | origin labels | automatic safe re-sends (as stats `retries`) |
//! | `freshpool.pool.timeouts` | counter | origin labels | requests that gave up waiting for a connection (PoolTimeout, or their own `timeout` while queued; as stats `pool_timeouts`) |
//! | `freshpool.pool.full` | counter | origin labels | requests refused with PoolFull (as stats `pool_full`) |
//!
//! Handles are registered once per origin, when the pool first sees it, so
//! the per-request cost is an atomic update in your recorder and no label
//! allocation. Install your recorder before the first request. Without the
//! `metrics` cargo feature (on by default) all of this compiles to nothing.
//!
//! Names and units follow the OpenTelemetry conventions; the attributes do
//! not all: `http.client.request.duration` carries no `http.request.method`,
//! `http.response.status_code` or `error.type` (a series per method and
//! status would cost a lookup per request, where a held handle costs an
//! atomic add), and an attempt that failed before its response head is not
//! in it: a retried one shows in `freshpool.requests.retried`, a broken
//! connection in `freshpool.connections.closed` by reason, a wait that ran
//! out in `freshpool.pool.timeouts`, a refusal in `freshpool.pool.full`; a
//! failed dial only in [`crate::OriginStats`]' `connect_errors`.
//! Each series is described to the recorder with its unit (seconds for the
//! histograms) before the pool registers an origin's series.

use std::time::Duration;

#[cfg(feature = "metrics")]
mod imp {
    use super::*;
    use crate::stats::CloseReason;
    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// (`repr(C)`: the handle every request records to first.)
    #[repr(C)]
    pub(crate) struct OriginMetrics {
        request: Histogram,
        idle: Gauge,
        active: Gauge,
        /// What this origin last added to the two gauges: origins with the
        /// same labels (two clients, or a shared pool's TLS variants, to
        /// one host) share a series, so each adds its part rather than
        /// setting the whole. (Written under the origin's lock.)
        published: [AtomicU64; 2],
        created: Counter,
        closed: [Counter; 10],
        retried: Counter,
        pool_timeouts: Counter,
        pool_full: Counter,
        connection: Histogram,
        wait: Histogram,
        connect: Histogram,
    }

    /// Each series' unit and meaning, told to the recorder of the moment
    /// (an exporter gives the unit to its backend: a histogram of seconds
    /// with no unit reads as a bare number). At each miss of the pool's
    /// origin lookup, before a new origin registers its series (a
    /// recorder may fix a series' unit then) and outside the pool's locks
    /// (a recorder may take a lock of its own, which its exporter's scrape
    /// holds): recorders take a description again as the same.
    pub(crate) fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_gauge!(
            "http.client.open_connections",
            Unit::Count,
            "connections open now, by http.connection.state"
        );
        describe_histogram!(
            "http.client.connection.duration",
            Unit::Seconds,
            "how long connections lived"
        );
        describe_histogram!(
            "http.client.request.duration",
            Unit::Seconds,
            "from the connection handed to the request to its response head, per attempt"
        );
        describe_histogram!(
            "freshpool.pool.wait.duration",
            Unit::Seconds,
            "time spent waiting for a connection"
        );
        describe_histogram!(
            "freshpool.connect.duration",
            Unit::Seconds,
            "name lookup, TCP, a proxy's CONNECT, TLS and HTTP handshakes"
        );
        describe_counter!(
            "freshpool.connections.created",
            Unit::Count,
            "connections opened"
        );
        describe_counter!(
            "freshpool.connections.closed",
            Unit::Count,
            "connections closed, by reason"
        );
        describe_counter!(
            "freshpool.requests.retried",
            Unit::Count,
            "automatic safe re-sends"
        );
        describe_counter!(
            "freshpool.pool.timeouts",
            Unit::Count,
            "requests that gave up waiting for a connection"
        );
        describe_counter!(
            "freshpool.pool.full",
            Unit::Count,
            "requests refused with PoolFull"
        );
    }

    impl OriginMetrics {
        pub(crate) fn new(host: &str, port: u16, scheme: &'static str) -> OriginMetrics {
            let base = [
                ("server.address", host.to_owned()),
                ("server.port", port.to_string()),
                ("url.scheme", scheme.to_owned()),
            ];
            let with = |k: &'static str, v: &'static str| {
                let mut l: Vec<(&'static str, String)> = base.to_vec();
                l.push((k, v.to_owned()));
                l
            };
            OriginMetrics {
                idle: gauge!(
                    "http.client.open_connections",
                    &with("http.connection.state", "idle")
                ),
                active: gauge!(
                    "http.client.open_connections",
                    &with("http.connection.state", "active")
                ),
                published: [AtomicU64::new(0), AtomicU64::new(0)],
                created: counter!("freshpool.connections.created", &base),
                closed: CloseReason::ALL
                    .map(|r| counter!("freshpool.connections.closed", &with("reason", r.as_str()))),
                retried: counter!("freshpool.requests.retried", &base),
                pool_timeouts: counter!("freshpool.pool.timeouts", &base),
                pool_full: counter!("freshpool.pool.full", &base),
                request: histogram!("http.client.request.duration", &base),
                connection: histogram!("http.client.connection.duration", &base),
                wait: histogram!("freshpool.pool.wait.duration", &base),
                connect: histogram!("freshpool.connect.duration", &base),
            }
        }
        pub(crate) fn open(&self, idle: usize, active: usize) {
            for (gauge, (published, now)) in [&self.idle, &self.active]
                .into_iter()
                .zip(self.published.iter().zip([idle as u64, active as u64]))
            {
                let was = published.swap(now, Ordering::Relaxed);
                if now > was {
                    gauge.increment((now - was) as f64);
                } else if was > now {
                    gauge.decrement((was - now) as f64);
                }
            }
        }
        pub(crate) fn created(&self, connect: Duration) {
            self.created.increment(1);
            self.connect.record(connect.as_secs_f64());
        }
        pub(crate) fn closed(&self, index: usize) {
            self.closed[index].increment(1);
        }
        pub(crate) fn retried(&self) {
            self.retried.increment(1);
        }
        pub(crate) fn pool_timeout(&self) {
            self.pool_timeouts.increment(1);
        }
        pub(crate) fn pool_full(&self) {
            self.pool_full.increment(1);
        }
        pub(crate) fn request(&self, d: Duration) {
            self.request.record(d.as_secs_f64());
        }
        pub(crate) fn connection_lived(&self, d: Duration) {
            self.connection.record(d.as_secs_f64());
        }
        pub(crate) fn waited(&self, d: Duration) {
            self.wait.record(d.as_secs_f64());
        }
    }

    impl Drop for OriginMetrics {
        /// The origin is gone (its pool dropped): take its part back.
        fn drop(&mut self) {
            self.open(0, 0);
        }
    }

    #[cfg(test)]
    #[test]
    fn the_handle_every_request_records_to_comes_first() {
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(OriginMetrics, request), 0);
        // (pool/mod.rs's layout test counts it as one 16-byte handle.)
        assert_eq!(size_of::<Histogram>(), 16);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use super::*;

    pub(crate) fn describe() {}

    pub(crate) struct OriginMetrics;

    impl OriginMetrics {
        pub(crate) fn new(_host: &str, _port: u16, _scheme: &'static str) -> OriginMetrics {
            OriginMetrics
        }
        pub(crate) fn open(&self, _idle: usize, _active: usize) {}
        pub(crate) fn created(&self, _connect: Duration) {}
        pub(crate) fn closed(&self, _index: usize) {}
        pub(crate) fn retried(&self) {}
        pub(crate) fn pool_timeout(&self) {}
        pub(crate) fn pool_full(&self) {}
        pub(crate) fn request(&self, _d: Duration) {}
        pub(crate) fn connection_lived(&self, _d: Duration) {}
        pub(crate) fn waited(&self, _d: Duration) {}
    }
}

pub(crate) use imp::{describe, OriginMetrics};

/// Times one attempt for `http.client.request.duration`: the precise clock
/// with the `metrics` feature, nothing (no clock read) without it. (The
/// pool's own clock is coarse, see `pool/coarse_clock.rs`: not for
/// durations users see.)
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Stopwatch {
    #[inline]
    pub(crate) fn start() -> Stopwatch {
        Stopwatch {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    #[inline]
    pub(crate) fn elapsed(&self) -> Duration {
        #[cfg(feature = "metrics")]
        return self.started.elapsed();
        #[cfg(not(feature = "metrics"))]
        Duration::ZERO
    }
}
