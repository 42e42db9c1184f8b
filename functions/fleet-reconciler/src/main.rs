//! `fleet-reconciler` Lambda entry point: wiring only.

// The registrar's concurrent rounds nest deeply generic futures.
#![recursion_limit = "256"]

use fleet_reconciler::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings: Settings = onboarding_lambda::init()?;
    let sdk = settings.registrar.sdk.load().await;
    let handler = fleet_reconciler::build(&settings, &sdk);
    onboarding_lambda::run(|payload| handler.handle(payload)).await
}
