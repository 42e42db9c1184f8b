//! One CSR: the rule's output parsed (the thing name from the topic only),
//! the issuer's answer to the device, the outcome as the invocation's
//! answer and as metrics.

use onboarding_domain::{CsrMessage, CsrOutcome, RotationError};
use serde_json::{Value, json};

use crate::AwsIssuer;
use crate::metrics::outcome_metrics;

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

impl onboarding_lambda::InvocationFailure for InvocationError {
    /// `MalformedEvent` (permanent) or `Rotation.<kind>`.
    fn error_type(&self) -> String {
        match self {
            InvocationError::Malformed(_) => "MalformedEvent".to_string(),
            InvocationError::Rotation(e) => format!("Rotation.{}", e.kind()),
        }
    }
}

/// The function's handler: the issuer with the AWS adapters.
pub struct Handler {
    pub(crate) issuer: AwsIssuer,
    pub(crate) metrics_namespace: String,
}

impl Handler {
    pub fn issuer(&self) -> &AwsIssuer {
        &self.issuer
    }

    /// Handles one CSR event, as of the wall clock: the outcome is the
    /// answer and an EMF line.
    ///
    /// # Errors
    /// [`InvocationError::Malformed`] for an event the rule cannot have
    /// made, or the issuer's failure (logged).
    pub async fn handle(&self, payload: Value) -> Result<Value, InvocationError> {
        let csr = CsrEvent::parse(&payload)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let outcome = self
            .issuer
            .handle(&csr.thing_name, &csr.principal, &csr.message, now)
            .await
            .inspect_err(|e| tracing::error!(error = %e, thing = %csr.thing_name, "CSR not handled"))?;
        onboarding_lambda::emit(&outcome_metrics(&self.metrics_namespace, &outcome, now * 1000));
        Ok(outcome_json(&outcome))
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
}
