//! New credentials made on the device: a key of the same kind as the
//! current one, a CSR whose subject copies the current certificate's, and
//! the check that an issued certificate belongs to its key.

use onboarding_domain::KeyKind;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The key's kind in words, as the agent reports it.
pub(super) fn key_name(kind: &KeyKind) -> String {
    match kind {
        KeyKind::EcP256 | KeyKind::EcP384 | KeyKind::Ed25519 => kind.to_string(),
        KeyKind::Rsa { bits } => format!("RSA-{}", rsa_size(*bits).1),
        _ => "P-256".to_string(),
    }
}

fn rsa_size(bits: usize) -> (RsaKeySize, usize) {
    match bits {
        4096.. => (RsaKeySize::_4096, 4096),
        3072.. => (RsaKeySize::_3072, 3072),
        // Never below 2048, whatever the old key was.
        _ => (RsaKeySize::_2048, 2048),
    }
}

/// A key of the same kind as the current one (P-256 when it is unknown).
fn new_key(kind: &KeyKind) -> Result<KeyPair, rcgen::Error> {
    match kind {
        KeyKind::EcP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyKind::Ed25519 => KeyPair::generate_for(&PKCS_ED25519),
        KeyKind::Rsa { bits } => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rsa_size(*bits).0),
        _ => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
    }
}

/// A new key and a CSR whose subject copies the current certificate's (CN
/// replaced by `foreign`, if given); also the subject in words.
pub(super) fn make_csr(
    cert_pem: &str,
    kind: &KeyKind,
    foreign: Option<&str>,
) -> Result<(KeyPair, String, String), String> {
    let mut subject = subject_of(cert_pem)?;
    if let Some(name) = foreign {
        subject.push(DnType::CommonName, name);
    }
    let words = subject
        .iter()
        .map(|(ty, value)| format!("{}={}", dn_name(ty), dn_text(value)))
        .collect::<Vec<_>>()
        .join(", ");
    let key = new_key(kind).map_err(|e| format!("key generation: {e}"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = subject;
    let csr = params.serialize_request(&key).map_err(|e| format!("CSR: {e}"))?;
    let pem = csr.pem().map_err(|e| format!("CSR: {e}"))?;
    Ok((key, pem, words))
}

/// A certificate's subject as rcgen writes it: same attributes, same order,
/// PrintableString kept where it was used.
fn subject_of(cert_pem: &str) -> Result<DistinguishedName, String> {
    use x509_parser::asn1_rs::Tag;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| format!("certificate: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("certificate: {e}"))?;
    let mut dn = DistinguishedName::new();
    for attribute in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or("a subject attribute with an unreadable type")?
            .collect();
        let ty = match oid.as_slice() {
            [2, 5, 4, 3] => DnType::CommonName,
            [2, 5, 4, 6] => DnType::CountryName,
            [2, 5, 4, 7] => DnType::LocalityName,
            [2, 5, 4, 8] => DnType::StateOrProvinceName,
            [2, 5, 4, 10] => DnType::OrganizationName,
            [2, 5, 4, 11] => DnType::OrganizationalUnitName,
            _ => DnType::CustomDnType(oid),
        };
        let text = attribute
            .as_str()
            .map_err(|e| format!("subject attribute {}: {e}", attribute.attr_type()))?;
        let value = match attribute.attr_value().tag() {
            Tag::PrintableString => DnValue::PrintableString(text.try_into().map_err(|e| format!("{e}"))?),
            _ => DnValue::Utf8String(text.to_string()),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

fn dn_name(ty: &DnType) -> String {
    match ty {
        DnType::CommonName => "CN".into(),
        DnType::CountryName => "C".into(),
        DnType::LocalityName => "L".into(),
        DnType::StateOrProvinceName => "ST".into(),
        DnType::OrganizationName => "O".into(),
        DnType::OrganizationalUnitName => "OU".into(),
        DnType::CustomDnType(oid) if oid.as_slice() == [2, 5, 4, 5] => "serialNumber".into(),
        DnType::CustomDnType(oid) => oid.iter().map(u64::to_string).collect::<Vec<_>>().join("."),
        other => format!("{other:?}"),
    }
}

fn dn_text(value: &DnValue) -> String {
    match value {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

/// Checks that the key belongs to the certificate; returns the certificate id
/// (SHA-256 of the DER, hex, as AWS IoT names certificates).
pub(super) fn check_pair(cert_pem: &str, key_pem: &str) -> Result<String, String> {
    use x509_parser::prelude::FromDer;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| format!("certificate PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("private key PEM: {e}"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    let spki = signing.public_key().ok_or("the private key's public half is unknown")?;
    let (_, public) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).map_err(|e| format!("public key: {e}"))?;
    if public.subject_public_key.data != cert.public_key().subject_public_key.data {
        return Err("the certificate is not for this private key".into());
    }
    Ok(hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)))
}

#[cfg(test)]
mod tests {
    use onboarding_domain::{Certificate, SubjectField};

    use super::*;

    #[test]
    fn a_csr_copies_the_subject_and_keeps_the_key_kind() -> Result<(), Box<dyn std::error::Error>> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "dev-7");
        params.distinguished_name.push(DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-7");
        let cert = params.self_signed(&key)?;
        let old = Certificate::from_pem(&cert.pem())?;
        let (new_key, csr, words) = make_csr(&cert.pem(), &old.key, None)?;
        assert_eq!(words, "CN=dev-7, O=Acme, serialNumber=SN-7");
        let parsed = onboarding_domain::CertificateRequest::from_pem(&csr)?;
        assert!(parsed.signature_valid);
        assert_eq!(parsed.key, KeyKind::EcP384);
        assert_eq!(parsed.subject.get(SubjectField::SerialNumber), Some("SN-7"));
        assert_ne!(new_key.serialize_pem(), key.serialize_pem());

        let (_, csr, words) = make_csr(&cert.pem(), &old.key, Some("someone-else"))?;
        assert!(words.starts_with("CN=someone-else"), "{words}");
        let parsed = onboarding_domain::CertificateRequest::from_pem(&csr)?;
        assert_eq!(parsed.subject.get(SubjectField::CommonName), Some("someone-else"));
        assert_eq!(parsed.subject.get(SubjectField::Organization), Some("Acme"));
        Ok(())
    }

    #[test]
    fn a_certificate_is_checked_against_its_key() -> Result<(), Box<dyn std::error::Error>> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = CertificateParams::new(vec!["x".to_string()])?.self_signed(&key)?;
        let id = check_pair(&cert.pem(), &key.serialize_pem())?;
        assert_eq!(id, Certificate::from_pem(&cert.pem())?.fingerprint);
        assert!(check_pair(&cert.pem(), &other.serialize_pem()).is_err());
        Ok(())
    }

    #[test]
    fn rsa_keys_are_never_below_2048_bits() {
        assert_eq!(rsa_size(1024).1, 2048);
        assert_eq!(rsa_size(2048).1, 2048);
        assert_eq!(rsa_size(3072).1, 3072);
        assert_eq!(rsa_size(8192).1, 4096);
        assert_eq!(key_name(&KeyKind::Rsa { bits: 1024 }), "RSA-2048");
    }
}
