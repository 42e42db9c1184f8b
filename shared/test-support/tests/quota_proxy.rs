//! The quota proxy in front of the emulator: calls over an action's quota
//! get the service's own throttling error, which the AWS SDK for Rust
//! classifies as throttling, and the SDK's retries get every call through.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_runtime::retries::classifiers::THROTTLING_ERRORS;
use aws_sdk_iot::config::retry::RetryPartition;
use aws_sdk_iot::error::ProvideErrorMetadata;
use aws_sdk_iot::types::CertificateStatus;
use onboarding_test_support::emulator::{s3_client, sdk_config_for};
use onboarding_test_support::proxy::{Proxy, ProxyOptions};
use onboarding_test_support::quota::Quotas;
use onboarding_test_support::world::{BUCKET, TABLE, World};
use tokio::task::JoinSet;

async fn world() -> World {
    World::new()
        .await
        .unwrap_or_else(|e| panic!("could not build the test world: {e}"))
}

async fn proxy(world: &World, quotas: Quotas) -> Proxy {
    Proxy::start_with(
        world.emulator.gateway_port,
        ProxyOptions {
            latency: Duration::ZERO,
            quotas: Some(quotas),
            faults: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("proxy: {e}"))
}

/// An IoT client through the proxy with `retry`, in a retry partition of
/// its own (the SDK's retry token bucket is shared per partition).
async fn iot(proxy: &Proxy, retry: RetryConfig, partition: &'static str) -> aws_sdk_iot::Client {
    let sdk = sdk_config_for(&proxy.endpoint()).await;
    let config = aws_sdk_iot::config::Builder::from(&sdk)
        .retry_config(retry)
        .retry_partition(RetryPartition::new(partition))
        .build();
    aws_sdk_iot::Client::from_conf(config)
}

/// A registered device certificate's id.
async fn certificate(world: &World) -> String {
    let device = world
        .ca
        .device("quota-device")
        .build()
        .unwrap_or_else(|e| panic!("device: {e}"));
    world
        .iot
        .register_certificate()
        .certificate_pem(&device.cert_pem)
        .ca_certificate_pem(&world.ca.cert_pem)
        .status(CertificateStatus::Inactive)
        .send()
        .await
        .unwrap_or_else(|e| panic!("register: {e}"))
        .certificate_id
        .unwrap_or_else(|| panic!("no certificate id"))
}

/// `n` concurrent DescribeCertificate calls; the error code and HTTP
/// status of each that failed (`None` for the ones that succeeded).
async fn describe_all(client: &aws_sdk_iot::Client, id: &str, n: usize) -> Vec<Option<(String, u16)>> {
    let mut calls = JoinSet::new();
    for _ in 0..n {
        let call = client.describe_certificate().certificate_id(id);
        calls.spawn(async move {
            match call.send().await {
                Ok(_) => None,
                Err(e) => {
                    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
                    let code = e.code().unwrap_or("no code").to_string();
                    Some((code, status))
                }
            }
        });
    }
    let mut results = Vec::new();
    while let Some(result) = calls.join_next().await {
        results.push(result.unwrap_or_else(|e| panic!("task: {e}")));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_certificate_is_held_to_its_quota_and_retries_get_through() {
    let world = world().await;
    let id = certificate(&world).await;
    // AWS's default for DescribeCertificate: 10 per second.
    let quotas = Quotas::aws_defaults();
    assert_eq!(quotas.limit("iot", "DescribeCertificate"), Some(10.0));
    let proxy = proxy(&world, quotas.clone()).await;

    // Retries off: 40 at once, about 10 pass (the burst, plus what the
    // bucket refills while the 40 arrive), the rest are throttled.
    let client = iot(&proxy, RetryConfig::disabled(), "quota-test-no-retries").await;
    let results = describe_all(&client, &id, 40).await;
    let passed = results.iter().filter(|r| r.is_none()).count();
    // At most the burst plus what the bucket refilled while the 40 arrived
    // (plus one for the clock reads), whatever the machine's load.
    let arrivals: Vec<Duration> = proxy.requests().iter().map(|r| r.received).collect();
    let span = arrivals.iter().max().copied().unwrap_or_default() - arrivals.iter().min().copied().unwrap_or_default();
    let most = 10 + (10.0 * span.as_secs_f64()).floor() as usize + 1;
    assert!(
        (10..=most).contains(&passed),
        "{passed} passed in {span:?}: {results:?}"
    );
    for failure in results.iter().flatten() {
        assert_eq!(failure, &("ThrottlingException".to_string(), 429), "{results:?}");
        assert!(
            THROTTLING_ERRORS.contains(&failure.0.as_str()),
            "the SDK's throttling list"
        );
    }
    let report = proxy.quota_report();
    let describe = report.get("iot", "DescribeCertificate").cloned();
    let describe = describe.unwrap_or_else(|| panic!("not counted: {report}"));
    assert_eq!(describe.calls, passed as u64, "{report}");
    assert_eq!(describe.throttled, (40 - passed) as u64, "{report}");
    assert_eq!(describe.quota, Some(10.0));
    assert!((10..=passed as u64).contains(&describe.peak_per_second), "{report}");
    let forwarded = proxy
        .requests()
        .iter()
        .filter(|r| r.action().operation == "DescribeCertificate")
        .count();
    assert_eq!(forwarded, 40, "throttled requests are recorded too");

    // The standard and the adaptive retry modes: every call succeeds, at
    // most 2× the quota in any second (the full bucket's burst plus its
    // refill), and some were throttled on the way.
    for (retry, partition) in [
        (RetryConfig::standard().with_max_attempts(10), "quota-test-standard"),
        (RetryConfig::adaptive().with_max_attempts(10), "quota-test-adaptive"),
    ] {
        let mode = format!("{:?}", retry.mode());
        proxy.set_quotas(Some(quotas.clone()));
        proxy.clear_quota_report();
        let client = iot(&proxy, retry, partition).await;
        let started = std::time::Instant::now();
        let results = describe_all(&client, &id, 40).await;
        let took = started.elapsed();
        assert!(results.iter().all(Option::is_none), "{mode}: {results:?}");
        let report = proxy.quota_report();
        let describe = report.get("iot", "DescribeCertificate").cloned();
        let describe = describe.unwrap_or_else(|| panic!("not counted: {report}"));
        assert_eq!(describe.calls, 40, "{mode}: {report}");
        assert!(describe.throttled > 0, "{mode}: {report}");
        assert!(describe.peak_per_second <= 20, "{mode}: {report}");
        println!("{mode}, all 40 done in {took:?}:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_and_s3_throttle_in_their_own_codes() {
    let world = world().await;
    // One call, then nothing for 100 s.
    let quotas = Quotas::none()
        .with("dynamodb", "GetItem", 0.01)
        .with("s3", "PutObject", 0.01);
    let proxy = proxy(&world, quotas).await;
    let sdk = sdk_config_for(&proxy.endpoint()).await;

    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let get = || {
        dynamodb
            .get_item()
            .table_name(TABLE)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("quota".into()))
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("quota".into()))
            .send()
    };
    let first = get().await;
    assert!(first.is_ok(), "{first:?}");
    let throttled = get().await.err().unwrap_or_else(|| panic!("not throttled"));
    assert_eq!(throttled.code(), Some("ThrottlingException"), "{throttled:?}");
    assert_eq!(throttled.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert!(THROTTLING_ERRORS.contains(&"ThrottlingException"));

    let s3 = s3_client(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(s3.config().to_builder().retry_config(RetryConfig::disabled()).build());
    let put = || {
        s3.put_object()
            .bucket(BUCKET)
            .key("quota/object")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
            .send()
    };
    let first = put().await;
    assert!(first.is_ok(), "{first:?}");
    let throttled = put().await.err().unwrap_or_else(|| panic!("not throttled"));
    assert_eq!(throttled.code(), Some("SlowDown"), "{throttled:?}");
    assert_eq!(throttled.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert!(THROTTLING_ERRORS.contains(&"SlowDown"));

    let report = proxy.quota_report();
    for (service, operation) in [("dynamodb", "GetItem"), ("s3", "PutObject")] {
        let a = report.get(service, operation).map(|a| (a.calls, a.throttled));
        assert_eq!(a, Some((1, 1)), "{report}");
    }
}
