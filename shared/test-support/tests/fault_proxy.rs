//! The proxy's injected faults against the emulator, as the AWS SDK for Rust
//! sees them: each kind fails a call the way AWS would (a 5xx code in the
//! service's own shape, an attempt timeout, an I/O failure), the kinds
//! "after forwarding" leave the call applied, the count follows the seed,
//! and the SDK's retries get every call through.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_iot::config::http::HttpResponse;
use aws_sdk_iot::config::retry::RetryPartition;
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};
use onboarding_test_support::emulator::{s3_client, sdk_config_for};
use onboarding_test_support::faults::{FaultCounts, FaultKind, Faults};
use onboarding_test_support::proxy::{Proxy, ProxyOptions};
use onboarding_test_support::world::{BUCKET, TABLE, World};
use tokio::task::JoinSet;

/// The clients' attempt timeout, and how long the proxy's timeouts hold a
/// call: longer, as the functions' 5 s against the default 6 s. Short to
/// keep the tests short, but long enough that a loaded machine's slow
/// answer is not taken for an injected timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const HOLD: Duration = Duration::from_secs(4);

async fn world() -> World {
    World::new()
        .await
        .unwrap_or_else(|e| panic!("could not build the test world: {e}"))
}

async fn proxy(world: &World, faults: Option<Faults>) -> Proxy {
    Proxy::start_with(
        world.emulator.gateway_port,
        ProxyOptions {
            faults,
            ..ProxyOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("proxy: {e}"))
}

/// The SDK configuration of clients calling through the proxy: `retry`,
/// and an attempt timeout shorter than the proxy's hold.
async fn through(proxy: &Proxy, retry: RetryConfig) -> SdkConfig {
    sdk_config_for(&proxy.endpoint())
        .await
        .into_builder()
        .retry_config(retry)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build()
}

/// What a caller saw of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Ok,
    /// A service error: its code and HTTP status.
    Error(String, u16),
    /// The attempt timed out.
    Timeout,
    /// The connection failed (reset, or closed without an answer).
    Dispatch,
    Other(String),
}

fn seen<T, E>(result: Result<T, SdkError<E, HttpResponse>>) -> Seen
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Seen::Ok,
        Err(SdkError::ServiceError(e)) => Seen::Error(
            e.err().code().unwrap_or("no code").to_string(),
            e.raw().status().as_u16(),
        ),
        Err(SdkError::TimeoutError(_)) => Seen::Timeout,
        // A reset is an I/O error; a close without an answer, hyper's
        // "incomplete message", which the SDK classifies as transient.
        Err(SdkError::DispatchFailure(d)) if d.is_io() || d.is_other() => Seen::Dispatch,
        Err(e) => Seen::Other(format!("{e:?}")),
    }
}

/// What a call through a proxy faulting every call with `kind` must see.
fn expected(kind: FaultKind, internal: &str, unavailable: &str) -> Seen {
    match kind {
        FaultKind::InternalError => Seen::Error(internal.to_string(), 500),
        FaultKind::Unavailable => Seen::Error(unavailable.to_string(), 503),
        FaultKind::TimeoutBeforeForward | FaultKind::TimeoutAfterForward => Seen::Timeout,
        FaultKind::ResetBeforeForward | FaultKind::ResetAfterForward => Seen::Dispatch,
    }
}

