//! `rotation-issuer` Lambda entry point: wiring only.

use lambda_runtime::{LambdaEvent, service_fn};
use rotation_issuer::FromEnv;
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    onboarding_lambda::init_logging();
    let settings =
        rotation_issuer::Settings::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = settings.sdk.load().await;
    let issuer = rotation_issuer::build_issuer(&settings, &sdk)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "cannot resolve the IoT data endpoint"))?;
    let (issuer, settings) = (&issuer, &settings);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let csr = rotation_issuer::CsrEvent::parse(&event.payload)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let outcome = issuer
            .handle(&csr.thing_name, &csr.principal, &csr.message, now)
            .await
            .inspect_err(|e| tracing::error!(error = %e, thing = %csr.thing_name, "CSR not handled"))?;
        onboarding_lambda::emit(&rotation_issuer::outcome_metrics(
            &settings.metrics_namespace,
            &outcome,
            now * 1000,
        ));
        Ok::<Value, rotation_issuer::InvocationError>(rotation_issuer::outcome_json(&outcome))
    }))
    .await
}
