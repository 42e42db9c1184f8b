//! What operators do with AWS IoT (the `onboard` CLI): register and list
//! CAs, make claim certificates, put provisioning templates, and read one
//! thing or certificate. Free functions over an IoT client, like
//! [`crate::enable_job_execution_events`]; errors are [`OperatorError`]s,
//! `<operation> failed: <code>: <message>`.

use std::collections::HashMap;

use aws_sdk_iot::Client;
use aws_sdk_iot::operation::describe_certificate::{DescribeCertificateError, DescribeCertificateOutput};
use aws_sdk_iot::types::{CertificateStatus, ProvisioningHook, RegistrationConfig};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use crate::error::OperatorError;

// --- CAs ------------------------------------------------------------------------

/// A CA of the account as `onboard ca list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCa {
    pub certificate_id: String,
    /// `ACTIVE`, `INACTIVE`; empty when not told.
    pub status: String,
    /// `ENABLE` or `DISABLE`; empty when not told.
    pub auto_registration: String,
}

/// The JITP part of a CA registration: the template and the role AWS IoT
/// assumes to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitpRegistration {
    pub template_body: String,
    pub role_arn: String,
}

/// Whether AWS IoT has the CA `ca_certificate_id` (`DescribeCACertificate`).
///
/// # Errors
/// Any failure of `DescribeCACertificate` but a missing CA.
pub async fn ca_is_registered(iot: &Client, ca_certificate_id: &str) -> Result<bool, OperatorError> {
    match iot
        .describe_ca_certificate()
        .certificate_id(ca_certificate_id)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(OperatorError::new("DescribeCACertificate", &e)),
    }
}

fn auto_registration(description: Option<aws_sdk_iot::types::CaCertificateDescription>) -> String {
    description
        .and_then(|d| d.auto_registration_status)
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// The account's registration code: the common name of a CA's verification
/// certificate.
///
/// # Errors
/// The failure of `GetRegistrationCode`, or an answer without a code.
pub async fn registration_code(iot: &Client) -> Result<String, OperatorError> {
    iot.get_registration_code()
        .send()
        .await
        .map_err(|e| OperatorError::new("GetRegistrationCode", &e))?
        .registration_code
        .ok_or_else(|| OperatorError::answer("GetRegistrationCode returned no code"))
}

/// Registers a CA as `ACTIVE` with auto-registration on, with a JITP
/// template when `jitp` is given; its certificate id.
///
/// # Errors
/// The failure of `RegisterCACertificate`, or an answer without an id.
pub async fn register_ca_certificate(
    iot: &Client,
    ca_pem: &str,
    verification_pem: &str,
    jitp: Option<&JitpRegistration>,
) -> Result<String, OperatorError> {
    let registration_config = jitp.map(|jitp| {
        RegistrationConfig::builder()
            .template_body(&jitp.template_body)
            .role_arn(&jitp.role_arn)
            .build()
    });
    iot.register_ca_certificate()
        .ca_certificate(ca_pem)
        .verification_certificate(verification_pem)
        .set_as_active(true)
        .allow_auto_registration(true)
        .set_registration_config(registration_config)
        .send()
        .await
        .map_err(|e| OperatorError::new("RegisterCACertificate", &e))?
        .certificate_id
        .ok_or_else(|| OperatorError::answer("RegisterCACertificate returned no id"))
}

/// Every CA of the account (all pages), each described for its
/// auto-registration status, in the listing's order.
///
/// # Errors
/// The first failure of `ListCACertificates` or `DescribeCACertificate`.
pub async fn list_cas(iot: &Client) -> Result<Vec<ListedCa>, OperatorError> {
    let mut pages = iot.list_ca_certificates().into_paginator().send();
    let mut cas = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| OperatorError::new("ListCACertificates", &e))?;
        for ca in page.certificates() {
            let certificate_id = ca.certificate_id().unwrap_or_default().to_string();
            let described = iot
                .describe_ca_certificate()
                .certificate_id(&certificate_id)
                .send()
                .await
                .map_err(|e| OperatorError::new("DescribeCACertificate", &e))?;
            cas.push(ListedCa {
                status: ca.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                auto_registration: auto_registration(described.certificate_description),
                certificate_id,
            });
        }
    }
    Ok(cas)
}

/// How AWS IoT provisions a CA's devices itself (its `registrationConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaProvisioning {
    /// No template: the registrar provisions them (JITR).
    Registrar,
    /// A JITP template body and its role, as `onboard ca register --mode jitp` sets them.
    Jitp(JitpRegistration),
    /// A template referred to by name (set outside this tool).
    NamedTemplate(String),
}

