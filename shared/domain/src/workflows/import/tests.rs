//! The import over the in-memory AWS (`testing::import`), with the real
//! registrar behind it: outcomes, every refusal, both registration modes,
//! and a crash at every call converging on the next run.

use std::collections::BTreeMap;

use onboarding_test_support::TestCa;

use super::*;
use crate::policy::profile::DeviceProfile;
use crate::ports::RegisteredCa;
use crate::testing::import::{Fake, Inject, arn};
use crate::testing::rotation::run_now;
use crate::workflows::registrar::RegistrarSettings;

const POLICY: &str = "device-policy";
const GROUP: &str = "imported";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

struct Setup {
    fake: Fake,
    ca: TestCa,
    ca_id: String,
}

fn ca_id_of(ca: &TestCa) -> String {
    Certificate::from_pem(&ca.cert_pem)
        .map(|c| c.fingerprint)
        .unwrap_or_default()
}

fn setup() -> Setup {
    let fake = Fake::default();
    let ca = TestCa::new("Import Test CA").unwrap_or_else(|e| panic!("{e}"));
    let ca_id = ca_id_of(&ca);
    fake.with(|w| {
        let mut profile = DeviceProfile::minimal("sensors", POLICY);
        profile.thing_groups = vec![GROUP.into()];
        w.config.add_profile("sensors".into(), Ok(profile));
        w.config
            .add_profile("other".into(), Ok(DeviceProfile::minimal("other", "other-policy")));
        w.config.bind(ca_id.clone(), "sensors".into());
        w.cas.insert(
            ca_id.clone(),
            RegisteredCa {
                certificate_id: ca_id.clone(),
                status: CertificateStatus::Active,
                pem: ca.cert_pem.clone(),
                jitp: false,
            },
        );
    });
    Setup { fake, ca, ca_id }
}

fn device(ca: &TestCa, cn: &str) -> String {
    ca.device(cn).build().unwrap_or_else(|e| panic!("{e}")).cert_pem
}

fn row(line: usize, pem: &str) -> ImportRow {
    ImportRow {
        line,
        source: format!("cert-{line}.pem"),
        input: Ok(RowInput {
            pem: pem.to_string(),
            profile: None,
            naming: ImportNaming::default(),
        }),
    }
}

fn named(line: usize, pem: &str, name: &str) -> ImportRow {
    let mut row = row(line, pem);
    if let Ok(input) = &mut row.input {
        input.naming.thing_name = Some(name.to_string());
    }
    row
}

fn settings(mode: ImportMode) -> ImportSettings {
    ImportSettings {
        mode,
        default_profile: None,
        concurrency: 4,
        clock_skew_secs: 300,
    }
}

/// One import over the fake, from `state`, with the registrar as the CLI builds it.
fn try_import(
    fake: &Fake,
    rows: Vec<ImportRow>,
    state: &ImportState,
    mode: ImportMode,
) -> Result<ImportReport, ImportError> {
    let registrar = Registrar::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        RegistrarSettings::default(),
    );
    let importer = Importer::new(fake.clone(), fake.clone(), &registrar, fake.clone(), settings(mode));
    run_now(importer.run(rows, state, now(), &|_| {}))
}

/// One import resumed from the fake's journal; it must end without an error.
fn run_import(fake: &Fake, rows: Vec<ImportRow>, mode: ImportMode) -> ImportReport {
    let state = ImportState::parse(&fake.with(|w| w.journal.join("\n")));
    try_import(fake, rows, &state, mode).unwrap_or_else(|e| panic!("{e}"))
}

fn code(report: &ImportReport, line: usize) -> String {
    let row = report.rows.iter().find(|r| r.line == line);
    match row.map(|r| &r.outcome) {
        Some(RowOutcome::Rejected { code, .. } | RowOutcome::Failed { code, .. }) => code.clone(),
        Some(other) => other.label().to_string(),
        None => "missing".into(),
    }
}

