//! `onboard demo`: the whole system on the local emulator. The SAM template is
//! deployed, a CA is created and registered, good and bad devices are minted
//! and connect over MQTT, and a summary says who got in, who was kept out and
//! why, and how long onboarding took.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use onboarding_domain::DeviceProfile;
use onboarding_emulator::{Emulator, KeptEmulator, stack};

use crate::Cli;
use crate::commands::ca::CaKeyType;
use crate::commands::device::connect::{Broker, Device, Fate, Session};
use crate::commands::device::{DeviceKeyType, Subject, Validity, load_issuer, mint_one};
use crate::error::CliError;

/// Options of `onboard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Leave the emulator running afterwards and print how to point the other
    /// commands at it.
    #[arg(long)]
    pub keep: bool,
    /// Good devices to onboard (the bad ones come on top).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub devices: u32,
    /// With --endpoint-url: the running emulator's MQTT-over-TLS port.
    #[arg(long, default_value_t = 8883, requires = "endpoint_url")]
    pub mqtt_port: u16,
    /// Where the functions' Lambda zips are (`<function>/bootstrap.zip`);
    /// default `$ONBOARDING_LAMBDA_DIR`, else target/lambda/x86_64.
    #[arg(long)]
    pub lambda_dir: Option<PathBuf>,
    /// Directory for the CAs and device credentials; a temporary one by
    /// default (kept with --keep). A run makes its own subdirectory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Stack name.
    #[arg(long, default_value = "iot-onboarding")]
    pub stack: String,
    /// Give up on a device after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub deadline: u64,
}

/// What a demo device is, and what must happen to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    ForgedCa,
    Expired,
    WeakKey,
    InvalidName,
    ExpiresSoon,
}

impl Kind {
    const BAD: [Kind; 5] = [
        Kind::ForgedCa,
        Kind::Expired,
        Kind::WeakKey,
        Kind::InvalidName,
        Kind::ExpiresSoon,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Good => "good (P-256, O and serialNumber)",
            Self::ForgedCa => "forged CA (same name, other key)",
            Self::Expired => "expired yesterday",
            Self::WeakKey => "RSA-1024 key",
            Self::InvalidName => "invalid thing name (spaces)",
            Self::ExpiresSoon => "expires in 10 days",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::ForgedCa => "forged_ca",
            Self::Expired => "expired",
            Self::WeakKey => "rsa1024",
            Self::InvalidName => "invalid_name",
            Self::ExpiresSoon => "expires_soon",
        }
    }
}

/// Prints a step unless the output is JSON.
struct Steps {
    quiet: bool,
    started: Instant,
}

impl Steps {
    fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("[{:>5.1} s] {}", self.started.elapsed().as_secs_f64(), text.as_ref());
        }
    }
}

/// The emulator the demo runs on: started here, or already running.
enum Target {
    Started(Emulator),
    Running { endpoint: String, mqtt_port: u16 },
}

impl Target {
    fn endpoint(&self) -> &str {
        match self {
            Self::Started(emulator) => &emulator.endpoint,
            Self::Running { endpoint, .. } => endpoint,
        }
    }

    fn mqtt_port(&self) -> u16 {
        match self {
            Self::Started(emulator) => emulator.mqtt_port,
            Self::Running { mqtt_port, .. } => *mqtt_port,
        }
    }
}

fn emulator_error(e: onboarding_emulator::EmulatorError) -> CliError {
    CliError::Input(e.to_string())
}

pub async fn run(args: &DemoArgs, cli: &Cli) -> Result<(), CliError> {
    let steps = Steps {
        quiet: cli.json,
        started: Instant::now(),
    };
    let lambda_dir = args.lambda_dir.clone().unwrap_or_else(stack::lambda_dir);
    // Checked before the emulator starts: a missing build fails in a second.
    stack::check_zips(stack::TEMPLATE, &lambda_dir).map_err(|e| CliError::Input(e.to_string()))?;
    let target = match &cli.aws.endpoint_url {
        Some(endpoint) => {
            let port = onboarding_emulator::loopback_port(endpoint).map_err(emulator_error)?;
            onboarding_emulator::http_get(port, "/_ministack/ready")
                .await
                .map_err(|e| {
                    CliError::Input(format!(
                        "no emulator answers at {endpoint} ({e}); start one or drop --endpoint-url"
                    ))
                })?;
            steps.say(format!("using the emulator at {endpoint}"));
            Target::Running {
                endpoint: endpoint.clone(),
                mqtt_port: args.mqtt_port,
            }
        }
        None => {
            steps.say("starting the local AWS emulator (AUTH=true, loopback only)");
            Target::Started(Emulator::start().await.map_err(emulator_error)?)
        }
    };
    let workdir = Workdir::new(args.workdir.as_deref())?;
    let outcome = demo(args, cli, &steps, &target, &lambda_dir, workdir.path()).await;
    let kept = match target {
        Target::Started(emulator) if args.keep => Some(emulator.keep()),
        Target::Started(emulator) => {
            drop(emulator);
            None
        }
        Target::Running { .. } => None,
    };
    let summary = outcome?;
    let workdir = if args.keep || args.workdir.is_some() {
        Some(workdir.keep())
    } else {
        None
    };
    report(cli, &summary, kept.as_ref(), workdir.as_deref(), args)?;
    if summary.as_expected() {
        Ok(())
    } else {
        Err(CliError::Input(
            "the demo did not go as expected (see the table): a good device was not let in or a bad one was".into(),
        ))
    }
}

