//! The KMS-held CA key ([`KmsSigner`]) under `aws-smithy-mocks`: which keys
//! it refuses before any `Sign` (not for signing, a curve or algorithm device
//! stacks do not verify), the exact `Sign` request (a locally computed digest,
//! `MessageType=DIGEST`, the key's algorithm), one `GetPublicKey` per
//! adapter, and how KMS's errors are classed (errors go through the real
//! awsJson deserializer, from raw HTTP responses).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::digest;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput;
use aws_sdk_kms::operation::sign::SignOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use onboarding_aws::KmsSigner;
use onboarding_domain::{CertificateSigner, PortErrorKind, SignatureAlgorithm};

const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const SPKI: &[u8] = b"spki bytes as KMS returns them";
const SIGNATURE: &[u8] = b"der signature";

fn signer(rules: &[&Rule]) -> KmsSigner {
    KmsSigner::new(
        mock_client!(aws_sdk_kms, RuleMode::MatchAny, rules, |c| {
            c.retry_config(RetryConfig::disabled())
        }),
        KEY,
    )
}

fn described(usage: KeyUsageType, spec: KeySpec, algorithms: &[SigningAlgorithmSpec]) -> GetPublicKeyOutput {
    GetPublicKeyOutput::builder()
        .key_id(KEY)
        .public_key(Blob::new(SPKI))
        .key_usage(usage)
        .key_spec(spec)
        .set_signing_algorithms(Some(algorithms.to_vec()))
        .build()
}

fn public_key_rule(usage: KeyUsageType, spec: KeySpec, algorithms: &'static [SigningAlgorithmSpec]) -> Rule {
    mock!(aws_sdk_kms::Client::get_public_key)
        .match_requests(|r| r.key_id() == Some(KEY))
        .then_output(move || described(usage.clone(), spec.clone(), algorithms))
}

