//! The hook against a DynamoDB (and IoT) that answers too late: built as the
//! Lambda builds it, pointed at the emulator through the delaying proxy.
//! Whatever the inventory does, AWS IoT gets a refusal before its 5-second
//! limit, at the hook's own budget.

use std::time::{Duration, Instant};

use onboarding_aws::DynamoInventory;
use onboarding_domain::HookOutcome;
use onboarding_test_support::emulator::sdk_config_for;
use onboarding_test_support::proxy::Proxy;
use onboarding_test_support::rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use onboarding_test_support::world::{PROFILE, TABLE, World};
use provisioning_hook::FromEnv;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A hook request for a new P-256 certificate, as AWS IoT sends it.
fn request(serial: &str) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "AWS IoT Certificate");
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(3650 * 86_400)).into();
    let pem = params.self_signed(&key)?.pem();
    let id = onboarding_domain::Certificate::from_pem(&pem)?.fingerprint;
    Ok(json!({
        "claimCertificateId": "c".repeat(64),
        "certificateId": id,
        "certificatePem": pem,
        "templateArn": "arn:aws:iot:us-east-1:000000000000:provisioningtemplate/test-fleet",
        "clientId": format!("claim-{serial}"),
        "parameters": {
            "SerialNumber": serial,
            "CommonName": format!("fleet-{serial}"),
            "Organization": "Acme",
            "OrganizationalUnit": "thermo-2",
        },
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_held_past_the_budget_makes_the_hook_refuse_in_time() -> TestResult {
    let world = World::new().await?;
    let now: i64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        .try_into()?;
    let serials = [("SN-FAST".to_string(), None), ("SN-SLOW".to_string(), None)];
    DynamoInventory::new(world.dynamodb.clone(), TABLE)
        .allow_serials(&serials, Some(PROFILE), now)
        .await?;
    let proxy = Proxy::start(world.emulator.gateway_port, Duration::ZERO).await?;
    let settings = provisioning_hook::Settings::from_lookup(|name| match name {
        "INVENTORY_TABLE" => Some(TABLE.to_string()),
        "HOOK_BUDGET_MILLIS" => Some("1500".to_string()),
        _ => None,
    })?;
    let sdk = sdk_config_for(&proxy.endpoint()).await;
    let hook = provisioning_hook::build(&settings, &sdk);

    // Answering promptly, the same hook allows: the refusal below is the delay's.
    let (response, outcome) = hook.decide(request("SN-FAST")?, now).await;
    assert!(response.allow_provisioning, "{outcome:?}");

    // Every call now held for 4 s, past the 1.5 s budget (and AWS IoT's 5 s).
    proxy.set_latency(Duration::from_secs(4));
    proxy.clear();
    let started = Instant::now();
    let (response, outcome) = hook.decide(request("SN-SLOW")?, now).await;
    let elapsed = started.elapsed();
    assert!(!response.allow_provisioning, "{outcome:?}");
    // Refused as unavailable (the SDK's own timeout or the hook's, whichever
    // fires first: both are the budget), never allowed, never late.
    assert!(matches!(&outcome, HookOutcome::Unavailable(_)), "{outcome:?}");
    assert!(
        elapsed >= settings.budget && elapsed < settings.budget + Duration::from_millis(500),
        "answered after {elapsed:?}, budget {:?}",
        settings.budget
    );
    assert!(elapsed < Duration::from_millis(5_000));
    assert_eq!(serde_json::to_value(&response)?, json!({"allowProvisioning": false}));
    // The inventory was reached (the proxy saw the reads), it just answered too late.
    assert!(
        proxy.requests().iter().any(|r| r.operation() == "GetItem"),
        "{:?}",
        proxy.requests().iter().map(|r| r.operation()).collect::<Vec<_>>()
    );
    Ok(())
}
