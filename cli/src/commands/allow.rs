//! `onboard allow`: the serials fleet provisioning lets in (single-use
//! entries, optionally bound to a thing name; `reset` lets a device that
//! lost its key in again).

use std::path::PathBuf;

use onboarding_aws::DynamoInventory;
use onboarding_aws::{AllowResult, ResetResult};
use onboarding_domain::SERIAL_MAX;
use onboarding_domain::is_valid_thing_name;
use serde_json::{Value, json};

use crate::Cli;
use crate::commands::ca::load_profile;
use crate::error::CliError;
use crate::files::read;

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

async fn inventory(cli: &Cli) -> Result<DynamoInventory, CliError> {
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    Ok(DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table))
}

pub(crate) fn check_serial(serial: &str) -> Result<(), CliError> {
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

pub async fn run(command: &AllowCommand, cli: &Cli) -> Result<(), CliError> {
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
                load_profile(&crate::commands::profile::admin(cli).await?, profile).await?;
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
