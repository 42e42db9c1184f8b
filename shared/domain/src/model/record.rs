//! Inventory records and outcomes: what the registrar decided and keeps.

use crate::model::plan::ProvisioningPlan;
use crate::model::reason::{RejectReason, Rejection};
use crate::model::status::CertificateStatus;

/// The state of a certificate in the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    /// Every resource is in place; activation is the step after this write.
    Provisioned,
    /// Refused, with a reason.
    Rejected,
    /// Seen in a status other than PENDING_ACTIVATION; nothing was done.
    Observed,
    /// Replaced by a rotation: `INACTIVE`, detached, deleted after the grace period.
    Rotated,
    /// Its device was retired (`onboard device retire`): the certificate is
    /// INACTIVE or REVOKED, detached, deleted, and must never come back.
    Retired,
    /// Revoked in an emergency (`onboard device revoke`): the claim that
    /// authorized setting the certificate `REVOKED`; reason and time in
    /// `detail` and `updated_at`.
    Revoked,
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioned => "PROVISIONED",
            Self::Rejected => "REJECTED",
            Self::Observed => "OBSERVED",
            Self::Rotated => "ROTATED",
            Self::Retired => "RETIRED",
            Self::Revoked => "REVOKED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PROVISIONED" => Some(Self::Provisioned),
            "REJECTED" => Some(Self::Rejected),
            "OBSERVED" => Some(Self::Observed),
            "ROTATED" => Some(Self::Rotated),
            "RETIRED" => Some(Self::Retired),
            "REVOKED" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// One certificate's inventory record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub certificate_id: String,
    /// The CA that binds the device to its profile: the manufacturer CA it
    /// onboarded under, kept by every rotation (the next rotation is allowed
    /// by this CA's binding).
    pub ca_certificate_id: String,
    /// The CA that signed this certificate when it is not
    /// `ca_certificate_id`: the fleet's own CA of a `kmsCa` rotation issuer.
    /// `None` for the onboarding certificate and for certificates
    /// `CreateCertificateFromCsr` issued (Amazon's CA, no CA id in AWS IoT).
    /// Serials are unique per issuer: see [`CertificateRecord::serial_ca`].
    pub issuer_ca_certificate_id: Option<String>,
    pub status: RecordStatus,
    pub thing_name: Option<String>,
    pub profile: Option<String>,
    pub serial: Option<String>,
    /// SHA-256 of the DER; equals the certificate id for IoT certificates.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub reason: Option<RejectReason>,
    pub detail: Option<String>,
    /// For rejections: the status the certificate was given; for observations: the status seen.
    pub certificate_status: Option<String>,
    pub dropped_attributes: Vec<String>,
    pub credentials_key: Option<String>,
    /// Unix seconds of this write; the adapter keeps the first as `createdAt`.
    pub updated_at: i64,
    /// Unix seconds at which the registrar saw AWS IoT accept this
    /// certificate's activation (written only after that call succeeded, by
    /// [`crate::ports::Inventory::record_activated`]; no other write touches
    /// it). A registered event for a provisioned record carrying it needs no
    /// `DescribeCertificate`: the certificate is ACTIVE and fully provisioned,
    /// and no certificate goes back to PENDING_ACTIVATION.
    pub activated_at: Option<i64>,
}

impl CertificateRecord {
    /// The record of a provisioned certificate.
    pub fn provisioned(plan: &ProvisioningPlan, credentials_key: String, now: i64) -> Self {
        Self {
            certificate_id: plan.certificate_id.clone(),
            ca_certificate_id: plan.ca_certificate_id.clone(),
            issuer_ca_certificate_id: None,
            status: RecordStatus::Provisioned,
            thing_name: Some(plan.thing_name.clone()),
            profile: Some(plan.profile.clone()),
            serial: Some(plan.serial.clone()),
            fingerprint: plan.fingerprint.clone(),
            not_before: Some(plan.not_before),
            not_after: Some(plan.not_after),
            reason: None,
            detail: None,
            certificate_status: Some(CertificateStatus::Active.as_str().to_string()),
            dropped_attributes: plan.dropped_attributes.iter().map(|d| d.name.clone()).collect(),
            credentials_key: Some(credentials_key),
            updated_at: now,
            activated_at: None,
        }
    }

