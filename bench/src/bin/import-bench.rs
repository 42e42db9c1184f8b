//! `onboard fleet import` of N certificates at AWS's default quotas: how
//! fast a migration goes, against the ceiling the quotas set, and whether
//! anything is lost, duplicated or activated early.
//!
//! The template is deployed into the emulator (`AUTH=true`) behind the
//! quota proxy (AWS's default quotas), a profile is put in the table and the
//! deployment's CA bound to it, N device certificates of that CA are written
//! to a directory, and the `onboard` binary imports them
//! (`fleet import --certs DIR --profile P`) with every AWS call through the
//! proxy, as an operator would run it against AWS.
//!
//! Reported: certificates provisioned per second (over the whole import,
//! and sustained between the 5th and 95th percentile of activations) as a
//! ratio of the ceiling (the smallest quota ÷ that action's calls per
//! certificate, both measured in this run), calls and throttles per
//! certificate, the import's outcomes, certificates under the CA by status,
//! and whether any certificate was set ACTIVE before its thing attachment,
//! policy, inventory record and credentials record (from the proxy's record
//! of every request, in arrival order).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use onboarding_aws::ConfigAdmin;
use onboarding_bench::{Args, BenchResult, Table, f, percentile, statuses_under_ca};
use onboarding_domain::DeviceProfile;
use onboarding_test_support::activation::{self, Step};
use onboarding_test_support::deployment::{DeployOptions, Deployment};
use onboarding_test_support::quota::Quotas;
use onboarding_test_support::world::certificate_id;
use serde_json::Value;

const USAGE: &str = "import-bench: onboard fleet import of N certificates through the deployed stack at AWS's quotas

usage: import-bench [--certs N] [--concurrency C] [--onboard PATH]

  --certs N        device certificates to import (default 500)
  --concurrency C  the import's --concurrency, rows in flight (default 32)
  --onboard PATH   the onboard binary (default: next to this one; build it
                   first with cargo build -p onboard)";

const PROFILE: &str = "imported";

/// The actions on the import's path whose quotas bound the rate.
const PATH: &[&str] = &[
    "RegisterCertificate",
    "DescribeCertificate",
    "UpdateCertificate",
    "ListThingPrincipals",
    "AttachPolicy",
    "CreateThing",
    "AttachThingPrincipal",
    "AddThingToThingGroup",
    "DescribeCACertificate",
];

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("import-bench", run().await)
}

