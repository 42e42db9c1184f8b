//! Certificate checks on certificates minted in the test (rcgen) or made with
//! openssl (fixtures): one passing case per key type, one test per rejection.

use onboarding_domain::DenyKey;
use onboarding_domain::{CaVerdict, CheckContext, check_ca, check_device_certificate};
use onboarding_domain::{Certificate, CertificateStatus, DeviceProfile, OnboardingConfig, RejectReason, Rejection};
use onboarding_test_support::certs::fixture;
use onboarding_test_support::rcgen::{DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use onboarding_test_support::{KeyAlg, TestCa};

const CA_ID: &str = "ca0000000000000000000000000000000000000000000000000000000000000a";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn new_ca() -> TestCa {
    TestCa::new("Acme Device CA").unwrap_or_else(|e| panic!("{e}"))
}

fn parse(pem: &str) -> Certificate {
    Certificate::from_pem(pem).unwrap_or_else(|e| panic!("{e}"))
}

fn profile() -> DeviceProfile {
    let mut p = DeviceProfile::minimal("sensors", "device-policy");
    p.thing_type = Some("sensor".into());
    p.attributes = [("org".to_string(), onboarding_domain::SubjectField::Organization)].into();
    p
}

/// Runs every device check against `ca` with the default profile and config.
fn check(ca: &TestCa, device_pem: &str) -> Result<String, RejectReason> {
    check_with(ca, device_pem, &profile(), None, now())
}

fn check_with(
    ca: &TestCa,
    device_pem: &str,
    profile: &DeviceProfile,
    denial: Option<&Rejection>,
    now: i64,
) -> Result<String, RejectReason> {
    let ca_cert = parse(&ca.cert_pem);
    let ctx = CheckContext {
        ca: &ca_cert,
        profile,
        denial,
        now,
        clock_skew_secs: 300,
    };
    check_device_certificate(&parse(device_pem), &ctx)
        .map(|a| a.thing_name)
        .map_err(|r| r.reason)
}

fn device(
    ca: &TestCa,
    builder: impl FnOnce(
        onboarding_test_support::certs::DeviceBuilder<'_>,
    ) -> onboarding_test_support::certs::DeviceBuilder<'_>,
) -> String {
    builder(ca.device("sensor-00001"))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .cert_pem
}

#[test]
fn passes_p256() {
    let ca = new_ca();
    assert_eq!(
        check(&ca, &device(&ca, |d| d.key(KeyAlg::P256))),
        Ok("sensor-00001".into())
    );
}

#[test]
fn passes_p384() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.key(KeyAlg::P384));
    assert_eq!(parse(&pem).key, onboarding_domain::KeyKind::EcP384);
    assert_eq!(check(&ca, &pem), Ok("sensor-00001".into()));
}

#[test]
fn passes_rsa_2048() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.key(KeyAlg::Rsa2048));
    assert_eq!(parse(&pem).key, onboarding_domain::KeyKind::Rsa { bits: 2048 });
    assert_eq!(check(&ca, &pem), Ok("sensor-00001".into()));
}

#[test]
fn passes_ed25519() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.key(KeyAlg::Ed25519));
    assert_eq!(parse(&pem).key, onboarding_domain::KeyKind::Ed25519);
    assert_eq!(check(&ca, &pem), Ok("sensor-00001".into()));
}

#[test]
fn passes_under_an_rsa_ca_and_an_ed25519_ca() {
    for alg in [KeyAlg::Rsa3072, KeyAlg::Ed25519, KeyAlg::P384] {
        let ca = TestCa::with_key("Acme Device CA", alg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            check(&ca, &device(&ca, |d| d)),
            Ok("sensor-00001".into()),
            "CA key {alg:?}"
        );
    }
}

#[test]
fn attributes_and_facts_come_from_the_subject() {
    let ca = new_ca();
    let pem = device(&ca, |d| {
        d.with(DnType::OrganizationName, "Acme").serial(&[0x00, 0x0a, 0xbc])
    });
    let cert = parse(&pem);
    assert_eq!(cert.serial, "0abc");
    assert_eq!(cert.fingerprint.len(), 64);
    let ca_cert = parse(&ca.cert_pem);
    let profile = profile();
    let ctx = CheckContext {
        ca: &ca_cert,
        profile: &profile,
        denial: None,
        now: now(),
        clock_skew_secs: 300,
    };
    let approval = check_device_certificate(&cert, &ctx).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(approval.attributes.get("org").map(String::as_str), Some("Acme"));
}

