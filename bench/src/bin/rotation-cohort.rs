//! Rotation of a cohort: a fleet minted on one day expires on one day.
//!
//! A fresh emulator world; `--devices` devices onboarded by the real
//! registrar (certificate registered `PENDING_ACTIVATION`, the registrar on
//! its event, straight to the emulator), every certificate expiring within
//! the same few minutes, 31 days after the start. A rotation profile
//! (`csr`, a 30-day window, the other settings at their defaults) is bound
//! to their CA.
//!
//! Then simulated days: the domain `Rotator`, built from the `cert-rotator`
//! function's own settings (`cert_rotator::Settings` read from an
//! environment map, as the Lambda reads it) over the real AWS adapters, runs
//! `--runs-per-day` times a simulated day as of a clock the benchmark
//! advances. Its AWS calls, and those of the `rotation-issuer` and
//! `rotation-completer` functions (built as their Lambdas build them), go
//! through the quota-enforcing proxy at AWS's default quotas
//! (`--quota-scale` multiplies them). The only thing added to the rotator
//! is a tap on `create_job`: each job it creates goes to the simulated
//! device, which answers at once, as an online device does: a CSR with a new
//! key (the issuer: `CreateCertificateFromCsr`, attach, publish), its job
//! execution reported `IN_PROGRESS` then `SUCCEEDED` through the IoT Jobs
//! data plane (straight to the emulator, a device's own call), and the
//! job-execution event handed to the completer (`UpdateCertificate`,
//! detach, records). `--concurrency` devices answer at a time (the issuer's
//! and the completer's concurrent invocations). A run's devices are all
//! answered before the next run.
//!
//! Reported per run: what the rotator did (its `RunReport`), the run's wall
//! time, and for each IoT action the calls, the throttles, the peak in any
//! one second and the sustained rate (calls over the run's busy time), each
//! as a ratio of the action's quota; then how the cohort spread over the
//! days, and the totals.
//!
//! `cargo run -p onboarding-bench --bin rotation-cohort -- --devices 3000 --out cohort.md`

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cert_rotator::{FromEnv, TokioPacer};
use futures::StreamExt;
use onboarding_aws::{DynamoInventory, RotationIotAdapter, S3RotationObjects, SdkSettings};
use onboarding_bench::{Args, BenchResult, Table};
use onboarding_domain::{
    CertificateStatus, CsrMessage, CsrOutcome, IssuedCertificate, JobDocument, JobExecution, JobExecutionEvent,
    PortResult, RegisteredCertificate, RotationIot, Rotator, RunReport,
};
use onboarding_test_support::emulator::{ACCOUNT_ID, REGION, sdk_config_for, workspace_root};
use onboarding_test_support::proxy::{Proxy, ProxyOptions, RecordedRequest};
use onboarding_test_support::quota::{QuotaReport, Quotas};
use onboarding_test_support::rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use onboarding_test_support::world::{World, default_profile};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const USAGE: &str = "rotation-cohort: a cohort expiring on one day, rotated over simulated days through the quota proxy

