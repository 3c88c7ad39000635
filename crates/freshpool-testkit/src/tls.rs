//! Throw-away certificates for TLS tests.
//!
//! [`TestCa`] is a self-signed certificate authority generated fresh (ECDSA
//! P-256 via `rcgen`) every time it is created. It issues server leaf
//! certificates for arbitrary DNS names / IP addresses and client
//! certificates for mutual-TLS tests. [`self_signed`] produces a leaf that
//! no CA vouches for, to test that clients reject untrusted servers.
//!
//! All crypto uses the *ring* provider explicitly
//! ([`rustls::crypto::ring::default_provider`]); nothing here installs or
//! relies on a process-wide default provider.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The *ring* crypto provider, wrapped for the rustls builders.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A freshly generated, self-signed certificate authority.
///
/// Trust it on the client side (via [`TestCa::ca_cert_der`],
/// [`TestCa::ca_cert_pem`] or [`TestCa::client_config`]) and give the server a
/// leaf from [`TestCa::server_cert`].
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

impl TestCa {
    /// Generates a new self-signed CA certificate and key.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "freshpool test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    /// The CA certificate in DER form (add it to a `rustls::RootCertStore`).
    pub fn ca_cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The CA certificate in PEM form.
    pub fn ca_cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A root store that trusts exactly this CA.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert_der()).expect("add CA to root store");
        roots
    }

    /// A server leaf certificate (chain of one: the leaf) and its key for the
    /// given names, signed by this CA. Each name that parses as an IP address
    /// becomes an IP SAN, every other one a DNS SAN, e.g.
    /// `&["localhost", "127.0.0.1"]`.
    pub fn server_cert(
        &self,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "server".into()),
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        (vec![cert.der().clone()], key_der(&key))
    }

    /// A client certificate (for mutual TLS) with the given common name,
    /// signed by this CA.
    pub fn client_cert(&self, cn: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("generate client key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign client cert");
        (vec![cert.der().clone()], key_der(&key))
    }

    /// Convenience: a rustls client config (ring provider, safe default
    /// protocol versions, default in-memory resumption store) that trusts only
    /// this CA and offers the given ALPN protocols (e.g. `&[b"h2", b"http/1.1"]`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// A self-signed leaf certificate for the given names that is *not* signed by
/// any CA (clients trusting a [`TestCa`] must reject it).
pub fn self_signed(names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let key = KeyPair::generate().expect("generate key");
    let mut params = CertificateParams::new(names).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).expect("self-sign");
    (vec![cert.der().clone()], key_der(&key))
}