#[test]
fn rejects_forged_signature_from_lookalike_ca() {
    let ca = new_ca();
    let lookalike = new_ca(); // identical subject DN, different key
    let forged = device(&lookalike, |d| d);
    assert!(
        parse(&forged).issuer_matches_subject_of(&parse(&ca.cert_pem)),
        "the DNs are identical"
    );
    assert_eq!(check(&ca, &forged), Err(RejectReason::SignatureInvalid));
}

#[test]
fn rejects_issuer_mismatch() {
    let ca = new_ca();
    let other = TestCa::new("Other CA").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&ca, &device(&other, |d| d)), Err(RejectReason::IssuerMismatch));
}

#[test]
fn rejects_expired() {
    let ca = new_ca();
    assert_eq!(
        check(&ca, &device(&ca, |d| d.valid_days(-400, -1))),
        Err(RejectReason::Expired)
    );
}

#[test]
fn rejects_not_yet_valid_but_tolerates_skew() {
    let ca = new_ca();
    assert_eq!(
        check(&ca, &device(&ca, |d| d.valid_days(2, 400))),
        Err(RejectReason::NotYetValid)
    );
    // notBefore one minute ahead is within the 300 s skew.
    let pem = device(&ca, |d| d.valid_days(0, 400));
    let nb = parse(&pem).not_before;
    assert_eq!(
        check_with(&ca, &pem, &profile(), None, nb - 60),
        Ok("sensor-00001".into())
    );
    assert_eq!(
        check_with(&ca, &pem, &profile(), None, nb - 301),
        Err(RejectReason::NotYetValid)
    );
}

#[test]
fn rejects_too_little_remaining_life() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.valid_days(-1, 10));
    assert_eq!(check(&ca, &pem), Err(RejectReason::InsufficientRemainingValidity));
    let mut lenient = profile();
    lenient.min_remaining_days = 5;
    assert_eq!(check_with(&ca, &pem, &lenient, None, now()), Ok("sensor-00001".into()));
}

#[test]
fn rejects_leaf_with_ca_true() {
    let ca = new_ca();
    assert_eq!(
        check(&ca, &device(&ca, |d| d.ca(true))),
        Err(RejectReason::CertificateIsCa)
    );
}

#[test]
fn rejects_rsa_1024() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.key(KeyAlg::Rsa1024));
    assert_eq!(parse(&pem).key, onboarding_domain::KeyKind::Rsa { bits: 1024 });
    assert_eq!(check(&ca, &pem), Err(RejectReason::WeakKey));
}

#[test]
fn rejects_sha1_signature() {
    let ca_pem = fixture("sha1-ca.pem").unwrap_or_else(|e| panic!("{e}"));
    let key_pem = fixture("sha1-ca.key.pem").unwrap_or_else(|e| panic!("{e}"));
    let ca = TestCa::from_pem(&ca_pem, &key_pem).unwrap_or_else(|e| panic!("{e}"));
    let leaf = fixture("sha1-device.pem").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parse(&leaf).signature_algorithm, "1.2.840.113549.1.1.5");
    assert_eq!(check(&ca, &leaf), Err(RejectReason::WeakSignatureAlgorithm));
}

#[test]
fn rejects_eku_without_client_auth() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.eku(Some(vec![ExtendedKeyUsagePurpose::ServerAuth])));
    assert_eq!(check(&ca, &pem), Err(RejectReason::ExtendedKeyUsageInvalid));
    // Absent extensions are fine.
    assert_eq!(
        check(&ca, &device(&ca, |d| d.eku(None).key_usage(None))),
        Ok("sensor-00001".into())
    );
}

#[test]
fn rejects_key_usage_without_digital_signature() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.key_usage(Some(vec![KeyUsagePurpose::KeyEncipherment])));
    assert_eq!(check(&ca, &pem), Err(RejectReason::KeyUsageInvalid));
}

#[test]
fn rejects_missing_cn() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.subject(&[(DnType::OrganizationName, "Acme")]));
    assert_eq!(check(&ca, &pem), Err(RejectReason::ThingNameMissing));
}

#[test]
fn rejects_cn_with_slash_or_space() {
    let ca = new_ca();
    for cn in ["sensor/1", "sensor 1"] {
        let pem = device(&ca, |d| d.subject(&[(DnType::CommonName, cn)]));
        assert_eq!(check(&ca, &pem), Err(RejectReason::ThingNameInvalid), "{cn:?}");
    }
}

