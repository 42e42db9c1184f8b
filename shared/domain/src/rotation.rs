//! Certificate rotation: the policy each profile sets, the state machine every
//! rotation follows, the protocol devices speak (job document, CSR and answer
//! messages), the CSR checks, and the ports the rotation functions use.
//!
//! A rotation replaces one certificate (the "old" one) of one thing:
//!
//! ```text
//! requested ─▶ issued ─▶ delivered ─▶ confirmed ─▶ retired
//!     │           │           │
//!     └───────────┴───────────┴──▶ failed (reason; retried after a backoff, up to maxAttempts)
//! ```
//!
//! - `requested`: the job is created for the thing (both strategies).
//! - `issued`: a new certificate exists, `ACTIVE`, attached to the same thing
//!   and policy (CSR: from the device's CSR; server-keygen: made by AWS IoT).
//! - `delivered`: the device has its new credentials (CSR: the certificate was
//!   published on its response topic; server-keygen: the device took up the
//!   job whose document links them).
//! - `confirmed`: the job execution SUCCEEDED naming the new certificate.
//! - `retired`: the old certificate is `INACTIVE` and detached; it is deleted
//!   after the grace period (`old_deleted_at`).
//! - `failed`: the job failed, was rejected, timed out or was canceled, or the
//!   CSR was refused: the new certificate (if any) is revoked and detached, the
//!   old one is untouched.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::certificate::{CertificateRequest, KeyKind};
use crate::config::{CaTrust, OnboardingConfig};
use crate::ports::{DenyList, PortResult};
use crate::profile::{DeviceProfile, NameError};
use crate::reason::{RejectReason, Rejection};
use crate::record::CertificateRecord;

const DAY: i64 = 86_400;

/// How new credentials are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// The device keeps its private key and sends a CSR (recommended).
    #[default]
    Csr,
    /// AWS IoT makes the key pair; the device downloads both through
    /// presigned URLs, and the key object is deleted once it confirms.
    ServerKeygen,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csr => "csr",
            Self::ServerKeygen => "serverKeygen",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csr" => Some(Self::Csr),
            "serverKeygen" => Some(Self::ServerKeygen),
            _ => None,
        }
    }
}

/// A profile's rotation settings (`rotation` in the profile JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotationPolicy {
    #[serde(default)]
    pub strategy: Strategy,
    /// Rotate certificates expiring within this many days.
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// Days between retiring the old certificate and deleting it.
    #[serde(default = "default_grace_days")]
    pub grace_days: u32,
    /// Attempts before a rotation stays failed (an alarm, and an operator).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The job's in-progress timeout.
    #[serde(default = "default_job_timeout_minutes")]
    pub job_timeout_minutes: u32,
    /// Wait after the first failure; doubled after each further one.
    #[serde(default = "default_retry_backoff_hours")]
    pub retry_backoff_hours: u32,
    /// Days a job execution may stay `QUEUED` (the device offline) before
    /// the attempt is failed; never past the old certificate's notAfter.
    /// `queuedTimeout` is accepted as another name.
    #[serde(default = "default_queued_timeout_days", alias = "queuedTimeout")]
    pub queued_timeout_days: u32,
}

fn default_window_days() -> u32 {
    30
}
fn default_grace_days() -> u32 {
    7
}
fn default_max_attempts() -> u32 {
    3
}
fn default_job_timeout_minutes() -> u32 {
    60
}
fn default_retry_backoff_hours() -> u32 {
    24
}
fn default_queued_timeout_days() -> u32 {
    14
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            window_days: default_window_days(),
            grace_days: default_grace_days(),
            max_attempts: default_max_attempts(),
            job_timeout_minutes: default_job_timeout_minutes(),
            retry_backoff_hours: default_retry_backoff_hours(),
            queued_timeout_days: default_queued_timeout_days(),
        }
    }
}

