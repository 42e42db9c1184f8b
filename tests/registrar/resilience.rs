//! Failures part-way, retries converging, and the SQS batch contract.

use std::time::Duration;

use jitr_registrar::FromEnv;
use onboarding_test_support::mqtt::ConnectResult;
use onboarding_test_support::world::{BUCKET, default_profile};
use serde_json::json;

use crate::common::{TestResult, attr, handler, handler_via_proxy, world};

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
    use jitr_registrar::InvocationFailure;
    let diagnostic: lambda_runtime::Diagnostic = error.diagnostic();
    (diagnostic.error_type, diagnostic.error_message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_in_a_batch_is_processed_exactly_once() -> TestResult {
    let world = world().await;
    let (handler, proxy) = crate::common::handler_via_proxy(&world).await;
    let device = world.ca.device("sensor-dup-1").build()?;
    let id = world.first_connection(&device, "sensor-dup-1").await?;
    let body = world.direct_event(&id, &world.ca_id)?.to_string();
    // IoT publishes the event on every connection attempt: three copies in one batch.
    let batch = world.sqs_event(&[body.clone(), body.clone(), body])?;
    let answer = handler.handle(batch).await?;
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(world.certificate_status(&id).await?.as_deref(), Some("ACTIVE"));
    // Processed once: one DescribeCertificate of it, one CreateThing, one activation.
    let requests = proxy.requests();
    let count = |method: &str, prefix: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.target.starts_with(prefix))
            .count()
    };
    assert_eq!(count("GET", &format!("/certificates/{id}")), 1, "DescribeCertificate");
    assert_eq!(count("POST", "/things/sensor-dup-1"), 1, "CreateThing");
    assert_eq!(
        count("PUT", &format!("/certificates/{id}?newStatus=ACTIVE")),
        1,
        "UpdateCertificate ACTIVE"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_redriven_to_the_dlq_after_max_receive_count() -> TestResult {
    let world = world().await;
    let handler = handler(&world, &[]);
    let sqs = aws_sdk_sqs::Client::new(&world.sdk);
    let dlq = sqs.create_queue().queue_name("registrations-dlq").send().await?;
    let dlq_url = dlq.queue_url().ok_or("no DLQ url")?.to_string();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .ok_or("no DLQ ARN")?;
    let queue = sqs
        .create_queue()
        .queue_name("registrations")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}).to_string(),
        )
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "0")
        .send()
        .await?;
    let url = queue.queue_url().ok_or("no queue url")?.to_string();
    let good = world.ca.device("sensor-dlq-1").build()?;
    let good_id = world.first_connection(&good, "sensor-dlq-1").await?;
    sqs.send_message()
        .queue_url(&url)
        .message_body(world.direct_event(&good_id, &world.ca_id)?.to_string())
        .send()
        .await?;
    sqs.send_message()
        .queue_url(&url)
        .message_body("{not json")
        .send()
        .await?;

    // The event-source mapping's part: receive, invoke, delete what succeeded.
    for _ in 0..6 {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<_> = messages
            .iter()
            .map(|m| {
                json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(),
                       "body": m.body(), "eventSource": "aws:sqs"})
            })
            .collect();
        let answer = handler.handle(json!({"Records": records})).await?;
        let failed: Vec<String> = answer["batchItemFailures"]
            .as_array()
            .ok_or("no batchItemFailures")?
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
            .collect();
        for m in &messages {
            if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                sqs.delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await?;
            }
        }
    }
    assert_eq!(world.certificate_status(&good_id).await?.as_deref(), Some("ACTIVE"));
    let dead = sqs
        .receive_message()
        .queue_url(&dlq_url)
        .max_number_of_messages(10)
        .send()
        .await?
        .messages
        .unwrap_or_default();
    let bodies: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, vec!["{not json"], "only the malformed message is dead-lettered");
    let left = sqs
        .receive_message()
        .queue_url(&url)
        .send()
        .await?
        .messages
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing left on the queue: {left:?}");
    Ok(())
}

