//! Retiring a device (`onboard device retire`): its certificates cut off
//! and deleted, its rotations stopped, its thing gone from its groups and
//! deleted, its credentials record deleted from the bucket, its inventory
//! records RETIRED, its name claim released.
//!
//! # Order, and why
//!
//! 1. **Claim** the retirement: a conditional write of a ticket
//!    ([`RetirementTicket`]) naming every certificate found for the thing.
//!    It is the state change that authorizes everything below, and what a
//!    run resumed after a crash continues from (its reason and flags win
//!    over the new run's). Certificates found later (a rotation issued one
//!    meanwhile) are added to it before they are touched.
//! 2. **Rotations stopped** through the rotation state machine's own fail
//!    path (reason `RETIRED`, final): claimed with a conditional write from
//!    the state found, so a completer or rotator racing the retirement
//!    either loses or is seen and followed; the attempt's new certificate is
//!    revoked and detached, its job canceled, its objects deleted. This
//!    comes before any certificate changes, so that the rotation machinery
//!    never acts on a certificate the retirement is cutting off.
//! 3. **Records RETIRED**, before any certificate is deactivated or deleted:
//!    from here on the registrar refuses each certificate if it ever comes
//!    back (`CERTIFICATE_RETIRED`), the reconciler skips it, and the
//!    rotator's expiry scan no longer sees it (RETIRED records are out of the
//!    expiry index), nor retries a failed rotation of it.
//! 4. Each certificate **INACTIVE** (REVOKED with `--revoke`), then its
//!    **policies detached**, then **detached from the thing**, then
//!    **deleted** (AWS IoT deletes only a certificate that is not ACTIVE and
//!    has no attachment). With `--revoke` the certificates stay in IoT,
//!    REVOKED: IoT then refuses them at the TLS handshake without even a
//!    registration event.
//! 5. The thing **leaves its thing groups and billing group**, then is
//!    **deleted**, retried with bounded backoff while IoT still reports
//!    principals attached (detaching is eventually consistent).
//! 6. The **credentials records** in the bucket deleted, every version.
//! 7. The **name claim released** (conditional on its holder being one of
//!    the retired certificates).
//! 8. The ticket deleted: the retirement is complete, and nothing of the
//!    device is left but its RETIRED records (and its rotation items, as
//!    history, failed with `RETIRED` and due never).
//!
//! With `keep_thing`, steps 5 and 7 are skipped: the thing keeps its groups,
//! attributes and job history, and its name claim stays with the retired
//! certificate that held it. The claim then blocks nothing (the registrar
//! moves a claim held by a certificate that is no longer ACTIVE to a new
//! certificate of the same name), so a replacement device can take the
//! thing over, while the retired certificate itself is refused.
//!
//! Every step is idempotent (a status already set, a detachment already
//! made, a deletion of something gone all succeed), so a run interrupted
//! anywhere and run again converges; the crash-point test proves it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::model::status::CertificateStatus;
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState};
use crate::ports::{
    Inventory, Pacer, PortError, PortErrorKind, RetirementInventory, RetirementIot, RetirementTicket,
    RotationInventory, RotationIot, RotationObjects, ThingMembership,
};
use crate::workflows::registrar::certificate_id_of_arn;
use crate::workflows::rotation::ops::{Ops, RotationError};

