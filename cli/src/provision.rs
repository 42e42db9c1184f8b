//! Fleet provisioning by claim, from the operator's side and the device's:
//! the allow-list (`onboard allow`), claim certificates and templates
//! (`onboard claim`), and a device provisioning itself with a claim
//! (`onboard device provision`): `CreateKeysAndCertificate` over MQTT, then
//! `RegisterThing` with the stack's template, then a first connection with
//! its own certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use onboarding_aws::DynamoInventory;
use onboarding_aws::{AllowResult, ResetResult};
use onboarding_device::{Conn, CreatedCredentials, ProvisioningError};
use onboarding_domain::DeviceProfile;
use onboarding_domain::is_valid_thing_name;
use onboarding_domain::{HOOK_PAYLOAD_VERSION, SERIAL_MAX, SERIAL_PARAMETER, render_template};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Cli;
use crate::ca::load_profile;
use crate::connect::BrokerArgs;
use crate::error::CliError;
use crate::files::{read, refuse_existing, write_all_new};

/// `onboard allow`: the serials fleet provisioning lets in.
#[derive(Debug, clap::Subcommand)]
pub enum AllowCommand {
    /// Put serials on the allow-list (an existing entry is replaced).
    Add {
        /// Serial numbers, as devices send them in `SerialNumber`.
        serials: Vec<String>,
        /// A file of serials, one per line, each optionally followed by the
        /// thing name it is bound to (`SERIAL [THING]`; blank lines and `#`
        /// comments ignored).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The profile these devices are provisioned with (default: the default profile).
        #[arg(long)]
        profile: Option<String>,
        /// Bind the (single) serial to this thing name: a device asking for
        /// any other name is refused.
        #[arg(long, value_name = "NAME")]
        thing: Option<String>,
    },
    /// Take serials off the allow-list (provisioned devices keep their certificates).
    Remove { serials: Vec<String> },
    /// Let a device whose entry was used (it lost its key) in once more: the
    /// certificate that used the entry is revoked once the new one is ACTIVE
    /// and attached to the thing (by the fleet reconciler's next run).
    Reset { serial: String },
    /// The allow-list.
    List,
}

/// `onboard claim`: claim certificates and fleet-provisioning templates.
#[derive(Debug, clap::Subcommand)]
pub enum ClaimCommand {
    /// Create an ACTIVE claim certificate with the claim policy attached;
    /// writes `<out>/cert.pem` and `<out>/key.pem` (0600).
    Create {
        /// The claim policy (the stack's ClaimPolicyName output).
        #[arg(long)]
        policy: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Render a profile's fleet-provisioning template; with `--put NAME`,
    /// create the template in IoT (or make the body its new default version).
    Template {
        /// A profile in the inventory table.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        profile: Option<String>,
        /// A profile file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Create or update the template of this name.
        #[arg(long, requires_all = ["role_arn", "hook_arn"])]
        put: Option<String>,
        /// The role IoT assumes to apply it (the stack's FleetProvisioningRoleArn output).
        #[arg(long)]
        role_arn: Option<String>,
        /// The pre-provisioning hook function's ARN.
        #[arg(long)]
        hook_arn: Option<String>,
    },
}

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

async fn inventory(cli: &Cli) -> Result<DynamoInventory, CliError> {
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    Ok(DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table))
}

fn check_serial(serial: &str) -> Result<(), CliError> {
    let ok = !serial.is_empty()
        && serial.len() <= SERIAL_MAX
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CliError::Input(format!(
            "serial {serial:?} is not 1 to {SERIAL_MAX} characters of [A-Za-z0-9._:-] (the hook refuses any other)"
        )))
    }
}

