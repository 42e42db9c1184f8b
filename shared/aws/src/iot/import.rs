//! Registering device certificates made elsewhere (a bulk import), behind
//! the domain's [`CertificateImport`] port: `RegisterCertificate` under a
//! registered CA, `RegisterCertificateWithoutCA` for multi-account (SNI)
//! set-ups. Both register the certificate `INACTIVE`: AWS refuses
//! `PENDING_ACTIVATION` in a registration, and nothing may be ACTIVE before
//! the registrar's last round.

use aws_sdk_iot::types::CertificateStatus as SdkStatus;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use onboarding_domain::{CertificateImport, PortError, PortErrorKind, PortResult, Registration};

use crate::error::{classify, incomplete, service_code};
use crate::iot::IotAdapter;

/// An error of a register call: the certificate already registered is a
/// `Conflict` (the caller goes on with IoT's description of it); a
/// certificate or CA IoT will not take (`CertificateValidationException`:
/// not signed by the CA, malformed; `CertificateStateException`: the CA not
/// registered or not ACTIVE) is `Invalid`, which no retry changes.
fn register_error<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = service_code(&error).map(str::to_string);
    let mut classified = classify(operation, error);
    match code.as_deref() {
        Some("ResourceAlreadyExistsException") => classified.kind = PortErrorKind::Conflict,
        Some("CertificateValidationException" | "CertificateStateException" | "InvalidRequestException") => {
            classified.kind = PortErrorKind::Invalid;
        }
        _ => {}
    }
    classified
}

impl CertificateImport for IotAdapter {
    async fn register_certificate(&self, pem: &str, registration: Registration<'_>) -> PortResult<String> {
        match registration {
            Registration::UnderCa { ca_pem } => {
                const OP: &str = "RegisterCertificate";
                self.ready(OP).await;
                let output = self
                    .client
                    .register_certificate()
                    .certificate_pem(pem)
                    .ca_certificate_pem(ca_pem)
                    .status(SdkStatus::Inactive)
                    .send()
                    .await
                    .map_err(|e| register_error(OP, e))?;
                output.certificate_id.ok_or_else(|| incomplete(OP, "certificateId"))
            }
            Registration::WithoutCa => {
                const OP: &str = "RegisterCertificateWithoutCA";
                self.ready(OP).await;
                let output = self
                    .client
                    .register_certificate_without_ca()
                    .certificate_pem(pem)
                    .status(SdkStatus::Inactive)
                    .send()
                    .await
                    .map_err(|e| register_error(OP, e))?;
                output.certificate_id.ok_or_else(|| incomplete(OP, "certificateId"))
            }
        }
    }
}
