//! What a bulk import needs beyond the registrar's ports: registering a
//! certificate made elsewhere with AWS IoT, and the import's state file.

use std::future::Future;

use crate::ports::PortResult;

/// How a certificate is registered with AWS IoT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration<'a> {
    /// `RegisterCertificate` with the PEM of the registered CA that signed
    /// it: IoT records that CA for the certificate.
    UnderCa { ca_pem: &'a str },
    /// `RegisterCertificateWithoutCA` (multi-account, SNI): IoT records no CA.
    WithoutCa,
}

/// Registering device certificates with AWS IoT. The certificate is
/// registered `INACTIVE` (AWS refuses `PENDING_ACTIVATION` in a
/// registration): nothing is ACTIVE before the registrar's last round.
pub trait CertificateImport: Send + Sync {
    /// Registers `pem`, `INACTIVE`, and returns its certificate id.
    ///
    /// # Errors
    /// `Conflict` when IoT already holds the certificate
    /// (`ResourceAlreadyExistsException`); `Invalid` when IoT refuses it (not
    /// signed by the CA given, the CA not registered or not ACTIVE).
    fn register_certificate(
        &self,
        pem: &str,
        registration: Registration<'_>,
    ) -> impl Future<Output = PortResult<String>> + Send;
}

/// The import's state: one line appended, and made durable, per step of a
/// row (see [`crate::workflows::import`]).
pub trait ImportJournal: Send + Sync {
    /// Appends `line` (one JSON object, no line break) and returns only once
    /// it is durable.
    fn append(&self, line: &str) -> impl Future<Output = PortResult<()>> + Send;
}
