//! `onboard ca create --kms` against the emulator (`AUTH=true`, no stack):
//! the CA key created in KMS, the certificate self-signed through it, a CA
//! that verifies with the key KMS reports (`GetPublicKey`), and no key file;
//! an existing file in `--out` refused before any key is created, and an
//! unknown key spec or `--key-spec` without `--kms` refused by the parser.

mod common;

use std::process::Output;

use common::Error;
use onboarding_aws::KmsSigner;
use onboarding_domain::{Certificate, CertificateSigner, SignatureAlgorithm};
use onboarding_test_support::emulator::Emulator;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_kms_ca_is_created_self_signed_in_kms_with_no_key_file() -> Result<(), Error> {
    let emulator = Emulator::start().await?;
    let sdk = emulator.sdk_config().await;
    let dir = tempfile::tempdir()?;
    let onboard = || common::onboard_at(&emulator.endpoint, "unused");

    for (spec, algorithm) in [
        ("p256", SignatureAlgorithm::EcdsaP256Sha256),
        ("p384", SignatureAlgorithm::EcdsaP384Sha384),
    ] {
        let out = dir.path().join(spec);
        let output = onboard()?
            .args(["--json", "ca", "create", "--kms", "--key-spec", spec])
            .args([
                "--common-name",
                "Acme Fleet CA",
                "--organization",
                "Acme",
                "--days",
                "30",
            ])
            .arg("--out")
            .arg(&out)
            .output()?;
        assert!(output.status.success(), "{spec}: {}", text(&output));
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let key_arn = printed["kmsKeyArn"].as_str().ok_or("no kmsKeyArn printed")?;
        assert!(
            key_arn.starts_with("arn:aws:kms:") && key_arn.contains(":key/"),
            "{key_arn}"
        );

        // Only the certificate and the key's ARN: no private key anywhere.
        let mut files: Vec<String> = std::fs::read_dir(&out)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        files.sort();
        assert_eq!(files, ["ca.kms-key-arn", "ca.pem"], "{spec}");
        assert_eq!(std::fs::read_to_string(out.join("ca.kms-key-arn"))?.trim(), key_arn);
        let pem = std::fs::read_to_string(out.join("ca.pem"))?;
        assert!(!pem.contains("PRIVATE KEY"));

        let ca = Certificate::from_pem(&pem)?;
        assert_eq!(printed["fingerprint"].as_str(), Some(ca.fingerprint.as_str()));
        assert!(ca.is_ca, "{spec}: not a CA");
        assert!(
            ca.issuer_matches_subject_of(&ca) && ca.is_signed_by(&ca),
            "{spec}: not self-signed"
        );
        assert_eq!(ca.subject_dn, "O=Acme, CN=Acme Fleet CA");
        assert!(ca.not_after - ca.not_before <= 30 * 86_400 + 300);

        // The certificate's key is the KMS key's (GetPublicKey), of the asked spec.
        let kms_key = KmsSigner::from_config(&sdk, key_arn).signing_key().await?;
        assert_eq!(kms_key.algorithm, algorithm, "{spec}");
        assert_eq!(ca.public_key_der(), kms_key.public_key_der, "{spec}");
        assert!(ca.is_signed_by(&ca));

        // Run again into the same directory: refused, the files unchanged.
        let again = onboard()?.args(["ca", "create", "--kms", "--out"]).arg(&out).output()?;
        assert_eq!(again.status.code(), Some(1), "{}", text(&again));
        assert!(text(&again).contains("already exists"), "{}", text(&again));
        assert_eq!(std::fs::read_to_string(out.join("ca.pem"))?, pem);
    }

    // An existing key file from a local CA is refused as well.
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local)?;
    std::fs::write(local.join("ca.key.pem"), "not ours")?;
    let refused = onboard()?
        .args(["ca", "create", "--kms", "--out"])
        .arg(&local)
        .output()?;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(!local.join("ca.pem").exists() && !local.join("ca.kms-key-arn").exists());

    // Bad arguments: the parser's exit code 2, nothing written.
    let bad = dir.path().join("bad");
    for args in [
        &["--kms", "--key-spec", "p521"][..],
        &["--key-spec", "p384"][..],
        &["--kms", "--key-type", "rsa3072"][..],
    ] {
        let output = onboard()?
            .args(["ca", "create"])
            .args(args)
            .arg("--out")
            .arg(&bad)
            .output()?;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
    }
    // A name X.509 cannot carry: refused before any key is created.
    let output = onboard()?
        .args(["ca", "create", "--kms", "--common-name", &"x".repeat(65), "--out"])
        .arg(&bad)
        .output()?;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(!bad.exists());

    // The refusals created no key: only the two CAs' keys exist.
    let keys = aws_sdk_kms::Client::new(&sdk).list_keys().send().await?;
    assert_eq!(keys.keys().len(), 2, "{:?}", keys.keys());
    Ok(())
}
