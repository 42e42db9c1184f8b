//! AWS IoT's CA certificates as an operator changes them: their status and
//! auto-registration (the rotation of a manufacturer CA and its retirement).

use std::future::Future;

use crate::model::status::CertificateStatus;
use crate::ports::PortResult;

/// A CA certificate as IoT describes it, with what its retirement changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaState {
    pub certificate_id: String,
    /// `ACTIVE` or `INACTIVE`.
    pub status: CertificateStatus,
    /// `autoRegistrationStatus` is `ENABLE`: devices it signed are registered
    /// on their first connection (JITR).
    pub auto_registration: bool,
    pub pem: String,
}

/// IoT's CA certificates: read one, change its auto-registration and status.
pub trait CaRegistry: Send + Sync {
    /// `DescribeCACertificate`; `None` when it does not exist.
    fn ca_state(&self, ca_certificate_id: &str) -> impl Future<Output = PortResult<Option<CaState>>> + Send;
    /// `UpdateCACertificate` with `newAutoRegistrationStatus`.
    fn set_ca_auto_registration(
        &self,
        ca_certificate_id: &str,
        enabled: bool,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// `UpdateCACertificate` with `newStatus` (`ACTIVE` or `INACTIVE`).
    fn set_ca_status(
        &self,
        ca_certificate_id: &str,
        status: &CertificateStatus,
    ) -> impl Future<Output = PortResult<()>> + Send;
}
