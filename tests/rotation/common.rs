//! One emulator per test: the world, a `rotating` profile bound to its CA,
//! devices onboarded by the registrar with certificates that expire in 20
//! days, the three rotation functions built in-process as their Lambdas
//! build them (settings from an environment map, one SDK configuration),
//! their AWS calls going through a failure-injecting proxy, and what the
//! tests read back from the emulator.
//!
//! The functions run with `SDK_MAX_ATTEMPTS=1`: an injected failure is not
//! retried by the SDK and surfaces as the failure of the invocation, which
//! is how a crash between two steps looks from outside.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use cert_rotator::FromEnv;
use onboarding_aws::{CLAIM_SK, thing_pk};
use onboarding_aws::{DynamoInventory, SdkSettings};
use onboarding_domain::Inventory;
use onboarding_domain::{CertificateRecord, DeviceProfile};
use onboarding_domain::{Rotation, RotationInventory};
use onboarding_test_support::emulator::{ACCOUNT_ID, REGION, sdk_config_for, workspace_root};
use onboarding_test_support::proxy::{FailureMode, Matcher, Proxy};
use onboarding_test_support::rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use onboarding_test_support::world::{TABLE, World, default_profile};
use serde_json::{Value, json};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult = Result<(), Error>;

/// The profile the test devices are onboarded and rotated under.
pub const PROFILE_NAME: &str = "rotating";
/// The namespace of the EMF metrics the functions print.
pub const NAMESPACE: &str = "IotOnboardingTest";

/// A device onboarded by the registrar.
pub struct Device {
    pub name: String,
    pub certificate_id: String,
    pub certificate_arn: String,
}

/// A failure point: the request it fails, and how.
pub struct Step {
    pub label: &'static str,
    pub matcher: Matcher,
    pub mode: FailureMode,
    /// The crash leaves a certificate nothing recorded (made, then the
    /// rotation not written): one extra certificate, never `ACTIVE`, never attached.
    pub orphan: bool,
}

impl Step {
    pub fn refuse(label: &'static str, matcher: Matcher) -> Self {
        Self {
            label,
            matcher,
            mode: FailureMode::Refuse,
            orphan: false,
        }
    }

    pub fn lose_answer(label: &'static str, matcher: Matcher) -> Self {
        Self {
            label,
            matcher,
            mode: FailureMode::LoseAnswer,
            orphan: false,
        }
    }

    pub fn disconnect(label: &'static str, matcher: Matcher) -> Self {
        Self {
            label,
            matcher,
            mode: FailureMode::Disconnect,
            orphan: false,
        }
    }

    pub fn leaving_an_orphan(mut self) -> Self {
        self.orphan = true;
        self
    }

    pub fn mode_label(&self) -> &'static str {
        match self.mode {
            FailureMode::Refuse => "refused",
            FailureMode::LoseAnswer => "answer lost",
            FailureMode::Disconnect => "disconnected",
        }
    }
}

/// The emulator, the proxy and the functions' environment.
pub struct Rig {
    pub world: World,
    pub proxy: Proxy,
    /// "Now" of every rotator run: the test's start. Rotations started then
    /// are due again only at their job deadline (two minutes later), so a
    /// run follows up nothing but interrupted starts.
    pub now: i64,
    env: HashMap<String, String>,
    registrar: jitr_registrar::Handler,
}

