//! A run as CloudWatch embedded-metric-format (EMF) lines on stdout.

use onboarding_domain::{CaExpiryReport, ReconcileReport, SupersessionReport};
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

/// EMF metrics of the bound CAs' expiry: one line per CA with
/// `CaDaysToExpiry` (dimension `CaCertificateId`), then one line with
/// `CaExpiringSoon`, the `ACTIVE` bound CAs within the warning window (the
/// alarm's metric), and `CaExpiryUnknown`, the bound CAs that could not be read.
pub fn ca_expiry_metrics(namespace: &str, report: &CaExpiryReport, timestamp_ms: i64) -> Vec<Value> {
    let mut lines: Vec<Value> = report
        .cas
        .iter()
        .map(|ca| {
            #[allow(clippy::cast_precision_loss)] // days fit an f64 exactly
            let days = ca.days_to_expiry as f64;
            onboarding_lambda::emf(
                namespace,
                "fleet-reconciler",
                &[("CaDaysToExpiry", days, "None")],
                &[("CaCertificateId", ca.ca_certificate_id.as_str())],
                timestamp_ms,
            )
        })
        .collect();
    lines.push(onboarding_lambda::emf(
        namespace,
        "fleet-reconciler",
        &[
            ("CaExpiringSoon", f64::from(report.expiring_soon()), "Count"),
            ("CaExpiryUnknown", f64::from(report.errors), "Count"),
        ],
        &[],
        timestamp_ms,
    ));
    lines
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

    #[test]
    fn each_bound_ca_has_its_days_and_the_count_of_those_expiring_soon() {
        let ca = |id: &str, days: i64, soon: bool| onboarding_domain::CaExpiry {
            ca_certificate_id: id.into(),
            active: true,
            not_after: 0,
            days_to_expiry: days,
            expiring_soon: soon,
        };
        let report = CaExpiryReport {
            cas: vec![ca("a", 12, true), ca("b", 400, false)],
            errors: 1,
        };
        let lines = ca_expiry_metrics("ns", &report, 0);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["CaDaysToExpiry"], 12.0);
        assert_eq!(lines[0]["CaCertificateId"], "a");
        assert_eq!(
            lines[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1],
            serde_json::json!(["Function", "CaCertificateId"])
        );
        assert_eq!(lines[1]["CaDaysToExpiry"], 400.0);
        assert_eq!(lines[2]["CaExpiringSoon"], 1.0);
        assert_eq!(lines[2]["CaExpiryUnknown"], 1.0);
    }
}
