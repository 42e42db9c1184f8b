//! The fleet reconciler: one scheduled run compares what AWS IoT holds under
//! each bound CA with the inventory, and repairs or records the differences.
//!
//! - A certificate stuck `PENDING_ACTIVATION` for longer than a threshold is
//!   handed to a [`StuckHandler`] (the registrar, with a synthesized event):
//!   this recovers JITR events lost anywhere upstream.
//! - An `ACTIVE` certificate without an inventory record (JITP, fleet
//!   provisioning, made by hand) is handed to the registrar, which checks it
//!   and records it with the thing its profile names.
//! - A record whose certificate no longer exists in IoT is marked.
//!
//! Work is bounded per run and resumes from saved cursors: per CA, one over
//! `ListCertificatesByCA` and one over the CA's inventory records, plus the CA
//! the last run stopped at, so that a large CA cannot starve the others.
//! Every step is idempotent: a run interrupted anywhere and run again reaches
//! the same end state.

use std::future::Future;
use std::sync::Arc;

use crate::model::event::JitrEvent;
use crate::model::record::{CertificateRecord, Outcome, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::OnboardingConfig;
use crate::ports::{
    CaCertificates, CertificateRegistry, Inventory, ListedCertificate, PortError, PortErrorKind, PortResult,
    ReconcileInventory,
};
use crate::workflows::ca_rotation::{CaExpiryReport, DEFAULT_CA_EXPIRY_WARNING_DAYS, ca_expiry};
use crate::workflows::registrar::{ProvisioningError, Registrar};

/// Default age after which a `PENDING_ACTIVATION` certificate counts as stuck.
pub const DEFAULT_STUCK_AFTER_SECS: i64 = 600;
/// The `certificateStatus` a record is given when its certificate is gone.
pub const NOT_FOUND_STATUS: &str = "NOT_FOUND";
/// The saved cursor naming where the last run stopped: the
/// [`certificates_cursor`] or [`records_cursor`] name of a CA.
pub const CA_CURSOR: &str = "ca";

/// The saved cursor over a CA's certificates in IoT.
pub fn certificates_cursor(ca_certificate_id: &str) -> String {
    format!("certificates#{ca_certificate_id}")
}

/// The saved cursor over a CA's inventory records.
pub fn records_cursor(ca_certificate_id: &str) -> String {
    format!("records#{ca_certificate_id}")
}

impl JitrEvent {
    /// The event IoT would have published for a certificate of this CA, as of
    /// `now` (Unix seconds), for a certificate whose event was lost.
    pub fn synthesized(certificate_id: &str, ca_certificate_id: &str, now: i64) -> Self {
        Self {
            certificate_id: certificate_id.to_string(),
            ca_certificate_id: ca_certificate_id.to_string(),
            timestamp: Some(now.saturating_mul(1_000)),
            certificate_status: Some(CertificateStatus::PendingActivation.as_str().to_string()),
            aws_account_id: None,
            certificate_registration_timestamp: None,
        }
    }
}

// --- the registrar, as the reconciler calls it -------------------------------

/// Processes a certificate stuck `PENDING_ACTIVATION`, exactly as the
/// registrar processes its event. [`Registrar`] implements it.
pub trait StuckHandler: Send + Sync {
    fn process_stuck(
        &self,
        event: &JitrEvent,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send;
}

impl<C, T, S, I> StuckHandler for Registrar<C, T, S, I>
where
    C: crate::ports::CertificateRegistry,
    T: crate::ports::ThingRegistry,
    S: crate::ports::CredentialsStore,
    I: Inventory + crate::ports::DenyList,
{
    fn process_stuck(
        &self,
        event: &JitrEvent,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send {
        self.handle(event, now)
    }
}

impl<H: StuckHandler> StuckHandler for &H {
    fn process_stuck(
        &self,
        event: &JitrEvent,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send {
        (**self).process_stuck(event, now)
    }
}

impl<H: StuckHandler> StuckHandler for Arc<H> {
    fn process_stuck(
        &self,
        event: &JitrEvent,
        now: i64,
    ) -> impl Future<Output = Result<Outcome, ProvisioningError>> + Send {
        self.as_ref().process_stuck(event, now)
    }
}

// --- settings and report ----------------------------------------------------

/// Reconciler settings, read from the environment by the function.
#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    /// Age after which a `PENDING_ACTIVATION` certificate is stuck.
    pub stuck_after_secs: i64,
    /// IoT certificates examined per run, at most (all CAs together).
    pub max_examined_per_run: u32,
    /// Inventory records checked per run, at most (one `DescribeCertificate` each).
    pub max_records_per_run: u32,
    /// Inventory scan pages read per run, at most: the read cost of a run is
    /// at most this times `page_size` items, matching or not.
    pub max_record_pages_per_run: u32,
    /// Items asked for per page (`ListCertificatesByCA` allows 250).
    pub page_size: usize,
    /// The CA ids bound to the default profile from the environment.
    pub default_ca_ids: Vec<String>,
    /// Days before a bound CA's expiry from which it counts as expiring soon.
    pub ca_expiry_warning_days: i64,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        Self {
            stuck_after_secs: DEFAULT_STUCK_AFTER_SECS,
            max_examined_per_run: 1_000,
            max_records_per_run: 500,
            max_record_pages_per_run: 20,
            page_size: 100,
            default_ca_ids: Vec::new(),
            ca_expiry_warning_days: DEFAULT_CA_EXPIRY_WARNING_DAYS,
        }
    }
}

/// What one run found and did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// CAs visited.
    pub cas: u32,
    /// IoT certificates examined.
    pub examined: u32,
    /// Stuck certificates handed to the registrar, which processed them.
    pub stuck_processed: u32,
    /// `PENDING_ACTIVATION` certificates younger than the threshold, left alone.
    pub pending_recent: u32,
    /// `ACTIVE` certificates found without a record, now recorded.
    pub recorded_active: u32,
    /// Inventory records checked against IoT.
    pub records_examined: u32,
    /// Records whose certificate no longer exists, now marked.
    pub marked_missing: u32,
    /// Inventory scan pages read (each reads up to `page_size` items).
    pub record_pages: u32,
    /// Items or scans that hit an error (logged; the next run tries again).
    pub errors: u32,
    /// A budget ran out with work left; the saved cursors resume it.
    pub budget_exhausted: bool,
    /// The run stopped early on a transient error (throttling).
    pub interrupted: bool,
}

// --- the workflow -----------------------------------------------------------

/// Why a run stopped before visiting every CA.
enum Stop {
    Budget,
    Interrupted,
}

/// The scheduled reconciler, generic over its ports and its stuck handler.
pub struct Reconciler<L, C, I, H> {
    listing: L,
    certificates: C,
    inventory: I,
    stuck: H,
    settings: ReconcilerSettings,
}

impl<L, C, I, H> Reconciler<L, C, I, H>
where
    L: CaCertificates,
    C: CertificateRegistry,
    I: Inventory + ReconcileInventory,
    H: StuckHandler,
{
    pub fn new(listing: L, certificates: C, inventory: I, stuck: H, settings: ReconcilerSettings) -> Self {
        Self {
            listing,
            certificates,
            inventory,
            stuck,
            settings,
        }
    }

    /// One run as of `now` (Unix seconds): for each bound CA, from the one the
    /// last run stopped at, its IoT certificates, then its inventory records,
    /// each from its saved cursor and within the run's budgets. An item's
    /// error is logged and counted and the run goes on; a transient one ends
    /// the run.
    ///
    /// # Errors
    /// [`PortError`] when the configuration or a cursor cannot be read or saved.
    pub async fn run(&self, now: i64) -> PortResult<ReconcileReport> {
        let config = self.inventory.load_config().await?;
        let cas = self.bound_cas(&config);
        let saved = self.inventory.reconcile_cursor(CA_CURSOR).await?;
        // Where the last run stopped: that CA first, in that phase.
        let (start, records_first) = saved
            .as_deref()
            .and_then(|saved| {
                cas.iter().enumerate().find_map(|(i, ca)| {
                    (saved == certificates_cursor(ca))
                        .then_some((i, false))
                        .or_else(|| (saved == records_cursor(ca)).then_some((i, true)))
                })
            })
            .unwrap_or((0, false));
        let mut report = ReconcileReport::default();
        let mut stopped = None;
        for (n, ca) in cas.iter().cycle().skip(start).take(cas.len()).enumerate() {
            report.cas += 1;
            if !(n == 0 && records_first)
                && let Some(stop) = self.certificates_of(ca, now, &mut report).await?
            {
                stopped = Some((certificates_cursor(ca), stop));
                break;
            }
            if let Some(stop) = self.records_of(ca, now, &mut report).await? {
                stopped = Some((records_cursor(ca), stop));
                break;
            }
        }
        // The next run starts where this one stopped.
        let resume = stopped.as_ref().map(|(at, _)| at.as_str());
        self.inventory.save_reconcile_cursor(CA_CURSOR, resume).await?;
        match stopped {
            Some((_, Stop::Budget)) => report.budget_exhausted = true,
            Some((_, Stop::Interrupted)) => report.interrupted = true,
            None => {}
        }
        tracing::info!(?report, "reconciler run");
        Ok(report)
    }

    /// Every CA the run visits: those bound in the table and the default profile's.
    fn bound_cas(&self, config: &OnboardingConfig) -> Vec<String> {
        config.bound_ca_ids_with(&self.settings.default_ca_ids)
    }

    /// Every bound CA's expiry as of `now`: IoT's description of the CA
    /// (`DescribeCACertificate`), its PEM's notAfter, and whether it is an
    /// `ACTIVE` CA within `ca_expiry_warning_days` of it. A CA that cannot be
    /// read is logged and counted, and the others are still reported.
    ///
    /// # Errors
    /// [`PortError`] when the configuration cannot be read.
    pub async fn ca_expiry(&self, now: i64) -> PortResult<CaExpiryReport> {
        let config = self.inventory.load_config().await?;
        let mut report = CaExpiryReport::default();
        for ca in self.bound_cas(&config) {
            match self.certificates.describe_ca_certificate(&ca).await {
                Ok(Some(registered)) => match ca_expiry(&registered, now, self.settings.ca_expiry_warning_days) {
                    Some(expiry) => {
                        tracing::info!(
                            ca,
                            status = registered.status.as_str(),
                            not_after = %crate::model::time::rfc3339(expiry.not_after),
                            days_to_expiry = expiry.days_to_expiry,
                            "bound CA's expiry"
                        );
                        if expiry.expiring_soon {
                            tracing::warn!(
                                ca,
                                days_to_expiry = expiry.days_to_expiry,
                                not_after = expiry.not_after,
                                "bound CA expiring soon: rotate it (docs/ca-rotation.md)"
                            );
                        }
                        // Recorded where the operator's and the audit's reads
                        // find it without IoT; a failed write is retried by the
                        // next run and never fails this one.
                        if let Err(e) = self.inventory.record_ca_expiry(&ca, expiry.not_after, now).await {
                            tracing::warn!(ca, error = %e, "bound CA's expiry not recorded this run");
                        }
                        report.cas.push(expiry);
                    }
                    None => {
                        report.errors += 1;
                        tracing::error!(ca, "bound CA's certificate does not parse; its expiry is unknown");
                    }
                },
                Ok(None) => {
                    report.errors += 1;
                    tracing::warn!(ca, "bound CA is not registered in AWS IoT; its expiry is unknown");
                }
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(ca, error = %e, "bound CA not described; its expiry is unknown this run");
                }
            }
        }
        Ok(report)
    }

    /// The CA's certificates in IoT, from the saved cursor on.
    async fn certificates_of(&self, ca: &str, now: i64, report: &mut ReconcileReport) -> PortResult<Option<Stop>> {
        let name = certificates_cursor(ca);
        let mut cursor = self.inventory.reconcile_cursor(&name).await?;
        loop {
            // Pages no larger than the budget left, so the cursor after a page
            // is exactly where the next run goes on.
            let remaining = self.settings.max_examined_per_run.saturating_sub(report.examined) as usize;
            if remaining == 0 {
                return Ok(Some(Stop::Budget));
            }
            let limit = self.settings.page_size.clamp(1, remaining);
            let page = match self.listing.certificates_of_ca(ca, cursor.as_deref(), limit).await {
                Ok(page) => page,
                Err(e) => return self.scan_failed(&name, cursor.is_some(), e, report).await,
            };
            for certificate in &page.items {
                report.examined += 1;
                if let Err(e) = self.certificate(ca, certificate, now, report).await {
                    item_error(report, &e, &certificate.certificate_id);
                    if e.is_transient() {
                        // The saved cursor is still this page's start.
                        return Ok(Some(Stop::Interrupted));
                    }
                }
            }
            cursor = page.cursor;
            self.inventory.save_reconcile_cursor(&name, cursor.as_deref()).await?;
            if cursor.is_none() {
                return Ok(None);
            }
        }
    }

    /// One IoT certificate: process it if stuck, record it if ACTIVE and unknown.
    async fn certificate(
        &self,
        ca: &str,
        certificate: &ListedCertificate,
        now: i64,
        report: &mut ReconcileReport,
    ) -> Result<(), ProvisioningError> {
        let id = certificate.certificate_id.as_str();
        match certificate.status {
            CertificateStatus::PendingActivation => {
                // No creation date: taken as old (the registrar is idempotent).
                let age = certificate.created_at.map_or(i64::MAX, |created| now - created);
                if age < self.settings.stuck_after_secs {
                    report.pending_recent += 1;
                    return Ok(());
                }
                let outcome = self
                    .stuck
                    .process_stuck(&JitrEvent::synthesized(id, ca, now), now)
                    .await?;
                report.stuck_processed += 1;
                tracing::warn!(
                    certificate = id,
                    ca,
                    age,
                    outcome = outcome.label(),
                    "stuck certificate processed"
                );
            }
            CertificateStatus::Active => {
                // Known, unless revoked in an emergency: a revoked
                // certificate ACTIVE again goes to the registrar, which
                // revokes it again while the deny-list denies it.
                if self
                    .inventory
                    .certificate_record(id)
                    .await?
                    .is_some_and(|r| r.status != RecordStatus::Revoked)
                {
                    return Ok(());
                }
                // Processed as the registrar processes an event for an ACTIVE
                // certificate it does not know: checked, and recorded with the
                // thing its profile names (or, under a JITP CA whose template
                // let in what the profile refuses, rejected).
                let outcome = self
                    .stuck
                    .process_stuck(&JitrEvent::synthesized(id, ca, now), now)
                    .await?;
                report.recorded_active += 1;
                tracing::warn!(
                    certificate = id,
                    ca,
                    outcome = outcome.label(),
                    thing = ?outcome.thing_name(),
                    "ACTIVE certificate without a record processed"
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The CA's inventory records, from the saved cursor on: those whose
    /// certificate is gone are marked.
    async fn records_of(&self, ca: &str, now: i64, report: &mut ReconcileReport) -> PortResult<Option<Stop>> {
        let name = records_cursor(ca);
        let mut cursor = self.inventory.reconcile_cursor(&name).await?;
        loop {
            let remaining = self
                .settings
                .max_records_per_run
                .saturating_sub(report.records_examined) as usize;
            if remaining == 0 || report.record_pages >= self.settings.max_record_pages_per_run {
                return Ok(Some(Stop::Budget));
            }
            // A page reads at most `limit` items, so it returns at most as
            // many records as the budget has left.
            let limit = self.settings.page_size.clamp(1, remaining);
            report.record_pages += 1;
            let page = match self.inventory.records_of_ca(ca, cursor.as_deref(), limit).await {
                Ok(page) => page,
                Err(e) => return self.scan_failed(&name, cursor.is_some(), e, report).await,
            };
            for record in &page.items {
                // Rotated and retired certificates are deleted by design;
                // marked ones are done.
                if matches!(record.status, RecordStatus::Rotated | RecordStatus::Retired)
                    || record.certificate_status.as_deref() == Some(NOT_FOUND_STATUS)
                {
                    continue;
                }
                report.records_examined += 1;
                if let Err(e) = self.record(record, now, report).await {
                    let e = ProvisioningError::from(e);
                    item_error(report, &e, &record.certificate_id);
                    if e.is_transient() {
                        return Ok(Some(Stop::Interrupted));
                    }
                }
            }
            cursor = page.cursor;
            self.inventory.save_reconcile_cursor(&name, cursor.as_deref()).await?;
            if cursor.is_none() {
                return Ok(None);
            }
        }
    }

    async fn record(&self, record: &CertificateRecord, now: i64, report: &mut ReconcileReport) -> PortResult<()> {
        let id = record.certificate_id.as_str();
        if self.certificates.describe_certificate(id).await?.is_none()
            && self.inventory.mark_certificate_missing(id, now).await?
        {
            report.marked_missing += 1;
            tracing::warn!(certificate = id, ca = record.ca_certificate_id, thing = ?record.thing_name, "record of a certificate that no longer exists marked");
        }
        Ok(())
    }

    /// A listing failed. Transient: the run stops. Otherwise the CA is skipped
    /// (counted); a cursor the port cannot read is dropped so the scan restarts.
    async fn scan_failed(
        &self,
        name: &str,
        had_cursor: bool,
        error: PortError,
        report: &mut ReconcileReport,
    ) -> PortResult<Option<Stop>> {
        report.errors += 1;
        if error.is_transient() {
            tracing::warn!(error = %error, cursor = name, "reconciler run interrupted");
            return Ok(Some(Stop::Interrupted));
        }
        tracing::error!(error = %error, cursor = name, "reconciler scan failed; CA skipped");
        if had_cursor && error.kind == PortErrorKind::Invalid {
            self.inventory.save_reconcile_cursor(name, None).await?;
        }
        Ok(None)
    }
}

fn item_error(report: &mut ReconcileReport, error: &ProvisioningError, certificate_id: &str) {
    report.errors += 1;
    report.interrupted |= error.is_transient();
    if error.is_transient() {
        tracing::warn!(error = %error, kind = error.kind(), certificate = certificate_id, "reconcile step failed; run stopped");
    } else {
        tracing::error!(error = %error, kind = error.kind(), certificate = certificate_id, "reconcile step failed");
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::ports::RegisteredCa;
    use crate::testing::reconciler::{BOUND, DEFAULT, Fake, NOW, UNBOUND};
    use std::collections::BTreeMap;

    type TestReconciler = Reconciler<Fake, Fake, Fake, Fake>;

    fn fake() -> Fake {
        let fake = Fake::default();
        fake.with(|w| w.config.bind(BOUND.into(), "sensors".into()));
        fake
    }

    fn reconciler(fake: &Fake, settings: ReconcilerSettings) -> TestReconciler {
        Reconciler::new(fake.clone(), fake.clone(), fake.clone(), fake.clone(), settings)
    }

    fn default_settings() -> ReconcilerSettings {
        ReconcilerSettings {
            default_ca_ids: vec![DEFAULT.into()],
            ..ReconcilerSettings::default()
        }
    }

    async fn run(r: &TestReconciler, now: i64) -> ReconcileReport {
        r.run(now).await.unwrap_or_else(|e| panic!("run failed: {e}"))
    }

    #[test]
    fn synthesized_event_is_a_pending_activation_event() {
        let e = JitrEvent::synthesized("c1", "ca1", NOW);
        assert_eq!(e.certificate_id, "c1");
        assert_eq!(e.ca_certificate_id, "ca1");
        assert_eq!(e.timestamp, Some(NOW * 1_000));
        assert_eq!(e.certificate_status.as_deref(), Some("PENDING_ACTIVATION"));
    }

    #[tokio::test]
    async fn only_certificates_stuck_past_the_threshold_are_processed() {
        let fake = fake();
        let threshold = DEFAULT_STUCK_AFTER_SECS;
        fake.cert(
            "old",
            BOUND,
            CertificateStatus::PendingActivation,
            Some(NOW - threshold),
        );
        fake.cert(
            "young",
            BOUND,
            CertificateStatus::PendingActivation,
            Some(NOW - threshold + 1),
        );
        fake.cert("undated", DEFAULT, CertificateStatus::PendingActivation, None);
        fake.cert("revoked", BOUND, CertificateStatus::Revoked, Some(0));
        let r = reconciler(&fake, default_settings());
        let report = run(&r, NOW).await;
        let stuck = fake.with(|w| w.stuck.clone());
        assert_eq!(
            stuck,
            vec![
                JitrEvent::synthesized("old", BOUND, NOW),
                JitrEvent::synthesized("undated", DEFAULT, NOW)
            ]
        );
        assert_eq!(report.stuck_processed, 2);
        assert_eq!(report.pending_recent, 1);
        assert_eq!(report.examined, 4);
        assert_eq!(report.cas, 2);
        assert!(!report.budget_exhausted && !report.interrupted);
    }

    #[tokio::test]
    async fn a_revoked_certificate_active_again_is_handed_to_the_registrar() {
        let fake = fake();
        fake.cert("stolen", BOUND, CertificateStatus::Active, Some(0));
        fake.record("stolen", BOUND, RecordStatus::Revoked);
        fake.cert("still-revoked", BOUND, CertificateStatus::Revoked, Some(0));
        fake.record("still-revoked", BOUND, RecordStatus::Revoked);
        let report = run(&reconciler(&fake, default_settings()), NOW).await;
        let handed: Vec<String> = fake.with(|w| w.stuck.iter().map(|e| e.certificate_id.clone()).collect());
        assert_eq!(handed, ["stolen"], "only the one ACTIVE again");
        assert_eq!(report.recorded_active, 1);
    }

    #[tokio::test]
    async fn an_active_certificate_without_a_record_is_handed_to_the_registrar_once() {
        let fake = fake();
        fake.cert("jitp", BOUND, CertificateStatus::Active, Some(0));
        fake.cert("known", BOUND, CertificateStatus::Active, Some(0));
        fake.record("known", BOUND, RecordStatus::Provisioned);
        let r = reconciler(&fake, default_settings());
        let report = run(&r, NOW).await;
        assert_eq!(report.recorded_active, 1);
        let record = fake
            .with(|w| w.records.get("jitp").cloned())
            .unwrap_or_else(|| panic!("not recorded"));
        // Handed to the registrar, as an event of its own.
        let handed: Vec<String> = fake.with(|w| w.stuck.iter().map(|e| e.certificate_id.clone()).collect());
        assert_eq!(handed, ["jitp"]);
        assert_eq!(record.status, RecordStatus::Provisioned);
        assert_eq!(record.thing_name.as_deref(), Some("sensor-1"));
        assert_eq!(record.ca_certificate_id, BOUND);
        let known = fake.with(|w| w.records.get("known").cloned());
        assert_eq!(known.map(|r| r.status), Some(RecordStatus::Provisioned));
        // The next run finds it recorded.
        assert_eq!(run(&r, NOW + 60).await.recorded_active, 0);
    }

    #[tokio::test]
    async fn a_record_whose_certificate_is_gone_is_marked_once() {
        let fake = fake();
        fake.record("gone", BOUND, RecordStatus::Provisioned);
        fake.record("rotated-away", BOUND, RecordStatus::Rotated);
        fake.record("retired-away", BOUND, RecordStatus::Retired);
        fake.record("other-ca", UNBOUND, RecordStatus::Provisioned);
        fake.cert("here", BOUND, CertificateStatus::Active, Some(0));
        fake.record("here", BOUND, RecordStatus::Provisioned);
        let r = reconciler(&fake, default_settings());
        let first = run(&r, NOW).await;
        assert_eq!(first.marked_missing, 1);
        assert_eq!(
            first.records_examined, 2,
            "gone and here; rotated, retired and other CAs' records are skipped"
        );
        let second = run(&r, NOW + 60).await;
        assert_eq!(second.marked_missing, 0);
        assert_eq!(second.records_examined, 1, "the marked record is not described again");
        assert_eq!(fake.with(|w| w.marks), 1);
        let gone = fake.with(|w| w.records.get("gone").cloned());
        assert_eq!(
            gone.and_then(|r| r.certificate_status),
            Some(NOT_FOUND_STATUS.to_string())
        );
        let retired = fake.with(|w| w.records.get("retired-away").cloned());
        assert_eq!(
            retired.map(|r| (r.status, r.certificate_status)),
            Some((RecordStatus::Retired, None)),
            "a RETIRED record is left as it is"
        );
    }

    #[tokio::test]
    async fn budget_and_cursors_resume_across_runs() {
        let fake = fake();
        for i in 0..5 {
            fake.cert(&format!("b{i}"), BOUND, CertificateStatus::PendingActivation, Some(0));
        }
        for i in 0..2 {
            fake.cert(&format!("d{i}"), DEFAULT, CertificateStatus::PendingActivation, Some(0));
        }
        let settings = ReconcilerSettings {
            max_examined_per_run: 3,
            page_size: 2,
            ..default_settings()
        };
        let r = reconciler(&fake, settings);
        let first = run(&r, NOW).await;
        assert_eq!((first.examined, first.stuck_processed), (3, 3));
        assert!(first.budget_exhausted);
        assert_eq!(
            fake.with(|w| w.cursors.get(&certificates_cursor(BOUND)).cloned())
                .as_deref(),
            Some("b2")
        );
        assert_eq!(
            fake.with(|w| w.cursors.get(CA_CURSOR).cloned()),
            Some(certificates_cursor(BOUND))
        );
        let second = run(&r, NOW).await;
        assert_eq!(second.examined, 3);
        assert!(second.budget_exhausted);
        // The third run starts at the default CA, where the second stopped.
        assert_eq!(
            fake.with(|w| w.cursors.get(CA_CURSOR).cloned()),
            Some(certificates_cursor(DEFAULT))
        );
        let third = run(&r, NOW).await;
        // d1, then around to the bound CA again, whose pass begins anew.
        assert_eq!(third.examined, 3);
        assert_eq!(
            third.stuck_processed, 1,
            "b0 and b1 are ACTIVE now: not processed again"
        );
        let stuck: Vec<String> = fake.with(|w| w.stuck.iter().map(|e| e.certificate_id.clone()).collect());
        assert_eq!(
            stuck,
            ["b0", "b1", "b2", "b3", "b4", "d0", "d1"],
            "each exactly once, in order"
        );
        assert!(
            fake.with(|w| !w.cursors.contains_key(&certificates_cursor(DEFAULT))),
            "a finished pass clears its cursor"
        );
        assert_eq!(
            fake.with(|w| w.cursors.get(CA_CURSOR).cloned()),
            Some(certificates_cursor(BOUND))
        );
        // Pages never larger than the budget left.
        assert!(fake.with(|w| w.listed.iter().all(|(_, _, limit)| *limit <= 2)));
    }

    #[tokio::test]
    async fn a_transient_failure_stops_the_run_and_the_page_is_retried() {
        let fake = fake();
        fake.cert("a", BOUND, CertificateStatus::PendingActivation, Some(0));
        fake.cert("b", BOUND, CertificateStatus::PendingActivation, Some(0));
        fake.with(|w| w.failing.insert("b".into()));
        let r = reconciler(&fake, default_settings());
        let report = run(&r, NOW).await;
        assert!(report.interrupted);
        assert_eq!((report.errors, report.stuck_processed), (1, 1));
        assert_eq!(
            fake.with(|w| w.cursors.get(CA_CURSOR).cloned()),
            Some(certificates_cursor(BOUND))
        );
        fake.with(|w| w.failing.clear());
        let report = run(&r, NOW).await;
        assert!(!report.interrupted);
        // "a" is ACTIVE and recorded now: not processed again.
        assert_eq!(report.stuck_processed, 1);
        assert_eq!(fake.with(|w| w.stuck.len()), 2);
    }

    #[tokio::test]
    async fn the_record_scan_is_bounded_per_run_and_resumes_in_its_phase() {
        let fake = fake();
        for i in 0..5 {
            fake.record(&format!("r{i}"), BOUND, RecordStatus::Provisioned);
        }
        let settings = ReconcilerSettings {
            max_record_pages_per_run: 1,
            page_size: 2,
            ..ReconcilerSettings::default()
        };
        let r = reconciler(&fake, settings);
        let first = run(&r, NOW).await;
        assert_eq!((first.marked_missing, first.record_pages), (2, 1));
        assert!(first.budget_exhausted);
        assert_eq!(
            fake.with(|w| w.cursors.get(CA_CURSOR).cloned()),
            Some(records_cursor(BOUND))
        );
        let listed = fake.with(|w| w.listed.len());
        let second = run(&r, NOW).await;
        assert_eq!(second.marked_missing, 2);
        assert_eq!(
            fake.with(|w| w.listed.len()),
            listed,
            "resumed in the record phase: not listed again"
        );
        let third = run(&r, NOW).await;
        assert_eq!(third.marked_missing, 1);
        assert!(!third.budget_exhausted);
        assert_eq!(fake.with(|w| w.marks), 5);
        assert!(
            fake.with(|w| w.cursors.is_empty()),
            "a finished pass clears every cursor"
        );
    }

    #[tokio::test]
    async fn every_bound_ca_has_its_expiry_recorded_and_active_ones_near_it_warn() {
        use crate::testing::ca::ca_pem;
        let fake = fake();
        let registered = |id: &str, status: CertificateStatus, days: i64| RegisteredCa {
            certificate_id: id.into(),
            status,
            pem: ca_pem(NOW, days),
            jitp: false,
        };
        fake.with(|w| {
            w.config.bind("ca-retired".into(), "sensors".into());
            w.config.bind("ca-missing".into(), "sensors".into());
            w.cas
                .insert(BOUND.into(), registered(BOUND, CertificateStatus::Active, 30));
            w.cas
                .insert(DEFAULT.into(), registered(DEFAULT, CertificateStatus::Active, 400));
            w.cas.insert(
                "ca-retired".into(),
                registered("ca-retired", CertificateStatus::Inactive, 5),
            );
        });
        let r = reconciler(&fake, default_settings());
        let report = r.ca_expiry(NOW).await.unwrap_or_else(|e| panic!("{e}"));
        let days: Vec<(&str, i64, bool)> = report
            .cas
            .iter()
            .map(|c| (c.ca_certificate_id.as_str(), c.days_to_expiry, c.expiring_soon))
            .collect();
        assert_eq!(
            days,
            [(BOUND, 30, true), (DEFAULT, 400, false), ("ca-retired", 5, false)]
        );
        assert_eq!(
            (report.expiring_soon(), report.errors),
            (1, 1),
            "ca-missing is counted as an error"
        );
        let recorded = fake.with(|w| w.ca_expiries.clone());
        let expected: BTreeMap<String, (i64, i64)> = report
            .cas
            .iter()
            .map(|c| (c.ca_certificate_id.clone(), (c.not_after, NOW)))
            .collect();
        assert_eq!(recorded, expected, "every readable bound CA's notAfter is recorded");
        let narrow = ReconcilerSettings {
            ca_expiry_warning_days: 30,
            ..default_settings()
        };
        let report = reconciler(&fake, narrow)
            .ca_expiry(NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.expiring_soon(), 0, "30 days left is not within 30 days");
    }

    #[tokio::test]
    async fn an_unbound_ca_is_not_listed() {
        let fake = fake();
        fake.cert("u", UNBOUND, CertificateStatus::PendingActivation, Some(0));
        fake.cert("b", BOUND, CertificateStatus::PendingActivation, Some(0));
        let r = reconciler(&fake, default_settings());
        let report = run(&r, NOW).await;
        let listed: std::collections::BTreeSet<String> =
            fake.with(|w| w.listed.iter().map(|(ca, _, _)| ca.clone()).collect());
        assert_eq!(
            listed,
            std::collections::BTreeSet::from([BOUND.to_string(), DEFAULT.to_string()])
        );
        assert_eq!(report.stuck_processed, 1);
        assert_eq!(report.cas, 2);
    }
}
