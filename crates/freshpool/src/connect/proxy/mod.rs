//! HTTP proxies: configuration, the environment variables (the names Go
//! and reqwest read; lower case first, as in curl), the per-origin choice, and the two ways a request goes
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
//!
//! # Files
//! - `mod.rs`: [`Proxy`], the builder's [`ProxySettings`] and the
//!   per-request [`Routes`] selection.
//! - `url.rs`: [`ProxyUrl`] parsing, display without the password, and
//!   `Proxy-Authorization`.
//! - `env.rs`: the environment variables ([`EnvProxies`]) and `NO_PROXY`
//!   matching.
//! - `tunnel.rs`: reaching the proxy, CONNECT tunnels, forward-proxy
//!   request rewriting and the proxy's errors.

mod env;
mod tunnel;
mod url;

use std::fmt;
use std::sync::Arc;

use http::Uri;

use crate::config::HttpVersion;
use crate::error::Error;
use crate::pool::key::{Scheme, SecurityContext};

use self::env::NoProxy;

pub(crate) use self::env::EnvProxies;
pub(crate) use self::tunnel::{connect_tunnel, forward_refusal, to_forward_form, unreachable};
pub(crate) use self::url::{authority, userinfo_authorization, ProxyUrl};

/// A proxy for the client to use, and which requests it applies to.
///
/// Proxy URLs have the form `[http://][user[:password]@]host[:port]`; the
/// user and password are percent-decoded and sent as `Proxy-Authorization:
/// Basic`. A missing port means 80 (as in Go and reqwest; curl alone
/// assumes 1080). Only `http://` proxies
/// are supported (an `https://` or `socks` proxy is a
/// [`Kind::Config`](crate::Kind::Config) error).
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
    http: Option<Choice>,
    https: Option<Choice>,
    no_proxy: NoProxy,
    /// The routes came from the environment: they never take `localhost`
    /// or a loopback address (`env::is_loopback_host`), as in Go. A proxy
    /// exported for the way out of a machine is not one for its own
    /// services: a serverless extension's runtime API on 127.0.0.1, a
    /// sidecar, a local test server all failed through it. An explicit
    /// [`crate::ClientBuilder::proxy`] still takes them.
    spare_loopback: bool,
}

