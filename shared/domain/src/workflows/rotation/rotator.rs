//! The rotation workflows, generic over the rotation ports:
//!
//! - [`Rotator`]: one scheduled run. Follows up the rotations that are due
//!   (job deadlines, retries, deletions after the grace period), then starts
//!   rotations of certificates entering their profile's window. Bounded work,
//!   resumed from saved cursors, `CreateJob` paced.
//! - [`CsrIssuer`]: answers the CSR a device publishes on
//!   `devices/<thing>/rotation/csr` with a new certificate (or a refusal).
//! - [`Completer`]: acts on a job-execution event: a confirmed new certificate
//!   retires the old one; a failed, rejected, timed-out or canceled job fails
//!   the attempt.
//!
//! The "complete" and "fail" procedures are shared: the rotator runs them too
//! when it finds a job ended past its deadline (events can be lost).
//!
//! # Convergence
//!
//! Every step is idempotent or guarded by a conditional write of the rotation
//! (state and attempt), so a run interrupted between any two steps and run
//! again reaches the same end state:
//!
//! - Records are written *before* the effects they announce become visible:
//!   an attempt is `requested` before its job exists; a new certificate is
//!   recorded on the rotation before it is attached or made `ACTIVE`; the
//!   failure of an attempt is recorded only *after* its new certificate is
//!   revoked and detached, so `failed` implies clean.
//! - An attempt whose job is not out yet is "starting" (due at once, see
//!   [`Rotation::starting`]): the next run finds it among the due rotations and
//!   resumes the start.
//! - A writer that loses a conditional write reads the rotation again and
//!   continues from what it finds; one that finds the attempt failed under it
//!   revokes the certificate it was activating (whichever of the two writers
//!   comes second leaves the certificate revoked).
//! - Retiring moves the thing-name claim to the new certificate *before* the
//!   old one becomes `INACTIVE`: the registrar treats a claim held by an
//!   inactive certificate as free, so the name is never up for grabs.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{try_join, try_join_all};
use futures::lock::Mutex;
use serde::{Deserialize, Deserializer};

use crate::checks::csr::check_csr;
use crate::model::certificate::{Certificate, CertificateRequest};
use crate::model::reason::Rejection;
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::OnboardingConfig;
use crate::policy::profile::DeviceProfile;
use crate::policy::rotation::protocol::{
    CONFIRMATION_FIELD, CsrAnswer, CsrMessage, JobDocument, JobExecution, answer_topic,
};
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState, TransitionError};
use crate::policy::rotation::{RotationPolicy, Strategy};
use crate::ports::{
    DenyList, Inventory, NameClaim, Pacer, PortError, PortErrorKind, PortResult, RegisteredCertificate,
    RotationInventory, RotationIot, RotationObjects,
};
use crate::workflows::config_cache::ConfigCache;
use crate::workflows::rotation::ops::rotation_allowed;

/// The rotator's cursor over certificates entering their rotation window.
pub const EXPIRING_CURSOR: &str = "expiring";
/// The rotator's cursor over due rotations.
pub const DUE_CURSOR: &str = "due";

const DAY: i64 = 86_400;
/// Conditional writes tried before a workflow gives the event back (transient).
const MAX_TRIES: usize = 4;

/// The object keys of a server-keygen rotation's credentials:
/// `rotation/<thing>/<newCertificateId>/certificate.pem` and `…/private.key`.
pub fn credential_keys(thing_name: &str, new_certificate_id: &str) -> (String, String) {
    let base = format!("rotation/{thing_name}/{new_certificate_id}");
    (format!("{base}/certificate.pem"), format!("{base}/private.key"))
}

// --- errors -----------------------------------------------------------------

/// Why a rotation step could not be done now. Transient errors are retried
/// (the event redelivered, the next run); the others need an operator.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Port(#[from] PortError),
    /// The stored rotation does not allow the step (a bug or a manual edit).
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("rotation of {old_certificate_id} kept changing while being written; retrying")]
    Race { old_certificate_id: String },
    #[error("profile {profile:?} of thing {thing_name} does not exist or is invalid")]
    ProfileMissing { profile: String, thing_name: String },
    #[error("certificate {certificate_id} of the rotation of thing {thing_name} does not exist in IoT")]
    CertificateMissing { certificate_id: String, thing_name: String },
    #[error("certificate {certificate_id} has no inventory record")]
    RecordMissing { certificate_id: String },
    #[error("certificate {certificate_id} does not parse: {problem}")]
    CertificateUnreadable { certificate_id: String, problem: String },
    #[error("rotation of {old_certificate_id} is {state} without a new certificate")]
    NewCertificateUnknown {
        old_certificate_id: String,
        state: &'static str,
    },
    #[error("thing name {thing_name} is claimed by {holder}, neither certificate of its rotation")]
    ClaimHeldElsewhere { thing_name: String, holder: String },
    #[error("old certificate {certificate_id} is {status}, not INACTIVE: it is not deleted")]
    OldCertificateInUse { certificate_id: String, status: String },
    /// IoT does not show the new certificate usable (`ACTIVE`, attached to
    /// the thing, carrying the policies): the old one is not retired.
    #[error(
        "new certificate {certificate_id} of thing {thing_name} is not usable ({problem}): the old one stays ACTIVE"
    )]
    NewCertificateNotReady {
        certificate_id: String,
        thing_name: String,
        problem: String,
    },
}

impl RotationError {
    /// Throttling, service faults and lost races: retry later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Port(e) => e.is_transient(),
            Self::Race { .. } => true,
            _ => false,
        }
    }

    /// A short stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Port(e) => e.kind.code(),
            Self::Transition(_) => "transition",
            Self::Race { .. } => "race",
            Self::ProfileMissing { .. } => "profile_missing",
            Self::CertificateMissing { .. } => "certificate_missing",
            Self::RecordMissing { .. } => "record_missing",
            Self::CertificateUnreadable { .. } => "certificate_unreadable",
            Self::NewCertificateUnknown { .. } => "new_certificate_unknown",
            Self::ClaimHeldElsewhere { .. } => "claim_held_elsewhere",
            Self::OldCertificateInUse { .. } => "old_certificate_in_use",
            Self::NewCertificateNotReady { .. } => "new_certificate_not_ready",
        }
    }
}

fn race(r: &Rotation) -> RotationError {
    RotationError::Race {
        old_certificate_id: r.old_certificate_id.clone(),
    }
}

// --- profiles ---------------------------------------------------------------

type Profiles = HashMap<String, DeviceProfile>;

/// The configuration a workflow decides on: the valid profiles by name,
/// and the CA bindings and deny-list ([`rotation_allowed`]).
struct Snapshot {
    profiles: Profiles,
    config: Arc<OnboardingConfig>,
}

/// Valid profiles by name, the environment's default among them.
fn profiles_of(config: &OnboardingConfig, default_profile: Option<&(DeviceProfile, Vec<String>)>) -> Profiles {
    // Every valid profile counts, bound or not: unbinding a CA stops
    // onboarding, not the rotation of devices already onboarded.
    let mut profiles: Profiles = config
        .valid_profiles()
        .map(|profile| (profile.name.clone(), profile.clone()))
        .collect();
    if let Some((profile, _)) = default_profile {
        profiles.entry(profile.name.clone()).or_insert_with(|| profile.clone());
    }
    profiles
}

async fn load_snapshot<I: Inventory>(
    inventory: &I,
    default_profile: Option<&(DeviceProfile, Vec<String>)>,
) -> Result<Snapshot, RotationError> {
    let mut config = inventory.load_config().await?;
    if let Some((profile, cas)) = default_profile {
        config.merge_default(profile.clone(), cas);
    }
    Ok(Snapshot {
        profiles: profiles_of(&config, default_profile),
        config: Arc::new(config),
    })
}

/// Profiles from the configuration cached in the container for a short TTL
/// (the event handlers).
struct ProfileCache {
    config: ConfigCache,
    default_profile: Option<(DeviceProfile, Vec<String>)>,
}

impl ProfileCache {
    fn new(ttl: Duration, default_profile: Option<(DeviceProfile, Vec<String>)>) -> Self {
        Self {
            config: ConfigCache::new(ttl, default_profile.clone()),
            default_profile,
        }
    }

    async fn get<I: Inventory>(&self, inventory: &I) -> Result<Profiles, RotationError> {
        Ok(self.snapshot(inventory).await?.profiles)
    }

    async fn snapshot<I: Inventory>(&self, inventory: &I) -> Result<Snapshot, RotationError> {
        let (config, _) = self.config.get(false, || inventory.load_config()).await?;
        Ok(Snapshot {
            profiles: profiles_of(&config, self.default_profile.as_ref()),
            config,
        })
    }

    /// The profile's policy; the default policy when the profile is gone (an
    /// attempt under way is still completed or failed).
    async fn policy<I: Inventory>(&self, inventory: &I, r: &Rotation) -> Result<RotationPolicy, RotationError> {
        let profiles = self.get(inventory).await?;
        Ok(match profiles.get(&r.profile) {
            Some(profile) => profile.rotation,
            None => {
                tracing::warn!(
                    profile = %r.profile,
                    thing = %r.thing_name,
                    "rotation's profile is gone; using the default rotation policy"
                );
                RotationPolicy::default()
            }
        })
    }
}

// --- the shared procedures --------------------------------------------------

/// How a shared procedure left a rotation.
enum Settled {
    /// Retired now: the old certificate is INACTIVE and detached.
    Completed(Rotation),
    /// Failed now: the new certificate (if any) is revoked and detached.
    Failed(Rotation),
    /// Nothing done: the attempt had already ended or another attempt runs
    /// (the rotation as found).
    Ended(Rotation),
}

/// The old certificate of a rotation: its inventory record and IoT description.
struct OldCertificate {
    record: CertificateRecord,
    cert: RegisteredCertificate,
}

/// The new certificate's inventory record: same thing, profile and CA as the
/// old record, validity from the certificate itself.
fn rotated_in_record(
    old: &CertificateRecord,
    r: &Rotation,
    new_certificate_id: &str,
    cert: &Certificate,
    now: i64,
) -> CertificateRecord {
    let mut record = CertificateRecord::bare(
        new_certificate_id,
        &old.ca_certificate_id,
        RecordStatus::Provisioned,
        now,
    );
    record.thing_name = Some(r.thing_name.clone());
    record.profile = Some(r.profile.clone());
    record.serial = Some(cert.serial.clone());
    record.fingerprint = cert.fingerprint.clone();
    record.not_before = Some(cert.not_before);
    record.not_after = Some(cert.not_after);
    record.certificate_status = Some(CertificateStatus::Active.as_str().to_string());
    record
}

/// The ports the shared procedures use, borrowed from a workflow.
struct Ops<'a, R, T, O, I> {
    rotations: &'a R,
    iot: &'a T,
    objects: &'a O,
    inventory: &'a I,
}

