//! SDK edge cases of the AWS adapters, driven through `aws-smithy-mocks`:
//! error classification, SDK retries, the exact requests the adapters send,
//! conditional-write outcomes and paginated configuration loads.
//!
//! Modeled errors carry their `ErrorMetadata` (code and message) the way the
//! SDK's deserializers fill it in; a few cases go through raw HTTP responses
//! instead so that the real deserializer produces the error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::operation::add_thing_to_thing_group::AddThingToThingGroupError;
use aws_sdk_iot::operation::attach_thing_principal::AttachThingPrincipalOutput;
use aws_sdk_iot::operation::create_thing::{CreateThingError, CreateThingOutput};
use aws_sdk_iot::operation::describe_ca_certificate::DescribeCACertificateError;
use aws_sdk_iot::operation::describe_certificate::{DescribeCertificateError, DescribeCertificateOutput};
use aws_sdk_iot::operation::describe_thing::DescribeThingError;
use aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsError;
use aws_sdk_iot::types::error::{
    InvalidRequestException, ResourceAlreadyExistsException, ResourceNotFoundException, ThrottlingException,
    UnauthorizedException,
};
use aws_sdk_iot::types::{CertificateDescription, ThingPrincipalType};
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::ErrorMetadata;
use onboarding_aws::{DENY_SK, binding_sk, deny_pk, legacy_deny_sk, profile_sk};
use onboarding_aws::{DynamoInventory, IotAdapter, S3CredentialsStore};
use onboarding_domain::{CaTrust, CertificateRecord, CertificateStatus, PortErrorKind, ProvisioningPlan, RecordStatus};
use onboarding_domain::{
    CertificateRegistry, CredentialsStore, DenyList, Inventory, NameClaim, PortError, ThingCreation, ThingRegistry,
};
use onboarding_domain::{DenyKey, NameClaims};

// --- fixtures ---------------------------------------------------------------

const CERT_ID: &str = "1f6cbd0a2d5e4b1c8e9f00112233445566778899aabbccddeeff001122334455";
const CERT_ARN: &str =
    "arn:aws:iot:us-east-1:123456789012:cert/1f6cbd0a2d5e4b1c8e9f00112233445566778899aabbccddeeff001122334455";
const CA_ID: &str = "aa11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBdevice\n-----END CERTIFICATE-----\n";
const TABLE: &str = "inventory";

fn plan() -> ProvisioningPlan {
    ProvisioningPlan {
        certificate_id: CERT_ID.to_string(),
        certificate_arn: CERT_ARN.to_string(),
        ca_certificate_id: CA_ID.to_string(),
        profile: "sensors".to_string(),
        thing_name: "sensor-0042".to_string(),
        thing_type: Some("TemperatureSensor".to_string()),
        attributes: BTreeMap::from([
            ("model".to_string(), "TS-200".to_string()),
            ("site".to_string(), "lyon".to_string()),
        ]),
        dropped_attributes: Vec::new(),
        thing_groups: vec!["fleet".to_string()],
        billing_group: Some("standard-billing".to_string()),
        policy_name: "device-policy".to_string(),
        rejection_action: onboarding_domain::RejectionAction::Revoked,
        serial: "0abc".to_string(),
        fingerprint: CERT_ID.to_string(),
        subject_dn: "CN=sensor-0042,O=Example".to_string(),
        not_before: 1_700_000_000,
        not_after: 1_800_000_000,
        certificate_pem: PEM.to_string(),
    }
}

fn observed_record() -> CertificateRecord {
    CertificateRecord {
        certificate_id: CERT_ID.to_string(),
        ca_certificate_id: CA_ID.to_string(),
        issuer_ca_certificate_id: None,
        status: RecordStatus::Observed,
        thing_name: None,
        profile: None,
        serial: None,
        fingerprint: CERT_ID.to_string(),
        not_before: None,
        not_after: None,
        reason: None,
        detail: None,
        certificate_status: Some("ACTIVE".to_string()),
        dropped_attributes: Vec::new(),
        credentials_key: None,
        updated_at: 1_750_000_000,
        activated_at: None,
    }
}

/// Error metadata as the SDK's deserializers produce it.
fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn throttling() -> DescribeCertificateError {
    DescribeCertificateError::ThrottlingException(
        ThrottlingException::builder()
            .message("Rate exceeded")
            .meta(meta("ThrottlingException", "Rate exceeded"))
            .build(),
    )
}

fn not_found_exception() -> ResourceNotFoundException {
    ResourceNotFoundException::builder()
        .message("not found")
        .meta(meta("ResourceNotFoundException", "not found"))
        .build()
}

fn described_certificate() -> DescribeCertificateOutput {
    DescribeCertificateOutput::builder()
        .certificate_description(
            CertificateDescription::builder()
                .certificate_id(CERT_ID)
                .certificate_arn(CERT_ARN)
                .ca_certificate_id(CA_ID)
                .status(aws_sdk_iot::types::CertificateStatus::PendingActivation)
                .certificate_pem(PEM)
                .build(),
        )
        .build()
}

/// A raw HTTP response; `error_type` goes into `x-amzn-ErrorType` (restJson1).
fn http_response(status: u16, error_type: Option<&str>, body: &str) -> HttpResponse {
    let mut response = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body.to_string()));
    if let Some(error_type) = error_type {
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", error_type.to_string());
    }
    response.headers_mut().insert("content-type", "application/json");
    response
}