impl Rig {
    /// A world whose CA is bound to a `rotating` profile (the default one,
    /// certificates with 7 days left accepted) rotating with `strategy` and
    /// one-minute jobs.
    pub async fn new(strategy: &str) -> Result<Self, Error> {
        let world = World::new().await?;
        let mut profile = default_profile();
        profile["name"] = json!(PROFILE_NAME);
        profile["minRemainingDays"] = json!(7);
        profile["rotation"] = json!({"strategy": strategy, "jobTimeoutMinutes": 1});
        DeviceProfile::parse(&profile.to_string())?;
        world.put_profile(&profile).await?;
        world.bind(&world.ca_id, PROFILE_NAME).await?;
        let proxy = Proxy::start(world.emulator.gateway_port, Duration::ZERO).await?;
        let mut env: HashMap<String, String> = world.registrar_env().into_iter().collect();
        for (k, v) in [
            ("SDK_MAX_ATTEMPTS", "1".to_string()),
            ("IOT_CALLS_PER_SECOND", "1000".to_string()),
            ("METRICS_NAMESPACE", NAMESPACE.to_string()),
            (
                "PRESIGN_ROLE_ARN",
                format!("arn:aws:iam::{ACCOUNT_ID}:role/rotation-presign"),
            ),
        ] {
            env.insert(k.to_string(), v);
        }
        let registrar_settings = jitr_registrar::Settings::from_lookup(|k| env.get(k).cloned())?;
        // The registrar talks to the emulator directly: no failure reaches it.
        let registrar = jitr_registrar::build(&registrar_settings, &world.sdk);
        Ok(Self {
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            world,
            proxy,
            env,
            registrar,
        })
    }

