//! `onboard ca rotate | status | retire`: replacing a manufacturer CA
//! (docs/ca-rotation.md). The decisions are the domain's
//! (`check_ca_rotation`, `ca_report`, `retire_ca`); the facts are AWS IoT's
//! (`DescribeCACertificate`, `ListCertificatesByCA`), read at the moment of
//! the call.

use std::collections::BTreeMap;
use std::path::Path;

use onboarding_aws::{CaProvisioning, IotAdapter, KmsSigner};
use onboarding_domain::{
    CaRegistry, CaReport, CaRetireError, CaRetireOutcome, CaUsage, Certificate, CertificateStatus, ca_report,
    check_ca_rotation, retire_ca, rfc3339,
};
use serde_json::{Value, json};

use crate::Cli;
use crate::commands::ca::{
    CA_CERT, CA_KEY, KeySource, ca_key_source, check_ca_id, kms_signing_key, kms_verification_certificate,
    verification_certificate,
};
use crate::commands::profile::admin;
use crate::error::CliError;
use crate::files::read;

/// Certificates listed by name when a retire is refused or forced.
const SHOWN: usize = 20;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn iot(cli: &Cli) -> (aws_sdk_iot::Client, IotAdapter) {
    let sdk = cli.aws.sdk_config().await;
    let client = aws_sdk_iot::Client::new(&sdk);
    (client.clone(), IotAdapter::new(client))
}

/// What `ca rotate` did with the new CA.
enum Registration {
    Registered,
    /// Already registered (an earlier run): reused, auto-registration turned on if it was off.
    Reused {
        enabled_auto_registration: bool,
    },
}

/// The new CA's key: its PEM, or the KMS key it is held in.
enum NewCaKey {
    File(String),
    Kms(Box<KmsSigner>),
}

/// The subjectPublicKey bits of a SubjectPublicKeyInfo (DER), as
/// `check_ca_rotation` compares them.
fn spki_key_bits(spki_der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    match x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der) {
        Ok((&[], spki)) => Some(spki.subject_public_key.data.to_vec()),
        _ => None,
    }
}

