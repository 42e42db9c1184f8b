//! The rotation adapters against the local AWS emulator: rotation items and
//! their place in the due index, the expiry scan across shards, conditional
//! writes, the rotator's cursors, IoT Jobs, certificates made from a CSR and
//! by AWS IoT, their attach/detach/delete round trip, publishing, and the
//! credentials objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use onboarding_aws::{DynamoInventory, RotationIotAdapter};
use onboarding_aws::{S3RotationObjects, ScanStats};
use onboarding_domain::rfc3339;
use onboarding_domain::{CertificateRecord, RecordStatus};
use onboarding_domain::{CertificateStatus, Inventory};
use onboarding_domain::{
    FailureReason, JobDocument, Rotation, RotationInventory, RotationIot, RotationObjects, RotationPolicy,
    RotationState, Strategy, job_id,
};
use onboarding_test_support::rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use onboarding_test_support::world::{BUCKET, POLICY, TABLE, THING_TYPE, World};

const DAY: i64 = 86_400;
const BASE: i64 = 1_900_000_000;

async fn world() -> World {
    match World::new().await {
        Ok(world) => world,
        Err(e) => panic!("could not build the test world: {e}"),
    }
}

fn inventory(world: &World) -> DynamoInventory {
    DynamoInventory::new(world.dynamodb.clone(), TABLE)
}

fn iot(world: &World, presign_role: Option<&str>) -> RotationIotAdapter {
    RotationIotAdapter::new(
        world.iot.clone(),
        aws_sdk_iotdataplane::Client::new(&world.sdk),
        presign_role.map(str::to_string),
    )
}

/// A certificate id whose first hex digit (its shard) is `i % 16`.
fn cert_id(i: u32) -> String {
    format!("{:x}{:063x}", i % 16, i)
}

fn provisioned(id: &str, not_after: i64) -> CertificateRecord {
    let mut record = CertificateRecord::bare(id, "ca", RecordStatus::Provisioned, BASE);
    record.thing_name = Some(format!("thing-{}", &id[..8]));
    record.profile = Some("sensors".into());
    record.not_after = Some(not_after);
    record.not_before = Some(not_after - 365 * DAY);
    record
}

/// A rotation with every field set.
fn full_rotation(old: &str, due_at: Option<i64>) -> Rotation {
    Rotation {
        old_certificate_id: old.to_string(),
        thing_name: "sensor-0042".into(),
        profile: "sensors".into(),
        strategy: Strategy::ServerKeygen,
        attempt: 2,
        job_id: job_id(old, 2),
        state: RotationState::Delivered,
        new_certificate_id: Some("b".repeat(64)),
        object_keys: vec!["rotation/new.pem".into(), "rotation/new.key".into()],
        reason: Some(FailureReason::JobTimedOut),
        detail: Some("attempt 1 timed out".into()),
        old_not_after: BASE + 20 * DAY,
        requested_at: BASE,
        issued_at: Some(BASE + 10),
        delivered_at: Some(BASE + 20),
        confirmed_at: Some(BASE + 30),
        retired_at: Some(BASE + 40),
        failed_at: Some(BASE + 50),
        old_deleted_at: Some(BASE + 60),
        due_at,
    }
}

async fn raw_item(world: &World, pk: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
    world
        .dynamodb
        .get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

fn attr<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// Every rotation due at `now`, page by page.
async fn all_due(inventory: &DynamoInventory, now: i64, limit: usize) -> Vec<Rotation> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..200 {
        let page = inventory.due_rotations(now, cursor.as_deref(), limit).await.unwrap();
        all.extend(page.items);
        cursor = page.cursor;
        if cursor.is_none() {
            return all;
        }
    }
    panic!("the due scan did not end");
}

/// Every certificate expiring by `until`, page by page, with the summed stats.
async fn all_expiring(inventory: &DynamoInventory, until: i64, limit: usize) -> (Vec<CertificateRecord>, ScanStats) {
    let mut all = Vec::new();
    let mut stats = Vec::new();
    let mut cursor = None;
    for _ in 0..200 {
        let (page, s) = inventory
            .expiring_with_stats(until, cursor.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.items.len() <= limit, "a page never exceeds the limit");
        all.extend(page.items);
        stats.push(s);
        cursor = page.cursor;
        if cursor.is_none() {
            let total = stats.iter().fold(ScanStats::default(), |mut acc, s| {
                acc.queries += s.queries;
                acc.index_items += s.index_items;
                acc.batch_gets += s.batch_gets;
                acc.items_fetched += s.items_fetched;
                acc.capacity_units += s.capacity_units;
                acc
            });
            return (all, total);
        }
    }
    panic!("the expiry scan did not end");
}

