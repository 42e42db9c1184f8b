//! `onboard device connect`: devices connecting over MQTT with mutual TLS,
//! as AWS IoT devices do on their first day.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    /// MQTT host: the account's iot:Data-ATS endpoint (or 127.0.0.1 for an emulator).
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value_t = 8883)]
    pub port: u16,
    /// The CA that signs the broker's certificate (Amazon Root CA 1 for AWS IoT).
    #[arg(long)]
    pub server_ca: PathBuf,
    /// Give up on a device after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub deadline: u64,
    /// Devices connecting at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

struct Device {
    name: String,
    cert_pem: String,
    key_pem: String,
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Connected and published, this long after its first attempt.
    Active(Duration),
    /// Its certificate was set REVOKED or INACTIVE.
    Rejected(String),
    TimedOut,
    Failed(String),
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

fn tls(server_ca: &str, device: &Device) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(ca.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(device.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(device.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// One attempt: `Ok(true)` when connected and the message was acknowledged.
async fn attempt(args: &ConnectArgs, config: Arc<rustls::ClientConfig>, name: &str) -> bool {
    let mut options = MqttOptions::new(name, &args.host, args.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    let (client, mut events) = AsyncClient::new(options, 10);
    match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {}
        _ => return false,
    }
    let topic = format!("devices/{name}/telemetry");
    if client
        .publish(&topic, QoS::AtLeastOnce, false, br#"{"hello":"onboarded"}"#.to_vec())
        .await
        .is_err()
    {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                let _ = client.disconnect().await;
                return true;
            }
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
    false
}

async fn run_device(args: &ConnectArgs, server_ca: &str, device: &Device, iot: Option<&aws_sdk_iot::Client>) -> Fate {
    let config = match tls(server_ca, device) {
        Ok(config) => config,
        Err(e) => return Fate::Failed(e),
    };
    let certificate_id = rustls::pki_types::CertificateDer::pem_slice_iter(device.cert_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|der| hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)));
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        if attempt(args, config.clone(), &device.name).await {
            return Fate::Active(started.elapsed());
        }
        if let (Some(iot), Some(id)) = (iot, &certificate_id)
            && let Ok(out) = iot.describe_certificate().certificate_id(id).send().await
            && let Some(status) = out.certificate_description.and_then(|d| d.status)
            && matches!(status.as_str(), "REVOKED" | "INACTIVE")
        {
            return Fate::Rejected(status.as_str().to_string());
        }
        if started.elapsed() > Duration::from_secs(args.deadline) {
            return Fate::TimedOut;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(3));
    }
}

pub async fn run(args: &ConnectArgs, cli: &Cli) -> Result<(), CliError> {
    let devices = load_devices(args)?;
    let server_ca = read(&args.server_ca, "server CA")?;
    let sdk = cli.aws.sdk_config().await;
    // Certificate statuses tell a rejection from a slow onboarding; without
    // AWS credentials devices simply wait until the deadline.
    let iot = aws_sdk_iot::Client::new(&sdk);
    let progress = if cli.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(devices.len() as u64)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} devices settled, {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let fates: Vec<(String, Fate)> = futures::stream::iter(devices.iter())
        .map(|device| {
            let (iot, server_ca, progress) = (&iot, &server_ca, &progress);
            async move {
                let fate = run_device(args, server_ca, device, Some(iot)).await;
                progress.inc(1);
                (device.name.clone(), fate)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    progress.finish_and_clear();
    let mut fates = fates;
    fates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut active: Vec<f64> = fates
        .iter()
        .filter_map(|(_, f)| {
            if let Fate::Active(d) = f {
                Some(d.as_secs_f64())
            } else {
                None
            }
        })
        .collect();
    active.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        active
            .get(((active.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
    };
    if cli.json {
        let rows: Vec<_> = fates
            .iter()
            .map(|(name, fate)| match fate {
                Fate::Active(d) => serde_json::json!({"device": name, "outcome": "active", "seconds": d.as_secs_f64()}),
                Fate::Rejected(s) => serde_json::json!({"device": name, "outcome": "rejected", "certificateStatus": s}),
                Fate::TimedOut => serde_json::json!({"device": name, "outcome": "timed_out"}),
                Fate::Failed(e) => serde_json::json!({"device": name, "outcome": "failed", "error": e}),
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"devices": rows, "activeP50": pick(0.5), "activeP95": pick(0.95)})
        );
    } else {
        println!("{:<24} outcome", "device");
        for (name, fate) in &fates {
            let text = match fate {
                Fate::Active(d) => format!("active after {:.1} s", d.as_secs_f64()),
                Fate::Rejected(s) => format!("rejected (certificate {s})"),
                Fate::TimedOut => "timed out".to_string(),
                Fate::Failed(e) => format!("failed: {e}"),
            };
            println!("{name:<24} {text}");
        }
        if let (Some(p50), Some(p95)) = (pick(0.5), pick(0.95)) {
            println!(
                "{} of {} active; time to active p50 {p50:.1} s, p95 {p95:.1} s",
                active.len(),
                fates.len()
            );
        }
    }
    if fates.iter().any(|(_, f)| matches!(f, Fate::Failed(_))) {
        return Err(CliError::Input(
            "some devices could not even try (bad credentials?): see above".into(),
        ));
    }
    Ok(())
}
