//! SDK edge cases of the rotation adapters, driven through `aws-smithy-mocks`:
//! the exact requests (job targets, timeout and presigned-URL configuration,
//! conditional writes, index queries), idempotent outcomes (job already
//! there, nothing to detach or delete), error classes, and the expiry scan's
//! cursor across shards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::query::{QueryError, QueryOutput};
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};
use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::operation::cancel_job::CancelJobError;
use aws_sdk_iot::operation::create_job::{CreateJobError, CreateJobOutput};
use aws_sdk_iot::operation::delete_certificate::DeleteCertificateError;
use aws_sdk_iot::operation::describe_job::DescribeJobOutput;
use aws_sdk_iot::operation::describe_job_execution::{DescribeJobExecutionError, DescribeJobExecutionOutput};
use aws_sdk_iot::operation::describe_thing::DescribeThingOutput;
use aws_sdk_iot::operation::detach_policy::DetachPolicyError;
use aws_sdk_iot::operation::detach_thing_principal::DetachThingPrincipalError;
use aws_sdk_iot::operation::list_attached_policies::ListAttachedPoliciesOutput;
use aws_sdk_iot::types::error::{
    InvalidRequestException, ResourceAlreadyExistsException, ResourceNotFoundException, ThrottlingException,
};
use aws_sdk_iot::types::{Job, JobExecutionStatus, JobExecutionStatusDetails, JobStatus, Policy, TargetSelection};
use aws_sdk_iotdataplane::operation::publish::{PublishError, PublishOutput};
use aws_sdk_s3::operation::delete_object::DeleteObjectError;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{DynamoInventory, RotationIotAdapter};
use onboarding_aws::{PRESIGNED_URL_SECONDS, S3RotationObjects};
use onboarding_domain::PortError;
use onboarding_domain::rfc3339;
use onboarding_domain::{CertificateRecord, PortErrorKind, RecordStatus};
use onboarding_domain::{
    JobDocument, Rotation, RotationInventory, RotationIot, RotationObjects, RotationPolicy, RotationState, Strategy,
};

// --- fixtures ---------------------------------------------------------------

const OLD_ID: &str = "1f6cbd0a2d5e4b1c8e9f00112233445566778899aabbccddeeff001122334455";
const CERT_ARN: &str = "arn:aws:iot:us-east-1:123456789012:cert/1f6cbd0a2d5e";
const THING: &str = "sensor-0042";
const THING_ARN: &str = "arn:aws:iot:us-east-1:123456789012:thing/sensor-0042";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/iot-presign";
const TABLE: &str = "inventory";
const BUCKET: &str = "credentials-bucket";
const KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/0b8c6c2e-1111-2222-3333-444455556666";

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn expect_err<T: std::fmt::Debug>(result: Result<T, PortError>) -> PortError {
    match result {
        Ok(value) => panic!("expected an error, got Ok({value:?})"),
        Err(e) => e,
    }
}

fn not_found() -> ResourceNotFoundException {
    ResourceNotFoundException::builder()
        .message("not found")
        .meta(meta("ResourceNotFoundException", "not found"))
        .build()
}

fn iot_throttling() -> ThrottlingException {
    ThrottlingException::builder()
        .message("Rate exceeded")
        .meta(meta("ThrottlingException", "Rate exceeded"))
        .build()
}

fn rotation(strategy: Strategy) -> Rotation {
    let mut record = CertificateRecord::bare(OLD_ID, "ca", RecordStatus::Provisioned, 0);
    record.not_after = Some(1_800_000_000);
    let policy = RotationPolicy {
        strategy,
        ..RotationPolicy::default()
    };
    Rotation::requested(&record, THING, "sensors", &policy, 1, 1_790_000_000)
}

