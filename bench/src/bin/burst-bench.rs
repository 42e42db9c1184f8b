//! A burst of first connections at AWS's quotas: how fast the deployed stack
//! onboards, against the ceiling the quotas set, and whether anything is
//! lost, duplicated or activated early.
//!
//! The template is deployed into the emulator (`AUTH=true`) with its Lambda
//! functions calling AWS through the quota proxy (AWS's default quotas, or
//! scaled). N device certificates under a CA bound to the default profile
//! each make a first MQTT connection over mutual TLS, all at once or at a
//! given rate: the broker drops them, registers each certificate
//! `PENDING_ACTIVATION` and publishes its registered event, which takes the
//! deployed path (rule → SQS → event-source mapping → jitr-registrar). M of
//! the N are devices that keep reconnecting with backoff until they are let
//! in; the others try once, like a device that powers up and waits.
//!
//! Reported: provisioned per second (sustained: between the 5th and the
//! 95th percentile of activations) as a ratio of the ceiling (the smallest
//! quota ÷ that action's calls per device), time to drain, calls, throttles
//! and retries per device, messages received more than once, DLQ depth,
//! certificates left PENDING, things per certificate, and whether any
//! certificate was set ACTIVE before its thing attachment, policy, inventory
//! record and credentials record were written (from the proxy's record of
//! every request, in arrival order).

#![recursion_limit = "256"]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use onboarding_bench::{Args, BenchResult, Table, f, percentile, statuses_under_ca};
use onboarding_test_support::activation::{self, Step};
use onboarding_test_support::deployment::{DeployOptions, Deployment};
use onboarding_test_support::faults::Faults;
use onboarding_test_support::mqtt::{ConnectResult, connect_once};
use onboarding_test_support::proxy::RecordedRequest;
use onboarding_test_support::quota::{QuotaReport, Quotas};
use onboarding_test_support::world::certificate_id;
use serde_json::Value;

const USAGE: &str = "burst-bench: a burst of first connections through the deployed stack at AWS's quotas

usage: burst-bench [--devices N] [--mqtt M] [--rate R] [--quota-scale S]
                   [--in-flight C] [--max-backoff-s B] [--deadline-s D]

  --devices N      device certificates, each making a first connection (default 1000)
  --mqtt M         of which M keep reconnecting with backoff until let in (default 100)
  --rate R         first connections per second; 0: all at once (default 0)
  --quota-scale S  AWS's default quotas times S (default 1)
  --in-flight C    first connections open at once, at most (default 128)
  --max-backoff-s B  the reconnecting devices' longest wait between tries (default 30)
  --deadline-s D   give up waiting for the pipeline to drain after D seconds (default 3600)
  --fault-rate F   inject faults (5xx, timeouts, connection resets, a sixth each) into
                   this fraction of the functions' AWS calls (default 0)
  --kill-at K      kill -9 one jitr-registrar process (a container in the middle of a
                   batch) once K certificates were activated (default: never)
  --copies C       each device makes C first connections at once: C registered events
                   per certificate, delivered concurrently (default 1)
  --batch-concurrency B  the template's RegistrarBatchConcurrency (default: the template's, 3)
  --pacing on|off  off: the registrar's client-side pacing turned off (IOT_API_SHARE=0)
                   after deploying (default on, as the template deploys it)";

/// The actions on the provisioning path whose quotas bound the rate.
const PATH: &[(&str, &str)] = &[
    ("iot", "DescribeCertificate"),
    ("iot", "UpdateCertificate"),
    ("iot", "ListThingPrincipals"),
    ("iot", "AttachPolicy"),
    ("iot", "CreateThing"),
    ("iot", "AttachThingPrincipal"),
    ("iot", "AddThingToThingGroup"),
    ("iot", "DescribeCACertificate"),
];

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("burst-bench", run().await)
}

struct Config {
    devices: usize,
    mqtt: usize,
    rate: f64,
    quota_scale: f64,
    in_flight: usize,
    max_backoff: Duration,
    deadline: Duration,
    fault_rate: f64,
    kill_at: u64,
    copies: usize,
}

