//! The `provisioning-hook` Lambda: the pre-provisioning hook of the
//! fleet-provisioning template, through the domain's [`ProvisioningHook`].
//!
//! AWS IoT waits at most 5 seconds for the answer. A new device costs three
//! rounds of calls, each round's calls in parallel: the allow-list entry
//! (and the configuration when the cache is cold); the entry used up, the
//! thing name claimed (both conditional writes) and the thing's principals
//! listed in IoT; the inventory record. The SDK is held to a budget well
//! inside the limit (`HOOK_BUDGET_MILLIS`), and anything that does not
//! finish in it refuses: the device retries `RegisterThing` later.
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

use onboarding_aws::{DynamoInventory, IotAdapter, SdkSettings};
use onboarding_domain::{HOOK_LIMIT_MILLIS, HookOutcome, HookRequest, HookResponse, HookSettings, ProvisioningHook};
pub use onboarding_lambda::FromEnv;
use onboarding_lambda::{Env, SettingsError};
use serde_json::{Value, json};

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

/// The hook with its DynamoDB and IoT adapters.
pub type AwsHook = ProvisioningHook<DynamoInventory, IotAdapter>;

pub fn build_hook(settings: &Settings, sdk: &aws_config::SdkConfig) -> AwsHook {
    ProvisioningHook::new(
        DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table),
        IotAdapter::new(aws_sdk_iot::Client::new(sdk)),
        settings.hook.clone(),
    )
}

/// Handles one invocation: a malformed request or one not decided within
/// the budget is refused, never an error (an error is also a refusal to AWS
/// IoT, but says less in the logs).
pub async fn handle(hook: &AwsHook, budget: Duration, payload: Value, now: i64) -> (HookResponse, HookOutcome) {
    let request: HookRequest = match serde_json::from_value(payload) {
        Ok(request) => request,
        Err(e) => {
            let outcome = HookOutcome::Unavailable(format!("malformed hook request: {e}"));
            return (outcome.response(), outcome);
        }
    };
    let outcome = match tokio::time::timeout(budget, hook.handle(&request, now)).await {
        Ok(outcome) => outcome,
        Err(_) => HookOutcome::Unavailable(format!("not decided within {} ms", budget.as_millis())),
    };
    log(&request, &outcome);
    (outcome.response(), outcome)
}

fn log(request: &HookRequest, outcome: &HookOutcome) {
    let certificate = request.certificate_id.as_str();
    let template = request.template_name().unwrap_or_default();
    let claim = request.claim_certificate_id.as_deref().unwrap_or_default();
    match outcome {
        HookOutcome::Allowed(allowed) => tracing::info!(
            certificate,
            template,
            claim,
            serial = allowed.serial,
            thing = allowed.thing_name,
            profile = allowed.profile,
            "provisioning allowed"
        ),
        HookOutcome::Refused(refusal) => tracing::warn!(
            certificate,
            template,
            claim,
            reason = refusal.code(),
            detail = refusal.detail(),
            "provisioning refused"
        ),
        HookOutcome::Unavailable(why) => {
            tracing::error!(
                certificate,
                template,
                claim,
                error = why,
                "provisioning refused: hook unavailable"
            );
        }
    }
}

/// EMF metrics of one decision: `ProvisioningAllowed`, `ProvisioningRefused`
/// (with a `Reason` dimension) or `HookErrors`.
pub fn outcome_metrics(namespace: &str, outcome: &HookOutcome, timestamp_ms: i64) -> Value {
    let function = "provisioning-hook";
    match outcome {
        HookOutcome::Allowed(_) => onboarding_lambda::emf(
            namespace,
            function,
            &[("ProvisioningAllowed", 1.0, "Count")],
            &[],
            timestamp_ms,
        ),
        HookOutcome::Refused(refusal) => onboarding_lambda::emf(
            namespace,
            function,
            &[("ProvisioningRefused", 1.0, "Count")],
            &[("Reason", refusal.code())],
            timestamp_ms,
        ),
        HookOutcome::Unavailable(_) => {
            onboarding_lambda::emf(namespace, function, &[("HookErrors", 1.0, "Count")], &[], timestamp_ms)
        }
    }
}

/// The answer as JSON.
pub fn response_json(response: &HookResponse) -> Value {
    serde_json::to_value(response).unwrap_or_else(|_| json!({"allowProvisioning": false}))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(move |k: &str| map.get(k).cloned())
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

    #[test]
    fn metrics_carry_the_reason() {
        use onboarding_domain::Refusal;
        use onboarding_domain::{RejectReason, Rejection};
        let doc = outcome_metrics(
            "ns",
            &HookOutcome::Refused(Refusal::Rejected(Rejection::new(RejectReason::SerialNotAllowed, "x"))),
            0,
        );
        assert_eq!(doc["ProvisioningRefused"], 1.0);
        assert_eq!(doc["Reason"], "SERIAL_NOT_ALLOWED");
    }
}
