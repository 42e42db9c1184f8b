//! A run as CloudWatch embedded-metric-format (EMF) lines on stdout.

use onboarding_domain::RunReport;
use serde_json::Value;

/// The EMF document of one run (dimension `Function` = `rotation`, shared by
/// the three rotation functions so one alarm watches `RotationFailed`).
pub fn report_metrics(namespace: &str, report: &RunReport, duration_ms: f64, timestamp_ms: i64) -> Value {
    onboarding_lambda::emf(
        namespace,
        "rotation",
        &[
            ("RotationStarted", f64::from(report.started), "Count"),
            ("RotationCompleted", f64::from(report.completed), "Count"),
            ("RotationFailed", f64::from(report.failed), "Count"),
            ("RotationRetried", f64::from(report.retried), "Count"),
            ("RotationGaveUp", f64::from(report.gave_up), "Count"),
            ("OldCertificateDeleted", f64::from(report.deleted), "Count"),
            ("RotatorErrors", f64::from(report.errors), "Count"),
            ("RotationsInWindow", f64::from(report.in_window), "Count"),
            ("RotatorBehind", f64::from(u8::from(report.behind)), "Count"),
            ("RotatorDurationMs", duration_ms, "Milliseconds"),
        ],
        &[],
        timestamp_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::report_json;

    #[test]
    fn metrics_name_every_count() {
        let report = RunReport {
            started: 3,
            failed: 1,
            ..RunReport::default()
        };
        let doc = report_metrics("ns", &report, 10.0, 0);
        assert_eq!(doc["RotationStarted"], 3.0);
        assert_eq!(doc["RotationFailed"], 1.0);
        assert_eq!(doc["Function"], "rotation");
        assert_eq!(report_json(&report, 5)["started"], 3);
    }
}