#[test]
fn good_rows_are_provisioned_as_the_registrar_provisions_and_bad_rows_reported() {
    let Setup { fake, ca, ca_id } = setup();
    let good = device(&ca, "dev-1");
    let named_good = device(&ca, "whatever");
    let expired = ca
        .device("dev-old")
        .valid_days(-400, -10)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .cert_pem;
    let foreign_ca = TestCa::new("Import Test CA").unwrap_or_else(|e| panic!("{e}"));
    let forged = device(&foreign_ca, "dev-forged");
    let other_ca = TestCa::new("Somebody Else").unwrap_or_else(|e| panic!("{e}"));
    let unbound = device(&other_ca, "dev-unbound");
    let denied = device(&ca, "dev-denied");
    let duplicate = device(&ca, "dev-dup");
    let denied_fp = Certificate::from_pem(&denied)
        .map(|c| c.fingerprint)
        .unwrap_or_default();
    fake.with(|w| w.denied.insert(denied_fp));
    let mut other_profile = named(9, &device(&ca, "dev-9"), "dev-nine");
    if let Ok(input) = &mut other_profile.input {
        input.profile = Some("other".into());
        input.naming.attributes = BTreeMap::from([("site".to_string(), "paris".to_string())]);
    }
    let mut missing_profile = row(10, &device(&ca, "dev-10"));
    if let Ok(input) = &mut missing_profile.input {
        input.profile = Some("nope".into());
    }
    let rows = vec![
        row(1, &good),
        named(2, &named_good, "imported-2"),
        row(3, &expired),
        row(4, &forged),
        row(5, &unbound),
        row(6, &denied),
        named(7, &duplicate, "imported-2"),
        row(8, &good),
        other_profile,
        missing_profile,
        ImportRow {
            line: 11,
            source: "x.pem".into(),
            input: Err(RowProblem {
                code: CERTIFICATE_UNREADABLE,
                detail: "gone".into(),
            }),
        },
        row(12, "not a certificate"),
    ];
    let report = run_import(&fake, rows, ImportMode::UnderCa);
    let codes: Vec<String> = (1..=12).map(|l| code(&report, l)).collect();
    assert_eq!(
        codes,
        [
            "provisioned",
            "provisioned",
            "EXPIRED",
            "SIGNATURE_INVALID",
            "CA_NOT_BOUND",
            "FINGERPRINT_DENIED",
            DUPLICATE_THING_NAME,
            DUPLICATE_CERTIFICATE,
            "provisioned",
            PROFILE_UNKNOWN,
            CERTIFICATE_UNREADABLE,
            "CERTIFICATE_MALFORMED",
        ]
    );
    assert!(!report.all_done());
    assert_eq!(report.counts().get("provisioned"), Some(&3));
    assert_eq!(report.counts().get("rejected"), Some(&9));
    fake.with(|w| {
        let id = |pem: &str| Certificate::from_pem(pem).map(|c| c.fingerprint).unwrap_or_default();
        assert!(w.fully_provisioned(&id(&good), POLICY, &[GROUP]));
        assert_eq!(w.records[&id(&good)].thing_name.as_deref(), Some("dev-1"));
        assert!(w.fully_provisioned(&id(&named_good), POLICY, &[GROUP]));
        assert_eq!(w.records[&id(&named_good)].thing_name.as_deref(), Some("imported-2"));
        // The row's profile and attributes.
        let nine = Certificate::from_pem(&device(&ca, "x")).map(|_| ()).ok();
        assert!(nine.is_some());
        assert_eq!(
            w.things["dev-nine"].attributes.get("site").map(String::as_str),
            Some("paris")
        );
        assert!(w.policies.values().any(|p| p.contains("other-policy")));
        // Nothing refused was registered, let alone activated.
        for pem in [&expired, &forged, &unbound, &denied, &duplicate] {
            assert!(!w.certs.contains_key(&id(pem)), "registered a refused certificate");
        }
        assert!(w.early_activations.is_empty(), "{:?}", w.early_activations);
        assert!(w.registrations.values().all(|n| *n == 1));
        // Registered under the CA.
        assert_eq!(w.certs[&id(&good)].ca.as_deref(), Some(ca_id.as_str()));
    });
}

