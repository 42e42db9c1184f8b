//! `onboard ca create --kms` against the emulator (`AUTH=true`, no stack):
//! the CA key created in KMS, the certificate self-signed through it, a CA
//! that verifies with the key KMS reports (`GetPublicKey`), and no key file;
//! an existing file in `--out` refused before any key is created, and an
//! unknown key spec or `--key-spec` without `--kms` refused by the parser.
//!
//! `onboard ca register` of such a CA (the registrar's world: inventory
//! table, profile): its verification certificate signed through KMS, the CA
//! registered with auto-registration and bound; a device certificate issued
//! through KMS auto-registered by IoT on its first connection (JITR),
//! provisioned by the registrar, then connecting. Refused before anything is
//! registered: no key, two keys, a KMS key that is not the CA's, a key KMS
//! cannot sign certificates with. `onboard ca rotate` to a KMS CA.

mod common;

use std::process::Output;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use common::Error;
use onboarding_aws::KmsSigner;
use onboarding_domain::{
    Certificate, CertificateRequest, CertificateSigner, IssuanceSettings, SignatureAlgorithm, issue_device_certificate,
};
use onboarding_test_support::DeviceCert;
use onboarding_test_support::emulator::Emulator;
use onboarding_test_support::mqtt::ConnectResult;
use onboarding_test_support::rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use onboarding_test_support::world::{PROFILE, TABLE, World};

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

/// The number of CAs registered with IoT.
async fn ca_count(world: &World) -> Result<usize, Error> {
    Ok(world.iot.list_ca_certificates().send().await?.certificates().len())
}

/// A SIGN_VERIFY KMS key of `spec`, made directly (not through the CLI).
async fn kms_key(world: &World, spec: KeySpec) -> Result<String, Error> {
    let key = aws_sdk_kms::Client::new(&world.sdk)
        .create_key()
        .key_spec(spec)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await?;
    Ok(key.key_metadata.and_then(|m| m.arn).ok_or("no key ARN")?)
}

