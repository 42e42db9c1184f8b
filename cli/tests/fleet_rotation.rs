//! `onboard fleet status` and `onboard fleet inspect` on rotations, against
//! the emulator: certificate records and rotation items in every state are
//! written through the inventory adapter, as the rotation functions write
//! them, and the CLI reads them back.

use assert_cmd::Command;
use onboarding_aws::DynamoInventory;
use onboarding_domain::Inventory;
use onboarding_domain::rfc3339;
use onboarding_domain::{CertificateRecord, RecordStatus};
use onboarding_domain::{FailureReason, Rotation, RotationInventory, RotationPolicy, job_id};
use onboarding_test_support::world::{TABLE, THING_TYPE, World};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

fn onboard(world: &World) -> Result<Command, Error> {
    let mut cmd = Command::cargo_bin("onboard")?;
    cmd.env_remove("ONBOARD_TABLE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .args([
            "--endpoint-url",
            &world.emulator.endpoint,
            "--region",
            "us-east-1",
            "--table",
            TABLE,
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    Ok(cmd)
}

/// `onboard ARGS...`: it must succeed; its standard output.
fn run(world: &World, args: &[&str]) -> Result<String, Error> {
    let output = onboard(world)?.args(args).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        return Err(format!(
            "onboard {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(stdout)
}

/// `onboard --json ARGS...`, parsed.
fn run_json(world: &World, args: &[&str]) -> Result<Value, Error> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    Ok(serde_json::from_str(&run(world, &all)?)?)
}

/// A certificate id that is not in IoT, in shard `digit`.
fn synthetic_id(digit: char, n: u32) -> String {
    format!("{digit}{n:063x}")
}

/// An ACTIVE IoT certificate attached to `thing`.
async fn attached_certificate(world: &World, thing: &str) -> Result<String, Error> {
    let created = world
        .iot
        .create_keys_and_certificate()
        .set_as_active(true)
        .send()
        .await?;
    let arn = created.certificate_arn.ok_or("no certificate ARN")?;
    world
        .iot
        .attach_thing_principal()
        .thing_name(thing)
        .principal(&arn)
        .send()
        .await?;
    Ok(created.certificate_id.ok_or("no certificate id")?)
}

/// The provisioned record of a certificate of `thing`, written as the registrar writes it.
async fn provisioned(
    inventory: &DynamoInventory,
    id: &str,
    thing: &str,
    not_after: i64,
    now: i64,
) -> Result<CertificateRecord, Error> {
    let mut record = CertificateRecord::bare(id, "ca", RecordStatus::Provisioned, now);
    record.thing_name = Some(thing.to_string());
    record.profile = Some("sensors".into());
    record.not_before = Some(not_after - 365 * DAY);
    record.not_after = Some(not_after);
    inventory.record_provisioned(&record).await?;
    Ok(record)
}

async fn put(inventory: &DynamoInventory, rotation: &Rotation) -> TestResult {
    if !inventory.put_rotation(rotation, None).await? {
        return Err(format!("the rotation of {} already exists", rotation.old_certificate_id).into());
    }
    Ok(())
}

/// What [`seed`] wrote.
struct Seeded {
    now: i64,
    /// Thing `rot-1`: `a` (rotating, ISSUED to `b`), `b` (its new
    /// certificate), `c` (an earlier one, retired and deleted a year ago).
    a: String,
    b: String,
    c: String,
    /// Thing `rot-2`: `d`, whose rotation FAILED (job timed out), retry due.
    d: String,
    /// No thing left in IoT: `e`, whose rotation FAILED on its last attempt.
    e: String,
}

/// Rotations in every state:
///
/// | certificate | state | due |
/// |---|---|---|
/// | a | ISSUED | in 51 min (job deadline) |
/// | c | RETIRED, old certificate deleted | never |
/// | d | FAILED JOB_TIMED_OUT, attempt 1 | an hour ago (retry) |
/// | e | FAILED CSR_REFUSED, attempt 3 of 3 | never (given up) |
/// | f | CONFIRMED | 10 s ago |
/// | g | REQUESTED, job not out yet | 30 s ago |
/// | h | DELIVERED | in 59 min |
///
/// and a provisioned record for each certificate (`c`'s is ROTATED).
async fn seed(world: &World) -> Result<Seeded, Error> {
    let inventory = DynamoInventory::new(world.dynamodb.clone(), TABLE);
    let policy = RotationPolicy::default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for thing in ["rot-1", "rot-2"] {
        world
            .iot
            .create_thing()
            .thing_name(thing)
            .thing_type_name(THING_TYPE)
            .send()
            .await?;
    }
    let a = attached_certificate(world, "rot-1").await?;
    let b = attached_certificate(world, "rot-1").await?;
    let c = synthetic_id('c', 1);
    let d = attached_certificate(world, "rot-2").await?;
    let e = synthetic_id('e', 2);

    // c → a, a year ago: retired, then deleted after the grace period.
    let year_ago = now - 365 * DAY;
    let record = provisioned(&inventory, &c, "rot-1", now - 340 * DAY, year_ago - 400 * DAY).await?;
    let r = Rotation::requested(&record, "rot-1", "sensors", &policy, 1, year_ago)
        .issued(&a, vec![], year_ago + 60)?
        .delivered(year_ago + 70)?
        .confirmed(year_ago + 80)?
        .retired(&policy, year_ago + 90)?
        .old_deleted(year_ago + 7 * DAY + 90);
    put(&inventory, &r).await?;
    inventory.record_rotated_out(&c, &a, year_ago + 90).await?;

    // a → b, now: issued, the device has not fetched its certificate yet.
    let record = provisioned(&inventory, &a, "rot-1", now + 20 * DAY, year_ago + 60).await?;
    let r = Rotation::requested(&record, "rot-1", "sensors", &policy, 1, now - 600)
        .started(&policy, now - 600)
        .issued(&b, vec![], now - 300)?;
    put(&inventory, &r).await?;
    provisioned(&inventory, &b, "rot-1", now + 365 * DAY, now - 300).await?;

    // d: its job timed out 25 hours ago; the retry is due.
    let record = provisioned(&inventory, &d, "rot-2", now + 10 * DAY, year_ago).await?;
    let r = Rotation::requested(&record, "rot-2", "sensors", &policy, 1, now - 27 * HOUR)
        .started(&policy, now - 27 * HOUR)
        .failed(
            FailureReason::JobTimedOut,
            "no answer within 60 minutes",
            &policy,
            now - 25 * HOUR,
        )?;
    put(&inventory, &r).await?;

    // e: its third CSR was refused; no attempt left.
    let record = provisioned(&inventory, &e, "rot-gone", now + 5 * DAY, year_ago).await?;
    let r = Rotation::requested(&record, "rot-gone", "sensors", &policy, 3, now - 2 * HOUR)
        .started(&policy, now - 2 * HOUR)
        .failed(
            FailureReason::CsrRefused,
            "the CSR's key is too weak",
            &policy,
            now - HOUR,
        )?;
    put(&inventory, &r).await?;

    // f, g, h: things the rotator has in hand.
    let f = synthetic_id('f', 3);
    let record = provisioned(&inventory, &f, "rot-f", now + 9 * DAY, year_ago).await?;
    let r = Rotation::requested(&record, "rot-f", "sensors", &policy, 1, now - 120)
        .issued(&synthetic_id('0', 30), vec![], now - 100)?
        .confirmed(now - 10)?;
    put(&inventory, &r).await?;
    let g = synthetic_id('1', 4);
    let record = provisioned(&inventory, &g, "rot-g", now + 8 * DAY, year_ago).await?;
    put(
        &inventory,
        &Rotation::requested(&record, "rot-g", "sensors", &policy, 1, now - 30).starting(),
    )
    .await?;
    let h = synthetic_id('2', 5);
    let record = provisioned(&inventory, &h, "rot-h", now + 7 * DAY, year_ago).await?;
    let r = Rotation::requested(&record, "rot-h", "sensors", &policy, 1, now - 60)
        .started(&policy, now - 60)
        .issued(&synthetic_id('0', 50), vec![], now - 50)?
        .delivered(now - 40)?;
    put(&inventory, &r).await?;
    Ok(Seeded { now, a, b, c, d, e })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_counts_rotations_by_state_reason_and_due() -> TestResult {
    let world = World::new().await?;
    seed(&world).await?;

    let status = run_json(&world, &["fleet", "status"])?;
    // Rotation items share the records' partitions: they are not records.
    assert_eq!(
        status["byStatus"],
        json!({"PROVISIONED": 7, "ROTATED": 1}),
        "{status:#}"
    );
    let rotations = &status["rotations"];
    assert_eq!(
        rotations["byState"],
        json!({"REQUESTED": 1, "ISSUED": 1, "DELIVERED": 1, "CONFIRMED": 1, "RETIRED": 1, "FAILED": 2}),
        "{status:#}"
    );
    assert_eq!(
        rotations["failedByReason"],
        json!({"JOB_TIMED_OUT": 1, "CSR_REFUSED": 1}),
        "{status:#}"
    );
    assert_eq!(rotations["givenUp"], 1, "{status:#}");
    assert_eq!(rotations["dueNow"], 3, "d's retry, f's retirement, g's job: {status:#}");
    assert_eq!(rotations["rotatedCertificates"], 1, "{status:#}");
    // The fields that were there before rotations are unchanged.
    assert_eq!(status["rejectionsByReason"], json!({}));
    assert_eq!(status["expired"], 0);
    assert_eq!(status["expiringWithinDays"]["30"], 6, "{status:#}");

    let text = run(&world, &["fleet", "status"])?;
    for expected in [
        "rotations by state",
        "REQUESTED",
        "ISSUED",
        "DELIVERED",
        "CONFIRMED",
        "RETIRED",
        "FAILED",
        "failed rotations by reason",
        "JOB_TIMED_OUT",
        "CSR_REFUSED",
        "due now",
        "given up",
        "ROTATED",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    let due_line = text.lines().find(|l| l.contains("due now")).ok_or("no due line")?;
    assert_eq!(due_line.split_whitespace().last(), Some("3"), "{text}");

    // An empty fleet: no rotation yet.
    let empty = World::new().await?;
    let status = run_json(&empty, &["fleet", "status"])?;
    assert_eq!(status["rotations"]["byState"]["FAILED"], 0, "{status:#}");
    assert_eq!(status["rotations"]["dueNow"], 0, "{status:#}");
    assert!(run(&empty, &["fleet", "status"])?.contains("rotations by state\n  (none yet)"));
    Ok(())
}

/// The entry of `list` whose `certificateId` is `id`.
fn entry<'a>(list: &'a Value, id: &str) -> Result<&'a Value, Error> {
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["certificateId"] == id))
        .ok_or_else(|| format!("{id} not in {list:#}").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_inspect_shows_each_certificates_rotation() -> TestResult {
    let world = World::new().await?;
    let Seeded { now, a, b, c, d, e } = seed(&world).await?;

    let report = run_json(&world, &["fleet", "inspect", "rot-1"])?;
    let certificates = &report["certificates"];
    assert_eq!(certificates.as_array().map(Vec::len), Some(2), "{report:#}");
    let rotation = &entry(certificates, &a)?["rotation"];
    assert_eq!(
        *rotation,
        json!({
            "state": "ISSUED",
            "strategy": "csr",
            "attempt": 1,
            "jobId": job_id(&a, 1),
            "profile": "sensors",
            "newCertificateId": b,
            "reasonCode": null,
            "detail": null,
            "givenUp": false,
            "oldNotAfter": rfc3339(now + 20 * DAY),
            "requestedAt": rfc3339(now - 600),
            "issuedAt": rfc3339(now - 300),
            "deliveredAt": null,
            "confirmedAt": null,
            "retiredAt": null,
            "failedAt": null,
            "oldDeletedAt": null,
            "dueAt": rfc3339(RotationPolicy::default().job_deadline(now - 600)),
        }),
        "{report:#}"
    );
    let new = entry(certificates, &b)?;
    assert_eq!(
        new["rotation"],
        Value::Null,
        "the new certificate has no rotation of its own"
    );
    assert_eq!(new["inventory"]["status"], "PROVISIONED");
    assert_eq!(report["history"], Value::Null, "no history without --history");

    // --history: the retired certificate too, with its rotation.
    let report = run_json(&world, &["fleet", "inspect", "rot-1", "--history"])?;
    let history = &report["history"];
    assert_eq!(history.as_array().map(Vec::len), Some(3), "{report:#}");
    assert_eq!(entry(history, &a)?["rotation"]["state"], "ISSUED");
    assert_eq!(entry(history, &b)?["rotation"], Value::Null);
    let old = entry(history, &c)?;
    assert_eq!(old["status"], "ROTATED", "{old:#}");
    assert_eq!(old["rotatedTo"], a.as_str(), "{old:#}");
    let year_ago = now - 365 * DAY;
    let rotation = &old["rotation"];
    assert_eq!(rotation["state"], "RETIRED", "{old:#}");
    assert_eq!(rotation["newCertificateId"], a.as_str());
    assert_eq!(rotation["deliveredAt"], rfc3339(year_ago + 70));
    assert_eq!(rotation["confirmedAt"], rfc3339(year_ago + 80));
    assert_eq!(rotation["retiredAt"], rfc3339(year_ago + 90));
    assert_eq!(rotation["oldDeletedAt"], rfc3339(year_ago + 7 * DAY + 90));
    assert_eq!(rotation["dueAt"], Value::Null);
    assert_eq!(rotation["givenUp"], false);

    // A failed rotation: its reason and detail, and when it is retried.
    let report = run_json(&world, &["fleet", "inspect", "rot-2"])?;
    let rotation = &entry(&report["certificates"], &d)?["rotation"];
    assert_eq!(rotation["state"], "FAILED", "{report:#}");
    assert_eq!(rotation["reasonCode"], "JOB_TIMED_OUT");
    assert_eq!(rotation["detail"], "no answer within 60 minutes");
    assert_eq!(rotation["failedAt"], rfc3339(now - 25 * HOUR));
    assert_eq!(rotation["dueAt"], rfc3339(now - HOUR), "retried 24 h after the failure");
    assert_eq!(rotation["givenUp"], false);

    // Given up, on a thing IoT no longer has: only --history finds it.
    let report = run_json(&world, &["fleet", "inspect", "rot-gone", "--history"])?;
    assert_eq!(report["exists"], false);
    let rotation = &entry(&report["history"], &e)?["rotation"];
    assert_eq!(rotation["state"], "FAILED", "{report:#}");
    assert_eq!(rotation["reasonCode"], "CSR_REFUSED");
    assert_eq!(rotation["attempt"], 3);
    assert_eq!(rotation["jobId"], job_id(&e, 3));
    assert_eq!(rotation["dueAt"], Value::Null);
    assert_eq!(rotation["givenUp"], true);

    // The human view.
    let text = run(&world, &["fleet", "inspect", "rot-1", "--history"])?;
    for expected in [
        format!("rotation ISSUED attempt 1 (csr) job {}", job_id(&a, 1)),
        format!("new certificate {b}"),
        format!("issued          {}", rfc3339(now - 300)),
        "rotation RETIRED attempt 1 (csr)".to_string(),
        format!("old deleted     {}", rfc3339(year_ago + 7 * DAY + 90)),
        "(nothing left to do)".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} missing from:\n{text}");
    }
    let text = run(&world, &["fleet", "inspect", "rot-gone", "--history"])?;
    assert!(
        text.contains("reason          CSR_REFUSED: the CSR's key is too weak"),
        "{text}"
    );
    assert!(text.contains("given up"), "{text}");
    let text = run(&world, &["fleet", "inspect", "rot-2"])?;
    assert!(
        text.contains(&format!("due             {} (due now", rfc3339(now - HOUR))),
        "{text}"
    );
    Ok(())
}
