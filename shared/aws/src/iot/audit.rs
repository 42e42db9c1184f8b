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

    async fn certificates_of_thing(&self, thing_name: &str) -> PortResult<Vec<String>> {
        const OP: &str = "ListThingPrincipals";
        self.ready(OP).await;
        match crate::iot::list_thing_principals(self.client(), thing_name).await {
            Ok(principals) => Ok(principals
                .iter()
                .filter_map(|arn| certificate_id_of_arn(arn))
                .map(str::to_string)
                .collect()),
            // A thing deleted since the certificate was described has no certificates.
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(classify(OP, e)),
        }
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

/// The certificate id of a certificate ARN (`arn:…:cert/<id>`); `None` for
/// any other principal (an IAM or Cognito identity).
fn certificate_id_of_arn(arn: &str) -> Option<&str> {
    let (head, id) = arn.rsplit_once(":cert/")?;
    (head.starts_with("arn:") && !id.is_empty() && !id.contains('/')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificate_principals_are_certificates() {
        assert_eq!(
            certificate_id_of_arn("arn:aws:iot:eu-west-1:123456789012:cert/abc123"),
            Some("abc123")
        );
        assert_eq!(certificate_id_of_arn("arn:aws:iam::123456789012:role/r"), None);
        assert_eq!(
            certificate_id_of_arn("arn:aws:cognito-identity:eu-west-1:1:identitypool/x"),
            None
        );
        assert_eq!(certificate_id_of_arn("cert/abc"), None);
    }
}
