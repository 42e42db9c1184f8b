//! Device certificates issued by the fleet's own CA through a
//! [`CertificateSigner`] (its key in KMS): the TBSCertificate built from a
//! checked CSR and the CA certificate, signed through the port, assembled,
//! and checked to chain to the CA before anyone sees it.
//!
//! Building blocks of issue 15's `kms-ca` issuer; not yet called by the
//! rotation.
//!
//! What the certificate carries, and from where:
//! - subject and SubjectPublicKeyInfo: the CSR's, byte for byte; nothing
//!   else from the CSR (its requested extensions, a CA flag among them, are
//!   ignored);
//! - issuer: the CA certificate's subject, byte for byte (so path building
//!   matches it exactly);
//! - serial: 16 random bytes, positive;
//! - validity: from `now - backdate` for the profile's number of days, never
//!   beyond the CA's own notAfter;
//! - extensions: basicConstraints CA:false and keyUsage digitalSignature
//!   (both critical), extendedKeyUsage clientAuth, subjectKeyIdentifier and
//!   authorityKeyIdentifier (the CA's subjectKeyIdentifier, or RFC 7093's
//!   SHA-256 identifier of its key when it has none).
//!
//! Why a small DER writer and not rcgen: rcgen's remote signing trait is
//! synchronous and a KMS call is async; bridging needs `block_in_place` (a
//! multi-threaded runtime, which the Lambda runtime is not) or a second
//! runtime per signature. A TBSCertificate is one fixed structure, and
//! writing it here also copies the issuer and subject names as raw DER
//! instead of re-encoding them.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::model::certificate::{Certificate, CertificateRequest, MalformedCertificate};
use crate::ports::{CertificateSigner, PortError};

/// How long an issued certificate lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceSettings {
    /// Days from `now` to notAfter (clamped to the CA's notAfter).
    pub validity_days: u32,
    /// Seconds notBefore is set before `now`, for devices whose clocks run behind.
    pub backdate_secs: i64,
}

/// Why a certificate was not issued. Nothing was registered or handed out.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    /// The CSR's signature does not verify with the key it carries.
    #[error("the CSR is not signed by the key it carries")]
    NoProofOfPossession,
    /// The CA certificate cannot issue: not a CA, or not valid now.
    #[error("the CA certificate cannot issue: {0}")]
    CaUnusable(String),
    /// The signer's key is not the CA certificate's key: what it signs would
    /// not chain to that CA.
    #[error("the signing key is not the CA certificate's key")]
    KeyMismatch,
    /// The signer failed (KMS: throttled, denied, key disabled...).
    #[error(transparent)]
    Signer(#[from] PortError),
    /// The signature the signer returned does not verify with the CA's key.
    #[error("the signature returned does not verify with the CA's public key")]
    BadSignature,
    /// A CA name that X.509 cannot carry (empty, or over 64 characters).
    #[error("invalid CA name: {0}")]
    InvalidName(String),
    /// The assembled certificate does not parse (a bug, never handed out).
    #[error("the issued certificate does not parse: {0}")]
    Malformed(#[from] MalformedCertificate),
}

impl IssuanceError {
    /// True when the same call may succeed later (the signer was throttled or failed transiently).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Signer(e) if e.is_transient())
    }
}

