//! The proxy environment variables and `NO_PROXY` matching.
//!
//! Which names are read follows reqwest (upper-case `HTTP_PROXY` too,
//! except in a CGI script, as Go's `httpproxy`; Go reads no `ALL_PROXY`);
//! where both spellings are set the lower-case one wins, as in curl (Go and
//! reqwest read the upper-case one first). As in Go, `localhost` and
//! loopback addresses never go through a proxy from the environment
//! (`is_loopback_host`; reqwest and curl send them to it unless `NO_PROXY`
//! lists them).

use std::net::IpAddr;

/// Hosts that bypass the proxy (`NO_PROXY` or [`crate::ClientBuilder::no_proxy`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    all: bool,
    /// Lower-case, no leading or trailing dot; the port, if the entry
    /// named one.
    domains: Vec<(String, Option<u16>)>,
    /// Addresses and CIDR ranges: (network, prefix length, port if the
    /// entry named one).
    nets: Vec<(IpAddr, u8, Option<u16>)>,
}

impl NoProxy {
    /// Parses the common format: comma-separated host names, domains (a
    /// leading `.` or `*.` is optional: `example.com`, `.example.com` and
    /// `*.example.com` all match `example.com` and `www.example.com`, as
    /// curl reads the first two; Go matches only subdomains with a leading
    /// dot), IP addresses and CIDR ranges; `*` matches every host. An entry
    /// with a port (`host:8443`, `[::1]:443`) matches that port only, as in
    /// Go (curl matches such an entry never, an earlier version of this any
    /// port).
    #[cfg(test)]
    pub(crate) fn parse(list: &str) -> NoProxy {
        NoProxy::parse_reporting(list, |_| {})
    }

    /// [`NoProxy::parse`], telling `bad` of each entry it cannot read (a
    /// CIDR range whose address or prefix does not parse, or a prefix
    /// longer than the address; a port that is no port), which it skips.
    pub(crate) fn parse_reporting(list: &str, mut bad: impl FnMut(&str)) -> NoProxy {
        let mut out = NoProxy::default();
        // Commas, and whitespace too: `localhost 127.0.0.1` (as some set
        // it) was one domain that matched nothing, and the traffic it
        // meant to keep direct went through the proxy. No entry can hold
        // a space.
        for entry in list.split(|c: char| c == ',' || c.is_whitespace()) {
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
                match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Ok(ip), Ok(bits)) if bits <= if ip.is_ipv4() { 32 } else { 128 } => {
                        out.nets.push((ip, bits, None));
                    }
                    _ => bad(entry),
                }
                continue;
            }
            let Some((host, port)) = split_port(entry) else {
                bad(entry);
                continue;
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                out.nets.push((ip, bits, port));
                continue;
            }
            let host = host.strip_prefix("*.").unwrap_or(host);
            let domain = host.trim_start_matches('.').trim_end_matches('.');
            if !domain.is_empty() {
                out.domains.push((domain.to_ascii_lowercase(), port));
            }
        }
        out
    }

    /// Whether requests to `host` on `port` go direct.
    pub(crate) fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let on_port = |p: &Option<u16>| p.is_none_or(|p| p == port);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .nets
                .iter()
                .any(|(net, bits, p)| on_port(p) && in_net(ip, *net, *bits));
        }
        let host = host.trim_end_matches('.');
        self.domains.iter().any(|(d, p)| {
            on_port(p)
                && host.len() >= d.len()
                && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
                && (host.len() == d.len() || host.as_bytes()[host.len() - d.len() - 1] == b'.')
        })
    }
}

/// Whether a URI's host is this machine: `localhost` (any case, with or
/// without the root's dot) or a loopback address (127.0.0.0/8, `[::1]`,
/// and 127.x written as an IPv4-mapped IPv6 address), as Go's
/// `httpproxy` tells them. (Only `localhost` itself among names: a
/// subdomain of it resolves to this machine on some systems and not on
/// others.)
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host
            .strip_suffix('.')
            .unwrap_or(host)
            .eq_ignore_ascii_case("localhost"),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address: the