/// `onboard ca rotate OLD_CA --new DIR`.
pub async fn rotate(old_ca: &str, new_dir: &Path, cli: &Cli) -> Result<(), CliError> {
    check_ca_id(old_ca)?;
    // The files first: nothing is read from AWS for a directory without them.
    let cert_pem = read(&new_dir.join(CA_CERT), "the new CA certificate")?;
    let source = ca_key_source(new_dir, None)?;
    let new = Certificate::from_pem(&cert_pem)
        .map_err(|e| CliError::Input(format!("{}: {e}", new_dir.join(CA_CERT).display())))?;
    // The new CA's key: a file, or a KMS key (`ca create --kms`), whose
    // public key the domain's check compares with the certificate's.
    let (key, new_public_key) = match source {
        KeySource::File(path) => {
            let key_pem = read(&path, "the new CA key")?;
            let key = rcgen::KeyPair::from_pem(&key_pem)
                .map_err(|e| CliError::Input(format!("{}: not a private key: {e}", new_dir.join(CA_KEY).display())))?;
            let raw = key.public_key_raw().to_vec();
            (NewCaKey::File(key_pem), raw)
        }
        KeySource::Kms(arn) => {
            let signer = KmsSigner::from_config(&cli.aws.sdk_config().await, arn.clone());
            let signing_key = kms_signing_key(&signer, &arn).await?;
            let raw = spki_key_bits(&signing_key.public_key_der)
                .ok_or_else(|| CliError::Aws(format!("KMS key {arn}: its public key does not parse")))?;
            (NewCaKey::Kms(Box::new(signer)), raw)
        }
    };

    let admin = admin(cli).await?;
    let (_, bindings) = admin.load().await?;
    let Some(profile) = bindings.get(old_ca).cloned() else {
        return Err(CliError::Input(format!(
            "CA {old_ca} is not bound to any profile: the new CA would not know which profile to take over; \
             bind the old CA first (onboard ca bind {old_ca} --profile NAME)"
        )));
    };
    let (client, adapter) = iot(cli).await;
    let Some(old_state) = adapter.ca_state(old_ca).await? else {
        return Err(CliError::Input(format!(
            "no CA {old_ca} is registered in AWS IoT (it is bound to profile {profile}: remove the stale \
             binding with onboard ca unbind {old_ca})"
        )));
    };
    let old = Certificate::from_pem(&old_state.pem)
        .map_err(|e| CliError::Aws(format!("AWS IoT's certificate of CA {old_ca} does not parse: {e}")))?;
    check_ca_rotation(&old, &new, &new_public_key, now())
        .map_err(|refusal| CliError::Input(format!("refused: {refusal}; nothing was registered")))?;
    let new_ca = new.fingerprint.clone();
    if let Some(other) = bindings.get(&new_ca).filter(|p| **p != profile) {
        return Err(CliError::Input(format!(
            "the new CA {new_ca} is bound to profile {other}, not {profile}: unbind it first if it should \
             take over from {old_ca}"
        )));
    }

    let registration = match adapter.ca_state(&new_ca).await? {
        Some(state) if state.status != CertificateStatus::Active => {
            return Err(CliError::Input(format!(
                "the new CA {new_ca} is registered but {} (retired?); reactivate it deliberately \
                 (aws iot update-ca-certificate --certificate-id {new_ca} --new-status ACTIVE) and run this again",
                state.status.as_str()
            )));
        }
        Some(state) => {
            if !state.auto_registration {
                adapter.set_ca_auto_registration(&new_ca, true).await?;
            }
            Registration::Reused {
                enabled_auto_registration: !state.auto_registration,
            }
        }
        None => {
            let jitp = match onboarding_aws::ca_provisioning(&client, old_ca).await? {
                CaProvisioning::Registrar => None,
                CaProvisioning::Jitp(jitp) => Some(jitp),
                CaProvisioning::NamedTemplate(name) => {
                    return Err(CliError::Input(format!(
                        "CA {old_ca} provisions its devices with the template named {name}, set outside this \
                         tool: register the new CA with the same template yourself, then bind it \
                         (onboard ca bind {new_ca} --profile {profile}); nothing was registered"
                    )));
                }
            };
            let code = onboarding_aws::registration_code(&client).await?;
            let verification = match &key {
                NewCaKey::File(key_pem) => verification_certificate(&cert_pem, key_pem, &code)?,
                NewCaKey::Kms(signer) => kms_verification_certificate(signer.as_ref(), &new, &code, now())
                    .await?
                    .to_pem(),
            };
            let registered =
                onboarding_aws::register_ca_certificate(&client, &cert_pem, &verification, jitp.as_ref()).await?;
            if registered != new_ca {
                return Err(CliError::Aws(format!(
                    "AWS IoT registered the new CA as {registered}, not {new_ca} (its SHA-256); not bound"
                )));
            }
            Registration::Registered
        }
    };
    admin.bind(&new_ca, &profile).await?;

    let days = |not_after: i64| onboarding_domain::days_to_expiry(not_after, now());
    if cli.json {
        println!(
            "{}",
            json!({
                "oldCaCertificateId": old_ca,
                "newCaCertificateId": new_ca,
                "profile": profile,
                "registered": matches!(registration, Registration::Registered),
                "oldCaStatus": old_state.status.as_str(),
                "oldCaDaysToExpiry": days(old.not_after),
                "newCaDaysToExpiry": days(new.not_after),
            })
        );
        return Ok(());
    }
    match registration {
        Registration::Registered => {
            println!("CA {new_ca} registered (ACTIVE, auto-registration on) and bound to profile {profile}");
        }
        Registration::Reused {
            enabled_auto_registration,
        } => {
            let turned_on = if enabled_auto_registration {
                ", auto-registration turned on"
            } else {
                ""
            };
            println!("CA {new_ca} was registered already (reused{turned_on}); bound to profile {profile}");
        }
    }
    println!(
        "old CA {old_ca} stays {} (expires in {} days); the new one expires in {} days",
        old_state.status.as_str(),
        days(old.not_after),
        days(new.not_after)
    );
    println!("devices of both CAs onboard now; follow the overlap with: onboard ca status {old_ca}");
    println!("once no device depends on the old CA: onboard ca retire {old_ca}");
    Ok(())
}

