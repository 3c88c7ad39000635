//! [`ClientBuilder`]: every setting of a [`Client`], validated at `build()`.

use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::{Client, ClientInner};
use crate::config::{self, ClientIdentity, ConnConfig, HttpVersion, PoolConfig};
use crate::connect::proxy::{EnvProxies, ProxySettings, Routes};
use crate::connect::{Connector, Proxy, Resolve, SystemResolver};
use crate::error::Error;
use crate::health::{Clock, SystemClock};
use crate::pool::key::{DialSettings, SecurityContext, SecuritySettings};
use crate::pool::Pool;

/// Configures a [`Client`]. Every setting has a documented default; invalid
/// combinations are reported by [`ClientBuilder::build`] as
/// [`crate::Kind::Config`] errors, never panics.
///
/// ```
/// use std::time::Duration;
/// let client = freshpool::Client::builder()
///     .max_connections_per_host(16)
///     .max_connections_total(256)
///     .pool_timeout(Duration::from_secs(5))
///     .connect_timeout(Duration::from_secs(3))
///     .idle_timeout(Some(Duration::from_secs(30)))
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
#[must_use]
pub struct ClientBuilder {
    pool: PoolConfig,
    conn: ConnConfig,
    resolver: Arc<dyn Resolve>,
    /// `None`: the system's ([`SystemClock`](crate::SystemClock)).
    clock: Option<Arc<dyn Clock>>,
    shared_pool: Option<Pool>,
    proxies: ProxySettings,
    /// The settings called on this builder, by name: joining a shared pool
    /// (`share_pool_with`), a setting left alone takes the pool's value and
    /// one called must agree with it, even when called with the default.
    set: Vec<&'static str>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

macro_rules! setters {
    ($( $(#[$doc:meta])* $name:ident : $field:ident . $sub:ident : $ty:ty ),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$field.$sub = value;
                self.set.push(stringify!($sub));
                self
            }
        )*
    };
}

impl ClientBuilder {
    /// The defaults (see each setting). The same as [`Client::builder`].
    ///
    /// ```
    /// use freshpool::ClientBuilder;
    /// let client = ClientBuilder::new()
    ///     .max_connections_per_host(8)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(client.stats().origins.len(), 0);
    /// ```
    pub fn new() -> ClientBuilder {
        ClientBuilder {
            pool: PoolConfig::default(),
            conn: ConnConfig::default(),
            resolver: SystemResolver::shared(),
            clock: None,
            shared_pool: None,
            proxies: ProxySettings::default(),
            set: Vec::new(),
        }
    }

