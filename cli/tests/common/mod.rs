//! What the CLI tests against a deployed stack share.

use std::time::Duration;

use assert_cmd::Command;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `onboard` pointed at an emulator (as its root, `test`/`test`) and at the
/// stack's inventory table, whatever the caller's environment says.
pub fn onboard_at(endpoint: &str, table: &str) -> Result<Command, Error> {
    let mut cmd = Command::cargo_bin("onboard")?;
    cmd.env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("ONBOARD_TABLE", table)
        .timeout(Duration::from_secs(300));
    Ok(cmd)
}