// --- rotation items -----------------------------------------------------------

#[tokio::test]
async fn a_rotation_round_trips_and_leaves_the_due_index_when_nothing_is_due() {
    let world = world().await;
    let inventory = inventory(&world);
    let old = cert_id(0xa);
    let due = BASE + 100;
    let rotation = full_rotation(&old, Some(due));

    assert!(inventory.put_rotation(&rotation, None).await.unwrap());

    assert_eq!(inventory.rotation(&old).await.unwrap(), Some(rotation.clone()));
    assert_eq!(
        inventory.rotation_by_job(&rotation.job_id).await.unwrap(),
        Some(rotation.clone())
    );
    assert_eq!(inventory.rotation_by_job("rotate-unknown-1").await.unwrap(), None);
    let item = raw_item(&world, &format!("CERT#{old}"), "ROTATION").await.unwrap();
    assert_eq!(attr(&item, "expiryShard"), Some("DUE#a"));
    assert_eq!(
        attr(&item, "expiryKey"),
        Some(format!("{}#{old}", rfc3339(due)).as_str())
    );
    assert_eq!(attr(&item, "oldNotAfter"), Some(rfc3339(BASE + 20 * DAY).as_str()));
    assert_eq!(attr(&item, "state"), Some("DELIVERED"));
    assert_eq!(attr(&item, "strategy"), Some("serverKeygen"));
    assert_eq!(attr(&item, "reasonCode"), Some("JOB_TIMED_OUT"));
    assert!(attr(&item, "updatedAt").is_some());
    let pointer = raw_item(&world, &format!("JOB#{}", rotation.job_id), "JOB")
        .await
        .unwrap();
    assert_eq!(attr(&pointer, "oldCertificateId"), Some(old.as_str()));

    assert_eq!(all_due(&inventory, due - 1, 10).await, vec![], "not yet due");
    assert_eq!(
        all_due(&inventory, due, 10).await,
        vec![rotation.clone()],
        "due at due_at itself"
    );
    assert_eq!(all_due(&inventory, due + DAY, 1).await, vec![rotation.clone()]);

    let done = rotation.old_deleted(BASE + 200);
    assert_eq!(done.due_at, None);
    assert!(
        inventory
            .put_rotation(&done, Some((RotationState::Delivered, 2)))
            .await
            .unwrap()
    );

    assert_eq!(inventory.rotation(&old).await.unwrap(), Some(done));
    assert_eq!(all_due(&inventory, BASE + 1_000 * DAY, 10).await, vec![]);
    let item = raw_item(&world, &format!("CERT#{old}"), "ROTATION").await.unwrap();
    assert!(!item.contains_key("expiryShard") && !item.contains_key("expiryKey"));
    assert!(!item.contains_key("dueAt"));
}

#[tokio::test]
async fn due_rotations_pages_across_shards() {
    let world = world().await;
    let inventory = inventory(&world);
    let mut expected = BTreeSet::new();
    for i in 0..12u32 {
        let old = cert_id(i * 3);
        // Half are due by BASE + 6, the others later.
        let rotation = full_rotation(&old, Some(BASE + i64::from(i)));
        assert!(inventory.put_rotation(&rotation, None).await.unwrap());
        if i <= 6 {
            expected.insert(old);
        }
    }

    for limit in [1, 2, 5, 50] {
        let due = all_due(&inventory, BASE + 6, limit).await;
        let ids: Vec<String> = due.iter().map(|r| r.old_certificate_id.clone()).collect();
        assert_eq!(ids.len(), expected.len(), "no duplicates (limit {limit})");
        assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected, "limit {limit}");
    }
}