#[test]
fn a_second_run_redoes_nothing() {
    let Setup { fake, ca, .. } = setup();
    let rows: Vec<ImportRow> = (1..=5).map(|i| row(i, &device(&ca, &format!("dev-{i}")))).collect();
    let first = run_import(&fake, rows.clone(), ImportMode::UnderCa);
    assert_eq!(first.counts().get("provisioned"), Some(&5));
    let calls = fake.with(|w| w.calls.len());
    let second = run_import(&fake, rows, ImportMode::UnderCa);
    assert_eq!(second.counts().get("already_done"), Some(&5));
    assert!(second.all_done());
    // Only the configuration and the CA were read again.
    let again: Vec<&str> = fake.with(|w| w.calls[calls..].to_vec());
    assert_eq!(again, ["load_config", "DescribeCACertificate"]);
}

#[test]
fn without_ca_the_named_bound_ca_must_have_signed_it() {
    let Setup { fake, ca, ca_id } = setup();
    let good = device(&ca, "sni-1");
    let other = TestCa::new("Import Test CA").unwrap_or_else(|e| panic!("{e}"));
    let foreign = device(&other, "sni-2");
    let self_signed = {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(rcgen::DnType::CommonName, "sni-3");
        params.self_signed(&key).unwrap_or_else(|e| panic!("{e}")).pem()
    };
    let mode = ImportMode::WithoutCa {
        ca_certificate_id: ca_id.clone(),
    };
    let report = run_import(&fake, vec![row(1, &good), row(2, &foreign), row(3, &self_signed)], mode);
    assert_eq!(code(&report, 1), "provisioned");
    assert_eq!(code(&report, 2), "SIGNATURE_INVALID");
    assert_eq!(code(&report, 3), "ISSUER_MISMATCH");
    let id = Certificate::from_pem(&good).map(|c| c.fingerprint).unwrap_or_default();
    fake.with(|w| {
        assert_eq!(w.certs[&id].ca, None, "IoT records no CA without CA");
        assert!(w.fully_provisioned(&id, POLICY, &[GROUP]));
        assert_eq!(w.records[&id].ca_certificate_id, ca_id);
        assert_eq!(
            w.calls.iter().filter(|c| **c == "RegisterCertificateWithoutCA").count(),
            1
        );
    });
    // A CA that is not bound cannot be named.
    let other_id = ca_id_of(&other);
    let refused = try_import(
        &fake,
        vec![row(1, &foreign)],
        &ImportState::default(),
        ImportMode::WithoutCa {
            ca_certificate_id: other_id,
        },
    );
    assert!(matches!(refused, Err(ImportError::CaNotUsable(..))));
}

#[test]
fn the_registrar_refuses_what_the_import_let_through_if_iot_disagrees() {
    // The registrar checks again on IoT's description: a certificate IoT
    // holds REVOKED, or INACTIVE with a rejection recorded, stays as it is.
    let Setup { fake, ca, ca_id } = setup();
    let revoked = device(&ca, "dev-r");
    let inactive = device(&ca, "dev-i");
    let id = |pem: &str| Certificate::from_pem(pem).map(|c| c.fingerprint).unwrap_or_default();
    fake.with(|w| {
        for (pem, status) in [
            (&revoked, CertificateStatus::Revoked),
            (&inactive, CertificateStatus::Inactive),
        ] {
            w.certs.insert(
                id(pem),
                crate::testing::import::FakeCert {
                    status,
                    pem: pem.to_string(),
                    ca: Some(ca_id.clone()),
                },
            );
        }
        let mut record = crate::model::record::CertificateRecord::bare(
            &id(&inactive),
            &ca_id,
            crate::model::record::RecordStatus::Rejected,
            1,
        );
        record.thing_name = Some("dev-i".into());
        w.records.insert(id(&inactive), record);
    });
    let report = run_import(&fake, vec![row(1, &revoked), row(2, &inactive)], ImportMode::UnderCa);
    assert_eq!(code(&report, 1), NOT_IMPORTABLE);
    assert_eq!(code(&report, 2), NOT_IMPORTABLE);
    fake.with(|w| {
        assert_eq!(w.certs[&id(&revoked)].status, CertificateStatus::Revoked);
        assert_eq!(w.certs[&id(&inactive)].status, CertificateStatus::Inactive);
        assert!(w.activations.is_empty());
        assert!(w.registrations.is_empty());
        assert_eq!(
            w.records[&id(&inactive)].status,
            crate::model::record::RecordStatus::Rejected,
            "the rejection record stands"
        );
    });
}