/// How hard [`Retirement`] insists on `DeleteThing` while IoT still
/// reports principals attached.
#[derive(Debug, Clone)]
pub struct RetirementSettings {
    /// `DeleteThing` calls at most, per run.
    pub delete_attempts: u32,
    /// The first wait; doubled after each refusal, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetirementSettings {
    fn default() -> Self {
        Self {
            delete_attempts: 8,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

/// What the operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetireRequest {
    /// Recorded on each RETIRED record.
    pub reason: String,
    /// REVOKED instead of INACTIVE (and the certificates kept in IoT, revoked).
    pub revoke: bool,
    /// Only the credentials are cut; the thing, its groups and its name claim stay.
    pub keep_thing: bool,
}

/// One certificate a retirement acts on, as found now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCertificate {
    pub certificate_id: String,
    /// Its status in IoT; `None` when IoT no longer has it.
    pub status: Option<CertificateStatus>,
    pub policies: Vec<String>,
    /// Its inventory record's status (`None`: no record).
    pub record_status: Option<&'static str>,
}

/// One rotation of the thing's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRotation {
    pub old_certificate_id: String,
    pub state: RotationState,
    pub attempt: u32,
    pub job_id: String,
    /// Open (or failing, or due for a retry): the retirement stops it.
    pub to_stop: bool,
}

/// What a retirement of one thing would act on (`--dry-run`), read without
/// changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetirementPlan {
    pub thing_name: String,
    /// `None` when the thing does not exist.
    pub membership: Option<ThingMembership>,
    pub certificates: Vec<PlannedCertificate>,
    pub rotations: Vec<PlannedRotation>,
    /// Credentials records and rotation objects in the bucket.
    pub objects: Vec<String>,
    /// Certificates also attached to other things (listed with them): only
    /// detached from this thing, never deactivated or deleted.
    pub shared: Vec<(String, Vec<String>)>,
    /// A retirement already claimed and not finished (it is resumed, with its own flags).
    pub in_progress: Option<RetirementTicket>,
}

impl RetirementPlan {
    /// Nothing to retire: no thing, no certificate, no retirement under way.
    pub fn is_empty(&self) -> bool {
        self.membership.is_none()
            && self.certificates.is_empty()
            && self.shared.is_empty()
            && self.in_progress.is_none()
    }
}

/// How a retirement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireOutcome {
    /// Done now (or finished from an interrupted run).
    Retired {
        thing_name: String,
        certificates: usize,
        rotations_stopped: usize,
        thing_deleted: bool,
        /// An interrupted retirement was finished (its own flags applied).
        resumed: bool,
    },
    /// No thing of that name, no certificate, no retirement under way.
    NothingToRetire { thing_name: String },
}

impl RetireOutcome {
    /// `retired`, `resumed` or `nothing_to_retire`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Retired { resumed: false, .. } => "retired",
            Self::Retired { resumed: true, .. } => "resumed",
            Self::NothingToRetire { .. } => "nothing_to_retire",
        }
    }
}

/// Why a retirement stopped. Running it again resumes it.
#[derive(Debug, thiserror::Error)]
pub enum RetirementError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Rotation(#[from] RotationError),
    #[error(
        "thing {thing_name} is still reported attached to principals after {attempts} DeleteThing attempts; run the retirement again"
    )]
    StillAttached { thing_name: String, attempts: u32 },
    #[error("the retirement of {thing_name} kept changing while being written; run it again")]
    Race { thing_name: String },
}

impl RetirementError {
    /// Throttling, service faults, races and IoT's eventual consistency: run again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Port(e) => e.is_transient(),
            Self::Rotation(e) => e.is_transient(),
            Self::StillAttached { .. } | Self::Race { .. } => true,
        }
    }
}

/// The retirement workflow, generic over its ports.
pub struct Retirement<T, R, O, I, P> {
    iot: T,
    rotations: R,
    objects: O,
    inventory: I,
    pacer: P,
    settings: RetirementSettings,
}

