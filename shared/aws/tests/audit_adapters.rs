//! The fleet audit's adapters against SDK edge cases (aws-smithy-mocks): a
//! deleted policy or certificate is "gone", not an error; a throttled read
//! is a transient error, never an empty answer; every page of the things a
//! certificate is attached to is read; the inventory scan's cursor resumes
//! where DynamoDB stopped, and an item it cannot read fails the scan.

#![allow(clippy::expect_used)]

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::operation::describe_certificate::{DescribeCertificateError, DescribeCertificateOutput};
use aws_sdk_iot::operation::get_policy::{GetPolicyError, GetPolicyOutput};
use aws_sdk_iot::operation::list_principal_things::ListPrincipalThingsOutput;
use aws_sdk_iot::types::error::{ResourceNotFoundException, ThrottlingException};
use aws_sdk_iot::types::{CertificateDescription, CertificateStatus as IotStatus};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::{AuditInventory, AuditIot, CertificateStatus, InventoryItem, PortErrorKind, RecordStatus};

const ARN: &str = "arn:aws:iot:eu-west-1:123456789012:cert/abc";

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn iot(rules: &[&Rule]) -> IotAdapter {
    IotAdapter::new(mock_client!(aws_sdk_iot, RuleMode::MatchAny, rules, |c| {
        c.retry_config(RetryConfig::disabled())
    }))
}

fn dynamo(rules: &[&Rule]) -> DynamoInventory {
    DynamoInventory::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        }),
        "inventory",
    )
}

#[tokio::test]
async fn a_deleted_policy_is_none_and_a_throttled_get_policy_is_transient() {
    let gone = mock!(aws_sdk_iot::Client::get_policy).then_error(|| {
        GetPolicyError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("no policy")
                .meta(meta("ResourceNotFoundException", "no policy"))
                .build(),
        )
    });
    assert_eq!(iot(&[&gone]).policy_document("p").await.expect("read"), None);

    let throttled = mock!(aws_sdk_iot::Client::get_policy).then_error(|| {
        GetPolicyError::ThrottlingException(
            ThrottlingException::builder()
                .message("Rate exceeded")
                .meta(meta("ThrottlingException", "Rate exceeded"))
                .build(),
        )
    });
    let error = iot(&[&throttled]).policy_document("p").await.expect_err("throttled");
    assert_eq!(error.kind, PortErrorKind::Transient, "{error}");

    let found = mock!(aws_sdk_iot::Client::get_policy)
        .match_requests(|r| r.policy_name() == Some("device"))
        .then_output(|| GetPolicyOutput::builder().policy_document("{\"Statement\":[]}").build());
    assert_eq!(
        iot(&[&found]).policy_document("device").await.expect("read").as_deref(),
        Some("{\"Statement\":[]}")
    );
}

#[tokio::test]
async fn a_described_certificate_carries_its_creation_date_and_a_deleted_one_is_none() {
    let described = mock!(aws_sdk_iot::Client::describe_certificate).then_output(|| {
        DescribeCertificateOutput::builder()
            .certificate_description(
                CertificateDescription::builder()
                    .certificate_id("abc")
                    .certificate_arn(ARN)
                    .status(IotStatus::Active)
                    .certificate_pem("PEM")
                    .creation_date(DateTime::from_secs(1_700_000_000))
                    .build(),
            )
            .build()
    });
    let d = iot(&[&described])
        .audited_certificate("abc")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(d.created_at, Some(1_700_000_000));
    assert_eq!(d.certificate.status, CertificateStatus::Active);
    assert_eq!(
        d.certificate.ca_certificate_id, None,
        "from CreateCertificateFromCsr: no CA"
    );

    let gone = mock!(aws_sdk_iot::Client::describe_certificate).then_error(|| {
        DescribeCertificateError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("gone")
                .meta(meta("ResourceNotFoundException", "gone"))
                .build(),
        )
    });
    assert_eq!(iot(&[&gone]).audited_certificate("abc").await.expect("read"), None);
}

#[tokio::test]
async fn every_page_of_a_certificates_things_is_read() {
    let first = mock!(aws_sdk_iot::Client::list_principal_things)
        .match_requests(|r| r.next_token().is_none())
        .then_output(|| {
            ListPrincipalThingsOutput::builder()
                .things("t1")
                .next_token("more")
                .build()
        });
    let second = mock!(aws_sdk_iot::Client::list_principal_things)
        .match_requests(|r| r.next_token() == Some("more"))
        .then_output(|| ListPrincipalThingsOutput::builder().things("t2").build());
    let things = iot(&[&first, &second]).things_of_certificate(ARN).await.expect("read");
    assert_eq!(things, vec!["t1".to_string(), "t2".to_string()]);
}

fn item(pairs: &[(&str, &str)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
        .collect()
}

#[tokio::test]
async fn the_inventory_scan_reads_records_and_rotations_and_resumes_from_its_cursor() {
    let first = mock!(aws_sdk_dynamodb::Client::scan)
        .match_requests(|r| r.exclusive_start_key().is_none() && r.limit() == Some(2))
        .then_output(|| {
            ScanOutput::builder()
                .items(item(&[
                    ("pk", "CERT#abc"),
                    ("sk", "CERT"),
                    ("certificateId", "abc"),
                    ("caCertificateId", "ca"),
                    ("status", "PROVISIONED"),
                ]))
                .set_last_evaluated_key(Some(item(&[("pk", "CERT#abc"), ("sk", "CERT")])))
                .build()
        });
    let second = mock!(aws_sdk_dynamodb::Client::scan)
        .match_requests(|r| {
            r.exclusive_start_key()
                .and_then(|k| k.get("pk"))
                .and_then(|v| v.as_s().ok())
                .is_some_and(|pk| pk == "CERT#abc")
        })
        .then_output(|| ScanOutput::builder().build());
    let inventory = dynamo(&[&first, &second]);
    let page = inventory.inventory_page(None, 2).await.expect("first page");
    assert!(matches!(&page.items[..], [InventoryItem::Record(r)] if r.status == RecordStatus::Provisioned));
    let cursor = page.cursor.expect("more");
    let page = inventory.inventory_page(Some(&cursor), 2).await.expect("second page");
    assert!(page.items.is_empty());
    assert_eq!(page.cursor, None);
    assert_eq!(second.num_calls(), 1);
}

#[tokio::test]
async fn an_unreadable_inventory_item_fails_the_scan_and_so_does_a_forged_cursor() {
    let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| {
        ScanOutput::builder()
            .items(item(&[("pk", "CERT#abc"), ("sk", "CERT"), ("status", "NONSENSE")]))
            .build()
    });
    let inventory = dynamo(&[&scan]);
    let error = inventory.inventory_page(None, 10).await.expect_err("unreadable");
    assert_eq!(error.kind, PortErrorKind::Invalid, "{error}");
    let error = inventory
        .inventory_page(Some("not json"), 10)
        .await
        .expect_err("forged");
    assert_eq!(error.kind, PortErrorKind::Invalid, "{error}");
}
