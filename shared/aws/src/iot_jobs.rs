//! IoT as a rotation reaches devices: Jobs, the data plane
//! ([`RotationIotAdapter`], whose certificate and policy calls go through
//! [`IotAdapter`]), and the account's job-execution events.
//!
//! The account's IoT event configuration, which the rotation completer needs
//! (`JOB_EXECUTION` events), is account-wide and shared with every other
//! system in the account, so only an operator changes it, at deploy time
//! (`onboard events --enable`); the functions only read it.

use aws_sdk_iot::Client;
use aws_sdk_iot::types::{Configuration, EventType};
use aws_sdk_iot::types::{JobStatus, PresignedUrlConfig, TargetSelection, TimeoutConfig};
use onboarding_domain::{
    CertificateRegistry, CertificateStatus, IssuedCertificate, JobDocument, JobExecution, PortError, PortErrorKind,
    PortResult, RegisteredCertificate, RotationIot, Strategy, ThingRegistry,
};

use crate::error::{classify, incomplete, invalid, is_not_found, service_code};
use crate::iot::IotAdapter;

/// Lifetime of the URLs AWS IoT presigns for server-keygen credentials (its maximum).
pub const PRESIGNED_URL_SECONDS: i64 = 3_600;

/// Whether the account publishes job-execution events (`DescribeEventConfigurations`).
///
/// # Errors
/// The classified SDK failure.
pub async fn job_execution_events_enabled(iot: &Client) -> PortResult<bool> {
    let out = iot
        .describe_event_configurations()
        .send()
        .await
        .map_err(|e| classify("DescribeEventConfigurations", e))?;
    Ok(out
        .event_configurations
        .and_then(|c| c.get(&EventType::JobExecution).map(|c| c.enabled))
        .unwrap_or(false))
}

/// Turns job-execution events on, changing no other event type; true when
/// they were off.
///
/// # Errors
/// The classified SDK failure.
pub async fn enable_job_execution_events(iot: &Client) -> PortResult<bool> {
    if job_execution_events_enabled(iot).await? {
        return Ok(false);
    }
    iot.update_event_configurations()
        .event_configurations(EventType::JobExecution, Configuration::builder().enabled(true).build())
        .send()
        .await
        .map_err(|e| classify("UpdateEventConfigurations", e))?;
    Ok(true)
}

// --- rotation ---------------------------------------------------------------

/// AWS IoT as rotation uses it: certificates, things and policies (control
/// plane), Jobs, and publishing to devices (data plane).
///
/// Publishing needs the account's own `iot:Data-ATS` endpoint: build the
/// data-plane client with [`crate::iot_data_client`] (the issuer does; the
/// rotator and the completer never publish).
#[derive(Debug, Clone)]
pub struct RotationIotAdapter {
    certificates: IotAdapter,
    iot: aws_sdk_iot::Client,
    data: aws_sdk_iotdataplane::Client,
    presign_role_arn: Option<String>,
}

impl RotationIotAdapter {
    /// `presign_role_arn` is the role AWS IoT assumes to presign the
    /// server-keygen credentials URLs (`presignedUrlConfig`); without it,
    /// server-keygen jobs are refused.
    pub fn new(iot: aws_sdk_iot::Client, data: aws_sdk_iotdataplane::Client, presign_role_arn: Option<String>) -> Self {
        Self {
            certificates: IotAdapter::new(iot.clone()),
            iot,
            data,
            presign_role_arn,
        }
    }
}

impl RotationIotAdapter {
    /// The same adapter with its control-plane calls paced under `pacer`
    /// (the operator's bulk commands: `onboard device retire --file`).
    #[must_use]
    pub fn paced(mut self, pacer: crate::pacing::ApiPacer) -> Self {
        self.certificates = IotAdapter::paced(self.iot.clone(), pacer);
        self
    }
}

/// Retirement's IoT calls, through the (possibly paced) [`IotAdapter`].
impl onboarding_domain::RetirementIot for RotationIotAdapter {
    async fn thing_membership(&self, thing_name: &str) -> PortResult<Option<onboarding_domain::ThingMembership>> {
        self.certificates.thing_membership(thing_name).await
    }

    async fn attached_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        self.certificates.attached_principals(thing_name).await
    }

    async fn principal_things(&self, principal_arn: &str) -> PortResult<Vec<String>> {
        self.certificates.principal_things(principal_arn).await
    }

    async fn leave_thing_group(&self, thing_name: &str, group: &str) -> PortResult<()> {
        self.certificates.leave_thing_group(thing_name, group).await
    }

    async fn leave_billing_group(&self, thing_name: &str, group: &str) -> PortResult<()> {
        self.certificates.leave_billing_group(thing_name, group).await
    }

    async fn delete_thing(&self, thing_name: &str) -> PortResult<()> {
        self.certificates.delete_thing(thing_name).await
    }
}

