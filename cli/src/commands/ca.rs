//! `onboard ca create | register | bind | list | unbind`; `rotate`, `status`
//! and `retire` are in `ca_rotation.rs`.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use onboarding_aws::{CaKeySpec, KmsSigner, create_ca_key};
use onboarding_domain::NameError;
use onboarding_domain::is_certificate_id;
use onboarding_domain::{
    CaName, Certificate, DeviceProfile, IssuanceSettings, check_jitp_subject, jitp_parameter_name, render_jitp,
    self_signed_ca_certificate,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize,
};

use crate::Cli;
use crate::commands::profile::admin;
use crate::error::CliError;
use crate::files::{read, refuse_existing, write_all_new};

pub(crate) const CA_CERT: &str = "ca.pem";
pub(crate) const CA_KEY: &str = "ca.key.pem";
/// With `ca create --kms`: the ARN of the CA's KMS key (the key itself never leaves KMS).
pub(crate) const CA_KMS_KEY: &str = "ca.kms-key-arn";

/// The spec of a CA key created in KMS (`SIGN_VERIFY`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KmsKeySpec {
    /// ECC_NIST_P256, ECDSA SHA-256 (default).
    P256,
    /// ECC_NIST_P384, ECDSA SHA-384.
    P384,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CaKeyType {
    /// EC P-256 (default).
    P256,
    /// RSA 3072.
    Rsa3072,
}

/// Who provisions a registered CA's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegistrationMode {
    /// Just-in-time registration: the registrar checks and provisions each
    /// device (default).
    Jitr,
    /// Just-in-time provisioning: AWS IoT provisions each device from a
    /// template rendered from the profile, without the registrar's checks.
    Jitp,
}

impl RegistrationMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Jitr => "jitr",
            Self::Jitp => "jitp",
        }
    }
}