pub async fn run_allow(command: &AllowCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        AllowCommand::Add {
            serials,
            file,
            profile,
            thing,
        } => {
            let mut all: Vec<(String, Option<String>)> = serials.iter().map(|s| (s.clone(), thing.clone())).collect();
            if thing.is_some() && (serials.len() != 1 || file.is_some()) {
                return Err(CliError::Input(
                    "--thing binds one serial: name exactly one (bind many with --file, `SERIAL THING` per line)"
                        .into(),
                ));
            }
            if let Some(file) = file {
                let text = read(file, "serial file")?;
                for (number, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let mut words = line
                        .split(|c: char| c.is_whitespace() || c == ',')
                        .filter(|w| !w.is_empty());
                    let (serial, bound, extra) = (words.next(), words.next(), words.next());
                    match (serial, extra) {
                        (Some(serial), None) => all.push((serial.to_string(), bound.map(str::to_string))),
                        _ => {
                            return Err(CliError::Input(format!(
                                "{} line {}: {line:?} is not `SERIAL [THING]`",
                                file.display(),
                                number + 1
                            )));
                        }
                    }
                }
            }
            if all.is_empty() {
                return Err(CliError::Input("no serials: name them or pass --file".into()));
            }
            // Every serial and thing name is checked before anything is written.
            for (serial, bound) in &all {
                check_serial(serial)?;
                if let Some(bound) = bound
                    && !is_valid_thing_name(bound)
                {
                    return Err(CliError::Input(format!(
                        "thing name {bound:?} (serial {serial}) does not match [a-zA-Z0-9:_-]{{1,128}}"
                    )));
                }
            }
            all.sort();
            all.dedup();
            if let Some(twice) = all.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(CliError::Input(format!(
                    "serial {} is bound to two thing names",
                    twice[0].0
                )));
            }
            if let Some(profile) = profile {
                load_profile(&crate::profile::admin(cli).await?, profile).await?;
            }
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let results = inventory(cli)
                .await?
                .allow_serials(&all, profile.as_deref(), now)
                .await?;
            let used: Vec<&str> = results
                .iter()
                .filter(|(_, r)| *r == AllowResult::AlreadyUsed)
                .map(|(s, _)| s.as_str())
                .collect();
            let allowed: Vec<&str> = results
                .iter()
                .filter(|(_, r)| *r == AllowResult::Allowed)
                .map(|(s, _)| s.as_str())
                .collect();
            if cli.json {
                println!(
                    "{}",
                    json!({"allowed": allowed, "alreadyUsed": used, "profile": profile})
                );
            } else {
                println!(
                    "{} serial(s) on the allow-list (profile {})",
                    allowed.len(),
                    profile.as_deref().unwrap_or("default")
                );
                if !used.is_empty() {
                    println!(
                        "left alone, already used by a certificate (let such a device in again with `onboard allow reset SERIAL`): {}",
                        used.join(", ")
                    );
                }
            }
            Ok(())
        }
        AllowCommand::Reset { serial } => {
            check_serial(serial)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            match inventory(cli).await?.reset_serial(serial, now).await? {
                ResetResult::Reset { superseded } => {
                    if cli.json {
                        println!("{}", json!({"serial": serial, "superseded": superseded}));
                    } else {
                        println!(
                            "{serial} may provision once more; certificate {superseded} is revoked once the new one is ACTIVE"
                        );
                    }
                    Ok(())
                }
                ResetResult::Unused => Err(CliError::Input(format!(
                    "serial {serial} has not been used since it was added or last reset: nothing to reset"
                ))),
                ResetResult::Missing => Err(CliError::Input(format!(
                    "serial {serial} is not on the allow-list (add it with: onboard allow add {serial})"
                ))),
            }
        }
        AllowCommand::Remove { serials } => {
            if serials.is_empty() {
                return Err(CliError::Input("no serials to remove".into()));
            }
            inventory(cli).await?.disallow_serials(serials).await?;
            if cli.json {
                println!("{}", json!({"removed": serials}));
            } else {
                println!("{} serial(s) off the allow-list", serials.len());
            }
            Ok(())
        }
        AllowCommand::List => {
            let entries = inventory(cli).await?.allow_list().await?;
            if cli.json {
                let list: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        json!({"serial": e.serial, "profile": e.profile, "thing": e.thing_name,
                               "usedBy": e.used_by, "replaces": e.replaces})
                    })
                    .collect();
                println!("{}", Value::Array(list));
            } else if entries.is_empty() {
                println!("the allow-list is empty; add serials with: onboard allow add SERIAL...");
            } else {
                println!("{:<32} {:<16} {:<24} used by", "serial", "profile", "thing");
                for e in &entries {
                    println!(
                        "{:<32} {:<16} {:<24} {}{}",
                        e.serial,
                        e.profile.as_deref().unwrap_or("(default)"),
                        e.thing_name.as_deref().unwrap_or("(profile's rule)"),
                        e.used_by.as_deref().unwrap_or("(unused)"),
                        if e.replaces.is_empty() {
                            String::new()
                        } else {
                            format!(" (reset; supersedes {})", e.replaces.join(", "))
                        }
                    );
                }
            }
            Ok(())
        }
    }
}

