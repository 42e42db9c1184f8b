//! The state machine every rotation follows. The rotation ports carry its
//! values, so it sits below them (with the policy that drives its
//! transitions); the workflows that move it are in `workflows::rotation`.
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

use crate::model::record::CertificateRecord;
use crate::policy::rotation::{DAY, RotationPolicy, Strategy};

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
    /// The device was retired (`onboard device retire`): final.
    Retired,
    /// The device's certificate was revoked in an emergency (`onboard
    /// device revoke`): no further attempt.
    Revoked,
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
            Self::Retired => "RETIRED",
            Self::Revoked => "REVOKED",
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
            Self::Retired,
            Self::Revoked,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }

    /// True for a failure no further attempt can fix (never retried).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Denied | Self::Retired | Self::Revoked)
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

    /// The device is retired: an attempt not yet retired (open, or
    /// confirmed but not completed) ends `failed` with the final reason
    /// `RETIRED`, marked [`Rotation::failing`] so that the rotation's fail
    /// path revokes its new certificate, cancels its job and deletes its
    /// objects. Unlike [`Rotation::failed`] it is
    /// allowed from `confirmed`: the old certificate is retired with the
    /// device, not by the rotation.
    ///
    /// # Errors
    /// [`TransitionError`] when `retired` or `failed`.
    pub fn retiring(&self, detail: impl Into<String>, now: i64) -> Result<Self, TransitionError> {
        self.ended_for_good(FailureReason::Retired, detail, now)
    }

    /// Failed with a final `reason` (`RETIRED`, `REVOKED`) that an operator's
    /// decision about the device brings, from any state but the end ones,
    /// `confirmed` included: the device's certificates are dealt with by
    /// that decision, not by the rotation.
    ///
    /// # Errors
    /// [`TransitionError`] when `retired` or `failed`.
    pub fn ended_for_good(
        &self,
        reason: FailureReason,
        detail: impl Into<String>,
        now: i64,
    ) -> Result<Self, TransitionError> {
        if !matches!(
            self.state,
            RotationState::Requested | RotationState::Issued | RotationState::Delivered | RotationState::Confirmed
        ) {
            return Err(TransitionError {
                certificate_id: self.old_certificate_id.clone(),
                from: self.state.as_str(),
                to: RotationState::Failed.as_str(),
            });
        }
        let mut next = self.clone();
        next.state = RotationState::Failed;
        next.reason = Some(reason);
        next.detail = Some(detail.into());
        next.failed_at = Some(now);
        Ok(next.failing())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, not_after: i64) -> CertificateRecord {
        let mut r = CertificateRecord::bare(id, "ca", crate::model::record::RecordStatus::Provisioned, 0);
        r.not_after = Some(not_after);
        r
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
}
