//! Every setting, its default and the reason for the default, and the
//! validation that turns a bad setting into an [`Error`] at build time.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// Which HTTP versions the client may speak.
///
/// ```
/// use freshpool::{Client, HttpVersion};
/// let client = Client::builder().http_version(HttpVersion::Http1Only).build().unwrap();
/// # drop(client);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HttpVersion {
    /// HTTPS: negotiate h2 or http/1.1 by ALPN. Cleartext: HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only (ALPN offers only http/1.1).
    Http1Only,
    /// HTTP/2 only: ALPN offers only h2; cleartext uses prior knowledge (h2c).
    Http2Only,
}

/// The limits and freshness rules of a pool. Built by [`crate::ClientBuilder`].
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    pub max_connections_per_host: usize,
    pub max_connections_total: usize,
    pub max_idle_per_host: usize,
    pub max_pending: usize,
    pub pool_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub max_requests_per_connection: Option<u64>,
    pub keep_alive_margin: Duration,
    pub validate_after_idle: Duration,
    pub freeze_threshold: Option<Duration>,
    pub lease_warn_after: Option<Duration>,
    pub forget_origin_after: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            // 64 per host: far above the starving 2 of old defaults (requests
            // queue behind two slow ones) yet small enough that one busy
            // origin cannot use up a process's file descriptors (1024 soft
            // limit by default on Linux).
            max_connections_per_host: 64,
            // 512 in total: a hard stop below the fd soft limit and far below
            // the ~28k ephemeral ports, so an unbounded fan-out cannot
            // exhaust outbound ports.
            max_connections_total: 512,
            // Keep as many idle as may be open: a pool that may open 64 but
            // keeps 2 idle closes and reopens connections under steady load.
            max_idle_per_host: 64,
            // Waiters beyond this fail at once with PoolFull instead of
            // piling up memory and timing out later.
            max_pending: 1024,
            // Long enough to ride out a burst, short enough that a starved
            // pool is reported with its numbers before callers give up.
            pool_timeout: Duration::from_secs(30),
            // Below the common server idle timeouts (ALB 60 s, nginx 75 s):
            // we should close first, so we never write into a closing socket.
            idle_timeout: Some(Duration::from_secs(55)),
            max_lifetime: None,
            max_requests_per_connection: None,
            // Expire a connection this long before a server's Keep-Alive
            // timeout hint: covers clock skew and the request's own transit.
            keep_alive_margin: Duration::from_millis(500),
            // Past this idle time, check the socket before reuse (one
            // non-blocking peek) and guard bodies with Expect: 100-continue.
            validate_after_idle: Duration::from_secs(2),
            // A gap of wall time this much larger than monotonic progress
            // means the process was frozen: treat idle connections as suspect.
            freeze_threshold: Some(Duration::from_secs(1)),
            // A response body neither read nor dropped for a minute is
            // almost always a leak (the classic "undisposed response").
            lease_warn_after: Some(Duration::from_secs(60)),
            // A process that meets many hosts (a crawler, a webhook sender)
            // must not keep every one it ever met: an origin with no
            // connection, request or use for this long is forgotten (its
            // counters go to the pool's `forgotten` totals). Long enough
            // that a host used now and then keeps its entry and its stats.
            forget_origin_after: Some(Duration::from_secs(300)),
        }
    }
}

impl PoolConfig {
    /// Defaults yield to the settings they would contradict: a per-host
    /// limit left at its 64 takes a lower `max_connections_total`, an idle
    /// timeout left at its 55 s a shorter `max_lifetime`. Both were refused
    /// by `validate`, so `max_lifetime(30 s)` alone, as the README advises
    /// for following DNS, failed to build. A setting called on the builder
    /// (in `set`), even with the default's value, is the user's: a
    /// contradiction is then refused by name.
    pub(crate) fn fit_defaults(&mut self, set: &[&str]) {
        if !set.contains(&"max_connections_per_host") {
            // (At least 1: a total of 0 is refused as such.)
            self.max_connections_per_host = self
                .max_connections_per_host
                .min(self.max_connections_total.max(1));
        }
        if !set.contains(&"idle_timeout") {
            if let (Some(idle), Some(life)) = (self.idle_timeout, self.max_lifetime) {
                self.idle_timeout = Some(idle.min(life));
            }
        }
    }