/// IoT adapter over mocked control-plane and data-plane clients, without SDK retries.
fn iot(iot_rules: &[&Rule], data_rules: &[&Rule], role: Option<&str>) -> RotationIotAdapter {
    RotationIotAdapter::new(
        mock_client!(aws_sdk_iot, RuleMode::MatchAny, iot_rules, |c| {
            c.retry_config(RetryConfig::disabled())
        }),
        mock_client!(aws_sdk_iotdataplane, RuleMode::MatchAny, data_rules, |c| {
            c.retry_config(aws_sdk_iotdataplane::config::retry::RetryConfig::disabled())
        }),
        role.map(str::to_string),
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

fn described_thing() -> Rule {
    mock!(aws_sdk_iot::Client::describe_thing)
        .match_requests(|req| req.thing_name() == Some(THING))
        .then_output(|| {
            DescribeThingOutput::builder()
                .thing_name(THING)
                .thing_arn(THING_ARN)
                .build()
        })
}

// --- IoT: jobs ----------------------------------------------------------------

#[tokio::test]
async fn create_job_that_already_exists_is_ok() {
    let thing = described_thing();
    let create = mock!(aws_sdk_iot::Client::create_job).then_error(|| {
        CreateJobError::ResourceAlreadyExistsException(
            ResourceAlreadyExistsException::builder()
                .message("Job already exists")
                .resource_id("rotate-1-1")
                .meta(meta("ResourceAlreadyExistsException", "Job already exists"))
                .build(),
        )
    });
    let adapter = iot(&[&thing, &create], &[], None);
    let r = rotation(Strategy::Csr);

    adapter
        .create_job(&r.job_id, THING, &JobDocument::csr(&r), 60)
        .await
        .unwrap();

    assert_eq!(create.num_calls(), 1);
}

#[tokio::test]
async fn csr_create_job_targets_the_thing_with_the_document_and_timeout() {
    let thing = described_thing();
    let r = rotation(Strategy::Csr);
    let expected_document = serde_json::to_value(JobDocument::csr(&r)).unwrap();
    let job_id = r.job_id.clone();
    let create = mock!(aws_sdk_iot::Client::create_job)
        .match_requests(move |req| {
            let document: serde_json::Value = serde_json::from_str(req.document().unwrap_or("null")).unwrap();
            req.job_id() == Some(job_id.as_str())
                && req.targets() == [THING_ARN.to_string()]
                && req.target_selection() == Some(&TargetSelection::Snapshot)
                && req.timeout_config().and_then(|t| t.in_progress_timeout_in_minutes()) == Some(45)
                && req.presigned_url_config().is_none()
                && document == expected_document
        })
        .then_output(|| CreateJobOutput::builder().job_id("x").build());
    // A presign role configured does not leak into CSR jobs.
    let adapter = iot(&[&thing, &create], &[], Some(ROLE_ARN));

    adapter
        .create_job(&r.job_id, THING, &JobDocument::csr(&r), 45)
        .await
        .unwrap();

    assert_eq!(thing.num_calls(), 1);
    assert_eq!(create.num_calls(), 1);
}

#[tokio::test]
async fn server_keygen_create_job_carries_the_presigned_url_config() {
    let thing = described_thing();
    let create = mock!(aws_sdk_iot::Client::create_job)
        .match_requests(|req| {
            let presigned = req.presigned_url_config();
            presigned.and_then(|p| p.role_arn()) == Some(ROLE_ARN)
                && presigned.and_then(|p| p.expires_in_sec()) == Some(3_600)
                && req
                    .document()
                    .is_some_and(|d| d.contains("${aws:iot:s3-presigned-url:"))
        })
        .then_output(|| CreateJobOutput::builder().job_id("x").build());
    let adapter = iot(&[&thing, &create], &[], Some(ROLE_ARN));
    let r = rotation(Strategy::ServerKeygen);
    let document = JobDocument::server_keygen(&r, "new-id", BUCKET, "rot/new-id.pem", "rot/new-id.key");

    adapter.create_job(&r.job_id, THING, &document, 60).await.unwrap();

    assert_eq!(create.num_calls(), 1);
    assert_eq!(PRESIGNED_URL_SECONDS, 3_600);
}

#[tokio::test]
async fn server_keygen_create_job_without_a_presign_role_is_refused() {
    let thing = described_thing();
    let create = mock!(aws_sdk_iot::Client::create_job).then_output(|| CreateJobOutput::builder().build());
    let adapter = iot(&[&thing, &create], &[], None);
    let r = rotation(Strategy::ServerKeygen);
    let document = JobDocument::server_keygen(&r, "new-id", BUCKET, "c", "k");

    let error = expect_err(adapter.create_job(&r.job_id, THING, &document, 60).await);

    assert_eq!(error.kind, PortErrorKind::Invalid);
    assert_eq!(create.num_calls(), 0, "no job that devices could not use");
}

#[tokio::test]
async fn create_job_for_a_missing_thing_is_missing_resource() {
    let thing = mock!(aws_sdk_iot::Client::describe_thing).then_error(|| {
        aws_sdk_iot::operation::describe_thing::DescribeThingError::ResourceNotFoundException(not_found())
    });
    let adapter = iot(&[&thing], &[], None);
    let r = rotation(Strategy::Csr);

    let error = expect_err(adapter.create_job(&r.job_id, THING, &JobDocument::csr(&r), 60).await);

    assert_eq!(error.kind, PortErrorKind::MissingResource);
}

#[tokio::test]
async fn create_job_throttling_is_transient() {
    let thing = described_thing();
    let create =
        mock!(aws_sdk_iot::Client::create_job).then_error(|| CreateJobError::ThrottlingException(iot_throttling()));
    let adapter = iot(&[&thing, &create], &[], None);
    let r = rotation(Strategy::Csr);

    let error = expect_err(adapter.create_job(&r.job_id, THING, &JobDocument::csr(&r), 60).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert_eq!(error.operation, "CreateJob");
}

#[tokio::test]
async fn job_execution_reads_status_and_details() {
    let rule = mock!(aws_sdk_iot::Client::describe_job_execution)
        .match_requests(|req| req.job_id() == Some("job-1") && req.thing_name() == Some(THING))
        .then_output(|| {
            DescribeJobExecutionOutput::builder()
                .execution(
                    aws_sdk_iot::types::JobExecution::builder()
                        .status(JobExecutionStatus::Succeeded)
                        .queued_at(aws_sdk_iot::primitives::DateTime::from_secs(1_000))
                        .started_at(aws_sdk_iot::primitives::DateTime::from_secs(1_600))
                        .last_updated_at(aws_sdk_iot::primitives::DateTime::from_secs(1_700))
                        .status_details(
                            JobExecutionStatusDetails::builder()
                                .details_map("newCertificateId", "abc")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let adapter = iot(&[&rule], &[], None);

    let execution = adapter.job_execution("job-1", THING).await.unwrap().unwrap();

    assert_eq!(execution.status, "SUCCEEDED");
    assert_eq!(
        execution.status_details,
        BTreeMap::from([("newCertificateId".to_string(), "abc".to_string())])
    );
    // The execution's own timeline, which the rotator's deadlines follow.
    assert_eq!(
        (execution.queued_at, execution.started_at, execution.last_updated_at),
        (Some(1_000), Some(1_600), Some(1_700))
    );
}

#[tokio::test]
async fn job_execution_not_found_is_none_and_throttling_is_transient() {
    let missing = mock!(aws_sdk_iot::Client::describe_job_execution)
        .match_requests(|req| req.job_id() == Some("gone"))
        .then_error(|| DescribeJobExecutionError::ResourceNotFoundException(not_found()));
    let throttled = mock!(aws_sdk_iot::Client::describe_job_execution)
        .match_requests(|req| req.job_id() == Some("busy"))
        .then_error(|| DescribeJobExecutionError::ThrottlingException(iot_throttling()));
    let adapter = iot(&[&missing, &throttled], &[], None);

    assert_eq!(adapter.job_execution("gone", THING).await.unwrap(), None);
    let error = expect_err(adapter.job_execution("busy", THING).await);
    assert_eq!(error.kind, PortErrorKind::Transient);
}

fn cancel_refused() -> Rule {
    mock!(aws_sdk_iot::Client::cancel_job)
        .match_requests(|req| req.force() == Some(true))
        .then_error(|| {
            CancelJobError::InvalidRequestException(
                InvalidRequestException::builder()
                    .message("Job cannot be canceled in its current status")
                    .meta(meta("InvalidRequestException", "cannot cancel"))
                    .build(),
            )
        })
}

fn job_in(status: JobStatus) -> Rule {
    mock!(aws_sdk_iot::Client::describe_job).then_output(move || {
        DescribeJobOutput::builder()
            .job(Job::builder().status(status.clone()).build())
            .build()
    })
}

#[tokio::test]
async fn cancel_job_of_a_completed_or_missing_job_is_ok() {
    let cancel = cancel_refused();
    let completed = job_in(JobStatus::Completed);
    iot(&[&cancel, &completed], &[], None).cancel_job("j").await.unwrap();
    assert_eq!(completed.num_calls(), 1);

    let cancel =
        mock!(aws_sdk_iot::Client::cancel_job).then_error(|| CancelJobError::ResourceNotFoundException(not_found()));
    iot(&[&cancel], &[], None).cancel_job("j").await.unwrap();
}

#[tokio::test]
async fn cancel_job_refused_while_the_job_runs_is_an_error() {
    let cancel = cancel_refused();
    let running = job_in(JobStatus::InProgress);

    let error = expect_err(iot(&[&cancel, &running], &[], None).cancel_job("j").await);

    assert_eq!(error.kind, PortErrorKind::Invalid);
    assert_eq!(error.operation, "CancelJob");
}

// --- IoT: certificates, things, policies, publish ----------------------------

#[tokio::test]
async fn detach_and_delete_of_what_is_not_there_are_ok() {
    let detach_thing = mock!(aws_sdk_iot::Client::detach_thing_principal)
        .match_requests(|req| req.thing_name() == Some(THING) && req.principal() == Some(CERT_ARN))
        .then_error(|| DetachThingPrincipalError::ResourceNotFoundException(not_found()));
    let detach_policy = mock!(aws_sdk_iot::Client::detach_policy)
        .match_requests(|req| req.policy_name() == Some("device-policy") && req.target() == Some(CERT_ARN))
        // Not modeled for DetachPolicy: an unhandled error with the code.
        .then_error(|| DetachPolicyError::generic(meta("ResourceNotFoundException", "not attached")));
    let delete = mock!(aws_sdk_iot::Client::delete_certificate)
        .match_requests(|req| req.certificate_id() == Some(OLD_ID) && req.force_delete() == Some(false))
        .then_error(|| DeleteCertificateError::ResourceNotFoundException(not_found()));
    let adapter = iot(&[&detach_thing, &detach_policy, &delete], &[], None);

    adapter.detach_from_thing(THING, CERT_ARN).await.unwrap();
    adapter.detach_policy("device-policy", CERT_ARN).await.unwrap();
    adapter.delete_certificate(OLD_ID).await.unwrap();

    assert_eq!(
        (detach_thing.num_calls(), detach_policy.num_calls(), delete.num_calls()),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn detach_throttling_is_transient() {
    let detach = mock!(aws_sdk_iot::Client::detach_thing_principal)
        .then_error(|| DetachThingPrincipalError::ThrottlingException(iot_throttling()));
    let adapter = iot(&[&detach], &[], None);

    let error = expect_err(adapter.detach_from_thing(THING, CERT_ARN).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
}

#[tokio::test]
async fn policies_reads_every_page() {
    let first = mock!(aws_sdk_iot::Client::list_attached_policies)
        .match_requests(|req| req.target() == Some(CERT_ARN) && req.marker().is_none())
        .then_output(|| {
            ListAttachedPoliciesOutput::builder()
                .policies(Policy::builder().policy_name("a").build())
                .next_marker("m2")
                .build()
        });
    let second = mock!(aws_sdk_iot::Client::list_attached_policies)
        .match_requests(|req| req.marker() == Some("m2"))
        .then_output(|| {
            ListAttachedPoliciesOutput::builder()
                .policies(Policy::builder().policy_name("b").build())
                .build()
        });
    let adapter = iot(&[&first, &second], &[], None);

    assert_eq!(adapter.policies(CERT_ARN).await.unwrap(), vec!["a", "b"]);
}

#[tokio::test]
async fn publish_uses_qos_1_and_throttling_is_transient() {
    let ok = mock!(aws_sdk_iotdataplane::Client::publish)
        .match_requests(|req| {
            req.topic() == Some("devices/sensor-0042/rotation/certificate")
                && req.qos() == Some(1)
                && req.payload().map(|p| p.as_ref()) == Some(b"{}".as_slice())
        })
        .then_output(|| PublishOutput::builder().build());
    let throttled = mock!(aws_sdk_iotdataplane::Client::publish)
        .match_requests(|req| req.topic() == Some("busy"))
        .then_error(|| {
            PublishError::ThrottlingException(
                aws_sdk_iotdataplane::types::error::ThrottlingException::builder()
                    .message("Rate exceeded")
                    .meta(meta("ThrottlingException", "Rate exceeded"))
                    .build(),
            )
        });
    let adapter = iot(&[], &[&ok, &throttled], None);

    adapter
        .publish("devices/sensor-0042/rotation/certificate", b"{}")
        .await
        .unwrap();
    let error = expect_err(adapter.publish("busy", b"{}").await);

    assert_eq!(ok.num_calls(), 1);
    assert_eq!(error.kind, PortErrorKind::Transient);
    assert_eq!(error.operation, "Publish");
}

// --- DynamoDB: rotation items -------------------------------------------------

fn ccf() -> ConditionalCheckFailedException {
    ConditionalCheckFailedException::builder()
        .message("The conditional request failed")
        .meta(meta(
            "ConditionalCheckFailedException",
            "The conditional request failed",
        ))
        .build()
}

fn item_pk(req: &aws_sdk_dynamodb::operation::put_item::PutItemInput) -> Option<String> {
    req.item()
        .and_then(|i| i.get("pk"))
        .and_then(|v| v.as_s().ok())
        .cloned()
}

#[tokio::test]
async fn put_rotation_that_lost_the_race_is_false() {
    let pointer = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| item_pk(req).is_some_and(|pk| pk.starts_with("JOB#")))
        .then_output(|| PutItemOutput::builder().build());
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| {
            let values = req.expression_attribute_values();
            item_pk(req) == Some(format!("CERT#{OLD_ID}"))
                && req.condition_expression() == Some("#state = :state AND #attempt = :attempt")
                && values.and_then(|v| v.get(":state")) == Some(&s("REQUESTED"))
                && values.and_then(|v| v.get(":attempt")) == Some(&AttributeValue::N("1".into()))
        })
        .then_error(|| PutItemError::ConditionalCheckFailedException(ccf()));
    let inventory = dynamo(&[&pointer, &put]);
    let issued = rotation(Strategy::Csr).issued("new", vec![], 1_790_000_100).unwrap();

    let written = inventory
        .put_rotation(&issued, Some((RotationState::Requested, 1)))
        .await
        .unwrap();

    assert!(!written);
    assert_eq!(put.num_calls(), 1);
    assert_eq!(pointer.num_calls(), 0, "the job id did not change: no pointer write");
}

#[tokio::test]
async fn the_job_pointer_is_written_only_when_an_attempt_starts() {
    let pointer = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| item_pk(req).is_some_and(|pk| pk.starts_with("JOB#")))
        .then_output(|| PutItemOutput::builder().build());
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| item_pk(req).is_some_and(|pk| pk.starts_with("CERT#")))
        .then_output(|| PutItemOutput::builder().build());
    let inventory = dynamo(&[&pointer, &put]);
    let policy = RotationPolicy::default();
    let requested = rotation(Strategy::Csr);
    let mut later = requested.clone();
    later.due_at = Some(requested.requested_at + 5);

    // The same attempt, still requested: same job, no pointer write.
    assert!(
        inventory
            .put_rotation(&later, Some((RotationState::Requested, 1)))
            .await
            .unwrap()
    );
    assert_eq!((pointer.num_calls(), put.num_calls()), (0, 1));

    // The next attempt: a new job.
    let failed = requested
        .failed(onboarding_domain::FailureReason::JobFailed, "x", &policy, 1)
        .unwrap();
    let retried = failed.retried(&policy, 2).unwrap();
    assert!(
        inventory
            .put_rotation(&retried, Some((RotationState::Failed, 1)))
            .await
            .unwrap()
    );
    assert_eq!((pointer.num_calls(), put.num_calls()), (1, 2));
}

#[tokio::test]
async fn put_new_rotation_writes_the_pointer_first_and_indexes_it_as_due() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let r = rotation(Strategy::Csr);
    let job_pk = format!("JOB#{}", r.job_id);
    let seen = order.clone();
    let pointer = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |req| {
            let hit = item_pk(req).as_deref() == Some(job_pk.as_str())
                && req.item().and_then(|i| i.get("oldCertificateId")) == Some(&s(OLD_ID));
            if hit {
                seen.lock().unwrap().push("pointer");
            }
            hit
        })
        .then_output(|| PutItemOutput::builder().build());
    let seen = order.clone();
    let due_key = format!("{}#{OLD_ID}", rfc3339(r.due_at.unwrap()));
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |req| {
            let item = req.item().unwrap();
            let hit = req.condition_expression() == Some("attribute_not_exists(pk)")
                && item.get("sk") == Some(&s("ROTATION"))
                && item.get("expiryShard") == Some(&s("DUE#1"))
                && item.get("expiryKey") == Some(&s(&due_key))
                && item.get("state") == Some(&s("REQUESTED"))
                && item.get("attempt") == Some(&AttributeValue::N("1".into()))
                && item.get("objectKeys") == Some(&AttributeValue::L(vec![]))
                && item.contains_key("updatedAt")
                && !item.contains_key("newCertificateId");
            if hit {
                seen.lock().unwrap().push("rotation");
            }
            hit
        })
        .then_output(|| PutItemOutput::builder().build());
    let inventory = dynamo(&[&pointer, &put]);

    assert!(inventory.put_rotation(&r, None).await.unwrap());

    assert_eq!(*order.lock().unwrap(), vec!["pointer", "rotation"]);
}

#[tokio::test]
async fn put_rotation_throttled_is_transient() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::ProvisionedThroughputExceededException(
            aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                .message("slow down")
                .meta(meta("ProvisionedThroughputExceededException", "slow down"))
                .build(),
        )
    });
    let inventory = dynamo(&[&put]);

    let error = expect_err(inventory.put_rotation(&rotation(Strategy::Csr), None).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
}

// --- DynamoDB: the expiry scan ------------------------------------------------

type Item = HashMap<String, AttributeValue>;

/// A keys-only index over `(shard digit, notAfter)` certificates, as the
/// `expiry` index holds them, and the full records behind it.
struct FakeIndex {
    entries: BTreeMap<String, Vec<Item>>,
    records: HashMap<String, Item>,
}

fn fake_index(certificates: &[(&str, i64)]) -> FakeIndex {
    let mut entries: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    let mut records = HashMap::new();
    for (id, not_after) in certificates {
        let pk = format!("CERT#{id}");
        let shard = format!("EXP#{}", &id[..1]);
        let key = format!("{}#{id}", rfc3339(*not_after));
        entries.entry(shard.clone()).or_default().push(HashMap::from([
            ("pk".to_string(), s(&pk)),
            ("sk".to_string(), s("CERT")),
            ("expiryShard".to_string(), s(&shard)),
            ("expiryKey".to_string(), s(&key)),
        ]));
        records.insert(
            pk.clone(),
            HashMap::from([
                ("pk".to_string(), s(&pk)),
                ("sk".to_string(), s("CERT")),
                ("certificateId".to_string(), s(id)),
                ("status".to_string(), s("PROVISIONED")),
                ("thingName".to_string(), s(&format!("thing-{id}"))),
                ("notAfter".to_string(), s(&rfc3339(*not_after))),
            ]),
        );
    }
    for list in entries.values_mut() {
        list.sort_by_key(|e| e["expiryKey"].as_s().unwrap().clone());
    }
    FakeIndex { entries, records }
}

fn capacity(units: f64) -> ConsumedCapacity {
    ConsumedCapacity::builder()
        .table_name(TABLE)
        .capacity_units(units)
        .build()
}

/// Query and BatchGetItem rules over the fake index; each query's
/// `(shard, started after)` is recorded.
/// Each query's `(shard, started after)`.
type QueryLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn scan_rules(index: Arc<FakeIndex>, queries: QueryLog) -> (Rule, Rule) {
    let idx = index.clone();
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|req| {
            req.index_name() == Some("expiry")
                && req.key_condition_expression() == Some("#shard = :shard AND #key < :upper")
        })
        .then_compute_output(move |req| {
            let values = req.expression_attribute_values().unwrap();
            let shard = values[":shard"].as_s().unwrap().clone();
            let upper = values[":upper"].as_s().unwrap().clone();
            let after = req
                .exclusive_start_key()
                .map(|k| k["expiryKey"].as_s().unwrap().clone());
            queries.lock().unwrap().push((shard.clone(), after.clone()));
            let limit = usize::try_from(req.limit().unwrap()).unwrap();
            let candidates: Vec<&Item> = idx.entries.get(&shard).map(|l| l.iter().collect()).unwrap_or_default();
            let matching: Vec<&Item> = candidates
                .into_iter()
                .filter(|e| *e["expiryKey"].as_s().unwrap() < upper)
                .filter(|e| after.as_ref().is_none_or(|a| e["expiryKey"].as_s().unwrap() > a))
                .collect();
            let page: Vec<Item> = matching.iter().take(limit).map(|e| (*e).clone()).collect();
            let mut output = QueryOutput::builder()
                .set_items(Some(page.clone()))
                .count(page.len() as i32)
                .scanned_count(page.len() as i32)
                .consumed_capacity(capacity(0.5));
            if matching.len() > limit {
                output = output.set_last_evaluated_key(page.last().cloned());
            }
            output.build()
        });
    let batch = mock!(aws_sdk_dynamodb::Client::batch_get_item).then_compute_output(move |req| {
        let keys = &req.request_items().unwrap()[TABLE];
        let items: Vec<Item> = keys
            .keys()
            .iter()
            .map(|k| {
                assert_eq!(k.len(), 2, "only the table's key: {k:?}");
                index.records[k["pk"].as_s().unwrap()].clone()
            })
            .collect();
        BatchGetItemOutput::builder()
            .responses(TABLE, items)
            .consumed_capacity(capacity(1.0))
            .build()
    });
    (query, batch)
}

