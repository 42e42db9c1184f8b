//! `rotation-issuer` with a `kmsCa` issuer, in process against the emulator
//! (AUTH=true): the fleet CA's key is a KMS key, its certificate self-signed
//! through KMS and registered with IoT; a device rotates to a certificate
//! that CA issued (through `kms:Sign`, registered under the CA), whose chain
//! verifies against the CA, connects with it over mTLS, and the old
//! certificate is retired as for any rotation. The KMS requests of the
//! whole rotations (rotator, issuer, completer), counted at the proxy every
//! function calls AWS through: one `Sign` per rotation, one `GetPublicKey`
//! per issuer container.

use std::collections::BTreeMap;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use onboarding_aws::{KmsSigner, register_ca_certificate};
use onboarding_domain::{
    CaName, Certificate, CertificateRequest, IssuanceSettings, RotationState, issue_device_certificate,
    self_signed_ca_certificate,
};
use onboarding_test_support::mqtt::{ConnectResult, connect_once};
use onboarding_test_support::proxy::RecordedRequest;
use onboarding_test_support::rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use onboarding_test_support::world::default_profile;
use serde_json::json;

use crate::common::{PROFILE_NAME, Rig, TestResult, sample};
use crate::issuer::{invoke, requested};

/// The KMS requests among `requests`, by operation (`Sign`, `GetPublicKey`...).
fn kms_requests(requests: &[RecordedRequest]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        if let Some(operation) = request
            .header("x-amz-target")
            .and_then(|target| target.strip_prefix("TrentService."))
        {
            *counts.entry(operation.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// A device's CSR event for its requested rotation; the device's new key.
fn csr_event(
    device: &crate::common::Device,
    job_id: &str,
) -> Result<(serde_json::Value, KeyPair), crate::common::Error> {
    let device_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device.name.as_str());
    params.distinguished_name = dn;
    let mut event = sample("rotation-csr.json")?;
    event["jobId"] = json!(job_id);
    event["csr"] = json!(params.serialize_request(&device_key)?.pem()?);
    event["topic"] = json!(format!("devices/{}/rotation/csr", device.name));
    event["principal"] = json!(device.certificate_id);
    Ok((event, device_key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_rotates_to_a_certificate_of_the_kms_held_fleet_ca() -> TestResult {
    let mut rig = Rig::new("csr").await?;
    let now = rig.now;
    let sdk = rig.world.sdk.clone();
    let iot = rig.world.iot.clone();

    // The fleet CA: a KMS key, its certificate self-signed through KMS,
    // registered with IoT with a verification certificate issued through KMS.
    let key_arn = aws_sdk_kms::Client::new(&sdk)
        .create_key()
        .description("fleet CA key")
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await?
        .key_metadata
        .and_then(|m| m.arn)
        .ok_or("no key ARN")?;
    let signer = KmsSigner::from_config(&sdk, key_arn.clone());
    let settings = IssuanceSettings {
        validity_days: 3650,
        backdate_secs: 300,
    };
    let name = CaName {
        common_name: "Acme Fleet CA (KMS)".into(),
        organization: Some("Acme".into()),
    };
    let ca = self_signed_ca_certificate(&signer, &name, now, &settings).await?;
    let code = iot
        .get_registration_code()
        .send()
        .await?
        .registration_code
        .ok_or("no registration code")?;
    let verification_key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, code);
    params.distinguished_name = dn;
    let verification_csr = CertificateRequest::from_pem(&params.serialize_request(&verification_key)?.pem()?)?;
    let verification = issue_device_certificate(&signer, &ca, &verification_csr, now, &settings).await?;
    let ca_id = register_ca_certificate(&iot, &ca.to_pem(), &verification.to_pem(), None).await?;

    // The profile issues from it; the deployment allows its key.
    let mut profile = default_profile();
    profile["name"] = json!(PROFILE_NAME);
    profile["minRemainingDays"] = json!(7);
    profile["rotation"] = json!({
        "strategy": "csr",
        "jobTimeoutMinutes": 1,
        "issuer": {"type": "kmsCa", "caCertificateId": ca_id, "kmsKeyArn": key_arn, "validityDays": 90},
    });
    onboarding_domain::DeviceProfile::parse(&profile.to_string())?;
    rig.world.put_profile(&profile).await?;
    rig.set_env("FLEET_CA_KMS_KEY_ARN", &key_arn);

    // A device whose rotation is requested sends its CSR (its key kept).
    // Every request of the rotation from here on is counted at the proxy.
    rig.proxy.clear();
    let (device, job_id) = requested(&rig, "kms-dev-1").await?;
    let (event, device_key) = csr_event(&device, &job_id)?;

    // One issuer container (a warm Lambda) answers this rotation and the next.
    let issuer = rig.issuer().await?;
    let answer = invoke(&issuer, &event).await?;
    assert_eq!(answer["outcome"], "issued", "{answer}");
    let new = answer["newCertificateId"]
        .as_str()
        .ok_or("no new certificate")?
        .to_string();

    // IoT holds it under the fleet CA, and it chains to that CA.
    let described = iot
        .describe_certificate()
        .certificate_id(&new)
        .send()
        .await?
        .certificate_description
        .ok_or("no description")?;
    assert_eq!(described.ca_certificate_id.as_deref(), Some(ca_id.as_str()));
    let issued = Certificate::from_pem(described.certificate_pem.as_deref().ok_or("no PEM")?)?;
    assert!(
        issued.issuer_matches_subject_of(&ca) && issued.is_signed_by(&ca),
        "not the fleet CA's"
    );
    assert_eq!(issued.eku_client_auth, Some(true));
    assert!(
        issued.not_after <= now + 90 * 86_400 + 3_600,
        "validity from the profile"
    );
    assert_eq!(rig.status(&new).await?, "ACTIVE");
    let rotation = rig.rotation(&device.certificate_id).await?;
    assert_eq!(rotation.state, RotationState::Delivered, "{rotation:?}");

    // The device connects with it.
    let connected = connect_once(
        rig.world.emulator.mqtt_port,
        &rig.world.server_ca_pem,
        &issued.to_pem(),
        &device_key.serialize_pem(),
        &device.name,
    )
    .await?;
    assert_eq!(connected, ConnectResult::Accepted);

    // It confirms; the old certificate is retired as for any rotation.
    let batch = rig.device_reports(&device, &job_id, "SUCCEEDED", &new).await?;
    let answer = rig
        .completer()
        .await?
        .handle_at(batch, time::OffsetDateTime::now_utc().unix_timestamp())
        .await;
    assert!(
        answer["batchItemFailures"].as_array().is_some_and(Vec::is_empty),
        "{answer}"
    );
    let rotation = rig.rotation(&device.certificate_id).await?;
    assert_eq!(rotation.state, RotationState::Retired, "{rotation:?}");
    assert_eq!(rig.status(&device.certificate_id).await?, "INACTIVE");
    assert_eq!(
        rig.principals(&device.name).await?,
        [rig.arn(&new).await?].into_iter().collect(),
        "the new certificate is the thing's only principal"
    );

    // The KMS requests of that whole rotation: one GetPublicKey (the
    // container's first issuance), one Sign.
    let expected = |get_public_key: usize, sign: usize| {
        BTreeMap::from([("GetPublicKey".to_string(), get_public_key), ("Sign".to_string(), sign)])
    };
    assert_eq!(kms_requests(&rig.proxy.requests()), expected(1, 1));

    // A second device's rotation answered by the same, now warm, container:
    // one more Sign, no more GetPublicKey.
    let (second, job_id) = requested(&rig, "kms-dev-2").await?;
    let (event, _) = csr_event(&second, &job_id)?;
    let answer = invoke(&issuer, &event).await?;
    assert_eq!(answer["outcome"], "issued", "{answer}");
    assert_eq!(kms_requests(&rig.proxy.requests()), expected(1, 2));
    Ok(())
}