#[test]
fn an_identity_held_by_a_live_certificate_is_not_taken() {
    let Setup { fake, ca, ca_id } = setup();
    let holder = device(&ca, "holder");
    let id = |pem: &str| Certificate::from_pem(pem).map(|c| c.fingerprint).unwrap_or_default();
    fake.with(|w| {
        w.certs.insert(
            id(&holder),
            crate::testing::import::FakeCert {
                status: CertificateStatus::Active,
                pem: holder.clone(),
                ca: Some(ca_id.clone()),
            },
        );
        w.claims.insert("taken".into(), id(&holder));
    });
    let intruder = device(&ca, "intruder");
    let report = run_import(&fake, vec![named(1, &intruder, "taken")], ImportMode::UnderCa);
    assert_eq!(code(&report, 1), "IDENTITY_COLLISION");
    fake.with(|w| {
        assert_ne!(w.certs[&id(&intruder)].status, CertificateStatus::Active);
        assert_eq!(w.claims["taken"], id(&holder));
    });
}

/// A crash (the call fails before its effect, or after it) at every call of
/// an import, then a second run: every good row ends provisioned, no
/// certificate was registered twice, none activated before it was fully
/// provisioned, and the second run provisions only what the first left.
#[test]
fn an_import_crashed_at_any_call_converges_on_the_next_run() {
    let Setup { fake, ca, .. } = setup();
    let pems: Vec<String> = (1..=3).map(|i| device(&ca, &format!("dev-{i}"))).collect();
    let rows = || -> Vec<ImportRow> { pems.iter().enumerate().map(|(i, p)| row(i + 1, p)).collect() };
    let clean = run_import(&fake, rows(), ImportMode::UnderCa);
    assert!(clean.all_done());
    let total = fake.with(|w| w.calls.len());
    assert!(total > 20, "{total} calls");
    let id = |pem: &str| Certificate::from_pem(pem).map(|c| c.fingerprint).unwrap_or_default();
    for n in 0..total {
        for inject in [Inject::Before(n), Inject::After(n)] {
            let Setup { fake, .. } = setup();
            // The same CA (its certificates are the ones minted above).
            fake.with(|w| {
                let ca_id = ca_id_of(&ca);
                w.cas.clear();
                w.cas.insert(
                    ca_id.clone(),
                    RegisteredCa {
                        certificate_id: ca_id.clone(),
                        status: CertificateStatus::Active,
                        pem: ca.cert_pem.clone(),
                        jitp: false,
                    },
                );
                w.config.bind(ca_id, "sensors".into());
                w.inject = Some(inject);
            });
            let first = try_import(&fake, rows(), &ImportState::default(), ImportMode::UnderCa);
            let second = run_import(&fake, rows(), ImportMode::UnderCa);
            assert!(second.all_done(), "{inject:?}: {second:?}");
            fake.with(|w| {
                for pem in &pems {
                    assert!(w.fully_provisioned(&id(pem), POLICY, &[GROUP]), "{inject:?}");
                    assert_eq!(w.registrations.get(&id(pem)), Some(&1), "{inject:?}");
                }
                assert!(w.early_activations.is_empty(), "{inject:?}: {:?}", w.early_activations);
            });
            // Provisioned once over both runs.
            let provisioned = |r: &Result<ImportReport, ImportError>| {
                r.as_ref()
                    .map(|r| r.rows.iter().filter(|r| r.outcome.label() == "provisioned").count())
                    .unwrap_or(0)
            };
            assert!(provisioned(&first) + provisioned(&Ok(second)) <= 3, "{inject:?}");
            let _ = arn("x");
        }
    }
}

