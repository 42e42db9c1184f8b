//! AWS IoT: certificates, CAs, things, groups and policies, as the registrar,
//! the reconciler and the provisioning hook use them.

use std::future::Future;

use crate::model::plan::ProvisioningPlan;
use crate::model::status::CertificateStatus;
use crate::ports::{Page, PortResult};

/// A device certificate as IoT holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCertificate {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub ca_certificate_id: Option<String>,
    pub status: CertificateStatus,
    pub pem: String,
}

/// A CA certificate as IoT holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCa {
    pub certificate_id: String,
    pub status: CertificateStatus,
    pub pem: String,
    /// The CA carries a provisioning template (`registrationConfig`): AWS IoT
    /// provisions its devices itself (JITP).
    pub jitp: bool,
}

/// A thing that already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingThing {
    pub thing_type: Option<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub billing_group: Option<String>,
}

/// What `CreateThing` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThingCreation {
    /// Created now, or already there with the same configuration.
    Ready,
    /// A thing of that name exists with another configuration.
    ExistsDifferently,
}

/// A certificate as `ListCertificatesByCA` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCertificate {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub status: CertificateStatus,
    /// Unix seconds; `None` when IoT did not say.
    pub created_at: Option<i64>,
}

/// IoT certificates: read and change status.
pub trait CertificateRegistry: Send + Sync {
    /// `DescribeCertificate`; `None` when it does not exist.
    fn describe_certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<RegisteredCertificate>>> + Send;
    /// `DescribeCACertificate`; `None` when it does not exist.
    fn describe_ca_certificate(
        &self,
        ca_certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<RegisteredCa>>> + Send;
    /// `UpdateCertificate`.
    fn set_certificate_status(
        &self,
        certificate_id: &str,
        status: &CertificateStatus,
    ) -> impl Future<Output = PortResult<()>> + Send;
}

/// IoT things, groups and policies.
pub trait ThingRegistry: Send + Sync {
    /// `CreateThing` with type, attributes and billing group.
    fn create_thing(&self, plan: &ProvisioningPlan) -> impl Future<Output = PortResult<ThingCreation>> + Send;
    /// `DescribeThing`; `None` when it does not exist.
    fn describe_thing(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<ExistingThing>>> + Send;
    /// `UpdateThing` merging the plan's attributes into an existing thing.
    fn merge_thing_attributes(&self, plan: &ProvisioningPlan) -> impl Future<Output = PortResult<()>> + Send;
    /// `AddThingToBillingGroup`.
    fn add_to_billing_group(
        &self,
        thing_name: &str,
        billing_group: &str,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Principal ARNs attached to the thing; `None` when the thing does not exist.
    fn thing_principals(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<Vec<String>>>> + Send;
    /// `AttachThingPrincipal` with `EXCLUSIVE_THING`.
    fn attach_certificate_exclusively(
        &self,
        thing_name: &str,
        certificate_arn: &str,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// `AddThingToThingGroup`.
    fn add_to_thing_group(&self, thing_name: &str, group: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `AttachPolicy` to the certificate.
    fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> impl Future<Output = PortResult<()>> + Send;
}

/// A CA's device certificates in IoT.
pub trait CaCertificates: Send + Sync {
    /// `ListCertificatesByCA`, one page of at most `limit` from the opaque
    /// `cursor` on (`None`: from the start).
    fn certificates_of_ca(
        &self,
        ca_certificate_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<ListedCertificate>>> + Send;
}

/// What the hook asks IoT about the identity it is about to hand out.
pub trait HookIdentity: Send + Sync {
    /// Principal ARNs attached to the thing; `None` when it does not exist.
    fn thing_principals(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<Vec<String>>>> + Send;
    /// A certificate's status; `None` when it does not exist.
    fn certificate_status(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<CertificateStatus>>> + Send;
}

/// IoT as the retirement of superseded certificates needs it.
pub trait SupersessionIot: Send + Sync {
    /// A certificate's status and ARN; `None` when it does not exist.
    fn certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<(CertificateStatus, String)>>> + Send;
    /// Principal ARNs attached to the thing; `None` when it does not exist.
    fn thing_principals(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<Vec<String>>>> + Send;
    /// `UpdateCertificate` to `REVOKED`.
    fn revoke(&self, certificate_id: &str) -> impl Future<Output = PortResult<()>> + Send;
}