pub async fn run_claim(command: &ClaimCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        ClaimCommand::Create { policy, out } => {
            // Checked before a certificate is made for nothing.
            refuse_existing(&[out.join("cert.pem"), out.join("key.pem")])?;
            std::fs::create_dir_all(out)
                .map_err(|e| CliError::Input(format!("cannot create {}: {e}", out.display())))?;
            let sdk = cli.aws.sdk_config().await;
            let iot = aws_sdk_iot::Client::new(&sdk);
            // The policy first: a certificate is never made for a policy that is not there.
            let claim = onboarding_aws::create_claim_certificate(&iot, policy).await?;
            let (arn, id, pem, key) = (
                &claim.certificate_arn,
                &claim.certificate_id,
                &claim.certificate_pem,
                &claim.private_key_pem,
            );
            write_all_new(&[
                (out.join("cert.pem"), pem.to_string(), 0o644),
                (out.join("key.pem"), key.to_string(), 0o600),
            ])?;
            if cli.json {
                println!(
                    "{}",
                    json!({"certificateId": id, "certificateArn": arn, "policy": policy, "dir": out})
                );
            } else {
                println!(
                    "claim certificate {id} ACTIVE with policy {policy}, in {}",
                    out.display()
                );
            }
            Ok(())
        }
        ClaimCommand::Template {
            profile,
            file,
            put,
            role_arn,
            hook_arn,
        } => {
            let profile = match (profile, file) {
                (_, Some(file)) => {
                    let text = read(file, "profile file")?;
                    DeviceProfile::parse(&text).map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?
                }
                (Some(name), None) => load_profile(&crate::profile::admin(cli).await?, name).await?,
                (None, None) => return Err(CliError::Input("name a --profile or a --file".into())),
            };
            let body = render_template(&profile).map_err(|e| CliError::Input(e.to_string()))?;
            let (Some(name), Some(role), Some(hook)) = (put, role_arn, hook_arn) else {
                println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
                return Ok(());
            };
            let action = put_template(cli, name, &body.to_string(), role, hook).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({"template": name, "profile": profile.name, "action": action})
                );
            } else {
                println!("template {name} {action} for profile {}", profile.name);
            }
            Ok(())
        }
    }
}

/// Creates the template, or gives an existing one this body as its new default version.
async fn put_template(cli: &Cli, name: &str, body: &str, role: &str, hook: &str) -> Result<&'static str, CliError> {
    let sdk = cli.aws.sdk_config().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let put = onboarding_aws::put_provisioning_template(&iot, name, body, role, hook, HOOK_PAYLOAD_VERSION).await?;
    Ok(put.as_str())
}

pub async fn run_provision(args: &ProvisionArgs, cli: &Cli) -> Result<(), CliError> {
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
