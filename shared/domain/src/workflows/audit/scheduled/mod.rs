//! The scheduled fleet audit (`fleet-auditor`): the checks of
//! [`audit_fleet`](super::audit_fleet), run over a fleet of any size as one
//! *run* spread over many invocations, each bounded and resumable.
//!
//! A run's state lives in one inventory item ([`AuditRunStore`]): its id
//! (the wall-clock second it started, never an event's time), its phase, the
//! phase's saved cursor, the bound CAs' facts, and the distinct policies seen
//! (bounded). Every write of it is conditional on the version read, so of two
//! overlapping invocations only one starts a run or advances a step; the
//! other stops quietly. The phases, each page by page from its cursor:
//!
//! 1. `CAS`: every bound CA described (`CA_CERT_EXPIRING`; status and
//!    `notAfter` kept for `INACTIVE_CA_ACTIVE_CERTS`);
//! 2. `CERTIFICATES`: per bound CA, `ListCertificatesByCA` pages; per
//!    certificate the one-shot's reads, plus point reads in place of its
//!    in-memory joins: the certificate's record (`GetItem`), and each
//!    thing's certificates (`ListThingPrincipals`; only when a thing has more
//!    than one, the others described and their rotations read);
//! 3. `INVENTORY`: the inventory scan: rotations (`ROTATION_FAILED`), records
//!    (`RECORD_CERT_MISSING` from a `DescribeCertificate`; a record whose
//!    certificate is under no listed CA, a rotated one, is audited as in 2);
//! 4. `POLICIES`: each distinct policy seen, `GetPolicy` once per run;
//!    then the CAs' `INACTIVE_CA_ACTIVE_CERTS` from the counts kept;
//! 5. `COUNTING`: the run's stored findings read back and counted per check
//!    (a page retried after a crash overwrote its findings, so nothing counts
//!    twice), then the latest-run summary, and the run is `DONE`.
//!
//! Findings come from the checks of [`crate::checks::audit`] called on each
//! step's small set of facts; none is computed here. Every check is judged
//! as of the run's start. A port error ends the invocation with the cursor
//! where it was: the next invocation does the step again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::checks::audit::{
    AuditCheck, AuditFindings, AuditThresholds, AuditedCa, AuditedCertificate, Finding, PolicyFacts,
    active_certificates_denied, active_certificates_unrecorded, ca_certificates_expiring, certificates_shared,
    device_certificates_expiring, device_certificates_old, inactive_ca_with_active_certificates,
    policies_overly_permissive, records_certificate_missing, rotations_failed, things_with_several_active_certificates,
};
use crate::model::certificate::Certificate;
use crate::model::record::CertificateRecord;
use crate::model::status::CertificateStatus;
use crate::model::time::rfc3339;
use crate::policy::config::OnboardingConfig;
use crate::ports::{
    AuditInventory, AuditIot, AuditRunStore, CaCertificates, DenyList, DescribedCertificate, Inventory, InventoryItem,
    PortError, TimeLeft,
};

use super::AuditReads;

/// Distinct policies a run keeps (each is read once, at the end); more are
/// counted in [`AuditSummary::policies_unaudited`].
pub const AUDIT_POLICIES_MAX: usize = 500;
/// A run state's cursor longer than this is refused (DynamoDB's and IoT's
/// cursors are far shorter).
const CURSOR_MAX: usize = 4_096;
/// Ids of ACTIVE certificates kept per inactive CA, to name in its finding.
const NAMED_KEPT: usize = 5;
/// How far in the future a stored run may have started (clock skew between
/// invocations) before its state is refused.
const FUTURE_SKEW_SECS: i64 = 300;

/// The scheduled audit's settings (the function reads them from its environment).
#[derive(Debug, Clone)]
pub struct ScheduledAuditSettings {
    /// A new run starts once the last one started this long ago.
    pub interval_secs: i64,
    /// Certificates (listed or recorded: each costs a `DescribeCertificate`
    /// and more) audited per invocation, at most.
    pub certificates_per_invocation: usize,
    /// Items asked for per page (listing, inventory scan, findings).
    pub page_size: usize,
    pub thresholds: AuditThresholds,
    /// How long a run's findings are kept (their TTL), in seconds.
    pub findings_ttl_secs: i64,
    /// The CAs bound to the default profile from the environment.
    pub default_ca_ids: Vec<String>,
}

