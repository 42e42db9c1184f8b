//! The function's configuration, read from the environment once at init.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table |
//! | `CONFIG_CACHE_TTL_SECONDS` | no | `60` | cache lifetime of the profiles |
//! | `DEFAULT_PROFILE`, `DEFAULT_PROFILE_CA_IDS` | no | | the default profile (as for the registrar) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |

use std::time::Duration;

use onboarding_aws::SdkSettings;
use onboarding_domain::CsrIssuerSettings;
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub issuer: CsrIssuerSettings,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        Ok(Self {
            inventory_table: env.required("INVENTORY_TABLE")?,
            issuer: CsrIssuerSettings {
                cache_ttl: Duration::from_secs(env.number("CONFIG_CACHE_TTL_SECONDS", 60)?),
                default_profile: env.default_profile()?,
            },
            metrics_namespace: env.metrics_namespace(),
            sdk: SdkSettings::with_max_attempts(env.sdk_max_attempts()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_the_table() {
        assert_eq!(
            Settings::from_lookup(|_| None).err(),
            Some(SettingsError::Missing("INVENTORY_TABLE"))
        );
    }
}
