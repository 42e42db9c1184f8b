//! Job-execution events of rotation jobs: an SQS batch (or one event,
//! invoked directly) through the completer, each outcome logged and counted.

use onboarding_domain::{CompletionOutcome, JobExecutionEvent};
use serde_json::{Value, json};

use crate::AwsCompleter;
use crate::metrics::outcome_metrics;

/// Why an invocation failed: it never does as a whole (failed messages are
/// listed for a retry), so this type has no values.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {}

impl onboarding_lambda::InvocationFailure for InvocationError {
    fn error_type(&self) -> String {
        match *self {}
    }
}

/// The function's handler: the completer with the AWS adapters.
pub struct Handler {
    pub(crate) completer: AwsCompleter,
    pub(crate) metrics_namespace: String,
}

impl Handler {
    pub fn completer(&self) -> &AwsCompleter {
        &self.completer
    }

    /// Handles one invocation as of the wall clock.
    ///
    /// # Errors
    /// None: see [`Handler::handle_at`].
    pub async fn handle(&self, payload: Value) -> Result<Value, InvocationError> {
        Ok(self
            .handle_at(payload, time::OffsetDateTime::now_utc().unix_timestamp())
            .await)
    }

    /// Handles one invocation: an SQS batch of job-execution events (or one
    /// event, invoked directly). Never fails as a whole: failed messages are
    /// listed for a retry; malformed ones too, so that they end in the
    /// dead-letter queue for inspection rather than vanish.
    pub async fn handle_at(&self, payload: Value, now: i64) -> Value {
        let Some(messages) = onboarding_lambda::sqs_messages(&payload) else {
            return match serde_json::from_value::<JobExecutionEvent>(payload) {
                Ok(event) => match self.completer.handle(&event, now).await {
                    Ok(outcome) => {
                        onboarding_lambda::emit(&outcome_metrics(&self.metrics_namespace, &outcome, now * 1000));
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
            match self.completer.handle(&event, now).await {
                Ok(outcome) => {
                    tracing::info!(job = %event.job_id, status = %event.status, outcome = outcome.label(), "job execution");
                    onboarding_lambda::emit(&outcome_metrics(&self.metrics_namespace, &outcome, now * 1000));
                }
                Err(e) => {
                    tracing::warn!(job = %event.job_id, error = %e, transient = e.is_transient(), "job execution not handled; retried");
                    failed.push(message.message_id);
                }
            }
        }
        onboarding_lambda::batch_response(failed)
    }
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
}
