//! Sequential rounds of AWS calls per provisioning.
//!
//! The registrar claims at most seven sequential rounds of AWS calls per
//! provisioning (six until the device can connect, then the activation mark). This starts a world in the local emulator and puts a
//! recording proxy in front of it that holds every request for a fixed
//! latency L. Devices make their first MQTT connection (directly to the
//! emulator), then the handler (built as the Lambda builds it, pointed at the
//! proxy) provisions each one; the handler time ÷ L approximates the number of
//! sequential rounds, and the proxy's arrival timestamps count them exactly:
//! a request belongs to the current wave if it arrived less than L/2 after
//! the wave's first request.
//!
//! The first event on a fresh handler has cold caches (configuration and CA
//! description); a fresh handler after `warm_up()` is what the Lambda's first
//! event sees (see `main.rs`); the following events find warm caches.
//!
//! The same runs with the handler pointed straight at the emulator give the
//! raw handler time; through the proxy at L = 0 they give the baseline t₀ of
//! the proxy path (the proxy's own overhead per round included), so that
//! (t − t₀) ÷ L estimates the rounds from times alone.

// The registrar's concurrent rounds nest deeply generic futures.
#![recursion_limit = "256"]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use jitr_registrar::{FromEnv, Handler, Settings};
use onboarding_bench::{Args, BenchResult, Table, f, ms, operation_name, range, summarize, waves};
use onboarding_test_support::emulator::sdk_config_for;
use onboarding_test_support::proxy::{Proxy, RecordedRequest};
use onboarding_test_support::rcgen::DnType;
use onboarding_test_support::world::World;

const USAGE: &str = "rounds-bench: sequential rounds of AWS calls per provisioning

usage: rounds-bench [--latency-ms L] [--devices M]

  --latency-ms L   latency the proxy adds to every AWS request (default 50)
  --devices M      devices provisioned per handler; the first is the cold event (default 10)";

/// The claim under test: seven rounds since the registrar reads its record
/// first (a duplicate of an activated certificate ends there, without a
/// `DescribeCertificate`) and marks the record once IoT accepted the
/// activation; five before (issue 11), four before the deny-list lookup.
const CLAIMED_ROUNDS: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Cold,
    AfterWarmUp,
    Warm,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Cold => "first event, fresh handler (cold caches)",
            Self::AfterWarmUp => "first event after warm_up() (as main.rs)",
            Self::Warm => "following events (warm caches)",
        }
    }
}

struct Sample {
    kind: Kind,
    time: Duration,
    /// What the proxy saw (nothing when the handler went straight to the emulator).
    requests: Vec<RecordedRequest>,
}

/// Where the handler's AWS calls go.
#[derive(Clone, Copy)]
enum Route<'a> {
    /// Straight to the emulator.
    Direct,
    /// Through the proxy, each request held for this latency.
    Proxy(&'a Proxy, Duration),
}

/// Operation names per wave, sorted within each wave.
type WavePattern = Vec<Vec<String>>;

fn pattern(requests: &[RecordedRequest], latency: Duration) -> (WavePattern, Vec<Duration>) {
    let waves = waves(requests, latency);
    let start = waves
        .first()
        .and_then(|w| w.first())
        .map(|r| r.received)
        .unwrap_or_default();
    let offsets = waves
        .iter()
        .map(|w| w.first().map(|r| r.received.saturating_sub(start)).unwrap_or_default())
        .collect();
    let names = waves
        .iter()
        .map(|w| {
            let mut names: Vec<String> = w.iter().map(operation_name).collect();
            names.sort();
            names
        })
        .collect();
    (names, offsets)
}

fn settings(world: &World) -> BenchResult<Settings> {
    let env: HashMap<String, String> = world.registrar_env().into_iter().collect();
    Ok(Settings::from_lookup(|k| env.get(k).cloned())?)
}

/// A handler as the Lambda builds it, with its own SDK configuration (so its
/// own HTTP connection pool), without EMF metric lines on stdout.
async fn fresh_handler(settings: &Settings, endpoint: &str) -> Handler {
    let sdk = sdk_config_for(endpoint).await;
    jitr_registrar::build(settings, &sdk).without_metrics()
}

/// Mints `count` devices and makes their first connections; returns their certificate ids.
async fn prepare_devices(world: &World, prefix: &str, count: usize) -> BenchResult<Vec<String>> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}-{i:03}");
        let device = world
            .ca
            .device(&name)
            .with(DnType::OrganizationName, "Acme")
            .with(DnType::OrganizationalUnitName, "TH-200")
            .with(DnType::CustomDnType(vec![2, 5, 4, 5]), &format!("SN-{prefix}-{i:03}"))
            .build()?;
        ids.push(world.first_connection(&device, &name).await?);
    }
    Ok(ids)
}

