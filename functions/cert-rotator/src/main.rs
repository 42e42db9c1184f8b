//! `cert-rotator` Lambda entry point: wiring only.

use cert_rotator::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings: Settings = onboarding_lambda::init()?;
    let sdk = settings.sdk.load().await;
    let handler = cert_rotator::build(&settings, &sdk);
    handler.warm_up().await;
    onboarding_lambda::run(|payload| handler.handle(payload)).await
}
