//! The pool key: what two requests must share to share a connection.
//!
//! A connection is reused only when scheme, host (as sent in SNI and `Host`),
//! port, and every security-relevant setting are equal. The settings live in a
//! [`SecurityContext`] that is *interned*: equal settings get the same id, so
//! the hot path compares a `u64` instead of certificate lists, and different
//! settings can never collide (ids are assigned by full equality, not hashes).
//! This is the class of bug behind curl's connection-reuse CVEs
//! (CVE-2021-22924, CVE-2022-27782, CVE-2023-27535, CVE-2022-22576).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::config::{HttpVersion, TlsSettings};
use crate::error::Error;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Every setting that changes who we talk to or how we prove identities.
/// (Its `Debug` hides the proxy's password: `SecurityContext` and
/// `PoolKey` show it, and a `?key` in a log line must not leak it.)
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct SecuritySettings {
    pub tls: TlsSettings,
    pub http_version: HttpVersion,
    /// Proxy URL including credentials, when one is used.
    pub proxy: Option<String>,
}

impl std::fmt::Debug for SecuritySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecuritySettings")
            .field("tls", &self.tls)
            .field("http_version", &self.http_version)
            .field(
                "proxy",
                &self.proxy.as_deref().map(crate::error::redact_userinfo),
            )
            .finish()
    }
}

impl SecuritySettings {
    /// What sets connections with these settings apart from the defaults'
    /// (`via http://***@proxy:3128 (credentials 3fa2), HTTP/2 only,
    /// certificates unchecked`),
    /// never a password: two clients sharing a pool with different
    /// settings have two partitions for one origin, told apart by this.
    pub(crate) fn describe(&self) -> Option<String> {
        let mut notes = Vec::new();
        if let Some(proxy) = &self.proxy {
            match crate::connect::proxy::ProxyUrl::parse(proxy) {
                Ok(url) => match url.credentials_tag() {
                    Some(tag) => notes.push(format!("via {url} ({tag})")),
                    None => notes.push(format!("via {url}")),
                },
                Err(_) => notes.push("via a proxy".to_owned()),
            }
        }
        match self.http_version {
            HttpVersion::Auto => {}
            HttpVersion::Http1Only => notes.push("HTTP/1 only".to_owned()),
            HttpVersion::Http2Only => notes.push("HTTP/2 only".to_owned()),
        }
        let tls = &self.tls;
        if tls.danger_accept_invalid_certs {
            notes.push("certificates unchecked".to_owned());
        }
        // Certificates are public: a short fingerprint tells apart two
        // root sets, or two client identities (per-tenant certificates).
        match (tls.extra_roots.len(), tls.only_custom_roots) {
            (0, _) => {}
            (n, true) => notes.push(format!(
                "{n} custom roots only {}",
                fingerprint(&tls.extra_roots)
            )),
            (n, false) => notes.push(format!("{n} extra roots {}", fingerprint(&tls.extra_roots))),
        }
        if tls.native_roots {
            notes.push("system roots".to_owned());
        }
        if let Some(identity) = &tls.client_cert {
            notes.push(format!(
                "client certificate {}",
                fingerprint(&identity.chain)
            ));
        }
        (!notes.is_empty()).then(|| notes.join(", "))
    }
}

/// Six hex digits naming a list of certificates (a display tag, not a
/// security check: it only tells entries of one stats snapshot apart).
fn fingerprint(certs: &[rustls_pki_types::CertificateDer<'_>]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for cert in certs {
        cert.as_ref().hash(&mut hasher);
    }
    format!("{:06x}", hasher.finish() & 0xff_ffff)
}

/// The connector's settings that shape a dial (the rest shape requests).
/// A pool keeps its first client's: clients sharing it must dial the same
/// way, since an origin dials with whichever client's connector used it
/// first (see `ClientBuilder::share_pool_with`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DialSettings {
    pub connect_timeout: std::time::Duration,
    pub tls_handshake_timeout: std::time::Duration,
    pub tcp_nodelay: bool,
    pub tcp_keepalive: Option<std::time::Duration>,
    pub tcp_user_timeout: Option<std::time::Duration>,
    pub http2_keep_alive_interval: Option<std::time::Duration>,
    /// `None` without an interval: no PING is sent, and clients sharing
    /// a pool need not agree on a timeout that does nothing.
    pub http2_keep_alive_timeout: Option<std::time::Duration>,
}

