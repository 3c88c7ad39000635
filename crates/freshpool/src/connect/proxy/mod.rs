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
pub(crate) use self::tunnel::{
    connect_tunnel, forward_refusal, literal_addr, to_forward_form, unreachable,
};
pub(crate) use self::url::{authority, userinfo_authorization, ProxyUrl};

/// A proxy for the client to use, and which requests it applies to.
///
/// Proxy URLs have the form `[http://][user[:password]@]host[:port]`; the
/// user and password are percent-decoded and sent as `Proxy-Authorization:
/// Basic`. As in curl, a missing port means 1080. Only `http://` proxies
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
        // Most clients have no proxy: skip reading the URI's scheme (two
        // string compares on every request and checkout).
        if self.http.is_none() && self.https.is_none() {
            return None;
        }
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

    #[test]
    fn cleartext_http2_tunnels_instead_of_forwarding() {
        assert!(forwards(Scheme::Http, HttpVersion::Auto));
        assert!(!forwards(Scheme::Http, HttpVersion::Http2Only));
        assert!(!forwards(Scheme::Https, HttpVersion::Http1Only));
    }
}