/// Issues a device certificate for `csr` under `ca`, signed through `signer`
/// (one `signing_key`, one `sign`). The signature is verified with the CA
/// certificate's key and the result parsed before it is returned.
///
/// # Errors
/// [`IssuanceError`]: the CSR without proof of possession, a CA that cannot
/// issue or whose key is not the signer's, the signer's failure, a signature
/// that does not verify.
pub async fn issue_device_certificate<S: CertificateSigner>(
    signer: &S,
    ca: &Certificate,
    csr: &CertificateRequest,
    now: i64,
    settings: &IssuanceSettings,
) -> Result<Certificate, IssuanceError> {
    if !csr.signature_valid {
        return Err(IssuanceError::NoProofOfPossession);
    }
    let authority = Authority::read(ca, now)?;
    let key = signer.signing_key().await?;
    if key.public_key_der != authority.public_key_der {
        return Err(IssuanceError::KeyMismatch);
    }
    let not_before = now.saturating_sub(settings.backdate_secs.max(0)).max(ca.not_before);
    let not_after = now
        .saturating_add(i64::from(settings.validity_days).saturating_mul(86_400))
        .min(ca.not_after);
    let algorithm_der = key.algorithm.algorithm_identifier_der();
    let extensions = [
        extension(OID_BASIC_CONSTRAINTS, true, &sequence(&[])),
        extension(OID_KEY_USAGE, true, KEY_USAGE_DIGITAL_SIGNATURE),
        extension(OID_EXT_KEY_USAGE, false, &sequence(&[OID_CLIENT_AUTH.to_vec()])),
        extension(
            OID_SUBJECT_KEY_ID,
            false,
            &octet_string(&key_identifier(&csr.public_key_der)),
        ),
        extension(
            OID_AUTHORITY_KEY_ID,
            false,
            &sequence(&[tlv(0x80, &authority.key_identifier)]),
        ),
    ];
    let tbs = sequence(&[
        VERSION_3.to_vec(),
        integer(&random_serial()?),
        algorithm_der.to_vec(),
        authority.subject_der,
        sequence(&[time(not_before)?, time(not_after)?]),
        csr.subject_der.clone(),
        csr.public_key_der.clone(),
        tlv(0xa3, &sequence(&extensions)),
    ]);
    let signature = signer.sign(&tbs).await?;
    if !key.algorithm.verify(&authority.public_key_der, &tbs, &signature) {
        return Err(IssuanceError::BadSignature);
    }
    let der = sequence(&[tbs, algorithm_der.to_vec(), bit_string(&signature)]);
    Ok(Certificate::from_der(der)?)
}

/// The subject of a fleet CA: `O=<organization>, CN=<common name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaName {
    pub common_name: String,
    pub organization: Option<String>,
}

impl CaName {
    /// Whether X.509 can carry this name (what [`self_signed_ca_certificate`]
    /// checks first): to refuse it before creating a key for it.
    ///
    /// # Errors
    /// [`IssuanceError::InvalidName`] naming the field.
    pub fn check(&self) -> Result<(), IssuanceError> {
        ca_name_der(self).map(drop)
    }
}

/// A self-signed CA certificate for the signer's key (what `onboard ca
/// create --kms` makes): `name` as subject and issuer, a random serial,
/// `now - backdate` to `now + validity_days`, basicConstraints CA:true with
/// pathLenConstraint 0 (it issues device certificates only) and keyUsage
/// keyCertSign and cRLSign (both critical), a subjectKeyIdentifier. One
/// `signing_key`, one `sign`; the signature is verified before the
/// certificate is returned.
///
/// # Errors
/// [`IssuanceError`]: an invalid name, the signer's failure, a signature
/// that does not verify.
pub async fn self_signed_ca_certificate<S: CertificateSigner>(
    signer: &S,
    name: &CaName,
    now: i64,
    settings: &IssuanceSettings,
) -> Result<Certificate, IssuanceError> {
    let name_der = ca_name_der(name)?;
    let key = signer.signing_key().await?;
    let algorithm_der = key.algorithm.algorithm_identifier_der();
    let not_after = now.saturating_add(i64::from(settings.validity_days).saturating_mul(86_400));
    let extensions = [
        // SEQUENCE { cA TRUE, pathLenConstraint 0 }
        extension(
            OID_BASIC_CONSTRAINTS,
            true,
            &sequence(&[vec![0x01, 0x01, 0xff], vec![0x02, 0x01, 0x00]]),
        ),
        extension(OID_KEY_USAGE, true, KEY_USAGE_CERT_AND_CRL_SIGN),
        extension(
            OID_SUBJECT_KEY_ID,
            false,
            &octet_string(&key_identifier(&key.public_key_der)),
        ),
    ];
    let tbs = sequence(&[
        VERSION_3.to_vec(),
        integer(&random_serial()?),
        algorithm_der.to_vec(),
        name_der.clone(),
        sequence(&[
            time(now.saturating_sub(settings.backdate_secs.max(0)))?,
            time(not_after)?,
        ]),
        name_der,
        key.public_key_der.clone(),
        tlv(0xa3, &sequence(&extensions)),
    ]);
    let signature = signer.sign(&tbs).await?;
    if !key.algorithm.verify(&key.public_key_der, &tbs, &signature) {
        return Err(IssuanceError::BadSignature);
    }
    let der = sequence(&[tbs, algorithm_der.to_vec(), bit_string(&signature)]);
    Ok(Certificate::from_der(der)?)
}