#[tokio::test]
async fn put_rotation_is_conditional_on_state_and_attempt() {
    let world = world().await;
    let inventory = inventory(&world);
    let policy = RotationPolicy::default();
    let old = cert_id(5);
    let requested = Rotation::requested(&provisioned(&old, BASE + 10 * DAY), "t-5", "sensors", &policy, 1, BASE);

    assert!(inventory.put_rotation(&requested, None).await.unwrap());
    assert!(
        !inventory.put_rotation(&requested, None).await.unwrap(),
        "a rotation is already stored"
    );

    let issued = requested.issued("new-5", vec![], BASE + 10).unwrap();
    assert!(
        !inventory
            .put_rotation(&issued, Some((RotationState::Issued, 1)))
            .await
            .unwrap(),
        "wrong expected state"
    );
    assert!(
        !inventory
            .put_rotation(&issued, Some((RotationState::Requested, 2)))
            .await
            .unwrap(),
        "wrong expected attempt"
    );
    assert!(
        inventory
            .put_rotation(&issued, Some((RotationState::Requested, 1)))
            .await
            .unwrap()
    );
    assert!(
        !inventory
            .put_rotation(&issued, Some((RotationState::Requested, 1)))
            .await
            .unwrap(),
        "the other writer already moved it on"
    );
    assert_eq!(inventory.rotation(&old).await.unwrap(), Some(issued.clone()));

    // A failed attempt and the next one: the job pointer follows the attempt.
    let failed = issued
        .failed(FailureReason::JobFailed, "device said no", &policy, BASE + 20)
        .unwrap();
    assert!(
        inventory
            .put_rotation(&failed, Some((RotationState::Issued, 1)))
            .await
            .unwrap()
    );
    let retried = failed.retried(&policy, BASE + 30).unwrap();
    assert!(
        inventory
            .put_rotation(&retried, Some((RotationState::Failed, 1)))
            .await
            .unwrap()
    );
    assert_eq!(
        inventory.rotation_by_job(&retried.job_id).await.unwrap(),
        Some(retried.clone())
    );
    assert_eq!(
        inventory.rotation_by_job(&requested.job_id).await.unwrap(),
        None,
        "a job of an earlier attempt is not the rotation's"
    );
}

#[tokio::test]
async fn the_rotator_cursor_is_saved_and_deleted() {
    let world = world().await;
    let inventory = inventory(&world);

    assert_eq!(inventory.cursor("expiring").await.unwrap(), None);
    inventory.save_cursor("expiring", Some("{\"x\":1}")).await.unwrap();
    inventory.save_cursor("due", Some("other")).await.unwrap();
    assert_eq!(
        inventory.cursor("expiring").await.unwrap().as_deref(),
        Some("{\"x\":1}")
    );
    inventory.save_cursor("expiring", None).await.unwrap();
    assert_eq!(inventory.cursor("expiring").await.unwrap(), None);
    assert_eq!(inventory.cursor("due").await.unwrap().as_deref(), Some("other"));
    assert!(raw_item(&world, "ROTATOR", "CURSOR#due").await.is_some());
    assert!(
        inventory.load_config().await.is_ok(),
        "runtime state stays out of CONFIG"
    );
}

// --- the expiry scan ------------------------------------------------------------

