//! The JITR registrar Lambda: wiring of the domain registrar to the AWS
//! adapters, the payload handling, and metrics. `main.rs` only assembles it.
//!
//! The shape of every function: [`Settings`] (`settings.rs`), [`build`],
//! the [`Handler`] with its [`Handler::handle`] and [`InvocationError`]
//! (`handler.rs`), and the metrics (`metrics.rs`).

pub mod handler;
pub mod metrics;
pub mod settings;

use onboarding_aws::{ApiPacer, DynamoInventory, IotAdapter, S3CredentialsStore};
use onboarding_domain::Registrar;

pub use handler::{Handler, InvocationError};
pub use onboarding_lambda::{FromEnv, InvocationFailure, SettingsError};
pub use settings::Settings;

/// The registrar with the AWS adapters.
pub type AwsRegistrar = Registrar<IotAdapter, IotAdapter, S3CredentialsStore, DynamoInventory>;

/// Builds the handler from settings and a loaded SDK configuration.
pub fn build(settings: &Settings, sdk: &aws_config::SdkConfig) -> Handler {
    Handler::new(
        build_registrar(settings, sdk),
        settings.batch_concurrency,
        &settings.metrics_namespace,
    )
}

/// Builds the registrar alone (the reconciler processes stuck certificates
/// with it, exactly as the function would).
pub fn build_registrar(settings: &Settings, sdk: &aws_config::SdkConfig) -> AwsRegistrar {
    let client = aws_sdk_iot::Client::new(sdk);
    // Each container keeps to its share of the account's IoT quotas.
    let iot = match settings.iot_api_share {
        0 => IotAdapter::new(client),
        share => IotAdapter::paced(client, ApiPacer::new(&settings.iot_api_quotas, share)),
    };
    let s3 = onboarding_aws::s3_client(sdk, settings.s3_force_path_style);
    let store = S3CredentialsStore::new(s3, &settings.credentials_bucket, &settings.credentials_kms_key_id);
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    Registrar::new(iot.clone(), iot, store, inventory, settings.registrar.clone())
}