impl<R, T, O, I> Ops<'_, R, T, O, I>
where
    R: RotationInventory,
    T: RotationIot,
    O: RotationObjects,
    I: Inventory,
{
    /// The rotation as stored now.
    async fn reread(&self, r: &Rotation) -> Result<Rotation, RotationError> {
        self.rotations
            .rotation(&r.old_certificate_id)
            .await?
            .ok_or_else(|| race(r))
    }

    async fn old_certificate(&self, r: &Rotation) -> Result<OldCertificate, RotationError> {
        let (record, cert) = try_join(
            self.inventory.certificate_record(&r.old_certificate_id),
            self.iot.certificate(&r.old_certificate_id),
        )
        .await?;
        let record = record.ok_or_else(|| RotationError::RecordMissing {
            certificate_id: r.old_certificate_id.clone(),
        })?;
        let cert = cert.ok_or_else(|| RotationError::CertificateMissing {
            certificate_id: r.old_certificate_id.clone(),
            thing_name: r.thing_name.clone(),
        })?;
        Ok(OldCertificate { record, cert })
    }

    /// Detaches a certificate from the thing and from each of its policies.
    async fn detach_all(&self, thing_name: &str, certificate_arn: &str) -> Result<(), RotationError> {
        self.iot.detach_from_thing(thing_name, certificate_arn).await?;
        let policies = self.iot.policies(certificate_arn).await?;
        try_join_all(policies.iter().map(|p| self.iot.detach_policy(p, certificate_arn))).await?;
        Ok(())
    }

    /// After a conditional write that lost: when the attempt failed or another
    /// began meanwhile, the new certificate is revoked and detached (true).
    async fn revoke_if_superseded(&self, r: &Rotation, new_certificate_id: &str) -> Result<bool, RotationError> {
        let current = self.reread(r).await?;
        let superseded = current.attempt != r.attempt || current.state == RotationState::Failed;
        if superseded {
            self.revoke_and_detach(&r.thing_name, new_certificate_id).await?;
        }
        Ok(superseded)
    }

    /// Revokes a certificate and detaches it; nothing when it does not exist.
    async fn revoke_and_detach(&self, thing_name: &str, certificate_id: &str) -> Result<(), RotationError> {
        let Some(cert) = self.iot.certificate(certificate_id).await? else {
            return Ok(());
        };
        if cert.status != CertificateStatus::Revoked {
            self.iot.set_status(certificate_id, &CertificateStatus::Revoked).await?;
        }
        self.detach_all(thing_name, &cert.certificate_arn).await
    }

    /// Makes a new certificate usable by the thing: attached, with the old
    /// certificate's policies, recorded, and `ACTIVE` last (as the registrar
    /// does). Idempotent.
    async fn install(
        &self,
        r: &Rotation,
        new: &RegisteredCertificate,
        old: &OldCertificate,
        now: i64,
    ) -> Result<(), RotationError> {
        // Parsed first: an unreadable certificate is never attached.
        let parsed = Certificate::from_pem(&new.pem).map_err(|e| RotationError::CertificateUnreadable {
            certificate_id: new.certificate_id.clone(),
            problem: e.to_string(),
        })?;
        self.iot.attach_to_thing(&r.thing_name, &new.certificate_arn).await?;
        let policies = self.iot.policies(&old.cert.certificate_arn).await?;
        try_join_all(policies.iter().map(|p| self.iot.attach_policy(p, &new.certificate_arn))).await?;
        let record = rotated_in_record(&old.record, r, &new.certificate_id, &parsed, now);
        self.rotations.record_rotated_in(&record).await?;
        if new.status != CertificateStatus::Active {
            self.iot
                .set_status(&new.certificate_id, &CertificateStatus::Active)
                .await?;
        }
        Ok(())
    }

    /// Undoes an attempt's effects: the new certificate revoked and detached,
    /// the job canceled, the credentials objects deleted. The old certificate
    /// is not touched. Idempotent.
    async fn clean_up(&self, r: &Rotation) -> Result<(), RotationError> {
        if let Some(new) = &r.new_certificate_id {
            self.revoke_and_detach(&r.thing_name, new).await?;
        }
        self.iot.cancel_job(&r.job_id).await?;
        try_join_all(r.object_keys.iter().map(|key| self.objects.delete_object(key))).await?;
        Ok(())
    }

    /// The fail path: the failure claimed first, then the clean-up, then
    /// the failure recorded clean (with its retry time, if attempts are
    /// left). The claim is a conditional write from the open state the
    /// attempt was found in, so a failure and a confirmation exclude each
    /// other: the new certificate is revoked only by the writer that won
    /// `failed`, never after another won `confirmed`. Until the clean-up is
    /// recorded, the failure is due at once ([`Rotation::failing`]): an
    /// interruption is resumed by the next try (a redelivered event, the
    /// rotator's next run).
    async fn fail(
        &self,
        mut r: Rotation,
        reason: FailureReason,
        detail: &str,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<Settled, RotationError> {
        for _ in 0..MAX_TRIES {
            match r.state {
                RotationState::Requested | RotationState::Issued | RotationState::Delivered => {
                    let claimed = r.failed(reason, detail, policy, now)?.failing();
                    if self
                        .rotations
                        .put_rotation(&claimed, Some((r.state, r.attempt)))
                        .await?
                    {
                        tracing::warn!(
                            thing = %claimed.thing_name,
                            old_certificate = %claimed.old_certificate_id,
                            attempt = claimed.attempt,
                            reason = reason.code(),
                            detail,
                            "rotation attempt failed"
                        );
                        r = claimed;
                        continue;
                    }
                    // Changed meanwhile (issued, confirmed, failed by another
                    // writer): decide again on what is stored now.
                    let current = self.reread(&r).await?;
                    if current.attempt != r.attempt {
                        return Ok(Settled::Ended(current));
                    }
                    r = current;
                }
                RotationState::Failed if r.is_failing() => {
                    self.clean_up(&r).await?;
                    let clean = r.cleaned(policy);
                    if self
                        .rotations
                        .put_rotation(&clean, Some((RotationState::Failed, r.attempt)))
                        .await?
                    {
                        return Ok(Settled::Failed(clean));
                    }
                    let current = self.reread(&r).await?;
                    if current.attempt != r.attempt || !current.is_failing() {
                        return Ok(Settled::Ended(current));
                    }
                    r = current;
                }
                _ => return Ok(Settled::Ended(r)),
            }
        }
        Err(race(&r))
    }

    /// The complete path, from `issued`/`delivered` (the caller checked the
    /// confirmation) or from `confirmed` (an interrupted completion).
    async fn complete(&self, mut r: Rotation, policy: &RotationPolicy, now: i64) -> Result<Settled, RotationError> {
        for _ in 0..MAX_TRIES {
            match r.state {
                RotationState::Issued | RotationState::Delivered => {
                    let next = r.confirmed(now)?;
                    if self.rotations.put_rotation(&next, Some((r.state, r.attempt))).await? {
                        r = next;
                    } else {
                        let current = self.reread(&r).await?;
                        if current.attempt != r.attempt {
                            return Ok(Settled::Ended(current));
                        }
                        r = current;
                    }
                }
                RotationState::Confirmed => return self.retire(r, policy, now).await,
                _ => return Ok(Settled::Ended(r)),
            }
        }
        Err(race(&r))
    }

    /// From `confirmed`: claim moved to the new certificate, old one INACTIVE
    /// and detached, inventory updated, objects deleted, then `retired`.
    async fn retire(&self, r: Rotation, policy: &RotationPolicy, now: i64) -> Result<Settled, RotationError> {
        let new = r
            .new_certificate_id
            .clone()
            .ok_or_else(|| RotationError::NewCertificateUnknown {
                old_certificate_id: r.old_certificate_id.clone(),
                state: r.state.as_str(),
            })?;
        let (old, thing) = (r.old_certificate_id.as_str(), r.thing_name.as_str());
        let old_cert = self.iot.certificate(old).await?;
        // Never strand the device: the old certificate is retired only once
        // IoT itself shows the new one usable.
        let old_policies = match &old_cert {
            Some(cert) => self.iot.policies(&cert.certificate_arn).await?,
            None => Vec::new(),
        };
        self.check_usable(thing, &new, &old_policies).await?;
        // While both certificates are ACTIVE, so the name is never free.
        if !self.inventory.transfer_thing_name(thing, old, &new).await? {
            // Already moved by an earlier try (or never claimed): claim it.
            if let NameClaim::HeldBy(holder) = self.inventory.claim_thing_name(thing, &new).await? {
                return Err(RotationError::ClaimHeldElsewhere {
                    thing_name: thing.to_string(),
                    holder,
                });
            }
        }
        if let Some(cert) = old_cert {
            if cert.status == CertificateStatus::Active {
                self.iot.set_status(old, &CertificateStatus::Inactive).await?;
            }
            self.detach_all(thing, &cert.certificate_arn).await?;
        }
        self.rotations.record_rotated_out(old, &new, now).await?;
        try_join_all(r.object_keys.iter().map(|key| self.objects.delete_object(key))).await?;
        let next = r.retired(policy, now)?;
        if self
            .rotations
            .put_rotation(&next, Some((RotationState::Confirmed, r.attempt)))
            .await?
        {
            tracing::info!(thing, old_certificate = old, new_certificate = %new, "rotation completed");
            return Ok(Settled::Completed(next));
        }
        let current = self.reread(&r).await?;
        if current.attempt == r.attempt && current.state == RotationState::Retired {
            return Ok(Settled::Ended(current));
        }
        Err(race(&r))
    }

    /// Reads from IoT that the new certificate is `ACTIVE`, attached to the
    /// thing, and carries at least one policy and every policy the old one
    /// still carries.
    async fn check_usable(
        &self,
        thing_name: &str,
        new_certificate_id: &str,
        old_policies: &[String],
    ) -> Result<(), RotationError> {
        let not_ready = |problem: String| RotationError::NewCertificateNotReady {
            certificate_id: new_certificate_id.to_string(),
            thing_name: thing_name.to_string(),
            problem,
        };
        let Some(new) = self.iot.certificate(new_certificate_id).await? else {
            return Err(not_ready("it does not exist".into()));
        };
        if new.status != CertificateStatus::Active {
            return Err(not_ready(format!("it is {}", new.status.as_str())));
        }
        let (principals, policies) = try_join(
            self.iot.thing_principals(thing_name),
            self.iot.policies(&new.certificate_arn),
        )
        .await?;
        if !principals.contains(&new.certificate_arn) {
            return Err(not_ready("it is not attached to the thing".into()));
        }
        if policies.is_empty() {
            return Err(not_ready("it carries no policy".into()));
        }
        if let Some(missing) = old_policies.iter().find(|p| !policies.contains(p)) {
            return Err(not_ready(format!("it lacks policy {missing}")));
        }
        Ok(())
    }

    /// Settles an attempt on the job execution as IoT reports it now.
    async fn settle(
        &self,
        r: Rotation,
        execution: Option<JobExecution>,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<Settled, RotationError> {
        match execution {
            Some(execution) if execution.status == "SUCCEEDED" => {
                self.settle_success(r, &execution.status_details, policy, now).await
            }
            Some(execution) => {
                let (reason, detail) = match FailureReason::of_job_status(&execution.status) {
                    Some(reason) => (reason, format!("job execution {}", execution.status)),
                    None => (
                        FailureReason::JobTimedOut,
                        format!("job execution still {} past its deadline", execution.status),
                    ),
                };
                self.fail(r, reason, &detail, policy, now).await
            }
            None => {
                let detail = "no job execution at the deadline";
                self.fail(r, FailureReason::JobTimedOut, detail, policy, now).await
            }
        }
    }

    /// A job execution SUCCEEDED: complete if it names the new certificate,
    /// fail (`WRONG_CONFIRMATION`) otherwise.
    async fn settle_success(
        &self,
        mut r: Rotation,
        details: &BTreeMap<String, String>,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<Settled, RotationError> {
        let confirmed = details.get(CONFIRMATION_FIELD).map(String::as_str);
        for _ in 0..MAX_TRIES {
            match r.state {
                RotationState::Confirmed => return self.complete(r, policy, now).await,
                RotationState::Retired | RotationState::Failed => return Ok(Settled::Ended(r)),
                RotationState::Requested | RotationState::Issued | RotationState::Delivered => {
                    let Some(new) = r.new_certificate_id.clone().filter(|n| Some(n.as_str()) == confirmed) else {
                        let detail = match confirmed {
                            Some(c) => format!("the device confirmed certificate {c}, not the one issued"),
                            None => format!("the job succeeded without statusDetails.{CONFIRMATION_FIELD}"),
                        };
                        return self
                            .fail(r, FailureReason::WrongConfirmation, &detail, policy, now)
                            .await;
                    };
                    if r.state != RotationState::Requested {
                        return self.complete(r, policy, now).await;
                    }
                    // Server-keygen: the rotator attached and activated the
                    // certificate and put the job out, then stopped before
                    // recording `issued`. The device used it: it was issued.
                    let next = r.issued(&new, r.object_keys.clone(), now)?;
                    if self
                        .rotations
                        .put_rotation(&next, Some((RotationState::Requested, r.attempt)))
                        .await?
                    {
                        r = next;
                    } else {
                        let current = self.reread(&r).await?;
                        if current.attempt != r.attempt {
                            return Ok(Settled::Ended(current));
                        }
                        r = current;
                    }
                }
            }
        }
        Err(race(&r))
    }
}

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

    fn ops(&self) -> Ops<'_, R, T, O, I> {
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
        let snapshot = load_snapshot(&self.inventory, self.settings.default_profile.as_ref()).await?;
        let mut report = RunReport::default();
        self.follow_ups(&snapshot, now, &mut report).await?;
        if !report.interrupted {
            self.new_rotations(&snapshot, now, &mut report).await?;
        }
        tracing::info!(?report, "rotator run");
        Ok(report)
    }

    async fn follow_ups(&self, snapshot: &Snapshot, now: i64, report: &mut RunReport) -> Result<(), RotationError> {
        let mut cursor = self.rotations.cursor(DUE_CURSOR).await?;
        loop {
            let remaining = self.settings.max_follow_ups_per_run.saturating_sub(report.followed_up) as usize;
            if remaining == 0 {
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

    async fn new_rotations(&self, snapshot: &Snapshot, now: i64, report: &mut RunReport) -> Result<(), RotationError> {
        let Some(window_days) = snapshot.profiles.values().map(|p| p.rotation.window_days).max() else {
            return Ok(());
        };
        let until = now + i64::from(window_days) * DAY;
        let mut cursor = self.rotations.cursor(EXPIRING_CURSOR).await?;
        loop {
            // Pages no larger than what may still start, so a page never
            // holds a certificate the budget cannot take: the cursor after it
            // is exactly where the next run goes on.
            let remaining =
                self.settings
                    .max_new_per_run
                    .saturating_sub(report.started)
                    .min(self.settings.max_examined_per_run.saturating_sub(report.examined)) as usize;
            if remaining == 0 {
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
        let policy = profile.rotation;
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
        let policy = profile.map(|p| p.rotation).unwrap_or_default();
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
        let policy = profile.rotation;
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

// --- outcomes of the event handlers -----------------------------------------

/// Why an event or message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// No rotation has this job as its current attempt (not ours, or an earlier attempt).
    UnknownJob,
    /// The rotation is another thing's.
    OtherThing,
    /// The publishing certificate is neither of the rotation's certificates.
    NotOurPrincipal,
    /// A CSR for a server-keygen rotation.
    NotCsrStrategy,
    /// The rotation is not waiting for a CSR (confirmed, retired or failed).
    NotAwaitingCsr,
    /// A CSR for another key than the certificate already issued.
    KeyMismatch,
    /// The old certificate is no longer `ACTIVE`: nothing is issued for it.
    OldCertificateInactive,
    /// A job status that needs nothing (QUEUED, IN_PROGRESS of a CSR job…).
    NothingToDo,
}

impl IgnoreReason {
    /// A short stable label for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownJob => "unknown_job",
            Self::OtherThing => "other_thing",
            Self::NotOurPrincipal => "not_our_principal",
            Self::NotCsrStrategy => "not_csr_strategy",
            Self::NotAwaitingCsr => "not_awaiting_csr",
            Self::KeyMismatch => "key_mismatch",
            Self::OldCertificateInactive => "old_certificate_inactive",
            Self::NothingToDo => "nothing_to_do",
        }
    }
}

// --- CSR issuer -------------------------------------------------------------

/// CSR issuer settings.
#[derive(Debug, Clone)]
pub struct CsrIssuerSettings {
    /// How long the configuration is cached in the container.
    pub cache_ttl: Duration,
    /// A default profile and the CA ids bound to it, from the environment.
    pub default_profile: Option<(DeviceProfile, Vec<String>)>,
}

impl Default for CsrIssuerSettings {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            default_profile: None,
        }
    }
}

/// What the issuer did with one CSR message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrOutcome {
    /// The certificate was published on the answer topic; `resent` when it
    /// had been issued before (the device asked again).
    Issued {
        thing_name: String,
        new_certificate_id: String,
        resent: bool,
    },
    /// The CSR failed a check: refused on the answer topic, attempt failed.
    Refused {
        thing_name: String,
        rejection: Rejection,
    },
    /// The attempt failed while the certificate was being delivered; the
    /// certificate is revoked.
    Superseded {
        thing_name: String,
    },
    Ignored {
        reason: IgnoreReason,
    },
}

impl CsrOutcome {
    /// `issued`, `resent`, `refused`, `superseded` or `ignored`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Issued { resent: false, .. } => "issued",
            Self::Issued { resent: true, .. } => "resent",
            Self::Refused { .. } => "refused",
            Self::Superseded { .. } => "superseded",
            Self::Ignored { .. } => "ignored",
        }
    }
}

/// No objects: the CSR strategy has none (its rotations never name any).
struct NoObjects;

impl RotationObjects for NoObjects {
    fn put_object(&self, _key: &str, _body: &[u8]) -> impl Future<Output = PortResult<()>> + Send {
        std::future::ready(Err(no_objects("PutObject")))
    }

    fn delete_object(&self, _key: &str) -> impl Future<Output = PortResult<()>> + Send {
        std::future::ready(Err(no_objects("DeleteObject")))
    }

    fn bucket(&self) -> &str {
        ""
    }
}

fn no_objects(operation: &'static str) -> PortError {
    PortError::new(
        operation,
        PortErrorKind::Invalid,
        "the CSR issuer has no credentials bucket",
    )
}

/// Answers devices' CSRs, generic over its ports.
pub struct CsrIssuer<R, T, I> {
    rotations: R,
    iot: T,
    inventory: I,
    profiles: ProfileCache,
}