impl RotationPolicy {
    /// The first field out of range, with the allowed range.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if !(1..=365).contains(&self.window_days) {
            return Some(("rotation.windowDays", "must be 1 to 365"));
        }
        if self.grace_days > 365 {
            return Some(("rotation.graceDays", "must be 0 to 365"));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Some(("rotation.maxAttempts", "must be 1 to 10"));
        }
        // AWS IoT Jobs: inProgressTimeoutInMinutes is 1 to 10080 (7 days).
        if !(1..=10_080).contains(&self.job_timeout_minutes) {
            return Some(("rotation.jobTimeoutMinutes", "must be 1 to 10080 (AWS IoT Jobs' limit)"));
        }
        if !(1..=720).contains(&self.retry_backoff_hours) {
            return Some(("rotation.retryBackoffHours", "must be 1 to 720"));
        }
        if !(1..=365).contains(&self.queued_timeout_days) {
            return Some(("rotation.queuedTimeoutDays", "must be 1 to 365"));
        }
        None
    }

    /// True when a certificate expiring at `not_after` is inside the window at `now`.
    pub fn is_due(&self, not_after: i64, now: i64) -> bool {
        not_after - i64::from(self.window_days) * DAY <= now
    }

    /// When a rotation that failed at `failed_at` on attempt `attempt` (1-based)
    /// may be tried again, or `None` when the attempts are used up.
    pub fn retry_at(&self, failed_at: i64, attempt: u32) -> Option<i64> {
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = 1i64 << attempt.saturating_sub(1).min(16);
        Some(failed_at + i64::from(self.retry_backoff_hours) * 3_600 * factor)
    }

    /// When an open job must have ended: its timeout, plus a minute's slack.
    pub fn job_deadline(&self, since: i64) -> i64 {
        since + i64::from(self.job_timeout_minutes) * 60 + 60
    }

    /// When an attempt whose job execution IoT reports as `execution` is
    /// overdue, on the execution's own timeline:
    ///
    /// - `IN_PROGRESS`: IoT's in-progress timer runs from `startedAt` (the
    ///   last update when IoT gives none), so the job's timeout counts from
    ///   there, not from the job's creation.
    /// - `QUEUED`: the device has not taken the job up (offline). It may wait
    ///   `queuedTimeoutDays` from `queuedAt`, but never past the old
    ///   certificate's notAfter (after it the device cannot connect anyway).
    /// - Anything else (ended): at once.
    pub fn execution_deadline(&self, r: &Rotation, execution: &JobExecution) -> i64 {
        match execution.status.as_str() {
            "IN_PROGRESS" => {
                let started = execution
                    .started_at
                    .or(execution.last_updated_at)
                    .unwrap_or(r.requested_at)
                    .max(r.requested_at);
                self.job_deadline(started)
            }
            "QUEUED" => {
                let queued = execution.queued_at.unwrap_or(r.requested_at).max(r.requested_at);
                (queued + i64::from(self.queued_timeout_days) * DAY)
                    .min(r.old_not_after)
                    .max(self.job_deadline(r.requested_at))
            }
            _ => r.requested_at,
        }
    }
}

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationState {
    Requested,
    Issued,
    Delivered,
    Confirmed,
    Retired,
    Failed,
}

impl RotationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Issued => "ISSUED",
            Self::Delivered => "DELIVERED",
            Self::Confirmed => "CONFIRMED",
            Self::Retired => "RETIRED",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "REQUESTED" => Some(Self::Requested),
            "ISSUED" => Some(Self::Issued),
            "DELIVERED" => Some(Self::Delivered),
            "CONFIRMED" => Some(Self::Confirmed),
            "RETIRED" => Some(Self::Retired),
            "FAILED" => Some(Self::Failed),
            _ => None,
        }
    }

    /// The states a transition to `self` may start from.
    fn allowed_from(self) -> &'static [RotationState] {
        match self {
            Self::Requested => &[Self::Failed],
            Self::Issued => &[Self::Requested],
            Self::Delivered => &[Self::Issued],
            Self::Confirmed => &[Self::Issued, Self::Delivered],
            Self::Retired => &[Self::Confirmed],
            Self::Failed => &[Self::Requested, Self::Issued, Self::Delivered],
        }
    }
}

/// Why a rotation failed (stable codes, in the inventory and the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    JobFailed,
    JobRejected,
    JobTimedOut,
    JobCanceled,
    /// The device's CSR did not pass the checks.
    CsrRefused,
    /// The device confirmed another certificate than the one issued.
    WrongConfirmation,
    /// The device is on the deny-list or its CA is no longer bound to a
    /// profile: no new certificate, and no further attempt.
    Denied,
}

impl FailureReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::JobFailed => "JOB_FAILED",
            Self::JobRejected => "JOB_REJECTED",
            Self::JobTimedOut => "JOB_TIMED_OUT",
            Self::JobCanceled => "JOB_CANCELED",
            Self::CsrRefused => "CSR_REFUSED",
            Self::WrongConfirmation => "WRONG_CONFIRMATION",
            Self::Denied => "DENIED",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::JobFailed,
            Self::JobRejected,
            Self::JobTimedOut,
            Self::JobCanceled,
            Self::CsrRefused,
            Self::WrongConfirmation,
            Self::Denied,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }

    /// True for a failure no further attempt can fix (never retried).
    pub fn is_final(self) -> bool {
        self == Self::Denied
    }

    /// The reason for a terminal job-execution status other than SUCCEEDED.
    pub fn of_job_status(status: &str) -> Option<Self> {
        match status {
            "FAILED" => Some(Self::JobFailed),
            "REJECTED" => Some(Self::JobRejected),
            "TIMED_OUT" => Some(Self::JobTimedOut),
            "CANCELED" | "REMOVED" => Some(Self::JobCanceled),
            _ => None,
        }
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rotation of {certificate_id}: {from} cannot become {to}")]
pub struct TransitionError {
    pub certificate_id: String,
    pub from: &'static str,
    pub to: &'static str,
}

/// One rotation of one certificate (the current attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The certificate being replaced.
    pub old_certificate_id: String,
    pub thing_name: String,
    pub profile: String,
    pub strategy: Strategy,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub job_id: String,
    pub state: RotationState,
    pub new_certificate_id: Option<String>,
    /// Server-keygen: the credentials objects (deleted when the device confirms).
    pub object_keys: Vec<String>,
    pub reason: Option<FailureReason>,
    pub detail: Option<String>,
    /// The old certificate's notAfter (Unix seconds).
    pub old_not_after: i64,
    /// Unix seconds of each step.
    pub requested_at: i64,
    pub issued_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub confirmed_at: Option<i64>,
    pub retired_at: Option<i64>,
    pub failed_at: Option<i64>,
    /// When the old certificate was deleted (after the grace period).
    pub old_deleted_at: Option<i64>,
    /// When the rotator must look at this rotation again (job deadline,
    /// retry time, deletion time); `None` when nothing is left to do.
    pub due_at: Option<i64>,
}