impl<T, R, O, I, P> Retirement<T, R, O, I, P>
where
    T: RotationIot + RetirementIot,
    R: RotationInventory,
    O: RotationObjects,
    I: Inventory + RetirementInventory,
    P: Pacer,
{
    pub fn new(iot: T, rotations: R, objects: O, inventory: I, pacer: P, settings: RetirementSettings) -> Self {
        Self {
            iot,
            rotations,
            objects,
            inventory,
            pacer,
            settings,
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

    /// Every certificate of the thing: those attached to it, those of a
    /// retirement under way, and the new certificates of their rotations.
    ///
    /// A certificate attached to another thing as well (a non-exclusive
    /// attachment made by hand), or recorded in the inventory for another
    /// thing, is not the device's alone: it is left out (only detached from
    /// this thing), so that retiring one device never cuts another off.
    /// Returned apart, with the other things.
    async fn certificate_ids(
        &self,
        thing_name: &str,
        ticket: Option<&RetirementTicket>,
    ) -> Result<Discovered, RetirementError> {
        let mut ids = BTreeSet::new();
        let mut shared = Vec::new();
        let mut detach_only = Vec::new();
        for arn in self.iot.attached_principals(thing_name).await?.unwrap_or_default() {
            let Some(id) = certificate_id_of_arn(&arn) else {
                // Not a certificate (a Cognito identity…): detached only.
                detach_only.push(arn);
                continue;
            };
            if ticket.is_some_and(|t| t.certificate_ids.contains(id)) {
                continue;
            }
            let mut others: Vec<String> = self
                .iot
                .principal_things(&arn)
                .await?
                .into_iter()
                .filter(|t| t != thing_name)
                .collect();
            // The inventory's word counts too: a certificate recorded for
            // another thing is that thing's, whatever IoT attached it to.
            if let Some(recorded) = self
                .inventory
                .certificate_record(id)
                .await?
                .and_then(|r| r.thing_name)
                .filter(|t| t != thing_name && !others.contains(t))
            {
                others.push(recorded);
            }
            if others.is_empty() {
                ids.insert(id.to_string());
            } else {
                shared.push((id.to_string(), others));
                detach_only.push(arn);
            }
        }
        if let Some(ticket) = ticket {
            ids.extend(ticket.certificate_ids.iter().cloned());
        }
        let mut rotations = Vec::new();
        let mut looked_up = BTreeSet::new();
        while let Some(id) = ids.difference(&looked_up).next().cloned() {
            looked_up.insert(id.clone());
            if let Some(r) = self.rotations.rotation(&id).await? {
                if let Some(new) = &r.new_certificate_id {
                    ids.insert(new.clone());
                }
                rotations.push(r);
            }
        }
        Ok(Discovered {
            ids,
            rotations,
            shared,
            detach_only,
        })
    }

    /// What retiring the thing would act on, read without changing anything.
    ///
    /// # Errors
    /// The first port failure.
    pub async fn plan(&self, thing_name: &str) -> Result<RetirementPlan, RetirementError> {
        let ticket = self.inventory.retirement(thing_name).await?;
        let Discovered {
            ids, rotations, shared, ..
        } = self.certificate_ids(thing_name, ticket.as_ref()).await?;
        let membership = self.iot.thing_membership(thing_name).await?;
        let mut certificates = Vec::new();
        let mut objects = Vec::new();
        for id in &ids {
            let (cert, record) =
                futures::future::try_join(self.iot.certificate(id), self.inventory.certificate_record(id)).await?;
            let policies = match &cert {
                Some(cert) => self.iot.policies(&cert.certificate_arn).await?,
                None => Vec::new(),
            };
            if let Some(key) = record.as_ref().and_then(|r| r.credentials_key.clone()) {
                objects.push(key);
            }
            certificates.push(PlannedCertificate {
                certificate_id: id.clone(),
                status: cert.map(|c| c.status),
                policies,
                record_status: record.map(|r| r.status.as_str()),
            });
        }
        let rotations = rotations
            .into_iter()
            .map(|r| {
                objects.extend(r.object_keys.iter().cloned());
                PlannedRotation {
                    to_stop: to_stop(&r),
                    old_certificate_id: r.old_certificate_id,
                    state: r.state,
                    attempt: r.attempt,
                    job_id: r.job_id,
                }
            })
            .collect();
        Ok(RetirementPlan {
            thing_name: thing_name.to_string(),
            membership,
            certificates,
            rotations,
            objects,
            shared,
            in_progress: ticket,
        })
    }

    /// Retires the thing as of `now` (Unix seconds), or finishes a
    /// retirement of it that was interrupted.
    ///
    /// # Errors
    /// [`RetirementError`]; running the retirement again resumes it.
    pub async fn retire(
        &self,
        thing_name: &str,
        request: &RetireRequest,
        now: i64,
    ) -> Result<RetireOutcome, RetirementError> {
        // 1. The claim.
        let (mut ticket, resumed, discovered) = match self.inventory.retirement(thing_name).await? {
            Some(ticket) => (ticket, true, None),
            None => {
                let found = self.certificate_ids(thing_name, None).await?;
                if found.ids.is_empty()
                    && found.detach_only.is_empty()
                    && self.iot.thing_membership(thing_name).await?.is_none()
                {
                    return Ok(RetireOutcome::NothingToRetire {
                        thing_name: thing_name.to_string(),
                    });
                }
                let ticket = RetirementTicket {
                    thing_name: thing_name.to_string(),
                    reason: request.reason.clone(),
                    requested_at: now,
                    revoke: request.revoke,
                    keep_thing: request.keep_thing,
                    certificate_ids: found.ids.clone(),
                };
                if self.inventory.claim_retirement(&ticket).await? {
                    // What was found is what the ticket names: no second look.
                    (ticket, false, Some(found))
                } else {
                    // Another run claimed it first (or this claim's answer
                    // was lost): resume what is stored.
                    let stored = self.inventory.retirement(thing_name).await?;
                    (
                        stored.ok_or_else(|| RetirementError::Race {
                            thing_name: thing_name.to_string(),
                        })?,
                        true,
                        None,
                    )
                }
            }
        };
        // Resumed: every certificate found now, recorded on the ticket
        // before it is touched.
        let Discovered {
            ids,
            rotations,
            shared,
            detach_only,
        } = match discovered {
            Some(found) => found,
            None => self.certificate_ids(thing_name, Some(&ticket)).await?,
        };
        for (id, others) in &shared {
            tracing::warn!(
                thing = thing_name,
                certificate = %id,
                others = ?others,
                "certificate also attached to other things: only detached from this one"
            );
        }
        let found: BTreeSet<String> = ids.difference(&ticket.certificate_ids).cloned().collect();
        if !found.is_empty() {
            self.inventory.add_retiring_certificates(thing_name, &found).await?;
            ticket.certificate_ids.extend(found);
        }

        // 2. Rotations stopped, before any certificate changes.
        let mut rotations_stopped = 0;
        for r in rotations {
            if self
                .ops()
                .stop_for_good(r, FailureReason::Retired, "the device was retired", now)
                .await?
                .is_some()
            {
                rotations_stopped += 1;
            }
        }

        // 3. Records RETIRED, before any certificate is cut off or deleted.
        for id in &ticket.certificate_ids {
            self.inventory
                .record_retired(id, thing_name, &ticket.reason, now)
                .await?;
        }

        // 4. Certificates: status, policies, thing, deleted.
        let target = if ticket.revoke {
            CertificateStatus::Revoked
        } else {
            CertificateStatus::Inactive
        };
        for id in &ticket.certificate_ids {
            self.cut_off(thing_name, id, &target, !ticket.revoke).await?;
        }
        // Principals that are not the device's alone (a certificate shared
        // with other things, a non-certificate principal): detached from
        // this thing only.
        for arn in &detach_only {
            self.iot.detach_from_thing(thing_name, arn).await?;
        }

        // 5. Groups, then the thing.
        let mut thing_deleted = false;
        if !ticket.keep_thing
            && let Some(membership) = self.iot.thing_membership(thing_name).await?
        {
            for group in &membership.thing_groups {
                self.iot.leave_thing_group(thing_name, group).await?;
            }
            if let Some(group) = &membership.billing_group {
                self.iot.leave_billing_group(thing_name, group).await?;
            }
            self.delete_thing(thing_name).await?;
            thing_deleted = true;
        }

        // 6. Credentials records, every version.
        for id in &ticket.certificate_ids {
            if let Some(key) = self
                .inventory
                .certificate_record(id)
                .await?
                .and_then(|r| r.credentials_key)
            {
                self.objects.delete_object(&key).await?;
            }
        }

        // 7. The name claim (held by one of the certificates, if any).
        if !ticket.keep_thing {
            for id in &ticket.certificate_ids {
                self.inventory.release_thing_name(thing_name, id).await?;
            }
        }

        // 8. Done.
        self.inventory.finish_retirement(thing_name).await?;
        tracing::info!(
            thing = thing_name,
            certificates = ticket.certificate_ids.len(),
            rotations_stopped,
            thing_deleted,
            resumed,
            reason = %ticket.reason,
            "device retired"
        );
        Ok(RetireOutcome::Retired {
            thing_name: thing_name.to_string(),
            certificates: ticket.certificate_ids.len(),
            rotations_stopped,
            thing_deleted,
            resumed,
        })
    }

    /// One certificate: status set, policies detached, detached from the
    /// thing, deleted (unless kept REVOKED). Nothing when IoT no longer has it.
    async fn cut_off(
        &self,
        thing_name: &str,
        certificate_id: &str,
        target: &CertificateStatus,
        delete: bool,
    ) -> Result<(), RetirementError> {
        let Some(cert) = self.iot.certificate(certificate_id).await? else {
            return Ok(());
        };
        // A REVOKED certificate stays REVOKED (IoT refuses any other status).
        if cert.status != *target && cert.status != CertificateStatus::Revoked {
            self.iot.set_status(certificate_id, target).await?;
        }
        for policy in self.iot.policies(&cert.certificate_arn).await? {
            self.iot.detach_policy(&policy, &cert.certificate_arn).await?;
        }
        self.iot.detach_from_thing(thing_name, &cert.certificate_arn).await?;
        if delete {
            self.iot.delete_certificate(certificate_id).await?;
        }
        Ok(())
    }

    /// `DeleteThing`, retried with doubling waits while IoT still reports
    /// principals attached.
    async fn delete_thing(&self, thing_name: &str) -> Result<(), RetirementError> {
        let mut wait = self.settings.first_backoff;
        let attempts = self.settings.delete_attempts.max(1);
        for attempt in 1..=attempts {
            match self.iot.delete_thing(thing_name).await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind == PortErrorKind::Conflict => {
                    tracing::info!(thing = thing_name, attempt, error = %e, "thing still attached; waiting");
                    // Anything attached meanwhile is detached too; usually
                    // the list is already empty and IoT only lags behind.
                    for arn in self.iot.attached_principals(thing_name).await?.unwrap_or_default() {
                        self.iot.detach_from_thing(thing_name, &arn).await?;
                    }
                    if attempt < attempts {
                        self.pacer.sleep(wait).await;
                        wait = (wait * 2).min(self.settings.max_backoff);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RetirementError::StillAttached {
            thing_name: thing_name.to_string(),
            attempts,
        })
    }
}

/// What [`Retirement::certificate_ids`] found.
struct Discovered {
    ids: BTreeSet<String>,
    rotations: Vec<Rotation>,
    shared: Vec<(String, Vec<String>)>,
    /// ARNs to detach from the thing and leave alone otherwise.
    detach_only: Vec<String>,
}

/// Whether a retirement changes this rotation.
fn to_stop(r: &Rotation) -> bool {
    match r.state {
        RotationState::Requested | RotationState::Issued | RotationState::Delivered | RotationState::Confirmed => true,
        RotationState::Failed => r.is_failing() || r.due_at.is_some(),
        RotationState::Retired => false,
    }
}

#[cfg(test)]
mod tests;
