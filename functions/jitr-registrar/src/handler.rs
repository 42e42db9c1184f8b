//! Translates Lambda payloads into registrar calls and outcomes back into
//! answers, logs and metrics. It owns no business rules.
//!
//! Two payload shapes arrive:
//! - the certificate-registered event itself, from an IoT rule's Lambda action
//!   (asynchronous invoke: an error makes Lambda retry it, then send it to the
//!   function's on-failure destination);
//! - an SQS batch whose message bodies are that event, from an IoT rule's SQS
//!   action and an event-source mapping with `ReportBatchItemFailures`: only
//!   the failed messages are returned to the queue (and after `maxReceiveCount`
//!   to its dead-letter queue), so one bad message never re-drives the batch.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use onboarding_aws::{DynamoInventory, IotAdapter, S3CredentialsStore};
use onboarding_domain::{CertificateRegistry, CredentialsStore, DenyList, Inventory, ThingRegistry};
use onboarding_domain::{JitrEvent, MalformedEvent, Outcome, ProvisioningError, Registrar};
use serde_json::{Value, json};

use crate::metrics::{self, Measured};

/// The name this function reports in logs and metrics.
pub const FUNCTION: &str = "jitr-registrar";

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// Permanent: the payload is not a certificate-registered event.
    #[error("malformed event (permanent, retrying cannot help): {0}")]
    Malformed(#[from] MalformedEvent),
    /// The event must be retried.
    #[error("{0}")]
    Provisioning(#[from] ProvisioningError),
}

impl onboarding_lambda::InvocationFailure for InvocationError {
    /// `MalformedEvent` (permanent) or `Retryable.<kind>`.
    fn error_type(&self) -> String {
        match self {
            InvocationError::Malformed(_) => "MalformedEvent".to_string(),
            InvocationError::Provisioning(e) => format!("Retryable.{}", e.kind()),
        }
    }
}

/// The function's handler. Generic over the registrar's ports; `Handler`
/// alone is the one [`crate::build`] makes, over the AWS adapters.
pub struct Handler<C = IotAdapter, T = IotAdapter, S = S3CredentialsStore, I = DynamoInventory> {
    registrar: Registrar<C, T, S, I>,
    batch_concurrency: usize,
    metrics_namespace: String,
    emit_metrics: bool,
}

/// One SQS message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub message_id: String,
    pub event: Result<JitrEvent, MalformedEvent>,
    /// SQS's `ApproximateReceiveCount`: above 1 for a message handed out again.
    pub receive_count: u32,
}

