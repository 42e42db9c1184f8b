//! X.509 facts the checks need, parsed once from PEM into owned values.
//!
//! Parsing is strict: anything x509-parser cannot read in full is malformed.
//! Signature verification uses aws-lc-rs through x509-parser's `verify-aws`
//! feature, the same crypto backend as the AWS SDK's TLS stack.

use std::fmt;

use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

/// A subject field usable in naming rules and attribute mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SubjectField {
    #[serde(rename = "CN")]
    CommonName,
    #[serde(rename = "O")]
    Organization,
    #[serde(rename = "OU")]
    OrganizationalUnit,
    #[serde(rename = "serialNumber")]
    SerialNumber,
    #[serde(rename = "C")]
    Country,
    #[serde(rename = "ST")]
    State,
    #[serde(rename = "dnQualifier")]
    DnQualifier,
}

impl SubjectField {
    pub const ALL: [SubjectField; 7] = [
        Self::CommonName,
        Self::Organization,
        Self::OrganizationalUnit,
        Self::SerialNumber,
        Self::Country,
        Self::State,
        Self::DnQualifier,
    ];

    /// The short name used in profiles, e.g. `CN`, `serialNumber`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::CommonName => "CN",
            Self::Organization => "O",
            Self::OrganizationalUnit => "OU",
            Self::SerialNumber => "serialNumber",
            Self::Country => "C",
            Self::State => "ST",
            Self::DnQualifier => "dnQualifier",
        }
    }

    /// Parses a short name as written in profiles.
    pub fn from_short_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.short_name() == name)
    }

    fn oid(self) -> &'static str {
        match self {
            Self::CommonName => "2.5.4.3",
            Self::Organization => "2.5.4.10",
            Self::OrganizationalUnit => "2.5.4.11",
            Self::SerialNumber => "2.5.4.5",
            Self::Country => "2.5.4.6",
            Self::State => "2.5.4.8",
            Self::DnQualifier => "2.5.4.46",
        }
    }
}

impl fmt::Display for SubjectField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// The subject fields a profile can use, first value of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    values: Vec<(SubjectField, String)>,
}

impl Subject {
    /// The first value of a field, if the subject has one.
    pub fn get(&self, field: SubjectField) -> Option<&str> {
        self.values.iter().find(|(f, _)| *f == field).map(|(_, v)| v.as_str())
    }

    /// Builds a subject from field values (tests and tools).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (SubjectField, String)>) -> Self {
        Self {
            values: pairs.into_iter().collect(),
        }
    }
}

/// The public key algorithm and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Rsa {
        bits: usize,
    },
    EcP256,
    EcP384,
    /// Another named curve, by OID.
    EcOther {
        curve: String,
    },
    Ed25519,
    /// Anything else, by algorithm OID.
    Other {
        algorithm: String,
    },
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { bits } => write!(f, "RSA-{bits}"),
            Self::EcP256 => f.write_str("EC P-256"),
            Self::EcP384 => f.write_str("EC P-384"),
            Self::EcOther { curve } => write!(f, "EC curve {curve}"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Other { algorithm } => write!(f, "key algorithm {algorithm}"),
        }
    }
}

/// The certificate could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("certificate is malformed: {0}")]
pub struct MalformedCertificate(pub String);

/// The facts of one parsed certificate (device or CA).
#[derive(Debug, Clone)]
pub struct Certificate {
    der: Vec<u8>,
    /// SHA-256 of the DER, lowercase hex: the IoT certificate id.
    pub fingerprint: String,
    /// Serial number, lowercase hex without separators or leading zero bytes.
    pub serial: String,
    pub subject: Subject,
    /// The subject DN as text (RFC 4514 style), for records and logs.
    pub subject_dn: String,
    pub issuer_dn: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    subject_normalized: Vec<(String, String)>,
    issuer_normalized: Vec<(String, String)>,
    /// Validity bounds in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub key: KeyKind,
    /// The signature algorithm OID, dotted.
    pub signature_algorithm: String,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// keyUsage digitalSignature, when the extension is present.
    pub key_usage_digital_signature: Option<bool>,
    /// extendedKeyUsage clientAuth, when the extension is present.
    pub eku_client_auth: Option<bool>,
}