impl<R, T, I> CsrIssuer<R, T, I>
where
    R: RotationInventory,
    T: RotationIot,
    I: Inventory + DenyList,
{
    pub fn new(rotations: R, iot: T, inventory: I, settings: CsrIssuerSettings) -> Self {
        Self {
            rotations,
            iot,
            inventory,
            profiles: ProfileCache::new(settings.cache_ttl, settings.default_profile),
        }
    }

    fn ops(&self) -> Ops<'_, R, T, NoObjects, I> {
        Ops {
            rotations: &self.rotations,
            iot: &self.iot,
            objects: &NoObjects,
            inventory: &self.inventory,
        }
    }

    /// Handles one CSR published on `devices/<thing_name>/rotation/csr` by
    /// the certificate `principal_certificate_id` (both authenticated by AWS
    /// IoT: the topic by the policy, the principal by TLS).
    ///
    /// Steps for a `requested` attempt: the CSR checked; the certificate made
    /// (inactive); `issued` recorded (conditional on `requested`); attached,
    /// the old certificate's policies attached, its record written, `ACTIVE`;
    /// the answer published; `delivered` recorded. Recording `issued` before
    /// anything is attached means a failure path always knows the certificate
    /// to revoke; a certificate made but not recorded stays inactive and
    /// unattached. A device asking again with the same key gets the same
    /// certificate (the steps after `issued` are idempotent).
    ///
    /// # Errors
    /// [`RotationError`] when the message must be retried (transient) or an
    /// operator must look (profile gone, records missing).
    pub async fn handle(
        &self,
        thing_name: &str,
        principal_certificate_id: &str,
        message: &CsrMessage,
        now: i64,
    ) -> Result<CsrOutcome, RotationError> {
        let ignored = |reason| {
            tracing::info!(thing = thing_name, job = %message.job_id, reason = IgnoreReason::code(reason), "CSR ignored");
            Ok(CsrOutcome::Ignored { reason })
        };
        let mut last = None;
        for _ in 0..MAX_TRIES {
            let Some(r) = self.rotations.rotation_by_job(&message.job_id).await? else {
                return ignored(IgnoreReason::UnknownJob);
            };
            if r.job_id != message.job_id {
                return ignored(IgnoreReason::UnknownJob);
            }
            // Never act on another thing's rotation: a device could otherwise
            // fail its neighbours' attempts.
            if r.thing_name != thing_name {
                return ignored(IgnoreReason::OtherThing);
            }
            if r.strategy != Strategy::Csr {
                return ignored(IgnoreReason::NotCsrStrategy);
            }
            let by_new = r.new_certificate_id.as_deref() == Some(principal_certificate_id);
            if principal_certificate_id != r.old_certificate_id && !by_new {
                return ignored(IgnoreReason::NotOurPrincipal);
            }
            last = Some(r.old_certificate_id.clone());
            match r.state {
                RotationState::Requested => match self.issue(r, message, now).await? {
                    Some(outcome) => return Ok(outcome),
                    // Lost a race: look again.
                    None => continue,
                },
                RotationState::Issued | RotationState::Delivered => return self.resend(r, message, now).await,
                RotationState::Confirmed | RotationState::Retired | RotationState::Failed => {
                    return ignored(IgnoreReason::NotAwaitingCsr);
                }
            }
        }
        Err(RotationError::Race {
            old_certificate_id: last.unwrap_or_default(),
        })
    }

    /// A `requested` attempt: check, then issue or refuse. `None` when
    /// another writer changed the rotation first.
    async fn issue(&self, r: Rotation, message: &CsrMessage, now: i64) -> Result<Option<CsrOutcome>, RotationError> {
        let ops = self.ops();
        let snapshot = self.profiles.snapshot(&self.inventory).await?;
        let profile = snapshot
            .profiles
            .get(&r.profile)
            .ok_or_else(|| RotationError::ProfileMissing {
                profile: r.profile.clone(),
                thing_name: r.thing_name.clone(),
            })?;
        let policy = profile.rotation;
        if let Err(rejection) = check_csr(&message.csr, profile, &r.thing_name) {
            let outcome = self
                .refuse(r, rejection, FailureReason::CsrRefused, &policy, now)
                .await?;
            return Ok(Some(outcome));
        }
        let old = ops.old_certificate(&r).await?;
        if old.cert.status != CertificateStatus::Active {
            return Ok(Some(CsrOutcome::Ignored {
                reason: IgnoreReason::OldCertificateInactive,
            }));
        }
        // Decided on the configuration as it is now: a device denied (or
        // whose CA was unbound) since its attempt started gets nothing.
        if let Err(rejection) = rotation_allowed(&snapshot.config, &self.inventory, &old.record).await? {
            let outcome = self.refuse(r, rejection, FailureReason::Denied, &policy, now).await?;
            return Ok(Some(outcome));
        }
        let issued = self.iot.certificate_from_csr(&message.csr).await?;
        let next = r.issued(&issued.certificate_id, Vec::new(), now)?;
        // A failed write may still have been applied (its answer lost), so
        // the certificate is left alone: revoking it could revoke the one the
        // retry then finds recorded. Unrecorded, it stays inactive and
        // unattached.
        if !self
            .rotations
            .put_rotation(&next, Some((RotationState::Requested, r.attempt)))
            .await?
        {
            // Another delivery of the CSR (or a failure) came first: this
            // certificate is never used.
            self.iot
                .set_status(&issued.certificate_id, &CertificateStatus::Revoked)
                .await?;
            return Ok(None);
        }
        let new = RegisteredCertificate {
            certificate_id: issued.certificate_id,
            certificate_arn: issued.certificate_arn,
            ca_certificate_id: None,
            status: CertificateStatus::PendingActivation,
            pem: issued.certificate_pem,
        };
        self.deliver(next, &new, &old, false, now).await.map(Some)
    }

    /// Refuses a CSR: the reason published on the answer topic, then the
    /// attempt failed. Published first: a retry after an interruption
    /// publishes again, which the device tolerates.
    async fn refuse(
        &self,
        r: Rotation,
        rejection: Rejection,
        reason: FailureReason,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<CsrOutcome, RotationError> {
        let answer = CsrAnswer::Refused {
            job_id: r.job_id.clone(),
            reason_code: rejection.reason.code().to_string(),
            detail: rejection.detail.clone(),
        };
        self.publish(&r.thing_name, &answer).await?;
        let detail = format!("{}: {}", rejection.reason.code(), rejection.detail);
        let thing_name = r.thing_name.clone();
        self.ops().fail(r, reason, &detail, policy, now).await?;
        Ok(CsrOutcome::Refused { thing_name, rejection })
    }

    /// An `issued` or `delivered` attempt asked again: the same certificate
    /// if the CSR carries its key.
    async fn resend(&self, r: Rotation, message: &CsrMessage, now: i64) -> Result<CsrOutcome, RotationError> {
        let new_id = r
            .new_certificate_id
            .clone()
            .ok_or_else(|| RotationError::NewCertificateUnknown {
                old_certificate_id: r.old_certificate_id.clone(),
                state: r.state.as_str(),
            })?;
        let new = self
            .iot
            .certificate(&new_id)
            .await?
            .ok_or_else(|| RotationError::CertificateMissing {
                certificate_id: new_id.clone(),
                thing_name: r.thing_name.clone(),
            })?;
        let issued_key = Certificate::from_pem(&new.pem)
            .map_err(|e| RotationError::CertificateUnreadable {
                certificate_id: new_id.clone(),
                problem: e.to_string(),
            })?
            .public_key_der();
        let same_key = CertificateRequest::from_pem(&message.csr)
            .is_ok_and(|csr| csr.signature_valid && csr.public_key_der == issued_key);
        if !same_key {
            return Ok(CsrOutcome::Ignored {
                reason: IgnoreReason::KeyMismatch,
            });
        }
        let old = self.ops().old_certificate(&r).await?;
        let snapshot = self.profiles.snapshot(&self.inventory).await?;
        if let Err(rejection) = rotation_allowed(&snapshot.config, &self.inventory, &old.record).await? {
            let policy = snapshot
                .profiles
                .get(&r.profile)
                .map(|p| p.rotation)
                .unwrap_or_default();
            return self.refuse(r, rejection, FailureReason::Denied, &policy, now).await;
        }
        // Only a delivered certificate was answered before; an issued one is
        // a retry after a crash, its first answer.
        let resent = r.state == RotationState::Delivered;
        self.deliver(r, &new, &old, resent, now).await
    }

    /// Installs the certificate, publishes it, records `delivered`.
    async fn deliver(
        &self,
        r: Rotation,
        new: &RegisteredCertificate,
        old: &OldCertificate,
        resent: bool,
        now: i64,
    ) -> Result<CsrOutcome, RotationError> {
        let ops = self.ops();
        ops.install(&r, new, old, now).await?;
        let answer = CsrAnswer::Issued {
            job_id: r.job_id.clone(),
            certificate_id: new.certificate_id.clone(),
            certificate_pem: new.pem.clone(),
        };
        self.publish(&r.thing_name, &answer).await?;
        if r.state == RotationState::Issued {
            let next = r.delivered(now)?;
            if !self
                .rotations
                .put_rotation(&next, Some((RotationState::Issued, r.attempt)))
                .await?
            {
                // The attempt failed meanwhile, perhaps before this
                // certificate became ACTIVE: make sure it is revoked.
                if ops.revoke_if_superseded(&r, &new.certificate_id).await? {
                    return Ok(CsrOutcome::Superseded {
                        thing_name: r.thing_name,
                    });
                }
            }
        }
        tracing::info!(thing = %r.thing_name, new_certificate = %new.certificate_id, resent, "rotation certificate issued");
        Ok(CsrOutcome::Issued {
            thing_name: r.thing_name,
            new_certificate_id: new.certificate_id.clone(),
            resent,
        })
    }

    async fn publish(&self, thing_name: &str, answer: &CsrAnswer) -> PortResult<()> {
        // Strings only: serialization cannot fail.
        let payload = serde_json::to_vec(answer).unwrap_or_default();
        self.iot.publish(&answer_topic(thing_name), &payload).await
    }
}

// --- completer --------------------------------------------------------------

/// A job-execution event (`$aws/events/jobExecution/<jobId>/<status>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecutionEvent {
    pub job_id: String,
    /// `arn:aws:iot:<region>:<account>:thing/<thingName>`.
    #[serde(default)]
    pub thing_arn: String,
    /// `SUCCEEDED`, `FAILED`, `REJECTED`, `TIMED_OUT`, `CANCELED`, `REMOVED`, …
    pub status: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub status_details: BTreeMap<String, String>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

impl JobExecutionEvent {
    /// Parses the event's JSON (unknown fields ignored).
    ///
    /// # Errors
    /// The JSON error when a required field is missing or mistyped.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The thing name from `thingArn`.
    pub fn thing_name(&self) -> Option<&str> {
        self.thing_arn.rsplit_once(":thing/").map(|(_, name)| name)
    }
}

/// Completer settings.
#[derive(Debug, Clone)]
pub struct CompleterSettings {
    /// How long the configuration is cached in the container.
    pub cache_ttl: Duration,
    /// A default profile and the CA ids bound to it, from the environment.
    pub default_profile: Option<(DeviceProfile, Vec<String>)>,
}

impl Default for CompleterSettings {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            default_profile: None,
        }
    }
}

/// What the completer did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompletionOutcome {
    /// Confirmed: the old certificate is INACTIVE and detached.
    Completed {
        thing_name: String,
        old_certificate_id: String,
        new_certificate_id: String,
    },
    /// The attempt failed (an alarm metric); `retry_at` is `None` when the
    /// attempts are used up.
    Failed {
        thing_name: String,
        old_certificate_id: String,
        reason: FailureReason,
        retry_at: Option<i64>,
    },
    /// A server-keygen device took up its job.
    Delivered {
        thing_name: String,
    },
    /// The attempt had already ended this way or another (a duplicate event,
    /// or the cancellation the fail path itself caused).
    Duplicate {
        thing_name: String,
        state: RotationState,
    },
    Ignored {
        reason: IgnoreReason,
    },
}

impl CompletionOutcome {
    /// `completed`, `failed`, `delivered`, `duplicate` or `ignored`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Delivered { .. } => "delivered",
            Self::Duplicate { .. } => "duplicate",
            Self::Ignored { .. } => "ignored",
        }
    }

    /// True for outcomes the function turns into an alarm metric.
    pub fn is_alarm(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }
}

/// Acts on job-execution events, generic over its ports.
pub struct Completer<R, T, O, I> {
    rotations: R,
    iot: T,
    objects: O,
    inventory: I,
    profiles: ProfileCache,
}

