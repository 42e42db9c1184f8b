//! Outcomes as CloudWatch embedded-metric-format (EMF) lines on stdout.

use onboarding_domain::CompletionOutcome;
use serde_json::Value;

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
    use crate::handler::outcome_json;

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
}
