//! `onboard device retire` against the emulator (`AUTH=true`), with a real
//! mTLS MQTT device, in one world:
//!
//! - a device provisioned by the registrar (thing groups, policy,
//!   credentials record in a versioned bucket), with a second certificate
//!   and a rotation in progress (its item and its IoT job). The emulator
//!   (ministack 1.5.33) has no billing-group API (`CreateBillingGroup`
//!   answers "Unsupported IoT path"): leaving a billing group is proved by
//!   the domain's tests over the fake and by the adapter's mocks;
//! - `--dry-run` lists all of it and changes nothing;
//! - a retirement interrupted (the proxy loses DeleteThing's answers) fails
//!   and the next run finishes it;
//! - afterwards nothing of the device is left but its RETIRED records;
//! - its certificate is refused over MQTT, and when IoT registers it again
//!   (JITR), the registrar revokes it instead of provisioning it afresh;
//! - `--keep-thing --revoke` on a second device: its certificate REVOKED
//!   and detached, kept; the thing kept in its groups, its name still
//!   claimed, its record RETIRED, its credentials record deleted; the device
//!   refused;
//! - `--file` with a bad line: the line refused, the rest done.

use std::time::Duration;

use assert_cmd::Command;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use jitr_registrar::{FromEnv, Handler, Settings};
use onboarding_aws::{CLAIM_SK, DynamoInventory, RotationIotAdapter, thing_pk};
use onboarding_device::ConnectResult;
use onboarding_domain::{
    CertificateRecord, FailureReason, Inventory, JobDocument, Outcome, RecordStatus, RejectReason, RetirementInventory,
    Rotation, RotationInventory, RotationIot, RotationPolicy, RotationState,
};
use onboarding_test_support::proxy::{FailureMode, Proxy};
use onboarding_test_support::world::{BUCKET, GROUPS, POLICY, PROFILE, TABLE, World};
use serde_json::Value;

type Error = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), Error>;

const THING: &str = "retiring-sensor-1";
const REASON: &str = "site closed";

fn onboard(endpoint: &str) -> Result<Command, Error> {
    let mut cmd = Command::cargo_bin("onboard")?;
    cmd.env_remove("ONBOARD_TABLE")
        .env_remove("ONBOARD_BUCKET")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .args(["--endpoint-url", endpoint, "--region", "us-east-1", "--table", TABLE])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    Ok(cmd)
}

/// `onboard --json ARGS...`: exit status, parsed standard output, standard error.
fn run_json(endpoint: &str, args: &[&str]) -> Result<(Option<i32>, Value, String), Error> {
    let output = onboard(endpoint)?.arg("--json").args(args).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let value = serde_json::from_str(&stdout).map_err(|e| format!("onboard {args:?}: {e}: {stdout}\n{stderr}"))?;
    Ok((output.status.code(), value, stderr))
}

fn registrar(world: &World) -> Result<Handler, Error> {
    let env: std::collections::HashMap<String, String> = world.registrar_env().into_iter().collect();
    let settings = Settings::from_lookup(|k| env.get(k).cloned())?;
    Ok(jitr_registrar::build(&settings, &world.sdk))
}

