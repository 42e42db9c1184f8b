//! The onboarding domain: certificate checks, naming rules, device profiles
//! (and the JITP templates they render to), the provisioning plan and
//! workflow, outcomes and errors. No AWS dependency: the outside world is
//! reached through the port traits (see `ports/`).
//!
//! Layers, each importing only from the ones before it:
//! `model` → `policy` → `checks` → `ports` → `workflows` (`testing` holds
//! in-memory fakes for the tests). The modules are private; this list is the
//! crate's public surface, one path per item (`unnameable_types` warns when
//! a public signature names a type missing from it).

#![warn(unnameable_types)]

mod checks;
mod model;
mod policy;
mod ports;
mod workflows;

#[cfg(any(test, feature = "fakes"))]
mod testing;

// --- model: value types ------------------------------------------------------
pub use model::certificate::{
    Certificate, CertificateRequest, KeyKind, MalformedCertificate, Subject, SubjectField, normalize_serial,
};
pub use model::event::{JitrEvent, MalformedEvent, is_certificate_id};
pub use model::manifest::{ManifestError, ManifestFormat, ManifestHeaderError, ManifestRow, parse_manifest};
pub use model::naming::is_valid_thing_name;
pub use model::plan::{Approval, CredentialsRecord, DroppedAttribute, ProvisioningPlan};
pub use model::reason::{RejectReason, Rejection};
pub use model::record::{CertificateRecord, Outcome, RecordStatus};
pub use model::status::{CertificateStatus, RejectionAction};
pub use model::time::{parse_rfc3339, rfc3339};

// --- policy: profiles, configuration, rotation policy, state and protocol -----
pub use policy::config::{CaTrust, DenyKey, DenyKeyError, OnboardingConfig};
pub use policy::profile::{DeviceProfile, MappedAttributes, NameError, ProfileError, UnfitAttribute};
pub use policy::rotation::protocol::{
    CONFIRMATION_FIELD, CsrAnswer, CsrInstructions, CsrMessage, JOB_OPERATION, JobDocument, JobExecution, REDACTED,
    ServerKeygenInstructions, answer_topic, csr_topic,
};
pub use policy::rotation::state::{FailureReason, Rotation, RotationState, TransitionError, job_id};
pub use policy::rotation::{Issuer, RotationPolicy, Strategy, is_kms_key_arn};

// --- checks -------------------------------------------------------------------
pub use checks::audit::{
    AuditCheck, AuditFacts, AuditFindings, AuditThresholds, AuditedCa, AuditedCertificate, Finding, PolicyFacts,
    ResourceKind, Severity, SeverityError, ThresholdError, active_certificates_denied, active_certificates_unrecorded,
    ca_certificates_expiring, certificates_shared, device_certificates_expiring, device_certificates_old,
    inactive_ca_with_active_certificates, inactive_cas_with_active_certificates, policies_overly_permissive,
    records_certificate_missing, rotations_failed, run_audit_checks, things_with_several_active_certificates,
};
pub use checks::ca_rotation::{CaRotationRefusal, check_ca_rotation, days_to_expiry, expires_within};
pub use checks::certificate::{CaVerdict, CheckContext, DEFAULT_CLOCK_SKEW_SECS, check_ca, check_device_certificate};
pub use checks::csr::rotation_key_warning;
pub use checks::subject::ImportNaming;
pub use checks::subject::check_subject as check_jitp_subject;

// --- ports: one trait per capability, and the errors they return ---------------
pub use ports::{
    AllowEntry, CaCertificates, CertificateRegistry, Connections, Consumption, CredentialsStore, DenyList,
    ExistingThing, HookIdentity, HookInventory, Inventory, IssuedCertificate, ListedCertificate, NameClaim, NameClaims,
    Pacer, Page, PortError, PortErrorKind, PortResult, ReconcileInventory, RegisteredCa, RegisteredCertificate,
    RevocationStore, RotationInventory, RotationIot, RotationObjects, Supersession, SupersessionIot, SupersessionStore,
    ThingCreation, ThingRegistry,
};
pub use ports::{AuditInventory, AuditIot, DescribedCertificate, InventoryItem};
pub use ports::{AuditRunStore, StoredAuditRun, TimeLeft};
pub use ports::{CaRegistry, CaState};
pub use ports::{CaSigners, CertificateSigner, SignatureAlgorithm, SigningKey};
pub use ports::{CertificateImport, ImportJournal, Registration};
pub use ports::{RetirementInventory, RetirementIot, RetirementTicket, ThingMembership};

