//! The happy path and idempotency.

use aws_sdk_s3::types::ServerSideEncryption;
use onboarding_test_support::mqtt::ConnectResult;
use onboarding_test_support::rcgen::DnType;
use onboarding_test_support::world::{BUCKET, GROUPS, POLICY, THING_TYPE};
use serde_json::json;

use crate::common::{TestResult, attr, handler, handler_via_proxy, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_a_device_end_to_end() -> TestResult {
    let world = world().await;
    let device = world
        .ca
        .device("sensor-00001")
        .with(DnType::OrganizationName, "Acme")
        .with(DnType::OrganizationalUnitName, "TH-200")
        .with(DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-0001")
        .build()?;
    let certificate_id = world.first_connection(&device, "sensor-00001").await?;

    let (handler, proxy) = handler_via_proxy(&world).await;
    let answer = handler
        .handle(world.direct_event(&certificate_id, &world.ca_id)?)
        .await?;
    assert_eq!(answer, json!({"outcome": "provisioned", "thingName": "sensor-00001"}));

    // The thing, with its type and attributes from the subject.
    let thing = world.iot.describe_thing().thing_name("sensor-00001").send().await?;
    assert_eq!(thing.thing_type_name.as_deref(), Some(THING_TYPE));
    let attributes = thing.attributes.unwrap_or_default();
    assert_eq!(attributes.get("manufacturer").map(String::as_str), Some("Acme"));
    assert_eq!(attributes.get("model").map(String::as_str), Some("TH-200"));
    assert_eq!(attributes.get("serial").map(String::as_str), Some("SN-0001"));

    // The certificate, attached exclusively, with the policy, ACTIVE.
    let description = world
        .iot
        .describe_certificate()
        .certificate_id(&certificate_id)
        .send()
        .await?;
    let description = description.certificate_description.ok_or("no description")?;
    let certificate_arn = description.certificate_arn.clone().ok_or("no ARN")?;
    assert_eq!(description.status.as_ref().map(|s| s.as_str()), Some("ACTIVE"));
    let principals = world
        .iot
        .list_thing_principals()
        .thing_name("sensor-00001")
        .send()
        .await?;
    assert_eq!(principals.principals.unwrap_or_default(), vec![certificate_arn.clone()]);
    // The emulator ignores the principal type, so check what was asked of it.
    let attach: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.target.starts_with("/things/sensor-00001/principals"))
        .collect();
    assert!(!attach.is_empty(), "AttachThingPrincipal was called");
    assert!(
        attach
            .iter()
            .all(|r| r.target.contains("thingPrincipalType=EXCLUSIVE_THING")),
        "{:?}",
        attach[0].target
    );
    let policies = world
        .iot
        .list_attached_policies()
        .target(&certificate_arn)
        .send()
        .await?;
    let policies: Vec<_> = policies
        .policies
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.policy_name)
        .collect();
    assert_eq!(policies, vec![POLICY.to_string()]);

    // Group membership.
    let groups = world
        .iot
        .list_thing_groups_for_thing()
        .thing_name("sensor-00001")
        .send()
        .await?;
    let mut groups: Vec<_> = groups
        .thing_groups
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| g.group_name)
        .collect();
    groups.sort();
    let mut expected: Vec<String> = GROUPS.iter().map(|g| (*g).to_string()).collect();
    expected.sort();
    assert_eq!(groups, expected);

    // The credentials record, under SSE-KMS with the configured key.
    let key = format!("credentials/sensor-00001/{certificate_id}.json");
    let head = world.s3.head_object().bucket(BUCKET).key(&key).send().await?;
    assert_eq!(head.server_side_encryption, Some(ServerSideEncryption::AwsKms));
    let key_id = head.ssekms_key_id.unwrap_or_default();
    assert!(
        key_id == world.kms_key_arn || key_id.ends_with(&world.kms_key_id),
        "object key id {key_id}"
    );
    let object = world.s3.get_object().bucket(BUCKET).key(&key).send().await?;
    let record: serde_json::Value = serde_json::from_slice(&object.body.collect().await?.into_bytes())?;
    assert_eq!(
        record["certificatePem"].as_str().map(str::trim),
        Some(device.cert_pem.trim())
    );
    assert_eq!(record["caCertificateId"], json!(world.ca_id));
    assert_eq!(record["fingerprint"], json!(certificate_id));
    assert!(
        record["subject"]
            .as_str()
            .unwrap_or_default()
            .contains("CN=sensor-00001")
    );
    assert!(record.get("privateKey").is_none());

    // The inventory record.
    let item = world
        .inventory_record(&certificate_id)
        .await?
        .ok_or("no inventory record")?;
    assert_eq!(attr(&item, "status"), Some("PROVISIONED"));
    assert_eq!(attr(&item, "thingName"), Some("sensor-00001"));
    assert_eq!(attr(&item, "caCertificateId"), Some(world.ca_id.as_str()));
    assert_eq!(attr(&item, "profile"), Some("sensors"));
    assert_eq!(attr(&item, "fingerprint"), Some(certificate_id.as_str()));
    assert!(attr(&item, "serial").is_some_and(|s| !s.is_empty()));
    assert!(attr(&item, "notAfter").is_some_and(|s| s.ends_with('Z')));
    assert!(attr(&item, "expiryShard").is_some_and(|s| s.starts_with("EXP#")));
    assert!(attr(&item, "createdAt").is_some());

    // The device now gets in, under its own name.
    assert_eq!(world.connect(&device, "sensor-00001").await?, ConnectResult::Accepted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_three_times_and_twice_concurrently_gives_one_end_state() -> TestResult {
    let world = world().await;
    let device = world.ca.device("sensor-00002").build()?;
    let certificate_id = world.first_connection(&device, "sensor-00002").await?;
    let event = world.direct_event(&certificate_id, &world.ca_id)?;

    // Three deliveries in a row to one container.
    let container = handler(&world, &[]);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(container.handle(event.clone()).await?["outcome"].clone());
    }
    assert_eq!(
        outcomes,
        vec![json!("provisioned"), json!("duplicate"), json!("duplicate")]
    );

    // A second device delivered twice at once to two containers.
    let second = world.ca.device("sensor-00003").build()?;
    let second_id = world.first_connection(&second, "sensor-00003").await?;
    let second_event = world.direct_event(&second_id, &world.ca_id)?;
    let (a, b) = (handler(&world, &[]), handler(&world, &[]));
    let (ra, rb) = futures::join!(a.handle(second_event.clone()), b.handle(second_event.clone()));
    let mut concurrent = vec![ra?["outcome"].clone(), rb?["outcome"].clone()];
    concurrent.sort_by_key(|v| v.to_string());
    assert!(
        concurrent == vec![json!("provisioned"), json!("provisioned")]
            || concurrent == vec![json!("duplicate"), json!("provisioned")],
        "{concurrent:?}"
    );

    for (name, id) in [("sensor-00002", &certificate_id), ("sensor-00003", &second_id)] {
        assert_eq!(world.certificate_status(id).await?.as_deref(), Some("ACTIVE"));
        let principals = world
            .iot
            .list_thing_principals()
            .thing_name(name)
            .send()
            .await?
            .principals
            .unwrap_or_default();
        assert_eq!(principals.len(), 1, "{name}: {principals:?}");
        let item = world.inventory_record(id).await?.ok_or("no record")?;
        assert_eq!(attr(&item, "status"), Some("PROVISIONED"));
    }
    // One record per certificate, one thing per device.
    let things = world.iot.list_things().send().await?.things.unwrap_or_default();
    assert_eq!(things.len(), 2);
    let scan = world
        .dynamodb
        .scan()
        .table_name(onboarding_test_support::world::TABLE)
        .send()
        .await?;
    let records = scan
        .items()
        .iter()
        .filter(|i| attr(i, "pk").is_some_and(|pk| pk.starts_with("CERT#")))
        .count();
    assert_eq!(records, 2);
    Ok(())
}
