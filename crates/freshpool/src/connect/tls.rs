//! rustls client configuration: roots, client identity, ALPN, resumption.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{HttpVersion, TlsSettings};
use crate::error::Error;

/// Builds the rustls config for one set of TLS settings. Built once per
/// client: its session store is what makes reconnects resume (TLS tickets).
pub(crate) fn client_config(
    tls: &TlsSettings,
    version: HttpVersion,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("TLS protocol versions").with_source(e))?;
    let builder = if tls.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if !tls.only_custom_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        // (Read at `build()`: `native_roots`.)
        roots.add_parsable_certificates(tls.native_certs.iter().cloned());
        for cert in &tls.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| Error::config("invalid custom CA certificate").with_source(e))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &tls.client_cert {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| Error::config("invalid client certificate or key").with_source(e))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match version {
        HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpVersion::Http1Only => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2Only => vec![b"h2".to_vec()],
    };
    // rustls resumes by default (an in-memory store of 256 sessions, tickets
    // for TLS 1.3 and 1.2); stated here because the pool's reconnect cost
    // depends on it.
    config.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Ok(Arc::new(config))
}

/// The operating system's certificate store (or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), for `tls_native_roots`. What cannot be read is skipped
/// with a warning, as long as something could be; nothing at all is an
/// error: a client that trusts none of them would fail every handshake
/// later, naming no cause.
pub(crate) fn native_roots() -> Result<Vec<CertificateDer<'static>>, Error> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "tls_native_roots: skipped what could not be read");
    }
    let mut usable = rustls::RootCertStore::empty();
    let (added, _ignored) = usable.add_parsable_certificates(found.certs.iter().cloned());
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "the store holds none".to_owned(), ToString::to_string);
        return Err(Error::config(format!(
            "tls_native_roots: no certificate could be read from the operating system's store \
             or SSL_CERT_FILE / SSL_CERT_DIR ({why})"
        )));
    }
    Ok(found.certs)
}

/// Verification switched off by the user (`danger_accept_invalid_certs`).
/// Signatures are still checked so the handshake stays well-formed.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
