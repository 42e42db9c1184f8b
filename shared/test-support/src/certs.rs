//! A CA and device certificate factory for tests, built on rcgen.
//!
//! What rcgen cannot make (SHA-1 signatures, RSA-1024 keys) comes from the
//! openssl-made files in `fixtures/` (see `fixtures/make-fixtures.sh`).

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512,
    PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize, SerialNumber, SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};

/// Errors from the factory (rcgen or fixture problems).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("rcgen: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("fixture {0} is missing or unreadable")]
    Fixture(&'static str),
    #[error("re-signing: {0}")]
    Der(&'static str),
}

/// Just enough DER to take a certificate apart and put it back together.
mod der {
    /// The content of the TLV at the start of `bytes`, if its tag is `tag` and
    /// it spans all of `bytes`.
    pub fn content(bytes: &[u8], tag: u8) -> Option<&[u8]> {
        let (t, content, rest) = next(bytes)?;
        (t == tag && rest.is_empty()).then_some(content)
    }

    /// The whole TLVs a content is made of, in order.
    pub fn children(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (_, _, rest) = next(bytes)?;
            out.push(&bytes[..bytes.len() - rest.len()]);
            bytes = rest;
        }
        Some(out)
    }

    fn next(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, bytes) = bytes.split_first()?;
        let (&first, bytes) = bytes.split_first()?;
        let (len, bytes) = if first < 0x80 {
            (usize::from(first), bytes)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || bytes.len() < n {
                return None;
            }
            let len = bytes[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &bytes[n..])
        };
        (bytes.len() >= len).then(|| (tag, &bytes[..len], &bytes[len..]))
    }

    /// PEM armour, 64 base64 characters a line (the SDK's base64).
    pub fn pem(label: &str, der: &[u8]) -> String {
        let b64 = aws_smithy_types::base64::encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    /// A definite-length TLV.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap_or(0));
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | u8::try_from(bytes.len()).unwrap_or(0));
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
}

/// Key algorithms the factory can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    P256,
    P384,
    /// P-521: a curve the registrar's profile refuses (`UNSUPPORTED_KEY`).
    P521,
    Ed25519,
    Rsa2048,
    Rsa3072,
    /// A 1024-bit RSA public key from the fixtures (no private key: the
    /// certificate is only for checks, a device could not use it).
    Rsa1024,
}

impl KeyAlg {
    fn generate(self) -> Result<Option<KeyPair>, CertError> {
        Ok(Some(match self {
            Self::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            Self::P384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?,
            Self::P521 => KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512)?,
            Self::Ed25519 => KeyPair::generate_for(&PKCS_ED25519)?,
            Self::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?,
            Self::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072)?,
            Self::Rsa1024 => return Ok(None),
        }))
    }
}

/// Reads a fixture file shipped in `fixtures/`.
///
/// # Errors
/// [`CertError::Fixture`] when the file is missing.
pub fn fixture(name: &'static str) -> Result<String, CertError> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(path).map_err(|_| CertError::Fixture(name))
}

/// A test CA that can sign device and verification certificates.
pub struct TestCa {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn ca_params(common_name: &str) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Onboarding Test Manufacturer");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    Ok(params)
}

impl TestCa {
    /// A P-256 CA with this common name.
    ///
    /// # Errors
    /// rcgen failures.
    pub fn new(common_name: &str) -> Result<Self, CertError> {
        Self::with_key(common_name, KeyAlg::P256)
    }

    /// A CA with a chosen key algorithm (not [`KeyAlg::Rsa1024`]).
    ///
    /// # Errors
    /// rcgen failures.
    pub fn with_key(common_name: &str, alg: KeyAlg) -> Result<Self, CertError> {
        let key = alg.generate()?.ok_or(CertError::Fixture("a CA needs a private key"))?;
        let params = ca_params(common_name)?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from PEM files (e.g. one made by an operator tool).
    ///
    /// # Errors
    /// rcgen failures reading the PEMs.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// Starts a device certificate signed by this CA (P-256, CN `device`, valid
    /// from yesterday for a year, clientAuth EKU, digitalSignature key usage).
    pub fn device(&self, common_name: &str) -> DeviceBuilder<'_> {
        let now = OffsetDateTime::now_utc();
        DeviceBuilder {
            ca: self,
            subject: vec![(DnType::CommonName, common_name.to_string())],
            key: KeyAlg::P256,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
            is_ca: false,
            eku: Some(vec![ExtendedKeyUsagePurpose::ClientAuth]),
            key_usage: Some(vec![KeyUsagePurpose::DigitalSignature]),
            serial: None,
            extra: Vec::new(),
        }
    }