/// The way out for one scheme's requests that do not go direct.
enum Choice {
    Via(Route),
    /// The environment names a proxy for this scheme that the client
    /// cannot use (a `socks5h://` proxy, a typo): its requests fail with
    /// this message rather than go direct past it. (A Tor user's
    /// `ALL_PROXY=socks5h://..` went direct with a warning nobody saw:
    /// their address and DNS past the proxy. curl and Go never go direct
    /// when a proxy is set.)
    Refused(Arc<str>),
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
        let (mut http_env, mut https_env) = (None, None);
        let mut spare_loopback = false;
        let mut no_proxy = match settings.no_proxy.as_deref() {
            None => None,
            Some(list) => {
                let mut bad = Vec::new();
                let parsed = NoProxy::parse_reporting(list, |e| bad.push(e.to_owned()));
                if !bad.is_empty() {
                    return Err(Error::config(format!(
                        "no_proxy: cannot read {} (a CIDR range is an address, '/', and a \
                         prefix length up to 32 for IPv4 or 128 for IPv6; a port is a number \
                         up to 65535)",
                        bad.iter()
                            .map(|e| format!("{e:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Some(parsed)
            }
        };
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
            spare_loopback = true;
            let env = env();
            // An unusable variable (a socks proxy, a typo) does not fail
            // build() (the environment must not make `Client::new()`
            // panic): its scheme's requests fail instead (`Choice::Refused`).
            // The variable for the scheme, when set, is the one that counts:
            // an unusable one does not fall back to `all_proxy`.
            let parse = |v: &Option<String>, name: &str| {
                let url = v.as_deref()?;
                Some(match ProxyUrl::parse(url) {
                    Ok(url) => Ok(Arc::new(url)),
                    Err(e) => {
                        tracing::warn!(
                            "unusable proxy environment variable {name}: {}",
                            e.message()
                        );
                        Err(Arc::<str>::from(format!(
                            "the proxy environment variable {name} cannot be used ({}), so \
                             requests it covers are not sent rather than sent direct \
                             (proxy_from_env(false) or NO_PROXY sends them direct)",
                            e.message()
                        )))
                    }
                })
            };
            let all = parse(&env.all, "all_proxy/ALL_PROXY");
            http_env = parse(&env.http, "http_proxy/HTTP_PROXY").or_else(|| all.clone());
            https_env = parse(&env.https, "https_proxy/HTTPS_PROXY").or(all);
            if no_proxy.is_none() {
                no_proxy = env.no_proxy.as_deref().map(|list| {
                    NoProxy::parse_reporting(list, |entry| {
                        tracing::warn!(
                            "no_proxy/NO_PROXY: ignoring {entry:?}, which it cannot read"
                        );
                    })
                });
            }
        }
        let route = |explicit: Option<Arc<ProxyUrl>>,
                     from_env: Option<Result<Arc<ProxyUrl>, Arc<str>>>,
                     forward: bool| {
            match explicit.map(Ok).or(from_env)? {
                Ok(url) => Some(Choice::Via(Route {
                    security: intern(Some(url.key())),
                    url,
                    forward,
                })),
                Err(why) => Some(Choice::Refused(why)),
            }
        };
        Ok(Routes {
            http: route(http, http_env, forwards(Scheme::Http, version)),
            https: route(https, https_env, false),
            no_proxy: no_proxy.unwrap_or_default(),
            spare_loopback,
        })
    }

    /// The route for this request, `None` to go direct; an error for a
    /// scheme whose proxy variable is unusable. (Invalid URIs go direct
    /// here and fail at the key check.)
    pub(crate) fn select(&self, uri: &Uri) -> Result<Option<&Route>, Error> {
        // Most clients have no proxy: skip reading the URI's scheme (two
        // string compares on every request and checkout).
        if self.http.is_none() && self.https.is_none() {
            return Ok(None);
        }
        let (choice, default_port) = match uri.scheme_str() {
            Some("http") => (self.http.as_ref(), 80),
            Some("https") => (self.https.as_ref(), 443),
            _ => (None, 0),
        };
        let (Some(choice), Some(host)) = (choice, uri.host()) else {
            return Ok(None);
        };
        if (self.spare_loopback && env::is_loopback_host(host))
            || self
                .no_proxy
                .matches(host, uri.port_u16().unwrap_or(default_port))
        {
            return Ok(None);
        }
        match choice {
            Choice::Via(route) => Ok(Some(route)),
            Choice::Refused(why) => Err(Error::new(
                crate::Kind::Proxy,
                format!(
                    "{} was not sent: {why}",
                    crate::client::shown_url(&uri.to_string())
                ),
            )),
        }
    }
}

/// Whether a proxied origin of this scheme is reached by forwarding
/// (absolute-form requests to the proxy) rather than a CONNECT tunnel.
/// HTTPS always tunnels; cleartext HTTP/2 (prior knowledge) cannot be
/// forwarded by an HTTP/1 proxy, so it tunnels too.
pub(crate) fn forwards(scheme: Scheme, version: HttpVersion) -> bool {
    scheme == Scheme::Http && version != HttpVersion::Http2Only
}

#[cfg(test)]
mod tests {
    use super::env::test_env as env;
    use super::*;

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
                .unwrap()
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
        assert!(off
            .select(&"http://x.test/".parse().unwrap())
            .unwrap()
            .is_none());
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
            .unwrap()
            .is_none());
        let via = explicit
            .select(&"https://skip.test/".parse().unwrap())
            .unwrap()
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
            a.select(&uri).unwrap().unwrap().security.id,
            b.select(&uri).unwrap().unwrap().security.id
        );
    }

    /// The environment's proxies never take this machine's hosts (as in
    /// Go); an explicit proxy does, and other hosts still go through.
    #[test]
    fn environment_proxies_spare_loopback_hosts() {
        let e = env(&[("ALL_PROXY", "http://a:2"), ("https_proxy", "socks5://s:1")]);
        let r = routes(ProxySettings::default(), e.clone(), HttpVersion::Auto);
        for url in [
            "http://127.0.0.1:8080/",
            "http://127.9.9.9/",
            "http://localhost/",
            "http://LOCALHOST.:81/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            // Not refused for the unusable https variable either.
            "https://localhost/",
        ] {
            assert!(r.select(&url.parse().unwrap()).unwrap().is_none(), "{url}");
        }
        for url in [
            "http://localhost.example/",
            "http://a.localhost/",
            "http://128.0.0.1/",
            "http://[::2]/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            assert!(r.select(&url.parse().unwrap()).unwrap().is_some(), "{url}");
        }
        let explicit = routes(
            ProxySettings {
                explicit: vec![Proxy::all("http://e:3").unwrap()],
                ..ProxySettings::default()
            },
            e,
            HttpVersion::Auto,
        );
        let via = explicit
            .select(&"http://127.0.0.1:8080/".parse().unwrap())
            .unwrap()
            .expect("an explicit proxy takes loopback hosts");
        assert_eq!(via.url.authority(), "e:3");
    }

    /// A proxy variable the client cannot use fails its scheme's requests
    /// (not direct, not `all_proxy` instead); NO_PROXY hosts still go
    /// direct, and other schemes keep their proxy.
    #[test]
    fn an_unusable_proxy_variable_refuses_its_requests() {
        let e = env(&[
            ("ALL_PROXY", "socks5h://u:hunter2@127.0.0.1:9050"),
            ("http_proxy", "http://h:1"),
            ("NO_PROXY", "direct.test"),
        ]);
        let r = routes(ProxySettings::default(), e, HttpVersion::Auto);
        let err = r
            .select(&"https://x.test/p".parse().unwrap())
            .err()
            .expect("refused");
        assert_eq!(err.kind(), crate::Kind::Proxy);
        let message = err.to_string();
        assert!(
            message.contains("https://x.test/p was not sent")
                && message.contains("all_proxy/ALL_PROXY")
                && message.contains("socks5h"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        // Nor a pre-signed URL's signature.
        let err = r
            .select(
                &"https://x.test/k?X-Amz-Signature=s3cret&a=1"
                    .parse()
                    .unwrap(),
            )
            .err()
            .expect("refused");
        let message = err.to_string();
        assert!(
            message.contains("https://x.test/k?X-Amz-Signature=REDACTED&a=1 was not sent"),
            "{message}"
        );
        let via = r.select(&"http://x.test/".parse().unwrap()).unwrap();
        assert_eq!(via.unwrap().url.authority(), "h:1");
        assert!(r
            .select(&"https://direct.test/".parse().unwrap())
            .unwrap()
            .is_none());
        // The scheme's own variable counts: unusable, it does not fall
        // back to a usable all_proxy.
        let e = env(&[("https_proxy", "https://p:1"), ("all_proxy", "http://a:2")]);
        let r = routes(ProxySettings::default(), e, HttpVersion::Auto);
        assert!(r.select(&"https://x.test/".parse().unwrap()).is_err());
    }

    /// An explicit NO_PROXY entry that cannot be read fails the build,
    /// naming it (it was dropped, and its hosts went through the proxy).
    #[test]
    fn an_unreadable_explicit_no_proxy_entry_is_a_config_error() {
        for bad in [
            "10.0.0/8",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.0/x",
            // A port that is no port read as "any port".
            "internal.example:99999",
            "[::1]:abc",
            "host:",
            "host:+80",
        ] {
            let err = Routes::build(
                &ProxySettings {
                    no_proxy: Some(format!("localhost, {bad}")),
                    ..ProxySettings::default()
                },
                EnvProxies::default,
                HttpVersion::Auto,
                |_| unreachable!("no proxy"),
            )
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.is_config(), "{err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn cleartext_http2_tunnels_instead_of_forwarding() {
        assert!(forwards(Scheme::Http, HttpVersion::Auto));
        assert!(!forwards(Scheme::Http, HttpVersion::Http2Only));
        assert!(!forwards(Scheme::Https, HttpVersion::Http1Only));
    }
}
