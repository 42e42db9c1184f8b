//! Bulk import: existing device certificates (a migration, a batch bought in
//! advance) registered with AWS IoT and provisioned exactly as a JITR device
//! is, by the registrar itself.
//!
//! Per row, in this order:
//! 1. the certificate parses; its id is the SHA-256 of its DER, computed
//!    here, so the import is idempotent without asking IoT;
//! 2. rows the state file says are finished are skipped;
//! 3. its CA: under a registered CA, the bound CA whose subject is the
//!    certificate's issuer and whose key verifies its signature; without a
//!    CA (SNI), the CA the operator names, which must be bound;
//! 4. its profile (the row's, else the import's, else the CA's binding),
//!    which must exist;
//! 5. the registrar's checks (signature, key, extensions, validity) and the
//!    row's naming (its thing name or the profile's rule, its attributes);
//! 6. the thing name once per manifest: a later row naming a name an earlier
//!    row took is reported, not provisioned;
//! 7. (concurrently, at most `concurrency` rows in flight) the deny-list;
//! 8. `RegisterCertificate` / `RegisterCertificateWithoutCA`, `INACTIVE`,
//!    after a `registering` line in the state file; a row whose earlier run
//!    left that line is described first, and IoT's "already exists" counts
//!    as registered: nothing is registered twice;
//! 9. the registrar ([`Registrar::handle_import`]): every check again on
//!    IoT's own description, the name claim, the thing, groups, policy,
//!    credentials record and inventory record, the activation last;
//! 10. the row's final line in the state file.
//!
//! Steps 1 to 6 make no call: a row refused there registers nothing. A row
//! that fails (a port error) writes no final line, and the next run
//! continues it from what IoT and the inventory hold.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::checks::certificate::{CheckContext, check_certificate_facts, check_issuer_and_signature};
use crate::checks::subject::{ImportNaming, approve_import_naming};
use crate::model::certificate::Certificate;
use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::Outcome;
use crate::model::status::CertificateStatus;
use crate::policy::config::{CaTrust, OnboardingConfig};
use crate::ports::{
    CertificateImport, CertificateRegistry, CredentialsStore, DenyList, ImportJournal, Inventory, PortError,
    PortErrorKind, Registration, ThingRegistry,
};
use crate::workflows::registrar::{ImportRequest, ProvisioningError, Registrar};

/// The row does not parse (line and field in the detail).
pub const MANIFEST_INVALID: &str = "MANIFEST_INVALID";
/// The certificate's file cannot be read.
pub const CERTIFICATE_UNREADABLE: &str = "CERTIFICATE_UNREADABLE";
/// The same certificate as an earlier row.
pub const DUPLICATE_CERTIFICATE: &str = "DUPLICATE_CERTIFICATE";
/// The thing name of an earlier row.
pub const DUPLICATE_THING_NAME: &str = "DUPLICATE_THING_NAME";
/// The profile does not exist or is invalid.
pub const PROFILE_UNKNOWN: &str = "PROFILE_UNKNOWN";
/// IoT holds the certificate in a status an import does not change
/// (`REVOKED`, or `INACTIVE` and recorded by this deployment otherwise than
/// as a provisioning in progress: a rejection, a retirement).
pub const NOT_IMPORTABLE: &str = "NOT_IMPORTABLE";
/// IoT refused to register the certificate.
pub const REGISTRATION_REFUSED: &str = "REGISTRATION_REFUSED";
/// The state file could not be written (the row is redone by the next run).
pub const STATE_WRITE_FAILED: &str = "STATE_WRITE_FAILED";

/// How the import registers certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportMode {
    /// `RegisterCertificate` under the bound CA that signed each certificate.
    UnderCa,
    /// `RegisterCertificateWithoutCA` (multi-account, SNI): every certificate
    /// must be signed by this bound CA, verified here and by the registrar.
    WithoutCa { ca_certificate_id: String },
}

/// The import's settings.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    pub mode: ImportMode,
    /// The profile of rows that name none (`--profile`); `None`: the CA's binding.
    pub default_profile: Option<String>,
    /// Rows in flight at once (at least 1).
    pub concurrency: usize,
    /// Tolerance on notBefore, as the registrar's.
    pub clock_skew_secs: i64,
}

