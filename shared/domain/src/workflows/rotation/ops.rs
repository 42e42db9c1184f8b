//! What the rotation workflows share: errors, the profile cache, and the
//! "complete" and "fail" procedures (the rotator runs them too when it
//! finds a job ended past its deadline, since events can be lost).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{try_join, try_join_all};

use crate::model::certificate::Certificate;
use crate::model::reason::RejectReason;
use crate::model::reason::Rejection;
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::{CaTrust, OnboardingConfig};
use crate::policy::profile::DeviceProfile;
use crate::policy::rotation::RotationPolicy;
use crate::policy::rotation::protocol::{CONFIRMATION_FIELD, JobExecution};
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState, TransitionError};
use crate::ports::{
    DenyList, Inventory, NameClaim, PortError, PortResult, RegisteredCertificate, RotationInventory, RotationIot,
    RotationObjects,
};
use crate::workflows::config_cache::ConfigCache;

/// The rotator's cursor over certificates entering their rotation window.
pub const EXPIRING_CURSOR: &str = "expiring";
/// The rotator's cursor over due rotations.
pub const DUE_CURSOR: &str = "due";

pub(crate) use crate::policy::rotation::DAY;
/// Conditional writes tried before a workflow gives the event back (transient).
pub(crate) const MAX_TRIES: usize = 4;

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
    /// A profile's `kmsCa` issuer cannot issue: its key not allowed by the
    /// deployment, its CA missing, not ACTIVE or not the one named, the
    /// signer's key not the CA's. Nothing was issued; the attempt stays
    /// `requested` until its deadline.
    #[error("the kmsCa issuer of profile {profile:?} cannot issue: {problem}")]
    IssuerUnusable { profile: String, problem: String },
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
            Self::IssuerUnusable { .. } => "issuer_unusable",
        }
    }
}

pub(crate) fn race(r: &Rotation) -> RotationError {
    RotationError::Race {
        old_certificate_id: r.old_certificate_id.clone(),
    }
}

// --- profiles ---------------------------------------------------------------

pub(crate) type Profiles = HashMap<String, DeviceProfile>;

/// The configuration a workflow decides on: the valid profiles by name,
/// and the CA bindings and deny-list ([`rotation_allowed`]).
pub(crate) struct Snapshot {
    pub(crate) profiles: Profiles,
    pub(crate) config: Arc<OnboardingConfig>,
}