/// `O=..., CN=...` as a DER Name of UTF8Strings.
fn ca_name_der(name: &CaName) -> Result<Vec<u8>, IssuanceError> {
    let attribute = |oid: &[u8], value: &str, what: &str| {
        let length = value.chars().count();
        if value.trim().is_empty() || length > 64 || value.chars().any(char::is_control) {
            return Err(IssuanceError::InvalidName(format!(
                "{what} must be 1 to 64 printable characters, got {value:?}"
            )));
        }
        Ok(tlv(0x31, &sequence(&[oid.to_vec(), tlv(0x0c, value.as_bytes())])))
    };
    let mut rdns = Vec::new();
    if let Some(organization) = &name.organization {
        rdns.push(attribute(OID_ORGANIZATION, organization, "the organization")?);
    }
    rdns.push(attribute(OID_COMMON_NAME, &name.common_name, "the common name")?);
    Ok(sequence(&rdns))
}

/// What the issued certificate takes from the CA certificate.
struct Authority {
    subject_der: Vec<u8>,
    public_key_der: Vec<u8>,
    key_identifier: Vec<u8>,
}

impl Authority {
    fn read(ca: &Certificate, now: i64) -> Result<Self, IssuanceError> {
        if !ca.is_ca {
            return Err(IssuanceError::CaUnusable("basicConstraints is not CA:true".into()));
        }
        if now < ca.not_before || now >= ca.not_after {
            return Err(IssuanceError::CaUnusable("it is not valid now".into()));
        }
        let (_, parsed) = X509Certificate::from_der(ca.der()).map_err(|e| MalformedCertificate(format!("DER: {e}")))?;
        let public_key_der = parsed.public_key().raw.to_vec();
        let key_identifier = parsed
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                // An empty identifier identifies nothing.
                ParsedExtension::SubjectKeyIdentifier(id) if !id.0.is_empty() => Some(id.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| key_identifier(&public_key_der));
        Ok(Self {
            subject_der: parsed.subject().as_raw().to_vec(),
            public_key_der,
            key_identifier,
        })
    }
}

/// RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the
/// subjectPublicKey bits. An unreadable SPKI hashes whole (never happens for
/// a CSR that parsed).
fn key_identifier(spki_der: &[u8]) -> Vec<u8> {
    let bits = SubjectPublicKeyInfo::from_der(spki_der)
        .map(|(_, spki)| spki.subject_public_key.data.to_vec())
        .unwrap_or_else(|_| spki_der.to_vec());
    digest::digest(&digest::SHA256, &bits).as_ref()[..20].to_vec()
}

/// 16 random bytes, positive and minimally encoded (top bits `01`).
fn random_serial() -> Result<[u8; 16], IssuanceError> {
    let mut serial = [0_u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| IssuanceError::CaUnusable("no randomness for the serial".into()))?;
    serial[0] = (serial[0] & 0x3f) | 0x40;
    Ok(serial)
}

// --- DER ----------------------------------------------------------------------

/// `[0] EXPLICIT INTEGER 2` (v3).
const VERSION_3: &[u8] = &[0xa0, 0x03, 0x02, 0x01, 0x02];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x0f];
const OID_EXT_KEY_USAGE: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x25];
const OID_SUBJECT_KEY_ID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x0e];
const OID_AUTHORITY_KEY_ID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x23];
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2.
const OID_CLIENT_AUTH: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const OID_COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];
/// BIT STRING with keyCertSign (bit 5) and cRLSign (bit 6): 1 unused bit.
const KEY_USAGE_CERT_AND_CRL_SIGN: &[u8] = &[0x03, 0x02, 0x01, 0x06];
/// BIT STRING with only digitalSignature (bit 0) set: 7 unused bits.
const KEY_USAGE_DIGITAL_SIGNATURE: &[u8] = &[0x03, 0x02, 0x07, 0x80];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(0x04, content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0_u8][..], content].concat())
}

/// An INTEGER of big-endian bytes already positive and minimal.
fn integer(bytes: &[u8]) -> Vec<u8> {
    tlv(0x02, bytes)
}

