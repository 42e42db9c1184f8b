//! Microseconds per certificate check, as the registrar runs it for each event:
//! `Certificate::from_pem` on the device certificate and
//! `checks::check_device_certificate` against the (cached, parsed) CA; plus
//! the parse alone and the signature verification alone
//! (`Certificate::is_signed_by`, which re-reads both DERs and verifies with
//! aws-lc-rs).
//!
//! Certificates come from the test CA factory. Run it from a release build:
//! `cargo run --release -p onboarding-bench --bin check-bench -- --iterations 2000`.

use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use onboarding_bench::{Args, BenchResult, Table, f, summarize};
use onboarding_domain::{Certificate, DeviceProfile};
use onboarding_domain::{CheckContext, DEFAULT_CLOCK_SKEW_SECS, check_device_certificate};
use onboarding_test_support::rcgen::DnType;
use onboarding_test_support::world::default_profile;
use onboarding_test_support::{KeyAlg, TestCa};

const USAGE: &str = "check-bench: microseconds per device-certificate check

usage: check-bench [--iterations N] [--warmup N]

  --iterations N   timed iterations per measurement (default 2000)
  --warmup N       untimed iterations before each measurement (default iterations/10, at least 50)";

struct Case {
    label: &'static str,
    ca_key: KeyAlg,
    device_key: KeyAlg,
}

const CASES: [Case; 4] = [
    Case {
        label: "P-256 device, P-256 CA",
        ca_key: KeyAlg::P256,
        device_key: KeyAlg::P256,
    },
    Case {
        label: "RSA-2048 device, P-256 CA",
        ca_key: KeyAlg::P256,
        device_key: KeyAlg::Rsa2048,
    },
    Case {
        label: "RSA-2048 device, RSA-2048 CA",
        ca_key: KeyAlg::Rsa2048,
        device_key: KeyAlg::Rsa2048,
    },
    Case {
        label: "P-256 device, RSA-2048 CA",
        ca_key: KeyAlg::Rsa2048,
        device_key: KeyAlg::P256,
    },
];

/// Runs `op` `warmup` times, then times it `iterations` times; microseconds.
fn measure(iterations: usize, warmup: usize, mut op: impl FnMut() -> bool) -> BenchResult<Vec<f64>> {
    for _ in 0..warmup {
        if !black_box(op()) {
            return Err("the operation failed during warm-up".into());
        }
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let ok = black_box(op());
        samples.push(started.elapsed().as_secs_f64() * 1e6);
        if !ok {
            return Err("the operation failed".into());
        }
    }
    Ok(samples)
}

fn main() -> std::process::ExitCode {
    onboarding_bench::exit("check-bench", run())
}

fn run() -> BenchResult {
    let args = Args::parse(USAGE, &["iterations", "warmup"])?;
    let iterations: usize = args.number("iterations", 2000)?;
    let warmup: usize = args.number("warmup", (iterations / 10).max(50))?;
    if iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    let profile = DeviceProfile::parse(&default_profile().to_string())?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;

    let mut table = Table::new(&["certificates", "operation", ">mean µs", ">p50 µs", ">p99 µs"]);
    for case in &CASES {
        let ca = TestCa::with_key("Acme Device CA", case.ca_key)?;
        let device = ca
            .device("sensor-00001")
            .with(DnType::OrganizationName, "Acme")
            .with(DnType::OrganizationalUnitName, "TH-200")
            .with(DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-0001")
            .key(case.device_key)
            .build()?;
        // The registrar parses the CA once and caches it.
        let ca_cert = Certificate::from_pem(&ca.cert_pem)?;
        let ctx = CheckContext {
            ca: &ca_cert,
            profile: &profile,
            denial: None,
            now,
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
        };
        // The certificate must pass, or the timing would be of an early exit.
        let parsed = Certificate::from_pem(&device.cert_pem)?;
        if let Err(rejection) = check_device_certificate(&parsed, &ctx) {
            return Err(format!("{}: the device certificate was rejected: {rejection:?}", case.label).into());
        }

        let pem = device.cert_pem.as_str();
        let full = measure(iterations, warmup, || {
            Certificate::from_pem(black_box(pem)).is_ok_and(|cert| check_device_certificate(&cert, &ctx).is_ok())
        })?;
        let parse = measure(iterations, warmup, || Certificate::from_pem(black_box(pem)).is_ok())?;
        let signature = measure(iterations, warmup, || {
            black_box(&parsed).is_signed_by(black_box(&ca_cert))
        })?;
        for (operation, samples) in [
            ("full check (from_pem + check_device_certificate)", &full),
            ("from_pem alone", &parse),
            ("is_signed_by alone", &signature),
        ] {
            let s = summarize(samples).ok_or("no samples")?;
            table.row(vec![
                case.label.to_string(),
                operation.to_string(),
                f(s.mean, 1),
                f(s.p50, 1),
                f(s.p99, 1),
            ]);
        }
    }

    println!("## check-bench");
    println!();
    println!(
        "{iterations} timed iterations after {warmup} warm-up iterations per row; {} build.",
        if cfg!(debug_assertions) {
            "DEBUG (not representative: use --release)"
        } else {
            "release"
        }
    );
    println!();
    println!("{}", table.render());
    Ok(())
}