    /// Sets one variable of the functions' environment (for the containers
    /// built after).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_string(), value.to_string());
    }

    /// The SDK configuration a function loads, pointed at the proxy, with
    /// the function's own retry and timeout settings.
    async fn sdk(&self, sdk: &SdkSettings) -> aws_config::SdkConfig {
        sdk_config_for(&self.proxy.endpoint())
            .await
            .to_builder()
            .retry_config(sdk.retry_config())
            .timeout_config(sdk.timeout_config())
            .build()
    }

    /// A `cert-rotator` container.
    pub async fn rotator(&self) -> Result<cert_rotator::Handler, Error> {
        let settings = cert_rotator::Settings::from_lookup(|k| self.env.get(k).cloned())?;
        assert_eq!(settings.sdk.max_attempts, 1);
        Ok(cert_rotator::build(&settings, &self.sdk(&settings.sdk).await))
    }

    /// A `rotation-issuer` container.
    pub async fn issuer(&self) -> Result<rotation_issuer::Handler, Error> {
        let settings = rotation_issuer::Settings::from_lookup(|k| self.env.get(k).cloned())?;
        assert_eq!(settings.sdk.max_attempts, 1);
        Ok(rotation_issuer::build(&settings, &self.sdk(&settings.sdk).await).await?)
    }

    /// A `rotation-completer` container.
    pub async fn completer(&self) -> Result<rotation_completer::Handler, Error> {
        let settings = rotation_completer::Settings::from_lookup(|k| self.env.get(k).cloned())?;
        assert_eq!(settings.sdk.max_attempts, 1);
        Ok(rotation_completer::build(&settings, &self.sdk(&settings.sdk).await))
    }

    /// Onboards a device as in the field: its first connection (JITR), the
    /// registrar on the event. Its certificate expires in 20 days.
    pub async fn onboard(&self, name: &str) -> Result<Device, Error> {
        let cert = self.world.ca.device(name).valid_days(-1, 20).build()?;
        let certificate_id = self.world.first_connection(&cert, name).await?;
        let answer = self
            .registrar
            .handle(self.world.direct_event(&certificate_id, &self.world.ca_id)?)
            .await?;
        if answer["outcome"] != "provisioned" {
            return Err(format!("{name} not onboarded: {answer}").into());
        }
        let certificate_arn = self.arn(&certificate_id).await?;
        Ok(Device {
            name: name.to_string(),
            certificate_id,
            certificate_arn,
        })
    }

    // --- invocations, as the Lambdas' handlers make them ---------------------

    /// One scheduled run as of [`Rig::now`] (`events/rotator-scheduled.json`).
    /// An item's failure does not fail a run: it is counted in `errors`.
    pub async fn run_rotator(&self, rotator: &cert_rotator::Handler) -> Result<Value, cert_rotator::InvocationError> {
        self.run_rotator_at(rotator, self.now).await
    }

    /// One scheduled run as of `now`.
    pub async fn run_rotator_at(
        &self,
        rotator: &cert_rotator::Handler,
        now: i64,
    ) -> Result<Value, cert_rotator::InvocationError> {
        let mut event =
            sample("rotator-scheduled.json").map_err(|e| cert_rotator::InvocationError::Time(e.to_string()))?;
        event["time"] = json!(rfc3339(now));
        rotator.handle(event).await
    }

    /// The rule's output for a CSR the device publishes
    /// (`events/rotation-csr.json`): same subject as its certificate, a new key.
    pub fn csr_event(&self, device: &Device, job_id: &str) -> Result<Value, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, device.name.as_str());
        params.distinguished_name = subject;
        let csr = params.serialize_request(&key)?.pem()?;
        let mut event = sample("rotation-csr.json")?;
        event["jobId"] = json!(job_id);
        event["csr"] = json!(csr);
        event["topic"] = json!(format!("devices/{}/rotation/csr", device.name));
        event["principal"] = json!(device.certificate_id);
        Ok(event)
    }

    /// An SQS batch of one job-execution event
    /// (`events/rotation-job-execution-sqs.json`) for the device's job.
    pub fn job_execution_event(
        &self,
        device: &Device,
        job_id: &str,
        status: &str,
        new_certificate_id: &str,
    ) -> Result<Value, Error> {
        let mut batch = sample("rotation-job-execution-sqs.json")?;
        let body = batch["Records"][0]["body"].as_str().ok_or("the sample has no body")?;
        let mut body: Value = serde_json::from_str(body)?;
        body["jobId"] = json!(job_id);
        body["thingArn"] = json!(format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}:thing/{}", device.name));
        body["status"] = json!(status);
        body["statusDetails"] = json!({"newCertificateId": new_certificate_id});
        batch["Records"][0]["body"] = json!(body.to_string());
        Ok(batch)
    }

    /// What the device reports on its job, as a device does through the IoT
    /// Jobs data plane (`UpdateJobExecution`, SigV4 for `iot-jobs-data`,
    /// straight to the emulator): IoT's own record of the execution, which
    /// the completer and the rotator read back.
    pub async fn report_job(&self, device: &Device, job_id: &str, status: &str, details: Value) -> TestResult {
        onboarding_test_support::jobs_data::update_job_execution(
            self.world.emulator.gateway_port,
            &device.name,
            job_id,
            status,
            details,
        )
        .await
    }

    /// The device takes its job up (`IN_PROGRESS`), then reports `status`
    /// naming `new_certificate_id`; then the SQS batch of the job-execution
    /// event IoT publishes (`events/rotation-job-execution-sqs.json`).
    pub async fn device_reports(
        &self,
        device: &Device,
        job_id: &str,
        status: &str,
        new_certificate_id: &str,
    ) -> Result<Value, Error> {
        self.report_job(device, job_id, "IN_PROGRESS", json!({})).await?;
        self.report_job(device, job_id, status, json!({"newCertificateId": new_certificate_id}))
            .await?;
        self.job_execution_event(device, job_id, status, new_certificate_id)
    }

    // --- what the tests read back ---------------------------------------------

    fn inventory(&self) -> DynamoInventory {
        DynamoInventory::new(self.world.dynamodb.clone(), TABLE)
    }

    pub async fn rotation(&self, old_certificate_id: &str) -> Result<Rotation, Error> {
        Ok(self
            .inventory()
            .rotation(old_certificate_id)
            .await?
            .ok_or_else(|| format!("no rotation of {old_certificate_id}"))?)
    }

    pub async fn record(&self, certificate_id: &str) -> Result<CertificateRecord, Error> {
        Ok(self
            .inventory()
            .certificate_record(certificate_id)
            .await?
            .ok_or_else(|| format!("no record of {certificate_id}"))?)
    }

    /// The certificate id holding the thing-name claim.
    pub async fn claim(&self, thing_name: &str) -> Result<Option<String>, Error> {
        let out = self
            .world
            .dynamodb
            .get_item()
            .table_name(TABLE)
            .key("pk", AttributeValue::S(thing_pk(thing_name)))
            .key("sk", AttributeValue::S(CLAIM_SK.to_string()))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out
            .item
            .and_then(|item| item.get("certificateId").and_then(|v| v.as_s().ok()).cloned()))
    }

    pub async fn status(&self, certificate_id: &str) -> Result<String, Error> {
        Ok(self
            .world
            .certificate_status(certificate_id)
            .await?
            .ok_or_else(|| format!("certificate {certificate_id} does not exist"))?)
    }

    pub async fn arn(&self, certificate_id: &str) -> Result<String, Error> {
        let out = self
            .world
            .iot
            .describe_certificate()
            .certificate_id(certificate_id)
            .send()
            .await?;
        Ok(out
            .certificate_description
            .and_then(|d| d.certificate_arn)
            .ok_or("no certificate ARN")?)
    }

    /// The thing's principals (certificate ARNs), sorted.
    pub async fn principals(&self, thing_name: &str) -> Result<BTreeSet<String>, Error> {
        let out = self
            .world
            .iot
            .list_thing_principals()
            .thing_name(thing_name)
            .send()
            .await?;
        Ok(out.principals.unwrap_or_default().into_iter().collect())
    }

    /// The things a certificate is attached to.
    pub async fn things_of(&self, certificate_arn: &str) -> Result<Vec<String>, Error> {
        let out = self
            .world
            .iot
            .list_principal_things()
            .principal(certificate_arn)
            .send()
            .await?;
        Ok(out.things.unwrap_or_default())
    }

    /// The policies attached to a certificate.
    pub async fn policies(&self, certificate_arn: &str) -> Result<Vec<String>, Error> {
        let out = self
            .world
            .iot
            .list_attached_policies()
            .target(certificate_arn)
            .send()
            .await?;
        Ok(out
            .policies
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.policy_name)
            .collect())
    }

    /// Every certificate IoT holds (ids).
    pub async fn certificates(&self) -> Result<BTreeSet<String>, Error> {
        let mut ids = BTreeSet::new();
        let mut marker = None;
        loop {
            let page = self
                .world
                .iot
                .list_certificates()
                .page_size(250)
                .set_marker(marker)
                .send()
                .await?;
            ids.extend(
                page.certificates
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.certificate_id),
            );
            marker = page.next_marker.filter(|m| !m.is_empty());
            if marker.is_none() {
                return Ok(ids);
            }
        }
    }

    /// The ids of the jobs with an execution for the thing.
    pub async fn jobs_of(&self, thing_name: &str) -> Result<Vec<String>, Error> {
        let out = self
            .world
            .iot
            .list_job_executions_for_thing()
            .thing_name(thing_name)
            .send()
            .await?;
        Ok(out
            .execution_summaries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.job_id)
            .collect())
    }

    /// Checks that the certificates made since `before`, other than `kept`,
    /// are what a crash may leave: `expected` of them (0 or 1), none
    /// `ACTIVE`, none attached to a thing or a policy.
    pub async fn check_orphans(
        &self,
        before: &BTreeSet<String>,
        kept: &str,
        expected: usize,
        label: &str,
    ) -> Result<Vec<String>, Error> {
        let created: Vec<String> = self.certificates().await?.difference(before).cloned().collect();
        assert!(
            created.iter().any(|c| c == kept),
            "{label}: {kept} not among {created:?}"
        );
        let orphans: Vec<String> = created.into_iter().filter(|c| c != kept).collect();
        assert_eq!(orphans.len(), expected, "{label}: certificates left over: {orphans:?}");
        for orphan in &orphans {
            let status = self.status(orphan).await?;
            assert_ne!(status, "ACTIVE", "{label}: left-over certificate {orphan} is ACTIVE");
            let arn = self.arn(orphan).await?;
            assert_eq!(
                self.things_of(&arn).await?,
                Vec::<String>::new(),
                "{label}: {orphan} attached"
            );
            assert_eq!(
                self.policies(&arn).await?,
                Vec::<String>::new(),
                "{label}: {orphan} has policies"
            );
        }
        Ok(orphans)
    }

    /// Arms `step`'s failure, to be used up by the next invocation.
    pub fn arm(&self, step: &Step) {
        self.proxy.clear();
        self.proxy.clear_failures();
        self.proxy.fail_with(step.matcher.clone(), 1, step.mode);
    }

    /// Checks that the armed failure was injected (the step was reached).
    pub fn check_injected(&self, step: &Step) {
        let injected = self.proxy.injected();
        assert_eq!(
            injected.len(),
            1,
            "{} ({}): the failure point was not reached; requests: {:#?}",
            step.label,
            step.mode_label(),
            self.proxy.requests().iter().map(|r| r.line()).collect::<Vec<_>>()
        );
        self.proxy.clear_failures();
    }
}

