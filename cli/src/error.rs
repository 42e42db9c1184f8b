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
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input(_) => 1,
            Self::Aws(_) => 3,
        }
    }

    /// An SDK error, with its service message when there is one.
    pub fn aws<E>(
        operation: &str,
        error: aws_sdk_iot::error::SdkError<E, aws_sdk_iot::config::http::HttpResponse>,
    ) -> Self
    where
        E: aws_sdk_iot::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let detail = match error.as_service_error() {
            Some(service) => format!(
                "{}: {}",
                service.code().unwrap_or("error"),
                service.message().unwrap_or("no message")
            ),
            None => aws_sdk_iot::error::DisplayErrorContext(&error).to_string(),
        };
        Self::Aws(format!("{operation} failed: {detail}"))
    }
}

impl From<PortError> for CliError {
    fn from(e: PortError) -> Self {
        Self::Aws(e.to_string())
    }
}