/// `rotate-<first 32 hex of the old certificate id>-<attempt>`: unique per
/// attempt, within AWS's 64 characters and `[a-zA-Z0-9_-]`.
pub fn job_id(old_certificate_id: &str, attempt: u32) -> String {
    let prefix: String = old_certificate_id.chars().take(32).collect();
    format!("rotate-{prefix}-{attempt}")
}

impl Rotation {
    /// A new attempt for a certificate of a thing.
    pub fn requested(
        record: &CertificateRecord,
        thing_name: &str,
        profile: &str,
        policy: &RotationPolicy,
        attempt: u32,
        now: i64,
    ) -> Self {
        Self {
            old_certificate_id: record.certificate_id.clone(),
            thing_name: thing_name.to_string(),
            profile: profile.to_string(),
            strategy: policy.strategy,
            attempt,
            job_id: job_id(&record.certificate_id, attempt),
            state: RotationState::Requested,
            new_certificate_id: None,
            object_keys: Vec::new(),
            reason: None,
            detail: None,
            old_not_after: record.not_after.unwrap_or(now),
            requested_at: now,
            issued_at: None,
            delivered_at: None,
            confirmed_at: None,
            retired_at: None,
            failed_at: None,
            old_deleted_at: None,
            due_at: Some(policy.job_deadline(now)),
        }
    }

    fn to(&self, state: RotationState) -> Result<Self, TransitionError> {
        if !state.allowed_from().contains(&self.state) {
            return Err(TransitionError {
                certificate_id: self.old_certificate_id.clone(),
                from: self.state.as_str(),
                to: state.as_str(),
            });
        }
        let mut next = self.clone();
        next.state = state;
        Ok(next)
    }

    /// The new certificate is `ACTIVE` and attached.
    ///
    /// # Errors
    /// [`TransitionError`] unless `requested`.
    pub fn issued(
        &self,
        new_certificate_id: &str,
        object_keys: Vec<String>,
        now: i64,
    ) -> Result<Self, TransitionError> {
        let mut next = self.to(RotationState::Issued)?;
        next.new_certificate_id = Some(new_certificate_id.to_string());
        next.object_keys = object_keys;
        next.issued_at = Some(now);
        Ok(next)
    }

    /// The device has its new credentials.
    ///
    /// # Errors
    /// [`TransitionError`] unless `issued`.
    pub fn delivered(&self, now: i64) -> Result<Self, TransitionError> {
        let mut next = self.to(RotationState::Delivered)?;
        next.delivered_at = Some(now);
        Ok(next)
    }

    /// The device confirmed the new certificate.
    ///
    /// # Errors
    /// [`TransitionError`] unless `issued` or `delivered`.
    pub fn confirmed(&self, now: i64) -> Result<Self, TransitionError> {
        let mut next = self.to(RotationState::Confirmed)?;
        next.confirmed_at = Some(now);
        next.due_at = Some(now);
        Ok(next)
    }

    /// The old certificate is `INACTIVE` and detached; due for deletion after the grace period.
    ///
    /// # Errors
    /// [`TransitionError`] unless `confirmed`.
    pub fn retired(&self, policy: &RotationPolicy, now: i64) -> Result<Self, TransitionError> {
        let mut next = self.to(RotationState::Retired)?;
        next.retired_at = Some(now);
        next.object_keys.clear();
        next.due_at = Some(now + i64::from(policy.grace_days) * DAY);
        Ok(next)
    }

    /// The old certificate was deleted: nothing left to do.
    pub fn old_deleted(&self, now: i64) -> Self {
        let mut next = self.clone();
        next.old_deleted_at = Some(now);
        next.due_at = None;
        next
    }

