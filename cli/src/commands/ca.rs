//! `onboard ca create | register | bind | list | unbind`; `rotate`, `status`
//! and `retire` are in `ca_rotation.rs`.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use onboarding_aws::{CaKeySpec, KmsSigner, create_ca_key};
use onboarding_domain::NameError;
use onboarding_domain::is_certificate_id;
use onboarding_domain::{
    CaName, Certificate, CertificateRequest, CertificateSigner, DeviceProfile, IssuanceError, IssuanceSettings,
    PortErrorKind, SigningKey, check_jitp_subject, is_kms_key_arn, issue_device_certificate, jitp_parameter_name,
    render_jitp, self_signed_ca_certificate,
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
        /// Directory holding `ca.pem` and the CA's key: `ca.key.pem` (from
        /// `onboard ca create`), or `ca.kms-key-arn` (from `onboard ca create
        /// --kms`: the verification certificate is then signed through KMS).
        #[arg(long)]
        ca: PathBuf,
        /// The CA's key is this KMS key (SIGN_VERIFY), not a file: the
        /// verification certificate is signed through KMS. For a `--ca`
        /// directory holding `ca.pem` only; refused with `ca.key.pem`, or
        /// with a `ca.kms-key-arn` naming another key.
        #[arg(long, value_name = "ARN")]
        kms_key_arn: Option<String>,
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
            kms_key_arn,
            profile,
            mode,
            role_arn,
            check_device,
        } => {
            // Where the CA's key is: refused before any AWS call when both or neither are given.
            let source = ca_key_source(ca, kms_key_arn.as_deref())?;
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
            let key = match &source {
                KeySource::File(path) => CaKey::File(read(path, "CA key")?),
                KeySource::Kms(arn) => CaKey::Kms(KmsSigner::from_config(&sdk, arn.clone())),
            };
            let ca_id = register_ca_with_key(&iot, &admin, ca, &key, profile, jitp.as_ref()).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "caCertificateId": ca_id,
                        "profile": profile,
                        "autoRegistration": true,
                        "mode": mode.as_str(),
                        "kmsKeyArn": match &source {
                            KeySource::Kms(arn) => Some(arn.as_str()),
                            KeySource::File(_) => None,
                        },
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

/// Where a CA's private key is, as `ca register` was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// A PEM key file (`ca.key.pem`).
    File(PathBuf),
    /// A KMS key, by ARN (`ca.kms-key-arn` or `--kms-key-arn`).
    Kms(String),
}

/// The CA key a registration signs its verification certificate with.
pub(crate) enum CaKey {
    /// The key's PEM, from `ca.key.pem`.
    File(String),
    /// The key in KMS.
    Kms(KmsSigner),
}

/// Where the key of the CA in `ca_dir` is: `ca.key.pem`, or a KMS key named
/// by `ca.kms-key-arn` or by `flag` (`--kms-key-arn`). Reads files only.
///
/// # Errors
/// [`CliError::Input`] when `ca.pem` cannot be read, when both a key file
/// and a KMS key are given, when `ca.kms-key-arn` and `--kms-key-arn` name
/// different keys, when neither is given, or when a KMS key is not named by
/// a key ARN.
pub(crate) fn ca_key_source(ca_dir: &Path, flag: Option<&str>) -> Result<KeySource, CliError> {
    // A directory without the certificate is named by its certificate first.
    read(&ca_dir.join(CA_CERT), "CA certificate")?;
    let key_file = ca_dir.join(CA_KEY);
    let arn_file = ca_dir.join(CA_KMS_KEY);
    let from_file = if arn_file.exists() {
        Some(read(&arn_file, "the CA's KMS key ARN")?.trim().to_string())
    } else {
        None
    };
    let kms = match (from_file, flag) {
        (Some(file), Some(flag)) if file != flag => {
            return Err(CliError::Input(format!(
                "{} names KMS key {file}, --kms-key-arn names {flag}: give one CA key; nothing was registered",
                arn_file.display()
            )));
        }
        (Some(arn), _) => Some((arn, arn_file.display().to_string())),
        (None, Some(flag)) => Some((flag.to_string(), "--kms-key-arn".to_string())),
        (None, None) => None,
    };
    match (key_file.exists(), kms) {
        (true, Some((arn, from))) => Err(CliError::Input(format!(
            "{} holds a CA key file and {from} names KMS key {arn}: a CA has one key; remove the one that is not \
             this CA's; nothing was registered",
            ca_dir.display()
        ))),
        (true, None) => Ok(KeySource::File(key_file)),
        (false, Some((arn, from))) => {
            if is_kms_key_arn(&arn) {
                Ok(KeySource::Kms(arn))
            } else {
                Err(CliError::Input(format!(
                    "{from}: {arn:?} is not a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<key id>; \
                     not an alias)"
                )))
            }
        }
        (false, None) => Err(CliError::Input(format!(
            "no CA key: {} holds neither {CA_KEY} (onboard ca create) nor {CA_KMS_KEY} (onboard ca create --kms), \
             and no --kms-key-arn was given",
            ca_dir.display()
        ))),
    }
}

