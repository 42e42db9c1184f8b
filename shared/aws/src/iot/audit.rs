//! The IoT reads of the fleet audit ([`AuditIot`]): a certificate's
//! description with its creation date, a CA's, the things and policies
//! attached to a certificate, and a policy's document. Each call waits for
//! its action's turn when the adapter is paced.

use onboarding_domain::{AuditIot, CertificateRegistry, CertificateStatus, DescribedCertificate, PortResult};
use onboarding_domain::{RegisteredCa, RegisteredCertificate, RetirementIot};

use crate::error::{classify, incomplete, is_not_found};
use crate::iot::IotAdapter;

impl AuditIot for IotAdapter {
    async fn audited_certificate(&self, certificate_id: &str) -> PortResult<Option<DescribedCertificate>> {
        const OP: &str = "DescribeCertificate";
        self.ready(OP).await;
        let output = match self
            .client()
            .describe_certificate()
            .certificate_id(certificate_id)
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
        Ok(Some(DescribedCertificate {
            created_at: d.creation_date.map(|t| t.secs()),
            certificate: RegisteredCertificate {
                certificate_id: d.certificate_id.unwrap_or_else(|| certificate_id.to_string()),
                certificate_arn: d.certificate_arn.ok_or_else(|| incomplete(OP, "certificateArn"))?,
                ca_certificate_id: d.ca_certificate_id.filter(|c| !c.is_empty()),
                status: CertificateStatus::parse(d.status.as_ref().map_or("", |s| s.as_str())),
                pem: d.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
            },
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
