//! Cold start of the jitr-registrar release binary under a local Lambda
//! Runtime API, against the local emulator.
//!
//! Each run mints a device, makes its first MQTT connection (so its
//! certificate is PENDING_ACTIVATION), starts a Runtime API on 127.0.0.1 with
//! the device's event queued, and spawns a new process of the binary with a
//! Lambda-like environment. It measures:
//! - init: process spawn → its first `GET /runtime/invocation/next` (settings,
//!   SDK configuration, clients, and `warm_up()`, which reads the configuration
//!   from DynamoDB);
//! - first event: the event written in answer to `/next` → its response POSTed;
//! - peak RSS: `VmHWM` of the process, read right after the response.
//!
//! The response must say `provisioned`. The process is then killed.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onboarding_bench::runtime_api::{ApiMessage, RuntimeApi};
use onboarding_bench::{Args, BenchResult, Table, f, ms, percentile};
use onboarding_test_support::emulator::{ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY, workspace_root};
use onboarding_test_support::rcgen::DnType;
use onboarding_test_support::world::World;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const USAGE: &str = "cold-start: init time, first-event latency and peak RSS of the jitr-registrar binary

usage: cold-start [--binary PATH] [--runs K]

  --binary PATH   the function binary (default <workspace>/target/release/jitr-registrar)
  --runs K        runs, each with a new device and a new process (default 5)";

const FUNCTION_NAME: &str = "jitr-registrar";
/// How long a run may take before it is declared hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Run {
    init: Duration,
    first_event: Duration,
    total: Duration,
    peak_rss_kib: u64,
}

/// `VmHWM` of a process, in KiB.
fn peak_rss_kib(pid: u32) -> BenchResult<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/<pid>/status")?;
    let kib = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib)
}