/// The demo's scratch directory.
enum Workdir {
    Temporary(tempfile::TempDir),
    Given(PathBuf),
}

impl Workdir {
    fn new(given: Option<&Path>) -> Result<Self, CliError> {
        match given {
            Some(dir) => {
                let run = dir.join(format!("demo-{}", run_id()));
                std::fs::create_dir_all(&run)
                    .map_err(|e| CliError::Input(format!("cannot create {}: {e}", run.display())))?;
                Ok(Self::Given(run))
            }
            None => tempfile::Builder::new()
                .prefix("onboard-demo-")
                .tempdir()
                .map(Self::Temporary)
                .map_err(|e| CliError::Input(format!("cannot create a temporary directory: {e}"))),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Given(dir) => dir,
        }
    }

    fn keep(self) -> PathBuf {
        match self {
            Self::Temporary(dir) => dir.keep(),
            Self::Given(dir) => dir,
        }
    }
}

/// Four hex digits that tell this run's things from an earlier run's on a
/// kept emulator.
fn run_id() -> String {
    let mut bytes = [0u8; 2];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes = (std::process::id() as u16).to_be_bytes();
    }
    hex::encode(bytes)
}

/// The demo's result, per kind of device.
#[derive(Debug)]
struct Summary {
    rows: Vec<Row>,
    active_seconds: Vec<f64>,
    elapsed: Duration,
    table: String,
    mqtt_port: u16,
    server_ca: PathBuf,
    devices_dir: PathBuf,
}

#[derive(Debug)]
struct Row {
    kind: Kind,
    devices: Vec<(String, Fate)>,
}

impl Summary {
    fn provisioned(&self) -> usize {
        self.active_seconds.len()
    }

    /// Every good device active, and no bad one.
    fn as_expected(&self) -> bool {
        self.rows.iter().all(|row| {
            row.devices.iter().all(|(_, fate)| match row.kind {
                Kind::Good => matches!(fate, Fate::Active(_)),
                _ => matches!(fate, Fate::Rejected { .. } | Fate::Refused(_)),
            })
        })
    }
}

