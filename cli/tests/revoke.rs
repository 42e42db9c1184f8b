//! Emergency revocation end to end: `infra/template.yaml` deployed into the
//! emulator (AUTH=true), a device onboarded over MQTT through the deployed
//! registrar and kept connected, `onboard device revoke` run against it;
//! then the device's certificate brought back every way the system could
//! let it in again (re-registered ACTIVE for the deployed reconciler,
//! deleted and presented again for JITR, deleted and imported in bulk), and
//! refused each time.
//!
//! Timings are printed (`--nocapture`) for docs/lifecycle.md, never asserted.
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them).

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::Error;
use onboarding_aws::DynamoInventory;
use onboarding_device::{Broker, Conn, ConnectResult, connect_once};
use onboarding_domain::{Inventory, RecordStatus, RejectReason};
use onboarding_test_support::emulator::{Emulator, stack};
use onboarding_test_support::world::{certificate_id, certificate_status};
use onboarding_test_support::{DeviceCert, TestCa};
use serde_json::{Value, json};
use tokio::time::Instant;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const THING: &str = "rev-1";
const REASON: &str = "key extracted from a unit returned to the field office";

fn write_device(dir: &Path, device: &DeviceCert) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cert.pem"), &device.cert_pem)?;
    std::fs::write(dir.join("key.pem"), device.key_pem.as_deref().ok_or("no key")?)?;
    Ok(())
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls the certificate's status until it is no longer `from` (60 s at most).
async fn status_after(iot: &aws_sdk_iot::Client, id: &str, from: &str) -> Result<Option<String>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = certificate_status(iot, id).await?;
        if status.as_deref() != Some(from) || Instant::now() > deadline {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn thing_names(iot: &aws_sdk_iot::Client) -> Result<Vec<String>, Error> {
    Ok(iot
        .list_things()
        .send()
        .await?
        .things()
        .iter()
        .filter_map(|t| t.thing_name().map(str::to_string))
        .collect())
}

/// Detaches the certificate from the thing and its policies (where it is
/// attached) and deletes it, as a retirement (or an operator's clean-up) does.
async fn delete_certificate(iot: &aws_sdk_iot::Client, id: &str) -> Result<(), Error> {
    let arn = iot
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await?
        .certificate_description()
        .and_then(|d| d.certificate_arn())
        .ok_or("no ARN")?
        .to_string();
    let principals = iot.list_thing_principals().thing_name(THING).send().await?;
    if principals.principals().contains(&arn) {
        iot.detach_thing_principal()
            .thing_name(THING)
            .principal(&arn)
            .send()
            .await?;
    }
    let policies = iot.list_attached_policies().target(&arn).send().await?;
    for policy in policies.policies() {
        if let Some(name) = policy.policy_name() {
            iot.detach_policy().policy_name(name).target(&arn).send().await?;
        }
    }
    iot.delete_certificate().certificate_id(id).send().await?;
    Ok(())
}

async fn certificate_arn(iot: &aws_sdk_iot::Client, id: &str) -> Result<String, Error> {
    Ok(iot
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await?
        .certificate_description()
        .and_then(|d| d.certificate_arn())
        .ok_or("no ARN")?
        .to_string())
}

/// A second device, provisioned by hand (ACTIVE, attached, with the policy)
/// and connected: its open connection and its certificate id.
async fn device_connection(
    iot: &aws_sdk_iot::Client,
    broker: &Broker,
    ca: &TestCa,
    policy: &str,
    name: &str,
    dir: &tempfile::TempDir,
) -> Result<(Conn, String), Error> {
    let device = ca.device(name).build()?;
    write_device(&dir.path().join(name), &device)?;
    let registered = iot
        .register_certificate()
        .certificate_pem(&device.cert_pem)
        .ca_certificate_pem(&ca.cert_pem)
        .status(aws_sdk_iot::types::CertificateStatus::Active)
        .send()
        .await?;
    let arn = registered.certificate_arn().ok_or("no ARN")?;
    iot.create_thing().thing_name(name).send().await?;
    iot.attach_thing_principal()
        .thing_name(name)
        .principal(arn)
        .send()
        .await?;
    iot.attach_policy().policy_name(policy).target(arn).send().await?;
    let tls = onboarding_device::client_config(
        &broker.server_ca_pem,
        &device.cert_pem,
        device.key_pem.as_deref().ok_or("key")?,
    )?;
    let mut conn = Conn::open(broker, tls, name, Instant::now() + Duration::from_secs(10)).await?;
    conn.publish(
        &format!("devices/{name}/telemetry"),
        b"hello".to_vec(),
        Instant::now() + Duration::from_secs(5),
    )
    .await?;
    Ok((conn, registered.certificate_id().ok_or("no id")?.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_cut_off_and_its_certificate_never_comes_back() -> TestResult {
    let emulator = Emulator::start_with(&[("LOG_LEVEL", "INFO")]).await?;
    let sdk = emulator.sdk_config().await;
    let deployed = stack::deploy(&sdk, "iot-onboarding", stack::TEMPLATE, &stack::lambda_dir(), &[]).await?;
    let table = deployed.output("InventoryTableName")?.to_string();
    let bucket = deployed.output("CredentialsBucketName")?.to_string();
    let reconciler = deployed.output("ReconcilerFunctionName")?.to_string();
    let policy = deployed.output("DevicePolicyName")?.to_string();
    let common::FieldCa { ca, iot, .. } = common::field_ca(&sdk, &deployed, "Revocation Test CA").await?;
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), &table);
    let onboard = || common::onboard_at(&emulator.endpoint, &table);

    // A device onboarded through the deployed registrar.
    let dir = tempfile::tempdir()?;
    let server_ca = emulator.server_ca_pem().await?;
    std::fs::write(dir.path().join("server-ca.pem"), &server_ca)?;
    let device = ca.device(THING).build()?;
    let id = certificate_id(&device);
    write_device(&dir.path().join("devices").join(THING), &device)?;
    let connected = onboard()?
        .args(["--json", "device", "connect", "--dir"])
        .arg(dir.path().join("devices"))
        .args(["--host", "127.0.0.1", "--port", &emulator.mqtt_port.to_string()])
        .arg("--server-ca")
        .arg(dir.path().join("server-ca.pem"))
        .args(["--deadline", "60"])
        .output()?;
    assert!(connected.status.success(), "{}", text(&connected));

    // Bad input first: refused, exit 1, nothing written.
    for (args, message) in [
        (vec![THING, "--reason", " "], "needs a reason"),
        (vec!["nobody-such", "--reason", REASON], "is unknown"),
        (vec![&"ab".repeat(31), "--reason", REASON], "not a certificate id"),
        (vec![&"0".repeat(64), "--reason", REASON], "is unknown"),
        (vec!["bad name!", "--reason", REASON], "neither a certificate id"),
    ] {
        let output = onboard()?
            .args(["device", "revoke", "--bucket", &bucket])
            .args(&args)
            .output()?;
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(message),
            "{args:?}: {}",
            text(&output)
        );
    }
    assert_eq!(certificate_status(&iot, &id).await?.as_deref(), Some("ACTIVE"));
    let output = onboard()?.args(["device", "revoke", THING]).output()?;
    assert_eq!(output.status.code(), Some(2), "--reason is required: {}", text(&output));

    // The device stays connected.
    let broker = Broker {
        host: "127.0.0.1".into(),
        port: emulator.mqtt_port,
        server_ca_pem: server_ca.clone(),
    };
    let tls = onboarding_device::client_config(&server_ca, &device.cert_pem, device.key_pem.as_deref().ok_or("key")?)?;
    let topic = format!("devices/{THING}/telemetry");
    let mut live = Conn::open(&broker, tls.clone(), THING, Instant::now() + Duration::from_secs(10)).await?;
    live.publish(&topic, b"before".to_vec(), Instant::now() + Duration::from_secs(5))
        .await?;

    // Revoked.
    let started = Instant::now();
    let output = onboard()?
        .args([
            "--json", "device", "revoke", THING, "--reason", REASON, "--bucket", &bucket,
        ])
        .output()?;
    let command_took = started.elapsed();
    assert!(output.status.success(), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    eprintln!("revoke: {report}\ncommand took {command_took:?}");
    assert_eq!(report["certificates"][0]["certificateId"], id.as_str(), "{report}");
    assert_eq!(report["nameHeldBy"], id.as_str(), "{report}");
    assert_eq!(certificate_status(&iot, &id).await?.as_deref(), Some("REVOKED"));
    let record = inventory.certificate_record(&id).await?.ok_or("no record")?;
    assert_eq!(record.status, RecordStatus::Revoked);
    assert_eq!(record.detail.as_deref(), Some(REASON));
    let denied = report["denyEntries"].as_array().ok_or("no deny entries")?;
    assert!(
        denied.iter().any(|d| d == &json!(format!("fingerprint {id}"))),
        "{report}"
    );
    assert!(
        denied
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.starts_with("serial "))),
        "{report}"
    );

    // (a) The open connection is closed by the revocation (DeleteConnection):
    // the device learns it on its next read, and cannot publish any more.
    assert_eq!(report["disconnected"], true, "{report}");
    let closed = live.recv(Instant::now() + Duration::from_secs(10)).await;
    eprintln!(
        "open connection after revoke: {:?}, {:?} after the command started",
        closed.as_ref().map(|_| "still open").map_err(ToString::to_string),
        started.elapsed()
    );
    assert!(closed.is_err(), "the open connection ended");
    let publish = live
        .publish(&topic, b"after".to_vec(), Instant::now() + Duration::from_secs(5))
        .await;
    assert!(publish.is_err(), "{publish:?}");
    // A new connection with the certificate is refused at once.
    let at = Instant::now();
    let again = connect_once(&broker, tls.clone(), THING).await?;
    eprintln!("new connection after REVOKED: {again:?} in {:?}", at.elapsed());
    assert_ne!(again, ConnectResult::Accepted, "a REVOKED certificate connects no more");
    // Without DeleteConnection, the emulator would keep the connection of a
    // REVOKED certificate open (AWS closes it within minutes); what cuts it
    // then is the policy: detached, the next publish ends the connection.
    let mut second = device_connection(&iot, &broker, &ca, &policy, "rev-2", &dir).await?;
    let things_before = thing_names(&iot).await?;
    let arn = certificate_arn(&iot, &second.1).await?;
    iot.update_certificate()
        .certificate_id(&second.1)
        .new_status(aws_sdk_iot::types::CertificateStatus::Revoked)
        .send()
        .await?;
    let still = second
        .0
        .publish(
            "devices/rev-2/telemetry",
            b"after".to_vec(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    eprintln!("publish on an open connection after UpdateCertificate REVOKED alone: {still:?}");
    iot.detach_policy().policy_name(&policy).target(&arn).send().await?;
    let at = Instant::now();
    let cut = second
        .0
        .publish(
            "devices/rev-2/telemetry",
            b"after-detach".to_vec(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    eprintln!("publish on it after DetachPolicy: {cut:?} ({:?})", at.elapsed());
    assert!(cut.is_err(), "without a policy the open connection may not publish");
    drop(live);
    drop(second);

    // (b) Back through the reconciler: the certificate deleted and
    // registered again ACTIVE (a migration's mistake, an operator's),
    // its record still REVOKED; the deployed reconciler's run refuses it.
    delete_certificate(&iot, &id).await?;
    iot.register_certificate()
        .certificate_pem(&device.cert_pem)
        .ca_certificate_pem(&ca.cert_pem)
        .status(aws_sdk_iot::types::CertificateStatus::Active)
        .send()
        .await?;
    let run = common::run_scheduled(&sdk, &reconciler, time::OffsetDateTime::now_utc()).await?;
    eprintln!("reconciler: {run}");
    assert_eq!(
        status_after(&iot, &id, "ACTIVE").await?.as_deref(),
        Some("REVOKED"),
        "the reconciler handed it to the registrar, which denied it: {run}"
    );
    let record = inventory.certificate_record(&id).await?.ok_or("no record")?;
    assert!(
        record.status == RecordStatus::Revoked || record.reason == Some(RejectReason::FingerprintDenied),
        "{record:?}"
    );
    assert_eq!(thing_names(&iot).await?, things_before, "no new thing");
    assert_ne!(
        connect_once(&broker, tls.clone(), THING).await?,
        ConnectResult::Accepted
    );

    // (c) Back through JITR: deleted again, and presented by the thief:
    // auto-registered PENDING_ACTIVATION, denied by the deployed registrar.
    delete_certificate(&iot, &id).await?;
    let first = connect_once(&broker, tls.clone(), THING).await?;
    assert_ne!(first, ConnectResult::Accepted, "JITR drops the first connection");
    let status = status_after(&iot, &id, "PENDING_ACTIVATION").await?;
    assert_eq!(status.as_deref(), Some("REVOKED"), "the registrar denied it");
    let record = inventory.certificate_record(&id).await?.ok_or("no record")?;
    assert_eq!(record.reason, Some(RejectReason::FingerprintDenied), "{record:?}");
    assert_ne!(connect_once(&broker, tls, THING).await?, ConnectResult::Accepted);
    assert_eq!(thing_names(&iot).await?, things_before, "no new thing");
    // (d) Back through a bulk import (a migration bringing the same
    // certificate in again, deleted from IoT first as another system would
    // have it): refused before anything is registered, for its fingerprint.
    delete_certificate(&iot, &id).await?;
    let import_dir = dir.path().join("import");
    std::fs::create_dir_all(&import_dir)?;
    std::fs::write(import_dir.join("rev-1.pem"), &device.cert_pem)?;
    let failures = dir.path().join("import-failures.csv");
    let imported = onboard()?
        .env("ONBOARD_BUCKET", &bucket)
        .env("ONBOARD_KMS_KEY", deployed.output("CredentialsKeyArn")?)
        .args(["--json", "fleet", "import", "--certs"])
        .arg(&import_dir)
        .args(["--profile", "field", "--failures"])
        .arg(&failures)
        .output()?;
    assert_eq!(imported.status.code(), Some(1), "a rejected row: {}", text(&imported));
    let summary: Value = serde_json::from_slice(&imported.stdout)?;
    assert_eq!(summary["provisioned"], 0, "{summary}");
    assert_eq!(summary["rejectedByReason"]["FINGERPRINT_DENIED"], 1, "{summary}");
    assert!(
        std::fs::read_to_string(&failures)?.contains("FINGERPRINT_DENIED"),
        "the failures CSV names the reason"
    );
    assert_eq!(certificate_status(&iot, &id).await?, None, "never registered again");
    assert_eq!(thing_names(&iot).await?, things_before, "no new thing");
    // The name stays held for the revoked certificate.
    let claim = inventory.name_claim_attributes(THING).await?.ok_or("no claim")?;
    assert_eq!(
        claim.get("certificateId").map(String::as_str),
        Some(id.as_str()),
        "{claim:?}"
    );
    Ok(())
}
