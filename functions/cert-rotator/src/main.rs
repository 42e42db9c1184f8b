//! `cert-rotator` Lambda entry point: wiring only.

use std::time::Instant;

use cert_rotator::FromEnv;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    onboarding_lambda::init_logging();
    let settings =
        cert_rotator::Settings::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = settings.sdk.load().await;
    cert_rotator::check_job_execution_events(&aws_sdk_iot::Client::new(&sdk)).await;
    let rotator = cert_rotator::build_rotator(&settings, &sdk);
    let (rotator, settings) = (&rotator, &settings);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let started = Instant::now();
        let now = cert_rotator::event_time(&event.payload)?;
        let report = rotator.run(now).await?;
        onboarding_lambda::emit(&cert_rotator::report_metrics(
            &settings.metrics_namespace,
            &report,
            started.elapsed().as_secs_f64() * 1000.0,
            time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        ));
        Ok::<Value, cert_rotator::InvocationError>(cert_rotator::report_json(&report, now))
    }))
    .await
}