/// IoT client without SDK retries: one mocked response per call.
fn iot(rules: &[&Rule]) -> IotAdapter {
    IotAdapter::new(mock_client!(aws_sdk_iot, RuleMode::MatchAny, rules, |c| {
        c.retry_config(RetryConfig::disabled())
    }))
}

/// IoT client with standard retries: 3 attempts, near-zero backoff.
fn iot_with_retries(rules: &[&Rule]) -> IotAdapter {
    IotAdapter::new(mock_client!(aws_sdk_iot, RuleMode::Sequential, rules, |c| {
        c.retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
    }))
}

fn dynamo(rules: &[&Rule]) -> DynamoInventory {
    DynamoInventory::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        }),
        TABLE,
    )
}

fn s3_store(rules: &[&Rule]) -> S3CredentialsStore {
    S3CredentialsStore::new(
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| {
            c.retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        }),
        "credentials-bucket",
        "arn:aws:kms:us-east-1:123456789012:key/0b8c6c2e-1111-2222-3333-444455556666",
    )
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

// --- 1. error classification ------------------------------------------------

#[tokio::test]
async fn describe_certificate_throttling_is_transient() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_error(throttling);
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.describe_certificate(CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert!(error.is_transient());
    assert_eq!(error.operation, "DescribeCertificate");
    assert!(error.detail.contains("ThrottlingException"), "detail: {}", error.detail);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_certificate_http_500_internal_failure_is_transient() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_http_response(|| {
        http_response(
            500,
            Some("InternalFailureException"),
            r#"{"message":"Internal failure"}"#,
        )
    });
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.describe_certificate(CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert!(
        error.detail.starts_with("InternalFailureException"),
        "the deserializer named the code: {}",
        error.detail
    );
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_certificate_http_503_without_error_code_is_transient() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_http_response(|| http_response(503, None, ""));
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.describe_certificate(CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_certificate_http_429_is_transient() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_http_response(|| http_response(429, None, ""));
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.describe_certificate(CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_certificate_not_found_is_none() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate)
        .match_requests(|req| req.certificate_id() == Some(CERT_ID))
        .then_error(|| DescribeCertificateError::ResourceNotFoundException(not_found_exception()));
    let adapter = iot(&[&rule]);

    let found = adapter.describe_certificate(CERT_ID).await.unwrap();

    assert_eq!(found, None);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_certificate_not_found_from_http_404_is_none() {
    // Through the real restJson1 error deserializer.
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_http_response(|| {
        http_response(
            404,
            Some("ResourceNotFoundException"),
            r#"{"message":"The certificate does not exist"}"#,
        )
    });
    let adapter = iot(&[&rule]);

    let found = adapter.describe_certificate(CERT_ID).await.unwrap();

    assert_eq!(found, None);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_ca_certificate_not_found_is_none() {
    let rule = mock!(aws_sdk_iot::Client::describe_ca_certificate)
        .match_requests(|req| req.certificate_id() == Some(CA_ID))
        .then_error(|| DescribeCACertificateError::ResourceNotFoundException(not_found_exception()));
    let adapter = iot(&[&rule]);

    let found = adapter.describe_ca_certificate(CA_ID).await.unwrap();

    assert_eq!(found, None);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_thing_not_found_is_none() {
    let rule = mock!(aws_sdk_iot::Client::describe_thing)
        .match_requests(|req| req.thing_name() == Some("sensor-0042"))
        .then_error(|| DescribeThingError::ResourceNotFoundException(not_found_exception()));
    let adapter = iot(&[&rule]);

    let found = adapter.describe_thing("sensor-0042").await.unwrap();

    assert_eq!(found, None);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn list_thing_principals_not_found_is_none() {
    let rule = mock!(aws_sdk_iot::Client::list_thing_principals)
        .match_requests(|req| req.thing_name() == Some("sensor-0042"))
        .then_error(|| ListThingPrincipalsError::ResourceNotFoundException(not_found_exception()));
    let adapter = iot(&[&rule]);

    let found = adapter.thing_principals("sensor-0042").await.unwrap();

    assert_eq!(found, None);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_certificate_access_denied_from_http_403_is_access_denied() {
    // IAM denials are not modeled by IoT: an unhandled error with a code.
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_http_response(|| {
        http_response(
            403,
            Some("AccessDeniedException"),
            r#"{"message":"User is not authorized to perform: iot:DescribeCertificate"}"#,
        )
    });
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.describe_certificate(CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::AccessDenied);
    assert!(
        error.detail.contains("iot:DescribeCertificate"),
        "detail: {}",
        error.detail
    );
}

#[tokio::test]
async fn describe_certificate_unauthorized_is_access_denied() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_error(|| {
        DescribeCertificateError::UnauthorizedException(
            UnauthorizedException::builder()
                .message("not authorized")
                .meta(meta("UnauthorizedException", "not authorized"))
                .build(),
        )
    });
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.describe_certificate(CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::AccessDenied);
}

#[tokio::test]
async fn describe_certificate_invalid_request_is_invalid() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate).then_error(|| {
        DescribeCertificateError::InvalidRequestException(
            InvalidRequestException::builder()
                .message("certificateId is malformed")
                .meta(meta("InvalidRequestException", "certificateId is malformed"))
                .build(),
        )
    });
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.describe_certificate("not-hex").await);

    assert_eq!(error.kind, PortErrorKind::Invalid);
    assert!(!error.is_transient());
    assert_eq!(error.detail, "InvalidRequestException: certificateId is malformed");
}

#[tokio::test]
async fn add_to_thing_group_missing_group_is_missing_resource() {
    let rule = mock!(aws_sdk_iot::Client::add_thing_to_thing_group)
        .match_requests(|req| {
            req.thing_name() == Some("sensor-0042") && req.thing_group_name() == Some("no-such-group")
        })
        .then_error(|| AddThingToThingGroupError::ResourceNotFoundException(not_found_exception()));
    let adapter = iot(&[&rule]);

    let error = expect_err(adapter.add_to_thing_group("sensor-0042", "no-such-group").await);

    assert_eq!(error.kind, PortErrorKind::MissingResource);
    assert_eq!(error.operation, "AddThingToThingGroup");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn put_credentials_s3_access_denied_is_access_denied() {
    // Through the real restXml error deserializer.
    let rule = mock!(aws_sdk_s3::Client::put_object).then_http_response(|| {
        let mut response = HttpResponse::new(
            StatusCode::try_from(403).unwrap(),
            SdkBody::from(
                r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>R1</RequestId></Error>"#,
            ),
        );
        response.headers_mut().insert("content-type", "application/xml");
        response
    });
    let store = s3_store(&[&rule]);

    let error = expect_err(
        store
            .put_credentials("credentials/k.json", &plan().credentials_record())
            .await,
    );

    assert_eq!(error.kind, PortErrorKind::AccessDenied);
    assert_eq!(error.operation, "PutObject");
    assert_eq!(error.detail, "AccessDenied: Access Denied");
}

// --- 2. retries ---------------------------------------------------------------

#[tokio::test]
async fn describe_certificate_retries_throttling_then_succeeds() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate)
        .sequence()
        .error(throttling)
        .times(2)
        .output(described_certificate)
        .build();
    let adapter = iot_with_retries(&[&rule]);

    let found = adapter.describe_certificate(CERT_ID).await.unwrap();

    let certificate = found.expect("the certificate after two throttled attempts");
    assert_eq!(certificate.certificate_id, CERT_ID);
    assert_eq!(certificate.certificate_arn, CERT_ARN);
    assert_eq!(certificate.ca_certificate_id.as_deref(), Some(CA_ID));
    assert_eq!(certificate.status, CertificateStatus::PendingActivation);
    assert_eq!(certificate.pem, PEM);
    assert_eq!(rule.num_calls(), 3, "two throttled attempts and one success");
}

#[tokio::test]
async fn describe_certificate_throttled_on_every_attempt_is_transient() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate)
        .sequence()
        .error(throttling)
        .repeatedly()
        .build();
    let adapter = iot_with_retries(&[&rule]);

    let error = expect_err(adapter.describe_certificate(CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert!(error.detail.contains("ThrottlingException"), "detail: {}", error.detail);
    assert_eq!(rule.num_calls(), 3, "stops after max_attempts");
}

#[tokio::test]
async fn describe_certificate_retries_http_503_then_succeeds() {
    let rule = mock!(aws_sdk_iot::Client::describe_certificate)
        .sequence()
        .http_status(503, None)
        .output(described_certificate)
        .build();
    let adapter = iot_with_retries(&[&rule]);

    let found = adapter.describe_certificate(CERT_ID).await.unwrap();

    assert_eq!(found.map(|c| c.certificate_arn).as_deref(), Some(CERT_ARN));
    assert_eq!(rule.num_calls(), 2);
}

// --- 3. create_thing ----------------------------------------------------------

#[tokio::test]
async fn create_thing_sends_type_attributes_and_billing_group() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in_rule = Arc::clone(&seen);
    let rule = mock!(aws_sdk_iot::Client::create_thing)
        .match_requests(move |req| {
            seen_in_rule.lock().unwrap().push(req.clone());
            true
        })
        .then_output(|| {
            CreateThingOutput::builder()
                .thing_name("sensor-0042")
                .thing_arn("arn:aws:iot:us-east-1:123456789012:thing/sensor-0042")
                .build()
        });
    let adapter = iot(&[&rule]);

    let creation = adapter.create_thing(&plan()).await.unwrap();

    assert_eq!(creation, ThingCreation::Ready);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.thing_name(), Some("sensor-0042"));
    assert_eq!(request.thing_type_name(), Some("TemperatureSensor"));
    assert_eq!(request.billing_group_name(), Some("standard-billing"));
    let payload = request.attribute_payload().expect("an attribute payload");
    assert!(!payload.merge(), "a new thing gets exactly the plan's attributes");
    let expected: HashMap<String, String> = plan().attributes.into_iter().collect();
    assert_eq!(payload.attributes(), Some(&expected));
}

