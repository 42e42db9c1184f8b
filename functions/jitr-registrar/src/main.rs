//! `jitr-registrar` Lambda entry point: wiring only.

// The registrar's concurrent rounds nest deeply generic futures.
#![recursion_limit = "256"]

use jitr_registrar::FromEnv;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    onboarding_lambda::init_logging();
    let settings =
        jitr_registrar::Settings::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = settings.sdk.load().await;
    let handler = jitr_registrar::build_handler(&settings, &sdk);
    // Fill the configuration cache and open connections during init, so the
    // first event does not pay for them. Failure here is not fatal: events
    // load what they need lazily.
    if let Err(e) = handler.registrar().warm_up().await {
        tracing::warn!(error = %e, "warm-up failed; continuing");
    }
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler.handle(event.payload).await
    }))
    .await
}