/// What JITP registration needs besides the profile.
#[derive(Debug, Clone)]
pub(crate) struct JitpOptions {
    /// The IAM role AWS IoT assumes to provision devices.
    pub role_arn: String,
    /// A sample device certificate (PEM file) to check against the template.
    pub check_device: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Generate a CA key and self-signed certificate into a directory
    /// (`ca.pem`, `ca.key.pem` with mode 0600). Refuses to overwrite. With
    /// `--kms`: the key is created in KMS and never leaves it (`ca.pem` and
    /// `ca.kms-key-arn`, the key's ARN; no key file).
    Create {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "p256", conflicts_with = "kms")]
        key_type: CaKeyType,
        /// Create the CA key in KMS (SIGN_VERIFY) and sign the certificate there.
        #[arg(long)]
        kms: bool,
        /// With --kms: the KMS key spec (default p256).
        #[arg(long, value_enum, requires = "kms")]
        key_spec: Option<KmsKeySpec>,
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
    /// Register a CA in AWS IoT with auto-registration and bind it to a
    /// device profile. `--mode jitr` (default): the registrar provisions its
    /// devices. `--mode jitp`: AWS IoT provisions them from a template
    /// rendered from the profile (the limitations are printed).
    Register {
        /// Directory holding `ca.pem` and `ca.key.pem` (from `onboard ca create`).
        #[arg(long)]
        ca: PathBuf,
        /// Device profile to bind the CA to (it must exist).
        #[arg(long)]
        profile: String,
        /// Who provisions the CA's devices: the registrar (jitr) or AWS IoT from
        /// the profile's template (jitp).
        #[arg(long, value_enum, default_value = "jitr")]
        mode: RegistrationMode,
        /// JITP only, required there: the IAM role AWS IoT assumes to provision
        /// devices (trusting iot.amazonaws.com, with the AWSIoTThingsRegistration
        /// managed policy).
        #[arg(long, value_name = "ARN")]
        role_arn: Option<String>,
        /// JITP only: a device certificate (PEM) of this CA to check first; the
        /// registration is refused if it lacks a subject field the template needs.
        #[arg(long, value_name = "CERT_PEM")]
        check_device: Option<PathBuf>,
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
    /// Rotate a manufacturer CA: register the new CA in DIR (from `onboard ca
    /// create`) with auto-registration and bind it to the old CA's profile.
    /// The old CA stays ACTIVE; run again after a failure to finish.
    Rotate {
        /// The CA being replaced (64 hex characters); it must be bound.
        old_ca: String,
        /// Directory holding the new CA's `ca.pem` and `ca.key.pem`.
        #[arg(long, value_name = "DIR")]
        new: PathBuf,
    },
    /// A CA and every CA bound to the same profile: device certificates
    /// chaining to each (AWS IoT's count), expiry, status, auto-registration,
    /// newest registration.
    Status { ca_id: String },
    /// Set a CA INACTIVE once no ACTIVE (or PENDING_ACTIVATION) device
    /// certificate chains to it; auto-registration is turned off first.
    Retire {
        ca_id: String,
        /// Retire it anyway, listing the devices still depending on it.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(command: &CaCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        CaCommand::Create {
            out,
            kms: true,
            key_spec,
            common_name,
            organization,
            days,
            ..
        } => {
            let name = CaName {
                common_name: common_name.clone(),
                organization: organization.clone(),
            };
            let (key_arn, fingerprint) =
                create_kms(cli, out, key_spec.unwrap_or(KmsKeySpec::P256), &name, *days).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "certificate": out.join(CA_CERT),
                        "kmsKeyArn": key_arn,
                        "fingerprint": fingerprint,
                    })
                );
            } else {
                println!(
                    "CA written: {} (its key is in KMS: {key_arn}, named in {})",
                    out.join(CA_CERT).display(),
                    out.join(CA_KMS_KEY).display()
                );
                println!("KMS key: {key_arn}");
                println!("fingerprint (SHA-256, the CA's certificate id in AWS IoT): {fingerprint}");
            }
            Ok(())
        }
        CaCommand::Create {
            out,
            key_type,
            common_name,
            organization,
            days,
            ..
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
        CaCommand::Register {
            ca,
            profile,
            mode,
            role_arn,
            check_device,
        } => {
            let jitp = match (mode, role_arn) {
                (RegistrationMode::Jitr, None) => {
                    if check_device.is_some() {
                        return Err(CliError::Input(
                            "--check-device applies to --mode jitp only; under JITR the registrar checks every device"
                                .into(),
                        ));
                    }
                    None
                }
                (RegistrationMode::Jitr, Some(_)) => {
                    return Err(CliError::Input(
                        "--role-arn applies to --mode jitp only; under JITR the registrar provisions devices".into(),
                    ));
                }
                (RegistrationMode::Jitp, None) => {
                    return Err(CliError::Input(
                        "--mode jitp needs --role-arn ARN: the IAM role AWS IoT assumes to provision devices \
                         (trusting iot.amazonaws.com, with the AWSIoTThingsRegistration managed policy)"
                            .into(),
                    ));
                }
                (RegistrationMode::Jitp, Some(role_arn)) => {
                    check_role_arn(role_arn)?;
                    Some(JitpOptions {
                        role_arn: role_arn.clone(),
                        check_device: check_device.clone(),
                    })
                }
            };
            let admin = admin(cli).await?;
            let sdk = cli.aws.sdk_config().await;
            let iot = aws_sdk_iot::Client::new(&sdk);
            let ca_id = register_ca(&iot, &admin, ca, profile, jitp.as_ref()).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "caCertificateId": ca_id,
                        "profile": profile,
                        "autoRegistration": true,
                        "mode": mode.as_str(),
                    })
                );
            } else if let Some(jitp) = &jitp {
                println!(
                    "CA {ca_id} registered (ACTIVE, auto-registration on, JITP: the template rendered from profile \
                     {profile}, role {}) and bound to profile {profile}",
                    jitp.role_arn
                );
            } else {
                println!("CA {ca_id} registered (ACTIVE, auto-registration on) and bound to profile {profile}");
            }
            Ok(())
        }
        CaCommand::Bind { ca_id, profile } => {
            check_ca_id(ca_id)?;
            let admin = admin(cli).await?;
            load_profile(&admin, profile).await?;
            let sdk = cli.aws.sdk_config().await;
            let iot = aws_sdk_iot::Client::new(&sdk);
            if !onboarding_aws::ca_is_registered(&iot, ca_id).await? {
                return Err(CliError::Input(format!(
                    "no CA {ca_id} is registered in AWS IoT; register it first"
                )));
            }
            admin.bind(ca_id, profile).await?;
            println!("CA {ca_id} bound to profile {profile}");
            Ok(())
        }
        CaCommand::List => list(cli).await,
        CaCommand::Rotate { old_ca, new } => super::ca_rotation::rotate(old_ca, new, cli).await,
        CaCommand::Status { ca_id } => super::ca_rotation::status(ca_id, cli).await,
        CaCommand::Retire { ca_id, force } => super::ca_rotation::retire(ca_id, *force, cli).await,
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

