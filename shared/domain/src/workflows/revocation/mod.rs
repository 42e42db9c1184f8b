//! Emergency revocation (`onboard device revoke`): a device whose key was
//! stolen is cut off. Its certificates are found from facts (IoT's list of
//! the thing's principals and its description of each certificate, the
//! inventory's records, name claim and rotations; never the argument
//! alone), each revocation is claimed with a conditional write on the
//! certificate's record, and then, as the first IoT call after the claims,
//! the certificates are set `REVOKED`. After that, at leisure: serials and
//! fingerprints onto the deny-list (so JITR, the reconciler, imports and
//! rotations refuse them for good), open rotations failed through the
//! rotation state machine (job canceled, a new certificate already issued
//! revoked and denied too), and the thing name held for the revoked
//! certificate until the device is retired.
//!
//! Every step is idempotent and every write is conditional or a replace, so
//! a run interrupted anywhere converges when run again.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::{try_join, try_join_all};
use futures::try_join;

use crate::model::certificate::Certificate;
use crate::model::event::is_certificate_id;
use crate::model::naming::is_valid_thing_name;
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::DenyKey;
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState};
use crate::ports::{
    Connections, Inventory, NameClaim, Pacer, PortError, PortErrorKind, RegisteredCertificate, RevocationStore,
    RotationInventory, RotationIot, RotationObjects,
};
use crate::workflows::registrar::certificate_id_of_arn;
use crate::workflows::rotation::ops::{Ops, RotationError};

/// The longest reason kept on a record.
pub const REASON_MAX: usize = 1024;

/// What to revoke: every certificate of a thing, or one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationTarget {
    Thing(String),
    /// A certificate id, 64 lowercase hex digits.
    Certificate(String),
}

impl RevocationTarget {
    /// A certificate id (64 hex digits, any case) or a thing name. A long
    /// hexadecimal argument of another length is taken for a mistyped
    /// certificate id, not for a thing name.
    ///
    /// # Errors
    /// [`RevocationError::MalformedCertificateId`] or
    /// [`RevocationError::MalformedTarget`].
    pub fn parse(text: &str) -> Result<Self, RevocationError> {
        let lower = text.to_ascii_lowercase();
        if is_certificate_id(&lower) {
            return Ok(Self::Certificate(lower));
        }
        if text.len() >= 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RevocationError::MalformedCertificateId(text.to_string()));
        }
        if is_valid_thing_name(text) {
            Ok(Self::Thing(text.to_string()))
        } else {
            Err(RevocationError::MalformedTarget(text.to_string()))
        }
    }
}

/// Why a revocation could not be done (or finished: run it again).
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Rotation(#[from] RotationError),
    #[error("{0:?} is not a certificate id: a certificate id is 64 hexadecimal digits")]
    MalformedCertificateId(String),
    #[error("{0:?} is neither a certificate id (64 hexadecimal digits) nor a thing name (1-128 of a-z A-Z 0-9 : _ -)")]
    MalformedTarget(String),
    #[error("a revocation needs a reason: pass --reason TEXT (it is kept on the records and the deny-list entries)")]
    MissingReason,
    #[error("the reason is {0} characters long; at most {REASON_MAX} are kept")]
    ReasonTooLong(usize),
    #[error(
        "thing {0} is unknown: AWS IoT lists no certificate attached to it and the inventory holds no claim on its name"
    )]
    UnknownThing(String),
    #[error("certificate {0} is unknown: AWS IoT does not have it and the inventory has no record of it")]
    UnknownCertificate(String),
}

impl RevocationError {
    /// Bad input (exit 1 in the CLI), as opposed to a failed call.
    pub fn is_input(&self) -> bool {
        !matches!(self, Self::Port(_) | Self::Rotation(_))
    }
}

