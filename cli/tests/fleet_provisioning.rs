//! Fleet provisioning by claim, end to end in the emulator (AUTH=true): the
//! stack's template with its pre-provisioning hook, the claim policy, and
//! `onboard` as operator (allow-list, claim certificate) and as device
//! (CreateKeysAndCertificate over MQTT, RegisterThing, first connection).
//!
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them).

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::Error;
use onboarding_aws::DynamoInventory;
use onboarding_domain::DeviceProfile;
use onboarding_domain::Inventory;
use onboarding_domain::RotationInventory;
use onboarding_domain::{FLEET_PROVISIONING_CA, render_template};
use onboarding_test_support::emulator::{Emulator, stack};
use onboarding_test_support::world::certificate_status;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

struct Cli<'a> {
    emulator: &'a Emulator,
    table: String,
    server_ca: std::path::PathBuf,
}

impl Cli<'_> {
    fn onboard(&self) -> Result<Command, Error> {
        common::onboard_at(&self.emulator.endpoint, &self.table)
    }

    fn provision(
        &self,
        claim: &Path,
        template: &str,
        serial: &str,
        name: &str,
        out: &Path,
    ) -> Result<std::process::Output, Error> {
        self.provision_with(claim, template, serial, name, &[], out)
    }

    /// As [`Cli::provision`], with more `--param NAME=VALUE`s.
    fn provision_with(
        &self,
        claim: &Path,
        template: &str,
        serial: &str,
        name: &str,
        extra: &[&str],
        out: &Path,
    ) -> Result<std::process::Output, Error> {
        let mut command = self.onboard()?;
        command
            .args([
                "--json",
                "device",
                "provision",
                "--template",
                template,
                "--serial",
                serial,
            ])
            .args(extra.iter().flat_map(|param| ["--param", param]))
            .args(["--param", &format!("CommonName={name}")])
            .args(["--param", "Organization=Acme", "--param", "OrganizationalUnit=thermo-2"])
            .args(["--host", "127.0.0.1", "--port", &self.emulator.mqtt_port.to_string()])
            .arg("--server-ca")
            .arg(&self.server_ca)
            .arg("--claim")
            .arg(claim)
            .arg("--out")
            .arg(out);
        Ok(command.output()?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_device_provisions_itself_and_an_unknown_serial_is_refused() -> TestResult {
    let emulator = Emulator::start().await?;
    let sdk = emulator.sdk_config().await;
    let deployed = stack::deploy(&sdk, "iot-onboarding", stack::TEMPLATE, &stack::lambda_dir(), &[]).await?;
    let template = deployed.output("FleetProvisioningTemplateName")?.to_string();
    let claim_policy = deployed.output("ClaimPolicyName")?.to_string();
    let iot = aws_sdk_iot::Client::new(&sdk);

    // The stack's template is what the default profile renders to.
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let hook = lambda
        .get_function_configuration()
        .function_name(deployed.output("ProvisioningHookFunctionName")?)
        .send()
        .await?;
    let default_json = hook
        .environment()
        .and_then(|e| e.variables())
        .and_then(|v| v.get("DEFAULT_PROFILE"))
        .ok_or("the hook has no DEFAULT_PROFILE")?;
    let default_profile = DeviceProfile::parse(default_json)?;
    let described = iot
        .describe_provisioning_template()
        .template_name(&template)
        .send()
        .await?;
    let body: Value = serde_json::from_str(described.template_body().ok_or("no body")?)?;
    assert_eq!(body, render_template(&default_profile)?);
    assert!(described.pre_provisioning_hook().is_some());

    let dir = tempfile::tempdir()?;
    let server_ca = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca, emulator.server_ca_pem().await?)?;
    let cli = Cli {
        emulator: &emulator,
        table: deployed.output("InventoryTableName")?.to_string(),
        server_ca,
    };
    let claim = dir.path().join("claim");
    cli.onboard()?
        .args(["claim", "create", "--policy", &claim_policy, "--out"])
        .arg(&claim)
        .assert()
        .success();
    cli.onboard()?.args(["allow", "add", "SN-1001"]).assert().success();
    // Bad input is refused before anything is written.
    let output = cli.onboard()?.args(["allow", "add", "SN 1002"]).output()?;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"SN 1002\""),
        "the message names the bad serial: {stderr}"
    );
    let listed = cli.onboard()?.args(["--json", "allow", "list"]).output()?;
    let listed: Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(
        listed,
        serde_json::json!([{"serial": "SN-1001", "profile": null, "thing": null, "usedBy": null, "replaces": []}])
    );

    // Allowed: provisioned by the template with everything from the profile.
    let out = dir.path().join("fleet-1");
    let output = cli.provision(&claim, &template, "SN-1001", "fleet-1", &out)?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(result["thingName"], "fleet-1");
    let certificate_id = result["certificateId"].as_str().ok_or("no certificate id")?.to_string();
    assert_eq!(
        certificate_status(&iot, &certificate_id).await?.as_deref(),
        Some("ACTIVE")
    );
    let thing = iot.describe_thing().thing_name("fleet-1").send().await?;
    assert_eq!(thing.thing_type_name(), default_profile.thing_type.as_deref());
    let attributes = thing.attributes().ok_or("no attributes")?;
    assert_eq!(attributes.get("manufacturer").map(String::as_str), Some("Acme"));
    assert_eq!(attributes.get("model").map(String::as_str), Some("thermo-2"));
    assert_eq!(attributes.get("serial").map(String::as_str), Some("SN-1001"));
    let groups = iot.list_thing_groups_for_thing().thing_name("fleet-1").send().await?;
    let groups: Vec<&str> = groups.thing_groups().iter().filter_map(|g| g.group_name()).collect();
    assert_eq!(
        groups,
        default_profile
            .thing_groups
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let arn = format!("arn:aws:iot:us-east-1:000000000000:cert/{certificate_id}");
    let policies = iot.list_attached_policies().target(&arn).send().await?;
    let policies: Vec<&str> = policies.policies().iter().filter_map(|p| p.policy_name()).collect();
    assert_eq!(policies, [default_profile.policy_name.as_str()]);
    assert!(out.join("cert.pem").exists() && out.join("key.pem").exists());

    // In the inventory, where status and rotation see it.
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), &cli.table);
    let record = inventory
        .certificate_record(&certificate_id)
        .await?
        .ok_or("no inventory record")?;
    assert_eq!(record.ca_certificate_id, FLEET_PROVISIONING_CA);
    assert_eq!(record.thing_name.as_deref(), Some("fleet-1"));
    assert_eq!(record.serial.as_deref(), Some("SN-1001"));
    assert_eq!(record.profile.as_deref(), Some(default_profile.name.as_str()));
    let not_after = record.not_after.ok_or("no notAfter")?;
    let expiring = inventory.expiring(not_after + 1, None, 100).await?;
    assert!(
        expiring.items.iter().any(|r| r.certificate_id == certificate_id),
        "{expiring:?}"
    );

    // Not on the allow-list: refused by the hook, nothing made, no files kept.
    let out = dir.path().join("fleet-2");
    let output = cli.provision(&claim, &template, "SN-2002", "fleet-2", &out)?;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AccessDenied"), "{stderr}");
    assert!(!out.join("cert.pem").exists() && !out.join("key.pem").exists());
    let missing = iot.describe_thing().thing_name("fleet-2").send().await;
    assert!(missing.is_err(), "{missing:?}");
    // The hook said why, in its log and metric.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let group = format!("/aws/lambda/{}", deployed.output("ProvisioningHookFunctionName")?);
    let events = logs.filter_log_events().log_group_name(&group).send().await?;
    let lines: Vec<&str> = events.events().iter().filter_map(|e| e.message()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("provisioning refused") && l.contains("SERIAL_NOT_ALLOWED") && l.contains("SN-2002")),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("provisioning allowed") && l.contains("fleet-1"))
    );

    // Taken off the allow-list: the same device is refused from then on.
    cli.onboard()?.args(["allow", "remove", "SN-1001"]).assert().success();
    let output = cli.provision(&claim, &template, "SN-1001", "fleet-1", &dir.path().join("again"))?;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused: AccessDenied"), "{stderr}");
    Ok(())
}