#[tokio::test]
async fn create_thing_without_type_or_billing_group_omits_them() {
    let rule = mock!(aws_sdk_iot::Client::create_thing)
        .match_requests(|req| {
            req.thing_name() == Some("sensor-0042")
                && req.thing_type_name().is_none()
                && req.billing_group_name().is_none()
        })
        .then_output(|| CreateThingOutput::builder().thing_name("sensor-0042").build());
    let adapter = iot(&[&rule]);
    let mut plan = plan();
    plan.thing_type = None;
    plan.billing_group = None;

    let creation = adapter.create_thing(&plan).await.unwrap();

    assert_eq!(creation, ThingCreation::Ready);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn create_thing_already_exists_differently() {
    let rule = mock!(aws_sdk_iot::Client::create_thing).then_error(|| {
        CreateThingError::ResourceAlreadyExistsException(
            ResourceAlreadyExistsException::builder()
                .message("Thing sensor-0042 already exists in account with different attributes")
                .resource_id("sensor-0042")
                .meta(meta(
                    "ResourceAlreadyExistsException",
                    "Thing sensor-0042 already exists in account with different attributes",
                ))
                .build(),
        )
    });
    let adapter = iot(&[&rule]);

    let creation = adapter.create_thing(&plan()).await.unwrap();

    assert_eq!(creation, ThingCreation::ExistsDifferently);
    assert_eq!(rule.num_calls(), 1);
}

// --- 4. attach_certificate_exclusively ----------------------------------------

#[tokio::test]
async fn attach_certificate_exclusively_sends_exclusive_thing() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in_rule = Arc::clone(&seen);
    let rule = mock!(aws_sdk_iot::Client::attach_thing_principal)
        .match_requests(move |req| {
            seen_in_rule.lock().unwrap().push(req.clone());
            true
        })
        .then_output(|| AttachThingPrincipalOutput::builder().build());
    let adapter = iot(&[&rule]);

    adapter
        .attach_certificate_exclusively("sensor-0042", CERT_ARN)
        .await
        .unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].thing_name(), Some("sensor-0042"));
    assert_eq!(seen[0].principal(), Some(CERT_ARN));
    assert_eq!(
        seen[0].thing_principal_type(),
        Some(&ThingPrincipalType::ExclusiveThing)
    );
}