    setters! {
        /// Connections (open or being dialed) to one origin. Default 64,
        /// or `max_connections_total` when that is set lower. (A
        /// current-thread runtime's requests have a share of their own:
        /// see "Runtimes" on [`Client`](crate::Client).)
        max_connections_per_host: pool.max_connections_per_host: usize,
        /// Connections across all origins. Default 512.
        max_connections_total: pool.max_connections_total: usize,
        /// Idle connections kept per origin, HTTP/1 and HTTP/2 alike (an
        /// HTTP/2 one is idle with no stream in flight; those that rested
        /// longest close first). Default 64 (= the per-host limit, so
        /// steady load does not churn connections).
        max_idle_per_host: pool.max_idle_per_host: usize,
        /// Requests that may wait per origin; beyond it requests fail at once
        /// with [`crate::Kind::PoolFull`] (0: none waits). Default 1024.
        max_pending: pool.max_pending: usize,
        /// How long a request may wait for a connection slot. Default 30 s.
        /// A connection already being dialed for the request is waited for
        /// past it (bounded by its own timeouts: `connect_timeout` for
        /// lookup, TCP and a proxy's CONNECT, then `tls_handshake_timeout`
        /// for TLS and again for an HTTP/2 server's SETTINGS; its error
        /// says why it failed). A process freeze the pool detects (a
        /// serverless sandbox paused between invocations; see
        /// `freeze_threshold`), as measured by its liveness thread, is not
        /// counted: the request waits that much longer, and its error says
        /// so. (A dial under way still counts
        /// it: its connect and handshake timeouts are the socket's.)
        pool_timeout: pool.pool_timeout: Duration,
        /// Close connections idle this long. Default 55 s, or
        /// `max_lifetime` when that is set shorter; `None` = never.
        /// (Idle deadlines are checked with the kernel's coarse clock, on
        /// the early side: up to two ticks, 8 ms at HZ=250, before the
        /// exact time.)
        idle_timeout: pool.idle_timeout: Option<Duration>,
        /// Close connections this old once idle (lets DNS changes take
        /// effect). An HTTP/2 connection this old takes no new streams and
        /// closes when its last one ends; while streams run on it and no
        /// slot is left to replace it (per host or in total), it goes on
        /// taking streams until one is: retired then, it would leave new
        /// requests nothing to use or dial. Default `None`.
        max_lifetime: pool.max_lifetime: Option<Duration>,
        /// Close an HTTP/1 connection after this many requests. (Not HTTP/2
        /// ones, which carry many requests at once: rotate those with
        /// `max_lifetime`.) Default `None`.
        max_requests_per_connection: pool.max_requests_per_connection: Option<u64>,
        /// Expire a connection this long before the server's `Keep-Alive:
        /// timeout`. Default 500 ms.
        keep_alive_margin: pool.keep_alive_margin: Duration,
        /// Check an idle connection's socket before reuse, and guard bodies
        /// with `Expect: 100-continue`, once it idled this long. Default 2 s.
        validate_after_idle: pool.validate_after_idle: Duration,
        /// A heartbeat gap longer than this plus one beat (250 ms), during
        /// which the process-wide liveness thread stopped too, is taken as a
        /// process freeze: idle connections are then dropped, and the time
        /// frozen counts neither against `pool_timeout` nor as a lease's
        /// time without progress. Default 1 s; at least 100 ms; `None` =
        /// off.
        freeze_threshold: pool.freeze_threshold: Option<Duration>,
        /// Report (once, with its call site) a lease that went this long
        /// without progress: a response body neither read nor dropped. A
        /// body read as it comes (a long download, an event stream) is not
        /// reported, however long it lasts; a request still waiting for
        /// its response head counts as without progress. A detected process
        /// freeze is not counted: this is time the process ran. Default 60 s.
        lease_warn_after: pool.lease_warn_after: Option<Duration>,
        /// Forget an origin (its map entry, its per-origin statistics) once
        /// it has had no connection, no request waiting and no use for this
        /// long, so a process that meets many hosts does not keep them all:
        /// about 1.5 KB each. Its counters move to
        /// [`PoolStats::forgotten`](crate::PoolStats::forgotten); a later
        /// request to it starts afresh. Checked about once a second.
        /// Default 5 minutes; `None` = keep every origin. Whatever this says,
        /// a current-thread runtime's share of an origin (see "Runtimes" on
        /// [`Client`](crate::Client)) goes once found unused at two checks
        /// (a check: the sweep, or another runtime's share being made), or
        /// a runtime built per call would leave one per call behind.
        forget_origin_after: pool.forget_origin_after: Option<Duration>,
        /// Bounds the whole connection attempt: name lookup, TCP connect
        /// (all addresses) and a proxy's CONNECT. Default 10 s.
        connect_timeout: conn.connect_timeout: Duration,
        /// TLS handshake timeout. Default 10 s.
        tls_handshake_timeout: conn.tls_handshake_timeout: Duration,
        /// Time from sending a request to its response head (a body's
        /// upload counts; the pool's own wait for `100 Continue` before a
        /// body it holds back does not). Default `None`.
        response_header_timeout: conn.response_header_timeout: Option<Duration>,
        /// The whole request, from the pool wait to the end of the response
        /// body (as in reqwest and Go). Default `None`. One request can
        /// set its own, or none, with a [`Timeout`](crate::Timeout) in its
        /// extensions.
        timeout: conn.timeout: Option<Duration>,
        /// The longest a read of a response body may wait for its next
        /// data, counted from when the reader waits and set again by each
        /// frame (as reqwest's `read_timeout`, OkHttp's `readTimeout`; not
        /// outside a tokio runtime, where no timer can be made). A server that stalls
        /// mid-body then fails the read with a `Timeout` naming it, and
        /// its connection closes, instead of holding the caller and the
        /// connection for as long as it stalls; a long download that keeps
        /// flowing is not cut off, as by `timeout`. (The head has
        /// `response_header_timeout`.) Default `None`: an event stream may
        /// be quiet for long.
        read_timeout: conn.read_timeout: Option<Duration>,
        /// `TCP_NODELAY`. Default on.
        tcp_nodelay: conn.tcp_nodelay: bool,
        /// TCP keepalive idle time. Default 30 s; 1 s to 32,767 s (the
        /// kernel counts whole seconds).
        tcp_keepalive: conn.tcp_keepalive: Option<Duration>,
        /// `TCP_USER_TIMEOUT`: how long data written on a connection may
        /// go unacknowledged by the peer's kernel before the kernel closes
        /// the connection. Default `None` (the kernel's own, ~15 min of
        /// retransmissions). Set it where a NAT or firewall may drop a
        /// connection silently (a resumed serverless process, a long-idle
        /// pool): a request written into such a connection then fails
        /// after this long, instead of waiting unless `timeout` is set.
        /// At least 1 s, at most ~24.8 days (2^31-1 ms, the kernel's
        /// limit); Linux and Android only (a `Config` error
        /// elsewhere). It also ends a connection whose server stops reading
        /// an upload (zero window) for this long.
        ///
        /// ```
        /// use std::time::Duration;
        /// let client = freshpool::Client::builder()
        ///     .tcp_user_timeout(Some(Duration::from_secs(30)))
        ///     .build();
        /// # #[cfg(target_os = "linux")]
        /// assert!(client.is_ok());
        /// ```
        tcp_user_timeout: conn.tcp_user_timeout: Option<Duration>,
        /// HTTP version preference. Default [`HttpVersion::Auto`].
        http_version: conn.http_version: HttpVersion,
        /// HTTP/2 PING interval on idle and busy connections. Default `None`;
        /// at least 1 s (shorter floods the server with PINGs).
        http2_keep_alive_interval: conn.http2_keep_alive_interval: Option<Duration>,
        /// How long a PING (`http2_keep_alive_interval`) may go unanswered
        /// before its connection, and every stream on it, is closed as
        /// dead. Default 20 s (hyper's and reqwest's; Go's is 15 s); at
        /// least 1 s. (It was the interval itself: at 1 s, a server slow to
        /// answer one PING lost every stream.)
        http2_keep_alive_timeout: conn.http2_keep_alive_timeout: Duration,
        /// Retry non-idempotent requests after a stale-connection failure.
        /// Default off: a POST is never sent twice unless you say so.
        retry_non_idempotent: conn.retry_non_idempotent: bool,
        /// Use `Expect: 100-continue` for bodies on long-idle connections.
        /// Default on.
        expect_continue: conn.expect_continue: bool,
        /// How long to hold a body back waiting for `100 Continue`. Default 250 ms.
        expect_continue_timeout: conn.expect_continue_timeout: Duration,
    }

