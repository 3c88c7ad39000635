//! `ClientBuilder` with arbitrary values: `build()` returns a client or a
//! `Kind::Config` error, never panics.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use freshpool::{Client, HttpVersion, Kind};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    max_connections_per_host: usize,
    max_connections_total: usize,
    max_idle_per_host: usize,
    max_pending: usize,
    pool_timeout: u64,
    idle_timeout: Option<u64>,
    max_lifetime: Option<u64>,
    max_requests_per_connection: Option<u64>,
    keep_alive_margin: u64,
    validate_after_idle: u64,
    freeze_threshold: Option<u64>,
    lease_warn_after: Option<u64>,
    connect_timeout: u64,
    tls_handshake_timeout: u64,
    response_header_timeout: Option<u64>,
    timeout: Option<u64>,
    tcp_nodelay: bool,
    tcp_keepalive: Option<u64>,
    http_version: u8,
    http2_keep_alive_interval: Option<u64>,
    retry_non_idempotent: bool,
    expect_continue: bool,
    expect_continue_timeout: u64,
    danger_accept_invalid_certs: bool,
    root: Option<Vec<u8>>,
    only_custom_roots: bool,
}

/// Durations from nanoseconds, seconds or the extremes.
fn d(v: u64) -> Duration {
    match v % 4 {
        0 => Duration::from_nanos(v >> 2),
        1 => Duration::from_secs(v >> 2),
        2 => Duration::ZERO,
        _ => Duration::MAX,
    }
}

fuzz_target!(|i: Input| {
    let mut b = Client::builder()
        .max_connections_per_host(i.max_connections_per_host)
        .max_connections_total(i.max_connections_total)
        .max_idle_per_host(i.max_idle_per_host)
        .max_pending(i.max_pending)
        .pool_timeout(d(i.pool_timeout))
        .idle_timeout(i.idle_timeout.map(d))
        .max_lifetime(i.max_lifetime.map(d))
        .max_requests_per_connection(i.max_requests_per_connection)
        .keep_alive_margin(d(i.keep_alive_margin))
        .validate_after_idle(d(i.validate_after_idle))
        .freeze_threshold(i.freeze_threshold.map(d))
        .lease_warn_after(i.lease_warn_after.map(d))
        .connect_timeout(d(i.connect_timeout))
        .tls_handshake_timeout(d(i.tls_handshake_timeout))
        .response_header_timeout(i.response_header_timeout.map(d))
        .timeout(i.timeout.map(d))
        .tcp_nodelay(i.tcp_nodelay)
        .tcp_keepalive(i.tcp_keepalive.map(d))
        .http_version(match i.http_version % 3 {
            0 => HttpVersion::Auto,
            1 => HttpVersion::Http1Only,
            _ => HttpVersion::Http2Only,
        })
        .http2_keep_alive_interval(i.http2_keep_alive_interval.map(d))
        .retry_non_idempotent(i.retry_non_idempotent)
        .expect_continue(i.expect_continue)
        .expect_continue_timeout(d(i.expect_continue_timeout))
        .danger_accept_invalid_certs(i.danger_accept_invalid_certs)
        .only_custom_roots(i.only_custom_roots);
    if let Some(der) = i.root {
        b = b.add_root_certificate(der.into());
    }
    match b.build() {
        Ok(client) => drop(client),
        Err(e) => assert_eq!(e.kind(), Kind::Config, "{e}"),
    }
});
