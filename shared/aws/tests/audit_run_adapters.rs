//! The scheduled audit's adapters against SDK edge cases (aws-smithy-mocks):
//! the run item is written only on the condition of the version read, a
//! lost condition is "another invocation wrote first", never an error; an
//! unreadable version or finding is an error; findings go in batches of 25,
//! one request per key, what DynamoDB leaves unprocessed sent again; the
//! findings' cursor resumes where the Query stopped; a thing's principals
//! that are not certificates are left out, a deleted thing has none.

#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_iot::operation::list_thing_principals::{ListThingPrincipalsError, ListThingPrincipalsOutput};
use aws_sdk_iot::types::error::ResourceNotFoundException;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::{AuditCheck, AuditIot, AuditRunStore, Finding, PortErrorKind, ResourceKind, Severity};

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn dynamo(rules: &[&Rule]) -> DynamoInventory {
    DynamoInventory::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        }),
        "inventory",
    )
}

fn conditional_failed() -> PutItemError {
    PutItemError::ConditionalCheckFailedException(
        ConditionalCheckFailedException::builder()
            .message("The conditional request failed")
            .meta(meta(
                "ConditionalCheckFailedException",
                "The conditional request failed",
            ))
            .build(),
    )
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn finding(id: &str) -> Finding {
    Finding {
        check: AuditCheck::CertShared,
        severity: Severity::Critical,
        resource_kind: ResourceKind::Certificate,
        resource_id: id.to_string(),
        detail: format!("detail of {id}"),
        remedy: AuditCheck::CertShared.remedy().to_string(),
    }
}

#[tokio::test]
async fn the_run_item_is_written_on_the_version_read_and_a_lost_condition_is_false() {
    let first = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.condition_expression() == Some("attribute_not_exists(pk)")
                && r.item().and_then(|i| i.get("version")) == Some(&AttributeValue::N("1".into()))
                && r.item().and_then(|i| i.get("pk")) == Some(&s("AUDIT"))
                && r.item().and_then(|i| i.get("sk")) == Some(&s("RUN"))
        })
        .then_output(|| PutItemOutput::builder().build());
    assert!(dynamo(&[&first]).save_audit_run(None, "{}").await.expect("saved"));

    let next = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.condition_expression() == Some("#version = :expected")
                && r.expression_attribute_values().and_then(|v| v.get(":expected"))
                    == Some(&AttributeValue::N("7".into()))
                && r.item().and_then(|i| i.get("version")) == Some(&AttributeValue::N("8".into()))
        })
        .then_output(|| PutItemOutput::builder().build());
    assert!(dynamo(&[&next]).save_audit_run(Some(7), "{}").await.expect("saved"));

    let lost = mock!(aws_sdk_dynamodb::Client::put_item).then_error(conditional_failed);
    assert!(
        !dynamo(&[&lost])
            .save_audit_run(Some(7), "{}")
            .await
            .expect("lost, quietly")
    );
}

#[tokio::test]
async fn a_run_item_without_a_numeric_version_is_an_error_and_none_is_no_run() {
    let bad = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .set_item(Some(HashMap::from([
                ("pk".to_string(), s("AUDIT")),
                ("sk".to_string(), s("RUN")),
                ("state".to_string(), s("{}")),
                ("version".to_string(), s("seven")),
            ])))
            .build()
    });
    let error = dynamo(&[&bad]).audit_run().await.expect_err("refused");
    assert_eq!(error.kind, PortErrorKind::Invalid, "{error}");

    let good = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .set_item(Some(HashMap::from([
                ("state".to_string(), s("{\"x\":1}")),
                ("version".to_string(), AttributeValue::N("3".into())),
            ])))
            .build()
    });
    let run = dynamo(&[&good]).audit_run().await.expect("read").expect("a run");
    assert_eq!((run.state.as_str(), run.version), ("{\"x\":1}", 3));

    let none = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    assert_eq!(dynamo(&[&none]).audit_run().await.expect("read"), None);
}

#[tokio::test]
async fn findings_go_in_batches_of_25_one_request_per_key_and_what_is_left_is_sent_again() {
    let sent: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = sent.clone();
    let batch = mock!(aws_sdk_dynamodb::Client::batch_write_item)
        .match_requests(move |r| {
            let n = r.request_items().and_then(|m| m.get("inventory")).map_or(0, Vec::len);
            seen.lock().expect("lock").push(n);
            true
        })
        .sequence()
        .output(|| {
            // The first call leaves one write unprocessed.
            let put = PutRequest::builder()
                .set_item(Some(HashMap::from([
                    ("pk".to_string(), s("AUDIT#1")),
                    ("sk".to_string(), s("x")),
                ])))
                .build()
                .expect("put");
            BatchWriteItemOutput::builder()
                .unprocessed_items("inventory", vec![WriteRequest::builder().put_request(put).build()])
                .build()
        })
        .output(|| BatchWriteItemOutput::builder().build())
        .repeatedly()
        .build();
    // 30 distinct findings and one repeated: 30 keys.
    let mut findings: Vec<Finding> = (0..30).map(|i| finding(&format!("c{i:02}"))).collect();
    findings.push(finding("c00"));
    dynamo(&[&batch])
        .put_audit_findings(1, &findings, 99)
        .await
        .expect("written");
    assert_eq!(*sent.lock().expect("lock"), vec![25, 1, 5]);
}

