//! The scheduled rotator: follows up due rotations, then starts new ones.

use std::time::{Duration, Instant};

use futures::future::{try_join, try_join_all};
use futures::lock::Mutex;

use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::OnboardingConfig;
use crate::policy::profile::DeviceProfile;
use crate::policy::rotation::protocol::JobDocument;
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState};
use crate::policy::rotation::{RotationPolicy, Strategy};
use crate::ports::{
    DenyList, Inventory, Pacer, PortError, PortErrorKind, PortResult, RotationInventory, RotationIot, RotationObjects,
};
use crate::workflows::rotation::ops::rotation_allowed;
use crate::workflows::rotation::ops::{
    DAY, DUE_CURSOR, EXPIRING_CURSOR, OldCertificate, Ops, RotationError, Settled, Snapshot, credential_keys,
    load_snapshot, race,
};

// --- rotator ----------------------------------------------------------------

/// Rotator settings, read from the environment by the function.
#[derive(Debug, Clone)]
pub struct RotatorSettings {
    /// New rotations started per run, at most.
    pub max_new_per_run: u32,
    /// Due rotations followed up per run, at most.
    pub max_follow_ups_per_run: u32,
    /// Expiring certificates examined per run, at most (skipped ones included).
    pub max_examined_per_run: u32,
    /// Items asked for per page of the inventory's scans.
    pub page_size: usize,
    /// Minimum time between two `CreateJob` calls (AWS IoT allows 10 per
    /// second for the account; the default leaves half for others).
    pub create_job_interval: Duration,
    /// Minimum time between two follow-ups (each makes a few IoT calls).
    pub follow_up_interval: Duration,
    /// A default profile and the CA ids bound to it, from the environment.
    pub default_profile: Option<(DeviceProfile, Vec<String>)>,
    /// How often the rotator runs (its schedule). When set, a run's budget
    /// of new rotations (and of follow-ups) is not only `max_new_per_run`
    /// but at least what the certificates inside their window need so that
    /// each is started by its latest start ([`latest_start`]) if every run
    /// until then starts as many: a cohort expiring on one day is spread
    /// over the runs before it must be started, however large it is.
    pub run_interval: Option<Duration>,
    /// Wall time a run may spend (the function's timeout, less a margin):
    /// new rotations and follow-ups stop when it is used up, the saved
    /// cursors resume them, and no budget exceeds what fits in it at the
    /// paces above.
    pub max_run_time: Option<Duration>,
}

impl Default for RotatorSettings {
    fn default() -> Self {
        Self {
            max_new_per_run: 100,
            max_follow_ups_per_run: 200,
            max_examined_per_run: 2_000,
            page_size: 50,
            create_job_interval: Duration::from_millis(200),
            follow_up_interval: Duration::from_millis(50),
            default_profile: None,
            run_interval: None,
            max_run_time: None,
        }
    }
}

/// What one rotator run did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Expiring certificates looked at.
    pub examined: u32,
    /// New rotations started (first attempts).
    pub started: u32,
    /// A rotation exists for the certificate (open, failed or done), or
    /// another writer started one first.
    pub skipped_open: u32,
    /// Not yet inside its profile's window.
    pub skipped_not_due: u32,
    /// The record's profile does not exist (or is bound to no CA).
    pub skipped_no_profile: u32,
    /// The certificate is not `ACTIVE` in IoT, or its record names no thing.
    pub skipped_inactive: u32,
    /// The device is on the deny-list, or its CA is bound to no profile.
    pub skipped_denied: u32,
    /// Due rotations looked at.
    pub followed_up: u32,
    /// Interrupted starts resumed.
    pub resumed: u32,
    /// Open attempts past the first deadline whose job execution is still
    /// within its own timeline (queued for an offline device, or in
    /// progress since later): due again later.
    pub waiting: u32,
    /// Rotations retired (the device's confirmation found at the deadline, or
    /// an interrupted completion finished).
    pub completed: u32,
    /// Attempts failed (job ended badly or not done by the deadline).
    pub failed: u32,
    /// Next attempts started after a failure.
    pub retried: u32,
    /// Old certificates deleted after the grace period.
    pub deleted: u32,
    /// Rotations left failed for an operator: attempts used up, profile gone,
    /// old certificate no longer ACTIVE or no longer the thing's.
    pub gave_up: u32,
    /// Items that hit an error (logged; the next run tries again).
    pub errors: u32,
    /// A budget ran out with work left; the saved cursor resumes it.
    pub budget_exhausted: bool,
    /// The run stopped early on a transient error (throttling); the next run resumes.
    pub interrupted: bool,
    /// Certificates inside their window and not yet rotated, counted to
    /// size the budget (only with a run interval; open rotations included).
    pub in_window: u32,
    /// With a run interval: new rotations this run could start,
    /// `max_new_per_run` or more when the certificates in their window need
    /// more ([`RotatorSettings::run_interval`]). Zero with the fixed budget.
    pub budget: u32,
    /// The certificates in their window need more rotations per run than
    /// fit in a run at its pace: some will start after their latest start.
    /// Run more often, or raise the pace (within the account's quotas).
    pub behind: bool,
}

