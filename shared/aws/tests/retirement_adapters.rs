//! The retirement adapters' SDK edge cases (aws-smithy-mocks): DeleteThing
//! refused while principals are attached is a conflict (retried by the
//! workflow), not-found answers are "already done", the groups and billing
//! group are read from their own calls, and the inventory's writes are
//! conditional where the workflow relies on it.

#![allow(clippy::expect_used)]

use std::collections::BTreeSet;

use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::operation::delete_thing::{DeleteThingError, DeleteThingOutput};
use aws_sdk_iot::operation::describe_thing::{DescribeThingError, DescribeThingOutput};
use aws_sdk_iot::operation::list_thing_groups_for_thing::ListThingGroupsForThingOutput;
use aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsError;
use aws_sdk_iot::operation::remove_thing_from_billing_group::RemoveThingFromBillingGroupError;
use aws_sdk_iot::operation::remove_thing_from_thing_group::RemoveThingFromThingGroupError;
use aws_sdk_iot::types::GroupNameAndArn;
use aws_sdk_iot::types::error::{InvalidRequestException, ResourceNotFoundException};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{DynamoInventory, RotationIotAdapter};
use onboarding_domain::{PortErrorKind, RetirementInventory, RetirementIot, RetirementTicket};

const THING: &str = "sensor-0042";
const TABLE: &str = "inventory";

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn not_found() -> ResourceNotFoundException {
    ResourceNotFoundException::builder()
        .message("not found")
        .meta(meta("ResourceNotFoundException", "not found"))
        .build()
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

fn dynamo(rules: &[&Rule]) -> DynamoInventory {
    DynamoInventory::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        }),
        TABLE,
    )
}

#[tokio::test]
async fn delete_thing_still_attached_is_a_conflict_to_retry() {
    let message = format!("Cannot delete. Thing {THING} is still attached to one or more principals");
    let delete = mock!(aws_sdk_iot::Client::delete_thing).then_error(move || {
        DeleteThingError::InvalidRequestException(
            InvalidRequestException::builder()
                .message(message.clone())
                .meta(meta("InvalidRequestException", &message))
                .build(),
        )
    });
    let error = iot(&[&delete]).delete_thing(THING).await.expect_err("refused");
    assert_eq!(error.kind, PortErrorKind::Conflict, "{error}");
    assert!(error.detail.contains("still attached"), "{error}");
}

#[tokio::test]
async fn delete_thing_refused_otherwise_stays_invalid() {
    let delete = mock!(aws_sdk_iot::Client::delete_thing).then_error(|| {
        DeleteThingError::InvalidRequestException(
            InvalidRequestException::builder()
                .message("bad name")
                .meta(meta("InvalidRequestException", "bad name"))
                .build(),
        )
    });
    let error = iot(&[&delete]).delete_thing(THING).await.expect_err("refused");
    assert_eq!(error.kind, PortErrorKind::Invalid);
}