    /// The same certificate signed again by this CA under ecdsa-with-SHA3-384
    /// (OID 2.16.840.1.101.3.4.3.11): a real signature from this CA's key, in
    /// an algorithm rcgen does not offer and the registrar does not accept.
    /// The CA must have a P-384 key ([`TestCa::with_key`]).
    ///
    /// # Errors
    /// A CA key that is not P-384, or a certificate that is not DER.
    pub fn resign_ecdsa_sha3_384(&self, device: &DeviceCert) -> Result<DeviceCert, CertError> {
        const ECDSA_WITH_SHA3_384: [u8; 11] = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x0b];
        let bad = |what: &'static str| CertError::Der(what);
        let cert =
            der::children(der::content(&device.der, 0x30).ok_or(bad("certificate"))?).ok_or(bad("certificate"))?;
        let tbs = cert.first().ok_or(bad("tbsCertificate"))?;
        let mut fields =
            der::children(der::content(tbs, 0x30).ok_or(bad("tbsCertificate"))?).ok_or(bad("tbsCertificate fields"))?;
        // version [0], serialNumber, signature AlgorithmIdentifier, ...
        let algorithm = der::tlv(0x30, &ECDSA_WITH_SHA3_384);
        *fields.get_mut(2).ok_or(bad("tbsCertificate signature"))? = &algorithm;
        let tbs = der::tlv(0x30, &fields.concat());
        let pkcs8 = KeyPair::from_pem(&self.key_pem)?.serialize_der();
        let signer = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P384_SHA3_384_ASN1_SIGNING,
            &pkcs8,
        )
        .map_err(|_| bad("the CA key is not P-384"))?;
        let signature = signer
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &tbs)
            .map_err(|_| bad("signing failed"))?;
        let mut bits = vec![0u8];
        bits.extend_from_slice(signature.as_ref());
        let der = der::tlv(0x30, &[tbs, algorithm, der::tlv(0x03, &bits)].concat());
        let cert_pem = der::pem("CERTIFICATE", &der);
        Ok(DeviceCert {
            cert_pem,
            key_pem: device.key_pem.clone(),
            der,
        })
    }

    /// The verification certificate IoT asks for when registering a CA: its
    /// CN is the account's registration code.
    ///
    /// # Errors
    /// rcgen failures.
    pub fn verification_certificate(&self, registration_code: &str) -> Result<String, CertError> {
        Ok(self.device(registration_code).eku(None).build()?.cert_pem)
    }
}

/// A device certificate and its key.
#[derive(Clone)]
pub struct DeviceCert {
    pub cert_pem: String,
    /// `None` for fixture keys without a private half. Never in debug output.
    pub key_pem: Option<String>,
    pub der: Vec<u8>,
}

impl std::fmt::Debug for DeviceCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Builder for device certificates.
pub struct DeviceBuilder<'a> {
    ca: &'a TestCa,
    subject: Vec<(DnType, String)>,
    key: KeyAlg,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    is_ca: bool,
    eku: Option<Vec<ExtendedKeyUsagePurpose>>,
    key_usage: Option<Vec<KeyUsagePurpose>>,
    serial: Option<Vec<u8>>,
    extra: Vec<CustomExtension>,
}

