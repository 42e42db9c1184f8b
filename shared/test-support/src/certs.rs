//! A CA and device certificate factory for tests, built on rcgen.
//!
//! What rcgen cannot make (SHA-1 signatures, RSA-1024 keys) comes from the
//! openssl-made files in `fixtures/` (see `fixtures/make-fixtures.sh`).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512, PKCS_ED25519,
    PKCS_RSA_SHA256, RsaKeySize, SerialNumber, SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};

/// Errors from the factory (rcgen or fixture problems).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("rcgen: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("fixture {0} is missing or unreadable")]
    Fixture(&'static str),
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
        }
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
}

impl DeviceBuilder<'_> {
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
