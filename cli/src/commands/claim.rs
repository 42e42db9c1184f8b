//! `onboard claim`: claim certificates and the fleet-provisioning template
//! rendered from a device profile.

use std::path::PathBuf;

use onboarding_domain::DeviceProfile;
use onboarding_domain::{HOOK_PAYLOAD_VERSION, render_template};
use serde_json::json;

use crate::Cli;
use crate::commands::ca::load_profile;
use crate::error::CliError;
use crate::files::{read, refuse_existing, write_all_new};

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

pub async fn run(command: &ClaimCommand, cli: &Cli) -> Result<(), CliError> {
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
                (Some(name), None) => load_profile(&crate::commands::profile::admin(cli).await?, name).await?,
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
