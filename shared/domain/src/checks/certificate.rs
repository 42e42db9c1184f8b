//! The certificate checks, as pure functions of the certificate, its CA, the
//! profile, the deny-list's answer for it and the time. Nothing here trusts
//! the event or IoT's own verification.

use crate::checks::subject::approve_naming;
use crate::model::certificate::{Certificate, KeyKind};
use crate::model::plan::Approval;
use crate::model::reason::{RejectReason, Rejection};
use crate::model::status::CertificateStatus;
use crate::policy::config::{CaTrust, OnboardingConfig};
use crate::policy::profile::DeviceProfile;

/// Default tolerance for device clocks and certificate factories whose
/// notBefore is slightly in the future.
pub const DEFAULT_CLOCK_SKEW_SECS: i64 = 300;

const SECONDS_PER_DAY: i64 = 86_400;

/// Everything the device-certificate checks need.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    pub ca: &'a Certificate,
    pub profile: &'a DeviceProfile,
    /// What the deny-list lookup ([`crate::ports::DenyList`]) answered for
    /// this certificate's serial (under its CA) and fingerprint.
    pub denial: Option<&'a Rejection>,
    /// Unix seconds.
    pub now: i64,
    pub clock_skew_secs: i64,
}

/// The CA-level verdict, before the certificate itself is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaVerdict<'a> {
    /// The certificate's CA (as IoT records it) is the event's, bound to this
    /// profile, and ACTIVE.
    Trusted(&'a DeviceProfile),
    /// Not this deployment's to judge: IoT records no CA or another CA than
    /// the event names (`CA_MISMATCH`), or the certificate's CA is bound to no
    /// profile here (`CA_NOT_BOUND`; another system may own it). Left alone
    /// unless the operator chose to revoke such certificates.
    Foreign(Rejection),
    /// Refused (the certificate is rejected with the default action: no profile applies).
    Rejected(Rejection),
    /// Bound to a profile that is missing or invalid: not the device's fault, retry later.
    Misconfigured { profile: String, problem: String },
}

/// The certificate's CA in IoT is the event's, that CA is bound to a device
/// profile, and it is ACTIVE. Every fact comes from IoT's description of the
/// certificate (`certificate_ca_id`) and of its CA (`ca_status`); the event's
/// CA id is only compared with it.
pub fn check_ca<'a>(
    event_ca_id: &str,
    certificate_ca_id: Option<&str>,
    ca_status: Option<&CertificateStatus>,
    config: &'a OnboardingConfig,
) -> CaVerdict<'a> {
    let Some(ca_id) = certificate_ca_id.filter(|id| *id == event_ca_id) else {
        return CaVerdict::Foreign(Rejection::new(
            RejectReason::CaMismatch,
            format!(
                "IoT records CA {:?}, the event names {event_ca_id}",
                certificate_ca_id.unwrap_or("none")
            ),
        ));
    };
    let profile = match config.trust(ca_id) {
        CaTrust::Bound(profile) => profile,
        CaTrust::Unbound => {
            return CaVerdict::Foreign(Rejection::new(
                RejectReason::CaNotBound,
                format!("CA {ca_id} is bound to no device profile"),
            ));
        }
        CaTrust::Misconfigured { profile, problem } => {
            return CaVerdict::Misconfigured {
                profile: profile.to_string(),
                problem: problem.to_string(),
            };
        }
    };
    match ca_status {
        Some(CertificateStatus::Active) => CaVerdict::Trusted(profile),
        other => {
            let status = other.map_or("not registered", CertificateStatus::as_str);
            CaVerdict::Rejected(Rejection::new(
                RejectReason::CaNotActive,
                format!("CA {ca_id} is {status}"),
            ))
        }
    }
}

// Signature algorithms by OID.
const ALLOWED_SIGNATURES: [&str; 7] = [
    "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
    "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
    "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
    "1.2.840.10045.4.3.4",   // ecdsa-with-SHA512
    "1.3.101.112",           // Ed25519
];
const WEAK_SIGNATURES: [&str; 7] = [
    "1.2.840.113549.1.1.2", // md2WithRSAEncryption
    "1.2.840.113549.1.1.4", // md5WithRSAEncryption
    "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
    "1.3.14.3.2.29",        // sha1WithRSASignature (OIW)
    "1.2.840.10045.4.1",    // ecdsa-with-SHA1
    "1.2.840.10040.4.3",    // dsa-with-sha1
    "1.3.14.3.2.3",         // md5WithRSA (OIW)
];

/// Runs every check on a device certificate, in a fixed order, and returns the
/// first failure.
///
/// # Errors
/// The [`Rejection`] of the first check that fails.
pub fn check_device_certificate(cert: &Certificate, ctx: &CheckContext<'_>) -> Result<Approval, Rejection> {
    check_certificate_facts(cert, ctx)?;
    approve_naming(cert, ctx.profile)
}

