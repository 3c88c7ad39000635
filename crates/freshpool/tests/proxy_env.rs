//! Proxy environment variables, with Go's and reqwest's precedence rules. The
//! environment is process-global, so this binary holds one test that walks
//! through every case in order (no other test can race it).

use std::time::Duration;

use freshpool::Client;
use freshpool_testkit::proxy::TestProxy;
use freshpool_testkit::{ServerConfig, TestCa, TestServer};
use tokio::time::timeout;

mod common;

const VARS: [&str; 9] = [
    "REQUEST_METHOD",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

fn set_env(vars: &[(&str, &str)]) {
    for name in VARS {
        std::env::remove_var(name);
    }
    for (name, value) in vars {
        std::env::set_var(name, value);
    }
}

async fn get(client: &Client, url: &str) {
    assert_eq!(common::text(client, url).await, "ok", "{url}");
}

/// The name the test's origins are reached under: not a loopback one, so
/// the environment's proxies take it (they never take loopback hosts). The
/// proxy takes it for `127.0.0.1`; so does the clients' resolver, for the
/// requests that go direct.
const ORIGIN: &str = "origin.test";

/// Resolves every name to `127.0.0.1`.
struct ToLoopback;

impl freshpool::Resolve for ToLoopback {
    fn resolve(&self, _host: &str, port: u16) -> freshpool::ResolveFuture {
        Box::pin(async move { Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))]) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_follow_go_and_reqwest_rules() {
    timeout(Duration::from_secs(30), async {
        let ca = TestCa::new();
        let http = TestServer::http1().await;
        let https = TestServer::start(ServerConfig {
            tls: Some(ServerConfig::tls_config_for(
                &ca,
                &[ORIGIN, "localhost", "127.0.0.1"],
                &[b"http/1.1"],
            )),
            ..ServerConfig::default()
        })
        .await;
        let proxy = TestProxy::with_users(&[("env", "pw")]).await;
        proxy.loopback_name(ORIGIN);
        let p = proxy.url_with("env", "pw");
        let stats = proxy.stats();
        let builder = || {
            Client::builder()
                .add_root_certificate(ca.ca_cert_der())
                .resolver(ToLoopback)
        };
        let client = || builder().build().unwrap();
        let (http_port, https_port) = (http.addr().port(), https.addr().port());
        let http_url = format!("http://{ORIGIN}:{http_port}/");
        let https_url = format!("https://{ORIGIN}:{https_port}/");

        // Upper-case HTTP_PROXY is ignored in a CGI script (httpoxy: a
        // request's `Proxy:` header sets it there).
        set_env(&[("HTTP_PROXY", &p), ("REQUEST_METHOD", "GET")]);
        get(&client(), &http_url).await;
        assert_eq!(
            stats.connections(),
            0,
            "HTTP_PROXY must be ignored under CGI"
        );

        // Elsewhere it is read, as in Go and reqwest (Docker and Kubernetes
        // often export only upper-case names): forwarded, with credentials.
        set_env(&[("HTTP_PROXY", &p)]);
        let c = client();
        get(&c, &http_url).await;
        get(&c, &https_url).await; // no https proxy set: direct
        assert_eq!((stats.forwarded(), stats.tunnels()), (1, 0));

        // HTTPS_PROXY (upper case is fine here) tunnels https only.
        set_env(&[("HTTPS_PROXY", &p)]);
        let c = client();
        get(&c, &https_url).await;
        get(&c, &http_url).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (1, 1));

        // Lower case wins over upper case.
        set_env(&[("https_proxy", &p), ("HTTPS_PROXY", "http://127.0.0.1:1")]);
        get(&client(), &https_url).await;
        assert_eq!(stats.tunnels(), 2);

        // ALL_PROXY is the fallback for both schemes.
        set_env(&[("ALL_PROXY", &p)]);
        let c = client();
        get(&c, &http_url).await;
        get(&c, &https_url).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (2, 3));

        // Loopback hosts never go through the environment's proxy, as in
        // Go: `localhost` and 127.0.0.1 go direct, NO_PROXY or not. (They
        // went to it: a serverless extension's runtime API on 127.0.0.1,
        // or a sidecar, failed behind a proxy exported for the way out.)
        get(&c, &http.url("/")).await;
        get(&c, &https.url("/")).await;
        get(&c, &format!("http://localhost:{http_port}/")).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (2, 3));

        // NO_PROXY exceptions go direct: the https port is exempt while the
        // http one still uses the proxy, from the same client (an entry
        // with a port matches that port only).
        set_env(&[
            ("ALL_PROXY", &p),
            (
                "NO_PROXY",
                &format!("example.invalid, {ORIGIN}:{https_port}"),
            ),
        ]);
        let c = client();
        get(&c, &https_url).await;
        get(&c, &http_url).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (3, 3));
        // no_proxy (lower case) wins over NO_PROXY.
        set_env(&[
            ("ALL_PROXY", &p),
            ("no_proxy", &format!("{ORIGIN}:{http_port}")),
            ("NO_PROXY", &format!("{ORIGIN}:{https_port}")),
        ]);
        let c = client();
        get(&c, &https_url).await;
        get(&c, &http_url).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (3, 4));

        // The builder overrides the environment.
        set_env(&[("ALL_PROXY", &p)]);
        let direct = builder().proxy_from_env(false).build().unwrap();
        get(&direct, &http_url).await;
        get(&direct, &https_url).await;
        let exempt = builder().no_proxy("*").build().unwrap();
        get(&exempt, &http_url).await;
        get(&exempt, &https_url).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (3, 4));
        // An explicit proxy takes loopback hosts too: it was asked for.
        let explicit = builder()
            .proxy(freshpool::Proxy::all(&p).unwrap())
            .build()
            .unwrap();
        get(&explicit, &http.url("/")).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (4, 4));

        // An unusable variable (socks) does not fail the build, nor send
        // that scheme's requests direct past it: they fail, saying why
        // (they went direct before). The usable one still applies.
        let served = https.stats().requests();
        set_env(&[("https_proxy", "socks5://127.0.0.1:1"), ("http_proxy", &p)]);
        let c = client();
        let err = c.get(&https_url).await.unwrap_err();
        assert_eq!(err.kind(), freshpool::Kind::Proxy, "{err}");
        assert!(err.to_string().contains("https_proxy"), "{err}");
        assert_eq!(https.stats().requests(), served, "nothing went direct");
        get(&c, &http_url).await;
        assert_eq!((stats.forwarded(), stats.tunnels()), (5, 4));
        // Except to this machine: no proxy from the environment applies.
        get(&c, &https.url("/")).await;
        assert_eq!(https.stats().requests(), served + 1);
        assert_eq!(stats.auth_failures(), 0);
        set_env(&[]);
    })
    .await
    .unwrap();
}
