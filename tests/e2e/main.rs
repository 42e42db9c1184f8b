//! End to end: `infra/template.yaml` deployed into the emulator (AUTH=true)
//! through CloudFormation with the SAM transform, and real MQTT devices
//! (rumqttc, rustls, mutual TLS) onboarding through the deployed
//! IoT rule → SQS → event-source mapping → jitr-registrar path.
//!
//! Needs the functions' Lambda zips (`cargo lambda build --release
//! --output-format zip --lambda-dir target/lambda/x86_64`); `scripts/test.sh`
//! builds them first.

#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use aws_sdk_s3::types::ServerSideEncryption;
use futures::future::join_all;
use onboarding_test_support::deployment::{DeployOptions, Deployment};
use onboarding_test_support::mqtt::{ConnectResult, client_config, connect_once};
use onboarding_test_support::world::{WorldError, certificate_id};
use onboarding_test_support::{DeviceCert, TestCa};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};

type TestResult = Result<(), WorldError>;

/// How long a device keeps retrying before it gives up.
const ONBOARDING_DEADLINE: Duration = Duration::from_secs(120);
/// The deployment's `StuckAfterSeconds`: short, so that a test can wait it out.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// The template's parameters for these tests.
fn options() -> DeployOptions {
    DeployOptions::default().parameter("StuckAfterSeconds", &STUCK_AFTER.as_secs().to_string())
}

async fn deployment() -> Deployment {
    match Deployment::new(options()).await {
        Ok(d) => d,
        Err(e) => panic!("could not deploy infra/template.yaml into the emulator: {e:?}"),
    }
}

/// A device's MQTT session through rumqttc.
struct Session {
    client: AsyncClient,
    events: EventLoop,
}

impl Session {
    /// Connects once; `Ok(None)` when the broker drops or refuses the connection.
    async fn connect(d: &Deployment, device: &DeviceCert, client_id: &str) -> Result<Option<Self>, WorldError> {
        let key = device.key_pem.as_deref().ok_or("device without key")?;
        let tls = client_config(&d.server_ca_pem, &device.cert_pem, key)?;
        let mut options = MqttOptions::new(client_id, "127.0.0.1", d.emulator.mqtt_port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        let (client, mut events) = AsyncClient::new(options, 10);
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {
                Ok(Some(Self { client, events }))
            }
            Ok(_) => Ok(None),
            Err(_) => Err(format!("{client_id}: no answer to CONNECT").into()),
        }
    }

