//! Why a certificate is rejected: one variant per check, each with a stable
//! code that logs, metrics and the inventory carry.

use serde::{Deserialize, Serialize};

/// The reason a certificate was refused onboarding.
///
/// The codes returned by [`RejectReason::code`] are a public contract: logs,
/// metric dimensions, inventory records and alarms match on them. Never rename
/// one; add a new variant instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    /// The certificate's CA in IoT is not the CA named by the event.
    CaMismatch,
    /// The signing CA is not ACTIVE in IoT (or not registered at all).
    CaNotActive,
    /// The CA is not bound to any device profile, so it is not trusted for onboarding.
    CaNotBound,
    /// The certificate PEM/DER could not be parsed.
    CertificateMalformed,
    /// The certificate's issuer DN differs from the CA's subject DN.
    IssuerMismatch,
    /// The signature does not verify against the CA's public key.
    SignatureInvalid,
    /// Signed with SHA-1 or MD5.
    WeakSignatureAlgorithm,
    /// Signed with an algorithm outside the allowed set.
    UnsupportedSignatureAlgorithm,
    /// RSA key shorter than 2048 bits.
    WeakKey,
    /// A key type or curve outside RSA ≥ 2048, P-256, P-384, Ed25519.
    UnsupportedKey,
    /// basicConstraints says cA=true on a device certificate.
    CertificateIsCa,
    /// keyUsage is present and does not allow digitalSignature.
    KeyUsageInvalid,
    /// extendedKeyUsage is present and does not include clientAuth.
    ExtendedKeyUsageInvalid,
    /// now < notBefore − allowed clock skew.
    NotYetValid,
    /// now > notAfter.
    Expired,
    /// Less lifetime left than the profile's minimum.
    InsufficientRemainingValidity,
    /// The naming rule refers to a subject field the certificate lacks.
    ThingNameMissing,
    /// The name built by the naming rule is not a valid thing name.
    ThingNameInvalid,
    /// A mapped attribute value does not fit AWS's charset or length, and the profile rejects unfit values.
    AttributeInvalid,
    /// The serial number is on the deny-list.
    SerialDenied,
    /// The SHA-256 fingerprint is on the deny-list.
    FingerprintDenied,
    /// The thing name belongs to another certificate that is ACTIVE or being onboarded.
    IdentityCollision,
    /// A thing of that name exists with another thing type.
    ThingTypeMismatch,
    /// Fleet provisioning: the device's serial is not on the allow-list.
    SerialNotAllowed,
    /// Fleet provisioning: the device's parameters are missing or malformed.
    ParametersInvalid,
    /// The certificate does not match the id it was presented under.
    CertificateMismatch,
    /// The certificate's device was retired: it never comes back.
    CertificateRetired,
}

impl RejectReason {
    /// Every reason, in documentation order.
    pub const ALL: [RejectReason; 27] = [
        Self::CaMismatch,
        Self::CaNotActive,
        Self::CaNotBound,
        Self::CertificateMalformed,
        Self::IssuerMismatch,
        Self::SignatureInvalid,
        Self::WeakSignatureAlgorithm,
        Self::UnsupportedSignatureAlgorithm,
        Self::WeakKey,
        Self::UnsupportedKey,
        Self::CertificateIsCa,
        Self::KeyUsageInvalid,
        Self::ExtendedKeyUsageInvalid,
        Self::NotYetValid,
        Self::Expired,
        Self::InsufficientRemainingValidity,
        Self::ThingNameMissing,
        Self::ThingNameInvalid,
        Self::AttributeInvalid,
        Self::SerialDenied,
        Self::FingerprintDenied,
        Self::IdentityCollision,
        Self::ThingTypeMismatch,
        Self::SerialNotAllowed,
        Self::ParametersInvalid,
        Self::CertificateMismatch,
        Self::CertificateRetired,
    ];

    /// The stable code, e.g. `SIGNATURE_INVALID`.
    pub fn code(self) -> &'static str {
        match self {
            Self::CaMismatch => "CA_MISMATCH",
            Self::CaNotActive => "CA_NOT_ACTIVE",
            Self::CaNotBound => "CA_NOT_BOUND",
            Self::CertificateMalformed => "CERTIFICATE_MALFORMED",
            Self::IssuerMismatch => "ISSUER_MISMATCH",
            Self::SignatureInvalid => "SIGNATURE_INVALID",
            Self::WeakSignatureAlgorithm => "WEAK_SIGNATURE_ALGORITHM",
            Self::UnsupportedSignatureAlgorithm => "UNSUPPORTED_SIGNATURE_ALGORITHM",
            Self::WeakKey => "WEAK_KEY",
            Self::UnsupportedKey => "UNSUPPORTED_KEY",
            Self::CertificateIsCa => "CERTIFICATE_IS_CA",
            Self::KeyUsageInvalid => "KEY_USAGE_INVALID",
            Self::ExtendedKeyUsageInvalid => "EXTENDED_KEY_USAGE_INVALID",
            Self::NotYetValid => "NOT_YET_VALID",
            Self::Expired => "EXPIRED",
            Self::InsufficientRemainingValidity => "INSUFFICIENT_REMAINING_VALIDITY",
            Self::ThingNameMissing => "THING_NAME_MISSING",
            Self::ThingNameInvalid => "THING_NAME_INVALID",
            Self::AttributeInvalid => "ATTRIBUTE_INVALID",
            Self::SerialDenied => "SERIAL_DENIED",
            Self::FingerprintDenied => "FINGERPRINT_DENIED",
            Self::IdentityCollision => "IDENTITY_COLLISION",
            Self::ThingTypeMismatch => "THING_TYPE_MISMATCH",
            Self::SerialNotAllowed => "SERIAL_NOT_ALLOWED",
            Self::ParametersInvalid => "PARAMETERS_INVALID",
            Self::CertificateMismatch => "CERTIFICATE_MISMATCH",
            Self::CertificateRetired => "CERTIFICATE_RETIRED",
        }
    }

    /// Parses a stable code back into a reason.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the reason code plus a human-readable detail for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for reason in RejectReason::ALL {
            assert!(seen.insert(reason.code()), "duplicate code {}", reason.code());
            assert_eq!(RejectReason::from_code(reason.code()), Some(reason));
            let json = serde_json::to_string(&reason).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", reason.code()));
        }
        assert_eq!(RejectReason::from_code("NOPE"), None);
    }
}
