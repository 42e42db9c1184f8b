//! The provisioning plan: everything the registrar will create for an approved
//! certificate, computed before any call is made.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::certificate::Certificate;
use crate::checks::Approval;
use crate::profile::{DeviceProfile, DroppedAttribute, RejectionAction};
use crate::time_fmt::rfc3339;

/// What to create for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningPlan {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub ca_certificate_id: String,
    pub profile: String,
    pub thing_name: String,
    pub thing_type: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub dropped_attributes: Vec<DroppedAttribute>,
    pub thing_groups: Vec<String>,
    pub billing_group: Option<String>,
    pub policy_name: String,
    /// What the profile does with a certificate refused at this stage (an
    /// identity collision found while provisioning).
    pub rejection_action: RejectionAction,
    pub serial: String,
    pub fingerprint: String,
    pub subject_dn: String,
    pub not_before: i64,
    pub not_after: i64,
    pub certificate_pem: String,
}

/// The credentials record stored in S3 (no private key: the device keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRecord {
    pub certificate_id: String,
    pub certificate_pem: String,
    pub ca_certificate_id: String,
    pub thing_name: String,
    pub fingerprint: String,
    pub serial: String,
    pub subject: String,
    pub not_before: String,
    pub not_after: String,
}

impl ProvisioningPlan {
    /// Assembles the plan for an approved certificate.
    pub fn new(
        certificate_arn: &str,
        ca_certificate_id: &str,
        certificate_pem: &str,
        cert: &Certificate,
        profile: &DeviceProfile,
        approval: Approval,
    ) -> Self {
        Self {
            certificate_id: cert.fingerprint.clone(),
            certificate_arn: certificate_arn.to_string(),
            ca_certificate_id: ca_certificate_id.to_string(),
            profile: profile.name.clone(),
            thing_name: approval.thing_name,
            thing_type: profile.thing_type.clone(),
            attributes: approval.attributes,
            dropped_attributes: approval.dropped_attributes,
            thing_groups: profile.thing_groups.clone(),
            billing_group: profile.billing_group.clone(),
            policy_name: profile.policy_name.clone(),
            rejection_action: profile.rejection_action,
            serial: cert.serial.clone(),
            fingerprint: cert.fingerprint.clone(),
            subject_dn: cert.subject_dn.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            certificate_pem: certificate_pem.to_string(),
        }
    }

    /// The S3 key of the credentials record: `<prefix><thingName>/<certificateId>.json`.
    pub fn credentials_key(&self, prefix: &str) -> String {
        format!("{prefix}{}/{}.json", self.thing_name, self.certificate_id)
    }

    /// The credentials record.
    pub fn credentials_record(&self) -> CredentialsRecord {
        CredentialsRecord {
            certificate_id: self.certificate_id.clone(),
            certificate_pem: self.certificate_pem.clone(),
            ca_certificate_id: self.ca_certificate_id.clone(),
            thing_name: self.thing_name.clone(),
            fingerprint: self.fingerprint.clone(),
            serial: self.serial.clone(),
            subject: self.subject_dn.clone(),
            not_before: rfc3339(self.not_before),
            not_after: rfc3339(self.not_after),
        }
    }
}
