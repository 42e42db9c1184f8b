//! The `provisioning-hook` Lambda: the pre-provisioning hook of the
//! fleet-provisioning template, through the domain's [`ProvisioningHook`].
//!
//! AWS IoT waits at most 5 seconds for the answer. A new device costs three
//! rounds of calls, each round's calls in parallel: the allow-list entry
//! (and the configuration when the cache is cold); the entry used up, the
//! thing name claimed (both conditional writes) and the thing's principals
//! listed in IoT; the inventory record. The SDK is held to a budget well
//! inside the limit (`HOOK_BUDGET_MILLIS`), and anything that does not
//! finish in it refuses: the device retries `RegisterThing` later.
//!
//! The shape of every function: [`Settings`] (`settings.rs`), [`build`],
//! the [`Handler`] with its [`Handler::handle`] and [`InvocationError`]
//! (`handler.rs`), and the metrics (`metrics.rs`).

pub mod handler;
pub mod metrics;
pub mod settings;

use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::ProvisioningHook;

pub use handler::{Handler, InvocationError};
pub use onboarding_lambda::{FromEnv, InvocationFailure, SettingsError};
pub use settings::Settings;

/// The hook with its DynamoDB and IoT adapters.
pub type AwsHook = ProvisioningHook<DynamoInventory, IotAdapter>;

/// Builds the handler from settings and a loaded SDK configuration.
pub fn build(settings: &Settings, sdk: &aws_config::SdkConfig) -> Handler {
    let hook = ProvisioningHook::new(
        DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table),
        IotAdapter::new(aws_sdk_iot::Client::new(sdk)),
        settings.hook.clone(),
    );
    Handler {
        hook,
        budget: settings.budget,
        metrics_namespace: settings.metrics_namespace.clone(),
    }
}
