//! The ports: one small trait per capability the registrar needs from the
//! outside world. The AWS adapters implement them; each Lambda depends only on
//! the ports it uses, so its IAM policy can name exactly those actions.

use std::future::Future;

use crate::config::OnboardingConfig;
use crate::plan::{CredentialsRecord, ProvisioningPlan};
use crate::reason::Rejection;
use crate::record::CertificateRecord;

/// An IoT certificate status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertificateStatus {
    Active,
    Inactive,
    Revoked,
    PendingActivation,
    PendingTransfer,
    RegisterInactive,
    /// A status this code does not know.
    Unknown(String),
}

impl CertificateStatus {
    /// The IoT API spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "ACTIVE",
            Self::Inactive => "INACTIVE",
            Self::Revoked => "REVOKED",
            Self::PendingActivation => "PENDING_ACTIVATION",
            Self::PendingTransfer => "PENDING_TRANSFER",
            Self::RegisterInactive => "REGISTER_INACTIVE",
            Self::Unknown(s) => s,
        }
    }

    /// Parses the IoT API spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "ACTIVE" => Self::Active,
            "INACTIVE" => Self::Inactive,
            "REVOKED" => Self::Revoked,
            "PENDING_ACTIVATION" => Self::PendingActivation,
            "PENDING_TRANSFER" => Self::PendingTransfer,
            "REGISTER_INACTIVE" => Self::RegisterInactive,
            other => Self::Unknown(other.to_string()),
        }
    }
}

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

/// The result of claiming a thing name for a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClaim {
    /// The name is this certificate's (newly or already).
    Claimed,
    /// Another certificate holds the name.
    HeldBy(String),
}

/// Why a port call failed. The kind decides retry and log level.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({kind}): {detail}")]
pub struct PortError {
    pub operation: &'static str,
    pub kind: PortErrorKind,
    pub detail: String,
}

/// Classes of port failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// Throttling, 5xx, timeouts, connection failures: normal under bursts.
    Transient,
    /// A resource the configuration names does not exist (group, policy, bucket, key, type).
    MissingResource,
    /// The function's role may not do this.
    AccessDenied,
    /// A conditional write lost a race or a state does not allow the call.
    Conflict,
    /// The service refused the request as invalid.
    Invalid,
}

impl PortErrorKind {
    /// A short stable label for logs and metrics, e.g. `missing_resource`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::MissingResource => "missing_resource",
            Self::AccessDenied => "access_denied",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid_request",
        }
    }
}

impl std::fmt::Display for PortErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::MissingResource => "missing resource",
            Self::AccessDenied => "access denied",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid request",
        })
    }
}

impl PortError {
    pub fn new(operation: &'static str, kind: PortErrorKind, detail: impl Into<String>) -> Self {
        Self {
            operation,
            kind,
            detail: detail.into(),
        }
    }

    /// True for throttling and service faults, which are expected under load.
    pub fn is_transient(&self) -> bool {
        self.kind == PortErrorKind::Transient
    }
}

/// Result of a port call.
pub type PortResult<T> = Result<T, PortError>;

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

/// The credentials bucket.
pub trait CredentialsStore: Send + Sync {
    /// Stores the record under its key, encrypted with the configured KMS key.
    fn put_credentials(&self, key: &str, record: &CredentialsRecord) -> impl Future<Output = PortResult<()>> + Send;
}

/// The inventory table: configuration, certificate records, name claims.
pub trait Inventory: Send + Sync {
    /// Loads profiles and bindings (never the deny-list: see [`DenyList`]).
    fn load_config(&self) -> impl Future<Output = PortResult<OnboardingConfig>> + Send;
    /// The record of one certificate.
    fn certificate_record(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<CertificateRecord>>> + Send;
    /// Writes a provisioned record. Idempotent; never moves a certificate to another thing.
    fn record_provisioned(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
    /// Writes a rejection (overwrites any earlier decision, keeps `createdAt`).
    fn record_rejected(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
    /// Writes an observation (status not PENDING_ACTIVATION) unless a record exists.
    fn record_observed(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
    /// Claims a thing name for a certificate (conditional write).
    fn claim_thing_name(
        &self,
        thing_name: &str,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<NameClaim>> + Send;
    /// Moves a claim from a retired certificate; false when the holder changed meanwhile.
    fn transfer_thing_name(
        &self,
        thing_name: &str,
        from: &str,
        to: &str,
    ) -> impl Future<Output = PortResult<bool>> + Send;
    /// Releases a claim held by this certificate.
    fn release_thing_name(&self, thing_name: &str, certificate_id: &str)
    -> impl Future<Output = PortResult<()>> + Send;
}

/// The deny-list, looked up by key for one certificate at a time (never
/// loaded whole, never cached: an entry added now applies to the next lookup).
pub trait DenyList: Send + Sync {
    /// The rejection of a certificate whose fingerprint (`FINGERPRINT_DENIED`,
    /// checked first) or whose serial under this CA (`SERIAL_DENIED`) is on the
    /// deny-list; `None` when neither is. `serial` and `fingerprint` are in the
    /// form [`crate::Certificate`] gives them.
    ///
    /// # Errors
    /// [`PortError`] when the lookup fails: the caller must not treat the
    /// certificate as allowed (fail closed).
    fn denial(
        &self,
        ca_certificate_id: &str,
        serial: &str,
        fingerprint: &str,
    ) -> impl Future<Output = PortResult<Option<Rejection>>> + Send;
}
