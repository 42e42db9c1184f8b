//! The `fleet-auditor` Lambda: each scheduled invocation continues the fleet
//! audit's run in progress, or starts one when the last is old enough, as
//! of the wall clock ([`handler::wall_clock_now`]; the event's `time` is only
//! logged), and stops before the invocation's deadline. A completed run's
//! findings are in the inventory table (`onboard fleet audit --last`), and
//! its counts go out as EMF metrics, one per check (`metrics.rs`).
//!
//! The shape of every function: [`Settings`] (`settings.rs`), [`build`],
//! the [`Handler`] with its [`Handler::handle`] and [`InvocationError`]
//! (`handler.rs`), and the metrics (`metrics.rs`).

pub mod handler;
pub mod metrics;
pub mod settings;

use onboarding_aws::{ApiPacer, DynamoInventory, IotAdapter};
use onboarding_domain::ScheduledAudit;

pub use handler::{Handler, InvocationError};
pub use onboarding_lambda::{FromEnv, InvocationFailure, SettingsError};
pub use settings::Settings;

/// The scheduled audit with the AWS adapters.
pub type AwsAudit = ScheduledAudit<IotAdapter, IotAdapter, DynamoInventory, DynamoInventory, DynamoInventory>;

/// Builds the handler: IoT reads paced to the audit's share of the quotas.
pub fn build(settings: &Settings, sdk: &aws_config::SdkConfig) -> Handler {
    let iot = IotAdapter::paced(
        aws_sdk_iot::Client::new(sdk),
        ApiPacer::new(&settings.iot_api_quotas, settings.iot_api_share),
    );
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    Handler {
        audit: ScheduledAudit::new(
            iot.clone(),
            iot,
            inventory.clone(),
            inventory.clone(),
            inventory,
            settings.audit.clone(),
        ),
        metrics_namespace: settings.metrics_namespace.clone(),
        time_margin_ms: settings.time_margin_secs.saturating_mul(1_000),
        fallback_ms: settings.fallback_secs.saturating_mul(1_000),
    }
}