usage: rotation-cohort [--devices N] [--days D] [--runs-per-day R] [--max-per-run M]
                       [--calls-per-second C] [--schedule EXPR] [--concurrency K]
                       [--quota-scale S] [--onboard-concurrency K] [--out FILE]

  --devices N            devices in the cohort (default 3000)
  --days D               simulated days, from the start (default 32: the cohort's
                         window opens on day 1, its certificates expire on day 31)
  --runs-per-day R       rotator runs per simulated day (default 1, the template's rate(1 day))
  --max-per-run M        MAX_ROTATIONS_PER_RUN (default: the function's default)
  --calls-per-second C   IOT_CALLS_PER_SECOND (default: the function's default)
  --schedule EXPR        ROTATION_SCHEDULE given to the function (default: none; the
                         template passes its RotationSchedule)
  --concurrency K        devices answering at a time (default 8)
  --quota-scale S        every default quota multiplied by S (default 1)
  --onboard-concurrency  registrar invocations at a time while onboarding (default 8)
  --out FILE             also write the report to FILE";

const DAY: i64 = 86_400;
const PROFILE_NAME: &str = "rotating";
/// The IoT actions reported, in this order (the three of the issue first).
const ACTIONS: [&str; 10] = [
    "CreateJob",
    "CreateCertificateFromCsr",
    "UpdateCertificate",
    "DescribeCertificate",
    "DescribeJobExecution",
    "AttachPolicy",
    "AttachThingPrincipal",
    "ListThingPrincipals",
    "DeleteCertificate",
    "CancelJob",
];

struct Options {
    devices: usize,
    days: i64,
    runs_per_day: i64,
    max_per_run: Option<u32>,
    calls_per_second: Option<u32>,
    schedule: Option<String>,
    concurrency: usize,
    quota_scale: f64,
    onboard_concurrency: usize,
    out: Option<String>,
}

fn options() -> BenchResult<Options> {
    let args = Args::parse(
        USAGE,
        &[
            "devices",
            "days",
            "runs-per-day",
            "max-per-run",
            "calls-per-second",
            "schedule",
            "concurrency",
            "quota-scale",
            "onboard-concurrency",
            "out",
        ],
    )?;
    let max_per_run = match args.text("max-per-run") {
        None => None,
        Some(_) => Some(args.number("max-per-run", 0u32)?),
    };
    let calls_per_second = match args.text("calls-per-second") {
        None => None,
        Some(_) => Some(args.number("calls-per-second", 0u32)?),
    };
    let o = Options {
        devices: args.number("devices", 3_000)?,
        days: args.number("days", 32)?,
        runs_per_day: args.number("runs-per-day", 1)?,
        max_per_run,
        calls_per_second,
        schedule: args.text("schedule").map(str::to_string),
        concurrency: args.number("concurrency", 8)?,
        quota_scale: args.number("quota-scale", 1.0)?,
        onboard_concurrency: args.number("onboard-concurrency", 8)?,
        out: args.text("out").map(str::to_string),
    };
    if o.devices == 0 || o.days <= 0 || o.runs_per_day <= 0 || o.concurrency == 0 || o.onboard_concurrency == 0 {
        return Err("--devices, --days, --runs-per-day and the concurrencies must be positive".into());
    }
    Ok(o)
}

// --- the simulated clock --------------------------------------------------------

/// "Now" in simulated Unix seconds: the run's time plus the wall time since
/// it began (a device answers seconds after its job, on the same day).
#[derive(Default)]
struct SimClock {
    base: AtomicI64,
    since: std::sync::Mutex<Option<Instant>>,
}

impl SimClock {
    fn set(&self, now: i64) {
        self.base.store(now, Ordering::SeqCst);
        if let Ok(mut s) = self.since.lock() {
            *s = Some(Instant::now());
        }
    }

    fn now(&self) -> i64 {
        let elapsed = self
            .since
            .lock()
            .ok()
            .and_then(|s| *s)
            .map_or(0, |s| s.elapsed().as_secs() as i64);
        self.base.load(Ordering::SeqCst) + elapsed
    }
}

// --- the tap: each job the rotator creates goes to its device ------------------

/// `RotationIotAdapter` with `create_job` reported to the device simulator.
struct Tapped {
    inner: RotationIotAdapter,
    jobs: mpsc::UnboundedSender<(String, String)>,
}

impl RotationIot for Tapped {
    async fn create_job(
        &self,
        job_id: &str,
        thing_name: &str,
        document: &JobDocument,
        timeout_minutes: u32,
    ) -> PortResult<()> {
        self.inner
            .create_job(job_id, thing_name, document, timeout_minutes)
            .await?;
        let _ = self.jobs.send((job_id.to_string(), thing_name.to_string()));
        Ok(())
    }

    async fn job_execution(&self, job_id: &str, thing_name: &str) -> PortResult<Option<JobExecution>> {
        self.inner.job_execution(job_id, thing_name).await
    }

    async fn cancel_job(&self, job_id: &str) -> PortResult<()> {
        self.inner.cancel_job(job_id).await
    }

    async fn certificate_from_csr(&self, csr_pem: &str) -> PortResult<IssuedCertificate> {
        self.inner.certificate_from_csr(csr_pem).await
    }

    async fn keys_and_certificate(&self) -> PortResult<IssuedCertificate> {
        self.inner.keys_and_certificate().await
    }

    async fn certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
        self.inner.certificate(certificate_id).await
    }

    async fn set_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        self.inner.set_status(certificate_id, status).await
    }

    async fn thing_principals(&self, thing_name: &str) -> PortResult<Vec<String>> {
        self.inner.thing_principals(thing_name).await
    }

    async fn attach_to_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.inner.attach_to_thing(thing_name, certificate_arn).await
    }

    async fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.inner.detach_from_thing(thing_name, certificate_arn).await
    }

    async fn policies(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        self.inner.policies(certificate_arn).await
    }

    async fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.inner.attach_policy(policy_name, certificate_arn).await
    }

    async fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.inner.detach_policy(policy_name, certificate_arn).await
    }

    async fn delete_certificate(&self, certificate_id: &str) -> PortResult<()> {
        self.inner.delete_certificate(certificate_id).await
    }

    async fn publish(&self, topic: &str, payload: &[u8]) -> PortResult<()> {
        self.inner.publish(topic, payload).await
    }
}