/// `Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }`.
fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut items = vec![oid.to_vec()];
    if critical {
        items.push(vec![0x01, 0x01, 0xff]);
    }
    items.push(octet_string(value));
    sequence(&items)
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5).
fn time(unix: i64) -> Result<Vec<u8>, IssuanceError> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|_| IssuanceError::CaUnusable(format!("validity bound {unix} is out of range")))?;
    let (year, rest) = (
        at.year(),
        format!(
            "{:02}{:02}{:02}{:02}{:02}Z",
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ),
    );
    Ok(match year {
        1950..=2049 => tlv(0x17, format!("{:02}{rest}", year % 100).as_bytes()),
        0..=9999 => tlv(0x18, format!("{year:04}{rest}").as_bytes()),
        _ => return Err(IssuanceError::CaUnusable(format!("year {year} cannot be encoded"))),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::Ordering;

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use x509_parser::extensions::GeneralName;

    use super::*;
    use crate::ports::{PortErrorKind, SignatureAlgorithm};
    use crate::testing::signer::MemorySigner;

    const NOW: i64 = 1_800_000_000; // 2027-01-15
    const SETTINGS: IssuanceSettings = IssuanceSettings {
        validity_days: 365,
        backdate_secs: 300,
    };

    /// A CA certificate for the signer's key, valid around `NOW`, with or without a subjectKeyIdentifier.
    fn ca_for(signer: &MemorySigner, not_after: i64, with_ski: bool) -> Certificate {
        let key = KeyPair::try_from(signer.pkcs8_der()).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Acme");
        dn.push(DnType::CommonName, "Acme Fleet CA (KMS)");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 86_400).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.key_identifier_method = if with_ski {
            rcgen::KeyIdMethod::Sha256
        } else {
            rcgen::KeyIdMethod::PreSpecified(Vec::new())
        };
        params.use_authority_key_identifier_extension = false;
        let pem = params.self_signed(&key).unwrap().pem();
        let ca = Certificate::from_pem(&pem).unwrap();
        if !with_ski {
            let (_, parsed) = X509Certificate::from_der(ca.der()).unwrap();
            assert!(parsed.extensions().iter().all(|e| !matches!(
                e.parsed_extension(),
                ParsedExtension::SubjectKeyIdentifier(id) if !id.0.is_empty()
            )));
        }
        ca
    }

    /// A device CSR that also asks for what it must not get: CA:true, serverAuth, a SAN.
    fn csr(cn: &str) -> (CertificateRequest, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "Acme");
        dn.push(DnType::OrganizationalUnitName, "sensors");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (CertificateRequest::from_pem(&pem).unwrap(), key)
    }

    async fn issue(
        signer: &MemorySigner,
        ca: &Certificate,
        csr: &CertificateRequest,
    ) -> Result<Certificate, IssuanceError> {
        issue_device_certificate(signer, ca, csr, NOW, &SETTINGS).await
    }

    #[tokio::test]
    async fn the_certificate_chains_to_the_ca_and_carries_the_csrs_subject_and_key_only() {
        for algorithm in [
            SignatureAlgorithm::EcdsaP256Sha256,
            SignatureAlgorithm::EcdsaP384Sha384,
            SignatureAlgorithm::RsaPkcs1Sha256,
        ] {
            let signer = MemorySigner::generate(algorithm);
            let ca = ca_for(&signer, NOW + 10 * 365 * 86_400, true);
            let (request, _) = csr("sensor-0042");

            let issued = issue(&signer, &ca, &request).await.unwrap();

            assert!(issued.is_signed_by(&ca), "{algorithm}: verifies with the CA's key");
            assert!(issued.issuer_matches_subject_of(&ca));
            assert_eq!(issued.subject_dn, request.subject_dn);
            assert_eq!(issued.public_key_der(), request.public_key_der);
            assert_eq!(issued.not_before, NOW - 300);
            assert_eq!(issued.not_after, NOW + 365 * 86_400);
            assert!(!issued.is_ca, "a CSR asking for CA:true does not get it");
            assert_eq!(issued.key_usage_digital_signature, Some(true));
            assert_eq!(issued.eku_client_auth, Some(true));
            assert_eq!(signer.signs.load(Ordering::SeqCst), 1);

            let (_, parsed) = X509Certificate::from_der(issued.der()).unwrap();
            assert_eq!(parsed.version(), x509_parser::x509::X509Version::V3);
            assert_eq!(parsed.raw_serial().len(), 16);
            assert!(parsed.raw_serial()[0] & 0x80 == 0, "positive serial");
            let (_, ca_parsed) = X509Certificate::from_der(ca.der()).unwrap();
            let mut seen = Vec::new();
            for ext in parsed.extensions() {
                seen.push(ext.oid.to_id_string());
                match ext.parsed_extension() {
                    ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca && ext.critical),
                    ParsedExtension::KeyUsage(ku) => {
                        assert!(ext.critical);
                        assert!(ku.digital_signature() && !ku.key_cert_sign());
                    }
                    ParsedExtension::ExtendedKeyUsage(eku) => {
                        assert!(eku.client_auth && !eku.server_auth && eku.other.is_empty());
                    }
                    ParsedExtension::SubjectKeyIdentifier(id) => {
                        assert_eq!(id.0, key_identifier(&request.public_key_der).as_slice());
                    }
                    ParsedExtension::AuthorityKeyIdentifier(aki) => {
                        let ca_ski = ca_parsed
                            .extensions()
                            .iter()
                            .find_map(|e| match e.parsed_extension() {
                                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                                _ => None,
                            })
                            .unwrap();
                        assert_eq!(aki.key_identifier.as_ref().unwrap().0, ca_ski.as_slice());
                        assert!(aki.authority_cert_issuer.is_none());
                    }
                    other => panic!("unexpected extension {other:?}"),
                }
            }
            seen.sort();
            assert_eq!(seen, ["2.5.29.14", "2.5.29.15", "2.5.29.19", "2.5.29.35", "2.5.29.37"]);
            assert!(
                !parsed.extensions().iter().any(|e| matches!(
                    e.parsed_extension(),
                    ParsedExtension::SubjectAlternativeName(san) if san.general_names.iter().any(|n| matches!(n, GeneralName::DNSName(_)))
                )),
                "the CSR's SAN is not copied"
            );
        }
    }

    #[tokio::test]
    async fn two_certificates_for_one_csr_have_different_serials() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let ca = ca_for(&signer, NOW + 86_400 * 3650, true);
        let (request, _) = csr("sensor-1");
        let a = issue(&signer, &ca, &request).await.unwrap();
        let b = issue(&signer, &ca, &request).await.unwrap();
        assert_ne!(a.serial, b.serial);
    }

    #[tokio::test]
    async fn validity_stops_at_the_cas_not_after_and_aki_falls_back_to_the_cas_key() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let ca_end = NOW + 30 * 86_400;
        let ca = ca_for(&signer, ca_end, false);
        let (request, _) = csr("sensor-2");
        let issued = issue(&signer, &ca, &request).await.unwrap();
        assert_eq!(issued.not_after, ca_end);
        assert!(issued.is_signed_by(&ca));
        let (_, parsed) = X509Certificate::from_der(issued.der()).unwrap();
        let aki = parsed
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
                _ => None,
            })
            .unwrap();
        assert_eq!(aki, key_identifier(&ca.public_key_der()));
    }

    #[tokio::test]
    async fn a_signer_whose_key_is_not_the_cas_signs_nothing() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let other = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let ca = ca_for(&other, NOW + 86_400 * 3650, true);
        let (request, _) = csr("sensor-3");
        assert!(matches!(
            issue(&signer, &ca, &request).await,
            Err(IssuanceError::KeyMismatch)
        ));
        assert_eq!(signer.signs.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_signature_that_does_not_verify_is_not_handed_out() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP384Sha384);
        let ca = ca_for(&signer, NOW + 86_400 * 3650, true);
        signer.corrupt.store(true, Ordering::SeqCst);
        let (request, _) = csr("sensor-4");
        assert!(matches!(
            issue(&signer, &ca, &request).await,
            Err(IssuanceError::BadSignature)
        ));
    }

    #[tokio::test]
    async fn a_csr_without_proof_of_possession_or_a_ca_that_cannot_issue_signs_nothing() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let ca = ca_for(&signer, NOW + 86_400 * 3650, true);
        let (mut request, _) = csr("sensor-5");
        request.signature_valid = false;
        assert!(matches!(
            issue(&signer, &ca, &request).await,
            Err(IssuanceError::NoProofOfPossession)
        ));

        let (request, _) = csr("sensor-5");
        // The CA certificate expired, or not yet valid.
        for now in [NOW + 86_400 * 3650, NOW - 2 * 86_400] {
            let error = issue_device_certificate(&signer, &ca, &request, now, &SETTINGS)
                .await
                .unwrap_err();
            assert!(matches!(error, IssuanceError::CaUnusable(_)), "{error}");
        }
        // A device certificate (not a CA) as the CA.
        let device_ca = issue(&signer, &ca, &request).await.unwrap();
        let error = issue(&signer, &device_ca, &request).await.unwrap_err();
        assert!(matches!(error, IssuanceError::CaUnusable(_)), "{error}");
        assert_eq!(
            signer.signs.load(Ordering::SeqCst),
            1,
            "only the one good issuance signed"
        );
    }

    #[tokio::test]
    async fn signer_failures_keep_their_class() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let ca = ca_for(&signer, NOW + 86_400 * 3650, true);
        let (request, _) = csr("sensor-6");
        for (kind, transient) in [(PortErrorKind::Transient, true), (PortErrorKind::AccessDenied, false)] {
            *signer.fail.lock().unwrap() = Some(kind);
            let error = issue(&signer, &ca, &request).await.unwrap_err();
            assert!(matches!(&error, IssuanceError::Signer(e) if e.kind == kind), "{error}");
            assert_eq!(error.is_transient(), transient);
        }
    }

    #[tokio::test]
    async fn a_self_signed_ca_through_the_signer_issues_device_certificates_that_chain_to_it() {
        for algorithm in [SignatureAlgorithm::EcdsaP256Sha256, SignatureAlgorithm::RsaPkcs1Sha256] {
            let signer = MemorySigner::generate(algorithm);
            let name = CaName {
                common_name: "Acme Fleet CA".into(),
                organization: Some("Acme Ünïcode".into()),
            };
            let ca = self_signed_ca_certificate(&signer, &name, NOW, &SETTINGS)
                .await
                .unwrap();
            assert!(ca.is_ca);
            assert!(ca.is_signed_by(&ca), "{algorithm}: self-signed");
            assert!(ca.issuer_matches_subject_of(&ca));
            assert_eq!(ca.subject_dn, "O=Acme Ünïcode, CN=Acme Fleet CA");
            assert_eq!(ca.public_key_der(), signer.signing_key().await.unwrap().public_key_der);
            assert_eq!((ca.not_before, ca.not_after), (NOW - 300, NOW + 365 * 86_400));
            let (_, parsed) = X509Certificate::from_der(ca.der()).unwrap();
            let bc = parsed.basic_constraints().unwrap().unwrap();
            assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint == Some(0));
            let ku = parsed.key_usage().unwrap().unwrap();
            assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign() && !ku.value.digital_signature());

            let (request, _) = csr("sensor-7");
            let device = issue(&signer, &ca, &request).await.unwrap();
            assert!(device.is_signed_by(&ca) && device.issuer_matches_subject_of(&ca));
        }
    }

    #[tokio::test]
    async fn ca_names_x509_cannot_carry_are_refused_before_signing() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let long = "x".repeat(65);
        for (cn, o) in [
            ("", None),
            ("  ", None),
            (long.as_str(), None),
            ("CA", Some("bad\nname")),
        ] {
            let name = CaName {
                common_name: cn.to_string(),
                organization: o.map(str::to_string),
            };
            let error = self_signed_ca_certificate(&signer, &name, NOW, &SETTINGS)
                .await
                .unwrap_err();
            assert!(matches!(error, IssuanceError::InvalidName(_)), "{error}");
        }
        assert_eq!(signer.signs.load(Ordering::SeqCst), 0);
        *signer.fail.lock().unwrap() = Some(PortErrorKind::AccessDenied);
        let name = CaName {
            common_name: "CA".into(),
            organization: None,
        };
        let error = self_signed_ca_certificate(&signer, &name, NOW, &SETTINGS)
            .await
            .unwrap_err();
        assert!(matches!(error, IssuanceError::Signer(_)), "{error}");
        *signer.fail.lock().unwrap() = None;
        signer.corrupt.store(true, Ordering::SeqCst);
        let error = self_signed_ca_certificate(&signer, &name, NOW, &SETTINGS)
            .await
            .unwrap_err();
        assert!(matches!(error, IssuanceError::BadSignature), "{error}");
    }

    #[test]
    fn der_lengths_and_times_encode_as_x690_says() {
        assert_eq!(tlv(0x04, &[7; 3]), [0x04, 0x03, 7, 7, 7]);
        assert_eq!(&tlv(0x04, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(&tlv(0x04, &[0; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
        assert_eq!(time(0).unwrap(), tlv(0x17, b"700101000000Z"));
        assert_eq!(time(NOW).unwrap(), tlv(0x17, b"270115080000Z"));
        // 2050-01-01T00:00:00Z
        assert_eq!(time(2_524_608_000).unwrap(), tlv(0x18, b"20500101000000Z"));
        for _ in 0..64 {
            let serial = random_serial().unwrap();
            assert_eq!(serial[0] & 0xc0, 0x40);
        }
    }
}
