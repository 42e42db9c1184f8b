//! The reconciler adapters against the local AWS emulator: a CA's
//! certificates listed page by page with their creation dates, a certificate's
//! things, records found and marked, the record scan by CA and the cursors;
//! and one reconciler run through all of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use aws_sdk_iot::types::CertificateStatus as IotStatus;
use onboarding_aws::RECONCILER_PK;
use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::{
    CaCertificates, ListedCertificate, NOT_FOUND_STATUS, ReconcileInventory, Reconciler, ReconcilerSettings,
    StuckHandler,
};
use onboarding_domain::{CertificateRecord, JitrEvent, Outcome, PortErrorKind, ProvisioningError, RecordStatus};
use onboarding_domain::{CertificateStatus, Inventory};
use onboarding_test_support::world::{TABLE, World};

async fn world() -> World {
    match World::new().await {
        Ok(world) => world,
        Err(e) => panic!("could not build the test world: {e}"),
    }
}

fn inventory(world: &World) -> DynamoInventory {
    DynamoInventory::new(world.dynamodb.clone(), TABLE)
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Registers a certificate under the world's CA with `status`, as an operator would by hand.
async fn register(world: &World, cn: &str, status: IotStatus) -> (String, String) {
    let device = world.ca.device(cn).build().unwrap();
    let output = world
        .iot
        .register_certificate()
        .certificate_pem(&device.cert_pem)
        .ca_certificate_pem(&world.ca.cert_pem)
        .status(status)
        .send()
        .await
        .unwrap();
    (output.certificate_id.unwrap(), output.certificate_arn.unwrap())
}

async fn all_certificates(iot: &IotAdapter, ca: &str, limit: usize) -> (Vec<ListedCertificate>, usize) {
    let (mut all, mut pages, mut cursor) = (Vec::new(), 0, None);
    loop {
        let page = iot.certificates_of_ca(ca, cursor.as_deref(), limit).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= limit);
        all.extend(page.items);
        cursor = page.cursor;
        if cursor.is_none() {
            return (all, pages);
        }
    }
}

async fn all_records(inventory: &DynamoInventory, ca: &str, limit: usize) -> Vec<CertificateRecord> {
    let (mut all, mut cursor) = (Vec::new(), None);
    loop {
        let page = inventory.records_of_ca(ca, cursor.as_deref(), limit).await.unwrap();
        all.extend(page.items);
        cursor = page.cursor;
        if cursor.is_none() {
            return all;
        }
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<JitrEvent>>);

impl StuckHandler for Recorder {
    async fn process_stuck(&self, event: &JitrEvent, _: i64) -> Result<Outcome, ProvisioningError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(Outcome::Ignored {
            certificate_status: "PENDING_ACTIVATION".into(),
        })
    }
}

#[tokio::test]
async fn a_ca_lists_pending_and_hand_made_certificates_and_a_run_acts_on_them() {
    let world = world().await;
    let iot = IotAdapter::new(world.iot.clone());
    let inventory = inventory(&world);
    let before = now();
    let pending_cert = world.ca.device("stuck-1").build().unwrap();
    let pending = world
        .stage_pending(&pending_cert.cert_pem, Some(&world.ca.cert_pem))
        .await
        .unwrap();
    let (active, active_arn) = register(&world, "hand-made-1", IotStatus::Active).await;
    world.iot.create_thing().thing_name("hand-made-1").send().await.unwrap();
    world
        .iot
        .attach_thing_principal()
        .thing_name("hand-made-1")
        .principal(&active_arn)
        .send()
        .await
        .unwrap();

    // Listed one per page, with status and creation date.
    let (listed, pages) = all_certificates(&iot, &world.ca_id, 1).await;
    assert!(pages >= 2, "one certificate per page");
    let find = |id: &str| listed.iter().find(|c| c.certificate_id == id).cloned().unwrap();
    let p = find(&pending);
    assert_eq!(p.status, CertificateStatus::PendingActivation);
    let created = p.created_at.expect("a creation date");
    assert!(
        (before - 120..=now() + 120).contains(&created),
        "created {created}, test began {before}"
    );
    assert!(p.certificate_arn.ends_with(&format!("cert/{pending}")));
    assert_eq!(find(&active).status, CertificateStatus::Active);
    assert_eq!(listed.len(), 2);

    // A run: the pending certificate is stuck at once with a zero threshold;
    // both it and the hand-made one (ACTIVE, no record) go to the registrar.
    let stuck = Recorder::default();
    let settings = ReconcilerSettings {
        stuck_after_secs: 0,
        page_size: 1,
        ..ReconcilerSettings::default()
    };
    let reconciler = Reconciler::new(iot.clone(), iot.clone(), inventory.clone(), &stuck, settings);
    let report = reconciler.run(now() + 1).await.unwrap();
    assert_eq!((report.cas, report.examined), (1, 2), "{report:?}");
    assert_eq!((report.stuck_processed, report.recorded_active), (1, 1), "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    let mut events: Vec<(String, String)> = stuck
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.certificate_id.clone(), e.ca_certificate_id.clone()))
        .collect();
    events.sort();
    let mut expected = vec![
        (pending.clone(), world.ca_id.clone()),
        (active.clone(), world.ca_id.clone()),
    ];
    expected.sort();
    assert_eq!(events, expected);
    // The registrar records; until it has, the next run hands it over again.
    let report = reconciler.run(now() + 2).await.unwrap();
    assert_eq!(report.recorded_active, 1, "{report:?}");
    let mut record = CertificateRecord::bare(&active, &world.ca_id, RecordStatus::Provisioned, now());
    record.thing_name = Some("hand-made-1".into());
    inventory.record_provisioned(&record).await.unwrap();
    let report = reconciler.run(now() + 3).await.unwrap();
    assert_eq!(report.recorded_active, 0, "{report:?}");
}

