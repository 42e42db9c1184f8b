//! `provisioning-hook` Lambda entry point: wiring only.

// The hook's parallel rounds, inside the runtime's service, nest deeply
// generic futures.
#![recursion_limit = "256"]

use provisioning_hook::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings: Settings = onboarding_lambda::init()?;
    let sdk = settings.sdk.load().await;
    let handler = provisioning_hook::build(&settings, &sdk);
    onboarding_lambda::run(|payload| handler.handle(payload)).await
}