/// What a row gives, read by the caller (the manifest and the certificate file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowInput {
    pub pem: String,
    pub profile: Option<String>,
    pub naming: ImportNaming,
}

/// Why a row has no input (it does not parse, its file cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub code: &'static str,
    pub detail: String,
}

/// One row of the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// The manifest line (or the file's position in a directory).
    pub line: usize,
    /// The certificate's path, for the report.
    pub source: String,
    pub input: Result<RowInput, RowProblem>,
}

/// What came of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// Provisioned and ACTIVE now.
    Provisioned { certificate_id: String, thing_name: String },
    /// Provisioned already (by an earlier run, or already in IoT and in the inventory).
    AlreadyDone {
        certificate_id: String,
        thing_name: Option<String>,
    },
    /// Refused, with a reason: nothing of it is ACTIVE.
    Rejected {
        certificate_id: Option<String>,
        code: String,
        detail: String,
    },
    /// Not finished (a call failed): the next run continues it.
    Failed {
        certificate_id: Option<String>,
        code: String,
        detail: String,
    },
}

impl RowOutcome {
    /// `provisioned`, `already_done`, `rejected` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Provisioned { .. } => "provisioned",
            Self::AlreadyDone { .. } => "already_done",
            Self::Rejected { .. } => "rejected",
            Self::Failed { .. } => "failed",
        }
    }

    pub fn certificate_id(&self) -> Option<&str> {
        match self {
            Self::Provisioned { certificate_id, .. } | Self::AlreadyDone { certificate_id, .. } => Some(certificate_id),
            Self::Rejected { certificate_id, .. } | Self::Failed { certificate_id, .. } => certificate_id.as_deref(),
        }
    }

    /// The reason code and detail of a rejection or failure.
    pub fn reason(&self) -> Option<(&str, &str)> {
        match self {
            Self::Rejected { code, detail, .. } | Self::Failed { code, detail, .. } => Some((code, detail)),
            _ => None,
        }
    }
}

/// One row's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    pub line: usize,
    pub source: String,
    pub outcome: RowOutcome,
}

/// The import's report: every row, in manifest order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: Vec<RowReport>,
}

