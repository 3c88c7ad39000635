//! HTTP proxies: configuration, the environment variables (with curl's
//! precedence rules), the per-origin choice, and the two ways a request goes
//! through a proxy.
//!
//! ```text
//! http://origin  --> forward proxy: TCP to the proxy, request target in
//!                    absolute form, Proxy-Authorization on every request
//! https://origin --> CONNECT origin:port to the proxy (Proxy-Authorization
//!                    on the CONNECT), then TLS to the origin inside the tunnel
//! ```
//!
//! # The proxy is part of the pool key
//! Which proxy (if any) serves a request depends on its URI: `http_proxy`
//! and `https_proxy` may differ and `NO_PROXY` exempts some hosts. So the
//! choice is made per request, before checkout: [`Routes::select`] picks
//! the route for the URI, and each route carries its own interned
//! [`SecurityContext`] whose settings include the proxy URL *with* its
//! credentials. The pool key is `(scheme, host, port, security id)`, so a
//! connection made through proxy A as user X is only ever found by requests
//! routed through proxy A as user X. The contexts are interned once at
//! `build()`; the hot path only matches `NO_PROXY` and picks a pointer.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Request, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::body::RequestBody;
use crate::config::HttpVersion;
use crate::error::{fmt_duration, Error, Kind};
use crate::pool::key::{Scheme, SecurityContext};

use super::tcp::TcpIo;

/// A proxy for the client to use, and which requests it applies to.
///
/// Proxy URLs have the form `[http://][user[:password]@]host[:port]`; the
/// user and password are percent-decoded and sent as `Proxy-Authorization:
/// Basic`. As in curl, a missing port means 1080. Only `http://` proxies
/// are supported (an `https://` or `socks` proxy is a [`Kind::Config`]
/// error).
///
/// ```
/// use freshpool::{Client, Proxy};
/// let client = Client::builder()
///     .proxy(Proxy::all("http://alice:s%40cret@127.0.0.1:3128").unwrap())
///     .no_proxy("localhost, .internal.example")
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    intercept: Intercept,
    url: Arc<ProxyUrl>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intercept {
    All,
    Http,
    Https,
}

impl Proxy {
    /// Proxies every request (`http://` by forwarding, `https://` through a
    /// CONNECT tunnel).
    ///
    /// ```
    /// let proxy = freshpool::Proxy::all("127.0.0.1:3128").unwrap();
    /// assert_eq!(proxy.to_string(), "http://127.0.0.1:3128");
    /// ```
    pub fn all(url: &str) -> Result<Proxy, Error> {
        Proxy::new(Intercept::All, url)
    }

    /// Proxies only requests to `http://` origins.
    ///
    /// ```
    /// let proxy = freshpool::Proxy::http("http://proxy.example:8080").unwrap();
    /// # drop(proxy);
    /// ```
    pub fn http(url: &str) -> Result<Proxy, Error> {
        Proxy::new(Intercept::Http, url)
    }

    /// Proxies only requests to `https://` origins (CONNECT tunnels).
    ///
    /// ```
    /// let err = freshpool::Proxy::https("socks5://127.0.0.1:1080").unwrap_err();
    /// assert!(err.is_config());
    /// ```
    pub fn https(url: &str) -> Result<Proxy, Error> {
        Proxy::new(Intercept::Https, url)
    }

    fn new(intercept: Intercept, url: &str) -> Result<Proxy, Error> {
        Ok(Proxy {
            intercept,
            url: Arc::new(ProxyUrl::parse(url)?),
        })
    }
}

/// Shows the proxy without its password.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.url, f)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("intercept", &self.intercept)
            .field("url", &self.url.to_string())
            .finish()
    }
}

/// A parsed proxy URL (always `http://`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProxyUrl {
    /// Lower-case, IPv6 without brackets.
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

/// curl's default proxy port.
const DEFAULT_PORT: u16 = 1080;

