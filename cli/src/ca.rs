//! `onboard ca create | register | bind | list | unbind`.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use onboarding_domain::event::is_certificate_id;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize,
};

use crate::Cli;
use crate::error::CliError;
use crate::files::{read, write_all_new};
use crate::profile::admin;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key.pem";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CaKeyType {
    /// EC P-256 (default).
    P256,
    /// RSA 3072.
    Rsa3072,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Generate a CA key and self-signed certificate into a directory
    /// (`ca.pem`, `ca.key.pem` with mode 0600). Refuses to overwrite.
    Create {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "p256")]
        key_type: CaKeyType,
        /// Subject common name.
        #[arg(long, default_value = "Device Manufacturer CA")]
        common_name: String,
        /// Subject organization.
        #[arg(long)]
        organization: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// Register a CA in AWS IoT with auto-registration (just-in-time
    /// registration) and bind it to a device profile.
    Register {
        /// Directory holding `ca.pem` and `ca.key.pem` (from `onboard ca create`).
        #[arg(long)]
        ca: PathBuf,
        /// Device profile to bind the CA to (it must exist).
        #[arg(long)]
        profile: String,
    },
    /// Bind a CA registered by other means (CloudFormation, the console) to a profile.
    Bind {
        /// CA certificate id (64 hex characters).
        ca_id: String,
        #[arg(long)]
        profile: String,
    },
    /// List the CAs in AWS IoT and the profile each is bound to.
    List,
    /// Remove a CA's binding: its new devices are then rejected (CA_NOT_BOUND).
    Unbind { ca_id: String },
}

pub async fn run(command: &CaCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        CaCommand::Create {
            out,
            key_type,
            common_name,
            organization,
            days,
        } => {
            create(out, *key_type, common_name, organization.as_deref(), *days)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"certificate": out.join(CA_CERT), "key": out.join(CA_KEY)})
                );
            } else {
                println!(
                    "CA written: {} and {} (mode 0600)",
                    out.join(CA_CERT).display(),
                    out.join(CA_KEY).display()
                );
                println!("next: onboard ca register --ca {} --profile NAME", out.display());
            }
            Ok(())
        }
        CaCommand::Register { ca, profile } => {
            let (cert_pem, key_pem) = (
                read(&ca.join(CA_CERT), "CA certificate")?,
                read(&ca.join(CA_KEY), "CA key")?,
            );
            let admin = admin(cli).await?;
            require_profile(&admin, profile).await?;
            let sdk = cli.aws.sdk_config().await;
            let iot = aws_sdk_iot::Client::new(&sdk);
            let code = iot
                .get_registration_code()
                .send()
                .await
                .map_err(|e| CliError::aws("GetRegistrationCode", e))?
                .registration_code
                .ok_or_else(|| CliError::Aws("GetRegistrationCode returned no code".into()))?;
            let verification = verification_certificate(&cert_pem, &key_pem, &code)?;
            let registered = iot
                .register_ca_certificate()
                .ca_certificate(&cert_pem)
                .verification_certificate(verification)
                .set_as_active(true)
                .allow_auto_registration(true)
                .send()
                .await
                .map_err(|e| CliError::aws("RegisterCACertificate", e))?;
            let ca_id = registered
                .certificate_id
                .ok_or_else(|| CliError::Aws("RegisterCACertificate returned no id".into()))?;
            admin.bind(&ca_id, profile).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"caCertificateId": ca_id, "profile": profile, "autoRegistration": true})
                );
            } else {
                println!("CA {ca_id} registered (ACTIVE, auto-registration on) and bound to profile {profile}");
            }
            Ok(())
        }
        CaCommand::Bind { ca_id, profile } => {
            check_ca_id(ca_id)?;
            let admin = admin(cli).await?;
            require_profile(&admin, profile).await?;
            let sdk = cli.aws.sdk_config().await;
            let iot = aws_sdk_iot::Client::new(&sdk);
            match iot.describe_ca_certificate().certificate_id(ca_id).send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    return Err(CliError::Input(format!(
                        "no CA {ca_id} is registered in AWS IoT; register it first"
                    )));
                }
                Err(e) => return Err(CliError::aws("DescribeCACertificate", e)),
            }
            admin.bind(ca_id, profile).await?;
            println!("CA {ca_id} bound to profile {profile}");
            Ok(())
        }
        CaCommand::List => list(cli).await,
        CaCommand::Unbind { ca_id } => {
            check_ca_id(ca_id)?;
            if admin(cli).await?.unbind(ca_id).await? {
                println!("CA {ca_id} unbound: its new devices will be rejected (CA_NOT_BOUND)");
                Ok(())
            } else {
                Err(CliError::Input(format!("CA {ca_id} was not bound to any profile")))
            }
        }
    }
}