/// A device's certificate issued by the KMS-held CA from the device's CSR,
/// through KMS (as the `kmsCa` rotation issues them).
async fn kms_issued_device(signer: &KmsSigner, ca: &Certificate, name: &str) -> Result<DeviceCert, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Acme");
    dn.push(DnType::OrganizationalUnitName, "thermo-2");
    params.distinguished_name = dn;
    let csr = CertificateRequest::from_pem(&params.serialize_request(&key)?.pem()?)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let settings = IssuanceSettings {
        validity_days: 365,
        backdate_secs: 300,
    };
    let cert = issue_device_certificate(signer, ca, &csr, now, &settings).await?;
    Ok(DeviceCert {
        cert_pem: cert.to_pem(),
        key_pem: Some(key.serialize_pem()),
        der: cert.der().to_vec(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_ca_is_registered_through_kms_and_its_devices_onboard() -> Result<(), Error> {
    let world = World::new().await?;
    let dir = tempfile::tempdir()?;
    let onboard = || common::onboard_at(&world.emulator.endpoint, TABLE);
    let fleet_ca = dir.path().join("fleet-ca");
    let output = onboard()?
        .args([
            "--json",
            "ca",
            "create",
            "--kms",
            "--common-name",
            "Acme Fleet CA",
            "--organization",
            "Acme",
        ])
        .arg("--out")
        .arg(&fleet_ca)
        .output()?;
    assert!(output.status.success(), "{}", text(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let key_arn = created["kmsKeyArn"].as_str().ok_or("no kmsKeyArn")?.to_string();
    let ca_pem = std::fs::read_to_string(fleet_ca.join("ca.pem"))?;
    let cas_before = ca_count(&world).await?;

    // Refused before anything is registered, each with exit code 1.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare)?;
    std::fs::write(bare.join("ca.pem"), &ca_pem)?;
    let two_keys = dir.path().join("two-keys");
    std::fs::create_dir_all(&two_keys)?;
    for file in ["ca.pem", "ca.kms-key-arn"] {
        std::fs::copy(fleet_ca.join(file), two_keys.join(file))?;
    }
    std::fs::write(two_keys.join("ca.key.pem"), "a local key as well")?;
    let other_p256 = kms_key(&world, KeySpec::EccNistP256).await?;
    let p521 = kms_key(&world, KeySpec::EccNistP521).await?;
    let other_arn = key_arn.replace(
        key_arn.rsplit('/').next().unwrap_or_default(),
        "00000000-0000-0000-0000-000000000000",
    );
    for (what, ca_dir, flag, expected) in [
        ("no key", &bare, None, "no CA key"),
        ("a key file and a KMS key", &two_keys, None, "a CA has one key"),
        ("two KMS keys", &fleet_ca, Some(other_p256.as_str()), "give one CA key"),
        (
            "another KMS key",
            &bare,
            Some(other_p256.as_str()),
            "is not the key of the CA certificate",
        ),
        ("a P-521 key", &bare, Some(p521.as_str()), "ECC_NIST_P521"),
        (
            "an encryption key",
            &bare,
            Some(world.kms_key_arn.as_str()),
            "nothing was registered",
        ),
        (
            "a key that does not exist",
            &bare,
            Some(other_arn.as_str()),
            "nothing was registered",
        ),
    ] {
        let mut command = onboard()?;
        command
            .args(["ca", "register", "--profile", PROFILE, "--ca"])
            .arg(ca_dir);
        if let Some(flag) = flag {
            command.args(["--kms-key-arn", flag]);
        }
        let output = command.output()?;
        assert_eq!(output.status.code(), Some(1), "{what}: {}", text(&output));
        assert!(text(&output).contains(expected), "{what}: {}", text(&output));
    }
    assert_eq!(ca_count(&world).await?, cas_before, "a refusal registered a CA");

    // Registered: the verification certificate signed through KMS, the CA
    // ACTIVE with auto-registration and bound to the profile.
    let output = onboard()?
        .args(["--json", "ca", "register", "--profile", PROFILE, "--ca"])
        .arg(&fleet_ca)
        .output()?;
    assert!(output.status.success(), "{}", text(&output));
    let registered: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let ca_id = registered["caCertificateId"].as_str().ok_or("no id")?.to_string();
    assert_eq!(created["fingerprint"].as_str(), Some(ca_id.as_str()));
    assert_eq!(registered["kmsKeyArn"].as_str(), Some(key_arn.as_str()));
    let description = world
        .iot
        .describe_ca_certificate()
        .certificate_id(&ca_id)
        .send()
        .await?
        .certificate_description
        .ok_or("no description")?;
    assert_eq!(description.status.as_ref().map(|s| s.as_str()), Some("ACTIVE"));
    assert_eq!(
        description.auto_registration_status.as_ref().map(|s| s.as_str()),
        Some("ENABLE")
    );
    let output = onboard()?.args(["--json", "ca", "list"]).output()?;
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let row = listed
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["caCertificateId"] == ca_id.as_str()))
        .ok_or("the CA is not listed")?;
    assert_eq!(row["profile"], PROFILE);

    // A device certificate issued through KMS by that CA: auto-registered by
    // IoT on the first connection (JITR), provisioned by the registrar, then
    // connecting.
    let ca = Certificate::from_pem(&ca_pem)?;
    let signer = KmsSigner::from_config(&world.sdk, key_arn.clone());
    let device = kms_issued_device(&signer, &ca, "kms-sensor-01").await?;
    let certificate_id = world.first_connection(&device, "kms-sensor-01").await?;
    let described = world
        .iot
        .describe_certificate()
        .certificate_id(&certificate_id)
        .send()
        .await?
        .certificate_description
        .ok_or("no description")?;
    assert_eq!(described.ca_certificate_id.as_deref(), Some(ca_id.as_str()));
    let settings = {
        use jitr_registrar::FromEnv;
        let env: std::collections::HashMap<String, String> = world.registrar_env().into_iter().collect();
        jitr_registrar::Settings::from_lookup(|k| env.get(k).cloned())?
    };
    let registrar = jitr_registrar::build(&settings, &world.sdk).without_metrics();
    let answer = registrar.handle(world.direct_event(&certificate_id, &ca_id)?).await?;
    assert_eq!(answer["outcome"], "provisioned", "{answer}");
    assert_eq!(world.connect(&device, "kms-sensor-01").await?, ConnectResult::Accepted);

    // `ca rotate` to a KMS CA: the world's CA replaced by a second KMS CA,
    // registered with its verification certificate signed through KMS and
    // bound to the old CA's profile. A directory with two keys is refused.
    let output = onboard()?
        .args(["ca", "rotate", &world.ca_id, "--new"])
        .arg(&two_keys)
        .output()?;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("a CA has one key"), "{}", text(&output));
    let successor = dir.path().join("successor");
    let output = onboard()?
        .args(["--json", "ca", "create", "--kms", "--days", "3660", "--out"])
        .arg(&successor)
        .output()?;
    assert!(output.status.success(), "{}", text(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let output = onboard()?
        .args(["--json", "ca", "rotate", &world.ca_id, "--new"])
        .arg(&successor)
        .output()?;
    assert!(output.status.success(), "{}", text(&output));
    let rotated: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(rotated["registered"], true, "{rotated}");
    assert_eq!(rotated["newCaCertificateId"], created["fingerprint"], "{rotated}");
    assert_eq!(rotated["profile"], PROFILE, "{rotated}");
    let successor_id = rotated["newCaCertificateId"].as_str().ok_or("no new CA id")?;
    let status = world
        .iot
        .describe_ca_certificate()
        .certificate_id(successor_id)
        .send()
        .await?
        .certificate_description
        .and_then(|d| d.status)
        .ok_or("no status")?;
    assert_eq!(status.as_str(), "ACTIVE");
    Ok(())
}