/// The CA, then every other CA bound to the same profile (its rotation's partners).
fn partners(ca: &str, bindings: &BTreeMap<String, String>) -> Vec<String> {
    let mut ids = vec![ca.to_string()];
    if let Some(profile) = bindings.get(ca) {
        ids.extend(
            bindings
                .iter()
                .filter(|(id, p)| *p == profile && id.as_str() != ca)
                .map(|(id, _)| id.clone()),
        );
    }
    ids
}

fn date(unix: Option<i64>) -> String {
    unix.map_or_else(|| "-".into(), rfc3339)
}

fn usage_json(usage: &CaUsage) -> Value {
    json!({
        "active": usage.active,
        "pendingActivation": usage.pending_activation,
        "inactive": usage.inactive,
        "revoked": usage.revoked,
        "other": usage.other,
        "newestCertificateCreated": usage.newest_created_at.map(rfc3339),
        "inUse": usage.in_use_sample.iter().map(|c| json!({
            "certificateId": c.certificate_id,
            "status": c.status.as_str(),
        })).collect::<Vec<_>>(),
    })
}

fn report_json(id: &str, profile: Option<&String>, report: Option<&CaReport>) -> Value {
    let Some(r) = report else {
        return json!({"caCertificateId": id, "profile": profile, "registered": false});
    };
    json!({
        "caCertificateId": id,
        "profile": profile,
        "registered": true,
        "status": r.status.as_str(),
        "autoRegistration": r.auto_registration,
        "acceptsRegistrations": r.accepts_registrations(),
        "notAfter": date(r.not_after),
        "daysToExpiry": r.days_to_expiry,
        "certificates": usage_json(&r.usage),
    })
}

/// `onboard ca status CA_ID`.
pub async fn status(ca: &str, cli: &Cli) -> Result<(), CliError> {
    check_ca_id(ca)?;
    let (_, bindings) = admin(cli).await?.load().await?;

    let (_, adapter) = iot(cli).await;
    let now = now();
    let mut rows = Vec::new();
    for id in partners(ca, &bindings) {
        let report = ca_report(&adapter, &adapter, &id, now, 5).await?;
        rows.push((id, report));
    }
    if rows.first().is_some_and(|(_, r)| r.is_none()) && !bindings.contains_key(ca) {
        return Err(CliError::Input(format!(
            "no CA {ca} is registered in AWS IoT, and none is bound"
        )));
    }
    if cli.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(id, r)| report_json(id, bindings.get(id), r.as_ref()))
            .collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    println!("profile: {}", bindings.get(ca).map_or("- (not bound)", String::as_str));
    println!(
        "{:<66} {:<9} {:<8} {:<21} {:>6} {:>8} {:>8} {:>8} {:>8} {:<21} registrations",
        "CA certificate id",
        "status",
        "auto-reg",
        "expires",
        "days",
        "active",
        "pending",
        "inactive",
        "revoked",
        "newest certificate",
    );
    for (id, report) in &rows {
        let Some(r) = report else {
            println!("{id:<66} not registered in AWS IoT (bound: remove with onboard ca unbind {id})");
            continue;
        };
        println!(
            "{id:<66} {:<9} {:<8} {:<21} {:>6} {:>8} {:>8} {:>8} {:>8} {:<21} {}",
            r.status.as_str(),
            if r.auto_registration { "on" } else { "off" },
            date(r.not_after),
            r.days_to_expiry.map_or_else(|| "-".into(), |d| d.to_string()),
            r.usage.active,
            r.usage.pending_activation,
            r.usage.inactive,
            r.usage.revoked,
            date(r.usage.newest_created_at),
            if r.accepts_registrations() {
                "accepted"
            } else {
                "closed"
            }
        );
    }
    println!(
        "(counts: AWS IoT's ListCertificatesByCA now; devices that rotated hold certificates of AWS IoT's CA and no longer count here)"
    );
    Ok(())
}