fn tail(output: &Mutex<Vec<u8>>) -> String {
    let bytes = output.lock().map(|o| o.clone()).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let start = text.len().saturating_sub(4096);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

async fn run_once(binary: &PathBuf, world: &World, event: &serde_json::Value) -> BenchResult<Run> {
    let function_arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{FUNCTION_NAME}");
    let mut api = RuntimeApi::start(&function_arn).await?;
    let request_id = api.invoke(event);

    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", api.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_ENDPOINT_URL", &world.emulator.endpoint)
        .envs(world.registrar_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
    let pid = child.id().ok_or("the process has no id")?;
    // Keep the function's logs, to show them if the run fails.
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut drains = Vec::new();
    let pipes: [Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ];
    for mut pipe in pipes.into_iter().flatten() {
        let output = output.clone();
        drains.push(tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut o) = output.lock() {
                    o.extend_from_slice(&chunk[..n]);
                }
            }
        }));
    }

    let deadline = tokio::time::sleep(RUN_TIMEOUT);
    tokio::pin!(deadline);
    let mut first_next = None;
    let mut delivered = None;
    let result: BenchResult<(Instant, Vec<u8>, u64)> = loop {
        tokio::select! {
            message = api.next_message() => match message {
                None => break Err("the runtime API stopped".into()),
                Some(ApiMessage::Next { at }) => {
                    first_next.get_or_insert(at);
                }
                Some(ApiMessage::Delivered { at, .. }) => delivered = Some(at),
                Some(ApiMessage::Response { request_id: id, body, at }) => {
                    if id != request_id {
                        break Err(format!("response for unknown request id {id:?}").into());
                    }
                    // Before the process is killed.
                    break peak_rss_kib(pid).map(|rss| (at, body, rss));
                }
                Some(ApiMessage::InvocationError { error_type, body, .. }) => {
                    break Err(format!(
                        "the invocation failed ({}): {}",
                        error_type.unwrap_or_default(),
                        String::from_utf8_lossy(&body)
                    )
                    .into());
                }
                Some(ApiMessage::InitError { error_type, body, .. }) => {
                    break Err(format!(
                        "init failed ({}): {}",
                        error_type.unwrap_or_default(),
                        String::from_utf8_lossy(&body)
                    )
                    .into());
                }
                Some(ApiMessage::Unexpected { method, path, .. }) => {
                    eprintln!("cold-start: unexpected request {method} {path} (answered 404)");
                }
            },
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                break Err(format!("the process exited ({status}) before answering").into());
            }
            () = &mut deadline => break Err(format!("no response within {RUN_TIMEOUT:?}").into()),
        }
    };
    // The function is idle on its next `/next`: stop it and the API.
    let _ = child.start_kill();
    let _ = child.wait().await;
    drop(api);
    for drain in drains {
        let _ = drain.await;
    }
    let (responded, body, peak_rss_kib) = match result {
        Ok(r) => r,
        Err(e) => return Err(format!("{e}\n--- function output (tail) ---\n{}", tail(&output)).into()),
    };
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the response is not JSON ({e}): {}", String::from_utf8_lossy(&body)))?;
    if answer.get("outcome").and_then(serde_json::Value::as_str) != Some("provisioned") {
        return Err(format!(
            "expected outcome provisioned, got {answer}\n--- function output (tail) ---\n{}",
            tail(&output)
        )
        .into());
    }
    let first_next = first_next.ok_or("the response came before any /next")?;
    let delivered = delivered.ok_or("the response came before the event was delivered")?;
    Ok(Run {
        init: first_next.saturating_duration_since(spawned),
        first_event: responded.saturating_duration_since(delivered),
        total: responded.saturating_duration_since(spawned),
        peak_rss_kib,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("cold-start", run().await)
}

async fn run() -> BenchResult {
    let args = Args::parse(USAGE, &["binary", "runs"])?;
    let runs: usize = args.number("runs", 5)?;
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let binary = match args.text("binary") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("target/release/jitr-registrar"),
    };
    if !binary.is_file() {
        return Err(format!(
            "{} does not exist: build it with `cargo build --release -p jitr-registrar`, or pass --binary",
            binary.display()
        )
        .into());
    }
    let size = std::fs::metadata(&binary)?.len();

    eprintln!("cold-start: starting the emulator and the world…");
    let world = World::new().await?;
    let mut results = Vec::with_capacity(runs);
    for run in 0..runs {
        let name = format!("cold-start-{run:03}");
        let device = world
            .ca
            .device(&name)
            .with(DnType::OrganizationName, "Acme")
            .with(DnType::OrganizationalUnitName, "TH-200")
            .with(DnType::CustomDnType(vec![2, 5, 4, 5]), &format!("SN-{name}"))
            .build()?;
        let certificate_id = world.first_connection(&device, &name).await?;
        let event = world.direct_event(&certificate_id, &world.ca_id)?;
        let result = run_once(&binary, &world, &event)
            .await
            .map_err(|e| format!("run {}: {e}", run + 1))?;
        eprintln!(
            "cold-start: run {}: init {} ms, first event {} ms, peak RSS {} MiB",
            run + 1,
            f(ms(result.init), 1),
            f(ms(result.first_event), 1),
            f(result.peak_rss_kib as f64 / 1024.0, 1)
        );
        results.push(result);
    }

    println!("## cold-start");
    println!();
    println!(
        "{} ({} bytes), {runs} runs, each a new process and a new device; local Runtime API and emulator on loopback.",
        binary.display(),
        size
    );
    println!();
    let mut table = Table::new(&[
        "run",
        ">init ms (spawn → first /next)",
        ">first event ms (/next → response)",
        ">spawn → response ms",
        ">peak RSS MiB (VmHWM)",
    ]);
    for (i, r) in results.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            f(ms(r.init), 1),
            f(ms(r.first_event), 1),
            f(ms(r.total), 1),
            f(r.peak_rss_kib as f64 / 1024.0, 1),
        ]);
    }
    let column = |get: fn(&Run) -> f64| {
        let mut values: Vec<f64> = results.iter().map(get).collect();
        values.sort_by(f64::total_cmp);
        (percentile(&values, 50.0), values.last().copied().unwrap_or_default())
    };
    let columns = [
        column(|r| ms(r.init)),
        column(|r| ms(r.first_event)),
        column(|r| ms(r.total)),
        column(|r| r.peak_rss_kib as f64 / 1024.0),
    ];
    table.row(
        std::iter::once("median".to_string())
            .chain(columns.iter().map(|(median, _)| f(*median, 1)))
            .collect(),
    );
    table.row(
        std::iter::once("max".to_string())
            .chain(columns.iter().map(|(_, max)| f(*max, 1)))
            .collect(),
    );
    println!("{}", table.render());
    Ok(())
}