#[tokio::test]
async fn deleting_or_leaving_what_is_gone_is_already_done() {
    let delete = mock!(aws_sdk_iot::Client::delete_thing)
        .match_requests(|r| r.thing_name() == Some(THING))
        .then_error(|| DeleteThingError::ResourceNotFoundException(not_found()));
    let group = mock!(aws_sdk_iot::Client::remove_thing_from_thing_group)
        .match_requests(|r| r.thing_name() == Some(THING) && r.thing_group_name() == Some("fleet"))
        .then_error(|| RemoveThingFromThingGroupError::ResourceNotFoundException(not_found()));
    let billing = mock!(aws_sdk_iot::Client::remove_thing_from_billing_group)
        .match_requests(|r| r.thing_name() == Some(THING) && r.billing_group_name() == Some("billing-a"))
        .then_error(|| RemoveThingFromBillingGroupError::ResourceNotFoundException(not_found()));
    let principals = mock!(aws_sdk_iot::Client::list_thing_principals)
        .then_error(|| ListThingPrincipalsError::ResourceNotFoundException(not_found()));
    let described = mock!(aws_sdk_iot::Client::describe_thing)
        .then_error(|| DescribeThingError::ResourceNotFoundException(not_found()));
    let things = mock!(aws_sdk_iot::Client::list_principal_things).then_error(|| {
        aws_sdk_iot::operation::list_principal_things::ListPrincipalThingsError::ResourceNotFoundException(not_found())
    });
    let adapter = iot(&[&delete, &group, &billing, &principals, &described, &things]);
    adapter.delete_thing(THING).await.expect("gone is deleted");
    adapter.leave_thing_group(THING, "fleet").await.expect("left");
    adapter.leave_billing_group(THING, "billing-a").await.expect("left");
    assert_eq!(adapter.attached_principals(THING).await.expect("answered"), None);
    assert_eq!(adapter.thing_membership(THING).await.expect("answered"), None);
    assert!(
        adapter
            .principal_things("arn:aws:iot:us-east-1:1:cert/gone")
            .await
            .expect("answered")
            .is_empty()
    );
    assert_eq!((delete.num_calls(), group.num_calls(), billing.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn membership_is_the_billing_group_and_every_page_of_groups() {
    let described = mock!(aws_sdk_iot::Client::describe_thing).then_output(|| {
        DescribeThingOutput::builder()
            .thing_name(THING)
            .billing_group_name("billing-a")
            .build()
    });
    let groups = mock!(aws_sdk_iot::Client::list_thing_groups_for_thing)
        .match_requests(|r| r.next_token().is_none())
        .then_output(|| {
            ListThingGroupsForThingOutput::builder()
                .thing_groups(GroupNameAndArn::builder().group_name("fleet").build())
                .next_token("page-2")
                .build()
        });
    let more = mock!(aws_sdk_iot::Client::list_thing_groups_for_thing)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            ListThingGroupsForThingOutput::builder()
                .thing_groups(GroupNameAndArn::builder().group_name("sensors-eu").build())
                .build()
        });
    let membership = iot(&[&described, &more, &groups])
        .thing_membership(THING)
        .await
        .expect("read")
        .expect("the thing exists");
    assert_eq!(
        membership.thing_groups,
        vec!["fleet".to_string(), "sensors-eu".to_string()]
    );
    assert_eq!(membership.billing_group.as_deref(), Some("billing-a"));
}

#[tokio::test]
async fn delete_thing_deletes() {
    let delete = mock!(aws_sdk_iot::Client::delete_thing).then_output(|| DeleteThingOutput::builder().build());
    iot(&[&delete]).delete_thing(THING).await.expect("deleted");
    assert_eq!(delete.num_calls(), 1);
}

fn ticket() -> RetirementTicket {
    RetirementTicket {
        thing_name: THING.into(),
        reason: "site closed".into(),
        requested_at: 1_900_000_000,
        revoke: false,
        keep_thing: true,
        certificate_ids: BTreeSet::from(["a".repeat(64)]),
    }
}

fn conditional_failed() -> ConditionalCheckFailedException {
    ConditionalCheckFailedException::builder()
        .message("The conditional request failed")
        .meta(meta(
            "ConditionalCheckFailedException",
            "The conditional request failed",
        ))
        .build()
}

#[tokio::test]
async fn a_retirement_is_claimed_once() {
    let won = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.condition_expression() == Some("attribute_not_exists(pk)")
                && r.item().is_some_and(|i| {
                    i.get("pk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("THING#sensor-0042")
                        && i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("RETIREMENT")
                        && i.get("keepThing").and_then(|v| v.as_bool().ok()) == Some(&true)
                })
        })
        .then_output(|| PutItemOutput::builder().build());
    assert!(dynamo(&[&won]).claim_retirement(&ticket()).await.expect("claimed"));
    let lost = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_error(|| PutItemError::ConditionalCheckFailedException(conditional_failed()));
    assert!(!dynamo(&[&lost]).claim_retirement(&ticket()).await.expect("answered"));
}

#[tokio::test]
async fn certificates_are_added_only_to_a_retirement_under_way() {
    let lost = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| r.condition_expression() == Some("attribute_exists(pk)"))
        .then_error(|| UpdateItemError::ConditionalCheckFailedException(conditional_failed()));
    let error = dynamo(&[&lost])
        .add_retiring_certificates(THING, &BTreeSet::from(["b".repeat(64)]))
        .await
        .expect_err("no ticket");
    assert_eq!(error.kind, PortErrorKind::Conflict);
}

#[tokio::test]
async fn a_retired_record_leaves_the_expiry_index_and_keeps_its_first_time() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|r| {
            let expression = r.update_expression().unwrap_or_default();
            r.key()
                .and_then(|k| k.get("pk"))
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(&*format!("CERT#{}", "a".repeat(64)))
                && expression.contains("REMOVE expiryShard, expiryKey, activatedAt")
                && expression.contains("retiredAt = if_not_exists(retiredAt, :now)")
                && r.condition_expression()
                    == Some("attribute_not_exists(pk) OR attribute_not_exists(thingName) OR thingName = :thing")
                && r.expression_attribute_values()
                    .and_then(|v| v.get(":retired"))
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some("RETIRED")
        })
        .then_output(|| UpdateItemOutput::builder().build());
    dynamo(&[&update])
        .record_retired(&"a".repeat(64), THING, "site closed", 1_900_000_000)
        .await
        .expect("written");
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn another_things_record_is_never_retired() {
    let lost = mock!(aws_sdk_dynamodb::Client::update_item)
        .then_error(|| UpdateItemError::ConditionalCheckFailedException(conditional_failed()));
    let error = dynamo(&[&lost])
        .record_retired(&"a".repeat(64), THING, "site closed", 1_900_000_000)
        .await
        .expect_err("another thing's");
    assert_eq!(error.kind, PortErrorKind::Conflict, "{error}");
}
