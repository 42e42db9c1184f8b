//! `onboard deny add | remove`: the deny-list. Each entry is its own item,
//! looked up by key when a certificate is checked (never cached), so an entry
//! applies to the next event at once.

use std::time::{SystemTime, UNIX_EPOCH};

use onboarding_aws::DynamoInventory;
use onboarding_domain::DenyKey;

use crate::Cli;
use crate::error::CliError;

/// `onboard deny`: certificates that must never be onboarded.
#[derive(Debug, clap::Subcommand)]
pub enum DenyCommand {
    /// Deny serials of one CA, or fingerprints (an existing entry is replaced).
    Add(DenyArgs),
    /// Take entries off the deny-list.
    Remove(DenyArgs),
}

/// What to deny: serials under `--ca`, or `--fingerprint`s.
#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    /// Serial numbers in hex (any case, `:` separators allowed), under `--ca`.
    pub serials: Vec<String>,
    /// The CA certificate id the serials belong to (serials are per CA).
    #[arg(long)]
    pub ca: Option<String>,
    /// SHA-256 fingerprints (certificate ids).
    #[arg(long = "fingerprint")]
    pub fingerprints: Vec<String>,
    /// A note kept on the entry and quoted in rejections (`add` only).
    #[arg(long)]
    pub reason: Option<String>,
}

impl DenyArgs {
    /// Every entry named, checked and normalised.
    ///
    /// # Errors
    /// [`CliError::Input`] naming the first bad value, or when nothing is named.
    pub fn keys(&self) -> Result<Vec<DenyKey>, CliError> {
        let bad = |e: onboarding_domain::DenyKeyError| CliError::Input(e.to_string());
        let mut keys = Vec::new();
        if !self.serials.is_empty() {
            let ca = self
                .ca
                .as_deref()
                .ok_or_else(|| CliError::Input("serials are per CA: pass --ca CA_CERTIFICATE_ID".to_string()))?;
            for serial in &self.serials {
                keys.push(DenyKey::serial(ca, serial).map_err(bad)?);
            }
        }
        for fingerprint in &self.fingerprints {
            keys.push(DenyKey::fingerprint(fingerprint).map_err(bad)?);
        }
        if keys.is_empty() {
            return Err(CliError::Input(
                "nothing to deny: name serials with --ca CA, or --fingerprint SHA256".to_string(),
            ));
        }
        Ok(keys)
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

/// Runs `onboard deny`.
///
/// # Errors
/// Bad input, or a failed AWS call.
pub async fn run(command: &DenyCommand, cli: &Cli) -> Result<(), CliError> {
    let args = match command {
        DenyCommand::Add(args) | DenyCommand::Remove(args) => args,
    };
    let keys = args.keys()?;
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    for key in &keys {
        match command {
            DenyCommand::Add(_) => {
                inventory.put_deny_entry(key, args.reason.as_deref(), now).await?;
                println!("denied: {}", describe(key));
            }
            DenyCommand::Remove(_) => {
                if inventory.delete_deny_entry(key).await? {
                    println!("removed: {}", describe(key));
                } else {
                    println!("not on the deny-list: {}", describe(key));
                }
            }
        }
    }
    Ok(())
}
