//! Issue 3: TLS (rustls) and HTTP/2 against real TLS servers on 127.0.0.1,
//! certificates made with rcgen (freshpool-testkit's TestCa).

use std::time::Duration;

use freshpool::{Client, HttpVersion, Kind};
use freshpool_testkit::{eventually, ChaosProxy, Protocol, ServerConfig, TestCa, TestServer};
use tokio::time::timeout;

mod common;

const LIMIT: Duration = Duration::from_secs(20);

async fn tls_server(ca: &TestCa, protocol: Protocol, alpn: &[&[u8]]) -> TestServer {
    TestServer::start(ServerConfig {
        protocol,
        tls: Some(ServerConfig::tls_config(ca, alpn)),
        ..ServerConfig::default()
    })
    .await
}

fn client_for(ca: &TestCa) -> freshpool::ClientBuilder {
    Client::builder().add_root_certificate(ca.ca_cert_der())
}

async fn body(client: &Client, url: &str) -> Result<String, freshpool::Error> {
    client.get(url).await?.into_body().text().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_get_and_post_over_http1_and_http2() {
    let ca = TestCa::new();
    for (protocol, alpn, expect) in [
        (Protocol::Http1, &[&b"http/1.1"[..]][..], "HTTP/1.1"),
        (Protocol::Http2, &[&b"h2"[..]][..], "HTTP/2"),
        (
            Protocol::Auto,
            &[&b"h2"[..], &b"http/1.1"[..]][..],
            "HTTP/2",
        ),
    ] {
        let server = tls_server(&ca, protocol.clone(), alpn).await;
        let client = client_for(&ca).build().unwrap();
        assert_eq!(body(&client, &server.url("/")).await.unwrap(), "ok");
        let resp = client
            .post(&server.url("/echo"), "hello tls")
            .await
            .unwrap();
        assert_eq!(resp.into_body().text().await.unwrap(), "hello tls");
        let stats = client.stats();
        assert_eq!(stats.origins[0].protocol, expect, "{protocol:?}");
        assert_eq!(
            server.stats().connections_accepted(),
            1,
            "{protocol:?}: reused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_errors_are_tls_errors_naming_the_host() {
    let ca = TestCa::new();
    // Self-signed: not signed by any trusted CA.
    let (chain, key) = freshpool_testkit::self_signed(&["localhost"]);
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let server = TestServer::start(ServerConfig {
        tls: Some(std::sync::Arc::new(cfg)),
        ..ServerConfig::default()
    })
    .await;
    let client = client_for(&ca).build().unwrap();
    let err = body(&client, &server.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Tls, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("localhost") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    // One request, one dial: a failed dial answers its waiter and is not
    // started again behind its back (a failing backend sees no double load).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.stats().connections_accepted(), 1);
    assert_eq!(client.stats().origins[0].connect_errors, 1);

    // Right CA, wrong name: the server's certificate is for localhost and
    // 127.0.0.1 only; ask for it under another name that resolves there.
    let good = tls_server(&ca, Protocol::Http1, &[b"http/1.1"]).await;
    let port = good.addr().port();
    let client = client_for(&ca)
        .proxy_from_env(false)
        .resolver(Fixed(good.addr()))
        .build()
        .unwrap();
    let err = body(&client, &format!("https://wrong.test:{port}/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Tls);
    assert!(err.to_string().contains("wrong.test"), "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

/// Resolves every name to one address.
struct Fixed(std::net::SocketAddr);
impl freshpool::Resolve for Fixed {
    fn resolve(&self, _host: &str, _port: u16) -> freshpool::ResolveFuture {
        let a = self.0;
        Box::pin(async move { Ok(vec![a]) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_resume_the_tls_session() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Http1, &[b"http/1.1"]).await;
    // No idle connections: every request opens a new one.
    let client = client_for(&ca).max_idle_per_host(0).build().unwrap();
    for _ in 0..3 {
        assert_eq!(body(&client, &server.url("/")).await.unwrap(), "ok");
    }
    let s = server.stats();
    assert_eq!(s.tls_handshakes(), 3);
    assert!(s.tls_resumed() >= 2, "resumed {} of 3", s.tls_resumed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_on_h2_with_50_streams_use_exactly_4_connections() {
    let ca = TestCa::new();
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        tls: Some(ServerConfig::tls_config(&ca, &[b"h2"])),
        max_concurrent_streams: Some(50),
        ..ServerConfig::default()
    })
    .await;
    let client = client_for(&ca).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = client.clone();
        // 2 s: long enough that the first connection's 50 streams are
        // still running when the other three connections' handshakes and
        // 150 streams are done, on a slow machine too.
        let url = server.url("/delay/2000");
        tasks.push(tokio::spawn(async move { body(&c, &url).await }));
    }
    for t in tasks {
        assert_eq!(timeout(LIMIT, t).await.unwrap().unwrap().unwrap(), "ok");
    }
    assert_eq!(server.stats().connections_accepted(), 4);
    // None waited for a stream: all 200 were in flight at once.
    assert_eq!(server.stats().max_in_flight(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_burst_of_nine_to_h2_opens_one_connection() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Auto, &[b"h2", b"http/1.1"]).await;
    let client = client_for(&ca).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..9 {
        let c = client.clone();
        let url = server.url("/delay/50");
        tasks.push(tokio::spawn(async move { body(&c, &url).await }));
    }
    for t in tasks {
        timeout(LIMIT, t).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(server.stats().connections_accepted(), 1);
    assert_eq!(client.stats().created(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_mid_load_fails_nothing_the_server_did_not_process() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Http2, &[b"h2"]).await;
    let client = client_for(&ca).build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let c = client.clone();
        let url = server.url("/delay/40");
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i % 100)).await;
            body(&c, &url).await
        }));
        if i == 150 {
            // The GOAWAY must find a connection: wait for one to serve.
            eventually("a request arrived", || server.stats().requests() > 0).await;
            server.goaway_all();
        }
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = timeout(LIMIT, t).await.unwrap().unwrap() {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // The drained connection takes no new request: the next one dials.
    // (Not the load's own count: its last requests may all have gone out
    // before the client read the GOAWAY.)
    body(&client, &server.url("/")).await.unwrap();
    assert!(
        server.stats().connections_accepted() >= 2,
        "a new connection after GOAWAY"
    );
}

// ---- Pool key isolation: one test per curl connection-reuse CVE class. ----
// Each shares ONE pool between two differently configured clients and
// asserts the second request gets its own connection.

async fn isolation(a: Client, b: Client, url_a: &str, url_b: &str, server: &TestServer) {
    assert_eq!(body(&a, url_a).await.unwrap(), "ok");
    let before = server.stats().connections_accepted();
    let _ = body(&b, url_b).await;
    assert_eq!(
        server.stats().connections_accepted(),
        before + 1,
        "the second client must not reuse the first one's connection"
    );
}

/// CVE-2021-22924 class: a different CA set (trust configuration) must not
/// reuse a connection verified against another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2021_22924_class_different_ca_set() {
    let (ca, other_ca) = (TestCa::new(), TestCa::new());
    let server = tls_server(&ca, Protocol::Http1, &[b"http/1.1"]).await;
    let a = client_for(&ca).build().unwrap();
    let b = client_for(&ca)
        .add_root_certificate(other_ca.ca_cert_der())
        .share_pool_with(&a)
        .build()
        .unwrap();
    isolation(a, b, &server.url("/"), &server.url("/"), &server).await;
}

/// CVE-2022-27782 class: TLS options changed (verification off vs on).
/// The dangerous direction: a verifying client must never get a connection
/// made without verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2022_27782_class_verification_setting() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Http1, &[b"http/1.1"]).await;
    let insecure = Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let secure = client_for(&ca).share_pool_with(&insecure).build().unwrap();
    isolation(
        insecure,
        secure,
        &server.url("/"),
        &server.url("/"),
        &server,
    )
    .await;
}

/// CVE-2022-22576 / CVE-2023-27535 class: credentials/identity that
/// authenticate the connection (here a TLS client certificate) differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2022_22576_class_client_certificate_identity() {
    let ca = TestCa::new();
    let server = TestServer::start(ServerConfig {
        tls: Some(ServerConfig::tls_config_with_client_auth(
            &ca,
            &[b"http/1.1"],
        )),
        ..ServerConfig::default()
    })
    .await;
    let (alice_chain, alice_key) = ca.client_cert("alice");
    let (bob_chain, bob_key) = ca.client_cert("bob");
    let alice = client_for(&ca)
        .client_certificate(alice_chain, alice_key)
        .build()
        .unwrap();
    let bob = client_for(&ca)
        .client_certificate(bob_chain, bob_key)
        .share_pool_with(&alice)
        .build()
        .unwrap();
    isolation(
        alice.clone(),
        bob,
        &server.url("/"),
        &server.url("/"),
        &server,
    )
    .await;
    // The two partitions read differently in the stats (they read the
    // same: "client certificate").
    let stats = alice.stats();
    let settings: Vec<_> = stats.origins.iter().map(|o| o.settings.clone()).collect();
    assert_eq!(settings.len(), 2, "{stats}");
    assert_ne!(settings[0], settings[1], "{stats}");
    // And no certificate at all is not served by alice's connection either.
    let anonymous = client_for(&ca).share_pool_with(&alice).build().unwrap();
    let err = body(&anonymous, &server.url("/")).await.unwrap_err();
    // (TLS 1.3: the server's refusal comes as an alert after the
    // client's handshake, a `Connect` error naming it.)
    assert!(matches!(err.kind(), Kind::Tls | Kind::Connect), "{err}");
}

/// Host confusion (SNI/Host): two names for one address are two origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_host_names_for_one_address_do_not_share() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Http1, &[b"http/1.1"]).await;
    let client = client_for(&ca).build().unwrap();
    let port = server.addr().port();
    isolation(
        client.clone(),
        client,
        &format!("https://localhost:{port}/"),
        &format!("https://127.0.0.1:{port}/"),
        &server,
    )
    .await;
}

/// ALPN / version preference is part of the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_version_preference_does_not_share() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Auto, &[b"h2", b"http/1.1"]).await;
    let auto = client_for(&ca).build().unwrap();
    let h1 = client_for(&ca)
        .http_version(HttpVersion::Http1Only)
        .share_pool_with(&auto)
        .build()
        .unwrap();
    isolation(auto, h1, &server.url("/"), &server.url("/"), &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_multiplexes_cleartext() {
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http2,
        ..ServerConfig::default()
    })
    .await;
    let client = Client::builder()
        .http_version(HttpVersion::Http2Only)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = client.clone();
        let url = server.url("/delay/50");
        tasks.push(tokio::spawn(async move { body(&c, &url).await }));
    }
    for t in tasks {
        timeout(LIMIT, t).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(server.stats().connections_accepted(), 1);
    assert_eq!(client.stats().origins[0].protocol, "HTTP/2");
}

/// Before ALPN says which protocol an HTTPS origin speaks, concurrent
/// requests ride on one dial (a bet on HTTP/2). When it failed, the others
/// got a dial each in turn (the last of N failed after N handshake
/// timeouts against a silent host), and a first fix answered them all with
/// its error, though an HTTP/1.1 origin's requests would each have had
/// their own dial. A failed dial now ends the bet: the others get dials of
/// their own, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_behind_a_failed_first_https_dial_get_dials_of_their_own() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Http1, &[b"http/1.1"]).await;
    let proxy = ChaosProxy::start(server.addr()).await;
    let client = client_for(&ca)
        .tls_handshake_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let burst = |proxy: &ChaosProxy, n: usize| -> Vec<tokio::task::JoinHandle<_>> {
        let url = format!("https://localhost:{}/", proxy.addr().port());
        (0..n)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { body(&client, &url).await })
            })
            .collect()
    };

    // Only the first dial fails: the other requests are served.
    proxy.set_blackhole(true);
    let requests = burst(&proxy, 4);
    eventually("the first dial reached the proxy", || {
        proxy.stats().connections_accepted == 1
    })
    .await;
    proxy.kill_all_silently();
    proxy.set_blackhole(false);
    let mut ok = 0;
    for request in requests {
        ok += usize::from(request.await.unwrap().is_ok());
    }
    assert_eq!(ok, 3, "{}", client.stats());

    // A silent host: every request fails within two handshake timeouts,
    // not one after the other (6 x 500 ms).
    let other = TestServer::start(ServerConfig {
        tls: Some(ServerConfig::tls_config(&ca, &[b"http/1.1"])),
        ..ServerConfig::default()
    })
    .await;
    let silent = ChaosProxy::start(other.addr()).await;
    silent.set_blackhole(true);
    let started = std::time::Instant::now();
    let mut messages = Vec::new();
    for request in burst(&silent, 6) {
        messages.push(request.await.unwrap().unwrap_err().to_string());
    }
    let took = started.elapsed();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("timed out after 500ms (tls_handshake_timeout)")),
        "the handshake timeout names its setting: {messages:?}"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

