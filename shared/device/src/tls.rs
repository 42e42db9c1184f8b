//! The device side of mutual TLS: a rustls client configuration from a
//! device's certificate and key, trusting the broker's CA.
//!
//! aws-lc-rs refuses RSA keys below 2048 bits, but a device carrying one is
//! exactly what the checks must stop, so such a key signs through the pure
//! Rust `rsa` crate instead: the broker, not the device's TLS stack, decides
//! whether it gets in. That signer is for simulated devices only.

use std::sync::Arc;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};

/// Unusable device credentials or broker CA.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} is not valid PEM: {problem}")]
    Pem { what: &'static str, problem: String },
    #[error("{0} holds no certificate")]
    Empty(&'static str),
    #[error("the device key cannot sign: {0}")]
    Key(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn pem(what: &'static str) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
    move |e| TlsError::Pem {
        what,
        problem: e.to_string(),
    }
}

/// A client configuration presenting the device's certificate (chain) and
/// trusting `server_ca_pem` (Amazon Root CA 1 for AWS IoT, the emulator's own
/// CA locally).
///
/// # Errors
/// [`TlsError`] naming the credential at fault.
pub fn client_config(
    server_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(server_ca_pem.as_bytes()) {
        roots.add(ca.map_err(pem("the server CA"))?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty("the server CA"));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(pem("the device certificate"))?;
    if chain.is_empty() {
        return Err(TlsError::Empty("the device certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem("the device key"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signing_key = signing_key(&provider, key)?;
    let certified = Arc::new(CertifiedKey::new(chain, signing_key));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(OneCertificate(certified)));
    Ok(Arc::new(config))
}

fn signing_key(provider: &CryptoProvider, key: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, TlsError> {
    let refused = match provider.key_provider.load_private_key(key.clone_key()) {
        Ok(key) => return Ok(key),
        Err(e) => e,
    };
    let weak = match &key {
        PrivateKeyDer::Pkcs8(der) => rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der()).ok(),
        PrivateKeyDer::Pkcs1(der) => rsa::RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der()).ok(),
        _ => None,
    };
    match weak {
        Some(rsa) => Ok(Arc::new(WeakRsa(rsa))),
        None => Err(TlsError::Key(refused.to_string())),
    }
}

/// Always presents the one device certificate.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OneCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// An RSA key aws-lc-rs will not load (below 2048 bits).
struct WeakRsa(rsa::RsaPrivateKey);

/// Debug output names the key's size, never its parts.
fn weak_rsa_debug(f: &mut std::fmt::Formatter<'_>, name: &str, key: &rsa::RsaPrivateKey) -> std::fmt::Result {
    use rsa::traits::PublicKeyParts;
    f.debug_struct(name)
        .field("bits", &(key.size() * 8))
        .finish_non_exhaustive()
}

impl std::fmt::Debug for WeakRsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        weak_rsa_debug(f, "WeakRsa", &self.0)
    }
}

impl SigningKey for WeakRsa {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        // TLS 1.3 signs with PSS only; TLS 1.2 servers may offer PKCS#1 v1.5.
        [SignatureScheme::RSA_PSS_SHA256, SignatureScheme::RSA_PKCS1_SHA256]
            .into_iter()
            .find(|scheme| offered.contains(scheme))
            .map(|scheme| Box::new(WeakRsaSigner(self.0.clone(), scheme)) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::RSA
    }
}

struct WeakRsaSigner(rsa::RsaPrivateKey, SignatureScheme);

impl std::fmt::Debug for WeakRsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        weak_rsa_debug(f, "WeakRsaSigner", &self.0)
    }
}

impl Signer for WeakRsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let mut rng = rsa::rand_core::OsRng;
        let signature = if self.1 == SignatureScheme::RSA_PSS_SHA256 {
            rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(self.0.clone())
                .try_sign_with_rng(&mut rng, message)
                .map(|s| s.to_vec())
        } else {
            rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.0.clone())
                .try_sign_with_rng(&mut rng, message)
                .map(|s| s.to_vec())
        };
        signature.map_err(|e| rustls::Error::General(format!("RSA signature: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.1
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_weak_rsa_key_signs_with_the_fallback() {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).expect("keygen");
        let der = key.to_pkcs8_der().expect("pkcs8");
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let pkcs8 = PrivateKeyDer::Pkcs8(der.as_bytes().to_vec().into());
        assert!(provider.key_provider.load_private_key(pkcs8.clone_key()).is_err());
        let signing = signing_key(&provider, pkcs8).expect("fallback");
        let signer = signing
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::RSA_PSS_SHA256])
            .expect("PSS offered");
        assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA256);
        assert_eq!(signer.sign(b"hello").expect("sign").len(), 128);
        assert!(
            signing
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .is_none()
        );
    }

    #[test]
    fn garbage_credentials_are_named() {
        let e = client_config("not pem", "not pem", "not pem").expect_err("no CA");
        assert!(e.to_string().contains("server CA"), "{e}");
    }
}
