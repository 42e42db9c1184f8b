//! The fleet audit's checks (`onboard fleet audit`, the `fleet-auditor`
//! function): pure functions from the facts a collector gathered (AWS IoT's
//! certificates, CAs and policies, the inventory's records and rotations, the
//! deny-list's answers), `now` and the thresholds, to [`Finding`]s. No check
//! reads a clock or calls anything; each says what it flags in its doc.
//!
//! Check ids ([`AuditCheck::code`]) are a public contract, as the rejection
//! reasons are: metrics, stored findings and alarms match on them.

mod policy_document;
mod run;
mod summary;

pub use policy_document::{PolicyFacts, policies_overly_permissive};
pub use run::{AuditFacts, run_audit_checks};
pub use summary::AuditFindings;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::model::reason::Rejection;
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::model::time::rfc3339;
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState};

use super::ca_rotation::{days_to_expiry, expires_within};

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Certificate ids named in one finding's detail, at most (the count is always given).
const NAMED_MAX: usize = 5;

/// How bad a finding is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Self; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The lowercase spelling (`low`, `medium`, `high`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity that is none of `low`, `medium`, `high`, `critical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("severity {0:?} is none of low, medium, high, critical")]
pub struct SeverityError(pub String);

impl FromStr for Severity {
    type Err = SeverityError;

    /// Any case, surrounding spaces ignored (`--fail-on HIGH`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| SeverityError(s.to_string()))
    }
}

/// One audit check. Its code is stable: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuditCheck {
    DeviceCertExpiring,
    CaCertExpiring,
    CertShared,
    ThingMultipleActiveCerts,
    ActiveCertUnrecorded,
    ActiveCertDenied,
    InactiveCaActiveCerts,
    DeviceCertOld,
    PolicyOverlyPermissive,
    RotationFailed,
    RecordCertMissing,
}

impl AuditCheck {
    /// Every check, in the order the audit reports them.
    pub const ALL: [Self; 11] = [
        Self::DeviceCertExpiring,
        Self::CaCertExpiring,
        Self::CertShared,
        Self::ThingMultipleActiveCerts,
        Self::ActiveCertUnrecorded,
        Self::ActiveCertDenied,
        Self::InactiveCaActiveCerts,
        Self::DeviceCertOld,
        Self::PolicyOverlyPermissive,
        Self::RotationFailed,
        Self::RecordCertMissing,
    ];