fn key(pk: &str) -> [(String, AttributeValue); 2] {
    [
        ("pk".to_string(), AttributeValue::S(pk.to_string())),
        ("sk".to_string(), AttributeValue::S("fault".to_string())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_fails_the_call_as_aws_would_and_after_kinds_apply_it() {
    let world = world().await;
    let proxy = proxy(&world, None).await;
    let sdk = through(&proxy, RetryConfig::disabled()).await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let s3 = s3_client(&sdk);
    let kms = aws_sdk_kms::Client::new(&sdk);

    for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
        proxy.set_faults(Some(Faults::of_kind(kind, 1.0, 13).hold(HOLD)));

        // The four calls at once (a timeout takes the attempt timeout).
        let thing = format!("fault-thing-{i}");
        let pk = format!("fault-item-{i}");
        let object = format!("fault/object-{i}");
        let create = iot.create_thing().thing_name(&thing).send();
        let put_item = dynamodb
            .put_item()
            .table_name(TABLE)
            .set_item(Some(key(&pk).into_iter().collect()))
            .send();
        let put_object = s3
            .put_object()
            .bucket(BUCKET)
            .key(&object)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
            .send();
        // KMS Encrypt has no lasting effect to check.
        let encrypt = kms
            .encrypt()
            .key_id(&world.kms_key_id)
            .plaintext(aws_sdk_kms::primitives::Blob::new(b"secret".to_vec()))
            .send();
        let (create, put_item, put_object, encrypt) = tokio::join!(create, put_item, put_object, encrypt);
        // IoT (REST-JSON), DynamoDB (awsJson1_0), S3 (REST-XML), KMS (awsJson1_1).
        let want = expected(kind, "InternalFailureException", "ServiceUnavailableException");
        assert_eq!(seen(create), want, "{kind}: CreateThing");
        let want = expected(kind, "InternalServerError", "ServiceUnavailable");
        assert_eq!(seen(put_item), want, "{kind}: PutItem");
        let want = expected(kind, "InternalError", "ServiceUnavailable");
        assert_eq!(seen(put_object), want, "{kind}: PutObject");
        let want = expected(kind, "KMSInternalException", "ServiceUnavailable");
        assert_eq!(seen(encrypt), want, "{kind}: Encrypt");

        // Straight to the emulator: the calls were applied exactly when the
        // kind forwards them.
        let found = world.iot.describe_thing().thing_name(&thing).send().await.is_ok();
        assert_eq!(found, kind.forwards(), "{kind}: the thing exists");
        let item = world
            .dynamodb
            .get_item()
            .table_name(TABLE)
            .set_key(Some(key(&pk).into_iter().collect()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetItem: {e:?}"));
        assert_eq!(item.item.is_some(), kind.forwards(), "{kind}: the item exists");
        let object = world.s3.head_object().bucket(BUCKET).key(&object).send().await;
        assert_eq!(object.is_ok(), kind.forwards(), "{kind}: the object exists");

        let report = proxy.quota_report();
        for (service, operation) in [
            ("iot", "CreateThing"),
            ("dynamodb", "PutItem"),
            ("s3", "PutObject"),
            ("kms", "Encrypt"),
        ] {
            let a = report
                .get(service, operation)
                .map(|a| (a.calls, a.faults.get(kind), a.faults.total()));
            let n = i as u64 + 1;
            assert_eq!(a, Some((n, 1, n)), "{kind}: {service}:{operation}\n{report}");
        }
    }
    let report = proxy.quota_report();
    println!("{report}");
    assert_eq!(report.total_faults().total(), 4 * 6);
    assert_eq!(proxy.faults_injected().len(), 4 * 6);

    // Faults off: nothing injected.
    proxy.set_faults(None);
    proxy.clear_quota_report();
    let result = seen(iot.create_thing().thing_name("fault-thing-none").send().await);
    assert_eq!(result, Seen::Ok);
    let report = proxy.quota_report();
    assert_eq!(report.total_calls(), 1, "{report}");
    assert_eq!(report.total_faults(), FaultCounts::default(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_of_two_hundred_calls_is_faulted_as_the_seed_says() {
    let world = world().await;
    world
        .iot
        .create_thing()
        .thing_name("fault-target")
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateThing: {e:?}"));
    let faults = Faults::new(0.2, 2026).hold(HOLD);
    let proxy = proxy(&world, Some(faults.clone())).await;
    let iot = aws_sdk_iot::Client::new(&through(&proxy, RetryConfig::disabled()).await);

    // 200 DescribeThing calls, 8 at a time, one attempt each.
    let n = 200;
    let mut calls = JoinSet::new();
    let mut results = Vec::new();
    for _ in 0..n {
        if calls.len() == 8
            && let Some(result) = calls.join_next().await
        {
            results.push(result.unwrap_or_else(|e| panic!("task: {e}")));
        }
        let call = iot.describe_thing().thing_name("fault-target");
        calls.spawn(async move { seen(call.send().await) });
    }
    while let Some(result) = calls.join_next().await {
        results.push(result.unwrap_or_else(|e| panic!("task: {e}")));
    }

    // The first 200 decisions of the seed, whichever call each fell on.
    let planned = FaultCounts::of(&faults.decisions(n));
    assert!(
        (20..=60).contains(&planned.total()),
        "0.2 of 200 is 40 ± 3σ (σ ≈ 5.7): {planned:?}"
    );
    let report = proxy.quota_report();
    let describe = report.get("iot", "DescribeThing").cloned();
    let describe = describe.unwrap_or_else(|| panic!("not counted: {report}"));
    assert_eq!(describe.calls, n as u64, "{report}");
    assert_eq!(describe.faults, planned, "{report}");
    assert_eq!(proxy.faults_injected().len() as u64, planned.total());

    // And the callers saw exactly those failures.
    let count = |s: &dyn Fn(&Seen) -> bool| results.iter().filter(|r| s(r)).count() as u64;
    assert_eq!(count(&|r| *r == Seen::Ok), n as u64 - planned.total(), "{results:?}");
    let internal = Seen::Error("InternalFailureException".into(), 500);
    let unavailable = Seen::Error("ServiceUnavailableException".into(), 503);
    assert_eq!(count(&|r| *r == internal), planned.internal_error);
    assert_eq!(count(&|r| *r == unavailable), planned.unavailable);
    assert_eq!(
        count(&|r| *r == Seen::Timeout),
        planned.timeout_before_forward + planned.timeout_after_forward
    );
    assert_eq!(
        count(&|r| *r == Seen::Dispatch),
        planned.reset_before_forward + planned.reset_after_forward
    );
    println!("{n} calls at 0.2: {planned:?}\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sdks_retries_every_call_gets_through_five_percent_of_faults() {
    let world = world().await;
    world
        .iot
        .create_thing()
        .thing_name("retry-target")
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateThing: {e:?}"));
    let faults = Faults::new(0.05, 7).hold(HOLD);
    let proxy = proxy(&world, Some(faults.clone())).await;
    let sdk = through(&proxy, RetryConfig::standard().with_max_attempts(6)).await;
    let iot = aws_sdk_iot::Client::from_conf(
        aws_sdk_iot::config::Builder::from(&sdk)
            .retry_partition(RetryPartition::new("fault-test-iot"))
            .build(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .retry_partition(aws_sdk_dynamodb::config::retry::RetryPartition::new(
                "fault-test-dynamodb",
            ))
            .build(),
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .retry_partition(aws_sdk_s3::config::retry::RetryPartition::new("fault-test-s3"))
            .build(),
    );

    // 70 DescribeThing, 70 PutItem and 60 PutObject (the last two
    // idempotent), 8 at a time.
    let n = 200;
    let mut calls = JoinSet::new();
    let mut results = Vec::new();
    for i in 0..n {
        if calls.len() == 8
            && let Some(result) = calls.join_next().await
        {
            results.push(result.unwrap_or_else(|e| panic!("task: {e}")));
        }
        match i % 20 {
            0..=6 => {
                let call = iot.describe_thing().thing_name("retry-target");
                calls.spawn(async move { ("DescribeThing", seen(call.send().await)) });
            }
            7..=13 => {
                let pk = format!("retry-item-{i}");
                let call = dynamodb
                    .put_item()
                    .table_name(TABLE)
                    .set_item(Some(key(&pk).into_iter().collect()));
                calls.spawn(async move { ("PutItem", seen(call.send().await)) });
            }
            _ => {
                let call = s3
                    .put_object()
                    .bucket(BUCKET)
                    .key(format!("retry/object-{i}"))
                    .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"));
                calls.spawn(async move { ("PutObject", seen(call.send().await)) });
            }
        }
    }
    while let Some(result) = calls.join_next().await {
        results.push(result.unwrap_or_else(|e| panic!("task: {e}")));
    }

    let failed: Vec<_> = results.iter().filter(|(_, s)| *s != Seen::Ok).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(results.len(), n);
    let report = proxy.quota_report();
    let faulted = report.total_faults();
    // Every fault cost one more attempt, and nothing else did (no quotas).
    assert_eq!(report.total_calls(), n as u64 + faulted.total(), "{report}");
    // At least the faults of the first 200 decisions.
    let planned = FaultCounts::of(&faults.decisions(n));
    assert!(planned.total() > 0, "{planned:?}");
    assert!(faulted.total() >= planned.total(), "{faulted:?} {planned:?}");
    println!("{n} calls at 0.05 with 6 attempts: {faulted:?}\n{report}");
}
