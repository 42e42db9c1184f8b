//! The bulk import's IoT calls through `aws-smithy-mocks`: the requests the
//! adapter sends (status `INACTIVE`, the CA's PEM or none) and how each
//! answer IoT can give is classified for the import.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::operation::register_certificate::{RegisterCertificateError, RegisterCertificateOutput};
use aws_sdk_iot::operation::register_certificate_without_ca::{
    RegisterCertificateWithoutCAError, RegisterCertificateWithoutCaOutput,
};
use aws_sdk_iot::types::CertificateStatus as SdkStatus;
use aws_sdk_iot::types::error::{
    CertificateStateException, CertificateValidationException, ResourceAlreadyExistsException, ThrottlingException,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{ApiPacer, ApiQuotas, IotAdapter};
use onboarding_domain::{CertificateImport, PortErrorKind, Registration};

const CERT_ID: &str = "1f6cbd0a2d5e4b1c8e9f00112233445566778899aabbccddeeff001122334455";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBdevice\n-----END CERTIFICATE-----\n";
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn iot(rules: &[&Rule]) -> IotAdapter {
    IotAdapter::new(mock_client!(aws_sdk_iot, RuleMode::MatchAny, rules, |c| {
        c.retry_config(RetryConfig::disabled())
    }))
}

#[tokio::test]
async fn under_a_ca_registers_inactive_with_the_ca_pem() {
    let register = mock!(aws_sdk_iot::Client::register_certificate)
        .match_requests(|r| {
            r.certificate_pem() == Some(PEM)
                && r.ca_certificate_pem() == Some(CA_PEM)
                && r.status() == Some(&SdkStatus::Inactive)
        })
        .then_output(|| RegisterCertificateOutput::builder().certificate_id(CERT_ID).build());
    let id = iot(&[&register])
        .register_certificate(PEM, Registration::UnderCa { ca_pem: CA_PEM })
        .await
        .unwrap();
    assert_eq!(id, CERT_ID);
    assert_eq!(register.num_calls(), 1);
}

#[tokio::test]
async fn without_a_ca_registers_inactive_with_no_ca() {
    let register = mock!(aws_sdk_iot::Client::register_certificate_without_ca)
        .match_requests(|r| r.certificate_pem() == Some(PEM) && r.status() == Some(&SdkStatus::Inactive))
        .then_output(|| {
            RegisterCertificateWithoutCaOutput::builder()
                .certificate_id(CERT_ID)
                .build()
        });
    let id = iot(&[&register])
        .register_certificate(PEM, Registration::WithoutCa)
        .await
        .unwrap();
    assert_eq!(id, CERT_ID);
    assert_eq!(register.num_calls(), 1);
}

#[tokio::test]
async fn already_registered_is_a_conflict_and_refusals_are_invalid() {
    type MakeError = fn() -> RegisterCertificateError;
    let cases: Vec<(MakeError, PortErrorKind)> = vec![
        (
            || {
                RegisterCertificateError::ResourceAlreadyExistsException(
                    ResourceAlreadyExistsException::builder()
                        .message("The certificate is already provisioned or registered")
                        .resource_id(CERT_ID)
                        .meta(meta("ResourceAlreadyExistsException", "already registered"))
                        .build(),
                )
            },
            PortErrorKind::Conflict,
        ),
        (
            || {
                RegisterCertificateError::CertificateValidationException(
                    CertificateValidationException::builder()
                        .message("The signature of the certificate failed verification")
                        .meta(meta("CertificateValidationException", "signature"))
                        .build(),
                )
            },
            PortErrorKind::Invalid,
        ),
        (
            || {
                RegisterCertificateError::CertificateStateException(
                    CertificateStateException::builder()
                        .message("The CA certificate is not active")
                        .meta(meta("CertificateStateException", "CA not active"))
                        .build(),
                )
            },
            PortErrorKind::Invalid,
        ),
        (
            || {
                RegisterCertificateError::ThrottlingException(
                    ThrottlingException::builder()
                        .message("Rate exceeded")
                        .meta(meta("ThrottlingException", "Rate exceeded"))
                        .build(),
                )
            },
            PortErrorKind::Transient,
        ),
    ];
    for (error, kind) in cases {
        let code = format!("{:?}", error());
        let register = mock!(aws_sdk_iot::Client::register_certificate).then_error(error);
        let e = iot(&[&register])
            .register_certificate(PEM, Registration::UnderCa { ca_pem: CA_PEM })
            .await
            .unwrap_err();
        assert_eq!(e.kind, kind, "{code}");
        assert_eq!(e.operation, "RegisterCertificate");
    }
    let exists = mock!(aws_sdk_iot::Client::register_certificate_without_ca).then_error(|| {
        RegisterCertificateWithoutCAError::ResourceAlreadyExistsException(
            ResourceAlreadyExistsException::builder()
                .message("exists")
                .meta(meta("ResourceAlreadyExistsException", "exists"))
                .build(),
        )
    });
    let e = iot(&[&exists])
        .register_certificate(PEM, Registration::WithoutCa)
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.operation),
        (PortErrorKind::Conflict, "RegisterCertificateWithoutCA")
    );
}

#[tokio::test]
async fn a_throttle_is_retried_by_the_sdk_then_succeeds() {
    let throttled = mock!(aws_sdk_iot::Client::register_certificate)
        .sequence()
        .error(|| {
            RegisterCertificateError::ThrottlingException(
                ThrottlingException::builder()
                    .message("Rate exceeded")
                    .meta(meta("ThrottlingException", "Rate exceeded"))
                    .build(),
            )
        })
        .output(|| RegisterCertificateOutput::builder().certificate_id(CERT_ID).build())
        .build();
    let client = mock_client!(aws_sdk_iot, RuleMode::Sequential, &[&throttled], |c| {
        c.retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
    });
    let id = IotAdapter::new(client)
        .register_certificate(PEM, Registration::UnderCa { ca_pem: CA_PEM })
        .await
        .unwrap();
    assert_eq!(id, CERT_ID);
    assert_eq!(throttled.num_calls(), 2);
}

#[tokio::test]
async fn registrations_are_paced_at_their_default_quota() {
    assert_eq!(ApiQuotas::default().get("RegisterCertificate"), Some(10.0));
    assert_eq!(ApiQuotas::default().get("RegisterCertificateWithoutCA"), Some(10.0));
    let register = mock!(aws_sdk_iot::Client::register_certificate)
        .then_output(|| RegisterCertificateOutput::builder().certificate_id(CERT_ID).build());
    let client = mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&register], |c| {
        c.retry_config(RetryConfig::disabled())
    });
    // 10 per second with a one-second bucket: the 21st call waits about a second
    // past the 11th, so 21 calls take at least one second (a lower bound,
    // never an upper one: no timed assertion on speed).
    let adapter = IotAdapter::paced(client, ApiPacer::new(&ApiQuotas::default(), 1));
    let start = tokio::time::Instant::now();
    for _ in 0..21 {
        adapter
            .register_certificate(PEM, Registration::UnderCa { ca_pem: CA_PEM })
            .await
            .unwrap();
    }
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
    assert_eq!(register.num_calls(), 21);
}