    /// The attempt failed; due again at the retry time, if any attempts are left.
    ///
    /// # Errors
    /// [`TransitionError`] unless open and not yet confirmed.
    pub fn failed(
        &self,
        reason: FailureReason,
        detail: impl Into<String>,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<Self, TransitionError> {
        let mut next = self.to(RotationState::Failed)?;
        next.reason = Some(reason);
        next.detail = Some(detail.into());
        next.failed_at = Some(now);
        next.due_at = (!reason.is_final())
            .then(|| policy.retry_at(now, self.attempt))
            .flatten();
        Ok(next)
    }

    /// A failure claimed before its clean-up: due at once (`due_at` =
    /// `failed_at`) until [`Rotation::cleaned`], so that a clean-up
    /// interrupted after the claim is resumed by the next rotator run.
    pub fn failing(&self) -> Self {
        let mut next = self.clone();
        next.due_at = self.failed_at;
        next
    }

    /// A failed attempt marked by [`Rotation::failing`]: its new certificate
    /// may still need revoking.
    pub fn is_failing(&self) -> bool {
        self.state == RotationState::Failed && self.failed_at.is_some() && self.due_at == self.failed_at
    }

    /// The clean-up of a failed attempt is done: due at the retry time (none
    /// when the attempts are used up or the failure is final).
    pub fn cleaned(&self, policy: &RotationPolicy) -> Self {
        let mut next = self.clone();
        let final_failure = self.reason.is_some_and(FailureReason::is_final);
        next.due_at = match (self.failed_at, final_failure) {
            (Some(at), false) => policy.retry_at(at, self.attempt),
            _ => None,
        };
        next
    }

    /// The next attempt after a failure, with a new job.
    ///
    /// # Errors
    /// [`TransitionError`] unless `failed`.
    pub fn retried(&self, policy: &RotationPolicy, now: i64) -> Result<Self, TransitionError> {
        let mut next = self.to(RotationState::Requested)?;
        next.attempt = self.attempt + 1;
        next.job_id = job_id(&self.old_certificate_id, next.attempt);
        next.strategy = policy.strategy;
        next.new_certificate_id = None;
        next.object_keys = Vec::new();
        next.reason = None;
        next.detail = None;
        next.requested_at = now;
        next.issued_at = None;
        next.delivered_at = None;
        next.confirmed_at = None;
        next.failed_at = None;
        next.due_at = Some(policy.job_deadline(now));
        Ok(next)
    }

    /// Marks an attempt whose job is not out yet: due at once (`due_at` =
    /// `requested_at`), so that a rotator run interrupted before the job
    /// exists is resumed by the next run. [`Rotation::started`] clears the mark.
    pub fn starting(&self) -> Self {
        let mut next = self.clone();
        next.due_at = Some(self.requested_at);
        next
    }

    /// A requested attempt marked by [`Rotation::starting`].
    pub fn is_starting(&self) -> bool {
        self.state == RotationState::Requested && self.due_at == Some(self.requested_at)
    }

    /// The attempt's job is out: due at the job deadline counted from `since`.
    pub fn started(&self, policy: &RotationPolicy, since: i64) -> Self {
        let mut next = self.clone();
        next.due_at = Some(policy.job_deadline(since));
        next
    }

    /// Server-keygen: the new certificate and its objects, recorded while the
    /// attempt is still `requested`, before anything is attached to the
    /// certificate, so that no step can leave it unaccounted for.
    pub fn with_new_certificate(&self, new_certificate_id: &str, object_keys: Vec<String>) -> Self {
        let mut next = self.clone();
        next.new_certificate_id = Some(new_certificate_id.to_string());
        next.object_keys = object_keys;
        next
    }

    /// A failed rotation that will not be retried (an operator decides):
    /// nothing left due.
    pub fn given_up(&self, why: &str) -> Self {
        let mut next = self.clone();
        next.detail = Some(match &self.detail {
            Some(detail) if !detail.is_empty() => format!("{detail}; not retried: {why}"),
            _ => format!("not retried: {why}"),
        });
        next.due_at = None;
        next
    }
}

/// The topic a device publishes its CSR on.
pub fn csr_topic(thing_name: &str) -> String {
    format!("devices/{thing_name}/rotation/csr")
}

/// The topic a device receives the answer to its CSR on.
pub fn answer_topic(thing_name: &str) -> String {
    format!("devices/{thing_name}/rotation/certificate")
}

/// The `operation` of a rotation job document.
pub const JOB_OPERATION: &str = "rotate-certificate";

/// The job document devices receive (see the README for the device's steps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDocument {
    /// Always [`JOB_OPERATION`].
    pub operation: String,
    /// Protocol version, `1`.
    pub version: String,
    pub strategy: Strategy,
    /// The certificate being replaced (the one the device uses now).
    pub old_certificate_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<CsrInstructions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_keygen: Option<ServerKeygenInstructions>,
}

/// CSR strategy: where to send the CSR and where the answer comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrInstructions {
    pub request_topic: String,
    pub answer_topic: String,
}

/// Server-keygen strategy: the new credentials, as URLs AWS IoT presigns.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerKeygenInstructions {
    pub new_certificate_id: String,
    pub certificate_url: String,
    /// Once presigned, whoever holds it can fetch the key: never in debug
    /// output beyond its path.
    pub private_key_url: String,
}

impl std::fmt::Debug for ServerKeygenInstructions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.private_key_url.split('?').next().unwrap_or_default();
        let shown = if path.len() == self.private_key_url.len() {
            self.private_key_url.clone()
        } else {
            format!("{path}?{REDACTED}")
        };
        f.debug_struct("ServerKeygenInstructions")
            .field("new_certificate_id", &self.new_certificate_id)
            .field("certificate_url", &self.certificate_url)
            .field("private_key_url", &shown)
            .finish()
    }
}

impl JobDocument {
    pub fn csr(rotation: &Rotation) -> Self {
        Self {
            operation: JOB_OPERATION.into(),
            version: "1".into(),
            strategy: Strategy::Csr,
            old_certificate_id: rotation.old_certificate_id.clone(),
            csr: Some(CsrInstructions {
                request_topic: csr_topic(&rotation.thing_name),
                answer_topic: answer_topic(&rotation.thing_name),
            }),
            server_keygen: None,
        }
    }

