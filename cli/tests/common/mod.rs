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

/// A CA registered with AWS IoT and bound to profile `field` (the stack's
/// thing type and device policy), as the lifecycle tests start from.
pub struct FieldCa {
    pub admin: onboarding_aws::ConfigAdmin,
    pub ca: onboarding_test_support::TestCa,
    pub ca_id: String,
    pub iot: aws_sdk_iot::Client,
}

/// Puts profile `field` into the deployed stack's table, registers a new CA
/// named `ca_name` and binds it to the profile.
pub async fn field_ca(
    sdk: &aws_config::SdkConfig,
    deployed: &onboarding_test_support::emulator::stack::Deployed,
    ca_name: &str,
) -> Result<FieldCa, Error> {
    let table = deployed.output("InventoryTableName")?;
    let profile = onboarding_domain::DeviceProfile::parse(
        &serde_json::json!({
            "name": "field",
            "thingType": deployed.output("ThingTypeName")?,
            "policyName": deployed.output("DevicePolicyName")?,
        })
        .to_string(),
    )?;
    let admin = onboarding_aws::ConfigAdmin::new(aws_sdk_dynamodb::Client::new(sdk), table);
    admin.put_profile(&profile).await?;
    let ca = onboarding_test_support::TestCa::new(ca_name)?;
    let iot = aws_sdk_iot::Client::new(sdk);
    let ca_id = onboarding_test_support::world::register_ca(&iot, &ca).await?;
    admin.bind(&ca_id, "field").await?;
    Ok(FieldCa { admin, ca, ca_id, iot })
}