/// The thing's attached certificate ids.
async fn thing_certificates(iot: &aws_sdk_iot::Client, thing: &str) -> Result<Vec<String>, Error> {
    let principals = iot.list_thing_principals().thing_name(thing).send().await?;
    let mut ids: Vec<String> = principals
        .principals()
        .iter()
        .filter_map(|arn| arn.rsplit_once("cert/").map(|(_, id)| id.to_string()))
        .collect();
    ids.sort();
    Ok(ids)
}

/// The hook's log lines so far.
async fn hook_log(sdk: &aws_config::SdkConfig, function: &str) -> Result<String, Error> {
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let events = logs
        .filter_log_events()
        .log_group_name(format!("/aws/lambda/{function}"))
        .send()
        .await?;
    Ok(events
        .events()
        .iter()
        .filter_map(|e| e.message())
        .collect::<Vec<_>>()
        .join("\n"))
}

fn refused(output: &std::process::Output) -> Result<String, Error> {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.code() != Some(1) || !stderr.contains("AccessDenied") {
        return Err(format!(
            "expected a refusal, got {:?}: {stderr} {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout)
        )
        .into());
    }
    Ok(stderr)
}

/// The attacks a shared claim certificate makes possible, each refused by the
/// hook: another device's thing name, a serial used twice, a name its entry
/// is not bound to, parameters its profile does not set. Then the way back
/// for a device that lost its key: `onboard allow reset`, the new certificate
/// takes over its own thing, and the reconciler revokes the old one once the
/// new one is ACTIVE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_cannot_take_over_another_identity_or_use_a_serial_twice() -> TestResult {
    let emulator = Emulator::start().await?;
    let sdk = emulator.sdk_config().await;
    let deployed = stack::deploy(&sdk, "iot-onboarding", stack::TEMPLATE, &stack::lambda_dir(), &[]).await?;
    let template = deployed.output("FleetProvisioningTemplateName")?.to_string();
    let claim_policy = deployed.output("ClaimPolicyName")?.to_string();
    let hook_function = deployed.output("ProvisioningHookFunctionName")?.to_string();
    let iot = aws_sdk_iot::Client::new(&sdk);
    let dir = tempfile::tempdir()?;
    let server_ca = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca, emulator.server_ca_pem().await?)?;
    let cli = Cli {
        emulator: &emulator,
        table: deployed.output("InventoryTableName")?.to_string(),
        server_ca,
    };
    let claim = dir.path().join("claim");
    cli.onboard()?
        .args(["claim", "create", "--policy", &claim_policy, "--out"])
        .arg(&claim)
        .assert()
        .success();
    cli.onboard()?
        .args(["allow", "add", "SN-1", "SN-2", "SN-3"])
        .assert()
        .success();
    let bound = dir.path().join("bound.txt");
    std::fs::write(&bound, "# serial thing\nSN-4 fleet-4\n")?;
    cli.onboard()?
        .args(["allow", "add", "--file"])
        .arg(&bound)
        .assert()
        .success();
    // --thing binds exactly one serial; bad names are refused before anything is written.
    let many = cli
        .onboard()?
        .args(["allow", "add", "SN-8", "SN-9", "--thing", "x"])
        .output()?;
    assert_eq!(many.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&many.stderr).contains("--thing binds one serial"));
    let bad = cli
        .onboard()?
        .args(["allow", "add", "SN-8", "--thing", "a b"])
        .output()?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match"));

    // The victim provisions itself.
    let victim = cli.provision(&claim, &template, "SN-1", "dev-1", &dir.path().join("v1"))?;
    assert!(victim.status.success(), "{}", String::from_utf8_lossy(&victim.stderr));
    let victim: Value = serde_json::from_slice(&victim.stdout)?;
    let victim_cert = victim["certificateId"].as_str().ok_or("no certificate id")?.to_string();
    assert_eq!(
        thing_certificates(&iot, "dev-1").await?,
        std::slice::from_ref(&victim_cert)
    );

    // An allowed serial asking for the victim's name: refused; the thing keeps
    // only its own certificate, and the attacker's entry is not used up.
    let attack = cli.provision(&claim, &template, "SN-2", "dev-1", &dir.path().join("a1"))?;
    refused(&attack)?;
    assert_eq!(
        thing_certificates(&iot, "dev-1").await?,
        std::slice::from_ref(&victim_cert)
    );
    assert!(hook_log(&sdk, &hook_function).await?.contains("IDENTITY_COLLISION"));

    // A serial used twice: refused, whatever name it asks for.
    let twice = cli.provision(&claim, &template, "SN-1", "dev-1b", &dir.path().join("a2"))?;
    refused(&twice)?;
    assert!(iot.describe_thing().thing_name("dev-1b").send().await.is_err());
    let again = cli.provision(&claim, &template, "SN-1", "dev-1", &dir.path().join("a3"))?;
    refused(&again)?;
    assert_eq!(
        thing_certificates(&iot, "dev-1").await?,
        std::slice::from_ref(&victim_cert)
    );
    let log = hook_log(&sdk, &hook_function).await?;
    assert!(
        log.contains("SERIAL_NOT_ALLOWED") && log.contains("was used by certificate"),
        "{log}"
    );

    // Groups, a type or an attribute the profile does not set: refused, none
    // applied; the same device with its own parameters only is let in.
    iot.create_thing_group().thing_group_name("admins").send().await?;
    iot.create_thing_type().thing_type_name("gateway").send().await?;
    for extra in ["ThingGroups=admins", "ThingTypeName=gateway", "Attribute:owner=mallory"] {
        let output = cli.provision_with(&claim, &template, "SN-3", "dev-3", &[extra], &dir.path().join("x"))?;
        refused(&output)?;
        assert!(
            iot.describe_thing().thing_name("dev-3").send().await.is_err(),
            "{extra}"
        );
    }
    let log = hook_log(&sdk, &hook_function).await?;
    assert!(
        log.contains("PARAMETERS_INVALID") && log.contains("Attribute:owner"),
        "{log}"
    );
    let clean = cli.provision(&claim, &template, "SN-3", "dev-3", &dir.path().join("d3"))?;
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let thing = iot.describe_thing().thing_name("dev-3").send().await?;
    assert_ne!(thing.thing_type_name(), Some("gateway"));
    assert!(thing.attributes().is_none_or(|a| !a.contains_key("owner")));
    let groups = iot.list_thing_groups_for_thing().thing_name("dev-3").send().await?;
    assert!(groups.thing_groups().iter().all(|g| g.group_name() != Some("admins")));

    // Bound to fleet-4: any other name is refused, fleet-4 is let in.
    refused(&cli.provision(&claim, &template, "SN-4", "other-4", &dir.path().join("b1"))?)?;
    assert!(iot.describe_thing().thing_name("other-4").send().await.is_err());
    let own = cli.provision(&claim, &template, "SN-4", "fleet-4", &dir.path().join("b2"))?;
    assert!(own.status.success(), "{}", String::from_utf8_lossy(&own.stderr));

    // The victim lost its key: reset, provision again, the old certificate is
    // revoked by the reconciler once the new one is ACTIVE on the thing.
    let unused = cli.onboard()?.args(["allow", "reset", "SN-2"]).output()?;
    assert_eq!(unused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unused.stderr).contains("has not been used"));
    cli.onboard()?.args(["allow", "reset", "SN-1"]).assert().success();
    let listed = cli.onboard()?.args(["--json", "allow", "list"]).output()?;
    let listed: Value = serde_json::from_slice(&listed.stdout)?;
    let entry = listed
        .as_array()
        .and_then(|l| l.iter().find(|e| e["serial"] == "SN-1"))
        .ok_or("SN-1 not listed")?;
    assert_eq!(entry["usedBy"], Value::Null);
    assert_eq!(entry["replaces"], serde_json::json!([victim_cert.clone()]));
    let back = cli.provision(&claim, &template, "SN-1", "dev-1", &dir.path().join("v2"))?;
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    let back: Value = serde_json::from_slice(&back.stdout)?;
    let new_cert = back["certificateId"].as_str().ok_or("no certificate id")?.to_string();
    assert_eq!(certificate_status(&iot, &new_cert).await?.as_deref(), Some("ACTIVE"));
    // Not revoked by the hook, which runs before the new certificate exists.
    assert_eq!(certificate_status(&iot, &victim_cert).await?.as_deref(), Some("ACTIVE"));
    common::run_scheduled(
        &sdk,
        deployed.output("ReconcilerFunctionName")?,
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    assert_eq!(
        certificate_status(&iot, &victim_cert).await?.as_deref(),
        Some("REVOKED")
    );
    assert_eq!(certificate_status(&iot, &new_cert).await?.as_deref(), Some("ACTIVE"));
    let listed = cli.onboard()?.args(["--json", "allow", "list"]).output()?;
    let listed: Value = serde_json::from_slice(&listed.stdout)?;
    let entry = listed
        .as_array()
        .and_then(|l| l.iter().find(|e| e["serial"] == "SN-1"))
        .ok_or("SN-1 not listed")?;
    assert_eq!(entry["usedBy"], Value::String(new_cert));
    assert_eq!(entry["replaces"], serde_json::json!([]));
    Ok(())
}