/// Handles one event and returns the time and the requests the proxy saw.
async fn provision(
    handler: &Handler,
    world: &World,
    proxy: Option<&Proxy>,
    certificate_id: &str,
    kind: Kind,
) -> BenchResult<Sample> {
    let event = world.direct_event(certificate_id, &world.ca_id)?;
    if let Some(proxy) = proxy {
        proxy.clear();
    }
    let started = Instant::now();
    let answer = handler.handle(event).await?;
    let time = started.elapsed();
    if answer.get("outcome").and_then(serde_json::Value::as_str) != Some("provisioned") {
        return Err(format!("certificate {certificate_id}: expected outcome provisioned, got {answer}").into());
    }
    Ok(Sample {
        kind,
        time,
        requests: proxy.map(Proxy::requests).unwrap_or_default(),
    })
}

/// One pass: `devices.len() - 1` events on one fresh handler, then one event
/// on a fresh handler after `warm_up()`.
async fn pass(world: &World, route: Route<'_>, settings: &Settings, devices: &[String]) -> BenchResult<Vec<Sample>> {
    let (endpoint, proxy) = match route {
        Route::Direct => (world.emulator.endpoint.clone(), None),
        Route::Proxy(proxy, latency) => {
            proxy.set_latency(latency);
            (proxy.endpoint(), Some(proxy))
        }
    };
    let (after_warm_up, events) = devices.split_last().ok_or("no devices")?;
    let mut samples = Vec::with_capacity(devices.len());
    let handler = fresh_handler(settings, &endpoint).await;
    for (i, id) in events.iter().enumerate() {
        let kind = if i == 0 { Kind::Cold } else { Kind::Warm };
        samples.push(provision(&handler, world, proxy, id, kind).await?);
    }
    let handler = fresh_handler(settings, &endpoint).await;
    handler.registrar().warm_up().await?;
    samples.push(provision(&handler, world, proxy, after_warm_up, Kind::AfterWarmUp).await?);
    Ok(samples)
}

struct Row {
    n: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    calls: (usize, usize),
    rounds: (usize, usize),
}

fn rows(samples: &[Sample], latency: Duration) -> BTreeMap<Kind, Row> {
    let mut by_kind: BTreeMap<Kind, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_kind.entry(s.kind).or_default().push(s);
    }
    by_kind
        .into_iter()
        .filter_map(|(kind, samples)| {
            let times: Vec<f64> = samples.iter().map(|s| ms(s.time)).collect();
            let summary = summarize(&times)?;
            let calls: Vec<usize> = samples.iter().map(|s| s.requests.len()).collect();
            let rounds: Vec<usize> = samples.iter().map(|s| waves(&s.requests, latency).len()).collect();
            Some((
                kind,
                Row {
                    n: samples.len(),
                    median_ms: summary.p50,
                    min_ms: summary.min,
                    max_ms: summary.max,
                    calls: (
                        calls.iter().copied().min().unwrap_or_default(),
                        calls.iter().copied().max().unwrap_or_default(),
                    ),
                    rounds: (
                        rounds.iter().copied().min().unwrap_or_default(),
                        rounds.iter().copied().max().unwrap_or_default(),
                    ),
                },
            ))
        })
        .collect()
}

fn print_waves(title: &str, requests: &[RecordedRequest], latency: Duration) {
    let (names, offsets) = pattern(requests, latency);
    println!(
        "{title}: {} rounds, {} calls{}",
        names.len(),
        requests.len(),
        if names.len() > CLAIMED_ROUNDS {
            format!(" (more than the {CLAIMED_ROUNDS} claimed)")
        } else {
            String::new()
        }
    );
    println!();
    let mut table = Table::new(&[">round", ">starts at ms", ">calls", "operations (concurrent)"]);
    for (i, (wave, offset)) in names.iter().zip(offsets).enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            f(ms(offset), 1),
            wave.len().to_string(),
            wave.join(", "),
        ]);
    }
    println!("{}", table.render());
    println!();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("rounds-bench", run().await)
}