    /// The stable check id.
    pub fn code(self) -> &'static str {
        match self {
            Self::DeviceCertExpiring => "DEVICE_CERT_EXPIRING",
            Self::CaCertExpiring => "CA_CERT_EXPIRING",
            Self::CertShared => "CERT_SHARED",
            Self::ThingMultipleActiveCerts => "THING_MULTIPLE_ACTIVE_CERTS",
            Self::ActiveCertUnrecorded => "ACTIVE_CERT_UNRECORDED",
            Self::ActiveCertDenied => "ACTIVE_CERT_DENIED",
            Self::InactiveCaActiveCerts => "INACTIVE_CA_ACTIVE_CERTS",
            Self::DeviceCertOld => "DEVICE_CERT_OLD",
            Self::PolicyOverlyPermissive => "POLICY_OVERLY_PERMISSIVE",
            Self::RotationFailed => "ROTATION_FAILED",
            Self::RecordCertMissing => "RECORD_CERT_MISSING",
        }
    }

    /// The check with this id.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// What an operator does about a finding of this check.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::DeviceCertExpiring => {
                "Rotate the device's certificate before it expires (a profile with rotation enabled makes the \
                 rotator do it); retire the device with `onboard device retire` if it is gone."
            }
            Self::CaCertExpiring => {
                "Rotate the manufacturer CA (`onboard ca rotate`) to one that expires later, move the devices to \
                 certificates under it, then `onboard ca retire` the old CA."
            }
            Self::CertShared => {
                "Give every device its own certificate: detach this one from every thing but its owner, and \
                 revoke it (`onboard device revoke`) if its key was copied to other devices."
            }
            Self::ThingMultipleActiveCerts => {
                "Find the certificate the device uses and revoke the others (`onboard device revoke`); outside \
                 a rotation a device has one ACTIVE certificate."
            }
            Self::ActiveCertUnrecorded => {
                "This deployment never approved this ACTIVE certificate, or decided against it: review it and \
                 revoke it (`onboard device revoke`) unless a device of yours should hold it; one with no record \
                 at all can be left to the fleet reconciler."
            }
            Self::ActiveCertDenied => {
                "Revoke the certificate now (`onboard device revoke`): it is on the deny-list but AWS IoT still \
                 accepts it."
            }
            Self::InactiveCaActiveCerts => {
                "Revoke or rotate the device certificates this CA signed, or set the CA ACTIVE again if it was \
                 deactivated by mistake."
            }
            Self::DeviceCertOld => {
                "Rotate the certificate: a long-lived key gives a leaked copy a long life; enable rotation in the \
                 device's profile."
            }
            Self::PolicyOverlyPermissive => {
                "Scope the policy to the device's own client id and topics with ${iot:Connection.Thing.ThingName} \
                 (as the template's device policy does) and allow no iot:* or * action."
            }
            Self::RotationFailed => {
                "Read the rotation's reason and the device's job execution, fix the device or its profile and let \
                 the rotator try again, or retire the device (`onboard device retire`)."
            }
            Self::RecordCertMissing => {
                "Find who deleted the certificate (CloudTrail `DeleteCertificate`), and retire the device \
                 (`onboard device retire`) if it is gone for good."
            }
        }
    }
}

impl fmt::Display for AuditCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The kind of resource a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// A device certificate (id: the certificate id).
    Certificate,
    /// A CA certificate (id: its certificate id).
    CaCertificate,
    /// A thing (id: its name).
    Thing,
    /// An IoT policy (id: its name).
    Policy,
    /// A rotation (id: the old certificate's id, the rotation's key).
    Rotation,
    /// An inventory record (id: its certificate id).
    InventoryRecord,
}

impl ResourceKind {
    /// The stable spelling (`CERTIFICATE`, `CA_CERTIFICATE`, `THING`, `POLICY`, `ROTATION`, `INVENTORY_RECORD`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "CERTIFICATE",
            Self::CaCertificate => "CA_CERTIFICATE",
            Self::Thing => "THING",
            Self::Policy => "POLICY",
            Self::Rotation => "ROTATION",
            Self::InventoryRecord => "INVENTORY_RECORD",
        }
    }

    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::Certificate,
        Self::CaCertificate,
        Self::Thing,
        Self::Policy,
        Self::Rotation,
        Self::InventoryRecord,
    ];

    /// The kind with this spelling (a stored finding read back).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One thing wrong in the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: AuditCheck,
    pub severity: Severity,
    pub resource_kind: ResourceKind,
    pub resource_id: String,
    /// What was found, for this resource (dates in RFC 3339).
    pub detail: String,
    /// What to do about it ([`AuditCheck::remedy`]).
    pub remedy: String,
}

impl Finding {
    fn new(
        check: AuditCheck,
        severity: Severity,
        resource_kind: ResourceKind,
        resource_id: &str,
        detail: String,
    ) -> Self {
        Self {
            check,
            severity,
            resource_kind,
            resource_id: resource_id.to_string(),
            detail,
            remedy: check.remedy().to_string(),
        }
    }
}

/// A device certificate as AWS IoT describes it (`DescribeCertificate`,
/// `ListPrincipalThings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedCertificate {
    pub certificate_id: String,
    /// The CA IoT records for it; `None` for one registered without a CA.
    pub ca_certificate_id: Option<String>,
    pub status: CertificateStatus,
    /// `validity.notAfter`, Unix seconds.
    pub not_after: i64,
    /// `creationDate`, Unix seconds.
    pub created_at: i64,
    /// The things it is attached to.
    pub things: Vec<String>,
}

