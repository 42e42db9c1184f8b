//! IoT control plane: certificates, things, groups and policies, behind the
//! registrar's ([`CertificateRegistry`], [`ThingRegistry`]), the
//! reconciler's ([`CaCertificates`]) and the provisioning hook's
//! ([`HookIdentity`], [`SupersessionIot`]) ports, and the control-plane
//! calls of a rotation (used by [`crate::RotationIotAdapter`]). What
//! operators do with IoT (CAs, claim certificates, provisioning templates,
//! one thing's view) is in [`operator`].

use std::collections::BTreeMap;

use aws_sdk_iot::Client;
use aws_sdk_iot::operation::list_attached_policies::ListAttachedPoliciesError;
use aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsError;
use aws_sdk_iot::types::{AttributePayload, ThingPrincipalType};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use onboarding_domain::ProvisioningPlan;
use onboarding_domain::{CaCertificates, HookIdentity, IssuedCertificate, ListedCertificate, Page, SupersessionIot};
use onboarding_domain::{
    CertificateRegistry, CertificateStatus, ExistingThing, PortResult, RegisteredCa, RegisteredCertificate,
    ThingCreation, ThingRegistry,
};

use crate::error::{classify, incomplete, is_not_found, service_code};
use crate::pacing::ApiPacer;

mod audit;
mod ca;
mod import;
pub(crate) mod operator;
mod retirement;

/// `ListCertificatesByCA` returns at most 250 certificates a page.
pub const MAX_PAGE_SIZE: usize = 250;

/// IoT control-plane calls behind the certificate and thing ports.
#[derive(Debug, Clone)]
pub struct IotAdapter {
    client: Client,
    pacer: Option<ApiPacer>,
}

impl IotAdapter {
    /// `DescribeCertificate`: the certificate as IoT holds it and its
    /// creation date (Unix seconds), or `None` when IoT has no such
    /// certificate. Waits for the action's turn when paced.
    pub(crate) async fn described_certificate(
        &self,
        certificate_id: &str,
    ) -> PortResult<Option<(RegisteredCertificate, Option<i64>)>> {
        const OP: &str = "DescribeCertificate";
        self.ready(OP).await;
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
        let created_at = d.creation_date.map(|t| t.secs());
        Ok(Some((
            RegisteredCertificate {
                certificate_id: d.certificate_id.unwrap_or_else(|| certificate_id.to_string()),
                certificate_arn: d.certificate_arn.ok_or_else(|| incomplete(OP, "certificateArn"))?,
                ca_certificate_id: d.ca_certificate_id,
                status: CertificateStatus::parse(d.status.as_ref().map_or("", |s| s.as_str())),
                pem: d.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
            },
            created_at,
        )))
    }

    pub fn new(client: Client) -> Self {
        Self { client, pacer: None }
    }

    /// The same calls, each waiting for its action's turn under `pacer`.
    pub fn paced(client: Client, pacer: ApiPacer) -> Self {
        Self {
            client,
            pacer: Some(pacer),
        }
    }

    /// Waits for `action`'s turn, when paced.
    pub(crate) async fn ready(&self, action: &str) {
        if let Some(pacer) = &self.pacer {
            pacer.ready(action).await;
        }
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
        Ok(self.described_certificate(certificate_id).await?.map(|(c, _)| c))
    }

    async fn describe_ca_certificate(&self, ca_certificate_id: &str) -> PortResult<Option<RegisteredCa>> {
        const OP: &str = "DescribeCACertificate";
        self.ready(OP).await;
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
        self.ready("UpdateCertificate").await;
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
        self.ready("CreateThing").await;
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
        self.ready("DescribeThing").await;
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
        self.ready("UpdateThing").await;
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
        self.ready("AddThingToBillingGroup").await;
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
        self.ready("ListThingPrincipals").await;
        match self.principals_of(thing_name).await {
            Ok(principals) => Ok(Some(principals)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify("ListThingPrincipals", e)),
        }
    }

    async fn attach_certificate_exclusively(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.ready("AttachThingPrincipal").await;
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
        self.ready("AddThingToThingGroup").await;
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
        self.ready("AttachPolicy").await;
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

impl CaCertificates for IotAdapter {
    async fn certificates_of_ca(
        &self,
        ca_certificate_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> PortResult<Page<ListedCertificate>> {
        const OP: &str = "ListCertificatesByCA";
        let output = self
            .client()
            .list_certificates_by_ca()
            .ca_certificate_id(ca_certificate_id)
            .page_size(i32::try_from(limit.clamp(1, MAX_PAGE_SIZE)).unwrap_or(1))
            .set_marker(cursor.map(str::to_string))
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        let items = output
            .certificates
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let certificate_id = c.certificate_id?;
                Some(ListedCertificate {
                    certificate_arn: c.certificate_arn.unwrap_or_default(),
                    status: CertificateStatus::parse(c.status.as_ref().map_or("", |s| s.as_str())),
                    created_at: c.creation_date.map(|d| d.secs()),
                    certificate_id,
                })
            })
            .collect();
        Ok(Page {
            items,
            cursor: output.next_marker.filter(|m| !m.is_empty()),
        })
    }
}

impl HookIdentity for IotAdapter {
    async fn thing_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        ThingRegistry::thing_principals(self, thing_name).await
    }

