//! `onboard profile put | list | show`.

use std::path::PathBuf;

use clap::Subcommand;
use onboarding_aws::ConfigAdmin;
use onboarding_domain::DeviceProfile;

use crate::Cli;
use crate::error::CliError;
use crate::files::read;

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Validate a profile (JSON file) and write it to the inventory table.
    Put {
        /// The profile file (format in docs/profiles-and-inventory.md).
        file: PathBuf,
    },
    /// List the profiles, and which CAs are bound to each.
    List,
    /// Print one profile as JSON.
    Show {
        /// Profile name.
        name: String,
    },
}

pub async fn admin(cli: &Cli) -> Result<ConfigAdmin, CliError> {
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    Ok(ConfigAdmin::new(aws_sdk_dynamodb::Client::new(&sdk), table))
}

pub async fn run(command: &ProfileCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        ProfileCommand::Put { file } => {
            let text = read(file, "profile file")?;
            let profile =
                DeviceProfile::parse(&text).map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
            admin(cli).await?.put_profile(&profile).await?;
            let warning = onboarding_domain::rotation_key_warning(&profile);
            if let Some(warning) = &warning {
                eprintln!("warning: {warning}");
            }
            if cli.json {
                let mut answer = serde_json::json!({"profile": profile.name, "written": true});
                if let Some(warning) = warning {
                    answer["warnings"] = serde_json::json!([warning]);
                }
                println!("{answer}");
            } else {
                println!("profile {} written", profile.name);
            }
            Ok(())
        }
        ProfileCommand::List => {
            let (profiles, bindings) = admin(cli).await?.load().await?;
            let bound = |name: &str| {
                bindings
                    .iter()
                    .filter(|(_, p)| p.as_str() == name)
                    .map(|(ca, _)| ca.clone())
                    .collect::<Vec<_>>()
            };
            if cli.json {
                let list: Vec<_> = profiles
                    .iter()
                    .map(|(name, p)| {
                        serde_json::json!({"name": name, "valid": p.is_ok(), "problem": p.as_ref().err(), "boundCas": bound(name)})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
                return Ok(());
            }
            if profiles.is_empty() {
                println!("no profiles; write one with: onboard profile put FILE");
                return Ok(());
            }
            println!(
                "{:<24} {:<10} {:<20} {:<12} bound CAs",
                "profile", "valid", "thing type", "policy"
            );
            for (name, profile) in &profiles {
                let cas = bound(name)
                    .iter()
                    .map(|c| c.get(..12).unwrap_or(c).to_string() + "…")
                    .collect::<Vec<_>>()
                    .join(", ");
                match profile {
                    Ok(p) => println!(
                        "{name:<24} {:<10} {:<20} {:<12} {cas}",
                        "yes",
                        p.thing_type.as_deref().unwrap_or("-"),
                        p.policy_name
                    ),
                    Err(problem) => println!("{name:<24} {:<10} {problem}", "NO"),
                }
            }
            Ok(())
        }
        ProfileCommand::Show { name } => {
            let (profiles, _) = admin(cli).await?.load().await?;
            match profiles.get(name) {
                Some(Ok(profile)) => {
                    println!("{}", serde_json::to_string_pretty(profile).unwrap_or_default());
                    Ok(())
                }
                Some(Err(problem)) => Err(CliError::Input(format!(
                    "profile {name} is stored but invalid: {problem}"
                ))),
                None => Err(CliError::Input(format!(
                    "no profile named {name}; see: onboard profile list"
                ))),
            }
        }
    }
}
