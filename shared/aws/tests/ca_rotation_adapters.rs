//! The CA rotation's adapter calls under `aws-smithy-mocks`: what
//! `DescribeCACertificate` answers are read as (auto-registration only on an
//! explicit ENABLE), the exact `UpdateCACertificate` requests, the listing's
//! markers as `ca_usage` pages through them, and a CA's JITP configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::operation::describe_ca_certificate::{DescribeCACertificateError, DescribeCaCertificateOutput};
use aws_sdk_iot::operation::list_certificates_by_ca::ListCertificatesByCaOutput;
use aws_sdk_iot::operation::update_ca_certificate::UpdateCaCertificateOutput;
use aws_sdk_iot::types::error::ResourceNotFoundException;
use aws_sdk_iot::types::{
    AutoRegistrationStatus, CaCertificateDescription, CaCertificateStatus, Certificate, RegistrationConfig,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{CaProvisioning, IotAdapter, JitpRegistration, ca_provisioning};
use onboarding_domain::{CaRegistry, CertificateStatus, PortErrorKind, ca_usage};

const CA_ID: &str = "aa11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";

fn client(rules: &[&Rule]) -> aws_sdk_iot::Client {
    mock_client!(aws_sdk_iot, RuleMode::MatchAny, rules, |c| {
        c.retry_config(RetryConfig::disabled())
    })
}

fn iot(rules: &[&Rule]) -> IotAdapter {
    IotAdapter::new(client(rules))
}

fn described(auto: Option<AutoRegistrationStatus>, pem: Option<&str>) -> DescribeCaCertificateOutput {
    DescribeCaCertificateOutput::builder()
        .certificate_description(
            CaCertificateDescription::builder()
                .certificate_id(CA_ID)
                .status(CaCertificateStatus::Active)
                .set_auto_registration_status(auto)
                .set_certificate_pem(pem.map(str::to_string))
                .build(),
        )
        .build()
}

#[tokio::test]
async fn auto_registration_counts_only_when_iot_says_enable() {
    for (auto, expected) in [
        (Some(AutoRegistrationStatus::Enable), true),
        (Some(AutoRegistrationStatus::Disable), false),
        (None, false),
    ] {
        let rule = mock!(aws_sdk_iot::Client::describe_ca_certificate)
            .match_requests(|r| r.certificate_id() == Some(CA_ID))
            .then_output(move || described(auto.clone(), Some(PEM)));
        let state = iot(&[&rule]).ca_state(CA_ID).await.unwrap().unwrap();
        assert_eq!(state.auto_registration, expected);
        assert_eq!(state.status, CertificateStatus::Active);
        assert_eq!(state.pem, PEM);
    }
}

#[tokio::test]
async fn a_missing_ca_is_none_and_an_answer_without_pem_is_invalid() {
    let missing = mock!(aws_sdk_iot::Client::describe_ca_certificate).then_error(|| {
        DescribeCACertificateError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("no such CA")
                .meta(
                    ErrorMetadata::builder()
                        .code("ResourceNotFoundException")
                        .message("no such CA")
                        .build(),
                )
                .build(),
        )
    });
    assert_eq!(iot(&[&missing]).ca_state(CA_ID).await.unwrap(), None);
    let no_pem = mock!(aws_sdk_iot::Client::describe_ca_certificate).then_output(|| described(None, None));
    let error = iot(&[&no_pem]).ca_state(CA_ID).await.unwrap_err();
    assert_eq!(error.kind, PortErrorKind::Invalid);
}

