//! The KMS-held CA key against the local AWS emulator (`AUTH=true`): keys of
//! each supported spec sign through [`KmsSigner`] and the signatures verify
//! with the public key KMS gives (so they are what X.509 carries), and a key
//! made for encryption is refused. One emulator for the whole test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use onboarding_aws::KmsSigner;
use onboarding_domain::{CertificateSigner, PortErrorKind, SignatureAlgorithm};
use onboarding_test_support::Emulator;

async fn create_key(kms: &aws_sdk_kms::Client, spec: KeySpec, usage: KeyUsageType) -> String {
    let created = kms
        .create_key()
        .description("fleet CA key (test)")
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .unwrap();
    created.key_metadata.unwrap().arn.unwrap()
}

#[tokio::test]
async fn kms_keys_sign_what_their_public_key_verifies_and_encryption_keys_are_refused() {
    let emulator = Emulator::start().await.unwrap();
    let sdk = emulator.sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let message = b"a TBSCertificate, DER".repeat(300); // beyond Sign's 4 KB raw-message limit

    for (spec, expected) in [
        (KeySpec::EccNistP256, SignatureAlgorithm::EcdsaP256Sha256),
        (KeySpec::EccNistP384, SignatureAlgorithm::EcdsaP384Sha384),
        (KeySpec::Rsa2048, SignatureAlgorithm::RsaPkcs1Sha256),
    ] {
        let key = create_key(&kms, spec.clone(), KeyUsageType::SignVerify).await;
        let signer = KmsSigner::from_config(&sdk, key);
        let public = signer.signing_key().await.unwrap();
        assert_eq!(public.algorithm, expected, "{spec}");

        let signature = signer.sign(&message).await.unwrap();
        assert!(
            expected.verify(&public.public_key_der, &message, &signature),
            "{spec}: the signature verifies with the key's public key"
        );
        assert!(
            !expected.verify(&public.public_key_der, b"another message", &signature),
            "{spec}: and only for the message signed"
        );
    }

    let encryption = create_key(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let signer = KmsSigner::from_config(&sdk, encryption);
    let error = signer.sign(&message).await.unwrap_err();
    assert_eq!(error.kind, PortErrorKind::Invalid, "{error}");
    assert!(error.detail.contains("SIGN_VERIFY"), "{error}");

    let error = KmsSigner::from_config(&sdk, "alias/no-such-ca-key")
        .signing_key()
        .await
        .unwrap_err();
    assert_eq!(error.kind, PortErrorKind::MissingResource, "{error}");
}
