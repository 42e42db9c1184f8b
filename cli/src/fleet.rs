//! `onboard fleet status`.

use clap::Subcommand;

use crate::Cli;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Counts by status, rejections by reason, and certificates expiring
    /// within 30, 60 and 90 days.
    Status,
}

pub async fn run(command: &FleetCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        FleetCommand::Status => {
            let table = cli.aws.table()?.to_string();
            let sdk = cli.aws.sdk_config().await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let status = onboarding_aws::fleet::fleet_status(&client, &table, now, &[30, 60, 90]).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "byStatus": status.by_status,
                        "rejectionsByReason": status.rejections,
                        "expired": status.expired,
                        "expiringWithinDays": status.expiring_within.iter().map(|(d, c)| (d.to_string(), *c)).collect::<std::collections::BTreeMap<_, _>>(),
                    })
                );
                return Ok(());
            }
            println!("certificates by status");
            if status.by_status.is_empty() {
                println!("  (none yet)");
            }
            for (s, n) in &status.by_status {
                println!("  {s:<14} {n:>8}");
            }
            if !status.rejections.is_empty() {
                println!("rejections by reason");
                for (reason, n) in &status.rejections {
                    println!("  {reason:<34} {n:>8}");
                }
            }
            println!("provisioned certificates expiring");
            println!("  {:<14} {:>8}", "already", status.expired);
            for (days, n) in &status.expiring_within {
                println!("  {:<14} {n:>8}", format!("within {days} d"));
            }
            Ok(())
        }
    }
}