// --- 5. put_credentials -------------------------------------------------------

#[derive(Debug, Default)]
struct SeenPut {
    bucket: Option<String>,
    key: Option<String>,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    bucket_key: Option<bool>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

#[tokio::test]
async fn put_credentials_requests_sse_kms_with_the_configured_key() {
    let seen = Arc::new(Mutex::new(Vec::<SeenPut>::new()));
    let seen_in_rule = Arc::clone(&seen);
    let rule = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(move |req| {
            seen_in_rule.lock().unwrap().push(SeenPut {
                bucket: req.bucket().map(str::to_string),
                key: req.key().map(str::to_string),
                sse: req.server_side_encryption().cloned(),
                kms_key: req.ssekms_key_id().map(str::to_string),
                bucket_key: req.bucket_key_enabled(),
                content_type: req.content_type().map(str::to_string),
                body: req.body().bytes().map(<[u8]>::to_vec),
            });
            true
        })
        .then_output(|| PutObjectOutput::builder().build());
    let store = s3_store(&[&rule]);
    let plan = plan();
    let key = plan.credentials_key("credentials/");

    store.put_credentials(&key, &plan.credentials_record()).await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let put = &seen[0];
    assert_eq!(put.bucket.as_deref(), Some("credentials-bucket"));
    assert_eq!(
        put.key.as_deref(),
        Some(format!("credentials/sensor-0042/{CERT_ID}.json").as_str())
    );
    assert_eq!(put.sse, Some(ServerSideEncryption::AwsKms));
    assert_eq!(
        put.kms_key.as_deref(),
        Some("arn:aws:kms:us-east-1:123456789012:key/0b8c6c2e-1111-2222-3333-444455556666")
    );
    assert_eq!(put.bucket_key, Some(true));
    assert_eq!(put.content_type.as_deref(), Some("application/json"));
    let body = put.body.as_deref().expect("an in-memory body");
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["certificatePem"], PEM);
    assert_eq!(json["certificateId"], CERT_ID);
    assert_eq!(json["thingName"], "sensor-0042");
    assert_eq!(json["caCertificateId"], CA_ID);
    assert!(json.get("privateKey").is_none());
}

// --- 6. claim_thing_name ------------------------------------------------------

#[tokio::test]
async fn claim_thing_name_success_is_claimed() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| {
            req.table_name() == Some(TABLE)
                && req.item().and_then(|i| i.get("pk")) == Some(&s("THING#sensor-0042"))
                && req.item().and_then(|i| i.get("sk")) == Some(&s("CLAIM"))
                && req.item().and_then(|i| i.get("certificateId")) == Some(&s(CERT_ID))
                && req.condition_expression() == Some("attribute_not_exists(pk) OR certificateId = :me")
                && req.expression_attribute_values().and_then(|v| v.get(":me")) == Some(&s(CERT_ID))
                && req.return_values_on_condition_check_failure() == Some(&ReturnValuesOnConditionCheckFailure::AllOld)
        })
        .then_output(|| PutItemOutput::builder().build());
    let inventory = dynamo(&[&put]);

    let claim = inventory.claim_thing_name("sensor-0042", CERT_ID).await.unwrap();

    assert_eq!(claim, NameClaim::Claimed);
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn claim_thing_name_condition_failure_with_old_item_is_held_by() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::ConditionalCheckFailedException(ccf(Some(HashMap::from([
            ("pk".to_string(), s("THING#sensor-0042")),
            ("sk".to_string(), s("CLAIM")),
            ("certificateId".to_string(), s("other-certificate")),
        ]))))
    });
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    let inventory = dynamo(&[&put, &get]);

    let claim = inventory.claim_thing_name("sensor-0042", CERT_ID).await.unwrap();

    assert_eq!(claim, NameClaim::HeldBy("other-certificate".to_string()));
    assert_eq!(put.num_calls(), 1);
    assert_eq!(get.num_calls(), 0, "the old item made the read unnecessary");
}

