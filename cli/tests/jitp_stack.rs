//! Just-in-time provisioning end to end (emulator, AUTH=true): the stack
//! deployed with `JitpProvisioningRole=true`, a CA registered with
//! `onboard ca register --mode jitp`, devices connecting over MQTT and
//! provisioned by the CA's template, then in the inventory.
//!
//! Whether AWS IoT publishes the certificate-registered event for a JITP
//! device is not documented, so both cases run: without the event the
//! reconciler records the device; with it the registrar does. A device the
//! template cannot provision (its certificate lacks a subject field the
//! template needs) is not stranded either: the registrar (on its event) or
//! the reconciler (once it is stuck) provisions it.
//!
//! The emulator stores a CA's registrationConfig but does not run it; the
//! test launcher runs it on connect with the emulator's own template engine
//! (shared/emulator/python/launch_ministack.py, correction 4).
//!
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use common::Error;
use onboarding_aws::DynamoInventory;
use onboarding_domain::Inventory;
use onboarding_domain::RecordStatus;
use onboarding_test_support::emulator::{Emulator, stack};
use onboarding_test_support::world::certificate_status;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

struct Jitp {
    emulator: Emulator,
    sdk: aws_config::SdkConfig,
    deployed: stack::Deployed,
    table: String,
    server_ca: PathBuf,
    dir: tempfile::TempDir,
}

impl Jitp {
    async fn new(events: bool) -> Result<Self, Error> {
        let emulator = if events {
            Emulator::start_with(&[("ONBOARDING_JITP_EVENTS", "1")]).await?
        } else {
            Emulator::start().await?
        };
        let sdk = emulator.sdk_config().await;
        let deployed = stack::deploy(
            &sdk,
            "iot-onboarding",
            stack::TEMPLATE,
            &stack::lambda_dir(),
            // Short, so that the test can wait it out (the reconciler goes
            // by the wall clock, not the schedule event's time).
            &[("JitpProvisioningRole", "true"), ("StuckAfterSeconds", "20")],
        )
        .await?;
        let table = deployed.output("InventoryTableName")?.to_string();
        let dir = tempfile::tempdir()?;
        let server_ca = dir.path().join("server-ca.pem");
        std::fs::write(&server_ca, emulator.server_ca_pem().await?)?;
        Ok(Self {
            emulator,
            sdk,
            deployed,
            table,
            server_ca,
            dir,
        })
    }

    fn onboard(&self) -> Result<Command, Error> {
        common::onboard_at(&self.emulator.endpoint, &self.table)
    }

    /// A profile with a mapped attribute, a JITP CA bound to it; returns the CA id.
    fn register_jitp_ca(&self, role_arn: &str) -> Result<String, Error> {
        let profile = self.dir.path().join("profile.json");
        let group = self
            .deployed
            .output("ThingGroupNames")?
            .split(',')
            .next()
            .unwrap_or_default();
        std::fs::write(
            &profile,
            serde_json::json!({
                "name": "jitp-sensors",
                "thingType": self.deployed.output("ThingTypeName")?,
                "thingName": "{CN}",
                "attributes": {"model": "OU"},
                "unfitAttribute": "drop",
                "thingGroups": [group],
                "policyName": self.deployed.output("DevicePolicyName")?,
            })
            .to_string(),
        )?;
        self.onboard()?
            .args(["profile", "put"])
            .arg(&profile)
            .assert()
            .success();
        self.onboard()?
            .args(["ca", "create", "--out"])
            .arg(self.dir.path().join("ca"))
            .assert()
            .success();
        let output = self
            .onboard()?
            .args([
                "--json",
                "ca",
                "register",
                "--profile",
                "jitp-sensors",
                "--mode",
                "jitp",
            ])
            .args(["--role-arn", role_arn, "--ca"])
            .arg(self.dir.path().join("ca"))
            .output()?;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let registered: Value = serde_json::from_slice(&output.stdout)?;
        Ok(registered["caCertificateId"].as_str().ok_or("no CA id")?.to_string())
    }

    fn mint(&self, name: &str, count: u32, unit: Option<&str>) -> Result<PathBuf, Error> {
        let out = self.dir.path().join(name);
        let mut cmd = self.onboard()?;
        cmd.args(["device", "mint", "--count", &count.to_string(), "--name"])
            .arg(format!("{name}-{{n:02}}"))
            .arg("--ca")
            .arg(self.dir.path().join("ca"))
            .arg("--out")
            .arg(&out);
        if let Some(unit) = unit {
            cmd.args(["--organizational-unit", unit]);
        }
        cmd.assert().success();
        Ok(out)
    }