    /// A setting called on this builder (in `set`) that a shared pool
    /// would ignore, keeping its own: `share_pool_with` refuses it by name
    /// rather than let `max_connections_per_host(8)` silently mean the
    /// pool's 64. A setting not called takes the pool's, as documented.
    pub(crate) fn ignored_by(&self, pool: &PoolConfig, set: &[&str]) -> Option<String> {
        macro_rules! check {
            ($($field:ident),*) => {$(
                if set.contains(&stringify!($field)) && self.$field != pool.$field {
                    return Some(format!(
                        "{} is {:?} here and {:?} in the shared pool",
                        stringify!($field),
                        self.$field,
                        pool.$field
                    ));
                }
            )*};
        }
        check!(
            max_connections_per_host,
            max_connections_total,
            max_idle_per_host,
            max_pending,
            pool_timeout,
            idle_timeout,
            max_lifetime,
            max_requests_per_connection,
            keep_alive_margin,
            validate_after_idle,
            freeze_threshold,
            lease_warn_after,
            forget_origin_after
        );
        None
    }
}

/// TLS trust and identity settings. Part of the pool key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct TlsSettings {
    /// Extra roots; with `only_custom_roots` they replace the webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub only_custom_roots: bool,
    /// Also the operating system's store (`tls_native_roots`).
    pub native_roots: bool,
    /// What that store held at `build()`: read there, and part of the pool
    /// key with the rest, so that two clients that read different stores
    /// (another `SSL_CERT_FILE`, a CA installed between them) never share
    /// a connection one of them would not trust.
    pub native_certs: Vec<CertificateDer<'static>>,
    pub client_cert: Option<ClientIdentity>,
    pub danger_accept_invalid_certs: bool,
}

/// A client certificate chain and its key, compared by chain (the key is
/// bound to the chain's leaf).
#[derive(Debug)]
pub(crate) struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone(),
        }
    }
}
impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain
    }
}
impl Eq for ClientIdentity {}
impl std::hash::Hash for ClientIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.chain.hash(state)
    }
}

/// Settings that shape each request and connection (not the pool's limits).
#[derive(Clone, Debug)]
pub(crate) struct ConnConfig {
    pub connect_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub response_header_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub tcp_nodelay: bool,
    pub tcp_keepalive: Option<Duration>,
    pub tcp_user_timeout: Option<Duration>,
    pub http_version: HttpVersion,
    pub tls: TlsSettings,
    pub http2_keep_alive_interval: Option<Duration>,
    pub http2_keep_alive_timeout: Duration,
    pub retry_non_idempotent: bool,
    pub expect_continue_timeout: Duration,
    pub expect_continue: bool,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            // 10 s: a loopback or LAN connect takes well under 1 s; a WAN one
            // that takes 10 s is better reported than waited on for 30.
            connect_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            // None by default: long polls and slow reports are legitimate;
            // set it when you know your server's worst case.
            response_header_timeout: None,
            timeout: None,
            read_timeout: None,
            tcp_nodelay: true,
            // Lets the kernel notice a dead peer on a long-idle connection.
            tcp_keepalive: Some(Duration::from_secs(30)),
            // The kernel's: a write into a black hole is retransmitted for
            // ~15 min (tcp_retries2). Off like Go's, curl's and hyper's:
            // a limit also ends a connection whose server stalls reading a
            // large upload that long, which may be legitimate.
            tcp_user_timeout: None,
            http_version: HttpVersion::Auto,
            tls: TlsSettings::default(),
            http2_keep_alive_interval: None,
            // hyper's and reqwest's default: a busy server's late answer
            // to a PING must not close every stream.
            http2_keep_alive_timeout: Duration::from_secs(20),
            retry_non_idempotent: false,
            // Short: a server that ignores Expect must not cost much.
            expect_continue_timeout: Duration::from_millis(250),
            expect_continue: true,
        }
    }
}

/// The longest any duration setting may be.
pub(crate) const LONGEST_SETTING: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest `freeze_threshold`.
const MIN_FREEZE_THRESHOLD: Duration = Duration::from_millis(100);
/// What the kernel accepts as TCP keepalive idle time (`TCP_KEEPIDLE`).
const TCP_KEEPALIVE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(32_767));
/// The shortest `http2_keep_alive_interval`: hyper sends the next PING that
/// long after the last frame read, so zero sends one per acknowledgement,
/// forever, and servers answer a PING flood with GOAWAY (ENHANCE_YOUR_CALM).
const MIN_HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The least `tcp_user_timeout`: the kernel's first retransmission waits
/// at least 200 ms and doubles, so a second or less would end connections
/// over one lost packet.
const MIN_TCP_USER_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest: Linux reads `TCP_USER_TIMEOUT` as a C `int` of
/// milliseconds and refuses a negative one (`EINVAL`), ~24.8 days.
const MAX_TCP_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