impl DialSettings {
    pub(crate) fn of(conn: &crate::config::ConnConfig) -> Self {
        DialSettings {
            connect_timeout: conn.connect_timeout,
            tls_handshake_timeout: conn.tls_handshake_timeout,
            tcp_nodelay: conn.tcp_nodelay,
            tcp_keepalive: conn.tcp_keepalive,
            tcp_user_timeout: conn.tcp_user_timeout,
            http2_keep_alive_interval: conn.http2_keep_alive_interval,
            http2_keep_alive_timeout: conn
                .http2_keep_alive_interval
                .map(|_| conn.http2_keep_alive_timeout),
        }
    }

    /// For a client joining the pool these are (`share_pool_with`): each
    /// dial setting its builder called (`set`) must be the pool's (`Err`
    /// names the first that is not, with both values); then every dial
    /// setting of `conn` takes the pool's value, called or left at its
    /// default, so the joining client dials as the pool does.
    pub(crate) fn adopt_into(
        &self,
        conn: &mut crate::config::ConnConfig,
        set: &[&str],
    ) -> Result<(), String> {
        fn agree<T: PartialEq + Clone + std::fmt::Debug>(
            set: &[&str],
            name: &str,
            mine: &mut T,
            theirs: &T,
        ) -> Result<(), String> {
            if set.contains(&name) && mine != theirs {
                return Err(format!(
                    "{name} is {mine:?} here and {theirs:?} in the shared pool"
                ));
            }
            *mine = theirs.clone();
            Ok(())
        }
        agree(
            set,
            "connect_timeout",
            &mut conn.connect_timeout,
            &self.connect_timeout,
        )?;
        agree(
            set,
            "tls_handshake_timeout",
            &mut conn.tls_handshake_timeout,
            &self.tls_handshake_timeout,
        )?;
        agree(set, "tcp_nodelay", &mut conn.tcp_nodelay, &self.tcp_nodelay)?;
        agree(
            set,
            "tcp_keepalive",
            &mut conn.tcp_keepalive,
            &self.tcp_keepalive,
        )?;
        agree(
            set,
            "tcp_user_timeout",
            &mut conn.tcp_user_timeout,
            &self.tcp_user_timeout,
        )?;
        agree(
            set,
            "http2_keep_alive_interval",
            &mut conn.http2_keep_alive_interval,
            &self.http2_keep_alive_interval,
        )?;
        // Without an interval no PING is sent: clients sharing the pool
        // need not agree on a timeout that does nothing.
        if let Some(theirs) = &self.http2_keep_alive_timeout {
            agree(
                set,
                "http2_keep_alive_timeout",
                &mut conn.http2_keep_alive_timeout,
                theirs,
            )?;
        }
        Ok(())
    }
}

/// Interned [`SecuritySettings`]: `id` is equal iff the settings are equal.
#[derive(Debug)]
pub(crate) struct SecurityContext {
    pub id: u64,
    pub settings: SecuritySettings,
}

impl SecurityContext {
    /// Returns the shared context for these settings, creating it once.
    ///
    /// The table holds contexts weakly: clients and their pools' origins
    /// keep theirs alive, and a context nobody holds is dropped at the next
    /// insert (a process that builds clients with ever-new TLS settings,
    /// such as per-tenant client certificates, would otherwise grow the
    /// table for good). Ids come from a counter,
    /// never reused, so an id seen once means those settings for good.
    pub(crate) fn intern(settings: SecuritySettings) -> Arc<SecurityContext> {
        static TABLE: OnceLock<Mutex<Vec<Weak<SecurityContext>>>> = OnceLock::new();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut table = TABLE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = table
            .iter()
            .filter_map(Weak::upgrade)
            .find(|c| c.settings == settings)
        {
            return existing;
        }
        table.retain(|c| c.strong_count() > 0);
        let ctx = Arc::new(SecurityContext {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            settings,
        });
        table.push(Arc::downgrade(&ctx));
        ctx
    }
}

