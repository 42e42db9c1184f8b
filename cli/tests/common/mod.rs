//! What the CLI tests against a deployed stack share.

// Each test crate compiles this module and uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use assert_cmd::Command;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `onboard` pointed at an emulator (as its root, `test`/`test`) and at the
/// stack's inventory table, whatever the caller's environment says.
pub fn onboard_at(endpoint: &str, table: &str) -> Result<Command, Error> {
    let mut cmd = Command::cargo_bin("onboard")?;
    cmd.env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("ONBOARD_TABLE", table)
        .timeout(Duration::from_secs(300));
    Ok(cmd)
}

/// Invokes a deployed scheduled function (rotator, reconciler) with a
/// scheduled event as of `now`; its answer, or an error when it failed.
pub async fn run_scheduled(
    sdk: &aws_config::SdkConfig,
    function: &str,
    now: time::OffsetDateTime,
) -> Result<serde_json::Value, Error> {
    let time = now.format(&time::format_description::well_known::Rfc3339)?;
    let out = aws_sdk_lambda::Client::new(sdk)
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(
            serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events", "time": time}).to_string(),
        ))
        .send()
        .await?;
    let payload: serde_json::Value =
        serde_json::from_slice(out.payload.as_ref().map(|b| b.as_ref()).unwrap_or(b"null"))?;
    if out.function_error.is_some() {
        return Err(format!("{function} failed: {payload}").into());
    }
    Ok(payload)
}
