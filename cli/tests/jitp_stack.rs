//! The template's JITP option: deployed into the emulator with
//! `JitpProvisioningRole=true`, its role (with `AWSIoTThingsRegistration`)
//! is what `onboard ca register --mode jitp --role-arn` attaches to the CA.
//!
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them).

use assert_cmd::Command;
use onboarding_test_support::emulator::{Emulator, stack};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jitp_role_of_the_stack_provisions_a_jitp_ca() -> TestResult {
    let emulator = Emulator::start().await?;
    let sdk = emulator.sdk_config().await;
    let deployed = stack::deploy(
        &sdk,
        "iot-onboarding",
        stack::TEMPLATE,
        &stack::lambda_dir(),
        &[("JitpProvisioningRole", "true")],
    )
    .await?;
    let role_arn = deployed.output("JitpProvisioningRoleArn")?.to_string();
    let table = deployed.output("InventoryTableName")?.to_string();
    let iam = aws_sdk_iam::Client::new(&sdk);
    let role_name = role_arn.rsplit('/').next().ok_or("no role name")?;
    let attached = iam.list_attached_role_policies().role_name(role_name).send().await?;
    assert!(
        attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_name() == Some("AWSIoTThingsRegistration")),
        "{attached:?}"
    );

    let dir = tempfile::tempdir()?;
    let onboard = || -> Result<Command, Box<dyn std::error::Error + Send + Sync>> {
        let mut cmd = Command::cargo_bin("onboard")?;
        cmd.env_remove("AWS_PROFILE")
            .env("AWS_ENDPOINT_URL", &emulator.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("ONBOARD_TABLE", &table);
        Ok(cmd)
    };
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        serde_json::json!({
            "name": "jitp-sensors",
            "thingType": deployed.output("ThingTypeName")?,
            "policyName": deployed.output("DevicePolicyName")?,
        })
        .to_string(),
    )?;
    onboard()?.args(["profile", "put"]).arg(&profile).assert().success();
    onboard()?
        .args(["ca", "create", "--out"])
        .arg(dir.path().join("ca"))
        .assert()
        .success();
    let output = onboard()?
        .args([
            "--json",
            "ca",
            "register",
            "--profile",
            "jitp-sensors",
            "--mode",
            "jitp",
            "--role-arn",
            &role_arn,
            "--ca",
        ])
        .arg(dir.path().join("ca"))
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let registered: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let ca_id = registered["caCertificateId"].as_str().ok_or("no CA id")?;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let described = iot.describe_ca_certificate().certificate_id(ca_id).send().await?;
    let config = described.registration_config().ok_or("no registration config")?;
    assert_eq!(config.role_arn(), Some(role_arn.as_str()));
    assert!(
        config
            .template_body()
            .is_some_and(|b| b.contains("AWS::IoT::Certificate::Id"))
    );
    Ok(())
}
