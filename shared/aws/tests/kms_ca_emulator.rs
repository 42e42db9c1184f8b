//! The fleet's own CA with its key in KMS, end to end in the local emulator
//! (`AUTH=true`), from the building blocks only (not yet the rotation): the
//! CA certificate self-signed through `kms:Sign`, registered with IoT with a
//! verification certificate also issued through KMS, a device certificate
//! issued from the device's CSR through KMS and registered under the CA, and
//! the device connecting with it over mTLS. A device certificate the CA did
//! not issue is refused by `RegisterCertificate`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_iot::types::CertificateStatus;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use onboarding_aws::{KmsSigner, register_ca_certificate};
use onboarding_domain::{
    CaName, Certificate, CertificateRequest, IssuanceSettings, issue_device_certificate, self_signed_ca_certificate,
};
use onboarding_test_support::mqtt::{ConnectResult, connect_once};
use onboarding_test_support::rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use onboarding_test_support::world::device_policy;
use onboarding_test_support::{Emulator, TestCa};

const SETTINGS: IssuanceSettings = IssuanceSettings {
    validity_days: 365,
    backdate_secs: 300,
};

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A fresh device key and its CSR for `common_name`.
fn csr(common_name: &str) -> (CertificateRequest, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (CertificateRequest::from_pem(&pem).unwrap(), key)
}

#[tokio::test]
async fn a_device_certificate_issued_through_kms_registers_under_the_kms_ca_and_connects() {
    let emulator = Emulator::start().await.unwrap();
    let sdk = emulator.sdk_config().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms
        .create_key()
        .description("fleet CA key")
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .arn
        .unwrap();
    let signer = KmsSigner::from_config(&sdk, key);

    // The CA certificate, and the verification certificate IoT asks for, both signed in KMS.
    let name = CaName {
        common_name: "Acme Fleet CA (KMS)".into(),
        organization: Some("Acme".into()),
    };
    let ca = self_signed_ca_certificate(&signer, &name, now(), &SETTINGS)
        .await
        .unwrap();
    let code = iot
        .get_registration_code()
        .send()
        .await
        .unwrap()
        .registration_code
        .unwrap();
    let (verification_csr, _) = csr(&code);
    let verification = issue_device_certificate(&signer, &ca, &verification_csr, now(), &SETTINGS)
        .await
        .unwrap();
    let ca_id = register_ca_certificate(&iot, &ca.to_pem(), &verification.to_pem(), None)
        .await
        .unwrap();
    assert_eq!(ca_id, ca.fingerprint);

    // A device certificate from the device's CSR, registered under that CA.
    let (request, device_key) = csr("sensor-kms-1");
    let device = issue_device_certificate(&signer, &ca, &request, now(), &SETTINGS)
        .await
        .unwrap();
    assert!(device.is_signed_by(&ca));
    let registered = iot
        .register_certificate()
        .certificate_pem(device.to_pem())
        .ca_certificate_pem(ca.to_pem())
        .status(CertificateStatus::Active)
        .send()
        .await
        .unwrap();
    let certificate_arn = registered.certificate_arn.unwrap();
    let described = iot
        .describe_certificate()
        .certificate_id(registered.certificate_id.unwrap())
        .send()
        .await
        .unwrap()
        .certificate_description
        .unwrap();
    assert_eq!(described.ca_certificate_id.as_deref(), Some(ca_id.as_str()));
    let in_iot = Certificate::from_pem(described.certificate_pem.as_deref().unwrap()).unwrap();
    assert!(
        in_iot.is_signed_by(&ca),
        "the certificate IoT holds chains to the KMS CA"
    );

    // The device connects with it, as a thing with the device policy.
    iot.create_policy()
        .policy_name("device")
        .policy_document(device_policy().to_string())
        .send()
        .await
        .unwrap();
    iot.create_thing().thing_name("sensor-kms-1").send().await.unwrap();
    iot.attach_policy()
        .policy_name("device")
        .target(&certificate_arn)
        .send()
        .await
        .unwrap();
    iot.attach_thing_principal()
        .thing_name("sensor-kms-1")
        .principal(&certificate_arn)
        .send()
        .await
        .unwrap();
    let server_ca = emulator.server_ca_pem().await.unwrap();
    let connected = connect_once(
        emulator.mqtt_port,
        &server_ca,
        &device.to_pem(),
        &device_key.serialize_pem(),
        "sensor-kms-1",
    )
    .await
    .unwrap();
    assert_eq!(connected, ConnectResult::Accepted);

    // A certificate another CA issued is not registered under the KMS CA.
    let other = TestCa::new("Not the fleet CA").unwrap();
    let foreign = other.device("sensor-kms-2").build().unwrap();
    let refused = iot
        .register_certificate()
        .certificate_pem(&foreign.cert_pem)
        .ca_certificate_pem(ca.to_pem())
        .status(CertificateStatus::Active)
        .send()
        .await;
    assert!(refused.is_err(), "a foreign certificate registered under the KMS CA");
}
