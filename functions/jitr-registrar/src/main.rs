//! `jitr-registrar` Lambda entry point: wiring only.

// The registrar's concurrent rounds nest deeply generic futures.
#![recursion_limit = "256"]

use jitr_registrar::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings: Settings = onboarding_lambda::init()?;
    let sdk = settings.sdk.load().await;
    let handler = jitr_registrar::build(&settings, &sdk);
    handler.warm_up().await;
    onboarding_lambda::run(|payload| handler.handle(payload)).await
}