impl Certificate {
    /// Parses a PEM certificate (the first CERTIFICATE block).
    ///
    /// # Errors
    /// [`MalformedCertificate`] when there is no readable certificate.
    pub fn from_pem(pem: &str) -> Result<Self, MalformedCertificate> {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| MalformedCertificate(format!("PEM: {e}")))?;
        if pem.label != "CERTIFICATE" {
            return Err(MalformedCertificate(format!(
                "PEM block is {:?}, not CERTIFICATE",
                pem.label
            )));
        }
        Self::from_der(pem.contents)
    }

    /// Parses a DER certificate.
    ///
    /// # Errors
    /// [`MalformedCertificate`] when the DER is not a complete certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self, MalformedCertificate> {
        let facts = {
            let (rest, cert) =
                X509Certificate::from_der(&der).map_err(|e| MalformedCertificate(format!("DER: {e}")))?;
            if !rest.is_empty() {
                return Err(MalformedCertificate("trailing bytes after the certificate".into()));
            }
            Facts::read(&cert)?
        };
        let fingerprint = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der));
        Ok(Self {
            der,
            fingerprint,
            serial: facts.serial,
            subject: facts.subject,
            subject_dn: facts.subject_dn,
            issuer_dn: facts.issuer_dn,
            subject_raw: facts.subject_raw,
            issuer_raw: facts.issuer_raw,
            subject_normalized: facts.subject_normalized,
            issuer_normalized: facts.issuer_normalized,
            not_before: facts.not_before,
            not_after: facts.not_after,
            key: facts.key,
            signature_algorithm: facts.signature_algorithm,
            is_ca: facts.is_ca,
            key_usage_digital_signature: facts.key_usage_digital_signature,
            eku_client_auth: facts.eku_client_auth,
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate alone as PEM, from its DER: what is sent to AWS
    /// (never the file it was read from, which may hold other blocks, a
    /// private key among them).
    pub fn to_pem(&self) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut encoded = String::with_capacity(self.der.len() * 4 / 3 + 4);
        for chunk in self.der.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    encoded.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    encoded.push('=');
                }
            }
        }
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// True when this certificate's issuer DN names `ca`'s subject DN: byte
    /// equal, or equal after RFC 5280-style normalisation (string type,
    /// case and inner white space ignored).
    pub fn issuer_matches_subject_of(&self, ca: &Certificate) -> bool {
        self.issuer_raw == ca.subject_raw || self.issuer_normalized == ca.subject_normalized
    }

    /// True when this certificate's signature verifies with `ca`'s public key.
    pub fn is_signed_by(&self, ca: &Certificate) -> bool {
        let (Ok((_, leaf)), Ok((_, issuer))) =
            (X509Certificate::from_der(&self.der), X509Certificate::from_der(&ca.der))
        else {
            return false;
        };
        leaf.verify_signature(Some(issuer.public_key())).is_ok()
    }
}

/// The facts of a certificate signing request (PKCS #10), as a device sends
/// one to rotate its certificate.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    pub subject: Subject,
    pub subject_dn: String,
    /// The subject Name's DER, as the request carries it: what a certificate
    /// issued for the request names, byte for byte.
    pub subject_der: Vec<u8>,
    pub key: KeyKind,
    /// The DER of the requested SubjectPublicKeyInfo, to match against the
    /// certificate issued for it.
    pub public_key_der: Vec<u8>,
    /// The request is signed by the key it carries (proof of possession).
    pub signature_valid: bool,
}

impl CertificateRequest {
    /// Parses a PEM CSR (`CERTIFICATE REQUEST`).
    ///
    /// # Errors
    /// [`MalformedCertificate`] when there is no readable request.
    pub fn from_pem(pem: &str) -> Result<Self, MalformedCertificate> {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| MalformedCertificate(format!("PEM: {e}")))?;
        if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
            return Err(MalformedCertificate(format!(
                "PEM block is {:?}, not CERTIFICATE REQUEST",
                pem.label
            )));
        }
        let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| MalformedCertificate(format!("CSR DER: {e}")))?;
        if !rest.is_empty() {
            return Err(MalformedCertificate("trailing bytes after the request".into()));
        }
        let info = &csr.certification_request_info;
        Ok(Self {
            subject: subject_of(&info.subject)?,
            subject_dn: info.subject.to_string(),
            subject_der: info.subject.as_raw().to_vec(),
            key: key_kind(&info.subject_pki)?,
            public_key_der: info.subject_pki.raw.to_vec(),
            signature_valid: csr.verify_signature().is_ok(),
        })
    }
}

impl Certificate {
    /// The DER of the certificate's SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        X509Certificate::from_der(&self.der)
            .map(|(_, cert)| cert.public_key().raw.to_vec())
            .unwrap_or_default()
    }
}

