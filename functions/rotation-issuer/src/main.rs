//! `rotation-issuer` Lambda entry point: wiring only.

use rotation_issuer::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings: Settings = onboarding_lambda::init()?;
    let sdk = settings.sdk.load().await;
    let handler = rotation_issuer::build(&settings, &sdk).await?;
    onboarding_lambda::run(|payload| handler.handle(payload)).await
}
