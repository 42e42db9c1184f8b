//! The device side of the system: what a device (real firmware, the CLI's
//! simulated devices, the tests) does, with no AWS SDK in sight.
//!
//! - TLS: a rustls client configuration for mutual TLS from a device's
//!   certificate and key ([`client_config`]), weak RSA keys included so that
//!   the broker, not the device, refuses them.
//! - MQTT: one connection helper on rumqttc ([`Conn`]) that every MQTT user
//!   of the workspace goes through, a device's first connection
//!   ([`connect_once`]) and a hello with one publish ([`publish_once`]).
//! - Fleet provisioning by claim: `CreateKeysAndCertificate` and
//!   `RegisterThing` over MQTT ([`create_keys_and_certificate`],
//!   [`register_thing`]).
//! - Certificate rotation: the device's side of the rotation protocol
//!   ([`Agent`]): the job, a CSR or server-generated credentials, the switch
//!   to the new certificate, the confirmation, and the rollback.
//!
//! Domain types (the rotation protocol's messages, certificates) come from
//! `onboarding_domain`'s root.

mod device;
mod mqtt;
mod provisioning;
mod rotation;
mod tls;

pub use device::Device;
pub use mqtt::{
    Broker, Closed, Conn, ConnectError, ConnectResult, Incoming, MqttError, ProbeError, connect_once, describe,
    explain, publish_once,
};
pub use provisioning::{
    CREATE_KEYS_TOPIC, CreatedCredentials, ProvisioningError, Registered, create_keys_and_certificate, register_thing,
    register_thing_topic,
};
pub use rotation::{Agent, Misbehave, Outcome, Report};
pub use tls::{TlsError, client_config};

/// File names in a rotating device's directory, and the all-or-nothing
/// writer of credential files.
pub mod files {
    pub use crate::rotation::{CERT, CERT_NEW, CERT_OLD, KEY, KEY_NEW, KEY_OLD, write_all_new};
}