impl ProxyUrl {
    pub(crate) fn parse(url: &str) -> Result<ProxyUrl, Error> {
        let bad = |why: &str| Error::config(format!("invalid proxy URL {}: {why}", redact(url)));
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) => {
                if scheme.eq_ignore_ascii_case("http") {
                    rest
                } else if scheme.eq_ignore_ascii_case("https") {
                    return Err(bad("https:// proxies (TLS to the proxy) are not supported"));
                } else {
                    return Err(bad(&format!("unsupported proxy scheme {scheme:?}")));
                }
            }
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (u, None),
                };
                let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding"))?;
                let pass = pass
                    .map(|p| percent_decode(p).ok_or_else(|| bad("bad percent-encoding")))
                    .transpose()?;
                (Some(user), pass)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("bad IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("junk after ']'")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad("no host"));
        }
        Ok(ProxyUrl {
            host: host.to_ascii_lowercase(),
            port,
            user,
            password,
        })
    }

    /// The pool-key form: canonical, credentials included (percent-encoded
    /// so [`ProxyUrl::parse`] gives back exactly this proxy).
    pub(crate) fn key(&self) -> String {
        let mut out = String::from("http://");
        if let Some(user) = &self.user {
            out.push_str(&percent_encode(user));
            if let Some(pass) = &self.password {
                out.push(':');
                out.push_str(&percent_encode(pass));
            }
            out.push('@');
        }
        out.push_str(&self.authority());
        out
    }

    /// `host:port` (IPv6 in brackets).
    pub(crate) fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `Basic base64(user:password)`, when the URL has a user.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        let user = self.user.as_ref()?;
        let pair = format!("{user}:{}", self.password.as_deref().unwrap_or(""));
        let mut value =
            HeaderValue::from_str(&format!("Basic {}", base64(pair.as_bytes()))).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// The proxy as messages show it: `http://user@host:port`, never the password.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http://")?;
        if let Some(user) = &self.user {
            write!(f, "{}@", percent_encode(user))?;
        }
        f.write_str(&self.authority())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A URL for an error message: the password (if any) replaced.
fn redact(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            )
        }
        None => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Hosts that bypass the proxy (`NO_PROXY` or [`crate::ClientBuilder::no_proxy`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    all: bool,
    /// Lower-case, no leading or trailing dot.
    domains: Vec<String>,
    /// Addresses and CIDR ranges: (network, prefix length).
    nets: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    /// Parses curl's format: comma-separated host names, domains (a leading
    /// dot is optional: `example.com` and `.example.com` both match
    /// `example.com` and `www.example.com`), IP addresses and CIDR ranges;
    /// `*` matches every host; ports are ignored.
    pub(crate) fn parse(list: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for entry in list.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                out.all = true;
                continue;
            }
            // CIDR first: `::1/128` contains colons that are no port.
            if let Some((ip, bits)) = entry.split_once('/') {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                if let (Ok(ip), Ok(bits)) = (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    out.nets.push((ip, bits.min(max)));
                }
                continue;
            }
            let host = strip_port(entry);
            if let Ok(ip) = host.parse::<IpAddr>() {
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                out.nets.push((ip, bits));
                continue;
            }
            let domain = host.trim_start_matches('.').trim_end_matches('.');
            if !domain.is_empty() {
                out.domains.push(domain.to_ascii_lowercase());
            }
        }
        out
    }

    /// Whether requests to `host` go direct.
    pub(crate) fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits));
        }
        let host = host.trim_end_matches('.');
        self.domains.iter().any(|d| {
            host.len() >= d.len()
                && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
                && (host.len() == d.len() || host.as_bytes()[host.len() - d.len() - 1] == b'.')
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn strip_port(entry: &str) -> &str {
    if let Some(v6) = entry.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    if entry.parse::<IpAddr>().is_ok() {
        return entry;
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => entry,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| in_net(IpAddr::V4(a), net, bits)),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// The proxy environment variables, read with curl's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EnvProxies {
    pub http: Option<String>,
    pub https: Option<String>,
    pub all: Option<String>,
    pub no_proxy: Option<String>,
}

impl EnvProxies {
    pub(crate) fn from_env() -> EnvProxies {
        EnvProxies::from_lookup(|name| std::env::var(name).ok())
    }

    /// curl's precedence: `http_proxy` only in lower case (the upper-case
    /// `HTTP_PROXY` can be set by a CGI request's `Proxy:` header,
    /// "httpoxy"); for the others the lower-case name wins over the
    /// upper-case one. Empty values count as unset.
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> EnvProxies {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        };
        EnvProxies {
            http: var(&["http_proxy"]),
            https: var(&["https_proxy", "HTTPS_PROXY"]),
            all: var(&["all_proxy", "ALL_PROXY"]),
            no_proxy: var(&["no_proxy", "NO_PROXY"]),
        }
    }
}

/// The proxy settings of a builder, before `build()`.
#[derive(Clone, Debug)]
pub(crate) struct ProxySettings {
    pub explicit: Vec<Proxy>,
    pub no_proxy: Option<String>,
    pub from_env: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            explicit: Vec::new(),
            no_proxy: None,
            from_env: true,
        }
    }
}

