//! `onboard device retire`: the domain's `Retirement` over the adapters,
//! for one thing or a file of them, paced to AWS IoT's quotas, with a
//! progress bar and a summary; `--dry-run` prints each thing's plan and
//! changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use onboarding_aws::{ApiPacer, ApiQuotas, DynamoInventory, RotationIotAdapter, S3RotationObjects};
use onboarding_domain::{
    Pacer, RetireOutcome, RetireRequest, Retirement, RetirementPlan, RetirementSettings, is_valid_thing_name,
};
use serde_json::json;

use crate::Cli;
use crate::error::CliError;
use crate::files::read;

/// Options of `onboard device retire`.
#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    /// Things to retire.
    pub things: Vec<String>,
    /// A file of thing names, one a line (blank lines and `#` comments skipped).
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
    /// Print what would be done for each thing, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Set the certificates REVOKED (kept in IoT, revoked) instead of INACTIVE and deleted.
    #[arg(long)]
    pub revoke: bool,
    /// Keep the thing, its groups, its history and its name claim; only cut the credentials.
    #[arg(long)]
    pub keep_thing: bool,
    /// Why, recorded on each RETIRED record.
    #[arg(long, value_name = "TEXT", default_value = "retired by an operator")]
    pub reason: String,
    /// The credentials bucket (the stack's CredentialsBucketName output).
    #[arg(long, env = "ONBOARD_BUCKET", value_name = "NAME")]
    pub bucket: Option<String>,
    /// Things retired at the same time (the pacing keeps each action within its quota).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Raised quotas, `Action=PerSecond,...` (e.g. `DescribeCertificate=50`), over AWS's defaults.
    #[arg(long, value_name = "LIST", default_value = "")]
    pub iot_quotas: String,
}

/// Monotonic time and sleeping for the domain, on tokio.
struct TokioPacer;

impl Pacer for TokioPacer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

type CliRetirement = Retirement<RotationIotAdapter, DynamoInventory, S3RotationObjects, DynamoInventory, TokioPacer>;

/// A thing name refused, and why.
type Refused = (String, String);

/// The things to retire, in order, without duplicates; and the bad ones,
/// each with its problem (they do not stop the rest).
fn targets(args: &RetireArgs) -> Result<(Vec<String>, Vec<Refused>), CliError> {
    let mut named: Vec<(String, String)> = args
        .things
        .iter()
        .map(|t| (format!("argument {t:?}"), t.trim().to_string()))
        .collect();
    if let Some(file) = &args.file {
        let text = read(file, "the file of thing names")?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            named.push((format!("{}:{}", file.display(), n + 1), line.to_string()));
        }
    }
    if named.is_empty() {
        return Err(CliError::Input(
            "no thing to retire: name things as arguments or give --file F (one thing name a line)".into(),
        ));
    }
    let (mut good, mut bad, mut seen) = (Vec::new(), Vec::new(), BTreeSet::new());
    for (origin, name) in named {
        if !is_valid_thing_name(&name) {
            bad.push((
                name.clone(),
                format!("{origin}: {name:?} is not a thing name (1 to 128 of a-z A-Z 0-9 : _ -)"),
            ));
        } else if seen.insert(name.clone()) {
            good.push(name);
        }
    }
    Ok((good, bad))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Longest `--reason` kept on a record.
const REASON_MAX: usize = 512;

fn check_reason(reason: &str) -> Result<(), CliError> {
    let trimmed = reason.trim();
    if trimmed.is_empty() || trimmed.chars().count() > REASON_MAX || trimmed.chars().any(char::is_control) {
        return Err(CliError::Input(format!(
            "--reason must be 1 to {REASON_MAX} characters of text, without control characters"
        )));
    }
    Ok(())
}

