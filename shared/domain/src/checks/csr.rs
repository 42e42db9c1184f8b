//! The checks of a rotation: the CSR a device sends, and the keys that can
//! rotate with the CSR strategy.

use crate::model::certificate::{CertificateRequest, KeyKind};
use crate::model::reason::{RejectReason, Rejection};
use crate::policy::profile::{DeviceProfile, NameError};
use crate::policy::rotation::{RotationPolicy, Strategy};

/// The OID of the NIST P-521 curve (secp521r1).
const OID_P521: &str = "1.3.132.0.35";

/// The key types `CreateCertificateFromCsr` accepts, in words.
pub const CSR_KEYS: &str = "RSA of at least 2048 bits, EC P-256, P-384 or P-521";

/// Key types the registrar onboards that `CreateCertificateFromCsr` refuses:
/// devices holding them cannot rotate with the CSR strategy.
pub const KEYS_WITHOUT_CSR_ROTATION: &[&str] = &["Ed25519"];

/// Checks a CSR's key against what AWS IoT's `CreateCertificateFromCsr`
/// accepts, so that a key it would refuse is answered at once instead of
/// failing the call and leaving the attempt to time out.
///
/// # Errors
/// `WEAK_KEY` for RSA under 2048 bits, `UNSUPPORTED_KEY` for anything else
/// outside [`CSR_KEYS`] (Ed25519 included).
pub fn check_csr_key(key: &KeyKind) -> Result<(), Rejection> {
    match key {
        KeyKind::Rsa { bits } if *bits >= 2048 => Ok(()),
        KeyKind::Rsa { bits } => Err(Rejection::new(
            RejectReason::WeakKey,
            format!("RSA key of {bits} bits; CreateCertificateFromCsr needs at least 2048"),
        )),
        KeyKind::EcP256 | KeyKind::EcP384 => Ok(()),
        KeyKind::EcOther { curve } if curve == OID_P521 => Ok(()),
        other => Err(Rejection::new(
            RejectReason::UnsupportedKey,
            format!("{other}: CreateCertificateFromCsr accepts only {CSR_KEYS}"),
        )),
    }
}

/// The key types a profile onboards that its rotation strategy cannot
/// rotate (empty for server-keygen, which makes a new key of AWS IoT's own).
pub fn keys_that_cannot_rotate(policy: &RotationPolicy) -> &'static [&'static str] {
    match policy.strategy {
        Strategy::Csr => KEYS_WITHOUT_CSR_ROTATION,
        Strategy::ServerKeygen => &[],
    }
}

/// The warning `profile put` prints for a profile whose rotation strategy
/// cannot rotate some key types the registrar onboards; `None` when every
/// onboarded key can rotate.
pub fn rotation_key_warning(profile: &DeviceProfile) -> Option<String> {
    let keys = keys_that_cannot_rotate(&profile.rotation);
    (!keys.is_empty()).then(|| {
        format!(
            "profile {} rotates with strategy csr, but devices onboarded with {} keys cannot rotate that way \
             (CreateCertificateFromCsr accepts only {CSR_KEYS}): their CSRs are refused with UNSUPPORTED_KEY; \
             use strategy serverKeygen for them, or onboard only those key types",
            profile.name,
            keys.join(", ")
        )
    })
}

/// Checks a device's CSR for a rotation: signed by its own key, a key
/// `CreateCertificateFromCsr` accepts ([`check_csr_key`]), and a subject that names the same thing under the
/// profile's naming rule.
///
/// # Errors
/// A [`Rejection`] with the registrar's reason codes (`CERTIFICATE_MALFORMED`,
/// `SIGNATURE_INVALID`, `WEAK_KEY`, `UNSUPPORTED_KEY`, `THING_NAME_MISSING`,
/// `THING_NAME_INVALID`) or `IDENTITY_COLLISION` for another thing's name.
pub fn check_csr(csr_pem: &str, profile: &DeviceProfile, thing_name: &str) -> Result<CertificateRequest, Rejection> {
    let csr = CertificateRequest::from_pem(csr_pem)
        .map_err(|e| Rejection::new(RejectReason::CertificateMalformed, e.to_string()))?;
    if !csr.signature_valid {
        return Err(Rejection::new(
            RejectReason::SignatureInvalid,
            "the CSR is not signed by the key it carries",
        ));
    }
    check_csr_key(&csr.key)?;
    let named = profile.thing_name_for(&csr.subject).map_err(|e| match e {
        NameError::Missing(field) => Rejection::new(
            RejectReason::ThingNameMissing,
            format!("the CSR's subject has no {field}, which the naming rule uses"),
        ),
        NameError::Invalid(name) => Rejection::new(
            RejectReason::ThingNameInvalid,
            format!("the CSR names {name:?}, not a valid thing name"),
        ),
    })?;
    if named != thing_name {
        return Err(Rejection::new(
            RejectReason::IdentityCollision,
            format!("the CSR names thing {named:?}, but it came from {thing_name:?}"),
        ));
    }
    Ok(csr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_keys_are_what_create_certificate_from_csr_accepts() {
        for ok in [
            KeyKind::Rsa { bits: 2048 },
            KeyKind::Rsa { bits: 4096 },
            KeyKind::EcP256,
            KeyKind::EcP384,
            KeyKind::EcOther {
                curve: "1.3.132.0.35".into(),
            },
        ] {
            assert_eq!(check_csr_key(&ok), Ok(()), "{ok}");
        }
        let code = |k: KeyKind| check_csr_key(&k).err().map(|r| r.reason.code());
        assert_eq!(code(KeyKind::Rsa { bits: 1024 }), Some("WEAK_KEY"));
        assert_eq!(code(KeyKind::Ed25519), Some("UNSUPPORTED_KEY"));
        assert_eq!(
            code(KeyKind::EcOther {
                curve: "1.3.132.0.10".into()
            }),
            Some("UNSUPPORTED_KEY")
        );
        let mut profile = DeviceProfile::minimal("p", "pol");
        let warning = rotation_key_warning(&profile).unwrap_or_default();
        assert!(
            warning.contains("Ed25519") && warning.contains("serverKeygen"),
            "{warning}"
        );
        profile.rotation.strategy = Strategy::ServerKeygen;
        assert_eq!(rotation_key_warning(&profile), None);
    }
}
