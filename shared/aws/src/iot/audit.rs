//! The IoT reads of the fleet audit ([`AuditIot`]): a certificate's
//! description with its creation date, a CA's, the things and policies
//! attached to a certificate, and a policy's document. Each call waits for
//! its action's turn when the adapter is paced.

use onboarding_domain::{AuditIot, CertificateRegistry, DescribedCertificate, PortResult};
use onboarding_domain::{RegisteredCa, RetirementIot};

use crate::error::{classify, incomplete, is_not_found};
use crate::iot::IotAdapter;

impl AuditIot for IotAdapter {
    async fn audited_certificate(&self, certificate_id: &str) -> PortResult<Option<DescribedCertificate>> {
        Ok(self
            .described_certificate(certificate_id)
            .await?
            .map(|(mut certificate, created_at)| {
                certificate.ca_certificate_id = certificate.ca_certificate_id.filter(|c| !c.is_empty());
                DescribedCertificate {
                    created_at,
                    certificate,
                }
            }))
    }

    async fn audited_ca(&self, ca_certificate_id: &str) -> PortResult<Option<RegisteredCa>> {
        self.describe_ca_certificate(ca_certificate_id).await
    }

    async fn things_of_certificate(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        // Every page; a certificate deleted since it was described has none.
        self.principal_things(certificate_arn).await
    }

    async fn policies_of_certificate(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        self.policies(certificate_arn).await
    }

    async fn policy_document(&self, policy_name: &str) -> PortResult<Option<String>> {
        const OP: &str = "GetPolicy";
        self.ready(OP).await;
        match self.client().get_policy().policy_name(policy_name).send().await {
            Ok(output) => Ok(Some(
                output.policy_document.ok_or_else(|| incomplete(OP, "policyDocument"))?,
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify(OP, e)),
        }
    }
}
