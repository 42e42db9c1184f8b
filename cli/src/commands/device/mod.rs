//! `onboard device`: `mint` (device keys and CA-signed certificates in
//! bulk) here; the device-side subcommands in the child modules: `connect`,
//! `rotate-agent` and `provision`; and the operator's `retire` and `revoke`
//! (emergency revocation).

pub mod connect;
pub mod provision;
pub mod retire;
pub mod revoke;
pub mod rotate_agent;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::{Subcommand, ValueEnum};
use onboarding_domain::is_valid_thing_name;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize,
};

use crate::Cli;
use crate::error::CliError;
use crate::files::{read, write_all_new};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKeyType {
    P256,
    P384,
    Ed25519,
    Rsa2048,
    /// Deliberately weak: for checking that such devices are rejected.
    Rsa1024,
}

/// Options of `onboard device mint`.
#[derive(Debug, clap::Args)]
pub struct MintArgs {
    /// Directory holding `ca.pem` and `ca.key.pem` (from `onboard ca create`).
    #[arg(long)]
    pub ca: PathBuf,
    /// How many devices.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Common name pattern; `{n}` or `{n:05}` is the device number.
    #[arg(long, default_value = "device-{n:05}")]
    pub name: String,
    /// First device number.
    #[arg(long, default_value_t = 1)]
    pub start: u32,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "p256")]
    pub key_type: DeviceKeyType,
    /// Validity in days from now.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Subject organization (O).
    #[arg(long)]
    pub organization: Option<String>,
    /// Subject organizational unit (OU).
    #[arg(long)]
    pub organizational_unit: Option<String>,
    /// Subject serialNumber pattern; `{n}` as in --name.
    #[arg(long)]
    pub serial_number: Option<String>,
    /// Subject country (C).
    #[arg(long)]
    pub country: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Generate device keys and certificates signed by a CA, in parallel.
    /// Each device gets `<out>/<name>/cert.pem` and `key.pem` (mode 0600).
    Mint(MintArgs),
    /// Connect devices over MQTT with mutual TLS: expect the first connection
    /// of a new certificate to be dropped, retry with backoff until active (or
    /// rejected, or the deadline), then publish one message on the device's
    /// own topic. Reports each device.
    Connect(connect::ConnectArgs),
    /// A simulated device that follows the certificate-rotation protocol over MQTT.
    ///
    /// Takes the next rotation job, obtains new credentials (CSR or
    /// server-keygen), proves them with a new connection, swaps `cert.pem` /
    /// `key.pem` (keeping `cert.old.pem` / `key.old.pem`) and confirms the job.
    /// Exit 0 rotated; 1 refused, failed, no job or timed out; 3 AWS refused a
    /// request (Jobs API, download, broker).
    RotateAgent(rotate_agent::RotateAgentArgs),
    /// A device provisioning itself with a claim certificate (fleet
    /// provisioning): CreateKeysAndCertificate over MQTT, RegisterThing with
    /// the template, then a first connection with its own certificate.
    Provision(provision::ProvisionArgs),
    /// Retire devices: their certificates INACTIVE (REVOKED with --revoke),
    /// detached and deleted, their rotations stopped, the thing out of its
    /// groups and deleted, the credentials record deleted (every version),
    /// the inventory records RETIRED, the name released. Resumable: an
    /// interrupted retirement finishes when run again.
    Retire(retire::RetireArgs),
    /// Emergency revocation of a device whose key was stolen: every
    /// certificate of the thing (or the one certificate named) REVOKED at
    /// once, its serial and fingerprint on the deny-list, open rotations
    /// stopped, the thing name kept until the device is retired. Safe to
    /// run again.
    Revoke(revoke::RevokeArgs),
}

/// Expands `{n}` / `{n:0W}` in a pattern.
///
/// # Errors
/// A message when the pattern has another placeholder or no `{n}` at all
/// while more than one device is asked for.
pub fn expand(pattern: &str, n: u32) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or("has a `{` without `}`")? + open;
        let spec = &rest[open + 1..close];
        match spec {
            "n" => out.push_str(&n.to_string()),
            _ => {
                let width = spec
                    .strip_prefix("n:0")
                    .and_then(|w| w.parse::<usize>().ok())
                    .ok_or_else(|| format!("unknown placeholder {{{spec}}}; use {{n}} or {{n:05}}"))?;
                out.push_str(&format!("{n:0width$}"));
            }
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub async fn run(command: &DeviceCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        DeviceCommand::Mint(args) => mint(args, cli).await,
        DeviceCommand::Connect(args) => connect::run(args, cli).await,
        DeviceCommand::RotateAgent(args) => rotate_agent::run(args, cli).await,
        DeviceCommand::Provision(args) => provision::run(args, cli).await,
        DeviceCommand::Retire(args) => retire::run(args, cli).await,
        DeviceCommand::Revoke(args) => revoke::run(args, cli).await,
    }
}