impl RotationIot for RotationIotAdapter {
    async fn create_job(
        &self,
        job_id: &str,
        thing_name: &str,
        document: &JobDocument,
        timeout_minutes: u32,
    ) -> PortResult<()> {
        const OP: &str = "CreateJob";
        let presigned = match (document.strategy, &self.presign_role_arn) {
            (Strategy::Csr, _) => None,
            (Strategy::ServerKeygen, Some(role)) => Some(
                PresignedUrlConfig::builder()
                    .role_arn(role)
                    .expires_in_sec(PRESIGNED_URL_SECONDS)
                    .build(),
            ),
            (Strategy::ServerKeygen, None) => {
                return Err(invalid(
                    OP,
                    "a server-keygen job needs a presign role (presignedUrlConfig), and none is configured",
                ));
            }
        };
        let body = serde_json::to_string(document).map_err(|e| invalid(OP, format!("job document: {e}")))?;
        let thing_arn = match self.iot.describe_thing().thing_name(thing_name).send().await {
            Ok(output) => output
                .thing_arn
                .ok_or_else(|| incomplete("DescribeThing", "thingArn"))?,
            Err(e) if is_not_found(&e) => {
                return Err(PortError::new(
                    "DescribeThing",
                    PortErrorKind::MissingResource,
                    format!("thing {thing_name} does not exist"),
                ));
            }
            Err(e) => return Err(classify("DescribeThing", e)),
        };
        let result = self
            .iot
            .create_job()
            .job_id(job_id)
            .targets(thing_arn)
            .target_selection(TargetSelection::Snapshot)
            .document(body)
            .description("certificate rotation")
            .timeout_config(
                TimeoutConfig::builder()
                    .in_progress_timeout_in_minutes(i64::from(timeout_minutes))
                    .build(),
            )
            .set_presigned_url_config(presigned)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The same attempt's job, created by an earlier try.
            Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => Ok(()),
            Err(e) => Err(classify(OP, e)),
        }
    }

    async fn job_execution(&self, job_id: &str, thing_name: &str) -> PortResult<Option<JobExecution>> {
        let output = match self
            .iot
            .describe_job_execution()
            .job_id(job_id)
            .thing_name(thing_name)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(classify("DescribeJobExecution", e)),
        };
        let seconds = |t: Option<&aws_sdk_iot::primitives::DateTime>| t.map(aws_sdk_iot::primitives::DateTime::secs);
        Ok(output.execution.map(|execution| JobExecution {
            status: execution
                .status
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            queued_at: seconds(execution.queued_at.as_ref()),
            started_at: seconds(execution.started_at.as_ref()),
            last_updated_at: seconds(execution.last_updated_at.as_ref()),
            status_details: execution
                .status_details
                .and_then(|d| d.details_map)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }))
    }

    async fn cancel_job(&self, job_id: &str) -> PortResult<()> {
        self.certificates.ready("CancelJob").await;
        let result = self
            .iot
            .cancel_job()
            .job_id(job_id)
            .force(true)
            .comment("certificate rotation given up")
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => classify("CancelJob", e),
        };
        if !matches!(error.kind, PortErrorKind::Invalid | PortErrorKind::Conflict) {
            return Err(error);
        }
        // A job that has already ended cannot be canceled; the error code for
        // that is not specific, so ask for the job's status.
        match self.iot.describe_job().job_id(job_id).send().await {
            Ok(output) => match output.job.and_then(|j| j.status) {
                Some(JobStatus::Canceled | JobStatus::Completed | JobStatus::DeletionInProgress) => Ok(()),
                _ => Err(error),
            },
            Err(e) if is_not_found(&e) => Ok(()),
            Err(_) => Err(error),
        }
    }

    async fn certificate_from_csr(&self, csr_pem: &str) -> PortResult<IssuedCertificate> {
        self.certificates.certificate_from_csr(csr_pem).await
    }

    async fn keys_and_certificate(&self) -> PortResult<IssuedCertificate> {
        self.certificates.keys_and_certificate().await
    }

    async fn certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
        self.certificates.describe_certificate(certificate_id).await
    }

    async fn set_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        self.certificates.set_certificate_status(certificate_id, status).await
    }

    async fn thing_principals(&self, thing_name: &str) -> PortResult<Vec<String>> {
        self.certificates.thing_principals_of_existing(thing_name).await
    }

    async fn attach_to_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.certificates
            .attach_certificate_exclusively(thing_name, certificate_arn)
            .await
    }

    async fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.certificates.detach_from_thing(thing_name, certificate_arn).await
    }

    async fn policies(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        self.certificates.policies(certificate_arn).await
    }

    async fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        ThingRegistry::attach_policy(&self.certificates, policy_name, certificate_arn).await
    }

    async fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.certificates.detach_policy(policy_name, certificate_arn).await
    }

    async fn delete_certificate(&self, certificate_id: &str) -> PortResult<()> {
        self.certificates.delete_certificate(certificate_id).await
    }

    async fn publish(&self, topic: &str, payload: &[u8]) -> PortResult<()> {
        self.data
            .publish()
            .topic(topic)
            .qos(1)
            .payload(aws_smithy_types::Blob::new(payload.to_vec()))
            .send()
            .await
            .map_err(|e| classify("Publish", e))?;
        Ok(())
    }
}

/// `DeleteConnection` on the data plane (which needs the account's own
/// `iot:Data-ATS` endpoint: build the client with [`crate::iot_data_client`]).
impl onboarding_domain::Connections for RotationIotAdapter {
    async fn disconnect(&self, client_id: &str) -> PortResult<bool> {
        let result = self
            .data
            .delete_connection()
            .client_id(client_id)
            .clean_session(true)
            .prevent_will_message(true)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // No client of that id is connected.
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(classify("DeleteConnection", e)),
        }
    }
}
