//! The manufacturer CA's rotation: whether a new CA may take over from an
//! old one, and how far a CA is from its expiry. Pure functions of the two
//! parsed certificates and `now`.

use crate::model::certificate::Certificate;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Whole days from `now` until `not_after` (both Unix seconds), rounded
/// down: `0` on the last day, negative once expired.
pub fn days_to_expiry(not_after: i64, now: i64) -> i64 {
    not_after.saturating_sub(now).div_euclid(DAY)
}

/// True when a CA's `not_after` lies within `warning_days` of `now` (or is past).
pub fn expires_within(not_after: i64, now: i64, warning_days: i64) -> bool {
    days_to_expiry(not_after, now) < warning_days
}

/// Why a new CA cannot take over from the old one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaRotationRefusal {
    #[error("the new CA is the old CA itself (certificate id {0})")]
    SameCa(String),
    #[error("the new certificate is not a CA (basicConstraints cA is not set)")]
    NotACa,
    #[error("the new CA has expired (notAfter {not_after})")]
    Expired { not_after: i64 },
    #[error("the new CA is not valid yet (notBefore {not_before})")]
    NotYetValid { not_before: i64 },
    #[error(
        "the new CA expires before the old one (new notAfter {new_not_after}, old notAfter {old_not_after}): \
         rotating to it would shorten the fleet's trust"
    )]
    ExpiresFirst { old_not_after: i64, new_not_after: i64 },
    #[error("the key does not match the new CA's certificate (their public keys differ)")]
    KeyMismatch,
}

/// Whether `new` may take over from `old` as of `now`: a different CA,
/// valid now, expiring after the old one, and `new_public_key` (the public
/// key bits of the private key the operator holds for it: the EC point, or
/// the PKCS#1 RSA public key) its own key.
///
/// # Errors
/// The first [`CaRotationRefusal`] that applies, in the order above.
pub fn check_ca_rotation(
    old: &Certificate,
    new: &Certificate,
    new_public_key: &[u8],
    now: i64,
) -> Result<(), CaRotationRefusal> {
    if old.fingerprint == new.fingerprint {
        return Err(CaRotationRefusal::SameCa(new.fingerprint.clone()));
    }
    if !new.is_ca {
        return Err(CaRotationRefusal::NotACa);
    }
    if new.not_after <= now {
        return Err(CaRotationRefusal::Expired {
            not_after: new.not_after,
        });
    }
    if new.not_before > now {
        return Err(CaRotationRefusal::NotYetValid {
            not_before: new.not_before,
        });
    }
    if new.not_after <= old.not_after {
        return Err(CaRotationRefusal::ExpiresFirst {
            old_not_after: old.not_after,
            new_not_after: new.not_after,
        });
    }
    if public_key_bits(new).as_deref() != Some(new_public_key) {
        return Err(CaRotationRefusal::KeyMismatch);
    }
    Ok(())
}

/// The `subjectPublicKey` bits of a certificate's key.
fn public_key_bits(certificate: &Certificate) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let spki = certificate.public_key_der();
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).ok()?;
    Some(info.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboarding_test_support::certs::TestCa;
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

    const NOW: i64 = 1_800_000_000;

    /// A self-signed CA valid from a day before `NOW` for `days` days after it,
    /// and its key's SubjectPublicKeyInfo.
    fn ca(days: i64) -> (Certificate, Vec<u8>) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Rotated CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap_or_else(|e| panic!("{e}"));
        params.not_before = at(NOW - DAY);
        params.not_after = at(NOW + days * DAY);
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let parsed = Certificate::from_pem(&cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        (parsed, key.public_key_raw().to_vec())
    }

    #[test]
    fn days_round_down_and_go_negative_after_expiry() {
        assert_eq!(days_to_expiry(NOW + 90 * DAY, NOW), 90);
        assert_eq!(days_to_expiry(NOW + 90 * DAY - 1, NOW), 89);
        assert_eq!(days_to_expiry(NOW + 1, NOW), 0);
        assert_eq!(days_to_expiry(NOW, NOW), 0);
        assert_eq!(days_to_expiry(NOW - 1, NOW), -1);
        assert_eq!(days_to_expiry(i64::MIN, NOW), i64::MIN.div_euclid(DAY));
        assert!(expires_within(NOW + 89 * DAY, NOW, 90));
        assert!(!expires_within(NOW + 90 * DAY, NOW, 90));
        assert!(expires_within(NOW - DAY, NOW, 90));
    }

    #[test]
    fn a_later_ca_with_its_own_key_may_take_over() {
        let (old, _) = ca(100);
        let (new, key) = ca(3650);
        assert_eq!(check_ca_rotation(&old, &new, &key, NOW), Ok(()));
    }

    #[test]
    fn the_same_ca_is_refused() {
        let (old, key) = ca(100);
        assert_eq!(
            check_ca_rotation(&old, &old, &key, NOW),
            Err(CaRotationRefusal::SameCa(old.fingerprint.clone()))
        );
    }

    #[test]
    fn a_ca_expiring_first_is_refused() {
        let (old, _) = ca(3650);
        let (new, key) = ca(100);
        assert!(matches!(
            check_ca_rotation(&old, &new, &key, NOW),
            Err(CaRotationRefusal::ExpiresFirst { .. })
        ));
    }

    #[test]
    fn an_expired_or_future_ca_is_refused() {
        let (old, _) = ca(10);
        let (new, key) = ca(100);
        assert!(matches!(
            check_ca_rotation(&old, &new, &key, NOW + 200 * DAY),
            Err(CaRotationRefusal::Expired { .. })
        ));
        assert!(matches!(
            check_ca_rotation(&old, &new, &key, NOW - 2 * DAY),
            Err(CaRotationRefusal::NotYetValid { .. })
        ));
    }

    #[test]
    fn another_key_is_refused() {
        let (old, _) = ca(100);
        let (new, _) = ca(3650);
        let (_, other_key) = ca(3650);
        assert_eq!(
            check_ca_rotation(&old, &new, &other_key, NOW),
            Err(CaRotationRefusal::KeyMismatch)
        );
        assert_eq!(
            check_ca_rotation(&old, &new, b"", NOW),
            Err(CaRotationRefusal::KeyMismatch)
        );
    }

    #[test]
    fn a_device_certificate_is_not_a_ca() {
        let (old, _) = ca(100);
        let issuer = TestCa::new("Device CA").unwrap_or_else(|e| panic!("{e}"));
        let device = issuer.device("sensor-1").build().unwrap_or_else(|e| panic!("{e}"));
        let cert = Certificate::from_pem(&device.cert_pem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_ca_rotation(&old, &cert, &[], NOW), Err(CaRotationRefusal::NotACa));
    }
}
