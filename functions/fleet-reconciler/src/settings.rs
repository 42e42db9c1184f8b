//! The function's configuration, read from the environment once at init.
//!
//! It reads every variable of `jitr-registrar` (the registrar's settings)
//! and:
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `STUCK_AFTER_SECONDS` | no | `600` | age after which a `PENDING_ACTIVATION` certificate is processed |
//! | `MAX_CERTIFICATES_PER_RUN` | no | `1000` | IoT certificates examined per run (all CAs) |
//! | `MAX_RECORDS_PER_RUN` | no | `500` | inventory records checked against IoT per run |
//! | `MAX_RECORD_PAGES_PER_RUN` | no | `20` | inventory scan pages (100 items each) read per run |
//! | `CA_EXPIRY_WARNING_DAYS` | no | `90` | an `ACTIVE` bound CA expiring within this many days counts in `CaExpiringSoon` |

use onboarding_domain::ReconcilerSettings;
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub registrar: jitr_registrar::Settings,
    pub reconciler: ReconcilerSettings,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        let registrar = jitr_registrar::Settings::read(env)?;
        let default_ca_ids = registrar
            .registrar
            .default_profile
            .as_ref()
            .map(|(_, cas)| cas.clone())
            .unwrap_or_default();
        Ok(Self {
            reconciler: ReconcilerSettings {
                stuck_after_secs: env.positive("STUCK_AFTER_SECONDS", 600)?,
                max_examined_per_run: env.positive("MAX_CERTIFICATES_PER_RUN", 1_000)?,
                max_records_per_run: env.positive("MAX_RECORDS_PER_RUN", 500)?,
                max_record_pages_per_run: env.positive("MAX_RECORD_PAGES_PER_RUN", 20)?,
                ca_expiry_warning_days: env.positive("CA_EXPIRY_WARNING_DAYS", 90)?,
                default_ca_ids,
                ..ReconcilerSettings::default()
            },
            registrar,
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_pairs(pairs)
    }

    #[test]
    fn settings_build_on_the_registrars() {
        assert_eq!(settings(&[]).err(), Some(SettingsError::Missing("INVENTORY_TABLE")));
        let ca = "b".repeat(64);
        let s = settings(&[
            ("INVENTORY_TABLE", "t"),
            ("CREDENTIALS_BUCKET", "b"),
            ("CREDENTIALS_KMS_KEY_ID", "k"),
            ("DEFAULT_PROFILE", r#"{"name":"default","policyName":"p"}"#),
            ("DEFAULT_PROFILE_CA_IDS", &ca),
            ("STUCK_AFTER_SECONDS", "120"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.reconciler.stuck_after_secs, 120);
        assert_eq!(s.reconciler.default_ca_ids, vec![ca]);
        assert_eq!(s.reconciler.max_examined_per_run, 1_000);
        assert_eq!(s.reconciler.ca_expiry_warning_days, 90);
        let short = settings(&[
            ("INVENTORY_TABLE", "t"),
            ("CREDENTIALS_BUCKET", "b"),
            ("CREDENTIALS_KMS_KEY_ID", "k"),
            ("CA_EXPIRY_WARNING_DAYS", "30"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(short.reconciler.ca_expiry_warning_days, 30);
        assert!(
            settings(&[
                ("INVENTORY_TABLE", "t"),
                ("CREDENTIALS_BUCKET", "b"),
                ("CREDENTIALS_KMS_KEY_ID", "k"),
                ("CA_EXPIRY_WARNING_DAYS", "0"),
            ])
            .is_err()
        );
    }
}
