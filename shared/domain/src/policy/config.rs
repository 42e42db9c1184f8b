//! The onboarding configuration: device profiles and CA→profile bindings, as
//! loaded from the inventory table (and the environment).
//!
//! The deny-list is not part of it: entries are looked up by key, one
//! certificate at a time, through the [`crate::ports::DenyList`] port, so the
//! configuration stays small however long the deny-list grows. The helpers
//! here give both sides (the operator's writes and the lookups) one notation.

use std::collections::HashMap;

use crate::model::certificate::normalize_serial;
use crate::model::reason::{RejectReason, Rejection};
use crate::policy::profile::{DeviceProfile, ProfileError};

/// A snapshot of the configuration, cached by the registrar for a short TTL.
#[derive(Debug, Clone, Default)]
pub struct OnboardingConfig {
    profiles: HashMap<String, Result<DeviceProfile, ProfileError>>,
    bindings: HashMap<String, String>,
}

/// What the configuration says about a CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaTrust<'a> {
    /// Bound to this profile: trusted for onboarding.
    Bound(&'a DeviceProfile),
    /// Bound to no profile: its certificates are rejected.
    Unbound,
    /// Bound, but the profile is missing or invalid: an operator must fix it;
    /// certificates wait (the event is retried) rather than being rejected.
    Misconfigured { profile: &'a str, problem: &'a str },
}

const MISSING_PROFILE: &str = "does not exist";

impl OnboardingConfig {
    /// Adds a profile as stored (valid or not: an invalid one surfaces as
    /// [`CaTrust::Misconfigured`] for the CAs bound to it).
    pub fn add_profile(&mut self, name: String, profile: Result<DeviceProfile, ProfileError>) {
        self.profiles.insert(name, profile);
    }

    /// Binds a CA to a profile by name.
    pub fn bind(&mut self, ca_certificate_id: String, profile: String) {
        self.bindings.insert(ca_certificate_id, profile);
    }

    /// Merges a default profile bound to `ca_ids` from the environment. Items in
    /// the table win: a table profile of the same name, or a table binding of
    /// the same CA, is kept.
    pub fn merge_default(&mut self, profile: DeviceProfile, ca_ids: &[String]) {
        let name = profile.name.clone();
        self.profiles.entry(name.clone()).or_insert(Ok(profile));
        for ca in ca_ids {
            self.bindings.entry(ca.clone()).or_insert_with(|| name.clone());
        }
    }

    /// How a CA is trusted.
    pub fn trust(&self, ca_certificate_id: &str) -> CaTrust<'_> {
        let Some(name) = self.bindings.get(ca_certificate_id) else {
            return CaTrust::Unbound;
        };
        match self.profiles.get(name) {
            Some(Ok(profile)) => CaTrust::Bound(profile),
            Some(Err(ProfileError::Json(problem) | ProfileError::Field { problem, .. })) => {
                CaTrust::Misconfigured { profile: name, problem }
            }
            None => CaTrust::Misconfigured {
                profile: name,
                problem: MISSING_PROFILE,
            },
        }
    }

    /// A profile by name: the profile, or why it cannot be used.
    ///
    /// # Errors
    /// The problem with the named profile (missing or invalid), in words.
    pub fn profile(&self, name: &str) -> Result<&DeviceProfile, &str> {
        match self.profiles.get(name) {
            Some(Ok(profile)) => Ok(profile),
            Some(Err(ProfileError::Json(problem) | ProfileError::Field { problem, .. })) => Err(problem),
            None => Err(MISSING_PROFILE),
        }
    }

    /// The CA ids bound to a profile, in no particular order.
    /// Every valid profile, bound to a CA or not (a CA unbound to stop
    /// onboarding must not stop its devices' rotations).
    pub fn valid_profiles(&self) -> impl Iterator<Item = &DeviceProfile> {
        self.profiles.values().filter_map(|p| p.as_ref().ok())
    }

    pub fn bound_ca_ids(&self) -> impl Iterator<Item = &str> {
        self.bindings.keys().map(String::as_str)
    }

    /// The CAs bound in the table and `defaults` (the default profile's
    /// from the environment), once each, sorted: every CA a fleet-wide pass
    /// (the reconciler, the scheduled audit) visits.
    pub fn bound_ca_ids_with(&self, defaults: &[String]) -> Vec<String> {
        self.bound_ca_ids()
            .map(str::to_string)
            .chain(defaults.iter().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Number of profiles and bindings (for logs).
    pub fn counts(&self) -> (usize, usize) {
        (self.profiles.len(), self.bindings.len())
    }
}

/// A deny-list entry's key: a serial of one CA, or a SHA-256 fingerprint,
/// in the one notation lookups use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DenyKey {
    /// A serial (normalised as [`normalize_serial`] does) under one CA.
    Serial { ca_certificate_id: String, serial: String },
    /// A SHA-256 fingerprint (the certificate id), 64 lowercase hex digits.
    Fingerprint(String),
}

