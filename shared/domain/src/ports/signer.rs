//! A CA key that signs without leaving where it is held (a KMS key): the
//! issuer of the fleet's own device certificates (issue 15, `kms-ca`) reaches
//! it only through this port. The port knows the key's algorithm and public
//! key, and signs a message; it never hands out the private key.

use std::future::Future;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::ports::PortResult;

/// How a CA key signs, as X.509 names it. Only the algorithms every AWS IoT
/// device stack verifies, and that KMS offers on a `SIGN_VERIFY` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// `ecdsa-with-SHA256` on a P-256 key.
    EcdsaP256Sha256,
    /// `ecdsa-with-SHA384` on a P-384 key.
    EcdsaP384Sha384,
    /// `sha256WithRSAEncryption` (PKCS #1 v1.5) on an RSA key of 2048 to 4096 bits.
    RsaPkcs1Sha256,
}

impl SignatureAlgorithm {
    /// A short stable label for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ECDSA P-256 SHA-256",
            Self::EcdsaP384Sha384 => "ECDSA P-384 SHA-384",
            Self::RsaPkcs1Sha256 => "RSA PKCS#1 v1.5 SHA-256",
        }
    }

    /// The digest of `message` this algorithm signs (SHA-256 or SHA-384): a
    /// signer that is handed digests (KMS `MessageType=DIGEST`) signs this.
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Self::EcdsaP256Sha256 | Self::RsaPkcs1Sha256 => &digest::SHA256,
            Self::EcdsaP384Sha384 => &digest::SHA384,
        };
        digest::digest(algorithm, message).as_ref().to_vec()
    }

    /// The DER `AlgorithmIdentifier` of a certificate signed with it (the
    /// `signatureAlgorithm` field, and `signature` in the TBSCertificate).
    /// ECDSA's has no parameters; RSA's has an explicit NULL (RFC 5758, RFC 4055).
    pub fn algorithm_identifier_der(self) -> &'static [u8] {
        match self {
            // SEQUENCE { OID 1.2.840.10045.4.3.2 }
            Self::EcdsaP256Sha256 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
            // SEQUENCE { OID 1.2.840.10045.4.3.3 }
            Self::EcdsaP384Sha384 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
            // SEQUENCE { OID 1.2.840.113549.1.1.11, NULL }
            Self::RsaPkcs1Sha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
            ],
        }
    }

    /// True when `signature` (DER `Ecdsa-Sig-Value` for ECDSA, the raw
    /// signature for RSA) is this algorithm's valid signature of `message` by
    /// the key whose SubjectPublicKeyInfo DER is `public_key_der`. False for
    /// anything else, including a key of another type or an unreadable key.
    pub fn verify(self, public_key_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let Ok((rest, spki)) = SubjectPublicKeyInfo::from_der(public_key_der) else {
            return false;
        };
        if !rest.is_empty() {
            return false;
        }
        let algorithm: &'static dyn signature::VerificationAlgorithm = match self {
            Self::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        // The key bits: the EC point, or the PKCS #1 RSAPublicKey.
        UnparsedPublicKey::new(algorithm, spki.subject_public_key.data.as_ref())
            .verify(message, signature)
            .is_ok()
    }
}

impl std::fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The public half of a signing key: what a CA certificate for it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub algorithm: SignatureAlgorithm,
    /// The SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
}

/// A CA's private key held elsewhere (KMS): its public half, and signatures.
pub trait CertificateSigner: Send + Sync {
    /// The key's algorithm and public key (`kms:GetPublicKey`). An adapter
    /// refuses a key it cannot sign certificates with (not for signing, a
    /// curve or algorithm outside [`SignatureAlgorithm`]) with an
    /// `Invalid` error.
    fn signing_key(&self) -> impl Future<Output = PortResult<SigningKey>> + Send;

