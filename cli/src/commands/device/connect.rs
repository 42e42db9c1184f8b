//! `onboard device connect`: devices connecting over MQTT with mutual TLS,
//! as AWS IoT devices do on their first day.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::Cli;
use crate::error::CliError;
use crate::files::read;

/// Options of `onboard device connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// A device directory (`cert.pem`, `key.pem`), or a directory of them (from `device mint`).
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    pub dir: Option<PathBuf>,
    /// One device's certificate (with --key).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// One device's private key (with --cert).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Give up on a device after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub deadline: u64,
    /// Devices connecting at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Where simulated devices connect (shared by the device commands).
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// MQTT host: the account's iot:Data-ATS endpoint (or 127.0.0.1 for an emulator).
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value_t = 8883)]
    pub port: u16,
    /// The CA that signs the broker's certificate (Amazon Root CA 1 for AWS IoT).
    #[arg(long)]
    pub server_ca: PathBuf,
}

impl BrokerArgs {
    /// The broker, with its CA read.
    ///
    /// # Errors
    /// [`CliError::Input`] when the server CA cannot be read.
    pub fn broker(&self) -> Result<Broker, CliError> {
        Ok(Broker {
            host: self.host.clone(),
            port: self.port,
            server_ca_pem: read(&self.server_ca, "server CA")?,
        })
    }
}

/// One simulated device's credentials, and where devices connect.
pub use onboarding_device::{Broker, Device};

/// What happened to one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Connected and published, this long after its first attempt.
    Active(Duration),
    /// Its certificate was set REVOKED or INACTIVE; the inventory's reason
    /// code when the inventory table is known.
    Rejected {
        status: String,
        reason: Option<String>,
    },
    /// The broker refused the certificate before registering it (at the TLS
    /// handshake: an issuer it does not know, an expired certificate, a key
    /// its TLS stack will not take); the last connection error.
    Refused(String),
    TimedOut,
    /// The device could not even try (unusable credentials).
    Failed(String),
}

impl Fate {
    /// A short outcome word for tables and JSON.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Active(_) => "active",
            Self::Rejected { .. } => "rejected",
            Self::Refused(_) => "refused",
            Self::TimedOut => "timed_out",
            Self::Failed(_) => "failed",
        }
    }

    /// A human-readable account.
    pub fn describe(&self) -> String {
        match self {
            Self::Active(d) => format!("active after {:.1} s", d.as_secs_f64()),
            Self::Rejected { status, reason } => match reason {
                Some(reason) => format!("rejected: {reason} (certificate {status})"),
                None => format!("rejected (certificate {status})"),
            },
            Self::Refused(why) => format!("refused before registration: {why}"),
            Self::TimedOut => "timed out".to_string(),
            Self::Failed(e) => format!("failed: {e}"),
        }
    }

    pub fn to_json(&self, name: &str) -> serde_json::Value {
        let mut row = serde_json::json!({"device": name, "outcome": self.outcome()});
        match self {
            Self::Active(d) => row["seconds"] = d.as_secs_f64().into(),
            Self::Rejected { status, reason } => {
                row["certificateStatus"] = status.as_str().into();
                row["reason"] = reason.as_deref().into();
            }
            Self::Refused(why) | Self::Failed(why) => row["error"] = why.as_str().into(),
            Self::TimedOut => {}
        }
        row
    }
}

/// How devices are run and observed.
pub struct Session<'a> {
    pub broker: &'a Broker,
    /// Certificate statuses tell a rejection from a slow onboarding.
    pub iot: &'a aws_sdk_iot::Client,
    /// The inventory, for the reasons of rejections.
    pub inventory: Option<&'a onboarding_aws::DynamoInventory>,
    /// Give up on a device after this long.
    pub deadline: Duration,
    pub concurrency: usize,
}