/// Every check of [`check_device_certificate`] but the naming, in the same
/// order: issuer and signature, the deny-list answer, key, extensions,
/// validity. An imported certificate runs these, then its own naming
/// ([`crate::checks::subject::approve_import_naming`]).
///
/// # Errors
/// The [`Rejection`] of the first check that fails.
pub fn check_certificate_facts(cert: &Certificate, ctx: &CheckContext<'_>) -> Result<(), Rejection> {
    check_issuer_and_signature(cert, ctx.ca)?;
    check_deny_list(ctx)?;
    check_key(&cert.key)?;
    check_extensions(cert)?;
    check_validity(cert, ctx.now, ctx.clock_skew_secs, ctx.profile.min_remaining_days)
}

/// The issuer DN names the CA, the algorithm is strong, and the signature
/// verifies with the CA's key.
///
/// # Errors
/// `ISSUER_MISMATCH`, `WEAK_SIGNATURE_ALGORITHM`, `UNSUPPORTED_SIGNATURE_ALGORITHM` or `SIGNATURE_INVALID`.
pub fn check_issuer_and_signature(cert: &Certificate, ca: &Certificate) -> Result<(), Rejection> {
    if !cert.issuer_matches_subject_of(ca) {
        return Err(Rejection::new(
            RejectReason::IssuerMismatch,
            format!("issuer {:?} is not the CA subject {:?}", cert.issuer_dn, ca.subject_dn),
        ));
    }
    let alg = cert.signature_algorithm.as_str();
    if WEAK_SIGNATURES.contains(&alg) {
        return Err(Rejection::new(
            RejectReason::WeakSignatureAlgorithm,
            format!("signature algorithm {alg} uses SHA-1 or MD5"),
        ));
    }
    if !ALLOWED_SIGNATURES.contains(&alg) {
        return Err(Rejection::new(
            RejectReason::UnsupportedSignatureAlgorithm,
            format!("signature algorithm {alg} is not allowed"),
        ));
    }
    if !cert.is_signed_by(ca) {
        return Err(Rejection::new(
            RejectReason::SignatureInvalid,
            "signature does not verify with the CA's public key",
        ));
    }
    Ok(())
}

fn check_deny_list(ctx: &CheckContext<'_>) -> Result<(), Rejection> {
    match ctx.denial {
        Some(rejection) => Err(rejection.clone()),
        None => Ok(()),
    }
}

/// RSA ≥ 2048 bits, EC P-256 or P-384, or Ed25519.
///
/// # Errors
/// `WEAK_KEY` or `UNSUPPORTED_KEY`.
pub fn check_key(key: &KeyKind) -> Result<(), Rejection> {
    match key {
        KeyKind::Rsa { bits } if *bits >= 2048 => Ok(()),
        KeyKind::Rsa { bits } => Err(Rejection::new(
            RejectReason::WeakKey,
            format!("RSA key of {bits} bits, at least 2048 required"),
        )),
        KeyKind::EcP256 | KeyKind::EcP384 | KeyKind::Ed25519 => Ok(()),
        other => Err(Rejection::new(
            RejectReason::UnsupportedKey,
            format!("{other} is not RSA ≥ 2048, P-256, P-384 or Ed25519"),
        )),
    }
}

/// Not a CA; keyUsage allows digitalSignature; extendedKeyUsage includes clientAuth.
///
/// # Errors
/// `CERTIFICATE_IS_CA`, `KEY_USAGE_INVALID` or `EXTENDED_KEY_USAGE_INVALID`.
pub fn check_extensions(cert: &Certificate) -> Result<(), Rejection> {
    if cert.is_ca {
        return Err(Rejection::new(
            RejectReason::CertificateIsCa,
            "basicConstraints cA=true on a device certificate",
        ));
    }
    if cert.key_usage_digital_signature == Some(false) {
        return Err(Rejection::new(
            RejectReason::KeyUsageInvalid,
            "keyUsage does not allow digitalSignature",
        ));
    }
    if cert.eku_client_auth == Some(false) {
        return Err(Rejection::new(
            RejectReason::ExtendedKeyUsageInvalid,
            "extendedKeyUsage does not include clientAuth",
        ));
    }
    Ok(())
}

/// now ∈ [notBefore − skew, notAfter] and at least `min_remaining_days` left.
///
/// # Errors
/// `NOT_YET_VALID`, `EXPIRED` or `INSUFFICIENT_REMAINING_VALIDITY`.
pub fn check_validity(cert: &Certificate, now: i64, skew_secs: i64, min_remaining_days: u32) -> Result<(), Rejection> {
    if now < cert.not_before.saturating_sub(skew_secs) {
        return Err(Rejection::new(
            RejectReason::NotYetValid,
            format!("valid from {}, {}s from now", cert.not_before, cert.not_before - now),
        ));
    }
    if now > cert.not_after {
        return Err(Rejection::new(
            RejectReason::Expired,
            format!("expired {}s ago", now - cert.not_after),
        ));
    }
    let remaining = cert.not_after - now;
    let required = i64::from(min_remaining_days) * SECONDS_PER_DAY;
    if remaining < required {
        return Err(Rejection::new(
            RejectReason::InsufficientRemainingValidity,
            format!(
                "{} days left, the profile requires {min_remaining_days}",
                remaining / SECONDS_PER_DAY
            ),
        ));
    }
    Ok(())
}
