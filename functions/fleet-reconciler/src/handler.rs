//! One scheduled run as of the wall clock: the reconciler, then the
//! certificates an `onboard allow reset` superseded; the report is the
//! answer and metrics.

use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::{PortError, ReconcileReport};
use serde_json::{Value, json};

use crate::AwsReconciler;
use crate::metrics::{ca_expiry_metrics, report_metrics, supersession_metrics};

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The run could not go on; the next scheduled run starts over.
    #[error(transparent)]
    Run(#[from] PortError),
}

impl onboarding_lambda::InvocationFailure for InvocationError {
    /// `Reconcile.<kind>`.
    fn error_type(&self) -> String {
        match self {
            InvocationError::Run(e) => format!("Reconcile.{}", e.kind.code()),
        }
    }
}

/// The function's handler: the reconciler (with the registrar as
/// `jitr-registrar` builds it) and the adapters of the supersessions' pass.
pub struct Handler {
    pub(crate) reconciler: AwsReconciler,
    pub(crate) iot: IotAdapter,
    pub(crate) inventory: DynamoInventory,
    pub(crate) metrics_namespace: String,
}

impl Handler {
    pub fn reconciler(&self) -> &AwsReconciler {
        &self.reconciler
    }

    /// One run as of the wall clock, never the event's `time`: whoever can
    /// invoke the function must not choose "now" (the event's `time` is
    /// only logged). Then the certificates an `onboard allow reset`
    /// superseded, once their successor is ACTIVE.
    ///
    /// # Errors
    /// The reconciler's failure; a failure of the supersessions' pass is
    /// logged and retried next run.
    pub async fn handle(&self, payload: Value) -> Result<Value, InvocationError> {
        let now = wall_clock_now();
        if let Ok(scheduled) = onboarding_lambda::event_time(&payload)
            && scheduled != now
        {
            tracing::info!(
                scheduled,
                now,
                "the event's time is logged only; the run uses the wall clock"
            );
        }
        let report = self.reconciler.run(now).await?;
        tracing::info!(?report, "reconciler run");
        match self.retire_superseded().await {
            Ok(superseded) => {
                tracing::info!(?superseded, "superseded certificates");
                onboarding_lambda::emit(&supersession_metrics(
                    &self.metrics_namespace,
                    &superseded,
                    time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
                ));
            }
            Err(e) => tracing::error!(error = %e, "superseded certificates not listed; the next run retries"),
        }
        // Each bound CA's expiry: a failure here never fails the run.
        let mut expiring_soon = None;
        match self.reconciler.ca_expiry(now).await {
            Ok(expiry) => {
                expiring_soon = Some(expiry.expiring_soon());
                tracing::info!(
                    cas = expiry.cas.len(),
                    expiring_soon = expiry.expiring_soon(),
                    unknown = expiry.errors,
                    "bound CAs' expiry"
                );
                for line in ca_expiry_metrics(
                    &self.metrics_namespace,
                    &expiry,
                    time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
                ) {
                    onboarding_lambda::emit(&line);
                }
            }
            Err(e) => tracing::error!(error = %e, "bound CAs' expiry not read; the next run retries"),
        }
        onboarding_lambda::emit(&report_metrics(
            &self.metrics_namespace,
            &report,
            time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        ));
        let mut answer = report_json(&report, now);
        if let Some(count) = expiring_soon {
            answer["caExpiringSoon"] = count.into();
        }
        Ok(answer)
    }

    /// Revokes the fleet-provisioned certificates an `onboard allow reset`
    /// superseded, each once IoT says its successor is ACTIVE and attached
    /// to the thing (the domain's [`onboarding_domain::retire_superseded`]),
    /// as of the wall clock.
    ///
    /// # Errors
    /// When the supersessions cannot be listed; one that fails is counted
    /// and retried next run.
    pub async fn retire_superseded(&self) -> onboarding_domain::PortResult<onboarding_domain::SupersessionReport> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        onboarding_domain::retire_superseded(&self.inventory, &self.iot, now, SUPERSESSIONS_PER_RUN).await
    }
}

/// Now, in Unix seconds, from the system clock: the only "now" a run uses.
pub fn wall_clock_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Supersessions (from `onboard allow reset`) handled per run.
pub const SUPERSESSIONS_PER_RUN: usize = 100;

/// The run's report as the invocation's answer.
pub fn report_json(report: &ReconcileReport, now: i64) -> Value {
    json!({
        "now": now,
        "cas": report.cas,
        "examined": report.examined,
        "stuckProcessed": report.stuck_processed,
        "pendingRecent": report.pending_recent,
        "recordedActive": report.recorded_active,
        "recordsExamined": report.records_examined,
        "markedMissing": report.marked_missing,
        "recordPages": report.record_pages,
        "errors": report.errors,
        "budgetExhausted": report.budget_exhausted,
        "interrupted": report.interrupted,
    })
}
