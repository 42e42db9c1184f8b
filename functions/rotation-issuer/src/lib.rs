//! The `rotation-issuer` Lambda: a device's rotation CSR, delivered by the IoT
//! rule `SELECT jobId, csr, topic() AS topic, principal() AS principal FROM
//! 'devices/+/rotation/csr'`, through the domain's [`CsrIssuer`].
//!
//! The rule selects explicit fields: only `jobId` and `csr` come from the
//! device's payload. The thing name is taken from the topic the device
//! published on (`topic()`, which IoT authorizes with the device's policy)
//! and the certificate from `principal()` (its TLS identity); a payload key
//! of the same name is never selected, and this function reads the thing
//! name from nothing but `topic`.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table |
//! | `CONFIG_CACHE_TTL_SECONDS` | no | `60` | cache lifetime of the profiles |
//! | `DEFAULT_PROFILE`, `DEFAULT_PROFILE_CA_IDS` | no | | the default profile (as for the registrar) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |

use std::time::Duration;

use onboarding_aws::{DynamoInventory, RotationIotAdapter, SdkSettings};
use onboarding_domain::CsrMessage;
use onboarding_domain::{CsrIssuer, CsrIssuerSettings, CsrOutcome, RotationError};
pub use onboarding_lambda::FromEnv;
use onboarding_lambda::{Env, SettingsError};
use serde_json::{Value, json};

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

/// The issuer with the AWS adapters.
pub type AwsIssuer = CsrIssuer<DynamoInventory, RotationIotAdapter, DynamoInventory>;

/// Builds the issuer; resolves the account's IoT data endpoint for answers.
///
/// # Errors
/// When the data endpoint cannot be resolved.
pub async fn build_issuer(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
) -> Result<AwsIssuer, onboarding_domain::PortError> {
    let iot = aws_sdk_iot::Client::new(sdk);
    let data = onboarding_aws::iot_data_client(sdk, &iot).await?;
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    Ok(CsrIssuer::new(
        inventory.clone(),
        RotationIotAdapter::new(iot, data, None),
        inventory,
        settings.issuer.clone(),
    ))
}

/// What the rule delivers: the device's message plus the thing name (from
/// `topic()`) and the certificate id it connected with (`principal()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrEvent {
    pub thing_name: String,
    pub principal: String,
    pub message: CsrMessage,
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("malformed CSR event: {0}")]
    Malformed(String),
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        let error_type = match &error {
            InvocationError::Malformed(_) => "MalformedEvent".to_string(),
            InvocationError::Rotation(e) => format!("Rotation.{}", e.kind()),
        };
        lambda_runtime::Diagnostic {
            error_type,
            error_message: error.to_string(),
        }
    }
}

impl CsrEvent {
    /// # Errors
    /// [`InvocationError::Malformed`] naming the missing field.
    pub fn parse(event: &Value) -> Result<Self, InvocationError> {
        let field = |name: &str| {
            event
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| InvocationError::Malformed(format!("no {name}")))
        };
        let topic = field("topic")?;
        let thing_name = thing_of_topic(&topic).ok_or_else(|| {
            InvocationError::Malformed(format!("topic {topic:?} is not devices/<thing>/rotation/csr"))
        })?;
        Ok(Self {
            thing_name: thing_name.to_string(),
            principal: field("principal")?,
            message: CsrMessage {
                job_id: field("jobId")?,
                csr: field("csr")?,
            },
        })
    }
}

/// The thing name of a CSR topic `devices/<thing>/rotation/csr` (the one
/// segment the rule's `+` matched).
pub fn thing_of_topic(topic: &str) -> Option<&str> {
    let thing = topic.strip_prefix("devices/")?.strip_suffix("/rotation/csr")?;
    (!thing.is_empty() && !thing.contains('/')).then_some(thing)
}

/// The outcome as the invocation's answer.
pub fn outcome_json(outcome: &CsrOutcome) -> Value {
    let mut answer = json!({ "outcome": outcome.label() });
    match outcome {
        CsrOutcome::Issued {
            thing_name,
            new_certificate_id,
            ..
        } => {
            answer["thingName"] = json!(thing_name);
            answer["newCertificateId"] = json!(new_certificate_id);
        }
        CsrOutcome::Refused { thing_name, rejection } => {
            answer["thingName"] = json!(thing_name);
            answer["reasonCode"] = json!(rejection.reason.code());
            answer["detail"] = json!(rejection.detail);
        }
        CsrOutcome::Superseded { thing_name } => answer["thingName"] = json!(thing_name),
        CsrOutcome::Ignored { reason } => answer["reason"] = json!(reason.code()),
    }
    answer
}

/// EMF metrics of one CSR (dimension `Function` = `rotation`); a refusal
/// fails the attempt, so it counts as `RotationFailed` too.
pub fn outcome_metrics(namespace: &str, outcome: &CsrOutcome, timestamp_ms: i64) -> Value {
    let refused = f64::from(u8::from(matches!(outcome, CsrOutcome::Refused { .. })));
    let issued = f64::from(u8::from(matches!(outcome, CsrOutcome::Issued { resent: false, .. })));
    onboarding_lambda::emf(
        namespace,
        "rotation",
        &[
            ("CsrIssued", issued, "Count"),
            ("CsrRefused", refused, "Count"),
            ("RotationFailed", refused, "Count"),
        ],
        &[],
        timestamp_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_output_parses() {
        let event: Value =
            serde_json::from_str(include_str!("../../../events/rotation-csr.json")).unwrap_or_else(|e| panic!("{e}"));
        let parsed = CsrEvent::parse(&event).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.thing_name, "sensor-00001");
        assert!(parsed.message.job_id.starts_with("rotate-"));
        assert!(parsed.message.csr.contains("CERTIFICATE REQUEST"));
        let mut missing = event.clone();
        missing["principal"] = Value::Null;
        assert!(matches!(CsrEvent::parse(&missing), Err(InvocationError::Malformed(m)) if m.contains("principal")));
    }

    #[test]
    fn the_thing_name_comes_only_from_the_topic() {
        let mut event: Value =
            serde_json::from_str(include_str!("../../../events/rotation-csr.json")).unwrap_or_else(|e| panic!("{e}"));
        // A payload key cannot name another thing: the function never reads it.
        event["thingName"] = Value::from("someone-else");
        let parsed = CsrEvent::parse(&event).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.thing_name, "sensor-00001");
        for topic in [
            "devices/a/b/rotation/csr",
            "devices//rotation/csr",
            "other/x/rotation/csr",
        ] {
            event["topic"] = Value::from(topic);
            assert!(
                matches!(CsrEvent::parse(&event), Err(InvocationError::Malformed(m)) if m.contains("topic")),
                "{topic}"
            );
        }
        event["topic"] = Value::Null;
        assert!(matches!(CsrEvent::parse(&event), Err(InvocationError::Malformed(m)) if m.contains("topic")));
    }

    #[test]
    fn settings_need_the_table() {
        assert_eq!(
            Settings::from_lookup(|_| None).err(),
            Some(SettingsError::Missing("INVENTORY_TABLE"))
        );
    }
}
