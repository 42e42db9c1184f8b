//! `rotation-completer` Lambda entry point: wiring only.

use rotation_completer::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings: Settings = onboarding_lambda::init()?;
    let sdk = settings.sdk.load().await;
    let handler = rotation_completer::build(&settings, &sdk);
    onboarding_lambda::run(|payload| handler.handle(payload)).await
}
