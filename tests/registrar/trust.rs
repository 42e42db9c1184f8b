//! Section 3 of issue 11: the registrar revokes only on facts it established
//! itself. Each test attacks one property and fails without its protection.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_iot::types::{CertificateStatus as IotStatus, RegistrationConfig};
use onboarding_test_support::TestCa;
use onboarding_test_support::world::{TABLE, World, WorldError};
use serde_json::json;

use crate::common::{TestResult, attr, handler, world};

/// The holder of a thing-name claim, as the inventory says.
async fn claim_holder(world: &World, thing: &str) -> Result<Option<String>, WorldError> {
    let out = world
        .dynamodb
        .get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(format!("THING#{thing}")))
        .key("sk", AttributeValue::S("CLAIM".into()))
        .consistent_read(true)
        .send()
        .await?;
    Ok(out
        .item
        .as_ref()
        .and_then(|i| attr(i, "certificateId"))
        .map(str::to_string))
}

/// A name claim written as an earlier onboarding left it.
async fn put_claim(world: &World, thing: &str, certificate_id: &str) -> Result<(), WorldError> {
    world
        .dynamodb
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S(format!("THING#{thing}")))
        .item("sk", AttributeValue::S("CLAIM".into()))
        .item("thingName", AttributeValue::S(thing.into()))
        .item("certificateId", AttributeValue::S(certificate_id.into()))
        .send()
        .await?;
    Ok(())
}

