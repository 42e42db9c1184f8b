//! `fleet-auditor` Lambda entry point: wiring only.

use fleet_auditor::{InvocationFailure, Settings};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings: Settings = onboarding_lambda::init()?;
    let sdk = settings.sdk.load().await;
    let handler = fleet_auditor::build(&settings, &sdk);
    let handler = &handler;
    // The invocation's deadline bounds the run's steps: the runtime's
    // context, not only the payload, reaches the handler.
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
            handler
                .handle(event.payload, event.context.deadline)
                .await
                .map_err(|e| e.diagnostic())
        },
    ))
    .await
}
