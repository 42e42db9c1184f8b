//! `onboard fleet import` against the deployed stack (emulator, AUTH=true),
//! one deployment for three scenarios:
//! 1. one manifest with good certificates (one named, with attributes), an
//!    expired one, two that no bound CA signed (self-signed; a same-named CA
//!    that is not registered), a duplicate thing name, a deny-listed one
//!    (`onboard deny add`) and a row that does not parse: the good ones end
//!    ACTIVE with their thing, groups, policy, inventory record and
//!    credentials record; the others are in the failures CSV with their
//!    reason codes and none is ACTIVE; a second run changes nothing;
//! 2. an import killed mid-run (SIGKILL, the registrations paced to 1 per
//!    second so that it is still running) and run again: every row ends
//!    provisioned once, nothing registered twice;
//! 3. an imported device connects over mutual-TLS MQTT;
//! 4. without a CA (`--without-ca`): IoT records no CA, the certificate is
//!    provisioned all the same, and one the named CA did not sign is refused.
//!
//! Needs the functions' Lambda zips (`scripts/test.sh` builds them).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::Error;
use onboarding_test_support::deployment::{DeployOptions, Deployment};
use onboarding_test_support::mqtt::{ConnectResult, connect_once};
use onboarding_test_support::world::certificate_id;
use onboarding_test_support::{DeviceCert, TestCa, rcgen};
use serde_json::Value;

type TestResult = Result<(), Error>;

const PROFILE: &str = "imported";

struct Import {
    d: Deployment,
    dir: tempfile::TempDir,
    table: String,
}

impl Import {
    fn onboard(&self) -> Result<Command, Error> {
        let mut cmd = common::onboard_at(&self.d.emulator.endpoint, &self.table)?;
        cmd.env("ONBOARD_BUCKET", self.d.output("CredentialsBucketName")?)
            .env("ONBOARD_KMS_KEY", self.d.output("CredentialsKeyArn")?);
        Ok(cmd)
    }

