//! One hook request: decided within the budget, logged, counted, answered.

use std::time::Duration;

use onboarding_domain::{HookOutcome, HookRequest, HookResponse};
use serde_json::{Value, json};

use crate::AwsHook;
use crate::metrics::outcome_metrics;

/// Why an invocation failed: it never does (a request that cannot be
/// decided is refused), so this type has no values.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {}

impl onboarding_lambda::InvocationFailure for InvocationError {
    fn error_type(&self) -> String {
        match *self {}
    }
}

/// The function's handler: the hook with its adapters, and its budget.
pub struct Handler {
    pub(crate) hook: AwsHook,
    pub(crate) budget: Duration,
    pub(crate) metrics_namespace: String,
}

impl Handler {
    pub fn hook(&self) -> &AwsHook {
        &self.hook
    }

    /// The time the hook gives itself before refusing.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Handles one invocation as of the wall clock: the decision is the
    /// answer and an EMF line.
    ///
    /// # Errors
    /// None: see [`Handler::decide`].
    pub async fn handle(&self, payload: Value) -> Result<Value, InvocationError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (response, outcome) = self.decide(payload, now).await;
        onboarding_lambda::emit(&outcome_metrics(&self.metrics_namespace, &outcome, now * 1000));
        Ok(response_json(&response))
    }

    /// Decides one request as of `now`, and logs the decision: a malformed
    /// request or one not decided within the budget is refused, never an
    /// error (an error is also a refusal to AWS IoT, but says less in the logs).
    pub async fn decide(&self, payload: Value, now: i64) -> (HookResponse, HookOutcome) {
        let request: HookRequest = match serde_json::from_value(payload) {
            Ok(request) => request,
            Err(e) => {
                let outcome = HookOutcome::Unavailable(format!("malformed hook request: {e}"));
                return (outcome.response(), outcome);
            }
        };
        let outcome = match tokio::time::timeout(self.budget, self.hook.handle(&request, now)).await {
            Ok(outcome) => outcome,
            Err(_) => HookOutcome::Unavailable(format!("not decided within {} ms", self.budget.as_millis())),
        };
        log(&request, &outcome);
        (outcome.response(), outcome)
    }
}

fn log(request: &HookRequest, outcome: &HookOutcome) {
    let certificate = request.certificate_id.as_str();
    let template = request.template_name().unwrap_or_default();
    let claim = request.claim_certificate_id.as_deref().unwrap_or_default();
    match outcome {
        HookOutcome::Allowed(allowed) => tracing::info!(
            certificate,
            template,
            claim,
            serial = allowed.serial,
            thing = allowed.thing_name,
            profile = allowed.profile,
            "provisioning allowed"
        ),
        HookOutcome::Refused(refusal) => tracing::warn!(
            certificate,
            template,
            claim,
            reason = refusal.code(),
            detail = refusal.detail(),
            "provisioning refused"
        ),
        HookOutcome::Unavailable(why) => {
            tracing::error!(
                certificate,
                template,
                claim,
                error = why,
                "provisioning refused: hook unavailable"
            );
        }
    }
}

/// The answer as JSON.
pub fn response_json(response: &HookResponse) -> Value {
    serde_json::to_value(response).unwrap_or_else(|_| json!({"allowProvisioning": false}))
}
