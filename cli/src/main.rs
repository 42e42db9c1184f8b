//! `onboard`: the operator CLI.
//!
//! Exit codes: 0 success; 1 bad input or a refused operation (the message
//! says what to do); 2 wrong usage (from the argument parser); 3 an AWS call
//! failed; 4 the fleet audit found something at or above `--fail-on`.

mod commands;
mod error;
mod files;

use clap::{Parser, Subcommand};

use crate::commands::{allow, ca, claim, demo, deny, device, events, fleet, profile};
use crate::error::CliError;

/// Operator CLI for zero-touch onboarding on AWS IoT Core.
#[derive(Debug, Parser)]
#[command(name = "onboard", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub aws: AwsOptions,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where and as whom to call AWS.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsOptions {
    /// AWS region (default: the SDK's region chain).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Named AWS profile from the shared config and credentials files
    /// (default: $AWS_PROFILE, else `default`). Not to be confused with the
    /// device profiles of `--profile NAME` in `ca register` / `ca bind`.
    #[arg(long, global = true, value_name = "NAME")]
    pub aws_profile: Option<String>,
    /// Send every AWS call to this endpoint (a local emulator).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// The inventory table (the stack's InventoryTableName output).
    #[arg(long, global = true, env = "ONBOARD_TABLE")]
    pub table: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Certificate authorities: create, register, bind to profiles.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Device profiles in the inventory table.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// Device credentials.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// The serials fleet provisioning lets in.
    #[command(subcommand)]
    Allow(allow::AllowCommand),
    /// Claim certificates and fleet-provisioning templates.
    #[command(subcommand)]
    Claim(claim::ClaimCommand),
    /// The account's job-execution events (the rotation completer's input):
    /// show them, or turn them on once after deploying the stack.
    Events(events::EventsArgs),
    /// Certificates that must never be onboarded (serials per CA, fingerprints).
    #[command(subcommand)]
    Deny(deny::DenyCommand),
    /// The fleet as the inventory sees it.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// The whole system on the local emulator: deploy the SAM template, create
    /// and register a CA, mint good and bad devices, connect them over MQTT,
    /// and summarize who got in and why the others did not.
    Demo(demo::DemoArgs),
}

impl AwsOptions {
    /// The SDK configuration from the default credential chain.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &self.aws_profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        loader.load().await
    }

    /// The SDK configuration with the functions' retries and timeouts
    /// (adaptive, 6 attempts), for commands that run paced at AWS's quotas:
    /// there a throttled call's retry has no token of its own, and the SDK's
    /// default 3 attempts can run out.
    pub async fn paced_sdk_config(&self) -> aws_config::SdkConfig {
        let retries = onboarding_aws::SdkSettings::default();
        self.sdk_config()
            .await
            .into_builder()
            .retry_config(retries.retry_config())
            .timeout_config(retries.timeout_config())
            .build()
    }

    /// The inventory table name.
    ///
    /// # Errors
    /// [`CliError::Input`] when neither `--table` nor `ONBOARD_TABLE` names one.
    pub fn table(&self) -> Result<&str, CliError> {
        self.table.as_deref().ok_or_else(|| {
            CliError::Input(
                "no inventory table: pass --table NAME or set ONBOARD_TABLE (the stack's InventoryTableName output)"
                    .into(),
            )
        })
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Ca(command) => ca::run(command, &cli).await,
            Command::Profile(command) => profile::run(command, &cli).await,
            Command::Device(command) => device::run(command, &cli).await,
            Command::Fleet(command) => fleet::run(command, &cli).await,
            Command::Allow(command) => allow::run(command, &cli).await,
            Command::Claim(command) => claim::run(command, &cli).await,
            Command::Deny(command) => deny::run(command, &cli).await,
            Command::Demo(args) => demo::run(args, &cli).await,
            Command::Events(args) => events::run(args, &cli).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
