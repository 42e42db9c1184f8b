use super::*;
use crate::model::reason::RejectReason;
use crate::policy::rotation::RotationPolicy;

const NOW: i64 = 1_800_000_000;

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn cert(n: u8, status: CertificateStatus, things: &[&str]) -> AuditedCertificate {
    AuditedCertificate {
        certificate_id: id(n),
        ca_certificate_id: Some(id(200)),
        status,
        not_after: NOW + 365 * DAY,
        created_at: NOW - 10 * DAY,
        things: things.iter().map(|t| t.to_string()).collect(),
    }
}

fn active(n: u8, thing: &str) -> AuditedCertificate {
    cert(n, CertificateStatus::Active, &[thing])
}

fn ca(n: u8, status: CertificateStatus, not_after: i64) -> AuditedCa {
    AuditedCa {
        certificate_id: id(n),
        status,
        not_after,
    }
}

fn record(n: u8, status: RecordStatus) -> CertificateRecord {
    let mut r = CertificateRecord::bare(&id(n), &id(200), status, NOW);
    r.thing_name = Some(format!("thing-{n}"));
    r
}

/// A rotation of `old`'s certificate for `thing`, issued `new`.
fn rotation(old: u8, new: u8, thing: &str) -> Rotation {
    let policy = RotationPolicy::default();
    let requested = Rotation::requested(&record(old, RecordStatus::Provisioned), thing, "p", &policy, 1, NOW);
    requested
        .issued(&id(new), Vec::new(), NOW)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.resource_id.as_str()).collect()
}

fn only(findings: Vec<Finding>) -> Finding {
    assert_eq!(findings.len(), 1, "{findings:#?}");
    findings.into_iter().next().unwrap_or_else(|| unreachable!())
}

// --- severities, codes ----------------------------------------------------------

#[test]
fn severities_are_ordered_and_parse_in_any_case() {
    assert!(Severity::Low < Severity::Medium);
    assert!(Severity::Medium < Severity::High);
    assert!(Severity::High < Severity::Critical);
    for s in Severity::ALL {
        assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
        assert_eq!(s.as_str().to_uppercase().parse::<Severity>(), Ok(s));
    }
    assert_eq!(" High ".parse::<Severity>(), Ok(Severity::High));
    for bad in ["", "severe", "hi", "critical!", "0"] {
        assert_eq!(bad.parse::<Severity>(), Err(SeverityError(bad.to_string())), "{bad}");
    }
}

#[test]
fn check_codes_are_unique_and_round_trip() {
    let codes: BTreeSet<&str> = AuditCheck::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(codes.len(), AuditCheck::ALL.len());
    for check in AuditCheck::ALL {
        assert_eq!(AuditCheck::from_code(check.code()), Some(check));
        assert!(!check.remedy().is_empty());
    }
    assert_eq!(AuditCheck::from_code("device_cert_expiring"), None);
}

// --- DEVICE_CERT_EXPIRING -------------------------------------------------------

#[test]
fn device_expiry_is_flagged_below_n_whole_days_and_not_at_exactly_n() {
    let at = |n: u8, not_after: i64| AuditedCertificate {
        not_after,
        ..active(n, "t")
    };
    let certs = [
        at(1, NOW + 30 * DAY),
        at(2, NOW + 30 * DAY - 1),
        at(3, NOW + 7 * DAY),
        at(4, NOW + 7 * DAY - 1),
        at(5, NOW + 1),
        at(6, NOW),
        at(7, NOW - DAY),
    ];
    let findings = device_certificates_expiring(&certs, NOW, 30);
    let got: Vec<(&str, Severity)> = findings.iter().map(|f| (f.resource_id.as_str(), f.severity)).collect();
    assert_eq!(
        got,
        [
            (id(2).as_str(), Severity::Medium),
            (id(3).as_str(), Severity::Medium),
            (id(4).as_str(), Severity::High),
            (id(5).as_str(), Severity::High),
            (id(6).as_str(), Severity::Critical),
            (id(7).as_str(), Severity::Critical),
        ]
    );
    let first = &findings[0];
    assert_eq!(first.check, AuditCheck::DeviceCertExpiring);
    assert_eq!(first.resource_kind, ResourceKind::Certificate);
    assert_eq!(first.remedy, AuditCheck::DeviceCertExpiring.remedy());
    assert!(first.detail.contains("29 whole days left"), "{}", first.detail);
    assert!(findings[4].detail.contains("expired"), "{}", findings[4].detail);
}