impl<C, T, S, I> Handler<C, T, S, I>
where
    C: CertificateRegistry,
    T: ThingRegistry,
    S: CredentialsStore,
    I: Inventory + DenyList,
{
    pub fn new(
        registrar: Registrar<C, T, S, I>,
        batch_concurrency: usize,
        metrics_namespace: impl Into<String>,
    ) -> Self {
        Self {
            registrar,
            batch_concurrency: batch_concurrency.max(1),
            metrics_namespace: metrics_namespace.into(),
            emit_metrics: true,
        }
    }

    /// Stops writing EMF lines to stdout (for local tools that print their own output).
    pub fn without_metrics(mut self) -> Self {
        self.emit_metrics = false;
        self
    }

    pub fn registrar(&self) -> &Registrar<C, T, S, I> {
        &self.registrar
    }

    /// Fills the configuration cache and opens connections during init, so
    /// the first event does not pay for them. A failure is logged, not
    /// fatal: events load what they need lazily.
    pub async fn warm_up(&self) {
        if let Err(e) = self.registrar.warm_up().await {
            tracing::warn!(error = %e, "warm-up failed; continuing");
        }
    }

    /// Handles any payload: an SQS batch or a direct event.
    ///
    /// # Errors
    /// For a direct event: [`InvocationError`]. An SQS batch never fails as a
    /// whole; its failures are listed in `batchItemFailures`.
    pub async fn handle(&self, payload: Value) -> Result<Value, InvocationError> {
        if let Some(records) = sqs_records(&payload) {
            return Ok(onboarding_lambda::batch_response(self.handle_sqs(records).await));
        }
        let outcome = self.handle_direct(payload).await?;
        Ok(outcome_json(&outcome))
    }

    /// Handles one direct event.
    ///
    /// # Errors
    /// [`InvocationError::Malformed`] (logged, counted) or a provisioning error to retry.
    pub async fn handle_direct(&self, payload: Value) -> Result<Outcome, InvocationError> {
        let event = JitrEvent::from_value(payload).inspect_err(|e| self.malformed(None, e))?;
        Ok(self.process(&event).await?)
    }

    /// Handles decoded SQS messages. Messages about the same certificate (IoT
    /// publishes the event on every connection attempt) are processed once.
    /// Returns the ids of the messages to retry.
    pub async fn handle_sqs(&self, messages: Vec<QueuedEvent>) -> Vec<String> {
        let mut failures = Vec::new();
        let mut by_certificate: HashMap<String, (JitrEvent, Vec<String>)> = HashMap::new();
        let redelivered = messages.iter().filter(|m| m.receive_count > 1).count();
        if redelivered > 0 && self.emit_metrics {
            onboarding_lambda::emit(&metrics::redelivered(
                &self.metrics_namespace,
                FUNCTION,
                redelivered,
                unix_now_ms(),
            ));
        }
        for message in messages {
            match message.event {
                Ok(event) => {
                    by_certificate
                        .entry(event.certificate_id.clone())
                        .or_insert_with(|| (event, Vec::new()))
                        .1
                        .push(message.message_id);
                }
                Err(e) => {
                    self.malformed(Some(&message.message_id), &e);
                    // Returned to the queue; the redrive policy moves it to the
                    // dead-letter queue, where it is kept for inspection.
                    failures.push(message.message_id);
                }
            }
        }
        let results: Vec<(Vec<String>, bool)> = futures::stream::iter(by_certificate.into_values())
            .map(|(event, ids)| async move { (ids, self.process(&event).await.is_ok()) })
            .buffer_unordered(self.batch_concurrency)
            .collect()
            .await;
        for (ids, ok) in results {
            if !ok {
                failures.extend(ids);
            }
        }
        failures
    }

    /// Runs the registrar on one event, then logs and counts the outcome.
    async fn process(&self, event: &JitrEvent) -> Result<Outcome, ProvisioningError> {
        let started = Instant::now();
        let result = self.registrar.handle(event, unix_now()).await;
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let duration = (duration_ms * 10.0).round() / 10.0;
        let (certificate_id, ca) = (event.certificate_id.as_str(), event.ca_certificate_id.as_str());
        let measured = match &result {
            Ok(outcome @ Outcome::Rejected { rejection, status, .. }) => {
                tracing::warn!(
                    certificateId = certificate_id,
                    caCertificateId = ca,
                    thingName = outcome.thing_name(),
                    outcome = outcome.label(),
                    reasonCode = rejection.reason.code(),
                    reason = %rejection.detail,
                    certificateStatus = status.as_str(),
                    durationMs = duration,
                    "certificate rejected"
                );
                Measured::Rejected {
                    reason: rejection.reason.code(),
                }
            }
            Ok(outcome) => {
                let dropped = match outcome {
                    Outcome::Provisioned { dropped_attributes, .. } if !dropped_attributes.is_empty() => {
                        Some(dropped_attributes.join(","))
                    }
                    _ => None,
                };
                let status = match outcome {
                    Outcome::Ignored { certificate_status } => Some(certificate_status.as_str()),
                    _ => None,
                };
                tracing::info!(
                    certificateId = certificate_id,
                    caCertificateId = ca,
                    thingName = outcome.thing_name(),
                    outcome = outcome.label(),
                    droppedAttributes = dropped,
                    certificateStatus = status,
                    durationMs = duration,
                    "onboarding outcome"
                );
                match outcome {
                    Outcome::LeftAlone { rejection } => Measured::LeftAlone {
                        reason: rejection.reason.code(),
                    },
                    Outcome::Provisioned { .. } => Measured::Provisioned,
                    Outcome::AlreadyProvisioned { .. } => Measured::Duplicate,
                    Outcome::Recorded { .. } => Measured::Recorded,
                    _ => Measured::Ignored,
                }
            }
            Err(e) if e.is_transient() => {
                // The SDK already retried with backoff; under a burst this is
                // expected and the event will be retried.
                tracing::warn!(certificateId = certificate_id, caCertificateId = ca, outcome = "failed", errorKind = e.kind(), error = %e, durationMs = duration, "onboarding deferred; will be retried");
                Measured::Failed { kind: e.kind() }
            }
            Err(e) => {
                tracing::error!(certificateId = certificate_id, caCertificateId = ca, outcome = "failed", errorKind = e.kind(), error = %e, durationMs = duration, "onboarding failed; will be retried");
                Measured::Failed { kind: e.kind() }
            }
        };
        self.emit(measured, duration);
        result
    }

    fn malformed(&self, message_id: Option<&str>, error: &MalformedEvent) {
        tracing::error!(messageId = message_id, outcome = "malformed", error = %error, "malformed event (permanent failure)");
        self.emit(Measured::MalformedEvent, 0.0);
    }

    fn emit(&self, measured: Measured<'_>, duration_ms: f64) {
        if self.emit_metrics {
            onboarding_lambda::emit(&metrics::emf(
                &self.metrics_namespace,
                FUNCTION,
                measured,
                duration_ms,
                unix_now_ms(),
            ));
        }
    }
}