/// Identifies one pool partition: connections under one key are interchangeable.
#[derive(Clone, Debug)]
pub(crate) struct PoolKey {
    pub scheme: Scheme,
    pub host: Arc<str>,
    pub port: u16,
    pub security: Arc<SecurityContext>,
    /// The current-thread runtime whose connections these are, or
    /// `partition::SHARED` (see `pool::partition`).
    pub runtime: u64,
}

impl PoolKey {
    /// Builds the borrowed form of a key from a request URI without
    /// allocating: the hot path looks origins up with it.
    pub(crate) fn view<'a>(uri: &'a http::Uri, security: u64) -> Result<KeyView<'a>, Error> {
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                // (Not the URI: its userinfo may hold a password that
                // `http` did not see as one, e.g. with an unencoded '/'.)
                return Err(Error::invalid_uri(format!(
                    "unsupported scheme {other:?} (only http and https)"
                )));
            }
            None => {
                return Err(Error::invalid_uri(format!(
                    "URI {:?} has no scheme; use an absolute URI like http://host/path",
                    crate::client::shown_url(&uri.to_string())
                )))
            }
        };
        // One pass over the authority (uri.host() and uri.port_u16() each
        // re-scan it).
        let hostport = without_userinfo(uri.authority().map_or("", |a| a.as_str()));
        let (host, port) = match hostport.strip_prefix('[') {
            Some(rest) => match rest.find(']') {
                // After an IP literal only `:port` may follow (`http`
                // accepts `[0]-:0`, whose port it reads as 0).
                Some(end) => match &rest[end + 1..] {
                    "" => (&rest[..end], None),
                    after => match after.strip_prefix(':') {
                        Some(port) => (&rest[..end], Some(port)),
                        None => {
                            // (Not the URI: see the port's message below.)
                            return Err(Error::invalid_uri(format!(
                                "URI host [{}] is followed by {after:?}, not a port",
                                &rest[..end]
                            )));
                        }
                    },
                },
                None => (rest, None),
            },
            // A byte scan: `str::rfind(char)` goes through the generic char
            // searcher, several times slower on these short strings.
            None => match hostport.bytes().rposition(|b| b == b':') {
                Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
                None => (hostport, None),
            },
        };
        if hostport.starts_with('[') && host.contains('%') {
            // RFC 6874's zone (`[fe80::1%25eth0]`): no address parser here
            // takes it, so it went to DNS as a name and failed as a lookup
            // ("failed to lookup address"), which hid the reason.
            return Err(Error::invalid_uri(format!(
                "URI host [{host}] has an IPv6 zone identifier, which is not supported; \
                 use a global or unique-local address, or a host name"
            )));
        }
        if host.is_empty() {
            // (Not the URI: `http://:token#x@h/` reads as no host and the
            // port "token", with no '@' left to redact.)
            return Err(Error::invalid_uri(format!(
                "URI has no host (scheme {})",
                scheme.as_str()
            )));
        }
        // An empty port means the scheme's default (RFC 3986 section 3.2.3);
        // anything else that is not a port is refused, never read as the
        // default: `:65536` or `:8o8o` would reach another service on :80.
        // (The `http` crate checks neither the digits nor the range.)
        let port = match port.filter(|p| !p.is_empty()) {
            // (Digits only: `u16::from_str` also takes a leading `+`.)
            Some(p) => p
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| {
                    // Neither the port's text nor the URI: with an
                    // unencoded '/', '?' or '#' in a password, `http` reads
                    // the user as the host and the password as the port
                    // (and drops a fragment, so no '@' is left to redact).
                    Error::invalid_uri(format!(
                        "URI for host {host:?} has an invalid port (a number from 0 to 65535; \
                         in a password, percent-encode '/', '?' and '#')"
                    ))
                })?,
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
        };
        Ok(KeyView {
            scheme,
            host,
            port,
            security,
            runtime: super::partition::SHARED,
        })
    }

    /// `scheme://host:port`, for messages and stats.
    pub(crate) fn origin(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme.as_str(), self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

/// A borrowed key, for allocation-free lookups.
/// What the `Host` header says for `uri`: its authority without userinfo
/// and without the scheme's default port.
pub(crate) fn host_of(uri: &http::Uri) -> Option<&str> {
    let host = without_userinfo(uri.authority()?.as_str());
    let default_port = match uri.scheme_str() {
        Some("https") => ":443",
        _ => ":80",
    };
    Some(host.strip_suffix(default_port).unwrap_or(host))
}

/// `host:port` of an authority, without any `user:password@` before it.
pub(crate) fn without_userinfo(authority: &str) -> &str {
    match authority.bytes().rposition(|b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyView<'a> {
    pub scheme: Scheme,
    pub host: &'a str,
    pub port: u16,
    pub security: u64,
    pub runtime: u64,
}

impl KeyView<'_> {
    pub(crate) fn to_owned(self, security: Arc<SecurityContext>) -> PoolKey {
        debug_assert_eq!(security.id, self.security);
        PoolKey {
            scheme: self.scheme,
            host: Arc::from(self.host.to_ascii_lowercase()),
            port: self.port,
            security,
            runtime: self.runtime,
        }
    }
}

/// The shape both key forms hash and compare by, so a `HashMap<PoolKey, _>`
/// can be queried with a [`KeyView`].
pub(crate) trait KeyParts {
    fn parts(&self) -> KeyView<'_>;
}

impl KeyParts for PoolKey {
    fn parts(&self) -> KeyView<'_> {
        KeyView {
            scheme: self.scheme,
            host: &self.host,
            port: self.port,
            security: self.security.id,
            runtime: self.runtime,
        }
    }
}