/// A CA's `registrationConfig`, so that a CA replacing it can carry the same.
///
/// # Errors
/// The failure of `DescribeCACertificate`, a missing CA included.
pub async fn ca_provisioning(iot: &Client, ca_certificate_id: &str) -> Result<CaProvisioning, OperatorError> {
    let described = iot
        .describe_ca_certificate()
        .certificate_id(ca_certificate_id)
        .send()
        .await
        .map_err(|e| OperatorError::new("DescribeCACertificate", &e))?;
    let Some(config) = described.registration_config else {
        return Ok(CaProvisioning::Registrar);
    };
    let role_arn = config.role_arn().unwrap_or_default().to_string();
    if let Some(body) = config.template_body().filter(|b| !b.is_empty()) {
        return Ok(CaProvisioning::Jitp(JitpRegistration {
            template_body: body.to_string(),
            role_arn,
        }));
    }
    Ok(match config.template_name().filter(|n| !n.is_empty()) {
        Some(name) => CaProvisioning::NamedTemplate(name.to_string()),
        None => CaProvisioning::Registrar,
    })
}

// --- fleet provisioning ------------------------------------------------------------

/// A claim certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCertificate {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_pem: String,
    pub private_key_pem: String,
}

/// Makes an `ACTIVE` claim certificate with `policy` attached. The policy is
/// checked first, so no certificate is made for a policy that is not there;
/// a certificate whose policy could not be attached is set `INACTIVE`.
///
/// # Errors
/// The failing call (`GetPolicy <policy>`, `CreateKeysAndCertificate`,
/// `AttachPolicy <policy> (certificate <id> set INACTIVE)`), or an answer
/// without the certificate or key.
pub async fn create_claim_certificate(iot: &Client, policy: &str) -> Result<ClaimCertificate, OperatorError> {
    iot.get_policy()
        .policy_name(policy)
        .send()
        .await
        .map_err(|e| OperatorError::new(format!("GetPolicy {policy}"), &e))?;
    let created = iot
        .create_keys_and_certificate()
        .set_as_active(true)
        .send()
        .await
        .map_err(|e| OperatorError::new("CreateKeysAndCertificate", &e))?;
    let (Some(arn), Some(id), Some(pem), Some(key)) = (
        created.certificate_arn(),
        created.certificate_id(),
        created.certificate_pem(),
        created.key_pair().and_then(|k| k.private_key()),
    ) else {
        return Err(OperatorError::answer(
            "CreateKeysAndCertificate answered without the certificate or key",
        ));
    };
    if let Err(e) = iot.attach_policy().policy_name(policy).target(arn).send().await {
        // A claim without its policy is useless: do not leave it ACTIVE.
        let _ = iot
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Inactive)
            .send()
            .await;
        return Err(OperatorError::new(
            format!("AttachPolicy {policy} (certificate {id} set INACTIVE)"),
            &e,
        ));
    }
    Ok(ClaimCertificate {
        certificate_id: id.to_string(),
        certificate_arn: arn.to_string(),
        certificate_pem: pem.to_string(),
        private_key_pem: key.to_string(),
    })
}

/// What [`put_provisioning_template`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePut {
    Created,
    /// The template existed: the body is its new default version.
    Updated,
}

impl TemplatePut {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
        }
    }
}

/// Creates the fleet-provisioning template `name` (enabled, with its
/// provisioning role and pre-provisioning hook), or gives an existing one
/// `body` as its new default version.
///
/// # Errors
/// The failing call, named with the template (`DescribeProvisioningTemplate
/// <name>`, `CreateProvisioningTemplateVersion <name>`,
/// `CreateProvisioningTemplate <name>`).
pub async fn put_provisioning_template(
    iot: &Client,
    name: &str,
    body: &str,
    role_arn: &str,
    hook_arn: &str,
    hook_payload_version: &str,
) -> Result<TemplatePut, OperatorError> {
    let exists = match iot.describe_provisioning_template().template_name(name).send().await {
        Ok(_) => true,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            false
        }
        Err(e) => return Err(OperatorError::new(format!("DescribeProvisioningTemplate {name}"), &e)),
    };
    if exists {
        iot.create_provisioning_template_version()
            .template_name(name)
            .template_body(body)
            .set_as_default(true)
            .send()
            .await
            .map_err(|e| OperatorError::new(format!("CreateProvisioningTemplateVersion {name}"), &e))?;
        return Ok(TemplatePut::Updated);
    }
    let hook = ProvisioningHook::builder()
        .target_arn(hook_arn)
        .payload_version(hook_payload_version)
        .build()
        .map_err(|e| OperatorError::answer(e.to_string()))?;
    iot.create_provisioning_template()
        .template_name(name)
        .template_body(body)
        .provisioning_role_arn(role_arn)
        .pre_provisioning_hook(hook)
        .enabled(true)
        .send()
        .await
        .map_err(|e| OperatorError::new(format!("CreateProvisioningTemplate {name}"), &e))?;
    Ok(TemplatePut::Created)
}