/// TLS errors name an IPv6 origin bracketed (`[::1]:443`): they printed
/// `::1:443`, which reads as another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_bracket_an_ipv6_origin() {
    // A TCP server on ::1 that hangs up at once: the handshake fails.
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            drop(socket);
        }
    });
    let err = timeout(LIMIT, Client::new().get(&format!("https://[::1]:{port}/")))
        .await
        .expect("bounded")
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Tls, "{err}");
    assert!(err.to_string().contains(&format!("[::1]:{port}")), "{err}");
    server.abort();
}

/// Clients sharing a pool with different settings keep apart connections
/// to one origin, one stats entry each: the entries read the same
/// (`https://127.0.0.1:port (HTTP/1.1)` twice) and could not be told
/// apart. Each now says what sets it apart, and never a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_tell_apart_partitions_of_one_origin() {
    let ca = TestCa::new();
    let server = tls_server(&ca, Protocol::Http1, &[b"http/1.1"]).await;
    let main = client_for(&ca).build().unwrap();
    let insecure = Client::builder()
        .danger_accept_invalid_certs(true)
        .share_pool_with(&main)
        .build()
        .unwrap();
    assert_eq!(body(&main, &server.url("/")).await.unwrap(), "ok");
    assert_eq!(body(&insecure, &server.url("/")).await.unwrap(), "ok");
    let stats = main.stats();
    assert_eq!(stats.origins.len(), 2, "{stats}");
    assert_eq!(stats.origins[0].origin, stats.origins[1].origin);
    let mut settings: Vec<_> = stats
        .origins
        .iter()
        .map(|o| o.settings.clone().unwrap_or_default())
        .collect();
    settings.sort();
    assert!(settings[0].starts_with("1 extra roots "), "{stats}");
    assert_eq!(settings[1], "certificates unchecked", "{stats}");
    assert!(
        stats
            .to_string()
            .contains("(HTTP/1.1; certificates unchecked)"),
        "{stats}"
    );
}