#[tokio::test]
async fn findings_are_read_back_page_by_page_and_an_unreadable_one_is_an_error() {
    let item = |id: &str| {
        HashMap::from([
            ("pk".to_string(), s("AUDIT#5")),
            ("sk".to_string(), s(&format!("CERT_SHARED#CERTIFICATE#{id}"))),
            ("check".to_string(), s("CERT_SHARED")),
            ("severity".to_string(), s("critical")),
            ("resourceKind".to_string(), s("CERTIFICATE")),
            ("resourceId".to_string(), s(id)),
            ("detail".to_string(), s("d")),
        ])
    };
    let first = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| {
            r.exclusive_start_key().is_none()
                && r.expression_attribute_values().and_then(|v| v.get(":pk")) == Some(&s("AUDIT#5"))
        })
        .then_output(move || {
            QueryOutput::builder()
                .items(item("a"))
                .set_last_evaluated_key(Some(HashMap::from([
                    ("pk".to_string(), s("AUDIT#5")),
                    ("sk".to_string(), s("CERT_SHARED#CERTIFICATE#a")),
                ])))
                .build()
        });
    let store = dynamo(&[&first]);
    let page = store.audit_findings_page(5, None, 1).await.expect("page");
    assert_eq!(page.items[0].resource_id, "a");
    assert_eq!(page.items[0].remedy, AuditCheck::CertShared.remedy());
    let cursor = page.cursor.expect("more");

    let second = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| {
            r.exclusive_start_key().and_then(|k| k.get("sk")) == Some(&s("CERT_SHARED#CERTIFICATE#a"))
                && r.exclusive_start_key().and_then(|k| k.get("pk")) == Some(&s("AUDIT#5"))
        })
        .then_output(|| {
            let mut bad = HashMap::from([("sk".to_string(), s("NO_SUCH#CERTIFICATE#b"))]);
            bad.insert("check".to_string(), s("NO_SUCH"));
            QueryOutput::builder().items(bad).build()
        });
    let error = dynamo(&[&second])
        .audit_findings_page(5, Some(&cursor), 1)
        .await
        .expect_err("unreadable");
    assert_eq!(error.kind, PortErrorKind::Invalid, "{error}");
    assert!(dynamo(&[]).audit_findings_page(5, Some("not json"), 1).await.is_err());
}

#[tokio::test]
async fn an_older_runs_summary_never_replaces_a_later_ones() {
    let guarded = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.condition_expression() == Some("attribute_not_exists(pk) OR #runId <= :runId")
                && r.item().and_then(|i| i.get("sk")) == Some(&s("LATEST"))
        })
        .then_error(conditional_failed);
    assert!(
        !dynamo(&[&guarded])
            .save_latest_audit(1, "{}")
            .await
            .expect("refused quietly")
    );
}

#[tokio::test]
async fn a_things_certificates_leave_other_principals_out_and_a_deleted_thing_has_none() {
    let listed = mock!(aws_sdk_iot::Client::list_thing_principals).then_output(|| {
        ListThingPrincipalsOutput::builder()
            .principals("arn:aws:iot:eu-west-1:123456789012:cert/abc")
            .principals("arn:aws:iam::123456789012:role/someone")
            .principals("arn:aws:iot:eu-west-1:123456789012:cert/def")
            .build()
    });
    let iot = |rules: &[&Rule]| {
        IotAdapter::new(mock_client!(aws_sdk_iot, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_iot::config::retry::RetryConfig::disabled())
        }))
    };
    assert_eq!(
        iot(&[&listed]).certificates_of_thing("t").await.expect("read"),
        vec!["abc".to_string(), "def".to_string()]
    );
    let gone = mock!(aws_sdk_iot::Client::list_thing_principals).then_error(|| {
        ListThingPrincipalsError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("no thing")
                .meta(meta("ResourceNotFoundException", "no thing"))
                .build(),
        )
    });
    assert!(iot(&[&gone]).certificates_of_thing("t").await.expect("read").is_empty());
}
