//! `onboard fleet audit` end to end: `infra/template.yaml` deployed into the
//! emulator (AUTH=true), a clean device onboarded over MQTT through the
//! deployed registrar (no finding, exit 0 even with `--fail-on low`), then
//! problems planted by hand: a certificate attached to two things, an ACTIVE
//! certificate with no inventory record carrying a policy that allows
//! `iot:*`, and an inventory record whose certificate does not exist. The
//! audit lists exactly those findings; `--fail-on high` exits 4; an unknown
//! severity exits 1; the stray certificate's fingerprint denied adds
//! `ACTIVE_CERT_DENIED`, read through the deployed deny-list. Then the
//! deployed scheduled `fleet-auditor`, invoked until its run completes:
//! `onboard fleet audit --last --json` shows the same findings without
//! auditing again, and the function's log carries one `AuditFindings` EMF
//! metric per check.
//!
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them).

mod common;

use std::path::Path;
use std::process::Output;

use common::Error;
use onboarding_aws::DynamoInventory;
use onboarding_domain::{CertificateRecord, Inventory, RecordStatus};
use onboarding_test_support::emulator::{Emulator, stack};
use onboarding_test_support::world::certificate_id;
use onboarding_test_support::{DeviceCert, TestCa};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WIDE_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write_device(dir: &Path, device: &DeviceCert) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cert.pem"), &device.cert_pem)?;
    std::fs::write(dir.join("key.pem"), device.key_pem.as_deref().ok_or("no key")?)?;
    Ok(())
}

/// A device certificate registered by hand under the CA, with `status`: its id and ARN.
async fn register(
    iot: &aws_sdk_iot::Client,
    ca: &TestCa,
    name: &str,
    status: aws_sdk_iot::types::CertificateStatus,
) -> Result<(String, String), Error> {
    let device = ca.device(name).build()?;
    let registered = iot
        .register_certificate()
        .certificate_pem(&device.cert_pem)
        .ca_certificate_pem(&ca.cert_pem)
        .status(status)
        .send()
        .await?;
    Ok((
        registered.certificate_id().ok_or("no id")?.to_string(),
        registered.certificate_arn().ok_or("no ARN")?.to_string(),
    ))
}

