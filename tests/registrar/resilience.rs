//! Failures part-way, retries converging, and the SQS batch contract.

use onboarding_test_support::mqtt::ConnectResult;
use onboarding_test_support::world::{BUCKET, default_profile};
use serde_json::json;

use crate::common::{TestResult, handler, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_some_steps_leaves_nothing_active_and_a_retry_completes() -> TestResult {
    let world = world().await;
    // A profile naming a thing group that does not exist yet: the failure
    // comes in the third round, after the thing was created.
    let mut profile = default_profile();
    profile["name"] = json!("late-groups");
    profile["thingGroups"] = json!(["fleet", "late-group"]);
    world.put_profile(&profile).await?;
    world.bind(&world.ca_id, "late-groups").await?;

    let device = world.ca.device("sensor-late-1").build()?;
    let certificate_id = world.first_connection(&device, "sensor-late-1").await?;
    let event = world.direct_event(&certificate_id, &world.ca_id)?;
    let error = handler(&world, &[])
        .handle(event.clone())
        .await
        .err()
        .ok_or("the first attempt should fail")?;
    assert!(error.to_string().contains("AddThingToThingGroup"), "{error}");
    assert_eq!(
        world.certificate_status(&certificate_id).await?.as_deref(),
        Some("PENDING_ACTIVATION")
    );
    assert_ne!(world.connect(&device, "sensor-late-1").await?, ConnectResult::Accepted);

    // The operator creates the group; the retry converges.
    world
        .iot
        .create_thing_group()
        .thing_group_name("late-group")
        .send()
        .await?;
    let answer = handler(&world, &[]).handle(event).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    assert_eq!(
        world.certificate_status(&certificate_id).await?.as_deref(),
        Some("ACTIVE")
    );
    let groups = world
        .iot
        .list_thing_groups_for_thing()
        .thing_name("sensor-late-1")
        .send()
        .await?;
    assert_eq!(groups.thing_groups.unwrap_or_default().len(), 2);
    assert_eq!(world.connect(&device, "sensor-late-1").await?, ConnectResult::Accepted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_closed_and_the_retry_converges() -> TestResult {
    let world = world().await;
    let device = world.ca.device("sensor-s3-1").build()?;
    let certificate_id = world.first_connection(&device, "sensor-s3-1").await?;
    let event = world.direct_event(&certificate_id, &world.ca_id)?;
    let missing = handler(&world, &[("CREDENTIALS_BUCKET", "not-created-yet")]);
    let error = missing
        .handle(event.clone())
        .await
        .err()
        .ok_or("the first attempt should fail")?;
    assert!(error.to_string().contains("PutObject"), "{error}");
    assert_eq!(
        world.certificate_status(&certificate_id).await?.as_deref(),
        Some("PENDING_ACTIVATION")
    );

    world.s3.create_bucket().bucket("not-created-yet").send().await?;
    let answer = missing.handle(event).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    assert_eq!(
        world.certificate_status(&certificate_id).await?.as_deref(),
        Some("ACTIVE")
    );
    let key = format!("credentials/sensor-s3-1/{certificate_id}.json");
    assert!(
        world
            .s3
            .head_object()
            .bucket("not-created-yet")
            .key(&key)
            .send()
            .await
            .is_ok()
    );
    assert!(world.s3.head_object().bucket(BUCKET).key(&key).send().await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_batch_reports_only_its_bad_messages() -> TestResult {
    let world = world().await;
    let handler = handler(&world, &[]);
    let good = world.ca.device("sensor-sqs-1").build()?;
    let good_id = world.first_connection(&good, "sensor-sqs-1").await?;
    let good_body = world.direct_event(&good_id, &world.ca_id)?.to_string();
    // IoT publishes the event again on every connection attempt.
    let repeat_body = good_body.clone();

    // A device whose provisioning fails (its profile names a missing group).
    let failing_ca = onboarding_test_support::TestCa::new("Failing CA")?;
    let failing_ca_id = world.register_ca(&failing_ca).await?;
    let mut profile = default_profile();
    profile["name"] = json!("broken-groups");
    profile["thingGroups"] = json!(["no-such-group"]);
    world.put_profile(&profile).await?;
    world.bind(&failing_ca_id, "broken-groups").await?;
    let failing = failing_ca.device("sensor-sqs-2").build()?;
    let failing_id = world.first_connection(&failing, "sensor-sqs-2").await?;
    let failing_body = world.direct_event(&failing_id, &failing_ca_id)?.to_string();

    let batch = world.sqs_event(&[good_body, "{not json".to_string(), repeat_body, failing_body])?;
    let answer = handler.handle(batch).await?;
    let mut failed: Vec<String> = answer["batchItemFailures"]
        .as_array()
        .ok_or("no batchItemFailures")?
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["m1".to_string(), "m3".to_string()], "{answer}");
    assert_eq!(world.certificate_status(&good_id).await?.as_deref(), Some("ACTIVE"));
    assert_eq!(
        world.certificate_status(&failing_id).await?.as_deref(),
        Some("PENDING_ACTIVATION")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_certificates_not_pending_change_nothing() -> TestResult {
    let world = world().await;
    let handler = handler(&world, &[]);
    // Revoked by an operator before the event was processed.
    let device = world.ca.device("sensor-rev-1").build()?;
    let certificate_id = world.first_connection(&device, "sensor-rev-1").await?;
    world
        .iot
        .update_certificate()
        .certificate_id(&certificate_id)
        .new_status("REVOKED".into())
        .send()
        .await?;
    let answer = handler
        .handle(world.direct_event(&certificate_id, &world.ca_id)?)
        .await?;
    assert_eq!(
        answer,
        json!({"outcome": "ignored", "thingName": null, "certificateStatus": "REVOKED"})
    );
    assert!(!world.thing_exists("sensor-rev-1").await?);
    let item = world.inventory_record(&certificate_id).await?.ok_or("no record")?;
    assert_eq!(
        item.get("status").and_then(|v| v.as_s().ok()).map(String::as_str),
        Some("OBSERVED")
    );
    // A certificate IoT does not know.
    let unknown = "f".repeat(64);
    let answer = handler.handle(world.direct_event(&unknown, &world.ca_id)?).await?;
    assert_eq!(answer["certificateStatus"], json!("NOT_FOUND"));
    // A malformed direct event is a permanent failure, not a panic.
    let error = handler
        .handle(json!({"certificateId": 42}))
        .await
        .err()
        .ok_or("should fail")?;
    assert!(
        matches!(error, jitr_registrar::InvocationError::Malformed(_)),
        "{error}"
    );
    let diagnostic = lambda_runtime_diagnostic(error);
    assert_eq!(diagnostic.0, "MalformedEvent");
    Ok(())
}

fn lambda_runtime_diagnostic(error: jitr_registrar::InvocationError) -> (String, String) {
    let diagnostic: lambda_runtime::Diagnostic = error.into();
    (diagnostic.error_type, diagnostic.error_message)
}
