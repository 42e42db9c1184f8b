//! Emergency revocation over the rotation fake: what it cuts, what it
//! keeps, what it refuses, and every crash point.

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use onboarding_test_support::rcgen;

use super::*;
use crate::policy::rotation::protocol::CsrMessage;
use crate::policy::rotation::{DAY, Strategy};
use crate::ports::NameClaims;
use crate::testing::rotation::*;
use crate::workflows::rotation::completer::{Completer, CompleterSettings, JobExecutionEvent};
use crate::workflows::rotation::issuer::{CsrIssuer, CsrIssuerSettings, CsrOutcome};
use crate::workflows::rotation::rotator::{Rotator, RotatorSettings};

type TestRevocation = Revocation<Fake, Fake, Fake, Fake, FakePacer>;

const REASON: &str = "key extracted from a returned unit (ticket 4711)";
const CA64: &str = "cacacacacacacacacacacacacacacacacacacacacacacacacacacacacacacaca";
const NOW: i64 = T0 + 3_600;

fn revocation(fake: &Fake) -> TestRevocation {
    Revocation::new(fake.clone(), fake.clone(), fake.clone(), fake.clone(), FakePacer::new())
}

fn csr(common_name: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("device key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.serialize_request(&key).expect("CSR").pem().expect("PEM")
}

fn issuer(fake: &Fake) -> CsrIssuer<Fake, Fake, Fake> {
    let settings = CsrIssuerSettings {
        cache_ttl: Duration::ZERO,
        ..CsrIssuerSettings::default()
    };
    CsrIssuer::new(fake.clone(), fake.clone(), fake.clone(), settings)
}

/// Device 0 (its record with a serial under a 64-hex CA, so that both kinds
/// of deny entry are made) in a CSR rotation whose new certificate is
/// issued (attached, ACTIVE, recorded); device 1 untouched. The call log is
/// cleared. Returns the fake, the old and the new certificate ids, the job.
async fn device_mid_rotation() -> (Fake, String, String, String) {
    let fake = Fake::new(Strategy::Csr, 2);
    let (thing, old) = (thing(0), old_id(&thing(0)));
    let rotator = Rotator::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        FakePacer::new(),
        RotatorSettings::default(),
    );
    rotator.run(T0).await.expect("rotator run");
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr(&thing),
    };
    let new = match issuer(&fake).handle(&thing, &old, &message, T0 + 60).await {
        Ok(CsrOutcome::Issued { new_certificate_id, .. }) => new_certificate_id,
        other => panic!("expected an issued certificate, got {other:?}"),
    };
    fake.with(|w| {
        let record = w.records.get_mut(&old).expect("old record");
        record.serial = Some("0A:BC".into());
        record.ca_certificate_id = CA64.into();
        w.connected.insert(thing.clone());
        w.connected.insert(crate::testing::rotation::thing(1));
        w.calls.clear();
    });
    (fake, old, new, job_id)
}

