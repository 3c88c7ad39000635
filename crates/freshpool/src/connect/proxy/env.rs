//! The proxy environment variables (curl's precedence rules) and
//! `NO_PROXY` matching.

use std::net::IpAddr;

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
}