/// One way out: through this proxy, keyed by its own security context.
pub(crate) struct Route {
    pub url: Arc<ProxyUrl>,
    pub security: Arc<SecurityContext>,
    /// Plain-HTTP forwarding (absolute-form targets) rather than a tunnel.
    pub forward: bool,
}

/// Which proxy each request uses. Built once per client.
#[derive(Default)]
pub(crate) struct Routes {
    http: Option<Route>,
    https: Option<Route>,
    no_proxy: NoProxy,
}

impl Routes {
    /// Resolves explicit settings and (unless switched off or overridden by
    /// explicit proxies) the environment into routes. `intern` makes the
    /// security context for a proxy key.
    pub(crate) fn build(
        settings: &ProxySettings,
        env: impl FnOnce() -> EnvProxies,
        version: HttpVersion,
        intern: impl Fn(Option<String>) -> Arc<SecurityContext>,
    ) -> Result<Routes, Error> {
        let (mut http, mut https) = (None, None);
        let mut no_proxy = settings.no_proxy.as_deref().map(NoProxy::parse);
        if !settings.explicit.is_empty() {
            // Later settings win, as with any builder setter.
            for p in &settings.explicit {
                if p.intercept != Intercept::Https {
                    http = Some(p.url.clone());
                }
                if p.intercept != Intercept::Http {
                    https = Some(p.url.clone());
                }
            }
        } else if settings.from_env {
            let env = env();
            // An unusable variable (a socks proxy, a typo) is skipped with a
            // warning rather than failing build(): the environment must not
            // make `Client::new()` panic.
            let parse = |v: &Option<String>, name: &str| {
                let url = v.as_deref()?;
                match ProxyUrl::parse(url) {
                    Ok(url) => Some(Arc::new(url)),
                    Err(e) => {
                        tracing::warn!(
                            "ignoring proxy environment variable {name}: {}",
                            e.message()
                        );
                        None
                    }
                }
            };
            let all = parse(&env.all, "all_proxy/ALL_PROXY");
            http = parse(&env.http, "http_proxy").or_else(|| all.clone());
            https = parse(&env.https, "https_proxy/HTTPS_PROXY").or(all);
            if no_proxy.is_none() {
                no_proxy = env.no_proxy.as_deref().map(NoProxy::parse);
            }
        }
        let route = |url: Option<Arc<ProxyUrl>>, forward: bool| {
            url.map(|url| Route {
                security: intern(Some(url.key())),
                url,
                forward,
            })
        };
        Ok(Routes {
            http: route(http, forwards(Scheme::Http, version)),
            https: route(https, false),
            no_proxy: no_proxy.unwrap_or_default(),
        })
    }

    /// The route for this request, `None` to go direct. (Invalid URIs go
    /// direct here and fail at the key check.)
    pub(crate) fn select(&self, uri: &Uri) -> Option<&Route> {
        let route = match uri.scheme_str() {
            Some("http") => self.http.as_ref(),
            Some("https") => self.https.as_ref(),
            _ => None,
        }?;
        let host = uri.host()?;
        (!self.no_proxy.matches(host)).then_some(route)
    }
}

/// Whether a proxied origin of this scheme is reached by forwarding
/// (absolute-form requests to the proxy) rather than a CONNECT tunnel.
/// HTTPS always tunnels; cleartext HTTP/2 (prior knowledge) cannot be
/// forwarded by an HTTP/1 proxy, so it tunnels too.
pub(crate) fn forwards(scheme: Scheme, version: HttpVersion) -> bool {
    scheme == Scheme::Http && version != HttpVersion::Http2Only
}

/// Turns an HTTP/1 request prepared for an origin into one for a forward
/// proxy: absolute-form target (without userinfo) and `Proxy-Authorization`.
pub(crate) fn to_forward_form(request: &mut Request<RequestBody>, uri: &Uri, route: &Route) {
    let mut parts = uri.clone().into_parts();
    if let Some(authority) = &parts.authority {
        if let Some((_, host)) = authority.as_str().rsplit_once('@') {
            parts.authority = host.parse().ok();
        }
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(absolute) = Uri::from_parts(parts) {
        *request.uri_mut() = absolute;
    }
    if let Some(auth) = route.url.authorization() {
        request
            .headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, auth);
    }
}