async fn run() -> BenchResult {
    let args = Args::parse(
        USAGE,
        &[
            "devices",
            "mqtt",
            "rate",
            "quota-scale",
            "in-flight",
            "max-backoff-s",
            "deadline-s",
            "fault-rate",
            "kill-at",
            "copies",
            "pacing",
            "batch-concurrency",
        ],
    )?;
    let config = Config {
        devices: args.number("devices", 1000)?,
        mqtt: args.number("mqtt", 100)?,
        rate: args.number("rate", 0.0)?,
        quota_scale: args.number("quota-scale", 1.0)?,
        in_flight: args.number("in-flight", 128usize)?.max(1),
        max_backoff: Duration::from_secs(args.number("max-backoff-s", 30)?),
        deadline: Duration::from_secs(args.number("deadline-s", 3600)?),
        fault_rate: args.number("fault-rate", 0.0)?,
        kill_at: args.number("kill-at", u64::MAX)?,
        copies: args.number("copies", 1usize)?.max(1),
    };
    if config.mqtt > config.devices {
        return Err("--mqtt cannot exceed --devices".into());
    }
    let quotas = Quotas::aws_defaults().scaled(config.quota_scale);
    let mut options = DeployOptions::default().behind_quotas(quotas.clone());
    if config.quota_scale != 1.0 {
        // The account's raised quotas, told to the stack as an operator would.
        let raised: Vec<String> = quotas
            .iter()
            .filter(|(action, _)| action.service == "iot")
            .map(|(action, q)| format!("{}={q}", action.operation))
            .collect();
        options = options.parameter("IotApiQuotas", &raised.join(","));
    }
    if let Some(b) = args.text("batch-concurrency") {
        options = options.parameter("RegistrarBatchConcurrency", b);
    }
    let d = Arc::new(Deployment::new(options).await?);
    let proxy = d.proxy.as_ref().ok_or("the deployment has no proxy")?;

    eprintln!("minting {} device certificates", config.devices);
    let minted = Instant::now();
    let devices: Vec<Device> = (0..config.devices)
        .map(|n| {
            let name = format!("burst-{n:06}");
            let cert = d.ca.device(&name).build()?;
            let id = certificate_id(&cert);
            let key = cert.key_pem.clone().ok_or("device without key")?;
            Ok(Device {
                name,
                id,
                cert_pem: cert.cert_pem,
                key_pem: key,
            })
        })
        .collect::<BenchResult<_>>()?;
    eprintln!("minted in {:.1} s", minted.elapsed().as_secs_f64());
    // Reconnecting devices spread evenly over the burst.
    let stride = config.devices.checked_div(config.mqtt).unwrap_or(usize::MAX).max(1);
    let mqtt = config.mqtt;
    let reconnecting = move |n: usize| mqtt > 0 && n.is_multiple_of(stride) && n / stride < mqtt;

    let pacing = args.text("pacing").unwrap_or("on");
    if !matches!(pacing, "on" | "off") {
        return Err(format!("--pacing {pacing}: on or off").into());
    }
    if pacing == "off" {
        unpace_the_registrar(&d).await?;
    }
    proxy.clear();
    proxy.clear_quota_report();
    if config.fault_rate > 0.0 {
        proxy.set_faults(Some(Faults::new(config.fault_rate, 2026)));
    }
    let mut killed: Option<String> = None;
    let started = Instant::now();
    let connected = Arc::new(AtomicUsize::new(0));
    let first_results = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    let driver = {
        let d = d.clone();
        let devices = devices.clone();
        let connected = connected.clone();
        let first_results = first_results.clone();
        let (rate, in_flight, max_backoff, deadline, copies) = (
            config.rate,
            config.in_flight,
            config.max_backoff,
            config.deadline,
            config.copies,
        );
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
            let mut tasks = Vec::new();
            for (n, device) in devices.into_iter().enumerate() {
                if rate > 0.0 {
                    let at = started + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (d, connected, first_results) = (d.clone(), connected.clone(), first_results.clone());
                let keeps_trying = reconnecting(n);
                tasks.push(tokio::spawn(async move {
                    // `copies` first connections at once: as many registered events.
                    let mut firsts = futures::future::join_all((0..copies).map(|_| device.connect(&d))).await;
                    let first = firsts.swap_remove(0);
                    drop(permit);
                    let label = match &first {
                        Ok(r) => format!("{r:?}"),
                        Err(e) => format!("error: {e}"),
                    };
                    *first_results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(label)
                        .or_default() += 1;
                    if !keeps_trying {
                        return None;
                    }
                    let mut delay = Duration::from_secs(1);
                    loop {
                        if matches!(device.connect(&d).await, Ok(ConnectResult::Accepted)) {
                            connected.fetch_add(1, Ordering::Relaxed);
                            return Some(started.elapsed());
                        }
                        if started.elapsed() > deadline {
                            return None;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(max_backoff);
                    }
                }));
            }
            let mut times = Vec::new();
            for task in tasks {
                if let Ok(Some(t)) = task.await {
                    times.push(t.as_secs_f64());
                }
            }
            times
        })
    };

    // Follow the pipeline until every first connection was made, every
    // reconnecting device is in and the queue stayed empty for 15 s.
    let mut empty_polls = 0;
    let mut last_activation_count = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let report = proxy.quota_report();
        let activations = report.get("iot", "UpdateCertificate").map_or(0, |a| a.calls);
        let depth = d.queue_depth("RegistrationQueueUrl").await?;
        let dlq = d.queue_depth("RegistrationDeadLetterQueueUrl").await?;
        eprintln!(
            "{:>6.0} s: UpdateCertificate calls {activations} (+{}), throttles {}, queue {depth}, DLQ {dlq}, devices in {}/{}",
            started.elapsed().as_secs_f64(),
            activations.saturating_sub(last_activation_count),
            report.total_throttled(),
            connected.load(Ordering::Relaxed),
            config.mqtt,
        );
        last_activation_count = activations;
        if killed.is_none() && activations >= config.kill_at {
            killed = Some(kill_a_registrar()?);
            eprintln!("killed {}", killed.as_deref().unwrap_or_default());
        }
        let connections_done = driver.is_finished();
        empty_polls = if depth == 0 { empty_polls + 1 } else { 0 };
        if connections_done && empty_polls >= 3 {
            break;
        }
        if started.elapsed() > config.deadline {
            eprintln!("deadline passed with work left");
            break;
        }
    }
    let device_times = driver.await?;
    let requests = proxy.requests();
    let report = proxy.quota_report();
    let audit = audit(&d, &devices).await?;
    let redeliveries = registrar_metrics(&d).await?;
    print_report(
        &config,
        &quotas,
        &devices,
        &requests,
        &report,
        &audit,
        &redeliveries,
        &device_times,
    );
    if config.fault_rate > 0.0 {
        println!(
            "faults injected (500/503/timeout-before/timeout-after/reset-before/reset-after): {} in {} calls",
            report.total_faults(),
            report.total_calls()
        );
    }
    if let Some(killed) = &killed {
        println!("killed: {killed}");
    }
    let first = first_results.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!("first connections: {first:?}");
    Ok(())
}

