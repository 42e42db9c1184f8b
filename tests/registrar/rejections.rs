//! Every rejection class: the certificate ends REVOKED (or INACTIVE, per
//! profile), no thing is created, and the inventory records the reason.
//! (`THING_TYPE_MISMATCH` and `IDENTITY_COLLISION` need an existing thing:
//! `trust.rs` and below.)
//!
//! SHA-1 signatures are covered by the domain tests only: the emulator
//! refuses to hold a SHA-1-signed certificate under a CA at all
//! (`CertificateValidationException` on registration), so such a
//! certificate cannot reach the registrar here.

use futures::future::join_all;
use onboarding_test_support::certs::DeviceCert;
use onboarding_test_support::mqtt::ConnectResult;
use onboarding_test_support::rcgen::{DnType, ExtendedKeyUsagePurpose};
use onboarding_test_support::world::{PROFILE, World, WorldError, certificate_id};
use onboarding_test_support::{KeyAlg, TestCa};
use serde_json::json;

use crate::common::{TestResult, attr, handler, world};

/// How a case's certificate reaches PENDING_ACTIVATION.
enum Arrival {
    /// A real first MQTT connection under the world's CA (or the given CA);
    /// if the emulator's TLS layer refuses the certificate first, it is staged.
    Connect,
    /// Staged through the control plane under this CA (`None`: no CA).
    Stage(Option<String>),
}

struct Case {
    name: &'static str,
    device: DeviceCert,
    /// The CA id the event names.
    ca_id: String,
    arrival: Arrival,
    reason: &'static str,
    status: &'static str,
    /// A thing name that must not exist afterwards.
    would_be_thing: Option<String>,
}

async fn make_pending(world: &World, case: &Case) -> Result<String, WorldError> {
    match &case.arrival {
        Arrival::Connect => {
            let result = world.connect(&case.device, case.name).await?;
            if result == ConnectResult::Accepted {
                return Err(format!("{}: accepted on its first connection", case.name).into());
            }
            let id = certificate_id(&case.device);
            if world.certificate_status(&id).await?.as_deref() == Some("PENDING_ACTIVATION") {
                return Ok(id);
            }
            // Refused before JITR by the broker (as AWS IoT may do too); the
            // registrar must still refuse it if it ever arrives.
            let ca_pem = world.ca.cert_pem.clone();
            world.stage_pending(&case.device.cert_pem, Some(&ca_pem)).await
        }
        Arrival::Stage(ca_pem) => world.stage_pending(&case.device.cert_pem, ca_pem.as_deref()).await,
    }
}