/// Everything a revocation changes, comparable across runs.
#[derive(Debug, PartialEq, Eq)]
struct EndState {
    certs: BTreeMap<String, (String, Option<String>, usize)>,
    records: BTreeMap<String, (&'static str, Option<String>)>,
    claims: BTreeMap<String, String>,
    held: Vec<String>,
    connected: Vec<String>,
    denied: Vec<String>,
    rotations: Vec<(String, &'static str, Option<&'static str>, Option<i64>)>,
    jobs: Vec<(String, String)>,
}

/// A certificate id as a label: the devices' own ids stay, a certificate
/// issued by a rotation (a fresh key each run) is `new`.
fn label(id: &str) -> String {
    let own = [old_id(&thing(0)), old_id(&thing(1))];
    if own.iter().any(|o| o == id) || !crate::model::event::is_certificate_id(id) {
        id.to_string()
    } else {
        "new".to_string()
    }
}

fn end_state(fake: &Fake) -> EndState {
    fake.with(|w| EndState {
        certs: w
            .certs
            .iter()
            .map(|(id, c)| {
                (
                    label(id),
                    (c.status.as_str().to_string(), c.thing.clone(), c.policies.len()),
                )
            })
            .collect(),
        records: w
            .records
            .iter()
            .map(|(id, r)| (label(id), (r.status.as_str(), r.detail.clone())))
            .collect(),
        claims: w.claims.clone(),
        held: w.held.iter().cloned().collect(),
        connected: w.connected.iter().cloned().collect(),
        denied: {
            let mut denied: Vec<String> = w.denied.iter().map(|d| label(d)).collect();
            denied.sort();
            denied
        },
        rotations: w
            .rotations
            .values()
            .map(|r| {
                (
                    r.old_certificate_id.clone(),
                    r.state.as_str(),
                    r.reason.map(FailureReason::code),
                    r.due_at,
                )
            })
            .collect(),
        jobs: w.jobs.iter().map(|(id, j)| (id.clone(), j.status.clone())).collect(),
    })
}

fn is_write(op: &str) -> bool {
    !matches!(
        op,
        "certificate" | "certificate_record" | "rotation" | "thing_principals" | "name_holder" | "policies"
    )
}

#[tokio::test]
async fn a_thing_is_cut_off_its_rotation_stopped_and_its_name_kept() {
    let (fake, old, new, job_id) = device_mid_rotation().await;
    let thing = thing(0);
    let report = revocation(&fake)
        .revoke(&RevocationTarget::Thing(thing.clone()), REASON, NOW)
        .await
        .expect("revoked");

    // Both certificates of the thing, the rotation's new one included.
    let ids: Vec<_> = report.certificates.iter().map(|c| c.certificate_id.clone()).collect();
    assert!(ids.contains(&old) && ids.contains(&new), "{report:?}");
    assert!(report.certificates.iter().all(|c| c.claimed_now));
    let end = end_state(&fake);
    for id in [old.clone(), label(&new)] {
        assert_eq!(end.certs[&id].0, "REVOKED", "{id}");
        assert_eq!(end.records[&id], ("REVOKED", Some(REASON.to_string())));
        assert!(end.denied.contains(&id), "fingerprint of {id} denied");
    }
    assert!(
        end.denied.contains(&format!("{CA64}#0abc")),
        "serial under its CA denied"
    );
    assert_eq!(
        report.deny_entries.len(),
        3,
        "two fingerprints, one serial: {:?}",
        report.deny_entries
    );
    // The old certificate keeps its attachments (retire removes them); the
    // rotation's clean-up detached the new one.
    assert_eq!(end.certs[&old], ("REVOKED".into(), Some(thing.clone()), 1));
    assert_eq!(end.certs[&label(&new)], ("REVOKED".into(), None, 0));
    // The rotation failed for good, its job canceled.
    let r = fake.with(|w| w.rotation_of(&thing));
    assert_eq!(
        (r.state, r.reason, r.due_at),
        (RotationState::Failed, Some(FailureReason::Revoked), None)
    );
    assert_eq!(fake.with(|w| w.jobs[&job_id].status.clone()), "CANCELED");
    assert_eq!(report.rotations.len(), 1);
    assert_eq!(report.rotations[0].state_after, RotationState::Failed);
    // The name stays with the revoked certificate, and no transfer moves it.
    assert_eq!(
        report.name,
        NameHold::Held {
            thing_name: thing.clone(),
            certificate_id: old.clone()
        }
    );
    let other = "f".repeat(64);
    assert!(!fake.transfer_thing_name(&thing, &old, &other).await.expect("transfer"));
    assert_eq!(fake.with(|w| w.claims[&thing].clone()), old);
    // Its open connection closed; the other device's stays.
    assert_eq!(report.disconnection, Disconnection::Closed);
    assert_eq!(end.connected, vec![crate::testing::rotation::thing(1)]);
    // The other device is untouched.
    let untouched = old_id(&crate::testing::rotation::thing(1));
    assert_eq!(end.certs[&untouched].0, "ACTIVE");
    assert_eq!(end.records[&untouched].0, "PROVISIONED");
}

#[tokio::test]
async fn the_certificates_go_revoked_right_after_their_claims() {
    let (fake, _, _, _) = device_mid_rotation().await;
    revocation(&fake)
        .revoke(&RevocationTarget::Thing(thing(0)), REASON, NOW)
        .await
        .expect("revoked");
    let calls = fake.with(|w| w.calls.clone());
    let first_write = calls.iter().position(|op| is_write(op)).expect("a write");
    let first_revoke = calls.iter().position(|op| *op == "set_status").expect("a set_status");
    assert_eq!(calls[first_write], "claim_revocation", "{calls:?}");
    assert!(
        calls[first_write..first_revoke]
            .iter()
            .all(|op| *op == "claim_revocation"),
        "nothing but the claims before REVOKED: {calls:?}"
    );
}

#[tokio::test]
async fn a_revoked_device_gets_no_new_certificate_and_its_rotation_never_completes() {
    let (fake, old, new, job_id) = device_mid_rotation().await;
    let thing = thing(0);
    revocation(&fake)
        .revoke(&RevocationTarget::Thing(thing.clone()), REASON, NOW)
        .await
        .expect("revoked");
    // The device (or the thief) confirms the new certificate anyway.
    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
    let completer = Completer::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        CompleterSettings {
            cache_ttl: Duration::ZERO,
            ..CompleterSettings::default()
        },
    );
    let event = JobExecutionEvent {
        job_id: job_id.clone(),
        thing_arn: format!("arn:aws:iot:eu-west-1:123456789012:thing/{thing}"),
        status: "SUCCEEDED".into(),
        status_details: BTreeMap::from([(
            crate::policy::rotation::protocol::CONFIRMATION_FIELD.to_string(),
            new.clone(),
        )]),
    };
    let _ = completer.handle(&event, NOW + 60).await;
    // A new CSR for the same job, and the rotator's next runs.
    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr(&thing),
    };
    let _ = issuer(&fake).handle(&thing, &old, &message, NOW + 120).await;
    let rotator = Rotator::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        FakePacer::new(),
        RotatorSettings::default(),
    );
    for day in 1..=10 {
        rotator.run(NOW + day * DAY).await.expect("rotator run");
    }
    let end = end_state(&fake);
    assert_eq!(end.certs[&old].0, "REVOKED");
    assert_eq!(end.certs[&label(&new)].0, "REVOKED");
    assert_eq!(
        end.certs
            .values()
            .filter(|c| c.1.as_deref() == Some(thing.as_str()))
            .count(),
        1,
        "no certificate besides the revoked one is attached: {:?}",
        end.certs
    );
    assert!(
        end.certs
            .values()
            .all(|c| c.0 != "ACTIVE" || c.1.as_deref() != Some(thing.as_str()))
    );
    let r = fake.with(|w| w.rotation_of(&thing));
    assert_eq!(
        (r.state, r.reason),
        (RotationState::Failed, Some(FailureReason::Revoked))
    );
    assert_eq!(end.records[&old].0, "REVOKED");
}