/// Clients sharing a pool dial its way: a different dial setting is a
/// `Config` error naming it, and a PING timeout without a PING interval
/// (no PING sent) is no difference.
#[test]
fn sharing_a_pool_with_other_dial_settings_is_refused_by_name() {
    let main = Client::builder().build().unwrap();
    let err = Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .share_pool_with(&main)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config);
    assert!(err.to_string().contains("connect_timeout"), "{err}");
    // No interval: the PING timeout does nothing, so it may differ.
    Client::builder()
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .share_pool_with(&main)
        .build()
        .unwrap();
    let pinging = Client::builder()
        .http2_keep_alive_interval(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let err = Client::builder()
        .http2_keep_alive_interval(Some(Duration::from_secs(10)))
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .share_pool_with(&pinging)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("http2_keep_alive_timeout"),
        "{err}"
    );
}

/// A client joining a pool need not repeat its dial settings: those it
/// leaves alone take the pool's, and it dials the pool's way. (Every dial
/// setting had to be repeated: `connect_timeout` left at its 10 s against a
/// pool's 3 s failed `build()`.) One it calls, even with the default's
/// value, must agree with the pool's; so must a pool limit called with the
/// default's value, which used to read as left alone and silently took the
/// pool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_joining_a_pool_takes_the_dial_settings_it_left_alone() {
    let main = Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .tls_handshake_timeout(Duration::from_millis(300))
        .max_connections_per_host(8)
        .build()
        .unwrap();
    let joined = Client::builder()
        .danger_accept_invalid_certs(true)
        .share_pool_with(&main)
        .build()
        .expect("dial settings left alone take the pool's");
    // It dials with the pool's 300 ms TLS handshake timeout, not the
    // default 10 s: a server that accepts and never answers shows it.
    let (port, silent) = common::silent_server().await;
    let err = timeout(
        Duration::from_secs(5),
        joined.get(&format!("https://localhost:{port}/")),
    )
    .await
    .expect("the pool's handshake timeout ends the dial")
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("timed out after 300ms (tls_handshake_timeout)"),
        "{err}"
    );
    silent.abort();
    // Called with the default's value: no longer read as left alone.
    let err = Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .share_pool_with(&main)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config);
    assert!(
        err.to_string()
            .contains("connect_timeout is 10s here and 3s in the shared pool"),
        "{err}"
    );
    let err = Client::builder()
        .max_connections_per_host(64)
        .share_pool_with(&main)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config);
    assert!(
        err.to_string()
            .contains("max_connections_per_host is 64 here and 8 in the shared pool"),
        "{err}"
    );
    // The same values as the pool's are fine.
    Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .max_connections_per_host(8)
        .share_pool_with(&main)
        .build()
        .unwrap();
}