fn list_in_use(usage: &CaUsage) -> String {
    let mut lines: Vec<String> = usage
        .in_use_sample
        .iter()
        .map(|c| format!("  {} {}", c.certificate_id, c.status.as_str()))
        .collect();
    let more = usage.in_use().saturating_sub(usage.in_use_sample.len() as u64);
    if more > 0 {
        lines.push(format!("  … and {more} more"));
    }
    lines.join("\n")
}

/// `onboard ca retire CA_ID [--force]`.
pub async fn retire(ca: &str, force: bool, cli: &Cli) -> Result<(), CliError> {
    check_ca_id(ca)?;
    let (_, adapter) = iot(cli).await;
    let outcome = retire_ca(&adapter, &adapter, ca, force, SHOWN)
        .await
        .map_err(|e| match e {
            CaRetireError::UnknownCa(_) => CliError::Input(e.to_string()),
            CaRetireError::Port(e) => CliError::from(e),
        })?;
    let json_of = |result: &str, usage: Option<&CaUsage>| {
        json!({
            "caCertificateId": ca,
            "result": result,
            "forced": force,
            "inUse": usage.map(CaUsage::in_use),
            "certificates": usage.map(usage_json),
        })
    };
    match outcome {
        CaRetireOutcome::Refused { usage, raced } => {
            if cli.json {
                println!("{}", json_of("refused", Some(&usage)));
            } else {
                println!(
                    "{} device certificate(s) still chain to CA {ca} ({} ACTIVE, {} PENDING_ACTIVATION):\n{}",
                    usage.in_use(),
                    usage.active,
                    usage.pending_activation,
                    list_in_use(&usage)
                );
            }
            let raced = if raced {
                " (they registered while the retire ran; auto-registration is back as it was)"
            } else {
                ""
            };
            Err(CliError::Input(format!(
                "refused: {} device certificate(s) still chain to CA {ca}{raced}; nothing was changed. Rotate or \
                 retire those devices and run this again, or cut them off with --force",
                usage.in_use()
            )))
        }
        CaRetireOutcome::AlreadyInactive => {
            if cli.json {
                println!("{}", json_of("already_inactive", None));
            } else {
                println!("CA {ca} was INACTIVE already (auto-registration is off)");
            }
            Ok(())
        }
        CaRetireOutcome::Retired { usage, forced } => {
            if cli.json {
                println!("{}", json_of("retired", Some(&usage)));
            } else {
                if forced && usage.in_use() > 0 {
                    println!(
                        "--force: {} device certificate(s) of CA {ca} are left under an INACTIVE CA (no new \
                         registration; the registrar rejects their pending ones; to cut their connections for \
                         certain, retire or revoke the devices):\n{}",
                        usage.in_use(),
                        list_in_use(&usage)
                    );
                }
                println!(
                    "CA {ca} is INACTIVE (auto-registration off); its binding is kept (onboard ca unbind {ca} removes it)"
                );
            }
            warn_if_profile_has_no_active_ca(ca, &adapter, cli).await;
            Ok(())
        }
    }
}

/// A warning on stderr when the retired CA's profile has no ACTIVE CA left.
async fn warn_if_profile_has_no_active_ca(ca: &str, adapter: &IotAdapter, cli: &Cli) {
    let Ok(admin) = admin(cli).await else { return };
    let Ok((_, bindings)) = admin.load().await else { return };

    let Some(profile) = bindings.get(ca) else { return };
    for id in partners(ca, &bindings).iter().skip(1) {
        if let Ok(Some(state)) = adapter.ca_state(id).await
            && state.status == CertificateStatus::Active
        {
            return;
        }
    }
    eprintln!("warning: profile {profile} has no ACTIVE CA left: its new devices cannot onboard");
}
