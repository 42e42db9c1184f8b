//! CLI errors: what went wrong and what to do next; no backtraces.

use onboarding_domain::PortError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input or a refused operation.
    #[error("{0}")]
    Input(String),
    /// An AWS call failed.
    #[error("{0}")]
    Aws(String),
    /// The fleet audit found something at or above `--fail-on`.
    #[error("{0}")]
    Findings(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input(_) => 1,
            Self::Aws(_) => 3,
            Self::Findings(_) => 4,
        }
    }
}

impl From<PortError> for CliError {
    fn from(e: PortError) -> Self {
        Self::Aws(e.to_string())
    }
}

/// An operator's AWS call that failed, with the service's message.
impl From<onboarding_aws::OperatorError> for CliError {
    fn from(e: onboarding_aws::OperatorError) -> Self {
        Self::Aws(e.to_string())
    }
}