    /// `bucket` and the object keys become `${aws:iot:s3-presigned-url:…}`
    /// placeholders, which AWS IoT replaces with presigned URLs when it hands
    /// the document to the device (the job's `presignedUrlConfig` names the role).
    pub fn server_keygen(
        rotation: &Rotation,
        new_certificate_id: &str,
        bucket: &str,
        certificate_key: &str,
        private_key_key: &str,
    ) -> Self {
        let url = |key: &str| format!("${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{bucket}/{key}}}");
        Self {
            operation: JOB_OPERATION.into(),
            version: "1".into(),
            strategy: Strategy::ServerKeygen,
            old_certificate_id: rotation.old_certificate_id.clone(),
            csr: None,
            server_keygen: Some(ServerKeygenInstructions {
                new_certificate_id: new_certificate_id.to_string(),
                certificate_url: url(certificate_key),
                private_key_url: url(private_key_key),
            }),
        }
    }
}

/// What a device publishes on its CSR topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrMessage {
    pub job_id: String,
    /// PEM `CERTIFICATE REQUEST`.
    pub csr: String,
}

/// The answer on the device's answer topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status", rename_all_fields = "camelCase")]
pub enum CsrAnswer {
    #[serde(rename = "ISSUED")]
    Issued {
        job_id: String,
        certificate_id: String,
        certificate_pem: String,
    },
    #[serde(rename = "REFUSED")]
    Refused {
        job_id: String,
        reason_code: String,
        detail: String,
    },
}

/// What the device reports in the job execution's `statusDetails` on success.
pub const CONFIRMATION_FIELD: &str = "newCertificateId";

/// The OID of the NIST P-521 curve (secp521r1).
const OID_P521: &str = "1.3.132.0.35";

/// The key types `CreateCertificateFromCsr` accepts, in words.
pub const CSR_KEYS: &str = "RSA of at least 2048 bits, EC P-256, P-384 or P-521";

/// Key types the registrar onboards that `CreateCertificateFromCsr` refuses:
/// devices holding them cannot rotate with the CSR strategy.
pub const KEYS_WITHOUT_CSR_ROTATION: &[&str] = &["Ed25519"];

/// Checks a CSR's key against what AWS IoT's `CreateCertificateFromCsr`
/// accepts, so that a key it would refuse is answered at once instead of
/// failing the call and leaving the attempt to time out.
///
/// # Errors
/// `WEAK_KEY` for RSA under 2048 bits, `UNSUPPORTED_KEY` for anything else
/// outside [`CSR_KEYS`] (Ed25519 included).
pub fn check_csr_key(key: &KeyKind) -> Result<(), Rejection> {
    match key {
        KeyKind::Rsa { bits } if *bits >= 2048 => Ok(()),
        KeyKind::Rsa { bits } => Err(Rejection::new(
            RejectReason::WeakKey,
            format!("RSA key of {bits} bits; CreateCertificateFromCsr needs at least 2048"),
        )),
        KeyKind::EcP256 | KeyKind::EcP384 => Ok(()),
        KeyKind::EcOther { curve } if curve == OID_P521 => Ok(()),
        other => Err(Rejection::new(
            RejectReason::UnsupportedKey,
            format!("{other}: CreateCertificateFromCsr accepts only {CSR_KEYS}"),
        )),
    }
}

/// The key types a profile onboards that its rotation strategy cannot
/// rotate (empty for server-keygen, which makes a new key of AWS IoT's own).
pub fn keys_that_cannot_rotate(policy: &RotationPolicy) -> &'static [&'static str] {
    match policy.strategy {
        Strategy::Csr => KEYS_WITHOUT_CSR_ROTATION,
        Strategy::ServerKeygen => &[],
    }
}

/// The warning `profile put` prints for a profile whose rotation strategy
/// cannot rotate some key types the registrar onboards; `None` when every
/// onboarded key can rotate.
pub fn rotation_key_warning(profile: &DeviceProfile) -> Option<String> {
    let keys = keys_that_cannot_rotate(&profile.rotation);
    (!keys.is_empty()).then(|| {
        format!(
            "profile {} rotates with strategy csr, but devices onboarded with {} keys cannot rotate that way \
             (CreateCertificateFromCsr accepts only {CSR_KEYS}): their CSRs are refused with UNSUPPORTED_KEY; \
             use strategy serverKeygen for them, or onboard only those key types",
            profile.name,
            keys.join(", ")
        )
    })
}

/// Whether the device of an old certificate may still get a new one: its
/// CA bound to a valid profile, and neither its fingerprint nor its serial
/// (for that CA) on the deny-list (looked up by key, never cached). Checked
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
    Ok(match deny_list.denial(ca, serial, fingerprint).await? {
        Some(rejection) => Err(rejection),
        None => Ok(()),
    })
}