/// A sample event from `events/`.
pub fn sample(name: &str) -> Result<Value, Error> {
    let text = std::fs::read_to_string(workspace_root().join("events").join(name))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

// --- failure points: which request a step makes ------------------------------

fn json_str<'a>(body: &'a Value, pointer: &str) -> Option<&'a str> {
    body.pointer(pointer).and_then(Value::as_str)
}

/// A `PutItem` of a rotation item whose new state is `state`, with a
/// condition containing `condition` (`attribute_not_exists` for the first
/// write, `#state` for the guarded ones) and matching `more`.
pub fn put_rotation(
    description: &str,
    state: &'static str,
    condition: &'static str,
    more: impl Fn(&Value) -> bool + Send + Sync + 'static,
) -> Matcher {
    Matcher::predicate(description, move |r| {
        if r.operation() != "PutItem" {
            return false;
        }
        let body = r.json();
        json_str(&body, "/Item/sk/S") == Some("ROTATION")
            && json_str(&body, "/Item/state/S") == Some(state)
            && json_str(&body, "/ConditionExpression").is_some_and(|c| c.contains(condition))
            && more(&body)
    })
}

/// An `UpdateItem` of a certificate record (`CERT#…`/`CERT`).
pub fn update_record(description: &str) -> Matcher {
    Matcher::predicate(description, |r| {
        let body = r.json();
        r.operation() == "UpdateItem"
            && json_str(&body, "/Key/pk/S").is_some_and(|pk| pk.starts_with("CERT#"))
            && json_str(&body, "/Key/sk/S") == Some("CERT")
    })
}

