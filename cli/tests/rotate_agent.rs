//! `onboard device rotate-agent` against the emulator (AUTH=true), with the
//! test playing the rotation backend: it reads the device's CSR with its own
//! MQTT client, issues the certificate through the IoT API and answers with
//! the IoT data plane, as the CSR issuer function does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use aws_sdk_iot::types::{CertificateStatus, JobExecutionStatus, TargetSelection};
use onboarding_domain::{Certificate, CertificateRequest, SubjectField};
use onboarding_domain::{
    CsrAnswer, CsrInstructions, CsrMessage, JOB_OPERATION, JobDocument, Strategy, answer_topic, csr_topic,
};
use onboarding_test_support::emulator::{ACCOUNT_ID, REGION};
use onboarding_test_support::rcgen::DnType;
use onboarding_test_support::world::World;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{Value, json};
use tokio::sync::mpsc;

type TestError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), TestError>;

/// The device policy for these tests: the world's (`devices/<thing>/*`) plus
/// the thing's Jobs topics, which the world's policy does not grant.
const DEVICE_POLICY: &str = "rotation-test-device-policy";
/// The test backend's MQTT client may do anything.
const BACKEND_POLICY: &str = "rotation-test-backend-policy";
const BACKEND_CLIENT: &str = "rotation-test-backend";

fn arn(kind: &str, rest: &str) -> String {
    format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}:{kind}/{rest}")
}

