//! AWS IoT as the rotation workflows use it: jobs, the certificates they
//! deliver, and publishing to a device.

use std::future::Future;

use crate::policy::rotation::protocol::{JobDocument, JobExecution, REDACTED};
use crate::ports::PortResult;

/// A certificate AWS IoT made.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_pem: String,
    /// Server-keygen only. Never in debug output.
    pub private_key_pem: Option<String>,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("certificate_id", &self.certificate_id)
            .field("certificate_arn", &self.certificate_arn)
            .field("certificate_pem", &self.certificate_pem)
            .field("private_key_pem", &self.private_key_pem.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// AWS IoT as rotation uses it.
pub trait RotationIot: Send + Sync {
    /// `CreateJob` for one thing; succeeds when the job already exists.
    fn create_job(
        &self,
        job_id: &str,
        thing_name: &str,
        document: &JobDocument,
        timeout_minutes: u32,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// `DescribeJobExecution`; `None` when there is none.
    fn job_execution(
        &self,
        job_id: &str,
        thing_name: &str,
    ) -> impl Future<Output = PortResult<Option<JobExecution>>> + Send;
    /// `CancelJob` (force), after a rotation is given up.
    fn cancel_job(&self, job_id: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `CreateCertificateFromCsr`, not yet active.
    fn certificate_from_csr(&self, csr_pem: &str) -> impl Future<Output = PortResult<IssuedCertificate>> + Send;
    /// `CreateKeysAndCertificate`, not yet active.
    fn keys_and_certificate(&self) -> impl Future<Output = PortResult<IssuedCertificate>> + Send;
    /// `DescribeCertificate` PEM and status; `None` when it does not exist.
    fn certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<crate::ports::RegisteredCertificate>>> + Send;
    fn set_status(
        &self,
        certificate_id: &str,
        status: &crate::model::status::CertificateStatus,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// `ListThingPrincipals`: the ARNs of the certificates attached to the thing.
    fn thing_principals(&self, thing_name: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    /// `AttachThingPrincipal` (`EXCLUSIVE_THING`).
    fn attach_to_thing(&self, thing_name: &str, certificate_arn: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `DetachThingPrincipal`; succeeds when not attached.
    fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str)
    -> impl Future<Output = PortResult<()>> + Send;
    /// Policy names attached to the certificate.
    fn policies(&self, certificate_arn: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `DetachPolicy`; succeeds when not attached.
    fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `DeleteCertificate` (it must be inactive and detached); succeeds when gone.
    fn delete_certificate(&self, certificate_id: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// Publishes to a device (IoT data plane, QoS 1).
    fn publish(&self, topic: &str, payload: &[u8]) -> impl Future<Output = PortResult<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_private_key() {
        let issued = IssuedCertificate {
            certificate_id: "c".repeat(64),
            certificate_arn: "arn:aws:iot:eu-west-1:1:cert/c".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----".into(),
            private_key_pem: Some("-----BEGIN PRIVATE KEY-----\nMIGHAgEAsecret\n".into()),
        };
        let shown = format!("{issued:?} {issued:#?}");
        assert!(!shown.contains("PRIVATE KEY") && !shown.contains("secret"), "{shown}");
        assert!(shown.contains(REDACTED) && shown.contains(&issued.certificate_id));
    }
}