async fn mint(args: &MintArgs, cli: &Cli) -> Result<(), CliError> {
    let MintArgs {
        ca,
        count,
        name,
        start,
        out,
        key_type,
        days,
        organization,
        organizational_unit,
        serial_number,
        country,
    } = args;
    let last = start
        .checked_add(count - 1)
        .ok_or_else(|| CliError::Input("--start + --count is too large".into()))?;
    if *count > 1 && !name.contains("{n") {
        return Err(CliError::Input(format!(
            "--name {name:?} has no {{n}}: every device would get the same name"
        )));
    }
    // Check every name before any work: a pattern that yields invalid thing
    // names is refused up front (the registrar would reject those devices).
    let mut names = Vec::with_capacity(*count as usize);
    for n in *start..=last {
        let device = expand(name, n).map_err(|e| CliError::Input(format!("--name {name:?} {e}")))?;
        if !is_valid_thing_name(&device) {
            return Err(CliError::Input(format!(
                "--name {name:?} yields {device:?}, which is not a valid thing name ([a-zA-Z0-9:_-]{{1,128}})"
            )));
        }
        let serial = serial_number
            .as_deref()
            .map(|p| expand(p, n).map_err(|e| CliError::Input(format!("--serial-number {p:?} {e}"))))
            .transpose()?;
        names.push((device, serial));
    }
    if let Some((existing, _)) = names.iter().find(|(device, _)| out.join(device).exists()) {
        return Err(CliError::Input(format!(
            "{} already exists; refusing to overwrite (choose another --out or --start)",
            out.join(existing).display()
        )));
    }
    let issuer = load_issuer(ca)?;
    std::fs::create_dir_all(out).map_err(|e| CliError::Input(format!("cannot create {}: {e}", out.display())))?;

    let subject = Subject {
        organization: organization.clone(),
        organizational_unit: organizational_unit.clone(),
        country: country.clone(),
    };
    let validity = Validity::days_from_now(*days);
    let progress = if cli.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(u64::from(*count))
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} certificates, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .min(names.len());
    let errors: Vec<CliError> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let (device, serial) = names.get(i)?;
                        if let Err(e) = mint_one(
                            &issuer,
                            &out.join(device),
                            device,
                            serial.as_deref(),
                            &subject,
                            *key_type,
                            validity,
                        ) {
                            return Some(e);
                        }
                        progress.inc(1);
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
    });
    progress.finish_and_clear();
    if let Some(error) = errors.into_iter().next() {
        return Err(error);
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = f64::from(*count) / seconds.max(1e-9);
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"minted": count, "out": out, "seconds": seconds, "perSecond": rate})
        );
    } else {
        println!(
            "{count} devices minted into {} in {seconds:.1} s ({rate:.0}/s)",
            out.display()
        );
    }
    Ok(())
}

/// The CA in `dir` (`ca.pem`, `ca.key.pem`) as an issuer of device certificates.
///
/// # Errors
/// [`CliError::Input`] naming the missing or unreadable file.
pub(crate) fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CliError> {
    let (ca_pem, ca_key_pem) = (
        read(&dir.join("ca.pem"), "CA certificate")?,
        read(&dir.join("ca.key.pem"), "CA key")?,
    );
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).map_err(|e| CliError::Input(format!("the CA key does not parse: {e}")))?;
    Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| CliError::Input(format!("the CA certificate does not parse: {e}")))
}

/// Optional subject fields besides the common name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subject {
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    pub country: Option<String>,
}

/// A certificate's validity window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validity {
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
}

impl Validity {
    /// From five minutes ago (clock skew) to `days` from now.
    pub fn days_from_now(days: u32) -> Self {
        let now = time::OffsetDateTime::now_utc();
        Self {
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(i64::from(days)),
        }
    }
}

/// A device key, and its private key in PEM.
enum DeviceKey {
    Rcgen(KeyPair),
    /// An RSA key below what aws-lc-rs generates: the public key as SPKI.
    Weak(rcgen::SubjectPublicKeyInfo, String),
}

fn generate(key_type: DeviceKeyType) -> Result<DeviceKey, String> {
    let key = match key_type {
        DeviceKeyType::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        DeviceKeyType::P384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        DeviceKeyType::Ed25519 => KeyPair::generate_for(&PKCS_ED25519),
        DeviceKeyType::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        DeviceKeyType::Rsa1024 => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).map_err(|e| e.to_string())?;
            let spki = key.to_public_key().to_public_key_der().map_err(|e| e.to_string())?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
            let spki = rcgen::SubjectPublicKeyInfo::from_der(spki.as_bytes()).map_err(|e| e.to_string())?;
            return Ok(DeviceKey::Weak(spki, pem.to_string()));
        }
    };
    key.map(DeviceKey::Rcgen).map_err(|e| e.to_string())
}

/// Mints one device into `dir` (created; it must not exist).
pub(crate) fn mint_one(
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    name: &str,
    serial: Option<&str>,
    subject: &Subject,
    key_type: DeviceKeyType,
    validity: Validity,
) -> Result<(), CliError> {
    let fail = |e: rcgen::Error| CliError::Input(format!("{name}: {e}"));
    let key = generate(key_type).map_err(|e| CliError::Input(format!("{name}: key generation: {e}")))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    if let Some(o) = &subject.organization {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    if let Some(ou) = &subject.organizational_unit {
        dn.push(DnType::OrganizationalUnitName, ou.as_str());
    }
    if let Some(c) = &subject.country {
        dn.push(DnType::CountryName, c.as_str());
    }
    if let Some(serial) = serial {
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let (cert, key_pem) = match &key {
        DeviceKey::Rcgen(key) => (params.signed_by(key, issuer).map_err(fail)?, key.serialize_pem()),
        DeviceKey::Weak(spki, pem) => (params.signed_by(spki, issuer).map_err(fail)?, pem.clone()),
    };
    std::fs::create_dir(dir).map_err(|e| CliError::Input(format!("cannot create {}: {e}", dir.display())))?;
    write_all_new(&[
        (dir.join("key.pem"), key_pem, 0o600),
        (dir.join("cert.pem"), cert.pem(), 0o644),
    ])
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn name_patterns() {
        assert_eq!(expand("sensor-{n:05}", 42).as_deref(), Ok("sensor-00042"));
        assert_eq!(expand("d{n}", 7).as_deref(), Ok("d7"));
        assert_eq!(expand("fixed", 7).as_deref(), Ok("fixed"));
        assert!(expand("x-{m}", 1).is_err());
        assert!(expand("x-{n", 1).is_err());
    }
}
