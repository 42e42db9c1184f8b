//! `onboard` end to end against the emulator (AUTH=true), bad input included.

use std::os::unix::fs::PermissionsExt;

use assert_cmd::Command;
use onboarding_test_support::world::{TABLE, World};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn onboard(world: Option<&World>) -> Result<Command, Box<dyn std::error::Error + Send + Sync>> {
    let mut cmd = Command::cargo_bin("onboard")?;
    cmd.env_remove("ONBOARD_TABLE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    if let Some(world) = world {
        cmd.args([
            "--endpoint-url",
            &world.emulator.endpoint,
            "--region",
            "us-east-1",
            "--table",
            TABLE,
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    }
    Ok(cmd)
}

/// The registrar as the Lambda builds it, pointed at the world (it plays the
/// deployed event pipeline in these tests).
fn registrar(world: &World) -> Result<jitr_registrar::Handler, Box<dyn std::error::Error + Send + Sync>> {
    let env: std::collections::HashMap<String, String> = world.registrar_env().into_iter().collect();
    use jitr_registrar::FromEnv;
    let settings = jitr_registrar::Settings::from_lookup(|k| env.get(k).cloned())?;
    Ok(jitr_registrar::build(&settings, &world.sdk).without_metrics())
}

/// The world's CA written as `onboard ca create` writes one.
fn world_ca_dir(
    world: &World,
    parent: &std::path::Path,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let ca_dir = parent.join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    std::fs::write(ca_dir.join("ca.pem"), &world.ca.cert_pem)?;
    std::fs::write(ca_dir.join("ca.key.pem"), &world.ca.key_pem)?;
    Ok(ca_dir)
}

/// `onboard device mint --ca CA --out OUT EXTRA...`.
fn mint(
    ca: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> Result<std::process::Output, Box<dyn std::error::Error + Send + Sync>> {
    Ok(onboard(None)?
        .args(["device", "mint", "--ca"])
        .arg(ca)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()?)
}

/// The row of `onboard --json ca list` for one CA.
fn listed_ca(world: &World, ca_id: &str) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
    let output = onboard(Some(world))?.args(["--json", "ca", "list"]).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(list
        .as_array()
        .ok_or("not a list")?
        .iter()
        .find(|r| r["caCertificateId"] == ca_id)
        .ok_or("CA not listed")?
        .clone())
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn ca_create_writes_a_private_key_and_refuses_to_overwrite() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("acme-ca");
    let output = onboard(None)?
        .args(["ca", "create", "--out"])
        .arg(&out)
        .args(["--organization", "Acme"])
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let key_mode = std::fs::metadata(out.join("ca.key.pem"))?.permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    let cert = onboarding_domain::Certificate::from_pem(&std::fs::read_to_string(out.join("ca.pem"))?)?;
    assert!(cert.is_ca);
    assert_eq!(cert.key, onboarding_domain::KeyKind::EcP256);
    assert!(cert.subject_dn.contains("O=Acme"), "{}", cert.subject_dn);

    // Existing files: refused, untouched, exit code 1.
    let before = std::fs::read(out.join("ca.key.pem"))?;
    let output = onboard(None)?.args(["ca", "create", "--out"]).arg(&out).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("already exists"), "{}", stderr(&output));
    assert_eq!(std::fs::read(out.join("ca.key.pem"))?, before);

    // A half-existing pair is refused without writing the other half.
    let partial = dir.path().join("partial");
    std::fs::create_dir_all(&partial)?;
    std::fs::write(partial.join("ca.pem"), "not mine")?;
    let output = onboard(None)?.args(["ca", "create", "--out"]).arg(&partial).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("already exists; refusing to overwrite it"),
        "{}",
        stderr(&output)
    );
    assert!(!partial.join("ca.key.pem").exists(), "no partial files");

    let rsa = dir.path().join("rsa");
    let output = onboard(None)?
        .args(["ca", "create", "--key-type", "rsa3072", "--out"])
        .arg(&rsa)
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let cert = onboarding_domain::Certificate::from_pem(&std::fs::read_to_string(rsa.join("ca.pem"))?)?;
    assert_eq!(cert.key, onboarding_domain::KeyKind::Rsa { bits: 3072 });
    Ok(())
}