    /// Reconnects with exponential backoff until connected or the deadline passes.
    async fn connect_with_backoff(d: &Deployment, device: &DeviceCert, client_id: &str) -> Result<Self, WorldError> {
        let deadline = Instant::now() + ONBOARDING_DEADLINE;
        let mut delay = Duration::from_millis(200);
        loop {
            if let Some(session) = Self::connect(d, device, client_id).await? {
                return Ok(session);
            }
            if Instant::now() > deadline {
                return Err(format!("{client_id} was not let in within {ONBOARDING_DEADLINE:?}").into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }

    /// Publishes at QoS 1; true when the broker acknowledges, false when it
    /// closes the connection instead.
    async fn publish(&mut self, topic: &str) -> Result<bool, WorldError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, br#"{"temperature":21.5}"#.to_vec())
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), self.events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return Ok(true),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Ok(false),
                Err(_) => break,
            }
        }
        Err(format!("no answer to a publish on {topic}").into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_onboards_through_the_deployed_stack() -> TestResult {
    let d = deployment().await;
    let device =
        d.ca.device("e2e-sensor-1")
            .with(onboarding_test_support::rcgen::DnType::OrganizationName, "Acme")
            .build()?;
    let id = certificate_id(&device);

    // The first connection of a new certificate is dropped (JITR).
    assert!(
        Session::connect(&d, &device, "e2e-sensor-1").await?.is_none(),
        "the first connection must be dropped"
    );
    // The event flows rule → SQS → registrar; the device retries with backoff.
    let mut session = Session::connect_with_backoff(&d, &device, "e2e-sensor-1").await?;
    assert!(
        session.publish("devices/e2e-sensor-1/telemetry").await?,
        "publish on its own topic"
    );
    assert!(
        !session.publish("devices/e2e-sensor-2/telemetry").await?,
        "a publish to another thing's topic must be refused"
    );

    // What the deployed function did.
    assert_eq!(d.certificate_status(&id).await?.as_deref(), Some("ACTIVE"));
    let thing = d.iot.describe_thing().thing_name("e2e-sensor-1").send().await?;
    assert_eq!(thing.thing_type_name.as_deref(), Some("onboarded-device"));
    assert_eq!(
        thing
            .attributes
            .unwrap_or_default()
            .get("manufacturer")
            .map(String::as_str),
        Some("Acme")
    );
    let groups = d
        .iot
        .list_thing_groups_for_thing()
        .thing_name("e2e-sensor-1")
        .send()
        .await?;
    let groups: Vec<_> = groups
        .thing_groups
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| g.group_name)
        .collect();
    assert_eq!(groups, vec!["onboarded-fleet".to_string()]);
    let record = d.inventory_record(&id).await?;
    assert_eq!(
        record.get("status").and_then(|v| v.as_s().ok()).map(String::as_str),
        Some("PROVISIONED")
    );
    // The emulator ignores BucketEncryption in CloudFormation, so assert the
    // encryption the function requested on the object itself.
    let head =
        d.s3.head_object()
            .bucket(d.output("CredentialsBucketName")?)
            .key(format!("credentials/e2e-sensor-1/{id}.json"))
            .send()
            .await?;
    assert_eq!(head.server_side_encryption, Some(ServerSideEncryption::AwsKms));
    assert_eq!(head.ssekms_key_id.as_deref(), Some(d.output("CredentialsKeyArn")?));
    assert_eq!(d.queue_depth("RegistrationDeadLetterQueueUrl").await?, 0);

    // The issuer's asynchronous invocations end in its failure queue, never dropped.
    let lambda = aws_sdk_lambda::Client::new(&d.emulator.sdk_config().await);
    let config = lambda
        .get_function_event_invoke_config()
        .function_name(d.output("IssuerFunctionName")?)
        // SAM puts the configuration on $LATEST (the function has no alias).
        .qualifier("$LATEST")
        .send()
        .await?;
    assert_eq!(config.maximum_retry_attempts, Some(2));
    let on_failure = config
        .destination_config
        .and_then(|c| c.on_failure)
        .and_then(|f| f.destination)
        .ok_or("the issuer has no on-failure destination")?;
    let queue = d
        .sqs
        .get_queue_attributes()
        .queue_url(d.output("IssuerFailureQueueUrl")?)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?;
    assert_eq!(
        queue
            .attributes
            .unwrap_or_default()
            .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn),
        Some(&on_failure)
    );
    queues_refuse_other_senders(&d).await?;
    the_dashboard_shows_the_deployed_resources(&d).await
}

/// The template's dashboard is deployed with the stack (CloudWatch
/// `GetDashboard`), in the stack's region, and its Lambda and SQS metrics
/// name this deployment's functions and queues: each one exists, and every
/// function and queue of the stack is charted.
async fn the_dashboard_shows_the_deployed_resources(d: &Deployment) -> TestResult {
    let sdk = d.emulator.sdk_config().await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let dashboard = cloudwatch
        .get_dashboard()
        .dashboard_name(d.output("DashboardName")?)
        .send()
        .await?;
    let body: serde_json::Value = serde_json::from_str(dashboard.dashboard_body().ok_or("no dashboard body")?)?;
    let widgets = body["widgets"].as_array().ok_or("the body has no widgets")?;
    let region = sdk.region().map(ToString::to_string).ok_or("no region")?;
    let (mut functions, mut queues) = (Vec::new(), Vec::new());
    for widget in widgets.iter().filter(|w| w["type"] == "metric") {
        assert_eq!(
            widget["properties"]["region"].as_str(),
            Some(region.as_str()),
            "{widget}"
        );
        for row in widget["properties"]["metrics"].as_array().into_iter().flatten() {
            let fields: Vec<&str> = row
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            // [namespace, metric, (dimension, value)..., {options}]
            for pair in fields.get(2..).unwrap_or_default().chunks(2) {
                match pair {
                    ["FunctionName", name] => functions.push((*name).to_string()),
                    ["QueueName", name] => queues.push((*name).to_string()),
                    _ => {}
                }
            }
        }
    }
    functions.sort();
    functions.dedup();
    queues.sort();
    queues.dedup();
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    for name in &functions {
        lambda.get_function().function_name(name).send().await?;
    }
    for name in &queues {
        d.sqs.get_queue_url().queue_name(name).send().await?;
    }
    // Every function and queue the stack names in its outputs, whatever
    // functions are added later.
    let named = |suffix: &str| -> Vec<(&String, &String)> {
        d.outputs.iter().filter(|(key, _)| key.ends_with(suffix)).collect()
    };
    let (function_outputs, queue_outputs) = (named("FunctionName"), named("QueueUrl"));
    assert!(
        function_outputs.len() >= 6 && queue_outputs.len() >= 4,
        "{:?}",
        d.outputs
    );
    for (output, name) in function_outputs {
        assert!(
            functions.contains(name),
            "{output} {name} is not on the dashboard: {functions:?}"
        );
    }
    for (output, url) in queue_outputs {
        let name = url.rsplit('/').next().ok_or("no queue name")?;
        assert!(
            queues.iter().any(|q| q == name),
            "{output} {name} is not on the dashboard: {queues:?}"
        );
    }
    // The rotation events' dead-letter queue has no output: five queues at least.
    assert!(queues.len() >= 5, "{queues:?}");
    Ok(())
}