#[tokio::test]
async fn updates_send_exactly_the_change_asked_for() {
    let auto_off = mock!(aws_sdk_iot::Client::update_ca_certificate)
        .match_requests(|r| {
            r.certificate_id() == Some(CA_ID)
                && r.new_auto_registration_status() == Some(&AutoRegistrationStatus::Disable)
                && r.new_status().is_none()
        })
        .then_output(|| UpdateCaCertificateOutput::builder().build());
    let inactive = mock!(aws_sdk_iot::Client::update_ca_certificate)
        .match_requests(|r| {
            r.certificate_id() == Some(CA_ID)
                && r.new_status() == Some(&CaCertificateStatus::Inactive)
                && r.new_auto_registration_status().is_none()
        })
        .then_output(|| UpdateCaCertificateOutput::builder().build());
    let adapter = iot(&[&auto_off, &inactive]);
    adapter.set_ca_auto_registration(CA_ID, false).await.unwrap();
    adapter
        .set_ca_status(CA_ID, &CertificateStatus::Inactive)
        .await
        .unwrap();
    assert_eq!((auto_off.num_calls(), inactive.num_calls()), (1, 1));
    // A status a CA cannot have is refused before any call.
    let error = adapter
        .set_ca_status(CA_ID, &CertificateStatus::Revoked)
        .await
        .unwrap_err();
    assert_eq!(error.kind, PortErrorKind::Invalid);
    assert_eq!(inactive.num_calls(), 1);
}

fn listed(id: &str, status: aws_sdk_iot::types::CertificateStatus, created: i64) -> Certificate {
    Certificate::builder()
        .certificate_id(id)
        .certificate_arn(format!("arn:aws:iot:us-east-1:123456789012:cert/{id}"))
        .status(status)
        .creation_date(DateTime::from_secs(created))
        .build()
}

/// Pages follow `nextMarker`, and an empty marker ends the listing as a
/// missing one does (the emulator and AWS differ on which they send).
#[tokio::test]
async fn usage_follows_markers_and_stops_on_an_empty_one() {
    use aws_sdk_iot::types::CertificateStatus as S;
    let first = mock!(aws_sdk_iot::Client::list_certificates_by_ca)
        .match_requests(|r| r.ca_certificate_id() == Some(CA_ID) && r.marker().is_none() && r.page_size() == Some(250))
        .then_output(|| {
            ListCertificatesByCaOutput::builder()
                .certificates(listed("c1", S::Active, 100))
                .certificates(listed("c2", S::Revoked, 300))
                .next_marker("m1")
                .build()
        });
    let second = mock!(aws_sdk_iot::Client::list_certificates_by_ca)
        .match_requests(|r| r.marker() == Some("m1"))
        .then_output(|| {
            ListCertificatesByCaOutput::builder()
                .certificates(listed("c3", S::PendingActivation, 200))
                .next_marker("")
                .build()
        });
    let adapter = iot(&[&first, &second]);
    let usage = ca_usage(&adapter, CA_ID, 10).await.unwrap();
    assert_eq!((usage.active, usage.revoked, usage.pending_activation), (1, 1, 1));
    assert_eq!(usage.newest_created_at, Some(300));
    let in_use: Vec<&str> = usage.in_use_sample.iter().map(|c| c.certificate_id.as_str()).collect();
    assert_eq!(in_use, ["c1", "c3"]);
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_cas_jitp_configuration_is_read_to_be_carried_over() {
    let cases = [
        (None, CaProvisioning::Registrar),
        (
            Some(
                RegistrationConfig::builder()
                    .template_body("{}")
                    .role_arn("arn:aws:iam::1:role/jitp")
                    .build(),
            ),
            CaProvisioning::Jitp(JitpRegistration {
                template_body: "{}".into(),
                role_arn: "arn:aws:iam::1:role/jitp".into(),
            }),
        ),
        (
            Some(RegistrationConfig::builder().template_name("named").build()),
            CaProvisioning::NamedTemplate("named".into()),
        ),
        (Some(RegistrationConfig::builder().build()), CaProvisioning::Registrar),
    ];
    for (config, expected) in cases {
        let rule = mock!(aws_sdk_iot::Client::describe_ca_certificate).then_output(move || {
            DescribeCaCertificateOutput::builder()
                .set_registration_config(config.clone())
                .build()
        });
        assert_eq!(ca_provisioning(&client(&[&rule]), CA_ID).await.unwrap(), expected);
    }
}