    /// Skips certificate verification (tests only!). Default off. Part of
    /// the pool key: such connections are never shared with verified ones.
    ///
    /// ```
    /// // For a test server with a self-signed certificate: never in production.
    /// let client = freshpool::Client::builder()
    ///     .danger_accept_invalid_certs(true)
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.conn.tls.danger_accept_invalid_certs = accept;
        self
    }

    /// Trusts this CA certificate (DER) in addition to the webpki roots.
    ///
    /// ```
    /// let der: Vec<u8> = vec![]; // your CA, e.g. from a PEM file
    /// let builder = freshpool::Client::builder()
    ///     .add_root_certificate(der.into());
    /// # drop(builder);
    /// ```
    pub fn add_root_certificate(mut self, cert: CertificateDer<'static>) -> Self {
        self.conn.tls.extra_roots.push(cert);
        self
    }

    /// Trusts only the certificates added with
    /// [`ClientBuilder::add_root_certificate`], not the webpki roots.
    /// `build()` refuses it without any such certificate (nothing could be
    /// trusted).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rustls_pki_types::pem::PemObject;
    /// use rustls_pki_types::CertificateDer;
    ///
    /// let ca = CertificateDer::from_pem_slice(&std::fs::read("internal-ca.pem")?)?;
    /// let client = freshpool::Client::builder()
    ///     .add_root_certificate(ca)
    ///     .only_custom_roots(true)
    ///     .build()?;
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    ///
    /// Without a root of its own:
    ///
    /// ```
    /// let err = freshpool::Client::builder()
    ///     .only_custom_roots(true)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.is_config());
    /// ```
    pub fn only_custom_roots(mut self, only: bool) -> Self {
        self.conn.tls.only_custom_roots = only;
        self
    }

