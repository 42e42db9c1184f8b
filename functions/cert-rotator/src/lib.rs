//! The `cert-rotator` Lambda: one scheduled rotation run, as of the scheduled
//! event's `time`, through the domain's [`Rotator`] and the AWS adapters.
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `INVENTORY_TABLE` | yes | | DynamoDB inventory table |
//! | `CREDENTIALS_BUCKET` | yes | | bucket for server-keygen credentials objects |
//! | `CREDENTIALS_KMS_KEY_ID` | yes | | KMS key requested on every put |
//! | `PRESIGN_ROLE_ARN` | no | | role AWS IoT assumes to presign server-keygen URLs (required for that strategy) |
//! | `MAX_ROTATIONS_PER_RUN` | no | `500` | new rotations per run, and as many follow-ups |
//! | `IOT_CALLS_PER_SECOND` | no | `5` | pace of job creations and follow-ups |
//! | `DEFAULT_PROFILE`, `DEFAULT_PROFILE_CA_IDS` | no | | the default profile (as for the registrar) |
//! | `METRICS_NAMESPACE` | no | `IotOnboarding` | CloudWatch namespace of EMF metrics |
//! | `SDK_MAX_ATTEMPTS` | no | `6` | attempts per AWS call (adaptive retry) |
//! | `S3_FORCE_PATH_STYLE` | no | `false` | path-style S3 addressing (emulators) |

use std::time::{Duration, Instant};

use onboarding_aws::{DynamoInventory, RotationIotAdapter, S3RotationObjects, SdkSettings};
use onboarding_domain::{Pacer, RotationError, Rotator, RotatorSettings, RunReport};
pub use onboarding_lambda::FromEnv;
use onboarding_lambda::{Env, SettingsError};
use serde_json::{Value, json};

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
                ..RotatorSettings::default()
            },
            metrics_namespace: env.metrics_namespace(),
            sdk: SdkSettings::with_max_attempts(env.sdk_max_attempts()?),
            s3_force_path_style: env.flag("S3_FORCE_PATH_STYLE"),
        })
    }
}

/// Sleeps on the Tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioPacer;

impl Pacer for TokioPacer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// The rotator with the AWS adapters.
pub type AwsRotator = Rotator<DynamoInventory, RotationIotAdapter, S3RotationObjects, DynamoInventory, TokioPacer>;

/// Builds the rotator from settings and a loaded SDK configuration.
pub fn build_rotator(settings: &Settings, sdk: &aws_config::SdkConfig) -> AwsRotator {
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    // The rotator never publishes; the data-plane client is never called.
    let iot = RotationIotAdapter::new(
        aws_sdk_iot::Client::new(sdk),
        aws_sdk_iotdataplane::Client::new(sdk),
        settings.presign_role_arn.clone(),
    );
    let objects = S3RotationObjects::new(
        onboarding_aws::s3_client(sdk, settings.s3_force_path_style),
        &settings.credentials_bucket,
        &settings.credentials_kms_key_id,
    );
    Rotator::new(
        inventory.clone(),
        iot,
        objects,
        inventory,
        TokioPacer,
        settings.rotator.clone(),
    )
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("the event has no usable `time` (RFC 3339): {0}")]
    Time(String),
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        let error_type = match &error {
            InvocationError::Time(_) => "MalformedEvent".to_string(),
            InvocationError::Rotation(e) => format!("Rotation.{}", e.kind()),
        };
        lambda_runtime::Diagnostic {
            error_type,
            error_message: error.to_string(),
        }
    }
}

/// "Now" from the scheduled event's `time`.
///
/// # Errors
/// [`InvocationError::Time`] when `time` is missing or not RFC 3339.
pub fn event_time(event: &Value) -> Result<i64, InvocationError> {
    onboarding_lambda::event_time(event).map_err(InvocationError::Time)
}

/// The run's report as the invocation's answer and as EMF metrics.
pub fn report_json(report: &RunReport, now: i64) -> Value {
    json!({
        "now": now,
        "examined": report.examined,
        "started": report.started,
        "skippedOpen": report.skipped_open,
        "skippedNotDue": report.skipped_not_due,
        "skippedNoProfile": report.skipped_no_profile,
        "skippedInactive": report.skipped_inactive,
        "skippedDenied": report.skipped_denied,
        "followedUp": report.followed_up,
        "resumed": report.resumed,
        "waiting": report.waiting,
        "completed": report.completed,
        "failed": report.failed,
        "retried": report.retried,
        "deleted": report.deleted,
        "gaveUp": report.gave_up,
        "errors": report.errors,
        "budgetExhausted": report.budget_exhausted,
        "interrupted": report.interrupted,
    })
}

/// The EMF document of one run (dimension `Function` = `rotation`, shared by
/// the three rotation functions so one alarm watches `RotationFailed`).
pub fn report_metrics(namespace: &str, report: &RunReport, duration_ms: f64, timestamp_ms: i64) -> Value {
    onboarding_lambda::emf(
        namespace,
        "rotation",
        &[
            ("RotationStarted", f64::from(report.started), "Count"),
            ("RotationCompleted", f64::from(report.completed), "Count"),
            ("RotationFailed", f64::from(report.failed), "Count"),
            ("RotationRetried", f64::from(report.retried), "Count"),
            ("RotationGaveUp", f64::from(report.gave_up), "Count"),
            ("OldCertificateDeleted", f64::from(report.deleted), "Count"),
            ("RotatorErrors", f64::from(report.errors), "Count"),
            ("RotatorDurationMs", duration_ms, "Milliseconds"),
        ],
        &[],
        timestamp_ms,
    )
}

/// Warns when the account's job-execution events, which feed the completer,
/// are off. Read only: the event configuration is account-wide, and an
/// operator turns it on at deploy time (`onboard events --enable`). Without
/// it rotations still complete, at their deadline, through the rotator.
pub async fn check_job_execution_events(iot: &aws_sdk_iot::Client) {
    match onboarding_aws::job_execution_events_enabled(iot).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "job-execution events are off in this account: rotations complete only at their deadline; run `onboard events --enable` once"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the IoT event configuration"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
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
    fn now_comes_from_the_scheduled_event() {
        let event: Value = serde_json::from_str(include_str!("../../../events/rotator-scheduled.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event_time(&event).ok(), Some(1_795_316_400));
        assert!(matches!(event_time(&json!({})), Err(InvocationError::Time(_))));
        assert!(matches!(
            event_time(&json!({"time": "yesterday"})),
            Err(InvocationError::Time(_))
        ));
    }

    #[test]
    fn metrics_name_every_count() {
        let report = RunReport {
            started: 3,
            failed: 1,
            ..RunReport::default()
        };
        let doc = report_metrics("ns", &report, 10.0, 0);
        assert_eq!(doc["RotationStarted"], 3.0);
        assert_eq!(doc["RotationFailed"], 1.0);
        assert_eq!(doc["Function"], "rotation");
        assert_eq!(report_json(&report, 5)["started"], 3);
    }
}
