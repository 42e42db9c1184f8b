//! `rotation-completer` Lambda entry point: wiring only.

use lambda_runtime::{LambdaEvent, service_fn};
use rotation_completer::FromEnv;
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    onboarding_lambda::init_logging();
    let settings = rotation_completer::Settings::from_env()
        .inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = settings.sdk.load().await;
    let completer = rotation_completer::build_completer(&settings, &sdk);
    let (completer, settings) = (&completer, &settings);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok::<Value, lambda_runtime::Error>(
            rotation_completer::handle(completer, &settings.metrics_namespace, event.payload, now).await,
        )
    }))
    .await
}