/// Registers the CA in `ca_dir` (`ca.pem`, `ca.key.pem`) as `ACTIVE` with
/// auto-registration, with the profile's JITP template when `jitp` is given,
/// and binds it to the profile: [`register_ca_with_key`] with the key file.
///
/// # Errors
/// As [`register_ca_with_key`], and an unreadable key file.
pub(crate) async fn register_ca(
    iot: &aws_sdk_iot::Client,
    admin: &onboarding_aws::ConfigAdmin,
    ca_dir: &Path,
    profile: &str,
    jitp: Option<&JitpOptions>,
) -> Result<String, CliError> {
    let key = CaKey::File(read(&ca_dir.join(CA_KEY), "CA key")?);
    register_ca_with_key(iot, admin, ca_dir, &key, profile, jitp).await
}

/// Registers the CA certificate `ca_dir/ca.pem` as `ACTIVE` with
/// auto-registration, its verification certificate signed with `key` (a
/// file, or through KMS), with the profile's JITP template when `jitp` is
/// given, and binds it to the profile. Everything is checked (files, a KMS
/// key's spec and that its public key is the certificate's, profile,
/// template, sample device) before anything is registered. JITP warnings go
/// to stderr.
///
/// # Errors
/// [`CliError::Input`] for unreadable files, a KMS key that cannot sign
/// certificates or is not this CA's, a missing or invalid profile, a
/// template AWS would not take, or a sample device that would not provision;
/// [`CliError::Aws`] when an AWS call fails.
pub(crate) async fn register_ca_with_key(
    iot: &aws_sdk_iot::Client,
    admin: &onboarding_aws::ConfigAdmin,
    ca_dir: &Path,
    key: &CaKey,
    profile: &str,
    jitp: Option<&JitpOptions>,
) -> Result<String, CliError> {
    let cert_pem = read(&ca_dir.join(CA_CERT), "CA certificate")?;
    // The key that signs the verification certificate, a KMS key checked first.
    enum Signing<'a> {
        File(&'a str),
        Kms(&'a KmsSigner, Box<Certificate>),
    }
    let signing = match key {
        CaKey::File(key_pem) => Signing::File(key_pem),
        CaKey::Kms(signer) => {
            let ca = Certificate::from_pem(&cert_pem)
                .map_err(|e| CliError::Input(format!("{}: {e}", ca_dir.join(CA_CERT).display())))?;
            check_kms_ca(signer, signer.key_id(), &ca).await?;
            Signing::Kms(signer, Box::new(ca))
        }
    };
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
    let verification = match &signing {
        Signing::File(key_pem) => verification_certificate(&cert_pem, key_pem, &code)?,
        Signing::Kms(signer, ca) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            kms_verification_certificate(*signer, ca, &code, now).await?.to_pem()
        }
    };
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

/// Refuses a KMS key that cannot be this CA's key, before anything is
/// registered: one `kms:GetPublicKey`. The certificate must be a CA, the key
/// one [`KmsSigner`] signs certificates with (`SIGN_VERIFY`, ECC_NIST_P256,
/// ECC_NIST_P384 or RSA_2048/3072/4096), and its public key the
/// certificate's: what it signs must chain to this CA.
///
/// # Errors
/// [`CliError::Input`] for a certificate that is not a CA, a key of another
/// spec or usage, a key that does not exist, or another key;
/// [`CliError::Aws`] when KMS fails otherwise (denied, throttled).
pub(crate) async fn check_kms_ca<S: CertificateSigner>(
    signer: &S,
    key_name: &str,
    ca: &Certificate,
) -> Result<(), CliError> {
    if !ca.is_ca {
        return Err(CliError::Input(format!(
            "the CA certificate ({}) is not a CA (basicConstraints CA:TRUE); nothing was registered",
            ca.subject_dn
        )));
    }
    let key = kms_signing_key(signer, key_name).await?;
    if key.public_key_der != ca.public_key_der() {
        return Err(CliError::Input(format!(
            "KMS key {key_name} is not the key of the CA certificate ({}): its public key differs, so what it \
             signs would not chain to this CA; nothing was registered",
            ca.subject_dn
        )));
    }
    Ok(())
}

/// The algorithm and public key of a CA key in KMS (`kms:GetPublicKey`).
///
/// # Errors
/// [`CliError::Input`] for a key of a spec or usage that cannot sign
/// certificates, or that does not exist; [`CliError::Aws`] when KMS fails
/// otherwise (denied, throttled).
pub(crate) async fn kms_signing_key<S: CertificateSigner>(signer: &S, key_name: &str) -> Result<SigningKey, CliError> {
    signer.signing_key().await.map_err(|e| match e.kind {
        PortErrorKind::Invalid | PortErrorKind::MissingResource => {
            CliError::Input(format!("{e}; nothing was registered"))
        }
        _ => CliError::Aws(format!("reading KMS key {key_name}: {e}")),
    })
}

/// The verification certificate AWS IoT's `RegisterCACertificate` asks for,
/// signed through `signer` (the CA's key in KMS): CN = the registration
/// code, issued by `ca` with the issuance workflow's DER builder (one
/// `kms:Sign`). Its subject key is a fresh P-256 key made here and thrown
/// away: AWS IoT checks the CN and the CA's signature, not the subject key.
///
/// # Errors
/// [`CliError::Input`] when `ca` cannot issue or is not the signer's;
/// [`CliError::Aws`] when KMS fails or returns a signature that does not verify.
pub(crate) async fn kms_verification_certificate<S: CertificateSigner>(
    signer: &S,
    ca: &Certificate,
    code: &str,
    now: i64,
) -> Result<Certificate, CliError> {
    let bad = |what: &str, e: rcgen::Error| CliError::Input(format!("{what}: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| bad("key generation", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| bad("parameters", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, code);
    params.distinguished_name = dn;
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| bad("the verification certificate's request", e))?;
    let csr = CertificateRequest::from_pem(&csr_pem)
        .map_err(|e| CliError::Input(format!("the verification certificate's request: {e}")))?;
    let settings = IssuanceSettings {
        validity_days: 1,
        backdate_secs: 300,
    };
    issue_device_certificate(signer, ca, &csr, now, &settings)
        .await
        .map_err(|e| match e {
            IssuanceError::Signer(_) | IssuanceError::BadSignature => {
                CliError::Aws(format!("signing the verification certificate through KMS: {e}"))
            }
            other => CliError::Input(format!("the verification certificate: {other}; nothing was registered")),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::Ordering;

    use onboarding_domain::SignatureAlgorithm;
    use onboarding_domain::signer_fakes::MemorySigner;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const CODE: &str = "3f2a9c0e7b8d41f6a5e2c9b0d7f4a1e8c3b6d9f2a5e8c1b4d7f0a3e6c9b2d5f8";

    /// A CA certificate self-signed by `signer`'s key, as `ca create --kms` makes it.
    async fn ca_of(signer: &MemorySigner) -> Certificate {
        let name = CaName {
            common_name: "Acme Fleet CA".into(),
            organization: Some("Acme".into()),
        };
        let settings = IssuanceSettings {
            validity_days: 365,
            backdate_secs: 300,
        };
        self_signed_ca_certificate(signer, &name, NOW, &settings).await.unwrap()
    }

    #[tokio::test]
    async fn the_kms_verification_certificate_names_the_code_and_is_signed_by_the_ca_key() {
        for algorithm in [
            SignatureAlgorithm::EcdsaP256Sha256,
            SignatureAlgorithm::EcdsaP384Sha384,
            SignatureAlgorithm::RsaPkcs1Sha256,
        ] {
            let signer = MemorySigner::generate(algorithm);
            let ca = ca_of(&signer).await;
            let before = signer.signs.load(Ordering::SeqCst);
            check_kms_ca(&signer, "key", &ca).await.unwrap();
            let verification = kms_verification_certificate(&signer, &ca, CODE, NOW).await.unwrap();
            assert_eq!(
                signer.signs.load(Ordering::SeqCst),
                before + 1,
                "{algorithm}: one signature"
            );

            let (_, parsed) = X509Certificate::from_der(verification.der()).unwrap();
            let (_, ca_parsed) = X509Certificate::from_der(ca.der()).unwrap();
            let cn: Vec<&str> = parsed
                .subject()
                .iter_common_name()
                .map(|cn| cn.as_str().unwrap())
                .collect();
            assert_eq!(cn, [CODE], "{algorithm}");
            assert_eq!(parsed.issuer().as_raw(), ca_parsed.subject().as_raw(), "{algorithm}");
            parsed
                .verify_signature(Some(ca_parsed.public_key()))
                .unwrap_or_else(|e| panic!("{algorithm}: does not verify with the CA's key: {e}"));
            // Its subject key is a fresh one, never the CA's.
            assert_ne!(parsed.public_key().raw, ca_parsed.public_key().raw);
            assert!(!verification.is_ca);
            assert!(verification.not_before <= NOW && verification.not_after <= NOW + 86_400);
        }
    }

    #[tokio::test]
    async fn a_kms_key_that_is_not_the_cas_is_refused_before_anything_is_signed() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let other = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let ca = ca_of(&other).await;
        let refused = check_kms_ca(&signer, "arn:aws:kms:eu-west-1:123456789012:key/k", &ca).await;
        let Err(CliError::Input(message)) = refused else {
            panic!("another key's CA was accepted: {refused:?}");
        };
        assert!(message.contains("is not the key of the CA certificate"), "{message}");
        // The verification certificate is refused as well, nothing signed.
        let refused = kms_verification_certificate(&signer, &ca, CODE, NOW).await;
        assert!(matches!(refused, Err(CliError::Input(_))), "{refused:?}");
        assert_eq!(signer.signs.load(Ordering::SeqCst), 0);

        // A certificate that is not a CA, even with the key's public key: refused.
        let own = ca_of(&signer).await;
        let leaf = kms_verification_certificate(&signer, &own, CODE, NOW).await.unwrap();
        let refused = check_kms_ca(&signer, "key", &leaf).await;
        let Err(CliError::Input(message)) = refused else {
            panic!("a leaf was accepted as the CA: {refused:?}");
        };
        assert!(message.contains("is not a CA"), "{message}");
    }

    #[tokio::test]
    async fn a_key_kms_refuses_is_bad_input_and_a_kms_failure_an_aws_error() {
        let signer = MemorySigner::generate(SignatureAlgorithm::EcdsaP256Sha256);
        let ca = ca_of(&signer).await;
        // KmsSigner answers Invalid for a spec or usage it cannot sign certificates with.
        *signer.fail.lock().unwrap() = Some(PortErrorKind::Invalid);
        assert!(matches!(
            check_kms_ca(&signer, "key", &ca).await,
            Err(CliError::Input(_))
        ));
        *signer.fail.lock().unwrap() = Some(PortErrorKind::Transient);
        assert!(matches!(check_kms_ca(&signer, "key", &ca).await, Err(CliError::Aws(_))));
        // A signer whose signature does not verify: never handed to AWS.
        *signer.fail.lock().unwrap() = None;
        signer.corrupt.store(true, Ordering::SeqCst);
        let refused = kms_verification_certificate(&signer, &ca, CODE, NOW).await;
        assert!(matches!(refused, Err(CliError::Aws(_))), "{refused:?}");
    }

    const ARN: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    fn refusal(result: Result<KeySource, CliError>) -> String {
        match result {
            Err(CliError::Input(message)) => message,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn the_ca_key_is_one_file_or_one_kms_key() {
        // A key file: the local CA, as before.
        let dir = dir_with(&[(CA_CERT, "x"), (CA_KEY, "k")]);
        assert_eq!(
            ca_key_source(dir.path(), None).unwrap(),
            KeySource::File(dir.path().join(CA_KEY))
        );
        // The ARN file `ca create --kms` writes, the flag, or both naming the same key.
        let dir = dir_with(&[(CA_CERT, "x"), (CA_KMS_KEY, &format!("{ARN}\n"))]);
        assert_eq!(ca_key_source(dir.path(), None).unwrap(), KeySource::Kms(ARN.into()));
        assert_eq!(
            ca_key_source(dir.path(), Some(ARN)).unwrap(),
            KeySource::Kms(ARN.into())
        );
        let bare = dir_with(&[(CA_CERT, "x")]);
        assert_eq!(
            ca_key_source(bare.path(), Some(ARN)).unwrap(),
            KeySource::Kms(ARN.into())
        );

        // Neither.
        assert!(refusal(ca_key_source(bare.path(), None)).contains("no CA key"));
        // No certificate: named first, whatever the key.
        let empty = dir_with(&[(CA_KMS_KEY, ARN)]);
        assert!(refusal(ca_key_source(empty.path(), None)).contains("ca.pem"));
        // Both: a key file and a KMS key, from the flag or the ARN file.
        let local = dir_with(&[(CA_CERT, "x"), (CA_KEY, "k")]);
        assert!(refusal(ca_key_source(local.path(), Some(ARN))).contains("a CA has one key"));
        let mixed = dir_with(&[(CA_CERT, "x"), (CA_KEY, "k"), (CA_KMS_KEY, ARN)]);
        assert!(refusal(ca_key_source(mixed.path(), None)).contains("a CA has one key"));
        // Two different KMS keys.
        let other = ARN.replace("1234abcd", "9999abcd");
        assert!(refusal(ca_key_source(dir.path(), Some(&other))).contains("give one CA key"));
        // Not a key ARN: an alias, a bare id, garbage in the file.
        assert!(refusal(ca_key_source(bare.path(), Some("alias/fleet-ca"))).contains("not a KMS key ARN"));
        assert!(refusal(ca_key_source(bare.path(), Some("1234abcd"))).contains("not a KMS key ARN"));
        let garbage = dir_with(&[(CA_CERT, "x"), (CA_KMS_KEY, "-----BEGIN PRIVATE KEY-----")]);
        assert!(refusal(ca_key_source(garbage.path(), None)).contains("not a KMS key ARN"));
    }
}
