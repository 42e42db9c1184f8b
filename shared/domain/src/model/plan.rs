//! The provisioning plan: everything the registrar will create for an approved
//! certificate, computed before any call is made.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::certificate::SubjectField;
use crate::model::status::RejectionAction;
use crate::model::time::rfc3339;

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

/// A certificate that passed every check, with what the profile derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub thing_name: String,
    pub attributes: BTreeMap<String, String>,
    pub dropped_attributes: Vec<DroppedAttribute>,
}

/// A mapped attribute left out under [`crate::policy::profile::UnfitAttribute::Drop`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedAttribute {
    pub name: String,
    pub field: SubjectField,
}