/// What a follow-up did.
enum FollowUp {
    Completed,
    Failed {
        gave_up: bool,
    },
    Retried,
    Deleted,
    GaveUp,
    Resumed,
    /// The job execution is still within its own timeline.
    Waiting,
    /// Not yet at its deadline (due early after an interrupted start), or
    /// nothing to do.
    Nothing,
}

impl From<Settled> for FollowUp {
    fn from(settled: Settled) -> Self {
        match settled {
            Settled::Completed(_) => Self::Completed,
            Settled::Failed(f) => Self::Failed {
                gave_up: f.due_at.is_none(),
            },
            Settled::Ended(_) => Self::Nothing,
        }
    }
}

/// Items asked for per page when counting the certificates in their window.
const COUNT_PAGE: usize = 500;

/// With a derived budget, certificates examined per run at most, per new
/// rotation the run may start (the fixed settings examine 20 per start).
const EXAMINED_PER_START: u32 = 20;

/// What one run may do.
#[derive(Debug, Clone, Copy)]
struct Budget {
    new: u32,
    follow_ups: u32,
    /// Expiring certificates examined at most (skipped ones included).
    examined: u32,
}

/// One run: when it began, its budget.
struct Run {
    started: Instant,
    budget: Budget,
}

/// The latest time a rotation of a certificate expiring at `not_after` can
/// start and still have room for everything `policy` allows it: a device
/// offline for the whole queued timeout, every retry after its backoff, and
/// every attempt's job to its timeout. Never before the certificate enters
/// its window (a window shorter than that reserve means: start at once).
pub fn latest_start(policy: &RotationPolicy, not_after: i64) -> i64 {
    let backoffs: i64 = (1..policy.max_attempts)
        .map(|attempt| i64::from(policy.retry_backoff_hours) * 3_600 * (1i64 << (attempt - 1).min(16)))
        .sum();
    let jobs = i64::from(policy.max_attempts) * (policy.job_deadline(0));
    let reserve = i64::from(policy.queued_timeout_days) * DAY + backoffs + jobs;
    let opens = not_after - i64::from(policy.window_days) * DAY;
    (not_after - reserve).max(opens)
}

/// The fewest rotations each run must start, runs `interval` apart from
/// `now` on, so that every certificate is started by its latest start,
/// earliest first: for the k certificates whose latest start comes first,
/// k divided by the runs until the k-th one's latest start (at least this
/// run). Zero when there are none.
pub fn needed_per_run(mut latest_starts: Vec<i64>, now: i64, interval: Duration) -> u32 {
    latest_starts.sort_unstable();
    let interval = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX).max(1);
    let mut needed = 0u64;
    for (i, latest) in latest_starts.iter().enumerate() {
        let runs = if *latest <= now {
            1
        } else {
            (latest - now) / interval + 1
        };
        let k = i as u64 + 1;
        needed = needed.max(k.div_ceil(runs as u64));
    }
    u32::try_from(needed).unwrap_or(u32::MAX)
}

/// What the rotator did with one expiring certificate.
enum Candidate {
    Started,
    Denied,
    Open,
    NotDue,
    NoProfile,
    Inactive,
}