fn ids(page: &[CertificateRecord]) -> Vec<&str> {
    page.iter().map(|r| r.certificate_id.as_str()).collect()
}

#[tokio::test]
async fn expiring_paginates_across_shards_with_a_cursor_and_stops() {
    let index = Arc::new(fake_index(&[
        ("0aa", 1_000),
        ("0bb", 2_000),
        ("0cc", 3_000),
        ("0dd", 9_000), // after `until`
        ("7ee", 1_500),
        ("fff", 500),
    ]));
    let queries = Arc::new(Mutex::new(Vec::new()));
    let (query, batch) = scan_rules(index, queries.clone());
    let inventory = dynamo(&[&query, &batch]);
    let until = 5_000;

    let (first, stats) = inventory.expiring_with_stats(until, None, 2).await.unwrap();
    assert_eq!(ids(&first.items), vec!["0aa", "0bb"]);
    assert_eq!(first.items[0].thing_name.as_deref(), Some("thing-0aa"));
    assert_eq!(first.items[0].not_after, Some(1_000));
    let cursor = first.cursor.expect("shard 0 has more");
    assert_eq!(
        (stats.queries, stats.index_items, stats.batch_gets, stats.items_fetched),
        (1, 2, 1, 2)
    );
    assert!((stats.capacity_units - 1.5).abs() < 1e-9, "{stats:?}");
    assert_eq!(stats.items_read(), 4);

    let second = inventory.expiring(until, Some(&cursor), 2).await.unwrap();
    assert_eq!(ids(&second.items), vec!["0cc", "7ee"]);
    let cursor = second.cursor.expect("shards 8 to f are left");

    let third = inventory.expiring(until, Some(&cursor), 2).await.unwrap();
    assert_eq!(ids(&third.items), vec!["fff"]);
    assert_eq!(third.cursor, None, "every shard read");

    let queries = queries.lock().unwrap();
    let shards: Vec<&str> = queries.iter().map(|(shard, _)| shard.as_str()).collect();
    let expected: Vec<String> = std::iter::once("EXP#0".to_string())
        .chain((0..16).map(|d| format!("EXP#{d:x}")))
        .collect();
    assert_eq!(shards, expected, "shard 0 twice (continued), then each shard once");
    assert_eq!(
        queries[1].1.as_deref(),
        Some(format!("{}#0bb", rfc3339(2_000)).as_str())
    );
    assert!(queries[0].1.is_none());
}