    /// The same command as a plain process, to be killed.
    fn onboard_process(&self) -> Result<std::process::Command, Error> {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("onboard"));
        cmd.env_remove("AWS_PROFILE")
            .env("AWS_ENDPOINT_URL", &self.d.emulator.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("ONBOARD_TABLE", &self.table)
            .env("ONBOARD_BUCKET", self.d.output("CredentialsBucketName")?)
            .env("ONBOARD_KMS_KEY", self.d.output("CredentialsKeyArn")?);
        Ok(cmd)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_cert(&self, name: &str, pem: &str) -> Result<(), Error> {
        std::fs::write(self.path(name), pem)?;
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<Option<String>, Error> {
        self.d.certificate_status(id).await
    }

    /// ACTIVE, attached to `thing` (which has the profile's groups), with the
    /// policy, a PROVISIONED record and a credentials record in S3.
    async fn assert_provisioned(&self, id: &str, thing: &str) -> TestResult {
        assert_eq!(self.status(id).await?.as_deref(), Some("ACTIVE"), "{thing}");
        let principals = self.d.iot.list_thing_principals().thing_name(thing).send().await?;
        assert!(
            principals
                .principals()
                .iter()
                .any(|p| p.ends_with(&format!("cert/{id}"))),
            "{thing} lacks its certificate"
        );
        let groups = self
            .d
            .iot
            .list_thing_groups_for_thing()
            .thing_name(thing)
            .send()
            .await?;
        let group = self.group()?;
        assert!(
            groups
                .thing_groups()
                .iter()
                .any(|g| g.group_name() == Some(group.as_str())),
            "{thing} is not in {group}"
        );
        let described = self.d.iot.describe_certificate().certificate_id(id).send().await?;
        let cert_arn = described
            .certificate_description()
            .and_then(|c| c.certificate_arn())
            .unwrap_or_default()
            .to_string();
        let policies = self.d.iot.list_attached_policies().target(&cert_arn).send().await?;
        let policy = self.d.output("DevicePolicyName")?;
        assert!(
            policies.policies().iter().any(|p| p.policy_name() == Some(policy)),
            "{thing}: no {policy}"
        );
        let record = self.d.inventory_record(id).await?;
        let field = |k: &str| record.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        assert_eq!(field("status"), "PROVISIONED", "{thing}");
        assert_eq!(field("thingName"), thing);
        let objects = self
            .d
            .s3
            .list_objects_v2()
            .bucket(self.d.output("CredentialsBucketName")?)
            .prefix(format!("credentials/{thing}/{id}"))
            .send()
            .await?;
        assert_eq!(objects.contents().len(), 1, "{thing}: credentials record");
        Ok(())
    }

    fn group(&self) -> Result<String, Error> {
        Ok(self
            .d
            .output("ThingGroupNames")?
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string())
    }
}

fn failures(path: &Path) -> Result<BTreeMap<usize, String>, Error> {
    let text = std::fs::read_to_string(path)?;
    let mut rows = BTreeMap::new();
    for line in text.lines().skip(1) {
        let mut fields = line.splitn(4, ',');
        let row: usize = fields.next().unwrap_or_default().parse()?;
        let _certificate = fields.next();
        rows.insert(row, fields.next().unwrap_or_default().to_string());
    }
    Ok(rows)
}

fn self_signed(cn: &str) -> Result<String, Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    Ok(params.self_signed(&key)?.pem())
}

/// Lines of the state file by step, per certificate id.
fn state_steps(path: &Path) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let mut steps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        steps
            .entry(entry["certificateId"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(entry["step"].as_str().unwrap_or_default().to_string());
    }
    Ok(steps)
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_import_end_to_end() -> TestResult {
    let d = Deployment::new(DeployOptions::default()).await?;
    let table = d.output("InventoryTableName")?.to_string();
    let t = Import {
        d,
        dir: tempfile::tempdir()?,
        table,
    };
    // A profile in the table, with the stack's type, group and policy, and
    // the deployment's CA bound to it.
    let profile = serde_json::json!({
        "name": PROFILE,
        "thingType": t.d.output("ThingTypeName")?,
        "thingName": "{CN}",
        "thingGroups": [t.group()?],
        "policyName": t.d.output("DevicePolicyName")?,
    });
    std::fs::write(t.path("profile.json"), profile.to_string())?;
    t.onboard()?
        .args(["profile", "put"])
        .arg(t.path("profile.json"))
        .assert()
        .success();
    t.onboard()?
        .args(["ca", "bind", &t.d.ca_id, "--profile", PROFILE])
        .assert()
        .success();

    // --- 1. good and bad rows in one manifest --------------------------------
    let ca = &t.d.ca;
    let good: Vec<DeviceCert> = (1..=2)
        .map(|i| ca.device(&format!("imp-good-{i}")).build())
        .collect::<Result<_, _>>()?;
    let named = ca.device("whatever-cn").build()?;
    let expired = ca.device("imp-expired").valid_days(-400, -10).build()?;
    let impostor_ca = TestCa::new("Acme Device CA")?;
    let forged = impostor_ca.device("imp-forged").build()?;
    let duplicate = ca.device("imp-dup").build()?;
    let denied = ca.device("imp-denied").build()?;
    for (name, cert) in [
        ("good-1.pem", &good[0]),
        ("good-2.pem", &good[1]),
        ("named.pem", &named),
        ("expired.pem", &expired),
        ("forged.pem", &forged),
        ("dup.pem", &duplicate),
        ("denied.pem", &denied),
    ] {
        t.write_cert(name, &cert.cert_pem)?;
    }
    t.write_cert("self-signed.pem", &self_signed("imp-self")?)?;
    t.onboard()?
        .args([
            "deny",
            "add",
            "--fingerprint",
            &certificate_id(&denied),
            "--reason",
            "test",
        ])
        .assert()
        .success();
    let manifest = t.path("manifest.csv");
    std::fs::write(
        &manifest,
        "certificate,thingName,attributes\n\
         good-1.pem,,\n\
         named.pem,imp-named,site=paris\n\
         expired.pem,,\n\
         self-signed.pem,,\n\
         forged.pem,,\n\
         dup.pem,imp-named,\n\
         denied.pem,,\n\
         good-2.pem,,\n\
         missing.pem,,\n\
         good-1.pem,bad name,\n",
    )?;
    let report = t.path("failures.csv");
    let out = t
        .onboard()?
        .args(["--json", "fleet", "import", "--manifest"])
        .arg(&manifest)
        .arg("--failures")
        .arg(&report)
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["provisioned"], 3, "{summary}");
    assert_eq!(summary["rejected"], 7, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let codes = failures(&report)?;
    let expected: BTreeMap<usize, String> = [
        (4, "EXPIRED"),
        (5, "CA_NOT_BOUND"),
        (6, "SIGNATURE_INVALID"),
        (7, "DUPLICATE_THING_NAME"),
        (8, "FINGERPRINT_DENIED"),
        (10, "CERTIFICATE_UNREADABLE"),
        (11, "MANIFEST_INVALID"),
    ]
    .into_iter()
    .map(|(l, c)| (l, c.to_string()))
    .collect();
    assert_eq!(codes, expected);
    t.assert_provisioned(&certificate_id(&good[0]), "imp-good-1").await?;
    t.assert_provisioned(&certificate_id(&good[1]), "imp-good-2").await?;
    t.assert_provisioned(&certificate_id(&named), "imp-named").await?;
    let thing = t.d.iot.describe_thing().thing_name("imp-named").send().await?;
    assert_eq!(
        thing.attributes().and_then(|a| a.get("site")).map(String::as_str),
        Some("paris")
    );
    // Refused before any registration: none of them is in IoT at all.
    for cert in [&expired, &forged, &duplicate, &denied] {
        assert_eq!(t.status(&certificate_id(cert)).await?, None);
    }
    // A second run: everything finished is skipped, nothing changes.
    let again = t
        .onboard()?
        .args(["--json", "fleet", "import", "--manifest"])
        .arg(&manifest)
        .arg("--failures")
        .arg(&report)
        .output()?;
    let summary: Value = serde_json::from_slice(&again.stdout)?;
    assert_eq!(
        (summary["provisioned"].as_u64(), summary["alreadyDone"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(failures(&report)?, expected);

    // --- 3. an imported device connects over mTLS MQTT -------------------------
    let key = good[0].key_pem.as_deref().ok_or("no key")?;
    let result = connect_once(
        t.d.emulator.mqtt_port,
        &t.d.server_ca_pem,
        &good[0].cert_pem,
        key,
        "imp-good-1",
    )
    .await?;
    assert_eq!(result, ConnectResult::Accepted);
    // A refused one does not (it is not even registered).
    let key = expired.key_pem.as_deref().ok_or("no key")?;
    let refused = connect_once(
        t.d.emulator.mqtt_port,
        &t.d.server_ca_pem,
        &expired.cert_pem,
        key,
        "imp-expired",
    )
    .await?;
    assert_ne!(refused, ConnectResult::Accepted);

    // --- 2. an import killed mid-run, then resumed ---------------------------
    let batch_dir = t.path("batch");
    std::fs::create_dir(&batch_dir)?;
    let batch: Vec<DeviceCert> = (1..=10)
        .map(|i| ca.device(&format!("imp-batch-{i:02}")).build())
        .collect::<Result<_, _>>()?;
    for (i, cert) in batch.iter().enumerate() {
        // The first file holds the device's key too, as exports often do.
        let key = match i {
            0 => cert.key_pem.clone().unwrap_or_default(),
            _ => String::new(),
        };
        std::fs::write(batch_dir.join(format!("{i:02}.pem")), format!("{}{key}", cert.cert_pem))?;
    }
    let state = t.path("batch.state.jsonl");
    let args = |cmd: &mut std::process::Command| {
        cmd.args(["fleet", "import", "--certs"])
            .arg(&batch_dir)
            .args(["--profile", PROFILE, "--concurrency", "2"])
            .arg("--state")
            .arg(&state)
            // One registration a second: still running when killed.
            .args(["--iot-quotas", "RegisterCertificate=1"]);
    };
    let mut first = t.onboard_process()?;
    args(&mut first);
    let mut child = first.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let finished = state_steps(&state)
            .unwrap_or_default()
            .values()
            .filter(|s| s.iter().any(|s| s == "provisioned"))
            .count();
        if finished >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the import made no progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill()?;
    child.wait()?;
    let interrupted = state_steps(&state)?;
    let finished = interrupted
        .values()
        .filter(|s| s.iter().any(|s| s == "provisioned"))
        .count();
    assert!(finished < batch.len(), "the import finished before it was killed");
    let mut resumed = t.onboard_process()?;
    args(&mut resumed);
    let out = resumed.output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let steps = state_steps(&state)?;
    for (i, cert) in batch.iter().enumerate() {
        let id = certificate_id(cert);
        t.assert_provisioned(&id, &format!("imp-batch-{:02}", i + 1)).await?;
        let mine = steps.get(&id).cloned().unwrap_or_default();
        let count = |step: &str| mine.iter().filter(|s| *s == step).count();
        // A row killed between its `registering` line and the call is
        // described first, and registered only if IoT does not hold it.
        assert!((1..=2).contains(&count("registering")), "{id}: {mine:?}");
        assert_eq!(count("provisioned"), 1, "{id}: provisioned once: {mine:?}");
        assert!(count("alreadyDone") <= 1, "{mine:?}");
    }
    // Only the certificate reached AWS, never the key beside it in the file.
    let described =
        t.d.iot
            .describe_certificate()
            .certificate_id(certificate_id(&batch[0]))
            .send()
            .await?;
    let pem = described
        .certificate_description()
        .and_then(|c| c.certificate_pem())
        .unwrap_or_default();
    assert!(
        pem.contains("BEGIN CERTIFICATE") && !pem.contains("PRIVATE KEY"),
        "{pem}"
    );

    // --- 4. without a CA (multi-account, SNI) ---------------------------------
    let sni_dir = t.path("sni");
    std::fs::create_dir(&sni_dir)?;
    let sni = ca.device("imp-sni").build()?;
    let sni_forged = impostor_ca.device("imp-sni-forged").build()?;
    std::fs::write(sni_dir.join("1.pem"), &sni.cert_pem)?;
    std::fs::write(sni_dir.join("2.pem"), &sni_forged.cert_pem)?;
    let out = t
        .onboard()?
        .args(["--json", "fleet", "import", "--certs"])
        .arg(&sni_dir)
        .args(["--profile", PROFILE, "--without-ca", &t.d.ca_id])
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["provisioned"], 1, "{summary}");
    assert_eq!(summary["rejectedByReason"]["SIGNATURE_INVALID"], 1, "{summary}");
    t.assert_provisioned(&certificate_id(&sni), "imp-sni").await?;
    let described =
        t.d.iot
            .describe_certificate()
            .certificate_id(certificate_id(&sni))
            .send()
            .await?;
    assert_eq!(
        described.certificate_description().and_then(|c| c.ca_certificate_id()),
        None,
        "registered without a CA"
    );
    assert_eq!(t.status(&certificate_id(&sni_forged)).await?, None);
    Ok(())
}

/// Bad input is refused before any AWS call (the endpoint is a closed port).
#[test]
fn bad_input_is_refused_before_any_call() -> TestResult {
    let dir = tempfile::tempdir()?;
    let onboard = || -> Result<Command, Error> {
        let mut cmd = common::onboard_at("http://127.0.0.1:9", "table")?;
        cmd.env("ONBOARD_BUCKET", "bucket").env("ONBOARD_KMS_KEY", "key");
        Ok(cmd)
    };
    // Neither source, both sources, a directory without a profile: usage errors.
    onboard()?.args(["fleet", "import"]).assert().code(2);
    onboard()?
        .args([
            "fleet",
            "import",
            "--manifest",
            "m.csv",
            "--certs",
            "d",
            "--profile",
            "p",
        ])
        .assert()
        .code(2);
    onboard()?.args(["fleet", "import", "--certs", "d"]).assert().code(2);
    // A manifest whose header names an unknown column, a missing manifest,
    // an empty directory: refused with the reason.
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, "certificate,colour\na.pem,red\n")?;
    let out = onboard()?
        .args(["fleet", "import", "--manifest"])
        .arg(&manifest)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown column \"colour\""));
    let out = onboard()?
        .args(["fleet", "import", "--manifest"])
        .arg(dir.path().join("none.csv"))
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let out = onboard()?
        .args(["fleet", "import", "--profile", "p", "--certs"])
        .arg(&empty)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no *.pem or *.crt"));
    Ok(())
}
