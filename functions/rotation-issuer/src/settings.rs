//! The function's configuration, read from the environment once at init.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table |
//! | `CONFIG_CACHE_TTL_SECONDS` | no | `60` | cache lifetime of the profiles |
//! | `DEFAULT_PROFILE`, `DEFAULT_PROFILE_CA_IDS` | no | | the default profile (as for the registrar) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |
//! | `FLEET_CA_KMS_KEY_ARN` | no | | the one KMS key ARN `kmsCa` profiles may name (`arn:…:key/…`); unset: no `kmsCa` issuer |

use std::time::Duration;

use onboarding_aws::SdkSettings;
use onboarding_domain::{CsrIssuerSettings, is_kms_key_arn};
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub issuer: CsrIssuerSettings,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
    /// The fleet CA's KMS key the deployment allows (`kmsCa` profiles).
    pub fleet_ca_kms_key_arn: Option<String>,
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
            fleet_ca_kms_key_arn: match env.get("FLEET_CA_KMS_KEY_ARN") {
                None => None,
                Some(arn) if is_kms_key_arn(&arn) => Some(arn),
                Some(arn) => {
                    return Err(SettingsError::Invalid {
                        name: "FLEET_CA_KMS_KEY_ARN",
                        problem: format!(
                            "{arn:?} is not a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<id>)"
                        ),
                    });
                }
            },
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

    #[test]
    fn the_fleet_ca_key_is_optional_and_must_be_a_key_arn() {
        const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let read = |key: Option<&'static str>| {
            Settings::from_lookup(move |name| match name {
                "INVENTORY_TABLE" => Some("inventory".into()),
                "FLEET_CA_KMS_KEY_ARN" => key.map(str::to_string),
                _ => None,
            })
        };
        assert_eq!(read(None).map(|s| s.fleet_ca_kms_key_arn).ok(), Some(None));
        // The template passes an empty string when the parameter is empty.
        assert_eq!(read(Some("")).map(|s| s.fleet_ca_kms_key_arn).ok(), Some(None));
        assert_eq!(
            read(Some(KEY)).map(|s| s.fleet_ca_kms_key_arn).ok(),
            Some(Some(KEY.to_string()))
        );
        assert!(matches!(
            read(Some("arn:aws:kms:eu-west-1:123456789012:alias/fleet-ca")),
            Err(SettingsError::Invalid {
                name: "FLEET_CA_KMS_KEY_ARN",
                ..
            })
        ));
    }
}