/// Sets the deployed registrar's `IOT_API_SHARE` to 0 (its calls unpaced).
async fn unpace_the_registrar(d: &Deployment) -> BenchResult {
    let lambda = aws_sdk_lambda::Client::new(&d.emulator.sdk_config().await);
    let name = d.output("RegistrarFunctionName")?;
    let current = lambda.get_function_configuration().function_name(name).send().await?;
    let mut variables = current.environment.and_then(|e| e.variables).unwrap_or_default();
    variables.insert("IOT_API_SHARE".into(), "0".into());
    lambda
        .update_function_configuration()
        .function_name(name)
        .environment(
            aws_sdk_lambda::types::Environment::builder()
                .set_variables(Some(variables))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// Kills (SIGKILL) one running jitr-registrar process of the emulator: the
/// one whose code is the registrar's zip. Returns what was killed.
fn kill_a_registrar() -> BenchResult<String> {
    let zip = onboarding_test_support::emulator::stack::lambda_dir().join("jitr-registrar/bootstrap.zip");
    let digest = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &std::fs::read(&zip)?,
    ));
    let out = std::process::Command::new("pgrep").args(["-f", &digest]).output()?;
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid = pids
        .first()
        .ok_or_else(|| format!("no running registrar process (code {digest})"))?;
    let status = std::process::Command::new("kill").args(["-9", pid]).status()?;
    if !status.success() {
        return Err(format!("kill -9 {pid} failed").into());
    }
    Ok(format!("registrar process {pid} (one of {} running)", pids.len()))
}

#[derive(Clone)]
struct Device {
    name: String,
    id: String,
    cert_pem: String,
    key_pem: String,
}

impl Device {
    async fn connect(&self, d: &Deployment) -> BenchResult<ConnectResult> {
        Ok(connect_once(
            d.emulator.mqtt_port,
            &d.server_ca_pem,
            &self.cert_pem,
            &self.key_pem,
            &self.name,
        )
        .await?)
    }
}

/// What the emulator holds at the end, read directly (not through the proxy).
#[derive(Default)]
struct Audit {
    /// Certificates under the CA by status.
    statuses: BTreeMap<String, usize>,
    /// Certificates by the number of things they are attached to.
    things_per_certificate: BTreeMap<usize, usize>,
    things: usize,
    /// Inventory records by status.
    records: BTreeMap<String, usize>,
    dlq: u64,
}