#[tokio::test]
async fn claim_thing_name_condition_failure_from_http_body_is_held_by() {
    // Through the real awsJson1_0 error deserializer, `Item` included.
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_http_response(|| {
        let mut response = HttpResponse::new(
            StatusCode::try_from(400).unwrap(),
            SdkBody::from(
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","Item":{"pk":{"S":"THING#sensor-0042"},"sk":{"S":"CLAIM"},"certificateId":{"S":"wire-holder"}}}"#,
            ),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        response
    });
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    let inventory = dynamo(&[&put, &get]);

    let claim = inventory.claim_thing_name("sensor-0042", CERT_ID).await.unwrap();

    assert_eq!(claim, NameClaim::HeldBy("wire-holder".to_string()));
    assert_eq!(get.num_calls(), 0);
}

#[tokio::test]
async fn claim_thing_name_condition_failure_without_item_reads_the_holder() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_error(|| PutItemError::ConditionalCheckFailedException(ccf(None)));
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(|req| {
            req.table_name() == Some(TABLE)
                && req.key().and_then(|k| k.get("pk")) == Some(&s("THING#sensor-0042"))
                && req.key().and_then(|k| k.get("sk")) == Some(&s("CLAIM"))
                && req.consistent_read() == Some(true)
        })
        .then_output(|| {
            GetItemOutput::builder()
                .item("pk", s("THING#sensor-0042"))
                .item("sk", s("CLAIM"))
                .item("certificateId", s("holder-from-get"))
                .build()
        });
    let inventory = dynamo(&[&put, &get]);

    let claim = inventory.claim_thing_name("sensor-0042", CERT_ID).await.unwrap();

    assert_eq!(claim, NameClaim::HeldBy("holder-from-get".to_string()));
    assert_eq!(put.num_calls(), 1);
    assert_eq!(get.num_calls(), 1);
}

#[tokio::test]
async fn claim_thing_name_released_between_put_and_get_is_transient() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_error(|| PutItemError::ConditionalCheckFailedException(ccf(None)));
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    let inventory = dynamo(&[&put, &get]);

    let error = expect_err(inventory.claim_thing_name("sensor-0042", CERT_ID).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert_eq!(get.num_calls(), 1);
}

// --- 7. record_observed / transfer_thing_name ----------------------------------

#[tokio::test]
async fn record_observed_keeps_an_existing_record() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| {
            req.condition_expression() == Some("attribute_not_exists(pk)")
                && req.item().and_then(|i| i.get("pk")) == Some(&s(&format!("CERT#{CERT_ID}")))
                && req.item().and_then(|i| i.get("status")) == Some(&s("OBSERVED"))
                && req.item().and_then(|i| i.get("certificateStatus")) == Some(&s("ACTIVE"))
        })
        .then_error(|| PutItemError::ConditionalCheckFailedException(ccf(None)));
    let inventory = dynamo(&[&put]);

    inventory.record_observed(&observed_record()).await.unwrap();

    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn record_observed_other_errors_are_classified() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::ProvisionedThroughputExceededException(
            aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                .message("slow down")
                .meta(meta("ProvisionedThroughputExceededException", "slow down"))
                .build(),
        )
    });
    let inventory = dynamo(&[&put]);

    let error = expect_err(inventory.record_observed(&observed_record()).await);

    assert_eq!(error.kind, PortErrorKind::Transient);
    assert_eq!(error.operation, "PutItem");
}

#[tokio::test]
async fn transfer_thing_name_condition_failure_is_false() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            req.key().and_then(|k| k.get("pk")) == Some(&s("THING#sensor-0042"))
                && req.condition_expression() == Some("certificateId = :from AND attribute_not_exists(heldFor)")
                && req.expression_attribute_values().and_then(|v| v.get(":from")) == Some(&s("retired"))
                && req.expression_attribute_values().and_then(|v| v.get(":to")) == Some(&s(CERT_ID))
        })
        .then_error(|| UpdateItemError::ConditionalCheckFailedException(ccf(None)));
    let inventory = dynamo(&[&update]);

    let moved = inventory
        .transfer_thing_name("sensor-0042", "retired", CERT_ID)
        .await
        .unwrap();

    assert!(!moved);
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn transfer_thing_name_success_is_true() {
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| UpdateItemOutput::builder().build());
    let inventory = dynamo(&[&update]);

    let moved = inventory
        .transfer_thing_name("sensor-0042", "retired", CERT_ID)
        .await
        .unwrap();

    assert!(moved);
}

// --- 8. load_config -----------------------------------------------------------

fn config_item(sk: &str, extra: &[(&str, &str)]) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([("pk".to_string(), s("CONFIG")), ("sk".to_string(), s(sk))]);
    for (name, value) in extra {
        item.insert((*name).to_string(), s(value));
    }
    item
}

const BROKEN_CA: &str = "bb11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900";
const DENIED_FINGERPRINT: &str = "cc11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900";

