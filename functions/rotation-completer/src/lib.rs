//! The `rotation-completer` Lambda: job-execution events of rotation jobs
//! (IoT rule → SQS → event-source mapping), through the domain's
//! [`Completer`]. Failed messages are reported in `batchItemFailures` and
//! retried; after `maxReceiveCount` they wait in the dead-letter queue.
//!
//! The shape of every function: [`Settings`] (`settings.rs`), [`build`],
//! the [`Handler`] with its [`Handler::handle`] and [`InvocationError`]
//! (`handler.rs`), and the metrics (`metrics.rs`).

pub mod handler;
pub mod metrics;
pub mod settings;

use onboarding_aws::{DynamoInventory, RotationIotAdapter, S3RotationObjects};
use onboarding_domain::Completer;

pub use handler::{Handler, InvocationError};
pub use onboarding_lambda::{FromEnv, InvocationFailure, SettingsError};
pub use settings::Settings;

/// The completer with the AWS adapters.
pub type AwsCompleter = Completer<DynamoInventory, RotationIotAdapter, S3RotationObjects, DynamoInventory>;

/// Builds the handler from settings and a loaded SDK configuration.
pub fn build(settings: &Settings, sdk: &aws_config::SdkConfig) -> Handler {
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    // The completer never publishes nor creates objects (deletes only, which
    // need no KMS key).
    let iot = RotationIotAdapter::new(
        aws_sdk_iot::Client::new(sdk),
        aws_sdk_iotdataplane::Client::new(sdk),
        None,
    );
    let objects = S3RotationObjects::new(
        onboarding_aws::s3_client(sdk, settings.s3_force_path_style),
        &settings.credentials_bucket,
        "",
    );
    Handler {
        completer: Completer::new(inventory.clone(), iot, objects, inventory, settings.completer.clone()),
        metrics_namespace: settings.metrics_namespace.clone(),
    }
}