/// host and the port, if any; `None` for a port that is no port
/// (`host:99999`, `[::1]:abc`), which read as "any port" widened the
/// bypass a typo was meant to narrow.
fn split_port(entry: &str) -> Option<(&str, Option<u16>)> {
    // (Digits only: `u16::from_str` also takes "+80".)
    let port = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<u16>().ok())
            .flatten()
    };
    if let Some(v6) = entry.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(port(after.strip_prefix(':')?)?))),
        };
    }
    if entry.parse::<IpAddr>().is_ok() {
        return Some((entry, None));
    }
    match entry.rsplit_once(':') {
        Some((host, p)) => Some((host, Some(port(p)?))),
        None => Some((entry, None)),
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

/// The proxy environment variables (see the module's note on precedence).
/// (Its `Debug` hides passwords.)
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvProxies {
    pub http: Option<String>,
    pub https: Option<String>,
    pub all: Option<String>,
    pub no_proxy: Option<String>,
}

impl std::fmt::Debug for EnvProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<String>| v.as_deref().map(crate::error::redact_userinfo);
        f.debug_struct("EnvProxies")
            .field("http", &shown(&self.http))
            .field("https", &shown(&self.https))
            .field("all", &shown(&self.all))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl EnvProxies {
    pub(crate) fn from_env() -> EnvProxies {
        EnvProxies::from_lookup(|name| std::env::var(name).ok())
    }

    /// The lower-case name wins over the upper-case one; empty values
    /// count as unset. The upper-case `HTTP_PROXY` is not read in a CGI
    /// script (`REQUEST_METHOD` set), where a request's `Proxy:` header
    /// sets it ("httpoxy"), as in Go and reqwest. (curl never reads it:
    /// Docker and Kubernetes setups that export only upper-case names
    /// then sent `http://` traffic direct.)
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> EnvProxies {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        };
        let cgi = get("REQUEST_METHOD").is_some();
        EnvProxies {
            http: var(if cgi {
                &["http_proxy"]
            } else {
                &["http_proxy", "HTTP_PROXY"]
            }),
            https: var(&["https_proxy", "HTTPS_PROXY"]),
            all: var(&["all_proxy", "ALL_PROXY"]),
            no_proxy: var(&["no_proxy", "NO_PROXY"]),
        }
    }
}

/// An [`EnvProxies`] read from these variables instead of the process
/// environment.
#[cfg(test)]
pub(super) fn test_env(vars: &[(&str, &str)]) -> EnvProxies {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    EnvProxies::from_lookup(move |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::test_env as env;
    use super::*;

    #[test]
    fn env_precedence_follows_go_and_reqwest() {
        // Upper-case HTTP_PROXY is read, but not in a CGI script (httpoxy).
        let e = env(&[("HTTP_PROXY", "a:1")]);
        assert_eq!(e.http.as_deref(), Some("a:1"));
        let e = env(&[("HTTP_PROXY", "a:1"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(e.http, None);
        let e = env(&[("http_proxy", "l:1"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(e.http.as_deref(), Some("l:1"));
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

    /// `Debug` of what holds proxy URLs shows no password (a `?key` or
    /// `dbg!` of them would have).
    #[test]
    fn debug_output_hides_proxy_passwords() {
        let e = env(&[
            ("http_proxy", "http://u:hunter2@p:1"),
            ("ALL_PROXY", "u:hunter2@q"),
        ]);
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***@p:1") && !shown.contains("u:"),
            "{shown}"
        );
        let settings = crate::pool::key::SecuritySettings {
            tls: Default::default(),
            http_version: crate::HttpVersion::Auto,
            proxy: Some("http://u:hunter2@p:1".into()),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***@p:1") && !shown.contains("u:"),
            "{shown}"
        );
    }

    /// Entries separated by whitespace (`localhost 127.0.0.1`) are
    /// entries: they were one domain that matched nothing.
    #[test]
    fn no_proxy_entries_may_be_separated_by_whitespace() {
        let np = NoProxy::parse("localhost 127.0.0.1\t.svc.test,\n example.org");
        for host in ["localhost", "127.0.0.1", "a.svc.test", "example.org"] {
            assert!(np.matches(host, 80), "{host}");
        }
        assert!(!np.matches("localhost.evil", 80));
    }

    #[test]
    fn no_proxy_matching() {
        let np = NoProxy::parse(
            " example.com, .internal.test ,10.1.0.0/16, 192.0.2.7:8080, [::1]:443, localhost:80, \
             *.wild.test",
        );
        for (host, port) in [
            ("example.com", 80),
            ("www.example.com", 443),
            ("EXAMPLE.COM.", 80),
            ("internal.test", 80),
            ("a.b.internal.test", 80),
            ("10.1.200.3", 80),
            ("192.0.2.7", 8080),
            ("[::1]", 443),
            ("localhost", 80),
            ("wild.test", 80),
            ("api.wild.test", 443),
        ] {
            assert!(np.matches(host, port), "{host}:{port}");
        }
        for (host, port) in [
            ("notexample.com", 80),
            ("example.com.evil", 80),
            ("10.2.0.1", 80),
            ("192.0.2.8", 8080),
            ("::2", 443),
            ("localhost.example", 80),
            // An entry with a port bypasses that port only (as in Go).
            ("192.0.2.7", 80),
            ("[::1]", 80),
            ("localhost", 8080),
            ("notwild.test", 80),
        ] {
            assert!(!np.matches(host, port), "{host}:{port}");
        }
        assert!(NoProxy::parse("*").matches("anything.at.all", 80));
        assert!(NoProxy::parse("::/0").matches("2001:db8::1", 80));
        assert!(NoProxy::parse("127.0.0.0/8").matches("::ffff:127.0.0.9", 80));
        assert!(!NoProxy::parse("").matches("example.com", 80));
    }
}