#[tokio::test]
async fn load_config_reads_profiles_and_bindings_and_moves_old_deny_items_out() {
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|req| {
            req.table_name() == Some(TABLE)
                && req.key_condition_expression() == Some("pk = :pk")
                && req.expression_attribute_values().and_then(|v| v.get(":pk")) == Some(&s("CONFIG"))
        })
        .then_output(|| {
            QueryOutput::builder()
                .items(config_item(
                    &profile_sk("sensors"),
                    &[("profile", r#"{"name":"sensors","policyName":"p"}"#)],
                ))
                .items(config_item(&binding_sk(CA_ID), &[("profile", "sensors")]))
                // Entries of the earlier layout, one written by hand in another notation.
                .items(config_item(
                    &format!("DENY#SERIAL#{CA_ID}#0A:BC"),
                    &[("reason", "lost")],
                ))
                .items(config_item(&format!("DENY#FINGERPRINT#{DENIED_FINGERPRINT}"), &[]))
                .items(config_item("DENY#SERIAL#unreadable", &[]))
                .items(config_item(&profile_sk("broken"), &[("profile", "{not json")]))
                .items(config_item(&binding_sk(BROKEN_CA), &[("profile", "broken")]))
                .count(7)
                .build()
        });
    let serial = DenyKey::serial(CA_ID, "0abc").unwrap();
    let fingerprint = DenyKey::fingerprint(DENIED_FINGERPRINT).unwrap();
    let (serial_pk, fingerprint_pk) = (deny_pk(&serial), deny_pk(&fingerprint));
    let moved_serial = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |req| {
            let item = req.item().unwrap();
            item.get("pk") == Some(&s(&serial_pk))
                && item.get("sk") == Some(&s(DENY_SK))
                && item.get("reason") == Some(&s("lost"))
        })
        .then_output(|| PutItemOutput::builder().build());
    let moved_fingerprint = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |req| req.item().unwrap().get("pk") == Some(&s(&fingerprint_pk)))
        .then_output(|| PutItemOutput::builder().build());
    let deleted = mock!(aws_sdk_dynamodb::Client::delete_item)
        .match_requests(|req| {
            req.key().unwrap().get("pk") == Some(&s("CONFIG"))
                && req.key().unwrap().get("sk").is_some_and(|sk| {
                    sk.as_s()
                        .is_ok_and(|sk| sk.starts_with("DENY#") && sk != "DENY#SERIAL#unreadable")
                })
        })
        .then_output(|| aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput::builder().build());
    let inventory = dynamo(&[&query, &moved_serial, &moved_fingerprint, &deleted]);

    let config = inventory.load_config().await.unwrap();

    assert_eq!(moved_serial.num_calls(), 1, "the hand-written serial, normalised");
    assert_eq!(moved_fingerprint.num_calls(), 1);
    assert_eq!(
        deleted.num_calls(),
        2,
        "old items deleted after the new ones were written"
    );

    match config.trust(CA_ID) {
        CaTrust::Bound(profile) => {
            assert_eq!(profile.name, "sensors");
            assert_eq!(profile.policy_name, "p");
        }
        other => panic!("CA should be bound to sensors, got {other:?}"),
    }
    assert!(matches!(
        config.trust(BROKEN_CA),
        CaTrust::Misconfigured { profile: "broken", .. }
    ));
    assert_eq!(config.trust("unknown-ca"), CaTrust::Unbound);
    assert_eq!(config.counts(), (2, 2));
    assert_eq!(query.num_calls(), 1);
}

#[tokio::test]
async fn a_failed_move_of_an_old_deny_item_fails_the_load() {
    // Fail closed: the configuration is not used as if the entry were gone.
    let query = mock!(aws_sdk_dynamodb::Client::query).then_output(|| {
        QueryOutput::builder()
            .items(config_item(&format!("DENY#SERIAL#{CA_ID}#0abc"), &[]))
            .build()
    });
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::generic(
            ErrorMetadata::builder()
                .code("ProvisionedThroughputExceededException")
                .message("slow down")
                .build(),
        )
    });
    let inventory = dynamo(&[&query, &put]);
    let error = expect_err(inventory.load_config().await);
    assert_eq!(error.kind, PortErrorKind::Transient);
}

fn deny_item(pk: &str, sk: &str, reason: Option<&str>) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))]);
    if let Some(reason) = reason {
        item.insert("reason".into(), s(reason));
    }
    item
}