#[test]
fn only_active_device_certificates_are_judged_for_expiry() {
    let certs: Vec<AuditedCertificate> = [
        CertificateStatus::Inactive,
        CertificateStatus::Revoked,
        CertificateStatus::PendingActivation,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, status)| AuditedCertificate {
        not_after: NOW - DAY,
        ..cert(i as u8, status, &["t"])
    })
    .collect();
    assert_eq!(device_certificates_expiring(&certs, NOW, 30), []);
}

// --- CA_CERT_EXPIRING -----------------------------------------------------------

#[test]
fn ca_expiry_is_flagged_below_n_whole_days_high_then_critical() {
    let cas = [
        ca(1, CertificateStatus::Active, NOW + 90 * DAY),
        ca(2, CertificateStatus::Active, NOW + 90 * DAY - 1),
        ca(3, CertificateStatus::Active, NOW),
        ca(4, CertificateStatus::Inactive, NOW + DAY),
    ];
    let findings = ca_certificates_expiring(&cas, NOW, 90);
    assert_eq!(ids(&findings), [id(2), id(3)]);
    assert_eq!(findings[0].severity, Severity::High);
    assert_eq!(findings[0].check, AuditCheck::CaCertExpiring);
    assert_eq!(findings[0].resource_kind, ResourceKind::CaCertificate);
    assert_eq!(findings[1].severity, Severity::Critical);
    assert_eq!(findings[1].remedy, AuditCheck::CaCertExpiring.remedy());
}

// --- CERT_SHARED ----------------------------------------------------------------

#[test]
fn a_certificate_on_two_things_is_shared_critical_when_active() {
    let certs = [
        cert(1, CertificateStatus::Active, &["a"]),
        cert(2, CertificateStatus::Active, &["a", "b"]),
        cert(3, CertificateStatus::Inactive, &["a", "b", "c"]),
        cert(4, CertificateStatus::Active, &[]),
    ];
    let findings = certificates_shared(&certs);
    assert_eq!(ids(&findings), [id(2), id(3)]);
    assert_eq!(findings[0].severity, Severity::Critical);
    assert_eq!(findings[0].check, AuditCheck::CertShared);
    assert!(findings[0].detail.contains("2 things: a, b"), "{}", findings[0].detail);
    assert_eq!(findings[1].severity, Severity::Medium);
}

#[test]
fn a_thing_listed_twice_does_not_make_a_certificate_shared() {
    let certs = [cert(1, CertificateStatus::Active, &["a", "a"])];
    assert_eq!(certificates_shared(&certs), []);
}

#[test]
fn a_certificate_shared_by_many_things_names_five_and_counts_the_rest() {
    let things: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = things.iter().map(String::as_str).collect();
    let finding = only(certificates_shared(&[cert(1, CertificateStatus::Active, &refs)]));
    assert!(
        finding.detail.ends_with("8 things: t0, t1, t2, t3, t4 and 3 more"),
        "{}",
        finding.detail
    );
}

// --- THING_MULTIPLE_ACTIVE_CERTS ------------------------------------------------

#[test]
fn two_active_certificates_on_a_thing_without_a_rotation_are_flagged() {
    let certs = [
        active(1, "a"),
        active(2, "a"),
        active(3, "b"),
        cert(4, CertificateStatus::Inactive, &["b"]),
    ];
    let finding = only(things_with_several_active_certificates(&certs, &[]));
    assert_eq!(finding.check, AuditCheck::ThingMultipleActiveCerts);
    assert_eq!(finding.severity, Severity::High);
    assert_eq!(finding.resource_kind, ResourceKind::Thing);
    assert_eq!(finding.resource_id, "a");
    assert!(finding.detail.contains(&id(1)) && finding.detail.contains(&id(2)));
}

