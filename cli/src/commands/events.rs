//! `onboard events`: the account's IoT job-execution events, which the
//! rotation completer runs on. Account-wide, so the stack's roles may only
//! read them; the operator turns them on once, right after `sam deploy`.

use crate::Cli;
use crate::error::CliError;

/// Show whether job-execution events are on; `--enable` turns them on.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Turn job-execution events on (UpdateEventConfigurations; no other
    /// event type changes).
    #[arg(long)]
    pub enable: bool,
}

/// # Errors
/// [`CliError::Aws`] when IoT cannot be read or changed.
pub async fn run(args: &EventsArgs, cli: &Cli) -> Result<(), CliError> {
    let iot = aws_sdk_iot::Client::new(&cli.aws.sdk_config().await);
    let (enabled, changed) = if args.enable {
        let changed = onboarding_aws::enable_job_execution_events(&iot).await?;
        (true, changed)
    } else {
        (onboarding_aws::job_execution_events_enabled(&iot).await?, false)
    };
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "jobExecutionEvents": enabled, "changed": changed })
        );
    } else if changed {
        println!("job-execution events: turned on");
    } else if enabled {
        println!("job-execution events: on");
    } else {
        println!(
            "job-execution events: off (rotations then complete only at their deadline); turn them on with `onboard events --enable`"
        );
    }
    Ok(())
}