    /// Also trusts the operating system's certificate store: a company's
    /// or a TLS-inspecting proxy's CA installed on the host (with
    /// `update-ca-certificates`, or mounted into a container), which Go,
    /// .NET and the JVM trust by default. `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR`, when set, name the PEM files to read instead of the
    /// store (as OpenSSL reads them). Read at `build()`; a store that
    /// yields no certificate fails it with
    /// [`Kind::Config`](crate::Kind::Config) saying why. Beside the
    /// built-in webpki roots (unless [`only_custom_roots`](Self::only_custom_roots))
    /// and those added with [`add_root_certificate`](Self::add_root_certificate).
    /// Default off, as in reqwest with rustls: the built-in roots alone
    /// behave the same on every host.
    ///
    /// ```no_run
    /// let client = freshpool::Client::builder()
    ///     .tls_native_roots(true)
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn tls_native_roots(mut self, native: bool) -> Self {
        self.conn.tls.native_roots = native;
        self
    }

    /// Presents this client certificate chain (mutual TLS): the client's
    /// certificate first, then any intermediates, with its private key
    /// (PKCS#8, PKCS#1 or SEC1). A key rustls cannot use fails `build()`
    /// with [`Kind::Config`](crate::Kind::Config).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rustls_pki_types::pem::PemObject;
    /// use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    ///
    /// let chain_pem = std::fs::read("client-chain.pem")?;
    /// let key_pem = std::fs::read("client-key.pem")?;
    /// let chain = CertificateDer::pem_slice_iter(&chain_pem).collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_slice(&key_pem)?;
    /// let client = freshpool::Client::builder()
    ///     .client_certificate(chain, key)
    ///     .build()?;
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn client_certificate(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.conn.tls.client_cert = Some(ClientIdentity {
            chain,
            key: Arc::new(key),
        });
        self
    }