/// A forward proxy's own refusal (407), as an error naming the proxy.
pub(crate) fn forward_refusal(status: http::StatusCode, route: &Route) -> Option<Error> {
    (status == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED).then(|| auth_error(&route.url))
}

fn auth_error(url: &ProxyUrl) -> Error {
    let what = if url.user.is_some() {
        "rejected the credentials"
    } else {
        "requires credentials (none were given)"
    };
    Error::new(
        Kind::ProxyAuth,
        format!("proxy {url} {what} (407 Proxy Authentication Required)"),
    )
}

/// The proxy itself could not be reached.
pub(crate) fn unreachable(url: &ProxyUrl, err: Error) -> Error {
    let timed_out = err.kind() == Kind::ConnectTimeout;
    let what = if timed_out {
        "timed out connecting to proxy"
    } else {
        "cannot connect to proxy"
    };
    Error::new(Kind::Proxy, format!("{what} {url}")).with_source(err)
}

/// The longest CONNECT response head we accept.
const MAX_HEAD: usize = 16 * 1024;

/// Asks the proxy for a tunnel to `host:port` and reads its answer. On
/// success the stream is a byte pipe to the origin.
pub(crate) async fn connect_tunnel(
    io: &mut TcpIo,
    url: &ProxyUrl,
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<(), Error> {
    let target = authority(host, port);
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = url.authorization() {
        head.push_str("Proxy-Authorization: ");
        head.push_str(auth.to_str().unwrap_or_default());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let io_err = |e: std::io::Error| {
        Error::new(Kind::Proxy, format!("proxy {url} failed during CONNECT")).with_source(e)
    };
    let exchange = async {
        io.write_all(head.as_bytes()).await.map_err(io_err)?;
        // Read the head without reading past it: the origin may speak first
        // (an HTTP/2 server sends SETTINGS at once), and those bytes belong
        // to the connection, not to the CONNECT answer. Asking for at most
        // the bytes still missing from "\r\n\r\n" never overshoots it.
        let mut buf = Vec::with_capacity(256);
        loop {
            let matched = (1..=3)
                .rev()
                .find(|&k| buf.ends_with(&b"\r\n\r\n"[..k]))
                .unwrap_or(0);
            let mut chunk = [0u8; 4];
            let n = io.read(&mut chunk[..4 - matched]).await.map_err(io_err)?;
            if n == 0 {
                return Err(Error::new(
                    Kind::Proxy,
                    format!("proxy {url} closed the connection before answering CONNECT"),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.ends_with(b"\r\n\r\n") {
                let end = buf.len();
                return Ok((buf, end));
            }
            if buf.len() > MAX_HEAD {
                return Err(Error::new(
                    Kind::Proxy,
                    format!("proxy {url} sent a CONNECT response head over {MAX_HEAD} bytes"),
                ));
            }
        }
    };
    let (buf, end) = tokio::time::timeout(limit, exchange).await.map_err(|_| {
        Error::new(
            Kind::Proxy,
            format!(
                "proxy {url} did not answer CONNECT within {} (connect_timeout)",
                fmt_duration(limit)
            ),
        )
    })??;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status_line = head.lines().next().unwrap_or("");
    let mut words = status_line.splitn(3, ' ');
    let version = words.next().unwrap_or("");
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    let reason = words.next().unwrap_or("").trim();
    let code = match code {
        Some(code) if version.starts_with("HTTP/1.") => code,
        _ => {
            return Err(Error::new(
                Kind::Proxy,
                format!("proxy {url} sent an invalid CONNECT response ({status_line:?})"),
            ))
        }
    };
    if code == 407 {
        return Err(auth_error(url));
    }
    if !(200..300).contains(&code) {
        return Err(Error::new(
            Kind::Proxy,
            format!("proxy {url} refused the CONNECT tunnel: {code} {reason}"),
        ));
    }
    Ok(())
}

/// Resolves the proxy's host: an IP literal directly, a name with the
/// client's resolver.
pub(crate) fn literal_addr(url: &ProxyUrl) -> Option<SocketAddr> {
    url.host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, url.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> EnvProxies {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvProxies::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn parses_credentials_ports_and_ipv6() {
        let p = ProxyUrl::parse("http://al%40ice:p%3Ass@Proxy.Example:3128/").unwrap();
        assert_eq!(p.user.as_deref(), Some("al@ice"));
        assert_eq!(p.password.as_deref(), Some("p:ss"));
        assert_eq!(p.authority(), "proxy.example:3128");
        assert_eq!(p.to_string(), "http://al%40ice@proxy.example:3128");
        assert_eq!(ProxyUrl::parse(&p.key()).unwrap(), p);
        let p = ProxyUrl::parse("[::1]").unwrap();
        assert_eq!(p.authority(), "[::1]:1080");
        let p = ProxyUrl::parse("user@127.0.0.1:8080").unwrap();
        assert_eq!(p.password, None);
        // "user:" is an empty password, as in curl.
        assert_eq!(
            p.authorization().unwrap().to_str().unwrap(),
            format!("Basic {}", base64(b"user:"))
        );
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        for bad in [
            "https://u:hunter2@p:1",
            "socks5://u:hunter2@p:1",
            "http://u:hunter2@p:notaport",
            "http://u:hunter2@",
        ] {
            let err = ProxyUrl::parse(bad).unwrap_err();
            assert!(err.is_config(), "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, out) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), out);
        }
    }

    #[test]
    fn env_precedence_follows_curl() {
        // Upper-case HTTP_PROXY is ignored (httpoxy).
        let e = env(&[("HTTP_PROXY", "a:1")]);
        assert_eq!(e.http, None);
        let e = env(&[("http_proxy", "a:1"), ("HTTP_PROXY", "b:1")]);
        assert_eq!(e.http.as_deref(), Some("a:1"));
        // Lower-case wins for the others; upper-case is the fallback.
        let e = env(&[("https_proxy", "a:1"), ("HTTPS_PROXY", "b:1")]);
        assert_eq!(e.https.as_deref(), Some("a:1"));
        let e = env(&[
            ("HTTPS_PROXY", "b:1"),
            ("ALL_PROXY", "c:1"),
            ("NO_PROXY", "x"),
        ]);
        assert_eq!(e.https.as_deref(), Some("b:1"));
        assert_eq!(e.all.as_deref(), Some("c:1"));
        assert_eq!(e.no_proxy.as_deref(), Some("x"));
        let e = env(&[("all_proxy", "l:1"), ("ALL_PROXY", "u:1"), ("no_proxy", "")]);
        assert_eq!(e.all.as_deref(), Some("l:1"));
        assert_eq!(e.no_proxy, None, "empty counts as unset");
    }

    #[test]
    fn no_proxy_matching() {
        let np = NoProxy::parse(
            " example.com, .internal.test ,10.1.0.0/16, 192.0.2.7:8080, [::1]:443, localhost:80",
        );
        for host in [
            "example.com",
            "www.example.com",
            "EXAMPLE.COM.",
            "internal.test",
            "a.b.internal.test",
            "10.1.200.3",
            "192.0.2.7",
            "[::1]",
            "localhost",
        ] {
            assert!(np.matches(host), "{host}");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "10.2.0.1",
            "192.0.2.8",
            "::2",
            "localhost.example",
        ] {
            assert!(!np.matches(host), "{host}");
        }
        assert!(NoProxy::parse("*").matches("anything.at.all"));
        assert!(NoProxy::parse("::/0").matches("2001:db8::1"));
        assert!(NoProxy::parse("127.0.0.0/8").matches("::ffff:127.0.0.9"));
        assert!(!NoProxy::parse("").matches("example.com"));
    }

    fn routes(settings: ProxySettings, e: EnvProxies, version: HttpVersion) -> Routes {
        use crate::pool::key::SecuritySettings;
        Routes::build(
            &settings,
            move || e,
            version,
            |proxy| {
                SecurityContext::intern(SecuritySettings {
                    tls: Default::default(),
                    http_version: version,
                    proxy,
                })
            },
        )
        .unwrap()
    }

    #[test]
    fn routes_pick_per_scheme_and_respect_no_proxy() {
        let e = env(&[
            ("http_proxy", "http://h:1"),
            ("ALL_PROXY", "http://a:2"),
            ("NO_PROXY", "skip.test"),
        ]);
        let r = routes(ProxySettings::default(), e.clone(), HttpVersion::Auto);
        let pick = |u: &str| {
            r.select(&u.parse().unwrap())
                .map(|r| (r.url.authority(), r.forward))
        };
        assert_eq!(pick("http://x.test/"), Some(("h:1".into(), true)));
        assert_eq!(pick("https://x.test/"), Some(("a:2".into(), false)));
        assert_eq!(pick("https://api.skip.test/"), None);
        // Off: the environment is ignored.
        let off = routes(
            ProxySettings {
                from_env: false,
                ..ProxySettings::default()
            },
            e.clone(),
            HttpVersion::Auto,
        );
        assert!(off.select(&"http://x.test/".parse().unwrap()).is_none());
        // Explicit proxies replace the environment; explicit no_proxy too.
        let explicit = routes(
            ProxySettings {
                explicit: vec![Proxy::https("e:3").unwrap()],
                no_proxy: Some("other.test".into()),
                from_env: true,
            },
            e,
            HttpVersion::Auto,
        );
        assert!(explicit
            .select(&"http://x.test/".parse().unwrap())
            .is_none());
        let via = explicit
            .select(&"https://skip.test/".parse().unwrap())
            .unwrap();
        assert_eq!(via.url.authority(), "e:3");
        // Different credentials: different pool keys.
        let a = routes(
            ProxySettings {
                explicit: vec![Proxy::all("http://x:1@p:1").unwrap()],
                ..ProxySettings::default()
            },
            EnvProxies::default(),
            HttpVersion::Auto,
        );
        let b = routes(
            ProxySettings {
                explicit: vec![Proxy::all("http://x:2@p:1").unwrap()],
                ..ProxySettings::default()
            },
            EnvProxies::default(),
            HttpVersion::Auto,
        );
        let uri: Uri = "https://o.test/".parse().unwrap();
        assert_ne!(
            a.select(&uri).unwrap().security.id,
            b.select(&uri).unwrap().security.id
        );
    }

    /// A fake proxy that answers the CONNECT with `answer` in one write.
    async fn fake_connect(answer: &'static [u8]) -> (Result<(), Error>, TcpIo, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.unwrap();
            // Keep the socket open until the client is done.
            let _ = s.read(&mut buf).await;
            String::from_utf8(seen).unwrap()
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut io, _weak) = TcpIo::new(stream);
        let url = ProxyUrl::parse(&format!("http://u:p@{addr}")).unwrap();
        let result = connect_tunnel(&mut io, &url, "::1", 443, Duration::from_secs(5)).await;
        io.shutdown().await.unwrap();
        (result, io, server.await.unwrap())
    }

    #[tokio::test]
    async fn connect_keeps_bytes_the_origin_sent_right_after_the_answer() {
        let (result, mut io, request) =
            fake_connect(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nSETTINGS").await;
        result.unwrap();
        assert!(request.starts_with("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n"));
        assert!(request.contains(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64(b"u:p")
        )));
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"SETTINGS", "nothing after the head was swallowed");
    }

    #[tokio::test]
    async fn connect_refusals_are_typed() {
        let (result, _, _) =
            fake_connect(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        assert_eq!(result.unwrap_err().kind(), Kind::ProxyAuth);
        let (result, _, _) =
            fake_connect(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), Kind::Proxy);
        assert!(err.to_string().contains("403 Forbidden"), "{err}");
        assert!(!err.to_string().contains("::1"), "names the origin: {err}");
        let (result, _, _) = fake_connect(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert_eq!(result.unwrap_err().kind(), Kind::Proxy);
    }

    #[test]
    fn cleartext_http2_tunnels_instead_of_forwarding() {
        assert!(forwards(Scheme::Http, HttpVersion::Auto));
        assert!(!forwards(Scheme::Http, HttpVersion::Http2Only));
        assert!(!forwards(Scheme::Https, HttpVersion::Http1Only));
    }

    #[test]
    fn forward_form_is_absolute_without_userinfo() {
        let route = Route {
            url: Arc::new(ProxyUrl::parse("http://u:p@proxy:1").unwrap()),
            security: SecurityContext::intern(crate::pool::key::SecuritySettings {
                tls: Default::default(),
                http_version: HttpVersion::Auto,
                proxy: None,
            }),
            forward: true,
        };
        let uri: Uri = "http://me:pw@origin.test:8080/a?b=1".parse().unwrap();
        let mut req = Request::new(RequestBody::empty());
        to_forward_form(&mut req, &uri, &route);
        assert_eq!(req.uri().to_string(), "http://origin.test:8080/a?b=1");
        assert_eq!(
            req.headers()["proxy-authorization"],
            format!("Basic {}", base64(b"u:p"))
        );
    }
}