/// A CA certificate as AWS IoT describes it (`DescribeCACertificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedCa {
    pub certificate_id: String,
    /// `ACTIVE` or `INACTIVE` (anything else counts as not ACTIVE).
    pub status: CertificateStatus,
    /// `validity.notAfter`, Unix seconds.
    pub not_after: i64,
}

/// The audit's thresholds, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditThresholds {
    /// `DEVICE_CERT_EXPIRING` below this many whole days left (Device Defender's default: 30).
    pub device_expiry_days: i64,
    /// `CA_CERT_EXPIRING` below this many whole days left.
    pub ca_expiry_days: i64,
    /// `DEVICE_CERT_OLD` beyond this age.
    pub device_max_age_days: i64,
}

/// The largest threshold accepted, in days (a century).
const THRESHOLD_MAX_DAYS: i64 = 36_500;

/// A threshold out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {name} threshold must be between 0 and {THRESHOLD_MAX_DAYS} days, not {value}")]
pub struct ThresholdError {
    pub name: &'static str,
    pub value: i64,
}

impl AuditThresholds {
    /// Thresholds an operator chose, each within 0 to 36,500 days (`0`
    /// flags only expired certificates, or every certificate older than a day).
    ///
    /// # Errors
    /// [`ThresholdError`] naming the first threshold out of range.
    pub fn new(device_expiry_days: i64, ca_expiry_days: i64, device_max_age_days: i64) -> Result<Self, ThresholdError> {
        for (name, value) in [
            ("device certificate expiry", device_expiry_days),
            ("CA certificate expiry", ca_expiry_days),
            ("device certificate age", device_max_age_days),
        ] {
            if !(0..=THRESHOLD_MAX_DAYS).contains(&value) {
                return Err(ThresholdError { name, value });
            }
        }
        Ok(Self {
            device_expiry_days,
            ca_expiry_days,
            device_max_age_days,
        })
    }
}

impl Default for AuditThresholds {
    fn default() -> Self {
        Self {
            device_expiry_days: 30,
            ca_expiry_days: 90,
            device_max_age_days: 365,
        }
    }
}

/// Ids for a detail: the first [`NAMED_MAX`], and how many more.
fn named(ids: &[&str]) -> String {
    named_of(ids, ids.len())
}

