//! Certificate rotation end to end: `infra/template.yaml` deployed into the
//! emulator (AUTH=true), devices onboarded over MQTT through the registrar
//! with certificates that expire in 20 days, the deployed `cert-rotator`
//! invoked as of today, and `onboard device rotate-agent` playing each device
//! through the IoT Jobs protocol, with the deployed `rotation-issuer` and
//! `rotation-completer` behind their IoT rules.
//!
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::Error;
use onboarding_aws::{ConfigAdmin, DynamoInventory};
use onboarding_domain::DeviceProfile;
use onboarding_domain::{Rotation, RotationInventory, RotationState};
use onboarding_test_support::emulator::{Emulator, stack};
use onboarding_test_support::world::{certificate_id, certificate_status, register_ca};
use onboarding_test_support::{DeviceCert, TestCa};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The stack, a CA bound to a rotating profile, and onboarded devices.
struct Fleet {
    emulator: Emulator,
    sdk: aws_config::SdkConfig,
    table: String,
    bucket: String,
    rotator: String,
    server_ca: PathBuf,
    devices: Vec<(String, PathBuf, String)>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Deploys the stack, binds a CA to a profile with `strategy`, and
    /// onboards `count` devices whose certificates expire in 20 days.
    async fn new(strategy: &str, count: usize) -> Result<Self, Error> {
        let emulator = Emulator::start_with(&[("LOG_LEVEL", "INFO")]).await?;
        let sdk = emulator.sdk_config().await;
        let deployed = stack::deploy(&sdk, "iot-onboarding", stack::TEMPLATE, &stack::lambda_dir(), &[]).await?;
        let table = deployed.output("InventoryTableName")?.to_string();
        let profile = DeviceProfile::parse(
            &json!({
                "name": "rotating",
                "thingType": deployed.output("ThingTypeName")?,
                "policyName": deployed.output("DevicePolicyName")?,
                "minRemainingDays": 7,
                "rotation": {"strategy": strategy, "windowDays": 30, "jobTimeoutMinutes": 1, "graceDays": 0},
            })
            .to_string(),
        )?;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let admin = ConfigAdmin::new(dynamodb, &table);
        admin.put_profile(&profile).await?;
        let ca = TestCa::new("Rotation Test CA")?;
        let iot = aws_sdk_iot::Client::new(&sdk);
        let ca_id = register_ca(&iot, &ca).await?;
        admin.bind(&ca_id, "rotating").await?;

        let dir = tempfile::tempdir()?;
        let server_ca = dir.path().join("server-ca.pem");
        std::fs::write(&server_ca, emulator.server_ca_pem().await?)?;
        let mut devices = Vec::new();
        for n in 1..=count {
            let name = format!("rot-{strategy}-{n}");
            let device = ca.device(&name).valid_days(-1, 20).build()?;
            let path = dir.path().join("devices").join(&name);
            write_device(&path, &device)?;
            devices.push((name, path, certificate_id(&device)));
        }
        let fleet = Self {
            rotator: deployed.output("RotatorFunctionName")?.to_string(),
            bucket: deployed.output("CredentialsBucketName")?.to_string(),
            emulator,
            sdk,
            table,
            server_ca,
            devices,
            _dir: dir,
        };
        // Onboarded through the deployed registrar, as devices are.
        let connected = fleet.connect(&fleet.devices_dir())?;
        assert!(connected.status.success(), "{}", text(&connected));
        Ok(fleet)
    }

    fn devices_dir(&self) -> PathBuf {
        self._dir.path().join("devices")
    }

    fn onboard(&self) -> Result<Command, Error> {
        common::onboard_at(&self.emulator.endpoint, &self.table)
    }

    /// `onboard device connect --dir DIR`: every device must get in and publish.
    fn connect(&self, dir: &Path) -> Result<Output, Error> {
        Ok(self
            .onboard()?
            .args(["--json", "device", "connect", "--dir"])
            .arg(dir)
            .args(["--host", "127.0.0.1", "--port", &self.emulator.mqtt_port.to_string()])
            .arg("--server-ca")
            .arg(&self.server_ca)
            .args(["--deadline", "60"])
            .output()?)
    }

