//! Proxies: HTTP forwarding and CONNECT tunnels through freshpool-testkit's
//! TestProxy on 127.0.0.1 (which counts connections and tunnels and checks
//! credentials). Environment variables are tested in `proxy_env.rs`, their
//! own binary, because the environment is process-global.

use std::time::Duration;

use freshpool::{Client, Kind, Proxy};
use freshpool_testkit::proxy::TestProxy;
use freshpool_testkit::{Protocol, ServerConfig, TestCa, TestServer};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

async fn tls_server(ca: &TestCa) -> TestServer {
    TestServer::start(ServerConfig {
        protocol: Protocol::Auto,
        tls: Some(ServerConfig::tls_config(ca, &[b"h2", b"http/1.1"])),
        ..ServerConfig::default()
    })
    .await
}

fn via(proxy_url: &str) -> freshpool::ClientBuilder {
    Client::builder().proxy(Proxy::all(proxy_url).unwrap())
}

async fn body(client: &Client, url: &str) -> Result<String, freshpool::Error> {
    client.get(url).await?.into_body().text().await
}

mod common;
use common::closed_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_goes_through_a_forward_proxy_with_and_without_auth() {
    timeout(LIMIT, async {
        let server = TestServer::http1().await;
        for auth in [false, true] {
            let (proxy, url) = if auth {
                let p = TestProxy::with_users(&[("alice", "s3cret")]).await;
                let url = p.url_with("alice", "s3cret");
                (p, url)
            } else {
                let p = TestProxy::start().await;
                let url = p.url();
                (p, url)
            };
            let client = via(&url).build().unwrap();
            for _ in 0..3 {
                assert_eq!(body(&client, &server.url("/")).await.unwrap(), "ok");
            }
            let echoed =
                common::text_of(client.post(&server.url("/echo"), "through the proxy")).await;
            assert_eq!(echoed, "through the proxy");
            let stats = proxy.stats();
            assert_eq!(stats.forwarded(), 4, "auth {auth}");
            assert_eq!(stats.tunnels(), 0, "plain http is forwarded, not tunnelled");
            assert_eq!(stats.connections(), 1, "the proxy connection is reused");
            assert_eq!(stats.auth_failures(), 0);
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_goes_through_a_connect_tunnel_with_and_without_auth() {
    timeout(LIMIT, async {
        let ca = TestCa::new();
        let server = tls_server(&ca).await;
        for auth in [false, true] {
            let (proxy, url) = if auth {
                let p = TestProxy::with_users(&[("bob", "pa ss")]).await;
                // The space must be percent-encoded in the URL; freshpool
                // decodes it for the Basic credentials.
                let url = format!("http://bob:pa%20ss@{}", p.addr());
                (p, url)
            } else {
                let p = TestProxy::start().await;
                let url = p.url();
                (p, url)
            };
            let client = via(&url)
                .add_root_certificate(ca.ca_cert_der())
                .build()
                .unwrap();
            for _ in 0..3 {
                assert_eq!(body(&client, &server.url("/")).await.unwrap(), "ok");
            }
            let stats = proxy.stats();
            assert_eq!(stats.tunnels(), 1, "auth {auth}: one tunnel, reused");
            assert_eq!(
                stats.tunnel_targets(),
                vec![format!("localhost:{}", server.addr().port())],
                "the proxy is asked for the origin by name"
            );
            assert_eq!(stats.forwarded(), 0);
            assert_eq!(stats.auth_failures(), 0);
            assert_eq!(
                client.stats().origins[0].protocol,
                "HTTP/2",
                "ALPN inside the tunnel"
            );
        }
        assert_eq!(server.stats().tls_handshakes(), 2);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_proxy_auth_error_naming_the_proxy_only() {
    timeout(LIMIT, async {
        let ca = TestCa::new();
        let https = tls_server(&ca).await;
        let http = TestServer::http1().await;
        let proxy = TestProxy::with_users(&[("alice", "right")]).await;
        for creds in [Some("alice:hunter2"), None] {
            let url = match creds {
                Some(c) => format!("http://{c}@{}", proxy.addr()),
                None => proxy.url(),
            };
            let client = via(&url)
                .add_root_certificate(ca.ca_cert_der())
                .build()
                .unwrap();
            for origin in [https.url("/"), http.url("/")] {
                let err = client.get(&origin).await.unwrap_err();
                assert_eq!(err.kind(), Kind::ProxyAuth, "{origin}: {err}");
                assert!(err.is_proxy());
                let msg = err.to_string();
                assert!(msg.contains(&proxy.addr().to_string()), "{msg}");
                assert!(!msg.contains("hunter2"), "password leaked: {msg}");
                for port in [https.addr().port(), http.addr().port()] {
                    assert!(!msg.contains(&port.to_string()), "origin named: {msg}");
                }
                assert!(msg.contains("407"), "{msg}");
            }
        }
        assert_eq!(proxy.stats().tunnels(), 0);
        assert_eq!(proxy.stats().forwarded(), 0);
        assert_eq!(https.stats().connections_accepted(), 0);
        assert_eq!(http.stats().requests(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_proxy_and_refused_connect_are_proxy_errors() {
    timeout(LIMIT, async {
        // Nobody listens where the proxy should be.
        let dead = format!("http://carol:topsecret@127.0.0.1:{}", closed_port());
        let client = via(&dead).build().unwrap();
        for origin in ["http://127.0.0.1:9/x", "https://localhost:9/x"] {
            let err = client.get(origin).await.unwrap_err();
            assert_eq!(err.kind(), Kind::Proxy, "{err}");
            let msg = err.to_string();
            assert!(msg.contains("proxy http://***@127.0.0.1:"), "{msg}");
            // Nor the user name: services put an API key there.
            assert!(
                !msg.contains("topsecret") && !msg.contains("carol"),
                "{msg}"
            );
            assert!(!msg.contains(":9/") && !msg.contains("localhost"), "{msg}");
        }
        // The proxy answers CONNECT with 502: the origin is down.
        let proxy = TestProxy::start().await;
        let client = via(&proxy.url()).build().unwrap();
        let origin_port = closed_port();
        let err = client
            .get(&format!("https://localhost:{origin_port}/"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::Proxy, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("502"), "{msg}");
        assert!(msg.contains(&proxy.addr().to_string()), "{msg}");
        assert!(!msg.contains(&origin_port.to_string()), "{msg}");
        assert_eq!(proxy.stats().upstream_failures(), 1);
    })
    .await
    .unwrap();
}

/// A proxy that accepts the connection but never answers CONNECT: the
/// error is a timeout (`is_timeout`, `is_connect`, as `Kind::ConnectTimeout`
/// documents), naming the proxy. It was `Kind::Proxy`, which code that
/// retries on timeouts never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_never_answers_connect_is_a_connect_timeout() {
    timeout(LIMIT, async {
        let proxy = TestProxy::start().await;
        let silent = freshpool_testkit::ChaosProxy::start(proxy.addr()).await;
        silent.set_blackhole(true);
        let client = via(&format!("http://{}", silent.addr()))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let err = client.get("https://localhost:1/").await.unwrap_err();
        assert_eq!(err.kind(), Kind::ConnectTimeout, "{err}");
        assert!(err.is_timeout() && err.is_connect(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&silent.addr().to_string()), "{msg}");
        assert!(msg.contains("CONNECT"), "{msg}");
    })
    .await
    .unwrap();
}

/// Two users' requests must never share a proxy connection or tunnel, also
/// when their clients share one pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_credentials_never_share_a_connection() {
    timeout(LIMIT, async {
        let ca = TestCa::new();
        let https = tls_server(&ca).await;
        let http = TestServer::http1().await;
        for shared in [false, true] {
            let proxy = TestProxy::with_users(&[("a", "pw-a"), ("b", "pw-b")]).await;
            let client_a = via(&proxy.url_with("a", "pw-a"))
                .add_root_certificate(ca.ca_cert_der())
                .build()
                .unwrap();
            let mut b = via(&proxy.url_with("b", "pw-b")).add_root_certificate(ca.ca_cert_der());
            if shared {
                b = b.share_pool_with(&client_a);
            }
            let client_b = b.build().unwrap();
            for _ in 0..3 {
                for client in [&client_a, &client_b] {
                    assert_eq!(body(client, &https.url("/")).await.unwrap(), "ok");
                    assert_eq!(body(client, &http.url("/")).await.unwrap(), "ok");
                }
            }
            let stats = proxy.stats();
            assert_eq!(
                stats.tunnels(),
                2,
                "shared pool {shared}: one tunnel per user"
            );
            assert_eq!(
                stats.connections(),
                4,
                "shared pool {shared}: a tunnel and a forwarding connection per user"
            );
            let users = stats.users_per_connection();
            assert_eq!(users.len(), 4);
            for set in &users {
                assert_eq!(set.len(), 1, "a connection carried two users: {users:?}");
            }
            assert_eq!(stats.auth_failures(), 0);
            if shared {
                assert_eq!(
                    client_a.stats().origins.len(),
                    4,
                    "two origins x two proxy users in one pool"
                );
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_hosts_go_direct_and_get_their_own_pool_key() {
    timeout(LIMIT, async {
        let server = TestServer::http1().await;
        let proxy = TestProxy::start().await;
        // Both names reach the same server; only `localhost` on the
        // server's port is exempt.
        let port = server.addr().port();
        let client = via(&proxy.url())
            .no_proxy(format!("localhost:{port}, .example.invalid"))
            .build()
            .unwrap();
        let direct = format!("http://localhost:{port}/");
        let proxied = format!("http://127.0.0.1:{port}/");
        for _ in 0..2 {
            assert_eq!(body(&client, &direct).await.unwrap(), "ok");
            assert_eq!(body(&client, &proxied).await.unwrap(), "ok");
        }
        assert_eq!(proxy.stats().forwarded(), 2);
        assert_eq!(proxy.stats().connections(), 1);
        // An entry with another port exempts only that port (as in Go).
        let other_port = via(&proxy.url())
            .no_proxy(format!("localhost:{}", port.wrapping_add(1)))
            .build()
            .unwrap();
        assert_eq!(body(&other_port, &direct).await.unwrap(), "ok");
        assert_eq!(proxy.stats().forwarded(), 3);
        // `*` exempts everything.
        let all_direct = via(&proxy.url()).no_proxy("*").build().unwrap();
        assert_eq!(body(&all_direct, &proxied).await.unwrap(), "ok");
        assert_eq!(proxy.stats().forwarded(), 3);
        // A CIDR range.
        let cidr = via(&proxy.url()).no_proxy("127.0.0.0/8").build().unwrap();
        assert_eq!(body(&cidr, &proxied).await.unwrap(), "ok");
        assert_eq!(proxy.stats().forwarded(), 3);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_only_cleartext_is_tunnelled() {
    timeout(LIMIT, async {
        let server = TestServer::start(ServerConfig {
            protocol: Protocol::Http2,
            ..ServerConfig::default()
        })
        .await;
        let proxy = TestProxy::start().await;
        let client = via(&proxy.url())
            .http_version(freshpool::HttpVersion::Http2Only)
            .build()
            .unwrap();
        for _ in 0..3 {
            assert_eq!(body(&client, &server.url("/")).await.unwrap(), "ok");
        }
        assert_eq!(proxy.stats().tunnels(), 1);
        assert_eq!(proxy.stats().forwarded(), 0);
    })
    .await
    .unwrap();
}

#[test]
fn invalid_proxy_urls_are_config_errors() {
    for bad in [
        "https://127.0.0.1:3128",
        "socks5://127.0.0.1:1080",
        "http://:80",
        "http://h:99999",
    ] {
        let err = Proxy::all(bad).unwrap_err();
        assert_eq!(err.kind(), Kind::Config, "{bad}");
    }
    let p = Proxy::all("http://u:very-secret@127.0.0.1:3128").unwrap();
    assert!(!format!("{p} {p:?}").contains("very-secret"));
}

/// Answers every name with one address and writes down each name asked.
struct Counting {
    addr: std::net::SocketAddr,
    names: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl freshpool::Resolve for Counting {
    fn resolve(&self, host: &str, _port: u16) -> freshpool::ResolveFuture {
        self.names.lock().unwrap().push(host.to_owned());
        let addr = self.addr;
        Box::pin(async move { Ok(vec![addr]) })
    }
}

/// Through a proxy, the target's addresses are the proxy's business: the
/// pool never asks the client's resolver about the target host (a lookup
/// there would go around a remote-DNS proxy), even when a shared cache
/// holds an answer for it that keeps running out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_origin_does_not_look_up_its_target() {
    timeout(LIMIT, async {
        let server = TestServer::http1().await;
        let proxy = TestProxy::start().await;
        let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let cached = freshpool::CachingResolver::new(Counting {
            addr: server.addr(),
            names: names.clone(),
        })
        .ttl(Duration::from_millis(50));
        // The shared cache learned the target host (for a direct client).
        let port = server.addr().port();
        freshpool::Resolve::resolve(&cached, "localhost", port)
            .await
            .unwrap();
        let client = via(&proxy.url()).resolver(cached.clone()).build().unwrap();
        let url = format!("http://localhost:{port}/");
        for _ in 0..4 {
            // Past the answer's 50 ms and the pool's 50 ms between checks.
            tokio::time::sleep(Duration::from_millis(120)).await;
            assert_eq!(body(&client, &url).await.unwrap(), "ok");
        }
        let asked = names.lock().unwrap().clone();
        let target = asked.iter().filter(|n| *n == "localhost").count();
        assert_eq!(target, 1, "the target was looked up: {asked:?}");
    })
    .await
    .unwrap();
}

/// Answers every name with the current list (switchable).
#[derive(Clone)]
struct Switch(std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>);

impl freshpool::Resolve for Switch {
    fn resolve(&self, _host: &str, _port: u16) -> freshpool::ResolveFuture {
        let addrs = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
}

/// A proxy reached by name follows that name's DNS, as a direct host does:
/// when the caching resolver reports that the proxy's name moved (a proxy
/// fleet drained), idle connections to the old proxy close and new ones go
/// to the new. (They kept going to the old proxy for good: the pool looked
/// only at the target's DNS, which is the proxy's business.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_through_a_proxy_follow_the_proxys_dns() {
    timeout(LIMIT, async {
        let server = TestServer::http1().await;
        let (old, new) = (TestProxy::start().await, TestProxy::start().await);
        let switch = Switch(std::sync::Arc::new(std::sync::Mutex::new(vec![old.addr()])));
        let ttl = Duration::from_millis(300);
        let client = via("http://proxy.test:3128")
            .resolver(
                freshpool::CachingResolver::new(switch.clone())
                    .ttl(ttl)
                    .retire_after(Duration::ZERO),
            )
            .build()
            .unwrap();
        assert_eq!(body(&client, &server.url("/")).await.unwrap(), "ok");
        *switch.0.lock().unwrap() = vec![new.addr()];
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        // The next checks see the change (after one background lookup).
        for _ in 0..20 {
            assert_eq!(body(&client, &server.url("/")).await.unwrap(), "ok");
            if new.stats().connections() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(new.stats().connections(), 1, "{}", client.stats());
        assert_eq!(old.stats().connections(), 1);
        let stats = client.stats();
        assert_eq!(
            stats.closed_for(freshpool::CloseReason::Lifetime),
            1,
            "{stats}"
        );
    })
    .await
    .unwrap();
}
