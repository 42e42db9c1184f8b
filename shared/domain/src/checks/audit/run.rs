//! Every audit check over one set of facts: what `onboard fleet audit`
//! runs once it has gathered them, and what a test of a whole fleet uses.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::reason::Rejection;
use crate::model::record::CertificateRecord;
use crate::policy::rotation::state::Rotation;

use super::{
    AuditFindings, AuditThresholds, AuditedCa, AuditedCertificate, PolicyFacts, active_certificates_denied,
    active_certificates_unrecorded, ca_certificates_expiring, certificates_shared, device_certificates_expiring,
    device_certificates_old, inactive_cas_with_active_certificates, policies_overly_permissive,
    records_certificate_missing, rotations_failed, things_with_several_active_certificates,
};

/// Everything the audit's checks read, for one scope (the whole fleet, or
/// the CAs audited): `certificates` must be every device certificate AWS IoT
/// has under the CAs whose `records` are given, since a record whose
/// certificate is not among them is reported missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFacts {
    pub certificates: Vec<AuditedCertificate>,
    pub cas: Vec<AuditedCa>,
    pub records: Vec<CertificateRecord>,
    pub rotations: Vec<Rotation>,
    /// The deny-list's answer for each denied certificate, by certificate id.
    pub denials: BTreeMap<String, Rejection>,
    pub policies: Vec<PolicyFacts>,
}

/// Every check of [`super::AuditCheck::ALL`] over `facts`, as of `now`.
pub fn run_audit_checks(facts: &AuditFacts, now: i64, thresholds: AuditThresholds) -> AuditFindings {
    let existing: BTreeSet<String> = facts.certificates.iter().map(|c| c.certificate_id.clone()).collect();
    let mut findings = AuditFindings::default();
    findings.extend(device_certificates_expiring(
        &facts.certificates,
        now,
        thresholds.device_expiry_days,
    ));
    findings.extend(ca_certificates_expiring(&facts.cas, now, thresholds.ca_expiry_days));
    findings.extend(certificates_shared(&facts.certificates));
    findings.extend(things_with_several_active_certificates(
        &facts.certificates,
        &facts.rotations,
    ));
    findings.extend(active_certificates_unrecorded(&facts.certificates, &facts.records));
    findings.extend(active_certificates_denied(&facts.certificates, &facts.denials));
    findings.extend(inactive_cas_with_active_certificates(&facts.cas, &facts.certificates));
    findings.extend(device_certificates_old(
        &facts.certificates,
        now,
        thresholds.device_max_age_days,
    ));
    findings.extend(policies_overly_permissive(&facts.policies));
    findings.extend(rotations_failed(&facts.rotations));
    findings.extend(records_certificate_missing(&facts.records, &existing));
    findings
}