/// A pool setting on a client that shares another's pool was silently
/// ignored (the pool keeps its own): `max_connections_per_host(8)` meant
/// the pool's 64. Now refused by name; one left at its default, or set to
/// the pool's own value, is no conflict.
#[test]
fn sharing_a_pool_with_other_pool_limits_is_refused_by_name() {
    let main = Client::builder()
        .max_connections_per_host(16)
        .build()
        .unwrap();
    let err = Client::builder()
        .max_connections_per_host(8)
        .share_pool_with(&main)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config);
    let msg = err.to_string();
    assert!(
        msg.contains("max_connections_per_host is 8 here and 16 in the shared pool"),
        "{msg}"
    );
    let err = Client::builder()
        .pool_timeout(Duration::from_secs(1))
        .share_pool_with(&main)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("pool_timeout"), "{err}");
    // Left at the default (64), or equal to the pool's: shares.
    Client::builder().share_pool_with(&main).build().unwrap();
    Client::builder()
        .max_connections_per_host(16)
        .share_pool_with(&main)
        .build()
        .unwrap();
}

/// A server that requires a client certificate, over HTTP/2, and a client
/// with none: TLS 1.3 finishes the client's handshake before the server's
/// alert arrives, so the alert is the first read, the one that waits for
/// the server's SETTINGS. The error keeps it. (It read "closed the
/// connection before its HTTP/2 SETTINGS frame (not an HTTP/2 server?)",
/// with no source: the certificate problem was nowhere.) Not always: the
/// client's preface may be written into the closed connection first, and
/// h2 then reports the broken pipe without reading the alert (2 runs of
/// 20 at ea67987): the error is then the `Protocol` error that says the
/// server closed before its SETTINGS, not possibly processed.
///
/// The same over HTTP/1.1 (always the alert there: its TLS reads keep
/// it, `AlertSeen`): the alert comes as the answer to the request,
/// which the server never processed (its TLS layer refused the session).
/// It read "connection error from ...: connection error" (`Kind::Io`,
/// the alert two sources down), marked possibly processed, so a POST
/// failed as `PossiblyProcessed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_alert_after_the_handshake_is_kept_on_http2_and_http1() {
    let ca = TestCa::new();
    for (protocol, alpn) in [
        (Protocol::Http2, b"h2" as &[u8]),
        (Protocol::Http1, b"http/1.1"),
    ] {
        let http1 = protocol == Protocol::Http1;
        let server = TestServer::start(ServerConfig {
            protocol,
            tls: Some(ServerConfig::tls_config_with_client_auth(&ca, &[alpn])),
            ..ServerConfig::default()
        })
        .await;
        let anonymous = client_for(&ca).build().unwrap();
        let get = timeout(LIMIT, body(&anonymous, &server.url("/")))
            .await
            .unwrap()
            .unwrap_err();
        let post = timeout(LIMIT, anonymous.post(&server.url("/echo"), "x"))
            .await
            .unwrap()
            .unwrap_err();
        for err in [get, post] {
            let mut chain = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                chain.push_str(&format!(" / {s}"));
                source = s.source();
            }
            assert!(!err.is_possibly_processed(), "{err:?}");
            let named =
                err.kind() == Kind::Connect && err.to_string().contains("CertificateRequired");
            if http1 {
                assert!(named, "{chain}");
            } else {
                assert!(
                    named
                        || (err.kind() == Kind::Protocol
                            && chain.contains("before its HTTP/2 SETTINGS frame")),
                    "{chain}"
                );
            }
        }
        assert_eq!(server.stats().requests(), 0);
    }
}
