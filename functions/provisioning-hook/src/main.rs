//! `provisioning-hook` Lambda entry point: wiring only.

use lambda_runtime::{LambdaEvent, service_fn};
use provisioning_hook::FromEnv;
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    onboarding_lambda::init_logging();
    let settings = provisioning_hook::Settings::from_env()
        .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = settings.sdk.load().await;
    let hook = provisioning_hook::build_hook(&settings, &sdk);
    let (hook, settings) = (&hook, &settings);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (response, outcome) = provisioning_hook::handle(hook, settings.budget, event.payload, now).await;
        onboarding_lambda::emit(&provisioning_hook::outcome_metrics(
            &settings.metrics_namespace,
            &outcome,
            now * 1000,
        ));
        Ok::<Value, lambda_runtime::Error>(provisioning_hook::response_json(&response))
    }))
    .await
}
