//! The function's configuration, read from the environment once at init.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table |
//! | `CREDENTIALS_BUCKET` | yes | | bucket of the server-keygen credentials objects (deleted on success) |
//! | `CONFIG_CACHE_TTL_SECONDS` | no | `60` | cache lifetime of the profiles |
//! | `DEFAULT_PROFILE`, `DEFAULT_PROFILE_CA_IDS` | no | | the default profile (as for the registrar) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |
//! | `S3_FORCE_PATH_STYLE` | no | `false` | path-style S3 addressing (emulators) |

use std::time::Duration;

use onboarding_aws::SdkSettings;
use onboarding_domain::CompleterSettings;
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub credentials_bucket: String,
    pub completer: CompleterSettings,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
    pub s3_force_path_style: bool,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        Ok(Self {
            inventory_table: env.required("INVENTORY_TABLE")?,
            credentials_bucket: env.required("CREDENTIALS_BUCKET")?,
            completer: CompleterSettings {
                cache_ttl: Duration::from_secs(env.number("CONFIG_CACHE_TTL_SECONDS", 60)?),
                default_profile: env.default_profile()?,
            },
            metrics_namespace: env.metrics_namespace(),
            sdk: SdkSettings::with_max_attempts(env.sdk_max_attempts()?),
            s3_force_path_style: env.flag("S3_FORCE_PATH_STYLE"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_table_and_bucket() {
        assert_eq!(
            Settings::from_lookup(|k| (k == "INVENTORY_TABLE").then(|| "t".to_string())).err(),
            Some(SettingsError::Missing("CREDENTIALS_BUCKET"))
        );
    }
}