/// A duplicate of an event whose certificate the registrar activated is
/// answered from the inventory record, without a `DescribeCertificate` (the
/// account's scarcest call); and the record says "activated" only once IoT
/// accepted the activation: when `UpdateCertificate` fails, the retry
/// describes the certificate again and finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_of_an_activated_certificate_spend_no_describe_and_only_a_confirmed_activation_counts() -> TestResult
{
    let world = world().await;
    let device = world.ca.device("sensor-dup-1").build()?;
    let certificate_id = world.first_connection(&device, "sensor-dup-1").await?;
    let event = world.direct_event(&certificate_id, &world.ca_id)?;
    let (handler, proxy) = handler_via_proxy(&world).await;
    let describes = |proxy: &onboarding_test_support::proxy::Proxy| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.target.starts_with(&format!("/certificates/{certificate_id}")))
            .count()
    };

    // The activation fails (after every other step succeeded): the record is
    // written, but not marked activated, and the certificate stays pending.
    // Every attempt the SDK makes fails.
    proxy.fail("newStatus=ACTIVE", 6);
    assert!(
        handler.handle(event.clone()).await.is_err(),
        "the failed activation fails the event"
    );
    proxy.clear_failures();
    assert_eq!(
        world.certificate_status(&certificate_id).await?.as_deref(),
        Some("PENDING_ACTIVATION")
    );
    let item = world.inventory_record(&certificate_id).await?.ok_or("no record")?;
    assert_eq!(attr(&item, "status"), Some("PROVISIONED"));
    assert_eq!(attr(&item, "activatedAt"), None, "not activated, not marked");
    assert_eq!(describes(&proxy), 1);

    // The retry cannot trust the provisioned record: it describes, and activates.
    let answer = handler.handle(event.clone()).await?;
    assert_eq!(answer["outcome"], json!("provisioned"), "{answer}");
    assert_eq!(describes(&proxy), 2);
    assert_eq!(
        world.certificate_status(&certificate_id).await?.as_deref(),
        Some("ACTIVE")
    );
    let item = world.inventory_record(&certificate_id).await?.ok_or("no record")?;
    assert!(
        attr(&item, "activatedAt").is_some(),
        "marked once IoT took it: {item:?}"
    );

    // Duplicates now end at the record: no describe, nothing else written.
    proxy.clear();
    for _ in 0..3 {
        let answer = handler.handle(event.clone()).await?;
        assert_eq!(answer["outcome"], json!("duplicate"), "{answer}");
    }
    let calls: Vec<String> = proxy.requests().iter().map(|r| r.operation()).collect();
    assert_eq!(describes(&proxy), 0, "{calls:?}");
    assert!(
        calls.iter().all(|op| op == "GetItem"),
        "only the record is read: {calls:?}"
    );
    assert_eq!(world.connect(&device, "sensor-dup-1").await?, ConnectResult::Accepted);
    Ok(())
}

/// Two deliveries of one event race: B reads the (not yet written) record,
/// then A provisions and activates, then B describes the certificate ACTIVE.
/// B must not take it for a certificate made by other means (recorded as
/// "ACTIVE before onboarding", its credentials pointer dropped): it reads the
/// record again and finds a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_saw_no_record_and_then_an_active_certificate_is_a_duplicate() -> TestResult {
    let world = world().await;
    let device = world.ca.device("sensor-race-1").build()?;
    let certificate_id = world.first_connection(&device, "sensor-race-1").await?;
    let event = world.direct_event(&certificate_id, &world.ca_id)?;
    // B's every call is held 2 s before it reaches the emulator: its record
    // read sees the table at 2 s, its describe sees IoT at about 4 s.
    let slow =
        onboarding_test_support::proxy::Proxy::start(world.emulator.gateway_port, Duration::from_secs(2)).await?;
    let env: std::collections::HashMap<String, String> = world.registrar_env().into_iter().collect();
    let settings = jitr_registrar::Settings::from_lookup(|k| env.get(k).cloned())?;
    let b = jitr_registrar::build(
        &settings,
        &onboarding_test_support::emulator::sdk_config_for(&slow.endpoint()).await,
    );
    b.registrar().warm_up().await?;
    slow.clear();
    let b_event = event.clone();
    let b_run = tokio::spawn(async move { b.handle(b_event).await });
    // A provisions in between, straight against the emulator.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let a = handler(&world, &[]).handle(event).await?;
    assert_eq!(a["outcome"], json!("provisioned"), "{a}");
    let b_answer = b_run.await.map_err(|e| e.to_string())??;
    let first_read = slow
        .requests()
        .iter()
        .find(|r| r.operation() == "GetItem")
        .map(|r| r.received);
    let describe = slow
        .requests()
        .iter()
        .find(|r| r.method == "GET" && r.target.starts_with("/certificates/"))
        .map(|r| r.received);
    assert!(
        matches!((first_read, describe), (Some(read), Some(described)) if read < described),
        "B read the record, then described: {first_read:?} {describe:?}"
    );
    assert_eq!(b_answer["outcome"], json!("duplicate"), "{b_answer}");
    let item = world.inventory_record(&certificate_id).await?.ok_or("no record")?;
    assert_eq!(attr(&item, "status"), Some("PROVISIONED"));
    assert!(
        attr(&item, "credentialsKey").is_some(),
        "the credentials pointer stays: {item:?}"
    );
    assert_eq!(
        attr(&item, "reasonDetail"),
        None,
        "not taken for a certificate made by hand: {item:?}"
    );
    Ok(())
}