    /// Uses this resolver instead of the system's.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use freshpool::{Resolve, ResolveFuture};
    ///
    /// /// Sends every host to one address (a local test server).
    /// struct Pinned(SocketAddr);
    /// impl Resolve for Pinned {
    ///     fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
    ///         let addr = self.0;
    ///         Box::pin(async move { Ok(vec![addr]) })
    ///     }
    /// }
    /// let client = freshpool::Client::builder()
    ///     .resolver(Pinned("127.0.0.1:8080".parse().unwrap()))
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Uses this clock for freeze detection (tests simulate freezes with it).
    /// Default [`SystemClock`](crate::SystemClock).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use freshpool::{Clock, SystemClock};
    ///
    /// /// The system's clocks, plus a suspend the test adds by hand.
    /// #[derive(Clone, Default)]
    /// struct TestClock(Arc<AtomicU64>);
    /// impl Clock for TestClock {
    ///     fn monotonic(&self) -> Duration {
    ///         SystemClock.monotonic()
    ///     }
    ///     fn boottime(&self) -> Duration {
    ///         SystemClock.boottime() + Duration::from_millis(self.0.load(Ordering::Relaxed))
    ///     }
    /// }
    /// let clock = TestClock::default();
    /// let client = freshpool::Client::builder().clock(clock.clone()).build().unwrap();
    /// // Boot time runs a minute ahead: the pool reads a machine suspend.
    /// clock.0.fetch_add(60_000, Ordering::Relaxed);
    /// # drop(client);
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Shares `other`'s pool (its limits and connections) instead of making
    /// a new one. Connections are still only reused between requests whose
    /// TLS and proxy settings are equal. The pool keeps its own limits and
    /// freshness rules, and connections are dialed its way (connect and
    /// TLS handshake timeouts, TCP options, the HTTP/2 PING interval and
    /// timeout): such a setting not called on this builder takes the
    /// pool's value, and one called with another value than the pool's,
    /// the default included, fails `build()` with
    /// [`Kind::Config`](crate::Kind::Config) naming it (it would be
    /// ignored). This client uses `other`'s resolver, and `build()` refuses
    /// a resolver of its own and a [`clock`](Self::clock) of its own (the
    /// pool's detects freezes). Its request settings (`timeout`,
    /// `response_header_timeout`, retries, `Expect`, the HTTP version,
    /// TLS, proxies) are its own.
    ///
    /// ```
    /// let main = freshpool::Client::new();
    /// let insecure = freshpool::Client::builder()
    ///     .danger_accept_invalid_certs(true)
    ///     .share_pool_with(&main)
    ///     .build()
    ///     .unwrap();
    /// # drop(insecure);
    /// ```
    pub fn share_pool_with(mut self, other: &Client) -> Self {
        self.shared_pool = Some(other.pool().clone());
        self
    }