#[tokio::test]
async fn one_certificate_by_id_and_a_name_held_by_another_is_left_alone() {
    let fake = Fake::new(Strategy::Csr, 1);
    let thing = thing(0);
    let old = old_id(&thing);
    // A second ACTIVE certificate of the thing, holding the name.
    let other = "e".repeat(64);
    fake.with(|w| {
        let mut cert = w.cert(&old);
        cert.arn = arn(&other);
        w.certs.insert(other.clone(), cert);
        w.claims.insert(thing.clone(), other.clone());
    });
    let report = revocation(&fake)
        .revoke(&RevocationTarget::Certificate(old.clone()), REASON, NOW)
        .await
        .expect("revoked");
    assert_eq!(report.certificates.len(), 1);
    assert_eq!(report.thing_name.as_deref(), Some(thing.as_str()));
    assert_eq!(
        report.name,
        NameHold::HeldByOther {
            thing_name: thing.clone(),
            holder: other.clone()
        }
    );
    fake.with(|w| {
        assert_eq!(w.cert(&old).status, CertificateStatus::Revoked);
        assert_eq!(w.cert(&other).status, CertificateStatus::Active);
        assert!(w.held.is_empty());
        assert_eq!(w.denied.iter().cloned().collect::<Vec<_>>(), vec![old.clone()]);
    });
}

#[tokio::test]
async fn bad_input_is_refused_before_any_write() {
    let fake = Fake::new(Strategy::Csr, 1);
    let unknown_cert = "d".repeat(64);
    for (target, reason) in [
        (RevocationTarget::Thing("nobody".into()), REASON),
        (RevocationTarget::Certificate(unknown_cert.clone()), REASON),
        (RevocationTarget::Thing(thing(0)), "   "),
    ] {
        let e = revocation(&fake)
            .revoke(&target, reason, NOW)
            .await
            .expect_err("refused");
        assert!(e.is_input(), "{e}");
    }
    let calls = fake.with(|w| w.calls.clone());
    assert!(!calls.iter().any(|op| is_write(op)), "{calls:?}");
    assert!(matches!(
        RevocationTarget::parse(&"a".repeat(63)),
        Err(RevocationError::MalformedCertificateId(_))
    ));
    assert!(matches!(
        RevocationTarget::parse("bad name!"),
        Err(RevocationError::MalformedTarget(_))
    ));
    assert_eq!(
        RevocationTarget::parse(&"AB".repeat(32)).ok(),
        Some(RevocationTarget::Certificate("ab".repeat(32)))
    );
    assert_eq!(
        RevocationTarget::parse("dev-7").ok(),
        Some(RevocationTarget::Thing("dev-7".into()))
    );
    let long = "x".repeat(REASON_MAX + 1);
    assert!(matches!(
        revocation(&fake)
            .revoke(&RevocationTarget::Thing(thing(0)), &long, NOW)
            .await,
        Err(RevocationError::ReasonTooLong(_))
    ));
}

