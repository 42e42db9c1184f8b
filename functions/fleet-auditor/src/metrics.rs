//! A completed run as CloudWatch embedded-metric-format (EMF) lines on
//! stdout: `AuditFindings` once per check (dimensions `Function`, `Check`:
//! the check id, 0 included, so every check's series exists), then
//! `AuditRunCompleted`, `AuditReads` (the run's reads of AWS IoT and the
//! inventory) and `AuditCertificates` (certificates audited).

use onboarding_domain::AuditSummary;
use serde_json::Value;

/// The function's name in the `Function` dimension.
pub const FUNCTION: &str = "fleet-auditor";

/// The EMF lines of one completed run.
#[allow(clippy::cast_precision_loss)] // counts far below 2^53
pub fn run_metrics(namespace: &str, summary: &AuditSummary, timestamp_ms: i64) -> Vec<Value> {
    let mut lines: Vec<Value> = summary
        .by_check()
        .into_iter()
        .map(|(check, count)| {
            onboarding_lambda::emf(
                namespace,
                FUNCTION,
                &[("AuditFindings", count as f64, "Count")],
                &[("Check", check.code())],
                timestamp_ms,
            )
        })
        .collect();
    lines.push(onboarding_lambda::emf(
        namespace,
        FUNCTION,
        &[
            ("AuditRunCompleted", 1.0, "Count"),
            ("AuditReads", summary.reads.total() as f64, "Count"),
            ("AuditCertificates", summary.certificates as f64, "Count"),
        ],
        &[],
        timestamp_ms,
    ));
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use onboarding_domain::{AuditCheck, AuditReads};
    use serde_json::json;

    use super::*;

    #[test]
    fn every_check_is_a_metric_with_its_id_as_the_check_dimension() {
        let summary = AuditSummary {
            run_id: 1,
            started_at: 1,
            finished_at: 2,
            counts: BTreeMap::from([("CERT_SHARED".to_string(), 3)]),
            certificates: 7,
            cas: 1,
            missing_cas: Vec::new(),
            records: 7,
            rotations: 0,
            policies_unaudited: 0,
            reads: AuditReads {
                certificate_descriptions: 7,
                ..AuditReads::default()
            },
        };
        let lines = run_metrics("ns", &summary, 5);
        assert_eq!(lines.len(), AuditCheck::ALL.len() + 1);
        for (line, check) in lines.iter().zip(AuditCheck::ALL) {
            assert_eq!(line["Check"], check.code());
            assert_eq!(line["Function"], FUNCTION);
            let expected = if check == AuditCheck::CertShared { 3.0 } else { 0.0 };
            assert_eq!(line["AuditFindings"], expected, "{check}");
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1],
                json!(["Function", "Check"])
            );
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
                "AuditFindings"
            );
        }
        let last = &lines[AuditCheck::ALL.len()];
        assert_eq!(last["AuditRunCompleted"], 1.0);
        assert_eq!(last["AuditReads"], 7.0);
        assert_eq!(last["AuditCertificates"], 7.0);
    }
}
