//! `onboard demo` end to end: the SAM template deployed into an emulator the
//! command starts itself, good and bad devices over MQTT, the summary; then
//! `--keep` with the other commands pointed at the kept emulator, and a
//! second round on the same stack through `--endpoint-url`.
//!
//! Needs the functions' Lambda zips (`cargo lambda build --release
//! --output-format zip --lambda-dir target/lambda/x86_64`), as
//! `scripts/test.sh` builds them.

use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn onboard() -> Result<Command, Box<dyn std::error::Error + Send + Sync>> {
    let mut cmd = Command::cargo_bin("onboard")?;
    cmd.env_remove("ONBOARD_TABLE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .timeout(std::time::Duration::from_secs(600));
    Ok(cmd)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn json(output: &Output) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    assert!(
        output.status.success(),
        "exit {:?}: {}\n{}",
        output.status,
        stderr(output),
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The devices of one kind in the demo's JSON summary.
fn kind<'a>(summary: &'a Value, key: &str) -> Vec<&'a Value> {
    summary["kinds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kind"] == key)
        .flat_map(|k| k["devices"].as_array().into_iter().flatten())
        .collect()
}

/// Checks a summary: every good device active, every bad one kept out where
/// it should be.
fn assert_outcomes(summary: &Value, good: u64) {
    assert_eq!(summary["asExpected"], true, "{summary:#}");
    assert_eq!(summary["provisioned"], good, "{summary:#}");
    assert_eq!(summary["keptOut"], 5, "{summary:#}");
    assert!(summary["activeP50"].as_f64().is_some() && summary["activeP95"].as_f64().is_some());
    let good_devices = kind(summary, "good");
    assert_eq!(good_devices.len() as u64, good);
    assert!(good_devices.iter().all(|d| d["outcome"] == "active"), "{summary:#}");
    // The registrar's checks, with the inventory's reason codes.
    for (key, reason) in [
        ("invalid_name", "THING_NAME_INVALID"),
        ("expires_soon", "INSUFFICIENT_REMAINING_VALIDITY"),
    ] {
        let devices = kind(summary, key);
        assert_eq!(devices.len(), 1, "{key}");
        assert_eq!(devices[0]["outcome"], "rejected", "{key}: {summary:#}");
        assert_eq!(devices[0]["reason"], reason, "{key}");
        assert_eq!(devices[0]["certificateStatus"], "REVOKED", "{key}");
    }
    // Refused by the broker before registration: never reach the registrar.
    for key in ["forged_ca", "expired", "rsa1024"] {
        let devices = kind(summary, key);
        assert_eq!(devices.len(), 1, "{key}");
        assert_eq!(devices[0]["outcome"], "refused", "{key}: {summary:#}");
    }
}

/// Stops a kept emulator's process group when the test ends, even on failure.
struct KeptGuard(Option<u64>);

impl Drop for KeptGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            for signal in ["-TERM", "-KILL"] {
                let _ = std::process::Command::new("kill")
                    .args([signal, "--", &format!("-{pid}")])
                    .stderr(std::process::Stdio::null())
                    .status();
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
    }
}

#[test]
fn the_demo_onboards_good_devices_and_keeps_bad_ones_out() -> TestResult {
    let output = onboard()?.args(["demo", "--devices", "4", "--json"]).output()?;
    let summary = json(&output)?;
    assert_outcomes(&summary, 4);
    assert!(summary.get("emulator").is_none(), "not kept without --keep");
    Ok(())
}

#[test]
fn a_kept_demo_serves_the_other_commands_and_a_second_round() -> TestResult {
    let workdir = tempfile::tempdir()?;
    let output = onboard()?
        .args(["demo", "--devices", "2", "--keep", "--json", "--workdir"])
        .arg(workdir.path())
        .output()?;
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let _guard = KeptGuard(summary["emulator"]["pid"].as_u64());
    let summary = json(&output)?;
    assert_outcomes(&summary, 2);
    let endpoint = summary["emulator"]["endpoint"]
        .as_str()
        .ok_or("no endpoint")?
        .to_string();
    let mqtt_port = summary["emulator"]["mqttPort"].as_u64().ok_or("no MQTT port")?;
    let table = summary["inventoryTable"].as_str().ok_or("no table")?.to_string();
    assert!(
        std::path::Path::new(summary["workdir"].as_str().ok_or("no workdir")?)
            .join("devices")
            .is_dir()
    );

    // The other commands, pointed at it as the demo says.
    let pointed = || -> Result<Command, Box<dyn std::error::Error + Send + Sync>> {
        let mut cmd = onboard()?;
        cmd.env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("ONBOARD_TABLE", &table);
        Ok(cmd)
    };
    let status = json(&pointed()?.args(["fleet", "status", "--json"]).output()?)?;
    assert_eq!(status["byStatus"]["PROVISIONED"], 2, "{status:#}");
    assert_eq!(status["byStatus"]["REJECTED"], 2, "{status:#}");

    // A second round on the same stack: it is reused, and new devices join.
    let second = json(
        &pointed()?
            .args([
                "demo",
                "--devices",
                "3",
                "--json",
                "--mqtt-port",
                &mqtt_port.to_string(),
            ])
            .output()?,
    )?;
    assert_outcomes(&second, 3);
    let status = json(&pointed()?.args(["fleet", "status", "--json"]).output()?)?;
    assert_eq!(status["byStatus"]["PROVISIONED"], 5, "{status:#}");
    Ok(())
}

#[test]
fn the_demo_says_what_is_missing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let output = onboard()?.args(["demo", "--lambda-dir"]).arg(dir.path()).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cargo lambda build"), "{}", stderr(&output));

    let output = onboard()?
        .args(["demo", "--endpoint-url", "https://iot.example.com"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("127.0.0.1"), "{}", stderr(&output));

    // --mqtt-port only means something with --endpoint-url.
    let output = onboard()?.args(["demo", "--mqtt-port", "8883"]).output()?;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    Ok(())
}
