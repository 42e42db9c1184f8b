//! Decisions as CloudWatch embedded-metric-format (EMF) lines on stdout.

use onboarding_domain::HookOutcome;
use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;

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