fn device_policy() -> Value {
    let thing = "${iot:Connection.Thing.ThingName}";
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn("client", thing),
             "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
             "Resource": [arn("topic", &format!("devices/{thing}/*")), arn("topic", &format!("$aws/things/{thing}/jobs/*"))]},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": [arn("topicfilter", &format!("devices/{thing}/*")), arn("topicfilter", &format!("$aws/things/{thing}/jobs/*"))]}
        ]
    })
}

/// A device onboarded the simple way, with a rotation job waiting for it.
struct Device {
    thing: String,
    dir: PathBuf,
    server_ca: PathBuf,
    certificate_id: String,
    cert_pem: String,
    key_pem: String,
    _tmp: tempfile::TempDir,
}

/// The world plus the two test policies.
async fn world() -> Result<World, TestError> {
    let world = World::new().await?;
    world
        .iot
        .create_policy()
        .policy_name(DEVICE_POLICY)
        .policy_document(device_policy().to_string())
        .send()
        .await?;
    let anything =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]});
    world
        .iot
        .create_policy()
        .policy_name(BACKEND_POLICY)
        .policy_document(anything.to_string())
        .send()
        .await?;
    Ok(world)
}

/// RegisterCertificate (ACTIVE, under the world's CA); the certificate's ARN and id.
async fn register(world: &World, cert_pem: &str) -> Result<(String, String), TestError> {
    let out = world
        .iot
        .register_certificate()
        .certificate_pem(cert_pem)
        .ca_certificate_pem(&world.ca.cert_pem)
        .status(CertificateStatus::Active)
        .send()
        .await?;
    Ok((
        out.certificate_arn.ok_or("no certificate ARN")?,
        out.certificate_id.ok_or("no certificate id")?,
    ))
}

/// A device certificate registered ACTIVE, its thing, the certificate attached
/// to both thing and device policy, and its directory as `device mint` writes it.
async fn onboard(world: &World, thing: &str) -> Result<Device, TestError> {
    let cert = world
        .ca
        .device(thing)
        .with(DnType::OrganizationName, "Acme")
        .with(DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-0042")
        .build()?;
    let key_pem = cert.key_pem.clone().ok_or("no key")?;
    let (certificate_arn, certificate_id) = register(world, &cert.cert_pem).await?;
    world.iot.create_thing().thing_name(thing).send().await?;
    world
        .iot
        .attach_thing_principal()
        .thing_name(thing)
        .principal(&certificate_arn)
        .send()
        .await?;
    world
        .iot
        .attach_policy()
        .policy_name(DEVICE_POLICY)
        .target(&certificate_arn)
        .send()
        .await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join(thing);
    std::fs::create_dir(&dir)?;
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem)?;
    std::fs::write(dir.join("key.pem"), &key_pem)?;
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))?;
    let server_ca = tmp.path().join("server-ca.pem");
    std::fs::write(&server_ca, &world.server_ca_pem)?;
    Ok(Device {
        thing: thing.to_string(),
        dir,
        server_ca,
        certificate_id,
        cert_pem: cert.cert_pem,
        key_pem,
        _tmp: tmp,
    })
}

/// CreateJob for one thing with a CSR rotation document, as the rotator makes it.
async fn csr_job(world: &World, device: &Device) -> Result<String, TestError> {
    let job_id = onboarding_domain::job_id(&device.certificate_id, 1);
    let document = JobDocument {
        operation: JOB_OPERATION.into(),
        version: "1".into(),
        strategy: Strategy::Csr,
        old_certificate_id: device.certificate_id.clone(),
        csr: Some(CsrInstructions {
            request_topic: csr_topic(&device.thing),
            answer_topic: answer_topic(&device.thing),
        }),
        server_keygen: None,
    };
    world
        .iot
        .create_job()
        .job_id(&job_id)
        .targets(arn("thing", &device.thing))
        .target_selection(TargetSelection::Snapshot)
        .document(serde_json::to_string(&document)?)
        .send()
        .await?;
    Ok(job_id)
}

/// The agent as a child process, with a bound on its run time.
async fn agent(device: &Device, world: &World, extra: &[&str]) -> Result<Output, TestError> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_onboard"));
    command
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("ONBOARD_TABLE")
        .args(["--json", "device", "rotate-agent", "--dir"])
        .arg(&device.dir)
        .args(["--host", "127.0.0.1", "--port", &world.emulator.mqtt_port.to_string()])
        .arg("--server-ca")
        .arg(&device.server_ca)
        .args(extra)
        .kill_on_drop(true);
    Ok(tokio::time::timeout(Duration::from_secs(60), command.output()).await??)
}

fn summary(output: &Output) -> Result<Value, TestError> {
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "stdout is not the JSON summary ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into()
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The job execution's status and statusDetails.
async fn execution(world: &World, job_id: &str, thing: &str) -> Result<(String, Value), TestError> {
    let out = world
        .iot
        .describe_job_execution()
        .job_id(job_id)
        .thing_name(thing)
        .send()
        .await?;
    let execution = out.execution.ok_or("no execution")?;
    let status = execution
        .status
        .as_ref()
        .map(JobExecutionStatus::as_str)
        .unwrap_or_default()
        .to_string();
    let details = execution
        .status_details
        .and_then(|d| d.details_map)
        .map(|m| json!(m))
        .unwrap_or(Value::Null);
    Ok((status, details))
}

fn file_id(path: &Path) -> Result<String, TestError> {
    Ok(Certificate::from_pem(&std::fs::read_to_string(path)?)?.fingerprint)
}

/// The credentials are exactly as onboarded, and nothing was left beside them.
fn assert_unchanged(device: &Device) -> TestResult {
    assert_eq!(std::fs::read_to_string(device.dir.join("cert.pem"))?, device.cert_pem);
    assert_eq!(std::fs::read_to_string(device.dir.join("key.pem"))?, device.key_pem);
    for name in ["cert.old.pem", "key.old.pem", "cert.new.pem", "key.new.pem"] {
        assert!(!device.dir.join(name).exists(), "{name} left behind");
    }
    Ok(())
}

/// The rotation backend's MQTT client: receives the devices' CSRs.
struct Backend {
    _client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    data: aws_sdk_iotdataplane::Client,
}

impl Backend {
    /// Connects with a certificate under the permissive test policy and
    /// subscribes to `filter`.
    async fn start(world: &World, filter: &str) -> Result<Self, TestError> {
        let cert = world.ca.device(BACKEND_CLIENT).build()?;
        let (certificate_arn, _) = register(world, &cert.cert_pem).await?;
        world
            .iot
            .attach_policy()
            .policy_name(BACKEND_POLICY)
            .target(&certificate_arn)
            .send()
            .await?;
        let config = onboarding_device::client_config(
            &world.server_ca_pem,
            &cert.cert_pem,
            cert.key_pem.as_deref().ok_or("no key")?,
        )?;
        let mut options = MqttOptions::new(BACKEND_CLIENT, "127.0.0.1", world.emulator.mqtt_port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let (tx, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if let Some(done) = subscribed_tx.take() {
                            let _ = done.send(format!("{:?}", ack.return_codes));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let codes = tokio::time::timeout(Duration::from_secs(15), subscribed).await??;
        assert!(codes.contains("Success"), "backend subscription: {codes}");
        Ok(Self {
            _client: client,
            messages,
            data: aws_sdk_iotdataplane::Client::new(&world.sdk),
        })
    }

    /// The next CSR message a device sent.
    async fn csr(&mut self) -> Result<CsrMessage, TestError> {
        let (_, payload) = tokio::time::timeout(Duration::from_secs(30), self.messages.recv())
            .await?
            .ok_or("backend connection lost")?;
        Ok(serde_json::from_slice(&payload)?)
    }

    /// Publishes an answer on the device's answer topic (IoT data plane, QoS 1).
    async fn answer(&self, thing: &str, answer: &CsrAnswer) -> TestResult {
        self.data
            .publish()
            .topic(answer_topic(thing))
            .qos(1)
            .payload(aws_sdk_iotdataplane::primitives::Blob::new(serde_json::to_vec(answer)?))
            .send()
            .await?;
        Ok(())
    }
}

/// What the CSR issuer does with a good CSR: CreateCertificateFromCsr, ACTIVE,
/// attached to the thing and the device policy. The certificate's id and PEM.
async fn issue(world: &World, thing: &str, csr_pem: &str) -> Result<(String, String), TestError> {
    let out = world
        .iot
        .create_certificate_from_csr()
        .certificate_signing_request(csr_pem)
        .set_as_active(true)
        .send()
        .await?;
    let certificate_arn = out.certificate_arn.ok_or("no ARN")?;
    world
        .iot
        .attach_thing_principal()
        .thing_name(thing)
        .principal(&certificate_arn)
        .send()
        .await?;
    world
        .iot
        .attach_policy()
        .policy_name(DEVICE_POLICY)
        .target(&certificate_arn)
        .send()
        .await?;
    Ok((out.certificate_id.ok_or("no id")?, out.certificate_pem.ok_or("no PEM")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_rotation_swaps_the_credentials_and_confirms_the_job() -> TestResult {
    let world = world().await?;
    let device = onboard(&world, "rot-ok-1").await?;
    let job_id = csr_job(&world, &device).await?;
    let mut backend = Backend::start(&world, &csr_topic(&device.thing)).await?;

    let running = agent(&device, &world, &["--deadline", "30"]);
    let backend_side = async {
        let message = backend.csr().await?;
        assert_eq!(message.job_id, job_id);
        let csr = CertificateRequest::from_pem(&message.csr)?;
        assert!(csr.signature_valid);
        assert_eq!(csr.key, onboarding_domain::KeyKind::EcP256, "same key kind");
        assert_eq!(csr.subject.get(SubjectField::CommonName), Some("rot-ok-1"));
        assert_eq!(csr.subject.get(SubjectField::Organization), Some("Acme"));
        assert_eq!(csr.subject.get(SubjectField::SerialNumber), Some("SN-0042"));
        let (certificate_id, certificate_pem) = issue(&world, &device.thing, &message.csr).await?;
        backend
            .answer(
                &device.thing,
                &CsrAnswer::Issued {
                    job_id: job_id.clone(),
                    certificate_id: certificate_id.clone(),
                    certificate_pem,
                },
            )
            .await?;
        Ok::<_, TestError>(certificate_id)
    };
    let (output, new_id) = tokio::join!(running, backend_side);
    let (output, new_id) = (output?, new_id?);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let report = summary(&output)?;
    assert_eq!(report["outcome"], "rotated", "{report}");
    assert_eq!(report["thing"], "rot-ok-1");
    assert_eq!(report["jobId"], job_id.as_str());
    assert_eq!(report["strategy"], "csr");
    assert_eq!(report["oldCertificateId"], device.certificate_id.as_str());
    assert_eq!(report["newCertificateId"], new_id.as_str());

    let (status, details) = execution(&world, &job_id, &device.thing).await?;
    assert_eq!(status, "SUCCEEDED", "{details}");
    assert_eq!(details["newCertificateId"], new_id.as_str());

    assert_eq!(file_id(&device.dir.join("cert.pem"))?, new_id);
    assert_eq!(file_id(&device.dir.join("cert.old.pem"))?, device.certificate_id);
    assert_eq!(std::fs::read_to_string(device.dir.join("key.old.pem"))?, device.key_pem);
    let key_mode = std::fs::metadata(device.dir.join("key.pem"))?.permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    assert!(!device.dir.join("cert.new.pem").exists() && !device.dir.join("key.new.pem").exists());
    // The new pair is the one that connects: a second run finds no job and
    // connected with it (an unusable pair would end in exit 3, not no_job).
    let output = agent(&device, &world, &["--deadline", "1"]).await?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(summary(&output)?["outcome"], "no_job");
    assert_eq!(summary(&output)?["oldCertificateId"], new_id.as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_csr_fails_the_job_and_keeps_the_credentials() -> TestResult {
    let world = world().await?;
    let device = onboard(&world, "rot-refused-1").await?;
    let job_id = csr_job(&world, &device).await?;
    let mut backend = Backend::start(&world, &csr_topic(&device.thing)).await?;

    let running = agent(
        &device,
        &world,
        &["--deadline", "30", "--misbehave", "foreign-csr=someone-else"],
    );
    let backend_side = async {
        let message = backend.csr().await?;
        let csr = CertificateRequest::from_pem(&message.csr)?;
        assert_eq!(csr.subject.get(SubjectField::CommonName), Some("someone-else"));
        assert_eq!(csr.subject.get(SubjectField::Organization), Some("Acme"));
        backend
            .answer(
                &device.thing,
                &CsrAnswer::Refused {
                    job_id: job_id.clone(),
                    reason_code: "IDENTITY_COLLISION".into(),
                    detail: "the CSR names thing \"someone-else\"".into(),
                },
            )
            .await
    };
    let (output, answered) = tokio::join!(running, backend_side);
    let output = output?;
    answered?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("IDENTITY_COLLISION"), "{}", stderr(&output));
    let report = summary(&output)?;
    assert_eq!(report["outcome"], "refused", "{report}");
    assert_eq!(report["newCertificateId"], Value::Null);

    let (status, details) = execution(&world, &job_id, &device.thing).await?;
    assert_eq!(status, "FAILED");
    assert_eq!(details["reasonCode"], "IDENTITY_COLLISION");
    assert_unchanged(&device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_that_cannot_connect_leaves_the_old_one_in_place() -> TestResult {
    let world = world().await?;
    let device = onboard(&world, "rot-unusable-1").await?;
    let job_id = csr_job(&world, &device).await?;
    let mut backend = Backend::start(&world, &csr_topic(&device.thing)).await?;

    let running = agent(&device, &world, &["--deadline", "4"]);
    let backend_side = async {
        let message = backend.csr().await?;
        // Issued and ACTIVE, but attached to nothing: the policy's
        // iot:Connection.Thing.IsAttached condition refuses its connection.
        let out = world
            .iot
            .create_certificate_from_csr()
            .certificate_signing_request(&message.csr)
            .set_as_active(true)
            .send()
            .await?;
        let answer = CsrAnswer::Issued {
            job_id: job_id.clone(),
            certificate_id: out.certificate_id.ok_or("no id")?,
            certificate_pem: out.certificate_pem.ok_or("no PEM")?,
        };
        backend.answer(&device.thing, &answer).await
    };
    let (output, answered) = tokio::join!(running, backend_side);
    let output = output?;
    answered?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("NEW_CERTIFICATE_REFUSED"),
        "{}",
        stderr(&output)
    );
    assert_eq!(summary(&output)?["outcome"], "failed");
    let (status, details) = execution(&world, &job_id, &device.thing).await?;
    assert_eq!(status, "FAILED");
    assert_eq!(details["reasonCode"], "NEW_CERTIFICATE_REFUSED");
    assert_unchanged(&device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehave_fail_fails_the_job_at_once_and_then_there_is_no_job() -> TestResult {
    let world = world().await?;
    let device = onboard(&world, "rot-fail-1").await?;
    let job_id = csr_job(&world, &device).await?;

    let output = agent(&device, &world, &["--deadline", "20", "--misbehave", "fail"]).await?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = summary(&output)?;
    assert_eq!(report["outcome"], "failed", "{report}");
    assert_eq!(report["jobId"], job_id.as_str());
    let (status, details) = execution(&world, &job_id, &device.thing).await?;
    assert_eq!(status, "FAILED");
    assert_eq!(details["reasonCode"], "DEVICE_FAILED");
    assert_unchanged(&device)?;

    // Nothing pending any more: no job by the deadline.
    let output = agent(&device, &world, &["--deadline", "1"]).await?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(summary(&output)?["outcome"], "no_job");
    assert!(stderr(&output).contains("no rotation job"), "{}", stderr(&output));
    assert_unchanged(&device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keygen_rotation_downloads_the_credentials() -> TestResult {
    let world = world().await?;
    let device = onboard(&world, "rot-keygen-1").await?;
    // What the rotator does for server-keygen: keys and certificate from AWS
    // IoT, attached like the old one, both files in the credentials bucket,
    // and a job whose document links them through presigned URLs.
    let made = world
        .iot
        .create_keys_and_certificate()
        .set_as_active(true)
        .send()
        .await?;
    let new_id = made.certificate_id.ok_or("no id")?;
    let certificate_arn = made.certificate_arn.ok_or("no ARN")?;
    world
        .iot
        .attach_thing_principal()
        .thing_name(&device.thing)
        .principal(&certificate_arn)
        .send()
        .await?;
    world
        .iot
        .attach_policy()
        .policy_name(DEVICE_POLICY)
        .target(&certificate_arn)
        .send()
        .await?;
    let private_key = made.key_pair.and_then(|k| k.private_key).ok_or("no private key")?;
    let prefix = format!("rotation/{new_id}");
    for (name, body) in [
        ("cert.pem", made.certificate_pem.ok_or("no PEM")?),
        ("key.pem", private_key),
    ] {
        world
            .s3
            .put_object()
            .bucket(onboarding_test_support::world::BUCKET)
            .key(format!("{prefix}/{name}"))
            .body(body.into_bytes().into())
            .send()
            .await?;
    }
    let iam = aws_sdk_iam::Client::new(&world.sdk);
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let role = iam
        .create_role()
        .role_name("rotation-test-presign")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await?
        .role
        .ok_or("no role")?;
    let read = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
        "Resource": format!("arn:aws:s3:::{}/rotation/*", onboarding_test_support::world::BUCKET)}]});
    iam.put_role_policy()
        .role_name("rotation-test-presign")
        .policy_name("read-credentials")
        .policy_document(read.to_string())
        .send()
        .await?;
    let url = |name: &str| {
        format!(
            "${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{}/{prefix}/{name}}}",
            onboarding_test_support::world::BUCKET
        )
    };
    let document = JobDocument {
        operation: JOB_OPERATION.into(),
        version: "1".into(),
        strategy: Strategy::ServerKeygen,
        old_certificate_id: device.certificate_id.clone(),
        csr: None,
        server_keygen: Some(onboarding_domain::ServerKeygenInstructions {
            new_certificate_id: new_id.clone(),
            certificate_url: url("cert.pem"),
            private_key_url: url("key.pem"),
        }),
    };
    let job_id = onboarding_domain::job_id(&device.certificate_id, 1);
    world
        .iot
        .create_job()
        .job_id(&job_id)
        .targets(arn("thing", &device.thing))
        .document(serde_json::to_string(&document)?)
        .presigned_url_config(
            aws_sdk_iot::types::PresignedUrlConfig::builder()
                .role_arn(role.arn)
                .expires_in_sec(300)
                .build(),
        )
        .send()
        .await?;

    let output = agent(&device, &world, &["--deadline", "30"]).await?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = summary(&output)?;
    assert_eq!(report["outcome"], "rotated", "{report}");
    assert_eq!(report["strategy"], "serverKeygen");
    assert_eq!(report["newCertificateId"], new_id.as_str());
    let (status, details) = execution(&world, &job_id, &device.thing).await?;
    assert_eq!(status, "SUCCEEDED", "{details}");
    assert_eq!(details["newCertificateId"], new_id.as_str());
    assert_eq!(file_id(&device.dir.join("cert.pem"))?, new_id);
    assert_eq!(file_id(&device.dir.join("cert.old.pem"))?, device.certificate_id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_answer_holds_the_job_in_progress_until_the_deadline() -> TestResult {
    let world = world().await?;
    let device = onboard(&world, "rot-silent-1").await?;
    let job_id = csr_job(&world, &device).await?;
    let output = agent(&device, &world, &["--deadline", "2", "--misbehave", "never-answer"]).await?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = summary(&output)?;
    assert_eq!(report["outcome"], "timed_out", "{report}");
    assert_eq!(execution(&world, &job_id, &device.thing).await?.0, "IN_PROGRESS");
    assert_unchanged(&device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_the_jobs_topics_is_an_aws_side_failure() -> TestResult {
    let world = world().await?;
    let device = onboard(&world, "rot-nojobs-1").await?;
    // Only the world's device policy, which grants devices/<thing>/* and no Jobs topics.
    let certificate_arn = arn("cert", &device.certificate_id);
    world
        .iot
        .detach_policy()
        .policy_name(DEVICE_POLICY)
        .target(&certificate_arn)
        .send()
        .await?;
    world
        .iot
        .attach_policy()
        .policy_name(onboarding_test_support::world::POLICY)
        .target(&certificate_arn)
        .send()
        .await?;
    csr_job(&world, &device).await?;
    let output = agent(&device, &world, &["--deadline", "10"]).await?;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("jobs/"), "{}", stderr(&output));
    assert_eq!(summary(&output)?["outcome"], "failed");
    assert_unchanged(&device)
}

#[test]
fn missing_credentials_are_refused_with_a_message() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let ca = tmp.path().join("server-ca.pem");
    std::fs::write(&ca, "unused")?;
    for dir in [tmp.path().join("nonexistent"), tmp.path().to_path_buf()] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_onboard"))
            .args(["device", "rotate-agent", "--host", "127.0.0.1", "--dir"])
            .arg(&dir)
            .arg("--server-ca")
            .arg(&ca)
            .output()?;
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let expected = dir.join("cert.pem").display().to_string();
        assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
    }
    // --dir is required.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_onboard"))
        .args(["device", "rotate-agent", "--host", "127.0.0.1", "--server-ca"])
        .arg(&ca)
        .output()?;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--dir"), "{}", stderr(&output));
    Ok(())
}