#[tokio::test]
async fn expiring_returns_exactly_the_provisioned_records_due_across_shards() {
    let world = world().await;
    let inventory = inventory(&world);
    let until = BASE + 19 * DAY;
    let mut expected = BTreeSet::new();
    for i in 0..40u32 {
        let id = cert_id(i);
        // 0..39 days, shuffled so that no shard is in id order.
        let not_after = BASE + i64::from((i * 7) % 40) * DAY;
        inventory
            .record_provisioned(&provisioned(&id, not_after))
            .await
            .unwrap();
        if not_after <= until {
            expected.insert(id);
        }
    }
    assert_eq!(expected.len(), 20, "day 19 itself included");
    // Not provisioned: never in the index.
    let mut rejected = provisioned(&cert_id(100), BASE);
    rejected.status = RecordStatus::Rejected;
    inventory.record_rejected(&rejected).await.unwrap();

    for limit in [1, 3, 7, 100] {
        let (records, stats) = all_expiring(&inventory, until, limit).await;
        let ids: Vec<String> = records.iter().map(|r| r.certificate_id.clone()).collect();
        assert_eq!(ids.len(), expected.len(), "no duplicates (limit {limit})");
        assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), expected, "limit {limit}");
        for record in &records {
            assert_eq!(record.status, RecordStatus::Provisioned);
            assert!(record.thing_name.is_some() && record.profile.is_some());
            assert!(record.not_after.unwrap() <= until);
        }
        // Oldest first within each shard.
        let mut last: HashMap<char, i64> = HashMap::new();
        for record in &records {
            let shard = record.certificate_id.chars().next().unwrap();
            let not_after = record.not_after.unwrap();
            assert!(
                last.get(&shard).is_none_or(|&t| t <= not_after),
                "shard {shard} out of order"
            );
            last.insert(shard, not_after);
        }
        assert_eq!(stats.items_fetched, 20, "only what expires is fetched (limit {limit})");
        assert_eq!(stats.index_items, 20, "only what expires is read (limit {limit})");
        assert!(stats.queries >= 16);
        eprintln!("limit {limit}: {stats:?}");
    }

    // Rotated out: leaves the index; rotated in: joins it.
    let old = expected.first().unwrap().clone();
    let new = "f".repeat(64);
    inventory.record_rotated_out(&old, &new, BASE + 5).await.unwrap();
    // Issued by the fleet's own CA: the issuer is kept beside the binding CA.
    let mut rotated_in = provisioned(&new, BASE + DAY);
    rotated_in.issuer_ca_certificate_id = Some("e".repeat(64));
    inventory.record_rotated_in(&rotated_in).await.unwrap();
    let (records, _) = all_expiring(&inventory, until, 5).await;
    let ids: BTreeSet<String> = records.into_iter().map(|r| r.certificate_id).collect();
    assert!(!ids.contains(&old));
    assert!(ids.contains(&new));
    assert_eq!(ids.len(), 20);
    let record = inventory.certificate_record(&old).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Rotated);
    assert_eq!(record.updated_at, BASE + 5);
    assert!(record.thing_name.is_some(), "the rest of the record is kept");
    let item = world.inventory_record(&old).await.unwrap().unwrap();
    assert_eq!(attr(&item, "rotatedTo"), Some(new.as_str()));
    assert!(!item.contains_key("expiryShard") && !item.contains_key("expiryKey"));
    let item = world.inventory_record(&new).await.unwrap().unwrap();
    assert_eq!(attr(&item, "status"), Some("PROVISIONED"));
    assert_eq!(attr(&item, "expiryShard"), Some("EXP#f"));
    let record = inventory.certificate_record(&new).await.unwrap().unwrap();
    assert_eq!(record.issuer_ca_certificate_id, Some("e".repeat(64)));
    assert_eq!(record.serial_ca(), "e".repeat(64));
}

// --- IoT ------------------------------------------------------------------------

async fn create_thing(world: &World, name: &str) {
    world
        .iot
        .create_thing()
        .thing_name(name)
        .thing_type_name(THING_TYPE)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotation_job_is_created_once_and_described() {
    let world = world().await;
    let adapter = iot(&world, None);
    create_thing(&world, "sensor-0042").await;
    let policy = RotationPolicy::default();
    let rotation = Rotation::requested(
        &provisioned(&cert_id(3), BASE),
        "sensor-0042",
        "sensors",
        &policy,
        1,
        BASE,
    );
    let document = JobDocument::csr(&rotation);

    adapter
        .create_job(&rotation.job_id, "sensor-0042", &document, 30)
        .await
        .unwrap();
    adapter
        .create_job(&rotation.job_id, "sensor-0042", &document, 30)
        .await
        .unwrap();

    let job = world
        .iot
        .describe_job()
        .job_id(&rotation.job_id)
        .send()
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!(
        job.targets(),
        [format!(
            "arn:aws:iot:{}:{}:thing/sensor-0042",
            onboarding_test_support::emulator::REGION,
            onboarding_test_support::emulator::ACCOUNT_ID
        )]
    );
    assert_eq!(
        job.timeout_config().and_then(|t| t.in_progress_timeout_in_minutes()),
        Some(30)
    );
    let stored = world
        .iot
        .get_job_document()
        .job_id(&rotation.job_id)
        .send()
        .await
        .unwrap()
        .document
        .unwrap();
    assert_eq!(serde_json::from_str::<JobDocument>(&stored).unwrap(), document);

    let execution = adapter
        .job_execution(&rotation.job_id, "sensor-0042")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, "QUEUED");
    assert!(
        execution.queued_at.is_some() && execution.started_at.is_none(),
        "{execution:?}"
    );
    assert_eq!(
        adapter.job_execution("rotate-none-1", "sensor-0042").await.unwrap(),
        None
    );

    adapter.cancel_job(&rotation.job_id).await.unwrap();
    adapter.cancel_job(&rotation.job_id).await.unwrap();
    adapter.cancel_job("rotate-none-1").await.unwrap();
    let execution = adapter
        .job_execution(&rotation.job_id, "sensor-0042")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, "CANCELED");

    let error = adapter
        .create_job("rotate-x-1", "no-such-thing", &document, 30)
        .await
        .unwrap_err();
    assert_eq!(error.kind, onboarding_domain::PortErrorKind::MissingResource);
}

