//! Proxy URLs: parsing (curl's `[http://][user[:password]@]host[:port]`),
//! the pool-key and display forms, and `Proxy-Authorization: Basic`.

use std::fmt;

use http::header::HeaderValue;

use crate::error::Error;

/// A parsed proxy URL (always `http://`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProxyUrl {
    /// Lower-case, IPv6 without brackets.
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: Option<String>,
    password: Option<String>,
}

/// The port of an `http://` proxy given without one: HTTP's, as in Go,
/// reqwest, .NET, Python and wget. (curl alone assumes 1080.)
const DEFAULT_PORT: u16 = 80;

impl ProxyUrl {
    pub(crate) fn parse(url: &str) -> Result<ProxyUrl, Error> {
        let bad = |why: &str| {
            Error::config(format!(
                "invalid proxy URL {}: {why}",
                crate::error::redact_userinfo(url)
            ))
        };
        let url = url.trim();
        let rest = match crate::error::split_scheme(url) {
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
        // An '@' past the cut: a '/', '?' or '#' in the user name or
        // password, which ends the authority. Parsed as written, what
        // came before it (the user name, and a port-like start of the
        // password) became the proxy's host and port.
        if rest[authority.len()..].contains('@') {
            return Err(bad(
                "a '/', '?' or '#' in the proxy's user name or password must be \
                 percent-encoded (%2F, %3F, %23)",
            ));
        }
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
                // (Broken percent-encoding goes as written, as in a
                // request URL's userinfo: refused, it dropped the proxy
                // variable and the traffic went direct.)
                (
                    Some(decoded_or_as_written(user)),
                    pass.map(decoded_or_as_written),
                )
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
                // An IPv6 address without brackets: "::1" was read as host
                // "::" and port 1, silently.
                Some((h, _)) if h.contains(':') => {
                    return Err(bad(
                        "an IPv6 address needs brackets, as in http://[::1]:3128",
                    ))
                }
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
        basic(user, self.password.as_deref().unwrap_or(""))
    }
}

/// `Basic base64(user:password)`, marked sensitive (kept out of hyper's
/// HPACK table and debug output).
fn basic(user: &str, password: &str) -> Option<HeaderValue> {
    let pair = format!("{user}:{password}");
    let mut value = HeaderValue::from_str(&format!("Basic {}", base64(pair.as_bytes()))).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The `Authorization: Basic` value for a URL's percent-encoded userinfo
/// (`user[:password]`), as curl, Go's net/http and reqwest send it. A part
/// whose percent-encoding is broken (or not UTF-8) goes as written, as curl
/// does, rather than the credentials silently disappearing.
pub(crate) fn userinfo_authorization(userinfo: &str) -> Option<HeaderValue> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    basic(
        &decoded_or_as_written(user),
        &decoded_or_as_written(password),
    )
}

/// A percent-encoded userinfo part, decoded (a broken escape, `%zz` or a
/// lone `%`, kept as written); as written if it decodes to no UTF-8, as
/// curl sends it.
fn decoded_or_as_written(part: &str) -> String {
    percent_decode(part).unwrap_or_else(|| part.to_owned())
}

/// The proxy as messages show it: `http://***@host:port` when it has
/// credentials. Not the user name either: services put the API key there
/// (`http://<key>:@proxy`), as git-style URLs put a token.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http://")?;
        if self.user.is_some() {
            f.write_str("***@")?;
        }
        f.write_str(&self.authority())
    }
}