impl<R, T, O, I> Completer<R, T, O, I>
where
    R: RotationInventory,
    T: RotationIot,
    O: RotationObjects,
    I: Inventory,
{
    pub fn new(rotations: R, iot: T, objects: O, inventory: I, settings: CompleterSettings) -> Self {
        Self {
            rotations,
            iot,
            objects,
            inventory,
            profiles: ProfileCache::new(settings.cache_ttl, settings.default_profile),
        }
    }

    fn ops(&self) -> Ops<'_, R, T, O, I> {
        Ops {
            rotations: &self.rotations,
            iot: &self.iot,
            objects: &self.objects,
            inventory: &self.inventory,
        }
    }

    /// Handles one event as of `now`. Idempotent: a duplicate finds the
    /// attempt ended and reports [`CompletionOutcome::Duplicate`].
    ///
    /// The event is a trigger only: before any certificate changes, the job
    /// execution is read again from IoT (`DescribeJobExecution`), and its
    /// status and `statusDetails` decide, never the message's.
    ///
    /// - `SUCCEEDED` naming the new certificate: `confirmed`; the thing-name
    ///   claim moved to the new certificate; the old one INACTIVE, detached
    ///   from the thing and its policies; its record rotated out; objects
    ///   deleted; `retired` (due for deletion after the grace period).
    ///   Naming anything else fails the attempt (`WRONG_CONFIRMATION`).
    /// - `FAILED`, `REJECTED`, `TIMED_OUT`, `CANCELED`, `REMOVED`: the new
    ///   certificate revoked and detached, the job canceled, then `failed`
    ///   with the retry time; the old certificate is untouched.
    /// - `IN_PROGRESS` of a server-keygen job: `delivered`. Others: ignored.
    ///
    /// # Errors
    /// [`RotationError`] when the event must be retried (transient) or an
    /// operator must look.
    pub async fn handle(&self, event: &JobExecutionEvent, now: i64) -> Result<CompletionOutcome, RotationError> {
        let ops = self.ops();
        let Some(r) = self.rotations.rotation_by_job(&event.job_id).await? else {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::UnknownJob,
            });
        };
        if r.job_id != event.job_id {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::UnknownJob,
            });
        }
        if event.thing_name() != Some(r.thing_name.as_str()) {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::OtherThing,
            });
        }
        // The event only says "look": the status and the confirmed
        // certificate are read from IoT itself, never from the message.
        let Some(execution) = self.iot.job_execution(&r.job_id, &r.thing_name).await? else {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::NothingToDo,
            });
        };
        let status = execution.status.as_str();
        let reported = event.status_details.get(CONFIRMATION_FIELD);
        if event.status != status
            || reported.is_some_and(|c| execution.status_details.get(CONFIRMATION_FIELD) != Some(c))
        {
            tracing::warn!(
                job = %r.job_id,
                thing = %r.thing_name,
                event_status = %event.status,
                iot_status = status,
                "the event disagrees with IoT's job execution; IoT's is used"
            );
        }
        let policy = self.profiles.policy(&self.inventory, &r).await?;
        let settled = if status == "SUCCEEDED" || FailureReason::of_job_status(status).is_some() {
            ops.settle(r, Some(execution), &policy, now).await?
        } else if status == "IN_PROGRESS" && r.strategy == Strategy::ServerKeygen {
            return self.delivered(r, now).await;
        } else {
            return Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::NothingToDo,
            });
        };
        Ok(match settled {
            Settled::Completed(r) => CompletionOutcome::Completed {
                new_certificate_id: r.new_certificate_id.unwrap_or_default(),
                thing_name: r.thing_name,
                old_certificate_id: r.old_certificate_id,
            },
            Settled::Failed(r) => CompletionOutcome::Failed {
                thing_name: r.thing_name,
                old_certificate_id: r.old_certificate_id,
                reason: r.reason.unwrap_or(FailureReason::JobFailed),
                retry_at: r.due_at,
            },
            Settled::Ended(r) => CompletionOutcome::Duplicate {
                thing_name: r.thing_name,
                state: r.state,
            },
        })
    }

    /// A server-keygen device took up its job: `delivered`.
    async fn delivered(&self, r: Rotation, now: i64) -> Result<CompletionOutcome, RotationError> {
        let thing_name = r.thing_name.clone();
        match r.state {
            RotationState::Issued => {
                let next = r.delivered(now)?;
                if self
                    .rotations
                    .put_rotation(&next, Some((RotationState::Issued, r.attempt)))
                    .await?
                {
                    return Ok(CompletionOutcome::Delivered { thing_name });
                }
                let current = self.ops().reread(&r).await?;
                Ok(CompletionOutcome::Duplicate {
                    thing_name,
                    state: current.state,
                })
            }
            // The rotator records `issued` when it resumes its start.
            RotationState::Requested => Ok(CompletionOutcome::Ignored {
                reason: IgnoreReason::NothingToDo,
            }),
            state => Ok(CompletionOutcome::Duplicate { thing_name, state }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Mutex as StdMutex, MutexGuard, PoisonError};

    use onboarding_test_support::rcgen;

    use std::sync::Arc;

    use super::*;
    use crate::ports::{IssuedCertificate, Page};

    const T0: i64 = 1_900_000_000;
    const PROFILE: &str = "sensors";
    const POLICY: &str = "device-policy";
    const CA: &str = "ca-1";
    const BUCKET: &str = "credentials-bucket";

    // --- in-memory ports ----------------------------------------------------

    /// Makes the n-th port call (0-based, over all ports) fail once:
    /// `Before` its effect (a request that never arrived), or `After` it (a
    /// lost response, or a crash right after the call).
    #[derive(Debug, Clone, Copy)]
    enum Inject {
        Before(usize),
        After(usize),
    }

    #[derive(Debug, Clone)]
    struct FakeCert {
        arn: String,
        status: CertificateStatus,
        pem: String,
        thing: Option<String>,
        policies: BTreeSet<String>,
    }

    #[derive(Debug, Clone)]
    struct FakeJob {
        thing: String,
        document: JobDocument,
        status: String,
        details: BTreeMap<String, String>,
        queued_at: Option<i64>,
        started_at: Option<i64>,
    }

    #[derive(Default)]
    struct World {
        config: OnboardingConfig,
        records: BTreeMap<String, CertificateRecord>,
        claims: BTreeMap<String, String>,
        rotations: BTreeMap<String, Rotation>,
        cursors: BTreeMap<String, String>,
        certs: BTreeMap<String, FakeCert>,
        jobs: BTreeMap<String, FakeJob>,
        objects: BTreeMap<String, Vec<u8>>,
        published: Vec<(String, Vec<u8>)>,
        calls: Vec<&'static str>,
        inject: Option<Inject>,
        /// Denied fingerprints, and `<ca>#<serial>` of denied serials.
        denied: BTreeSet<String>,
        /// Runs another workflow to its end right before the n-th port call
        /// (another Lambda invocation or rotator run, interleaved there).
        interleave: Option<(usize, Hook)>,
    }

    type Hook = Box<dyn FnOnce() + Send>;

    /// Drives a future whose every await is ready (the fake's ports are).
    fn run_now<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..1_000_000 {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
        panic!("an interleaved workflow never finished");
    }

    fn arn(id: &str) -> String {
        format!("arn:aws:iot:eu-west-1:123456789012:cert/{id}")
    }

    fn id_of(arn: &str) -> String {
        arn.rsplit_once(":cert/")
            .map(|(_, id)| id.to_string())
            .unwrap_or_default()
    }

    fn thing(i: usize) -> String {
        format!("dev-{i}")
    }

    fn old_id(thing: &str) -> String {
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, thing.as_bytes()))
    }

    fn conflict(op: &'static str, detail: &str) -> PortError {
        PortError::new(op, PortErrorKind::Conflict, detail)
    }

    fn profile(strategy: Strategy) -> DeviceProfile {
        let mut p = DeviceProfile::minimal(PROFILE, POLICY);
        p.rotation.strategy = strategy;
        p
    }

    impl World {
        fn set_profile(&mut self, p: DeviceProfile) {
            let mut config = OnboardingConfig::default();
            config.add_profile(p.name.clone(), Ok(p.clone()));
            config.bind(CA.into(), p.name);
            self.config = config;
        }

        fn add_device(&mut self, thing: &str, not_after: i64) {
            let id = old_id(thing);
            self.certs.insert(
                id.clone(),
                FakeCert {
                    arn: arn(&id),
                    status: CertificateStatus::Active,
                    pem: "old".into(),
                    thing: Some(thing.into()),
                    policies: BTreeSet::from([POLICY.to_string()]),
                },
            );
            let mut record = CertificateRecord::bare(&id, CA, RecordStatus::Provisioned, T0 - 300 * DAY);
            record.thing_name = Some(thing.into());
            record.profile = Some(PROFILE.into());
            record.not_after = Some(not_after);
            self.records.insert(id.clone(), record);
            self.claims.insert(thing.into(), id);
        }

        fn rotation_of(&self, thing: &str) -> Rotation {
            self.rotations.get(&old_id(thing)).cloned().expect("a rotation")
        }

        fn cert(&self, id: &str) -> FakeCert {
            self.certs.get(id).cloned().expect("a certificate")
        }

        /// The job the device works on (queued or in progress).
        fn current_job(&self, thing: &str) -> (String, FakeJob) {
            let open: Vec<_> = self
                .jobs
                .iter()
                .filter(|(_, j)| j.thing == thing && matches!(j.status.as_str(), "QUEUED" | "IN_PROGRESS"))
                .collect();
            assert_eq!(open.len(), 1, "one open job for {thing}");
            let (id, job) = open[0];
            (id.clone(), job.clone())
        }

        fn set_job(&mut self, job_id: &str, status: &str, confirmed: Option<&str>) {
            let job = self.jobs.get_mut(job_id).expect("the job");
            job.status = status.into();
            if let Some(c) = confirmed {
                job.details.insert(CONFIRMATION_FIELD.into(), c.into());
            }
        }

        /// Every device takes up its queued job at `at` (IN_PROGRESS).
        fn take_up_jobs(&mut self, at: i64) {
            for job in self.jobs.values_mut().filter(|j| j.status == "QUEUED") {
                job.status = "IN_PROGRESS".into();
                job.started_at = Some(at);
            }
        }

        fn answers(&self, thing: &str) -> Vec<serde_json::Value> {
            self.published
                .iter()
                .filter(|(topic, _)| *topic == answer_topic(thing))
                .map(|(_, payload)| serde_json::from_slice(payload).expect("JSON answer"))
                .collect()
        }
    }

    struct Signer(rcgen::Issuer<'static, rcgen::KeyPair>);

    #[derive(Clone)]
    struct Fake {
        world: Arc<StdMutex<World>>,
        signer: Arc<Signer>,
    }

    impl Fake {
        fn new(strategy: Strategy, devices: usize) -> Self {
            let key = rcgen::KeyPair::generate().expect("CA key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "Fake Amazon CA");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let fake = Self {
                world: Arc::default(),
                signer: Arc::new(Signer(rcgen::Issuer::new(params, key))),
            };
            fake.with(|w| {
                w.set_profile(profile(strategy));
                for i in 0..devices {
                    w.add_device(&thing(i), T0 + 20 * DAY + i as i64);
                }
            });
            fake
        }

        fn lock(&self) -> MutexGuard<'_, World> {
            self.world.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn with<X>(&self, f: impl FnOnce(&mut World) -> X) -> X {
            f(&mut self.lock())
        }

        /// One port call: logged, and failed if injected.
        fn call<X>(&self, op: &'static str, f: impl FnOnce(&mut World) -> PortResult<X>) -> PortResult<X> {
            let hook = {
                let mut w = self.lock();
                let n = w.calls.len();
                match w.interleave.take() {
                    Some((k, hook)) if k == n => Some(hook),
                    other => {
                        w.interleave = other;
                        None
                    }
                }
            };
            if let Some(hook) = hook {
                hook();
            }
            let mut w = self.lock();
            let n = w.calls.len();
            w.calls.push(op);
            let injected = || PortError::new(op, PortErrorKind::Transient, format!("injected at call {n}"));
            if let Some(Inject::Before(k)) = w.inject
                && k == n
            {
                w.inject = None;
                return Err(injected());
            }
            let value = f(&mut w)?;
            if let Some(Inject::After(k)) = w.inject
                && k == n
            {
                w.inject = None;
                return Err(injected());
            }
            Ok(value)
        }

        fn issue(&self, w: &mut World, pem: String, private_key_pem: Option<String>) -> PortResult<IssuedCertificate> {
            let id = Certificate::from_pem(&pem)
                .map_err(|e| PortError::new("issue", PortErrorKind::Invalid, e.to_string()))?
                .fingerprint;
            w.certs.insert(
                id.clone(),
                FakeCert {
                    arn: arn(&id),
                    status: CertificateStatus::PendingActivation,
                    pem: pem.clone(),
                    thing: None,
                    policies: BTreeSet::new(),
                },
            );
            Ok(IssuedCertificate {
                certificate_arn: arn(&id),
                certificate_id: id,
                certificate_pem: pem,
                private_key_pem,
            })
        }
    }

    fn validity(params: &mut rcgen::CertificateParams) {
        params.not_before = rcgen::date_time_ymd(2029, 1, 1);
        params.not_after = rcgen::date_time_ymd(2031, 1, 1);
    }

    fn page<T: Clone>(mut keyed: Vec<(String, T)>, cursor: Option<&str>, limit: usize) -> Page<T> {
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let after: Vec<_> = keyed
            .into_iter()
            .filter(|(key, _)| cursor.is_none_or(|c| key.as_str() > c))
            .collect();
        let more = after.len() > limit;
        let taken: Vec<_> = after.into_iter().take(limit).collect();
        Page {
            cursor: more.then(|| taken.last().map(|(k, _)| k.clone())).flatten(),
            items: taken.into_iter().map(|(_, item)| item).collect(),
        }
    }

    impl RotationInventory for Fake {
        async fn expiring(
            &self,
            until: i64,
            cursor: Option<&str>,
            limit: usize,
        ) -> PortResult<Page<CertificateRecord>> {
            self.call("expiring", |w| {
                let keyed = w
                    .records
                    .values()
                    .filter(|r| r.status == RecordStatus::Provisioned && r.not_after.is_some_and(|n| n < until))
                    .map(|r| {
                        (
                            format!("{:012}#{}", r.not_after.unwrap_or(0), r.certificate_id),
                            r.clone(),
                        )
                    })
                    .collect();
                Ok(page(keyed, cursor, limit))
            })
        }

        async fn due_rotations(&self, now: i64, cursor: Option<&str>, limit: usize) -> PortResult<Page<Rotation>> {
            self.call("due_rotations", |w| {
                let keyed = w
                    .rotations
                    .values()
                    .filter_map(|r| r.due_at.filter(|d| *d <= now).map(|d| (d, r)))
                    .map(|(d, r)| (format!("{d:012}#{}", r.old_certificate_id), r.clone()))
                    .collect();
                Ok(page(keyed, cursor, limit))
            })
        }

        async fn rotation(&self, old_certificate_id: &str) -> PortResult<Option<Rotation>> {
            self.call("rotation", |w| Ok(w.rotations.get(old_certificate_id).cloned()))
        }

        async fn rotation_by_job(&self, job_id: &str) -> PortResult<Option<Rotation>> {
            self.call("rotation_by_job", |w| {
                Ok(w.rotations.values().find(|r| r.job_id == job_id).cloned())
            })
        }

        async fn put_rotation(&self, rotation: &Rotation, expected: Option<(RotationState, u32)>) -> PortResult<bool> {
            self.call("put_rotation", |w| {
                let stored = w
                    .rotations
                    .get(&rotation.old_certificate_id)
                    .map(|r| (r.state, r.attempt));
                if stored != expected {
                    return Ok(false);
                }
                w.rotations
                    .insert(rotation.old_certificate_id.clone(), rotation.clone());
                Ok(true)
            })
        }

        async fn record_rotated_in(&self, record: &CertificateRecord) -> PortResult<()> {
            self.call("record_rotated_in", |w| {
                w.records.insert(record.certificate_id.clone(), record.clone());
                Ok(())
            })
        }

        async fn record_rotated_out(&self, old_certificate_id: &str, _new: &str, now: i64) -> PortResult<()> {
            self.call("record_rotated_out", |w| {
                if let Some(r) = w.records.get_mut(old_certificate_id) {
                    r.status = RecordStatus::Rotated;
                    r.updated_at = now;
                }
                Ok(())
            })
        }

        async fn cursor(&self, name: &str) -> PortResult<Option<String>> {
            self.call("cursor", |w| Ok(w.cursors.get(name).cloned()))
        }

        async fn save_cursor(&self, name: &str, cursor: Option<&str>) -> PortResult<()> {
            self.call("save_cursor", |w| {
                match cursor {
                    Some(c) => w.cursors.insert(name.into(), c.into()),
                    None => w.cursors.remove(name),
                };
                Ok(())
            })
        }
    }

    impl Inventory for Fake {
        async fn load_config(&self) -> PortResult<OnboardingConfig> {
            self.call("load_config", |w| Ok(w.config.clone()))
        }

        async fn certificate_record(&self, certificate_id: &str) -> PortResult<Option<CertificateRecord>> {
            self.call("certificate_record", |w| Ok(w.records.get(certificate_id).cloned()))
        }

        async fn record_provisioned(&self, record: &CertificateRecord) -> PortResult<()> {
            self.call("record_provisioned", |w| {
                w.records.insert(record.certificate_id.clone(), record.clone());
                Ok(())
            })
        }

        async fn record_rejected(&self, record: &CertificateRecord) -> PortResult<()> {
            self.record_provisioned(record).await
        }

        async fn record_observed(&self, record: &CertificateRecord) -> PortResult<()> {
            self.record_provisioned(record).await
        }

        async fn claim_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<NameClaim> {
            self.call("claim_thing_name", |w| {
                let holder = w
                    .claims
                    .entry(thing_name.into())
                    .or_insert_with(|| certificate_id.into());
                Ok(if holder == certificate_id {
                    NameClaim::Claimed
                } else {
                    NameClaim::HeldBy(holder.clone())
                })
            })
        }

        async fn transfer_thing_name(&self, thing_name: &str, from: &str, to: &str) -> PortResult<bool> {
            self.call("transfer_thing_name", |w| match w.claims.get_mut(thing_name) {
                Some(holder) if holder == from => {
                    *holder = to.into();
                    Ok(true)
                }
                _ => Ok(false),
            })
        }

        async fn release_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<()> {
            self.call("release_thing_name", |w| {
                if w.claims.get(thing_name).is_some_and(|h| h == certificate_id) {
                    w.claims.remove(thing_name);
                }
                Ok(())
            })
        }
    }

    impl DenyList for Fake {
        async fn denial(&self, ca: &str, serial: &str, fingerprint: &str) -> PortResult<Option<Rejection>> {
            self.call("denial", |w| {
                Ok(if w.denied.contains(fingerprint) {
                    Some(Rejection::new(crate::RejectReason::FingerprintDenied, fingerprint))
                } else if w.denied.contains(&format!("{ca}#{serial}")) {
                    Some(Rejection::new(crate::RejectReason::SerialDenied, serial))
                } else {
                    None
                })
            })
        }
    }

    impl RotationIot for Fake {
        async fn create_job(
            &self,
            job_id: &str,
            thing_name: &str,
            document: &JobDocument,
            _timeout_minutes: u32,
        ) -> PortResult<()> {
            self.call("create_job", |w| {
                w.jobs.entry(job_id.into()).or_insert_with(|| FakeJob {
                    thing: thing_name.into(),
                    document: document.clone(),
                    status: "QUEUED".into(),
                    details: BTreeMap::new(),
                    queued_at: None,
                    started_at: None,
                });
                Ok(())
            })
        }

        async fn job_execution(&self, job_id: &str, thing_name: &str) -> PortResult<Option<JobExecution>> {
            self.call("job_execution", |w| {
                Ok(w.jobs
                    .get(job_id)
                    .filter(|j| j.thing == thing_name)
                    .map(|j| JobExecution {
                        status: j.status.clone(),
                        status_details: j.details.clone(),
                        queued_at: j.queued_at,
                        started_at: j.started_at,
                        last_updated_at: None,
                    }))
            })
        }

        async fn cancel_job(&self, job_id: &str) -> PortResult<()> {
            // As the adapter: a missing or ended job is fine.
            self.call("cancel_job", |w| {
                if let Some(job) = w.jobs.get_mut(job_id)
                    && matches!(job.status.as_str(), "QUEUED" | "IN_PROGRESS")
                {
                    job.status = "CANCELED".into();
                }
                Ok(())
            })
        }

        async fn certificate_from_csr(&self, csr_pem: &str) -> PortResult<IssuedCertificate> {
            self.call("certificate_from_csr", |w| {
                let invalid =
                    |e: rcgen::Error| PortError::new("certificate_from_csr", PortErrorKind::Invalid, e.to_string());
                let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(invalid)?;
                validity(&mut csr.params);
                let pem = csr.signed_by(&self.signer.0).map_err(invalid)?.pem();
                self.issue(w, pem, None)
            })
        }

        async fn keys_and_certificate(&self) -> PortResult<IssuedCertificate> {
            self.call("keys_and_certificate", |w| {
                let invalid =
                    |e: rcgen::Error| PortError::new("keys_and_certificate", PortErrorKind::Invalid, e.to_string());
                let key = rcgen::KeyPair::generate().map_err(invalid)?;
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "AWS IoT Certificate");
                validity(&mut params);
                let pem = params.signed_by(&key, &self.signer.0).map_err(invalid)?.pem();
                self.issue(w, pem, Some(key.serialize_pem()))
            })
        }

        async fn certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
            self.call("certificate", |w| {
                Ok(w.certs.get(certificate_id).map(|c| RegisteredCertificate {
                    certificate_id: certificate_id.into(),
                    certificate_arn: c.arn.clone(),
                    ca_certificate_id: None,
                    status: c.status.clone(),
                    pem: c.pem.clone(),
                }))
            })
        }

        async fn set_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
            self.call("set_status", |w| {
                let cert = w.certs.get_mut(certificate_id).ok_or_else(|| {
                    PortError::new("set_status", PortErrorKind::MissingResource, "no such certificate")
                })?;
                if cert.status == CertificateStatus::Revoked && *status != CertificateStatus::Revoked {
                    return Err(conflict("set_status", "a revoked certificate stays revoked"));
                }
                cert.status = status.clone();
                Ok(())
            })
        }

        async fn thing_principals(&self, thing_name: &str) -> PortResult<Vec<String>> {
            self.call("thing_principals", |w| {
                Ok(w.certs
                    .values()
                    .filter(|c| c.thing.as_deref() == Some(thing_name))
                    .map(|c| c.arn.clone())
                    .collect())
            })
        }

        async fn attach_to_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
            self.call("attach_to_thing", |w| {
                let cert = w.certs.get_mut(&id_of(certificate_arn)).ok_or_else(|| {
                    PortError::new("attach_to_thing", PortErrorKind::MissingResource, "no such certificate")
                })?;
                match &cert.thing {
                    Some(other) if other != thing_name => {
                        Err(conflict("attach_to_thing", "exclusive to another thing"))
                    }
                    _ => {
                        cert.thing = Some(thing_name.into());
                        Ok(())
                    }
                }
            })
        }

        async fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
            self.call("detach_from_thing", |w| {
                if let Some(cert) = w.certs.get_mut(&id_of(certificate_arn))
                    && cert.thing.as_deref() == Some(thing_name)
                {
                    cert.thing = None;
                }
                Ok(())
            })
        }

        async fn policies(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
            self.call("policies", |w| {
                Ok(w.certs
                    .get(&id_of(certificate_arn))
                    .map(|c| c.policies.iter().cloned().collect())
                    .unwrap_or_default())
            })
        }

        async fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
            self.call("attach_policy", |w| {
                let cert = w.certs.get_mut(&id_of(certificate_arn)).ok_or_else(|| {
                    PortError::new("attach_policy", PortErrorKind::MissingResource, "no such certificate")
                })?;
                cert.policies.insert(policy_name.into());
                Ok(())
            })
        }

        async fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
            self.call("detach_policy", |w| {
                if let Some(cert) = w.certs.get_mut(&id_of(certificate_arn)) {
                    cert.policies.remove(policy_name);
                }
                Ok(())
            })
        }

        async fn delete_certificate(&self, certificate_id: &str) -> PortResult<()> {
            self.call("delete_certificate", |w| {
                let Some(cert) = w.certs.get(certificate_id) else {
                    return Ok(());
                };
                if cert.status == CertificateStatus::Active {
                    return Err(conflict("delete_certificate", "certificate is ACTIVE"));
                }
                if cert.thing.is_some() || !cert.policies.is_empty() {
                    return Err(conflict("delete_certificate", "certificate is attached"));
                }
                w.certs.remove(certificate_id);
                Ok(())
            })
        }

        async fn publish(&self, topic: &str, payload: &[u8]) -> PortResult<()> {
            self.call("publish", |w| {
                w.published.push((topic.into(), payload.to_vec()));
                Ok(())
            })
        }
    }

    impl RotationObjects for Fake {
        async fn put_object(&self, key: &str, body: &[u8]) -> PortResult<()> {
            self.call("put_object", |w| {
                w.objects.insert(key.into(), body.to_vec());
                Ok(())
            })
        }

        async fn delete_object(&self, key: &str) -> PortResult<()> {
            self.call("delete_object", |w| {
                w.objects.remove(key);
                Ok(())
            })
        }

        fn bucket(&self) -> &str {
            BUCKET
        }
    }

    /// A clock that moves only when slept on.
    #[derive(Clone)]
    struct FakePacer {
        start: Instant,
        slept: Arc<StdMutex<Vec<Duration>>>,
    }

    impl FakePacer {
        fn new() -> Self {
            Self {
                start: Instant::now(),
                slept: Arc::default(),
            }
        }

        fn sleeps(&self) -> Vec<Duration> {
            self.slept.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }
    }

    impl Pacer for FakePacer {
        fn now(&self) -> Instant {
            self.start + self.sleeps().iter().sum::<Duration>()
        }

        fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
            self.slept.lock().unwrap_or_else(PoisonError::into_inner).push(duration);
            std::future::ready(())
        }
    }

    // --- helpers --------------------------------------------------------------

    type TestRotator = Rotator<Fake, Fake, Fake, Fake, FakePacer>;

    fn rotator_with(fake: &Fake, settings: RotatorSettings) -> (TestRotator, FakePacer) {
        let pacer = FakePacer::new();
        let rotator = Rotator::new(
            fake.clone(),
            fake.clone(),
            fake.clone(),
            fake.clone(),
            pacer.clone(),
            settings,
        );
        (rotator, pacer)
    }

    fn rotator(fake: &Fake) -> TestRotator {
        rotator_with(fake, RotatorSettings::default()).0
    }

    fn issuer(fake: &Fake) -> CsrIssuer<Fake, Fake, Fake> {
        let settings = CsrIssuerSettings {
            cache_ttl: Duration::ZERO,
            ..CsrIssuerSettings::default()
        };
        CsrIssuer::new(fake.clone(), fake.clone(), fake.clone(), settings)
    }

    fn completer(fake: &Fake) -> Completer<Fake, Fake, Fake, Fake> {
        let settings = CompleterSettings {
            cache_ttl: Duration::ZERO,
            ..CompleterSettings::default()
        };
        Completer::new(fake.clone(), fake.clone(), fake.clone(), fake.clone(), settings)
    }

    /// A CSR from a fresh P-256 key.
    fn csr(common_name: &str) -> String {
        let key = rcgen::KeyPair::generate().expect("device key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.serialize_request(&key).expect("CSR").pem().expect("PEM")
    }

    fn event(job_id: &str, thing: &str, status: &str, confirmed: Option<&str>) -> JobExecutionEvent {
        JobExecutionEvent {
            job_id: job_id.into(),
            thing_arn: format!("arn:aws:iot:eu-west-1:123456789012:thing/{thing}"),
            status: status.into(),
            status_details: confirmed
                .map(|c| BTreeMap::from([(CONFIRMATION_FIELD.to_string(), c.to_string())]))
                .unwrap_or_default(),
        }
    }

    async fn run(rotator: &TestRotator, now: i64) -> RunReport {
        rotator.run(now).await.unwrap_or_else(|e| panic!("rotator run: {e}"))
    }

    /// Runs the rotator until a run has no error (at most five runs).
    async fn run_until_clean(rotator: &TestRotator, now: i64) -> RunReport {
        for _ in 0..5 {
            if let Ok(report) = rotator.run(now).await
                && report.errors == 0
                && !report.interrupted
            {
                return report;
            }
        }
        panic!("the rotator did not converge");
    }

    /// Retries a handler until it succeeds (at most five tries), as Lambda
    /// retries a failed asynchronous invocation.
    async fn retry<X, F, Fut>(mut handler: F) -> X
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<X, RotationError>>,
    {
        for _ in 0..5 {
            if let Ok(x) = handler().await {
                return x;
            }
        }
        panic!("the handler did not converge");
    }

    fn expect_issued(outcome: CsrOutcome) -> String {
        match outcome {
            CsrOutcome::Issued { new_certificate_id, .. } => new_certificate_id,
            other => panic!("expected an issued certificate, got {other:?}"),
        }
    }

    // --- end to end -----------------------------------------------------------

    #[tokio::test]
    async fn csr_rotation_end_to_end() {
        let fake = Fake::new(Strategy::Csr, 1);
        let (rotator, issuer, completer) = (rotator(&fake), issuer(&fake), completer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));

        let report = run(&rotator, T0).await;
        assert_eq!((report.examined, report.started), (1, 1), "{report:?}");
        let (job_id, job) = fake.with(|w| w.current_job(&thing));
        let r = fake.with(|w| w.rotation_of(&thing));
        assert_eq!(
            (r.state, r.attempt, r.job_id.as_str()),
            (RotationState::Requested, 1, job_id.as_str())
        );
        assert_eq!(
            r.due_at,
            Some(RotationPolicy::default().job_deadline(T0)),
            "started: due at the deadline"
        );
        assert_eq!(job.document, JobDocument::csr(&r));

        let message = CsrMessage {
            job_id: job_id.clone(),
            csr: csr(&thing),
        };
        let outcome = issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued");
        let new = expect_issued(outcome);
        fake.with(|w| {
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.new_certificate_id.as_deref()),
                (RotationState::Delivered, Some(new.as_str()))
            );
            let cert = w.cert(&new);
            assert_eq!(cert.status, CertificateStatus::Active);
            assert_eq!(cert.thing.as_deref(), Some(thing.as_str()));
            assert!(cert.policies.contains(POLICY));
            let record = w.records.get(&new).expect("new record");
            assert_eq!(
                (record.status, record.thing_name.as_deref(), record.profile.as_deref()),
                (RecordStatus::Provisioned, Some(thing.as_str()), Some(PROFILE))
            );
            assert_eq!(record.ca_certificate_id, CA);
            assert_eq!(
                record.not_after,
                Some(rcgen::date_time_ymd(2031, 1, 1).unix_timestamp())
            );
            let answers = w.answers(&thing);
            assert_eq!(answers.len(), 1);
            assert_eq!(answers[0]["status"], "ISSUED");
            assert_eq!(answers[0]["certificateId"], new.as_str());
            assert_eq!(w.cert(&old).status, CertificateStatus::Active, "old untouched so far");
        });

        fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
        let outcome = completer
            .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 120)
            .await
            .expect("completed");
        assert_eq!(
            outcome,
            CompletionOutcome::Completed {
                thing_name: thing.clone(),
                old_certificate_id: old.clone(),
                new_certificate_id: new.clone(),
            }
        );
        fake.with(|w| {
            let old_cert = w.cert(&old);
            assert_eq!(old_cert.status, CertificateStatus::Inactive);
            assert_eq!(old_cert.thing, None);
            assert!(old_cert.policies.is_empty());
            assert_eq!(w.claims.get(&thing), Some(&new));
            assert_eq!(w.records.get(&old).map(|r| r.status), Some(RecordStatus::Rotated));
            let r = w.rotation_of(&thing);
            assert_eq!(r.state, RotationState::Retired);
            assert_eq!(r.due_at, Some(T0 + 120 + 7 * DAY));
        });
        let duplicate = completer
            .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 130)
            .await
            .expect("duplicate");
        assert_eq!(duplicate.label(), "duplicate");

        let report = run(&rotator, T0 + DAY).await;
        assert_eq!(
            (report.deleted, report.started),
            (0, 0),
            "not before the grace period: {report:?}"
        );
        let report = run(&rotator, T0 + 120 + 7 * DAY).await;
        assert_eq!(report.deleted, 1, "{report:?}");
        fake.with(|w| {
            assert!(!w.certs.contains_key(&old), "old certificate deleted");
            let r = w.rotation_of(&thing);
            assert_eq!((r.old_deleted_at, r.due_at), (Some(T0 + 120 + 7 * DAY), None));
        });
        let report = run(&rotator, T0 + 9 * DAY).await;
        assert_eq!(report, RunReport::default(), "nothing left to do");
    }

    #[tokio::test]
    async fn server_keygen_rotation_end_to_end() {
        let fake = Fake::new(Strategy::ServerKeygen, 1);
        let (rotator, completer) = (rotator(&fake), completer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));

        let report = run(&rotator, T0).await;
        assert_eq!(report.started, 1, "{report:?}");
        let (job_id, job) = fake.with(|w| w.current_job(&thing));
        let instructions = job.document.server_keygen.clone().expect("server-keygen instructions");
        let new = instructions.new_certificate_id.clone();
        let (certificate_key, private_key_key) = credential_keys(&thing, &new);
        assert_eq!(
            certificate_key,
            format!("rotation/{thing}/{new}/certificate.pem"),
            "documented key layout"
        );
        assert_eq!(
            instructions.private_key_url,
            format!("${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{BUCKET}/{private_key_key}}}")
        );
        fake.with(|w| {
            assert!(w.objects.contains_key(&certificate_key) && w.objects.contains_key(&private_key_key));
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.new_certificate_id.as_deref()),
                (RotationState::Issued, Some(new.as_str()))
            );
            assert_eq!(r.object_keys, vec![certificate_key.clone(), private_key_key.clone()]);
            let cert = w.cert(&new);
            assert_eq!(
                (cert.status, cert.thing.as_deref()),
                (CertificateStatus::Active, Some(thing.as_str()))
            );
            assert!(cert.policies.contains(POLICY));
            assert_eq!(w.records.get(&new).map(|r| r.status), Some(RecordStatus::Provisioned));
        });

        fake.with(|w| w.set_job(&job_id, "IN_PROGRESS", None));
        let outcome = completer
            .handle(&event(&job_id, &thing, "IN_PROGRESS", None), T0 + 60)
            .await
            .expect("delivered");
        assert_eq!(
            outcome,
            CompletionOutcome::Delivered {
                thing_name: thing.clone()
            }
        );

        fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
        let outcome = completer
            .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 120)
            .await
            .expect("completed");
        assert_eq!(outcome.label(), "completed");
        fake.with(|w| {
            assert!(
                w.objects.is_empty(),
                "the private key is deleted once the device confirms"
            );
            assert_eq!(w.cert(&old).status, CertificateStatus::Inactive);
            assert_eq!(w.claims.get(&thing), Some(&new));
        });

        let report = run(&rotator, T0 + 120 + 7 * DAY).await;
        assert_eq!(report.deleted, 1, "{report:?}");
        assert!(fake.with(|w| !w.certs.contains_key(&old)));
    }

    #[tokio::test]
    async fn a_second_run_during_an_open_rotation_starts_nothing() {
        let fake = Fake::new(Strategy::Csr, 1);
        let rotator = rotator(&fake);
        assert_eq!(run(&rotator, T0).await.started, 1);
        let report = run(&rotator, T0 + 600).await;
        assert_eq!((report.started, report.skipped_open), (0, 1), "{report:?}");
        assert_eq!(fake.with(|w| w.jobs.len()), 1);
    }

    #[tokio::test]
    async fn the_deadline_fails_the_attempt_and_a_retry_starts_attempt_two() {
        let fake = Fake::new(Strategy::Csr, 1);
        let (rotator, issuer) = (rotator(&fake), issuer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));
        let policy = RotationPolicy::default();
        run(&rotator, T0).await;
        let (job_1, _) = fake.with(|w| w.current_job(&thing));
        let message = CsrMessage {
            job_id: job_1.clone(),
            csr: csr(&thing),
        };
        let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
        // The device took its job up at once, then goes silent.
        fake.with(|w| w.take_up_jobs(T0));
        let deadline = policy.job_deadline(T0);
        let report = run(&rotator, deadline - 1).await;
        assert_eq!((report.followed_up, report.failed), (0, 0), "not yet: {report:?}");

        let report = run(&rotator, deadline).await;
        assert_eq!(
            (report.followed_up, report.failed, report.gave_up),
            (1, 1, 0),
            "{report:?}"
        );
        let retry_at = policy.retry_at(deadline, 1).expect("attempts left");
        fake.with(|w| {
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.reason, r.due_at),
                (RotationState::Failed, Some(FailureReason::JobTimedOut), Some(retry_at))
            );
            let old_cert = w.cert(&old);
            assert_eq!(old_cert.status, CertificateStatus::Active, "old certificate untouched");
            assert_eq!(old_cert.thing.as_deref(), Some(thing.as_str()));
            assert!(old_cert.policies.contains(POLICY));
            assert_eq!(w.claims.get(&thing), Some(&old));
            let new_cert = w.cert(&new);
            assert_eq!(new_cert.status, CertificateStatus::Revoked);
            assert_eq!(new_cert.thing, None);
            assert!(new_cert.policies.is_empty());
            assert_eq!(w.jobs[&job_1].status, "CANCELED");
        });

        let report = run(&rotator, retry_at - 1).await;
        assert_eq!(report.retried, 0, "{report:?}");
        let report = run(&rotator, retry_at).await;
        assert_eq!(report.retried, 1, "{report:?}");
        let (job_2, _) = fake.with(|w| w.current_job(&thing));
        assert_ne!(job_2, job_1);
        assert!(job_2.ends_with("-2"), "{job_2}");
        fake.with(|w| {
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.attempt, r.new_certificate_id.clone()),
                (RotationState::Requested, 2, None)
            );
            assert_eq!(r.due_at, Some(policy.job_deadline(retry_at)));
        });
        // The second attempt goes through.
        let message = CsrMessage {
            job_id: job_2.clone(),
            csr: csr(&thing),
        };
        let new = expect_issued(
            issuer
                .handle(&thing, &old, &message, retry_at + 60)
                .await
                .expect("issued"),
        );
        fake.with(|w| w.set_job(&job_2, "SUCCEEDED", Some(&new)));
        let outcome = completer(&fake)
            .handle(&event(&job_2, &thing, "SUCCEEDED", Some(&new)), retry_at + 120)
            .await
            .expect("completed");
        assert_eq!(outcome.label(), "completed");
        // A late event of the first attempt changes nothing.
        let late = completer(&fake)
            .handle(&event(&job_1, &thing, "CANCELED", None), retry_at + 130)
            .await
            .expect("ignored");
        assert_eq!(
            late,
            CompletionOutcome::Ignored {
                reason: IgnoreReason::UnknownJob
            }
        );
    }

    #[tokio::test]
    async fn no_retry_after_the_last_attempt() {
        let fake = Fake::new(Strategy::Csr, 1);
        let mut p = profile(Strategy::Csr);
        p.rotation.max_attempts = 2;
        let policy = p.rotation;
        fake.with(|w| w.set_profile(p));
        let rotator = rotator(&fake);
        let thing = thing(0);

        run(&rotator, T0).await;
        // The device takes each job up at once and never answers.
        fake.with(|w| w.take_up_jobs(T0));
        let deadline_1 = policy.job_deadline(T0);
        assert_eq!(run(&rotator, deadline_1).await.failed, 1);
        let retry_at = policy.retry_at(deadline_1, 1).expect("a second attempt");
        assert_eq!(run(&rotator, retry_at).await.retried, 1);
        fake.with(|w| w.take_up_jobs(retry_at));
        let deadline_2 = policy.job_deadline(retry_at);
        let report = run(&rotator, deadline_2).await;
        assert_eq!((report.failed, report.gave_up), (1, 1), "{report:?}");
        fake.with(|w| {
            let r = w.rotation_of(&thing);
            assert_eq!((r.state, r.attempt, r.due_at), (RotationState::Failed, 2, None));
        });
        for later in [deadline_2 + DAY, deadline_2 + 10 * DAY] {
            let report = run(&rotator, later).await;
            assert_eq!(
                (report.retried, report.started, report.skipped_open),
                (0, 0, 1),
                "{report:?}"
            );
        }
        assert_eq!(fake.with(|w| w.jobs.len()), 2, "no third job");
        assert_eq!(fake.with(|w| w.cert(&old_id(&thing)).status), CertificateStatus::Active);
    }

    #[tokio::test]
    async fn a_csr_naming_another_thing_is_refused_and_fails_the_attempt() {
        let fake = Fake::new(Strategy::Csr, 2);
        let (rotator, issuer) = (rotator(&fake), issuer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));
        assert_eq!(run(&rotator, T0).await.started, 2);
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        let certificates_before = fake.with(|w| w.certs.len());

        let message = CsrMessage {
            job_id: job_id.clone(),
            csr: csr("dev-1"),
        };
        let outcome = issuer.handle(&thing, &old, &message, T0 + 60).await.expect("refused");
        let CsrOutcome::Refused { rejection, .. } = outcome else {
            panic!("expected a refusal, got {outcome:?}");
        };
        assert_eq!(rejection.reason.code(), "IDENTITY_COLLISION");
        fake.with(|w| {
            let answers = w.answers(&thing);
            assert_eq!(answers.len(), 1);
            assert_eq!(answers[0]["status"], "REFUSED");
            assert_eq!(answers[0]["reasonCode"], "IDENTITY_COLLISION");
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.reason),
                (RotationState::Failed, Some(FailureReason::CsrRefused))
            );
            assert!(r.due_at.is_some(), "retried later");
            assert_eq!(w.jobs[&job_id].status, "CANCELED");
            assert_eq!(w.certs.len(), certificates_before, "no certificate made");
            assert_eq!(w.cert(&old).status, CertificateStatus::Active);
            assert_eq!(
                w.rotation_of("dev-1").state,
                RotationState::Requested,
                "the other thing's rotation untouched"
            );
        });
        // The canceled job's event is the fail path's own doing: no second alarm.
        let outcome = completer(&fake)
            .handle(&event(&job_id, &thing, "CANCELED", None), T0 + 70)
            .await
            .expect("duplicate");
        assert!(!outcome.is_alarm(), "{outcome:?}");
    }

    #[tokio::test]
    async fn the_issuer_acts_only_on_the_things_own_rotation() {
        let fake = Fake::new(Strategy::Csr, 2);
        let (rotator, issuer) = (rotator(&fake), issuer(&fake));
        run(&rotator, T0).await;
        let (job_0, _) = fake.with(|w| w.current_job("dev-0"));
        let old_0 = old_id("dev-0");
        let pem = csr("dev-0");
        let message = CsrMessage {
            job_id: job_0.clone(),
            csr: pem.clone(),
        };
        let ignored = |reason| CsrOutcome::Ignored { reason };

        // dev-1 publishing (on its own topic) dev-0's job.
        let outcome = issuer.handle("dev-1", &old_id("dev-1"), &message, T0 + 10).await;
        assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::OtherThing));
        // dev-0's topic, another certificate.
        let outcome = issuer.handle("dev-0", &old_id("dev-1"), &message, T0 + 10).await;
        assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::NotOurPrincipal));
        let unknown = CsrMessage {
            job_id: "rotate-nope-1".into(),
            csr: pem.clone(),
        };
        let outcome = issuer.handle("dev-0", &old_0, &unknown, T0 + 10).await;
        assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::UnknownJob));
        assert_eq!(fake.with(|w| w.rotation_of("dev-0").state), RotationState::Requested);

        // Asked twice with the same key (by the old, then the new
        // certificate): the same certificate, made once.
        let new = expect_issued(issuer.handle("dev-0", &old_0, &message, T0 + 20).await.expect("issued"));
        let certificates = fake.with(|w| w.certs.len());
        let again = issuer.handle("dev-0", &new, &message, T0 + 30).await.expect("resent");
        assert_eq!(
            again,
            CsrOutcome::Issued {
                thing_name: "dev-0".into(),
                new_certificate_id: new.clone(),
                resent: true
            }
        );
        assert_eq!(fake.with(|w| w.certs.len()), certificates);
        assert_eq!(fake.with(|w| w.answers("dev-0").len()), 2);
        // Another key: not this certificate.
        let other_key = CsrMessage {
            job_id: job_0,
            csr: csr("dev-0"),
        };
        let outcome = issuer.handle("dev-0", &old_0, &other_key, T0 + 40).await;
        assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::KeyMismatch));
        assert_eq!(fake.with(|w| w.rotation_of("dev-0").state), RotationState::Delivered);
    }

    #[tokio::test]
    async fn a_confirmation_naming_another_certificate_fails_the_attempt() {
        let fake = Fake::new(Strategy::Csr, 1);
        let (rotator, issuer, completer) = (rotator(&fake), issuer(&fake), completer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));
        run(&rotator, T0).await;
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        let message = CsrMessage {
            job_id: job_id.clone(),
            csr: csr(&thing),
        };
        let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
        let other = "f".repeat(64);
        fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&other)));
        let outcome = completer
            .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&other)), T0 + 120)
            .await
            .expect("failed");
        assert!(outcome.is_alarm());
        let CompletionOutcome::Failed { reason, retry_at, .. } = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert_eq!(reason, FailureReason::WrongConfirmation);
        assert!(retry_at.is_some());
        fake.with(|w| {
            assert_eq!(w.cert(&old).status, CertificateStatus::Active);
            assert_eq!(w.cert(&old).thing.as_deref(), Some(thing.as_str()));
            assert_eq!(w.claims.get(&thing), Some(&old));
            assert_eq!(w.cert(&new).status, CertificateStatus::Revoked);
            assert_eq!(w.cert(&new).thing, None);
            assert_eq!(w.records.get(&old).map(|r| r.status), Some(RecordStatus::Provisioned));
        });
    }

    #[tokio::test]
    async fn a_failed_job_event_fails_the_attempt_once() {
        let fake = Fake::new(Strategy::ServerKeygen, 1);
        let (rotator, completer) = (rotator(&fake), completer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));
        run(&rotator, T0).await;
        let (job_id, job) = fake.with(|w| w.current_job(&thing));
        let new = job.document.server_keygen.expect("instructions").new_certificate_id;
        fake.with(|w| w.set_job(&job_id, "REJECTED", None));
        let outcome = completer
            .handle(&event(&job_id, &thing, "REJECTED", None), T0 + 60)
            .await
            .expect("failed");
        assert!(
            matches!(
                outcome,
                CompletionOutcome::Failed {
                    reason: FailureReason::JobRejected,
                    ..
                }
            ),
            "{outcome:?}"
        );
        fake.with(|w| {
            assert!(w.objects.is_empty(), "credentials deleted");
            assert_eq!(w.cert(&new).status, CertificateStatus::Revoked);
            assert_eq!(w.cert(&old).status, CertificateStatus::Active);
        });
        let again = completer
            .handle(&event(&job_id, &thing, "REJECTED", None), T0 + 70)
            .await
            .expect("duplicate");
        assert_eq!(
            again,
            CompletionOutcome::Duplicate {
                thing_name: thing,
                state: RotationState::Failed
            }
        );
        let other = completer
            .handle(&event("ota-update-7", "dev-0", "SUCCEEDED", None), T0 + 80)
            .await
            .expect("ignored");
        assert_eq!(
            other,
            CompletionOutcome::Ignored {
                reason: IgnoreReason::UnknownJob
            }
        );
    }

    #[tokio::test]
    async fn a_lost_success_event_is_found_at_the_deadline() {
        let fake = Fake::new(Strategy::Csr, 1);
        let (rotator, issuer) = (rotator(&fake), issuer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));
        run(&rotator, T0).await;
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        let message = CsrMessage {
            job_id: job_id.clone(),
            csr: csr(&thing),
        };
        let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
        // The device confirms; the event never reaches the completer.
        fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
        let deadline = RotationPolicy::default().job_deadline(T0);
        let report = run(&rotator, deadline).await;
        assert_eq!((report.completed, report.failed), (1, 0), "{report:?}");
        fake.with(|w| {
            assert_eq!(w.rotation_of(&thing).state, RotationState::Retired);
            assert_eq!(w.cert(&old).status, CertificateStatus::Inactive);
            assert_eq!(w.claims.get(&thing), Some(&new));
        });
    }

    #[tokio::test]
    async fn a_confirmation_before_the_rotator_recorded_issued_completes() {
        // The rotator stops right before recording `issued` (its third write
        // of the rotation), after the job is out.
        let probe = Fake::new(Strategy::ServerKeygen, 1);
        run(&rotator(&probe), T0).await;
        let calls = probe.with(|w| w.calls.clone());
        let third_put = calls
            .iter()
            .enumerate()
            .filter(|(_, op)| **op == "put_rotation")
            .nth(2)
            .map(|(n, _)| n)
            .expect("three writes");
        assert_eq!(calls[third_put - 1], "create_job");

        let fake = Fake::new(Strategy::ServerKeygen, 1);
        fake.with(|w| w.inject = Some(Inject::Before(third_put)));
        let report = run(&rotator(&fake), T0).await;
        assert_eq!(report.errors, 1, "{report:?}");
        let thing = thing(0);
        let (job_id, job) = fake.with(|w| w.current_job(&thing));
        assert_eq!(fake.with(|w| w.rotation_of(&thing).state), RotationState::Requested);
        let new = job.document.server_keygen.expect("instructions").new_certificate_id;
        fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
        let outcome = completer(&fake)
            .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 60)
            .await
            .expect("completed");
        assert_eq!(outcome.label(), "completed", "{outcome:?}");
        fake.with(|w| {
            let r = w.rotation_of(&thing);
            assert_eq!((r.state, r.issued_at), (RotationState::Retired, Some(T0 + 60)));
            assert!(w.objects.is_empty());
        });
    }

    // --- bounded work -----------------------------------------------------------

    #[tokio::test]
    async fn four_runs_of_three_start_ten_and_resume_from_the_cursor() {
        let fake = Fake::new(Strategy::Csr, 10);
        let settings = RotatorSettings {
            max_new_per_run: 3,
            ..RotatorSettings::default()
        };
        let (rotator, _) = rotator_with(&fake, settings);
        let mut started = Vec::new();
        for (i, expected) in [3, 3, 3, 1].into_iter().enumerate() {
            let report = run(&rotator, T0 + 60 * i as i64).await;
            assert_eq!(
                (report.started, report.examined),
                (expected, expected),
                "run {i}: {report:?}"
            );
            assert_eq!(report.skipped_open, 0, "run {i} did not look again at started ones");
            assert_eq!(report.budget_exhausted, i < 3, "run {i}");
            let cursor = fake.with(|w| w.cursors.get(EXPIRING_CURSOR).cloned());
            assert_eq!(cursor.is_some(), i < 3, "run {i}: a finished pass clears the cursor");
            started.push(fake.with(|w| w.rotations.len()));
        }
        assert_eq!(started, vec![3, 6, 9, 10]);
        // Oldest first: run one took the three closest to expiry.
        fake.with(|w| {
            for i in 0..10 {
                assert_eq!(w.rotation_of(&thing(i)).requested_at, T0 + 60 * (i as i64 / 3));
            }
        });
    }

    #[tokio::test]
    async fn create_job_calls_are_paced() {
        let fake = Fake::new(Strategy::Csr, 3);
        let settings = RotatorSettings {
            create_job_interval: Duration::from_millis(250),
            ..RotatorSettings::default()
        };
        let (rotator, pacer) = rotator_with(&fake, settings);
        assert_eq!(run(&rotator, T0).await.started, 3);
        assert_eq!(pacer.sleeps(), vec![Duration::from_millis(250); 2]);
    }

    #[tokio::test]
    async fn follow_ups_are_bounded_too() {
        let fake = Fake::new(Strategy::Csr, 5);
        let settings = RotatorSettings {
            max_follow_ups_per_run: 2,
            page_size: 1,
            ..RotatorSettings::default()
        };
        let (rotator, _) = rotator_with(&fake, settings);
        assert_eq!(run(&rotator, T0).await.started, 5);
        fake.with(|w| w.take_up_jobs(T0));
        let deadline = RotationPolicy::default().job_deadline(T0);
        for (i, expected) in [2, 2, 1].into_iter().enumerate() {
            let report = run(&rotator, deadline + i as i64).await;
            assert_eq!(
                (report.followed_up, report.failed),
                (expected, expected),
                "run {i}: {report:?}"
            );
            assert_eq!(report.budget_exhausted, i < 2, "run {i}");
        }
        assert_eq!(fake.with(|w| w.cursors.get(DUE_CURSOR).cloned()), None);
        let failed = fake.with(|w| {
            w.rotations
                .values()
                .filter(|r| r.state == RotationState::Failed)
                .count()
        });
        assert_eq!(failed, 5);
    }

    #[tokio::test]
    async fn certificates_outside_their_window_of_a_gone_profile_or_not_active_are_skipped() {
        let fake = Fake::new(Strategy::Csr, 4);
        let mut short = DeviceProfile::minimal("short-window", POLICY);
        short.rotation.window_days = 10;
        fake.with(|w| {
            w.config.add_profile(short.name.clone(), Ok(short));
            w.config.bind("ca-2".into(), "short-window".into());
            w.records.get_mut(&old_id("dev-0")).expect("record").profile = Some("retired-profile".into());
            // Expires in 20 days; its profile rotates 10 days ahead.
            w.records.get_mut(&old_id("dev-1")).expect("record").profile = Some("short-window".into());
            w.certs.get_mut(&old_id("dev-2")).expect("certificate").status = CertificateStatus::Revoked;
        });
        let rotator = rotator(&fake);
        let report = run(&rotator, T0).await;
        assert_eq!(
            (
                report.examined,
                report.started,
                report.skipped_no_profile,
                report.skipped_not_due,
                report.skipped_inactive
            ),
            (4, 1, 1, 1, 1),
            "{report:?}"
        );
        assert_eq!(fake.with(|w| w.rotation_of("dev-3").attempt), 1);
        let report = run(&rotator, T0 + 10 * DAY + 1).await;
        assert_eq!(report.started, 1, "dev-1 entered its window: {report:?}");
        assert_eq!(fake.with(|w| w.rotation_of("dev-1").profile.clone()), "short-window");
        assert_eq!(fake.with(|w| w.rotations.len()), 2);
    }

    // --- crash safety -----------------------------------------------------------

    /// A recorded new certificate: status, thing, policies, record status,
    /// and whether it is the current attempt's.
    type NewCertificate = (String, Option<String>, Vec<String>, &'static str, bool);

    /// How a scenario ends, with certificate ids abstracted.
    #[derive(Debug, PartialEq, Eq)]
    struct EndState {
        rotation: (RotationState, u32, [Option<i64>; 7], Option<FailureReason>),
        old_certificate: Option<(String, Option<String>, usize)>,
        /// Every certificate a rotation recorded (status, thing, policies,
        /// record status, current attempt's), sorted.
        new_certificates: Vec<NewCertificate>,
        claim: &'static str,
        old_record: Option<RecordStatus>,
        jobs: Vec<(String, String)>,
        /// Objects of the current attempt's certificate.
        objects: usize,
        /// Certificates made by an interrupted step and never recorded (and
        /// their objects) are unusable: not ACTIVE, attached to nothing.
        strays_unusable: bool,
    }

    fn end_state(fake: &Fake, thing: &str) -> EndState {
        fake.with(|w| {
            let r = w.rotation_of(thing);
            let old = r.old_certificate_id.clone();
            let current = r.new_certificate_id.clone();
            let is_current = |id: &str| current.as_deref() == Some(id);
            let stray = |id: &str| id != old && !w.records.contains_key(id);
            let unusable =
                |c: &FakeCert| c.status != CertificateStatus::Active && c.thing.is_none() && c.policies.is_empty();
            let strays_unusable = w.certs.iter().filter(|(id, _)| stray(id)).all(|(_, c)| unusable(c))
                && w.objects.keys().all(|key| {
                    current.as_deref().is_some_and(|c| key.contains(c))
                        || w.certs
                            .iter()
                            .any(|(id, c)| key.contains(id.as_str()) && stray(id) && unusable(c))
                });
            let mut new_certificates: Vec<_> = w
                .certs
                .iter()
                .filter(|(id, _)| **id != old && w.records.contains_key(*id))
                .map(|(id, c)| {
                    (
                        c.status.as_str().to_string(),
                        c.thing.clone(),
                        c.policies.iter().cloned().collect(),
                        w.records[id].status.as_str(),
                        is_current(id),
                    )
                })
                .collect();
            new_certificates.sort();
            let claim = match w.claims.get(thing) {
                Some(holder) if *holder == old => "old",
                Some(holder) if is_current(holder) => "new",
                _ => "other",
            };
            EndState {
                rotation: (
                    r.state,
                    r.attempt,
                    [
                        Some(r.requested_at),
                        r.issued_at,
                        r.delivered_at,
                        r.confirmed_at,
                        r.retired_at,
                        r.old_deleted_at,
                        r.due_at,
                    ],
                    r.reason,
                ),
                old_certificate: w
                    .certs
                    .get(&old)
                    .map(|c| (c.status.as_str().to_string(), c.thing.clone(), c.policies.len())),
                new_certificates,
                claim,
                old_record: w.records.get(&old).map(|r| r.status),
                jobs: w.jobs.iter().map(|(id, j)| (id.clone(), j.status.clone())).collect(),
                objects: w
                    .objects
                    .keys()
                    .filter(|key| current.as_deref().is_some_and(|c| key.contains(c)))
                    .count(),
                strays_unusable,
            }
        })
    }

    /// The whole rotation of one device, each workflow retried until it
    /// succeeds; returns the end state and the port calls made.
    async fn scenario(strategy: Strategy, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
        let fake = Fake::new(strategy, 1);
        fake.with(|w| w.inject = inject);
        let (rotator, issuer, completer) = (rotator(&fake), issuer(&fake), completer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));

        run_until_clean(&rotator, T0).await;
        let (job_id, job) = fake.with(|w| w.current_job(&thing));
        let new = match strategy {
            Strategy::Csr => {
                let message = CsrMessage {
                    job_id: job_id.clone(),
                    csr: csr(&thing),
                };
                expect_issued(retry(|| issuer.handle(&thing, &old, &message, T0 + 60)).await)
            }
            Strategy::ServerKeygen => {
                let new = job.document.server_keygen.expect("instructions").new_certificate_id;
                let (certificate_key, private_key_key) = credential_keys(&thing, &new);
                assert!(
                    fake.with(|w| w.objects.contains_key(&certificate_key) && w.objects.contains_key(&private_key_key))
                );
                fake.with(|w| w.set_job(&job_id, "IN_PROGRESS", None));
                let in_progress = event(&job_id, &thing, "IN_PROGRESS", None);
                let outcome = retry(|| completer.handle(&in_progress, T0 + 60)).await;
                assert!(matches!(outcome.label(), "delivered" | "duplicate"), "{outcome:?}");
                new
            }
        };
        fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
        let succeeded = event(&job_id, &thing, "SUCCEEDED", Some(&new));
        let outcome = retry(|| completer.handle(&succeeded, T0 + 120)).await;
        assert!(matches!(outcome.label(), "completed" | "duplicate"), "{outcome:?}");
        run_until_clean(&rotator, T0 + 120 + 8 * DAY).await;
        finish(&fake, &thing, inject)
    }

    /// A device that never confirms: the first attempt fails at its
    /// deadline, the second starts at the retry time.
    async fn failing_scenario(strategy: Strategy, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
        let fake = Fake::new(strategy, 1);
        fake.with(|w| w.inject = inject);
        let (rotator, issuer) = (rotator(&fake), issuer(&fake));
        let (thing, old) = (thing(0), old_id(&thing(0)));
        let policy = RotationPolicy::default();

        run_until_clean(&rotator, T0).await;
        if strategy == Strategy::Csr {
            let (job_id, _) = fake.with(|w| w.current_job(&thing));
            let message = CsrMessage {
                job_id,
                csr: csr(&thing),
            };
            expect_issued(retry(|| issuer.handle(&thing, &old, &message, T0 + 60)).await);
        }
        // The device took its job up at once, then never answered.
        fake.with(|w| w.take_up_jobs(T0));
        let deadline = policy.job_deadline(T0);
        run_until_clean(&rotator, deadline).await;
        let retry_at = policy.retry_at(deadline, 1).expect("attempts left");
        run_until_clean(&rotator, retry_at).await;
        finish(&fake, &thing, inject)
    }

    fn finish(fake: &Fake, thing: &str, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
        fake.with(|w| {
            if let Some(inject) = inject {
                assert!(w.inject.is_none(), "{inject:?} never happened");
            }
        });
        (end_state(fake, thing), fake.with(|w| w.calls.clone()))
    }

    /// Fails each port call of the reference run in turn, before and after
    /// its effect, and compares the end state with the reference.
    async fn crash_anywhere_converges<F, Fut>(strategy: Strategy, scenario: F) -> EndState
    where
        F: Fn(Strategy, Option<Inject>) -> Fut,
        Fut: Future<Output = (EndState, Vec<&'static str>)>,
    {
        let (reference, calls) = scenario(strategy, None).await;
        assert!(reference.strays_unusable);
        assert!(calls.len() > 30, "{calls:?}");
        for (n, op) in calls.iter().enumerate() {
            for inject in [Inject::Before(n), Inject::After(n)] {
                let (end, _) = scenario(strategy, Some(inject)).await;
                assert_eq!(end, reference, "{strategy:?}: failure {inject:?} of {op}");
            }
        }
        reference
    }

    fn assert_completed(end: &EndState) {
        assert_eq!(end.rotation.0, RotationState::Retired);
        assert!(end.rotation.2[5].is_some(), "old certificate deleted");
        assert_eq!(end.old_certificate, None);
        assert_eq!(
            end.new_certificates,
            vec![(
                "ACTIVE".to_string(),
                Some(thing(0)),
                vec![POLICY.to_string()],
                "PROVISIONED",
                true
            )]
        );
        assert_eq!(
            (end.claim, end.old_record, end.objects),
            ("new", Some(RecordStatus::Rotated), 0)
        );
    }

    fn assert_retrying(end: &EndState, strategy: Strategy) {
        let state = match strategy {
            Strategy::Csr => RotationState::Requested,
            Strategy::ServerKeygen => RotationState::Issued,
        };
        assert_eq!(
            (end.rotation.0, end.rotation.1),
            (state, 2),
            "the second attempt is out"
        );
        assert_eq!(
            end.old_certificate,
            Some(("ACTIVE".to_string(), Some(thing(0)), 1)),
            "old certificate untouched"
        );
        assert_eq!((end.claim, end.old_record), ("old", Some(RecordStatus::Provisioned)));
        let first = ("REVOKED".to_string(), None, Vec::new(), "PROVISIONED", false);
        assert!(end.new_certificates.contains(&first), "{:?}", end.new_certificates);
        assert_eq!(end.jobs.iter().filter(|(_, s)| s == "CANCELED").count(), 1);
        assert_eq!(end.jobs.len(), 2);
        if strategy == Strategy::ServerKeygen {
            assert_eq!(end.objects, 2, "the second attempt's credentials");
        }
    }

    #[tokio::test]
    async fn a_csr_rotation_interrupted_at_any_step_converges() {
        assert_completed(&crash_anywhere_converges(Strategy::Csr, scenario).await);
    }

    #[tokio::test]
    async fn a_server_keygen_rotation_interrupted_at_any_step_converges() {
        assert_completed(&crash_anywhere_converges(Strategy::ServerKeygen, scenario).await);
    }

    #[tokio::test]
    async fn a_failing_csr_rotation_interrupted_at_any_step_converges() {
        assert_retrying(
            &crash_anywhere_converges(Strategy::Csr, failing_scenario).await,
            Strategy::Csr,
        );
    }

    #[tokio::test]
    async fn a_failing_server_keygen_rotation_interrupted_at_any_step_converges() {
        assert_retrying(
            &crash_anywhere_converges(Strategy::ServerKeygen, failing_scenario).await,
            Strategy::ServerKeygen,
        );
    }

    // --- concurrency: SUCCEEDED racing the deadline's failure -------------------

    /// A CSR rotation delivered; the device took its job up at T0
    /// (IN_PROGRESS); the call log cleared.
    async fn delivered_in_progress() -> (Fake, String, String) {
        let fake = Fake::new(Strategy::Csr, 1);
        let (thing, old) = (thing(0), old_id(&thing(0)));
        run(&rotator(&fake), T0).await;
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        let message = CsrMessage {
            job_id: job_id.clone(),
            csr: csr(&thing),
        };
        let new = expect_issued(
            issuer(&fake)
                .handle(&thing, &old, &message, T0 + 60)
                .await
                .expect("issued"),
        );
        fake.with(|w| {
            w.take_up_jobs(T0);
            w.calls.clear();
        });
        (fake, job_id, new)
    }

    /// The device reports SUCCEEDED naming the new certificate (IoT refuses
    /// the update once the execution has ended, e.g. canceled).
    fn device_succeeds(fake: &Fake, job_id: &str, new: &str) {
        fake.with(|w| {
            if w.jobs[job_id].status == "IN_PROGRESS" {
                w.set_job(job_id, "SUCCEEDED", Some(new));
            }
        });
    }

    /// The device is never stranded: exactly one of its certificates is
    /// ACTIVE, attached to the thing and carrying the policy, and it holds
    /// the thing-name claim; a retired rotation means the new one, anything
    /// else the old one (and then the new one is not ACTIVE).
    fn assert_working(fake: &Fake, new: &str, label: &str) -> RotationState {
        fake.with(|w| {
            let thing = thing(0);
            let old = old_id(&thing);
            let r = w.rotation_of(&thing);
            let works = |id: &str| {
                w.certs.get(id).is_some_and(|c| {
                    c.status == CertificateStatus::Active
                        && c.thing.as_deref() == Some(thing.as_str())
                        && c.policies.contains(POLICY)
                })
            };
            let working: Vec<&str> = [old.as_str(), new].into_iter().filter(|id| works(id)).collect();
            assert_eq!(working.len(), 1, "{label}: working certificates {working:?}; {r:?}");
            assert_eq!(
                w.claims.get(&thing).map(String::as_str),
                Some(working[0]),
                "{label}: claim"
            );
            if r.state == RotationState::Retired {
                assert_eq!(working[0], new, "{label}: retired onto the new certificate");
            } else {
                assert_eq!(working[0], old, "{label}: {r:?}");
                assert_eq!(r.state, RotationState::Failed, "{label}: {r:?}");
                assert!(!r.is_failing(), "{label}: clean-up finished: {r:?}");
                assert_ne!(w.cert(new).status, CertificateStatus::Active, "{label}");
            }
            r.state
        })
    }

    /// After a race: the SUCCEEDED event redelivered until handled, then the
    /// rotator's next runs, as in production.
    async fn converge(fake: &Fake, job_id: &str, new: &str, at: i64) {
        let succeeded = event(job_id, &thing(0), "SUCCEEDED", Some(new));
        let completer = completer(fake);
        retry(|| completer.handle(&succeeded, at)).await;
        run_until_clean(&rotator(fake), at + 60).await;
    }

    /// Arms `hook` before the k-th port call; runs it after `first` if the
    /// call never came.
    async fn interleaved<X>(fake: &Fake, k: usize, hook: Hook, first: impl Future<Output = X>) {
        fake.with(|w| w.interleave = Some((k, hook)));
        let _ = first.await;
        if let Some((_, hook)) = fake.with(|w| w.interleave.take()) {
            hook();
        }
    }

    #[tokio::test]
    async fn success_racing_the_deadline_leaves_a_working_certificate_in_every_interleaving() {
        let deadline = RotationPolicy::default().job_deadline(T0);
        let (probe, _, _) = delivered_in_progress().await;
        let _ = rotator(&probe).run(deadline).await;
        let calls = probe.with(|w| w.calls.len());
        assert!(calls > 10, "{calls}");
        let mut ends = BTreeMap::new();
        // The device's SUCCEEDED and the completer's whole handling at each
        // point of the rotator's run at the deadline.
        for k in 0..=calls {
            let (fake, job_id, new) = delivered_in_progress().await;
            let (f, j, n) = (fake.clone(), job_id.clone(), new.clone());
            let hook: Hook = Box::new(move || {
                device_succeeds(&f, &j, &n);
                let succeeded = event(&j, &thing(0), "SUCCEEDED", Some(&n));
                let _ = run_now(completer(&f).handle(&succeeded, deadline));
            });
            interleaved(&fake, k, hook, async { rotator(&fake).run(deadline).await }).await;
            converge(&fake, &job_id, &new, deadline + 30).await;
            let label = format!("completer before call {k} of the rotator's run");
            *ends.entry(assert_working(&fake, &new, &label).as_str()).or_insert(0) += 1;
        }
        // Both ends are reached: the race is real, and neither strands.
        assert!(ends.contains_key("RETIRED") && ends.contains_key("FAILED"), "{ends:?}");
    }

    /// IoT's reads are eventually consistent: the rotator may fail an
    /// attempt on a stale IN_PROGRESS while the completer acts on the
    /// device's SUCCEEDED. Each runs whole at each point of the other.
    #[tokio::test]
    async fn a_stale_failure_and_a_confirmation_exclude_each_other_in_every_interleaving() {
        let deadline = RotationPolicy::default().job_deadline(T0);
        async fn fail(fake: Fake) -> Result<(), RotationError> {
            let policy = RotationPolicy::default();
            let r = fake.with(|w| w.rotation_of(&thing(0)));
            let rotator = rotator(&fake);
            let detail = "job execution still IN_PROGRESS past its deadline";
            rotator
                .ops()
                .fail(r, FailureReason::JobTimedOut, detail, &policy, policy.job_deadline(T0))
                .await
                .map(|_| ())
        }
        async fn complete(fake: Fake, job_id: String, new: String) -> Result<(), RotationError> {
            let succeeded = event(&job_id, &thing(0), "SUCCEEDED", Some(&new));
            let deadline = RotationPolicy::default().job_deadline(T0);
            completer(&fake).handle(&succeeded, deadline).await.map(|_| ())
        }
        let count = |fut_calls: &Fake| fut_calls.with(|w| w.calls.len());
        let (probe, job_id, new) = delivered_in_progress().await;
        device_succeeds(&probe, &job_id, &new);
        let _ = fail(probe.clone()).await;
        let fail_calls = count(&probe);
        let (probe, job_id, new) = delivered_in_progress().await;
        device_succeeds(&probe, &job_id, &new);
        let _ = complete(probe.clone(), job_id, new).await;
        let complete_calls = count(&probe);
        assert!(fail_calls > 3 && complete_calls > 10, "{fail_calls} {complete_calls}");

        let mut ends = BTreeMap::new();
        for (fail_first, calls) in [(true, fail_calls), (false, complete_calls)] {
            for k in 0..=calls {
                let (fake, job_id, new) = delivered_in_progress().await;
                device_succeeds(&fake, &job_id, &new);
                let (f, j, n) = (fake.clone(), job_id.clone(), new.clone());
                if fail_first {
                    let hook: Hook = Box::new(move || drop(run_now(complete(f, j, n))));
                    interleaved(&fake, k, hook, fail(fake.clone())).await;
                } else {
                    let hook: Hook = Box::new(move || drop(run_now(fail(f))));
                    interleaved(&fake, k, hook, complete(fake.clone(), job_id.clone(), new.clone())).await;
                }
                converge(&fake, &job_id, &new, deadline + 30).await;
                let label = if fail_first {
                    format!("completer before call {k} of the fail path")
                } else {
                    format!("fail path before call {k} of the completer")
                };
                *ends.entry(assert_working(&fake, &new, &label).as_str()).or_insert(0) += 1;
            }
        }
        assert!(ends.contains_key("RETIRED") && ends.contains_key("FAILED"), "{ends:?}");
    }

    /// The same races, each workflow also crashing once at each of its calls
    /// (a fresh world per point): still never stranded.
    #[tokio::test]
    async fn success_racing_the_deadline_with_a_crash_anywhere_leaves_a_working_certificate() {
        let deadline = RotationPolicy::default().job_deadline(T0);
        let (probe, _, _) = delivered_in_progress().await;
        let _ = rotator(&probe).run(deadline).await;
        let calls = probe.with(|w| w.calls.len());
        for k in (0..=calls).step_by(2) {
            for crash in 0..calls + 12 {
                for inject in [Inject::Before(crash), Inject::After(crash)] {
                    let (fake, job_id, new) = delivered_in_progress().await;
                    let (f, j, n) = (fake.clone(), job_id.clone(), new.clone());
                    let hook: Hook = Box::new(move || {
                        device_succeeds(&f, &j, &n);
                        let succeeded = event(&j, &thing(0), "SUCCEEDED", Some(&n));
                        let _ = run_now(completer(&f).handle(&succeeded, deadline));
                    });
                    fake.with(|w| w.inject = Some(inject));
                    interleaved(&fake, k, hook, async { rotator(&fake).run(deadline).await }).await;
                    fake.with(|w| w.inject = None);
                    converge(&fake, &job_id, &new, deadline + 30).await;
                    let label = format!("completer before call {k}, {inject:?}");
                    assert_working(&fake, &new, &label);
                }
            }
        }
    }

    // --- the completer trusts IoT, not the message ---------------------------------

    #[tokio::test]
    async fn a_completer_message_with_a_forged_status_or_certificate_changes_nothing() {
        let (fake, job_id, new) = delivered_in_progress().await;
        let thing = thing(0);
        let before = end_state(&fake, &thing);
        let forged_id = "f".repeat(64);
        // IoT says IN_PROGRESS: no message body moves the rotation.
        for (status, confirmed) in [
            ("SUCCEEDED", Some(new.as_str())),
            ("SUCCEEDED", Some(forged_id.as_str())),
            ("FAILED", None),
            ("REJECTED", None),
            ("TIMED_OUT", None),
            ("CANCELED", None),
        ] {
            let forged = event(&job_id, &thing, status, confirmed);
            let outcome = completer(&fake).handle(&forged, T0 + 120).await.expect("handled");
            assert_eq!(
                outcome,
                CompletionOutcome::Ignored {
                    reason: IgnoreReason::NothingToDo
                },
                "{status}"
            );
            assert_eq!(end_state(&fake, &thing), before, "a forged {status} changed something");
        }
        assert!(
            !fake.with(|w| w.calls.iter().any(|c| matches!(*c, "set_status" | "put_rotation"))),
            "no write, no certificate change"
        );
        // IoT says SUCCEEDED naming the new certificate; a message naming
        // another (and claiming FAILED) completes with IoT's, and only it.
        device_succeeds(&fake, &job_id, &new);
        let forged = event(&job_id, &thing, "FAILED", Some(&forged_id));
        let outcome = completer(&fake).handle(&forged, T0 + 130).await.expect("completed");
        assert_eq!(
            outcome,
            CompletionOutcome::Completed {
                thing_name: thing.clone(),
                old_certificate_id: old_id(&thing),
                new_certificate_id: new.clone(),
            }
        );
        assert_working(&fake, &new, "IoT's SUCCEEDED");
    }

    #[tokio::test]
    async fn the_old_certificate_is_not_retired_unless_iot_shows_the_new_one_usable() {
        for (what, spoil) in [
            (
                "its policy detached",
                (|c: &mut FakeCert| c.policies.clear()) as fn(&mut FakeCert),
            ),
            ("detached from the thing", |c: &mut FakeCert| c.thing = None),
            ("INACTIVE", |c: &mut FakeCert| c.status = CertificateStatus::Inactive),
        ] {
            let (fake, job_id, new) = delivered_in_progress().await;
            let thing = thing(0);
            fake.with(|w| spoil(w.certs.get_mut(&new).expect("new")));
            device_succeeds(&fake, &job_id, &new);
            let result = completer(&fake)
                .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 120)
                .await;
            assert!(
                matches!(result, Err(RotationError::NewCertificateNotReady { .. })),
                "{what}: {result:?}"
            );
            fake.with(|w| {
                let old = w.cert(&old_id(&thing));
                assert_eq!(old.status, CertificateStatus::Active, "{what}");
                assert_eq!(old.thing.as_deref(), Some(thing.as_str()), "{what}");
                assert!(old.policies.contains(POLICY), "{what}");
                assert_eq!(w.claims.get(&thing), Some(&old_id(&thing)), "{what}");
            });
        }
    }

    // --- the execution's own timeline ------------------------------------------------

    #[tokio::test]
    async fn an_offline_device_waits_up_to_the_queued_timeout() {
        let fake = Fake::new(Strategy::Csr, 1);
        let rotator = rotator(&fake);
        let thing = thing(0);
        let policy = RotationPolicy::default();
        run(&rotator, T0).await;
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        // The job stays QUEUED: the device is offline.
        let deadline = policy.job_deadline(T0);
        let report = run(&rotator, deadline).await;
        assert_eq!((report.failed, report.waiting), (0, 1), "{report:?}");
        let limit = T0 + i64::from(policy.queued_timeout_days) * DAY;
        let mut at = deadline;
        while at < limit {
            let due = fake.with(|w| w.rotation_of(&thing).due_at).expect("due");
            assert!(due <= limit && due <= at + DAY, "looked at daily, not past the limit");
            at = due;
            let report = run(&rotator, at).await;
            if at < limit {
                assert_eq!(report.failed, 0, "{report:?} at {at}");
                assert_eq!(fake.with(|w| w.jobs[&job_id].status.clone()), "QUEUED");
            } else {
                assert_eq!(report.failed, 1, "{report:?}");
            }
        }
        fake.with(|w| {
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.reason),
                (RotationState::Failed, Some(FailureReason::JobTimedOut))
            );
            assert_eq!(w.jobs[&job_id].status, "CANCELED");
            assert_eq!(w.cert(&old_id(&thing)).status, CertificateStatus::Active);
        });
        // Never past the old certificate's notAfter.
        let mut r = fake.with(|w| w.rotation_of(&thing));
        r.old_not_after = T0 + 3 * DAY;
        let queued = JobExecution {
            status: "QUEUED".into(),
            status_details: BTreeMap::new(),
            queued_at: Some(T0),
            started_at: None,
            last_updated_at: None,
        };
        assert_eq!(policy.execution_deadline(&r, &queued), T0 + 3 * DAY);
    }

    #[tokio::test]
    async fn the_in_progress_timeout_counts_from_when_the_device_started() {
        let fake = Fake::new(Strategy::Csr, 1);
        let rotator = rotator(&fake);
        let thing = thing(0);
        let policy = RotationPolicy::default();
        run(&rotator, T0).await;
        // The device comes online and takes the job up 50 minutes in.
        let started = T0 + 50 * 60;
        fake.with(|w| w.take_up_jobs(started));
        let report = run(&rotator, policy.job_deadline(T0)).await;
        assert_eq!((report.failed, report.waiting), (0, 1), "{report:?}");
        assert_eq!(
            fake.with(|w| w.rotation_of(&thing).due_at),
            Some(policy.job_deadline(started))
        );
        let report = run(&rotator, policy.job_deadline(started)).await;
        assert_eq!(report.failed, 1, "{report:?}");
    }

    // --- CSR keys, deny-list, CA binding -----------------------------------------------

    #[tokio::test]
    async fn an_ed25519_csr_is_refused_at_once() {
        let fake = Fake::new(Strategy::Csr, 1);
        let (thing, old) = (thing(0), old_id(&thing(0)));
        run(&rotator(&fake), T0).await;
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, thing.as_str());
        let pem = params.serialize_request(&key).expect("CSR").pem().expect("PEM");
        let message = CsrMessage {
            job_id: job_id.clone(),
            csr: pem,
        };
        let outcome = issuer(&fake)
            .handle(&thing, &old, &message, T0 + 60)
            .await
            .expect("handled");
        let CsrOutcome::Refused { rejection, .. } = outcome else {
            panic!("expected REFUSED, got {outcome:?}");
        };
        assert_eq!(rejection.reason.code(), "UNSUPPORTED_KEY");
        assert!(rejection.detail.contains("Ed25519"), "{}", rejection.detail);
        fake.with(|w| {
            let answers = w.answers(&thing);
            assert_eq!(answers.len(), 1);
            assert_eq!(answers[0]["status"], "REFUSED");
            assert_eq!(answers[0]["reasonCode"], "UNSUPPORTED_KEY");
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.reason),
                (RotationState::Failed, Some(FailureReason::CsrRefused))
            );
            assert!(
                !w.calls.contains(&"certificate_from_csr"),
                "nothing asked of CreateCertificateFromCsr"
            );
            assert_eq!(w.jobs[&job_id].status, "CANCELED", "nothing left to time out");
        });
    }

    #[tokio::test]
    async fn a_denied_device_or_an_unbound_ca_gets_no_new_certificate() {
        // Denied before the run: no attempt starts.
        let fake = Fake::new(Strategy::Csr, 2);
        fake.with(|w| {
            w.denied.insert(old_id("dev-0"));
            w.records.get_mut(&old_id("dev-1")).expect("record").ca_certificate_id = "unbound-ca".into();
        });
        let report = run(&rotator(&fake), T0).await;
        assert_eq!((report.started, report.skipped_denied), (0, 2), "{report:?}");
        assert!(fake.with(|w| w.jobs.is_empty() && w.rotations.is_empty()));

        // Denied after the attempt started: the CSR is refused, nothing issued.
        let fake = Fake::new(Strategy::Csr, 1);
        let (thing, old) = (thing(0), old_id(&thing(0)));
        run(&rotator(&fake), T0).await;
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        fake.with(|w| {
            w.denied.insert(old.clone());
        });
        let message = CsrMessage {
            job_id: job_id.clone(),
            csr: csr(&thing),
        };
        let outcome = issuer(&fake)
            .handle(&thing, &old, &message, T0 + 60)
            .await
            .expect("handled");
        assert!(
            matches!(&outcome, CsrOutcome::Refused { rejection, .. } if rejection.reason.code() == "FINGERPRINT_DENIED"),
            "{outcome:?}"
        );
        fake.with(|w| {
            assert!(!w.calls.contains(&"certificate_from_csr"));
            assert_eq!(w.certs.len(), 1, "no certificate made");
            let r = w.rotation_of(&thing);
            assert_eq!(
                (r.state, r.reason, r.due_at),
                (RotationState::Failed, Some(FailureReason::Denied), None),
                "never retried"
            );
        });

        // Denied while a failed attempt waits for its retry: given up.
        let fake = Fake::new(Strategy::Csr, 1);
        let rotator = rotator(&fake);
        let policy = RotationPolicy::default();
        run(&rotator, T0).await;
        fake.with(|w| w.take_up_jobs(T0));
        let deadline = policy.job_deadline(T0);
        assert_eq!(run(&rotator, deadline).await.failed, 1);
        fake.with(|w| {
            w.denied.insert(old_id("dev-0"));
        });
        let report = run(&rotator, policy.retry_at(deadline, 1).expect("retry")).await;
        assert_eq!((report.retried, report.gave_up), (0, 1), "{report:?}");
        assert_eq!(fake.with(|w| w.jobs.len()), 1, "no second job");
    }

    // --- events -----------------------------------------------------------------

    #[test]
    fn job_execution_events_parse_leniently() {
        let json = br#"{
            "eventType": "JOB_EXECUTION",
            "eventId": "1b2c",
            "timestamp": 1700000000,
            "operation": "succeeded",
            "jobId": "rotate-abc-1",
            "thingArn": "arn:aws:iot:eu-west-1:123456789012:thing/dev-0",
            "status": "SUCCEEDED",
            "statusDetails": {"newCertificateId": "n"}
        }"#;
        let e = JobExecutionEvent::parse(json).expect("parses");
        assert_eq!(
            (e.job_id.as_str(), e.thing_name(), e.status.as_str()),
            ("rotate-abc-1", Some("dev-0"), "SUCCEEDED")
        );
        assert_eq!(e.status_details.get(CONFIRMATION_FIELD).map(String::as_str), Some("n"));
        let e = JobExecutionEvent::parse(br#"{"jobId":"j","status":"FAILED","statusDetails":null}"#).expect("parses");
        assert!(e.status_details.is_empty());
        assert_eq!(e.thing_name(), None);
    }
}