async fn demo(
    args: &DemoArgs,
    cli: &Cli,
    steps: &Steps,
    target: &Target,
    lambda_dir: &Path,
    workdir: &Path,
) -> Result<Summary, CliError> {
    let started = Instant::now();
    let endpoint = target.endpoint().to_string();
    let sdk = onboarding_emulator::sdk_config_for(&endpoint).await;

    steps.say(format!("deploying infra/template.yaml as stack {}", args.stack));
    let deployed = stack::deploy(&sdk, &args.stack, stack::TEMPLATE, lambda_dir, &[])
        .await
        .map_err(|e| match e {
            stack::StackError::MissingZip { .. } => CliError::Input(e.to_string()),
            other => CliError::Aws(other.to_string()),
        })?;
    let output = |key: &str| {
        deployed
            .output(key)
            .map(str::to_string)
            .map_err(|e| CliError::Aws(e.to_string()))
    };
    let table = output("InventoryTableName")?;
    steps.say(if deployed.created {
        format!("stack created; inventory table {table}")
    } else {
        format!("stack already there, reused; inventory table {table}")
    });

    // A profile of the demo's own, from the stack's thing type, groups and policy.
    let profile_name = "demo";
    let profile = DeviceProfile::parse(
        &serde_json::json!({
            "name": profile_name,
            "thingType": output("ThingTypeName")?,
            "thingName": "{CN}",
            "attributes": {"manufacturer": "O", "serial": "serialNumber"},
            "thingGroups": output("ThingGroupNames")?.split(',').collect::<Vec<_>>(),
            "policyName": output("DevicePolicyName")?,
            "minRemainingDays": 30,
        })
        .to_string(),
    )
    .map_err(|e| CliError::Input(format!("the demo profile: {e}")))?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let admin = onboarding_aws::ConfigAdmin::new(dynamodb.clone(), table.clone());
    admin.put_profile(&profile).await?;

    let ca_dir = workdir.join("ca");
    crate::commands::ca::create(&ca_dir, CaKeyType::P256, "Acme Demo Device CA", Some("Acme"), 3650)?;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let ca_id = crate::commands::ca::register_ca(&iot, &admin, &ca_dir, profile_name, None).await?;
    steps.say(format!(
        "CA {}… registered with auto-registration, bound to profile {profile_name}",
        &ca_id[..12.min(ca_id.len())]
    ));
    // Same subject, different key, never registered.
    let forged_dir = workdir.join("forged-ca");
    crate::commands::ca::create(&forged_dir, CaKeyType::P256, "Acme Demo Device CA", Some("Acme"), 3650)?;

    let devices_dir = workdir.join("devices");
    let minted = mint(args, &ca_dir, &forged_dir, &devices_dir)?;
    steps.say(format!(
        "minted {} good and {} bad devices into {}",
        args.devices,
        minted.len() - args.devices as usize,
        devices_dir.display()
    ));

    let server_ca_pem = onboarding_emulator::http_get(
        onboarding_emulator::loopback_port(&endpoint).map_err(emulator_error)?,
        onboarding_emulator::SERVER_CA_PATH,
    )
    .await
    .map_err(emulator_error)?;
    let server_ca = workdir.join("server-ca.pem");
    std::fs::write(&server_ca, &server_ca_pem)
        .map_err(|e| CliError::Input(format!("cannot write {}: {e}", server_ca.display())))?;
    let broker = Broker {
        host: "127.0.0.1".into(),
        port: target.mqtt_port(),
        server_ca_pem,
    };
    let inventory = onboarding_aws::DynamoInventory::new(dynamodb, table.clone());
    let session = Session {
        broker: &broker,
        iot: &iot,
        inventory: Some(&inventory),
        deadline: Duration::from_secs(args.deadline),
        concurrency: 64,
    };
    steps.say(format!(
        "{} devices connect over MQTT with mutual TLS; new certificates are dropped, then let in once provisioned",
        minted.len()
    ));
    let devices: Vec<Device> = minted.iter().map(|(_, device)| device.clone()).collect();
    let progress = crate::commands::device::connect::progress_bar(
        devices.len(),
        cli.json,
        "{bar:40} {pos}/{len} devices settled, {elapsed}",
    );
    let fates = crate::commands::device::connect::run_all(&session, &devices, &progress).await;
    progress.finish_and_clear();

    let mut rows: Vec<Row> = std::iter::once(Kind::Good)
        .chain(Kind::BAD)
        .map(|kind| Row {
            kind,
            devices: Vec::new(),
        })
        .collect();
    for ((kind, device), fate) in minted.into_iter().zip(fates) {
        if let Some(row) = rows.iter_mut().find(|r| r.kind == kind) {
            row.devices.push((device.name, fate));
        }
    }
    let all: Vec<Fate> = rows
        .iter()
        .filter(|r| r.kind == Kind::Good)
        .flat_map(|r| r.devices.iter().map(|(_, f)| f.clone()))
        .collect();
    let summary = Summary {
        active_seconds: crate::commands::device::connect::active_seconds(&all),
        rows,
        elapsed: started.elapsed(),
        table,
        mqtt_port: target.mqtt_port(),
        server_ca,
        devices_dir,
    };
    Ok(summary)
}

/// Mints the good devices and one of each bad kind.
fn mint(args: &DemoArgs, ca_dir: &Path, forged_dir: &Path, out: &Path) -> Result<Vec<(Kind, Device)>, CliError> {
    let run = run_id();
    let issuer = load_issuer(ca_dir)?;
    let forged = load_issuer(forged_dir)?;
    std::fs::create_dir_all(out).map_err(|e| CliError::Input(format!("cannot create {}: {e}", out.display())))?;
    let subject = Subject {
        organization: Some("Acme".into()),
        ..Subject::default()
    };
    let mut plan: Vec<(Kind, String)> = (1..=args.devices)
        .map(|n| (Kind::Good, format!("demo-{run}-{n:05}")))
        .collect();
    plan.extend(Kind::BAD.iter().map(|kind| {
        let name = match kind {
            Kind::InvalidName => format!("demo {run} unnamed"),
            other => format!("demo-{run}-{}", other.key().replace('_', "-")),
        };
        (*kind, name)
    }));
    let now = time::OffsetDateTime::now_utc();
    let mut minted = Vec::with_capacity(plan.len());
    for (n, (kind, name)) in plan.into_iter().enumerate() {
        let validity = match kind {
            Kind::Expired => Validity {
                not_before: now - time::Duration::days(400),
                not_after: now - time::Duration::days(1),
            },
            Kind::ExpiresSoon => Validity::days_from_now(10),
            _ => Validity::days_from_now(365),
        };
        let key_type = if kind == Kind::WeakKey {
            DeviceKeyType::Rsa1024
        } else {
            DeviceKeyType::P256
        };
        let signer = if kind == Kind::ForgedCa { &forged } else { &issuer };
        let dir = out.join(name.replace(' ', "_"));
        let serial = format!("SN-{run}-{n:05}");
        mint_one(signer, &dir, &name, Some(&serial), &subject, key_type, validity)?;
        let device = Device {
            name: name.clone(),
            cert_pem: crate::files::read(&dir.join("cert.pem"), "device certificate")?,
            key_pem: crate::files::read(&dir.join("key.pem"), "device key")?,
        };
        minted.push((kind, device));
    }
    Ok(minted)
}

