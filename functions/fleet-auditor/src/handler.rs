//! One invocation: the audit's run continued (or started) as of the wall
//! clock, within the invocation's time; the answer, and the metrics of a run
//! that completed.

use std::time::{Duration, Instant};

use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::{
    AuditInventory, AuditInvocation, AuditIot, AuditRunStore, CaCertificates, DenyList, Inventory, ScheduledAudit,
    ScheduledAuditError, TimeLeft,
};
use serde_json::{Value, json};

use crate::metrics::run_metrics;

/// Why an invocation failed. The run's state is where the last saved step
/// left it: the next invocation does the failed step again.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    Audit(#[from] ScheduledAuditError),
}

impl onboarding_lambda::InvocationFailure for InvocationError {
    /// `Audit.<kind>`: `Audit.transient` (throttled: the next invocation
    /// goes on), `Audit.BadState` (an operator deletes the item), ….
    fn error_type(&self) -> String {
        match self {
            InvocationError::Audit(ScheduledAuditError::Port(e)) => format!("Audit.{}", e.kind.code()),
            InvocationError::Audit(ScheduledAuditError::BadState { .. }) => "Audit.BadState".into(),
            InvocationError::Audit(ScheduledAuditError::UnreadableCertificate { .. }) => {
                "Audit.UnreadableCertificate".into()
            }
        }
    }
}

/// The time an invocation may still start a step in: until its deadline
/// less a margin for the step in flight.
#[derive(Debug, Clone, Copy)]
pub struct InvocationTime {
    until: Instant,
}

impl InvocationTime {
    /// From the runtime's deadline (Unix milliseconds) as of `now_ms`, less
    /// `margin_ms`; `fallback_ms` from now when the runtime gave no deadline
    /// (0, or one already past: a local runtime without the header).
    pub fn new(deadline_ms: u64, now_ms: u64, margin_ms: u64, fallback_ms: u64) -> Self {
        let left = if deadline_ms > now_ms {
            (deadline_ms - now_ms).saturating_sub(margin_ms)
        } else {
            fallback_ms
        };
        Self {
            until: Instant::now() + Duration::from_millis(left),
        }
    }
}

impl TimeLeft for InvocationTime {
    fn time_left(&self) -> bool {
        Instant::now() < self.until
    }
}

/// The function's handler, generic over the audit's ports (the AWS
/// adapters by default; the domain's fakes in tests).
pub struct Handler<L = IotAdapter, I = IotAdapter, D = DynamoInventory, V = DynamoInventory, S = DynamoInventory> {
    pub(crate) audit: ScheduledAudit<L, I, D, V, S>,
    pub(crate) metrics_namespace: String,
    pub(crate) time_margin_ms: u64,
    pub(crate) fallback_ms: u64,
}

impl<L, I, D, V, S> Handler<L, I, D, V, S>
where
    L: CaCertificates,
    I: AuditIot,
    D: DenyList,
    V: AuditInventory + Inventory,
    S: AuditRunStore,
{
    /// A handler over `audit` (tests build one over the fakes).
    pub fn new(audit: ScheduledAudit<L, I, D, V, S>, metrics_namespace: &str, time_margin_ms: u64) -> Self {
        Self {
            audit,
            metrics_namespace: metrics_namespace.to_string(),
            time_margin_ms,
            fallback_ms: 60_000,
        }
    }

    /// One invocation as of the wall clock, never the event's `time`:
    /// whoever can invoke the function must not choose when a run starts
    /// or what "now" its checks judge by (the event's `time` is only logged).
    ///
    /// # Errors
    /// The audit's error; the run resumes from its last saved step.
    pub async fn handle(&self, payload: Value, deadline_ms: u64) -> Result<Value, InvocationError> {
        let now_ms = wall_clock_ms();
        let time = InvocationTime::new(deadline_ms, now_ms, self.time_margin_ms, self.fallback_ms);
        self.handle_at(&payload, i64::try_from(now_ms / 1_000).unwrap_or(i64::MAX), &time)
            .await
    }

    /// [`Handler::handle`] as of `now` (Unix seconds) within `time`.
    ///
    /// # Errors
    /// The audit's error.
    pub async fn handle_at(&self, payload: &Value, now: i64, time: &impl TimeLeft) -> Result<Value, InvocationError> {
        if let Ok(scheduled) = onboarding_lambda::event_time(payload)
            && scheduled != now
        {
            tracing::info!(
                scheduled,
                now,
                "the event's time is logged only; the audit uses the wall clock"
            );
        }
        let invocation = match self.audit.invoke(now, time).await {
            Ok(invocation) => invocation,
            Err(e) => {
                tracing::error!(error = %e, "audit invocation failed; the next one resumes from the last saved step");
                return Err(e.into());
            }
        };
        tracing::info!(?invocation, "audit invocation");
        if let Some(summary) = &invocation.completed {
            for line in run_metrics(&self.metrics_namespace, summary, now.saturating_mul(1_000)) {
                onboarding_lambda::emit(&line);
            }
        }
        Ok(answer(&invocation, now))
    }
}

