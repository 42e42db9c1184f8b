//! SDK configuration tuned for bursts of first connections, and the clients
//! built from it.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Retry and timeout settings for the SDK clients.
#[derive(Debug, Clone)]
pub struct SdkSettings {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Limit for one attempt (connect + request + response).
    pub attempt_timeout: Duration,
    /// Limit for one call across all attempts.
    pub operation_timeout: Duration,
}

impl Default for SdkSettings {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(20),
        }
    }
}

impl SdkSettings {
    /// The defaults with another number of attempts per call.
    pub fn with_max_attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            ..Self::default()
        }
    }

    /// Adaptive retries: exponential backoff with jitter, plus a client-side
    /// rate limiter that slows the container down when the service throttles,
    /// which is what keeps a burst of thousands of registrations within the
    /// IoT API rate limits instead of amplifying them.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::adaptive()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }

    /// Loads the shared SDK configuration from the environment (region,
    /// credentials, `AWS_ENDPOINT_URL`) with these retry and timeout settings.
    pub async fn load(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .retry_config(self.retry_config())
            .timeout_config(self.timeout_config())
            .load()
            .await
    }
}

/// An S3 client; path-style addressing when `force_path_style` (emulators).
pub fn s3_client(config: &SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(force_path_style)
            .build(),
    )
}

/// An IoT data-plane client for publishing to devices. AWS serves the data
/// plane from an account-specific endpoint (`DescribeEndpoint`,
/// `iot:Data-ATS`); when the configuration already names an endpoint (an
/// emulator through `AWS_ENDPOINT_URL`), that one is used.
///
/// # Errors
/// The `DescribeEndpoint` failure, classified.
pub async fn iot_data_client(
    config: &SdkConfig,
    iot: &aws_sdk_iot::Client,
) -> onboarding_domain::PortResult<aws_sdk_iotdataplane::Client> {
    if config.endpoint_url().is_some() {
        return Ok(aws_sdk_iotdataplane::Client::new(config));
    }
    let address = iot
        .describe_endpoint()
        .endpoint_type("iot:Data-ATS")
        .send()
        .await
        .map_err(|e| crate::error::classify("DescribeEndpoint", e))?
        .endpoint_address
        .ok_or_else(|| {
            onboarding_domain::PortError::new(
                "DescribeEndpoint",
                onboarding_domain::PortErrorKind::Invalid,
                "no endpoint address",
            )
        })?;
    Ok(aws_sdk_iotdataplane::Client::from_conf(
        aws_sdk_iotdataplane::config::Builder::from(config)
            .endpoint_url(format!("https://{address}"))
            .build(),
    ))
}