async fn run() -> BenchResult {
    let args = Args::parse(USAGE, &["certs", "concurrency", "onboard"])?;
    let n: usize = args.number("certs", 500)?;
    let concurrency: usize = args.number("concurrency", 32)?;
    let onboard = match args.text("onboard") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory for this binary")?
            .join("onboard"),
    };
    if !onboard.exists() {
        return Err(format!(
            "{} not found: cargo build -p onboard, or pass --onboard PATH",
            onboard.display()
        )
        .into());
    }
    let quotas = Quotas::aws_defaults();
    let d = Deployment::new(DeployOptions::default().behind_quotas(quotas.clone())).await?;
    let proxy = d.proxy.as_ref().ok_or("the deployment has no proxy")?;
    let table = d.output("InventoryTableName")?.to_string();

    // A profile in the table (the stack's type, group and policy), the
    // deployment's CA bound to it; written directly, not through the proxy.
    let group = d
        .output("ThingGroupNames")?
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let profile = DeviceProfile::parse(
        &serde_json::json!({
            "name": PROFILE,
            "thingType": d.output("ThingTypeName")?,
            "thingName": "{CN}",
            "thingGroups": [group],
            "policyName": d.output("DevicePolicyName")?,
        })
        .to_string(),
    )?;
    let admin = ConfigAdmin::new(d.dynamodb.clone(), &table);
    admin.put_profile(&profile).await?;
    admin.bind(&d.ca_id, PROFILE).await?;

    eprintln!("minting {n} device certificates");
    let minted = Instant::now();
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs)?;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let cert = d.ca.device(&format!("import-{i:06}")).build()?;
        ids.push(certificate_id(&cert));
        std::fs::write(certs.join(format!("{i:06}.pem")), &cert.cert_pem)?;
    }
    eprintln!("minted in {:.1} s", minted.elapsed().as_secs_f64());

    proxy.clear();
    proxy.clear_quota_report();
    let started = Instant::now();
    let bucket = d.output("CredentialsBucketName")?.to_string();
    let kms_key = d.output("CredentialsKeyArn")?.to_string();
    let import = || {
        let mut command = tokio::process::Command::new(&onboard);
        command
            .env_remove("AWS_PROFILE")
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", onboarding_test_support::emulator::REGION)
            .env("ONBOARD_TABLE", &table)
            .env("ONBOARD_BUCKET", &bucket)
            .env("ONBOARD_KMS_KEY", &kms_key)
            .args(["--json", "fleet", "import", "--certs"])
            .arg(&certs)
            .args(["--profile", PROFILE, "--concurrency", &concurrency.to_string()])
            .arg("--state")
            .arg(dir.path().join("state.jsonl"))
            .arg("--failures")
            .arg(dir.path().join("failures.csv"))
            // Progress on this process's stderr (`output()` would capture it).
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        command
    };
    let output = import().spawn()?.wait_with_output().await?;
    let wall = started.elapsed().as_secs_f64();
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let requests = proxy.requests();
    let report = proxy.quota_report();
    let failures = std::fs::read_to_string(dir.path().join("failures.csv")).unwrap_or_default();
    // Rows that failed (an AWS call, after the SDK's retries): the same
    // command again, as an operator would run it, from the state file.
    let resumed = match outcome["failed"].as_u64().unwrap_or_default() {
        0 => None,
        _ => {
            let again = import().spawn()?.wait_with_output().await?;
            Some((
                again.status.code(),
                serde_json::from_slice::<Value>(&again.stdout).unwrap_or(Value::Null),
            ))
        }
    };

    // Activation times, from the first call the import made.
    let t0 = requests.iter().map(|r| r.received).min().unwrap_or_default();
    let mut activation_at: HashMap<String, f64> = HashMap::new();
    for r in &requests {
        if let Some((Step::Activate, id)) = activation::provisioning_step(r) {
            activation_at.insert(id, (r.received - t0).as_secs_f64());
        }
    }
    let mut times: Vec<f64> = activation_at.values().copied().collect();
    times.sort_by(f64::total_cmp);
    let (p5, p95) = match times.len() {
        0 => (0.0, 0.0),
        _ => (percentile(&times, 5.0), percentile(&times, 95.0)),
    };
    let sustained = if p95 > p5 {
        (times.len() as f64 * 0.9) / (p95 - p5)
    } else {
        0.0
    };
    let count = n as f64;
    let mut binding = ("none".to_string(), f64::INFINITY);
    let mut table_out = Table::new(&[
        "action",
        "quota/s",
        "calls",
        "calls/cert",
        "throttled",
        "peak/s",
        "ceiling certs/s",
    ]);
    for action in &report.actions {
        let per_cert = action.calls as f64 / count;
        let ceiling = action.quota.map(|q| q / per_cert.max(f64::MIN_POSITIVE));
        if let Some(c) = ceiling
            && action.action.service == "iot"
            && PATH.contains(&action.action.operation.as_str())
            && c < binding.1
        {
            binding = (action.action.operation.clone(), c);
        }
        table_out.row(vec![
            format!("{}:{}", action.action.service, action.action.operation),
            action.quota.map_or("–".into(), |q| f(q, 0)),
            action.calls.to_string(),
            f(per_cert, 2),
            action.throttled.to_string(),
            action.peak_per_second.to_string(),
            ceiling.map_or("–".into(), |c| f(c, 2)),
        ]);
    }
    let provisioned = outcome["provisioned"].as_u64().unwrap_or_default() as f64;
    let rate = provisioned / wall;
    let order = activation::activation_order(&requests);
    let statuses = statuses(&d, &ids).await?;

    println!("{}", table_out.render());
    println!(
        "certificates {n}, concurrency {concurrency}, quotas: AWS's defaults; exit {:?}",
        output.status.code()
    );
    println!("outcomes: {outcome}");
    println!(
        "import took {wall:.1} s: {rate:.2} provisioned/s; activations sustained {sustained:.2}/s between p5 {p5:.1} s and p95 {p95:.1} s"
    );
    println!(
        "ceiling (smallest quota ÷ its calls per certificate): {} at {:.2} certs/s; rate ÷ ceiling {:.2}; sustained ÷ ceiling {:.2}",
        binding.0,
        binding.1,
        rate / binding.1,
        sustained / binding.1
    );
    println!(
        "calls per certificate {:.2} (IoT {:.2}); throttles {} ({:.3} per certificate)",
        report.total_calls() as f64 / count,
        report
            .actions
            .iter()
            .filter(|a| a.action.service == "iot")
            .map(|a| a.calls)
            .sum::<u64>() as f64
            / count,
        report.total_throttled(),
        report.total_throttled() as f64 / count
    );
    if failures.lines().count() > 1 {
        println!("failures of the first run:\n{}", failures.trim_end());
    }
    if let Some((code, again)) = &resumed {
        println!("the same command again (resumed from the state file): exit {code:?}, {again}");
    }
    println!("certificates by status (at the end): {statuses:?}");
    println!(
        "activation order: {} certificates activated, {} activated before a provisioning step{}",
        order.activated,
        order.early.len(),
        if order.early.is_empty() {
            String::new()
        } else {
            format!(": {:?}", &order.early[..order.early.len().min(10)])
        }
    );
    Ok(())
}

/// The imported certificates by status in IoT (read directly).
async fn statuses(d: &Deployment, ids: &[String]) -> BenchResult<BTreeMap<String, usize>> {
    statuses_under_ca(&d.iot, &d.ca_id, ids.iter().map(String::as_str)).await
}
