//! `AuditFindings`: one audit's findings, without duplicates, in report
//! order, with the counts the metrics, the table and the CLI's exit code use.

use std::collections::BTreeMap;

use super::{AuditCheck, Finding, ResourceKind, Severity};

/// The findings of one audit (or of the pages of one audit, merged), each
/// (check, resource) once, sorted worst first, then by check
/// ([`AuditCheck::ALL`]'s order), then by resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFindings {
    findings: Vec<Finding>,
}

impl AuditFindings {
    /// The findings, merged: a check reporting one resource twice (a page
    /// read again after a resumed run) keeps its worse finding.
    pub fn new(findings: impl IntoIterator<Item = Finding>) -> Self {
        let mut merged = Self::default();
        merged.extend(findings);
        merged
    }

    /// Adds findings, merged as [`AuditFindings::new`] does.
    pub fn extend(&mut self, findings: impl IntoIterator<Item = Finding>) {
        let mut by_key: BTreeMap<(AuditCheck, ResourceKind, String), Finding> = self
            .findings
            .drain(..)
            .map(|f| ((f.check, f.resource_kind, f.resource_id.clone()), f))
            .collect();
        for finding in findings {
            let key = (finding.check, finding.resource_kind, finding.resource_id.clone());
            match by_key.get(&key) {
                Some(kept) if kept.severity >= finding.severity => {}
                _ => {
                    by_key.insert(key, finding);
                }
            }
        }
        self.findings = by_key.into_values().collect();
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.check.cmp(&b.check))
                .then(a.resource_kind.cmp(&b.resource_kind))
                .then(a.resource_id.cmp(&b.resource_id))
        });
    }

    /// The findings, worst first.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    pub fn len(&self) -> usize {
        self.findings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    /// The worst severity found; `None` when nothing was found.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// How many findings are at or above `threshold`.
    pub fn at_or_above(&self, threshold: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity >= threshold).count()
    }

    /// True when a finding is at or above `fail_on` (the CLI's `--fail-on`:
    /// a non-zero exit).
    pub fn fails(&self, fail_on: Severity) -> bool {
        self.at_or_above(fail_on) > 0
    }

    /// The number of findings of every check, zeros included (one metric
    /// per check), in [`AuditCheck::ALL`]'s order.
    pub fn by_check(&self) -> Vec<(AuditCheck, usize)> {
        AuditCheck::ALL
            .into_iter()
            .map(|check| (check, self.findings.iter().filter(|f| f.check == check).count()))
            .collect()
    }

    /// The number of findings of every severity, zeros included, lowest first.
    pub fn by_severity(&self) -> Vec<(Severity, usize)> {
        Severity::ALL
            .into_iter()
            .map(|severity| {
                (
                    severity,
                    self.findings.iter().filter(|f| f.severity == severity).count(),
                )
            })
            .collect()
    }

    /// The number of findings of each (check, severity) pair found (no zeros).
    pub fn by_check_and_severity(&self) -> BTreeMap<(AuditCheck, Severity), usize> {
        let mut counts = BTreeMap::new();
        for f in &self.findings {
            *counts.entry((f.check, f.severity)).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(check: AuditCheck, severity: Severity, id: &str) -> Finding {
        Finding::new(
            check,
            severity,
            ResourceKind::Certificate,
            id,
            format!("{severity} {id}"),
        )
    }

    #[test]
    fn nothing_found_fails_nothing() {
        let none = AuditFindings::new([]);
        assert!(none.is_empty());
        assert_eq!(none.worst(), None);
        for s in Severity::ALL {
            assert!(!none.fails(s));
        }
        assert!(none.by_check().iter().all(|(_, n)| *n == 0));
        assert_eq!(none.by_check().len(), AuditCheck::ALL.len());
        assert_eq!(none.by_severity().len(), Severity::ALL.len());
    }

    #[test]
    fn fail_on_is_at_or_above_the_threshold() {
        let found = AuditFindings::new([
            finding(AuditCheck::DeviceCertOld, Severity::Low, "a"),
            finding(AuditCheck::RotationFailed, Severity::High, "b"),
        ]);
        assert_eq!(found.worst(), Some(Severity::High));
        assert!(found.fails(Severity::Low));
        assert!(found.fails(Severity::Medium));
        assert!(found.fails(Severity::High));
        assert!(!found.fails(Severity::Critical));
        assert_eq!(found.at_or_above(Severity::Low), 2);
        assert_eq!(found.at_or_above(Severity::Medium), 1);
        assert_eq!(found.at_or_above(Severity::Critical), 0);
    }

    #[test]
    fn findings_sort_worst_first_then_by_check_then_by_resource() {
        let found = AuditFindings::new([
            finding(AuditCheck::DeviceCertOld, Severity::Low, "z"),
            finding(AuditCheck::RotationFailed, Severity::High, "b"),
            finding(AuditCheck::CertShared, Severity::High, "c"),
            finding(AuditCheck::CertShared, Severity::High, "a"),
            finding(AuditCheck::ActiveCertDenied, Severity::Critical, "y"),
        ]);
        let order: Vec<(&str, &str)> = found
            .findings()
            .iter()
            .map(|f| (f.check.code(), f.resource_id.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("ACTIVE_CERT_DENIED", "y"),
                ("CERT_SHARED", "a"),
                ("CERT_SHARED", "c"),
                ("ROTATION_FAILED", "b"),
                ("DEVICE_CERT_OLD", "z"),
            ]
        );
    }

    #[test]
    fn a_resource_reported_twice_by_a_check_counts_once_at_its_worst() {
        let mut found = AuditFindings::new([finding(AuditCheck::DeviceCertExpiring, Severity::Medium, "a")]);
        found.extend([
            finding(AuditCheck::DeviceCertExpiring, Severity::High, "a"),
            finding(AuditCheck::DeviceCertExpiring, Severity::Low, "a"),
            // Another check on the same resource is another finding.
            finding(AuditCheck::DeviceCertOld, Severity::Low, "a"),
        ]);
        assert_eq!(found.len(), 2);
        assert_eq!(found.findings()[0].severity, Severity::High);
        assert_eq!(found.findings()[0].detail, "high a");
    }

    #[test]
    fn counts_by_check_and_severity_add_up() {
        let found = AuditFindings::new([
            finding(AuditCheck::CertShared, Severity::Critical, "a"),
            finding(AuditCheck::CertShared, Severity::Medium, "b"),
            finding(AuditCheck::CertShared, Severity::Medium, "c"),
            finding(AuditCheck::RecordCertMissing, Severity::Low, "d"),
        ]);
        let by_check: BTreeMap<AuditCheck, usize> = found.by_check().into_iter().collect();
        assert_eq!(by_check[&AuditCheck::CertShared], 3);
        assert_eq!(by_check[&AuditCheck::RecordCertMissing], 1);
        assert_eq!(by_check[&AuditCheck::DeviceCertOld], 0);
        assert_eq!(by_check.values().sum::<usize>(), found.len());
        assert_eq!(
            found.by_severity(),
            [
                (Severity::Low, 1),
                (Severity::Medium, 2),
                (Severity::High, 0),
                (Severity::Critical, 1)
            ]
        );
        let pairs = found.by_check_and_severity();
        assert_eq!(pairs[&(AuditCheck::CertShared, Severity::Medium)], 2);
        assert_eq!(pairs[&(AuditCheck::CertShared, Severity::Critical)], 1);
        assert_eq!(pairs.len(), 3);
    }
}
