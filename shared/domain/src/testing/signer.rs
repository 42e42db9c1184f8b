//! An in-memory [`CertificateSigner`]: an aws-lc-rs key standing for a KMS
//! key, with its PKCS #8 so that a test can make the CA certificate for it
//! (rcgen), and the failures a KMS key can have (an error, a wrong signature).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};

use crate::ports::{CertificateSigner, PortError, PortErrorKind, PortResult, SignatureAlgorithm, SigningKey};

enum Key {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signing key in memory, counting its signatures.
pub struct MemorySigner {
    key: Key,
    signing_key: SigningKey,
    pkcs8: Vec<u8>,
    /// `sign` calls, failed ones included.
    pub signs: AtomicUsize,
    /// When set, `sign` and `signing_key` fail with this kind.
    pub fail: Mutex<Option<PortErrorKind>>,
    /// When set, `sign` returns a signature of another message.
    pub corrupt: AtomicBool,
}

impl MemorySigner {
    /// A fresh key for `algorithm` (RSA keys are 2048 bits).
    ///
    /// # Panics
    /// When aws-lc-rs cannot generate a key.
    #[allow(clippy::expect_used)]
    pub fn generate(algorithm: SignatureAlgorithm) -> Self {
        let rng = SystemRandom::new();
        let (key, pkcs8) = match algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::EcdsaP384Sha384 => {
                let alg = if algorithm == SignatureAlgorithm::EcdsaP256Sha256 {
                    &ECDSA_P256_SHA256_ASN1_SIGNING
                } else {
                    &ECDSA_P384_SHA384_ASN1_SIGNING
                };
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
                    .expect("EC key")
                    .as_ref()
                    .to_vec();
                (
                    Key::Ec(EcdsaKeyPair::from_pkcs8(alg, &pkcs8).expect("EC PKCS#8")),
                    pkcs8,
                )
            }
            SignatureAlgorithm::RsaPkcs1Sha256 => {
                let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
                let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
                    .expect("RSA PKCS#8")
                    .as_ref()
                    .to_vec();
                (Key::Rsa(key), pkcs8)
            }
        };
        let public_key_der = match &key {
            Key::Ec(k) => AsDer::<PublicKeyX509Der>::as_der(k.public_key())
                .expect("SPKI")
                .as_ref()
                .to_vec(),
            Key::Rsa(k) => AsDer::<PublicKeyX509Der>::as_der(k.public_key())
                .expect("SPKI")
                .as_ref()
                .to_vec(),
        };
        Self {
            key,
            signing_key: SigningKey {
                algorithm,
                public_key_der,
            },
            pkcs8,
            signs: AtomicUsize::new(0),
            fail: Mutex::new(None),
            corrupt: AtomicBool::new(false),
        }
    }

    /// The private key, PKCS #8 DER (for rcgen to make the CA certificate).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    fn failure(&self, operation: &'static str) -> PortResult<()> {
        match *self.fail.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(kind) => Err(PortError::new(operation, kind, "injected")),
            None => Ok(()),
        }
    }

    fn raw_sign(&self, message: &[u8]) -> PortResult<Vec<u8>> {
        let rng = SystemRandom::new();
        let failed = |_| PortError::new("sign", PortErrorKind::Invalid, "aws-lc-rs refused to sign");
        match &self.key {
            Key::Ec(k) => Ok(k.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            Key::Rsa(k) => {
                let mut signature = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

impl CertificateSigner for MemorySigner {
    async fn signing_key(&self) -> PortResult<SigningKey> {
        self.failure("signing_key")?;
        Ok(self.signing_key.clone())
    }

    async fn sign(&self, message: &[u8]) -> PortResult<Vec<u8>> {
        self.signs.fetch_add(1, Ordering::SeqCst);
        self.failure("sign")?;
        if self.corrupt.load(Ordering::SeqCst) {
            return self.raw_sign(b"not the message");
        }
        self.raw_sign(message)
    }
}
