//! The function's configuration, read from the environment once at init.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table name |
//! | `CREDENTIALS_BUCKET` | yes | | S3 bucket for credentials records |
//! | `CREDENTIALS_KMS_KEY_ID` | yes | | KMS key id or ARN requested on every put |
//! | `CREDENTIALS_PREFIX` | no | `credentials/` | key prefix in the bucket |
//! | `CONFIG_CACHE_TTL_SECONDS` | no | `60` | cache lifetime of profiles, bindings, deny-list, CA descriptions |
//! | `CLOCK_SKEW_SECONDS` | no | `300` | tolerance on notBefore |
//! | `DEFAULT_PROFILE` | no | | a device profile as JSON, for deployments without profile items |
//! | `DEFAULT_PROFILE_CA_IDS` | no | | comma-separated CA ids bound to `DEFAULT_PROFILE` |
//! | `BATCH_CONCURRENCY` | no | `10` | SQS records processed at once |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |
//! | `S3_FORCE_PATH_STYLE` | no | `false` | path-style S3 addressing (emulators) |
//! | `RUST_LOG` | no | `info` | log filter |

use std::time::Duration;

use onboarding_aws::SdkSettings;
use onboarding_domain::event::is_certificate_id;
use onboarding_domain::{DeviceProfile, RegistrarSettings};

/// A configuration problem; init fails with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub credentials_bucket: String,
    pub credentials_kms_key_id: String,
    pub registrar: RegistrarSettings,
    pub batch_concurrency: usize,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
    pub s3_force_path_style: bool,
}

impl Settings {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable at fault.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable at fault.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(SettingsError::Missing(name));
        fn number<T: std::str::FromStr>(
            name: &'static str,
            value: Option<String>,
            default: T,
        ) -> Result<T, SettingsError> {
            match value {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| SettingsError::Invalid {
                    name,
                    problem: format!("{v:?} is not a number"),
                }),
            }
        }
        let default_profile = match get("DEFAULT_PROFILE") {
            None => {
                if get("DEFAULT_PROFILE_CA_IDS").is_some() {
                    return Err(SettingsError::Invalid {
                        name: "DEFAULT_PROFILE_CA_IDS",
                        problem: "is set but DEFAULT_PROFILE is not".into(),
                    });
                }
                None
            }
            Some(json) => {
                let profile = DeviceProfile::parse(&json).map_err(|e| SettingsError::Invalid {
                    name: "DEFAULT_PROFILE",
                    problem: e.to_string(),
                })?;
                let cas: Vec<String> = get("DEFAULT_PROFILE_CA_IDS")
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = cas.iter().find(|ca| !is_certificate_id(ca)) {
                    return Err(SettingsError::Invalid {
                        name: "DEFAULT_PROFILE_CA_IDS",
                        problem: format!("{bad:?} is not a 64-character lowercase hexadecimal CA certificate id"),
                    });
                }
                Some((profile, cas))
            }
        };
        let concurrency: usize = number("BATCH_CONCURRENCY", get("BATCH_CONCURRENCY"), 10)?;
        if concurrency == 0 {
            return Err(SettingsError::Invalid {
                name: "BATCH_CONCURRENCY",
                problem: "must be at least 1".into(),
            });
        }
        let attempts: u32 = number("SDK_MAX_ATTEMPTS", get("SDK_MAX_ATTEMPTS"), 6)?;
        if attempts == 0 {
            return Err(SettingsError::Invalid {
                name: "SDK_MAX_ATTEMPTS",
                problem: "must be at least 1".into(),
            });
        }
        Ok(Self {
            inventory_table: required("INVENTORY_TABLE")?,
            credentials_bucket: required("CREDENTIALS_BUCKET")?,
            credentials_kms_key_id: required("CREDENTIALS_KMS_KEY_ID")?,
            registrar: RegistrarSettings {
                clock_skew_secs: number("CLOCK_SKEW_SECONDS", get("CLOCK_SKEW_SECONDS"), 300)?,
                cache_ttl: Duration::from_secs(number(
                    "CONFIG_CACHE_TTL_SECONDS",
                    get("CONFIG_CACHE_TTL_SECONDS"),
                    60,
                )?),
                credentials_prefix: get("CREDENTIALS_PREFIX").unwrap_or_else(|| "credentials/".into()),
                default_profile,
            },
            batch_concurrency: concurrency,
            metrics_namespace: get("METRICS_NAMESPACE").unwrap_or_else(|| "IotOnboarding".into()),
            sdk: SdkSettings {
                max_attempts: attempts,
                ..SdkSettings::default()
            },
            s3_force_path_style: matches!(get("S3_FORCE_PATH_STYLE").as_deref(), Some("true" | "1" | "yes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 3] = [
        ("INVENTORY_TABLE", "inv"),
        ("CREDENTIALS_BUCKET", "bucket"),
        ("CREDENTIALS_KMS_KEY_ID", "key"),
    ];

    #[test]
    fn requires_the_three_names() {
        assert_eq!(settings(&[]).err(), Some(SettingsError::Missing("INVENTORY_TABLE")));
        assert_eq!(
            settings(&BASE[..2]).err(),
            Some(SettingsError::Missing("CREDENTIALS_KMS_KEY_ID"))
        );
        let s = settings(&BASE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.registrar.cache_ttl, Duration::from_secs(60));
        assert_eq!(s.registrar.clock_skew_secs, 300);
        assert!(s.registrar.default_profile.is_none());
    }

    #[test]
    fn default_profile_and_its_cas() {
        let ca = "a".repeat(64);
        let mut pairs = BASE.to_vec();
        pairs.push(("DEFAULT_PROFILE", r#"{"name":"default","policyName":"device-policy"}"#));
        pairs.push(("DEFAULT_PROFILE_CA_IDS", &ca));
        let s = settings(&pairs).unwrap_or_else(|e| panic!("{e}"));
        let (profile, cas) = s
            .registrar
            .default_profile
            .unwrap_or_else(|| panic!("no default profile"));
        assert_eq!(profile.name, "default");
        assert_eq!(cas, vec![ca.clone()]);

        let mut bad = BASE.to_vec();
        bad.push(("DEFAULT_PROFILE", r#"{"name":"default"}"#));
        assert!(matches!(
            settings(&bad),
            Err(SettingsError::Invalid {
                name: "DEFAULT_PROFILE",
                ..
            })
        ));
        let mut orphan = BASE.to_vec();
        orphan.push(("DEFAULT_PROFILE_CA_IDS", &ca));
        assert!(matches!(
            settings(&orphan),
            Err(SettingsError::Invalid {
                name: "DEFAULT_PROFILE_CA_IDS",
                ..
            })
        ));
        let mut not_hex = pairs.clone();
        not_hex[4] = ("DEFAULT_PROFILE_CA_IDS", "nope");
        assert!(matches!(
            settings(&not_hex),
            Err(SettingsError::Invalid {
                name: "DEFAULT_PROFILE_CA_IDS",
                ..
            })
        ));
    }

    #[test]
    fn numbers_are_checked() {
        let mut pairs = BASE.to_vec();
        pairs.push(("CONFIG_CACHE_TTL_SECONDS", "soon"));
        assert!(matches!(
            settings(&pairs),
            Err(SettingsError::Invalid {
                name: "CONFIG_CACHE_TTL_SECONDS",
                ..
            })
        ));
        let mut zero = BASE.to_vec();
        zero.push(("BATCH_CONCURRENCY", "0"));
        assert!(matches!(
            settings(&zero),
            Err(SettingsError::Invalid {
                name: "BATCH_CONCURRENCY",
                ..
            })
        ));
    }
}