/// The scheduled rotator, generic over its ports and its pacer.
pub struct Rotator<R, T, O, I, P> {
    rotations: R,
    iot: T,
    objects: O,
    inventory: I,
    pacer: P,
    settings: RotatorSettings,
    last_create_job: Mutex<Option<Instant>>,
    last_follow_up: Mutex<Option<Instant>>,
}

impl<R, T, O, I, P> Rotator<R, T, O, I, P>
where
    R: RotationInventory,
    T: RotationIot,
    O: RotationObjects,
    I: Inventory + DenyList,
    P: Pacer,
{
    pub fn new(rotations: R, iot: T, objects: O, inventory: I, pacer: P, settings: RotatorSettings) -> Self {
        Self {
            rotations,
            iot,
            objects,
            inventory,
            pacer,
            settings,
            last_create_job: Mutex::new(None),
            last_follow_up: Mutex::new(None),
        }
    }

    pub(super) fn ops(&self) -> Ops<'_, R, T, O, I> {
        Ops {
            rotations: &self.rotations,
            iot: &self.iot,
            objects: &self.objects,
            inventory: &self.inventory,
        }
    }

    /// One run as of `now` (Unix seconds, the scheduled event's time): due
    /// rotations first, then new ones, each within its budget and from its
    /// saved cursor. An item's error is logged and counted, and the run goes
    /// on; a transient one (throttling) ends the run.
    ///
    /// # Errors
    /// [`RotationError`] when the configuration or a cursor cannot be read or
    /// saved, or a scan fails other than transiently.
    pub async fn run(&self, now: i64) -> Result<RunReport, RotationError> {
        let started = self.pacer.now();
        let snapshot = load_snapshot(&self.inventory, self.settings.default_profile.as_ref()).await?;
        let mut report = RunReport::default();
        let budget = self.budget(&snapshot, now, &mut report).await?;
        let run = Run { started, budget };
        if !report.interrupted {
            self.follow_ups(&snapshot, now, &run, &mut report).await?;
        }
        if !report.interrupted {
            self.new_rotations(&snapshot, now, &run, &mut report).await?;
        }
        tracing::info!(?report, "rotator run");
        Ok(report)
    }

    /// The run's budget of new rotations and of follow-ups: the settings',
    /// or with a run interval at least what the certificates in their
    /// window need ([`needed_per_run`]), capped by what fits in the run's
    /// time at the paces (follow-ups: what fits, whatever the settings).
    async fn budget(&self, snapshot: &Snapshot, now: i64, report: &mut RunReport) -> Result<Budget, RotationError> {
        let fixed = Budget {
            new: self.settings.max_new_per_run,
            follow_ups: self.settings.max_follow_ups_per_run,
            examined: self.settings.max_examined_per_run,
        };
        let Some(interval) = self.settings.run_interval else {
            return Ok(fixed);
        };
        let latest = match self.latest_starts(snapshot, now).await {
            Ok(latest) => latest,
            Err(e) if e.is_transient() => {
                interrupt(report, &e);
                return Ok(fixed);
            }
            Err(e) => return Err(e),
        };
        report.in_window = u32::try_from(latest.len()).unwrap_or(u32::MAX);
        let needed = needed_per_run(latest, now, interval);
        let mut budget = Budget {
            new: fixed.new.max(needed),
            follow_ups: fixed.follow_ups.max(needed),
            examined: fixed.examined,
        };
        if let Some(max) = self.settings.max_run_time {
            // Starts and follow-ups share the run, each paced: as many pairs
            // as fit. Follow-ups (deadlines, retries, deletions) are then
            // bounded by the time alone, so that a cohort's deletions keep
            // up with its starts.
            let per_pair = self.settings.create_job_interval + self.settings.follow_up_interval;
            let fits = u32::try_from(max.as_nanos() / per_pair.as_nanos().max(1))
                .unwrap_or(u32::MAX)
                .max(1);
            budget.new = budget.new.min(fits);
            budget.follow_ups = fits;
        }
        if needed > budget.new {
            report.behind = true;
            tracing::warn!(
                needed,
                budget = budget.new,
                in_window = report.in_window,
                "the certificates in their window need more rotations per run than fit: run more often or raise the pace"
            );
        }
        budget.examined = budget.examined.max(budget.new.saturating_mul(EXAMINED_PER_START));
        report.budget = budget.new;
        Ok(budget)
    }

    /// The latest start of every certificate inside its profile's window,
    /// read from the expiry index (from its beginning, whatever the saved
    /// cursor).
    async fn latest_starts(&self, snapshot: &Snapshot, now: i64) -> Result<Vec<i64>, RotationError> {
        let Some(window_days) = snapshot.profiles.values().map(|p| p.rotation.window_days).max() else {
            return Ok(Vec::new());
        };
        let until = now + i64::from(window_days) * DAY;
        let mut latest = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.rotations.expiring(until, cursor.as_deref(), COUNT_PAGE).await?;
            for record in &page.items {
                let policy = record
                    .profile
                    .as_ref()
                    .and_then(|name| snapshot.profiles.get(name))
                    .map(|p| p.rotation.clone());
                if let (Some(policy), Some(not_after)) = (policy, record.not_after)
                    && record.thing_name.is_some()
                    && policy.is_due(not_after, now)
                {
                    latest.push(latest_start(&policy, not_after));
                }
            }
            cursor = page.cursor;
            if cursor.is_none() {
                return Ok(latest);
            }
        }
    }

    fn out_of_time(&self, run: &Run) -> bool {
        self.settings
            .max_run_time
            .is_some_and(|max| self.pacer.now().saturating_duration_since(run.started) >= max)
    }

    async fn follow_ups(
        &self,
        snapshot: &Snapshot,
        now: i64,
        run: &Run,
        report: &mut RunReport,
    ) -> Result<(), RotationError> {
        let mut cursor = self.rotations.cursor(DUE_CURSOR).await?;
        loop {
            let remaining = run.budget.follow_ups.saturating_sub(report.followed_up) as usize;
            if remaining == 0 || self.out_of_time(run) {
                report.budget_exhausted = true;
                return Ok(());
            }
            let limit = self.settings.page_size.clamp(1, remaining);
            let page = match self.rotations.due_rotations(now, cursor.as_deref(), limit).await {
                Ok(page) => page,
                Err(e) if e.is_transient() => {
                    interrupt(report, &e.into());
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            for r in page.items {
                report.followed_up += 1;
                self.pace(&self.last_follow_up, self.settings.follow_up_interval).await;
                let (old, attempt) = (r.old_certificate_id.clone(), r.attempt);
                match self.follow_up(r, snapshot, now).await {
                    Ok(FollowUp::Completed) => report.completed += 1,
                    Ok(FollowUp::Failed { gave_up }) => {
                        report.failed += 1;
                        report.gave_up += u32::from(gave_up);
                    }
                    Ok(FollowUp::Retried) => report.retried += 1,
                    Ok(FollowUp::Deleted) => report.deleted += 1,
                    Ok(FollowUp::GaveUp) => report.gave_up += 1,
                    Ok(FollowUp::Resumed) => report.resumed += 1,
                    Ok(FollowUp::Waiting) => report.waiting += 1,
                    Ok(FollowUp::Nothing) => {}
                    Err(e) => {
                        item_error(report, &e, &old, attempt);
                        if e.is_transient() {
                            // The saved cursor is still this page's start.
                            return Ok(());
                        }
                    }
                }
            }
            cursor = page.cursor;
            self.rotations.save_cursor(DUE_CURSOR, cursor.as_deref()).await?;
            if cursor.is_none() {
                return Ok(());
            }
        }
    }

    async fn new_rotations(
        &self,
        snapshot: &Snapshot,
        now: i64,
        run: &Run,
        report: &mut RunReport,
    ) -> Result<(), RotationError> {
        let Some(window_days) = snapshot.profiles.values().map(|p| p.rotation.window_days).max() else {
            return Ok(());
        };
        let until = now + i64::from(window_days) * DAY;
        let mut cursor = self.rotations.cursor(EXPIRING_CURSOR).await?;
        loop {
            // Pages no larger than what may still start, so a page never
            // holds a certificate the budget cannot take: the cursor after it
            // is exactly where the next run goes on.
            let remaining = run
                .budget
                .new
                .saturating_sub(report.started)
                .min(run.budget.examined.saturating_sub(report.examined)) as usize;
            if remaining == 0 || self.out_of_time(run) {
                report.budget_exhausted = true;
                return Ok(());
            }
            let limit = self.settings.page_size.clamp(1, remaining);
            let page = match self.rotations.expiring(until, cursor.as_deref(), limit).await {
                Ok(page) => page,
                Err(e) if e.is_transient() => {
                    interrupt(report, &e.into());
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            for record in page.items {
                report.examined += 1;
                match self.candidate(&record, snapshot, now).await {
                    Ok(Candidate::Started) => report.started += 1,
                    Ok(Candidate::Denied) => report.skipped_denied += 1,
                    Ok(Candidate::Open) => report.skipped_open += 1,
                    Ok(Candidate::NotDue) => report.skipped_not_due += 1,
                    Ok(Candidate::NoProfile) => report.skipped_no_profile += 1,
                    Ok(Candidate::Inactive) => report.skipped_inactive += 1,
                    Err(e) => {
                        item_error(report, &e, &record.certificate_id, 1);
                        if e.is_transient() {
                            return Ok(());
                        }
                    }
                }
            }
            cursor = page.cursor;
            self.rotations.save_cursor(EXPIRING_CURSOR, cursor.as_deref()).await?;
            if cursor.is_none() {
                return Ok(());
            }
        }
    }

    /// One expiring certificate: start its rotation if it is due and has none.
    async fn candidate(
        &self,
        record: &CertificateRecord,
        snapshot: &Snapshot,
        now: i64,
    ) -> Result<Candidate, RotationError> {
        let Some((profile_name, profile)) = record
            .profile
            .as_ref()
            .and_then(|name| snapshot.profiles.get(name).map(|p| (name, p)))
        else {
            return Ok(Candidate::NoProfile);
        };
        let Some(thing_name) = record.thing_name.as_deref() else {
            return Ok(Candidate::Inactive);
        };
        let policy = profile.rotation.clone();
        if !record.not_after.is_some_and(|not_after| policy.is_due(not_after, now)) {
            return Ok(Candidate::NotDue);
        }
        // Open and failed rotations have their own path (follow-ups, retries);
        // a retired one means this certificate was replaced already.
        if self.rotations.rotation(&record.certificate_id).await?.is_some() {
            return Ok(Candidate::Open);
        }
        // A denied device, or one whose CA is no longer trusted, gets no
        // new certificate: no attempt starts.
        if let Err(rejection) = rotation_allowed(&snapshot.config, &self.inventory, record).await? {
            tracing::warn!(
                thing = thing_name,
                certificate = %record.certificate_id,
                reason = rejection.reason.code(),
                detail = %rejection.detail,
                "rotation not started"
            );
            return Ok(Candidate::Denied);
        }
        let Some(cert) = self
            .iot
            .certificate(&record.certificate_id)
            .await?
            .filter(|c| c.status == CertificateStatus::Active)
        else {
            return Ok(Candidate::Inactive);
        };
        // Recorded first: whatever happens next, the rotation is known.
        let r = Rotation::requested(record, thing_name, profile_name, &policy, 1, now).starting();
        if !self.rotations.put_rotation(&r, None).await? {
            return Ok(Candidate::Open);
        }
        let old = OldCertificate {
            record: record.clone(),
            cert,
        };
        self.start(r, &policy, Some(old), now).await?;
        Ok(Candidate::Started)
    }

    /// Puts a starting attempt's job out; for server-keygen, makes the
    /// credentials first. Every step is idempotent, so an interrupted start
    /// is resumed by running this again on the stored rotation.
    ///
    /// - CSR: `CreateJob`, then the deadline recorded.
    /// - Server-keygen: keys and certificate made, both objects stored, the
    ///   new certificate recorded on the rotation (still `requested`); then
    ///   attached, the old certificate's policies attached, its record
    ///   written, `ACTIVE`; then `CreateJob`; then `issued` recorded with the
    ///   deadline. A certificate made but not recorded (interrupted in
    ///   between) stays inactive, unattached and unused.
    async fn start(
        &self,
        r: Rotation,
        policy: &RotationPolicy,
        old: Option<OldCertificate>,
        now: i64,
    ) -> Result<(), RotationError> {
        let ops = self.ops();
        if r.strategy == Strategy::Csr {
            self.create_job(&r, &JobDocument::csr(&r), policy).await?;
            let next = r.started(policy, now);
            // Lost: the device answered already (issued) or the attempt
            // ended; either way the job is out.
            self.rotations.put_rotation(&next, Some((r.state, r.attempt))).await?;
            return Ok(());
        }
        let r = match r.new_certificate_id.as_deref() {
            Some(_) => r,
            None => {
                let issued = self.iot.keys_and_certificate().await?;
                let (certificate_key, private_key_key) = credential_keys(&r.thing_name, &issued.certificate_id);
                let private_key = issued.private_key_pem.as_deref().ok_or_else(|| {
                    PortError::new(
                        "CreateKeysAndCertificate",
                        PortErrorKind::Invalid,
                        "no private key returned",
                    )
                })?;
                try_join(
                    self.objects
                        .put_object(&certificate_key, issued.certificate_pem.as_bytes()),
                    self.objects.put_object(&private_key_key, private_key.as_bytes()),
                )
                .await?;
                let next = r.with_new_certificate(&issued.certificate_id, vec![certificate_key, private_key_key]);
                // As in the issuer: a failed write may have been applied, so
                // an unrecorded certificate is left inactive and unattached
                // (its objects expire with the bucket's lifecycle rule).
                if !self.rotations.put_rotation(&next, Some((r.state, r.attempt))).await? {
                    // Another writer moved the attempt on: these credentials
                    // are never used (best effort; they are inactive anyway).
                    let discarded = try_join(
                        self.iot.set_status(&issued.certificate_id, &CertificateStatus::Revoked),
                        try_join_all(next.object_keys.iter().map(|key| self.objects.delete_object(key))),
                    )
                    .await;
                    if let Err(e) = discarded {
                        tracing::warn!(error = %e, certificate = %issued.certificate_id, "unused certificate not discarded");
                    }
                    return Err(race(&r));
                }
                next
            }
        };
        let new_id = r.new_certificate_id.clone().unwrap_or_default();
        let new = self
            .iot
            .certificate(&new_id)
            .await?
            .ok_or_else(|| RotationError::CertificateMissing {
                certificate_id: new_id.clone(),
                thing_name: r.thing_name.clone(),
            })?;
        if new.status == CertificateStatus::Revoked {
            // The attempt is being failed: the fail path owns the certificate.
            return Err(race(&r));
        }
        let old = match old {
            Some(old) => old,
            None => ops.old_certificate(&r).await?,
        };
        ops.install(&r, &new, &old, now).await?;
        let (certificate_key, private_key_key) = credential_keys(&r.thing_name, &new_id);
        let document =
            JobDocument::server_keygen(&r, &new_id, self.objects.bucket(), &certificate_key, &private_key_key);
        self.create_job(&r, &document, policy).await?;
        let next = r.issued(&new_id, r.object_keys.clone(), now)?.started(policy, now);
        if !self
            .rotations
            .put_rotation(&next, Some((RotationState::Requested, r.attempt)))
            .await?
        {
            // Failed while this run activated the certificate: make sure it
            // stays revoked.
            ops.revoke_if_superseded(&r, &new_id).await?;
        }
        Ok(())
    }

    async fn create_job(&self, r: &Rotation, document: &JobDocument, policy: &RotationPolicy) -> PortResult<()> {
        self.pace(&self.last_create_job, self.settings.create_job_interval)
            .await;
        self.iot
            .create_job(&r.job_id, &r.thing_name, document, policy.job_timeout_minutes)
            .await
    }

    async fn pace(&self, last: &Mutex<Option<Instant>>, interval: Duration) {
        let mut last = last.lock().await;
        if let Some(at) = *last {
            let elapsed = self.pacer.now().saturating_duration_since(at);
            if elapsed < interval {
                self.pacer.sleep(interval - elapsed).await;
            }
        }
        *last = Some(self.pacer.now());
    }

    /// One due rotation.
    async fn follow_up(&self, listed: Rotation, snapshot: &Snapshot, now: i64) -> Result<FollowUp, RotationError> {
        let ops = self.ops();
        // The scan may lag behind the table: act on the rotation as it is now.
        let Some(r) = self
            .rotations
            .rotation(&listed.old_certificate_id)
            .await?
            .filter(|r| r.due_at.is_some_and(|due| due <= now))
        else {
            return Ok(FollowUp::Nothing);
        };
        let profile = snapshot.profiles.get(&r.profile);
        let policy = profile.map(|p| p.rotation.clone()).unwrap_or_default();
        match r.state {
            RotationState::Requested if r.is_starting() => {
                if profile.is_none() {
                    // Not put out under a profile that is gone.
                    let detail = format!("profile {:?} no longer exists", r.profile);
                    return Ok(ops
                        .fail(r, FailureReason::JobCanceled, &detail, &policy, now)
                        .await?
                        .into());
                }
                let old = ops.old_certificate(&r).await?;
                if let Err(rejection) = rotation_allowed(&snapshot.config, &self.inventory, &old.record).await? {
                    let detail = format!("{}: {}", rejection.reason.code(), rejection.detail);
                    return Ok(ops.fail(r, FailureReason::Denied, &detail, &policy, now).await?.into());
                }
                self.start(r, &policy, Some(old), now).await?;
                Ok(FollowUp::Resumed)
            }
            RotationState::Requested | RotationState::Issued | RotationState::Delivered => {
                // Due early only when a start was interrupted after the
                // device had answered; wait for the real deadline.
                let deadline = r
                    .due_at
                    .filter(|due| *due != r.requested_at)
                    .unwrap_or_else(|| policy.job_deadline(r.requested_at));
                if now < deadline {
                    let next = r.started(&policy, r.requested_at);
                    self.rotations.put_rotation(&next, Some((r.state, r.attempt))).await?;
                    return Ok(FollowUp::Nothing);
                }
                self.at_deadline(r, &policy, now).await
            }
            RotationState::Confirmed => Ok(ops.complete(r, &policy, now).await?.into()),
            // A failure claimed but not cleaned up (interrupted): finish it.
            RotationState::Failed if r.is_failing() => {
                let (reason, detail) = (r.reason.unwrap_or(FailureReason::JobFailed), r.detail.clone());
                Ok(ops
                    .fail(r, reason, detail.as_deref().unwrap_or_default(), &policy, now)
                    .await?
                    .into())
            }
            RotationState::Failed => self.retry(r, profile, &snapshot.config, now).await,
            RotationState::Retired if r.old_deleted_at.is_none() => self.delete_old(r, now).await,
            RotationState::Retired => Ok(FollowUp::Nothing),
        }
    }

    /// An open attempt past its first deadline: what IoT says of the job
    /// execution decides, on the execution's own timeline
    /// ([`RotationPolicy::execution_deadline`]). An execution still queued
    /// (the device offline, its old certificate valid) or in progress since
    /// later waits; one past its own deadline has its job canceled first,
    /// so that IoT's answer is final, and is read again: a device that
    /// succeeded just in time is completed, not failed.
    async fn at_deadline(&self, r: Rotation, policy: &RotationPolicy, now: i64) -> Result<FollowUp, RotationError> {
        let ops = self.ops();
        let mut execution = self.iot.job_execution(&r.job_id, &r.thing_name).await?;
        if let Some(open) = execution
            .as_ref()
            .filter(|e| matches!(e.status.as_str(), "QUEUED" | "IN_PROGRESS"))
        {
            let deadline = policy.execution_deadline(&r, open);
            if now < deadline {
                // A queued execution is looked at daily meanwhile, in case
                // its events are lost.
                let due = if open.status == "QUEUED" {
                    deadline.min(now + DAY)
                } else {
                    deadline
                };
                let mut next = r.clone();
                next.due_at = Some(due);
                self.rotations.put_rotation(&next, Some((r.state, r.attempt))).await?;
                return Ok(FollowUp::Waiting);
            }
            let overdue = format!("job execution still {} past its deadline", open.status);
            self.iot.cancel_job(&r.job_id).await?;
            execution = self.iot.job_execution(&r.job_id, &r.thing_name).await?;
            if execution.as_ref().is_none_or(|e| e.status != "SUCCEEDED") {
                return Ok(ops
                    .fail(r, FailureReason::JobTimedOut, &overdue, policy, now)
                    .await?
                    .into());
            }
        }
        Ok(ops.settle(r, execution, policy, now).await?.into())
    }

    /// A failed attempt whose retry time came: the next attempt, if the old
    /// certificate is still the thing's and `ACTIVE`; else given up.
    async fn retry(
        &self,
        r: Rotation,
        profile: Option<&DeviceProfile>,
        config: &OnboardingConfig,
        now: i64,
    ) -> Result<FollowUp, RotationError> {
        let Some(profile) = profile else {
            return self.give_up(r, "the profile no longer exists").await;
        };
        let policy = profile.rotation.clone();
        if r.attempt >= policy.max_attempts {
            return self.give_up(r, "attempts used up").await;
        }
        let (record, cert) = try_join(
            self.inventory.certificate_record(&r.old_certificate_id),
            self.iot.certificate(&r.old_certificate_id),
        )
        .await?;
        let Some(record) = record.filter(|rec| {
            rec.status == RecordStatus::Provisioned && rec.thing_name.as_deref() == Some(r.thing_name.as_str())
        }) else {
            return self.give_up(r, "the old certificate is no longer the thing's").await;
        };
        let Some(cert) = cert.filter(|c| c.status == CertificateStatus::Active) else {
            return self.give_up(r, "the old certificate is not ACTIVE").await;
        };
        if let Err(rejection) = rotation_allowed(config, &self.inventory, &record).await? {
            let why = format!("{}: {}", rejection.reason.code(), rejection.detail);
            return self.give_up(r, &why).await;
        }
        let next = r.retried(&policy, now)?.starting();
        if !self
            .rotations
            .put_rotation(&next, Some((RotationState::Failed, r.attempt)))
            .await?
        {
            return Ok(FollowUp::Nothing);
        }
        tracing::info!(thing = %next.thing_name, attempt = next.attempt, job = %next.job_id, "rotation retried");
        self.start(next, &policy, Some(OldCertificate { record, cert }), now)
            .await?;
        Ok(FollowUp::Retried)
    }

    async fn give_up(&self, r: Rotation, why: &str) -> Result<FollowUp, RotationError> {
        let next = r.given_up(why);
        if self
            .rotations
            .put_rotation(&next, Some((RotationState::Failed, r.attempt)))
            .await?
        {
            tracing::warn!(thing = %r.thing_name, old_certificate = %r.old_certificate_id, why, "rotation given up");
            return Ok(FollowUp::GaveUp);
        }
        Ok(FollowUp::Nothing)
    }

    /// The grace period is over: the old certificate is deleted (it must not
    /// be `ACTIVE`; it is detached again first, as deletion requires).
    async fn delete_old(&self, r: Rotation, now: i64) -> Result<FollowUp, RotationError> {
        let old = r.old_certificate_id.as_str();
        if let Some(cert) = self.iot.certificate(old).await? {
            if !matches!(cert.status, CertificateStatus::Inactive | CertificateStatus::Revoked) {
                return Err(RotationError::OldCertificateInUse {
                    certificate_id: old.to_string(),
                    status: cert.status.as_str().to_string(),
                });
            }
            self.ops().detach_all(&r.thing_name, &cert.certificate_arn).await?;
            self.iot.delete_certificate(old).await?;
        }
        let next = r.old_deleted(now);
        if self
            .rotations
            .put_rotation(&next, Some((RotationState::Retired, r.attempt)))
            .await?
        {
            return Ok(FollowUp::Deleted);
        }
        Ok(FollowUp::Nothing)
    }
}

fn interrupt(report: &mut RunReport, error: &RotationError) {
    report.errors += 1;
    report.interrupted = true;
    tracing::warn!(error = %error, kind = error.kind(), "rotator run interrupted");
}

fn item_error(report: &mut RunReport, error: &RotationError, old_certificate_id: &str, attempt: u32) {
    report.errors += 1;
    report.interrupted |= error.is_transient();
    if error.is_transient() {
        tracing::warn!(error = %error, kind = error.kind(), old_certificate = old_certificate_id, attempt, "rotation step failed; run stopped");
    } else {
        tracing::error!(error = %error, kind = error.kind(), old_certificate = old_certificate_id, attempt, "rotation step failed");
    }
}