    /// A bare record for a certificate known only by its ids.
    pub fn bare(certificate_id: &str, ca_certificate_id: &str, status: RecordStatus, now: i64) -> Self {
        Self {
            certificate_id: certificate_id.to_string(),
            ca_certificate_id: ca_certificate_id.to_string(),
            issuer_ca_certificate_id: None,
            status,
            thing_name: None,
            profile: None,
            serial: None,
            fingerprint: certificate_id.to_string(),
            not_before: None,
            not_after: None,
            reason: None,
            detail: None,
            certificate_status: None,
            dropped_attributes: Vec::new(),
            credentials_key: None,
            updated_at: now,
            activated_at: None,
        }
    }

    /// The CA a serial of this certificate is denied under (deny-list
    /// entries `SERIAL#<ca>#<serial>`): the CA that signed it, as AWS IoT
    /// reports it (`caCertificateId`) and as `onboard deny serial --ca` and
    /// the revocation write it; the onboarding CA when no other signed it.
    pub fn serial_ca(&self) -> &str {
        self.issuer_ca_certificate_id
            .as_deref()
            .filter(|ca| !ca.is_empty())
            .unwrap_or(&self.ca_certificate_id)
    }

    /// Adds a rejection's reason and the status given to the certificate.
    pub fn with_rejection(mut self, rejection: &Rejection, status: &CertificateStatus) -> Self {
        self.reason = Some(rejection.reason);
        self.detail = Some(rejection.detail.clone());
        self.certificate_status = Some(status.as_str().to_string());
        self
    }
}

/// What the registrar did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device is provisioned and its certificate ACTIVE.
    Provisioned {
        thing_name: String,
        profile: String,
        dropped_attributes: Vec<String>,
    },
    /// Already ACTIVE and provisioned: nothing done (duplicate delivery).
    AlreadyProvisioned { thing_name: Option<String> },
    /// Refused; the certificate was set to `status`.
    Rejected {
        rejection: Rejection,
        thing_name: Option<String>,
        status: CertificateStatus,
    },
    /// ACTIVE before the registrar acted (JITP, made by hand): it passed
    /// every check and is attached to the thing its profile names, so it is
    /// recorded as provisioned (rotation and status cover it).
    Recorded { thing_name: String },
    /// Not PENDING_ACTIVATION (or gone): nothing done, outcome recorded.
    Ignored { certificate_status: String },
    /// Not this deployment's to judge (`CA_MISMATCH`: the event names another
    /// CA than IoT records; `CA_NOT_BOUND`: its CA is bound to no profile
    /// here): nothing done, nothing recorded; logged and counted.
    LeftAlone { rejection: Rejection },
}

impl Outcome {
    /// `provisioned`, `duplicate`, `rejected`, `recorded`, `ignored` or `left_alone`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::LeftAlone { .. } => "left_alone",
            Self::Provisioned { .. } => "provisioned",
            Self::AlreadyProvisioned { .. } => "duplicate",
            Self::Rejected { .. } => "rejected",
            Self::Recorded { .. } => "recorded",
            Self::Ignored { .. } => "ignored",
        }
    }

    pub fn thing_name(&self) -> Option<&str> {
        match self {
            Self::Provisioned { thing_name, .. } | Self::Recorded { thing_name } => Some(thing_name),
            Self::AlreadyProvisioned { thing_name } | Self::Rejected { thing_name, .. } => thing_name.as_deref(),
            Self::Ignored { .. } | Self::LeftAlone { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<RejectReason> {
        match self {
            Self::Rejected { rejection, .. } => Some(rejection.reason),
            _ => None,
        }
    }
}
