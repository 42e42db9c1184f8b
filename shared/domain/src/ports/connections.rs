//! Live MQTT connections, as an emergency revocation cuts them.

use std::future::Future;

use crate::ports::PortResult;

/// The broker's open connections.
pub trait Connections: Send + Sync {
    /// Closes the MQTT connection of `client_id` now (AWS IoT's
    /// `DeleteConnection`: session state cleaned, no will message sent).
    /// False when no client of that id is connected.
    fn disconnect(&self, client_id: &str) -> impl Future<Output = PortResult<bool>> + Send;
}
