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
//! | `REVOKE_FOREIGN_CERTIFICATES` | no | `false` | `true`: revoke certificates whose CA is bound to no profile here, or whose event names another CA than IoT records; by default they are left alone (logged, `LeftAlone` metric) |
//! | `BATCH_CONCURRENCY` | no | `10` | SQS records processed at once |
//! | `IOT_API_SHARE` | no | `0` | containers sharing the account's IoT API quotas (the event-source mapping's `MaximumConcurrency`): each paces its IoT calls to quota ÷ share per action; `0`: unpaced |
//! | `IOT_API_QUOTAS` | no | AWS's defaults | raised quotas, `Action=PerSecond,...` (e.g. `DescribeCertificate=100,UpdateCertificate=100`) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |
//! | `S3_FORCE_PATH_STYLE` | no | `false` | path-style S3 addressing (emulators) |
//! | `AWS_LAMBDA_LOG_LEVEL`, `AWS_LAMBDA_LOG_FORMAT` | set by Lambda | `INFO`, `JSON` | log level and format (the template's `LoggingConfig`) |
//! | `RUST_LOG` | no | | a finer log filter; wins over the level |

use std::time::Duration;

use onboarding_aws::{ApiQuotas, SdkSettings};
use onboarding_domain::RegistrarSettings;
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub credentials_bucket: String,
    pub credentials_kms_key_id: String,
    pub registrar: RegistrarSettings,
    pub batch_concurrency: usize,
    /// Containers sharing the IoT quotas (0: IoT calls are not paced).
    pub iot_api_share: u32,
    pub iot_api_quotas: ApiQuotas,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
    pub s3_force_path_style: bool,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        let default_profile = env.default_profile()?;
        Ok(Self {
            inventory_table: env.required("INVENTORY_TABLE")?,
            credentials_bucket: env.required("CREDENTIALS_BUCKET")?,
            credentials_kms_key_id: env.required("CREDENTIALS_KMS_KEY_ID")?,
            registrar: RegistrarSettings {
                clock_skew_secs: env.number("CLOCK_SKEW_SECONDS", 300)?,
                cache_ttl: Duration::from_secs(env.number("CONFIG_CACHE_TTL_SECONDS", 60)?),
                credentials_prefix: env.get("CREDENTIALS_PREFIX").unwrap_or_else(|| "credentials/".into()),
                default_profile,
                revoke_foreign: env.flag("REVOKE_FOREIGN_CERTIFICATES"),
            },
            batch_concurrency: env.positive("BATCH_CONCURRENCY", 10)?,
            iot_api_share: env.number("IOT_API_SHARE", 0)?,
            iot_api_quotas: ApiQuotas::parse(&env.get("IOT_API_QUOTAS").unwrap_or_default()).map_err(|e| {
                SettingsError::Invalid {
                    name: "IOT_API_QUOTAS",
                    problem: e.to_string(),
                }
            })?,
            metrics_namespace: env.metrics_namespace(),
            sdk: SdkSettings::with_max_attempts(env.sdk_max_attempts()?),
            s3_force_path_style: env.flag("S3_FORCE_PATH_STYLE"),
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_pairs(pairs)
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
        assert!(
            !s.registrar.revoke_foreign,
            "foreign certificates are left alone by default"
        );
        let mut pairs = BASE.to_vec();
        pairs.push(("REVOKE_FOREIGN_CERTIFICATES", "true"));
        assert!(settings(&pairs).is_ok_and(|s| s.registrar.revoke_foreign));
    }

    #[test]
    fn default_profile_is_read() {
        let mut pairs = BASE.to_vec();
        pairs.push(("DEFAULT_PROFILE", r#"{"name":"default","policyName":"device-policy"}"#));
        let s = settings(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.registrar.default_profile.map(|(p, _)| p.name).as_deref(),
            Some("default")
        );
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
        let mut quotas = BASE.to_vec();
        quotas.push(("IOT_API_QUOTAS", "DescribeCertificate=fast"));
        assert!(matches!(
            settings(&quotas),
            Err(SettingsError::Invalid {
                name: "IOT_API_QUOTAS",
                ..
            })
        ));
        let mut raised = BASE.to_vec();
        raised.extend([("IOT_API_QUOTAS", "DescribeCertificate=100"), ("IOT_API_SHARE", "4")]);
        let s = settings(&raised).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.iot_api_quotas.get("DescribeCertificate"), Some(100.0));
        assert_eq!(s.iot_api_quotas.get("UpdateCertificate"), Some(10.0));
        assert_eq!(s.iot_api_share, 4);
        assert_eq!(
            settings(&BASE).map(|s| s.iot_api_share).ok(),
            Some(0),
            "unpaced by default"
        );
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
