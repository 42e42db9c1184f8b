//! Certificate rotation as a profile configures it: the strategy and the
//! rotation policy; below it, the state machine every rotation follows
//! ([`state`]) and the protocol devices speak ([`protocol`]).

pub(crate) mod protocol;
pub(crate) mod state;

use serde::{Deserialize, Serialize};

use crate::policy::rotation::protocol::JobExecution;
use crate::policy::rotation::state::Rotation;

pub(crate) const DAY: i64 = 86_400;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_within_the_window() {
        let p = RotationPolicy::default();
        let now = 1_000 * DAY;
        assert!(p.is_due(now + 20 * DAY, now));
        assert!(p.is_due(now + 30 * DAY, now));
        assert!(!p.is_due(now + 31 * DAY, now));
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
}
