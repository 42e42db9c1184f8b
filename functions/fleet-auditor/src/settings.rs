//! The function's configuration, read from the environment once at init.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table name |
//! | `DEFAULT_PROFILE`, `DEFAULT_PROFILE_CA_IDS` | no | | the default profile and its CAs (audited with the table's bound CAs) |
//! | `AUDIT_INTERVAL_HOURS` | no | `24` | a new run starts once the last one started this long ago |
//! | `AUDIT_CERTIFICATES_PER_INVOCATION` | no | `5000` | certificates audited per invocation, at most |
//! | `AUDIT_PAGE_SIZE` | no | `50` | items per listing, scan and findings page (1 to 250) |
//! | `AUDIT_TIME_MARGIN_SECONDS` | no | `120` | no step starts within this many seconds of the invocation's deadline |
//! | `AUDIT_FINDINGS_TTL_DAYS` | no | `30` | a run's findings expire (DynamoDB TTL `expiresAt`) this long after it started |
//! | `AUDIT_DEVICE_EXPIRY_DAYS` | no | `30` | `DEVICE_CERT_EXPIRING` below this many whole days left |
//! | `AUDIT_CA_EXPIRY_DAYS` | no | `90` | `CA_CERT_EXPIRING` below this many whole days left |
//! | `AUDIT_DEVICE_MAX_AGE_DAYS` | no | `365` | `DEVICE_CERT_OLD` beyond this age |
//! | `IOT_API_QUOTAS` | no | AWS's defaults | raised IoT quotas, `Action=PerSecond,...` |
//! | `AUDIT_IOT_SHARE` | no | `2` | the audit paces each IoT action to quota ÷ this (it leaves the rest to onboarding and rotation) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |

use onboarding_aws::{ApiQuotas, SdkSettings};
use onboarding_domain::{AuditThresholds, ScheduledAuditSettings};
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub audit: ScheduledAuditSettings,
    pub time_margin_secs: u64,
    /// The time an invocation takes when the runtime gives no deadline.
    pub fallback_secs: u64,
    pub iot_api_quotas: ApiQuotas,
    pub iot_api_share: u32,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        let default_ca_ids = env.default_profile()?.map(|(_, cas)| cas).unwrap_or_default();
        let thresholds = AuditThresholds::new(
            env.number("AUDIT_DEVICE_EXPIRY_DAYS", 30)?,
            env.number("AUDIT_CA_EXPIRY_DAYS", 90)?,
            env.number("AUDIT_DEVICE_MAX_AGE_DAYS", 365)?,
        )
        .map_err(|e| SettingsError::Invalid {
            name: "AUDIT_DEVICE_EXPIRY_DAYS",
            problem: e.to_string(),
        })?;
        let page_size: usize = env.positive("AUDIT_PAGE_SIZE", 50)?;
        if page_size > 250 {
            return Err(SettingsError::Invalid {
                name: "AUDIT_PAGE_SIZE",
                problem: format!("{page_size} is above 250, the largest IoT listing page"),
            });
        }
        let interval_hours: i64 = env.positive("AUDIT_INTERVAL_HOURS", 24)?;
        let ttl_days: i64 = env.positive("AUDIT_FINDINGS_TTL_DAYS", 30)?;
        Ok(Self {
            inventory_table: env.required("INVENTORY_TABLE")?,
            audit: ScheduledAuditSettings {
                interval_secs: interval_hours.saturating_mul(3_600),
                certificates_per_invocation: env.positive("AUDIT_CERTIFICATES_PER_INVOCATION", 5_000)?,
                page_size,
                thresholds,
                findings_ttl_secs: ttl_days.saturating_mul(86_400),
                default_ca_ids,
            },
            time_margin_secs: env.number("AUDIT_TIME_MARGIN_SECONDS", 120)?,
            fallback_secs: 60,
            iot_api_quotas: ApiQuotas::parse(&env.get("IOT_API_QUOTAS").unwrap_or_default()).map_err(|e| {
                SettingsError::Invalid {
                    name: "IOT_API_QUOTAS",
                    problem: e.to_string(),
                }
            })?,
            iot_api_share: env.positive("AUDIT_IOT_SHARE", 2)?,
            metrics_namespace: env.metrics_namespace(),
            sdk: SdkSettings::with_max_attempts(env.sdk_max_attempts()?),
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
    fn defaults_and_bad_values_are_named() {
        assert_eq!(settings(&[]).err(), Some(SettingsError::Missing("INVENTORY_TABLE")));
        let s = settings(&[("INVENTORY_TABLE", "t")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.audit.interval_secs, 86_400);
        assert_eq!(s.audit.certificates_per_invocation, 5_000);
        assert_eq!(s.audit.page_size, 50);
        assert_eq!(s.audit.findings_ttl_secs, 30 * 86_400);
        assert_eq!(s.audit.thresholds, AuditThresholds::default());
        assert_eq!((s.time_margin_secs, s.iot_api_share), (120, 2));
        let short =
            settings(&[("INVENTORY_TABLE", "t"), ("AUDIT_INTERVAL_HOURS", "6")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(short.audit.interval_secs, 6 * 3_600);
        for (name, value) in [
            ("AUDIT_INTERVAL_HOURS", "0"),
            ("AUDIT_PAGE_SIZE", "251"),
            ("AUDIT_CERTIFICATES_PER_INVOCATION", "0"),
            ("AUDIT_DEVICE_EXPIRY_DAYS", "-1"),
            ("AUDIT_IOT_SHARE", "0"),
        ] {
            assert!(
                settings(&[("INVENTORY_TABLE", "t"), (name, value)]).is_err(),
                "{name}={value}"
            );
        }
    }
}
