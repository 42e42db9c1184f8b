//! The `rotation-completer` Lambda: job-execution events of rotation jobs
//! (IoT rule → SQS → event-source mapping), through the domain's
//! [`Completer`]. Failed messages are reported in `batchItemFailures` and
//! retried; after `maxReceiveCount` they wait in the dead-letter queue.
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

use onboarding_aws::{DynamoInventory, RotationIotAdapter, S3RotationObjects, SdkSettings};
use onboarding_domain::{Completer, CompleterSettings, CompletionOutcome, JobExecutionEvent};
pub use onboarding_lambda::FromEnv;
use onboarding_lambda::{Env, SettingsError};
use serde_json::{Value, json};

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

/// The completer with the AWS adapters.
pub type AwsCompleter = Completer<DynamoInventory, RotationIotAdapter, S3RotationObjects, DynamoInventory>;

/// Builds the completer from settings and a loaded SDK configuration.
pub fn build_completer(settings: &Settings, sdk: &aws_config::SdkConfig) -> AwsCompleter {
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    // The completer never publishes nor creates objects (deletes only, which
    // need no KMS key).
    let iot = RotationIotAdapter::new(
        aws_sdk_iot::Client::new(sdk),
        aws_sdk_iotdataplane::Client::new(sdk),
        None,
    );
    let objects = S3RotationObjects::new(
        onboarding_aws::s3_client(sdk, settings.s3_force_path_style),
        &settings.credentials_bucket,
        "",
    );
    Completer::new(inventory.clone(), iot, objects, inventory, settings.completer.clone())
}

/// Handles one invocation: an SQS batch of job-execution events (or one
/// event, invoked directly). Never fails as a whole: failed messages are
/// listed for a retry; malformed ones too, so that they end in the
/// dead-letter queue for inspection rather than vanish.
pub async fn handle(completer: &AwsCompleter, namespace: &str, payload: Value, now: i64) -> Value {
    let Some(messages) = onboarding_lambda::sqs_messages(&payload) else {
        return match serde_json::from_value::<JobExecutionEvent>(payload) {
            Ok(event) => match completer.handle(&event, now).await {
                Ok(outcome) => {
                    onboarding_lambda::emit(&outcome_metrics(namespace, &outcome, now * 1000));
                    outcome_json(&outcome)
                }
                Err(e) => json!({"outcome": "error", "error": e.to_string()}),
            },
            Err(e) => json!({"outcome": "malformed", "error": e.to_string()}),
        };
    };
    let mut failed = Vec::new();
    for message in messages {
        let event = message
            .body
            .and_then(|body| serde_json::from_value::<JobExecutionEvent>(body).map_err(|e| e.to_string()));
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(message = %message.message_id, error = %e, "malformed job-execution event");
                failed.push(message.message_id);
                continue;
            }
        };
        match completer.handle(&event, now).await {
            Ok(outcome) => {
                tracing::info!(job = %event.job_id, status = %event.status, outcome = outcome.label(), "job execution");
                onboarding_lambda::emit(&outcome_metrics(namespace, &outcome, now * 1000));
            }
            Err(e) => {
                tracing::warn!(job = %event.job_id, error = %e, transient = e.is_transient(), "job execution not handled; retried");
                failed.push(message.message_id);
            }
        }
    }
    onboarding_lambda::batch_response(failed)
}

/// The outcome as a direct invocation's answer.
pub fn outcome_json(outcome: &CompletionOutcome) -> Value {
    let mut answer = json!({ "outcome": outcome.label() });
    match outcome {
        CompletionOutcome::Completed {
            thing_name,
            old_certificate_id,
            new_certificate_id,
        } => {
            answer["thingName"] = json!(thing_name);
            answer["oldCertificateId"] = json!(old_certificate_id);
            answer["newCertificateId"] = json!(new_certificate_id);
        }
        CompletionOutcome::Failed {
            thing_name,
            old_certificate_id,
            reason,
            retry_at,
        } => {
            answer["thingName"] = json!(thing_name);
            answer["oldCertificateId"] = json!(old_certificate_id);
            answer["reasonCode"] = json!(reason.code());
            answer["retryAt"] = json!(retry_at);
        }
        CompletionOutcome::Delivered { thing_name } => answer["thingName"] = json!(thing_name),
        CompletionOutcome::Duplicate { thing_name, state } => {
            answer["thingName"] = json!(thing_name);
            answer["state"] = json!(state.as_str());
        }
        CompletionOutcome::Ignored { reason } => answer["reason"] = json!(reason.code()),
    }
    answer
}

/// EMF metrics of one event (dimension `Function` = `rotation`): a failed
/// attempt is `RotationFailed`, which the alarm watches.
pub fn outcome_metrics(namespace: &str, outcome: &CompletionOutcome, timestamp_ms: i64) -> Value {
    let completed = f64::from(u8::from(matches!(outcome, CompletionOutcome::Completed { .. })));
    let failed = f64::from(u8::from(outcome.is_alarm()));
    match outcome {
        CompletionOutcome::Failed { reason, .. } => onboarding_lambda::emf(
            namespace,
            "rotation",
            &[("RotationFailed", failed, "Count")],
            &[("Reason", reason.code())],
            timestamp_ms,
        ),
        _ => onboarding_lambda::emf(
            namespace,
            "rotation",
            &[("RotationCompleted", completed, "Count")],
            &[],
            timestamp_ms,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_batch_parses() {
        let batch: Value = serde_json::from_str(include_str!("../../../events/rotation-job-execution-sqs.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        let messages = onboarding_lambda::sqs_messages(&batch).unwrap_or_default();
        assert_eq!(messages.len(), 1);
        let body = messages[0].body.clone().unwrap_or_else(|e| panic!("{e}"));
        let event: JobExecutionEvent = serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event.status, "SUCCEEDED");
        assert_eq!(event.thing_name(), Some("sensor-00001"));
        assert!(event.status_details.contains_key("newCertificateId"));
    }

    #[test]
    fn failures_carry_the_reason_dimension() {
        let outcome = CompletionOutcome::Failed {
            thing_name: "t".into(),
            old_certificate_id: "o".into(),
            reason: onboarding_domain::FailureReason::JobTimedOut,
            retry_at: Some(5),
        };
        let doc = outcome_metrics("ns", &outcome, 0);
        assert_eq!(doc["RotationFailed"], 1.0);
        assert_eq!(doc["Reason"], "JOB_TIMED_OUT");
        assert_eq!(outcome_json(&outcome)["reasonCode"], "JOB_TIMED_OUT");
    }

    #[test]
    fn settings_need_table_and_bucket() {
        assert_eq!(
            Settings::from_lookup(|k| (k == "INVENTORY_TABLE").then(|| "t".to_string())).err(),
            Some(SettingsError::Missing("CREDENTIALS_BUCKET"))
        );
    }
}