/// An `UpdateItem` of a thing-name claim (the transfer to the new certificate).
pub fn update_claim(description: &str) -> Matcher {
    Matcher::predicate(description, |r| {
        let body = r.json();
        r.operation() == "UpdateItem" && json_str(&body, "/Key/sk/S") == Some(CLAIM_SK)
    })
}

/// A `PutItem` of a job pointer (`JOB#…`).
pub fn put_job_pointer(description: &str) -> Matcher {
    Matcher::predicate(description, |r| {
        r.operation() == "PutItem" && json_str(&r.json(), "/Item/sk/S") == Some("JOB")
    })
}

/// An IoT REST call: `method` and a path whose segments match `segments`
/// (`*` for any one segment).
pub fn iot(description: &str, method: &'static str, segments: &'static [&'static str]) -> Matcher {
    Matcher::predicate(description, move |r| {
        let path = r.target.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        r.method == method
            && r.service() != Some("s3")
            && parts.len() == segments.len()
            && parts.iter().zip(segments).all(|(p, s)| *s == "*" || p == s)
    })
}

/// `UpdateCertificate` to `status`.
pub fn update_certificate(description: &str, status: &'static str) -> Matcher {
    Matcher::predicate(description, move |r| {
        r.method == "PUT"
            && r.target.starts_with("/certificates/")
            && r.target
                .split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|p| p == format!("newStatus={status}")))
    })
}

/// An S3 `PutObject`.
pub fn put_object(description: &str) -> Matcher {
    Matcher::predicate(description, |r| r.service() == Some("s3") && r.method == "PUT")
}
