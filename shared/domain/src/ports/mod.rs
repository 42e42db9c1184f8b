//! The ports: the traits through which the workflows reach the outside world,
//! one file per capability (iot, jobs, inventory, rotations, objects, clock);
//! each workflow takes only the traits it uses. The errors they return are
//! here. The AWS adapters implement them; each Lambda depends only on
//! the ports it uses, so its IAM policy can name exactly those actions.

mod audit;
mod audit_runs;
mod ca;
mod clock;
mod connections;
mod import;
mod inventory;
mod iot;
mod jobs;
mod objects;
mod retirement;
mod revocations;
mod rotations;
mod signer;

pub use audit::{AuditInventory, AuditIot, DescribedCertificate, InventoryItem};
pub use audit_runs::{AuditRunStore, StoredAuditRun, TimeLeft};
pub use ca::{CaRegistry, CaState};
pub use clock::Pacer;
pub use connections::Connections;
pub use import::{CertificateImport, ImportJournal, Registration};
pub use inventory::{
    AllowEntry, Consumption, DenyList, HookInventory, Inventory, NameClaim, NameClaims, ReconcileInventory,
    Supersession, SupersessionStore,
};
pub use iot::{
    CaCertificates, CertificateRegistry, ExistingThing, HookIdentity, ListedCertificate, RegisteredCa,
    RegisteredCertificate, SupersessionIot, ThingCreation, ThingRegistry,
};
pub use jobs::{IssuedCertificate, RotationIot};
pub use objects::{CredentialsStore, RotationObjects};
pub use retirement::{RetirementInventory, RetirementIot, RetirementTicket, ThingMembership};
pub use revocations::RevocationStore;
pub use rotations::RotationInventory;
pub use signer::{CaSigners, CertificateSigner, SignatureAlgorithm, SigningKey};

/// A page of results and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque; `None` when there is nothing more.
    pub cursor: Option<String>,
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