struct Facts {
    serial: String,
    subject: Subject,
    subject_dn: String,
    issuer_dn: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    subject_normalized: Vec<(String, String)>,
    issuer_normalized: Vec<(String, String)>,
    not_before: i64,
    not_after: i64,
    key: KeyKind,
    signature_algorithm: String,
    is_ca: bool,
    key_usage_digital_signature: Option<bool>,
    eku_client_auth: Option<bool>,
}

impl Facts {
    fn read(cert: &X509Certificate<'_>) -> Result<Self, MalformedCertificate> {
        let bad = |what: &str, e: &dyn fmt::Display| MalformedCertificate(format!("{what}: {e}"));
        let basic = cert.basic_constraints().map_err(|e| bad("basicConstraints", &e))?;
        let key_usage = cert.key_usage().map_err(|e| bad("keyUsage", &e))?;
        let eku = cert.extended_key_usage().map_err(|e| bad("extendedKeyUsage", &e))?;
        Ok(Self {
            serial: normalize_serial_bytes(cert.raw_serial()),
            subject: subject_of(cert.subject())?,
            subject_dn: cert.subject().to_string(),
            issuer_dn: cert.issuer().to_string(),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            subject_normalized: normalized_name(cert.subject()),
            issuer_normalized: normalized_name(cert.issuer()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            key: key_kind(cert.public_key())?,
            signature_algorithm: cert.signature_algorithm.algorithm.to_id_string(),
            is_ca: basic.is_some_and(|b| b.value.ca),
            key_usage_digital_signature: key_usage.map(|k| k.value.digital_signature()),
            eku_client_auth: eku.map(|e| e.value.client_auth),
        })
    }
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

/// The subject fields profiles use, from a distinguished name.
fn subject_of(name: &X509Name<'_>) -> Result<Subject, MalformedCertificate> {
    let mut values = Vec::new();
    for field in SubjectField::ALL {
        let value = name
            .iter_attributes()
            .find(|a| a.attr_type().to_id_string() == field.oid())
            .map(|a| a.as_str().map(str::to_owned))
            .transpose()
            .map_err(|e| MalformedCertificate(format!("subject {field}: {e}")))?;
        if let Some(value) = value {
            values.push((field, value));
        }
    }
    Ok(Subject { values })
}

fn key_kind(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyKind, MalformedCertificate> {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    Ok(match algorithm.as_str() {
        OID_RSA => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyKind::Rsa { bits: rsa.key_size() },
            Ok(_) | Err(_) => return Err(MalformedCertificate("RSA public key does not parse".into())),
        },
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => KeyKind::EcP256,
                OID_P384 => KeyKind::EcP384,
                _ => KeyKind::EcOther { curve },
            }
        }
        OID_ED25519 => KeyKind::Ed25519,
        _ => KeyKind::Other { algorithm },
    })
}

fn normalized_name(name: &X509Name<'_>) -> Vec<(String, String)> {
    name.iter_attributes()
        .map(|a| {
            let value = a
                .as_str()
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase());
            (
                a.attr_type().to_id_string(),
                value.unwrap_or_else(|_| hex::encode(a.attr_value().data)),
            )
        })
        .collect()
}

fn normalize_serial_bytes(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
}

/// Normalises a serial number written by an operator (any case, optional
/// `:` or space separators, optional leading zeros) to the form
/// [`Certificate::serial`] uses. Returns `None` when it is not hexadecimal.
pub fn normalize_serial(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0').to_lowercase();
    let trimmed = if trimmed.is_empty() { "0".to_string() } else { trimmed };
    // Whole bytes, as the DER holds them.
    Some(if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalise_to_whole_lowercase_bytes() {
        assert_eq!(normalize_serial("0A:1b:FF").as_deref(), Some("0a1bff"));
        assert_eq!(normalize_serial("00 00 7f").as_deref(), Some("7f"));
        assert_eq!(normalize_serial("abc").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial("0").as_deref(), Some("00"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
        assert_eq!(normalize_serial_bytes(&[0, 0x0a, 0x1b]), "0a1b");
        assert_eq!(normalize_serial_bytes(&[0]), "00");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(Certificate::from_pem("hello").is_err());
        assert!(Certificate::from_der(vec![0x30, 0x03, 1, 2, 3]).is_err());
        let not_cert = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(Certificate::from_pem(not_cert).is_err());
    }
}
