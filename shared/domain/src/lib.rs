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

pub use certificate::{Certificate, CertificateRequest, KeyKind, Subject, SubjectField, normalize_serial};
pub use checks::{CaVerdict, CheckContext, DEFAULT_CLOCK_SKEW_SECS, check_ca, check_device_certificate};
pub use config::{CaTrust, DenyKey, DenyKeyError, OnboardingConfig};
pub use event::{JitrEvent, MalformedEvent, is_certificate_id};
pub use fleet_provisioning::{
    AllowEntry, Consumption, FLEET_PROVISIONING_CA, HOOK_LIMIT_MILLIS, HOOK_PAYLOAD_VERSION, HookIdentity,
    HookInventory, HookOutcome, HookRequest, HookResponse, HookSettings, ProvisioningHook, Refusal, SERIAL_MAX,
    SERIAL_PARAMETER, Supersession, SupersessionIot, SupersessionReport, SupersessionStore, render_template,
    retire_superseded,
};
pub use jitp::{check_subject as check_jitp_subject, parameter_name as jitp_parameter_name, render as render_jitp};
pub use naming::is_valid_thing_name;
pub use plan::{CredentialsRecord, ProvisioningPlan};
pub use ports::{
    CertificateRegistry, CertificateStatus, CredentialsStore, DenyList, ExistingThing, Inventory, NameClaim, PortError,
    PortErrorKind, PortResult, RegisteredCa, RegisteredCertificate, ThingCreation, ThingRegistry,
};
pub use profile::{DeviceProfile, NameError, ProfileError, RejectionAction, UnfitAttribute};
pub use reason::{RejectReason, Rejection};
pub use reconciler::{
    CaCertificates, ListedCertificate, NOT_FOUND_STATUS, ReconcileInventory, ReconcileReport, Reconciler,
    ReconcilerSettings, StuckHandler,
};
pub use record::{CertificateRecord, Outcome, RecordStatus};
pub use registrar::{ProvisioningError, Registrar, RegistrarSettings, certificate_id_of_arn};
pub use rotation::{
    CONFIRMATION_FIELD, CsrAnswer, CsrInstructions, CsrMessage, FailureReason, IssuedCertificate, JOB_OPERATION,
    JobDocument, JobExecution, Page, REDACTED, Rotation, RotationInventory, RotationIot, RotationObjects,
    RotationPolicy, RotationState, ServerKeygenInstructions, Strategy, answer_topic, csr_topic, job_id,
    rotation_key_warning,
};
pub use rotator::{
    Completer, CompleterSettings, CompletionOutcome, CsrIssuer, CsrIssuerSettings, CsrOutcome, IgnoreReason,
    JobExecutionEvent, Pacer, RotationError, Rotator, RotatorSettings, RunReport, credential_keys,
};
pub use time_fmt::{parse_rfc3339, rfc3339};