async fn run() -> BenchResult {
    let args = Args::parse(USAGE, &["latency-ms", "devices"])?;
    let latency_ms: u64 = args.number("latency-ms", 50)?;
    let devices: usize = args.number("devices", 10)?;
    if latency_ms == 0 {
        return Err("--latency-ms must be positive (the L = 0 pass always runs)".into());
    }
    if devices < 2 {
        return Err("--devices must be at least 2 (one cold event, then warm ones)".into());
    }
    let latency = Duration::from_millis(latency_ms);

    eprintln!("rounds-bench: starting the emulator and the world…");
    let world = World::new().await?;
    let settings = settings(&world)?;
    let proxy = Proxy::start(world.emulator.gateway_port, Duration::ZERO).await?;
    eprintln!("rounds-bench: {} first connections…", 3 * (devices + 1) + 1);
    let warm_up_devices = prepare_devices(&world, "rounds-warm-up", 1).await?;
    let direct_devices = prepare_devices(&world, "rounds-direct", devices + 1).await?;
    let zero_devices = prepare_devices(&world, "rounds-l0", devices + 1).await?;
    let slow_devices = prepare_devices(&world, &format!("rounds-l{latency_ms}"), devices + 1).await?;
    // Let the emulator finish publishing the registration events, then run one
    // provisioning outside the measurements, so that the emulator's own first
    // use of each operation (lazy imports, first KMS key use) is not measured.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handler = fresh_handler(&settings, &world.emulator.endpoint).await;
    for id in &warm_up_devices {
        provision(&handler, &world, None, id, Kind::Warm).await?;
    }
    drop(handler);

    eprintln!("rounds-bench: straight to the emulator…");
    let direct = pass(&world, Route::Direct, &settings, &direct_devices).await?;
    eprintln!("rounds-bench: through the proxy, L = 0…");
    let zero = pass(&world, Route::Proxy(&proxy, Duration::ZERO), &settings, &zero_devices).await?;
    eprintln!("rounds-bench: through the proxy, L = {latency_ms} ms…");
    let slow = pass(&world, Route::Proxy(&proxy, latency), &settings, &slow_devices).await?;
    drop(proxy);

    let direct_rows = rows(&direct, Duration::ZERO);
    let zero_rows = rows(&zero, Duration::ZERO);
    let slow_rows = rows(&slow, latency);

    println!();
    println!("## rounds-bench");
    println!();
    println!(
        "{devices} devices per handler; L = latency the proxy adds to every AWS request; {} build. \
         Times are medians (min–max). Rounds are counted from the proxy's arrival timestamps \
         (waves split at L/2); at L = 0 they cannot be told apart.",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!();
    let mut table = Table::new(&[
        "route",
        "event",
        ">n",
        ">handler ms",
        ">min–max ms",
        ">÷ L",
        ">(t − t₀) ÷ L",
        ">AWS calls",
        ">rounds",
    ]);
    let span = |row: &Row| format!("{}–{}", f(row.min_ms, 1), f(row.max_ms, 1));
    for (kind, row) in &direct_rows {
        table.row(vec![
            "emulator, no proxy".into(),
            kind.label().into(),
            row.n.to_string(),
            f(row.median_ms, 1),
            span(row),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);
    }
    for (kind, row) in &zero_rows {
        table.row(vec![
            "proxy, L = 0".into(),
            kind.label().into(),
            row.n.to_string(),
            f(row.median_ms, 1),
            span(row),
            "—".into(),
            "—".into(),
            range(row.calls.0, row.calls.1),
            "—".into(),
        ]);
    }
    for (kind, row) in &slow_rows {
        let base = zero_rows.get(kind).map_or(0.0, |r| r.median_ms);
        let l = latency_ms as f64;
        table.row(vec![
            format!("proxy, L = {latency_ms} ms"),
            kind.label().into(),
            row.n.to_string(),
            f(row.median_ms, 1),
            span(row),
            f(row.median_ms / l, 2),
            f((row.median_ms - base) / l, 2),
            range(row.calls.0, row.calls.1),
            range(row.rounds.0, row.rounds.1),
        ]);
    }
    println!("{}", table.render());
    println!();
    println!("t₀ = the median through the proxy at L = 0 for the same kind of event.");
    println!();

    // The rounds, call by call, for each kind of event at L > 0; every
    // distinct pattern among the warm events.
    println!("### Rounds at L = {latency_ms} ms, per wave");
    println!();
    for kind in [Kind::Cold, Kind::AfterWarmUp] {
        if let Some(sample) = slow.iter().find(|s| s.kind == kind) {
            print_waves(kind.label(), &sample.requests, latency);
        }
    }
    let mut warm_patterns: Vec<(WavePattern, usize, &Sample)> = Vec::new();
    for sample in slow.iter().filter(|s| s.kind == Kind::Warm) {
        let (names, _) = pattern(&sample.requests, latency);
        match warm_patterns.iter_mut().find(|(p, _, _)| *p == names) {
            Some((_, count, _)) => *count += 1,
            None => warm_patterns.push((names, 1, sample)),
        }
    }
    for (_, count, sample) in &warm_patterns {
        let title = format!("{} ({count} of {})", Kind::Warm.label(), devices - 1);
        print_waves(&title, &sample.requests, latency);
    }
    let over = slow
        .iter()
        .filter(|s| waves(&s.requests, latency).len() > CLAIMED_ROUNDS)
        .count();
    if over == 0 {
        println!("Every provisioning at L = {latency_ms} ms took at most {CLAIMED_ROUNDS} sequential rounds.");
    } else {
        println!(
            "{over} of {} provisionings at L = {latency_ms} ms took more than {CLAIMED_ROUNDS} sequential rounds \
             (see the waves above).",
            slow.len()
        );
    }
    Ok(())
}