impl ImportReport {
    /// Rows by outcome label.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for row in &self.rows {
            *counts.entry(row.outcome.label()).or_default() += 1;
        }
        counts
    }

    /// Rejected rows by reason code.
    pub fn rejections(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for row in &self.rows {
            if let RowOutcome::Rejected { code, .. } = &row.outcome {
                *counts.entry(code.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Rejected and failed rows, in manifest order.
    pub fn failures(&self) -> impl Iterator<Item = &RowReport> {
        self.rows
            .iter()
            .filter(|r| matches!(r.outcome, RowOutcome::Rejected { .. } | RowOutcome::Failed { .. }))
    }

    /// True when every row was provisioned, now or before.
    pub fn all_done(&self) -> bool {
        self.failures().next().is_none()
    }
}

// --- the state file -----------------------------------------------------------

/// A step of a row in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JournalStep {
    /// About to register the certificate (it may be registered from here on).
    Registering,
    Provisioned,
    AlreadyDone,
    /// Refused after it was registered (the registrar's verdict, or its
    /// status in IoT).
    Rejected,
}

/// One line of the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub certificate_id: String,
    pub step: JournalStep,
    pub line: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix seconds.
    pub at: i64,
}

impl JournalEntry {
    /// The entry as one line of JSON (no line break).
    pub fn to_line(&self) -> String {
        // Strings and numbers only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a state file says, by certificate id (the last finished line wins).
#[derive(Debug, Clone, Default)]
pub struct ImportState {
    finished: HashMap<String, JournalEntry>,
    registering: std::collections::HashSet<String>,
    /// Lines that did not parse (a line torn by a crash): ignored, their rows redone.
    pub unreadable_lines: usize,
}

impl ImportState {
    /// Reads a state file's text.
    pub fn parse(text: &str) -> Self {
        let mut state = Self::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<JournalEntry>(line) {
                Ok(entry) if crate::model::event::is_certificate_id(&entry.certificate_id) => match entry.step {
                    JournalStep::Registering => {
                        state.registering.insert(entry.certificate_id);
                    }
                    _ => {
                        state.finished.insert(entry.certificate_id.clone(), entry);
                    }
                },
                _ => state.unreadable_lines += 1,
            }
        }
        state
    }

    /// The finished entry of a certificate, if any.
    pub fn finished(&self, certificate_id: &str) -> Option<&JournalEntry> {
        self.finished.get(certificate_id)
    }

    /// Rows finished.
    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }
}

// --- the registrar, as the import calls it ------------------------------------

/// Processes a certificate the import registered, exactly as the registrar
/// does ([`Registrar::handle_import`]). A trait so that the import's tests
/// can drive it, as the reconciler's [`crate::StuckHandler`] is.
pub trait ImportHandler: Send + Sync {
    fn import_certificate(
        &self,
        request: &ImportRequest,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send;
}

impl<C, T, S, I> ImportHandler for Registrar<C, T, S, I>
where
    C: CertificateRegistry,
    T: ThingRegistry,
    S: CredentialsStore,
    I: Inventory + DenyList,
{
    fn import_certificate(
        &self,
        request: &ImportRequest,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send {
        self.handle_import(request, now)
    }
}

impl<H: ImportHandler> ImportHandler for &H {
    fn import_certificate(
        &self,
        request: &ImportRequest,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send {
        (**self).import_certificate(request, now)
    }
}

impl<H: ImportHandler> ImportHandler for Arc<H> {
    fn import_certificate(
        &self,
        request: &ImportRequest,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send {
        (**self).import_certificate(request, now)
    }
}

// --- the workflow -----------------------------------------------------------------

/// Why an import cannot start at all (nothing was done).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("loading the configuration: {0}")]
    Config(PortError),
    #[error("describing CA {ca_certificate_id}: {error}")]
    Ca {
        ca_certificate_id: String,
        error: PortError,
    },
    #[error("CA {0} is not usable for an import without CA: {1}")]
    CaNotUsable(String, String),
    #[error("profile {0}: {1}")]
    Profile(String, String),
}

struct BoundCa {
    id: String,
    status: CertificateStatus,
    pem: String,
    parsed: Certificate,
}

/// A row that passed every check that needs no call.
struct Planned {
    line: usize,
    source: String,
    pem: String,
    ca: Arc<BoundCa>,
    serial: String,
    request: ImportRequest,
    thing_name: String,
}

/// The import workflow, generic over its ports and the registrar.
pub struct Importer<R, D, H, J> {
    iot: R,
    inventory: D,
    handler: H,
    journal: J,
    settings: ImportSettings,
}

impl<R, D, H, J> Importer<R, D, H, J>
where
    R: CertificateRegistry + CertificateImport,
    D: Inventory + DenyList,
    H: ImportHandler,
    J: ImportJournal,
{
    pub fn new(iot: R, inventory: D, handler: H, journal: J, settings: ImportSettings) -> Self {
        Self {
            iot,
            inventory,
            handler,
            journal,
            settings,
        }
    }

    /// Imports `rows` as of `now` (Unix seconds), skipping what `state`
    /// says is finished; `progress` sees each row as it finishes.
    ///
    /// # Errors
    /// [`ImportError`] when the configuration or a bound CA cannot be read,
    /// the named CA of an import without CA is not bound and ACTIVE, or the
    /// default profile does not exist: then nothing was done.
    pub async fn run(
        &self,
        rows: Vec<ImportRow>,
        state: &ImportState,
        now: i64,
        progress: &(dyn Fn(&RowReport) + Sync),
    ) -> Result<ImportReport, ImportError> {
        let config = self.inventory.load_config().await.map_err(ImportError::Config)?;
        if let Some(name) = &self.settings.default_profile {
            config
                .profile(name)
                .map_err(|problem| ImportError::Profile(name.clone(), problem.to_string()))?;
        }
        let cas = self.bound_cas(&config).await?;
        if let ImportMode::WithoutCa { ca_certificate_id } = &self.settings.mode {
            match cas.iter().find(|ca| &ca.id == ca_certificate_id) {
                None => {
                    return Err(ImportError::CaNotUsable(
                        ca_certificate_id.clone(),
                        "not bound to a profile in this deployment (or not registered in IoT)".into(),
                    ));
                }
                Some(ca) if ca.status != CertificateStatus::Active => {
                    return Err(ImportError::CaNotUsable(
                        ca_certificate_id.clone(),
                        format!("it is {}", ca.status.as_str()),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut reports: Vec<Option<RowReport>> = Vec::with_capacity(rows.len());
        let mut planned = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for row in rows {
            let index = reports.len();
            match self.plan(row, &config, &cas, state, &mut ids, &mut names, now) {
                Ok(plan) => {
                    reports.push(None);
                    planned.push((index, plan));
                }
                Err(report) => {
                    progress(&report);
                    reports.push(Some(report));
                }
            }
        }
        let concurrency = self.settings.concurrency.max(1);
        let mut done = futures::stream::iter(planned)
            .map(|(index, plan)| async move { (index, self.process(plan, state, now).await) })
            .buffer_unordered(concurrency);
        while let Some((index, report)) = done.next().await {
            progress(&report);
            reports[index] = Some(report);
        }
        Ok(ImportReport {
            rows: reports.into_iter().flatten().collect(),
        })
    }

    /// Every bound CA, described once.
    async fn bound_cas(&self, config: &OnboardingConfig) -> Result<Vec<Arc<BoundCa>>, ImportError> {
        let mut cas = Vec::new();
        for id in config.bound_ca_ids() {
            let described = self
                .iot
                .describe_ca_certificate(id)
                .await
                .map_err(|error| ImportError::Ca {
                    ca_certificate_id: id.to_string(),
                    error,
                })?;
            // A CA bound here but not registered, or whose certificate does
            // not parse, signs nothing this import accepts.
            let Some(ca) = described else { continue };
            let Ok(parsed) = Certificate::from_pem(&ca.pem) else {
                continue;
            };
            cas.push(Arc::new(BoundCa {
                id: ca.certificate_id,
                status: ca.status,
                pem: ca.pem,
                parsed,
            }));
        }
        Ok(cas)
    }

    /// Steps 1 to 6: the checks that need no call.
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        row: ImportRow,
        config: &OnboardingConfig,
        cas: &[Arc<BoundCa>],
        state: &ImportState,
        ids: &mut HashMap<String, usize>,
        names: &mut HashMap<String, usize>,
        now: i64,
    ) -> Result<Planned, RowReport> {
        let ImportRow { line, source, input } = row;
        let report = |outcome| RowReport {
            line,
            source: source.clone(),
            outcome,
        };
        let reject = |id: Option<&str>, code: &str, detail: String| {
            report(RowOutcome::Rejected {
                certificate_id: id.map(str::to_string),
                code: code.to_string(),
                detail,
            })
        };
        let input = input.map_err(|p| reject(None, p.code, p.detail))?;
        let device = Certificate::from_pem(&input.pem)
            .map_err(|e| reject(None, RejectReason::CertificateMalformed.code(), e.to_string()))?;
        let id = device.fingerprint.clone();
        if let Some(first) = ids.get(&id) {
            return Err(reject(
                Some(&id),
                DUPLICATE_CERTIFICATE,
                format!("the same certificate as line {first}"),
            ));
        }
        ids.insert(id.clone(), line);
        if let Some(entry) = state.finished(&id) {
            if let Some(name) = &entry.thing_name {
                names.entry(name.clone()).or_insert(line);
            }
            return Err(report(match entry.step {
                JournalStep::Rejected => RowOutcome::Rejected {
                    certificate_id: Some(id),
                    code: entry.code.clone().unwrap_or_else(|| NOT_IMPORTABLE.to_string()),
                    detail: format!(
                        "(an earlier run) {}",
                        entry.detail.as_deref().unwrap_or("refused after registration")
                    ),
                },
                _ => RowOutcome::AlreadyDone {
                    certificate_id: id,
                    thing_name: entry.thing_name.clone(),
                },
            }));
        }
        let rejected = |rejection: Rejection| reject(Some(&id), rejection.reason.code(), rejection.detail);
        let ca = self.ca_of(&device, cas).map_err(rejected)?;
        let profile_name = input.profile.as_deref().or(self.settings.default_profile.as_deref());
        let profile = match profile_name {
            Some(name) => config
                .profile(name)
                .map_err(|problem| reject(Some(&id), PROFILE_UNKNOWN, format!("profile {name}: {problem}")))?,
            None => match config.trust(&ca.id) {
                CaTrust::Bound(profile) => profile,
                CaTrust::Misconfigured { profile, problem } => {
                    return Err(reject(
                        Some(&id),
                        PROFILE_UNKNOWN,
                        format!("CA {} is bound to profile {profile}, which {problem}", ca.id),
                    ));
                }
                CaTrust::Unbound => {
                    return Err(rejected(Rejection::new(
                        RejectReason::CaNotBound,
                        format!("CA {} is bound to no device profile", ca.id),
                    )));
                }
            },
        };
        let ctx = CheckContext {
            ca: &ca.parsed,
            profile,
            denial: None,
            now,
            clock_skew_secs: self.settings.clock_skew_secs,
        };
        check_certificate_facts(&device, &ctx).map_err(rejected)?;
        let approval = approve_import_naming(&device, profile, &input.naming).map_err(rejected)?;
        if let Some(first) = names.get(&approval.thing_name) {
            return Err(reject(
                Some(&id),
                DUPLICATE_THING_NAME,
                format!("thing name {} is line {first}'s", approval.thing_name),
            ));
        }
        names.insert(approval.thing_name.clone(), line);
        Ok(Planned {
            line,
            source,
            // The certificate alone, never the file's other blocks.
            pem: device.to_pem(),
            serial: device.serial.clone(),
            request: ImportRequest {
                certificate_id: id,
                ca_certificate_id: ca.id.clone(),
                without_ca: matches!(self.settings.mode, ImportMode::WithoutCa { .. }),
                profile: input.profile.or_else(|| self.settings.default_profile.clone()),
                naming: input.naming,
            },
            ca,
            thing_name: approval.thing_name,
        })
    }

    /// The CA a certificate is imported under: the named one without CA,
    /// otherwise the bound CA that signed it (ACTIVE first).
    fn ca_of(&self, device: &Certificate, cas: &[Arc<BoundCa>]) -> Result<Arc<BoundCa>, Rejection> {
        if let ImportMode::WithoutCa { ca_certificate_id } = &self.settings.mode {
            // Checked to be there by `run`.
            let ca = cas.iter().find(|ca| &ca.id == ca_certificate_id).ok_or_else(|| {
                Rejection::new(RejectReason::CaNotBound, format!("CA {ca_certificate_id} is not bound"))
            })?;
            check_issuer_and_signature(device, &ca.parsed)?;
            return Ok(ca.clone());
        }
        let named: Vec<&Arc<BoundCa>> = cas
            .iter()
            .filter(|ca| device.issuer_matches_subject_of(&ca.parsed))
            .collect();
        let Some(first) = named.first() else {
            return Err(Rejection::new(
                RejectReason::CaNotBound,
                format!(
                    "issuer {:?} is not the subject of any CA bound to a profile here",
                    device.issuer_dn
                ),
            ));
        };
        let signers: Vec<&&Arc<BoundCa>> = named.iter().filter(|ca| device.is_signed_by(&ca.parsed)).collect();
        let Some(signer) = signers
            .iter()
            .find(|ca| ca.status == CertificateStatus::Active)
            .or(signers.first())
        else {
            // Names a bound CA, signed by none: the check says why.
            check_issuer_and_signature(device, &first.parsed)?;
            return Err(Rejection::new(
                RejectReason::SignatureInvalid,
                "signature does not verify with any bound CA's key",
            ));
        };
        if signer.status != CertificateStatus::Active {
            return Err(Rejection::new(
                RejectReason::CaNotActive,
                format!("CA {} is {}", signer.id, signer.status.as_str()),
            ));
        }
        Ok((**signer).clone())
    }

    /// Steps 7 to 10.
    async fn process(&self, plan: Planned, state: &ImportState, now: i64) -> RowReport {
        let outcome = self.outcome(&plan, state, now).await;
        RowReport {
            line: plan.line,
            source: plan.source,
            outcome,
        }
    }

    async fn outcome(&self, plan: &Planned, state: &ImportState, now: i64) -> RowOutcome {
        let id = plan.request.certificate_id.clone();
        let failed = |code: &str, detail: String| RowOutcome::Failed {
            certificate_id: Some(id.clone()),
            code: code.to_string(),
            detail,
        };
        let port_failed = |e: PortError| failed(e.kind.code(), e.to_string());
        // Step 7: never cached, never assumed allowed.
        match self.inventory.denial(&plan.ca.id, &plan.serial, &id).await {
            Ok(None) => {}
            Ok(Some(rejection)) => {
                return RowOutcome::Rejected {
                    certificate_id: Some(id.clone()),
                    code: rejection.reason.code().to_string(),
                    detail: rejection.detail,
                };
            }
            Err(e) => return port_failed(e),
        }
        // Step 8.
        let registered = match state.registering.contains(&id) {
            true => match self.iot.describe_certificate(&id).await {
                Ok(described) => described.is_some(),
                Err(e) => return port_failed(e),
            },
            false => false,
        };
        if !registered {
            let entry = self.entry(plan, JournalStep::Registering, None, now);
            if let Err(e) = self.journal.append(&entry.to_line()).await {
                return failed(STATE_WRITE_FAILED, e.to_string());
            }
            let registration = match self.settings.mode {
                ImportMode::UnderCa => Registration::UnderCa { ca_pem: &plan.ca.pem },
                ImportMode::WithoutCa { .. } => Registration::WithoutCa,
            };
            match self.iot.register_certificate(&plan.pem, registration).await {
                Ok(_) => {}
                // Already there (registered by an earlier run, or by other
                // means): the registrar decides from IoT's description.
                Err(e) if e.kind == PortErrorKind::Conflict => {}
                Err(e) if e.kind == PortErrorKind::Invalid => {
                    return RowOutcome::Rejected {
                        certificate_id: Some(id.clone()),
                        code: REGISTRATION_REFUSED.to_string(),
                        detail: e.to_string(),
                    };
                }
                Err(e) => return port_failed(e),
            }
        }
        // Step 9.
        let outcome = match self.handler.import_certificate(&plan.request, now).await {
            Ok(outcome) => outcome,
            Err(e) => return failed(e.kind(), e.to_string()),
        };
        let (outcome, step, result) = match outcome {
            Outcome::Provisioned { thing_name, .. } => (
                RowOutcome::Provisioned {
                    certificate_id: id.clone(),
                    thing_name: thing_name.clone(),
                },
                JournalStep::Provisioned,
                Some(thing_name),
            ),
            Outcome::AlreadyProvisioned { thing_name } => (
                RowOutcome::AlreadyDone {
                    certificate_id: id.clone(),
                    thing_name: thing_name.clone(),
                },
                JournalStep::AlreadyDone,
                thing_name,
            ),
            Outcome::Recorded { thing_name } => (
                RowOutcome::AlreadyDone {
                    certificate_id: id.clone(),
                    thing_name: Some(thing_name.clone()),
                },
                JournalStep::AlreadyDone,
                Some(thing_name),
            ),
            Outcome::Rejected { rejection, .. } | Outcome::LeftAlone { rejection } => (
                RowOutcome::Rejected {
                    certificate_id: Some(id.clone()),
                    code: rejection.reason.code().to_string(),
                    detail: rejection.detail,
                },
                JournalStep::Rejected,
                None,
            ),
            Outcome::Ignored { certificate_status } if certificate_status == "NOT_FOUND" => {
                return failed(
                    "not_found",
                    "IoT does not describe the certificate just registered (eventual consistency); run again".into(),
                );
            }
            Outcome::Ignored { certificate_status } => (
                RowOutcome::Rejected {
                    certificate_id: Some(id.clone()),
                    code: NOT_IMPORTABLE.to_string(),
                    detail: format!(
                        "IoT holds it {certificate_status}, and this deployment did not register it for provisioning; left as it is"
                    ),
                },
                JournalStep::Rejected,
                None,
            ),
        };
        // Step 10.
        let mut entry = self.entry(plan, step, result, now);
        if let Some((code, detail)) = outcome.reason() {
            entry.code = Some(code.to_string());
            entry.detail = Some(detail.to_string());
        }
        if let Err(e) = self.journal.append(&entry.to_line()).await {
            return failed(STATE_WRITE_FAILED, e.to_string());
        }
        outcome
    }

    fn entry(&self, plan: &Planned, step: JournalStep, thing_name: Option<String>, now: i64) -> JournalEntry {
        JournalEntry {
            certificate_id: plan.request.certificate_id.clone(),
            step,
            line: plan.line,
            thing_name: thing_name.or_else(|| (step == JournalStep::Registering).then(|| plan.thing_name.clone())),
            code: None,
            detail: None,
            at: now,
        }
    }
}

#[cfg(test)]
mod tests;
