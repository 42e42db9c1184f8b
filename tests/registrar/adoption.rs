//! Certificates ACTIVE before the registrar saw them (JITP, made by hand):
//! checked, and recorded with the thing their profile names; a JITP CA's
//! certificate that fails a check is rejected, a hand-made one only recorded.

use aws_sdk_iot::types::{CertificateStatus as IotStatus, RegistrationConfig};
use onboarding_test_support::DeviceCert;
use onboarding_test_support::world::World;
use serde_json::json;

use crate::common::{TestResult, handler, world};

/// Registers the device's certificate ACTIVE under the world's CA, by hand,
/// attached to a thing of its name; returns its id.
async fn made_by_hand(
    world: &World,
    device: &DeviceCert,
    thing: &str,
) -> Result<String, onboarding_test_support::world::WorldError> {
    let registered = world
        .iot
        .register_certificate()
        .certificate_pem(&device.cert_pem)
        .ca_certificate_pem(&world.ca.cert_pem)
        .status(IotStatus::Active)
        .send()
        .await?;
    world.iot.create_thing().thing_name(thing).send().await?;
    world
        .iot
        .attach_thing_principal()
        .thing_name(thing)
        .principal(registered.certificate_arn().ok_or("no ARN")?)
        .send()
        .await?;
    Ok(registered.certificate_id().ok_or("no id")?.to_string())
}

fn status_of(item: &onboarding_test_support::world::Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_certificate_is_recorded_when_it_passes_and_left_alone_when_made_by_hand() -> TestResult {
    let world = world().await;
    let handler = handler(&world, &[]);

    let good = world.ca.device("sensor-hand-1").build()?;
    let good_id = made_by_hand(&world, &good, "sensor-hand-1").await?;
    let answer = handler.handle(world.direct_event(&good_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("recorded"), "{answer}");
    assert_eq!(answer["thingName"], json!("sensor-hand-1"));
    let item = world.inventory_record(&good_id).await?.ok_or("no record")?;
    assert_eq!(status_of(&item, "status").as_deref(), Some("PROVISIONED"));
    assert!(
        item.contains_key("expiryKey"),
        "rotation needs the expiry index: {item:?}"
    );
    assert!(!item.contains_key("credentialsKey"));
    // A duplicate delivery finds it provisioned.
    let again = handler.handle(world.direct_event(&good_id, &world.ca_id)?).await?;
    assert_eq!(again["outcome"], json!("duplicate"), "{again}");

    // Made by hand and failing a check: recorded with the check, not revoked.
    world.deny_serial(&world.ca_id, "0badc0de").await?;
    let denied = world
        .ca
        .device("sensor-hand-2")
        .serial(&[0x0b, 0xad, 0xc0, 0xde])
        .build()?;
    let denied_id = made_by_hand(&world, &denied, "sensor-hand-2").await?;
    // The same container: the deny-list is looked up by key, never cached,
    // so the entry added a moment ago applies at once.
    let answer = handler.handle(world.direct_event(&denied_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("ignored"), "{answer}");
    assert_eq!(world.certificate_status(&denied_id).await?.as_deref(), Some("ACTIVE"));
    let item = world.inventory_record(&denied_id).await?.ok_or("no record")?;
    assert_eq!(status_of(&item, "status").as_deref(), Some("OBSERVED"));
    assert!(
        status_of(&item, "reasonDetail").is_some_and(|d| d.contains("SERIAL_DENIED")),
        "{item:?}"
    );

    // Not attached to the thing its profile names: observed, not recorded as provisioned.
    let stray = world.ca.device("sensor-hand-3").build()?;
    let stray_id = made_by_hand(&world, &stray, "another-name").await?;
    let answer = handler.handle(world.direct_event(&stray_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("ignored"), "{answer}");
    let item = world.inventory_record(&stray_id).await?.ok_or("no record")?;
    assert_eq!(status_of(&item, "status").as_deref(), Some("OBSERVED"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jitp_certificate_that_fails_a_check_is_rejected() -> TestResult {
    let world = world().await;
    // The world's CA provisions by JITP from now on.
    world
        .iot
        .update_ca_certificate()
        .certificate_id(&world.ca_id)
        .registration_config(
            RegistrationConfig::builder()
                .template_body(r#"{"Resources":{}}"#)
                .role_arn("arn:aws:iam::000000000000:role/jitp")
                .build(),
        )
        .send()
        .await?;
    world.deny_serial(&world.ca_id, "0badc0de").await?;
    let denied = world
        .ca
        .device("sensor-jitp-1")
        .serial(&[0x0b, 0xad, 0xc0, 0xde])
        .build()?;
    let denied_id = made_by_hand(&world, &denied, "sensor-jitp-1").await?;
    let answer = handler(&world, &[])
        .handle(world.direct_event(&denied_id, &world.ca_id)?)
        .await?;
    assert_eq!(answer["outcome"], json!("rejected"), "{answer}");
    assert_eq!(world.certificate_status(&denied_id).await?.as_deref(), Some("REVOKED"));
    let item = world.inventory_record(&denied_id).await?.ok_or("no record")?;
    assert_eq!(status_of(&item, "reasonCode").as_deref(), Some("SERIAL_DENIED"));
    Ok(())
}

/// Revoked in an emergency (its record `REVOKED`, its fingerprint denied,
/// as `onboard device revoke` leaves it), then registered ACTIVE again by
/// hand: the registrar revokes it again; without the deny entry (an
/// operator took it off), it is left as the operator set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_active_again_is_revoked_again_while_denied() -> TestResult {
    use onboarding_domain::{CertificateRecord, RecordStatus, RevocationStore};

    let world = world().await;
    let handler = handler(&world, &[]);
    let inventory = onboarding_aws::DynamoInventory::new(
        aws_sdk_dynamodb::Client::new(&world.sdk),
        onboarding_test_support::world::TABLE,
    );
    let mut ids = Vec::new();
    for (name, denied) in [("sensor-revoked-1", true), ("sensor-revoked-2", false)] {
        let device = world.ca.device(name).build()?;
        let id = made_by_hand(&world, &device, name).await?;
        let mut record = CertificateRecord::bare(&id, &world.ca_id, RecordStatus::Revoked, 1_900_000_000);
        record.thing_name = Some(name.into());
        assert!(inventory.claim_revocation(&record, "stolen", 1_900_000_000).await?);
        if denied {
            let key = onboarding_domain::DenyKey::fingerprint(&id).map_err(|e| e.to_string())?;
            inventory.deny(&key, "revoked: stolen", 1_900_000_000).await?;
        }
        ids.push(id);
    }
    let answer = handler.handle(world.direct_event(&ids[0], &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("rejected"), "{answer}");
    assert_eq!(answer["reasonCode"], json!("FINGERPRINT_DENIED"), "{answer}");
    assert_eq!(world.certificate_status(&ids[0]).await?.as_deref(), Some("REVOKED"));
    let item = world.inventory_record(&ids[0]).await?.ok_or("no record")?;
    assert_eq!(status_of(&item, "status").as_deref(), Some("REVOKED"), "{item:?}");
    assert_eq!(status_of(&item, "revocationReason").as_deref(), Some("stolen"));

    let answer = handler.handle(world.direct_event(&ids[1], &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("ignored"), "{answer}");
    assert_eq!(world.certificate_status(&ids[1]).await?.as_deref(), Some("ACTIVE"));
    Ok(())
}
