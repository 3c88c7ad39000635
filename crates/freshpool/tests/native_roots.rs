//! `tls_native_roots`: the operating system's certificate store, or the
//! PEM file `SSL_CERT_FILE` names, trusted beside the built-in roots. The
//! environment is process-global, so this binary holds one test.

use freshpool::{Client, Kind};
use freshpool_testkit::{Protocol, ServerConfig, TestCa, TestServer};

/// A CA the built-in roots do not know, named by `SSL_CERT_FILE` (as a
/// company's CA installed on the host would be found in its store): a
/// client with `tls_native_roots(true)` trusts it, one without refuses the
/// server's certificate. A file with no certificate fails `build()`
/// saying so, instead of every handshake later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_roots_trust_the_ca_that_ssl_cert_file_names() {
    let ca = TestCa::new();
    let server = TestServer::start(ServerConfig {
        protocol: Protocol::Http1,
        tls: Some(ServerConfig::tls_config(&ca, &[b"http/1.1"])),
        ..ServerConfig::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("freshpool-native-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, ca.ca_cert_pem()).unwrap();
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("SSL_CERT_FILE", &pem);

    let native = Client::builder().tls_native_roots(true).build().unwrap();
    let text = native
        .get(&server.url("/"))
        .await
        .expect("the CA SSL_CERT_FILE names is trusted")
        .into_body()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "ok");
    let stats = native.stats();
    assert!(stats.to_string().contains("system roots"), "{stats}");

    let builtin = Client::new();
    let err = builtin.get(&server.url("/")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Tls, "{err}");

    // A client that read another store (here another SSL_CERT_FILE) and
    // shares the pool never takes the first one's connection: the pool key
    // holds the certificates read, not the setting (both said "native").
    let other_ca = TestCa::new();
    let other = dir.join("other.pem");
    std::fs::write(&other, other_ca.ca_cert_pem()).unwrap();
    std::env::set_var("SSL_CERT_FILE", &other);
    let sharing = Client::builder()
        .tls_native_roots(true)
        .share_pool_with(&native)
        .build()
        .unwrap();
    assert_eq!(
        native.stats().idle(),
        1,
        "the first client's connection rests"
    );
    let err = sharing.get(&server.url("/")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::Tls,
        "verified against its own roots: {err}"
    );

    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    std::env::set_var("SSL_CERT_FILE", &empty);
    let err = Client::builder()
        .tls_native_roots(true)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Config, "{err}");
    assert!(err.to_string().contains("tls_native_roots"), "{err}");
    std::env::remove_var("SSL_CERT_FILE");
    let _ = std::fs::remove_dir_all(&dir);
}