#[test]
fn a_rotation_in_progress_excuses_its_old_and_new_certificates() {
    let certs = [active(1, "a"), active(2, "a")];
    let issued = rotation(1, 2, "a");
    assert_eq!(
        things_with_several_active_certificates(&certs, std::slice::from_ref(&issued)),
        []
    );
    let delivered = issued.delivered(NOW).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        things_with_several_active_certificates(&certs, std::slice::from_ref(&delivered)),
        []
    );
    let confirmed = delivered.confirmed(NOW).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        things_with_several_active_certificates(&certs, std::slice::from_ref(&confirmed)),
        []
    );
    // Once retired (or failed and cleaned up), two ACTIVE certificates are wrong again.
    let retired = confirmed
        .retired(&RotationPolicy::default(), NOW)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(things_with_several_active_certificates(&certs, &[retired]).len(), 1);
    let failed = issued
        .failed(FailureReason::JobFailed, "x", &RotationPolicy::default(), NOW)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        things_with_several_active_certificates(&certs, std::slice::from_ref(&failed)).len(),
        1
    );
    // ...but a failure whose new certificate is still being cleaned up is in progress.
    assert_eq!(things_with_several_active_certificates(&certs, &[failed.failing()]), []);
}

#[test]
fn attack_a_third_active_certificate_hides_behind_no_rotation() {
    let certs = [active(1, "a"), active(2, "a"), active(3, "a")];
    let finding = only(things_with_several_active_certificates(&certs, &[rotation(1, 2, "a")]));
    assert!(
        finding.detail.starts_with("3 ACTIVE certificates"),
        "{}",
        finding.detail
    );
}

#[test]
fn attack_another_things_rotation_excuses_nothing() {
    let certs = [active(1, "a"), active(2, "a")];
    assert_eq!(
        things_with_several_active_certificates(&certs, &[rotation(1, 2, "b")]).len(),
        1
    );
}

// --- ACTIVE_CERT_UNRECORDED -----------------------------------------------------

#[test]
fn an_active_certificate_without_an_approving_record_is_flagged() {
    let certs: Vec<AuditedCertificate> = (1..=8).map(|n| active(n, "t")).collect();
    let mut observed = record(3, RecordStatus::Observed);
    observed.detail = Some("ACTIVE without onboarding; fails WEAK_KEY: RSA 1024".into());
    let records = [
        record(2, RecordStatus::Provisioned),
        observed,
        record(4, RecordStatus::Rotated),
        record(5, RecordStatus::Rejected),
        record(6, RecordStatus::Retired),
        record(7, RecordStatus::Revoked),
    ];
    let findings = active_certificates_unrecorded(&certs, &records);
    let got: Vec<(&str, Severity)> = findings.iter().map(|f| (f.resource_id.as_str(), f.severity)).collect();
    assert_eq!(
        got,
        [
            (id(1).as_str(), Severity::High),
            (id(3).as_str(), Severity::High),
            (id(5).as_str(), Severity::High),
            (id(6).as_str(), Severity::Critical),
            (id(7).as_str(), Severity::Critical),
            (id(8).as_str(), Severity::High),
        ]
    );
    assert!(findings[0].detail.contains("no inventory record"));
    assert!(
        findings[1]
            .detail
            .contains("OBSERVED (ACTIVE without onboarding; fails WEAK_KEY"),
        "{}",
        findings[1].detail
    );
    assert!(findings[3].detail.contains("RETIRED"), "{}", findings[3].detail);
    assert_eq!(findings[0].check, AuditCheck::ActiveCertUnrecorded);
}

#[test]
fn certificates_that_are_not_active_need_no_record() {
    let certs = [
        cert(1, CertificateStatus::Inactive, &[]),
        cert(2, CertificateStatus::PendingActivation, &[]),
        cert(3, CertificateStatus::Revoked, &[]),
    ];
    assert_eq!(active_certificates_unrecorded(&certs, &[]), []);
}

// --- ACTIVE_CERT_DENIED ---------------------------------------------------------

