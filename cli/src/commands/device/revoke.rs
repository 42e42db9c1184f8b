//! `onboard device revoke THING|CERT_ID --reason TEXT`: the emergency
//! revocation of a device whose key was stolen, through the domain's
//! [`Revocation`] workflow over the AWS adapters. Safe to run again: an
//! interrupted revocation finishes, a finished one changes nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use onboarding_aws::{DynamoInventory, RotationIotAdapter, S3RotationObjects};
use onboarding_domain::{
    DenyKey, Disconnection, NameHold, Pacer, Revocation, RevocationError, RevocationReport, RevocationTarget,
    RotationState,
};

use crate::Cli;
use crate::error::CliError;

/// Options of `onboard device revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// A thing name (every certificate of the thing), or a certificate id
    /// (64 hex digits: that certificate).
    pub target: String,
    /// Why (kept on the records and the deny-list entries, and logged).
    #[arg(long, required = true)]
    pub reason: String,
    /// The credentials bucket (the stack's CredentialsBucketName output):
    /// a stopped server-keygen rotation's key material is deleted from it.
    #[arg(long, env = "ONBOARD_BUCKET")]
    pub bucket: String,
}

/// Monotonic time for the workflow's measurement.
#[derive(Debug, Clone, Copy)]
struct WallPacer;

impl Pacer for WallPacer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// Runs `onboard device revoke`.
///
/// # Errors
/// Bad input (exit 1, nothing written), or a failed AWS call (exit 3: run
/// the same command again, it resumes).
pub async fn run(args: &RevokeArgs, cli: &Cli) -> Result<(), CliError> {
    let started = Instant::now();
    // Checked before any call: a malformed target or an empty reason costs nothing.
    let target = RevocationTarget::parse(&args.target).map_err(to_cli)?;
    if args.reason.trim().is_empty() {
        return Err(to_cli(RevocationError::MissingReason));
    }
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    // The data plane (the account's own endpoint) closes the open connection.
    let iot_client = aws_sdk_iot::Client::new(&sdk);
    let data = onboarding_aws::iot_data_client(&sdk, &iot_client).await?;
    let iot = RotationIotAdapter::new(iot_client, data, None);
    // Only deletes (key material of a stopped rotation): no KMS key is needed.
    let objects = S3RotationObjects::new(
        onboarding_aws::s3_client(&sdk, cli.aws.endpoint_url.is_some()),
        &args.bucket,
        "",
    );
    let workflow = Revocation::new(iot, inventory.clone(), objects, inventory, WallPacer);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let workflow_started = started.elapsed();
    let report = workflow.revoke(&target, &args.reason, now).await.map_err(to_cli)?;
    let to_revoked = workflow_started + report.revoked_after;
    if cli.json {
        println!("{}", json(&report, to_revoked));
    } else {
        print_report(&report, to_revoked);
    }
    Ok(())
}

fn to_cli(e: RevocationError) -> CliError {
    if e.is_input() {
        CliError::Input(e.to_string())
    } else {
        CliError::Aws(format!(
            "{e}; the revocation is safe to run again, it resumes where it stopped"
        ))
    }
}

fn describe(key: &DenyKey) -> String {
    match key {
        DenyKey::Serial {
            ca_certificate_id,
            serial,
        } => format!("serial {serial} of CA {ca_certificate_id}"),
        DenyKey::Fingerprint(fingerprint) => format!("fingerprint {fingerprint}"),
    }
}

fn print_report(report: &RevocationReport, to_revoked: Duration) {
    match &report.thing_name {
        Some(thing) => println!("thing {thing}"),
        None => println!("no thing recorded for the certificate"),
    }
    for c in &report.certificates {
        let before = c.previous_status.as_ref().map_or("not in IoT", |s| s.as_str());
        let origin = c
            .issued_by_rotation_of
            .as_ref()
            .map(|old| format!(", issued by the rotation of {old}"))
            .unwrap_or_default();
        let claim = if c.claimed_now {
            "revoked now"
        } else {
            "revoked by an earlier run"
        };
        println!(
            "certificate {}: {before} -> REVOKED ({claim}{origin})",
            c.certificate_id
        );
    }
    println!("REVOKED {} ms after the command started", to_revoked.as_millis());
    match &report.disconnection {
        Disconnection::Closed => println!("open MQTT connection closed (DeleteConnection): it cannot reconnect"),
        Disconnection::NotConnected => println!("no open MQTT connection"),
        Disconnection::Refused(why) => println!(
            "open MQTT connection NOT closed ({why}): AWS IoT closes it within minutes; \
             detach the device policy from the certificate to stop it sooner"
        ),
        Disconnection::NoThing => {}
    }
    for key in &report.deny_entries {
        println!("deny-list: {}", describe(key));
    }
    for r in &report.rotations {
        let what = match r.state_after {
            RotationState::Failed => "stopped, job canceled".to_string(),
            RotationState::Confirmed => "confirmed already: it cannot complete (its new certificate is revoked)".into(),
            other => format!("left {}", other.as_str()),
        };
        println!(
            "rotation of {} (job {}): {} -> {} ({what})",
            r.old_certificate_id,
            r.job_id,
            r.state_before.as_str(),
            r.state_after.as_str()
        );
    }
    if report.rotations.is_empty() {
        println!("rotations: none open");
    }
    match &report.name {
        NameHold::Held {
            thing_name,
            certificate_id,
        } => println!(
            "thing name {thing_name}: held by revoked certificate {certificate_id} until the device is retired"
        ),
        NameHold::HeldByOther { thing_name, holder } => {
            println!("thing name {thing_name}: held by certificate {holder}, which was not revoked (left as it is)")
        }
        NameHold::NoThing => {}
    }
}

fn json(report: &RevocationReport, to_revoked: Duration) -> serde_json::Value {
    serde_json::json!({
        "thingName": report.thing_name,
        "certificates": report.certificates.iter().map(|c| serde_json::json!({
            "certificateId": c.certificate_id,
            "previousStatus": c.previous_status.as_ref().map(|s| s.as_str()),
            "claimedNow": c.claimed_now,
            "issuedByRotationOf": c.issued_by_rotation_of,
        })).collect::<Vec<_>>(),
        "revokedAfterMillis": u64::try_from(to_revoked.as_millis()).unwrap_or(u64::MAX),
        "disconnected": match &report.disconnection {
            Disconnection::Closed => Some(true),
            Disconnection::NotConnected => Some(false),
            Disconnection::Refused(_) | Disconnection::NoThing => None,
        },
        "disconnectRefused": match &report.disconnection {
            Disconnection::Refused(why) => Some(why.clone()),
            _ => None,
        },
        "denyEntries": report.deny_entries.iter().map(describe).collect::<Vec<_>>(),
        "rotations": report.rotations.iter().map(|r| serde_json::json!({
            "oldCertificateId": r.old_certificate_id,
            "jobId": r.job_id,
            "newCertificateId": r.new_certificate_id,
            "stateBefore": r.state_before.as_str(),
            "stateAfter": r.state_after.as_str(),
        })).collect::<Vec<_>>(),
        "nameHeldBy": match &report.name {
            NameHold::Held { certificate_id, .. } => Some(certificate_id.clone()),
            _ => None,
        },
        "nameHolderNotRevoked": match &report.name {
            NameHold::HeldByOther { holder, .. } => Some(holder.clone()),
            _ => None,
        },
    })
}