    /// Sends requests through this proxy: `http://` origins by forwarding
    /// (absolute-form requests), `https://` origins through a CONNECT tunnel
    /// with TLS to the origin inside. May be called once per scheme
    /// ([`Proxy::http`], [`Proxy::https`]) or once for both
    /// ([`Proxy::all`]). Any explicit proxy replaces the proxy environment
    /// variables. The proxy and its credentials are part of the pool key:
    /// connections are never shared across proxies or users.
    ///
    /// ```
    /// use freshpool::{Client, Proxy};
    /// let client = Client::builder()
    ///     .proxy(Proxy::http("http://127.0.0.1:3128").unwrap())
    ///     .proxy(Proxy::https("http://user:pass@127.0.0.1:3129").unwrap())
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxies.explicit.push(proxy);
        self
    }

    /// Hosts that bypass the proxy, in the `NO_PROXY` format:
    /// comma- (or whitespace-) separated host names and domains (`example.com`,
    /// `.example.com` and `*.example.com` all match `example.com` and its
    /// subdomains), IP addresses and CIDR ranges; `*` matches every host.
    /// An entry with a port (`host:8443`) matches that port only, as in Go.
    /// Replaces the `NO_PROXY` environment variable. A CIDR range that does
    /// not parse (`10.0.0/8`, `/33`) fails `build()` with
    /// [`Kind::Config`](crate::Kind::Config) naming it.
    ///
    /// ```
    /// let client = freshpool::Client::builder()
    ///     .no_proxy("localhost, 127.0.0.0/8, .svc.cluster.local")
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn no_proxy(mut self, list: impl Into<String>) -> Self {
        self.proxies.no_proxy = Some(list.into());
        self
    }

    /// Whether to read the proxy environment variables at `build()`. Default
    /// on. The names are the ones Go and reqwest read: `http_proxy` /
    /// `HTTP_PROXY` for `http://` (the upper-case name not in a CGI
    /// script, where a request can set it: "httpoxy"), `https_proxy` /
    /// `HTTPS_PROXY` for `https://`, `all_proxy` / `ALL_PROXY` for both
    /// when the specific one is unset, `no_proxy` / `NO_PROXY` for
    /// exceptions; where both spellings are set the lower-case one wins,
    /// as in curl (Go and reqwest take the upper-case one); empty means
    /// unset. As in Go, `localhost` and loopback addresses (127.0.0.0/8,
    /// `[::1]`) never go through a proxy from the environment (reqwest and
    /// curl send them to it unless `NO_PROXY` lists them); an explicit
    /// [`ClientBuilder::proxy`] takes them. A variable freshpool cannot use (a `socks5://`
    /// proxy, a malformed URL) does not make `build()` fail: the requests
    /// it covers fail with [`Kind::Proxy`](crate::Kind::Proxy), saying
    /// which variable, rather than go direct past the proxy. Ignored when
    /// [`ClientBuilder::proxy`] was called.
    ///
    /// ```
    /// let direct = freshpool::Client::builder().proxy_from_env(false).build().unwrap();
    /// # drop(direct);
    /// ```
    pub fn proxy_from_env(mut self, enabled: bool) -> Self {
        self.proxies.from_env = enabled;
        self
    }

    /// Validates the settings and builds the client. An invalid setting is
    /// a [`Kind::Config`](crate::Kind::Config) error whose message names it.
    ///
    /// ```
    /// let client = freshpool::Client::builder().max_idle_per_host(8).build();
    /// assert!(client.is_ok());
    ///
    /// let err = freshpool::Client::builder()
    ///     .max_connections_per_host(100)
    ///     .max_connections_total(10)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.is_config());
    /// assert!(err.message().contains("max_connections_per_host"));
    /// ```
    #[track_caller]
    pub fn build(mut self) -> Result<Client, Error> {
        let caller = Location::caller();
        // (As set, for `share_pool_with`: a default fitted here is no
        // setting of the caller's to refuse.)
        let as_set = self.pool.clone();
        self.pool.fit_defaults(&self.set);
        config::validate(&self.pool, &self.conn)?;
        if self.conn.tls.native_roots {
            self.conn.tls.native_certs = crate::connect::tls::native_roots()?;
        }
        let dial = DialSettings::of(&self.conn);
        // A shared pool's origins dial with whichever client's connector
        // used them first: sharing clients must dial alike (its resolver,
        // its dial settings), or requests would go where another client's
        // resolver says.
        let resolver = match &self.shared_pool {
            None => self.resolver,
            Some(pool) => {
                if !Arc::ptr_eq(&self.resolver, &SystemResolver::shared()) {
                    return Err(Error::config(
                        "share_pool_with: a shared pool dials with the resolver of the client that made it; set the resolver there, not on a client that shares the pool",
                    ));
                }
                if self.clock.is_some() {
                    return Err(Error::config(
                        "share_pool_with: a shared pool detects freezes with the clock of the client that made it; set the clock there, not on a client that shares the pool",
                    ));
                }
                if let Some(ignored) = as_set.ignored_by(pool.config(), &self.set) {
                    return Err(Error::config(format!(
                        "share_pool_with: {ignored}; a shared pool keeps its own limits, so set them on the client that made it"
                    )));
                }
                if let Err(difference) = pool.dial_settings().adopt_into(&mut self.conn, &self.set)
                {
                    return Err(Error::config(format!(
                        "share_pool_with: {difference}; connections are dialed with the pool's settings, so they must match"
                    )));
                }
                pool.resolver().clone()
            }
        };
        let intern = |proxy: Option<String>| {
            SecurityContext::intern(SecuritySettings {
                tls: self.conn.tls.clone(),
                http_version: self.conn.http_version,
                proxy,
            })
        };
        let security = intern(None);
        let routes = Routes::build(
            &self.proxies,
            EnvProxies::from_env,
            self.conn.http_version,
            intern,
        )?;
        let connector = Arc::new(Connector::new(self.conn, resolver.clone())?);
        let pool = match self.shared_pool {
            Some(pool) => pool,
            None => {
                let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
                Pool::new(self.pool, clock, dial, resolver, caller)
            }
        };
        Ok(Client::from_parts(ClientInner {
            pool,
            connector,
            security,
            routes,
        }))
    }
}