impl DeviceBuilder<'_> {
    /// Adds an extension as given, after the ones the builder makes. Adding
    /// basicConstraints (`2.5.29.19`) a second time makes a certificate that
    /// RFC 5280 forbids and that strict parsers refuse as malformed, though its
    /// signature is good.
    pub fn extension(mut self, oid: &[u64], der_value: &[u8]) -> Self {
        self.extra
            .push(CustomExtension::from_oid_content(oid, der_value.to_vec()));
        self
    }

    /// Replaces the subject (no CN unless given here).
    pub fn subject(mut self, fields: &[(DnType, &str)]) -> Self {
        self.subject = fields.iter().map(|(t, v)| (t.clone(), (*v).to_string())).collect();
        self
    }

    /// Adds a subject field.
    pub fn with(mut self, field: DnType, value: &str) -> Self {
        self.subject.push((field, value.to_string()));
        self
    }

    pub fn key(mut self, key: KeyAlg) -> Self {
        self.key = key;
        self
    }

    /// Validity relative to now, in days (negative is the past).
    pub fn valid_days(mut self, from: i64, to: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + Duration::days(from);
        self.not_after = now + Duration::days(to);
        self
    }

    /// basicConstraints cA=true.
    pub fn ca(mut self, is_ca: bool) -> Self {
        self.is_ca = is_ca;
        self
    }

    /// extendedKeyUsage, or `None` to leave the extension out.
    pub fn eku(mut self, eku: Option<Vec<ExtendedKeyUsagePurpose>>) -> Self {
        self.eku = eku;
        self
    }

    /// keyUsage, or `None` to leave the extension out.
    pub fn key_usage(mut self, usage: Option<Vec<KeyUsagePurpose>>) -> Self {
        self.key_usage = usage;
        self
    }

    pub fn serial(mut self, serial: &[u8]) -> Self {
        self.serial = Some(serial.to_vec());
        self
    }

    /// Signs the certificate.
    ///
    /// # Errors
    /// rcgen failures, or a missing fixture.
    pub fn build(self) -> Result<DeviceCert, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        for (t, v) in &self.subject {
            dn.push(t.clone(), v.as_str());
        }
        params.distinguished_name = dn;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.is_ca = if self.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.extended_key_usages = self.eku.unwrap_or_default();
        params.key_usages = self.key_usage.unwrap_or_default();
        params.serial_number = self.serial.map(SerialNumber::from);
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = self.extra;
        let (cert, key_pem) = match self.key.generate()? {
            Some(key) => (params.signed_by(&key, &self.ca.issuer)?, Some(key.serialize_pem())),
            None => {
                let spki = SubjectPublicKeyInfo::from_pem(&fixture("rsa1024.pub.pem")?)?;
                (params.signed_by(&spki, &self.ca.issuer)?, None)
            }
        };
        Ok(DeviceCert {
            cert_pem: cert.pem(),
            key_pem,
            der: cert.der().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_armour_matches_rcgen() -> Result<(), CertError> {
        let ca = TestCa::new("Armour CA")?;
        let device = ca.device("armour-1").build()?;
        assert_eq!(der::pem("CERTIFICATE", &device.der), device.cert_pem);
        Ok(())
    }

    #[test]
    fn a_resigned_certificate_names_sha3_and_verifies_with_the_ca_key() -> Result<(), Box<dyn std::error::Error>> {
        let ca = TestCa::with_key("SHA3 CA", KeyAlg::P384)?;
        let device = ca.resign_ecdsa_sha3_384(&ca.device("sha3-1").build()?)?;
        let cert = der::children(der::content(&device.der, 0x30).ok_or("certificate")?).ok_or("fields")?;
        let [tbs, algorithm, signature] = cert.as_slice() else {
            return Err("three fields".into());
        };
        let oid = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x0b];
        assert_eq!(*algorithm, der::tlv(0x30, &oid).as_slice());
        let tbs_fields = der::children(der::content(tbs, 0x30).ok_or("tbs")?).ok_or("tbs fields")?;
        assert_eq!(tbs_fields[2], *algorithm, "the TBS names the same algorithm");
        let ca_cert = pem_der(&ca.cert_pem)?;
        let ca_der = der::children(der::content(&ca_cert, 0x30).ok_or("ca")?).ok_or("ca fields")?;
        let ca_tbs = der::children(der::content(ca_der[0], 0x30).ok_or("ca tbs")?).ok_or("ca tbs fields")?;
        let spki = der::children(der::content(ca_tbs[6], 0x30).ok_or("spki")?).ok_or("spki fields")?;
        let point = &der::content(spki[1], 0x03).ok_or("bit string")?[1..];
        let bits = der::content(signature, 0x03).ok_or("signature")?;
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P384_SHA3_384_ASN1, point)
            .verify(tbs, &bits[1..])
            .map_err(|_| "the signature does not verify with the CA's key")?;
        assert_eq!(der::pem("CERTIFICATE", &device.der), device.cert_pem);
        Ok(())
    }

    fn pem_der(pem: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        Ok(CertificateDer::from_pem_slice(pem.as_bytes())?.to_vec())
    }
}
