//! SDK edge cases the emergency revocation relies on, driven through
//! `aws-smithy-mocks`: the claim on a record is conditional and a lost
//! condition means "revoked already"; the held name claim reports its
//! holder; a transfer never moves a held claim; a thing or certificate IoT
//! does not have is a `MissingResource` (which the workflow reads as "none").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsError;
use aws_sdk_iot::operation::update_certificate::{UpdateCertificateError, UpdateCertificateOutput};
use aws_sdk_iot::types::error::ResourceNotFoundException;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{DynamoInventory, RotationIotAdapter};
use onboarding_domain::{
    CertificateRecord, CertificateStatus, Connections, DenyKey, NameClaim, NameClaims, PortErrorKind, RecordStatus,
    RevocationStore, RotationIot,
};

const CERT_ID: &str = "1f6cbd0a2d5e4b1c8e9f00112233445566778899aabbccddeeff001122334455";
const OTHER_ID: &str = "2f6cbd0a2d5e4b1c8e9f00112233445566778899aabbccddeeff001122334455";
const CA_ID: &str = "aa11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900";
const THING: &str = "sensor-0042";
const TABLE: &str = "inventory";
const NOW: i64 = 1_900_000_000;

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn dynamo(rules: &[&Rule]) -> DynamoInventory {
    DynamoInventory::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        }),
        TABLE,
    )
}

fn iot(rules: &[&Rule]) -> RotationIotAdapter {
    RotationIotAdapter::new(
        mock_client!(aws_sdk_iot, RuleMode::MatchAny, rules, |c| {
            c.retry_config(RetryConfig::disabled())
        }),
        mock_client!(aws_sdk_iotdataplane, RuleMode::MatchAny, &[], |c| {
            c.retry_config(aws_sdk_iotdataplane::config::retry::RetryConfig::disabled())
        }),
        None,
    )
}

fn ccf(item: Option<HashMap<String, AttributeValue>>) -> ConditionalCheckFailedException {
    ConditionalCheckFailedException::builder()
        .message("The conditional request failed")
        .set_item(item)
        .meta(meta(
            "ConditionalCheckFailedException",
            "The conditional request failed",
        ))
        .build()
}

fn not_found() -> ResourceNotFoundException {
    ResourceNotFoundException::builder()
        .message("not found")
        .meta(meta("ResourceNotFoundException", "not found"))
        .build()
}

fn record() -> CertificateRecord {
    let mut record = CertificateRecord::bare(CERT_ID, CA_ID, RecordStatus::Revoked, NOW);
    record.thing_name = Some(THING.into());
    record.serial = Some("0abc".into());
    record
}

#[tokio::test]
async fn the_revocation_claim_is_conditional_and_leaves_the_expiry_index() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            let expression = req.update_expression().unwrap_or_default();
            let values = req.expression_attribute_values();
            req.table_name() == Some(TABLE)
                && req.key().and_then(|k| k.get("pk")) == Some(&s(&format!("CERT#{CERT_ID}")))
                && req.condition_expression() == Some("attribute_not_exists(pk) OR #status <> :revoked")
                && expression.contains("#status = :revoked")
                && expression.contains("REMOVE reasonCode, expiryShard, expiryKey")
                && expression.contains("thingName = if_not_exists(thingName, :thing)")
                && values.and_then(|v| v.get(":reason")) == Some(&s("stolen"))
                && values.and_then(|v| v.get(":revoked")) == Some(&s("REVOKED"))
        })
        .then_output(|| UpdateItemOutput::builder().build());
    let inventory = dynamo(&[&update]);
    assert!(inventory.claim_revocation(&record(), "stolen", NOW).await.unwrap());
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn a_lost_revocation_claim_means_revoked_already() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .then_error(|| UpdateItemError::ConditionalCheckFailedException(ccf(None)));
    let inventory = dynamo(&[&update]);
    assert!(!inventory.claim_revocation(&record(), "stolen", NOW).await.unwrap());
}

#[tokio::test]
async fn a_held_name_claim_reports_another_holder() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            req.condition_expression() == Some("attribute_not_exists(pk) OR certificateId = :me")
                && req
                    .update_expression()
                    .is_some_and(|e| e.contains("#heldFor = :revoked"))
                && req.return_values_on_condition_check_failure() == Some(&ReturnValuesOnConditionCheckFailure::AllOld)
        })
        .then_error(|| {
            UpdateItemError::ConditionalCheckFailedException(ccf(Some(HashMap::from([(
                "certificateId".to_string(),
                s(OTHER_ID),
            )]))))
        });
    let inventory = dynamo(&[&update]);
    assert_eq!(
        inventory.hold_thing_name(THING, CERT_ID, NOW).await.unwrap(),
        NameClaim::HeldBy(OTHER_ID.into())
    );
}

