//! `fleet-reconciler` Lambda entry point: wiring only.

// The registrar's concurrent rounds nest deeply generic futures.
#![recursion_limit = "256"]

use fleet_reconciler::FromEnv;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    onboarding_lambda::init_logging();
    let settings =
        fleet_reconciler::Settings::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let sdk = settings.registrar.sdk.load().await;
    let reconciler = fleet_reconciler::build_reconciler(&settings, &sdk);
    let (reconciler, settings, sdk) = (&reconciler, &settings, &sdk);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Validity is judged against the wall clock, never the event's `time`:
        // whoever can invoke the function must not choose "now".
        let now = fleet_reconciler::wall_clock_now();
        if let Ok(scheduled) = onboarding_lambda::event_time(&event.payload)
            && scheduled != now
        {
            tracing::info!(
                scheduled,
                now,
                "the event's time is logged only; the run uses the wall clock"
            );
        }
        let report = reconciler.run(now).await?;
        tracing::info!(?report, "reconciler run");
        // Certificates superseded by `onboard allow reset`, once their successor is ACTIVE.
        match fleet_reconciler::retire_superseded(sdk, settings).await {
            Ok(superseded) => {
                tracing::info!(?superseded, "superseded certificates");
                onboarding_lambda::emit(&fleet_reconciler::supersession_metrics(
                    &settings.registrar.metrics_namespace,
                    &superseded,
                    time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
                ));
            }
            Err(e) => tracing::error!(error = %e, "superseded certificates not listed; the next run retries"),
        }
        onboarding_lambda::emit(&fleet_reconciler::report_metrics(
            &settings.registrar.metrics_namespace,
            &report,
            time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
        ));
        Ok::<Value, lambda_runtime::Error>(fleet_reconciler::report_json(&report, now))
    }))
    .await
}
