//! How long the fleet-provisioning hook takes to answer, against AWS IoT's
//! 5-second limit.
//!
//! A world in the local emulator, a recording proxy in front of it holding
//! every request for a fixed latency L (a slow DynamoDB), and the hook built
//! as the Lambda builds it, pointed at the proxy. It answers one request with
//! a cold configuration cache, then warm ones, each for a new certificate of a
//! serial on the allow-list, and refusals (a serial not on the list). For
//! each kind: the answer time (p50, p99, max) and the sequential rounds of
//! DynamoDB calls counted from the proxy's arrival timestamps.

use std::time::{Duration, Instant};

use onboarding_aws::DynamoInventory;
use onboarding_bench::{Args, BenchResult, Table, f, ms, operation_name, summarize, waves};
use onboarding_domain::DenyKey;
use onboarding_test_support::emulator::sdk_config_for;
use onboarding_test_support::proxy::Proxy;
use onboarding_test_support::rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use onboarding_test_support::world::{PROFILE, TABLE, World};
use provisioning_hook::FromEnv;
use serde_json::{Value, json};

const USAGE: &str = "hook-bench: answer time of the fleet-provisioning hook

usage: hook-bench [--latency-ms L] [--requests N] [--deny D]

  --latency-ms L   latency the proxy adds to every DynamoDB request (default 50)
  --requests N     allowed requests after the cold one, and as many refused (default 20)
  --deny D         deny-list entries written first, half serials and half
                   fingerprints (default 0; they are looked up by key, so the
                   hook's configuration never loads them)";

struct Kind {
    label: &'static str,
    times: Vec<f64>,
    rounds: Vec<usize>,
    pattern: String,
}

/// A certificate as AWS IoT makes them: P-256, ten years.
fn certificate() -> BenchResult<(String, String)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "AWS IoT Certificate");
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(3650 * 86_400)).into();
    let pem = params.self_signed(&key)?.pem();
    let id = onboarding_domain::Certificate::from_pem(&pem)?.fingerprint;
    Ok((id, pem))
}

fn request(serial: &str) -> BenchResult<Value> {
    let (id, pem) = certificate()?;
    Ok(json!({
        "claimCertificateId": "c".repeat(64),
        "certificateId": id,
        "certificatePem": pem,
        "templateArn": "arn:aws:iot:us-east-1:000000000000:provisioningtemplate/bench-fleet",
        "clientId": format!("claim-{serial}"),
        "parameters": {
            "SerialNumber": serial,
            "CommonName": format!("fleet-{serial}"),
            "Organization": "Acme",
            "OrganizationalUnit": "thermo-2",
        },
    }))
}

/// Writes `count` deny-list entries (each its own item, as `onboard deny add`
/// writes them), 64 at a time.
async fn write_deny_entries(inventory: &DynamoInventory, ca_id: &str, count: usize, now: i64) -> BenchResult {
    use futures::stream::{self, StreamExt, TryStreamExt};
    stream::iter(0..count)
        .map(|i| async move {
            let key = if i % 2 == 0 {
                DenyKey::Serial {
                    ca_certificate_id: ca_id.to_string(),
                    serial: format!("{i:016x}"),
                }
            } else {
                DenyKey::Fingerprint(format!("{i:064x}"))
            };
            inventory.put_deny_entry(&key, Some("hook-bench"), now).await
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("hook-bench", run().await)
}

async fn run() -> BenchResult {
    let args = Args::parse(USAGE, &["latency-ms", "requests", "deny"])?;
    let deny: usize = args.number("deny", 0)?;
    let latency = Duration::from_millis(args.number("latency-ms", 50)?);
    let requests: usize = args.number("requests", 20)?;
    if requests == 0 {
        return Err("--requests must be positive".into());
    }
    let world = World::new().await?;
    let serials: Vec<String> = (0..=requests).map(|i| format!("SN-{i:05}")).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        .try_into()?;
    let entries: Vec<(String, Option<String>)> = serials.iter().map(|s| (s.clone(), None)).collect();
    DynamoInventory::new(world.dynamodb.clone(), TABLE)
        .allow_serials(&entries, Some(PROFILE), now)
        .await?;
    let loading = Instant::now();
    write_deny_entries(
        &DynamoInventory::new(world.dynamodb.clone(), TABLE),
        &world.ca_id,
        deny,
        now,
    )
    .await?;
    if deny > 0 {
        println!(
            "hook-bench: {deny} deny-list entries written in {:.1} s",
            loading.elapsed().as_secs_f64()
        );
    }
    let proxy = Proxy::start(world.emulator.gateway_port, latency).await?;
    let settings = provisioning_hook::Settings::from_lookup(|name| match name {
        "INVENTORY_TABLE" => Some(TABLE.to_string()),
        _ => None,
    })?;
    let sdk = sdk_config_for(&proxy.endpoint()).await;
    let hook = provisioning_hook::build(&settings, &sdk);

    let mut kinds = [
        Kind {
            label: "allowed, cold configuration cache",
            times: Vec::new(),
            rounds: Vec::new(),
            pattern: String::new(),
        },
        Kind {
            label: "allowed, warm",
            times: Vec::new(),
            rounds: Vec::new(),
            pattern: String::new(),
        },
        Kind {
            label: "refused: serial not on the allow-list",
            times: Vec::new(),
            rounds: Vec::new(),
            pattern: String::new(),
        },
    ];
    let mut jobs: Vec<(usize, Value)> = Vec::new();
    for (i, serial) in serials.iter().enumerate() {
        jobs.push((usize::from(i > 0), request(serial)?));
        if i > 0 {
            jobs.push((2, request(&format!("XX-{i:05}"))?));
        }
    }
    for (kind, payload) in jobs {
        proxy.clear();
        let started = Instant::now();
        let (response, outcome) = hook.decide(payload, now).await;
        let elapsed = started.elapsed();
        let expected = kind != 2;
        if response.allow_provisioning != expected {
            return Err(format!("{}: unexpected outcome {outcome:?}", kinds[kind].label).into());
        }
        let waves = waves(&proxy.requests(), latency);
        kinds[kind].times.push(ms(elapsed));
        kinds[kind].rounds.push(waves.len());
        kinds[kind].pattern = waves
            .iter()
            .map(|wave| {
                let mut names: Vec<String> = wave.iter().map(operation_name).collect();
                names.sort();
                names.join(" ‖ ")
            })
            .collect::<Vec<_>>()
            .join(" → ");
    }

    println!(
        "hook-bench: {requests} allowed + {requests} refused requests after one cold one, {deny} deny-list entries, DynamoDB latency {} ms (AWS IoT's limit 5000 ms, the hook's budget {} ms)\n",
        latency.as_millis(),
        settings.budget.as_millis()
    );
    let mut table = Table::new(&["request", "n", "p50 ms", "p99 ms", "max ms", "rounds", "calls"]);
    for kind in &kinds {
        let summary = summarize(&kind.times).ok_or("no samples")?;
        let rounds = kind.rounds.iter().max().copied().unwrap_or_default();
        table.row(vec![
            kind.label.to_string(),
            kind.times.len().to_string(),
            f(summary.p50, 1),
            f(summary.p99, 1),
            f(summary.max, 1),
            rounds.to_string(),
            kind.pattern.clone(),
        ]);
    }
    println!("{}", table.render());
    Ok(())
}