fn report(
    cli: &Cli,
    summary: &Summary,
    kept: Option<&KeptEmulator>,
    workdir: Option<&Path>,
    args: &DemoArgs,
) -> Result<(), CliError> {
    let active = &summary.active_seconds;
    let p50 = crate::commands::device::connect::quantile(active, 0.5);
    let p95 = crate::commands::device::connect::quantile(active, 0.95);
    let kept_out: usize = summary
        .rows
        .iter()
        .flat_map(|r| &r.devices)
        .filter(|(_, f)| matches!(f, Fate::Rejected { .. } | Fate::Refused(_)))
        .count();
    if cli.json {
        let rows: Vec<_> = summary
            .rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "kind": row.kind.key(),
                    "devices": row.devices.iter().map(|(name, fate)| fate.to_json(name)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut out = serde_json::json!({
            "provisioned": summary.provisioned(),
            "keptOut": kept_out,
            "asExpected": summary.as_expected(),
            "activeP50": p50,
            "activeP95": p95,
            "seconds": summary.elapsed.as_secs_f64(),
            "inventoryTable": summary.table,
            "kinds": rows,
        });
        if let Some(kept) = kept {
            out["emulator"] = serde_json::json!({
                "pid": kept.pid,
                "endpoint": kept.endpoint,
                "mqttPort": kept.mqtt_port,
                "log": kept.log_path,
            });
        }
        if let Some(dir) = workdir {
            out["workdir"] = serde_json::json!(dir);
        }
        println!("{out}");
        return Ok(());
    }
    println!();
    println!("{:<34} {:>7}  outcome", "device", "count");
    for row in &summary.rows {
        if row.kind == Kind::Good {
            let total = row.devices.len();
            let text = match (p50, p95) {
                (Some(p50), Some(p95)) => format!(
                    "{} of {total} provisioned; time to active p50 {p50:.1} s, p95 {p95:.1} s",
                    active.len()
                ),
                _ => format!("0 of {total} provisioned"),
            };
            println!("{:<34} {total:>7}  {text}", row.kind.label());
            for (name, fate) in row.devices.iter().filter(|(_, f)| !matches!(f, Fate::Active(_))) {
                println!("{:<34} {:>7}  {name}: {}", "", "", fate.describe());
            }
        } else {
            for (_, fate) in &row.devices {
                println!("{:<34} {:>7}  {}", row.kind.label(), 1, fate.describe());
            }
        }
    }
    println!();
    println!(
        "{} provisioned, {kept_out} kept out, in {:.1} s.",
        summary.provisioned(),
        summary.elapsed.as_secs_f64()
    );
    match kept {
        Some(kept) => {
            println!();
            println!(
                "The emulator keeps running (pid {}, log {}). Point the other commands at it:",
                kept.pid,
                kept.log_path.display()
            );
            println!(
                "  export AWS_ENDPOINT_URL={} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION={} ONBOARD_TABLE={}",
                kept.endpoint,
                onboarding_emulator::REGION,
                summary.table
            );
            println!("  onboard fleet status");
            println!("  onboard ca list");
            println!(
                "  onboard device connect --dir {} --host 127.0.0.1 --port {} --server-ca {}",
                summary.devices_dir.display(),
                summary.mqtt_port,
                summary.server_ca.display()
            );
            println!(
                "  onboard demo --endpoint-url {} --mqtt-port {}   # another round on the same stack",
                kept.endpoint, kept.mqtt_port
            );
            println!("Stop it with: kill -- -{}", kept.pid);
        }
        None if args.keep => {}
        None => {
            if cli.aws.endpoint_url.is_none() {
                println!("The emulator stops now (--keep leaves it running).");
            }
        }
    }
    if let Some(dir) = workdir
        && kept.is_none()
    {
        println!("Credentials kept in {}.", dir.display());
    }
    Ok(())
}
