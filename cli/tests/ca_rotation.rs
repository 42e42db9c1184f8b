//! Rotating a manufacturer CA end to end (emulator, AUTH=true, the SAM
//! template deployed): an old CA that expires in 30 days, `onboard ca
//! rotate` to a new one, a device of each making its first mTLS connection
//! during the overlap, `onboard ca status` on both, the reconciler's expiry
//! metric for the old CA, and `onboard ca retire` refusing while a device
//! still holds an ACTIVE certificate of the old CA, succeeding once that
//! device has rotated (its new certificate from CreateCertificateFromCsr no
//! longer chains to the old CA), and `--force` listing what remains.
//!
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them; the
//! reconciler's must include its CA expiry pass).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use aws_sdk_dynamodb::types::AttributeValue;
use common::Error;
use onboarding_test_support::emulator::{Emulator, stack};
use onboarding_test_support::world::certificate_status;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

struct World {
    emulator: Emulator,
    sdk: aws_config::SdkConfig,
    deployed: stack::Deployed,
    table: String,
    server_ca: PathBuf,
    dir: tempfile::TempDir,
}

impl World {
    async fn new() -> Result<Self, Error> {
        let emulator = Emulator::start().await?;
        let sdk = emulator.sdk_config().await;
        let deployed = stack::deploy(&sdk, "iot-onboarding", stack::TEMPLATE, &stack::lambda_dir(), &[]).await?;
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Result<Output, Error> {
        Ok(self.onboard()?.args(args).output()?)
    }

    fn create_ca(&self, name: &str, days: u32) -> Result<PathBuf, Error> {
        let out = self.path(name);
        self.onboard()?
            .args([
                "ca",
                "create",
                "--days",
                &days.to_string(),
                "--common-name",
                name,
                "--out",
            ])
            .arg(&out)
            .assert()
            .success();
        Ok(out)
    }

    /// One device of `ca`, named `name`, valid for `days`; its directory.
    fn mint(&self, ca: &Path, name: &str, days: u32) -> Result<PathBuf, Error> {
        let out = self.path(&format!("devices-{name}"));
        self.onboard()?
            .args([
                "device",
                "mint",
                "--count",
                "1",
                "--days",
                &days.to_string(),
                "--name",
                name,
                "--ca",
            ])
            .arg(ca)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        Ok(out)
    }

    /// `onboard device connect`: each device's outcome.
    fn connect(&self, dir: &Path) -> Result<Vec<(String, String)>, Error> {
        let output = self
            .onboard()?
            .args(["--json", "device", "connect", "--dir"])
            .arg(dir)
            .args(["--host", "127.0.0.1", "--port", &self.emulator.mqtt_port.to_string()])
            .arg("--server-ca")
            .arg(&self.server_ca)
            .args(["--deadline", "60"])
            .output()?;
        let report: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&output.stderr)))?;
        Ok(report["devices"]
            .as_array()
            .ok_or("no devices")?
            .iter()
            .map(|d| {
                (
                    d["device"].as_str().unwrap_or_default().to_string(),
                    d["outcome"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    async fn reconciler_log(&self) -> Result<Vec<String>, Error> {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&self.sdk);
        let group = format!("/aws/lambda/{}", self.deployed.output("ReconcilerFunctionName")?);
        let events = logs.filter_log_events().log_group_name(group).send().await?;
        Ok(events
            .events()
            .iter()
            .filter_map(|e| e.message().map(str::to_string))
            .collect())
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A refusal: exit 1, and stderr saying `why`.
fn refused(output: &Output, why: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", text(output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(why),
        "{}",
        text(output)
    );
}

fn json(output: &Output) -> Result<Value, Error> {
    assert!(output.status.success(), "{}", text(output));
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn certificate_id_of(dir: &Path) -> Result<String, Error> {
    let pem = std::fs::read_to_string(dir.join("cert.pem"))?;
    Ok(onboarding_domain::Certificate::from_pem(&pem)?.fingerprint)
}

fn fingerprint_of(ca_dir: &Path) -> Result<String, Error> {
    let pem = std::fs::read_to_string(ca_dir.join("ca.pem"))?;
    Ok(onboarding_domain::Certificate::from_pem(&pem)?.fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manufacturer_ca_is_rotated_watched_and_retired() -> TestResult {
    let w = World::new().await?;
    let profile = w.path("profile.json");
    std::fs::write(
        &profile,
        serde_json::json!({
            "name": "sensors",
            "thingType": w.deployed.output("ThingTypeName")?,
            "thingName": "{CN}",
            "policyName": w.deployed.output("DevicePolicyName")?,
            "minRemainingDays": 7,
            "rotation": {"strategy": "csr", "windowDays": 30, "jobTimeoutMinutes": 1, "graceDays": 0},
        })
        .to_string(),
    )?;
    w.onboard()?.args(["profile", "put"]).arg(&profile).assert().success();

    // The old CA expires in 30 days: within the 90-day warning.
    let old_dir = w.create_ca("old-ca", 30)?;
    let registered = json(
        &w.onboard()?
            .args(["--json", "ca", "register", "--profile", "sensors", "--ca"])
            .arg(&old_dir)
            .output()?,
    )?;
    let old = registered["caCertificateId"].as_str().ok_or("no CA id")?.to_string();
    let new_dir = w.create_ca("new-ca", 3650)?;
    let new = fingerprint_of(&new_dir)?;

    // Refusals, each before anything is registered.
    let old_s = old.as_str();
    let dir = |p: &Path| p.to_string_lossy().into_owned();
    refused(
        &w.run(&["ca", "rotate", old_s, "--new", &dir(&old_dir)])?,
        "the old CA itself",
    );
    let short = w.create_ca("short-ca", 10)?;
    refused(
        &w.run(&["ca", "rotate", old_s, "--new", &dir(&short)])?,
        "expires before the old one",
    );
    let mismatched = w.path("mismatched");
    std::fs::create_dir_all(&mismatched)?;
    std::fs::copy(new_dir.join("ca.pem"), mismatched.join("ca.pem"))?;
    std::fs::copy(short.join("ca.key.pem"), mismatched.join("ca.key.pem"))?;
    refused(
        &w.run(&["ca", "rotate", old_s, "--new", &dir(&mismatched)])?,
        "key does not match",
    );
    refused(
        &w.run(&["ca", "rotate", old_s, "--new", &dir(&w.path("nothing"))])?,
        "cannot read",
    );
    let unknown = "c".repeat(64);
    refused(
        &w.run(&["ca", "rotate", &unknown, "--new", &dir(&new_dir)])?,
        "not bound",
    );
    refused(
        &w.run(&["ca", "rotate", "not-an-id", "--new", &dir(&new_dir)])?,
        "not a CA certificate id",
    );
    refused(&w.run(&["ca", "status", &unknown])?, "no CA");
    refused(&w.run(&["ca", "status", "nope"])?, "not a CA certificate id");
    refused(&w.run(&["ca", "retire", &unknown])?, "no CA");
    refused(&w.run(&["ca", "retire", "nope", "--force"])?, "not a CA certificate id");
    let iot = aws_sdk_iot::Client::new(&w.sdk);
    assert!(
        !onboarding_aws::ca_is_registered(&iot, &new).await?,
        "a refusal registers nothing"
    );

    // The rotation, and again (as after a crash): registered once, bound, old CA ACTIVE.
    let rotated = json(&w.run(&["--json", "ca", "rotate", old_s, "--new", &dir(&new_dir)])?)?;
    assert_eq!(rotated["newCaCertificateId"], new.as_str(), "{rotated}");
    assert_eq!(rotated["registered"], true);
    assert_eq!(rotated["profile"], "sensors");
    let again = json(&w.run(&["--json", "ca", "rotate", old_s, "--new", &dir(&new_dir)])?)?;
    assert_eq!(again["registered"], false, "{again}");
    // As after a crash between the registration and the binding, with the
    // new CA's auto-registration off: the next run binds it and turns it on.
    w.onboard()?.args(["ca", "unbind", &new]).assert().success();
    iot.update_ca_certificate()
        .certificate_id(&new)
        .new_auto_registration_status(aws_sdk_iot::types::AutoRegistrationStatus::Disable)
        .send()
        .await?;
    let resumed = w.run(&["ca", "rotate", old_s, "--new", &dir(&new_dir)])?;
    assert!(
        String::from_utf8_lossy(&resumed.stdout).contains("reused, auto-registration turned on"),
        "{}",
        text(&resumed)
    );
    let described = iot.describe_ca_certificate().certificate_id(&new).send().await?;
    assert_eq!(
        described
            .certificate_description()
            .and_then(|d| d.auto_registration_status())
            .map(|s| s.as_str()),
        Some("ENABLE")
    );
    let listed = json(&w.run(&["--json", "ca", "list"])?)?;
    assert!(
        listed.as_array().is_some_and(|cas| cas
            .iter()
            .any(|c| c["caCertificateId"] == new.as_str() && c["profile"] == "sensors")),
        "{listed}"
    );

    // The overlap: a device of each CA makes its first connection and is provisioned.
    // The old CA's device expires in 20 days: inside its profile's rotation window.
    let old_device = w.mint(&old_dir, "old-01", 20)?;
    let new_device = w.mint(&new_dir, "new-01", 365)?;
    assert_eq!(w.connect(&old_device)?, [("old-01".to_string(), "active".to_string())]);
    assert_eq!(w.connect(&new_device)?, [("new-01".to_string(), "active".to_string())]);
    let old_cert = certificate_id_of(&old_device.join("old-01"))?;
    let new_cert = certificate_id_of(&new_device.join("new-01"))?;
    for (thing, cert, ca) in [("old-01", &old_cert, &old), ("new-01", &new_cert, &new)] {
        assert_eq!(certificate_status(&iot, cert).await?.as_deref(), Some("ACTIVE"));
        let described = iot.describe_certificate().certificate_id(cert).send().await?;
        let description = described.certificate_description().ok_or("no description")?;
        assert_eq!(description.ca_certificate_id(), Some(ca.as_str()));
        let principals = iot.list_thing_principals().thing_name(thing).send().await?;
        assert!(
            principals.principals().iter().any(|p| p.ends_with(cert.as_str())),
            "{thing}: {principals:?}"
        );
    }

    // Status: both CAs of the profile, IoT's counts, expiry, registrations.
    let status = json(&w.run(&["--json", "ca", "status", old_s])?)?;
    let rows = status.as_array().ok_or("not a list")?;
    assert_eq!(rows.len(), 2, "{status}");
    assert_eq!(rows[0]["caCertificateId"], old_s);
    assert_eq!(rows[1]["caCertificateId"], new.as_str());
    for row in rows {
        assert_eq!(row["status"], "ACTIVE", "{row}");
        assert_eq!(row["acceptsRegistrations"], true, "{row}");
        assert_eq!(row["certificates"]["active"], 1, "{row}");
        assert!(row["certificates"]["newestCertificateCreated"].is_string(), "{row}");
    }
    let old_days = rows[0]["daysToExpiry"].as_i64().ok_or("no days")?;
    assert!((29..=30).contains(&old_days), "{status}");
    assert!(rows[1]["daysToExpiry"].as_i64().ok_or("no days")? > 3600);
    assert_eq!(rows[0]["certificates"]["inUse"][0]["certificateId"], old_cert.as_str());
    let table = w.run(&["ca", "status", old_s])?;
    assert!(table.status.success(), "{}", text(&table));
    let shown = String::from_utf8_lossy(&table.stdout);
    eprintln!("{shown}");
    assert!(
        shown.contains("profile: sensors") && shown.contains(&new) && shown.contains("accepted"),
        "{shown}"
    );

    // The reconciler records each bound CA's expiry: the old one warns.
    let answer = common::run_scheduled(
        &w.sdk,
        w.deployed.output("ReconcilerFunctionName")?,
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    assert_eq!(answer["caExpiringSoon"], 1, "{answer}");
    let lines = w.reconciler_log().await?;
    let emf: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let days_of = |ca: &str| {
        emf.iter()
            .find(|v| v["CaCertificateId"] == ca)
            .and_then(|v| v["CaDaysToExpiry"].as_f64())
    };
    assert_eq!(days_of(old_s), Some(old_days as f64), "{}", lines.join("\n"));
    assert!(days_of(&new).is_some_and(|d| d > 3600.0), "{}", lines.join("\n"));
    assert!(emf.iter().any(|v| v["CaExpiringSoon"] == 1.0), "{}", lines.join("\n"));
    // ... and keeps each one's notAfter in the inventory table.
    let dynamodb = aws_sdk_dynamodb::Client::new(&w.sdk);
    for ca in [old_s, new.as_str()] {
        let item = dynamodb
            .get_item()
            .table_name(&w.table)
            .key("pk", AttributeValue::S("RECONCILER".into()))
            .key("sk", AttributeValue::S(format!("CAEXPIRY#{ca}")))
            .send()
            .await?
            .item
            .ok_or(format!("no recorded expiry for CA {ca}"))?;
        let not_after: i64 = item
            .get("notAfterEpoch")
            .and_then(|v| v.as_n().ok())
            .ok_or("no notAfterEpoch")?
            .parse()?;
        let days_left = (not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        let emitted = days_of(ca).ok_or("no metric")? as i64;
        assert!(
            (days_left - emitted).abs() <= 1,
            "recorded {item:?}, emitted {emitted} days"
        );
    }

    // Retire refuses while the old CA's device holds an ACTIVE certificate,
    // lists it, and changes nothing.
    let refusal = w.run(&["ca", "retire", old_s])?;
    refused(&refusal, "still chain to CA");
    eprintln!("{}", text(&refusal));
    assert!(
        String::from_utf8_lossy(&refusal.stdout).contains(&old_cert),
        "{}",
        text(&refusal)
    );
    let described = iot.describe_ca_certificate().certificate_id(old_s).send().await?;
    let description = described.certificate_description().ok_or("no description")?;
    assert_eq!(description.status().map(|s| s.as_str()), Some("ACTIVE"));
    assert_eq!(
        description.auto_registration_status().map(|s| s.as_str()),
        Some("ENABLE")
    );

    // The device rotates (the deployed rotator, the device's agent over MQTT):
    // its new certificate comes from CreateCertificateFromCsr, not from the
    // old CA, and the old one ends INACTIVE. Now the retire succeeds.
    let rotator = w.deployed.output("RotatorFunctionName")?;
    let started = common::run_scheduled(&w.sdk, rotator, time::OffsetDateTime::now_utc()).await?;
    assert_eq!(
        started["started"], 1,
        "only the old CA's device is in its window: {started}"
    );
    let agent = w
        .onboard()?
        .args(["--json", "device", "rotate-agent", "--dir"])
        .arg(old_device.join("old-01"))
        .args(["--host", "127.0.0.1", "--port", &w.emulator.mqtt_port.to_string()])
        .arg("--server-ca")
        .arg(&w.server_ca)
        .args(["--deadline", "60"])
        .output()?;
    assert!(agent.status.success(), "{}", text(&agent));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while certificate_status(&iot, &old_cert).await?.as_deref() != Some("INACTIVE") {
        assert!(
            std::time::Instant::now() < deadline,
            "the old certificate was not retired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let rotated_cert = certificate_id_of(&old_device.join("old-01"))?;
    assert_ne!(rotated_cert, old_cert);
    let described = iot.describe_certificate().certificate_id(&rotated_cert).send().await?;
    let rotated_ca = described
        .certificate_description()
        .and_then(|d| d.ca_certificate_id())
        .map(str::to_string);
    assert!(rotated_ca.as_deref() != Some(old_s), "{rotated_ca:?}");
    // The device still gets in, with its new certificate.
    assert_eq!(w.connect(&old_device)?, [("old-01".to_string(), "active".to_string())]);
    let retired = json(&w.run(&["--json", "ca", "retire", old_s])?)?;
    assert_eq!(retired["result"], "retired", "{retired}");
    assert_eq!(retired["inUse"], 0);
    let described = iot.describe_ca_certificate().certificate_id(old_s).send().await?;
    let description = described.certificate_description().ok_or("no description")?;
    assert_eq!(description.status().map(|s| s.as_str()), Some("INACTIVE"));
    assert_eq!(
        description.auto_registration_status().map(|s| s.as_str()),
        Some("DISABLE")
    );
    // Again: nothing more to do.
    let again = json(&w.run(&["--json", "ca", "retire", old_s])?)?;
    assert_eq!(again["result"], "already_inactive");
    let status = json(&w.run(&["--json", "ca", "status", old_s])?)?;
    assert_eq!(status[0]["status"], "INACTIVE");
    assert_eq!(status[0]["acceptsRegistrations"], false);
    assert_eq!(status[0]["certificates"]["inactive"], 1);

    // --force on the new CA, whose device remains: listed, then cut off.
    let forced = w.run(&["ca", "retire", &new, "--force"])?;
    assert!(forced.status.success(), "{}", text(&forced));
    let out = String::from_utf8_lossy(&forced.stdout);
    eprintln!("{}", text(&forced));
    assert!(
        out.contains("left under an INACTIVE CA") && out.contains(&new_cert),
        "{}",
        text(&forced)
    );
    assert!(
        String::from_utf8_lossy(&forced.stderr).contains("no ACTIVE CA left"),
        "{}",
        text(&forced)
    );
    assert_eq!(
        iot.describe_ca_certificate()
            .certificate_id(&new)
            .send()
            .await?
            .certificate_description()
            .and_then(|d| d.status())
            .map(|s| s.as_str().to_string())
            .as_deref(),
        Some("INACTIVE")
    );
    Ok(())
}
