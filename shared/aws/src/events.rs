//! The account's IoT event configuration, which the rotation completer needs
//! (`JOB_EXECUTION` events). It is account-wide and shared with every other
//! system in the account, so only an operator changes it, at deploy time
//! (`onboard events --enable`); the functions only read it.

use aws_sdk_iot::Client;
use aws_sdk_iot::types::{Configuration, EventType};
use onboarding_domain::PortResult;

use crate::error::classify;

/// Whether the account publishes job-execution events (`DescribeEventConfigurations`).
///
/// # Errors
/// The classified SDK failure.
pub async fn job_execution_events_enabled(iot: &Client) -> PortResult<bool> {
    let out = iot
        .describe_event_configurations()
        .send()
        .await
        .map_err(|e| classify("DescribeEventConfigurations", e))?;
    Ok(out
        .event_configurations
        .and_then(|c| c.get(&EventType::JobExecution).map(|c| c.enabled))
        .unwrap_or(false))
}

/// Turns job-execution events on, changing no other event type; true when
/// they were off.
///
/// # Errors
/// The classified SDK failure.
pub async fn enable_job_execution_events(iot: &Client) -> PortResult<bool> {
    if job_execution_events_enabled(iot).await? {
        return Ok(false);
    }
    iot.update_event_configurations()
        .event_configurations(EventType::JobExecution, Configuration::builder().enabled(true).build())
        .send()
        .await
        .map_err(|e| classify("UpdateEventConfigurations", e))?;
    Ok(true)
}
