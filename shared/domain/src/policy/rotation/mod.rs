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

/// Who signs a rotated device's new certificate (`rotation.issuer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Issuer {
    /// AWS IoT's own CA, through `CreateCertificateFromCsr` (the default).
    /// (A struct variant so that unknown fields are refused here too.)
    Amazon {},
    /// The fleet's own CA registered with AWS IoT, its private key an
    /// asymmetric KMS key: the certificate is built here, signed with
    /// `kms:Sign` and registered with `RegisterCertificate` under the CA.
    /// CSR strategy only. `"kms-ca"` is accepted as another spelling of
    /// `"kmsCa"` (the issue's and the docs' name for it).
    #[serde(alias = "kms-ca")]
    KmsCa {
        /// The CA's certificate id in AWS IoT (64 hex characters). Its PEM
        /// is always read from IoT, never from the profile.
        ca_certificate_id: String,
        /// The key's ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`;
        /// not an alias, which can be pointed elsewhere). The deployment
        /// must allow it.
        kms_key_arn: String,
        /// Validity of the issued certificates, in days (never beyond the
        /// CA's own notAfter).
        validity_days: u32,
    },
}

impl Default for Issuer {
    fn default() -> Self {
        Self::Amazon {}
    }
}

impl Issuer {
    /// `amazon` or `kmsCa`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Amazon {} => "amazon",
            Self::KmsCa { .. } => "kmsCa",
        }
    }

    /// The first field out of range, with what it must be.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        let Self::KmsCa {
            ca_certificate_id,
            kms_key_arn,
            validity_days,
        } = self
        else {
            return None;
        };
        if ca_certificate_id.len() != 64
            || !ca_certificate_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Some((
                "rotation.issuer.caCertificateId",
                "must be the CA's certificate id: 64 lowercase hex characters",
            ));
        }
        if !is_kms_key_arn(kms_key_arn) {
            return Some((
                "rotation.issuer.kmsKeyArn",
                "must be a KMS key ARN, arn:<partition>:kms:<region>:<account>:key/<key id> (not an alias)",
            ));
        }
        if !(1..=3_650).contains(validity_days) {
            return Some(("rotation.issuer.validityDays", "must be 1 to 3650"));
        }
        None
    }
}

/// `arn:<partition>:kms:<region>:<12-digit account>:key/<key id>`.
pub fn is_kms_key_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let Some(key_id) = resource.strip_prefix("key/") else {
        return false;
    };
    *prefix == "arn"
        && partition.starts_with("aws")
        && word(partition)
        && *service == "kms"
        && word(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=128).contains(&key_id.len())
        && key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A profile's rotation settings (`rotation` in the profile JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Who signs the new certificate.
    #[serde(default)]
    pub issuer: Issuer,
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
            issuer: Issuer::default(),
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
        if matches!(self.issuer, Issuer::KmsCa { .. }) && self.strategy != Strategy::Csr {
            return Some((
                "rotation.issuer",
                "kmsCa issues from a device's CSR: it needs strategy csr",
            ));
        }
        self.issuer.problem()
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

#[cfg(test)]
mod issuer_tests {
    use super::*;
    use crate::policy::profile::{DeviceProfile, ProfileError};

    const CA: &str = "4f0ba6ec1f5a8e1b5c3d2e4f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7";
    const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn profile(issuer: &str) -> Result<DeviceProfile, ProfileError> {
        DeviceProfile::parse(&format!(
            r#"{{"name":"x","policyName":"p","rotation":{{"issuer":{issuer}}}}}"#
        ))
    }