/// The first [`NAMED_MAX`] of `ids`, and how many more of `total`.
fn named_of(ids: &[&str], total: usize) -> String {
    let shown = ids.iter().take(NAMED_MAX).copied().collect::<Vec<_>>().join(", ");
    match total.saturating_sub(NAMED_MAX.min(ids.len())) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// An expiry's severity: `Critical` once expired, `High` in the last week, `Medium` before.
fn expiry_severity(days_left: i64, not_after: i64, now: i64) -> Severity {
    if not_after <= now {
        Severity::Critical
    } else if days_left < 7 {
        Severity::High
    } else {
        Severity::Medium
    }
}

fn expiry_detail(what: &str, not_after: i64, now: i64) -> String {
    if not_after <= now {
        format!("{what} expired at {}", rfc3339(not_after))
    } else {
        format!(
            "{what} expires at {} ({} whole days left)",
            rfc3339(not_after),
            days_to_expiry(not_after, now)
        )
    }
}

/// `DEVICE_CERT_EXPIRING`: every ACTIVE device certificate with fewer than
/// `days` whole days left before its `notAfter` (as [`expires_within`]
/// counts: exactly `days` days left is not flagged), expired ones included.
/// `Critical` once expired, `High` in the last 7 days, `Medium` before.
pub fn device_certificates_expiring(certificates: &[AuditedCertificate], now: i64, days: i64) -> Vec<Finding> {
    certificates
        .iter()
        .filter(|c| c.status == CertificateStatus::Active && expires_within(c.not_after, now, days))
        .map(|c| {
            Finding::new(
                AuditCheck::DeviceCertExpiring,
                expiry_severity(days_to_expiry(c.not_after, now), c.not_after, now),
                ResourceKind::Certificate,
                &c.certificate_id,
                expiry_detail("the ACTIVE certificate", c.not_after, now),
            )
        })
        .collect()
}

/// `CA_CERT_EXPIRING`: every ACTIVE CA with fewer than `days` whole days
/// left (exactly `days` is not flagged). `Critical` once expired (no device
/// under it can connect), `High` before: every device it signed depends on it.
pub fn ca_certificates_expiring(cas: &[AuditedCa], now: i64, days: i64) -> Vec<Finding> {
    cas.iter()
        .filter(|ca| ca.status == CertificateStatus::Active && expires_within(ca.not_after, now, days))
        .map(|ca| {
            let severity = if ca.not_after <= now {
                Severity::Critical
            } else {
                Severity::High
            };
            Finding::new(
                AuditCheck::CaCertExpiring,
                severity,
                ResourceKind::CaCertificate,
                &ca.certificate_id,
                expiry_detail("the ACTIVE CA", ca.not_after, now),
            )
        })
        .collect()
}

/// `CERT_SHARED`: every certificate attached to more than one distinct
/// thing. `Critical` when it is ACTIVE (several devices can be any of those
/// things), `Medium` otherwise (nothing connects with it, but it can be
/// activated again).
pub fn certificates_shared(certificates: &[AuditedCertificate]) -> Vec<Finding> {
    certificates
        .iter()
        .filter_map(|c| {
            let things: BTreeSet<&str> = c.things.iter().map(String::as_str).collect();
            if things.len() < 2 {
                return None;
            }
            let severity = if c.status == CertificateStatus::Active {
                Severity::Critical
            } else {
                Severity::Medium
            };
            let things: Vec<&str> = things.into_iter().collect();
            Some(Finding::new(
                AuditCheck::CertShared,
                severity,
                ResourceKind::Certificate,
                &c.certificate_id,
                format!(
                    "the {} certificate is attached to {} things: {}",
                    c.status.as_str(),
                    things.len(),
                    named(&things)
                ),
            ))
        })
        .collect()
}

/// True while a rotation may hold two ACTIVE certificates (the old and the
/// new) for its thing: open (`REQUESTED`, `ISSUED`, `DELIVERED`), confirmed
/// with the old certificate not yet retired, or failing with the new
/// certificate not yet cleaned up.
fn in_progress(rotation: &Rotation) -> bool {
    matches!(
        rotation.state,
        RotationState::Requested | RotationState::Issued | RotationState::Delivered | RotationState::Confirmed
    ) || rotation.is_failing()
}

/// `THING_MULTIPLE_ACTIVE_CERTS`: every thing with more than one ACTIVE
/// certificate attached, unless a rotation of that thing is in progress and
/// every one of those certificates is that rotation's old or new
/// certificate. A third ACTIVE certificate, or a rotation of another thing,
/// excuses nothing. `High`.
pub fn things_with_several_active_certificates(
    certificates: &[AuditedCertificate],
    rotations: &[Rotation],
) -> Vec<Finding> {
    let mut by_thing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in certificates.iter().filter(|c| c.status == CertificateStatus::Active) {
        for thing in &c.things {
            by_thing.entry(thing).or_default().insert(&c.certificate_id);
        }
    }
    by_thing
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .filter(|(thing, ids)| {
            !rotations.iter().any(|r| {
                r.thing_name == *thing
                    && in_progress(r)
                    && ids
                        .iter()
                        .all(|id| *id == r.old_certificate_id || r.new_certificate_id.as_deref() == Some(*id))
            })
        })
        .map(|(thing, ids)| {
            let ids: Vec<&str> = ids.into_iter().collect();
            Finding::new(
                AuditCheck::ThingMultipleActiveCerts,
                Severity::High,
                ResourceKind::Thing,
                thing,
                format!(
                    "{} ACTIVE certificates are attached outside a rotation in progress: {}",
                    ids.len(),
                    named(&ids)
                ),
            )
        })
        .collect()
}

/// `ACTIVE_CERT_UNRECORDED`: every ACTIVE certificate the inventory does not
/// account for as an approved one: no record at all (`High`: nothing here
/// ever checked it), a record that only observed it (`High`: the registrar
/// found it ACTIVE without onboarding, failing a check or on another thing,
/// and left it alone), a rejection (`High`: possibly an operator's reversal,
/// to be reviewed), or a retirement or revocation (`Critical`: this
/// deployment decided it must never connect again). A `PROVISIONED` record,
/// or a `ROTATED` one (a rotation's old certificate, until it is retired),
/// accounts for it.
pub fn active_certificates_unrecorded(
    certificates: &[AuditedCertificate],
    records: &[CertificateRecord],
) -> Vec<Finding> {
    let by_id: BTreeMap<&str, &CertificateRecord> = records.iter().map(|r| (r.certificate_id.as_str(), r)).collect();
    certificates
        .iter()
        .filter(|c| c.status == CertificateStatus::Active)
        .filter_map(|c| {
            let record = by_id.get(c.certificate_id.as_str());
            let severity = match record.map(|r| r.status) {
                None | Some(RecordStatus::Observed | RecordStatus::Rejected) => Severity::High,
                Some(RecordStatus::Retired | RecordStatus::Revoked) => Severity::Critical,
                Some(RecordStatus::Provisioned | RecordStatus::Rotated) => return None,
            };
            let detail = match record {
                None => "the ACTIVE certificate has no inventory record".to_string(),
                Some(r) => format!(
                    "the certificate is ACTIVE but its inventory record is {}{}",
                    r.status.as_str(),
                    r.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
                ),
            };
            Some(Finding::new(
                AuditCheck::ActiveCertUnrecorded,
                severity,
                ResourceKind::Certificate,
                &c.certificate_id,
                detail,
            ))
        })
        .collect()
}

/// `ACTIVE_CERT_DENIED`: every ACTIVE certificate the deny-list denies
/// (`denials`: certificate id → the deny-list's answer, as
/// the `DenyList` port gives it). `Critical`.
pub fn active_certificates_denied(
    certificates: &[AuditedCertificate],
    denials: &BTreeMap<String, Rejection>,
) -> Vec<Finding> {
    certificates
        .iter()
        .filter(|c| c.status == CertificateStatus::Active)
        .filter_map(|c| {
            let denial = denials.get(&c.certificate_id)?;
            Some(Finding::new(
                AuditCheck::ActiveCertDenied,
                Severity::Critical,
                ResourceKind::Certificate,
                &c.certificate_id,
                format!(
                    "the certificate is ACTIVE but denied: {} ({})",
                    denial.reason.code(),
                    denial.detail
                ),
            ))
        })
        .collect()
}

/// `INACTIVE_CA_ACTIVE_CERTS`: every CA that is not ACTIVE (deactivated or
/// revoked by its owner) while device certificates it signed are still
/// ACTIVE, one finding per CA with their count. `Critical`.
pub fn inactive_cas_with_active_certificates(cas: &[AuditedCa], certificates: &[AuditedCertificate]) -> Vec<Finding> {
    cas.iter()
        .filter_map(|ca| {
            let active: Vec<&str> = certificates
                .iter()
                .filter(|c| {
                    c.status == CertificateStatus::Active
                        && c.ca_certificate_id.as_deref() == Some(ca.certificate_id.as_str())
                })
                .map(|c| c.certificate_id.as_str())
                .collect();
            inactive_ca_with_active_certificates(ca, &active, active.len())
        })
        .collect()
}

/// [`inactive_cas_with_active_certificates`] for one CA, given how many
/// ACTIVE certificates it signed and some of their ids (the first
/// [`NAMED_MAX`] are named): what the scheduled audit, which counts them page
/// by page without holding every id, reports. `None` when the CA is ACTIVE
/// or `count` is 0.
pub fn inactive_ca_with_active_certificates(ca: &AuditedCa, named_ids: &[&str], count: usize) -> Option<Finding> {
    if ca.status == CertificateStatus::Active || count == 0 {
        return None;
    }
    Some(Finding::new(
        AuditCheck::InactiveCaActiveCerts,
        Severity::Critical,
        ResourceKind::CaCertificate,
        &ca.certificate_id,
        format!(
            "the CA is {} but {count} certificates it signed are ACTIVE: {}",
            ca.status.as_str(),
            named_of(named_ids, count)
        ),
    ))
}

/// `DEVICE_CERT_OLD`: every ACTIVE device certificate created more than
/// `days` days before `now` (exactly `days` days old is not flagged). `Low`.
pub fn device_certificates_old(certificates: &[AuditedCertificate], now: i64, days: i64) -> Vec<Finding> {
    certificates
        .iter()
        .filter(|c| {
            c.status == CertificateStatus::Active && now.saturating_sub(c.created_at) > days.saturating_mul(DAY)
        })
        .map(|c| {
            Finding::new(
                AuditCheck::DeviceCertOld,
                Severity::Low,
                ResourceKind::Certificate,
                &c.certificate_id,
                format!(
                    "the ACTIVE certificate was created at {} ({} whole days ago; the limit is {days})",
                    rfc3339(c.created_at),
                    now.saturating_sub(c.created_at).div_euclid(DAY)
                ),
            )
        })
        .collect()
}

/// `ROTATION_FAILED`: every rotation in `FAILED`, unless it ended on an
/// operator's decision (the device retired or revoked). `High` when no
/// further attempt will come (final reason, or attempts exhausted: the old
/// certificate ages on), `Medium` while a retry is scheduled.
pub fn rotations_failed(rotations: &[Rotation]) -> Vec<Finding> {
    rotations
        .iter()
        .filter(|r| r.state == RotationState::Failed)
        .filter(|r| !matches!(r.reason, Some(FailureReason::Retired | FailureReason::Revoked)))
        .map(|r| {
            let reason = r.reason.map_or("unknown", FailureReason::code);
            let (severity, outlook) = match r.due_at {
                None => (Severity::High, "given up: no further attempt".to_string()),
                Some(_) if r.is_failing() => (Severity::Medium, "its clean-up is under way".to_string()),
                Some(at) => (Severity::Medium, format!("next attempt after {}", rfc3339(at))),
            };
            Finding::new(
                AuditCheck::RotationFailed,
                severity,
                ResourceKind::Rotation,
                &r.old_certificate_id,
                format!(
                    "the rotation of thing {} failed on attempt {} ({reason}{}); {outlook}",
                    r.thing_name,
                    r.attempt,
                    r.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
                ),
            )
        })
        .collect()
}

/// `RECORD_CERT_MISSING`: every inventory record of a live certificate
/// (`PROVISIONED`: `Medium`; `OBSERVED`: `Low`) whose certificate AWS IoT no
/// longer has (`existing`: the ids of the certificates IoT lists for the
/// records' CAs). A rotated, retired, revoked or rejected certificate may be
/// deleted on purpose.
pub fn records_certificate_missing(records: &[CertificateRecord], existing: &BTreeSet<String>) -> Vec<Finding> {
    records
        .iter()
        .filter(|r| !existing.contains(&r.certificate_id))
        .filter_map(|r| {
            let severity = match r.status {
                RecordStatus::Provisioned => Severity::Medium,
                RecordStatus::Observed => Severity::Low,
                RecordStatus::Rejected | RecordStatus::Rotated | RecordStatus::Retired | RecordStatus::Revoked => {
                    return None;
                }
            };
            Some(Finding::new(
                AuditCheck::RecordCertMissing,
                severity,
                ResourceKind::InventoryRecord,
                &r.certificate_id,
                format!(
                    "the inventory records the certificate as {}{} but AWS IoT no longer has it",
                    r.status.as_str(),
                    r.thing_name
                        .as_deref()
                        .map(|t| format!(" for thing {t}"))
                        .unwrap_or_default()
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests;
