//! TLS for `wss://` and `https://`: rustls with the ring provider, trusting
//! Mozilla's roots compiled into the binary (`webpki-roots`) plus any the
//! configuration adds (a private CA, a test's self-signed certificate).
//!
//! Why compiled-in roots rather than the system's store: a service built
//! as a static binary or run in a scratch container has no system store,
//! and the client must not depend on OpenSSL. One rustls configuration
//! serves the socket and the HTTP helpers, so both trust the same roots.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::ClientError;

/// A rustls client configuration trusting the public roots and `extra`.
pub(crate) fn client_config(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| ClientError::Settings(format!("extra root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Settings(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates of a PEM file (`-----BEGIN CERTIFICATE-----` blocks),
/// for [`ClientConfig::with_root_certificates`](crate::ClientConfig::with_root_certificates).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Settings(format!("PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Settings(
            "PEM certificates: no certificate found".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_a_certificate_is_refused_with_the_reason() {
        let err = certificates_from_pem(b"not a certificate").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid connection settings: PEM certificates: no certificate found"
        );
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let certs = certificates_from_pem(cert.cert.pem().as_bytes()).expect("parsed");
        assert_eq!(certs.len(), 1);
        assert!(client_config(&certs).is_ok());
    }
}