pub(crate) fn validate(pool: &PoolConfig, conn: &ConnConfig) -> Result<(), Error> {
    let nonzero = [
        ("max_connections_per_host", pool.max_connections_per_host),
        ("max_connections_total", pool.max_connections_total),
    ];
    for (name, value) in nonzero {
        if value == 0 {
            return Err(Error::config(format!(
                "{name} must be at least 1 (0 would make every request wait forever)"
            )));
        }
    }
    if pool.max_connections_per_host > pool.max_connections_total {
        return Err(Error::config(format!(
            "max_connections_per_host ({}) exceeds max_connections_total ({})",
            pool.max_connections_per_host, pool.max_connections_total
        )));
    }
    // Every duration setting, and whether zero is refused (a zero timeout
    // would fail every request; the others mean "at once" or are ranged
    // below). Past a year a setting is a typo or means "never" (None says
    // that where it is allowed), and every deadline is "now + setting":
    // near `Duration::MAX` the addition overflows the clock and panics.
    let durations = [
        ("pool_timeout", Some(pool.pool_timeout), false),
        ("idle_timeout", pool.idle_timeout, false),
        ("max_lifetime", pool.max_lifetime, false),
        ("keep_alive_margin", Some(pool.keep_alive_margin), true),
        ("validate_after_idle", Some(pool.validate_after_idle), true),
        ("freeze_threshold", pool.freeze_threshold, true),
        // (Zero: every lease in flight reported at each sweep.)
        ("lease_warn_after", pool.lease_warn_after, false),
        ("forget_origin_after", pool.forget_origin_after, true),
        ("connect_timeout", Some(conn.connect_timeout), false),
        (
            "tls_handshake_timeout",
            Some(conn.tls_handshake_timeout),
            false,
        ),
        (
            "response_header_timeout",
            conn.response_header_timeout,
            false,
        ),
        ("timeout", conn.timeout, false),
        ("read_timeout", conn.read_timeout, false),
        ("tcp_keepalive", conn.tcp_keepalive, true),
        ("tcp_user_timeout", conn.tcp_user_timeout, false),
        (
            "http2_keep_alive_interval",
            conn.http2_keep_alive_interval,
            true,
        ),
        (
            "http2_keep_alive_timeout",
            Some(conn.http2_keep_alive_timeout),
            false,
        ),
        (
            "expect_continue_timeout",
            Some(conn.expect_continue_timeout),
            true,
        ),
    ];
    for (name, value, zero_ok) in durations {
        let Some(value) = value else { continue };
        if value == Duration::ZERO && !zero_ok {
            return Err(Error::config(format!(
                "{name} must be greater than zero (use None to switch it off where allowed)"
            )));
        }
        if value > LONGEST_SETTING {
            return Err(Error::config(format!(
                "{name} ({value:?}) is longer than a year (use None to switch it off where allowed)"
            )));
        }
    }
    // The heartbeat runs every 250 ms and a busy host delays it by tens of
    // milliseconds: a smaller threshold reads scheduling noise as freezes
    // and closes every idle connection each time.
    if let Some(threshold) = pool.freeze_threshold {
        if threshold < MIN_FREEZE_THRESHOLD {
            return Err(Error::config(format!(
                "freeze_threshold ({threshold:?}) must be at least {MIN_FREEZE_THRESHOLD:?}: shorter, scheduling delays read as freezes (None switches detection off)"
            )));
        }
    }
    // The kernel takes TCP keepalive idle time in whole seconds, 1 to
    // 32767 (Linux; `EINVAL` otherwise): out of range, every dial would
    // fail setting it.
    if let Some(idle) = conn.tcp_keepalive {
        if !(TCP_KEEPALIVE_RANGE.0..=TCP_KEEPALIVE_RANGE.1).contains(&idle) {
            return Err(Error::config(format!(
                "tcp_keepalive ({idle:?}) must be between {:?} and {:?} (the kernel counts whole seconds; None switches it off)",
                TCP_KEEPALIVE_RANGE.0, TCP_KEEPALIVE_RANGE.1
            )));
        }
    }
    if let Some(limit) = conn.tcp_user_timeout {
        if limit < MIN_TCP_USER_TIMEOUT {
            return Err(Error::config(format!(
                "tcp_user_timeout ({limit:?}) must be at least {MIN_TCP_USER_TIMEOUT:?}: shorter, a lost packet's ordinary retransmission ends the connection (None switches it off)"
            )));
        }
        if limit > MAX_TCP_USER_TIMEOUT {
            return Err(Error::config(format!(
                "tcp_user_timeout ({limit:?}) must be at most {MAX_TCP_USER_TIMEOUT:?}: the kernel takes at most 2^31-1 ms, and every dial would fail setting it (None switches it off)"
            )));
        }
        if !cfg!(any(target_os = "linux", target_os = "android")) {
            return Err(Error::config(
                "tcp_user_timeout is supported on Linux and Android only (TCP_USER_TIMEOUT); use timeout or response_header_timeout elsewhere",
            ));
        }
    }
    if conn.http2_keep_alive_timeout < MIN_HTTP2_KEEP_ALIVE {
        return Err(Error::config(format!(
            "http2_keep_alive_timeout ({:?}) must be at least {MIN_HTTP2_KEEP_ALIVE:?}: shorter, a busy server's late answer to a PING closes the connection",
            conn.http2_keep_alive_timeout
        )));
    }
    if let Some(interval) = conn.http2_keep_alive_interval {
        if interval < MIN_HTTP2_KEEP_ALIVE {
            return Err(Error::config(format!(
                "http2_keep_alive_interval ({interval:?}) must be at least {MIN_HTTP2_KEEP_ALIVE:?}: shorter, it floods the server with PINGs (None switches it off)"
            )));
        }
    }
    // Without a root to trust, every HTTPS request would fail as a
    // certificate error blaming the server.
    if conn.tls.only_custom_roots
        && conn.tls.extra_roots.is_empty()
        && !conn.tls.native_roots
        && !conn.tls.danger_accept_invalid_certs
    {
        return Err(Error::config(
            "only_custom_roots(true) with no add_root_certificate: no server certificate could be trusted",
        ));
    }
    if pool.max_requests_per_connection == Some(0) {
        return Err(Error::config(
            "max_requests_per_connection must be at least 1",
        ));
    }
    if let (Some(total), Some(header)) = (conn.timeout, conn.response_header_timeout) {
        if header > total {
            return Err(Error::config(format!(
                "response_header_timeout ({header:?}) is longer than the whole request timeout ({total:?}): it could never fire"
            )));
        }
    }
    if let (Some(idle), Some(life)) = (pool.idle_timeout, pool.max_lifetime) {
        if idle > life {
            return Err(Error::config(format!(
                "idle_timeout ({idle:?}) is longer than max_lifetime ({life:?}): it could never fire"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A default yields to a setting it would contradict; set explicitly,
    /// the contradiction is refused by name.
    #[test]
    fn defaults_yield_to_a_lower_total_and_a_shorter_lifetime() {
        let fitted = |set: &[&str], change: fn(&mut PoolConfig)| {
            let mut pool = PoolConfig::default();
            change(&mut pool);
            pool.fit_defaults(set);
            validate(&pool, &ConnConfig::default()).map(|()| pool)
        };
        let pool = fitted(&["max_connections_total"], |p| p.max_connections_total = 32).unwrap();
        assert_eq!(pool.max_connections_per_host, 32);
        let pool = fitted(&["max_lifetime"], |p| {
            p.max_lifetime = Some(Duration::from_secs(30))
        })
        .unwrap();
        assert_eq!(pool.idle_timeout, Some(Duration::from_secs(30)));
        // Other settings are left as they were.
        let pool = fitted(&["max_lifetime"], |p| {
            p.max_lifetime = Some(Duration::from_secs(300))
        })
        .unwrap();
        assert_eq!(pool.idle_timeout, PoolConfig::default().idle_timeout);
        assert_eq!(pool.max_connections_per_host, 64);
        let err = fitted(
            &["max_connections_per_host", "max_connections_total"],
            |p| {
                p.max_connections_per_host = 100;
                p.max_connections_total = 10;
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("exceeds max_connections_total (10)"),
            "{err}"
        );
        let err = fitted(&["idle_timeout", "max_lifetime"], |p| {
            p.idle_timeout = Some(Duration::from_secs(60));
            p.max_lifetime = Some(Duration::from_secs(30));
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("longer than max_lifetime"),
            "{err}"
        );
        // Called with the default's value, it is no default: refused too.
        let err = fitted(&["idle_timeout", "max_lifetime"], |p| {
            p.max_lifetime = Some(Duration::from_secs(30));
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("longer than max_lifetime"),
            "{err}"
        );
        let err = fitted(&["max_connections_total"], |p| p.max_connections_total = 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("max_connections_total must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_valid_and_bounded() {
        let pool = PoolConfig::default();
        validate(&pool, &ConnConfig::default()).unwrap();
        assert!(pool.max_connections_per_host > 2);
        assert!(pool.max_connections_total < 1024);
    }

    #[test]
    fn zero_limit_is_a_config_error_naming_the_setting() {
        let pool = PoolConfig {
            max_connections_total: 0,
            ..PoolConfig::default()
        };
        let err = validate(&pool, &ConnConfig::default()).unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("max_connections_total"), "{err}");
    }

    /// Settings that used to build and then panic or fail every dial:
    /// a deadline past the clock's range (`Instant + Duration::MAX`), a
    /// freeze threshold below scheduling noise, a keepalive the kernel
    /// refuses. Each is now a `Config` error naming the setting.
    #[test]
    fn durations_out_of_range_are_rejected_by_name() {
        let pool_err = |pool: PoolConfig| validate(&pool, &ConnConfig::default()).unwrap_err();
        let conn_err = |conn: ConnConfig| validate(&PoolConfig::default(), &conn).unwrap_err();
        let cases = [
            pool_err(PoolConfig {
                freeze_threshold: Some(Duration::MAX),
                ..PoolConfig::default()
            }),
            pool_err(PoolConfig {
                freeze_threshold: Some(Duration::ZERO),
                ..PoolConfig::default()
            }),
            pool_err(PoolConfig {
                pool_timeout: Duration::MAX,
                ..PoolConfig::default()
            }),
            conn_err(ConnConfig {
                tls_handshake_timeout: Duration::MAX,
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                tcp_keepalive: Some(Duration::from_millis(500)),
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                tcp_keepalive: Some(Duration::from_secs(32_768)),
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                tcp_user_timeout: Some(Duration::from_millis(999)),
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                tcp_user_timeout: Some(MAX_TCP_USER_TIMEOUT + Duration::from_millis(1)),
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                http2_keep_alive_interval: Some(Duration::ZERO),
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                http2_keep_alive_interval: Some(Duration::from_millis(999)),
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                http2_keep_alive_timeout: Duration::from_millis(999),
                ..ConnConfig::default()
            }),
            conn_err(ConnConfig {
                http2_keep_alive_timeout: Duration::MAX,
                ..ConnConfig::default()
            }),
            pool_err(PoolConfig {
                lease_warn_after: Some(Duration::ZERO),
                ..PoolConfig::default()
            }),
        ];
        let names = [
            "freeze_threshold",
            "freeze_threshold",
            "pool_timeout",
            "tls_handshake_timeout",
            "tcp_keepalive",
            "tcp_keepalive",
            "tcp_user_timeout",
            "tcp_user_timeout",
            "http2_keep_alive_interval",
            "http2_keep_alive_interval",
            "http2_keep_alive_timeout",
            "http2_keep_alive_timeout",
            "lease_warn_after",
        ];
        for (err, name) in cases.iter().zip(names) {
            assert!(err.is_config());
            assert!(err.to_string().contains(name), "{err}");
        }
        // The edges are fine.
        let edges = ConnConfig {
            tcp_keepalive: Some(Duration::from_secs(1)),
            tcp_user_timeout: Some(MIN_TCP_USER_TIMEOUT),
            http2_keep_alive_interval: Some(MIN_HTTP2_KEEP_ALIVE),
            http2_keep_alive_timeout: MIN_HTTP2_KEEP_ALIVE,
            timeout: Some(LONGEST_SETTING),
            ..ConnConfig::default()
        };
        let pool = PoolConfig {
            freeze_threshold: Some(MIN_FREEZE_THRESHOLD),
            ..PoolConfig::default()
        };
        validate(&pool, &edges).unwrap();
        let longest = ConnConfig {
            tcp_user_timeout: Some(MAX_TCP_USER_TIMEOUT),
            ..ConnConfig::default()
        };
        validate(&pool, &longest).unwrap();
    }

    /// `only_custom_roots` with no roots built, then failed every HTTPS
    /// request as the server's certificate error.
    #[test]
    fn only_custom_roots_needs_a_root() {
        let mut conn = ConnConfig::default();
        conn.tls.only_custom_roots = true;
        let err = validate(&PoolConfig::default(), &conn).unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("only_custom_roots"), "{err}");
        conn.tls.danger_accept_invalid_certs = true;
        validate(&PoolConfig::default(), &conn).unwrap();
    }

    #[test]
    fn contradictory_timeouts_are_rejected() {
        let conn = ConnConfig {
            timeout: Some(Duration::from_secs(1)),
            response_header_timeout: Some(Duration::from_secs(5)),
            ..ConnConfig::default()
        };
        let err = validate(&PoolConfig::default(), &conn).unwrap_err();
        assert!(err.to_string().contains("response_header_timeout"), "{err}");
    }
}
