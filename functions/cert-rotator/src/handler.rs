//! One scheduled run: "now" from the event's `time`, the rotator's run, its
//! report as the answer and as metrics.

use std::time::Instant;

use onboarding_domain::{RotationError, RunReport};
use serde_json::{Value, json};

use crate::AwsRotator;
use crate::metrics::report_metrics;

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("the event has no usable `time` (RFC 3339): {0}")]
    Time(String),
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

impl onboarding_lambda::InvocationFailure for InvocationError {
    /// `MalformedEvent` (permanent) or `Rotation.<kind>`.
    fn error_type(&self) -> String {
        match self {
            InvocationError::Time(_) => "MalformedEvent".to_string(),
            InvocationError::Rotation(e) => format!("Rotation.{}", e.kind()),
        }
    }
}

/// The function's handler: the rotator with the AWS adapters.
pub struct Handler {
    pub(crate) rotator: AwsRotator,
    /// Read at init only, to warn when the completer's events are off.
    pub(crate) iot: aws_sdk_iot::Client,
    pub(crate) metrics_namespace: String,
}

impl Handler {
    pub fn rotator(&self) -> &AwsRotator {
        &self.rotator
    }

    /// Warns when the account's job-execution events, which feed the
    /// completer, are off. Read only: the event configuration is
    /// account-wide, and an operator turns it on at deploy time (`onboard
    /// events --enable`). Without it rotations still complete, at their
    /// deadline, through the rotator.
    pub async fn warm_up(&self) {
        match onboarding_aws::job_execution_events_enabled(&self.iot).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "job-execution events are off in this account: rotations complete only at their deadline; run `onboard events --enable` once"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read the IoT event configuration"),
        }
    }

    /// One scheduled run as of the event's `time`; its report is the answer
    /// and an EMF line. An item's failure does not fail the run: it is
    /// counted in `errors`.
    ///
    /// # Errors
    /// [`InvocationError::Time`] for an event without a usable `time`, or
    /// the run's failure.
    pub async fn handle(&self, payload: Value) -> Result<Value, InvocationError> {
        let started = Instant::now();
        let now = event_time(&payload)?;
        let report = self.rotator.run(now).await?;
        onboarding_lambda::emit(&report_metrics(
            &self.metrics_namespace,
            &report,
            started.elapsed().as_secs_f64() * 1000.0,
            time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        ));
        Ok(report_json(&report, now))
    }
}

/// "Now" from the scheduled event's `time`.
///
/// # Errors
/// [`InvocationError::Time`] when `time` is missing or not RFC 3339.
pub fn event_time(event: &Value) -> Result<i64, InvocationError> {
    onboarding_lambda::event_time(event).map_err(InvocationError::Time)
}

/// The run's report as the invocation's answer.
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
        "inWindow": report.in_window,
        "budget": report.budget,
        "behind": report.behind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