/// Revokes device 0 by thing name with one injected failure, then runs
/// again without; returns the end state and the reference run's calls.
async fn scenario(inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
    let (fake, _, _, _) = device_mid_rotation().await;
    fake.with(|w| w.inject = inject);
    let target = RevocationTarget::Thing(thing(0));
    let first = revocation(&fake).revoke(&target, REASON, NOW).await;
    let calls = fake.with(|w| w.calls.clone());
    if inject.is_none() {
        first.expect("the reference run succeeds");
    }
    fake.with(|w| w.inject = None);
    revocation(&fake)
        .revoke(&target, REASON, NOW + 5)
        .await
        .expect("the run after the failure converges");
    let end = end_state(&fake);
    // A third run finds everything done: it claims nothing anew.
    let third = revocation(&fake)
        .revoke(&target, REASON, NOW + 10)
        .await
        .expect("a third run");
    assert!(third.certificates.iter().all(|c| !c.claimed_now), "{third:?}");
    assert!(
        third
            .certificates
            .iter()
            .all(|c| c.previous_status.as_ref() == Some(&CertificateStatus::Revoked)),
        "{third:?}"
    );
    assert_eq!(end_state(&fake), end, "a finished revocation changes nothing");
    (end, calls)
}

#[tokio::test]
async fn a_revocation_interrupted_at_any_call_converges() {
    let (reference, calls) = scenario(None).await;
    assert!(calls.len() > 15, "{calls:?}");
    for (n, op) in calls.iter().enumerate() {
        for inject in [Inject::Before(n), Inject::After(n)] {
            let (end, _) = scenario(Some(inject)).await;
            assert_eq!(end, reference, "failure {inject:?} of {op}");
        }
    }
    // And the converged state is the one asked for.
    assert_eq!(reference.held, vec![thing(0)]);
    assert_eq!(reference.connected, vec![thing(1)]);
    assert!(
        reference
            .rotations
            .iter()
            .any(|r| r.1 == "FAILED" && r.2 == Some("REVOKED") && r.3.is_none())
    );
    assert_eq!(reference.jobs.iter().filter(|j| j.1 == "CANCELED").count(), 1);
}

#[tokio::test]
async fn a_refused_disconnect_is_reported_and_the_revocation_goes_on() {
    let (fake, old, _, _) = device_mid_rotation().await;
    fake.with(|w| w.disconnect_denied = true);
    let report = revocation(&fake)
        .revoke(&RevocationTarget::Thing(thing(0)), REASON, NOW)
        .await
        .expect("revoked");
    assert!(
        matches!(&report.disconnection, Disconnection::Refused(why) if why.contains("DeleteConnection")),
        "{report:?}"
    );
    let end = end_state(&fake);
    assert_eq!(end.certs[&old].0, "REVOKED");
    assert!(end.denied.contains(&old));
    assert_eq!(end.held, vec![thing(0)]);
    assert!(
        end.connected.contains(&thing(0)),
        "still connected: AWS closes it within minutes"
    );
}

/// A rotation the device already confirmed (its completion not yet run) is
/// ended for good too: claimed from `confirmed`, failed `REVOKED`, never due
/// again, so nothing completes it with a certificate the thief may hold.
#[tokio::test]
async fn a_confirmed_rotation_is_ended_for_good() {
    let (fake, old, new, job_id) = device_mid_rotation().await;
    let thing = thing(0);
    fake.with(|w| {
        let confirmed = w.rotation_of(&thing).confirmed(T0 + 120).expect("confirmable");
        w.rotations.insert(old.clone(), confirmed);
    });
    let report = revocation(&fake)
        .revoke(&RevocationTarget::Thing(thing.clone()), REASON, NOW)
        .await
        .expect("revoked");
    let r = fake.with(|w| w.rotation_of(&thing));
    assert_eq!(
        (r.state, r.reason, r.due_at),
        (RotationState::Failed, Some(FailureReason::Revoked), None)
    );
    assert_eq!(report.rotations.len(), 1, "{report:?}");
    assert_eq!(report.rotations[0].state_before, RotationState::Confirmed);
    assert_eq!(report.rotations[0].state_after, RotationState::Failed);
    let end = end_state(&fake);
    assert_eq!(
        end.certs[&label(&new)],
        ("REVOKED".into(), None, 0),
        "new one revoked, detached"
    );
    assert_eq!(end.certs[&old].0, "REVOKED");
    assert_eq!(fake.with(|w| w.jobs[&job_id].status.clone()), "CANCELED");
}