/// A certificate of the world's CA registered with the given status; its id and ARN.
async fn registered(world: &World, cn: &str, status: IotStatus) -> Result<(String, String), WorldError> {
    let device = world.ca.device(cn).build()?;
    let out = world
        .iot
        .register_certificate()
        .certificate_pem(&device.cert_pem)
        .ca_certificate_pem(&world.ca.cert_pem)
        .status(status)
        .send()
        .await?;
    Ok((
        out.certificate_id().ok_or("no id")?.to_string(),
        out.certificate_arn().ok_or("no ARN")?.to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_naming_another_ca_revokes_nothing() -> TestResult {
    let world = world().await;
    // A second CA, ACTIVE and bound here too, whose template makes it JITP:
    // the event naming it must lend the certificate none of its facts.
    let other = TestCa::new("Second Vendor CA")?;
    let other_id = world.register_ca(&other).await?;
    world.bind(&other_id, "sensors").await?;
    world
        .iot
        .update_ca_certificate()
        .certificate_id(&other_id)
        .registration_config(
            RegistrationConfig::builder()
                .template_body(r#"{"Resources":{}}"#)
                .role_arn("arn:aws:iam::000000000000:role/jitp")
                .build(),
        )
        .send()
        .await?;
    let handler = handler(&world, &[]);

    // A pending certificate of the world's CA, and an ACTIVE hand-made one
    // that fails a check (expired... no: a name the profile cannot build).
    let device = world.ca.device("mismatch-1").build()?;
    let pending_id = world.first_connection(&device, "mismatch-1").await?;
    let (active_id, _) = registered(&world, "bad name!", IotStatus::Active).await?;

    for id in [&pending_id, &active_id] {
        let answer = handler.handle(world.direct_event(id, &other_id)?).await?;
        assert_eq!(answer["outcome"], json!("left_alone"), "{answer}");
        assert_eq!(answer["reasonCode"], json!("CA_MISMATCH"), "{answer}");
        assert!(world.inventory_record(id).await?.is_none(), "nothing recorded");
    }
    assert_eq!(
        world.certificate_status(&pending_id).await?.as_deref(),
        Some("PENDING_ACTIVATION")
    );
    assert_eq!(world.certificate_status(&active_id).await?.as_deref(), Some("ACTIVE"));
    assert!(!world.thing_exists("mismatch-1").await?);

    // The true event still onboards the device.
    let answer = handler.handle(world.direct_event(&pending_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");

    // Only an explicit setting revokes what the event mislabels, and then
    // JITP-ness comes from the certificate's own CA (not JITP: the ACTIVE
    // hand-made certificate is only observed, not revoked).
    let strict = crate::common::handler(&world, &[("REVOKE_FOREIGN_CERTIFICATES", "true")]);
    let answer = strict.handle(world.direct_event(&active_id, &other_id)?).await?;
    assert_eq!(answer["outcome"], json!("ignored"), "{answer}");
    assert_eq!(world.certificate_status(&active_id).await?.as_deref(), Some("ACTIVE"));
    let device = world.ca.device("mismatch-2").build()?;
    let pending_id = world.first_connection(&device, "mismatch-2").await?;
    let answer = strict.handle(world.direct_event(&pending_id, &other_id)?).await?;
    assert_eq!(answer["reasonCode"], json!("CA_MISMATCH"), "{answer}");
    assert_eq!(world.certificate_status(&pending_id).await?.as_deref(), Some("REVOKED"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_cas_certificate_stays_untouched_and_is_counted() -> TestResult {
    let world = world().await;
    let unbound = TestCa::new("Someone Else's CA")?;
    let unbound_id = world.register_ca(&unbound).await?;
    let device = unbound.device("foreign-1").build()?;
    let id = world.first_connection(&device, "foreign-1").await?;
    let handler = handler(&world, &[]);
    let answer = handler.handle(world.direct_event(&id, &unbound_id)?).await?;
    assert_eq!(answer["outcome"], json!("left_alone"), "{answer}");
    assert_eq!(answer["reasonCode"], json!("CA_NOT_BOUND"), "{answer}");
    assert_eq!(
        world.certificate_status(&id).await?.as_deref(),
        Some("PENDING_ACTIVATION")
    );
    assert!(world.inventory_record(&id).await?.is_none());
    // Counted: the outcome is the `LeftAlone` metric with its reason.
    let doc = jitr_registrar::metrics::emf(
        "ns",
        jitr_registrar::handler::FUNCTION,
        jitr_registrar::metrics::Measured::LeftAlone {
            reason: answer["reasonCode"].as_str().unwrap_or_default(),
        },
        0.0,
        0,
    );
    assert_eq!(
        (doc["LeftAlone"].as_f64(), doc["Reason"].as_str()),
        (Some(1.0), Some("CA_NOT_BOUND"))
    );

    // Bound a moment later, with the configuration cached without it: the
    // device is onboarded, never left alone on stale configuration.
    world.bind(&unbound_id, "sensors").await?;
    let answer = handler.handle(world.direct_event(&id, &unbound_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thing_type_mismatch_is_decided_again_on_fresh_configuration() -> TestResult {
    let world = world().await;
    world.iot.create_thing_type().thing_type_name("actuator").send().await?;
    world
        .iot
        .create_thing()
        .thing_name("typed-1")
        .thing_type_name("actuator")
        .send()
        .await?;
    world
        .iot
        .create_thing()
        .thing_name("typed-2")
        .thing_type_name("actuator")
        .send()
        .await?;
    let handler = handler(&world, &[]);
    // THING_TYPE_MISMATCH through the registrar: the thing keeps its type,
    // the certificate is revoked, the name claim is released.
    let device = world.ca.device("typed-1").build()?;
    let id = world.first_connection(&device, "typed-1").await?;
    let answer = handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    assert_eq!(answer["reasonCode"], json!("THING_TYPE_MISMATCH"), "{answer}");
    assert_eq!(world.certificate_status(&id).await?.as_deref(), Some("REVOKED"));
    assert_eq!(claim_holder(&world, "typed-1").await?, None);

    // The profile now says "actuator"; the handler's cache still says
    // "sensor". The mismatch found on the cached plan is decided again on
    // fresh configuration: provisioned, not revoked.
    let mut profile = onboarding_test_support::world::default_profile();
    profile["thingType"] = json!("actuator");
    world.put_profile(&profile).await?;
    let device = world.ca.device("typed-2").build()?;
    let id = world.first_connection(&device, "typed-2").await?;
    let answer = handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    assert_eq!(world.certificate_status(&id).await?.as_deref(), Some("ACTIVE"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_moved_during_a_check_that_rejects_is_moved_back() -> TestResult {
    let world = world().await;
    let handler = handler(&world, &[]);
    // A claim transfer: the name's earlier holder is revoked, so a new
    // device takes the name over (the claim moves to it).
    let (retired, _) = registered(&world, "moved-1", IotStatus::Revoked).await?;
    put_claim(&world, "moved-1", &retired).await?;
    let device = world.ca.device("moved-1").build()?;
    let id = world.first_connection(&device, "moved-1").await?;
    let answer = handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    assert_eq!(claim_holder(&world, "moved-1").await?.as_deref(), Some(id.as_str()));

    // The same move, but the thing (made by hand) has another ACTIVE
    // certificate attached: IDENTITY_COLLISION, and the claim goes back to
    // the certificate it was moved from.
    let (old, _) = registered(&world, "moved-2", IotStatus::Revoked).await?;
    put_claim(&world, "moved-2", &old).await?;
    let (_, live_arn) = registered(&world, "moved-2", IotStatus::Active).await?;
    world
        .iot
        .create_thing()
        .thing_name("moved-2")
        .thing_type_name("sensor")
        .send()
        .await?;
    world
        .iot
        .attach_thing_principal()
        .thing_name("moved-2")
        .principal(&live_arn)
        .send()
        .await?;
    let device = world.ca.device("moved-2").build()?;
    let id = world.first_connection(&device, "moved-2").await?;
    let answer = handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    assert_eq!(answer["reasonCode"], json!("IDENTITY_COLLISION"), "{answer}");
    assert_eq!(world.certificate_status(&id).await?.as_deref(), Some("REVOKED"));
    assert_eq!(claim_holder(&world, "moved-2").await?.as_deref(), Some(old.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_an_active_certificate_whose_name_another_holds_is_a_collision() -> TestResult {
    let world = world().await;
    // The name belongs to a live device.
    let owner = world.ca.device("adopted-1").build()?;
    let owner_id = world.first_connection(&owner, "adopted-1").await?;
    let handler = handler(&world, &[]);
    let answer = handler.handle(world.direct_event(&owner_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    // A JITP template (or a hand) attaches another ACTIVE certificate of the
    // same name to the same thing.
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
    let (intruder, intruder_arn) = registered(&world, "adopted-1", IotStatus::Active).await?;
    world
        .iot
        .attach_thing_principal()
        .thing_name("adopted-1")
        .principal(&intruder_arn)
        .send()
        .await?;
    let handler = crate::common::handler(&world, &[]);
    let answer = handler.handle(world.direct_event(&intruder, &world.ca_id)?).await?;
    assert_eq!(answer["reasonCode"], json!("IDENTITY_COLLISION"), "{answer}");
    assert_eq!(world.certificate_status(&intruder).await?.as_deref(), Some("REVOKED"));
    assert_eq!(world.certificate_status(&owner_id).await?.as_deref(), Some("ACTIVE"));
    assert_eq!(
        claim_holder(&world, "adopted-1").await?.as_deref(),
        Some(owner_id.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_certificate_is_left_inactive_and_observed() -> TestResult {
    let world = world().await;
    let (id, _) = registered(&world, "inactive-1", IotStatus::Inactive).await?;
    let answer = handler(&world, &[])
        .handle(world.direct_event(&id, &world.ca_id)?)
        .await?;
    assert_eq!(answer["outcome"], json!("ignored"), "{answer}");
    assert_eq!(answer["certificateStatus"], json!("INACTIVE"), "{answer}");
    assert_eq!(world.certificate_status(&id).await?.as_deref(), Some("INACTIVE"));
    let item = world.inventory_record(&id).await?.ok_or("no record")?;
    assert_eq!(attr(&item, "status"), Some("OBSERVED"));
    assert_eq!(attr(&item, "certificateStatus"), Some("INACTIVE"));
    assert!(!world.thing_exists("inactive-1").await?);
    Ok(())
}

/// A name held for a device revoked in an emergency (`onboard device
/// revoke` marks its claim held) is not taken over by a new certificate of
/// the same name, though its holder is REVOKED: the new one is rejected
/// (`IDENTITY_COLLISION`), the claim stays with the revoked certificate.
/// A revoked holder whose claim is not held still hands the name over (the
/// test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_for_a_revoked_device_is_not_taken_over() -> TestResult {
    use onboarding_domain::{NameClaim, RevocationStore};

    let world = world().await;
    let handler = handler(&world, &[]);
    let (revoked, _) = registered(&world, "held-1", IotStatus::Revoked).await?;
    let inventory = onboarding_aws::DynamoInventory::new(world.dynamodb.clone(), TABLE);
    assert_eq!(
        inventory.hold_thing_name("held-1", &revoked, 1_900_000_000).await?,
        NameClaim::Claimed
    );
    let device = world.ca.device("held-1").build()?;
    let id = world.first_connection(&device, "held-1").await?;
    let answer = handler.handle(world.direct_event(&id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("rejected"), "{answer}");
    assert_eq!(answer["reasonCode"], json!("IDENTITY_COLLISION"), "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("held for revoked")),
        "{answer}"
    );
    assert_eq!(claim_holder(&world, "held-1").await?.as_deref(), Some(revoked.as_str()));
    Ok(())
}