    fn field(r: Result<DeviceProfile, ProfileError>) -> String {
        match r {
            Err(ProfileError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn json_error(r: Result<DeviceProfile, ProfileError>) -> String {
        match r {
            Err(ProfileError::Json(m)) => m,
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn amazon_is_the_default_and_unchanged() {
        let p = DeviceProfile::parse(r#"{"name":"x","policyName":"p"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.rotation.issuer, Issuer::Amazon {});
        let p = profile(r#"{"type":"amazon"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.rotation.issuer, Issuer::Amazon {});
        assert_eq!(p.rotation, RotationPolicy::default());
    }

    #[test]
    fn kms_ca_parses_and_round_trips() {
        let p = profile(&format!(
            r#"{{"type":"kmsCa","caCertificateId":"{CA}","kmsKeyArn":"{KEY}","validityDays":365}}"#
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.rotation.issuer,
            Issuer::KmsCa {
                ca_certificate_id: CA.into(),
                kms_key_arn: KEY.into(),
                validity_days: 365,
            }
        );
        assert_eq!(p.rotation.issuer.as_str(), "kmsCa");
        let back = serde_json::to_string(&p).unwrap_or_default();
        assert!(
            back.contains(r#""type":"kmsCa""#) && back.contains("caCertificateId"),
            "{back}"
        );
        assert_eq!(DeviceProfile::parse(&back), Ok(p.clone()));
        // The issue's spelling, `kms-ca`, is the same issuer (written back as `kmsCa`).
        let dashed = profile(&format!(
            r#"{{"type":"kms-ca","caCertificateId":"{CA}","kmsKeyArn":"{KEY}","validityDays":365}}"#
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dashed, p);
        assert!(
            profile(&format!(
                r#"{{"type":"kms_ca","caCertificateId":"{CA}","kmsKeyArn":"{KEY}","validityDays":365}}"#
            ))
            .is_err()
        );
        // Other partitions, multi-Region keys.
        assert!(is_kms_key_arn(
            "arn:aws-cn:kms:cn-north-1:123456789012:key/mrk-1234abcd"
        ));
    }

    #[test]
    fn bad_issuers_name_the_field() {
        let kms = |ca: &str, key: &str, days: &str| {
            profile(&format!(
                r#"{{"type":"kmsCa","caCertificateId":"{ca}","kmsKeyArn":"{key}","validityDays":{days}}}"#
            ))
        };
        // Unknown type, unknown and missing fields: the JSON error names them.
        assert!(json_error(profile(r#"{"type":"privateCa"}"#)).contains("privateCa"));
        assert!(json_error(profile(r#"{"caCertificateId":"x"}"#)).contains("type"));
        assert!(
            json_error(profile(&format!(
                r#"{{"type":"kmsCa","caCertificateId":"{CA}","kmsKeyArn":"{KEY}","validityDays":1,"keyPem":"x"}}"#
            )))
            .contains("keyPem")
        );
        assert!(
            json_error(profile(&format!(
                r#"{{"type":"kmsCa","caCertificateId":"{CA}","validityDays":1}}"#
            )))
            .contains("kmsKeyArn")
        );
        assert!(
            json_error(profile(&format!(
                r#"{{"type":"kmsCa","caCertificateId":"{CA}","kmsKeyArn":"{KEY}"}}"#
            )))
            .contains("validityDays")
        );
        assert!(json_error(profile(r#"{"type":"amazon","kmsKeyArn":"x"}"#)).contains("kmsKeyArn"));
        assert!(json_error(kms(CA, KEY, "-1")).contains("-1"));
        // Values.
        for ca in ["", &CA[..63], &CA.to_uppercase(), &format!("{}g", &CA[..63])] {
            assert_eq!(field(kms(ca, KEY, "30")), "rotation.issuer.caCertificateId", "{ca}");
        }
        for key in [
            "",
            "arn:aws:kms:eu-west-1:123456789012:alias/fleet-ca",
            "arn:aws:kms:eu-west-1:12345678901:key/abc",
            "arn:aws:kms:eu-west-1:123456789012:key/",
            "arn:aws:iam::123456789012:key/abc",
            "arn:aws:kms:eu-west-1:123456789012:key/a b",
            "arn:aws:kms:eu-west-1:123456789012:key/abc:extra",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            assert_eq!(field(kms(CA, key, "30")), "rotation.issuer.kmsKeyArn", "{key}");
        }
        assert_eq!(field(kms(CA, KEY, "0")), "rotation.issuer.validityDays");
        assert_eq!(field(kms(CA, KEY, "3651")), "rotation.issuer.validityDays");
        // kmsCa answers a CSR: no server-side key generation with it.
        let keygen = DeviceProfile::parse(&format!(
            r#"{{"name":"x","policyName":"p","rotation":{{"strategy":"serverKeygen","issuer":{{"type":"kmsCa","caCertificateId":"{CA}","kmsKeyArn":"{KEY}","validityDays":30}}}}}}"#
        ));
        assert_eq!(field(keygen), "rotation.issuer");
    }
}