#[tokio::test]
async fn a_record_whose_certificate_was_deleted_is_marked_once() {
    let world = world().await;
    let inventory = inventory(&world);
    let (gone, _) = register(&world, "deleted-1", IotStatus::Inactive).await;
    let (here, _) = register(&world, "kept-1", IotStatus::Inactive).await;
    let t = now();
    for id in [&gone, &here] {
        let mut record = CertificateRecord::bare(id, &world.ca_id, RecordStatus::Provisioned, t);
        record.thing_name = Some(format!("thing-{}", &id[..8]));
        inventory.record_rejected(&record).await.unwrap();
    }
    let other = CertificateRecord::bare(&"e".repeat(64), &"f".repeat(64), RecordStatus::Observed, t);
    inventory.record_observed(&other).await.unwrap();
    world
        .iot
        .delete_certificate()
        .certificate_id(&gone)
        .send()
        .await
        .unwrap();

    // The scan by CA, one item read per page: only this CA's records.
    let mut ids: Vec<String> = all_records(&inventory, &world.ca_id, 1)
        .await
        .into_iter()
        .map(|r| r.certificate_id)
        .collect();
    ids.sort();
    let mut expected = vec![gone.clone(), here.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    assert!(inventory.mark_certificate_missing(&gone, t + 10).await.unwrap());
    assert!(
        !inventory.mark_certificate_missing(&gone, t + 20).await.unwrap(),
        "marked once"
    );
    assert!(
        !inventory.mark_certificate_missing(&"0".repeat(64), t).await.unwrap(),
        "no record"
    );
    assert!(
        world.inventory_record(&"0".repeat(64)).await.unwrap().is_none(),
        "no record created"
    );
    let raw = world.inventory_record(&gone).await.unwrap().unwrap();
    let text = |name: &str| raw.get(name).and_then(|v| v.as_s().ok()).cloned();
    assert_eq!(text("certificateStatus").as_deref(), Some(NOT_FOUND_STATUS));
    assert_eq!(
        text("certificateMissingAt").as_deref(),
        Some(onboarding_domain::rfc3339(t + 10).as_str())
    );
    assert_eq!(
        text("thingName"),
        Some(format!("thing-{}", &gone[..8])),
        "the rest is kept"
    );

    // Through a run: nothing more to mark (gone is marked, here exists).
    let iot = IotAdapter::new(world.iot.clone());
    let stuck = Recorder::default();
    let reconciler = Reconciler::new(
        iot.clone(),
        iot,
        inventory.clone(),
        &stuck,
        ReconcilerSettings::default(),
    );
    let report = reconciler.run(t + 30).await.unwrap();
    assert_eq!((report.marked_missing, report.records_examined), (0, 1), "{report:?}");

    // And a fresh deletion is found by the run.
    world
        .iot
        .delete_certificate()
        .certificate_id(&here)
        .send()
        .await
        .unwrap();
    let report = reconciler.run(t + 40).await.unwrap();
    assert_eq!(report.marked_missing, 1, "{report:?}");
    let record = inventory.certificate_record(&here).await.unwrap().unwrap();
    assert_eq!(record.certificate_status.as_deref(), Some(NOT_FOUND_STATUS));
}

#[tokio::test]
async fn cursors_round_trip() {
    let world = world().await;
    let inventory = inventory(&world);
    assert_eq!(inventory.reconcile_cursor("ca").await.unwrap(), None);
    inventory.save_reconcile_cursor("ca", Some("abc")).await.unwrap();
    inventory
        .save_reconcile_cursor("records#x", Some("{\"ca\":\"x\"}"))
        .await
        .unwrap();
    assert_eq!(inventory.reconcile_cursor("ca").await.unwrap().as_deref(), Some("abc"));
    inventory.save_reconcile_cursor("ca", Some("def")).await.unwrap();
    assert_eq!(inventory.reconcile_cursor("ca").await.unwrap().as_deref(), Some("def"));
    let item = world
        .dynamodb
        .get_item()
        .table_name(TABLE)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(RECONCILER_PK.into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("CURSOR#ca".into()))
        .send()
        .await
        .unwrap();
    assert!(item.item.is_some(), "stored under RECONCILER / CURSOR#ca");
    inventory.save_reconcile_cursor("ca", None).await.unwrap();
    assert_eq!(inventory.reconcile_cursor("ca").await.unwrap(), None);
    assert_eq!(
        inventory.reconcile_cursor("records#x").await.unwrap().as_deref(),
        Some("{\"ca\":\"x\"}")
    );

    // A record-scan cursor is real DynamoDB position, and tied to its CA.
    for i in 0..3 {
        let id = format!("{i:064x}");
        let record = CertificateRecord::bare(&id, &world.ca_id, RecordStatus::Observed, 1);
        inventory.record_observed(&record).await.unwrap();
    }
    let page = inventory.records_of_ca(&world.ca_id, None, 1).await.unwrap();
    let cursor = page.cursor.expect("more to read");
    inventory
        .save_reconcile_cursor("records#ca", Some(&cursor))
        .await
        .unwrap();
    let saved = inventory.reconcile_cursor("records#ca").await.unwrap().unwrap();
    let next = inventory.records_of_ca(&world.ca_id, Some(&saved), 10).await.unwrap();
    let mut seen: Vec<String> = page
        .items
        .iter()
        .chain(&next.items)
        .map(|r| r.certificate_id.clone())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "the two pages cover every record once: {seen:?}");
    let err = inventory
        .records_of_ca("another-ca", Some(&saved), 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Invalid);
}