impl Default for ScheduledAuditSettings {
    fn default() -> Self {
        Self {
            interval_secs: 24 * 3_600,
            certificates_per_invocation: 2_000,
            page_size: 100,
            thresholds: AuditThresholds::default(),
            findings_ttl_secs: 30 * 86_400,
            default_ca_ids: Vec::new(),
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditPhase {
    Cas,
    Certificates,
    Inventory,
    Policies,
    Counting,
    Done,
}

impl AuditPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cas => "CAS",
            Self::Certificates => "CERTIFICATES",
            Self::Inventory => "INVENTORY",
            Self::Policies => "POLICIES",
            Self::Counting => "COUNTING",
            Self::Done => "DONE",
        }
    }
}

/// A bound CA as the run found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaFacts {
    pub certificate_id: String,
    /// AWS IoT's status of the CA (`ACTIVE`, `INACTIVE`, …).
    pub status: String,
    pub not_after: i64,
    /// ACTIVE device certificates it signed, counted so far.
    #[serde(default)]
    pub active_certificates: u64,
    /// The smallest ids of those, to name in a finding.
    #[serde(default)]
    pub active_named: BTreeSet<String>,
}

/// One run's state, as stored between invocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditRunState {
    /// The wall-clock second the run started: its id, and the "now" its checks use.
    pub run_id: i64,
    pub phase: AuditPhase,
    /// The phase's saved cursor (opaque; a policy name in `POLICIES`).
    #[serde(default)]
    pub cursor: Option<String>,
    /// The bound CAs, as of the run's start, sorted.
    pub cas: Vec<String>,
    /// The CA whose certificates `CERTIFICATES` is listing.
    #[serde(default)]
    pub ca_index: usize,
    #[serde(default)]
    pub ca_facts: Vec<CaFacts>,
    /// Bound CAs AWS IoT does not have.
    #[serde(default)]
    pub missing_cas: Vec<String>,
    /// Policies on device certificates: name → up to two of the things they
    /// serve (the check only asks whether there is exactly one).
    #[serde(default)]
    pub policies: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    pub policies_unaudited: u64,
    /// Findings counted in `COUNTING`, by check id.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub certificates: u64,
    #[serde(default)]
    pub records: u64,
    #[serde(default)]
    pub rotations: u64,
    #[serde(default)]
    pub reads: AuditReads,
    #[serde(default)]
    pub finished_at: Option<i64>,
}

/// The summary of a completed run (the latest-run item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSummary {
    pub run_id: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// Findings per check id, every check listed, 0 included.
    pub counts: BTreeMap<String, u64>,
    /// Certificates that exist and were audited.
    pub certificates: u64,
    pub cas: u64,
    pub missing_cas: Vec<String>,
    pub records: u64,
    pub rotations: u64,
    /// Policies seen beyond [`AUDIT_POLICIES_MAX`], not judged.
    pub policies_unaudited: u64,
    pub reads: AuditReads,
}