pub async fn run(args: &RetireArgs, cli: &Cli) -> Result<(), CliError> {
    check_reason(&args.reason)?;
    let (things, bad) = targets(args)?;
    let quotas = ApiQuotas::parse(&args.iot_quotas).map_err(|e| CliError::Input(format!("--iot-quotas {e}")))?;
    let table = cli.aws.table()?.to_string();
    let bucket = match (&args.bucket, args.dry_run) {
        (Some(bucket), _) => bucket.clone(),
        (None, true) => String::new(),
        (None, false) => {
            return Err(CliError::Input(
                "no credentials bucket: pass --bucket NAME or set ONBOARD_BUCKET (the stack's CredentialsBucketName output)"
                    .into(),
            ));
        }
    };
    let sdk = cli.aws.sdk_config().await;
    let iot_client = aws_sdk_iot::Client::new(&sdk);
    // Retirement never publishes: the data-plane client is never called.
    let data = onboarding_aws::iot_data_client(&sdk, &iot_client).await?;
    let iot = RotationIotAdapter::new(iot_client, data, None).paced(ApiPacer::new(&quotas, 1));
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    // Retirement only deletes objects (every version): no KMS key is used.
    let objects = S3RotationObjects::new(
        onboarding_aws::s3_client(&sdk, cli.aws.endpoint_url.is_some()),
        bucket,
        String::new(),
    );
    let retirement = Retirement::new(
        iot,
        inventory.clone(),
        objects,
        inventory,
        TokioPacer,
        RetirementSettings::default(),
    );
    for (_, problem) in &bad {
        eprintln!("error: {problem}");
    }
    if args.dry_run {
        dry_run(&retirement, &things, &bad, cli.json).await
    } else {
        retire_all(&retirement, args, &things, &bad, cli.json).await
    }
}

async fn dry_run(
    retirement: &CliRetirement,
    things: &[String],
    bad: &[(String, String)],
    json: bool,
) -> Result<(), CliError> {
    let mut plans = Vec::new();
    let mut failures = Vec::new();
    for thing in things {
        match retirement.plan(thing).await {
            Ok(plan) => plans.push(plan),
            Err(e) => failures.push((thing.clone(), e.to_string())),
        }
    }
    if json {
        let out = json!({
            "dryRun": true,
            "plans": plans.iter().map(plan_json).collect::<Vec<_>>(),
            "failures": failures.iter().chain(bad).map(|(t, e)| json!({"thing": t, "error": e})).collect::<Vec<_>>(),
        });
        println!("{out:#}");
    } else {
        for plan in &plans {
            print_plan(plan);
        }
        for (thing, error) in &failures {
            println!("{thing}: cannot plan: {error}");
        }
        println!("dry run: nothing was changed");
    }
    finish(failures.len(), bad.len(), things.len())
}

fn plan_json(plan: &RetirementPlan) -> serde_json::Value {
    json!({
        "thing": plan.thing_name,
        "nothingToRetire": plan.is_empty(),
        "thingExists": plan.membership.is_some(),
        "thingGroups": plan.membership.as_ref().map(|m| m.thing_groups.clone()).unwrap_or_default(),
        "billingGroup": plan.membership.as_ref().and_then(|m| m.billing_group.clone()),
        "certificates": plan.certificates.iter().map(|c| json!({
            "certificateId": c.certificate_id,
            "status": c.status.as_ref().map(|s| s.as_str()),
            "policies": c.policies,
            "record": c.record_status,
        })).collect::<Vec<_>>(),
        "rotations": plan.rotations.iter().map(|r| json!({
            "oldCertificateId": r.old_certificate_id,
            "state": r.state.as_str(),
            "attempt": r.attempt,
            "jobId": r.job_id,
            "stopped": r.to_stop,
        })).collect::<Vec<_>>(),
        "objects": plan.objects,
        "sharedCertificates": plan.shared.iter().map(|(id, others)| json!({
            "certificateId": id,
            "alsoAttachedTo": others,
        })).collect::<Vec<_>>(),
        "inProgress": plan.in_progress.as_ref().map(|t| json!({
            "reason": t.reason,
            "revoke": t.revoke,
            "keepThing": t.keep_thing,
            "requestedAt": onboarding_domain::rfc3339(t.requested_at),
        })),
    })
}

fn print_plan(plan: &RetirementPlan) {
    if plan.is_empty() {
        println!("{}: nothing to retire (no such thing, no certificate)", plan.thing_name);
        return;
    }
    println!("{}:", plan.thing_name);
    if let Some(t) = &plan.in_progress {
        println!(
            "  a retirement is under way since {} (reason {:?}, revoke {}, keep thing {}): it would be finished with those",
            onboarding_domain::rfc3339(t.requested_at),
            t.reason,
            t.revoke,
            t.keep_thing
        );
    }
    if plan.certificates.is_empty() {
        println!("  certificates: none");
    }
    for c in &plan.certificates {
        println!(
            "  certificate {} {} policies [{}] record {}",
            c.certificate_id,
            c.status.as_ref().map_or("(gone from IoT)", |s| s.as_str()),
            c.policies.join(", "),
            c.record_status.unwrap_or("(none)"),
        );
    }
    for (id, others) in &plan.shared {
        println!(
            "  certificate {id} is also attached to [{}]: only detached from this thing",
            others.join(", ")
        );
    }
    match &plan.membership {
        Some(m) => {
            println!("  thing groups: [{}]", m.thing_groups.join(", "));
            println!("  billing group: {}", m.billing_group.as_deref().unwrap_or("(none)"));
        }
        None => println!("  thing: (gone)"),
    }
    for r in &plan.rotations {
        println!(
            "  rotation of {} {} attempt {} job {}{}",
            r.old_certificate_id,
            r.state.as_str(),
            r.attempt,
            r.job_id,
            if r.to_stop {
                ": stopped, job canceled"
            } else {
                ": left as it is"
            }
        );
    }
    for key in &plan.objects {
        println!("  object {key}: deleted, every version");
    }
}