/// A KMS error as the service sends it (awsJson1_1).
fn kms_error(status: u16, code: &str) -> HttpResponse {
    let mut response = HttpResponse::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(format!(r#"{{"__type":"{code}","message":"{code} from KMS"}}"#)),
    );
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    response
}

const ECDSA: &[SigningAlgorithmSpec] = &[SigningAlgorithmSpec::EcdsaSha256];

#[tokio::test]
async fn keys_map_to_their_algorithm_and_public_key() {
    const ECDSA_384: &[SigningAlgorithmSpec] = &[SigningAlgorithmSpec::EcdsaSha384];
    const RSA: &[SigningAlgorithmSpec] = &[
        SigningAlgorithmSpec::RsassaPssSha256,
        SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
    ];
    for (spec, algorithms, expected) in [
        (KeySpec::EccNistP256, ECDSA, SignatureAlgorithm::EcdsaP256Sha256),
        (KeySpec::EccNistP384, ECDSA_384, SignatureAlgorithm::EcdsaP384Sha384),
        (KeySpec::Rsa2048, RSA, SignatureAlgorithm::RsaPkcs1Sha256),
        (KeySpec::Rsa3072, RSA, SignatureAlgorithm::RsaPkcs1Sha256),
        (KeySpec::Rsa4096, RSA, SignatureAlgorithm::RsaPkcs1Sha256),
    ] {
        let rule = public_key_rule(KeyUsageType::SignVerify, spec, algorithms);
        let key = signer(&[&rule]).signing_key().await.unwrap();
        assert_eq!(key.algorithm, expected);
        assert_eq!(key.public_key_der, SPKI);
    }
}

#[tokio::test]
async fn keys_that_cannot_sign_certificates_are_refused_before_any_sign() {
    const P256K1: &[SigningAlgorithmSpec] = &[SigningAlgorithmSpec::EcdsaSha256];
    const SM2: &[SigningAlgorithmSpec] = &[SigningAlgorithmSpec::Sm2Dsa];
    const P521: &[SigningAlgorithmSpec] = &[SigningAlgorithmSpec::EcdsaSha512];
    const NONE: &[SigningAlgorithmSpec] = &[];
    const PSS_ONLY: &[SigningAlgorithmSpec] = &[SigningAlgorithmSpec::RsassaPssSha256];
    for (usage, spec, algorithms, named) in [
        (KeyUsageType::EncryptDecrypt, KeySpec::Rsa2048, NONE, "ENCRYPT_DECRYPT"),
        (KeyUsageType::KeyAgreement, KeySpec::EccNistP256, NONE, "KEY_AGREEMENT"),
        (
            KeyUsageType::SignVerify,
            KeySpec::EccSecgP256K1,
            P256K1,
            "ECC_SECG_P256K1",
        ),
        (KeyUsageType::SignVerify, KeySpec::Sm2, SM2, "SM2"),
        (KeyUsageType::SignVerify, KeySpec::EccNistP521, P521, "ECC_NIST_P521"),
        // A key answer that does not list the algorithm its spec should offer.
        (
            KeyUsageType::SignVerify,
            KeySpec::Rsa2048,
            PSS_ONLY,
            "RSASSA_PKCS1_V1_5_SHA_256",
        ),
    ] {
        let public_key = public_key_rule(usage, spec, algorithms);
        let sign = mock!(aws_sdk_kms::Client::sign).then_output(|| SignOutput::builder().build());
        let signer = signer(&[&public_key, &sign]);

        let error = signer.signing_key().await.unwrap_err();
        assert_eq!(error.kind, PortErrorKind::Invalid, "{error}");
        assert!(error.detail.contains(named), "{error}");
        assert!(error.detail.contains(KEY), "names the key: {error}");
        let error = signer.sign(b"tbs").await.unwrap_err();
        assert_eq!(error.kind, PortErrorKind::Invalid, "{error}");
        assert_eq!(sign.num_calls(), 0, "{named}: no Sign with a refused key");
    }
}

#[tokio::test]
async fn sign_sends_the_local_digest_with_the_keys_algorithm_and_reads_the_key_once() {
    const ECDSA_384: &[SigningAlgorithmSpec] = &[SigningAlgorithmSpec::EcdsaSha384];
    let message = b"a TBSCertificate".to_vec();
    let expected = digest::digest(&digest::SHA384, &message).as_ref().to_vec();
    let public_key = public_key_rule(KeyUsageType::SignVerify, KeySpec::EccNistP384, ECDSA_384);
    let sign = mock!(aws_sdk_kms::Client::sign)
        .match_requests(move |r| {
            r.key_id() == Some(KEY)
                && r.message_type() == Some(&MessageType::Digest)
                && r.signing_algorithm() == Some(&SigningAlgorithmSpec::EcdsaSha384)
                && r.message().map(Blob::as_ref) == Some(expected.as_slice())
        })
        .then_output(|| SignOutput::builder().signature(Blob::new(SIGNATURE)).build());
    let signer = signer(&[&public_key, &sign]);

    assert_eq!(signer.sign(&message).await.unwrap(), SIGNATURE);
    assert_eq!(signer.sign(&message).await.unwrap(), SIGNATURE);
    signer.signing_key().await.unwrap();
    assert_eq!(sign.num_calls(), 2);
    assert_eq!(public_key.num_calls(), 1, "GetPublicKey once per adapter");
}

#[tokio::test]
async fn a_failed_key_read_is_not_remembered() {
    let failed =
        mock!(aws_sdk_kms::Client::get_public_key).then_http_response(|| kms_error(500, "KMSInternalException"));
    let then_ok = public_key_rule(KeyUsageType::SignVerify, KeySpec::EccNistP256, ECDSA);
    let signer = KmsSigner::new(
        mock_client!(aws_sdk_kms, RuleMode::Sequential, [&failed, &then_ok], |c| {
            c.retry_config(RetryConfig::disabled())
        }),
        KEY,
    );
    let error = signer.signing_key().await.unwrap_err();
    assert_eq!(error.kind, PortErrorKind::Transient, "{error}");
    assert_eq!(
        signer.signing_key().await.unwrap().algorithm,
        SignatureAlgorithm::EcdsaP256Sha256
    );
}

#[tokio::test]
async fn kms_errors_are_classed_by_what_the_caller_can_do() {
    for (status, code, kind) in [
        (400, "ThrottlingException", PortErrorKind::Transient),
        (500, "KMSInternalException", PortErrorKind::Transient),
        (500, "KeyUnavailableException", PortErrorKind::Transient),
        (503, "DependencyTimeoutException", PortErrorKind::Transient),
        (400, "AccessDeniedException", PortErrorKind::AccessDenied),
        (400, "DisabledException", PortErrorKind::AccessDenied),
        (400, "KMSInvalidStateException", PortErrorKind::AccessDenied),
        (400, "NotFoundException", PortErrorKind::MissingResource),
        (400, "InvalidKeyUsageException", PortErrorKind::Invalid),
    ] {
        // The same classes for GetPublicKey and Sign.
        let public_key = mock!(aws_sdk_kms::Client::get_public_key).then_http_response(move || kms_error(status, code));
        let error = signer(&[&public_key]).signing_key().await.unwrap_err();
        assert_eq!(
            (error.operation, error.kind),
            ("kms:GetPublicKey", kind),
            "{code}: {error}"
        );
        assert!(error.detail.contains(code), "{error}");

        let public_key = public_key_rule(KeyUsageType::SignVerify, KeySpec::EccNistP256, ECDSA);
        let sign = mock!(aws_sdk_kms::Client::sign).then_http_response(move || kms_error(status, code));
        let error = signer(&[&public_key, &sign]).sign(b"tbs").await.unwrap_err();
        assert_eq!((error.operation, error.kind), ("kms:Sign", kind), "{code}: {error}");
        assert_eq!(sign.num_calls(), 1);
    }
}

#[tokio::test]
async fn a_sign_answer_without_a_signature_is_invalid() {
    let public_key = public_key_rule(KeyUsageType::SignVerify, KeySpec::EccNistP256, ECDSA);
    let sign = mock!(aws_sdk_kms::Client::sign).then_output(|| SignOutput::builder().build());
    let error = signer(&[&public_key, &sign]).sign(b"tbs").await.unwrap_err();
    assert_eq!(error.kind, PortErrorKind::Invalid);
    assert!(error.detail.contains("Signature"), "{error}");
}
