//! The `cert-rotator` Lambda: one scheduled rotation run, as of the scheduled
//! event's `time`, through the domain's [`Rotator`] and the AWS adapters.
//!
//! The shape of every function: [`Settings`] (`settings.rs`), [`build`],
//! the [`Handler`] with its [`Handler::handle`] and [`InvocationError`]
//! (`handler.rs`), and the metrics (`metrics.rs`).

pub mod handler;
pub mod metrics;
pub mod settings;

use std::time::{Duration, Instant};

use onboarding_aws::{DynamoInventory, RotationIotAdapter, S3RotationObjects};
use onboarding_domain::{Pacer, Rotator};

pub use handler::{Handler, InvocationError};
pub use onboarding_lambda::{FromEnv, InvocationFailure, SettingsError};
pub use settings::Settings;

/// Sleeps on the Tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioPacer;

impl Pacer for TokioPacer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// The rotator with the AWS adapters.
pub type AwsRotator = Rotator<DynamoInventory, RotationIotAdapter, S3RotationObjects, DynamoInventory, TokioPacer>;

/// Builds the handler from settings and a loaded SDK configuration.
pub fn build(settings: &Settings, sdk: &aws_config::SdkConfig) -> Handler {
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    let iot = aws_sdk_iot::Client::new(sdk);
    // The rotator never publishes; the data-plane client is never called.
    let rotation_iot = RotationIotAdapter::new(
        iot.clone(),
        aws_sdk_iotdataplane::Client::new(sdk),
        settings.presign_role_arn.clone(),
    );
    let objects = S3RotationObjects::new(
        onboarding_aws::s3_client(sdk, settings.s3_force_path_style),
        &settings.credentials_bucket,
        &settings.credentials_kms_key_id,
    );
    let rotator = Rotator::new(
        inventory.clone(),
        rotation_iot,
        objects,
        inventory,
        TokioPacer,
        settings.rotator.clone(),
    );
    Handler {
        rotator,
        iot,
        metrics_namespace: settings.metrics_namespace.clone(),
    }
}