#[test]
fn an_active_denied_certificate_is_critical_and_an_inactive_one_is_not_flagged() {
    let certs = [
        active(1, "a"),
        active(2, "b"),
        cert(3, CertificateStatus::Revoked, &["c"]),
    ];
    let denials: BTreeMap<String, Rejection> = [1, 3]
        .into_iter()
        .map(|n| (id(n), Rejection::new(RejectReason::FingerprintDenied, "leaked key")))
        .collect();
    let finding = only(active_certificates_denied(&certs, &denials));
    assert_eq!(finding.resource_id, id(1));
    assert_eq!(finding.check, AuditCheck::ActiveCertDenied);
    assert_eq!(finding.severity, Severity::Critical);
    assert!(
        finding.detail.contains("FINGERPRINT_DENIED (leaked key)"),
        "{}",
        finding.detail
    );
}

// --- INACTIVE_CA_ACTIVE_CERTS ---------------------------------------------------

#[test]
fn an_inactive_ca_with_active_certificates_is_one_critical_finding() {
    let under = |n: u8, ca_n: u8, status: CertificateStatus| AuditedCertificate {
        ca_certificate_id: Some(id(ca_n)),
        ..cert(n, status, &["t"])
    };
    let cas = [
        ca(100, CertificateStatus::Inactive, NOW + 999 * DAY),
        ca(101, CertificateStatus::Active, NOW + 999 * DAY),
        ca(102, CertificateStatus::Unknown("REVOKED".into()), NOW + 999 * DAY),
        ca(103, CertificateStatus::Inactive, NOW + 999 * DAY),
    ];
    let certs = [
        under(1, 100, CertificateStatus::Active),
        under(2, 100, CertificateStatus::Active),
        under(3, 100, CertificateStatus::Inactive),
        under(4, 101, CertificateStatus::Active),
        under(5, 102, CertificateStatus::Active),
        under(6, 103, CertificateStatus::Revoked),
        AuditedCertificate {
            ca_certificate_id: None,
            ..active(7, "t")
        },
    ];
    let findings = inactive_cas_with_active_certificates(&cas, &certs);
    assert_eq!(ids(&findings), [id(100), id(102)]);
    assert!(findings.iter().all(|f| f.severity == Severity::Critical));
    assert!(findings.iter().all(|f| f.check == AuditCheck::InactiveCaActiveCerts));
    assert!(
        findings[0].detail.contains("INACTIVE but 2 certificates"),
        "{}",
        findings[0].detail
    );
    assert!(!findings[0].detail.contains(&id(3)));
}

// --- DEVICE_CERT_OLD ------------------------------------------------------------

#[test]
fn a_certificate_older_than_n_days_is_flagged_and_exactly_n_is_not() {
    let created = |n: u8, created_at: i64| AuditedCertificate {
        created_at,
        ..active(n, "t")
    };
    let certs = [
        created(1, NOW - 365 * DAY),
        created(2, NOW - 365 * DAY - 1),
        created(3, NOW),
        AuditedCertificate {
            created_at: NOW - 999 * DAY,
            ..cert(4, CertificateStatus::Inactive, &[])
        },
    ];
    let finding = only(device_certificates_old(&certs, NOW, 365));
    assert_eq!(finding.resource_id, id(2));
    assert_eq!(finding.severity, Severity::Low);
    assert_eq!(finding.check, AuditCheck::DeviceCertOld);
    assert!(finding.detail.contains("365 whole days ago"), "{}", finding.detail);
}

// --- ROTATION_FAILED ------------------------------------------------------------