    /// `onboard device connect`: each device's outcome.
    fn connect(&self, dir: &Path, deadline: u64) -> Result<Vec<(String, String)>, Error> {
        let output = self
            .onboard()?
            .args(["--json", "device", "connect", "--dir"])
            .arg(dir)
            .args(["--host", "127.0.0.1", "--port", &self.emulator.mqtt_port.to_string()])
            .arg("--server-ca")
            .arg(&self.server_ca)
            .args(["--deadline", &deadline.to_string()])
            .output()?;
        let report: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&output.stderr)))?;
        let mut fates: Vec<(String, String)> = report["devices"]
            .as_array()
            .ok_or("no devices")?
            .iter()
            .map(|d| {
                (
                    d["device"].as_str().unwrap_or_default().to_string(),
                    d["outcome"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        fates.sort();
        Ok(fates)
    }

    async fn reconcile(&self, now: time::OffsetDateTime) -> Result<Value, Error> {
        common::run_scheduled(&self.sdk, self.deployed.output("ReconcilerFunctionName")?, now).await
    }

    fn inventory(&self) -> DynamoInventory {
        DynamoInventory::new(aws_sdk_dynamodb::Client::new(&self.sdk), &self.table)
    }

    /// The device's record, waiting up to `wait` for it to appear.
    async fn record(
        &self,
        certificate_id: &str,
        wait: Duration,
    ) -> Result<Option<onboarding_domain::CertificateRecord>, Error> {
        let until = std::time::Instant::now() + wait;
        loop {
            let record = self.inventory().certificate_record(certificate_id).await?;
            if record.is_some() || std::time::Instant::now() >= until {
                return Ok(record);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn certificate_id_of(dir: &Path) -> Result<String, Error> {
    let pem = std::fs::read_to_string(dir.join("cert.pem"))?;
    Ok(onboarding_domain::Certificate::from_pem(&pem)?.fingerprint)
}

async fn jitp_devices_enter_the_inventory(events: bool) -> TestResult {
    let jitp = Jitp::new(events).await?;
    let role_arn = jitp.deployed.output("JitpProvisioningRoleArn")?.to_string();
    let iam = aws_sdk_iam::Client::new(&jitp.sdk);
    let role_name = role_arn.rsplit('/').next().ok_or("no role name")?;
    let attached = iam.list_attached_role_policies().role_name(role_name).send().await?;
    assert!(
        attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_name() == Some("AWSIoTThingsRegistration")),
        "{attached:?}"
    );
    let ca_id = jitp.register_jitp_ca(&role_arn)?;
    let iot = aws_sdk_iot::Client::new(&jitp.sdk);
    let described = iot.describe_ca_certificate().certificate_id(&ca_id).send().await?;
    let config = described.registration_config().ok_or("no registration config")?;
    assert_eq!(config.role_arn(), Some(role_arn.as_str()));

    // Two devices the template provisions on their first connect.
    let good = jitp.mint("jitp", 2, Some("m7"))?;
    let fates = jitp.connect(&good, 60)?;
    assert_eq!(
        fates,
        [("jitp-01".into(), "active".into()), ("jitp-02".into(), "active".into())]
    );
    let thing = iot.describe_thing().thing_name("jitp-01").send().await?;
    assert_eq!(
        thing.attributes().and_then(|a| a.get("model")).map(String::as_str),
        Some("m7")
    );
    let first = certificate_id_of(&good.join("jitp-01"))?;
    assert_eq!(certificate_status(&iot, &first).await?.as_deref(), Some("ACTIVE"));

    let now = time::OffsetDateTime::now_utc();
    if events {
        // The registrar heard of it: checked and recorded, nothing changed in IoT.
        let record = jitp
            .record(&first, Duration::from_secs(30))
            .await?
            .ok_or("not recorded")?;
        assert_eq!(record.status, RecordStatus::Provisioned);
    } else {
        let early = jitp.inventory().certificate_record(&first).await?;
        assert!(early.is_none(), "{early:?}\n{}", jitp.emulator.log_tail());
        let report = jitp.reconcile(now).await?;
        assert_eq!(report["recordedActive"], 2, "{report}");
    }
    for name in ["jitp-01", "jitp-02"] {
        let id = certificate_id_of(&good.join(name))?;
        let record = jitp.inventory().certificate_record(&id).await?.ok_or("not recorded")?;
        assert_eq!(record.status, RecordStatus::Provisioned, "{record:?}");
        assert_eq!(record.thing_name.as_deref(), Some(name));
        assert_eq!(record.profile.as_deref(), Some("jitp-sensors"));
        assert!(record.not_after.is_some(), "rotation needs the expiry: {record:?}");
        assert_eq!(record.ca_certificate_id, ca_id);
        // Recorded, not provisioned again: the template made the thing.
        assert_eq!(record.credentials_key, None, "{record:?}");
        assert!(
            record.detail.as_deref().is_some_and(|d| d.contains("JITP")),
            "{record:?}"
        );
    }

    // A device without the OU the template needs: JITP fails, the device is not stranded.
    let partial = jitp.mint("bare", 1, None)?;
    let bare = certificate_id_of(&partial.join("bare-01"))?;
    let first_connect = std::time::Instant::now();
    if events {
        // The registrar's event finds it PENDING_ACTIVATION and provisions it
        // (the attribute left out, as the profile says).
        assert_eq!(jitp.connect(&partial, 60)?, [("bare-01".into(), "active".into())]);
    } else {
        assert_eq!(jitp.connect(&partial, 8)?, [("bare-01".into(), "timed_out".into())]);
        assert_eq!(
            certificate_status(&iot, &bare).await?.as_deref(),
            Some("PENDING_ACTIVATION")
        );
        tokio::time::sleep(Duration::from_secs(21).saturating_sub(first_connect.elapsed())).await;
        let report = jitp.reconcile(time::OffsetDateTime::now_utc()).await?;
        assert_eq!(report["stuckProcessed"], 1, "{report}");
        assert_eq!(jitp.connect(&partial, 60)?, [("bare-01".into(), "active".into())]);
    }
    let record = jitp
        .record(&bare, Duration::from_secs(10))
        .await?
        .ok_or("not recorded")?;
    assert_eq!(record.status, RecordStatus::Provisioned);
    // Provisioned by the registrar this time, with its credentials record.
    assert!(record.credentials_key.is_some(), "{record:?}");
    assert_eq!(record.dropped_attributes, Vec::<String>::new());
    let thing = iot.describe_thing().thing_name("bare-01").send().await?;
    assert!(thing.attributes().is_none_or(|a| !a.contains_key("model")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitp_devices_are_recorded_by_the_reconciler_when_no_event_comes() -> TestResult {
    jitp_devices_enter_the_inventory(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitp_devices_are_recorded_by_the_registrar_when_the_event_comes() -> TestResult {
    jitp_devices_enter_the_inventory(true).await
}
