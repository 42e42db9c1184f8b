//! [`CaRegistry`] over the IoT control plane: a CA's status and
//! auto-registration, read with `DescribeCACertificate` and changed with
//! `UpdateCACertificate` (the CA rotation's and retirement's calls).

use aws_sdk_iot::types::{AutoRegistrationStatus, CaCertificateStatus};
use onboarding_domain::{CaRegistry, CaState, CertificateStatus, PortResult};

use super::IotAdapter;
use crate::error::{classify, incomplete, invalid, is_not_found};

impl CaRegistry for IotAdapter {
    async fn ca_state(&self, ca_certificate_id: &str) -> PortResult<Option<CaState>> {
        const OP: &str = "DescribeCACertificate";
        self.ready(OP).await;
        let output = match self
            .client()
            .describe_ca_certificate()
            .certificate_id(ca_certificate_id)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(classify(OP, e)),
        };
        let d = output
            .certificate_description
            .ok_or_else(|| incomplete(OP, "certificateDescription"))?;
        Ok(Some(CaState {
            certificate_id: d.certificate_id.unwrap_or_else(|| ca_certificate_id.to_string()),
            status: CertificateStatus::parse(d.status.as_ref().map_or("", |s| s.as_str())),
            // Only an explicit ENABLE counts: a CA whose status is not told
            // is treated as not registering devices.
            auto_registration: d.auto_registration_status == Some(AutoRegistrationStatus::Enable),
            pem: d.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
        }))
    }

    async fn set_ca_auto_registration(&self, ca_certificate_id: &str, enabled: bool) -> PortResult<()> {
        const OP: &str = "UpdateCACertificate";
        self.ready(OP).await;
        self.client()
            .update_ca_certificate()
            .certificate_id(ca_certificate_id)
            .new_auto_registration_status(if enabled {
                AutoRegistrationStatus::Enable
            } else {
                AutoRegistrationStatus::Disable
            })
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(())
    }

    async fn set_ca_status(&self, ca_certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        const OP: &str = "UpdateCACertificate";
        let new_status = match status {
            CertificateStatus::Active => CaCertificateStatus::Active,
            CertificateStatus::Inactive => CaCertificateStatus::Inactive,
            other => return Err(invalid(OP, format!("a CA cannot be set {}", other.as_str()))),
        };
        self.ready(OP).await;
        self.client()
            .update_ca_certificate()
            .certificate_id(ca_certificate_id)
            .new_status(new_status)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(())
    }
}