#[test]
fn cn_of_128_passes_and_129_is_rejected() {
    let ca = new_ca();
    let ok = "a".repeat(128);
    let pem = device(&ca, |d| d.subject(&[(DnType::CommonName, ok.as_str())]));
    assert_eq!(check(&ca, &pem), Ok(ok));
    let long = "a".repeat(129);
    let pem = device(&ca, |d| d.subject(&[(DnType::CommonName, long.as_str())]));
    assert_eq!(check(&ca, &pem), Err(RejectReason::ThingNameInvalid));
}

#[test]
fn rejects_unfit_attribute_unless_profile_drops_it() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.with(DnType::OrganizationName, "Acme Corp"));
    assert_eq!(check(&ca, &pem), Err(RejectReason::AttributeInvalid));
    let mut dropping = profile();
    dropping.unfit_attribute = onboarding_domain::UnfitAttribute::Drop;
    assert_eq!(check_with(&ca, &pem, &dropping, None, now()), Ok("sensor-00001".into()));
}

#[test]
fn the_deny_lists_answer_rejects_after_the_signature_and_before_the_rest() {
    let ca = new_ca();
    let pem = device(&ca, |d| d.serial(&[0x12, 0x34, 0x56]));
    let cert = parse(&pem);
    assert_eq!(cert.serial, "123456", "the form the deny-list lookup is keyed on");
    let serial = DenyKey::serial(CA_ID, "12:34:56").map(|k| k.rejection(Some("stolen")));
    let serial = serial.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        check_with(&ca, &pem, &profile(), Some(&serial), now()),
        Err(RejectReason::SerialDenied)
    );
    let fingerprint = DenyKey::fingerprint(&cert.fingerprint.to_uppercase()).map(|k| k.rejection(None));
    let fingerprint = fingerprint.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        check_with(&ca, &pem, &profile(), Some(&fingerprint), now()),
        Err(RejectReason::FingerprintDenied)
    );
    // Denied and expired: the deny-list's reason wins (checked first).
    let expired = device(&ca, |d| d.serial(&[0x12, 0x34, 0x56]).valid_days(-10, -1));
    assert_eq!(
        check_with(&ca, &expired, &profile(), Some(&serial), now()),
        Err(RejectReason::SerialDenied)
    );
    assert_eq!(
        check_with(&ca, &pem, &profile(), None, now()),
        Ok("sensor-00001".into())
    );
}

#[test]
fn foreign_certificates_are_told_apart_from_rejected_ones() {
    let mut config = OnboardingConfig::default();
    let active = CertificateStatus::Active;
    let reason = |v: CaVerdict<'_>| match v {
        CaVerdict::Rejected(r) => Some(r.reason),
        _ => None,
    };
    let foreign = |v: CaVerdict<'_>| match v {
        CaVerdict::Foreign(r) => Some(r.reason),
        _ => None,
    };
    // Unbound here: another system's CA, whatever its status.
    assert_eq!(
        foreign(check_ca(CA_ID, Some(CA_ID), Some(&active), &config)),
        Some(RejectReason::CaNotBound)
    );
    assert_eq!(
        foreign(check_ca(
            CA_ID,
            Some(CA_ID),
            Some(&CertificateStatus::Inactive),
            &config
        )),
        Some(RejectReason::CaNotBound)
    );
    config.add_profile("sensors".into(), Ok(profile()));
    config.bind(CA_ID.into(), "sensors".into());
    assert!(
        matches!(check_ca(CA_ID, Some(CA_ID), Some(&active), &config), CaVerdict::Trusted(p) if p.name == "sensors")
    );
    // The event naming a CA the certificate does not have: never ours to judge.
    assert_eq!(
        foreign(check_ca(CA_ID, Some("other"), Some(&active), &config)),
        Some(RejectReason::CaMismatch)
    );
    assert_eq!(
        foreign(check_ca(CA_ID, None, Some(&active), &config)),
        Some(RejectReason::CaMismatch)
    );
    assert_eq!(
        reason(check_ca(
            CA_ID,
            Some(CA_ID),
            Some(&CertificateStatus::Inactive),
            &config
        )),
        Some(RejectReason::CaNotActive)
    );
    assert_eq!(
        reason(check_ca(CA_ID, Some(CA_ID), None, &config)),
        Some(RejectReason::CaNotActive)
    );
    config.bind(CA_ID.into(), "missing".into());
    assert!(matches!(
        check_ca(CA_ID, Some(CA_ID), Some(&active), &config),
        CaVerdict::Misconfigured { .. }
    ));
}