/// Checks a device's CSR for a rotation: signed by its own key, a key
/// `CreateCertificateFromCsr` accepts ([`check_csr_key`]), and a subject that names the same thing under the
/// profile's naming rule.
///
/// # Errors
/// A [`Rejection`] with the registrar's reason codes (`CERTIFICATE_MALFORMED`,
/// `SIGNATURE_INVALID`, `WEAK_KEY`, `UNSUPPORTED_KEY`, `THING_NAME_MISSING`,
/// `THING_NAME_INVALID`) or `IDENTITY_COLLISION` for another thing's name.
pub fn check_csr(csr_pem: &str, profile: &DeviceProfile, thing_name: &str) -> Result<CertificateRequest, Rejection> {
    let csr = CertificateRequest::from_pem(csr_pem)
        .map_err(|e| Rejection::new(RejectReason::CertificateMalformed, e.to_string()))?;
    if !csr.signature_valid {
        return Err(Rejection::new(
            RejectReason::SignatureInvalid,
            "the CSR is not signed by the key it carries",
        ));
    }
    check_csr_key(&csr.key)?;
    let named = profile.thing_name_for(&csr.subject).map_err(|e| match e {
        NameError::Missing(field) => Rejection::new(
            RejectReason::ThingNameMissing,
            format!("the CSR's subject has no {field}, which the naming rule uses"),
        ),
        NameError::Invalid(name) => Rejection::new(
            RejectReason::ThingNameInvalid,
            format!("the CSR names {name:?}, not a valid thing name"),
        ),
    })?;
    if named != thing_name {
        return Err(Rejection::new(
            RejectReason::IdentityCollision,
            format!("the CSR names thing {named:?}, but it came from {thing_name:?}"),
        ));
    }
    Ok(csr)
}

/// A page of results and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque; `None` when there is nothing more.
    pub cursor: Option<String>,
}