/// Why an invocation ended without doing (all) its work.
#[derive(Debug, thiserror::Error)]
pub enum ScheduledAuditError {
    /// A port call failed; the next invocation does the step again.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The stored run state (or summary) is not one this code wrote. It is
    /// never guessed at: an operator deletes the item (`pk AUDIT`, `sk RUN`
    /// or `LATEST`) and the next invocation starts over.
    #[error("the stored audit {item} is refused: {detail}")]
    BadState { item: &'static str, detail: String },
    /// AWS IoT gave a certificate whose PEM does not parse.
    #[error("the PEM AWS IoT gives for certificate {certificate_id} does not parse: {detail}")]
    UnreadableCertificate { certificate_id: String, detail: String },
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStop {
    /// No run in progress, and the last one is recent.
    NotDue,
    /// The invocation's certificate budget is spent.
    Budget,
    /// The invocation's time is nearly up.
    TimeUp,
    /// Another invocation wrote the run state first: this one stopped.
    Lost,
    /// The run completed in this invocation.
    Completed,
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditInvocation {
    pub stop: AuditStop,
    /// The run worked on (`None` when none is in progress).
    pub run_id: Option<i64>,
    /// This invocation started the run.
    pub started: bool,
    /// Where the run is now.
    pub phase: Option<AuditPhase>,
    /// Steps (pages) done and saved.
    pub steps: u32,
    /// Certificates audited in this invocation.
    pub certificates: usize,
    /// The summary, when the run completed in this invocation.
    pub completed: Option<AuditSummary>,
}

impl AuditRunState {
    fn new(run_id: i64, cas: Vec<String>) -> Self {
        Self {
            run_id,
            phase: AuditPhase::Cas,
            cursor: None,
            cas,
            ca_index: 0,
            ca_facts: Vec::new(),
            missing_cas: Vec::new(),
            policies: BTreeMap::new(),
            policies_unaudited: 0,
            counts: BTreeMap::new(),
            certificates: 0,
            records: 0,
            rotations: 0,
            reads: AuditReads::default(),
            finished_at: None,
        }
    }

    /// The state, as stored.
    ///
    /// # Errors
    /// Never in practice (plain data); reported as a bad state.
    pub fn to_json(&self) -> Result<String, ScheduledAuditError> {
        serde_json::to_string(self).map_err(|e| bad("run state", e.to_string()))
    }

    /// A stored state, checked: it parses (no unknown field), started no
    /// later than `now` (plus a little skew), and every index, name and
    /// count is one this code could have written.
    ///
    /// # Errors
    /// [`ScheduledAuditError::BadState`] naming what is wrong.
    pub fn from_json(text: &str, now: i64) -> Result<Self, ScheduledAuditError> {
        let state: Self = serde_json::from_str(text).map_err(|e| bad("run state", format!("not a run state: {e}")))?;
        let fail = |detail: String| Err(bad("run state", detail));
        if state.run_id > now.saturating_add(FUTURE_SKEW_SECS) {
            return fail(format!(
                "run {} starts at {}, after now ({})",
                state.run_id,
                rfc3339(state.run_id),
                rfc3339(now)
            ));
        }
        if state.run_id <= 0 {
            return fail(format!("run id {} is not a time", state.run_id));
        }
        if state.ca_index > state.cas.len() {
            return fail(format!(
                "CA index {} beyond its {} CAs",
                state.ca_index,
                state.cas.len()
            ));
        }
        let cas: BTreeSet<&str> = state.cas.iter().map(String::as_str).collect();
        if let Some(ca) = state
            .ca_facts
            .iter()
            .map(|f| f.certificate_id.as_str())
            .chain(state.missing_cas.iter().map(String::as_str))
            .find(|ca| !cas.contains(ca))
        {
            return fail(format!("CA {ca:?} is not among the run's CAs"));
        }
        if state.ca_facts.iter().any(|f| f.active_named.len() > NAMED_KEPT) {
            return fail("a CA names more certificates than the run keeps".into());
        }
        if state.policies.len() > AUDIT_POLICIES_MAX || state.policies.values().any(|t| t.len() > 2) {
            return fail(format!(
                "more policies (or things per policy) than the run keeps ({AUDIT_POLICIES_MAX})"
            ));
        }
        if let Some(code) = state.counts.keys().find(|c| AuditCheck::from_code(c).is_none()) {
            return fail(format!("count of an unknown check {code:?}"));
        }
        if state.cursor.as_ref().is_some_and(|c| c.len() > CURSOR_MAX) {
            return fail(format!("a cursor longer than {CURSOR_MAX} characters"));
        }
        if (state.phase == AuditPhase::Done) != state.finished_at.is_some() {
            return fail("finished_at is set exactly when the run is DONE".into());
        }
        if state.phase == AuditPhase::Cas && (state.cursor.is_some() || state.ca_index != 0) {
            return fail("the CAs phase has no cursor".into());
        }
        Ok(state)
    }

    fn listed_cas(&self) -> impl Iterator<Item = &str> {
        self.cas
            .iter()
            .map(String::as_str)
            .filter(|ca| !self.missing_cas.iter().any(|m| m == ca))
    }
}

impl AuditSummary {
    /// The summary, as stored.
    ///
    /// # Errors
    /// Never in practice (plain data).
    pub fn to_json(&self) -> Result<String, ScheduledAuditError> {
        serde_json::to_string(self).map_err(|e| bad("latest summary", e.to_string()))
    }

    /// A stored summary, checked (every check id known).
    ///
    /// # Errors
    /// [`ScheduledAuditError::BadState`] naming what is wrong.
    pub fn from_json(text: &str) -> Result<Self, ScheduledAuditError> {
        let summary: Self =
            serde_json::from_str(text).map_err(|e| bad("latest summary", format!("not a summary: {e}")))?;
        if let Some(code) = summary.counts.keys().find(|c| AuditCheck::from_code(c).is_none()) {
            return Err(bad("latest summary", format!("count of an unknown check {code:?}")));
        }
        if summary.finished_at < summary.started_at {
            return Err(bad("latest summary", "it finished before it started".into()));
        }
        Ok(summary)
    }

    /// Findings per check, every check in [`AuditCheck::ALL`]'s order, 0 included.
    pub fn by_check(&self) -> Vec<(AuditCheck, u64)> {
        AuditCheck::ALL
            .into_iter()
            .map(|c| (c, self.counts.get(c.code()).copied().unwrap_or(0)))
            .collect()
    }
}

fn bad(item: &'static str, detail: String) -> ScheduledAuditError {
    ScheduledAuditError::BadState { item, detail }
}

/// What one step did.
enum Step {
    /// Saved; go on.
    Advanced,
    /// The certificate budget is spent (nothing read).
    Budget,
}

/// The scheduled audit, generic over its ports.
pub struct ScheduledAudit<L, I, D, V, S> {
    listing: L,
    iot: I,
    deny: D,
    inventory: V,
    store: S,
    settings: ScheduledAuditSettings,
}

impl<L, I, D, V, S> ScheduledAudit<L, I, D, V, S>
where
    L: CaCertificates,
    I: AuditIot,
    D: DenyList,
    V: AuditInventory + Inventory,
    S: AuditRunStore,
{
    pub fn new(listing: L, iot: I, deny: D, inventory: V, store: S, settings: ScheduledAuditSettings) -> Self {
        Self {
            listing,
            iot,
            deny,
            inventory,
            store,
            settings,
        }
    }

    /// One invocation as of `now` (the wall clock's Unix seconds): continues
    /// the run in progress, or starts one when none is and the last started
    /// at least the interval ago, then does steps, each saved with a
    /// conditional write, until the run completes, the certificate budget
    /// is spent, `time` runs out, or another invocation wrote first.
    ///
    /// # Errors
    /// [`ScheduledAuditError`]: a port error (the step is done again next
    /// time), a stored state this code did not write, an unreadable PEM.
    pub async fn invoke(&self, now: i64, time: &impl TimeLeft) -> Result<AuditInvocation, ScheduledAuditError> {
        let stored = self.store.audit_run().await?;
        let mut version = stored.as_ref().map(|s| s.version);
        let current = stored
            .as_ref()
            .map(|s| AuditRunState::from_json(&s.state, now))
            .transpose()?;
        let mut report = AuditInvocation {
            stop: AuditStop::NotDue,
            run_id: None,
            started: false,
            phase: None,
            steps: 0,
            certificates: 0,
            completed: None,
        };
        let mut state = match current {
            Some(state) if state.phase != AuditPhase::Done => state,
            previous => {
                if previous.is_some_and(|p| p.run_id.saturating_add(self.settings.interval_secs) > now) {
                    return Ok(report);
                }
                let config = self.inventory.load_config().await?;
                let state = AuditRunState::new(now, self.bound_cas(&config));
                if !self.store.save_audit_run(version, &state.to_json()?).await? {
                    report.stop = AuditStop::Lost;
                    return Ok(report);
                }
                version = Some(version.map_or(1, |v| v + 1));
                report.started = true;
                tracing::info!(run = now, cas = state.cas.len(), "audit run started");
                state
            }
        };
        report.run_id = Some(state.run_id);
        loop {
            report.phase = Some(state.phase);
            if state.phase == AuditPhase::Done {
                report.stop = AuditStop::Completed;
                return Ok(report);
            }
            if !time.time_left() {
                report.stop = AuditStop::TimeUp;
                return Ok(report);
            }
            let mut next = state.clone();
            match self.step(&mut next, &mut report, now).await? {
                Step::Budget => {
                    report.stop = AuditStop::Budget;
                    return Ok(report);
                }
                Step::Advanced => {}
            }
            let summary = if next.phase == AuditPhase::Done {
                Some(self.finish(&next).await?)
            } else {
                None
            };
            if !self.store.save_audit_run(version, &next.to_json()?).await? {
                tracing::info!(
                    run = state.run_id,
                    phase = state.phase.as_str(),
                    "another invocation advanced the run first"
                );
                report.stop = AuditStop::Lost;
                return Ok(report);
            }
            version = version.map(|v| v + 1);
            report.steps += 1;
            state = next;
            if let Some(summary) = summary {
                report.completed = Some(summary);
            }
        }
    }

    /// Every CA a run audits: those bound in the table and the default profile's.
    fn bound_cas(&self, config: &OnboardingConfig) -> Vec<String> {
        config.bound_ca_ids_with(&self.settings.default_ca_ids)
    }

    fn remaining(&self, report: &AuditInvocation) -> usize {
        self.settings
            .certificates_per_invocation
            .saturating_sub(report.certificates)
    }

    fn page_limit(&self, report: &AuditInvocation) -> usize {
        self.settings.page_size.clamp(1, 250).min(self.remaining(report))
    }

    fn expires_at(&self, state: &AuditRunState) -> i64 {
        state.run_id.saturating_add(self.settings.findings_ttl_secs)
    }

    /// One step of `state`'s phase: its reads, its findings written, `state`
    /// moved on (saved by the caller).
    async fn step(
        &self,
        state: &mut AuditRunState,
        report: &mut AuditInvocation,
        now: i64,
    ) -> Result<Step, ScheduledAuditError> {
        let mut findings = Vec::new();
        match state.phase {
            AuditPhase::Cas => {
                let mut cas = Vec::new();
                for ca in state.cas.clone() {
                    state.reads.ca_descriptions += 1;
                    let Some(registered) = self.iot.audited_ca(&ca).await? else {
                        state.missing_cas.push(ca);
                        continue;
                    };
                    let parsed = parse(&ca, &registered.pem)?;
                    cas.push(AuditedCa {
                        certificate_id: ca.clone(),
                        status: registered.status.clone(),
                        not_after: parsed.not_after,
                    });
                    state.ca_facts.push(CaFacts {
                        certificate_id: ca,
                        status: registered.status.as_str().to_string(),
                        not_after: parsed.not_after,
                        active_certificates: 0,
                        active_named: BTreeSet::new(),
                    });
                }
                findings.extend(ca_certificates_expiring(
                    &cas,
                    state.run_id,
                    self.settings.thresholds.ca_expiry_days,
                ));
                state.phase = AuditPhase::Certificates;
            }
            AuditPhase::Certificates => {
                let Some(ca) = state.cas.get(state.ca_index).cloned() else {
                    state.phase = AuditPhase::Inventory;
                    state.cursor = None;
                    return self.saved(state, findings).await;
                };
                if state.missing_cas.contains(&ca) {
                    state.ca_index += 1;
                    return self.saved(state, findings).await;
                }
                let limit = self.page_limit(report);
                if limit == 0 {
                    return Ok(Step::Budget);
                }
                state.reads.certificate_pages += 1;
                let page = self
                    .listing
                    .certificates_of_ca(&ca, state.cursor.as_deref(), limit)
                    .await?;
                for listed in &page.items {
                    report.certificates += 1;
                    state.reads.certificate_descriptions += 1;
                    let Some(described) = self.iot.audited_certificate(&listed.certificate_id).await? else {
                        continue; // Deleted since listed.
                    };
                    findings.extend(self.certificate(state, described, Some(ca.clone()), None).await?);
                }
                match next_cursor(state.cursor.as_deref(), page.cursor, "ListCertificatesByCA")? {
                    Some(next) => state.cursor = Some(next),
                    None => {
                        state.cursor = None;
                        state.ca_index += 1;
                    }
                }
            }
            AuditPhase::Inventory => {
                let limit = self.page_limit(report);
                if limit == 0 {
                    return Ok(Step::Budget);
                }
                state.reads.inventory_pages += 1;
                let page = self.inventory.inventory_page(state.cursor.as_deref(), limit).await?;
                for item in page.items {
                    match item {
                        InventoryItem::Rotation(rotation) => {
                            state.rotations += 1;
                            findings.extend(rotations_failed(std::slice::from_ref(&rotation)));
                        }
                        InventoryItem::Record(record) => {
                            report.certificates += 1;
                            state.records += 1;
                            findings.extend(self.record(state, record).await?);
                        }
                    }
                }
                match next_cursor(state.cursor.as_deref(), page.cursor, "Scan")? {
                    Some(next) => state.cursor = Some(next),
                    None => {
                        state.cursor = None;
                        state.phase = AuditPhase::Policies;
                    }
                }
            }
            AuditPhase::Policies => {
                let after = state.cursor.clone();
                let batch: Vec<(String, BTreeSet<String>)> = state
                    .policies
                    .iter()
                    .filter(|(name, _)| after.as_ref().is_none_or(|a| *name > a))
                    .take(self.settings.page_size.clamp(1, 250))
                    .map(|(n, t)| (n.clone(), t.clone()))
                    .collect();
                for (policy_name, things) in &batch {
                    state.reads.policy_documents += 1;
                    if let Some(document) = self.iot.policy_document(policy_name).await? {
                        findings.extend(policies_overly_permissive(&[PolicyFacts {
                            policy_name: policy_name.clone(),
                            document,
                            things: things.iter().cloned().collect(),
                        }]));
                    }
                }
                match batch.last() {
                    Some((last, _)) if state.policies.keys().next_back() != Some(last) => {
                        state.cursor = Some(last.clone());
                    }
                    _ => {
                        // Every policy judged; the CAs' counts are complete.
                        findings.extend(state.ca_facts.iter().filter_map(|f| {
                            let named: Vec<&str> = f.active_named.iter().map(String::as_str).collect();
                            inactive_ca_with_active_certificates(
                                &AuditedCa {
                                    certificate_id: f.certificate_id.clone(),
                                    status: CertificateStatus::parse(&f.status),
                                    not_after: f.not_after,
                                },
                                &named,
                                usize::try_from(f.active_certificates).unwrap_or(usize::MAX),
                            )
                        }));
                        state.cursor = None;
                        state.phase = AuditPhase::Counting;
                    }
                }
            }
            AuditPhase::Counting => {
                state.reads.finding_pages += 1;
                let page = self
                    .store
                    .audit_findings_page(
                        state.run_id,
                        state.cursor.as_deref(),
                        self.settings.page_size.clamp(1, 250),
                    )
                    .await?;
                for finding in &page.items {
                    *state.counts.entry(finding.check.code().to_string()).or_insert(0) += 1;
                }
                match next_cursor(state.cursor.as_deref(), page.cursor, "Query")? {
                    Some(next) => state.cursor = Some(next),
                    None => {
                        state.cursor = None;
                        state.phase = AuditPhase::Done;
                        state.finished_at = Some(now.max(state.run_id));
                    }
                }
            }
            AuditPhase::Done => {}
        }
        self.saved(state, findings).await
    }

    /// Writes a step's findings (before the state that says the step is done).
    async fn saved(&self, state: &AuditRunState, findings: Vec<Finding>) -> Result<Step, ScheduledAuditError> {
        if !findings.is_empty() {
            // One finding per (check, resource): the same thing found twice
            // in a step (two certificates of one thing) is one item.
            let merged = AuditFindings::new(findings);
            self.store
                .put_audit_findings(state.run_id, merged.findings(), self.expires_at(state))
                .await?;
        }
        Ok(Step::Advanced)
    }

    /// The summary of a run whose counting is complete, stored as the latest.
    async fn finish(&self, state: &AuditRunState) -> Result<AuditSummary, ScheduledAuditError> {
        let summary = AuditSummary {
            run_id: state.run_id,
            started_at: state.run_id,
            finished_at: state.finished_at.unwrap_or(state.run_id),
            counts: AuditCheck::ALL
                .into_iter()
                .map(|c| (c.code().to_string(), state.counts.get(c.code()).copied().unwrap_or(0)))
                .collect(),
            certificates: state.certificates,
            cas: state.ca_facts.len() as u64,
            missing_cas: state.missing_cas.clone(),
            records: state.records,
            rotations: state.rotations,
            policies_unaudited: state.policies_unaudited,
            reads: state.reads,
        };
        if !self.store.save_latest_audit(state.run_id, &summary.to_json()?).await? {
            // Runs follow one another through the one state item, so no
            // later run can have finished before this one: whoever wrote
            // that summary was not this code, and it would hide every run.
            return Err(bad(
                "latest summary",
                format!(
                    "it names a run later than run {} ({}), which is finishing now",
                    state.run_id,
                    rfc3339(state.run_id)
                ),
            ));
        }
        tracing::info!(run = state.run_id, ?summary, "audit run completed");
        Ok(summary)
    }

    /// An inventory record: its certificate described; gone, a
    /// `RECORD_CERT_MISSING`; under no CA the run lists, audited here.
    async fn record(
        &self,
        state: &mut AuditRunState,
        record: CertificateRecord,
    ) -> Result<Vec<Finding>, ScheduledAuditError> {
        state.reads.certificate_descriptions += 1;
        let Some(described) = self.iot.audited_certificate(&record.certificate_id).await? else {
            return Ok(records_certificate_missing(
                std::slice::from_ref(&record),
                &BTreeSet::new(),
            ));
        };
        let listed = described
            .certificate
            .ca_certificate_id
            .as_deref()
            .is_some_and(|ca| state.listed_cas().any(|l| l == ca));
        if listed {
            return Ok(Vec::new()); // Audited with its CA's listing.
        }
        let known_ca = Some(record.ca_certificate_id.clone()).filter(|c| !c.is_empty());
        self.certificate(state, described, known_ca, Some(record)).await
    }

    /// One certificate's audit, as the one-shot audits it, from its
    /// description and point reads; `record`: its inventory record when the
    /// caller already holds it (otherwise read for an ACTIVE one).
    async fn certificate(
        &self,
        state: &mut AuditRunState,
        described: DescribedCertificate,
        known_ca: Option<String>,
        record: Option<CertificateRecord>,
    ) -> Result<Vec<Finding>, ScheduledAuditError> {
        let registered = described.certificate;
        let id = registered.certificate_id.clone();
        let parsed = parse(&id, &registered.pem)?;
        let now = state.run_id;
        state.reads.principal_things += 1;
        let things = self.iot.things_of_certificate(&registered.certificate_arn).await?;
        state.reads.attached_policies += 1;
        for policy in self.iot.policies_of_certificate(&registered.certificate_arn).await? {
            if !state.policies.contains_key(&policy) && state.policies.len() >= AUDIT_POLICIES_MAX {
                state.policies_unaudited += 1;
                continue;
            }
            let served = state.policies.entry(policy).or_default();
            served.extend(things.iter().cloned());
            while served.len() > 2 {
                served.pop_last();
            }
        }
        let ca = registered.ca_certificate_id.clone().or(known_ca);
        let active = registered.status == CertificateStatus::Active;
        let mut denials = BTreeMap::new();
        let mut records = Vec::new();
        if active {
            state.reads.deny_lookups += 1;
            // A failed lookup is an error (the step is retried), never "not denied".
            if let Some(denial) = self
                .deny
                .denial(ca.as_deref().unwrap_or_default(), &parsed.serial, &parsed.fingerprint)
                .await?
            {
                denials.insert(id.clone(), denial);
            }
            let record = match record {
                Some(record) => Some(record),
                None => {
                    state.reads.record_reads += 1;
                    self.inventory.audited_record(&id).await?
                }
            };
            records.extend(record);
        }
        let audited = AuditedCertificate {
            certificate_id: id.clone(),
            ca_certificate_id: ca.clone(),
            status: registered.status.clone(),
            not_after: parsed.not_after,
            created_at: described.created_at.unwrap_or(parsed.not_before),
            things: things.clone(),
        };
        let one = std::slice::from_ref(&audited);
        let thresholds = self.settings.thresholds;
        let mut findings = Vec::new();
        findings.extend(device_certificates_expiring(one, now, thresholds.device_expiry_days));
        findings.extend(certificates_shared(one));
        findings.extend(active_certificates_unrecorded(one, &records));
        findings.extend(active_certificates_denied(one, &denials));
        findings.extend(device_certificates_old(one, now, thresholds.device_max_age_days));
        if active {
            if let Some(facts) = state
                .ca_facts
                .iter_mut()
                .find(|f| Some(f.certificate_id.as_str()) == ca.as_deref())
                && facts.status != CertificateStatus::Active.as_str()
            {
                facts.active_certificates += 1;
                facts.active_named.insert(id.clone());
                while facts.active_named.len() > NAMED_KEPT {
                    facts.active_named.pop_last();
                }
            }
            let distinct: BTreeSet<&String> = things.iter().collect();
            for thing in distinct {
                findings.extend(self.thing(state, thing, &audited).await?);
            }
        }
        state.certificates += 1;
        Ok(findings)
    }

    /// `THING_MULTIPLE_ACTIVE_CERTS` for one thing of an ACTIVE certificate:
    /// the thing's certificates; when there are others, each described and
    /// every one's rotation read.
    async fn thing(
        &self,
        state: &mut AuditRunState,
        thing: &str,
        audited: &AuditedCertificate,
    ) -> Result<Vec<Finding>, ScheduledAuditError> {
        state.reads.thing_principals += 1;
        let ids: BTreeSet<String> = self.iot.certificates_of_thing(thing).await?.into_iter().collect();
        if ids.iter().all(|id| *id == audited.certificate_id) {
            return Ok(Vec::new());
        }
        let mut on_thing = vec![AuditedCertificate {
            things: vec![thing.to_string()],
            ..audited.clone()
        }];
        let mut rotations = Vec::new();
        for id in &ids {
            if *id != audited.certificate_id {
                state.reads.certificate_descriptions += 1;
                if let Some(other) = self.iot.audited_certificate(id).await? {
                    // Only the status and the thing count for this check.
                    on_thing.push(AuditedCertificate {
                        certificate_id: id.clone(),
                        ca_certificate_id: other.certificate.ca_certificate_id,
                        status: other.certificate.status,
                        not_after: 0,
                        created_at: 0,
                        things: vec![thing.to_string()],
                    });
                }
            }
            state.reads.rotation_reads += 1;
            rotations.extend(self.inventory.audited_rotation(id).await?);
        }
        Ok(things_with_several_active_certificates(&on_thing, &rotations))
    }
}

/// The next page's cursor (`None`: the listing is done); the same cursor
/// again would read the same page forever.
fn next_cursor(
    previous: Option<&str>,
    next: Option<String>,
    operation: &'static str,
) -> Result<Option<String>, ScheduledAuditError> {
    match next {
        Some(next) if previous == Some(next.as_str()) => Err(ScheduledAuditError::Port(PortError::new(
            operation,
            crate::ports::PortErrorKind::Invalid,
            format!("the same page cursor {next:?} came back twice"),
        ))),
        Some(next) if next.len() > CURSOR_MAX => Err(ScheduledAuditError::Port(PortError::new(
            operation,
            crate::ports::PortErrorKind::Invalid,
            format!("a page cursor longer than {CURSOR_MAX} characters"),
        ))),
        other => Ok(other),
    }
}

fn parse(certificate_id: &str, pem: &str) -> Result<Certificate, ScheduledAuditError> {
    Certificate::from_pem(pem).map_err(|e| ScheduledAuditError::UnreadableCertificate {
        certificate_id: certificate_id.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
