//! A run as CloudWatch embedded-metric-format (EMF) lines on stdout.

use onboarding_domain::{ReconcileReport, SupersessionReport};
use serde_json::Value;

/// EMF metrics of one run: a count per kind of finding.
pub fn report_metrics(namespace: &str, report: &ReconcileReport, timestamp_ms: i64) -> Value {
    onboarding_lambda::emf(
        namespace,
        "fleet-reconciler",
        &[
            ("StuckRecovered", f64::from(report.stuck_processed), "Count"),
            ("UnrecordedActiveFound", f64::from(report.recorded_active), "Count"),
            (
                "RecordsOfMissingCertificates",
                f64::from(report.marked_missing),
                "Count",
            ),
            ("ReconcilerErrors", f64::from(report.errors), "Count"),
        ],
        &[],
        timestamp_ms,
    )
}

/// EMF metrics of the superseded certificates' pass.
pub fn supersession_metrics(namespace: &str, report: &SupersessionReport, timestamp_ms: i64) -> Value {
    onboarding_lambda::emf(
        namespace,
        "fleet-reconciler",
        &[
            ("SupersededRevoked", f64::from(report.revoked), "Count"),
            ("SupersessionsWaiting", f64::from(report.waiting), "Count"),
            ("SupersessionsDropped", f64::from(report.dropped), "Count"),
            ("SupersessionErrors", f64::from(report.errors), "Count"),
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
    fn every_finding_is_a_metric() {
        let report = ReconcileReport {
            stuck_processed: 2,
            recorded_active: 1,
            marked_missing: 3,
            ..ReconcileReport::default()
        };
        let doc = report_metrics("ns", &report, 0);
        assert_eq!(doc["StuckRecovered"], 2.0);
        assert_eq!(doc["UnrecordedActiveFound"], 1.0);
        assert_eq!(doc["RecordsOfMissingCertificates"], 3.0);
        assert_eq!(report_json(&report, 5)["markedMissing"], 3);
    }
}