#[tokio::test]
async fn expiring_of_an_empty_index_reads_each_shard_once() {
    let index = Arc::new(fake_index(&[]));
    let queries = Arc::new(Mutex::new(Vec::new()));
    let (query, batch) = scan_rules(index, queries.clone());
    let inventory = dynamo(&[&query, &batch]);

    let (page, stats) = inventory.expiring_with_stats(5_000, None, 10).await.unwrap();

    assert!(page.items.is_empty());
    assert_eq!(page.cursor, None);
    assert_eq!((stats.queries, stats.batch_gets), (16, 0));
}

#[tokio::test]
async fn a_cursor_of_another_scan_is_refused() {
    let index = Arc::new(fake_index(&[("0aa", 1_000), ("0bb", 2_000)]));
    let (query, batch) = scan_rules(index, Arc::new(Mutex::new(Vec::new())));
    let inventory = dynamo(&[&query, &batch]);
    let cursor = inventory.expiring(5_000, None, 1).await.unwrap().cursor.unwrap();

    let error = expect_err(inventory.due_rotations(5_000, Some(&cursor), 1).await);
    assert_eq!(error.kind, PortErrorKind::Invalid);
    let error = expect_err(inventory.expiring(5_000, Some("not a cursor"), 1).await);
    assert_eq!(error.kind, PortErrorKind::Invalid);
}