#[test]
fn commands_on_the_table_need_a_table() -> TestResult {
    let output = onboard(None)?.args(["profile", "list"]).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--table"), "{}", stderr(&output));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_validated_written_listed_and_shown() -> TestResult {
    let world = World::new().await?;
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("trackers.json");
    std::fs::write(
        &good,
        r#"{"name":"trackers","thingType":"sensor","thingName":"trk-{serialNumber}","attributes":{"org":"O"},"thingGroups":["fleet"],"policyName":"onboarding-device-policy"}"#,
    )?;
    let output = onboard(Some(&world))?.args(["profile", "put"]).arg(&good).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    // The default strategy is csr: Ed25519 devices cannot rotate that way.
    let warning = stderr(&output);
    assert!(
        warning.contains("warning:") && warning.contains("Ed25519") && warning.contains("CreateCertificateFromCsr"),
        "{warning}"
    );
    let keygen = dir.path().join("keygen.json");
    std::fs::write(
        &keygen,
        r#"{"name":"keygen","thingName":"{CN}","policyName":"onboarding-device-policy","rotation":{"strategy":"serverKeygen"}}"#,
    )?;
    let output = onboard(Some(&world))?
        .args(["--json", "profile", "put"])
        .arg(&keygen)
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(answer["warnings"], serde_json::Value::Null, "{answer}");

    let output = onboard(Some(&world))?.args(["--json", "profile", "list"]).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let names: Vec<&str> = list
        .as_array()
        .ok_or("not a list")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"trackers") && names.contains(&"sensors"), "{names:?}");

    let output = onboard(Some(&world))?.args(["profile", "show", "trackers"]).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(shown["thingName"], "trk-{serialNumber}");
    assert_eq!(shown["minRemainingDays"], 30, "defaults are filled in");

    // An unknown field: refused, and the message names it.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name":"bad","policyName":"p","colour":"red"}"#)?;
    let output = onboard(Some(&world))?.args(["profile", "put"]).arg(&bad).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("colour"), "{}", stderr(&output));
    // A naming rule that can only yield invalid thing names.
    std::fs::write(&bad, r#"{"name":"bad","policyName":"p","thingName":"sensor #{CN}"}"#)?;
    let output = onboard(Some(&world))?.args(["profile", "put"]).arg(&bad).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("thingName"), "{}", stderr(&output));
    // A missing file.
    let output = onboard(Some(&world))?
        .args(["profile", "put", "/nonexistent/profile.json"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent/profile.json"),
        "{}",
        stderr(&output)
    );
    // Nothing invalid was written.
    let output = onboard(Some(&world))?.args(["profile", "show", "bad"]).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no profile named bad"), "{}", stderr(&output));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_ca_is_registered_bound_listed_and_unbound() -> TestResult {
    let world = World::new().await?;
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    let output = onboard(None)?.args(["ca", "create", "--out"]).arg(&ca_dir).output()?;
    assert!(output.status.success(), "{}", stderr(&output));

    // A profile that does not exist: refused before anything is registered.
    let output = onboard(Some(&world))?
        .args(["ca", "register", "--profile", "nope", "--ca"])
        .arg(&ca_dir)
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no profile named nope"), "{}", stderr(&output));

    let output = onboard(Some(&world))?
        .args(["--json", "ca", "register", "--profile", "sensors", "--ca"])
        .arg(&ca_dir)
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let registered: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(registered["mode"], "jitr");
    let ca_id = registered["caCertificateId"].as_str().ok_or("no id")?.to_string();
    let described = world
        .iot
        .describe_ca_certificate()
        .certificate_id(&ca_id)
        .send()
        .await?;
    let description = described.certificate_description.ok_or("no description")?;
    assert_eq!(
        description.status.map(|s| s.as_str().to_string()).as_deref(),
        Some("ACTIVE")
    );
    assert_eq!(
        description
            .auto_registration_status
            .map(|s| s.as_str().to_string())
            .as_deref(),
        Some("ENABLE")
    );

    let row = listed_ca(&world, &ca_id)?;
    assert_eq!(row["profile"], "sensors");
    assert_eq!(row["autoRegistration"], "ENABLE");

    // The registered CA's devices are onboarded by the registrar: bind checks.
    let output = onboard(Some(&world))?
        .args(["ca", "bind", &ca_id, "--profile", "sensors"])
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let output = onboard(Some(&world))?
        .args(["ca", "bind", &"a".repeat(64), "--profile", "sensors"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no CA"), "{}", stderr(&output));
    let output = onboard(Some(&world))?
        .args(["ca", "bind", "not-an-id", "--profile", "sensors"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));

    let output = onboard(Some(&world))?.args(["ca", "unbind", &ca_id]).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let output = onboard(Some(&world))?.args(["ca", "unbind", &ca_id]).output()?;
    assert_eq!(output.status.code(), Some(1), "a second unbind says it was not bound");
    assert!(
        stderr(&output).contains(&format!("CA {ca_id} was not bound to any profile")),
        "{}",
        stderr(&output)
    );

    // A missing CA directory.
    let output = onboard(Some(&world))?
        .args(["ca", "register", "--profile", "sensors", "--ca", "/nonexistent/ca"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent/ca/ca.pem"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

async fn ca_count(world: &World) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    Ok(world.iot.list_ca_certificates().send().await?.certificates().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_register_jitp_attaches_the_profile_template_and_refuses_bad_input() -> TestResult {
    let world = World::new().await?;
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("jitp-ca");
    let output = onboard(None)?.args(["ca", "create", "--out"]).arg(&ca_dir).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let devices = dir.path().join("devices");
    // A device with every field the `sensors` profile maps, and one with a CN only.
    let output = mint(
        &ca_dir,
        &devices,
        &[
            "--count",
            "1",
            "--name",
            "jitp-{n:02}",
            "--organization",
            "Acme",
            "--organizational-unit",
            "TH-200",
            "--serial-number",
            "SN-{n:06}",
        ],
    )?;
    assert!(output.status.success(), "{}", stderr(&output));
    let output = mint(&ca_dir, &devices, &["--count", "1", "--name", "bare-{n:02}"])?;
    assert!(output.status.success(), "{}", stderr(&output));

    // The role AWS IoT assumes to provision devices.
    let iam = aws_sdk_iam::Client::new(&world.sdk);
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    });
    let role = iam
        .create_role()
        .role_name("onboarding-jitp")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?;
    let role_arn = role.role.ok_or("CreateRole returned no role")?.arn;
    iam.attach_role_policy()
        .role_name("onboarding-jitp")
        .policy_arn("arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration")
        .send()
        .await?;
    let cas_before = ca_count(&world).await?;

    // JITP without a role, a role without JITP: refused before anything is registered.
    let output = onboard(Some(&world))?
        .args(["ca", "register", "--mode", "jitp", "--profile", "sensors", "--ca"])
        .arg(&ca_dir)
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--mode jitp needs --role-arn"),
        "{}",
        stderr(&output)
    );
    let output = onboard(Some(&world))?
        .args([
            "ca",
            "register",
            "--role-arn",
            &role_arn,
            "--profile",
            "sensors",
            "--ca",
        ])
        .arg(&ca_dir)
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--mode jitp only"), "{}", stderr(&output));

    // A sample device lacking a field the template declares (O, mapped to
    // `manufacturer`): refused, the field named, no CA registered.
    let output = onboard(Some(&world))?
        .args(["ca", "register", "--mode", "jitp", "--role-arn", &role_arn])
        .args(["--profile", "sensors", "--ca"])
        .arg(&ca_dir)
        .arg("--check-device")
        .arg(devices.join("bare-01").join("cert.pem"))
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("lacks subject field O (AWS::IoT::Certificate::Organization)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(ca_count(&world).await?, cas_before, "nothing registered");

    let output = onboard(Some(&world))?
        .args(["--json", "ca", "register", "--mode", "jitp", "--role-arn", &role_arn])
        .args(["--profile", "sensors", "--ca"])
        .arg(&ca_dir)
        .arg("--check-device")
        .arg(devices.join("jitp-01").join("cert.pem"))
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("warning: JITP: no identity-collision check"),
        "{}",
        stderr(&output)
    );
    let registered: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(registered["mode"], "jitp");
    let ca_id = registered["caCertificateId"].as_str().ok_or("no id")?.to_string();
    assert_eq!(ca_count(&world).await?, cas_before + 1);

    let described = world
        .iot
        .describe_ca_certificate()
        .certificate_id(&ca_id)
        .send()
        .await?;
    let auto = described
        .certificate_description
        .and_then(|d| d.auto_registration_status)
        .map(|s| s.as_str().to_string());
    assert_eq!(auto.as_deref(), Some("ENABLE"));
    let config = described.registration_config.ok_or("no registrationConfig")?;
    assert_eq!(config.role_arn(), Some(role_arn.as_str()));
    let template: serde_json::Value = serde_json::from_str(config.template_body().ok_or("no templateBody")?)?;
    let thing = &template["Resources"]["thing"];
    assert_eq!(thing["Type"], "AWS::IoT::Thing");
    assert_eq!(
        thing["Properties"]["ThingName"],
        serde_json::json!({"Ref": "AWS::IoT::Certificate::CommonName"})
    );
    assert_eq!(
        thing["Properties"]["AttributePayload"]["manufacturer"],
        serde_json::json!({"Ref": "AWS::IoT::Certificate::Organization"})
    );
    assert_eq!(thing["Properties"]["ThingTypeName"], "sensor");
    assert_eq!(
        thing["Properties"]["ThingGroups"],
        serde_json::json!(["fleet", "sensors-eu"])
    );
    assert_eq!(
        template["Resources"]["certificate"]["Properties"]["CertificateId"],
        serde_json::json!({"Ref": "AWS::IoT::Certificate::Id"})
    );
    assert_eq!(
        template["Resources"]["policy"]["Properties"]["PolicyName"],
        "onboarding-device-policy"
    );
    for parameter in [
        "AWS::IoT::Certificate::Id",
        "AWS::IoT::Certificate::CommonName",
        "AWS::IoT::Certificate::Organization",
        "AWS::IoT::Certificate::OrganizationalUnit",
        "AWS::IoT::Certificate::SerialNumber",
    ] {
        assert_eq!(template["Parameters"][parameter]["Type"], "String", "{parameter}");
    }

    // Still bound to the profile in the inventory.
    let row = listed_ca(&world, &ca_id)?;
    assert_eq!(row["profile"], "sensors");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_devices_carry_their_subject_fields_and_get_onboarded() -> TestResult {
    let world = World::new().await?;
    let dir = tempfile::tempdir()?;
    let ca_dir = world_ca_dir(&world, dir.path())?;
    let out = dir.path().join("devices");
    let output = mint(
        &ca_dir,
        &out,
        &[
            "--count",
            "20",
            "--name",
            "sensor-{n:05}",
            "--organization",
            "Acme",
            "--organizational-unit",
            "TH-200",
            "--serial-number",
            "SN-{n:06}",
        ],
    )?;
    assert!(output.status.success(), "{}", stderr(&output));
    let device_dir = out.join("sensor-00007");
    assert_eq!(
        std::fs::metadata(device_dir.join("key.pem"))?.permissions().mode() & 0o777,
        0o600
    );
    let cert_pem = std::fs::read_to_string(device_dir.join("cert.pem"))?;
    let cert = onboarding_domain::Certificate::from_pem(&cert_pem)?;
    assert!(cert.subject_dn.contains("CN=sensor-00007"), "{}", cert.subject_dn);
    assert_eq!(
        cert.subject.get(onboarding_domain::SubjectField::SerialNumber),
        Some("SN-000007")
    );
    assert_eq!(std::fs::read_dir(&out)?.count(), 20);

    // Existing output, an invalid name pattern, a missing CA: refused, nothing written.
    let output = mint(&ca_dir, &out, &["--count", "3"])?;
    assert!(
        output.status.success(),
        "device-{{n:05}} names are new: {}",
        stderr(&output)
    );
    let output = mint(&ca_dir, &out, &["--count", "3"])?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("already exists"), "{}", stderr(&output));
    let output = mint(&ca_dir, &out, &["--count", "2", "--name", "sensor #{n}"])?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not a valid thing name"),
        "{}",
        stderr(&output)
    );
    let output = mint(&ca_dir, &out, &["--count", "2", "--name", "fixed-name"])?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--name \"fixed-name\""), "{}", stderr(&output));
    let output = onboard(None)?
        .args(["device", "mint", "--ca", "/nonexistent", "--count", "1", "--out"])
        .arg(dir.path().join("x"))
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read CA certificate /nonexistent/ca.pem"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("x").join("device-00001").exists());

    // A minted device's first connection, and the registrar onboards it with
    // the profile's attribute mapping (O → manufacturer, serialNumber → serial).
    let device = onboarding_test_support::DeviceCert {
        cert_pem: cert_pem.clone(),
        key_pem: Some(std::fs::read_to_string(device_dir.join("key.pem"))?),
        der: cert.der().to_vec(),
    };
    let id = world.first_connection(&device, "sensor-00007").await?;
    let handler = registrar(&world)?;
    let answer = handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], "provisioned", "{answer}");
    let thing = world.iot.describe_thing().thing_name("sensor-00007").send().await?;
    let attributes = thing.attributes.unwrap_or_default();
    assert_eq!(attributes.get("manufacturer").map(String::as_str), Some("Acme"));
    assert_eq!(attributes.get("serial").map(String::as_str), Some("SN-000007"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_counts_statuses_reasons_and_expiry() -> TestResult {
    let world = World::new().await?;
    let handler = registrar(&world)?;
    let devices = [
        ("fleet-1", world.ca.device("fleet-1").build()?),
        ("fleet-2", world.ca.device("fleet-2").build()?),
        ("fleet-3", world.ca.device("fleet-3").valid_days(-1, 45).build()?),
        ("fleet 4", world.ca.device("fleet 4").build()?),
        ("fleet-5", world.ca.device("fleet-5").valid_days(-1, 10).build()?),
    ];
    for (name, device) in &devices {
        let id = world.first_connection(device, name).await?;
        handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    }
    let output = onboard(Some(&world))?.args(["--json", "fleet", "status"]).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(status["byStatus"]["PROVISIONED"], 3, "{status}");
    assert_eq!(status["byStatus"]["REJECTED"], 2, "{status}");
    assert_eq!(status["rejectionsByReason"]["THING_NAME_INVALID"], 1, "{status}");
    assert_eq!(
        status["rejectionsByReason"]["INSUFFICIENT_REMAINING_VALIDITY"], 1,
        "{status}"
    );
    assert_eq!(status["expired"], 0);
    assert_eq!(status["expiringWithinDays"]["30"], 0, "{status}");
    assert_eq!(status["expiringWithinDays"]["60"], 1, "{status}");
    assert_eq!(status["expiringWithinDays"]["90"], 1, "{status}");
    let output = onboard(Some(&world))?.args(["fleet", "status"]).output()?;
    assert!(String::from_utf8_lossy(&output.stdout).contains("within 60 d"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_connect_waits_through_onboarding_and_reports_each_device() -> TestResult {
    let world = World::new().await?;
    let dir = tempfile::tempdir()?;
    let ca_dir = world_ca_dir(&world, dir.path())?;
    let out = dir.path().join("devices");
    assert!(
        mint(&ca_dir, &out, &["--count", "3", "--name", "conn-{n:02}"])?
            .status
            .success()
    );
    // One that the profile rejects: 10 days of validity left, 30 required.
    assert!(
        mint(&ca_dir, &out, &["--count", "1", "--name", "short-{n}", "--days", "10"])?
            .status
            .success()
    );
    let server_ca = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca, &world.server_ca_pem)?;

    let mut child = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("onboard"))
        .args([
            "--json",
            "--endpoint-url",
            &world.emulator.endpoint,
            "--region",
            "us-east-1",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .args([
            "device",
            "connect",
            "--host",
            "127.0.0.1",
            "--port",
            &world.emulator.mqtt_port.to_string(),
            "--deadline",
            "60",
            "--dir",
        ])
        .arg(&out)
        .arg("--server-ca")
        .arg(&server_ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    // The pipeline's part: registration events for pending certificates go
    // to the registrar (what rule → SQS → Lambda does when deployed).
    let handler = registrar(&world)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while child.try_wait()?.is_none() && std::time::Instant::now() < deadline {
        let listed = world
            .iot
            .list_certificates_by_ca()
            .ca_certificate_id(&world.ca_id)
            .send()
            .await?;
        for cert in listed.certificates() {
            if cert.status().map(|s| s.as_str()) == Some("PENDING_ACTIVATION")
                && let Some(id) = cert.certificate_id()
            {
                handler.handle(world.direct_event(id, &world.ca_id)?).await?;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let output = child.wait_with_output().await?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let outcome = |name: &str| {
        report["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|r| r["device"] == name))
            .map(|r| r["outcome"].clone())
    };
    for name in ["conn-01", "conn-02", "conn-03"] {
        assert_eq!(outcome(name), Some(serde_json::json!("active")), "{name}: {report}");
    }
    assert_eq!(outcome("short-1"), Some(serde_json::json!("rejected")), "{report}");
    assert!(report["activeP50"].as_f64().is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_inspect_shows_a_thing_its_certificates_and_history() -> TestResult {
    let world = World::new().await?;
    let handler = registrar(&world)?;
    let device = world
        .ca
        .device("inspect-1")
        .with(onboarding_test_support::rcgen::DnType::OrganizationName, "Acme")
        .build()?;
    let id = world.first_connection(&device, "inspect-1").await?;
    handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    // An impostor's rejected certificate also names the thing.
    let impostor = world.ca.device("inspect-1").build()?;
    let impostor_id = world.first_connection(&impostor, "inspect-1").await?;
    handler.handle(world.direct_event(&impostor_id, &world.ca_id)?).await?;

    let output = onboard(Some(&world))?
        .args(["--json", "fleet", "inspect", "inspect-1", "--history"])
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["exists"], true);
    assert_eq!(report["details"]["thingType"], "sensor");
    assert_eq!(report["details"]["attributes"]["manufacturer"], "Acme");
    assert_eq!(report["nameClaimedBy"], id.as_str());
    let certificates = report["certificates"].as_array().ok_or("no certificates")?;
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0]["status"], "ACTIVE");
    assert_eq!(
        certificates[0]["policies"],
        serde_json::json!(["onboarding-device-policy"])
    );
    assert_eq!(certificates[0]["inventory"]["status"], "PROVISIONED");
    let mut groups: Vec<String> = serde_json::from_value(report["groups"].clone())?;
    groups.sort();
    assert_eq!(groups, vec!["fleet".to_string(), "sensors-eu".to_string()]);
    let history = report["history"].as_array().ok_or("no history")?;
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history
            .iter()
            .any(|r| r["reasonCode"] == "IDENTITY_COLLISION" && r["certificateId"] == impostor_id.as_str())
    );

    let output = onboard(Some(&world))?
        .args(["fleet", "inspect", "no-such-thing"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no thing named no-such-thing"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_shown_and_turned_on_only_by_the_operator() -> TestResult {
    let world = World::new().await?;
    let shown = |output: &std::process::Output| -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        assert!(output.status.success(), "{}", stderr(output));
        Ok(serde_json::from_slice(&output.stdout)?)
    };
    let before = shown(&onboard(Some(&world))?.args(["--json", "events"]).output()?)?;
    assert_eq!(before["changed"], false, "showing changes nothing: {before}");
    let enabled = shown(&onboard(Some(&world))?.args(["--json", "events", "--enable"]).output()?)?;
    assert_eq!(enabled["jobExecutionEvents"], true, "{enabled}");
    assert_eq!(
        enabled["changed"],
        before["jobExecutionEvents"] == false,
        "{before} then {enabled}"
    );
    assert!(onboarding_aws::job_execution_events_enabled(&aws_sdk_iot::Client::new(&world.sdk)).await?);
    // A second time: already on, nothing to change.
    let again = shown(&onboard(Some(&world))?.args(["--json", "events", "--enable"]).output()?)?;
    assert_eq!(again["changed"], false, "{again}");
    let output = onboard(Some(&world))?.args(["events"]).output()?;
    assert!(String::from_utf8_lossy(&output.stdout).contains("job-execution events: on"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_add_applies_to_the_next_event_and_refuses_bad_input() -> TestResult {
    let world = World::new().await?;
    // The registrar has already cached its configuration: the entry must
    // apply anyway (the deny-list is looked up by key, not cached).
    let handler = registrar(&world)?;
    let warm = world.ca.device("deny-warm-1").build()?;
    let warm_id = world.first_connection(&warm, "deny-warm-1").await?;
    let answer = handler.handle(world.direct_event(&warm_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], "provisioned", "{answer}");

    let by_serial = world.ca.device("deny-1").serial(&[0x0b, 0xad, 0xf0, 0x0d]).build()?;
    let by_fingerprint = world.ca.device("deny-2").build()?;
    let fingerprint = onboarding_test_support::world::certificate_id(&by_fingerprint).to_uppercase();
    let output = onboard(Some(&world))?
        .args(["deny", "add", "0B:AD:F0:0D", "--ca", &world.ca_id, "--reason", "stolen"])
        .args(["--fingerprint", &fingerprint])
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(stdout.contains("denied: serial 0badf00d"), "{stdout}");

    let serial_id = world.first_connection(&by_serial, "deny-1").await?;
    let answer = handler.handle(world.direct_event(&serial_id, &world.ca_id)?).await?;
    assert_eq!(answer["reasonCode"], "SERIAL_DENIED", "{answer}");
    assert!(
        answer["reason"].as_str().is_some_and(|r| r.contains("stolen")),
        "{answer}"
    );
    let fingerprint_id = world.first_connection(&by_fingerprint, "deny-2").await?;
    let answer = handler
        .handle(world.direct_event(&fingerprint_id, &world.ca_id)?)
        .await?;
    assert_eq!(answer["reasonCode"], "FINGERPRINT_DENIED", "{answer}");
    assert!(!world.thing_exists("deny-1").await? && !world.thing_exists("deny-2").await?);

    // Removed: the serial no longer denies.
    let output = onboard(Some(&world))?
        .args(["deny", "remove", "0badf00d", "--ca", &world.ca_id])
        .output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("removed: serial 0badf00d"));

    // Bad input: refused with a message naming the problem, nothing written.
    for (args, message) in [
        (vec!["deny", "add", "0badf00d"], "--ca"),
        (
            vec!["deny", "add", "xyz", "--ca", world.ca_id.as_str()],
            "not hexadecimal",
        ),
        (vec!["deny", "add", "0a", "--ca", "not-a-ca"], "not 64 hex digits"),
        (vec!["deny", "add", "--fingerprint", "abcd"], "not a SHA-256"),
        (vec!["deny", "add"], "nothing to deny"),
    ] {
        let output = onboard(Some(&world))?.args(&args).output()?;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
    }
    Ok(())
}
