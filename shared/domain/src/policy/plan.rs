//! How a profile turns an approved certificate into a provisioning plan.
//! The plan itself is a value type ([`ProvisioningPlan`]); its constructor
//! reads the profile, so it lives in the policy layer.

use crate::model::certificate::Certificate;
use crate::model::plan::{Approval, ProvisioningPlan};
use crate::policy::profile::DeviceProfile;

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
}
