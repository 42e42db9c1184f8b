//! The onboarding domain: certificate checks, naming rules, device profiles
//! (and the JITP templates they render to), the provisioning plan and
//! workflow, outcomes and errors. No AWS dependency:
//! the outside world is reached through the traits in [`ports`].

pub mod certificate;
pub mod checks;
pub mod config;
pub mod event;
pub mod fleet_provisioning;
pub mod jitp;
pub mod naming;
pub mod plan;
pub mod ports;
pub mod profile;
pub mod reason;
pub mod reconciler;
pub mod record;
pub mod registrar;
pub mod rotation;
pub mod rotator;
pub mod time_fmt;

pub use certificate::{Certificate, CertificateRequest, KeyKind, Subject, SubjectField};
pub use config::{CaTrust, OnboardingConfig};
pub use event::{JitrEvent, MalformedEvent};
pub use plan::{CredentialsRecord, ProvisioningPlan};
pub use ports::{CertificateStatus, PortError, PortErrorKind};
pub use profile::{DeviceProfile, ProfileError, RejectionAction, UnfitAttribute};
pub use reason::{RejectReason, Rejection};
pub use reconciler::{
    CaCertificates, ListedCertificate, ReconcileInventory, ReconcileReport, Reconciler, ReconcilerSettings,
    StuckHandler,
};
pub use record::{CertificateRecord, Outcome, RecordStatus};
pub use registrar::{ProvisioningError, Registrar, RegistrarSettings};
pub use rotator::{
    Completer, CompleterSettings, CompletionOutcome, CsrIssuer, CsrIssuerSettings, CsrOutcome, IgnoreReason,
    JobExecutionEvent, Pacer, RotationError, Rotator, RotatorSettings, RunReport,
};