    /// `onboard device rotate-agent` for one device.
    fn agent(&self, dir: &Path, extra: &[&str]) -> Result<Output, Error> {
        Ok(self
            .onboard()?
            .args(["--json", "device", "rotate-agent", "--dir"])
            .arg(dir)
            .args(["--host", "127.0.0.1", "--port", &self.emulator.mqtt_port.to_string()])
            .arg("--server-ca")
            .arg(&self.server_ca)
            .args(extra)
            .output()?)
    }

    /// Invokes the deployed rotator with a scheduled event as of `now`.
    async fn rotate(&self, now: time::OffsetDateTime) -> Result<Value, Error> {
        common::run_scheduled(&self.sdk, &self.rotator, now).await
    }

    fn inventory(&self) -> DynamoInventory {
        DynamoInventory::new(aws_sdk_dynamodb::Client::new(&self.sdk), &self.table)
    }

    async fn rotation(&self, old_certificate_id: &str) -> Result<Option<Rotation>, Error> {
        Ok(self.inventory().rotation(old_certificate_id).await?)
    }

    /// Waits until the rotation of `old` reaches `state`.
    async fn wait_for(&self, old: &str, state: RotationState) -> Result<Rotation, Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rotation = self.rotation(old).await?;
            if let Some(r) = &rotation
                && r.state == state
            {
                return Ok(r.clone());
            }
            if Instant::now() > deadline {
                return Err(format!("rotation of {old} is {rotation:?}, not {state:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn status(&self, certificate_id: &str) -> Result<Option<String>, Error> {
        let iot = aws_sdk_iot::Client::new(&self.sdk);
        certificate_status(&iot, certificate_id).await
    }

    async fn principals(&self, thing: &str) -> Result<Vec<String>, Error> {
        let iot = aws_sdk_iot::Client::new(&self.sdk);
        Ok(iot
            .list_thing_principals()
            .thing_name(thing)
            .send()
            .await?
            .principals
            .unwrap_or_default())
    }
}

/// A function's log lines (for failure messages).
async fn function_logs(sdk: &aws_config::SdkConfig, group: &str) -> String {
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    match logs.filter_log_events().log_group_name(group).send().await {
        Ok(out) => out
            .events()
            .iter()
            .filter_map(|e| e.message())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(no logs: {e})"),
    }
}

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

/// Every device of the fleet ends on a new certificate: the old ones retired
/// and detached, the new ones the things' only principals, every device
/// still able to publish; a second run during the open rotations starts
/// nothing new.
async fn every_device_rotates(strategy: &str) -> TestResult {
    let fleet = Fleet::new(strategy, 2).await?;
    let now = time::OffsetDateTime::now_utc();
    let first = fleet.rotate(now).await?;
    assert_eq!(first["started"], 2, "{first}");
    let second = fleet.rotate(now).await?;
    assert_eq!(second["started"], 0, "a second run starts nothing new: {second}");
    assert_eq!(second["skippedOpen"], 2, "{second}");

    for (name, dir, old) in &fleet.devices {
        let output = fleet.agent(dir, &["--deadline", "60"])?;
        if !output.status.success() {
            let logs = function_logs(&fleet.sdk, "/aws/lambda/iot-onboarding-rotation-issuer").await;
            panic!("{name}: {}\nissuer logs:\n{logs}", text(&output));
        }
        let rotation = fleet.wait_for(old, RotationState::Retired).await?;
        let new = rotation.new_certificate_id.clone().ok_or("no new certificate")?;
        assert_eq!(rotation.strategy.as_str(), strategy);
        for at in [rotation.issued_at, rotation.confirmed_at, rotation.retired_at] {
            assert!(at.is_some(), "{rotation:?}");
        }
        assert_eq!(
            fleet.status(old).await?.as_deref(),
            Some("INACTIVE"),
            "{name}: old certificate"
        );
        assert_eq!(
            fleet.status(&new).await?.as_deref(),
            Some("ACTIVE"),
            "{name}: new certificate"
        );
        let principals = fleet.principals(name).await?;
        assert_eq!(principals.len(), 1, "{name}: {principals:?}");
        assert!(principals[0].ends_with(&new), "{name}: {principals:?}");
        // The device's directory now holds the new credentials.
        assert!(dir.join("cert.old.pem").is_file());
    }
    // Every device connects and publishes with its new certificate.
    let connected = fleet.connect(&fleet.devices_dir())?;
    assert!(connected.status.success(), "{}", text(&connected));
    let report: Value = serde_json::from_slice(&connected.stdout)?;
    assert!(
        report["devices"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["outcome"] == "active")),
        "{report}"
    );
    // Server-keygen private keys are gone for good: no version, no marker.
    let s3 = onboarding_test_support::emulator::s3_client(&fleet.sdk);
    let left = s3
        .list_object_versions()
        .bucket(&fleet.bucket)
        .prefix("rotation/")
        .send()
        .await?;
    assert!(
        left.versions().is_empty() && left.delete_markers().is_empty(),
        "rotation objects left: {:?} {:?}",
        left.versions(),
        left.delete_markers()
    );
    // Retired certificates leave the expiry index: nothing left to rotate.
    let later = fleet.rotate(now).await?;
    assert_eq!(later["started"], 0, "{later}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_fleet_rotates() -> TestResult {
    every_device_rotates("csr").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keygen_fleet_rotates() -> TestResult {
    every_device_rotates("serverKeygen").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_for_another_things_name_is_refused() -> TestResult {
    let fleet = Fleet::new("csr", 1).await?;
    let (name, dir, old) = fleet.devices[0].clone();
    let report = fleet.rotate(time::OffsetDateTime::now_utc()).await?;
    assert_eq!(report["started"], 1, "{report}");
    let output = fleet.agent(&dir, &["--deadline", "30", "--misbehave", "foreign-csr=someone-else"])?;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let rotation = fleet.wait_for(&old, RotationState::Failed).await?;
    assert_eq!(rotation.reason.map(|r| r.code()), Some("CSR_REFUSED"));
    assert!(rotation.due_at.is_some(), "retried later");
    // The old certificate is untouched, the device still gets in.
    assert_eq!(fleet.status(&old).await?.as_deref(), Some("ACTIVE"));
    assert_eq!(fleet.principals(&name).await?.len(), 1);
    let connected = fleet.connect(&dir)?;
    assert!(connected.status.success(), "{}", text(&connected));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_keeps_its_certificate() -> TestResult {
    let fleet = Fleet::new("csr", 1).await?;
    let (name, dir, old) = fleet.devices[0].clone();
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(fleet.rotate(now).await?["started"], 1);
    // The device takes the job and then says nothing.
    let output = fleet.agent(&dir, &["--deadline", "5", "--misbehave", "never-answer"])?;
    assert!(!output.status.success(), "{}", text(&output));
    // The job's in-progress timeout (1 minute) passes; the next run follows up.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let report = fleet.rotate(now + time::Duration::minutes(3)).await?;
    if report["failed"] != 1 {
        let logs = function_logs(&fleet.sdk, "/aws/lambda/iot-onboarding-cert-rotator").await;
        panic!("{report}\nrotator logs:\n{logs}");
    }
    let rotation = fleet.wait_for(&old, RotationState::Failed).await?;
    assert_eq!(rotation.reason.map(|r| r.code()), Some("JOB_TIMED_OUT"), "{rotation:?}");
    assert_eq!(fleet.status(&old).await?.as_deref(), Some("ACTIVE"));
    assert_eq!(fleet.principals(&name).await?.len(), 1);
    let connected = fleet.connect(&dir)?;
    assert!(connected.status.success(), "{}", text(&connected));
    Ok(())
}