type TappedRotator = Rotator<DynamoInventory, Tapped, S3RotationObjects, DynamoInventory, TokioPacer>;

// --- the devices -----------------------------------------------------------------

/// What the device side did, summed.
#[derive(Default)]
struct DeviceCounters {
    jobs: AtomicU64,
    issued: AtomicU64,
    completed: AtomicU64,
    /// A step that failed and was tried again (a Lambda retry, an SQS redelivery).
    retries: AtomicU64,
    /// Devices that gave up after the retries (left to the rotator's follow-ups).
    abandoned: AtomicU64,
    done: AtomicU64,
}

struct Devices {
    /// Thing name → its current certificate id.
    certificates: std::sync::Mutex<HashMap<String, String>>,
    issuer: rotation_issuer::Handler,
    completer: rotation_completer::Handler,
    gateway_port: u16,
    clock: Arc<SimClock>,
    counters: DeviceCounters,
    job_body: Value,
}

const STEP_TRIES: u32 = 5;

impl Devices {
    /// One device answering its job: CSR, issuer, job reported, completer.
    async fn answer(&self, job_id: String, thing: String) {
        let Some(old) = self.certificates.lock().ok().and_then(|c| c.get(&thing).cloned()) else {
            self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(csr) = csr_for(&thing) else {
            self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let message = CsrMessage {
            job_id: job_id.clone(),
            csr,
        };
        let mut new = None;
        for attempt in 0..STEP_TRIES {
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match self
                .issuer
                .issuer()
                .handle(&thing, &old, &message, self.clock.now())
                .await
            {
                Ok(CsrOutcome::Issued { new_certificate_id, .. }) => {
                    new = Some(new_certificate_id);
                    break;
                }
                Ok(other) => {
                    eprintln!("{thing}: CSR {}", other.label());
                    break;
                }
                Err(e) => eprintln!("{thing}: issuer: {e}"),
            }
        }
        let Some(new) = new else {
            self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.counters.issued.fetch_add(1, Ordering::Relaxed);
        for status in ["IN_PROGRESS", "SUCCEEDED"] {
            let details = if status == "SUCCEEDED" {
                json!({"newCertificateId": new})
            } else {
                json!({})
            };
            if let Err(e) = self.report_job(&thing, &job_id, status, details).await {
                eprintln!("{thing}: UpdateJobExecution {status}: {e}");
                self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut body = self.job_body.clone();
        body["jobId"] = json!(job_id);
        body["thingArn"] = json!(format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}:thing/{thing}"));
        body["status"] = json!("SUCCEEDED");
        body["statusDetails"] = json!({"newCertificateId": new});
        let event = match JobExecutionEvent::parse(body.to_string().as_bytes()) {
            Ok(event) => event,
            Err(e) => {
                eprintln!("{thing}: job-execution event: {e}");
                self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        for attempt in 0..STEP_TRIES {
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match self.completer.completer().handle(&event, self.clock.now()).await {
                Ok(outcome) => {
                    if outcome.label() == "completed" {
                        self.counters.completed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut c) = self.certificates.lock() {
                            c.insert(thing.clone(), new.clone());
                        }
                    } else {
                        eprintln!("{thing}: completer {}", outcome.label());
                    }
                    return;
                }
                Err(e) => eprintln!("{thing}: completer: {e}"),
            }
        }
        self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// `UpdateJobExecution`, as the device makes it (straight to the emulator).
    async fn report_job(&self, thing: &str, job_id: &str, status: &str, details: Value) -> BenchResult {
        onboarding_test_support::jobs_data::update_job_execution(self.gateway_port, thing, job_id, status, details)
            .await
    }
}

/// A CSR with a new P-256 key, subject CN = the thing name.
fn csr_for(thing: &str) -> BenchResult<String> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, thing);
    params.distinguished_name = subject;
    Ok(params.serialize_request(&key)?.pem()?)
}

// --- rates from the recorded requests ----------------------------------------------

/// One action's numbers over one run.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    calls: u64,
    throttled: u64,
    /// Most calls in any sliding second.
    peak: u64,
    /// Calls per second over the run's busy time.
    sustained: f64,
}

/// Per IoT action: calls and peak over the recorded requests, throttles from
/// the quota report's difference.
fn rates(requests: &[RecordedRequest], before: &QuotaReport, after: &QuotaReport, busy: f64) -> BTreeMap<String, Rate> {
    let mut times: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for r in requests {
        let action = r.action();
        if action.service == "iot" {
            times.entry(action.operation).or_default().push(r.received);
        }
    }
    let mut out = BTreeMap::new();
    for a in &after.actions {
        if a.action.service != "iot" {
            continue;
        }
        let prior = before.get("iot", &a.action.operation);
        let calls = a.calls - prior.map_or(0, |p| p.calls);
        let throttled = a.throttled - prior.map_or(0, |p| p.throttled);
        if calls == 0 && throttled == 0 {
            continue;
        }
        let mut t = times.remove(&a.action.operation).unwrap_or_default();
        t.sort();
        let mut peak = 0;
        let mut low = 0;
        for high in 0..t.len() {
            while t[high].saturating_sub(t[low]) >= Duration::from_secs(1) {
                low += 1;
            }
            peak = peak.max(high - low + 1);
        }
        out.insert(
            a.action.operation.clone(),
            Rate {
                calls,
                throttled,
                peak: peak as u64,
                sustained: if busy > 0.0 { calls as f64 / busy } else { 0.0 },
            },
        );
    }
    out
}

// --- the benchmark ---------------------------------------------------------------

struct RunRow {
    day: i64,
    run: i64,
    report: RunReport,
    wall: f64,
    answered: u64,
    rates: BTreeMap<String, Rate>,
}

fn quota_of(quotas: &Quotas, op: &str) -> Option<f64> {
    quotas.limit("iot", op)
}

fn ratio(value: f64, quota: Option<f64>) -> String {
    match quota {
        Some(q) if q > 0.0 => format!("{value:.2} ({:.0}%)", 100.0 * value / q),
        _ => format!("{value:.2}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("rotation-cohort", run().await)
}

async fn run() -> BenchResult {
    let o = options()?;
    let started = Instant::now();
    let world = World::new().await?;
    let mut profile = default_profile();
    profile["name"] = json!(PROFILE_NAME);
    profile["minRemainingDays"] = json!(7);
    profile["rotation"] = json!({"strategy": "csr", "windowDays": 30});
    world.put_profile(&profile).await?;
    world.bind(&world.ca_id, PROFILE_NAME).await?;

    // --- the cohort, onboarded by the registrar -----------------------------
    let mut env: HashMap<String, String> = world.registrar_env().into_iter().collect();
    env.insert(
        "PRESIGN_ROLE_ARN".into(),
        format!("arn:aws:iam::{ACCOUNT_ID}:role/rotation-presign"),
    );
    env.insert("METRICS_NAMESPACE".into(), "IotOnboardingBench".into());
    if let Some(m) = o.max_per_run {
        env.insert("MAX_ROTATIONS_PER_RUN".into(), m.to_string());
    }
    if let Some(c) = o.calls_per_second {
        env.insert("IOT_CALLS_PER_SECOND".into(), c.to_string());
    }
    if let Some(s) = &o.schedule {
        env.insert("ROTATION_SCHEDULE".into(), s.clone());
    }
    let registrar_settings = jitr_registrar::Settings::from_lookup(|k| env.get(k).cloned())?;
    let registrar = jitr_registrar::build(&registrar_settings, &world.sdk);
    let t0 = time::OffsetDateTime::now_utc().unix_timestamp();
    eprintln!("onboarding {} devices...", o.devices);
    let onboard_started = Instant::now();
    let world_ref = &world;
    let registrar_ref = &registrar;
    let onboarded: Vec<BenchResult<(String, String, i64)>> = futures::stream::iter(0..o.devices)
        .map(|i| async move {
            let name = format!("coh-{i:05}");
            let cert = world_ref.ca.device(&name).valid_days(-1, 31).build()?;
            let id = world_ref
                .stage_pending(&cert.cert_pem, Some(&world_ref.ca.cert_pem))
                .await?;
            let answer = registrar_ref
                .handle(world_ref.direct_event(&id, &world_ref.ca_id)?)
                .await?;
            if answer["outcome"] != "provisioned" {
                return Err(format!("{name} not onboarded: {answer}").into());
            }
            Ok((name, id, 0))
        })
        .buffer_unordered(o.onboard_concurrency)
        .collect()
        .await;
    let mut certificates = HashMap::new();
    for r in onboarded {
        let (name, id, _) = r?;
        certificates.insert(name, id);
    }
    let onboard_secs = onboard_started.elapsed().as_secs_f64();
    eprintln!("onboarded in {onboard_secs:.0} s");
    let not_after = {
        let sample = certificates.values().next().ok_or("no device")?;
        let inventory = DynamoInventory::new(world.dynamodb.clone(), onboarding_test_support::world::TABLE);
        onboarding_domain::Inventory::certificate_record(&inventory, sample)
            .await?
            .and_then(|r| r.not_after)
            .ok_or("no notAfter recorded")?
    };

    // --- the functions, through the quota proxy --------------------------------
    let quotas = Quotas::aws_defaults().scaled(o.quota_scale);
    let proxy = Proxy::start_with(
        world.emulator.gateway_port,
        ProxyOptions {
            quotas: Some(quotas.clone()),
            ..Default::default()
        },
    )
    .await?;
    let sdk_for = |settings: &SdkSettings| {
        let endpoint = proxy.endpoint();
        let retry = settings.retry_config();
        let timeout = settings.timeout_config();
        async move {
            sdk_config_for(&endpoint)
                .await
                .to_builder()
                .retry_config(retry)
                .timeout_config(timeout)
                .build()
        }
    };
    let rotator_settings = cert_rotator::Settings::from_lookup(|k| env.get(k).cloned())?;
    let sdk = sdk_for(&rotator_settings.sdk).await;
    let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel();
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), &rotator_settings.inventory_table);
    let rotator: TappedRotator = Rotator::new(
        inventory.clone(),
        Tapped {
            inner: RotationIotAdapter::new(
                aws_sdk_iot::Client::new(&sdk),
                aws_sdk_iotdataplane::Client::new(&sdk),
                rotator_settings.presign_role_arn.clone(),
            ),
            jobs: jobs_tx,
        },
        S3RotationObjects::new(
            onboarding_aws::s3_client(&sdk, rotator_settings.s3_force_path_style),
            &rotator_settings.credentials_bucket,
            &rotator_settings.credentials_kms_key_id,
        ),
        inventory,
        TokioPacer,
        rotator_settings.rotator.clone(),
    );
    let issuer_settings = rotation_issuer::Settings::from_lookup(|k| env.get(k).cloned())?;
    let issuer = rotation_issuer::build(&issuer_settings, &sdk_for(&issuer_settings.sdk).await).await?;
    let completer_settings = rotation_completer::Settings::from_lookup(|k| env.get(k).cloned())?;
    let completer = rotation_completer::build(&completer_settings, &sdk_for(&completer_settings.sdk).await);
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join("events/rotation-job-execution-sqs.json"),
    )?)?;
    let job_body: Value = serde_json::from_str(sample["Records"][0]["body"].as_str().ok_or("no body")?)?;
    let clock = Arc::new(SimClock::default());
    let devices = Arc::new(Devices {
        certificates: std::sync::Mutex::new(certificates),
        issuer,
        completer,
        gateway_port: world.emulator.gateway_port,
        clock: clock.clone(),
        counters: DeviceCounters::default(),
        job_body,
    });
    // The device side: every job answered, `concurrency` at a time.
    let device_side = {
        let devices = devices.clone();
        let concurrency = o.concurrency;
        tokio::spawn(async move {
            let jobs = futures::stream::poll_fn(move |cx| jobs_rx.poll_recv(cx));
            jobs.for_each_concurrent(concurrency, |(job, thing)| {
                let devices = devices.clone();
                async move {
                    devices.counters.jobs.fetch_add(1, Ordering::Relaxed);
                    devices.answer(job, thing).await;
                    devices.counters.done.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await;
        })
    };

    // --- the simulated days -----------------------------------------------------
    let mut rows = Vec::new();
    let interval = DAY / o.runs_per_day;
    let mut before = proxy.quota_report();
    proxy.clear();
    let mut first_behind: Option<i64> = None;
    let mut last_start_day = 0;
    'days: for day in 0..o.days {
        for run in 0..o.runs_per_day {
            let now = t0 + day * DAY + run * interval + 3_600;
            clock.set(now);
            let wall = Instant::now();
            let jobs_before = devices.counters.jobs.load(Ordering::Relaxed);
            let report = rotator.run(now).await?;
            // Every job of this run answered before the next run.
            let expected = devices.counters.jobs.load(Ordering::Relaxed).max(jobs_before);
            loop {
                let done = devices.counters.done.load(Ordering::Relaxed);
                let sent = devices.counters.jobs.load(Ordering::Relaxed);
                if done >= expected && done >= sent {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let wall = wall.elapsed().as_secs_f64();
            let after = proxy.quota_report();
            let requests = proxy.requests();
            proxy.clear();
            let rates = rates(&requests, &before, &after, wall);
            before = after;
            let answered = devices.counters.done.load(Ordering::Relaxed) - jobs_before;
            eprintln!(
                "day {day:2} run {run}: started {} followed up {} completed {} deleted {} errors {} in {wall:.0} s; devices answered {answered}",
                report.started, report.followed_up, report.completed, report.deleted, report.errors
            );
            if now > not_after && first_behind.is_none() {
                first_behind = Some(day);
            }
            rows.push(RunRow {
                day,
                run,
                report,
                wall,
                answered,
                rates,
            });
            if report.started > 0 {
                last_start_day = day;
            }
            // Once the cohort is rotated and its old certificates deleted
            // (the grace period is 7 days), the remaining days would do nothing.
            let rotated = devices.counters.completed.load(Ordering::Relaxed) as usize;
            if rotated >= o.devices && day > last_start_day + 8 {
                break 'days;
            }
        }
    }
    drop(rotator);
    device_side.abort();

    // --- the report ---------------------------------------------------------------
    let mut out = String::new();
    let total_wall = started.elapsed().as_secs_f64();
    let window_opens = (not_after - 30 * DAY - t0) as f64 / DAY as f64;
    out.push_str(&format!(
        "rotation-cohort: {} devices expiring at t0 + {:.2} days (window opens at t0 + {window_opens:.2} days); \
         {} run(s) a simulated day at t0 + day + 1 h; quotas: AWS defaults x {}; \
         MAX_ROTATIONS_PER_RUN {}; IOT_CALLS_PER_SECOND {}; ROTATION_SCHEDULE {}; {} devices answering at a time\n\n",
        o.devices,
        (not_after - t0) as f64 / DAY as f64,
        o.runs_per_day,
        o.quota_scale,
        rotator_settings.rotator.max_new_per_run,
        o.calls_per_second
            .map_or_else(|| "default".to_string(), |c| c.to_string()),
        o.schedule.as_deref().unwrap_or("(unset)"),
        o.concurrency,
    ));
    out.push_str(&format!(
        "onboarding by the registrar: {onboard_secs:.0} s; whole benchmark {total_wall:.0} s\n\n"
    ));

    let mut table = Table::new(&[
        "day",
        "run",
        "started",
        "followed up",
        "completed (rotator)",
        "deleted",
        "waiting",
        "errors",
        "budget out",
        "devices answered",
        "wall s",
        "CreateJob /s peak",
        "CreateJob /s sust.",
        "CSR /s peak",
        "UpdateCert /s peak",
        "UpdateCert /s sust.",
        "throttles",
    ]);
    for r in rows
        .iter()
        .filter(|r| r.report.started + r.report.followed_up + r.answered as u32 > 0)
    {
        let get = |op: &str| r.rates.get(op).copied().unwrap_or_default();
        let throttles: u64 = r.rates.values().map(|x| x.throttled).sum();
        table.row(vec![
            r.day.to_string(),
            r.run.to_string(),
            r.report.started.to_string(),
            r.report.followed_up.to_string(),
            r.report.completed.to_string(),
            r.report.deleted.to_string(),
            r.report.waiting.to_string(),
            r.report.errors.to_string(),
            r.report.budget_exhausted.to_string(),
            r.answered.to_string(),
            format!("{:.0}", r.wall),
            get("CreateJob").peak.to_string(),
            format!("{:.2}", get("CreateJob").sustained),
            get("CreateCertificateFromCsr").peak.to_string(),
            get("UpdateCertificate").peak.to_string(),
            format!("{:.2}", get("UpdateCertificate").sustained),
            throttles.to_string(),
        ]);
    }
    out.push_str("Runs (rows with nothing to do left out):\n\n");
    out.push_str(&table.render());
    out.push('\n');

    // The spread: starts per simulated day.
    let mut per_day: BTreeMap<i64, u32> = BTreeMap::new();
    for r in &rows {
        *per_day.entry(r.day).or_default() += r.report.started;
    }
    let starting_days: Vec<(i64, u32)> = per_day.into_iter().filter(|(_, n)| *n > 0).collect();
    let total_started: u32 = starting_days.iter().map(|(_, n)| n).sum();
    out.push_str(&format!(
        "Spread: {total_started} rotations started over {} simulated day(s) (days {}), per day: {}\n",
        starting_days.len(),
        match (starting_days.first(), starting_days.last()) {
            (Some(a), Some(b)) => format!("{}..{}", a.0, b.0),
            _ => "-".into(),
        },
        starting_days
            .iter()
            .map(|(d, n)| format!("d{d}:{n}"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let c = &devices.counters;
    out.push_str(&format!(
        "Devices: jobs {} · issued {} · completed {} · step retries {} · abandoned {}\n\n",
        c.jobs.load(Ordering::Relaxed),
        c.issued.load(Ordering::Relaxed),
        c.completed.load(Ordering::Relaxed),
        c.retries.load(Ordering::Relaxed),
        c.abandoned.load(Ordering::Relaxed),
    ));

    // Totals and rates against the quotas, over the runs that started rotations.
    let mut totals: BTreeMap<String, (u64, u64, u64, f64)> = BTreeMap::new();
    let busy_runs: Vec<&RunRow> = rows.iter().filter(|r| r.report.started > 0).collect();
    for r in &rows {
        for (op, x) in &r.rates {
            let t = totals.entry(op.clone()).or_default();
            t.0 += x.calls;
            t.1 += x.throttled;
            t.2 = t.2.max(x.peak);
        }
    }
    for r in &busy_runs {
        for (op, x) in &r.rates {
            let t = totals.entry(op.clone()).or_default();
            t.3 = t.3.max(x.sustained);
        }
    }
    let mut table = Table::new(&[
        "IoT action",
        "quota /s",
        "calls",
        "per rotation",
        "throttled",
        "peak /s (of quota)",
        "sustained /s, busiest run (of quota)",
    ]);
    let rotated = c.completed.load(Ordering::Relaxed).max(1);
    let mut ops: Vec<String> = ACTIONS.iter().map(|s| s.to_string()).collect();
    for op in totals.keys() {
        if !ops.contains(op) {
            ops.push(op.clone());
        }
    }
    for op in ops {
        let Some((calls, throttled, peak, sustained)) = totals.get(&op).copied() else {
            continue;
        };
        let q = quota_of(&quotas, &op);
        table.row(vec![
            op.clone(),
            q.map_or_else(|| "-".into(), |q| format!("{q}")),
            calls.to_string(),
            format!("{:.2}", calls as f64 / rotated as f64),
            throttled.to_string(),
            ratio(peak as f64, q),
            ratio(sustained, q),
        ]);
    }
    out.push_str("IoT actions over the whole simulation:\n\n");
    out.push_str(&table.render());
    out.push('\n');
    let all_throttles = proxy.quota_report().total_throttled();
    out.push_str(&format!(
        "Throttling errors returned by the proxy, every action: {all_throttles}\n"
    ));
    if let Some(day) = first_behind {
        out.push_str(&format!("Runs went past the cohort's notAfter from day {day} on.\n"));
    }

    println!("{out}");
    if let Some(path) = &o.out {
        std::fs::write(path, &out)?;
    }
    Ok(())
}