/// The inventory as rotation uses it.
pub trait RotationInventory: Send + Sync {
    /// Provisioned certificates whose notAfter is before `until`, oldest
    /// first, from the sparse expiry index: the cost follows the number
    /// expiring, not the fleet.
    fn expiring(
        &self,
        until: i64,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<CertificateRecord>>> + Send;
    /// Rotations due at or before `now` (job deadlines, retries, deletions).
    fn due_rotations(
        &self,
        now: i64,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<Rotation>>> + Send;
    fn rotation(&self, old_certificate_id: &str) -> impl Future<Output = PortResult<Option<Rotation>>> + Send;
    fn rotation_by_job(&self, job_id: &str) -> impl Future<Output = PortResult<Option<Rotation>>> + Send;
    /// Writes a rotation if the stored one is still `expected` (state and
    /// attempt; `None`: no rotation stored). False when another writer won.
    fn put_rotation(
        &self,
        rotation: &Rotation,
        expected: Option<(RotationState, u32)>,
    ) -> impl Future<Output = PortResult<bool>> + Send;
    /// The new certificate's record: provisioned for the same thing, in the expiry index.
    fn record_rotated_in(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
    /// The old certificate's record: retired, out of the expiry index.
    fn record_rotated_out(
        &self,
        old_certificate_id: &str,
        new_certificate_id: &str,
        now: i64,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// The rotator's saved position between runs.
    fn cursor(&self, name: &str) -> impl Future<Output = PortResult<Option<String>>> + Send;
    fn save_cursor(&self, name: &str, cursor: Option<&str>) -> impl Future<Output = PortResult<()>> + Send;
}

/// A certificate AWS IoT made.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_pem: String,
    /// Server-keygen only. Never in debug output.
    pub private_key_pem: Option<String>,
}

/// What debug output shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("certificate_id", &self.certificate_id)
            .field("certificate_arn", &self.certificate_arn)
            .field("certificate_pem", &self.certificate_pem)
            .field("private_key_pem", &self.private_key_pem.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// A job execution as AWS IoT reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobExecution {
    pub status: String,
    pub status_details: std::collections::BTreeMap<String, String>,
    /// Unix seconds IoT queued the execution, started it (`IN_PROGRESS`),
    /// and last updated it; `None` when IoT does not say.
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub last_updated_at: Option<i64>,
}

/// AWS IoT as rotation uses it.
pub trait RotationIot: Send + Sync {
    /// `CreateJob` for one thing; succeeds when the job already exists.
    fn create_job(
        &self,
        job_id: &str,
        thing_name: &str,
        document: &JobDocument,
        timeout_minutes: u32,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// `DescribeJobExecution`; `None` when there is none.
    fn job_execution(
        &self,
        job_id: &str,
        thing_name: &str,
    ) -> impl Future<Output = PortResult<Option<JobExecution>>> + Send;
    /// `CancelJob` (force), after a rotation is given up.
    fn cancel_job(&self, job_id: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `CreateCertificateFromCsr`, not yet active.
    fn certificate_from_csr(&self, csr_pem: &str) -> impl Future<Output = PortResult<IssuedCertificate>> + Send;
    /// `CreateKeysAndCertificate`, not yet active.
    fn keys_and_certificate(&self) -> impl Future<Output = PortResult<IssuedCertificate>> + Send;
    /// `DescribeCertificate` PEM and status; `None` when it does not exist.
    fn certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<crate::ports::RegisteredCertificate>>> + Send;
    fn set_status(
        &self,
        certificate_id: &str,
        status: &crate::ports::CertificateStatus,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// `ListThingPrincipals`: the ARNs of the certificates attached to the thing.
    fn thing_principals(&self, thing_name: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    /// `AttachThingPrincipal` (`EXCLUSIVE_THING`).
    fn attach_to_thing(&self, thing_name: &str, certificate_arn: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `DetachThingPrincipal`; succeeds when not attached.
    fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str)
    -> impl Future<Output = PortResult<()>> + Send;
    /// Policy names attached to the certificate.
    fn policies(&self, certificate_arn: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `DetachPolicy`; succeeds when not attached.
    fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `DeleteCertificate` (it must be inactive and detached); succeeds when gone.
    fn delete_certificate(&self, certificate_id: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// Publishes to a device (IoT data plane, QoS 1).
    fn publish(&self, topic: &str, payload: &[u8]) -> impl Future<Output = PortResult<()>> + Send;
}

/// The credentials bucket as server-keygen rotation uses it.
pub trait RotationObjects: Send + Sync {
    /// Stores one object under SSE-KMS.
    fn put_object(&self, key: &str, body: &[u8]) -> impl Future<Output = PortResult<()>> + Send;
    /// Deletes one object; succeeds when it is already gone.
    fn delete_object(&self, key: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// The bucket's name, for the job document's presigned-URL placeholders.
    fn bucket(&self) -> &str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_private_key() {
        let issued = IssuedCertificate {
            certificate_id: "c".repeat(64),
            certificate_arn: "arn:aws:iot:eu-west-1:1:cert/c".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----".into(),
            private_key_pem: Some("-----BEGIN PRIVATE KEY-----\nMIGHAgEAsecret\n".into()),
        };
        let shown = format!("{issued:?} {issued:#?}");
        assert!(!shown.contains("PRIVATE KEY") && !shown.contains("secret"), "{shown}");
        assert!(shown.contains(REDACTED) && shown.contains(&issued.certificate_id));

        let instructions = ServerKeygenInstructions {
            new_certificate_id: "n".into(),
            certificate_url: "https://b.s3/rotation/t/n/certificate.pem".into(),
            private_key_url: "https://b.s3/rotation/t/n/private.key?X-Amz-Signature=abc123".into(),
        };
        let shown = format!("{instructions:?}");
        assert!(!shown.contains("abc123"), "{shown}");
        assert!(shown.contains("rotation/t/n/private.key?<redacted>"), "{shown}");
    }

    fn record(id: &str, not_after: i64) -> CertificateRecord {
        let mut r = CertificateRecord::bare(id, "ca", crate::record::RecordStatus::Provisioned, 0);
        r.not_after = Some(not_after);
        r
    }

    #[test]
    fn due_within_the_window() {
        let p = RotationPolicy::default();
        let now = 1_000 * DAY;
        assert!(p.is_due(now + 20 * DAY, now));
        assert!(p.is_due(now + 30 * DAY, now));
        assert!(!p.is_due(now + 31 * DAY, now));
    }

    #[test]
    fn the_happy_path_and_its_timestamps() {
        let p = RotationPolicy::default();
        let old = "a".repeat(64);
        let r = Rotation::requested(&record(&old, 50 * DAY), "t-1", "sensors", &p, 1, 100);
        assert_eq!(r.job_id, format!("rotate-{}-1", "a".repeat(32)));
        assert!(r.job_id.len() <= 64);
        assert_eq!(r.due_at, Some(100 + 3_600 + 60));
        let r = r.issued("new", vec![], 110).and_then(|r| r.delivered(120));
        let r = r.and_then(|r| r.confirmed(130)).and_then(|r| r.retired(&p, 140));
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.state, RotationState::Retired);
        assert_eq!(
            (r.issued_at, r.delivered_at, r.confirmed_at, r.retired_at),
            (Some(110), Some(120), Some(130), Some(140))
        );
        assert_eq!(r.due_at, Some(140 + 7 * DAY));
        assert_eq!(r.old_deleted(200).due_at, None);
    }

    #[test]
    fn forbidden_transitions_are_refused() {
        let p = RotationPolicy::default();
        let r = Rotation::requested(&record("b", 0), "t", "p", &p, 1, 0);
        assert!(r.confirmed(1).is_err(), "not issued yet");
        assert!(r.retired(&p, 1).is_err());
        assert!(r.retried(&p, 1).is_err(), "not failed");
        let confirmed = r.issued("n", vec![], 1).and_then(|r| r.confirmed(2));
        let confirmed = confirmed.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            confirmed.failed(FailureReason::JobFailed, "x", &p, 3).is_err(),
            "a confirmed rotation only retires"
        );
    }

    #[test]
    fn failures_back_off_and_stop_at_the_limit() {
        let p = RotationPolicy::default();
        let r = Rotation::requested(&record("c", 0), "t", "p", &p, 1, 0);
        let f1 = r
            .failed(FailureReason::JobTimedOut, "no answer", &p, 1_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f1.due_at, Some(1_000 + 24 * 3_600));
        let r2 = f1.retried(&p, 90_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r2.attempt, r2.state), (2, RotationState::Requested));
        assert_eq!(r2.job_id, job_id("c", 2));
        let f2 = r2
            .failed(FailureReason::JobFailed, "", &p, 100_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f2.due_at, Some(100_000 + 48 * 3_600));
        let r3 = f2.retried(&p, 300_000).unwrap_or_else(|e| panic!("{e}"));
        let f3 = r3
            .failed(FailureReason::JobFailed, "", &p, 400_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f3.due_at, None, "three attempts, then an operator");
    }

    #[test]
    fn an_attempt_is_due_at_once_until_its_job_is_out() {
        let p = RotationPolicy::default();
        let r = Rotation::requested(&record("e", 0), "t", "p", &p, 1, 500);
        assert!(!r.is_starting());
        let s = r.starting();
        assert!(s.is_starting());
        assert_eq!(s.due_at, Some(500));
        let s = s.with_new_certificate("n", vec!["k".into()]);
        assert_eq!(
            (s.state, s.new_certificate_id.as_deref()),
            (RotationState::Requested, Some("n"))
        );
        let out = s.started(&p, 600);
        assert!(!out.is_starting());
        assert_eq!(out.due_at, Some(p.job_deadline(600)));
        let f = out
            .failed(FailureReason::JobFailed, "boom", &p, 700)
            .unwrap_or_else(|e| panic!("{e}"));
        let g = f.given_up("the old certificate is not ACTIVE");
        assert_eq!(g.due_at, None);
        assert_eq!(
            g.detail.as_deref(),
            Some("boom; not retried: the old certificate is not ACTIVE")
        );
    }

    #[test]
    fn csr_keys_are_what_create_certificate_from_csr_accepts() {
        for ok in [
            KeyKind::Rsa { bits: 2048 },
            KeyKind::Rsa { bits: 4096 },
            KeyKind::EcP256,
            KeyKind::EcP384,
            KeyKind::EcOther {
                curve: "1.3.132.0.35".into(),
            },
        ] {
            assert_eq!(check_csr_key(&ok), Ok(()), "{ok}");
        }
        let code = |k: KeyKind| check_csr_key(&k).err().map(|r| r.reason.code());
        assert_eq!(code(KeyKind::Rsa { bits: 1024 }), Some("WEAK_KEY"));
        assert_eq!(code(KeyKind::Ed25519), Some("UNSUPPORTED_KEY"));
        assert_eq!(
            code(KeyKind::EcOther {
                curve: "1.3.132.0.10".into()
            }),
            Some("UNSUPPORTED_KEY")
        );
        let mut profile = DeviceProfile::minimal("p", "pol");
        let warning = rotation_key_warning(&profile).unwrap_or_default();
        assert!(
            warning.contains("Ed25519") && warning.contains("serverKeygen"),
            "{warning}"
        );
        profile.rotation.strategy = Strategy::ServerKeygen;
        assert_eq!(rotation_key_warning(&profile), None);
    }

    #[test]
    fn queued_timeout_is_a_policy_field_in_days() {
        let p: RotationPolicy = serde_json::from_str(r#"{"queuedTimeoutDays": 30}"#).unwrap_or_default();
        assert_eq!(p.queued_timeout_days, 30);
        let p: RotationPolicy = serde_json::from_str(r#"{"queuedTimeout": 5}"#).unwrap_or_default();
        assert_eq!(p.queued_timeout_days, 5);
        assert_eq!(RotationPolicy::default().queued_timeout_days, 14);
        let p = RotationPolicy {
            queued_timeout_days: 0,
            ..RotationPolicy::default()
        };
        assert_eq!(p.problem().map(|(f, _)| f), Some("rotation.queuedTimeoutDays"));
    }

    #[test]
    fn policy_ranges_name_the_field() {
        let mut p = RotationPolicy::default();
        assert_eq!(p.problem(), None);
        p.job_timeout_minutes = 0;
        assert_eq!(p.problem().map(|(f, _)| f), Some("rotation.jobTimeoutMinutes"));
    }

    #[test]
    fn job_documents_serialize_as_documented() {
        let p = RotationPolicy::default();
        let r = Rotation::requested(&record("d", 0), "t-9", "p", &p, 1, 0);
        let doc = serde_json::to_value(JobDocument::csr(&r)).unwrap_or_default();
        assert_eq!(doc["operation"], "rotate-certificate");
        assert_eq!(doc["strategy"], "csr");
        assert_eq!(doc["csr"]["requestTopic"], "devices/t-9/rotation/csr");
        assert_eq!(doc["csr"]["answerTopic"], "devices/t-9/rotation/certificate");
        let doc = serde_json::to_value(JobDocument::server_keygen(&r, "n", "bkt", "k/c.pem", "k/key.pem"))
            .unwrap_or_default();
        assert_eq!(doc["strategy"], "serverKeygen");
        assert_eq!(
            doc["serverKeygen"]["privateKeyUrl"],
            "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/bkt/k/key.pem}"
        );
        let answer = serde_json::to_value(CsrAnswer::Refused {
            job_id: "j".into(),
            reason_code: "WEAK_KEY".into(),
            detail: "d".into(),
        })
        .unwrap_or_default();
        assert_eq!(answer["status"], "REFUSED");
        assert_eq!(answer["reasonCode"], "WEAK_KEY");
    }
}