pub(crate) fn check_ca_id(ca_id: &str) -> Result<(), CliError> {
    if is_certificate_id(ca_id) {
        Ok(())
    } else {
        Err(CliError::Input(format!(
            "{ca_id:?} is not a CA certificate id (64 lowercase hexadecimal characters)"
        )))
    }
}

/// The named profile from the table, or what to do when it is missing or invalid.
pub(crate) async fn load_profile(
    admin: &onboarding_aws::ConfigAdmin,
    profile: &str,
) -> Result<DeviceProfile, CliError> {
    let (profiles, _) = admin.load().await?;
    match profiles.get(profile) {
        Some(Ok(found)) => Ok(found.clone()),
        Some(Err(problem)) => Err(CliError::Input(format!(
            "profile {profile} is invalid ({problem}); fix it with: onboard profile put FILE"
        ))),
        None => Err(CliError::Input(format!(
            "no profile named {profile}; create it with: onboard profile put FILE"
        ))),
    }
}

fn check_role_arn(role_arn: &str) -> Result<(), CliError> {
    if role_arn.starts_with("arn:") && role_arn.contains(":role/") {
        Ok(())
    } else {
        Err(CliError::Input(format!(
            "--role-arn {role_arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )))
    }
}

/// Registers the CA in `ca_dir` (`ca.pem`, `ca.key.pem`) as `ACTIVE` with
/// auto-registration, with the profile's JITP template when `jitp` is given,
/// and binds it to the profile. Everything is checked (files, profile,
/// template, sample device) before anything is registered. JITP warnings go
/// to stderr.
///
/// # Errors
/// [`CliError::Input`] for unreadable files, a missing or invalid profile, a
/// template AWS would not take, or a sample device that would not provision;
/// [`CliError::Aws`] when an AWS call fails.
pub(crate) async fn register_ca(
    iot: &aws_sdk_iot::Client,
    admin: &onboarding_aws::ConfigAdmin,
    ca_dir: &Path,
    profile: &str,
    jitp: Option<&JitpOptions>,
) -> Result<String, CliError> {
    let (cert_pem, key_pem) = (
        read(&ca_dir.join(CA_CERT), "CA certificate")?,
        read(&ca_dir.join(CA_KEY), "CA key")?,
    );
    let device_profile = load_profile(admin, profile).await?;
    let registration_config = match jitp {
        None => None,
        Some(options) => {
            let rendered = render_jitp(&device_profile)
                .map_err(|e| CliError::Input(format!("profile {profile} cannot be used for JITP: {e}")))?;
            if let Some(device) = &options.check_device {
                check_device(&device_profile, &cert_pem, device)?;
            }
            for warning in &rendered.warnings {
                eprintln!("warning: JITP: {warning}");
            }
            Some(onboarding_aws::JitpRegistration {
                template_body: rendered.to_template_body(),
                role_arn: options.role_arn.clone(),
            })
        }
    };
    let code = onboarding_aws::registration_code(iot).await?;
    let verification = verification_certificate(&cert_pem, &key_pem, &code)?;
    let ca_id =
        onboarding_aws::register_ca_certificate(iot, &cert_pem, &verification, registration_config.as_ref()).await?;
    admin.bind(&ca_id, profile).await?;
    Ok(ca_id)
}

/// Refuses a sample device certificate that JITP would not provision under
/// this profile: not signed by the CA, lacking a subject field the template
/// declares, or yielding an invalid thing name.
fn check_device(profile: &DeviceProfile, ca_pem: &str, device: &Path) -> Result<(), CliError> {
    let shown = device.display();
    let device_pem = read(device, "device certificate")?;
    let cert = Certificate::from_pem(&device_pem).map_err(|e| CliError::Input(format!("{shown}: {e}")))?;
    let ca = Certificate::from_pem(ca_pem).map_err(|e| CliError::Input(format!("the CA certificate: {e}")))?;
    if !cert.issuer_matches_subject_of(&ca) || !cert.is_signed_by(&ca) {
        return Err(CliError::Input(format!(
            "{shown} is not signed by this CA; check a certificate of one of its devices"
        )));
    }
    if let Err(field) = check_jitp_subject(profile, &cert.subject) {
        return Err(CliError::Input(format!(
            "{shown} lacks subject field {field} ({}), which profile {} needs: JITP would fail to provision \
             this device; nothing was registered",
            jitp_parameter_name(field),
            profile.name
        )));
    }
    match profile.thing_name_for(&cert.subject) {
        Ok(_) => Ok(()),
        Err(NameError::Missing(field)) => Err(CliError::Input(format!(
            "{shown} lacks subject field {field}, which the naming rule of profile {} uses; nothing was registered",
            profile.name
        ))),
        Err(NameError::Invalid(name)) => Err(CliError::Input(format!(
            "{shown} would be named {name:?}, not a valid thing name ([a-zA-Z0-9:_-]{{1,128}}): JITP would fail \
             to provision this device; nothing was registered"
        ))),
    }
}

async fn list(cli: &Cli) -> Result<(), CliError> {
    let (_, bindings) = admin(cli).await?.load().await?;
    let sdk = cli.aws.sdk_config().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let rows: Vec<_> = onboarding_aws::list_cas(&iot)
        .await?
        .into_iter()
        .map(|ca| {
            let profile = bindings.get(&ca.certificate_id).cloned();
            (ca.certificate_id, ca.status, ca.auto_registration, profile)
        })
        .collect();
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

/// Writes a new CA key and self-signed certificate into `out`.
///
/// # Errors
/// [`CliError::Input`] when the CA cannot be made or written (existing files included).
pub(crate) fn create(
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

/// Creates a CA key in KMS and the CA certificate self-signed through it,
/// and writes `ca.pem` and `ca.kms-key-arn` into `out`. Everything that can
/// be refused (existing files, the name) is refused before the key is
/// created. Returns the key's ARN and the certificate's fingerprint.
///
/// # Errors
/// [`CliError::Input`] for existing files or a name X.509 cannot carry, or
/// when the files cannot be written (the ARN is then in the message: the key
/// exists); [`CliError::Aws`] when a KMS call fails.
async fn create_kms(
    cli: &Cli,
    out: &Path,
    spec: KmsKeySpec,
    name: &CaName,
    days: u32,
) -> Result<(String, String), CliError> {
    let (cert_path, arn_path) = (out.join(CA_CERT), out.join(CA_KMS_KEY));
    refuse_existing([&cert_path, &arn_path, &out.join(CA_KEY)])?;
    name.check().map_err(|e| CliError::Input(e.to_string()))?;
    let sdk = cli.aws.sdk_config().await;
    let spec = match spec {
        KmsKeySpec::P256 => CaKeySpec::P256,
        KmsKeySpec::P384 => CaKeySpec::P384,
    };
    let key_arn = create_ca_key(&sdk, spec, &format!("fleet CA key ({})", name.common_name)).await?;
    let signer = KmsSigner::from_config(&sdk, key_arn.clone());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let settings = IssuanceSettings {
        validity_days: days,
        backdate_secs: 300,
    };
    let ca = self_signed_ca_certificate(&signer, name, now, &settings)
        .await
        .map_err(|e| CliError::Aws(format!("signing the CA certificate with KMS key {key_arn}: {e}")))?;
    std::fs::create_dir_all(out).map_err(|e| {
        CliError::Input(format!(
            "cannot create {} (KMS key {key_arn} was created): {e}",
            out.display()
        ))
    })?;
    write_all_new(&[
        (arn_path, format!("{key_arn}\n"), 0o644),
        (cert_path, ca.to_pem(), 0o644),
    ])
    .map_err(|e| CliError::Input(format!("{e} (KMS key {key_arn} was created)")))?;
    Ok((key_arn, ca.fingerprint))
}

/// The verification certificate AWS IoT asks for: CN = the registration
/// code, signed by the CA's key.
pub(crate) fn verification_certificate(ca_pem: &str, ca_key_pem: &str, code: &str) -> Result<String, CliError> {
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