#[tokio::test]
async fn holding_a_name_succeeds_and_the_holder_reads_back() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| UpdateItemOutput::builder().build());
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(|req| req.consistent_read() == Some(true))
        .then_output(|| {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([("certificateId".to_string(), s(CERT_ID))])))
                .build()
        });
    let inventory = dynamo(&[&update, &get]);
    assert_eq!(
        inventory.hold_thing_name(THING, CERT_ID, NOW).await.unwrap(),
        NameClaim::Claimed
    );
    assert_eq!(inventory.name_holder(THING).await.unwrap().as_deref(), Some(CERT_ID));
}

#[tokio::test]
async fn a_transfer_never_moves_a_held_name() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            req.condition_expression() == Some("certificateId = :from AND attribute_not_exists(heldFor)")
        })
        .then_error(|| UpdateItemError::ConditionalCheckFailedException(ccf(None)));
    let inventory = dynamo(&[&update]);
    assert!(!inventory.transfer_thing_name(THING, CERT_ID, OTHER_ID).await.unwrap());
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn deny_entries_are_written_in_the_layout_lookups_read() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| {
            let item = req.item();
            item.and_then(|i| i.get("pk")) == Some(&s(&format!("DENY#FINGERPRINT#{CERT_ID}")))
                && item.and_then(|i| i.get("sk")) == Some(&s("DENY"))
                && item.and_then(|i| i.get("reason")) == Some(&s("revoked: stolen"))
        })
        .then_output(|| PutItemOutput::builder().build());
    let inventory = dynamo(&[&put]);
    let key = DenyKey::fingerprint(CERT_ID).unwrap();
    inventory.deny(&key, "revoked: stolen", NOW).await.unwrap();
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn an_unknown_thing_or_certificate_is_a_missing_resource() {
    let list = mock!(aws_sdk_iot::Client::list_thing_principals)
        .then_error(|| ListThingPrincipalsError::ResourceNotFoundException(not_found()));
    let update = mock!(aws_sdk_iot::Client::update_certificate)
        .then_error(|| UpdateCertificateError::ResourceNotFoundException(not_found()));
    let adapter = iot(&[&list, &update]);
    let e = adapter.thing_principals(THING).await.unwrap_err();
    assert_eq!(e.kind, PortErrorKind::MissingResource, "{e}");
    let e = adapter
        .set_status(CERT_ID, &CertificateStatus::Revoked)
        .await
        .unwrap_err();
    assert_eq!(e.kind, PortErrorKind::MissingResource, "{e}");
}

#[tokio::test]
async fn revoking_sends_update_certificate_revoked() {
    let update = mock!(aws_sdk_iot::Client::update_certificate)
        .match_requests(|req| {
            req.certificate_id() == Some(CERT_ID)
                && req.new_status() == Some(&aws_sdk_iot::types::CertificateStatus::Revoked)
        })
        .then_output(|| UpdateCertificateOutput::builder().build());
    let adapter = iot(&[&update]);
    adapter.set_status(CERT_ID, &CertificateStatus::Revoked).await.unwrap();
    assert_eq!(update.num_calls(), 1);
}

fn iot_with_data(data_rules: &[&Rule]) -> RotationIotAdapter {
    RotationIotAdapter::new(
        mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[], |c| {
            c.retry_config(RetryConfig::disabled())
        }),
        mock_client!(aws_sdk_iotdataplane, RuleMode::MatchAny, data_rules, |c| {
            c.retry_config(aws_sdk_iotdataplane::config::retry::RetryConfig::disabled())
        }),
        None,
    )
}

#[tokio::test]
async fn disconnecting_cleans_the_session_and_sends_no_will() {
    let delete = mock!(aws_sdk_iotdataplane::Client::delete_connection)
        .match_requests(|req| {
            req.client_id() == Some(THING)
                && req.clean_session() == Some(true)
                && req.prevent_will_message() == Some(true)
        })
        .then_output(|| aws_sdk_iotdataplane::operation::delete_connection::DeleteConnectionOutput::builder().build());
    let adapter = iot_with_data(&[&delete]);
    assert!(adapter.disconnect(THING).await.unwrap());
    assert_eq!(delete.num_calls(), 1);
}

#[tokio::test]
async fn disconnecting_a_client_that_is_not_connected_is_false() {
    use aws_sdk_iotdataplane::operation::delete_connection::DeleteConnectionError;
    let delete = mock!(aws_sdk_iotdataplane::Client::delete_connection).then_error(|| {
        DeleteConnectionError::ResourceNotFoundException(
            aws_sdk_iotdataplane::types::error::ResourceNotFoundException::builder()
                .message("no such client")
                .meta(meta("ResourceNotFoundException", "no such client"))
                .build(),
        )
    });
    let throttled = mock!(aws_sdk_iotdataplane::Client::delete_connection).then_error(|| {
        DeleteConnectionError::ThrottlingException(
            aws_sdk_iotdataplane::types::error::ThrottlingException::builder()
                .message("slow down")
                .meta(meta("ThrottlingException", "slow down"))
                .build(),
        )
    });
    assert!(!iot_with_data(&[&delete]).disconnect(THING).await.unwrap());
    let e = iot_with_data(&[&throttled]).disconnect(THING).await.unwrap_err();
    assert_eq!(e.kind, PortErrorKind::Transient, "{e}");
}