#[tokio::test]
async fn expiring_query_throttled_is_transient() {
    let query = mock!(aws_sdk_dynamodb::Client::query).then_error(|| {
        QueryError::ProvisionedThroughputExceededException(
            aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                .message("slow down")
                .meta(meta("ProvisionedThroughputExceededException", "slow down"))
                .build(),
        )
    });
    let inventory = dynamo(&[&query]);

    let error = expect_err(inventory.expiring(5_000, None, 10).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert_eq!(error.operation, "Query");
}

// --- S3 -----------------------------------------------------------------------

fn objects(rules: &[&Rule]) -> S3RotationObjects {
    S3RotationObjects::new(
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        }),
        BUCKET,
        KMS_KEY,
    )
}

#[tokio::test]
async fn objects_are_put_under_sse_kms_and_deleting_a_missing_one_is_ok() {
    let put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|req| {
            req.bucket() == Some(BUCKET)
                && req.key() == Some("rotation/new.key")
                && req.server_side_encryption() == Some(&ServerSideEncryption::AwsKms)
                && req.ssekms_key_id() == Some(KMS_KEY)
                && req.bucket_key_enabled() == Some(true)
        })
        .then_output(|| PutObjectOutput::builder().build());
    let none_listed = mock!(aws_sdk_s3::Client::list_object_versions)
        .then_output(|| aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder().build());
    let delete = mock!(aws_sdk_s3::Client::delete_object)
        .then_error(|| DeleteObjectError::generic(meta("NoSuchKey", "The specified key does not exist.")));
    let store = objects(&[&put, &none_listed, &delete]);

    store
        .put_object("rotation/new.key", b"-----BEGIN PRIVATE KEY-----")
        .await
        .unwrap();
    store.delete_object("rotation/new.key").await.unwrap();

    assert_eq!(store.bucket(), BUCKET);
    assert_eq!((put.num_calls(), delete.num_calls()), (1, 1));
}

#[tokio::test]
async fn every_version_of_a_private_key_is_deleted() {
    use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion};
    let listed = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| {
        aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder()
            .versions(
                ObjectVersion::builder()
                    .key("rotation/t/n/private.key")
                    .version_id("v1")
                    .build(),
            )
            .versions(
                ObjectVersion::builder()
                    .key("rotation/t/n/private.key")
                    .version_id("v2")
                    .build(),
            )
            // Another key sharing the prefix is left alone.
            .versions(
                ObjectVersion::builder()
                    .key("rotation/t/n/private.key.bak")
                    .version_id("v9")
                    .build(),
            )
            .delete_markers(
                DeleteMarkerEntry::builder()
                    .key("rotation/t/n/private.key")
                    .version_id("m1")
                    .build(),
            )
            .build()
    });
    let deleted = mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(|req| matches!(req.version_id(), Some("v1" | "v2" | "m1")))
        .then_output(|| aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build());
    let store = objects(&[&listed, &deleted]);
    store.delete_object("rotation/t/n/private.key").await.unwrap();
    assert_eq!(deleted.num_calls(), 3);
}