#[test]
fn the_state_file_survives_a_torn_last_line() {
    let entry = JournalEntry {
        certificate_id: "a".repeat(64),
        step: JournalStep::Provisioned,
        line: 3,
        thing_name: Some("dev-3".into()),
        code: None,
        detail: None,
        at: 5,
    };
    let text = format!("{}\n{}", entry.to_line(), &entry.to_line()[..20]);
    let state = ImportState::parse(&text);
    assert_eq!(state.finished_count(), 1);
    assert_eq!(state.unreadable_lines, 1);
    assert_eq!(state.finished(&"a".repeat(64)), Some(&entry));
    // An entry naming no certificate id is not trusted.
    let bad = ImportState::parse(r#"{"certificateId":"../x","step":"provisioned","line":1,"at":1}"#);
    assert_eq!(bad.finished_count(), 0);
}

/// The registrar's own checks on an import's request, without the import's
/// checks in front: a certificate registered without a CA that the named CA
/// did not sign is refused, and a certificate this deployment provisioned,
/// activated and that was deactivated since is never activated again.
#[test]
fn the_registrar_itself_refuses_a_forged_sni_certificate_and_a_deactivated_one() {
    let Setup { fake, ca, ca_id } = setup();
    let other = TestCa::new("Import Test CA").unwrap_or_else(|e| panic!("{e}"));
    let forged = device(&other, "forged");
    let retired = device(&ca, "retired");
    let id = |pem: &str| Certificate::from_pem(pem).map(|c| c.fingerprint).unwrap_or_default();
    fake.with(|w| {
        w.certs.insert(
            id(&forged),
            crate::testing::import::FakeCert {
                status: CertificateStatus::Inactive,
                pem: forged.clone(),
                ca: None,
            },
        );
        w.certs.insert(
            id(&retired),
            crate::testing::import::FakeCert {
                status: CertificateStatus::Inactive,
                pem: retired.clone(),
                ca: Some(ca_id.clone()),
            },
        );
        let mut record = crate::model::record::CertificateRecord::bare(
            &id(&retired),
            &ca_id,
            crate::model::record::RecordStatus::Provisioned,
            1,
        );
        record.thing_name = Some("retired".into());
        record.activated_at = Some(2);
        w.records.insert(id(&retired), record);
    });
    let registrar = Registrar::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        RegistrarSettings::default(),
    );
    let request = |pem: &str, without_ca: bool| ImportRequest {
        certificate_id: id(pem),
        ca_certificate_id: ca_id.clone(),
        without_ca,
        profile: None,
        naming: ImportNaming::default(),
    };
    let forged_outcome = run_now(registrar.handle_import(&request(&forged, true), now()));
    assert!(
        matches!(&forged_outcome, Ok(Outcome::Rejected { rejection, .. }) if rejection.reason == RejectReason::SignatureInvalid),
        "{forged_outcome:?}"
    );
    let retired_outcome = run_now(registrar.handle_import(&request(&retired, false), now()));
    assert!(
        matches!(&retired_outcome, Ok(Outcome::Ignored { certificate_status }) if certificate_status == "INACTIVE"),
        "{retired_outcome:?}"
    );
    fake.with(|w| {
        assert!(w.activations.is_empty());
        assert!(!w.things.contains_key("forged"));
        assert_ne!(w.certs[&id(&forged)].status, CertificateStatus::Active);
    });
}

/// A file holding the device's private key beside its certificate: only
/// the certificate reaches AWS (re-encoded from its DER).
#[test]
fn only_the_certificate_of_a_file_is_sent() {
    let Setup { fake, ca, .. } = setup();
    let cert = ca.device("dev-key").build().unwrap_or_else(|e| panic!("{e}"));
    let key = cert.key_pem.clone().unwrap_or_default();
    assert!(key.contains("PRIVATE KEY"));
    let file = format!("{}{key}", cert.cert_pem);
    let report = run_import(&fake, vec![row(1, &file)], ImportMode::UnderCa);
    assert_eq!(code(&report, 1), "provisioned");
    let id = Certificate::from_pem(&cert.cert_pem)
        .map(|c| c.fingerprint)
        .unwrap_or_default();
    fake.with(|w| {
        let sent = &w.certs[&id].pem;
        assert!(!sent.contains("PRIVATE KEY"), "{sent}");
        assert_eq!(
            Certificate::from_pem(sent).map(|c| c.fingerprint).ok().as_deref(),
            Some(id.as_str())
        );
        assert!(
            w.credentials
                .values()
                .all(|c| !c.certificate_pem.contains("PRIVATE KEY"))
        );
    });
}
