//! The function's configuration, read from the environment once at init.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table (allow-list, profiles, records) |
//! | `CONFIG_CACHE_TTL_SECONDS` | no | `60` | cache lifetime of the profiles |
//! | `DEFAULT_PROFILE` | no | | the profile of allow-list entries that name none |
//! | `HOOK_BUDGET_MILLIS` | no | `3500` | time the hook gives itself before refusing |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `3` | attempts per AWS call |

use std::time::Duration;

use onboarding_aws::SdkSettings;
use onboarding_domain::{HOOK_LIMIT_MILLIS, HookSettings};
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub hook: HookSettings,
    pub budget: Duration,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        let budget: u64 = env.positive("HOOK_BUDGET_MILLIS", 3_500)?;
        if budget >= HOOK_LIMIT_MILLIS {
            return Err(SettingsError::Invalid {
                name: "HOOK_BUDGET_MILLIS",
                problem: format!("{budget} is not under AWS IoT's {HOOK_LIMIT_MILLIS} ms limit"),
            });
        }
        let budget = Duration::from_millis(budget);
        let mut sdk = SdkSettings::with_max_attempts(env.number("SDK_MAX_ATTEMPTS", 3)?);
        sdk.operation_timeout = budget;
        sdk.attempt_timeout = budget.min(Duration::from_secs(2));
        sdk.max_backoff = Duration::from_millis(500);
        Ok(Self {
            inventory_table: env.required("INVENTORY_TABLE")?,
            hook: HookSettings {
                default_profile: env.default_profile()?.map(|(profile, _)| profile),
                cache_ttl: Duration::from_secs(env.number("CONFIG_CACHE_TTL_SECONDS", 60)?),
                ..HookSettings::default()
            },
            budget,
            metrics_namespace: env.metrics_namespace(),
            sdk,
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
    fn the_budget_stays_under_the_limit_and_bounds_the_sdk() {
        let ok = settings(&[("INVENTORY_TABLE", "t")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.budget, Duration::from_millis(3_500));
        assert_eq!(ok.sdk.operation_timeout, ok.budget);
        assert!(settings(&[("INVENTORY_TABLE", "t"), ("HOOK_BUDGET_MILLIS", "5000")]).is_err());
        assert!(settings(&[]).is_err());
        let profile = r#"{"name":"default","policyName":"p"}"#;
        let with =
            settings(&[("INVENTORY_TABLE", "t"), ("DEFAULT_PROFILE", profile)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(with.hook.default_profile.map(|p| p.name), Some("default".to_string()));
    }
}