/// The findings of a `--json` audit, as (check, resource id), sorted.
fn findings(report: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["check"].as_str().unwrap_or_default().to_string(),
                f["resourceId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_exactly_the_planted_problems() -> TestResult {
    let emulator = Emulator::start_with(&[("LOG_LEVEL", "INFO")]).await?;
    let sdk = emulator.sdk_config().await;
    let deployed = stack::deploy(&sdk, "iot-onboarding", stack::TEMPLATE, &stack::lambda_dir(), &[]).await?;
    let table = deployed.output("InventoryTableName")?.to_string();
    let common::FieldCa { ca, ca_id, iot, .. } = common::field_ca(&sdk, &deployed, "Audit Test CA").await?;
    let onboard = || common::onboard_at(&emulator.endpoint, &table);

    // A clean device, onboarded by the deployed registrar over MQTT.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("server-ca.pem"), emulator.server_ca_pem().await?)?;
    let device = ca.device("audit-clean").build()?;
    let clean_id = certificate_id(&device);
    write_device(&dir.path().join("devices").join("audit-clean"), &device)?;
    let connected = onboard()?
        .args(["--json", "device", "connect", "--dir"])
        .arg(dir.path().join("devices"))
        .args(["--host", "127.0.0.1", "--port", &emulator.mqtt_port.to_string()])
        .arg("--server-ca")
        .arg(dir.path().join("server-ca.pem"))
        .args(["--deadline", "60"])
        .output()?;
    assert!(connected.status.success(), "{}", text(&connected));

    // Clean: no finding, exit 0 even at the lowest threshold.
    let output = onboard()?
        .args(["fleet", "audit", "--json", "--fail-on", "low"])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(findings(&report), Vec::<(String, String)>::new(), "{report}");
    assert_eq!(report["audited"]["certificates"], 1, "{report}");
    assert_eq!(report["failed"], false, "{report}");

    // Planted: an INACTIVE certificate attached to two things.
    let (shared_id, shared_arn) = register(
        &iot,
        &ca,
        "audit-shared",
        aws_sdk_iot::types::CertificateStatus::Inactive,
    )
    .await?;
    for thing in ["audit-shared-a", "audit-shared-b"] {
        iot.create_thing().thing_name(thing).send().await?;
        iot.attach_thing_principal()
            .thing_name(thing)
            .principal(&shared_arn)
            .send()
            .await?;
    }
    // An ACTIVE certificate nobody recorded, carrying a policy allowing iot:*.
    let (stray_id, stray_arn) =
        register(&iot, &ca, "audit-stray", aws_sdk_iot::types::CertificateStatus::Active).await?;
    iot.create_policy()
        .policy_name("audit-wide")
        .policy_document(WIDE_POLICY)
        .send()
        .await?;
    iot.attach_policy()
        .policy_name("audit-wide")
        .target(&stray_arn)
        .send()
        .await?;
    // A record whose certificate AWS IoT does not have.
    let ghost_id = "ab".repeat(32);
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), &table);
    let mut ghost = CertificateRecord::bare(&ghost_id, &ca_id, RecordStatus::Provisioned, 1_800_000_000);
    ghost.thing_name = Some("audit-ghost".into());
    inventory.record_provisioned(&ghost).await?;

    let output = onboard()?.args(["fleet", "audit", "--json"]).output()?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "no --fail-on: never fails: {}",
        text(&output)
    );
    let report: Value = serde_json::from_slice(&output.stdout)?;
    eprintln!("audit: {report}");
    let mut expected = vec![
        ("ACTIVE_CERT_UNRECORDED".to_string(), stray_id.clone()),
        ("CERT_SHARED".to_string(), shared_id.clone()),
        ("POLICY_OVERLY_PERMISSIVE".to_string(), "audit-wide".to_string()),
        ("RECORD_CERT_MISSING".to_string(), ghost_id.clone()),
    ];
    expected.sort();
    assert_eq!(findings(&report), expected, "{report}");
    assert!(
        !findings(&report).iter().any(|(_, id)| *id == clean_id),
        "the clean device stays clean: {report}"
    );
    assert_eq!(report["counts"]["byCheck"]["CERT_SHARED"]["medium"], 1, "{report}");

    // At or above high: exit 4, the report printed all the same.
    let output = onboard()?.args(["fleet", "audit", "--fail-on", "high"]).output()?;
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let table_text = String::from_utf8_lossy(&output.stdout);
    assert!(table_text.contains("POLICY_OVERLY_PERMISSIVE"), "{}", text(&output));
    // Bad input: exit 1, before any call.
    let output = onboard()?.args(["fleet", "audit", "--fail-on", "severe"]).output()?;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("severity"),
        "{}",
        text(&output)
    );

    // The stray certificate denied by fingerprint (its id): denied as well.
    let output = onboard()?
        .args(["deny", "add", "--fingerprint", &stray_id, "--reason", "audit test"])
        .output()?;
    assert!(output.status.success(), "{}", text(&output));
    let output = onboard()?.args(["fleet", "audit", "--json"]).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    expected.push(("ACTIVE_CERT_DENIED".to_string(), stray_id.clone()));
    expected.sort();
    assert_eq!(findings(&report), expected, "{report}");

    // The scheduled fleet-auditor. Before any run, --last says so (exit 1).
    let output = onboard()?.args(["fleet", "audit", "--last"]).output()?;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no fleet audit run has completed yet"),
        "{}",
        text(&output)
    );
    let auditor = deployed.output("AuditorFunctionName")?.to_string();
    let mut answers = Vec::new();
    let mut completed = false;
    for _ in 0..20 {
        let answer = common::run_scheduled(&sdk, &auditor, time::OffsetDateTime::now_utc()).await?;
        completed = answer["completed"] == true;
        answers.push(answer);
        if completed {
            break;
        }
    }
    assert!(completed, "the run never completed: {answers:?}");
    let output = onboard()?.args(["fleet", "audit", "--last", "--json"]).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let last: Value = serde_json::from_slice(&output.stdout)?;
    eprintln!("last: {last}");
    assert_eq!(findings(&last), expected, "{last}");
    assert_eq!(last["run"]["certificates"], report["audited"]["certificates"], "{last}");
    assert!(last["run"]["finishedAt"].is_string(), "{last}");
    assert_eq!(last["run"]["counts"]["ACTIVE_CERT_DENIED"], 1, "{last}");
    let output = onboard()?
        .args(["fleet", "audit", "--last", "--fail-on", "high"])
        .output()?;
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("latest completed fleet audit"),
        "{}",
        text(&output)
    );

    // One AuditFindings metric per check, dimension Check, in the function's log.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let events = logs
        .filter_log_events()
        .log_group_name(format!("/aws/lambda/{auditor}"))
        .send()
        .await?;
    let emf: Vec<Value> = events
        .events()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.message()?.trim()).ok())
        .filter(|v| v.get("AuditFindings").is_some())
        .collect();
    let by_check: std::collections::BTreeMap<String, f64> = emf
        .iter()
        .filter_map(|v| Some((v["Check"].as_str()?.to_string(), v["AuditFindings"].as_f64()?)))
        .collect();
    assert_eq!(by_check.len(), 11, "{emf:?}");
    assert_eq!(by_check.get("CERT_SHARED"), Some(&1.0), "{by_check:?}");
    assert_eq!(by_check.get("DEVICE_CERT_OLD"), Some(&0.0), "{by_check:?}");
    assert!(
        emf.iter().all(|v| v["Function"] == "fleet-auditor"
            && v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1] == json!(["Function", "Check"])),
        "{emf:?}"
    );
    Ok(())
}