async fn run_case(world: &World, case: &Case) -> Result<(), WorldError> {
    let certificate_id = make_pending(world, case).await?;
    // CA_MISMATCH and CA_NOT_BOUND are produced only when the operator chose
    // to revoke certificates that are not this deployment's to judge (by
    // default they are left alone: tests/registrar/trust.rs).
    let handler = handler(world, &[("REVOKE_FOREIGN_CERTIFICATES", "true")]);
    let answer = handler
        .handle(world.direct_event(&certificate_id, &case.ca_id)?)
        .await?;
    let context = format!("case {}: {answer}", case.name);
    if answer["outcome"] != json!("rejected") || answer["reasonCode"] != json!(case.reason) {
        return Err(format!("{context}: expected rejection {}", case.reason).into());
    }
    let status = world.certificate_status(&certificate_id).await?;
    if status.as_deref() != Some(case.status) {
        return Err(format!("{context}: certificate is {status:?}, expected {}", case.status).into());
    }
    if let Some(thing) = &case.would_be_thing
        && world.thing_exists(thing).await?
    {
        return Err(format!("{context}: thing {thing} exists").into());
    }
    let item = world
        .inventory_record(&certificate_id)
        .await?
        .ok_or(format!("{context}: no inventory record"))?;
    if attr(&item, "status") != Some("REJECTED") || attr(&item, "reasonCode") != Some(case.reason) {
        return Err(format!("{context}: inventory record {item:?}").into());
    }
    if attr(&item, "certificateStatus") != Some(case.status) || attr(&item, "expiryShard").is_some() {
        return Err(format!("{context}: inventory record {item:?}").into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_class_is_refused_and_recorded() -> TestResult {
    let world = world().await;
    let ca = &world.ca;
    let ca_id = world.ca_id.clone();
    let ca_pem = Some(ca.cert_pem.clone());

    // A second CA, registered with auto-registration but bound to no profile.
    let unbound = TestCa::new("Unbound Vendor CA")?;
    let unbound_id = world.register_ca(&unbound).await?;
    // A CA bound to a profile that sets rejected certificates INACTIVE.
    let lenient = TestCa::new("Refurbished Devices CA")?;
    let lenient_id = world.register_ca(&lenient).await?;
    let mut inactive_profile = onboarding_test_support::world::default_profile();
    inactive_profile["name"] = json!("refurbished");
    inactive_profile["rejectionAction"] = json!("INACTIVE");
    world.put_profile(&inactive_profile).await?;
    world.bind(&lenient_id, "refurbished").await?;
    // A denied serial, a denied fingerprint, and a serial denied by an entry
    // of the earlier layout (in the CONFIG partition, written by hand in
    // another notation): it must still deny.
    world.deny_serial(&ca_id, "0badc0de").await?;
    let denied_by_fingerprint = ca.device("denied-2").build()?;
    world.deny_fingerprint(&certificate_id(&denied_by_fingerprint)).await?;
    world.deny_legacy(&format!("DENY#SERIAL#{ca_id}#0B:AD:C0:DF")).await?;
    // A P-384 CA bound to the default profile, whose device certificate is
    // signed under ecdsa-with-SHA3-384: a good signature (IoT registers it),
    // in an algorithm the registrar does not accept.
    let p384 = TestCa::with_key("Acme P-384 Device CA", KeyAlg::P384)?;
    let p384_id = world.register_ca(&p384).await?;
    world.bind(&p384_id, PROFILE).await?;
    let sha3_signed = p384.resign_ecdsa_sha3_384(&p384.device("sha3-1").key(KeyAlg::P384).build()?)?;
    // A look-alike CA: the same subject DN as the real one, another key.
    let lookalike = TestCa::new("Acme Device CA")?;
    let forged = lookalike.device("forged-1").build()?;
    // The broker itself refuses it and registers nothing: IoT checks the
    // signature too. The registrar must still refuse it if it ever arrives.
    assert_ne!(world.connect(&forged, "forged-1").await?, ConnectResult::Accepted);
    assert_eq!(
        world.certificate_status(&certificate_id(&forged)).await?,
        None,
        "no certificate registered"
    );

    let long = "a".repeat(129);
    let case = |name, device, arrival, reason, would_be: Option<&str>| Case {
        name,
        device,
        ca_id: ca_id.clone(),
        arrival,
        reason,
        status: "REVOKED",
        would_be_thing: would_be.map(str::to_string),
    };
    let cases = vec![
        case(
            "expired",
            ca.device("expired-1").valid_days(-400, -1).build()?,
            Arrival::Stage(ca_pem.clone()),
            "EXPIRED",
            Some("expired-1"),
        ),
        case(
            "not-yet-valid",
            ca.device("future-1").valid_days(2, 400).build()?,
            Arrival::Stage(ca_pem.clone()),
            "NOT_YET_VALID",
            Some("future-1"),
        ),
        case(
            "short-life",
            ca.device("short-1").valid_days(-1, 10).build()?,
            Arrival::Connect,
            "INSUFFICIENT_REMAINING_VALIDITY",
            Some("short-1"),
        ),
        case(
            "ca-true",
            ca.device("ca-leaf-1").ca(true).build()?,
            Arrival::Connect,
            "CERTIFICATE_IS_CA",
            Some("ca-leaf-1"),
        ),
        case(
            "rsa-1024",
            ca.device("rsa1024-1").key(KeyAlg::Rsa1024).build()?,
            Arrival::Stage(ca_pem.clone()),
            "WEAK_KEY",
            Some("rsa1024-1"),
        ),
        case(
            "p521-key",
            ca.device("p521-1").key(KeyAlg::P521).build()?,
            Arrival::Connect,
            "UNSUPPORTED_KEY",
            Some("p521-1"),
        ),
        case(
            "eku-server-only",
            ca.device("eku-1")
                .eku(Some(vec![ExtendedKeyUsagePurpose::ServerAuth]))
                .build()?,
            Arrival::Connect,
            "EXTENDED_KEY_USAGE_INVALID",
            Some("eku-1"),
        ),
        case(
            "missing-cn",
            ca.device("x").subject(&[(DnType::OrganizationName, "Acme")]).build()?,
            Arrival::Connect,
            "THING_NAME_MISSING",
            None,
        ),
        case(
            "cn-space",
            ca.device("sensor 7").build()?,
            Arrival::Connect,
            "THING_NAME_INVALID",
            None,
        ),
        case(
            "cn-slash",
            ca.device("sensor/7").build()?,
            Arrival::Connect,
            "THING_NAME_INVALID",
            None,
        ),
        case(
            "cn-129",
            ca.device(&long).build()?,
            Arrival::Connect,
            "THING_NAME_INVALID",
            None,
        ),
        case(
            "unfit-attribute",
            ca.device("attr-1")
                .with(DnType::OrganizationName, "Acme Corp")
                .build()?,
            Arrival::Connect,
            "ATTRIBUTE_INVALID",
            Some("attr-1"),
        ),
        case(
            "denied-serial",
            ca.device("denied-1").serial(&[0x0b, 0xad, 0xc0, 0xde]).build()?,
            Arrival::Connect,
            "SERIAL_DENIED",
            Some("denied-1"),
        ),
        case(
            "denied-fingerprint",
            denied_by_fingerprint,
            Arrival::Connect,
            "FINGERPRINT_DENIED",
            Some("denied-2"),
        ),
        case(
            "denied-serial-old-layout",
            ca.device("denied-3").serial(&[0x0b, 0xad, 0xc0, 0xdf]).build()?,
            Arrival::Connect,
            "SERIAL_DENIED",
            Some("denied-3"),
        ),
        Case {
            ca_id: p384_id.clone(),
            ..case(
                "sha3-signature",
                sha3_signed,
                Arrival::Stage(Some(p384.cert_pem.clone())),
                "UNSUPPORTED_SIGNATURE_ALGORITHM",
                Some("sha3-1"),
            )
        },
        // basicConstraints twice: RFC 5280 forbids it; IoT holds it, the
        // registrar's strict parse refuses it.
        case(
            "duplicate-extension",
            ca.device("dup-ext-1")
                .extension(&[2, 5, 29, 19], &[0x30, 0x00])
                .build()?,
            Arrival::Stage(ca_pem.clone()),
            "CERTIFICATE_MALFORMED",
            Some("dup-ext-1"),
        ),
        // Registered without a CA, as IoT would never link it to ours; the event claims our CA.
        case(
            "forged",
            forged.clone(),
            Arrival::Stage(None),
            "CA_MISMATCH",
            Some("forged-1"),
        ),
        Case {
            ca_id: unbound_id.clone(),
            ..case(
                "unbound-ca",
                unbound.device("unbound-1").build()?,
                Arrival::Connect,
                "CA_NOT_BOUND",
                Some("unbound-1"),
            )
        },
        Case {
            ca_id: lenient_id.clone(),
            status: "INACTIVE",
            ..case(
                "inactive-action",
                lenient.device("refurb-1").valid_days(-1, 5).build()?,
                Arrival::Connect,
                "INSUFFICIENT_REMAINING_VALIDITY",
                Some("refurb-1"),
            )
        },
    ];
    let results = join_all(cases.iter().map(|case| run_case(&world, case))).await;
    let failures: Vec<String> = cases
        .iter()
        .zip(results)
        .filter_map(|(case, r)| r.err().map(|e| format!("{}: {e:?}", case.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // No rejection created any thing.
    let things = world.iot.list_things().send().await?.things.unwrap_or_default();
    assert!(things.is_empty(), "things exist after rejections only: {things:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_never_takes_over_an_identity() -> TestResult {
    let world = world().await;
    let handler = handler(&world, &[]);
    let first = world.ca.device("shared-name-1").build()?;
    let first_id = world.first_connection(&first, "shared-name-1").await?;
    let answer = handler.handle(world.direct_event(&first_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"));

    // Another key, another certificate, the same CN.
    let impostor = world.ca.device("shared-name-1").build()?;
    let impostor_id = world.first_connection(&impostor, "shared-name-1").await?;
    let answer = handler.handle(world.direct_event(&impostor_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("rejected"), "{answer}");
    assert_eq!(answer["reasonCode"], json!("IDENTITY_COLLISION"));
    assert_eq!(
        world.certificate_status(&impostor_id).await?.as_deref(),
        Some("REVOKED")
    );
    assert_eq!(world.certificate_status(&first_id).await?.as_deref(), Some("ACTIVE"));
    let principals = world
        .iot
        .list_thing_principals()
        .thing_name("shared-name-1")
        .send()
        .await?;
    let principals = principals.principals.unwrap_or_default();
    assert_eq!(principals.len(), 1);
    assert!(principals[0].ends_with(&first_id));
    let item = world.inventory_record(&impostor_id).await?.ok_or("no record")?;
    assert_eq!(attr(&item, "reasonCode"), Some("IDENTITY_COLLISION"));
    // The original device still gets in; the impostor does not.
    assert_eq!(world.connect(&first, "shared-name-1").await?, ConnectResult::Accepted);
    assert_ne!(
        world.connect(&impostor, "shared-name-1").await?,
        ConnectResult::Accepted
    );

    // A thing made by other means with an ACTIVE certificate attached is
    // protected too, even without a name claim in the inventory.
    let other = world.ca.device("console-made-1").build()?;
    let other_id = world.stage_pending(&other.cert_pem, Some(&world.ca.cert_pem)).await?;
    world
        .iot
        .update_certificate()
        .certificate_id(&other_id)
        .new_status("ACTIVE".into())
        .send()
        .await?;
    world
        .iot
        .create_thing()
        .thing_name("console-made-1")
        .thing_type_name("sensor")
        .send()
        .await?;
    let other_arn = format!("arn:aws:iot:us-east-1:000000000000:cert/{other_id}");
    world
        .iot
        .attach_thing_principal()
        .thing_name("console-made-1")
        .principal(&other_arn)
        .send()
        .await?;
    let claimant = world.ca.device("console-made-1").build()?;
    let claimant_id = world.first_connection(&claimant, "console-made-1").await?;
    let answer = handler.handle(world.direct_event(&claimant_id, &world.ca_id)?).await?;
    assert_eq!(answer["reasonCode"], json!("IDENTITY_COLLISION"), "{answer}");
    assert_eq!(
        world.certificate_status(&claimant_id).await?.as_deref(),
        Some("REVOKED")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bound_after_the_configuration_was_cached_is_not_rejected() -> TestResult {
    let world = world().await;
    let handler = handler(&world, &[]);
    // Warm: the configuration (60 s TTL) is cached without the new CA.
    let first = world.ca.device("cached-1").build()?;
    let first_id = world.first_connection(&first, "cached-1").await?;
    let answer = handler.handle(world.direct_event(&first_id, &world.ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");

    // A second CA registered and bound a moment later: its first device
    // must not be revoked as CA_NOT_BOUND from the stale cache.
    let new_ca = onboarding_test_support::TestCa::new("Second Line CA")?;
    let new_ca_id = world.register_ca(&new_ca).await?;
    world.bind(&new_ca_id, "sensors").await?;
    let device = new_ca.device("cached-2").build()?;
    let device_id = world.first_connection(&device, "cached-2").await?;
    let answer = handler.handle(world.direct_event(&device_id, &new_ca_id)?).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    assert_eq!(world.certificate_status(&device_id).await?.as_deref(), Some("ACTIVE"));

    // And an unbinding is seen at once for rejections too: the fresh
    // configuration decides, in both directions.
    let stray_ca = onboarding_test_support::TestCa::new("Stray CA")?;
    let stray_ca_id = world.register_ca(&stray_ca).await?;
    let stray = stray_ca.device("cached-3").build()?;
    let stray_id = world.first_connection(&stray, "cached-3").await?;
    let answer = handler.handle(world.direct_event(&stray_id, &stray_ca_id)?).await?;
    assert_eq!(answer["reasonCode"], json!("CA_NOT_BOUND"), "{answer}");
    Ok(())
}