#[tokio::test]
async fn the_deny_list_is_one_batch_get_by_key_in_both_layouts() {
    let serial = DenyKey::serial(CA_ID, "0abc").unwrap();
    let fingerprint = DenyKey::fingerprint(DENIED_FINGERPRINT).unwrap();
    let keys_asked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let recorder = keys_asked.clone();
    let serial_only = {
        let pk = deny_pk(&serial);
        mock!(aws_sdk_dynamodb::Client::batch_get_item)
            .match_requests(move |req| {
                let request = req.request_items().unwrap().get(TABLE).unwrap();
                let mut asked = recorder.lock().unwrap();
                for key in request.keys() {
                    asked.push((key["pk"].as_s().unwrap().clone(), key["sk"].as_s().unwrap().clone()));
                }
                request.consistent_read() == Some(true)
            })
            .then_output(move || {
                BatchGetItemOutput::builder()
                    .responses(TABLE, vec![deny_item(&pk, DENY_SK, Some("stolen"))])
                    .build()
            })
    };
    let inventory = dynamo(&[&serial_only]);
    let denial = inventory.denial(CA_ID, "0abc", DENIED_FINGERPRINT).await.unwrap();
    let denial = denial.expect("denied");
    assert_eq!(denial.reason, onboarding_domain::RejectReason::SerialDenied);
    assert!(denial.detail.contains("stolen"));
    assert_eq!(serial_only.num_calls(), 1, "one round");
    let mut asked = keys_asked.lock().unwrap().clone();
    asked.sort();
    let mut expected = vec![
        (deny_pk(&serial), DENY_SK.to_string()),
        (deny_pk(&fingerprint), DENY_SK.to_string()),
        ("CONFIG".to_string(), legacy_deny_sk(&serial)),
        ("CONFIG".to_string(), legacy_deny_sk(&fingerprint)),
    ];
    expected.sort();
    assert_eq!(asked, expected);

    // An old-layout fingerprint entry, and a serial entry: the fingerprint is reported.
    let both = {
        let (serial_pk, legacy) = (deny_pk(&serial), legacy_deny_sk(&fingerprint));
        mock!(aws_sdk_dynamodb::Client::batch_get_item).then_output(move || {
            BatchGetItemOutput::builder()
                .responses(
                    TABLE,
                    vec![deny_item(&serial_pk, DENY_SK, None), deny_item("CONFIG", &legacy, None)],
                )
                .build()
        })
    };
    let inventory = dynamo(&[&both]);
    let denial = inventory.denial(CA_ID, "0abc", DENIED_FINGERPRINT).await.unwrap();
    assert_eq!(
        denial.map(|d| d.reason),
        Some(onboarding_domain::RejectReason::FingerprintDenied)
    );

    // Nothing found: allowed. Unprocessed keys are asked again.
    let unprocessed = {
        let pk = deny_pk(&serial);
        mock!(aws_sdk_dynamodb::Client::batch_get_item)
            .match_requests(|req| req.request_items().unwrap()[TABLE].keys().len() == 4)
            .then_output(move || {
                BatchGetItemOutput::builder()
                    .unprocessed_keys(
                        TABLE,
                        aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                            .keys(deny_item(&pk, DENY_SK, None))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
    };
    let retried = mock!(aws_sdk_dynamodb::Client::batch_get_item)
        .match_requests(|req| req.request_items().unwrap()[TABLE].keys().len() == 1)
        .then_output(|| BatchGetItemOutput::builder().build());
    let inventory = dynamo(&[&unprocessed, &retried]);
    assert_eq!(inventory.denial(CA_ID, "0abc", DENIED_FINGERPRINT).await.unwrap(), None);
    assert_eq!((unprocessed.num_calls(), retried.num_calls()), (1, 1));

    // A failed lookup is an error, never "not denied".
    let throttled = mock!(aws_sdk_dynamodb::Client::batch_get_item).then_error(|| {
        aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("slow")
                .build(),
        )
    });
    let inventory = dynamo(&[&throttled]);
    let error = expect_err(inventory.denial(CA_ID, "0abc", DENIED_FINGERPRINT).await);
    assert_eq!(error.kind, PortErrorKind::Transient);
}

#[tokio::test]
async fn load_config_reads_every_page() {
    let first = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|req| req.exclusive_start_key().is_none())
        .then_output(|| {
            QueryOutput::builder()
                .items(config_item(
                    &profile_sk("sensors"),
                    &[("profile", r#"{"name":"sensors","policyName":"p"}"#)],
                ))
                .last_evaluated_key("pk", s("CONFIG"))
                .last_evaluated_key("sk", s(&profile_sk("sensors")))
                .build()
        });
    let second = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|req| {
            req.exclusive_start_key().and_then(|k| k.get("sk")) == Some(&s(&profile_sk("sensors")))
                && req.expression_attribute_values().and_then(|v| v.get(":pk")) == Some(&s("CONFIG"))
        })
        .then_output(|| {
            QueryOutput::builder()
                .items(config_item(&binding_sk(CA_ID), &[("profile", "sensors")]))
                .build()
        });
    let inventory = dynamo(&[&first, &second]);

    let config = inventory.load_config().await.unwrap();

    assert_eq!(first.num_calls(), 1);
    assert_eq!(second.num_calls(), 1);
    assert!(
        matches!(config.trust(CA_ID), CaTrust::Bound(p) if p.name == "sensors"),
        "profile from page 1 joined with the binding from page 2"
    );
    assert_eq!(config.counts(), (1, 1));
}

#[tokio::test]
async fn production_adaptive_retry_settings_retry_throttling() {
    // The retry configuration the functions really use (adaptive mode),
    // shortened to 3 attempts and millisecond backoff.
    let settings = onboarding_aws::SdkSettings {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..onboarding_aws::SdkSettings::default()
    };
    let rule = mock!(aws_sdk_iot::Client::describe_certificate)
        .sequence()
        .error(throttling)
        .times(2)
        .output(described_certificate)
        .build();
    let retry_config = settings.retry_config();
    let adapter = IotAdapter::new(mock_client!(aws_sdk_iot, RuleMode::Sequential, [&rule], |c| {
        c.retry_config(retry_config.clone())
    }));

    let found = tokio::time::timeout(Duration::from_secs(10), adapter.describe_certificate(CERT_ID))
        .await
        .expect("adaptive retries finish quickly")
        .unwrap();

    assert_eq!(found.map(|c| c.certificate_id).as_deref(), Some(CERT_ID));
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn thing_principals_reads_every_page() {
    let first = mock!(aws_sdk_iot::Client::list_thing_principals)
        .match_requests(|req| req.thing_name() == Some("sensor-0042") && req.next_token().is_none())
        .then_output(|| {
            aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsOutput::builder()
                .principals("arn:aws:iot:us-east-1:123456789012:cert/old")
                .next_token("page-2")
                .build()
        });
    let second = mock!(aws_sdk_iot::Client::list_thing_principals)
        .match_requests(|req| req.thing_name() == Some("sensor-0042") && req.next_token() == Some("page-2"))
        .then_output(|| {
            aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsOutput::builder()
                .principals(CERT_ARN)
                .build()
        });
    let adapter = iot(&[&first, &second]);

    let principals = adapter.thing_principals("sensor-0042").await.unwrap();

    assert_eq!(
        principals,
        Some(vec![
            "arn:aws:iot:us-east-1:123456789012:cert/old".to_string(),
            CERT_ARN.to_string()
        ])
    );
    assert_eq!(first.num_calls(), 1);
    assert_eq!(second.num_calls(), 1);
}

// --- 9. what the SDK provides ---------------------------------------------------

#[tokio::test]
async fn codes_on_the_sdks_throttling_and_transient_lists_are_transient() {
    // Codes the adapter's own list did not have: the SDK's retry classifier
    // treats them as throttling (the first two) or transient (the last).
    for code in [
        "RequestThrottledException",
        "PriorRequestNotComplete",
        "RequestTimeoutException",
    ] {
        let rule = mock!(aws_sdk_iot::Client::describe_certificate)
            .then_error(move || DescribeCertificateError::generic(meta(code, "slow down")));
        let adapter = iot(&[&rule]);

        let error = expect_err(adapter.describe_certificate(CERT_ID).await);

        assert_eq!(error.kind, PortErrorKind::Transient, "{code}");
        assert_eq!(error.detail, format!("{code}: slow down"));
    }
}

#[tokio::test]
async fn unprocessed_allow_list_writes_are_sent_again() {
    let serials = ["0a".to_string(), "0b".to_string()];
    let first = mock!(aws_sdk_dynamodb::Client::batch_write_item)
        .match_requests(|req| req.request_items().unwrap()[TABLE].len() == 2)
        .then_output(|| {
            let left = aws_sdk_dynamodb::types::WriteRequest::builder()
                .delete_request(
                    aws_sdk_dynamodb::types::DeleteRequest::builder()
                        .key("pk", s("ALLOW#0b"))
                        .key("sk", s("ALLOW"))
                        .build()
                        .unwrap(),
                )
                .build();
            aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput::builder()
                .unprocessed_items(TABLE, vec![left])
                .build()
        });
    let retried = mock!(aws_sdk_dynamodb::Client::batch_write_item)
        .match_requests(|req| {
            let writes = &req.request_items().unwrap()[TABLE];
            writes.len() == 1 && writes[0].delete_request().and_then(|d| d.key().get("pk")) == Some(&s("ALLOW#0b"))
        })
        .then_output(|| aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput::builder().build());
    let inventory = dynamo(&[&first, &retried]);

    inventory.disallow_serials(&serials).await.unwrap();

    assert_eq!((first.num_calls(), retried.num_calls()), (1, 1));
}

#[tokio::test]
async fn allow_list_reads_every_page() {
    let entry = |serial: &str| {
        HashMap::from([
            ("pk".to_string(), s(&format!("ALLOW#{serial}"))),
            ("sk".to_string(), s("ALLOW")),
            ("serial".to_string(), s(serial)),
        ])
    };
    let first = mock!(aws_sdk_dynamodb::Client::scan)
        .match_requests(|req| req.exclusive_start_key().is_none())
        .then_output(move || {
            aws_sdk_dynamodb::operation::scan::ScanOutput::builder()
                .items(entry("0b"))
                .set_last_evaluated_key(Some(HashMap::from([
                    ("pk".to_string(), s("ALLOW#0b")),
                    ("sk".to_string(), s("ALLOW")),
                ])))
                .build()
        });
    let second = mock!(aws_sdk_dynamodb::Client::scan)
        .match_requests(|req| {
            req.exclusive_start_key()
                .is_some_and(|k| k.get("pk") == Some(&s("ALLOW#0b")))
        })
        .then_output(move || {
            aws_sdk_dynamodb::operation::scan::ScanOutput::builder()
                .items(entry("0a"))
                .build()
        });
    let inventory = dynamo(&[&first, &second]);

    let serials: Vec<String> = inventory
        .allow_list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.serial)
        .collect();

    assert_eq!(serials, ["0a", "0b"]);
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

// --- 10. operators' calls -------------------------------------------------------

#[tokio::test]
async fn an_operators_call_fails_with_the_services_code_and_message() {
    let missing = mock!(aws_sdk_iot::Client::describe_certificate)
        .then_error(|| DescribeCertificateError::ResourceNotFoundException(not_found_exception()));
    let client = || {
        mock_client!(aws_sdk_iot, RuleMode::MatchAny, &[&missing], |c| {
            c.retry_config(RetryConfig::disabled())
        })
    };

    // Where a missing certificate is an answer, it is one.
    assert_eq!(
        onboarding_aws::lookup_certificate(&client(), CERT_ID).await,
        Ok(onboarding_aws::CertificateLookup::Unknown)
    );
    // Where it is not, the message names the call, the code and the service's words.
    let error = onboarding_aws::certificate_status(&client(), CERT_ID)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "DescribeCertificate failed: ResourceNotFoundException: not found"
    );
}