fn check_ca_id(ca_id: &str) -> Result<(), CliError> {
    if is_certificate_id(ca_id) {
        Ok(())
    } else {
        Err(CliError::Input(format!(
            "{ca_id:?} is not a CA certificate id (64 lowercase hexadecimal characters)"
        )))
    }
}

async fn require_profile(admin: &onboarding_aws::ConfigAdmin, profile: &str) -> Result<(), CliError> {
    let (profiles, _) = admin.load().await?;
    match profiles.get(profile) {
        Some(Ok(_)) => Ok(()),
        Some(Err(problem)) => Err(CliError::Input(format!(
            "profile {profile} is invalid ({problem}); fix it with: onboard profile put FILE"
        ))),
        None => Err(CliError::Input(format!(
            "no profile named {profile}; create it with: onboard profile put FILE"
        ))),
    }
}

async fn list(cli: &Cli) -> Result<(), CliError> {
    let (_, bindings) = admin(cli).await?.load().await?;
    let sdk = cli.aws.sdk_config().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let mut rows = Vec::new();
    let mut marker = None;
    loop {
        let page = iot
            .list_ca_certificates()
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| CliError::aws("ListCACertificates", e))?;
        for ca in page.certificates() {
            let id = ca.certificate_id().unwrap_or_default().to_string();
            let status = ca.status().map(|s| s.as_str().to_string()).unwrap_or_default();
            let described = iot
                .describe_ca_certificate()
                .certificate_id(&id)
                .send()
                .await
                .map_err(|e| CliError::aws("DescribeCACertificate", e))?;
            let auto = described
                .certificate_description
                .and_then(|d| d.auto_registration_status)
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            let profile = bindings.get(&id).cloned();
            rows.push((id, status, auto, profile));
        }
        marker = page.next_marker.filter(|m| !m.is_empty());
        if marker.is_none() {
            break;
        }
    }
    if cli.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(id, status, auto, profile)| serde_json::json!({"caCertificateId": id, "status": status, "autoRegistration": auto, "profile": profile}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!(
        "{:<66} {:<10} {:<10} profile",
        "CA certificate id", "status", "auto-reg"
    );
    for (id, status, auto, profile) in rows {
        println!(
            "{id:<66} {status:<10} {auto:<10} {}",
            profile.as_deref().unwrap_or("- (not bound: devices rejected)")
        );
    }
    Ok(())
}

fn create(
    out: &Path,
    key_type: CaKeyType,
    common_name: &str,
    organization: Option<&str>,
    days: u32,
) -> Result<(), CliError> {
    let rcgen_error = |e: rcgen::Error| CliError::Input(format!("cannot make the CA: {e}"));
    let key = match key_type {
        CaKeyType::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        CaKeyType::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
    }
    .map_err(rcgen_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    let cert = params.self_signed(&key).map_err(rcgen_error)?;
    std::fs::create_dir_all(out).map_err(|e| CliError::Input(format!("cannot create {}: {e}", out.display())))?;
    write_all_new(&[
        (out.join(CA_KEY), key.serialize_pem(), 0o600),
        (out.join(CA_CERT), cert.pem(), 0o644),
    ])
}

/// The verification certificate AWS IoT asks for: CN = the registration
/// code, signed by the CA's key.
fn verification_certificate(ca_pem: &str, ca_key_pem: &str, code: &str) -> Result<String, CliError> {
    let bad = |what: &str, e: rcgen::Error| CliError::Input(format!("{what}: {e}"));
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| bad("the CA key does not parse", e))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(|e| bad("the CA certificate does not parse", e))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| bad("key generation", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| bad("parameters", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, code);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(1);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| bad("signing the verification certificate (is the key the CA's?)", e))?;
    Ok(cert.pem())
}
