//! The onboarding configuration: device profiles, CA→profile bindings and the
//! deny-list, as loaded from the inventory table (and the environment).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::lock::Mutex;

use crate::certificate::normalize_serial;
use crate::ports::PortResult;
use crate::profile::{DeviceProfile, ProfileError};

/// A snapshot of the configuration, cached by the registrar for a short TTL.
#[derive(Debug, Clone, Default)]
pub struct OnboardingConfig {
    profiles: HashMap<String, Result<DeviceProfile, ProfileError>>,
    bindings: HashMap<String, String>,
    denied_serials: HashSet<(String, String)>,
    denied_fingerprints: HashSet<String>,
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

    /// Adds a denied serial for a CA. Returns false when the serial is not hexadecimal.
    pub fn deny_serial(&mut self, ca_certificate_id: String, serial: &str) -> bool {
        match normalize_serial(serial) {
            Some(s) => {
                self.denied_serials.insert((ca_certificate_id, s));
                true
            }
            None => false,
        }
    }

    /// Adds a denied SHA-256 fingerprint (the certificate id).
    pub fn deny_fingerprint(&mut self, fingerprint: &str) {
        self.denied_fingerprints
            .insert(fingerprint.trim().replace(':', "").to_lowercase());
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

    /// True when the serial (any notation) is denied for this CA.
    pub fn is_serial_denied(&self, ca_certificate_id: &str, serial: &str) -> bool {
        normalize_serial(serial).is_some_and(|s| self.denied_serials.contains(&(ca_certificate_id.to_string(), s)))
    }

    /// True when the fingerprint is denied.
    pub fn is_fingerprint_denied(&self, fingerprint: &str) -> bool {
        self.denied_fingerprints.contains(fingerprint)
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

    /// Number of profiles, bindings and deny-list entries (for logs).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.profiles.len(),
            self.bindings.len(),
            self.denied_serials.len() + self.denied_fingerprints.len(),
        )
    }
}

/// The configuration as a container keeps it between invocations: loaded at
/// most once per TTL, with the environment's default profile (and the CAs
/// bound to it) merged in.
pub struct ConfigCache {
    ttl: Duration,
    default_profile: Option<(DeviceProfile, Vec<String>)>,
    cached: Mutex<Option<(Instant, Arc<OnboardingConfig>)>>,
}

impl ConfigCache {
    pub fn new(ttl: Duration, default_profile: Option<(DeviceProfile, Vec<String>)>) -> Self {
        Self {
            ttl,
            default_profile,
            cached: Mutex::new(None),
        }
    }

    /// The configuration, and whether it came from the cache; `fresh`
    /// bypasses the cache (and refills it). `load` reads the stored one.
    ///
    /// # Errors
    /// What `load` fails with.
    pub async fn get<F>(&self, fresh: bool, load: impl FnOnce() -> F) -> PortResult<(Arc<OnboardingConfig>, bool)>
    where
        F: Future<Output = PortResult<OnboardingConfig>>,
    {
        let mut cached = self.cached.lock().await;
        if !fresh
            && let Some((at, config)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok((config.clone(), true));
        }
        let mut config = load().await?;
        if let Some((profile, cas)) = &self.default_profile {
            config.merge_default(profile.clone(), cas);
        }
        let config = Arc::new(config);
        *cached = Some((Instant::now(), config.clone()));
        Ok((config, false))
    }
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
    fn deny_list_normalises() {
        let mut c = OnboardingConfig::default();
        assert!(c.deny_serial("ca".into(), "0A:BC"));
        assert!(!c.deny_serial("ca".into(), "zz"));
        c.deny_fingerprint("AB:CD");
        assert!(c.is_serial_denied("ca", "0abc"));
        assert!(!c.is_serial_denied("other", "0abc"));
        assert!(c.is_fingerprint_denied("abcd"));
    }
}