impl ProxyUrl {
    /// Tells apart, in stats, partitions that differ only in their proxy
    /// credentials, without showing them: a hash of the credentials under
    /// a key drawn at random once per process (so it cannot be looked up
    /// or compared across processes). `None` without credentials.
    pub(crate) fn credentials_tag(&self) -> Option<String> {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let user = self.user.as_ref()?;
        let hash = KEY
            .get_or_init(Default::default)
            .hash_one((user, &self.password));
        Some(format!("credentials {:04x}", hash & 0xffff))
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Each `%HH` (two hex digits) decoded; a `%` without them kept as
/// written, as curl does (one bad escape left the valid ones encoded, so
/// `p%40ss%zz` went out as written: an unexplained 407). `None` if the
/// result is no UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
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

pub(super) fn base64(input: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials_ports_and_ipv6() {
        let p = ProxyUrl::parse("http://al%40ice:p%3Ass@Proxy.Example:3128/").unwrap();
        assert_eq!(p.user.as_deref(), Some("al@ice"));
        assert_eq!(p.password.as_deref(), Some("p:ss"));
        assert_eq!(p.authority(), "proxy.example:3128");
        assert_eq!(p.to_string(), "http://***@proxy.example:3128");
        assert_eq!(ProxyUrl::parse(&p.key()).unwrap(), p);
        let p = ProxyUrl::parse("[::1]").unwrap();
        assert_eq!(p.authority(), "[::1]:80");
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
            // An unencoded '/', '?' or '#' in the password breaks the
            // parse; the message must still hide it.
            "http://u:hun/ter2@p:3128",
            "http://u:hun?ter2@p:3128",
            "http://u:hun#ter2@p:3128",
            // ...also where what comes before it reads as a host and a
            // port (none, or up to 5 digits): the user name became the
            // proxy's host ("alice:80"), shown and sent to DNS.
            "http://alice:/hunter2@127.0.0.1:3128",
            "http://alice:#hunter2@127.0.0.1:3128",
            "http://alice:1234?hunter2@127.0.0.1:3128",
            "http://alice/hunter2@127.0.0.1:3128",
            // IPv6 without brackets: was read as host "::" and port 1.
            "http://u:hunter2@::1",
            "http://u:hunter2@2001:db8::5:3128",
            // No scheme, a "://" in the password: "u:hun" was read as
            // the scheme, and the message showed the rest.
            "u:hun://ter2@p:notaport",
        ] {
            let err = ProxyUrl::parse(bad).unwrap_err();
            assert!(err.is_config(), "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!err.to_string().contains("ter2"), "{err}");
        }
    }

    /// Without a scheme, a password holding "://" is a password: not
    /// parsed (an unencoded '/'), and not shown. It read "alice:s3" as
    /// the scheme ("unsupported proxy scheme") and showed the rest.
    #[test]
    fn a_scheme_is_a_scheme_token_before_its_colon_slashes() {
        let err = ProxyUrl::parse("alice:s3://secret@proxy.corp:3128").unwrap_err();
        assert!(err.is_config(), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(!err.to_string().contains("scheme"), "{err}");
        let p = ProxyUrl::parse("alice:s3%3A%2F%2Fx@proxy.corp:3128").unwrap();
        assert_eq!(p.password.as_deref(), Some("s3://x"));
        assert_eq!(
            crate::error::redact_userinfo("alice:s3://x@proxy.corp:3128"),
            "***@proxy.corp:3128"
        );
        assert_eq!(
            crate::error::redact_userinfo("http://alice:s3://x@proxy.corp:3128"),
            "http://***@proxy.corp:3128"
        );
    }

    /// Valid escapes are decoded around a broken one, which stays as
    /// written; a sign is no hex digit (`%+5` was read as 0x05).
    #[test]
    fn each_valid_escape_is_decoded_and_a_broken_one_kept() {
        assert_eq!(percent_decode("p%40ss%zz").as_deref(), Some("p@ss%zz"));
        assert_eq!(percent_decode("a%+5b").as_deref(), Some("a%+5b"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%4").as_deref(), Some("%4"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("%ff"), None);
        let p = ProxyUrl::parse("http://u:p%40ss%zz@127.0.0.1:3128").unwrap();
        assert_eq!(
            p.authorization().unwrap().to_str().unwrap(),
            format!("Basic {}", base64(b"u:p@ss%zz"))
        );
    }

    #[test]
    fn userinfo_gives_a_sensitive_basic_value() {
        let v = userinfo_authorization("al%40ice:p%3Ass").unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            format!("Basic {}", base64(b"al@ice:p:ss"))
        );
        assert!(v.is_sensitive());
        let v = userinfo_authorization("bob").unwrap();
        assert_eq!(v.to_str().unwrap(), format!("Basic {}", base64(b"bob:")));
        let v = userinfo_authorization("bad%zz").unwrap();
        assert_eq!(v.to_str().unwrap(), format!("Basic {}", base64(b"bad%zz:")));
    }

    /// A proxy password with a literal '%' was refused as "bad
    /// percent-encoding": the proxy variable was dropped with a warning
    /// and requests went direct, past the proxy they were meant to use.
    #[test]
    fn a_literal_percent_in_proxy_credentials_goes_as_written() {
        for (url, user, password) in [
            ("http://alice:50%off@proxy.corp:3128", "alice", "50%off"),
            ("http://al%zzice:x%E9@proxy.corp:3128", "al%zzice", "x%E9"),
            ("http://a:100%@proxy.corp:3128", "a", "100%"),
        ] {
            let p = ProxyUrl::parse(url).unwrap();
            assert_eq!(p.user.as_deref(), Some(user), "{url}");
            assert_eq!(p.password.as_deref(), Some(password), "{url}");
            assert_eq!(
                p.authorization().unwrap().to_str().unwrap(),
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            );
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
}