impl KeyParts for KeyView<'_> {
    fn parts(&self) -> KeyView<'_> {
        *self
    }
}

impl<'a> Borrow<dyn KeyParts + 'a> for PoolKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl Hash for dyn KeyParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let p = self.parts();
        // Case-insensitive hash so `Example.com` finds `example.com`: lower
        // into a stack buffer and hash whole chunks (one SipHash `write` per
        // 64 bytes instead of one per byte). Chunking depends only on the
        // length, so equal keys always make the same calls.
        let mut buf = [0u8; 64];
        for chunk in p.host.as_bytes().chunks(64) {
            let b = &mut buf[..chunk.len()];
            b.copy_from_slice(chunk);
            b.make_ascii_lowercase();
            state.write(b);
        }
        state.write_u64(p.security);
        state.write_u64(p.runtime);
        state.write_u32(u32::from(p.port) << 8 | p.scheme as u32);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.parts(), other.parts());
        a.scheme == b.scheme
            && a.port == b.port
            && a.security == b.security
            && a.runtime == b.runtime
            && a.host.eq_ignore_ascii_case(b.host)
    }
}
impl Eq for dyn KeyParts + '_ {}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn KeyParts).hash(state)
    }
}
impl PartialEq for PoolKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn KeyParts) == (other as &dyn KeyParts)
    }
}
impl Eq for PoolKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn host_of_drops_userinfo_and_only_the_schemes_default_port() {
        let host = |u: &str| host_of(&u.parse::<http::Uri>().unwrap()).map(str::to_owned);
        assert_eq!(host("http://a:80/").as_deref(), Some("a"));
        assert_eq!(host("http://a:443/").as_deref(), Some("a:443"));
        assert_eq!(host("https://a:443/").as_deref(), Some("a"));
        assert_eq!(host("https://a:80/").as_deref(), Some("a:80"));
        assert_eq!(host("http://u:p@a:8080/x").as_deref(), Some("a:8080"));
        assert_eq!(host("http://[::1]:80/").as_deref(), Some("[::1]"));
        assert_eq!(host("/relative"), None);
    }

    fn ctx(proxy: Option<&str>) -> Arc<SecurityContext> {
        SecurityContext::intern(SecuritySettings {
            tls: TlsSettings::default(),
            http_version: HttpVersion::Auto,
            proxy: proxy.map(str::to_owned),
        })
    }

    #[test]
    fn equal_settings_share_an_id_and_different_ones_do_not() {
        assert_eq!(ctx(None).id, ctx(None).id);
        assert_ne!(ctx(Some("http://a@p:1")).id, ctx(Some("http://b@p:1")).id);
    }

    #[test]
    fn settings_are_described_without_secrets() {
        assert_eq!(ctx(None).settings.describe(), None);
        let described = ctx(Some("http://u:hunter2@proxy.test:3128"))
            .settings
            .describe()
            .unwrap();
        assert!(
            described.starts_with("via http://***@proxy.test:3128 (credentials "),
            "{described}"
        );
        // Other credentials for the same proxy read differently; the same
        // read the same; neither name nor password shows.
        let other = ctx(Some("http://v:hunter2@proxy.test:3128"))
            .settings
            .describe()
            .unwrap();
        assert_ne!(described, other);
        let again = ctx(Some("http://u:hunter2@proxy.test:3128"))
            .settings
            .describe()
            .unwrap();
        assert_eq!(described, again);
        assert!(!described.contains("u@") && !described.contains("hunter2"));
        let mut settings = ctx(None).settings.clone();
        settings.http_version = HttpVersion::Http2Only;
        settings.tls.only_custom_roots = true;
        settings.tls.extra_roots = vec![rustls_pki_types::CertificateDer::from(vec![1, 2, 3])];
        let one = settings.describe().unwrap();
        assert!(
            one.starts_with("HTTP/2 only, 1 custom roots only "),
            "{one}"
        );
        // Another root set of the same size reads differently.
        settings.tls.extra_roots = vec![rustls_pki_types::CertificateDer::from(vec![4, 5, 6])];
        let other = settings.describe().unwrap();
        assert_ne!(one, other);
    }

    #[test]
    fn lookup_by_view_is_case_insensitive_and_port_defaulting() {
        let c = ctx(None);
        let uri: http::Uri = "HTTP://Example.COM/x".parse().unwrap();
        let view = PoolKey::view(&uri, c.id).unwrap();
        assert_eq!(view.port, 80);
        let mut map = HashMap::new();
        map.insert(view.to_owned(c.clone()), 1);
        let uri2: http::Uri = "http://example.com:80/y".parse().unwrap();
        let view2 = PoolKey::view(&uri2, c.id).unwrap();
        assert_eq!(map.get(&view2 as &dyn KeyParts), Some(&1));
        let other = PoolKey::view(&uri2, c.id + 1000).unwrap();
        assert_eq!(map.get(&other as &dyn KeyParts), None);
    }

    /// A port that is not one is refused, never taken as the default (a
    /// request for `:65536` would reach whatever listens on :80); an empty
    /// one is the default, as RFC 3986 says.
    #[test]
    fn a_port_that_is_not_a_port_is_an_invalid_uri() {
        let mut reached_the_pool = 0;
        for bad in [
            "http://127.0.0.1:65536/",
            "http://127.0.0.1:8o8o/",
            "https://a:-1/",
            "http://a:+80/",
        ] {
            let Ok(uri) = bad.parse::<http::Uri>() else {
                continue; // refused by the `http` crate already
            };
            reached_the_pool += 1;
            let err = PoolKey::view(&uri, 1).unwrap_err();
            assert_eq!(err.kind(), crate::Kind::InvalidUri, "{bad}");
            assert!(err.to_string().contains("invalid port"), "{err}");
        }
        assert!(reached_the_pool > 0, "the `http` crate refused them all");
        let port = |u: &str| {
            PoolKey::view(&u.parse::<http::Uri>().unwrap(), 1)
                .unwrap()
                .port
        };
        assert_eq!(port("http://a:/"), 80);
        assert_eq!(port("https://a:/"), 443);
        assert_eq!(port("http://a:65535/"), 65535);
    }

    #[test]
    fn relative_and_odd_uris_are_typed_errors() {
        for bad in ["/path", "ftp://x/", "http:///nohost"] {
            if let Ok(uri) = bad.parse::<http::Uri>() {
                let err = PoolKey::view(&uri, 1).unwrap_err();
                assert_eq!(err.kind(), crate::Kind::InvalidUri, "{bad}");
            }
        }
    }
}