/// A certificate AWS IoT has still not registered after this many attempts
/// and this long was refused before registration (TLS).
const ATTEMPTS_BEFORE_REFUSED: u32 = 4;
const TIME_BEFORE_REFUSED: Duration = Duration::from_secs(3);

/// One attempt: connect, publish one message, wait for its PUBACK.
async fn attempt(broker: &Broker, config: Arc<rustls::ClientConfig>, name: &str) -> Result<(), String> {
    let topic = format!("devices/{name}/telemetry");
    onboarding_device::publish_once(broker, config, name, &topic, br#"{"hello":"onboarded"}"#.to_vec()).await
}

/// The certificate id AWS IoT gives a certificate: SHA-256 of its DER.
fn certificate_id(cert_pem: &str) -> Option<String> {
    CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|der| hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)))
}

/// Connects one device until it is active, rejected, refused or out of time.
pub async fn run_device(session: &Session<'_>, device: &Device) -> Fate {
    let config =
        match onboarding_device::client_config(&session.broker.server_ca_pem, &device.cert_pem, &device.key_pem) {
            Ok(config) => config,
            Err(e) => return Fate::Failed(e.to_string()),
        };
    let certificate_id = certificate_id(&device.cert_pem);
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt(session.broker, config.clone(), &device.name).await {
            Ok(()) => return Fate::Active(started.elapsed()),
            Err(error) => error,
        };
        if let Some(id) = &certificate_id {
            match registration(session, id).await {
                Registration::Rejected { status } => {
                    return Fate::Rejected {
                        reason: reason(session, id).await,
                        status,
                    };
                }
                // JITR registers a new certificate on its first CONNECT; one
                // still unknown after several attempts never got that far.
                Registration::Unknown
                    if attempts >= ATTEMPTS_BEFORE_REFUSED && started.elapsed() >= TIME_BEFORE_REFUSED =>
                {
                    return Fate::Refused(error);
                }
                _ => {}
            }
        }
        if started.elapsed() > session.deadline {
            return Fate::TimedOut;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(3));
    }
}

/// Where a certificate stands in AWS IoT.
enum Registration {
    /// No such certificate.
    Unknown,
    /// Set REVOKED or INACTIVE.
    Rejected { status: String },
    /// Anything else, or the status could not be read.
    Other,
}

async fn registration(session: &Session<'_>, certificate_id: &str) -> Registration {
    match onboarding_aws::lookup_certificate(session.iot, certificate_id).await {
        Ok(onboarding_aws::CertificateLookup::Registered(Some(status)))
            if matches!(status.as_str(), "REVOKED" | "INACTIVE") =>
        {
            Registration::Rejected { status }
        }
        Ok(onboarding_aws::CertificateLookup::Unknown) => Registration::Unknown,
        Ok(onboarding_aws::CertificateLookup::Registered(_)) | Err(_) => Registration::Other,
    }
}

/// The inventory's reason code for a rejected certificate.
async fn reason(session: &Session<'_>, certificate_id: &str) -> Option<String> {
    use onboarding_domain::Inventory;
    session
        .inventory?
        .certificate_record(certificate_id)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.reason)
        .map(|r| r.code().to_string())
}

/// Runs every device, `concurrency` at a time, ticking `progress`; results in
/// the devices' order.
pub async fn run_all(session: &Session<'_>, devices: &[Device], progress: &indicatif::ProgressBar) -> Vec<Fate> {
    let mut fates: Vec<(usize, Fate)> = futures::stream::iter(devices.iter().enumerate())
        .map(|(i, device)| async move {
            let fate = run_device(session, device).await;
            progress.inc(1);
            (i, fate)
        })
        .buffer_unordered(session.concurrency.max(1))
        .collect()
        .await;
    fates.sort_by_key(|(i, _)| *i);
    fates.into_iter().map(|(_, fate)| fate).collect()
}

/// The p-quantile (nearest rank) of sorted seconds.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get((last as f64 * p).round() as usize).copied()
}

