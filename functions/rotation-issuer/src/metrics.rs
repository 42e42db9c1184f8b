//! Outcomes as CloudWatch embedded-metric-format (EMF) lines on stdout.

use onboarding_domain::CsrOutcome;
use serde_json::Value;

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
