//! A device's first MQTT connection over mutual TLS, through
//! `onboarding_device`'s rumqttc connection: enough to trigger just-in-time
//! registration and to learn whether a certificate is accepted.

use std::sync::Arc;

pub use onboarding_device::{ConnectResult, TlsError};

/// Errors setting up the client or reaching the broker.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error(transparent)]
    Credentials(#[from] TlsError),
    #[error(transparent)]
    Connection(#[from] onboarding_device::ProbeError),
}

/// Connects to `127.0.0.1:port` with the device's certificate and key, sends
/// CONNECT with `client_id`, and reports the broker's answer.
///
/// # Errors
/// [`MqttError`] for unusable credentials or a broker that does not answer.
pub async fn connect_once(
    port: u16,
    server_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    client_id: &str,
) -> Result<ConnectResult, MqttError> {
    let config = client_config(server_ca_pem, cert_pem, key_pem)?;
    let broker = onboarding_device::Broker {
        host: "127.0.0.1".into(),
        port,
        server_ca_pem: server_ca_pem.to_string(),
    };
    Ok(onboarding_device::connect_once(&broker, config, client_id).await?)
}

/// A rustls client configuration for a device: trusts the broker's CA and
/// presents the device certificate (aws-lc-rs, like the rest of the project).
///
/// # Errors
/// [`TlsError`] for unreadable PEMs or keys rustls refuses.
pub fn client_config(
    server_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    onboarding_device::client_config(server_ca_pem, cert_pem, key_pem)
}