/// Times to active, sorted.
pub fn active_seconds(fates: &[Fate]) -> Vec<f64> {
    let mut active: Vec<f64> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::Active(d) => Some(d.as_secs_f64()),
            _ => None,
        })
        .collect();
    active.sort_by(f64::total_cmp);
    active
}

/// A progress bar, hidden for `--json`.
pub fn progress_bar(len: usize, json: bool, template: &str) -> indicatif::ProgressBar {
    let progress = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len as u64)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress
}

pub async fn run(args: &ConnectArgs, cli: &Cli) -> Result<(), CliError> {
    let devices = load_devices(args)?;
    let broker = args.broker.broker()?;
    let sdk = cli.aws.sdk_config().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let inventory = cli
        .aws
        .table
        .as_deref()
        .map(|table| onboarding_aws::DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table));
    let session = Session {
        broker: &broker,
        iot: &iot,
        inventory: inventory.as_ref(),
        deadline: Duration::from_secs(args.deadline),
        concurrency: args.concurrency,
    };
    let progress = progress_bar(
        devices.len(),
        cli.json,
        "{bar:40} {pos}/{len} devices settled, {elapsed}",
    );
    let fates = run_all(&session, &devices, &progress).await;
    progress.finish_and_clear();
    let active = active_seconds(&fates);
    let (p50, p95) = (quantile(&active, 0.5), quantile(&active, 0.95));
    if cli.json {
        let rows: Vec<_> = devices.iter().zip(&fates).map(|(d, f)| f.to_json(&d.name)).collect();
        println!(
            "{}",
            serde_json::json!({"devices": rows, "activeP50": p50, "activeP95": p95})
        );
    } else {
        println!("{:<24} outcome", "device");
        for (device, fate) in devices.iter().zip(&fates) {
            println!("{:<24} {}", device.name, fate.describe());
        }
        if let (Some(p50), Some(p95)) = (p50, p95) {
            println!(
                "{} of {} active; time to active p50 {p50:.1} s, p95 {p95:.1} s",
                active.len(),
                fates.len()
            );
        }
    }
    if fates.iter().any(|f| matches!(f, Fate::Failed(_))) {
        return Err(CliError::Input(
            "some devices could not even try (bad credentials?): see above".into(),
        ));
    }
    Ok(())
}
fn load_devices(args: &ConnectArgs) -> Result<Vec<Device>, CliError> {
    let device = |name: String, cert: &Path, key: &Path| -> Result<Device, CliError> {
        Ok(Device {
            name,
            cert_pem: read(cert, "device certificate")?,
            key_pem: read(key, "device key")?,
        })
    };
    match (&args.dir, &args.cert, &args.key) {
        (Some(dir), _, _) if dir.join("cert.pem").exists() => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            Ok(vec![device(name, &dir.join("cert.pem"), &dir.join("key.pem"))?])
        }
        (Some(dir), _, _) => {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| CliError::Input(format!("cannot read {}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("cert.pem").exists())
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Err(CliError::Input(format!(
                    "{} holds no device directories (cert.pem, key.pem)",
                    dir.display()
                )));
            }
            entries
                .iter()
                .map(|p| {
                    device(
                        p.file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default(),
                        &p.join("cert.pem"),
                        &p.join("key.pem"),
                    )
                })
                .collect()
        }
        (None, Some(cert), Some(key)) => {
            let pem = read(cert, "device certificate")?;
            let parsed = onboarding_domain::Certificate::from_pem(&pem)
                .map_err(|e| CliError::Input(format!("{}: {e}", cert.display())))?;
            let name = parsed
                .subject
                .get(onboarding_domain::SubjectField::CommonName)
                .unwrap_or_default()
                .to_string();
            Ok(vec![Device {
                name,
                cert_pem: pem,
                key_pem: read(key, "device key")?,
            }])
        }
        _ => Err(CliError::Input("give --dir, or --cert and --key".into())),
    }
}
