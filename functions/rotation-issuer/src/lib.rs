//! The `rotation-issuer` Lambda: a device's rotation CSR, delivered by the IoT
//! rule `SELECT jobId, csr, topic() AS topic, principal() AS principal FROM
//! 'devices/+/rotation/csr'`, through the domain's [`CsrIssuer`].
//!
//! The rule selects explicit fields: only `jobId` and `csr` come from the
//! device's payload. The thing name is taken from the topic the device
//! published on (`topic()`, which IoT authorizes with the device's policy)
//! and the certificate from `principal()` (its TLS identity); a payload key
//! of the same name is never selected, and this function reads the thing
//! name from nothing but `topic`.
//!
//! The shape of every function: [`Settings`] (`settings.rs`), [`build`],
//! the [`Handler`] with its [`Handler::handle`] and [`InvocationError`]
//! (`handler.rs`), and the metrics (`metrics.rs`).

pub mod handler;
pub mod metrics;
pub mod settings;

use onboarding_aws::{DynamoInventory, FleetCaAdapter, RotationIotAdapter};
use onboarding_domain::{CsrIssuer, PortError};

pub use handler::{Handler, InvocationError};
pub use onboarding_lambda::{FromEnv, InvocationFailure, SettingsError};
pub use settings::Settings;

/// The issuer with the AWS adapters; `kmsCa` profiles issue through the
/// fleet CA key the deployment allows (`FLEET_CA_KMS_KEY_ARN`), if any.
pub type AwsIssuer = CsrIssuer<DynamoInventory, RotationIotAdapter, DynamoInventory, FleetCaAdapter>;

/// Builds the handler; resolves the account's IoT data endpoint for
/// answers (the one `build` that is async: it fails init when it cannot).
///
/// # Errors
/// When the data endpoint cannot be resolved.
pub async fn build(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Handler, PortError> {
    let iot = aws_sdk_iot::Client::new(sdk);
    let data = onboarding_aws::iot_data_client(sdk, &iot)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "cannot resolve the IoT data endpoint"))?;
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.inventory_table);
    let fleet_ca = FleetCaAdapter::new(
        iot.clone(),
        aws_sdk_kms::Client::new(sdk),
        settings.fleet_ca_kms_key_arn.clone(),
    );
    let issuer = CsrIssuer::new(
        inventory.clone(),
        RotationIotAdapter::new(iot, data, None),
        inventory,
        settings.issuer.clone(),
    )
    .with_own_ca(fleet_ca);
    Ok(Handler {
        issuer,
        metrics_namespace: settings.metrics_namespace.clone(),
    })
}