    /// Signs `message` (a DER TBSCertificate) with the key's algorithm
    /// (`kms:Sign`): ECDSA signatures are DER `Ecdsa-Sig-Value`s, RSA ones
    /// raw, both as X.509's `signatureValue` carries them.
    fn sign(&self, message: &[u8]) -> impl Future<Output = PortResult<Vec<u8>>> + Send;
}

/// The CA signing keys a deployment allows, by KMS key ARN: how a profile's
/// `rotation.issuer.kmsKeyArn` reaches its signer, so that one function
/// serves every profile whose key the deployment allows (and its role may
/// use only those keys).
pub trait CaSigners: Send + Sync {
    type Signer: CertificateSigner;

    /// The signer of the key `key_arn`; `None` when the deployment does not
    /// allow that key (the caller refuses, it never falls back to another).
    fn signer(&self, key_arn: &str) -> Option<&Self::Signer>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256,
        RsaKeyPair,
    };
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::AlgorithmIdentifier;

    use super::*;

    fn ec(alg: &'static signature::EcdsaSigningAlgorithm, message: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(key.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        let sig = key.sign(&SystemRandom::new(), message).unwrap().as_ref().to_vec();
        (spki, sig)
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_algorithm_and_message() {
        let message = b"tbs certificate";
        let (p256, sig256) = ec(&ECDSA_P256_SHA256_ASN1_SIGNING, message);
        let (p384, sig384) = ec(&ECDSA_P384_SHA384_ASN1_SIGNING, message);
        assert!(SignatureAlgorithm::EcdsaP256Sha256.verify(&p256, message, &sig256));
        assert!(SignatureAlgorithm::EcdsaP384Sha384.verify(&p384, message, &sig384));
        // Another message, another key, another algorithm, a key with trailing bytes.
        assert!(!SignatureAlgorithm::EcdsaP256Sha256.verify(&p256, b"tbs certificatf", &sig256));
        let (other, _) = ec(&ECDSA_P256_SHA256_ASN1_SIGNING, message);
        assert!(!SignatureAlgorithm::EcdsaP256Sha256.verify(&other, message, &sig256));
        assert!(!SignatureAlgorithm::EcdsaP384Sha384.verify(&p256, message, &sig256));
        assert!(!SignatureAlgorithm::RsaPkcs1Sha256.verify(&p256, message, &sig256));
        let mut trailing = p256.clone();
        trailing.push(0);
        assert!(!SignatureAlgorithm::EcdsaP256Sha256.verify(&trailing, message, &sig256));
        assert!(!SignatureAlgorithm::EcdsaP256Sha256.verify(b"not a key", message, &sig256));

        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(rsa.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
            .unwrap();
        assert!(SignatureAlgorithm::RsaPkcs1Sha256.verify(&spki, message, &sig));
        assert!(!SignatureAlgorithm::EcdsaP256Sha256.verify(&spki, message, &sig));
    }

    #[test]
    fn digests_have_the_algorithms_length() {
        assert_eq!(SignatureAlgorithm::EcdsaP256Sha256.digest(b"x").len(), 32);
        assert_eq!(SignatureAlgorithm::RsaPkcs1Sha256.digest(b"x").len(), 32);
        assert_eq!(SignatureAlgorithm::EcdsaP384Sha384.digest(b"x").len(), 48);
    }

    #[test]
    fn algorithm_identifiers_parse_to_their_oids() {
        for (alg, oid, params) in [
            (SignatureAlgorithm::EcdsaP256Sha256, "1.2.840.10045.4.3.2", false),
            (SignatureAlgorithm::EcdsaP384Sha384, "1.2.840.10045.4.3.3", false),
            (SignatureAlgorithm::RsaPkcs1Sha256, "1.2.840.113549.1.1.11", true),
        ] {
            let (rest, parsed) = AlgorithmIdentifier::from_der(alg.algorithm_identifier_der()).unwrap();
            assert!(rest.is_empty());
            assert_eq!(parsed.algorithm.to_id_string(), oid);
            assert_eq!(parsed.parameters.is_some(), params);
        }
    }
}