// --- workflows ----------------------------------------------------------------
pub use workflows::audit::{
    AUDIT_POLICIES_MAX, AuditInvocation, AuditPhase, AuditRunState, AuditStop, AuditSummary, CaFacts, ScheduledAudit,
    ScheduledAuditError, ScheduledAuditSettings,
};
pub use workflows::audit::{AuditError, AuditLimits, AuditReads, AuditRun, audit_fleet};
pub use workflows::ca_rotation::{
    CA_LISTING_PAGE, CaExpiry, CaExpiryReport, CaReport, CaRetireError, CaRetireOutcome, CaUsage,
    DEFAULT_CA_EXPIRY_WARNING_DAYS, ca_expiry, ca_report, ca_usage, retire_ca,
};
pub use workflows::import::{
    CERTIFICATE_UNREADABLE, DUPLICATE_CERTIFICATE, DUPLICATE_THING_NAME, ImportError, ImportHandler, ImportMode,
    ImportReport, ImportRow, ImportSettings, ImportState, Importer, JournalEntry, JournalStep, MANIFEST_INVALID,
    NOT_IMPORTABLE, PROFILE_UNKNOWN, REGISTRATION_REFUSED, RowInput, RowOutcome, RowProblem, RowReport,
    STATE_WRITE_FAILED,
};
pub use workflows::issuance::{
    CaName, IssuanceError, IssuanceSettings, issue_device_certificate, self_signed_ca_certificate,
};
pub use workflows::jitp::{
    JitpError, Rendered as RenderedJitp, TEMPLATE_BODY_MAX, parameter_name as jitp_parameter_name,
    render as render_jitp,
};
pub use workflows::provisioning_hook::{
    Allowed, FLEET_PROVISIONING_CA, HOOK_LIMIT_MILLIS, HOOK_PAYLOAD_VERSION, HookOutcome, HookRequest, HookResponse,
    HookSettings, ProvisioningHook, Refusal, SERIAL_MAX, SERIAL_PARAMETER, SupersessionReport, render_template,
    retire_superseded,
};
pub use workflows::reconciler::{NOT_FOUND_STATUS, ReconcileReport, Reconciler, ReconcilerSettings, StuckHandler};
pub use workflows::registrar::{ImportRequest, ProvisioningError, Registrar, RegistrarSettings, certificate_id_of_arn};
pub use workflows::retirement::{
    PlannedCertificate, PlannedRotation, RetireOutcome, RetireRequest, Retirement, RetirementError, RetirementPlan,
    RetirementSettings,
};
pub use workflows::revocation::{
    Disconnection, NameHold, REASON_MAX, Revocation, RevocationError, RevocationReport, RevocationTarget,
    RevokedCertificate, StoppedRotation,
};
pub use workflows::rotation::completer::{Completer, CompleterSettings, CompletionOutcome, JobExecutionEvent};
pub use workflows::rotation::issuer::{CsrIssuer, CsrIssuerSettings, CsrOutcome, NoOwnCa};
pub use workflows::rotation::ops::{IgnoreReason, RotationError, credential_keys};
pub use workflows::rotation::rotator::{Rotator, RotatorSettings, RunReport};

// --- testing: in-memory fakes of the ports (feature `fakes`) -------------------
#[cfg(feature = "fakes")]
pub use testing::audit as audit_fakes;
#[cfg(feature = "fakes")]
pub use testing::ca as ca_fakes;
#[cfg(feature = "fakes")]
pub use testing::import as import_fakes;
#[cfg(feature = "fakes")]
pub use testing::signer as signer_fakes;
#[cfg(feature = "fakes")]
pub use testing::{provisioning_hook as hook_fakes, reconciler as reconciler_fakes, rotation as rotation_fakes};