fn s<'a>(item: &'a onboarding_test_support::world::Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// Every version and delete marker of `key`.
async fn versions(world: &World, key: &str) -> Result<usize, Error> {
    let listed = world
        .s3
        .list_object_versions()
        .bucket(BUCKET)
        .prefix(key)
        .send()
        .await?;
    Ok(listed.versions().iter().filter(|v| v.key() == Some(key)).count()
        + listed.delete_markers().iter().filter(|m| m.key() == Some(key)).count())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_device_leaves_nothing_but_its_retired_records_and_never_comes_back() -> TestResult {
    let world = World::new().await?;
    world
        .s3
        .put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await?;
    let endpoint = world.emulator.endpoint.clone();
    let inventory = DynamoInventory::new(world.dynamodb.clone(), TABLE);
    let registrar = registrar(&world)?;

    // --- a device, onboarded as in the field --------------------------------
    let device = world.ca.device(THING).build()?;
    let old = world.first_connection(&device, THING).await?;
    let outcome = registrar.handle_direct(world.direct_event(&old, &world.ca_id)?).await?;
    assert_eq!(outcome.label(), "provisioned", "{outcome:?}");
    assert_eq!(world.connect(&device, THING).await?, ConnectResult::Accepted);
    let record = inventory.certificate_record(&old).await?.ok_or("no record")?;
    let credentials = record.credentials_key.clone().ok_or("no credentials key")?;
    // A second version of the credentials record.
    world
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(&credentials)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
        .send()
        .await?;
    assert_eq!(versions(&world, &credentials).await?, 2);

    // A rotation in progress: a second certificate ACTIVE, attached, with
    // the policy, recorded; the rotation ISSUED; its job out.
    let created = world
        .iot
        .create_keys_and_certificate()
        .set_as_active(true)
        .send()
        .await?;
    let (new, new_arn) = (
        created.certificate_id.ok_or("no id")?,
        created.certificate_arn.ok_or("no arn")?,
    );
    world
        .iot
        .attach_thing_principal()
        .thing_name(THING)
        .principal(&new_arn)
        .send()
        .await?;
    world
        .iot
        .attach_policy()
        .policy_name(POLICY)
        .target(&new_arn)
        .send()
        .await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rotation = Rotation::requested(&record, THING, PROFILE, &RotationPolicy::default(), 1, now).issued(
        &new,
        Vec::new(),
        now,
    )?;
    assert!(inventory.put_rotation(&rotation, None).await?);
    let mut new_record = CertificateRecord::bare(&new, &world.ca_id, RecordStatus::Provisioned, now);
    new_record.thing_name = Some(THING.into());
    new_record.profile = Some(PROFILE.into());
    new_record.not_after = record.not_after;
    inventory.record_rotated_in(&new_record).await?;
    let jobs = RotationIotAdapter::new(world.iot.clone(), aws_sdk_iotdataplane::Client::new(&world.sdk), None);
    jobs.create_job(&rotation.job_id, THING, &JobDocument::csr(&rotation), 60)
        .await?;

    // --- the plan: everything listed, nothing changed --------------------------
    let (code, plan, stderr) = run_json(&endpoint, &["device", "retire", THING, "--dry-run"])?;
    assert_eq!(code, Some(0), "{stderr}");
    let plan = &plan["plans"][0];
    let mut ids: Vec<&str> = plan["certificates"]
        .as_array()
        .ok_or("certificates")?
        .iter()
        .filter_map(|c| c["certificateId"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![old.as_str(), new.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{plan:#}");
    assert_eq!(plan["thingGroups"], serde_json::json!(GROUPS), "{plan:#}");
    assert_eq!(plan["billingGroup"], Value::Null);
    assert_eq!(plan["rotations"][0]["state"], "ISSUED");
    assert_eq!(plan["rotations"][0]["stopped"], true);
    assert!(
        plan["objects"]
            .as_array()
            .is_some_and(|o| o.iter().any(|k| k == credentials.as_str())),
        "{plan:#}"
    );
    // The same plan as text, for people.
    let text = onboard(&endpoint)?
        .args(["device", "retire", THING, "--dry-run"])
        .output()?;
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{shown}");
    for expected in [
        old.as_str(),
        new.as_str(),
        GROUPS[0],
        rotation.job_id.as_str(),
        credentials.as_str(),
        "dry run: nothing was changed",
    ] {
        assert!(shown.contains(expected), "{expected} missing from:\n{shown}");
    }
    assert_eq!(world.certificate_status(&old).await?.as_deref(), Some("ACTIVE"));
    assert_eq!(world.certificate_status(&new).await?.as_deref(), Some("ACTIVE"));
    assert!(world.thing_exists(THING).await?);
    let still = world.inventory_record(&old).await?.ok_or("record")?;
    assert_eq!(s(&still, "status"), Some("PROVISIONED"), "the dry run changed nothing");
    assert_eq!(versions(&world, &credentials).await?, 2);
    assert!(inventory.retirement(THING).await?.is_none());
    assert_eq!(world.connect(&device, THING).await?, ConnectResult::Accepted);

    // --- interrupted: DeleteThing's answers lost --------------------------------
    let proxy = Proxy::start(world.emulator.gateway_port, Duration::ZERO).await?;
    proxy.fail_with("DELETE /things/", 10, FailureMode::LoseAnswer);
    let retire = ["device", "retire", THING, "--reason", REASON, "--bucket", BUCKET];
    let (code, out, stderr) = run_json(&proxy.endpoint(), &retire)?;
    assert_eq!(code, Some(3), "an AWS failure: {out:#} {stderr}");
    assert_eq!(out["counts"]["failed"], 1, "{out:#}");
    assert!(stderr.contains("run the command again"), "{stderr}");
    assert!(
        inventory.retirement(THING).await?.is_some(),
        "the retirement is still claimed"
    );
    drop(proxy);

    // --- run again: finished ----------------------------------------------------
    let (code, out, stderr) = run_json(&endpoint, &retire)?;
    assert_eq!(code, Some(0), "{out:#} {stderr}");
    assert_eq!(out["counts"]["resumed"], 1, "{out:#}");

    // --- nothing left but the RETIRED records -------------------------------------
    assert_eq!(world.certificate_status(&old).await?, None, "first certificate deleted");
    assert_eq!(
        world.certificate_status(&new).await?,
        None,
        "second certificate deleted"
    );
    assert!(!world.thing_exists(THING).await?, "thing deleted");
    for group in GROUPS {
        let members = world
            .iot
            .list_things_in_thing_group()
            .thing_group_name(group)
            .send()
            .await?;
        assert!(
            !members.things().iter().any(|t| t == THING),
            "{group} still lists the thing"
        );
    }
    let job = world.iot.describe_job().job_id(&rotation.job_id).send().await?;
    assert_eq!(
        job.job
            .and_then(|j| j.status)
            .map(|s| s.as_str().to_string())
            .as_deref(),
        Some("CANCELED")
    );
    assert_eq!(versions(&world, &credentials).await?, 0, "every version deleted");
    let claim = world
        .dynamodb
        .get_item()
        .table_name(TABLE)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(thing_pk(THING)))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(CLAIM_SK.into()))
        .send()
        .await?;
    assert!(claim.item.is_none(), "name claim released");
    for id in [&old, &new] {
        let item = world.inventory_record(id).await?.ok_or("record gone")?;
        assert_eq!(s(&item, "status"), Some("RETIRED"));
        assert_eq!(s(&item, "retiredReason"), Some(REASON));
        assert!(s(&item, "retiredAt").is_some(), "retired with its time");
        assert!(!item.contains_key("expiryShard"), "out of the expiry index");
    }
    let r = inventory.rotation(&old).await?.ok_or("rotation item")?;
    assert_eq!(
        (r.state, r.reason, r.due_at),
        (RotationState::Failed, Some(FailureReason::Retired), None)
    );
    assert!(
        inventory.retirement(THING).await?.is_none(),
        "the retirement is finished"
    );

    // --- the certificate never comes back ------------------------------------------
    let result = world.connect(&device, THING).await?;
    assert_ne!(result, ConnectResult::Accepted, "a retired certificate is refused");
    assert_eq!(
        world.certificate_status(&old).await?.as_deref(),
        Some("PENDING_ACTIVATION"),
        "IoT registered it again (JITR)"
    );
    match registrar.handle_direct(world.direct_event(&old, &world.ca_id)?).await? {
        Outcome::Rejected { rejection, status, .. } => {
            assert_eq!(rejection.reason, RejectReason::CertificateRetired, "{rejection:?}");
            assert_eq!(status.as_str(), "REVOKED");
        }
        other => panic!("the registrar let a retired certificate back in: {other:?}"),
    }
    assert_eq!(world.certificate_status(&old).await?.as_deref(), Some("REVOKED"));
    assert!(!world.thing_exists(THING).await?, "no thing made for it");
    let item = world.inventory_record(&old).await?.ok_or("record")?;
    assert_eq!(s(&item, "status"), Some("RETIRED"), "the record stays RETIRED");
    assert_ne!(world.connect(&device, THING).await?, ConnectResult::Accepted);

    // --- --keep-thing --revoke: the credentials cut, the thing kept -------------------
    let kept = "retiring-sensor-2";
    let device2 = world.ca.device(kept).build()?;
    let id2 = world.first_connection(&device2, kept).await?;
    let outcome = registrar.handle_direct(world.direct_event(&id2, &world.ca_id)?).await?;
    assert_eq!(outcome.label(), "provisioned", "{outcome:?}");
    assert_eq!(world.connect(&device2, kept).await?, ConnectResult::Accepted);
    let key2 = inventory
        .certificate_record(&id2)
        .await?
        .and_then(|r| r.credentials_key)
        .ok_or("no credentials key")?;
    let arn2 = world
        .iot
        .describe_certificate()
        .certificate_id(&id2)
        .send()
        .await?
        .certificate_description
        .and_then(|d| d.certificate_arn)
        .ok_or("no ARN")?;
    let before = world.iot.list_attached_policies().target(&arn2).send().await?;
    assert_eq!(before.policies().len(), 1, "the policy, before");
    let (code, out, stderr) = run_json(
        &endpoint,
        &[
            "device",
            "retire",
            kept,
            "--keep-thing",
            "--revoke",
            "--reason",
            REASON,
            "--bucket",
            BUCKET,
        ],
    )?;
    assert_eq!(code, Some(0), "{out:#} {stderr}");
    assert_eq!(out["counts"]["retired"], 1, "{out:#}");
    assert_eq!(
        world.certificate_status(&id2).await?.as_deref(),
        Some("REVOKED"),
        "kept, revoked"
    );
    let principals = world.iot.list_thing_principals().thing_name(kept).send().await?;
    assert!(principals.principals().is_empty(), "detached from the kept thing");
    let policies = world.iot.list_attached_policies().target(&arn2).send().await?;
    assert!(policies.policies().is_empty(), "its policy detached");
    assert!(world.thing_exists(kept).await?, "the thing kept");
    for group in GROUPS {
        let members = world
            .iot
            .list_things_in_thing_group()
            .thing_group_name(group)
            .send()
            .await?;
        assert!(members.things().iter().any(|t| t == kept), "{group} keeps the thing");
    }
    let claim = world
        .dynamodb
        .get_item()
        .table_name(TABLE)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(thing_pk(kept)))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(CLAIM_SK.into()))
        .send()
        .await?;
    let holder = claim.item.as_ref().and_then(|i| s(i, "certificateId"));
    assert_eq!(holder, Some(id2.as_str()), "the name stays claimed");
    let item = world.inventory_record(&id2).await?.ok_or("record")?;
    assert_eq!(s(&item, "status"), Some("RETIRED"));
    assert_eq!(versions(&world, &key2).await?, 0, "the credentials record deleted");
    assert_ne!(world.connect(&device2, kept).await?, ConnectResult::Accepted);
    assert_eq!(
        world.certificate_status(&id2).await?.as_deref(),
        Some("REVOKED"),
        "a revoked certificate is not registered again"
    );

    // --- a file of names: a bad line refused, the others done ------------------------
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("things.txt");
    std::fs::write(&file, format!("# retired devices\n{THING}\nnot a name!\n\nghost-42\n"))?;
    let path = file.to_string_lossy().to_string();
    let (code, out, stderr) = run_json(&endpoint, &["device", "retire", "--file", &path, "--bucket", BUCKET])?;
    assert_eq!(code, Some(1), "a refused line: {out:#} {stderr}");
    assert_eq!(out["counts"]["nothing_to_retire"], 2, "{out:#}");
    assert_eq!(out["counts"]["invalid"], 1, "{out:#}");
    assert!(stderr.contains("things.txt:3"), "{stderr}");
    // The summary as text, for people.
    let text = onboard(&endpoint)?
        .args(["device", "retire", "ghost-42", "--bucket", BUCKET])
        .output()?;
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{shown}");
    assert!(shown.contains("ghost-42: nothing to retire"), "{shown}");
    assert!(shown.contains("summary: 1 in"), "{shown}");
    Ok(())
}

/// Bad input, refused before any AWS call: a clear message, exit 1.
#[test]
fn bad_input_is_refused_with_a_clear_message() -> TestResult {
    let refused = |args: &[&str], expected: &str| -> TestResult {
        let output = Command::cargo_bin("onboard")?
            .env_remove("ONBOARD_TABLE")
            .env_remove("ONBOARD_BUCKET")
            .env_remove("AWS_ENDPOINT_URL")
            .args(args)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        Ok(())
    };
    refused(&["device", "retire"], "no thing to retire")?;
    refused(&["device", "retire", "dev-1", "--reason", " "], "--reason")?;
    refused(&["device", "retire", "dev-1", "--reason", "a\nb"], "--reason")?;
    refused(
        &["device", "retire", "--file", "/nonexistent/things.txt"],
        "cannot read",
    )?;
    refused(&["device", "retire", "dev-1"], "no inventory table")?;
    refused(&["--table", "t", "device", "retire", "dev-1"], "no credentials bucket")?;
    refused(
        &[
            "--table",
            "t",
            "device",
            "retire",
            "dev-1",
            "--bucket",
            "b",
            "--iot-quotas",
            "DeleteThing=fast",
        ],
        "--iot-quotas",
    )?;
    Ok(())
}

/// A measurement, run by hand (`--ignored --nocapture`): `N` devices (one
/// certificate each, in a thing group, with a credentials record) retired
/// with `--file` through a proxy that enforces AWS's default quotas (the
/// retirement's actions at the values `ApiQuotas` gives them); prints the
/// rate, and each action's calls, throttles and peak calls per second.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run by hand"]
async fn measure_a_paced_bulk_retirement() -> TestResult {
    use onboarding_test_support::quota::Quotas;
    const N: usize = 60;
    let world = World::new().await?;
    let inventory = DynamoInventory::new(world.dynamodb.clone(), TABLE);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut names = String::new();
    for i in 0..N {
        let thing = format!("bulk-{i:04}");
        world.iot.create_thing().thing_name(&thing).send().await?;
        world
            .iot
            .add_thing_to_thing_group()
            .thing_group_name(GROUPS[0])
            .thing_name(&thing)
            .send()
            .await?;
        let created = world
            .iot
            .create_keys_and_certificate()
            .set_as_active(true)
            .send()
            .await?;
        let (id, arn) = (
            created.certificate_id.ok_or("no id")?,
            created.certificate_arn.ok_or("no arn")?,
        );
        world
            .iot
            .attach_thing_principal()
            .thing_name(&thing)
            .principal(&arn)
            .send()
            .await?;
        world
            .iot
            .attach_policy()
            .policy_name(POLICY)
            .target(&arn)
            .send()
            .await?;
        let key = format!("credentials/{thing}/{id}.json");
        world
            .s3
            .put_object()
            .bucket(BUCKET)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
            .send()
            .await?;
        let mut record = CertificateRecord::bare(&id, &world.ca_id, RecordStatus::Provisioned, now);
        record.thing_name = Some(thing.clone());
        record.credentials_key = Some(key);
        record.not_after = Some(now + 365 * 86_400);
        inventory.record_provisioned(&record).await?;
        names.push_str(&thing);
        names.push('\n');
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("things.txt");
    std::fs::write(&file, names)?;

    let mut quotas = Quotas::aws_defaults();
    for (action, per_second) in onboarding_aws::IOT_DEFAULT_QUOTAS {
        quotas = quotas.with("iot", action, *per_second);
    }
    let proxy = Proxy::start(world.emulator.gateway_port, Duration::ZERO).await?;
    proxy.set_quotas(Some(quotas));
    let path = file.to_string_lossy().to_string();
    let started = std::time::Instant::now();
    let (code, out, stderr) = run_json(
        &proxy.endpoint(),
        &["device", "retire", "--file", &path, "--bucket", BUCKET],
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(code, Some(0), "{out:#} {stderr}");
    assert_eq!(out["counts"]["retired"], N, "{out:#}");
    let report = proxy.quota_report();
    println!(
        "{N} devices retired in {elapsed:.1} s: {:.2} devices/s; {} calls, {} throttled\n{report}",
        N as f64 / elapsed,
        report.total_calls(),
        report.total_throttled()
    );
    Ok(())
}