/// Why a deny-list entry cannot be written as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyKeyError {
    #[error("serial {0:?} is not hexadecimal (any case, `:` separators allowed)")]
    Serial(String),
    #[error("fingerprint {0:?} is not a SHA-256 (64 hex digits, `:` separators allowed)")]
    Fingerprint(String),
    #[error("CA certificate id {0:?} is not 64 hex digits")]
    Ca(String),
}

impl DenyKey {
    /// A serial of a CA, in any notation an operator writes.
    ///
    /// # Errors
    /// [`DenyKeyError`] when the serial is not hexadecimal or the CA id is not one.
    pub fn serial(ca_certificate_id: &str, serial: &str) -> Result<Self, DenyKeyError> {
        if !crate::model::event::is_certificate_id(ca_certificate_id) {
            return Err(DenyKeyError::Ca(ca_certificate_id.to_string()));
        }
        let serial = normalize_serial(serial).ok_or_else(|| DenyKeyError::Serial(serial.to_string()))?;
        Ok(Self::Serial {
            ca_certificate_id: ca_certificate_id.to_string(),
            serial,
        })
    }

    /// A fingerprint, in any case, with or without `:` separators.
    ///
    /// # Errors
    /// [`DenyKeyError::Fingerprint`] unless it is 64 hex digits.
    pub fn fingerprint(fingerprint: &str) -> Result<Self, DenyKeyError> {
        normalize_fingerprint(fingerprint)
            .map(Self::Fingerprint)
            .ok_or_else(|| DenyKeyError::Fingerprint(fingerprint.to_string()))
    }

    /// The rejection a certificate matching this entry gets; `reason` is the
    /// operator's note on the entry, if any.
    pub fn rejection(&self, reason: Option<&str>) -> Rejection {
        let note = reason.map(|r| format!(" ({r})")).unwrap_or_default();
        match self {
            Self::Serial {
                ca_certificate_id,
                serial,
            } => Rejection::new(
                RejectReason::SerialDenied,
                format!("serial {serial} of CA {ca_certificate_id} is on the deny-list{note}"),
            ),
            Self::Fingerprint(fingerprint) => Rejection::new(
                RejectReason::FingerprintDenied,
                format!("fingerprint {fingerprint} is on the deny-list{note}"),
            ),
        }
    }
}

/// Normalises a SHA-256 fingerprint (any case, `:` or space separators) to
/// the certificate-id form. Returns `None` unless it is 64 hex digits.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let digits: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    crate::model::event::is_certificate_id(&digits).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_follows_bindings_and_table_wins() {
        let mut c = OnboardingConfig::default();
        c.add_profile("a".into(), Ok(DeviceProfile::minimal("a", "p")));
        c.add_profile("broken".into(), Err(ProfileError::Json("x".into())));
        c.bind("ca1".into(), "a".into());
        c.bind("ca2".into(), "broken".into());
        c.bind("ca3".into(), "gone".into());
        assert!(matches!(c.trust("ca1"), CaTrust::Bound(p) if p.name == "a"));
        assert!(matches!(
            c.trust("ca2"),
            CaTrust::Misconfigured { profile: "broken", .. }
        ));
        assert!(matches!(
            c.trust("ca3"),
            CaTrust::Misconfigured {
                problem: MISSING_PROFILE,
                ..
            }
        ));
        assert_eq!(c.trust("ca4"), CaTrust::Unbound);
        c.merge_default(
            DeviceProfile::minimal("a", "other-policy"),
            &["ca1".into(), "ca4".into()],
        );
        assert!(
            matches!(c.trust("ca4"), CaTrust::Bound(p) if p.policy_name == "p"),
            "table profile of the same name wins"
        );
        c.merge_default(DeviceProfile::minimal("env", "q"), &["ca1".into(), "ca5".into()]);
        assert!(
            matches!(c.trust("ca1"), CaTrust::Bound(p) if p.name == "a"),
            "table binding wins"
        );
        assert!(matches!(c.trust("ca5"), CaTrust::Bound(p) if p.name == "env"));
    }

    #[test]
    fn deny_keys_normalise() {
        let ca = "c".repeat(64);
        assert_eq!(DenyKey::serial(&ca, "0A:BC"), DenyKey::serial(&ca, "0abc"));
        assert_eq!(DenyKey::serial(&ca, "00:0a:bc"), DenyKey::serial(&ca, "0ABC"));
        assert_eq!(DenyKey::serial(&ca, "zz"), Err(DenyKeyError::Serial("zz".into())));
        assert_eq!(DenyKey::serial("ca", "0abc"), Err(DenyKeyError::Ca("ca".into())));
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(DenyKey::fingerprint(&fp), Ok(DenyKey::Fingerprint("ab".repeat(32))));
        assert!(DenyKey::fingerprint("abcd").is_err());
        let rejection = DenyKey::fingerprint(&fp).map(|k| k.rejection(Some("stolen")));
        assert!(rejection.is_ok_and(|r| r.reason == RejectReason::FingerprintDenied && r.detail.contains("stolen")));
        let serial = DenyKey::serial(&ca, "0abc").map(|k| k.rejection(None));
        assert!(serial.is_ok_and(|r| r.reason == RejectReason::SerialDenied));
    }
}