    async fn certificate_status(&self, certificate_id: &str) -> PortResult<Option<CertificateStatus>> {
        Ok(self
            .describe_certificate(certificate_id)
            .await?
            .map(|certificate| certificate.status))
    }
}

impl SupersessionIot for IotAdapter {
    async fn certificate(&self, certificate_id: &str) -> PortResult<Option<(CertificateStatus, String)>> {
        Ok(self
            .describe_certificate(certificate_id)
            .await?
            .map(|certificate| (certificate.status, certificate.certificate_arn)))
    }

    async fn thing_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        ThingRegistry::thing_principals(self, thing_name).await
    }

    async fn revoke(&self, certificate_id: &str) -> PortResult<()> {
        self.set_certificate_status(certificate_id, &CertificateStatus::Revoked)
            .await
    }
}

// --- rotation's control-plane calls ------------------------------------------

/// Every principal (certificate ARN) of a thing, all pages: the one
/// `ListThingPrincipals` reader of the ports and the operator's calls.
pub(crate) async fn list_thing_principals(
    client: &Client,
    thing_name: &str,
) -> Result<Vec<String>, SdkError<ListThingPrincipalsError, HttpResponse>> {
    let mut pages = client
        .list_thing_principals()
        .thing_name(thing_name)
        .into_paginator()
        .items()
        .send();
    let mut principals = Vec::new();
    while let Some(principal) = pages.next().await {
        principals.push(principal?);
    }
    Ok(principals)
}

/// The names of every policy attached to a target (a certificate ARN), all
/// pages: the one `ListAttachedPolicies` reader.
pub(crate) async fn list_attached_policy_names(
    client: &Client,
    target: &str,
) -> Result<Vec<String>, SdkError<ListAttachedPoliciesError, HttpResponse>> {
    let mut pages = client
        .list_attached_policies()
        .target(target)
        .into_paginator()
        .items()
        .send();
    let mut names = Vec::new();
    while let Some(policy) = pages.next().await {
        names.extend(policy?.policy_name);
    }
    Ok(names)
}

impl IotAdapter {
    /// Every principal of a thing, all pages.
    async fn principals_of(
        &self,
        thing_name: &str,
    ) -> Result<Vec<String>, SdkError<ListThingPrincipalsError, HttpResponse>> {
        list_thing_principals(&self.client, thing_name).await
    }

    /// Every principal of a thing; a missing thing is an error.
    pub(crate) async fn thing_principals_of_existing(&self, thing_name: &str) -> PortResult<Vec<String>> {
        self.ready("ListThingPrincipals").await;
        self.principals_of(thing_name)
            .await
            .map_err(|e| classify("ListThingPrincipals", e))
    }

    pub(crate) async fn certificate_from_csr(&self, csr_pem: &str) -> PortResult<IssuedCertificate> {
        const OP: &str = "CreateCertificateFromCsr";
        let output = self
            .client
            .create_certificate_from_csr()
            .certificate_signing_request(csr_pem)
            .set_as_active(false)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(IssuedCertificate {
            certificate_id: output.certificate_id.ok_or_else(|| incomplete(OP, "certificateId"))?,
            certificate_arn: output.certificate_arn.ok_or_else(|| incomplete(OP, "certificateArn"))?,
            certificate_pem: output.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
            private_key_pem: None,
        })
    }

    pub(crate) async fn keys_and_certificate(&self) -> PortResult<IssuedCertificate> {
        const OP: &str = "CreateKeysAndCertificate";
        let output = self
            .client
            .create_keys_and_certificate()
            .set_as_active(false)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(IssuedCertificate {
            certificate_id: output.certificate_id.ok_or_else(|| incomplete(OP, "certificateId"))?,
            certificate_arn: output.certificate_arn.ok_or_else(|| incomplete(OP, "certificateArn"))?,
            certificate_pem: output.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
            private_key_pem: Some(
                output
                    .key_pair
                    .and_then(|k| k.private_key)
                    .ok_or_else(|| incomplete(OP, "keyPair.privateKey"))?,
            ),
        })
    }

    pub(crate) async fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.ready("DetachThingPrincipal").await;
        match self
            .client
            .detach_thing_principal()
            .thing_name(thing_name)
            .principal(certificate_arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("DetachThingPrincipal", e)),
        }
    }

    /// The names of every policy attached to a certificate, all pages.
    pub(crate) async fn policies(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        self.ready("ListAttachedPolicies").await;
        list_attached_policy_names(&self.client, certificate_arn)
            .await
            .map_err(|e| classify("ListAttachedPolicies", e))
    }

    pub(crate) async fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.ready("DetachPolicy").await;
        match self
            .client
            .detach_policy()
            .policy_name(policy_name)
            .target(certificate_arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("DetachPolicy", e)),
        }
    }

    pub(crate) async fn delete_certificate(&self, certificate_id: &str) -> PortResult<()> {
        self.ready("DeleteCertificate").await;
        match self
            .client
            .delete_certificate()
            .certificate_id(certificate_id)
            .force_delete(false)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("DeleteCertificate", e)),
        }
    }
}