#[tokio::test]
async fn a_certificate_from_a_csr_is_attached_detached_and_deleted() {
    let world = world().await;
    let adapter = iot(&world, None);
    create_thing(&world, "sensor-0042").await;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "sensor-0042");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let issued = adapter.certificate_from_csr(&csr).await.unwrap();

    assert_eq!(issued.private_key_pem, None);
    assert!(issued.certificate_pem.contains("BEGIN CERTIFICATE"));
    assert!(issued.certificate_arn.ends_with(&issued.certificate_id));
    let described = adapter.certificate(&issued.certificate_id).await.unwrap().unwrap();
    assert_eq!(described.status, CertificateStatus::Inactive, "not active yet");
    assert_eq!(described.certificate_arn, issued.certificate_arn);

    adapter
        .attach_to_thing("sensor-0042", &issued.certificate_arn)
        .await
        .unwrap();
    adapter.attach_policy(POLICY, &issued.certificate_arn).await.unwrap();
    adapter
        .set_status(&issued.certificate_id, &CertificateStatus::Active)
        .await
        .unwrap();
    assert_eq!(adapter.policies(&issued.certificate_arn).await.unwrap(), vec![POLICY]);
    let principals = world
        .iot
        .list_thing_principals()
        .thing_name("sensor-0042")
        .send()
        .await
        .unwrap();
    assert_eq!(principals.principals(), std::slice::from_ref(&issued.certificate_arn));
    assert_eq!(
        adapter
            .certificate(&issued.certificate_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        CertificateStatus::Active
    );

    // Retiring: inactive, detached, deleted; each step again is harmless.
    adapter
        .set_status(&issued.certificate_id, &CertificateStatus::Inactive)
        .await
        .unwrap();
    for _ in 0..2 {
        adapter.detach_policy(POLICY, &issued.certificate_arn).await.unwrap();
        adapter
            .detach_from_thing("sensor-0042", &issued.certificate_arn)
            .await
            .unwrap();
    }
    assert_eq!(
        adapter.policies(&issued.certificate_arn).await.unwrap(),
        Vec::<String>::new()
    );
    adapter.delete_certificate(&issued.certificate_id).await.unwrap();
    adapter.delete_certificate(&issued.certificate_id).await.unwrap();
    assert_eq!(adapter.certificate(&issued.certificate_id).await.unwrap(), None);
}

#[tokio::test]
async fn an_attached_certificate_cannot_be_deleted() {
    let world = world().await;
    let adapter = iot(&world, None);
    create_thing(&world, "sensor-0043").await;
    let issued = adapter.keys_and_certificate().await.unwrap();
    assert!(
        issued
            .private_key_pem
            .as_deref()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
    );
    adapter
        .attach_to_thing("sensor-0043", &issued.certificate_arn)
        .await
        .unwrap();

    let error = adapter.delete_certificate(&issued.certificate_id).await.unwrap_err();

    assert!(!error.is_transient(), "{error}");
    assert!(adapter.certificate(&issued.certificate_id).await.unwrap().is_some());
}

#[tokio::test]
async fn publishing_and_credentials_objects() {
    let world = world().await;
    let adapter = iot(&world, None);
    adapter
        .publish("devices/sensor-0042/rotation/certificate", br#"{"status":"ISSUED"}"#)
        .await
        .unwrap();

    let objects = S3RotationObjects::new(
        onboarding_test_support::emulator::s3_client(&world.sdk),
        BUCKET,
        world.kms_key_arn.clone(),
    );
    objects.put_object("rotation/x/key.pem", b"secret").await.unwrap();
    let head = world
        .s3
        .head_object()
        .bucket(BUCKET)
        .key("rotation/x/key.pem")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
    );
    objects.delete_object("rotation/x/key.pem").await.unwrap();
    objects.delete_object("rotation/x/key.pem").await.unwrap();
    assert!(
        world
            .s3
            .head_object()
            .bucket(BUCKET)
            .key("rotation/x/key.pem")
            .send()
            .await
            .is_err()
    );
    assert_eq!(objects.bucket(), BUCKET);
}