/// The rules' queues take messages only from their rules: a principal of the
/// same account whose own IAM policy allows `sqs:SendMessage` everywhere is
/// refused by the queue policy, while it can send to a queue without one.
async fn queues_refuse_other_senders(d: &Deployment) -> TestResult {
    let sdk = d.emulator.sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    iam.create_user().user_name("intruder").send().await?;
    iam.put_user_policy()
        .user_name("intruder")
        .policy_name("send-anywhere")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:*","Resource":"*"}]}"#)
        .send()
        .await?;
    let key = iam
        .create_access_key()
        .user_name("intruder")
        .send()
        .await?
        .access_key
        .ok_or("no access key")?;
    let credentials =
        aws_credential_types::Credentials::new(key.access_key_id, key.secret_access_key, None, None, "intruder");
    let intruder = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .credentials_provider(credentials)
            .build(),
    );
    // Control: the intruder's credentials work where no queue policy speaks.
    let open = d.sqs.create_queue().queue_name("intruder-control").send().await?;
    intruder
        .send_message()
        .queue_url(open.queue_url.ok_or("no queue url")?)
        .message_body("{}")
        .send()
        .await?;
    let forged = r#"{"certificateId":"0000000000000000000000000000000000000000000000000000000000000000","caCertificateId":"x","certificateStatus":"PENDING_ACTIVATION","awsAccountId":"000000000000","timestamp":1}"#;
    for output in [
        "RegistrationQueueUrl",
        "RegistrationDeadLetterQueueUrl",
        "RotationEventsQueueUrl",
    ] {
        let refused = intruder
            .send_message()
            .queue_url(d.output(output)?)
            .message_body(forged)
            .send()
            .await;
        let code = refused
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .and_then(aws_sdk_sqs::error::ProvideErrorMetadata::code);
        assert!(
            matches!(code, Some("AccessDenied" | "AccessDeniedException")),
            "{output}: a same-account sender other than the rule was not refused: {refused:?}"
        );
    }
    assert_eq!(
        d.queue_depth("RegistrationQueueUrl").await?,
        0,
        "nothing forged was queued"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_of_a_lookalike_ca_never_gets_in() -> TestResult {
    let d = deployment().await;
    // A CA with the same subject DN as the manufacturer's, registered in the
    // account with auto-registration but bound to no device profile.
    let lookalike = TestCa::new("Acme Device CA")?;
    onboarding_test_support::world::register_ca(&d.iot, &lookalike).await?;
    let forged = lookalike.device("e2e-sensor-1").build()?;
    let id = certificate_id(&forged);

    assert_ne!(connect(&d, &forged, "e2e-sensor-1").await?, ConnectResult::Accepted);
    // A device of the bound CA connecting after it gets in: the pipeline ran
    // past the forged certificate's event.
    let control = d.ca.device("e2e-control-2").build()?;
    time_to_active(&d, &control, "e2e-control-2").await?;
    // Not this stack's to judge (its CA is bound to no profile here, and
    // another system may own it): left alone, never ACTIVE, nothing made for
    // it, no record; revoking it is the RevokeForeignCertificates setting.
    assert_eq!(d.certificate_status(&id).await?.as_deref(), Some("PENDING_ACTIVATION"));
    assert!(
        d.inventory_record(&id).await.is_err(),
        "no record of a foreign certificate"
    );
    assert_eq!(d.queue_depth("RegistrationDeadLetterQueueUrl").await?, 0);
    for _ in 0..3 {
        assert_ne!(connect(&d, &forged, "e2e-sensor-1").await?, ConnectResult::Accepted);
    }
    assert!(
        d.iot.describe_thing().thing_name("e2e-sensor-1").send().await.is_err(),
        "no thing was created"
    );
    Ok(())
}

async fn connect(d: &Deployment, device: &DeviceCert, client_id: &str) -> Result<ConnectResult, WorldError> {
    let key = device.key_pem.as_deref().ok_or("device without key")?;
    Ok(connect_once(d.emulator.mqtt_port, &d.server_ca_pem, &device.cert_pem, key, client_id).await?)
}

/// Time from a device's first connection until a connection is accepted.
async fn time_to_active(d: &Deployment, device: &DeviceCert, name: &str) -> Result<Duration, WorldError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        if connect(d, device, name).await? == ConnectResult::Accepted {
            return Ok(started.elapsed());
        }
        if started.elapsed() > ONBOARDING_DEADLINE {
            return Err(format!("{name} was not let in within {ONBOARDING_DEADLINE:?}").into());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_connections_loses_and_duplicates_nothing() -> TestResult {
    let count: usize = std::env::var("E2E_BURST_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    burst(&deployment().await, count, "burst").await
}

/// The same burst with the deployed functions held to AWS's default quotas
/// (the quota proxy between them and the emulator): throttling slows the
/// pipeline down, and still nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_aws_default_quotas_loses_and_duplicates_nothing() -> TestResult {
    let count: usize = std::env::var("E2E_QUOTA_BURST_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let d = match Deployment::new(options().behind_quotas(onboarding_test_support::quota::Quotas::aws_defaults())).await
    {
        Ok(d) => d,
        Err(e) => panic!("could not deploy behind the quota proxy: {e:?}"),
    };
    burst(&d, count, "quota").await?;
    let proxy = d.proxy.as_ref().ok_or("deployed without the proxy")?;
    eprintln!("{}", proxy.quota_report());
    // No certificate was set ACTIVE before its thing attachment, policy,
    // inventory record and credentials record were written.
    let order = onboarding_test_support::activation::activation_order(&proxy.requests());
    assert_eq!(order.activated, count, "one activation per device");
    assert!(order.early.is_empty(), "activated early: {:?}", order.early);
    Ok(())
}

/// `count` devices make their first connection at once; each must end with one
/// ACTIVE certificate, one thing with one principal and one provisioned
/// record, and nothing may be dead-lettered.
async fn burst(d: &Deployment, count: usize, prefix: &str) -> TestResult {
    let devices: Vec<(String, DeviceCert)> = (0..count)
        .map(|n| {
            let name = format!("{prefix}-{n:05}");
            d.ca.device(&name).build().map(|cert| (name, cert))
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let results = join_all(devices.iter().map(|(name, cert)| time_to_active(d, cert, name))).await;
    let wall = started.elapsed();
    let mut times: Vec<f64> = Vec::new();
    for ((name, _), result) in devices.iter().zip(results) {
        times.push(result.map_err(|e| format!("{name}: {e}"))?.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let pick = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    eprintln!(
        "burst of {count} first connections: all active after {:.1} s; time to active per device p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        wall.as_secs_f64(),
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );

    // None lost, none duplicated: one ACTIVE certificate, one thing with one
    // principal and one provisioned record per device; nothing dead-lettered.
    let checks = join_all(devices.iter().map(|(name, cert)| async move {
        let id = certificate_id(cert);
        let status = d.certificate_status(&id).await?;
        let principals = d
            .iot
            .list_thing_principals()
            .thing_name(name)
            .send()
            .await?
            .principals
            .unwrap_or_default();
        let record = d.inventory_record(&id).await?;
        let provisioned = record.get("status").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("PROVISIONED");
        if status.as_deref() == Some("ACTIVE") && principals.len() == 1 && provisioned {
            Ok(())
        } else {
            Err::<(), WorldError>(
                format!("{name}: status {status:?}, principals {principals:?}, record {record:?}").into(),
            )
        }
    }))
    .await;
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} devices not cleanly onboarded:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let mut things = 0;
    let mut token = None;
    loop {
        let page = d.iot.list_things().set_next_token(token).send().await?;
        things += page.things().len();
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(things, count, "one thing per device");
    assert_eq!(d.queue_depth("RegistrationDeadLetterQueueUrl").await?, 0);
    Ok(())
}

/// Invokes a deployed scheduled function with a scheduled event as of `now`.
async fn run_scheduled(
    d: &Deployment,
    output: &str,
    now: time::OffsetDateTime,
) -> Result<serde_json::Value, WorldError> {
    let lambda = aws_sdk_lambda::Client::new(&d.emulator.sdk_config().await);
    let time = now.format(&time::format_description::well_known::Rfc3339)?;
    let out = lambda
        .invoke()
        .function_name(d.output(output)?)
        .payload(aws_sdk_lambda::primitives::Blob::new(
            serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events", "time": time}).to_string(),
        ))
        .send()
        .await?;
    let payload: serde_json::Value =
        serde_json::from_slice(out.payload.as_ref().map(|b| b.as_ref()).unwrap_or(b"null"))?;
    if out.function_error.is_some() {
        return Err(format!("{output} failed: {payload}").into());
    }
    if payload["errors"].as_u64().is_some_and(|n| n > 0) {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&d.emulator.sdk_config().await)
            .filter_log_events()
            .log_group_name(format!("/aws/lambda/{}", d.output(output)?))
            .send()
            .await?;
        let lines: Vec<&str> = logs.events().iter().filter_map(|e| e.message()).collect();
        return Err(format!("{output} reported errors: {payload}\n{}", lines.join("\n")).into());
    }
    Ok(payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_registration_event_is_recovered_by_the_reconciler() -> TestResult {
    let d = deployment().await;
    // A control device first: how long the working pipeline takes to let a
    // device in here, so that waiting longer than that without any effect
    // below means the event was lost, not slow.
    let control = d.ca.device("e2e-control-1").build()?;
    let processed_in = time_to_active(&d, &control, "e2e-control-1").await?;
    assert_eq!(
        d.certificate_status(&certificate_id(&control)).await?.as_deref(),
        Some("ACTIVE")
    );

    // The registration rule disabled: the event of the first connection is lost.
    let rules = d.iot.list_topic_rules().send().await?;
    let rule = rules
        .rules()
        .iter()
        .filter_map(|r| r.rule_name())
        .find(|name| name.contains("RegistrationRule"))
        .ok_or("no registration rule")?
        .to_string();
    d.iot.disable_topic_rule().rule_name(&rule).send().await?;

    let device = d.ca.device("e2e-lost-1").build()?;
    let id = certificate_id(&device);
    let registered_at = Instant::now();
    assert_ne!(connect(&d, &device, "e2e-lost-1").await?, ConnectResult::Accepted);
    assert_eq!(d.certificate_status(&id).await?.as_deref(), Some("PENDING_ACTIVATION"));
    let rule_now = d.iot.get_topic_rule().rule_name(&rule).send().await?;
    assert_eq!(rule_now.rule.and_then(|r| r.rule_disabled), Some(true));
    // Three times what the control device took (at least 2 s), and a second
    // connection (a second event) on the way: still nothing.
    tokio::time::sleep((processed_in * 3).max(Duration::from_secs(2))).await;
    assert_ne!(connect(&d, &device, "e2e-lost-1").await?, ConnectResult::Accepted);
    assert_eq!(
        d.certificate_status(&id).await?.as_deref(),
        Some("PENDING_ACTIVATION"),
        "nothing processed it within 3x the control's {processed_in:?}"
    );
    assert!(d.inventory_record(&id).await.is_err(), "no record of it");
    assert_eq!(d.queue_depth("RegistrationQueueUrl").await?, 0, "nothing queued");

    // Too young to count as stuck (the deployment's StuckAfterSeconds): left alone.
    let now = time::OffsetDateTime::now_utc();
    let early = run_scheduled(&d, "ReconcilerFunctionName", now).await?;
    assert_eq!(early["stuckProcessed"], 0, "{early}");
    // Past the threshold by the wall clock (the reconciler ignores the
    // schedule event's time, so a forged one changes nothing).
    tokio::time::sleep(STUCK_AFTER.saturating_sub(registered_at.elapsed()) + Duration::from_secs(1)).await;
    let forged = now - time::Duration::days(1);
    let report = run_scheduled(&d, "ReconcilerFunctionName", forged).await?;
    assert_eq!(report["stuckProcessed"], 1, "{report}");
    assert_eq!(d.certificate_status(&id).await?.as_deref(), Some("ACTIVE"));
    let record = d.inventory_record(&id).await?;
    assert_eq!(
        record.get("status").and_then(|v| v.as_s().ok()).map(String::as_str),
        Some("PROVISIONED")
    );
    assert_eq!(connect(&d, &device, "e2e-lost-1").await?, ConnectResult::Accepted);

    // A certificate made by hand under the CA, ACTIVE and attached to a
    // thing, is found and recorded.
    let manual = d.ca.device("e2e-manual-1").build()?;
    let manual_id = certificate_id(&manual);
    let registered = d
        .iot
        .register_certificate()
        .certificate_pem(&manual.cert_pem)
        .ca_certificate_pem(&d.ca.cert_pem)
        .status(aws_sdk_iot::types::CertificateStatus::Active)
        .send()
        .await?;
    d.iot.create_thing().thing_name("e2e-manual-1").send().await?;
    d.iot
        .attach_thing_principal()
        .thing_name("e2e-manual-1")
        .principal(registered.certificate_arn().ok_or("no ARN")?)
        .send()
        .await?;
    let report = run_scheduled(&d, "ReconcilerFunctionName", time::OffsetDateTime::now_utc()).await?;
    assert_eq!(report["recordedActive"], 1, "{report}");
    let record = d.inventory_record(&manual_id).await?;
    assert_eq!(
        record.get("thingName").and_then(|v| v.as_s().ok()).map(String::as_str),
        Some("e2e-manual-1")
    );
    assert_eq!(
        record
            .get("certificateStatus")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("ACTIVE")
    );
    // Idempotent: a second run finds nothing new.
    let again = run_scheduled(&d, "ReconcilerFunctionName", time::OffsetDateTime::now_utc()).await?;
    assert_eq!(
        (again["stuckProcessed"].clone(), again["recordedActive"].clone()),
        (0.into(), 0.into()),
        "{again}"
    );
    Ok(())
}

/// The issuer function's environment and its role's inline policies, as
/// the deployed stack has them.
async fn issuer_wiring(d: &Deployment) -> Result<(Option<String>, String), WorldError> {
    let sdk = d.emulator.sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let config = lambda
        .get_function_configuration()
        .function_name("iot-onboarding-rotation-issuer")
        .send()
        .await?;
    let env = config
        .environment
        .and_then(|e| e.variables)
        .and_then(|v| v.get("FLEET_CA_KMS_KEY_ARN").cloned());
    let role = config.role.ok_or("no role")?;
    let role = role.rsplit('/').next().ok_or("role name")?.to_string();
    let iam = aws_sdk_iam::Client::new(&sdk);
    let mut documents = String::new();
    for name in iam.list_role_policies().role_name(&role).send().await?.policy_names {
        let policy = iam.get_role_policy().role_name(&role).policy_name(&name).send().await?;
        documents.push_str(&policy.policy_document);
    }
    Ok((env, documents))
}

/// `FleetCaKmsKeyArn` gives the issuer its key, and only then: the key ARN
/// in its environment, `kms:Sign` (digests only) and `kms:GetPublicKey` on
/// that key alone, `iot:DescribeCACertificate` and `iot:RegisterCertificate`.
/// The default deployment has none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_ca_key_parameter_grants_the_issuer_that_key_only() -> TestResult {
    const KEY: &str = "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let d = Deployment::new(options().parameter("FleetCaKmsKeyArn", KEY)).await?;
    let (env, documents) = issuer_wiring(&d).await?;
    assert_eq!(env.as_deref(), Some(KEY));
    let documents = documents.replace("%3A", ":").replace("%2F", "/").replace("%22", "\"");
    for granted in [
        "kms:Sign",
        "kms:GetPublicKey",
        "DIGEST",
        "iot:DescribeCACertificate",
        "iot:RegisterCertificate",
        KEY,
    ] {
        assert!(documents.contains(granted), "{granted} missing from {documents}");
    }
    assert!(!documents.contains("\"kms:*\""), "{documents}");
    drop(d);

    let d = deployment().await;
    let (env, documents) = issuer_wiring(&d).await?;
    assert_eq!(env, None, "no key, no variable");
    let documents = documents.replace("%3A", ":");
    for absent in [
        "kms:Sign",
        "kms:GetPublicKey",
        "iot:RegisterCertificate",
        "iot:DescribeCACertificate",
    ] {
        assert!(!documents.contains(absent), "{absent} granted by default: {documents}");
    }
    Ok(())
}