/// Valid profiles by name, the environment's default among them.
pub(crate) fn profiles_of(
    config: &OnboardingConfig,
    default_profile: Option<&(DeviceProfile, Vec<String>)>,
) -> Profiles {
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

pub(crate) async fn load_snapshot<I: Inventory>(
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
pub(crate) struct ProfileCache {
    pub(crate) config: ConfigCache,
    pub(crate) default_profile: Option<(DeviceProfile, Vec<String>)>,
}

impl ProfileCache {
    pub(crate) fn new(ttl: Duration, default_profile: Option<(DeviceProfile, Vec<String>)>) -> Self {
        Self {
            config: ConfigCache::new(ttl, default_profile.clone()),
            default_profile,
        }
    }

    pub(crate) async fn get<I: Inventory>(&self, inventory: &I) -> Result<Profiles, RotationError> {
        Ok(self.snapshot(inventory).await?.profiles)
    }

    pub(crate) async fn snapshot<I: Inventory>(&self, inventory: &I) -> Result<Snapshot, RotationError> {
        let (config, _) = self.config.get(false, || inventory.load_config()).await?;
        Ok(Snapshot {
            profiles: profiles_of(&config, self.default_profile.as_ref()),
            config,
        })
    }

    /// The profile's policy; the default policy when the profile is gone (an
    /// attempt under way is still completed or failed).
    pub(crate) async fn policy<I: Inventory>(
        &self,
        inventory: &I,
        r: &Rotation,
    ) -> Result<RotationPolicy, RotationError> {
        let profiles = self.get(inventory).await?;
        Ok(match profiles.get(&r.profile) {
            Some(profile) => profile.rotation.clone(),
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
pub(crate) enum Settled {
    /// Retired now: the old certificate is INACTIVE and detached.
    Completed(Rotation),
    /// Failed now: the new certificate (if any) is revoked and detached.
    Failed(Rotation),
    /// Nothing done: the attempt had already ended or another attempt runs
    /// (the rotation as found).
    Ended(Rotation),
}

/// The old certificate of a rotation: its inventory record and IoT description.
pub(crate) struct OldCertificate {
    pub(crate) record: CertificateRecord,
    pub(crate) cert: RegisteredCertificate,
}

/// The new certificate's inventory record: same thing, profile and CA as the
/// old record (the CA binding the device to its profile), validity from the
/// certificate itself, and the CA that signed it when AWS IoT names one
/// other than that CA (a `kmsCa` issuer's fleet CA: its serials are denied
/// under it).
pub(crate) fn rotated_in_record(
    old: &CertificateRecord,
    r: &Rotation,
    new: &RegisteredCertificate,
    cert: &Certificate,
    now: i64,
) -> CertificateRecord {
    let mut record = CertificateRecord::bare(
        &new.certificate_id,
        &old.ca_certificate_id,
        RecordStatus::Provisioned,
        now,
    );
    record.issuer_ca_certificate_id = new
        .ca_certificate_id
        .clone()
        .filter(|ca| !ca.is_empty() && *ca != old.ca_certificate_id);
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
pub(crate) struct Ops<'a, R, T, O, I> {
    pub(crate) rotations: &'a R,
    pub(crate) iot: &'a T,
    pub(crate) objects: &'a O,
    pub(crate) inventory: &'a I,
}

impl<R, T, O, I> Ops<'_, R, T, O, I>
where
    R: RotationInventory,
    T: RotationIot,
    O: RotationObjects,
    I: Inventory,
{
    /// The rotation as stored now.
    pub(crate) async fn reread(&self, r: &Rotation) -> Result<Rotation, RotationError> {
        self.rotations
            .rotation(&r.old_certificate_id)
            .await?
            .ok_or_else(|| race(r))
    }

    pub(crate) async fn old_certificate(&self, r: &Rotation) -> Result<OldCertificate, RotationError> {
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
    pub(crate) async fn detach_all(&self, thing_name: &str, certificate_arn: &str) -> Result<(), RotationError> {
        self.iot.detach_from_thing(thing_name, certificate_arn).await?;
        let policies = self.iot.policies(certificate_arn).await?;
        try_join_all(policies.iter().map(|p| self.iot.detach_policy(p, certificate_arn))).await?;
        Ok(())
    }

    /// After a conditional write that lost: when the attempt failed or another
    /// began meanwhile, the new certificate is revoked and detached (true).
    pub(crate) async fn revoke_if_superseded(
        &self,
        r: &Rotation,
        new_certificate_id: &str,
    ) -> Result<bool, RotationError> {
        let current = self.reread(r).await?;
        let superseded = current.attempt != r.attempt || current.state == RotationState::Failed;
        if superseded {
            self.revoke_and_detach(&r.thing_name, new_certificate_id).await?;
        }
        Ok(superseded)
    }

    /// Revokes a certificate and detaches it; nothing when it does not exist.
    pub(crate) async fn revoke_and_detach(&self, thing_name: &str, certificate_id: &str) -> Result<(), RotationError> {
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
    pub(crate) async fn install(
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
        let record = rotated_in_record(&old.record, r, new, &parsed, now);
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
    pub(crate) async fn clean_up(&self, r: &Rotation) -> Result<(), RotationError> {
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
    /// Ends a rotation for good because of an operator's decision about the
    /// device (`RETIRED`, `REVOKED`: final reasons): an open or confirmed
    /// attempt fails through [`Self::fail`] (a confirmed one claimed first
    /// with a conditional write from `confirmed`, which the ordinary path
    /// does not allow), a failure's clean-up is finished, a retry pending is
    /// given up. The state it left, or `None` when there was nothing to stop
    /// (retired, or failed and done).
    ///
    /// # Errors
    /// A failed call, or a race lost [`MAX_TRIES`] times: run it again.
    pub(crate) async fn stop_for_good(
        &self,
        mut r: Rotation,
        reason: FailureReason,
        detail: &str,
        now: i64,
    ) -> Result<Option<RotationState>, RotationError> {
        // Final failures are never retried: the policy only fills the fields
        // a retry would use.
        let policy = RotationPolicy::default();
        for _ in 0..MAX_TRIES {
            match r.state {
                RotationState::Requested | RotationState::Issued | RotationState::Delivered => {
                    match self.fail(r, reason, detail, &policy, now).await? {
                        // Moved on meanwhile (confirmed, failed otherwise):
                        // decide again on what is stored.
                        Settled::Ended(current) => r = current,
                        Settled::Failed(r) | Settled::Completed(r) => return Ok(Some(r.state)),
                    }
                }
                RotationState::Confirmed => {
                    let claimed = r.ended_for_good(reason, detail, now)?;
                    if self
                        .rotations
                        .put_rotation(&claimed, Some((RotationState::Confirmed, r.attempt)))
                        .await?
                    {
                        let state = match self.fail(claimed, reason, detail, &policy, now).await? {
                            Settled::Failed(r) | Settled::Completed(r) | Settled::Ended(r) => r.state,
                        };
                        return Ok(Some(state));
                    }
                    r = self.reread(&r).await?;
                }
                RotationState::Failed if r.is_failing() => {
                    let reason = r.reason.unwrap_or(reason);
                    let detail = r.detail.clone().unwrap_or_default();
                    let state = match self.fail(r, reason, &detail, &policy, now).await? {
                        Settled::Failed(r) | Settled::Completed(r) | Settled::Ended(r) => r.state,
                    };
                    return Ok(Some(state));
                }
                RotationState::Failed if r.due_at.is_some() => {
                    let stopped = r.given_up(detail);
                    if self
                        .rotations
                        .put_rotation(&stopped, Some((RotationState::Failed, r.attempt)))
                        .await?
                    {
                        return Ok(Some(RotationState::Failed));
                    }
                    r = self.reread(&r).await?;
                }
                // Retired (its old certificate is deleted by the rotator
                // after the grace period), or failed and done.
                RotationState::Failed | RotationState::Retired => return Ok(None),
            }
        }
        Err(race(&r))
    }

    pub(crate) async fn fail(
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
    pub(crate) async fn complete(
        &self,
        mut r: Rotation,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<Settled, RotationError> {
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
    pub(crate) async fn retire(
        &self,
        r: Rotation,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<Settled, RotationError> {
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
    pub(crate) async fn check_usable(
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
    pub(crate) async fn settle(
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
    pub(crate) async fn settle_success(
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

/// Whether the device of an old certificate may still get a new one: its
/// CA bound to a valid profile, and neither its fingerprint nor its serial
/// (under the CA that signed it, [`CertificateRecord::serial_ca`]) on the deny-list (looked up by key, never cached). Checked
/// before an attempt starts and before a certificate is issued.
///
/// # Errors
/// [`crate::PortError`] when the deny-list lookup fails (the caller must
/// not go on: fail closed). Inside, a [`Rejection`]: `CA_NOT_BOUND`,
/// `FINGERPRINT_DENIED` or `SERIAL_DENIED`.
pub async fn rotation_allowed(
    config: &OnboardingConfig,
    deny_list: &impl DenyList,
    record: &CertificateRecord,
) -> PortResult<Result<(), Rejection>> {
    let ca = record.ca_certificate_id.as_str();
    match config.trust(ca) {
        CaTrust::Bound(_) => {}
        CaTrust::Unbound => {
            return Ok(Err(Rejection::new(
                RejectReason::CaNotBound,
                format!("CA {ca} of the old certificate is bound to no profile"),
            )));
        }
        CaTrust::Misconfigured { profile, problem } => {
            return Ok(Err(Rejection::new(
                RejectReason::CaNotBound,
                format!("CA {ca} of the old certificate is bound to profile {profile:?}, which {problem}"),
            )));
        }
    }
    let fingerprint = if record.fingerprint.is_empty() {
        record.certificate_id.as_str()
    } else {
        record.fingerprint.as_str()
    };
    let serial = record.serial.as_deref().unwrap_or_default();
    Ok(match deny_list.denial(record.serial_ca(), serial, fingerprint).await? {
        Some(rejection) => Err(rejection),
        None => Ok(()),
    })
}