#[test]
fn a_failed_rotation_is_medium_while_retried_and_high_once_given_up() {
    let policy = RotationPolicy::default();
    let fail = |old: u8, reason: FailureReason, attempt: u32| {
        let mut r = rotation(old, old + 100, &format!("thing-{old}"));
        r.attempt = attempt;
        r.failed(reason, "device said no", &policy, NOW)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let rotations = [
        fail(1, FailureReason::JobFailed, 1),
        fail(2, FailureReason::JobFailed, policy.max_attempts),
        fail(3, FailureReason::Denied, 1),
        fail(4, FailureReason::Retired, 1),
        fail(5, FailureReason::Revoked, 1),
        rotation(6, 106, "thing-6"),
        fail(7, FailureReason::CsrRefused, 1).failing(),
    ];
    let findings = rotations_failed(&rotations);
    let got: Vec<(&str, Severity)> = findings.iter().map(|f| (f.resource_id.as_str(), f.severity)).collect();
    assert_eq!(
        got,
        [
            (id(1).as_str(), Severity::Medium),
            (id(2).as_str(), Severity::High),
            (id(3).as_str(), Severity::High),
            (id(7).as_str(), Severity::Medium),
        ]
    );
    assert!(
        findings[0].detail.contains("JOB_FAILED: device said no"),
        "{}",
        findings[0].detail
    );
    assert!(
        findings[0].detail.contains("next attempt after"),
        "{}",
        findings[0].detail
    );
    assert!(findings[1].detail.contains("given up"), "{}", findings[1].detail);
    assert!(findings[0].detail.contains("thing-1"));
    assert_eq!(findings[0].resource_kind, ResourceKind::Rotation);
    assert_eq!(findings[0].check, AuditCheck::RotationFailed);
}

// --- RECORD_CERT_MISSING --------------------------------------------------------

#[test]
fn a_live_record_without_its_certificate_is_flagged() {
    let records = [
        record(1, RecordStatus::Provisioned),
        record(2, RecordStatus::Provisioned),
        record(3, RecordStatus::Observed),
        record(4, RecordStatus::Rotated),
        record(5, RecordStatus::Retired),
        record(6, RecordStatus::Rejected),
        record(7, RecordStatus::Revoked),
    ];
    let existing: BTreeSet<String> = [id(2)].into_iter().collect();
    let findings = records_certificate_missing(&records, &existing);
    let got: Vec<(&str, Severity)> = findings.iter().map(|f| (f.resource_id.as_str(), f.severity)).collect();
    assert_eq!(
        got,
        [(id(1).as_str(), Severity::Medium), (id(3).as_str(), Severity::Low)]
    );
    assert_eq!(findings[0].resource_kind, ResourceKind::InventoryRecord);
    assert_eq!(findings[0].check, AuditCheck::RecordCertMissing);
    assert!(
        findings[0].detail.contains("PROVISIONED for thing thing-1"),
        "{}",
        findings[0].detail
    );
}

#[test]
fn resource_kinds_round_trip() {
    let spelled: BTreeSet<&str> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(spelled.len(), ResourceKind::ALL.len());
    for kind in ResourceKind::ALL {
        assert_eq!(ResourceKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(ResourceKind::parse("certificate"), None);
}

// --- every check over one fleet -------------------------------------------------

const OWN_POLICY: &str = r#"{"Statement":[
    {"Effect":"Allow","Action":"iot:Connect",
     "Resource":"arn:aws:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
    {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],
     "Resource":"arn:aws:iot:eu-west-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/*"}]}"#;

/// A fleet of two devices under one ACTIVE CA, each recorded, with its own
/// policy: nothing to report.
fn clean_fleet() -> AuditFacts {
    AuditFacts {
        certificates: vec![active(1, "thing-1"), active(2, "thing-2")],
        cas: vec![ca(200, CertificateStatus::Active, NOW + 999 * DAY)],
        records: vec![
            record(1, RecordStatus::Provisioned),
            record(2, RecordStatus::Provisioned),
        ],
        rotations: Vec::new(),
        denials: BTreeMap::new(),
        policies: vec![PolicyFacts {
            policy_name: "device".into(),
            document: OWN_POLICY.into(),
            things: vec!["thing-1".into(), "thing-2".into()],
        }],
    }
}

#[test]
fn a_clean_fleet_has_no_finding() {
    let findings = run_audit_checks(&clean_fleet(), NOW, AuditThresholds::default());
    assert_eq!(findings.findings(), []);
}

#[test]
fn every_check_runs_over_a_fleet_with_one_problem_of_each_kind() {
    let mut facts = clean_fleet();
    let thresholds = AuditThresholds::default();
    facts.certificates.extend([
        AuditedCertificate {
            not_after: NOW + DAY,
            ..active(3, "thing-3")
        },
        cert(4, CertificateStatus::Active, &["thing-4", "thing-5"]),
        active(5, "thing-6"),
        active(6, "thing-6"),
        active(7, "thing-7"),
        active(8, "thing-8"),
        AuditedCertificate {
            ca_certificate_id: Some(id(201)),
            ..active(9, "thing-9")
        },
        AuditedCertificate {
            created_at: NOW - 400 * DAY,
            ..active(10, "thing-10")
        },
    ]);
    facts.cas.extend([
        ca(201, CertificateStatus::Inactive, NOW + 999 * DAY),
        ca(202, CertificateStatus::Active, NOW + 10 * DAY),
    ]);
    // Every certificate recorded but 7; 11's record has lost its certificate.
    facts.records.extend(
        [3, 4, 5, 6, 8, 9, 10, 11]
            .into_iter()
            .map(|n| record(n, RecordStatus::Provisioned)),
    );
    facts
        .denials
        .insert(id(8), Rejection::new(RejectReason::SerialDenied, "stolen"));
    facts.policies.push(PolicyFacts {
        policy_name: "too-broad".into(),
        document: r#"{"Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}"#.into(),
        things: vec!["thing-1".into()],
    });
    let policy = RotationPolicy::default();
    let mut given_up = rotation(12, 112, "thing-12");
    given_up.attempt = policy.max_attempts;
    facts.rotations.push(
        given_up
            .failed(FailureReason::JobTimedOut, "no answer", &policy, NOW)
            .unwrap_or_else(|e| panic!("{e}")),
    );

    let findings = run_audit_checks(&facts, NOW, thresholds);
    let got: Vec<(AuditCheck, String)> = findings
        .findings()
        .iter()
        .map(|f| (f.check, f.resource_id.clone()))
        .collect();
    let mut expected = vec![
        (AuditCheck::DeviceCertExpiring, id(3)),
        (AuditCheck::CaCertExpiring, id(202)),
        (AuditCheck::CertShared, id(4)),
        (AuditCheck::ThingMultipleActiveCerts, "thing-6".to_string()),
        (AuditCheck::ActiveCertUnrecorded, id(7)),
        (AuditCheck::ActiveCertDenied, id(8)),
        (AuditCheck::InactiveCaActiveCerts, id(201)),
        (AuditCheck::DeviceCertOld, id(10)),
        (AuditCheck::PolicyOverlyPermissive, "too-broad".to_string()),
        (AuditCheck::RotationFailed, id(12)),
        (AuditCheck::RecordCertMissing, id(11)),
    ];
    let mut sorted = got.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
    assert!(
        findings.by_check().iter().all(|(_, n)| *n == 1),
        "{:?}",
        findings.by_check()
    );
    assert_eq!(findings.worst(), Some(Severity::Critical));
    assert_eq!(findings.findings()[0].severity, Severity::Critical);
}

#[test]
fn thresholds_are_taken_within_a_century_and_refused_outside() {
    assert_eq!(AuditThresholds::new(30, 90, 365), Ok(AuditThresholds::default()));
    assert!(AuditThresholds::new(0, 0, 0).is_ok());
    assert!(AuditThresholds::new(36_500, 36_500, 36_500).is_ok());
    assert_eq!(
        AuditThresholds::new(-1, 90, 365),
        Err(ThresholdError {
            name: "device certificate expiry",
            value: -1
        })
    );
    let err = AuditThresholds::new(30, 36_501, 365).err();
    assert_eq!(err.as_ref().map(|e| e.name), Some("CA certificate expiry"));
    let err = AuditThresholds::new(30, 90, i64::MAX).err();
    assert_eq!(err.as_ref().map(|e| e.name), Some("device certificate age"));
    assert!(err.is_some_and(|e| e.to_string().contains("between 0 and 36500 days")));
}

#[test]
fn a_huge_age_threshold_flags_nothing_and_does_not_overflow() {
    let certs = [AuditedCertificate {
        created_at: i64::MIN / 2,
        ..active(1, "t")
    }];
    assert_eq!(device_certificates_old(&certs, NOW, i64::MAX), []);
    assert_eq!(device_certificates_old(&certs, NOW, 365).len(), 1);
}