async fn audit(d: &Deployment, devices: &[Device]) -> BenchResult<Audit> {
    let mut audit = Audit {
        statuses: statuses_under_ca(&d.iot, &d.ca_id, devices.iter().map(|d| d.id.as_str())).await?,
        ..Audit::default()
    };
    let counts: Vec<BenchResult<usize>> = futures::stream::iter(devices)
        .map(|device| async move {
            let arn = format!(
                "arn:aws:iot:{}:{}:cert/{}",
                onboarding_test_support::emulator::REGION,
                onboarding_test_support::emulator::ACCOUNT_ID,
                device.id
            );
            let out = d.iot.list_principal_things().principal(arn).send().await?;
            Ok(out.things().len())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for count in counts {
        *audit.things_per_certificate.entry(count?).or_default() += 1;
    }
    let mut token = None;
    loop {
        let page = d.iot.list_things().set_next_token(token).send().await?;
        audit.things += page.things().len();
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    let mut start = None;
    loop {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        let page = d
            .dynamodb
            .scan()
            .table_name(d.output("InventoryTableName")?)
            .filter_expression("begins_with(pk, :p) AND sk = :s")
            .expression_attribute_values(":p", A::S("CERT#".into()))
            .expression_attribute_values(":s", A::S("CERT".into()))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in page.items() {
            let status = item
                .get("status")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            *audit.records.entry(status).or_default() += 1;
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    audit.dlq = d.queue_depth("RegistrationDeadLetterQueueUrl").await?;
    Ok(audit)
}

/// The registrar's EMF metrics summed over its log group. The emulator's
/// `FilterLogEvents` answers at most 10,000 events and no token, so the
/// group is read in time order from the last timestamp seen (events of that
/// millisecond are read again and skipped).
async fn registrar_metrics(d: &Deployment) -> BenchResult<BTreeMap<String, f64>> {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&d.emulator.sdk_config().await);
    let group = format!("/aws/lambda/{}", d.output("RegistrarFunctionName")?);
    let mut sums = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut from = 0_i64;
    loop {
        let page = logs
            .filter_log_events()
            .log_group_name(&group)
            .start_time(from)
            .limit(10_000)
            .send()
            .await?;
        let events = page.events();
        let mut new = 0;
        for event in events {
            let key = (
                event.timestamp().unwrap_or_default(),
                event.log_stream_name().unwrap_or_default().to_string(),
                event.message().unwrap_or_default().to_string(),
            );
            from = from.max(key.0);
            if !seen.insert(key) {
                continue;
            }
            new += 1;
            let Some(message) = event.message() else {
                continue;
            };
            let Ok(doc) = serde_json::from_str::<Value>(message.trim()) else {
                continue;
            };
            let Some(metrics) = doc
                .pointer("/_aws/CloudWatchMetrics/0/Metrics")
                .and_then(Value::as_array)
            else {
                continue;
            };
            for name in metrics.iter().filter_map(|m| m["Name"].as_str()) {
                if name == "DurationMs" {
                    continue;
                }
                let mut key = name.to_string();
                for extra in ["Reason", "ErrorKind"] {
                    if let Some(v) = doc[extra].as_str() {
                        key = format!("{key}:{v}");
                    }
                }
                *sums.entry(key).or_insert(0.0) += doc[name].as_f64().unwrap_or(0.0);
            }
        }
        if events.len() < 10_000 || new == 0 {
            break;
        }
    }
    Ok(sums)
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    config: &Config,
    quotas: &Quotas,
    devices: &[Device],
    requests: &[RecordedRequest],
    report: &QuotaReport,
    audit: &Audit,
    metrics: &BTreeMap<String, f64>,
    device_times: &[f64],
) {
    let n = devices.len() as f64;
    // Activation times: UpdateCertificate(ACTIVE) requests admitted (a
    // throttled one is followed by its retry; the last per certificate counts).
    // Times from the first call the functions made in the burst.
    let t0 = requests.iter().map(|r| r.received).min().unwrap_or_default();
    let mut activation_at: HashMap<String, f64> = HashMap::new();
    for r in requests {
        if let Some((Step::Activate, id)) = activation::provisioning_step(r) {
            activation_at.insert(id, (r.received - t0).as_secs_f64());
        }
    }
    let last_call = requests
        .iter()
        .map(|r| (r.received - t0).as_secs_f64())
        .fold(0.0, f64::max);
    let mut times: Vec<f64> = activation_at.values().copied().collect();
    times.sort_by(f64::total_cmp);
    let (p5, p95, last) = match times.len() {
        0 => (0.0, 0.0, 0.0),
        _ => (
            percentile(&times, 5.0),
            percentile(&times, 95.0),
            percentile(&times, 100.0),
        ),
    };
    let sustained = if p95 > p5 {
        (times.len() as f64 * 0.9) / (p95 - p5)
    } else {
        0.0
    };
    // The ceiling: the smallest quota ÷ calls per device, over the path's actions.
    let mut binding = ("none".to_string(), f64::INFINITY);
    let mut table = Table::new(&[
        "action",
        "quota/s",
        "calls",
        "calls/device",
        "throttled",
        "peak/s",
        "ceiling devices/s",
    ]);
    for action in &report.actions {
        let per_device = action.calls as f64 / n;
        let ceiling = action.quota.map(|q| q / per_device.max(f64::MIN_POSITIVE));
        if let Some(c) = ceiling
            && PATH.contains(&(action.action.service.as_str(), action.action.operation.as_str()))
            && c < binding.1
        {
            binding = (format!("{}:{}", action.action.service, action.action.operation), c);
        }
        table.row(vec![
            format!("{}:{}", action.action.service, action.action.operation),
            action.quota.map_or("–".into(), |q| f(q, 0)),
            action.calls.to_string(),
            f(per_device, 2),
            action.throttled.to_string(),
            action.peak_per_second.to_string(),
            ceiling.map_or("–".into(), |c| f(c, 2)),
        ]);
    }
    // The ceiling if every path action were called once per device.
    let ideal = PATH
        .iter()
        .filter(|(s, o)| *o != "DescribeCACertificate" && quotas.limit(s, o).is_some())
        .filter_map(|(s, o)| quotas.limit(s, o))
        .fold(f64::INFINITY, f64::min);
    println!("{}", table.render());
    let order = activation::activation_order(requests);
    let (checked, early) = (order.activated, order.early);
    let mut devs = device_times.to_vec();
    devs.sort_by(f64::total_cmp);
    println!(
        "devices {} (reconnecting {}), first connections {} ({}), quotas ×{}",
        devices.len(),
        config.mqtt,
        if config.rate > 0.0 {
            format!("at {}/s", config.rate)
        } else {
            "all at once".to_string()
        },
        format_args!("{} in flight", config.in_flight),
        config.quota_scale
    );
    println!(
        "activated {} in {:.1} s (last activation; queue drained, duplicates included, after {:.1} s); sustained {:.2}/s between p5 {:.1} s and p95 {:.1} s",
        times.len(),
        last,
        last_call,
        sustained,
        p5,
        p95
    );
    let drained = if last_call > 0.0 { n / last_call } else { 0.0 };
    println!(
        "ceiling (smallest quota ÷ its calls per device): {} at {:.2} devices/s; sustained ÷ ceiling {:.2}; drain rate {:.2}/s ÷ ceiling {:.2}",
        binding.0,
        binding.1,
        sustained / binding.1,
        drained,
        drained / binding.1,
    );
    println!(
        "against one call per device of each action (ceiling {ideal:.0}/s): sustained {:.2}, drain rate {:.2}",
        sustained / ideal,
        drained / ideal
    );
    println!(
        "throttles per device {:.2}; calls per device {:.2}; received more than once: {} messages",
        report.total_throttled() as f64 / n,
        report.total_calls() as f64 / n,
        metrics.get("Redelivered").copied().unwrap_or(0.0)
    );
    println!("registrar outcomes: {metrics:?}");
    println!(
        "certificates by status {:?}; things per certificate {:?}; things {}; records {:?}; DLQ {}",
        audit.statuses, audit.things_per_certificate, audit.things, audit.records, audit.dlq
    );
    if !devs.is_empty() {
        println!(
            "reconnecting devices let in: {} of {}; time to active p50 {:.1} s, p95 {:.1} s, max {:.1} s",
            devs.len(),
            config.mqtt,
            percentile(&devs, 50.0),
            percentile(&devs, 95.0),
            percentile(&devs, 100.0)
        );
    }
    println!(
        "activation order: {checked} certificates activated, {} activated before a provisioning step{}",
        early.len(),
        if early.is_empty() {
            String::new()
        } else {
            format!(": {:?}", &early[..early.len().min(10)])
        }
    );
}