/// One certificate the revocation covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCertificate {
    pub certificate_id: String,
    /// Its status in IoT before this run; `None` when IoT does not have it.
    pub previous_status: Option<CertificateStatus>,
    /// True when this run claimed it; false when an earlier run had.
    pub claimed_now: bool,
    /// The rotation whose new certificate this is, if it was found that way.
    pub issued_by_rotation_of: Option<String>,
}

/// A rotation the revocation stopped, or found it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedRotation {
    pub old_certificate_id: String,
    pub job_id: String,
    pub new_certificate_id: Option<String>,
    /// The state it was found in.
    pub state_before: RotationState,
    /// The state it was left in: `FAILED` (`REVOKED`, final), or the end
    /// state a race with its completion left.
    pub state_after: RotationState,
}

/// What became of the thing name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameHold {
    /// Held for this revoked certificate until the device is retired.
    Held { thing_name: String, certificate_id: String },
    /// Another (not revoked) certificate of the thing holds it.
    HeldByOther { thing_name: String, holder: String },
    /// No thing is known for the certificate.
    NoThing,
}

/// What one run did (or found done by an earlier run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationReport {
    pub thing_name: Option<String>,
    pub certificates: Vec<RevokedCertificate>,
    pub deny_entries: Vec<DenyKey>,
    pub rotations: Vec<StoppedRotation>,
    pub name: NameHold,
    /// What became of the thing's open MQTT connection (client id = thing name).
    pub disconnection: Disconnection,
    /// From the start of the run to the moment IoT accepted the last
    /// `REVOKED` of the target's certificates.
    pub revoked_after: Duration,
}

/// What became of the device's open MQTT connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnection {
    /// Closed now; with its certificates `REVOKED` it cannot reconnect.
    Closed,
    /// No client of the thing's name was connected.
    NotConnected,
    /// The broker refused to close it (no permission, no such API): an
    /// open connection lasts until AWS IoT closes it (within minutes).
    Refused(String),
    /// No thing is known for the certificate.
    NoThing,
}

/// One certificate as the facts show it.
struct Found {
    id: String,
    cert: Option<RegisteredCertificate>,
    record: Option<CertificateRecord>,
    rotation: Option<Rotation>,
    issued_by_rotation_of: Option<String>,
}

/// The emergency revocation workflow.
pub struct Revocation<T, R, O, I, P> {
    iot: T,
    rotations: R,
    objects: O,
    inventory: I,
    pacer: P,
}

