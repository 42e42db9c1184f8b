//! IoT adapter: certificates, things, groups and policies.

use std::collections::BTreeMap;

use aws_sdk_iot::Client;
use aws_sdk_iot::types::{AttributePayload, ThingPrincipalType};
use onboarding_domain::ProvisioningPlan;
use onboarding_domain::{
    CertificateRegistry, CertificateStatus, ExistingThing, PortResult, RegisteredCa, RegisteredCertificate,
    ThingCreation, ThingRegistry,
};

use crate::error::{classify, incomplete, is_not_found, service_code};

/// IoT control-plane calls behind the certificate and thing ports.
#[derive(Debug, Clone)]
pub struct IotAdapter {
    client: Client,
}

impl IotAdapter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn attribute_payload(attributes: &BTreeMap<String, String>, merge: bool) -> AttributePayload {
    AttributePayload::builder()
        .set_attributes(Some(attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
        .merge(merge)
        .build()
}

impl CertificateRegistry for IotAdapter {
    async fn describe_certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
        const OP: &str = "DescribeCertificate";
        let output = match self
            .client
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
        Ok(Some(RegisteredCertificate {
            certificate_id: d.certificate_id.unwrap_or_else(|| certificate_id.to_string()),
            certificate_arn: d.certificate_arn.ok_or_else(|| incomplete(OP, "certificateArn"))?,
            ca_certificate_id: d.ca_certificate_id,
            status: CertificateStatus::parse(d.status.as_ref().map_or("", |s| s.as_str())),
            pem: d.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
        }))
    }

    async fn describe_ca_certificate(&self, ca_certificate_id: &str) -> PortResult<Option<RegisteredCa>> {
        const OP: &str = "DescribeCACertificate";
        let output = match self
            .client
            .describe_ca_certificate()
            .certificate_id(ca_certificate_id)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(classify(OP, e)),
        };
        let jitp = output.registration_config.as_ref().is_some_and(|c| {
            c.template_body().is_some_and(|b| !b.is_empty()) || c.template_name().is_some_and(|n| !n.is_empty())
        });
        let d = output
            .certificate_description
            .ok_or_else(|| incomplete(OP, "certificateDescription"))?;
        Ok(Some(RegisteredCa {
            jitp,
            certificate_id: d.certificate_id.unwrap_or_else(|| ca_certificate_id.to_string()),
            status: CertificateStatus::parse(d.status.as_ref().map_or("", |s| s.as_str())),
            pem: d.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
        }))
    }

    async fn set_certificate_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        self.client
            .update_certificate()
            .certificate_id(certificate_id)
            .new_status(aws_sdk_iot::types::CertificateStatus::from(status.as_str()))
            .send()
            .await
            .map_err(|e| classify("UpdateCertificate", e))?;
        Ok(())
    }
}

impl ThingRegistry for IotAdapter {
    async fn create_thing(&self, plan: &ProvisioningPlan) -> PortResult<ThingCreation> {
        let result = self
            .client
            .create_thing()
            .thing_name(&plan.thing_name)
            .set_thing_type_name(plan.thing_type.clone())
            .set_billing_group_name(plan.billing_group.clone())
            .attribute_payload(attribute_payload(&plan.attributes, false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ThingCreation::Ready),
            Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => {
                Ok(ThingCreation::ExistsDifferently)
            }
            Err(e) => Err(classify("CreateThing", e)),
        }
    }

    async fn describe_thing(&self, thing_name: &str) -> PortResult<Option<ExistingThing>> {
        match self.client.describe_thing().thing_name(thing_name).send().await {
            Ok(output) => Ok(Some(ExistingThing {
                thing_type: output.thing_type_name,
                attributes: output.attributes.unwrap_or_default().into_iter().collect(),
                billing_group: output.billing_group_name,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify("DescribeThing", e)),
        }
    }

    async fn merge_thing_attributes(&self, plan: &ProvisioningPlan) -> PortResult<()> {
        self.client
            .update_thing()
            .thing_name(&plan.thing_name)
            .attribute_payload(attribute_payload(&plan.attributes, true))
            .send()
            .await
            .map_err(|e| classify("UpdateThing", e))?;
        Ok(())
    }

    async fn add_to_billing_group(&self, thing_name: &str, billing_group: &str) -> PortResult<()> {
        self.client
            .add_thing_to_billing_group()
            .thing_name(thing_name)
            .billing_group_name(billing_group)
            .send()
            .await
            .map_err(|e| classify("AddThingToBillingGroup", e))?;
        Ok(())
    }

    async fn thing_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        let mut principals = Vec::new();
        let mut next_token = None;
        loop {
            let page = match self
                .client
                .list_thing_principals()
                .thing_name(thing_name)
                .set_next_token(next_token)
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(classify("ListThingPrincipals", e)),
            };
            principals.extend(page.principals.unwrap_or_default());
            next_token = page.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                return Ok(Some(principals));
            }
        }
    }

    async fn attach_certificate_exclusively(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.client
            .attach_thing_principal()
            .thing_name(thing_name)
            .principal(certificate_arn)
            .thing_principal_type(ThingPrincipalType::ExclusiveThing)
            .send()
            .await
            .map_err(|e| classify("AttachThingPrincipal", e))?;
        Ok(())
    }

    async fn add_to_thing_group(&self, thing_name: &str, group: &str) -> PortResult<()> {
        self.client
            .add_thing_to_thing_group()
            .thing_name(thing_name)
            .thing_group_name(group)
            .send()
            .await
            .map_err(|e| classify("AddThingToThingGroup", e))?;
        Ok(())
    }

    async fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.client
            .attach_policy()
            .policy_name(policy_name)
            .target(certificate_arn)
            .send()
            .await
            .map_err(|e| classify("AttachPolicy", e))?;
        Ok(())
    }
}
