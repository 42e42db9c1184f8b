//! The main job, locally: the JITR registrar onboarding devices in the local
//! AWS emulator, wired as the deployment wires it.
//!
//! Devices make real MQTT-over-mTLS first connections; IoT auto-registers
//! their certificates and publishes certificate-registered events; an IoT
//! rule sends them to an SQS queue; batches from the queue go through the
//! registrar's handler exactly as a Lambda event-source mapping delivers them
//! (messages it does not report as failed are deleted). Then every device
//! connects again, and the table shows who got in.
//!
//! Run with `scripts/demo.sh`.

#![recursion_limit = "256"]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_iot::types::{Action, SqsAction, TopicRulePayload};
use onboarding_test_support::mqtt::ConnectResult;
use onboarding_test_support::rcgen::DnType;
use onboarding_test_support::world::{World, certificate_id};
use onboarding_test_support::{DeviceCert, TestCa};
use serde_json::{Value, json};

type DemoError = Box<dyn std::error::Error + Send + Sync>;

struct Device {
    label: &'static str,
    name: String,
    cert: DeviceCert,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), DemoError> {
    let started = Instant::now();
    println!("Starting the local AWS emulator (ministack, AUTH=true, loopback only)…");
    let world = World::new().await?;
    println!(
        "  endpoint {}  MQTT 127.0.0.1:{}",
        world.emulator.endpoint, world.emulator.mqtt_port
    );
    println!(
        "  CA {}… registered with auto-registration, bound to profile \"sensors\"",
        &world.ca_id[..12]
    );

    // The JITR path: rule → SQS.
    let sqs = aws_sdk_sqs::Client::new(&world.sdk);
    let iam = aws_sdk_iam::Client::new(&world.sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name("jitr-registrations")
        .send()
        .await?
        .queue_url
        .ok_or("no queue URL")?;
    let role = iam
        .create_role()
        .role_name("iot-rule-to-sqs")
        .assume_role_policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
                .to_string(),
        )
        .send()
        .await?;
    let role_arn = role.role.map(|r| r.arn).ok_or("no role")?;
    iam.put_role_policy()
        .role_name("iot-rule-to-sqs")
        .policy_name("send")
        .policy_document(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}).to_string())
        .send()
        .await?;
    world
        .iot
        .create_topic_rule()
        .rule_name("jitr_registrations")
        .topic_rule_payload(
            TopicRulePayload::builder()
                .sql("SELECT * FROM '$aws/events/certificates/registered/#'")
                .aws_iot_sql_version("2016-03-23")
                .actions(
                    Action::builder()
                        .sqs(SqsAction::builder().queue_url(&queue_url).role_arn(&role_arn).build()?)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await?;
    println!("  IoT rule $aws/events/certificates/registered/# → SQS jitr-registrations");

    // The fleet: good devices and bad ones.
    let unbound = TestCa::new("Grey Market CA")?;
    world.register_ca(&unbound).await?;
    let ca = &world.ca;
    let mut devices = Vec::new();
    for n in 1..=5 {
        let name = format!("sensor-{n:05}");
        let cert = ca
            .device(&name)
            .with(DnType::OrganizationName, "Acme")
            .with(DnType::OrganizationalUnitName, "TH-200")
            .build()?;
        devices.push(Device {
            label: "good",
            name,
            cert,
        });
    }
    devices.push(Device {
        label: "name with a space",
        name: "sensor 00006".into(),
        cert: ca.device("sensor 00006").build()?,
    });
    devices.push(Device {
        label: "expires in 10 days",
        name: "sensor-00007".into(),
        cert: ca.device("sensor-00007").valid_days(-1, 10).build()?,
    });
    devices.push(Device {
        label: "unbound CA",
        name: "sensor-00008".into(),
        cert: unbound.device("sensor-00008").build()?,
    });
    let impostor = ca.device("sensor-00001").build()?;

    println!("\nFirst connections ({} devices)…", devices.len());
    for device in &devices {
        let result = world.connect(&device.cert, &device.name).await?;
        if result == ConnectResult::Accepted {
            return Err(format!("{} got in before onboarding", device.name).into());
        }
    }

    let settings = jitr_registrar::Settings::from_lookup({
        let env: HashMap<String, String> = world.registrar_env().into_iter().collect();
        move |k| env.get(k).cloned()
    })?;
    let handler = jitr_registrar::build_handler(&settings, &world.sdk).without_metrics();
    let processed = drain(&sqs, &queue_url, &handler, devices.len()).await?;
    println!("  {processed} registration events delivered rule → SQS → registrar");

    // The impostor: another key claiming sensor-00001 after it was onboarded.
    world.connect(&impostor, "sensor-00001").await?;
    drain(&sqs, &queue_url, &handler, 1).await?;

    println!("\nSecond connections…\n");
    println!(
        "{:<14} {:<20} {:<10} {:<40} {:<12} thing",
        "device", "kind", "status", "inventory", "reconnect"
    );
    let rows = devices.iter().map(|d| (d.name.as_str(), d.label, &d.cert)).chain([(
        "sensor-00001",
        "impostor (same CN)",
        &impostor,
    )]);
    let mut provisioned = 0;
    let mut rejected = 0;
    for (name, label, cert) in rows {
        let id = certificate_id(cert);
        let status = world.certificate_status(&id).await?.unwrap_or_else(|| "absent".into());
        let record = world.inventory_record(&id).await?.unwrap_or_default();
        let get = |k: &str| record.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let inventory = match get("status").as_str() {
            "REJECTED" => format!("REJECTED {}", get("reasonCode")),
            other => other.to_string(),
        };
        match get("status").as_str() {
            "PROVISIONED" => provisioned += 1,
            "REJECTED" => rejected += 1,
            _ => {}
        }
        let reconnect = match world.connect(cert, name).await? {
            ConnectResult::Accepted => "accepted",
            _ => "refused",
        };
        let thing = if world.thing_exists(name).await.unwrap_or(false) && get("status") == "PROVISIONED" {
            get("thingName")
        } else {
            "-".into()
        };
        println!("{name:<14} {label:<20} {status:<10} {inventory:<40} {reconnect:<12} {thing}");
    }
    println!(
        "\n{provisioned} provisioned, {rejected} rejected, in {:.1} s. The emulator stops now.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Delivers queued registration events to the handler as an event-source
/// mapping would, deleting the messages it does not report as failed.
async fn drain(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    handler: &jitr_registrar::AwsHandler,
    expected: usize,
) -> Result<usize, DemoError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    while done < expected && Instant::now() < deadline {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| json!({"messageId": m.message_id, "body": m.body, "eventSource": "aws:sqs", "receiptHandle": m.receipt_handle}))
            .collect();
        let answer = handler.handle(json!({ "Records": records })).await?;
        let failed: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x["itemIdentifier"].as_str()).collect())
            .unwrap_or_default();
        for message in &messages {
            if failed.contains(&message.message_id.as_deref().unwrap_or_default()) {
                continue;
            }
            if let Some(handle) = &message.receipt_handle {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
            done += 1;
        }
    }
    Ok(done)
}