/// The invocation's answer.
pub fn answer(invocation: &AuditInvocation, now: i64) -> Value {
    json!({
        "now": now,
        "runId": invocation.run_id,
        "started": invocation.started,
        "phase": invocation.phase.map(|p| p.as_str()),
        "stop": format!("{:?}", invocation.stop),
        "steps": invocation.steps,
        "certificates": invocation.certificates,
        "completed": invocation.completed.is_some(),
        "counts": invocation.completed.as_ref().map(|s| json!(s.counts)),
    })
}

/// Now, in Unix milliseconds, from the system clock: the only "now" an invocation uses.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;
    use onboarding_domain::audit_fakes::{AuditFake, Time};
    use onboarding_domain::reconciler_fakes::NOW;
    use onboarding_domain::{AuditRunState, AuditStop, ScheduledAuditSettings};

    fn handler(fake: &AuditFake) -> Handler<AuditFake, AuditFake, AuditFake, AuditFake, AuditFake> {
        let audit = ScheduledAudit::new(
            fake.clone(),
            fake.clone(),
            fake.clone(),
            fake.clone(),
            fake.clone(),
            ScheduledAuditSettings::default(),
        );
        Handler::new(audit, "ns", 0)
    }

    #[tokio::test]
    async fn the_events_time_is_ignored_the_run_starts_at_the_wall_clocks_now() {
        // An event from far in the future (which would hold off every run
        // until then), and one from the past (which would judge as of then).
        for time in ["2099-01-01T00:00:00Z", "1999-01-01T00:00:00Z"] {
            let fake = AuditFake::default();
            let payload = json!({"source": "aws.events", "time": time, "detail-type": "Scheduled Event"});
            let answer = handler(&fake).handle_at(&payload, NOW, &Time(true)).await.expect("ran");
            assert_eq!(answer["runId"], NOW, "{answer}");
            let stored = fake.with_store(|s| s.run.clone()).expect("a run");
            let state = AuditRunState::from_json(&stored.state, NOW).expect("state");
            assert_eq!(state.run_id, NOW);
        }
    }

    #[tokio::test]
    async fn a_completed_run_answers_its_counts_and_a_second_invocation_is_not_due() {
        let fake = AuditFake::default();
        let h = handler(&fake);
        let first = h.handle_at(&json!({}), NOW, &Time(true)).await.expect("ran");
        assert_eq!(first["completed"], true, "{first}");
        assert_eq!(first["counts"].as_object().map(|c| c.len()), Some(11));
        let second = h.handle_at(&json!({}), NOW + 60, &Time(true)).await.expect("ran");
        assert_eq!(second["stop"], format!("{:?}", AuditStop::NotDue));
    }

    #[tokio::test]
    async fn a_bad_state_item_fails_the_invocation_with_its_own_error_type() {
        use onboarding_lambda::InvocationFailure;
        let fake = AuditFake::default();
        fake.with_store(|s| {
            s.run = Some(onboarding_domain::StoredAuditRun {
                state: "{}".into(),
                version: 1,
            })
        });
        let error = handler(&fake)
            .handle_at(&json!({}), NOW, &Time(true))
            .await
            .expect_err("refused");
        assert_eq!(error.error_type(), "Audit.BadState");
    }

    #[test]
    fn the_time_left_is_the_deadline_less_the_margin_or_the_fallback_without_one() {
        let soon = InvocationTime::new(10_000, 9_000, 5_000, 60_000);
        assert!(!soon.time_left(), "the margin is larger than the time left");
        let plenty = InvocationTime::new(100_000, 1_000, 5_000, 0);
        assert!(plenty.time_left());
        let none = InvocationTime::new(0, 1_000, 5_000, 60_000);
        assert!(none.time_left(), "no deadline: the fallback");
    }
}