/// The records of an SQS batch, decoded; `None` when the payload is not an
/// SQS batch. Bodies are the event JSON, that JSON in base64 (an IoT rule
/// SQS action with `useBase64`), or an IoT rule error-action report carrying
/// the event in `base64OriginalPayload`.
pub fn sqs_records(payload: &Value) -> Option<Vec<QueuedEvent>> {
    Some(
        onboarding_lambda::sqs_messages(payload)?
            .into_iter()
            .map(|message| QueuedEvent {
                message_id: message.message_id,
                receive_count: message.receive_count,
                event: message
                    .body
                    .map_err(MalformedEvent::NotJson)
                    .and_then(JitrEvent::from_value),
            })
            .collect(),
    )
}

/// The answer to a direct invocation.
pub fn outcome_json(outcome: &Outcome) -> Value {
    let mut value = json!({"outcome": outcome.label(), "thingName": outcome.thing_name()});
    if let Outcome::Rejected { rejection, status, .. } = outcome {
        value["reasonCode"] = json!(rejection.reason.code());
        value["reason"] = json!(rejection.detail);
        value["certificateStatus"] = json!(status.as_str());
    }
    if let Outcome::Ignored { certificate_status } = outcome {
        value["certificateStatus"] = json!(certificate_status);
    }
    if let Outcome::LeftAlone { rejection } = outcome {
        value["reasonCode"] = json!(rejection.reason.code());
        value["reason"] = json!(rejection.detail);
    }
    value
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const CA: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn event_json() -> String {
        format!(
            r#"{{"certificateId":"{CERT}","caCertificateId":"{CA}","timestamp":1,"certificateRegistrationTimestamp":null}}"#
        )
    }

    #[test]
    fn sqs_batches_are_recognised_and_decoded() {
        let b64 = aws_smithy_types::base64::encode(event_json());
        let b64_clone = b64.clone();
        let payload = json!({"Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": event_json()},
            {"messageId": "m2", "eventSource": "aws:sqs", "body": b64},
            {"messageId": "m3", "eventSource": "aws:sqs", "body": "not json"},
            {"messageId": "m4", "eventSource": "aws:sqs", "body": "{\"certificateId\":\"x\"}"},
            {"messageId": "m5", "eventSource": "aws:sqs", "body": json!({
                "ruleName": "registrations", "topic": format!("$aws/events/certificates/registered/{CA}"),
                "base64OriginalPayload": b64_clone, "failures": [{"failedAction": "SqsAction", "errorMessage": "throttled"}]
            }).to_string()},
        ]});
        let records = sqs_records(&payload).unwrap_or_default();
        assert_eq!(records.len(), 5);
        assert_eq!(records[4].event.as_ref().map(|e| e.certificate_id.as_str()), Ok(CERT));
        assert_eq!(records[0].event.as_ref().map(|e| e.certificate_id.as_str()), Ok(CERT));
        assert_eq!(records[1].event.as_ref().map(|e| e.ca_certificate_id.as_str()), Ok(CA));
        assert!(matches!(records[2].event, Err(MalformedEvent::NotJson(_))));
        assert!(matches!(records[3].event, Err(MalformedEvent::Shape(_))));
    }

    #[test]
    fn direct_events_are_not_sqs() {
        let direct: Value = serde_json::from_str(&event_json()).unwrap_or_default();
        assert!(sqs_records(&direct).is_none());
        assert!(sqs_records(&json!({"Records": [{"eventSource": "aws:s3"}]})).is_none());
    }

    #[test]
    fn sample_events_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
        let direct = std::fs::read_to_string(dir.join("jitr-direct.json")).unwrap_or_default();
        assert!(JitrEvent::from_json_str(&direct).is_ok(), "events/jitr-direct.json");
        let sqs: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("jitr-sqs.json")).unwrap_or_default())
            .unwrap_or_default();
        let records = sqs_records(&sqs).unwrap_or_default();
        assert!(
            !records.is_empty() && records.iter().all(|r| r.event.is_ok()),
            "events/jitr-sqs.json"
        );
    }
}
