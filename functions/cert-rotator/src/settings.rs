//! The function's configuration, read from the environment once at init.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table |
//! | `CREDENTIALS_BUCKET` | yes | | bucket for server-keygen credentials objects |
//! | `CREDENTIALS_KMS_KEY_ID` | yes | | KMS key requested on every put |
//! | `PRESIGN_ROLE_ARN` | no | | role AWS IoT assumes to presign server-keygen URLs (required for that strategy) |
//! | `MAX_ROTATIONS_PER_RUN` | no | `500` | new rotations per run, and as many follow-ups (more with `ROTATION_SCHEDULE` when the certificates in their window need more) |
//! | `IOT_CALLS_PER_SECOND` | no | `5` | pace of job creations and follow-ups |
//! | `ROTATION_SCHEDULE` | no | | the function's schedule (`rate(1 day)`, `rate(6 hours)`, `rate(30 minutes)`; a `cron(...)` counts as daily): the run interval from which the budget is derived, spreading a cohort over the runs before its latest start; unset: the fixed budget |
//! | `RUN_TIME_BUDGET_SECONDS` | no | `780` | wall time a run spends at most (the function's 900 s timeout, less a margin); caps the budget |
//! | `DEFAULT_PROFILE`, `DEFAULT_PROFILE_CA_IDS` | no | | the default profile (as for the registrar) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |
//! | `S3_FORCE_PATH_STYLE` | no | `false` | path-style S3 addressing (emulators) |

use std::time::Duration;

use onboarding_aws::SdkSettings;
use onboarding_domain::RotatorSettings;
use onboarding_lambda::{Env, FromEnv, SettingsError};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory_table: String,
    pub credentials_bucket: String,
    pub credentials_kms_key_id: String,
    pub presign_role_arn: Option<String>,
    pub rotator: RotatorSettings,
    pub metrics_namespace: String,
    pub sdk: SdkSettings,
    pub s3_force_path_style: bool,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        let per_run: u32 = env.positive("MAX_ROTATIONS_PER_RUN", 500)?;
        let per_second: u32 = env.positive("IOT_CALLS_PER_SECOND", 5)?;
        let interval = Duration::from_secs(1) / per_second;
        let run_interval = match env.get("ROTATION_SCHEDULE") {
            None => None,
            Some(expression) => Some(schedule_interval(&expression).ok_or_else(|| SettingsError::Invalid {
                name: "ROTATION_SCHEDULE",
                problem: format!("{expression:?} is neither rate(N minutes|hours|days) nor cron(...)"),
            })?),
        };
        let run_time: u64 = env.positive("RUN_TIME_BUDGET_SECONDS", 780)?;
        Ok(Self {
            inventory_table: env.required("INVENTORY_TABLE")?,
            credentials_bucket: env.required("CREDENTIALS_BUCKET")?,
            credentials_kms_key_id: env.required("CREDENTIALS_KMS_KEY_ID")?,
            presign_role_arn: env.get("PRESIGN_ROLE_ARN"),
            rotator: RotatorSettings {
                max_new_per_run: per_run,
                max_follow_ups_per_run: per_run,
                max_examined_per_run: per_run.saturating_mul(20),
                create_job_interval: interval,
                follow_up_interval: interval,
                default_profile: env.default_profile()?,
                run_interval,
                max_run_time: Some(Duration::from_secs(run_time)),
                ..RotatorSettings::default()
            },
            metrics_namespace: env.metrics_namespace(),
            sdk: SdkSettings::with_max_attempts(env.sdk_max_attempts()?),
            s3_force_path_style: env.flag("S3_FORCE_PATH_STYLE"),
        })
    }
}

/// The interval between two runs of an EventBridge schedule expression:
/// `rate(N unit)`; a `cron(...)` expression counts as daily (its runs may be
/// more frequent: each then starts at least what daily runs would, and the
/// cohort is done earlier).
pub fn schedule_interval(expression: &str) -> Option<Duration> {
    let expression = expression.trim();
    if expression.starts_with("cron(") && expression.ends_with(')') {
        return Some(Duration::from_secs(86_400));
    }
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (value, unit) = inner.trim().split_once(' ')?;
    let value: u64 = value.parse().ok().filter(|v| *v > 0)?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3_600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(value.checked_mul(seconds)?))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_pairs(pairs)
    }

    const BASE: [(&str, &str); 3] = [
        ("INVENTORY_TABLE", "inv"),
        ("CREDENTIALS_BUCKET", "bucket"),
        ("CREDENTIALS_KMS_KEY_ID", "key"),
    ];

    #[test]
    fn settings_and_their_defaults() {
        assert_eq!(settings(&[]).err(), Some(SettingsError::Missing("INVENTORY_TABLE")));
        let s = settings(&BASE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.rotator.max_new_per_run, 500);
        assert_eq!(s.rotator.create_job_interval, Duration::from_millis(200));
        assert_eq!(s.presign_role_arn, None);
        assert_eq!(s.rotator.run_interval, None, "no schedule given: the fixed budget");
        assert_eq!(s.rotator.max_run_time, Some(Duration::from_secs(780)));
        let mut pairs = BASE.to_vec();
        pairs.push(("IOT_CALLS_PER_SECOND", "0"));
        assert!(matches!(
            settings(&pairs),
            Err(SettingsError::Invalid {
                name: "IOT_CALLS_PER_SECOND",
                ..
            })
        ));
    }

    #[test]
    fn the_schedule_gives_the_run_interval() {
        let mut pairs = BASE.to_vec();
        pairs.push(("ROTATION_SCHEDULE", "rate(6 hours)"));
        let s = settings(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.rotator.run_interval, Some(Duration::from_secs(6 * 3_600)));
        assert_eq!(schedule_interval("rate(1 day)"), Some(Duration::from_secs(86_400)));
        assert_eq!(schedule_interval("rate(30 minutes)"), Some(Duration::from_secs(1_800)));
        assert_eq!(
            schedule_interval("cron(0 3 * * ? *)"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(schedule_interval("rate(0 days)"), None);
        assert_eq!(schedule_interval("every day"), None);
        let mut pairs = BASE.to_vec();
        pairs.push(("ROTATION_SCHEDULE", "rate(1 fortnight)"));
        assert!(matches!(
            settings(&pairs),
            Err(SettingsError::Invalid {
                name: "ROTATION_SCHEDULE",
                ..
            })
        ));
    }
}