// --- one thing, one certificate ----------------------------------------------------

/// A thing as `DescribeThing` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingDetails {
    pub thing_type_name: Option<String>,
    pub attributes: Option<HashMap<String, String>>,
    pub billing_group_name: Option<String>,
    pub version: i64,
}

/// The thing `thing_name`; `None` when there is none.
///
/// # Errors
/// Any other failure of `DescribeThing`.
pub async fn describe_thing(iot: &Client, thing_name: &str) -> Result<Option<ThingDetails>, OperatorError> {
    match iot.describe_thing().thing_name(thing_name).send().await {
        Ok(d) => Ok(Some(ThingDetails {
            thing_type_name: d.thing_type_name,
            attributes: d.attributes,
            billing_group_name: d.billing_group_name,
            version: d.version,
        })),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(OperatorError::new("DescribeThing", &e)),
    }
}

/// The principals (certificate ARNs) attached to a thing, all pages.
///
/// # Errors
/// The failure of `ListThingPrincipals`.
pub async fn thing_principal_arns(iot: &Client, thing_name: &str) -> Result<Vec<String>, OperatorError> {
    super::list_thing_principals(iot, thing_name)
        .await
        .map_err(|e| OperatorError::new("ListThingPrincipals", &e))
}

/// The names of the thing groups a thing is in, all pages.
///
/// # Errors
/// The failure of `ListThingGroupsForThing`.
pub async fn thing_group_names(iot: &Client, thing_name: &str) -> Result<Vec<String>, OperatorError> {
    let mut pages = iot
        .list_thing_groups_for_thing()
        .thing_name(thing_name)
        .into_paginator()
        .items()
        .send();
    let mut groups = Vec::new();
    while let Some(group) = pages.next().await {
        groups.extend(
            group
                .map_err(|e| OperatorError::new("ListThingGroupsForThing", &e))?
                .group_name,
        );
    }
    Ok(groups)
}

/// The names of the policies attached to a certificate, all pages.
///
/// # Errors
/// The failure of `ListAttachedPolicies`.
pub async fn attached_policy_names(iot: &Client, certificate_arn: &str) -> Result<Vec<String>, OperatorError> {
    super::list_attached_policy_names(iot, certificate_arn)
        .await
        .map_err(|e| OperatorError::new("ListAttachedPolicies", &e))
}

async fn describe_certificate(
    iot: &Client,
    certificate_id: &str,
) -> Result<DescribeCertificateOutput, SdkError<DescribeCertificateError, HttpResponse>> {
    iot.describe_certificate().certificate_id(certificate_id).send().await
}

fn status_of(described: DescribeCertificateOutput) -> Option<String> {
    described
        .certificate_description
        .and_then(|d| d.status)
        .map(|s| s.as_str().to_string())
}

/// A certificate's status (`ACTIVE`, `REVOKED`, …; `None` when not told).
///
/// # Errors
/// The failure of `DescribeCertificate`, a missing certificate included.
pub async fn certificate_status(iot: &Client, certificate_id: &str) -> Result<Option<String>, OperatorError> {
    describe_certificate(iot, certificate_id)
        .await
        .map(status_of)
        .map_err(|e| OperatorError::new("DescribeCertificate", &e))
}

/// Whether AWS IoT knows a certificate, and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateLookup {
    /// No such certificate (not registered, or deleted).
    Unknown,
    /// Registered, with this status (`None` when not told).
    Registered(Option<String>),
}

/// A certificate's status, or that AWS IoT has no such certificate.
///
/// # Errors
/// Any other failure of `DescribeCertificate`.
pub async fn lookup_certificate(iot: &Client, certificate_id: &str) -> Result<CertificateLookup, OperatorError> {
    match describe_certificate(iot, certificate_id).await {
        Ok(described) => Ok(CertificateLookup::Registered(status_of(described))),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(CertificateLookup::Unknown)
        }
        Err(e) => Err(OperatorError::new("DescribeCertificate", &e)),
    }
}