impl<T, R, O, I, P> Revocation<T, R, O, I, P>
where
    T: RotationIot + Connections,
    R: RotationInventory,
    O: RotationObjects,
    I: Inventory + RevocationStore,
    P: Pacer,
{
    pub fn new(iot: T, rotations: R, objects: O, inventory: I, pacer: P) -> Self {
        Self {
            iot,
            rotations,
            objects,
            inventory,
            pacer,
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

    /// Revokes a thing's certificates, or one certificate, for `reason`, as
    /// of `now` (Unix seconds). Running it again after any interruption
    /// finishes the work; running it after it finished changes nothing.
    ///
    /// # Errors
    /// Bad input ([`RevocationError::is_input`]): nothing was written. A
    /// failed call: run it again.
    pub async fn revoke(
        &self,
        target: &RevocationTarget,
        reason: &str,
        now: i64,
    ) -> Result<RevocationReport, RevocationError> {
        let started = self.pacer.now();
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(RevocationError::MissingReason);
        }
        if reason.chars().count() > REASON_MAX {
            return Err(RevocationError::ReasonTooLong(reason.chars().count()));
        }
        // Round 1: which certificates, from IoT's and the inventory's facts.
        let (thing, ids, holder) = match target {
            RevocationTarget::Thing(name) => {
                let (principals, holder) = try_join(self.principals(name), self.inventory.name_holder(name)).await?;
                let mut ids: BTreeSet<String> = principals;
                ids.extend(holder.clone());
                if ids.is_empty() {
                    return Err(RevocationError::UnknownThing(name.clone()));
                }
                (Some(name.clone()), ids, holder)
            }
            RevocationTarget::Certificate(id) => (None, BTreeSet::from([id.clone()]), None),
        };
        // Round 2: each certificate as IoT describes it, its record, its rotation.
        let mut found = self.find(ids.iter().cloned(), None).await?;
        let thing = match (target, thing) {
            (RevocationTarget::Certificate(id), _) => {
                let f = &found[0];
                if f.cert.is_none() && f.record.is_none() {
                    return Err(RevocationError::UnknownCertificate(id.clone()));
                }
                f.record.as_ref().and_then(|r| r.thing_name.clone())
            }
            (_, thing) => thing,
        };
        // Round 3 and 4: claimed, then REVOKED at once.
        let mut revoked = self.claim_and_revoke(&found, thing.as_deref(), reason, now).await?;
        let revoked_after = self.pacer.now().saturating_duration_since(started);
        tracing::warn!(
            thing = ?thing,
            certificates = ?found.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            elapsed_ms = revoked_after.as_millis() as u64,
            reason,
            "certificates REVOKED"
        );
        // The connection open now would live on for minutes: closed at once
        // (the device's client id is its thing name); it cannot come back.
        let disconnection = match &thing {
            Some(thing) => match self.iot.disconnect(thing).await {
                Ok(true) => Disconnection::Closed,
                Ok(false) => Disconnection::NotConnected,
                // Not the kind a retry fixes: the revocation goes on.
                Err(e) if matches!(e.kind, PortErrorKind::AccessDenied | PortErrorKind::Invalid) => {
                    Disconnection::Refused(e.to_string())
                }
                Err(e) => return Err(e.into()),
            },
            None => Disconnection::NoThing,
        };
        tracing::warn!(thing = ?thing, disconnection = ?disconnection, reason, "open MQTT connection");
        // The new certificates of the rotations under way: the thief may
        // hold one (a CSR signed with the stolen key), so they go the same way.
        let known: BTreeSet<String> = found.iter().map(|f| f.id.clone()).collect();
        let issued: Vec<(String, String)> = found
            .iter()
            .filter_map(|f| f.rotation.as_ref())
            .filter(|r| r.state != RotationState::Retired)
            .filter_map(|r| {
                r.new_certificate_id
                    .clone()
                    .map(|new| (new, r.old_certificate_id.clone()))
            })
            .filter(|(new, _)| !known.contains(new))
            .collect();
        for (new, old) in issued {
            let more = self.find(std::iter::once(new), Some(old)).await?;
            revoked.extend(self.claim_and_revoke(&more, thing.as_deref(), reason, now).await?);
            found.extend(more);
        }
        let deny_entries = self.deny(&found, reason, now).await?;
        let rotations = self.stop_rotations(&found, reason, now).await?;
        let name = self.hold_name(target, thing.as_deref(), &found, holder, now).await?;
        Ok(RevocationReport {
            thing_name: thing,
            certificates: revoked,
            deny_entries,
            rotations,
            name,
            disconnection,
            revoked_after,
        })
    }

    /// The certificate ids IoT lists as the thing's principals (none when
    /// the thing does not exist in IoT).
    async fn principals(&self, thing_name: &str) -> Result<BTreeSet<String>, PortError> {
        match self.iot.thing_principals(thing_name).await {
            Ok(arns) => Ok(arns
                .iter()
                .filter_map(|arn| certificate_id_of_arn(arn))
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind == PortErrorKind::MissingResource => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        }
    }

    async fn find(
        &self,
        ids: impl Iterator<Item = String>,
        issued_by_rotation_of: Option<String>,
    ) -> Result<Vec<Found>, PortError> {
        try_join_all(ids.map(|id| {
            let issued_by_rotation_of = issued_by_rotation_of.clone();
            async move {
                let (cert, record, rotation) = try_join!(
                    self.iot.certificate(&id),
                    self.inventory.certificate_record(&id),
                    self.rotations.rotation(&id),
                )?;
                Ok(Found {
                    id,
                    cert,
                    record,
                    rotation,
                    issued_by_rotation_of,
                })
            }
        }))
        .await
    }

    /// Claims each certificate's revocation on its record, then sets the
    /// certificates IoT has `REVOKED` (only after every claim is written).
    async fn claim_and_revoke(
        &self,
        found: &[Found],
        thing: Option<&str>,
        reason: &str,
        now: i64,
    ) -> Result<Vec<RevokedCertificate>, PortError> {
        let claims = try_join_all(found.iter().map(|f| {
            let record = claim_record(f, thing, now);
            async move { self.inventory.claim_revocation(&record, reason, now).await }
        }))
        .await?;
        tracing::warn!(
            thing = ?thing,
            claimed = ?found.iter().zip(&claims).map(|(f, now)| (f.id.as_str(), *now)).collect::<Vec<_>>(),
            reason,
            "revocations claimed"
        );
        try_join_all(
            found
                .iter()
                .filter(|f| f.cert.as_ref().is_some_and(|c| c.status != CertificateStatus::Revoked))
                .map(|f| async move {
                    match self.iot.set_status(&f.id, &CertificateStatus::Revoked).await {
                        // Deleted meanwhile: nothing left to revoke.
                        Err(e) if e.kind == PortErrorKind::MissingResource => Ok(()),
                        other => other,
                    }
                }),
        )
        .await?;
        Ok(found
            .iter()
            .zip(claims)
            .map(|(f, claimed_now)| RevokedCertificate {
                certificate_id: f.id.clone(),
                previous_status: f.cert.as_ref().map(|c| c.status.clone()),
                claimed_now,
                issued_by_rotation_of: f.issued_by_rotation_of.clone(),
            })
            .collect())
    }

    /// Each certificate's fingerprint, and its serial under its CA, onto the
    /// deny-list.
    async fn deny(&self, found: &[Found], reason: &str, now: i64) -> Result<Vec<DenyKey>, PortError> {
        let mut keys: Vec<DenyKey> = Vec::new();
        for key in found.iter().flat_map(deny_keys) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let note = format!("revoked: {reason}");
        try_join_all(keys.iter().map(|key| self.inventory.deny(key, &note, now))).await?;
        tracing::warn!(entries = keys.len(), reason, "revoked certificates denied");
        Ok(keys)
    }

    /// Open rotations of the revoked certificates, failed through the
    /// rotation state machine (its clean-up revokes and detaches the new
    /// certificate, cancels the job, deletes key material).
    async fn stop_rotations(
        &self,
        found: &[Found],
        reason: &str,
        now: i64,
    ) -> Result<Vec<StoppedRotation>, RevocationError> {
        let ops = self.ops();
        let detail = format!("certificate revoked: {reason}");
        let mut stopped = Vec::new();
        for r in found.iter().filter_map(|f| f.rotation.clone()) {
            let state_before = r.state;
            let (old, job, new) = (
                r.old_certificate_id.clone(),
                r.job_id.clone(),
                r.new_certificate_id.clone(),
            );
            // Open, confirmed, failing or waiting for a retry: ended for
            // good (`REVOKED` is final), its new certificate revoked.
            let Some(state_after) = ops.stop_for_good(r, FailureReason::Revoked, &detail, now).await? else {
                continue;
            };
            tracing::warn!(old_certificate = %old, job = %job, state_before = state_before.as_str(), state_after = state_after.as_str(), reason, "rotation stopped");
            stopped.push(StoppedRotation {
                old_certificate_id: old,
                job_id: job,
                new_certificate_id: new,
                state_before,
                state_after,
            });
        }
        Ok(stopped)
    }

    /// The thing name stays claimed by a revoked certificate, marked held,
    /// so that nobody takes it before the device is retired.
    async fn hold_name(
        &self,
        target: &RevocationTarget,
        thing: Option<&str>,
        found: &[Found],
        holder: Option<String>,
        now: i64,
    ) -> Result<NameHold, PortError> {
        let Some(thing) = thing else {
            return Ok(NameHold::NoThing);
        };
        let revoked: BTreeSet<&str> = found.iter().map(|f| f.id.as_str()).collect();
        let holder = match target {
            RevocationTarget::Thing(_) => holder,
            RevocationTarget::Certificate(_) => self.inventory.name_holder(thing).await?,
        };
        let candidate = match (&holder, target) {
            (Some(h), _) if revoked.contains(h.as_str()) => h.clone(),
            (Some(h), _) => {
                tracing::warn!(thing, holder = %h, "thing name held by a certificate not revoked: left as it is");
                return Ok(NameHold::HeldByOther {
                    thing_name: thing.to_string(),
                    holder: h.clone(),
                });
            }
            // Nobody holds the name: a whole thing revoked takes it (for its
            // first certificate), so that nobody else can.
            (None, RevocationTarget::Thing(_)) => match revoked.iter().next() {
                Some(first) => (*first).to_string(),
                None => return Ok(NameHold::NoThing),
            },
            (None, RevocationTarget::Certificate(id)) => id.clone(),
        };
        match self.inventory.hold_thing_name(thing, &candidate, now).await? {
            NameClaim::Claimed => {
                tracing::warn!(thing, certificate = %candidate, "thing name held until the device is retired");
                Ok(NameHold::Held {
                    thing_name: thing.to_string(),
                    certificate_id: candidate,
                })
            }
            NameClaim::HeldBy(other) => Ok(NameHold::HeldByOther {
                thing_name: thing.to_string(),
                holder: other,
            }),
        }
    }
}

/// The record a claim writes when the certificate has none yet (an
/// existing record keeps its fields; the claim only changes its status).
fn claim_record(f: &Found, thing: Option<&str>, now: i64) -> CertificateRecord {
    if let Some(record) = &f.record {
        return record.clone();
    }
    let ca = f
        .cert
        .as_ref()
        .and_then(|c| c.ca_certificate_id.clone())
        .unwrap_or_default();
    let mut record = CertificateRecord::bare(&f.id, &ca, RecordStatus::Revoked, now);
    record.thing_name = thing.map(str::to_string);
    if let Some(parsed) = f.cert.as_ref().and_then(|c| Certificate::from_pem(&c.pem).ok()) {
        record.serial = Some(parsed.serial);
        record.fingerprint = parsed.fingerprint;
        record.not_before = Some(parsed.not_before);
        record.not_after = Some(parsed.not_after);
    }
    record
}

/// The deny-list entries of one certificate: its fingerprint (the
/// certificate id is the SHA-256 of its DER), and its serial under its CA
/// when both are known (a certificate AWS IoT signed has no CA of ours).
fn deny_keys(f: &Found) -> Vec<DenyKey> {
    let parsed = f.cert.as_ref().and_then(|c| Certificate::from_pem(&c.pem).ok());
    let mut keys = Vec::new();
    let fingerprint = parsed.as_ref().map_or(f.id.as_str(), |p| p.fingerprint.as_str());
    keys.extend(DenyKey::fingerprint(fingerprint).ok());
    if fingerprint != f.id {
        keys.extend(DenyKey::fingerprint(&f.id).ok());
    }
    let serial = parsed
        .as_ref()
        .map(|p| p.serial.clone())
        .or_else(|| f.record.as_ref().and_then(|r| r.serial.clone()));
    let ca = f
        .cert
        .as_ref()
        .and_then(|c| c.ca_certificate_id.clone())
        .or_else(|| f.record.as_ref().map(|r| r.ca_certificate_id.clone()));
    if let (Some(serial), Some(ca)) = (serial, ca) {
        keys.extend(DenyKey::serial(&ca, &serial).ok());
    }
    keys
}

#[cfg(test)]
mod tests;
