//! `onboard device provision`: a device provisioning itself with a claim
//! certificate (fleet provisioning): `CreateKeysAndCertificate` over MQTT,
//! then `RegisterThing` with the stack's template, then a first connection
//! with its own certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use onboarding_device::{Conn, CreatedCredentials, ProvisioningError};
use onboarding_domain::SERIAL_PARAMETER;
use serde_json::json;
use tokio::time::Instant;

use crate::Cli;
use crate::commands::allow::check_serial;
use crate::commands::device::connect::BrokerArgs;
use crate::error::CliError;
use crate::files::{read, refuse_existing, write_all_new};

/// Options of `onboard device provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Directory with the claim's `cert.pem` and `key.pem`.
    #[arg(long)]
    pub claim: PathBuf,
    /// The fleet-provisioning template (the stack's FleetProvisioningTemplateName output).
    #[arg(long)]
    pub template: String,
    /// The device's serial number (its allow-list entry).
    #[arg(long)]
    pub serial: String,
    /// More parameters for the template, `NAME=VALUE` (CommonName,
    /// Organization, OrganizationalUnit...: the subject fields the profile
    /// names things and attributes by).
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Where the device's own `cert.pem` and `key.pem` are written.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub deadline: u64,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

pub async fn run(args: &ProvisionArgs, cli: &Cli) -> Result<(), CliError> {
    check_serial(&args.serial)?;
    let mut parameters: BTreeMap<String, String> = args.params.iter().cloned().collect();
    if parameters.contains_key(SERIAL_PARAMETER) {
        return Err(CliError::Input(
            "pass the serial with --serial, not --param SerialNumber=".into(),
        ));
    }
    parameters.insert(SERIAL_PARAMETER.into(), args.serial.clone());
    let broker = args.broker.broker()?;
    let claim_cert = read(&args.claim.join("cert.pem"), "claim certificate")?;
    let claim_key = read(&args.claim.join("key.pem"), "claim key")?;
    refuse_existing(&[args.out.join("cert.pem"), args.out.join("key.pem")])?;
    let config = onboarding_device::client_config(&broker.server_ca_pem, &claim_cert, &claim_key)
        .map_err(|e| CliError::Input(format!("claim credentials: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(args.deadline);
    let step = |line: String| {
        if !cli.json {
            eprintln!("{line}");
        }
    };

    let client_id = format!("claim-{}", args.serial);
    let mut conn = Conn::open(&broker, config, &client_id, deadline)
        .await
        .map_err(|e| CliError::Aws(format!("claim connection as {client_id}: {e}")))?;
    let CreatedCredentials {
        certificate_id,
        cert_pem,
        key_pem,
        ownership_token,
    } = onboarding_device::create_keys_and_certificate(&mut conn, deadline)
        .await
        .map_err(|e| CliError::Aws(e.to_string()))?;
    step(format!("certificate {certificate_id} created"));
    // Kept before RegisterThing: a device that loses them cannot use what it is given.
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::Input(format!("cannot create {}: {e}", args.out.display())))?;
    write_all_new(&[
        (args.out.join("cert.pem"), cert_pem.clone(), 0o644),
        (args.out.join("key.pem"), key_pem.clone(), 0o600),
    ])?;
    let registered =
        onboarding_device::register_thing(&mut conn, &args.template, &ownership_token, &parameters, deadline).await;
    conn.close().await;
    let registered = match registered {
        Ok(registered) => registered,
        Err(ProvisioningError::Register(e)) => {
            // The certificate was never activated: its files are of no use.
            let _ = std::fs::remove_file(args.out.join("cert.pem"));
            let _ = std::fs::remove_file(args.out.join("key.pem"));
            return Err(CliError::Input(format!(
                "RegisterThing with template {}: {e}",
                args.template
            )));
        }
        Err(e) => return Err(CliError::Aws(e.to_string())),
    };
    let thing = registered.thing_name;
    step(format!("registered as thing {thing}"));

    // The first connection with its own certificate, as its own thing.
    let own = onboarding_device::client_config(&broker.server_ca_pem, &cert_pem, &key_pem)
        .map_err(|e| CliError::Aws(format!("the new credentials: {e}")))?;
    let mut conn = Conn::open(&broker, own, &thing, deadline)
        .await
        .map_err(|e| CliError::Aws(format!("first connection as {thing}: {e}")))?;
    let telemetry = format!("devices/{thing}/telemetry");
    conn.publish(&telemetry, br#"{"hello":"provisioned"}"#.to_vec(), deadline)
        .await
        .map_err(|e| CliError::Aws(format!("first publish as {thing}: {e}")))?;
    conn.close().await;
    if cli.json {
        println!(
            "{}",
            json!({"serial": args.serial, "thingName": thing, "certificateId": certificate_id,
                   "deviceConfiguration": registered.device_configuration, "dir": args.out})
        );
    } else {
        println!(
            "device {} provisioned as {thing} (certificate {certificate_id}); credentials in {}",
            args.serial,
            args.out.display()
        );
    }
    Ok(())
}
