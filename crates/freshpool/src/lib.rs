//! # freshpool
//!
//! An HTTP client connection pool that is **shared** by default, **bounded**
//! per host and in total, **fair** under contention, **never hands out a
//! stale connection**, retries only what is safe to retry, and says exactly
//! what went wrong.
//!
//! ```no_run
//! # async fn run() -> Result<(), freshpool::Error> {
//! // One client per process; clone it freely (clones share the pool).
//! let client = freshpool::Client::builder()
//!     .max_connections_per_host(32)
//!     .build()?;
//! let response = client.get("https://example.com/").await?;
//! println!("{}", response.status());
//! let body = response.into_body().text().await?;
//! # Ok(()) }
//! ```
//!
//! ## Modules, one concern each
//! - [`pool`](crate::Client::stats): per-origin state (idle LIFO, FIFO waiters,
//!   limits), the request lifecycle, freeze handling.
//! - `connect`: resolve, Happy Eyeballs, TCP options, rustls, ALPN, hyper
//!   handshakes (HTTP/1.1 and HTTP/2).
//! - `connect::proxy`: [`Proxy`], the proxy environment variables (curl's
//!   precedence), forwarding and CONNECT tunnels; the proxy used for a request is
//!   part of its pool key.
//! - `resolve`: [`CachingResolver`] (TTL cache that reports DNS changes so
//!   connections to old addresses are retired); `HickoryResolver` with the
//!   `hickory` feature.
//! - `health`: Keep-Alive hints, freeze detection.
//! - [`retry`]: when a failed request may be sent again.
//! - `stats`: counters and snapshots; [`Error`]: one error type with [`Kind`]s.

#![warn(missing_docs)]

mod body;
mod builder;
mod catch_panic;
mod client;
mod config;
mod connect;
mod deadline;
mod diagnose;
mod error;
mod health;
mod metrics;
#[cfg(test)]
mod parser_props;
mod pool;
mod resolve;
pub mod retry;
mod stats;

#[doc(hidden)]
pub use body::__read_to_bytes;
pub use body::{Body, RequestBody};
pub use builder::ClientBuilder;
pub use client::Client;
pub use config::HttpVersion;
pub use connect::{Proxy, Resolve, ResolveFuture, ResolveTtlFuture, SystemResolver};
pub use deadline::Timeout;
pub use diagnose::pool_per_request_warnings;
pub use error::{BoxError, Error, Kind};
pub use health::{parse_keep_alive, Clock, SystemClock};
#[cfg(feature = "hickory")]
pub use resolve::HickoryResolver;
pub use resolve::{CachingResolver, Resolved};
pub use stats::{CloseReason, ForgottenOrigins, LatencySummary, LeaseInfo, OriginStats, PoolStats};

/// Test and benchmark hook: a caller about to block its client's runtime
/// thread for `d` to simulate a process freeze calls this first, so the
/// pool's process-wide liveness thread stops for as long, as every thread
/// does in a real freeze. (Blocking the runtime alone is a runtime nobody
/// drives, which the pool does not take for a freeze.) Not a stable API.
///
/// ```
/// freshpool::__simulate_freeze(std::time::Duration::from_millis(1));
/// ```
#[doc(hidden)]
pub fn __simulate_freeze(d: std::time::Duration) {
    pool::simulate_freeze(d);
}
