//! The `fleet-reconciler` Lambda: one scheduled run of the domain's
//! [`Reconciler`] as of the wall clock ([`handler::wall_clock_now`]; the scheduled
//! event's `time` is only logged: an invoker must not be able to move "now"
//! and have valid certificates judged expired). A stuck certificate is
//! processed by the registrar itself, built exactly as `jitr-registrar`
//! builds it (same settings, same adapters).
//!
//! The shape of every function: [`Settings`] (`settings.rs`), [`build`],
//! the [`Handler`] with its [`Handler::handle`] and [`InvocationError`]
//! (`handler.rs`), and the metrics (`metrics.rs`).

pub mod handler;
pub mod metrics;
pub mod settings;

use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::Reconciler;

pub use handler::{Handler, InvocationError};
pub use onboarding_lambda::{FromEnv, InvocationFailure, SettingsError};
pub use settings::Settings;

/// The reconciler with the AWS adapters and the registrar.
pub type AwsReconciler = Reconciler<IotAdapter, IotAdapter, DynamoInventory, jitr_registrar::AwsRegistrar>;

/// Builds the handler, with the registrar as `jitr-registrar` builds it.
pub fn build(settings: &Settings, sdk: &aws_config::SdkConfig) -> Handler {
    let iot = IotAdapter::new(aws_sdk_iot::Client::new(sdk));
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.registrar.inventory_table);
    let registrar = jitr_registrar::build_registrar(&settings.registrar, sdk);
    Handler {
        reconciler: Reconciler::new(
            iot.clone(),
            iot.clone(),
            inventory.clone(),
            registrar,
            settings.reconciler.clone(),
        ),
        iot,
        inventory,
        metrics_namespace: settings.registrar.metrics_namespace.clone(),
    }
}