async fn retire_all(
    retirement: &CliRetirement,
    args: &RetireArgs,
    things: &[String],
    bad: &[(String, String)],
    json: bool,
) -> Result<(), CliError> {
    let request = RetireRequest {
        reason: args.reason.trim().to_string(),
        revoke: args.revoke,
        keep_thing: args.keep_thing,
    };
    let progress = super::connect::progress_bar(
        things.len(),
        json,
        "{spinner} retiring [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}",
    );
    let started = Instant::now();
    let now = now();
    let results: Vec<(String, Result<RetireOutcome, String>)> = futures::stream::iter(things)
        .map(|thing| {
            let request = &request;
            let progress = &progress;
            async move {
                let result = retirement.retire(thing, request, now).await.map_err(|e| e.to_string());
                progress.inc(1);
                if let Err(e) = &result {
                    progress.println(format!("{thing}: failed: {e}"));
                }
                (thing.clone(), result)
            }
        })
        .buffer_unordered(usize::from(args.concurrency))
        .collect()
        .await;
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for (thing, result) in &results {
        match result {
            Ok(outcome) => {
                *counts.entry(outcome.label()).or_default() += 1;
                done.push((thing, outcome));
            }
            Err(e) => {
                *counts.entry("failed").or_default() += 1;
                failures.push((thing.clone(), e.clone()));
            }
        }
    }
    if !bad.is_empty() {
        counts.insert("invalid", bad.len());
    }
    if json {
        let out = json!({
            "counts": counts,
            "seconds": elapsed.as_secs_f64(),
            "retired": done.iter().map(|(thing, outcome)| match outcome {
                RetireOutcome::Retired { certificates, rotations_stopped, thing_deleted, resumed, .. } => json!({
                    "thing": thing, "outcome": outcome.label(), "certificates": certificates,
                    "rotationsStopped": rotations_stopped, "thingDeleted": thing_deleted, "resumed": resumed,
                }),
                RetireOutcome::NothingToRetire { .. } => json!({"thing": thing, "outcome": outcome.label()}),
            }).collect::<Vec<_>>(),
            "failures": failures.iter().chain(bad).map(|(t, e)| json!({"thing": t, "error": e})).collect::<Vec<_>>(),
        });
        println!("{out:#}");
    } else {
        let mut done = done;
        done.sort_by(|a, b| a.0.cmp(b.0));
        for (thing, outcome) in &done {
            match outcome {
                RetireOutcome::Retired {
                    certificates,
                    rotations_stopped,
                    thing_deleted,
                    resumed,
                    ..
                } => println!(
                    "{thing}: {} ({certificates} certificate(s), {rotations_stopped} rotation(s) stopped, thing {})",
                    if *resumed {
                        "retired (an interrupted retirement finished)"
                    } else {
                        "retired"
                    },
                    if *thing_deleted { "deleted" } else { "kept" }
                ),
                RetireOutcome::NothingToRetire { .. } => println!("{thing}: nothing to retire"),
            }
        }
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "summary: {} in {:.1} s: {}",
            things.len() + bad.len(),
            elapsed.as_secs_f64(),
            summary.join(", ")
        );
        for (thing, error) in failures.iter().chain(bad) {
            println!("failed: {thing}: {error}");
        }
    }
    finish(failures.len(), bad.len(), things.len())
}

/// Exit status: AWS failures first (3: run again, each retirement resumes),
/// then bad input (1).
fn finish(failed: usize, bad: usize, total: usize) -> Result<(), CliError> {
    if failed > 0 {
        return Err(CliError::Aws(format!(
            "{failed} of {total} thing(s) failed (listed above); run the command again: each retirement resumes where it stopped"
        )));
    }
    if bad > 0 {
        return Err(CliError::Input(format!(
            "{bad} thing name(s) refused (listed above); the others were done"
        )));
    }
    Ok(())
}
