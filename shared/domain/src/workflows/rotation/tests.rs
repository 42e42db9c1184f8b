//! The rotation workflows end to end, over the in-memory fake.

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::model::reason::RejectReason;
use crate::model::record::RecordStatus;
use crate::model::status::CertificateStatus;
use crate::policy::profile::DeviceProfile;
use crate::policy::rotation::protocol::{CONFIRMATION_FIELD, CsrMessage, JobDocument, JobExecution};
use crate::policy::rotation::state::{FailureReason, RotationState};
use crate::policy::rotation::{RotationPolicy, Strategy};

use onboarding_test_support::rcgen;

use crate::testing::rotation::*;
use crate::workflows::rotation::completer::*;
use crate::workflows::rotation::issuer::*;
use crate::workflows::rotation::ops::{
    DAY, DUE_CURSOR, EXPIRING_CURSOR, IgnoreReason, RotationError, credential_keys, rotation_allowed,
};
use crate::workflows::rotation::rotator::*;

// --- helpers --------------------------------------------------------------

type TestRotator = Rotator<Fake, Fake, Fake, Fake, FakePacer>;

fn rotator_with(fake: &Fake, settings: RotatorSettings) -> (TestRotator, FakePacer) {
    let pacer = FakePacer::new();
    let rotator = Rotator::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        pacer.clone(),
        settings,
    );
    (rotator, pacer)
}

fn rotator(fake: &Fake) -> TestRotator {
    rotator_with(fake, RotatorSettings::default()).0
}

/// The issuer, with the fake's fleet CA for `kmsCa` profiles (the fake
/// allows no key until [`Fake::enable_kms_ca`]).
fn issuer(fake: &Fake) -> CsrIssuer<Fake, Fake, Fake, Fake> {
    let settings = CsrIssuerSettings {
        cache_ttl: Duration::ZERO,
        ..CsrIssuerSettings::default()
    };
    CsrIssuer::new(fake.clone(), fake.clone(), fake.clone(), settings).with_own_ca(fake.clone())
}

fn completer(fake: &Fake) -> Completer<Fake, Fake, Fake, Fake> {
    let settings = CompleterSettings {
        cache_ttl: Duration::ZERO,
        ..CompleterSettings::default()
    };
    Completer::new(fake.clone(), fake.clone(), fake.clone(), fake.clone(), settings)
}

/// A CSR from a fresh P-256 key.
fn csr(common_name: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("device key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.serialize_request(&key).expect("CSR").pem().expect("PEM")
}

fn event(job_id: &str, thing: &str, status: &str, confirmed: Option<&str>) -> JobExecutionEvent {
    JobExecutionEvent {
        job_id: job_id.into(),
        thing_arn: format!("arn:aws:iot:eu-west-1:123456789012:thing/{thing}"),
        status: status.into(),
        status_details: confirmed
            .map(|c| BTreeMap::from([(CONFIRMATION_FIELD.to_string(), c.to_string())]))
            .unwrap_or_default(),
    }
}

async fn run(rotator: &TestRotator, now: i64) -> RunReport {
    rotator.run(now).await.unwrap_or_else(|e| panic!("rotator run: {e}"))
}

/// Runs the rotator until a run has no error (at most five runs).
async fn run_until_clean(rotator: &TestRotator, now: i64) -> RunReport {
    for _ in 0..5 {
        if let Ok(report) = rotator.run(now).await
            && report.errors == 0
            && !report.interrupted
        {
            return report;
        }
    }
    panic!("the rotator did not converge");
}

/// Retries a handler until it succeeds (at most five tries), as Lambda
/// retries a failed asynchronous invocation.
async fn retry<X, F, Fut>(mut handler: F) -> X
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<X, RotationError>>,
{
    for _ in 0..5 {
        if let Ok(x) = handler().await {
            return x;
        }
    }
    panic!("the handler did not converge");
}

fn expect_issued(outcome: CsrOutcome) -> String {
    match outcome {
        CsrOutcome::Issued { new_certificate_id, .. } => new_certificate_id,
        other => panic!("expected an issued certificate, got {other:?}"),
    }
}

// --- end to end -----------------------------------------------------------

#[tokio::test]
async fn csr_rotation_end_to_end() {
    let fake = Fake::new(Strategy::Csr, 1);
    let (rotator, issuer, completer) = (rotator(&fake), issuer(&fake), completer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));

    let report = run(&rotator, T0).await;
    assert_eq!((report.examined, report.started), (1, 1), "{report:?}");
    let (job_id, job) = fake.with(|w| w.current_job(&thing));
    let r = fake.with(|w| w.rotation_of(&thing));
    assert_eq!(
        (r.state, r.attempt, r.job_id.as_str()),
        (RotationState::Requested, 1, job_id.as_str())
    );
    assert_eq!(
        r.due_at,
        Some(RotationPolicy::default().job_deadline(T0)),
        "started: due at the deadline"
    );
    assert_eq!(job.document, JobDocument::csr(&r));

    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr(&thing),
    };
    let outcome = issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued");
    let new = expect_issued(outcome);
    fake.with(|w| {
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.new_certificate_id.as_deref()),
            (RotationState::Delivered, Some(new.as_str()))
        );
        let cert = w.cert(&new);
        assert_eq!(cert.status, CertificateStatus::Active);
        assert_eq!(cert.thing.as_deref(), Some(thing.as_str()));
        assert!(cert.policies.contains(POLICY));
        let record = w.records.get(&new).expect("new record");
        assert_eq!(
            (record.status, record.thing_name.as_deref(), record.profile.as_deref()),
            (RecordStatus::Provisioned, Some(thing.as_str()), Some(PROFILE))
        );
        assert_eq!(record.ca_certificate_id, CA);
        assert_eq!(
            record.not_after,
            Some(rcgen::date_time_ymd(2031, 1, 1).unix_timestamp())
        );
        let answers = w.answers(&thing);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0]["status"], "ISSUED");
        assert_eq!(answers[0]["certificateId"], new.as_str());
        assert_eq!(w.cert(&old).status, CertificateStatus::Active, "old untouched so far");
    });

    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
    let outcome = completer
        .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 120)
        .await
        .expect("completed");
    assert_eq!(
        outcome,
        CompletionOutcome::Completed {
            thing_name: thing.clone(),
            old_certificate_id: old.clone(),
            new_certificate_id: new.clone(),
        }
    );
    fake.with(|w| {
        let old_cert = w.cert(&old);
        assert_eq!(old_cert.status, CertificateStatus::Inactive);
        assert_eq!(old_cert.thing, None);
        assert!(old_cert.policies.is_empty());
        assert_eq!(w.claims.get(&thing), Some(&new));
        assert_eq!(w.records.get(&old).map(|r| r.status), Some(RecordStatus::Rotated));
        let r = w.rotation_of(&thing);
        assert_eq!(r.state, RotationState::Retired);
        assert_eq!(r.due_at, Some(T0 + 120 + 7 * DAY));
    });
    let duplicate = completer
        .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 130)
        .await
        .expect("duplicate");
    assert_eq!(duplicate.label(), "duplicate");

    let report = run(&rotator, T0 + DAY).await;
    assert_eq!(
        (report.deleted, report.started),
        (0, 0),
        "not before the grace period: {report:?}"
    );
    let report = run(&rotator, T0 + 120 + 7 * DAY).await;
    assert_eq!(report.deleted, 1, "{report:?}");
    fake.with(|w| {
        assert!(!w.certs.contains_key(&old), "old certificate deleted");
        let r = w.rotation_of(&thing);
        assert_eq!((r.old_deleted_at, r.due_at), (Some(T0 + 120 + 7 * DAY), None));
    });
    let report = run(&rotator, T0 + 9 * DAY).await;
    assert_eq!(report, RunReport::default(), "nothing left to do");
}

#[tokio::test]
async fn server_keygen_rotation_end_to_end() {
    let fake = Fake::new(Strategy::ServerKeygen, 1);
    let (rotator, completer) = (rotator(&fake), completer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));

    let report = run(&rotator, T0).await;
    assert_eq!(report.started, 1, "{report:?}");
    let (job_id, job) = fake.with(|w| w.current_job(&thing));
    let instructions = job.document.server_keygen.clone().expect("server-keygen instructions");
    let new = instructions.new_certificate_id.clone();
    let (certificate_key, private_key_key) = credential_keys(&thing, &new);
    assert_eq!(
        certificate_key,
        format!("rotation/{thing}/{new}/certificate.pem"),
        "documented key layout"
    );
    assert_eq!(
        instructions.private_key_url,
        format!("${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{BUCKET}/{private_key_key}}}")
    );
    fake.with(|w| {
        assert!(w.objects.contains_key(&certificate_key) && w.objects.contains_key(&private_key_key));
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.new_certificate_id.as_deref()),
            (RotationState::Issued, Some(new.as_str()))
        );
        assert_eq!(r.object_keys, vec![certificate_key.clone(), private_key_key.clone()]);
        let cert = w.cert(&new);
        assert_eq!(
            (cert.status, cert.thing.as_deref()),
            (CertificateStatus::Active, Some(thing.as_str()))
        );
        assert!(cert.policies.contains(POLICY));
        assert_eq!(w.records.get(&new).map(|r| r.status), Some(RecordStatus::Provisioned));
    });

    fake.with(|w| w.set_job(&job_id, "IN_PROGRESS", None));
    let outcome = completer
        .handle(&event(&job_id, &thing, "IN_PROGRESS", None), T0 + 60)
        .await
        .expect("delivered");
    assert_eq!(
        outcome,
        CompletionOutcome::Delivered {
            thing_name: thing.clone()
        }
    );

    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
    let outcome = completer
        .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 120)
        .await
        .expect("completed");
    assert_eq!(outcome.label(), "completed");
    fake.with(|w| {
        assert!(
            w.objects.is_empty(),
            "the private key is deleted once the device confirms"
        );
        assert_eq!(w.cert(&old).status, CertificateStatus::Inactive);
        assert_eq!(w.claims.get(&thing), Some(&new));
    });

    let report = run(&rotator, T0 + 120 + 7 * DAY).await;
    assert_eq!(report.deleted, 1, "{report:?}");
    assert!(fake.with(|w| !w.certs.contains_key(&old)));
}

#[tokio::test]
async fn a_second_run_during_an_open_rotation_starts_nothing() {
    let fake = Fake::new(Strategy::Csr, 1);
    let rotator = rotator(&fake);
    assert_eq!(run(&rotator, T0).await.started, 1);
    let report = run(&rotator, T0 + 600).await;
    assert_eq!((report.started, report.skipped_open), (0, 1), "{report:?}");
    assert_eq!(fake.with(|w| w.jobs.len()), 1);
}

#[tokio::test]
async fn the_deadline_fails_the_attempt_and_a_retry_starts_attempt_two() {
    let fake = Fake::new(Strategy::Csr, 1);
    let (rotator, issuer) = (rotator(&fake), issuer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));
    let policy = RotationPolicy::default();
    run(&rotator, T0).await;
    let (job_1, _) = fake.with(|w| w.current_job(&thing));
    let message = CsrMessage {
        job_id: job_1.clone(),
        csr: csr(&thing),
    };
    let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
    // The device took its job up at once, then goes silent.
    fake.with(|w| w.take_up_jobs(T0));
    let deadline = policy.job_deadline(T0);
    let report = run(&rotator, deadline - 1).await;
    assert_eq!((report.followed_up, report.failed), (0, 0), "not yet: {report:?}");

    let report = run(&rotator, deadline).await;
    assert_eq!(
        (report.followed_up, report.failed, report.gave_up),
        (1, 1, 0),
        "{report:?}"
    );
    let retry_at = policy.retry_at(deadline, 1).expect("attempts left");
    fake.with(|w| {
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.reason, r.due_at),
            (RotationState::Failed, Some(FailureReason::JobTimedOut), Some(retry_at))
        );
        let old_cert = w.cert(&old);
        assert_eq!(old_cert.status, CertificateStatus::Active, "old certificate untouched");
        assert_eq!(old_cert.thing.as_deref(), Some(thing.as_str()));
        assert!(old_cert.policies.contains(POLICY));
        assert_eq!(w.claims.get(&thing), Some(&old));
        let new_cert = w.cert(&new);
        assert_eq!(new_cert.status, CertificateStatus::Revoked);
        assert_eq!(new_cert.thing, None);
        assert!(new_cert.policies.is_empty());
        assert_eq!(w.jobs[&job_1].status, "CANCELED");
    });

    let report = run(&rotator, retry_at - 1).await;
    assert_eq!(report.retried, 0, "{report:?}");
    let report = run(&rotator, retry_at).await;
    assert_eq!(report.retried, 1, "{report:?}");
    let (job_2, _) = fake.with(|w| w.current_job(&thing));
    assert_ne!(job_2, job_1);
    assert!(job_2.ends_with("-2"), "{job_2}");
    fake.with(|w| {
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.attempt, r.new_certificate_id.clone()),
            (RotationState::Requested, 2, None)
        );
        assert_eq!(r.due_at, Some(policy.job_deadline(retry_at)));
    });
    // The second attempt goes through.
    let message = CsrMessage {
        job_id: job_2.clone(),
        csr: csr(&thing),
    };
    let new = expect_issued(
        issuer
            .handle(&thing, &old, &message, retry_at + 60)
            .await
            .expect("issued"),
    );
    fake.with(|w| w.set_job(&job_2, "SUCCEEDED", Some(&new)));
    let outcome = completer(&fake)
        .handle(&event(&job_2, &thing, "SUCCEEDED", Some(&new)), retry_at + 120)
        .await
        .expect("completed");
    assert_eq!(outcome.label(), "completed");
    // A late event of the first attempt changes nothing.
    let late = completer(&fake)
        .handle(&event(&job_1, &thing, "CANCELED", None), retry_at + 130)
        .await
        .expect("ignored");
    assert_eq!(
        late,
        CompletionOutcome::Ignored {
            reason: IgnoreReason::UnknownJob
        }
    );
}

#[tokio::test]
async fn no_retry_after_the_last_attempt() {
    let fake = Fake::new(Strategy::Csr, 1);
    let mut p = profile(Strategy::Csr);
    p.rotation.max_attempts = 2;
    let policy = p.rotation.clone();
    fake.with(|w| w.set_profile(p));
    let rotator = rotator(&fake);
    let thing = thing(0);

    run(&rotator, T0).await;
    // The device takes each job up at once and never answers.
    fake.with(|w| w.take_up_jobs(T0));
    let deadline_1 = policy.job_deadline(T0);
    assert_eq!(run(&rotator, deadline_1).await.failed, 1);
    let retry_at = policy.retry_at(deadline_1, 1).expect("a second attempt");
    assert_eq!(run(&rotator, retry_at).await.retried, 1);
    fake.with(|w| w.take_up_jobs(retry_at));
    let deadline_2 = policy.job_deadline(retry_at);
    let report = run(&rotator, deadline_2).await;
    assert_eq!((report.failed, report.gave_up), (1, 1), "{report:?}");
    fake.with(|w| {
        let r = w.rotation_of(&thing);
        assert_eq!((r.state, r.attempt, r.due_at), (RotationState::Failed, 2, None));
    });
    for later in [deadline_2 + DAY, deadline_2 + 10 * DAY] {
        let report = run(&rotator, later).await;
        assert_eq!(
            (report.retried, report.started, report.skipped_open),
            (0, 0, 1),
            "{report:?}"
        );
    }
    assert_eq!(fake.with(|w| w.jobs.len()), 2, "no third job");
    assert_eq!(fake.with(|w| w.cert(&old_id(&thing)).status), CertificateStatus::Active);
}

#[tokio::test]
async fn a_csr_naming_another_thing_is_refused_and_fails_the_attempt() {
    let fake = Fake::new(Strategy::Csr, 2);
    let (rotator, issuer) = (rotator(&fake), issuer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));
    assert_eq!(run(&rotator, T0).await.started, 2);
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let certificates_before = fake.with(|w| w.certs.len());

    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr("dev-1"),
    };
    let outcome = issuer.handle(&thing, &old, &message, T0 + 60).await.expect("refused");
    let CsrOutcome::Refused { rejection, .. } = outcome else {
        panic!("expected a refusal, got {outcome:?}");
    };
    assert_eq!(rejection.reason.code(), "IDENTITY_COLLISION");
    fake.with(|w| {
        let answers = w.answers(&thing);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0]["status"], "REFUSED");
        assert_eq!(answers[0]["reasonCode"], "IDENTITY_COLLISION");
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.reason),
            (RotationState::Failed, Some(FailureReason::CsrRefused))
        );
        assert!(r.due_at.is_some(), "retried later");
        assert_eq!(w.jobs[&job_id].status, "CANCELED");
        assert_eq!(w.certs.len(), certificates_before, "no certificate made");
        assert_eq!(w.cert(&old).status, CertificateStatus::Active);
        assert_eq!(
            w.rotation_of("dev-1").state,
            RotationState::Requested,
            "the other thing's rotation untouched"
        );
    });
    // The canceled job's event is the fail path's own doing: no second alarm.
    let outcome = completer(&fake)
        .handle(&event(&job_id, &thing, "CANCELED", None), T0 + 70)
        .await
        .expect("duplicate");
    assert!(!outcome.is_alarm(), "{outcome:?}");
}

#[tokio::test]
async fn the_issuer_acts_only_on_the_things_own_rotation() {
    let fake = Fake::new(Strategy::Csr, 2);
    let (rotator, issuer) = (rotator(&fake), issuer(&fake));
    run(&rotator, T0).await;
    let (job_0, _) = fake.with(|w| w.current_job("dev-0"));
    let old_0 = old_id("dev-0");
    let pem = csr("dev-0");
    let message = CsrMessage {
        job_id: job_0.clone(),
        csr: pem.clone(),
    };
    let ignored = |reason| CsrOutcome::Ignored { reason };

    // dev-1 publishing (on its own topic) dev-0's job.
    let outcome = issuer.handle("dev-1", &old_id("dev-1"), &message, T0 + 10).await;
    assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::OtherThing));
    // dev-0's topic, another certificate.
    let outcome = issuer.handle("dev-0", &old_id("dev-1"), &message, T0 + 10).await;
    assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::NotOurPrincipal));
    let unknown = CsrMessage {
        job_id: "rotate-nope-1".into(),
        csr: pem.clone(),
    };
    let outcome = issuer.handle("dev-0", &old_0, &unknown, T0 + 10).await;
    assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::UnknownJob));
    assert_eq!(fake.with(|w| w.rotation_of("dev-0").state), RotationState::Requested);

    // Asked twice with the same key (by the old, then the new
    // certificate): the same certificate, made once.
    let new = expect_issued(issuer.handle("dev-0", &old_0, &message, T0 + 20).await.expect("issued"));
    let certificates = fake.with(|w| w.certs.len());
    let again = issuer.handle("dev-0", &new, &message, T0 + 30).await.expect("resent");
    assert_eq!(
        again,
        CsrOutcome::Issued {
            thing_name: "dev-0".into(),
            new_certificate_id: new.clone(),
            resent: true
        }
    );
    assert_eq!(fake.with(|w| w.certs.len()), certificates);
    assert_eq!(fake.with(|w| w.answers("dev-0").len()), 2);
    // Another key: not this certificate.
    let other_key = CsrMessage {
        job_id: job_0,
        csr: csr("dev-0"),
    };
    let outcome = issuer.handle("dev-0", &old_0, &other_key, T0 + 40).await;
    assert_eq!(outcome.expect("ignored"), ignored(IgnoreReason::KeyMismatch));
    assert_eq!(fake.with(|w| w.rotation_of("dev-0").state), RotationState::Delivered);
}

#[tokio::test]
async fn a_confirmation_naming_another_certificate_fails_the_attempt() {
    let fake = Fake::new(Strategy::Csr, 1);
    let (rotator, issuer, completer) = (rotator(&fake), issuer(&fake), completer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));
    run(&rotator, T0).await;
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr(&thing),
    };
    let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
    let other = "f".repeat(64);
    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&other)));
    let outcome = completer
        .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&other)), T0 + 120)
        .await
        .expect("failed");
    assert!(outcome.is_alarm());
    let CompletionOutcome::Failed { reason, retry_at, .. } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(reason, FailureReason::WrongConfirmation);
    assert!(retry_at.is_some());
    fake.with(|w| {
        assert_eq!(w.cert(&old).status, CertificateStatus::Active);
        assert_eq!(w.cert(&old).thing.as_deref(), Some(thing.as_str()));
        assert_eq!(w.claims.get(&thing), Some(&old));
        assert_eq!(w.cert(&new).status, CertificateStatus::Revoked);
        assert_eq!(w.cert(&new).thing, None);
        assert_eq!(w.records.get(&old).map(|r| r.status), Some(RecordStatus::Provisioned));
    });
}

#[tokio::test]
async fn a_failed_job_event_fails_the_attempt_once() {
    let fake = Fake::new(Strategy::ServerKeygen, 1);
    let (rotator, completer) = (rotator(&fake), completer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));
    run(&rotator, T0).await;
    let (job_id, job) = fake.with(|w| w.current_job(&thing));
    let new = job.document.server_keygen.expect("instructions").new_certificate_id;
    fake.with(|w| w.set_job(&job_id, "REJECTED", None));
    let outcome = completer
        .handle(&event(&job_id, &thing, "REJECTED", None), T0 + 60)
        .await
        .expect("failed");
    assert!(
        matches!(
            outcome,
            CompletionOutcome::Failed {
                reason: FailureReason::JobRejected,
                ..
            }
        ),
        "{outcome:?}"
    );
    fake.with(|w| {
        assert!(w.objects.is_empty(), "credentials deleted");
        assert_eq!(w.cert(&new).status, CertificateStatus::Revoked);
        assert_eq!(w.cert(&old).status, CertificateStatus::Active);
    });
    let again = completer
        .handle(&event(&job_id, &thing, "REJECTED", None), T0 + 70)
        .await
        .expect("duplicate");
    assert_eq!(
        again,
        CompletionOutcome::Duplicate {
            thing_name: thing,
            state: RotationState::Failed
        }
    );
    let other = completer
        .handle(&event("ota-update-7", "dev-0", "SUCCEEDED", None), T0 + 80)
        .await
        .expect("ignored");
    assert_eq!(
        other,
        CompletionOutcome::Ignored {
            reason: IgnoreReason::UnknownJob
        }
    );
}

#[tokio::test]
async fn a_lost_success_event_is_found_at_the_deadline() {
    let fake = Fake::new(Strategy::Csr, 1);
    let (rotator, issuer) = (rotator(&fake), issuer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));
    run(&rotator, T0).await;
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr(&thing),
    };
    let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
    // The device confirms; the event never reaches the completer.
    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
    let deadline = RotationPolicy::default().job_deadline(T0);
    let report = run(&rotator, deadline).await;
    assert_eq!((report.completed, report.failed), (1, 0), "{report:?}");
    fake.with(|w| {
        assert_eq!(w.rotation_of(&thing).state, RotationState::Retired);
        assert_eq!(w.cert(&old).status, CertificateStatus::Inactive);
        assert_eq!(w.claims.get(&thing), Some(&new));
    });
}

#[tokio::test]
async fn a_confirmation_before_the_rotator_recorded_issued_completes() {
    // The rotator stops right before recording `issued` (its third write
    // of the rotation), after the job is out.
    let probe = Fake::new(Strategy::ServerKeygen, 1);
    run(&rotator(&probe), T0).await;
    let calls = probe.with(|w| w.calls.clone());
    let third_put = calls
        .iter()
        .enumerate()
        .filter(|(_, op)| **op == "put_rotation")
        .nth(2)
        .map(|(n, _)| n)
        .expect("three writes");
    assert_eq!(calls[third_put - 1], "create_job");

    let fake = Fake::new(Strategy::ServerKeygen, 1);
    fake.with(|w| w.inject = Some(Inject::Before(third_put)));
    let report = run(&rotator(&fake), T0).await;
    assert_eq!(report.errors, 1, "{report:?}");
    let thing = thing(0);
    let (job_id, job) = fake.with(|w| w.current_job(&thing));
    assert_eq!(fake.with(|w| w.rotation_of(&thing).state), RotationState::Requested);
    let new = job.document.server_keygen.expect("instructions").new_certificate_id;
    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
    let outcome = completer(&fake)
        .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 60)
        .await
        .expect("completed");
    assert_eq!(outcome.label(), "completed", "{outcome:?}");
    fake.with(|w| {
        let r = w.rotation_of(&thing);
        assert_eq!((r.state, r.issued_at), (RotationState::Retired, Some(T0 + 60)));
        assert!(w.objects.is_empty());
    });
}

// --- bounded work -----------------------------------------------------------

#[tokio::test]
async fn four_runs_of_three_start_ten_and_resume_from_the_cursor() {
    let fake = Fake::new(Strategy::Csr, 10);
    let settings = RotatorSettings {
        max_new_per_run: 3,
        ..RotatorSettings::default()
    };
    let (rotator, _) = rotator_with(&fake, settings);
    let mut started = Vec::new();
    for (i, expected) in [3, 3, 3, 1].into_iter().enumerate() {
        let report = run(&rotator, T0 + 60 * i as i64).await;
        assert_eq!(
            (report.started, report.examined),
            (expected, expected),
            "run {i}: {report:?}"
        );
        assert_eq!(report.skipped_open, 0, "run {i} did not look again at started ones");
        assert_eq!(report.budget_exhausted, i < 3, "run {i}");
        let cursor = fake.with(|w| w.cursors.get(EXPIRING_CURSOR).cloned());
        assert_eq!(cursor.is_some(), i < 3, "run {i}: a finished pass clears the cursor");
        started.push(fake.with(|w| w.rotations.len()));
    }
    assert_eq!(started, vec![3, 6, 9, 10]);
    // Oldest first: run one took the three closest to expiry.
    fake.with(|w| {
        for i in 0..10 {
            assert_eq!(w.rotation_of(&thing(i)).requested_at, T0 + 60 * (i as i64 / 3));
        }
    });
}

#[tokio::test]
async fn create_job_calls_are_paced() {
    let fake = Fake::new(Strategy::Csr, 3);
    let settings = RotatorSettings {
        create_job_interval: Duration::from_millis(250),
        ..RotatorSettings::default()
    };
    let (rotator, pacer) = rotator_with(&fake, settings);
    assert_eq!(run(&rotator, T0).await.started, 3);
    assert_eq!(pacer.sleeps(), vec![Duration::from_millis(250); 2]);
}

#[tokio::test]
async fn follow_ups_are_bounded_too() {
    let fake = Fake::new(Strategy::Csr, 5);
    let settings = RotatorSettings {
        max_follow_ups_per_run: 2,
        page_size: 1,
        ..RotatorSettings::default()
    };
    let (rotator, _) = rotator_with(&fake, settings);
    assert_eq!(run(&rotator, T0).await.started, 5);
    fake.with(|w| w.take_up_jobs(T0));
    let deadline = RotationPolicy::default().job_deadline(T0);
    for (i, expected) in [2, 2, 1].into_iter().enumerate() {
        let report = run(&rotator, deadline + i as i64).await;
        assert_eq!(
            (report.followed_up, report.failed),
            (expected, expected),
            "run {i}: {report:?}"
        );
        assert_eq!(report.budget_exhausted, i < 2, "run {i}");
    }
    assert_eq!(fake.with(|w| w.cursors.get(DUE_CURSOR).cloned()), None);
    let failed = fake.with(|w| {
        w.rotations
            .values()
            .filter(|r| r.state == RotationState::Failed)
            .count()
    });
    assert_eq!(failed, 5);
}

// --- a cohort spread over its window ------------------------------------------

#[test]
fn the_latest_start_leaves_room_for_every_attempt() {
    let policy = RotationPolicy::default();
    let not_after = T0 + 40 * DAY;
    // 14 days queued, retries after 24 h and 48 h, three jobs of 61 minutes.
    let reserve = 14 * DAY + 72 * 3_600 + 3 * 61 * 60;
    assert_eq!(latest_start(&policy, not_after), not_after - reserve);
    // A window shorter than the reserve: start as soon as it opens.
    let short = RotationPolicy {
        window_days: 10,
        ..policy
    };
    assert_eq!(latest_start(&short, not_after), not_after - 10 * DAY);
}

#[test]
fn the_runs_before_the_latest_start_share_the_cohort() {
    let daily = Duration::from_secs(DAY as u64);
    assert_eq!(needed_per_run(Vec::new(), T0, daily), 0);
    // 300 due by the same time ten days ahead: eleven daily runs, this one included.
    assert_eq!(needed_per_run(vec![T0 + 10 * DAY; 300], T0, daily), 28);
    // Hourly runs share it over 241.
    assert_eq!(
        needed_per_run(vec![T0 + 10 * DAY; 300], T0, Duration::from_secs(3_600)),
        2
    );
    // Past their latest start: all of them now.
    assert_eq!(needed_per_run(vec![T0 - DAY; 7], T0, daily), 7);
    // Earliest first: 10 due within a day (two runs) and 100 more within
    // nine days (ten runs): 11 a run, not the 5 the first ten need alone.
    let mut mixed = vec![T0 + 9 * DAY; 100];
    mixed.extend([T0 + DAY; 10]);
    assert_eq!(needed_per_run(mixed, T0, daily), 11);
}

fn spreading(max_new_per_run: u32) -> RotatorSettings {
    RotatorSettings {
        max_new_per_run,
        run_interval: Some(Duration::from_secs(DAY as u64)),
        ..RotatorSettings::default()
    }
}

#[tokio::test]
async fn a_cohort_larger_than_the_budget_is_spread_over_the_runs_before_its_latest_start() {
    // 30 certificates expiring within a minute of T0 + 20 days: their latest
    // start is T0 + 2.87 days, three daily runs from T0.
    let fake = Fake::new(Strategy::Csr, 30);
    let latest = latest_start(&RotationPolicy::default(), T0 + 20 * DAY);
    assert!((T0 + 2 * DAY..T0 + 3 * DAY).contains(&latest));
    let (rotator, _) = rotator_with(&fake, spreading(1));
    let first = run(&rotator, T0).await;
    assert_eq!(
        (first.in_window, first.budget, first.started, first.behind),
        (30, 10, 10, false),
        "a third of the cohort in the first of three runs, not the budget of 1: {first:?}"
    );
    let mut started = first.started;
    for day in 1..3 {
        let report = run(&rotator, T0 + day * DAY).await;
        assert!(report.budget >= 10, "day {day}: {report:?}");
        started += report.started;
    }
    assert_eq!(started, 30, "every certificate started by its latest start");
    assert_eq!(fake.with(|w| w.rotations.len()), 30);

    // Without a run interval, the fixed budget: one a run.
    let fixed = Fake::new(Strategy::Csr, 30);
    let report = run(
        &rotator_with(
            &fixed,
            RotatorSettings {
                max_new_per_run: 1,
                ..RotatorSettings::default()
            },
        )
        .0,
        T0,
    )
    .await;
    assert_eq!((report.started, report.budget, report.in_window), (1, 0, 0));
}

#[tokio::test]
async fn a_small_cohort_still_starts_within_the_fixed_budget() {
    let fake = Fake::new(Strategy::Csr, 5);
    let (rotator, _) = rotator_with(&fake, spreading(100));
    let report = run(&rotator, T0).await;
    assert_eq!(
        (report.in_window, report.budget, report.started),
        (5, 100, 5),
        "{report:?}"
    );
}

#[tokio::test]
async fn the_budget_is_capped_by_the_run_time_and_a_run_behind_says_so() {
    let fake = Fake::new(Strategy::Csr, 30);
    let settings = RotatorSettings {
        create_job_interval: Duration::from_millis(200),
        follow_up_interval: Duration::from_millis(50),
        // Four paced starts and four follow-ups fit.
        max_run_time: Some(Duration::from_secs(1)),
        ..spreading(1)
    };
    let (rotator, pacer) = rotator_with(&fake, settings);
    let report = run(&rotator, T0).await;
    assert_eq!(
        (report.budget, report.started, report.behind, report.budget_exhausted),
        (4, 4, true, true),
        "{report:?}"
    );
    assert!(pacer.sleeps().iter().sum::<Duration>() < Duration::from_secs(1));
}

#[tokio::test]
async fn with_a_run_interval_follow_ups_are_bounded_by_the_run_time_alone() {
    let fake = Fake::new(Strategy::Csr, 5);
    let settings = RotatorSettings {
        max_follow_ups_per_run: 1,
        max_run_time: Some(Duration::from_secs(60)),
        ..spreading(5)
    };
    let (rotator, _) = rotator_with(&fake, settings);
    assert_eq!(run(&rotator, T0).await.started, 5);
    fake.with(|w| w.take_up_jobs(T0));
    let deadline = RotationPolicy::default().job_deadline(T0);
    let report = run(&rotator, deadline).await;
    assert_eq!(
        (report.followed_up, report.failed, report.budget_exhausted),
        (5, 5, false),
        "every due rotation in one run, not one: {report:?}"
    );
}

#[tokio::test]
async fn a_run_out_of_time_stops_and_the_cursor_resumes() {
    let fake = Fake::new(Strategy::Csr, 6);
    let settings = RotatorSettings {
        create_job_interval: Duration::from_millis(400),
        follow_up_interval: Duration::ZERO,
        max_run_time: Some(Duration::from_millis(700)),
        page_size: 1,
        ..RotatorSettings::default()
    };
    let (rotator, _) = rotator_with(&fake, settings);
    // 0, 400 and 800 ms: the third start is the last one begun in time.
    let report = run(&rotator, T0).await;
    assert_eq!((report.started, report.budget_exhausted), (3, true), "{report:?}");
    // The next run's first start waits for the pace after the previous
    // run's last (the fake clock does not move between runs).
    let next = run(&rotator, T0 + 60).await;
    assert_eq!(next.started, 2, "the next run goes on from the cursor: {next:?}");
    assert_eq!(run(&rotator, T0 + 120).await.started, 1);
    assert_eq!(fake.with(|w| w.rotations.len()), 6);
}

#[tokio::test]
async fn certificates_outside_their_window_of_a_gone_profile_or_not_active_are_skipped() {
    let fake = Fake::new(Strategy::Csr, 4);
    let mut short = DeviceProfile::minimal("short-window", POLICY);
    short.rotation.window_days = 10;
    fake.with(|w| {
        w.config.add_profile(short.name.clone(), Ok(short));
        w.config.bind("ca-2".into(), "short-window".into());
        w.records.get_mut(&old_id("dev-0")).expect("record").profile = Some("retired-profile".into());
        // Expires in 20 days; its profile rotates 10 days ahead.
        w.records.get_mut(&old_id("dev-1")).expect("record").profile = Some("short-window".into());
        w.certs.get_mut(&old_id("dev-2")).expect("certificate").status = CertificateStatus::Revoked;
    });
    let rotator = rotator(&fake);
    let report = run(&rotator, T0).await;
    assert_eq!(
        (
            report.examined,
            report.started,
            report.skipped_no_profile,
            report.skipped_not_due,
            report.skipped_inactive
        ),
        (4, 1, 1, 1, 1),
        "{report:?}"
    );
    assert_eq!(fake.with(|w| w.rotation_of("dev-3").attempt), 1);
    let report = run(&rotator, T0 + 10 * DAY + 1).await;
    assert_eq!(report.started, 1, "dev-1 entered its window: {report:?}");
    assert_eq!(fake.with(|w| w.rotation_of("dev-1").profile.clone()), "short-window");
    assert_eq!(fake.with(|w| w.rotations.len()), 2);
}

// --- crash safety -----------------------------------------------------------

/// A recorded new certificate: status, thing, policies, record status,
/// and whether it is the current attempt's.
type NewCertificate = (String, Option<String>, Vec<String>, &'static str, bool);

/// How a scenario ends, with certificate ids abstracted.
#[derive(Debug, PartialEq, Eq)]
struct EndState {
    rotation: (RotationState, u32, [Option<i64>; 7], Option<FailureReason>),
    old_certificate: Option<(String, Option<String>, usize)>,
    /// Every certificate a rotation recorded (status, thing, policies,
    /// record status, current attempt's), sorted.
    new_certificates: Vec<NewCertificate>,
    claim: &'static str,
    old_record: Option<RecordStatus>,
    jobs: Vec<(String, String)>,
    /// Objects of the current attempt's certificate.
    objects: usize,
    /// Certificates made by an interrupted step and never recorded (and
    /// their objects) are unusable: not ACTIVE, attached to nothing.
    strays_unusable: bool,
}

fn end_state(fake: &Fake, thing: &str) -> EndState {
    fake.with(|w| {
        let r = w.rotation_of(thing);
        let old = r.old_certificate_id.clone();
        let current = r.new_certificate_id.clone();
        let is_current = |id: &str| current.as_deref() == Some(id);
        let stray = |id: &str| id != old && !w.records.contains_key(id);
        let unusable =
            |c: &FakeCert| c.status != CertificateStatus::Active && c.thing.is_none() && c.policies.is_empty();
        let strays_unusable = w.certs.iter().filter(|(id, _)| stray(id)).all(|(_, c)| unusable(c))
            && w.objects.keys().all(|key| {
                current.as_deref().is_some_and(|c| key.contains(c))
                    || w.certs
                        .iter()
                        .any(|(id, c)| key.contains(id.as_str()) && stray(id) && unusable(c))
            });
        let mut new_certificates: Vec<_> = w
            .certs
            .iter()
            .filter(|(id, _)| **id != old && w.records.contains_key(*id))
            .map(|(id, c)| {
                (
                    c.status.as_str().to_string(),
                    c.thing.clone(),
                    c.policies.iter().cloned().collect(),
                    w.records[id].status.as_str(),
                    is_current(id),
                )
            })
            .collect();
        new_certificates.sort();
        let claim = match w.claims.get(thing) {
            Some(holder) if *holder == old => "old",
            Some(holder) if is_current(holder) => "new",
            _ => "other",
        };
        EndState {
            rotation: (
                r.state,
                r.attempt,
                [
                    Some(r.requested_at),
                    r.issued_at,
                    r.delivered_at,
                    r.confirmed_at,
                    r.retired_at,
                    r.old_deleted_at,
                    r.due_at,
                ],
                r.reason,
            ),
            old_certificate: w
                .certs
                .get(&old)
                .map(|c| (c.status.as_str().to_string(), c.thing.clone(), c.policies.len())),
            new_certificates,
            claim,
            old_record: w.records.get(&old).map(|r| r.status),
            jobs: w.jobs.iter().map(|(id, j)| (id.clone(), j.status.clone())).collect(),
            objects: w
                .objects
                .keys()
                .filter(|key| current.as_deref().is_some_and(|c| key.contains(c)))
                .count(),
            strays_unusable,
        }
    })
}

/// The whole rotation of one device, each workflow retried until it
/// succeeds; returns the end state and the port calls made.
async fn scenario(strategy: Strategy, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
    scenario_in(strategy, inject, false).await
}

/// [`scenario`] with the profile's issuer the fleet's own CA (`kmsCa`).
async fn kms_scenario(strategy: Strategy, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
    scenario_in(strategy, inject, true).await
}

async fn scenario_in(strategy: Strategy, inject: Option<Inject>, kms: bool) -> (EndState, Vec<&'static str>) {
    let fake = Fake::new(strategy, 1);
    let kms_ca = kms.then(|| fake.enable_kms_ca());
    fake.with(|w| w.inject = inject);
    let (rotator, issuer, completer) = (rotator(&fake), issuer(&fake), completer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));

    run_until_clean(&rotator, T0).await;
    let (job_id, job) = fake.with(|w| w.current_job(&thing));
    let new = match strategy {
        Strategy::Csr => {
            let message = CsrMessage {
                job_id: job_id.clone(),
                csr: csr(&thing),
            };
            let new = expect_issued(retry(|| issuer.handle(&thing, &old, &message, T0 + 60)).await);
            assert_issued_by(&fake, &new, kms_ca.as_deref());
            new
        }
        Strategy::ServerKeygen => {
            let new = job.document.server_keygen.expect("instructions").new_certificate_id;
            let (certificate_key, private_key_key) = credential_keys(&thing, &new);
            assert!(
                fake.with(|w| w.objects.contains_key(&certificate_key) && w.objects.contains_key(&private_key_key))
            );
            fake.with(|w| w.set_job(&job_id, "IN_PROGRESS", None));
            let in_progress = event(&job_id, &thing, "IN_PROGRESS", None);
            let outcome = retry(|| completer.handle(&in_progress, T0 + 60)).await;
            assert!(matches!(outcome.label(), "delivered" | "duplicate"), "{outcome:?}");
            new
        }
    };
    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
    let succeeded = event(&job_id, &thing, "SUCCEEDED", Some(&new));
    let outcome = retry(|| completer.handle(&succeeded, T0 + 120)).await;
    assert!(matches!(outcome.label(), "completed" | "duplicate"), "{outcome:?}");
    run_until_clean(&rotator, T0 + 120 + 8 * DAY).await;
    finish(&fake, &thing, inject)
}

/// A device that never confirms: the first attempt fails at its
/// deadline, the second starts at the retry time.
async fn failing_scenario(strategy: Strategy, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
    failing_scenario_in(strategy, inject, false).await
}

/// [`failing_scenario`] with a `kmsCa` issuer.
async fn failing_kms_scenario(strategy: Strategy, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
    failing_scenario_in(strategy, inject, true).await
}

async fn failing_scenario_in(strategy: Strategy, inject: Option<Inject>, kms: bool) -> (EndState, Vec<&'static str>) {
    let fake = Fake::new(strategy, 1);
    let kms_ca = kms.then(|| fake.enable_kms_ca());
    fake.with(|w| w.inject = inject);
    let (rotator, issuer) = (rotator(&fake), issuer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));
    let policy = RotationPolicy::default();

    run_until_clean(&rotator, T0).await;
    if strategy == Strategy::Csr {
        let (job_id, _) = fake.with(|w| w.current_job(&thing));
        let message = CsrMessage {
            job_id,
            csr: csr(&thing),
        };
        let new = expect_issued(retry(|| issuer.handle(&thing, &old, &message, T0 + 60)).await);
        assert_issued_by(&fake, &new, kms_ca.as_deref());
    }
    // The device took its job up at once, then never answered.
    fake.with(|w| w.take_up_jobs(T0));
    let deadline = policy.job_deadline(T0);
    run_until_clean(&rotator, deadline).await;
    let retry_at = policy.retry_at(deadline, 1).expect("attempts left");
    run_until_clean(&rotator, retry_at).await;
    finish(&fake, &thing, inject)
}

/// The new certificate chains to the fleet CA `kms_ca` (its id) when there
/// is one, to the fake Amazon CA otherwise.
fn assert_issued_by(fake: &Fake, new: &str, kms_ca: Option<&str>) {
    let (pem, ca_pem) = fake.with(|w| (w.cert(new).pem, kms_ca.map(|id| w.cas[id].pem.clone())));
    let issued = crate::model::certificate::Certificate::from_pem(&pem).expect("new certificate");
    match ca_pem {
        Some(ca_pem) => {
            let ca = crate::model::certificate::Certificate::from_pem(&ca_pem).expect("CA");
            assert!(
                issued.issuer_matches_subject_of(&ca) && issued.is_signed_by(&ca),
                "not the fleet CA's"
            );
            assert_eq!(issued.eku_client_auth, Some(true));
        }
        None => assert!(issued.issuer_dn.contains("Fake Amazon CA"), "{}", issued.issuer_dn),
    }
}

fn finish(fake: &Fake, thing: &str, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
    fake.with(|w| {
        if let Some(inject) = inject {
            assert!(w.inject.is_none(), "{inject:?} never happened");
        }
    });
    (end_state(fake, thing), fake.with(|w| w.calls.clone()))
}

/// Fails each port call of the reference run in turn, before and after
/// its effect, and compares the end state with the reference.
async fn crash_anywhere_converges<F, Fut>(strategy: Strategy, scenario: F) -> EndState
where
    F: Fn(Strategy, Option<Inject>) -> Fut,
    Fut: Future<Output = (EndState, Vec<&'static str>)>,
{
    let (reference, calls) = scenario(strategy, None).await;
    assert!(reference.strays_unusable);
    assert!(calls.len() > 30, "{calls:?}");
    for (n, op) in calls.iter().enumerate() {
        for inject in [Inject::Before(n), Inject::After(n)] {
            let (end, _) = scenario(strategy, Some(inject)).await;
            assert_eq!(end, reference, "{strategy:?}: failure {inject:?} of {op}");
        }
    }
    reference
}

fn assert_completed(end: &EndState) {
    assert_eq!(end.rotation.0, RotationState::Retired);
    assert!(end.rotation.2[5].is_some(), "old certificate deleted");
    assert_eq!(end.old_certificate, None);
    assert_eq!(
        end.new_certificates,
        vec![(
            "ACTIVE".to_string(),
            Some(thing(0)),
            vec![POLICY.to_string()],
            "PROVISIONED",
            true
        )]
    );
    assert_eq!(
        (end.claim, end.old_record, end.objects),
        ("new", Some(RecordStatus::Rotated), 0)
    );
}

fn assert_retrying(end: &EndState, strategy: Strategy) {
    let state = match strategy {
        Strategy::Csr => RotationState::Requested,
        Strategy::ServerKeygen => RotationState::Issued,
    };
    assert_eq!(
        (end.rotation.0, end.rotation.1),
        (state, 2),
        "the second attempt is out"
    );
    assert_eq!(
        end.old_certificate,
        Some(("ACTIVE".to_string(), Some(thing(0)), 1)),
        "old certificate untouched"
    );
    assert_eq!((end.claim, end.old_record), ("old", Some(RecordStatus::Provisioned)));
    let first = ("REVOKED".to_string(), None, Vec::new(), "PROVISIONED", false);
    assert!(end.new_certificates.contains(&first), "{:?}", end.new_certificates);
    assert_eq!(end.jobs.iter().filter(|(_, s)| s == "CANCELED").count(), 1);
    assert_eq!(end.jobs.len(), 2);
    if strategy == Strategy::ServerKeygen {
        assert_eq!(end.objects, 2, "the second attempt's credentials");
    }
}

#[tokio::test]
async fn a_csr_rotation_interrupted_at_any_step_converges() {
    assert_completed(&crash_anywhere_converges(Strategy::Csr, scenario).await);
}

#[tokio::test]
async fn a_kms_ca_rotation_interrupted_at_any_step_converges() {
    // The reference run goes through the fleet CA, not CreateCertificateFromCsr,
    // so every one of its calls is failed in turn below.
    let (_, calls) = kms_scenario(Strategy::Csr, None).await;
    for op in ["describe_ca_certificate", "register_certificate"] {
        assert!(calls.contains(&op), "{op} in {calls:?}");
    }
    assert!(!calls.contains(&"certificate_from_csr"), "{calls:?}");
    assert_completed(&crash_anywhere_converges(Strategy::Csr, kms_scenario).await);
}

#[tokio::test]
async fn a_failing_kms_ca_rotation_interrupted_at_any_step_converges() {
    assert_retrying(
        &crash_anywhere_converges(Strategy::Csr, failing_kms_scenario).await,
        Strategy::Csr,
    );
}

#[tokio::test]
async fn a_server_keygen_rotation_interrupted_at_any_step_converges() {
    assert_completed(&crash_anywhere_converges(Strategy::ServerKeygen, scenario).await);
}

#[tokio::test]
async fn a_failing_csr_rotation_interrupted_at_any_step_converges() {
    assert_retrying(
        &crash_anywhere_converges(Strategy::Csr, failing_scenario).await,
        Strategy::Csr,
    );
}

#[tokio::test]
async fn a_failing_server_keygen_rotation_interrupted_at_any_step_converges() {
    assert_retrying(
        &crash_anywhere_converges(Strategy::ServerKeygen, failing_scenario).await,
        Strategy::ServerKeygen,
    );
}

// --- concurrency: SUCCEEDED racing the deadline's failure -------------------

/// A CSR rotation delivered; the device took its job up at T0
/// (IN_PROGRESS); the call log cleared.
async fn delivered_in_progress() -> (Fake, String, String) {
    let fake = Fake::new(Strategy::Csr, 1);
    let (thing, old) = (thing(0), old_id(&thing(0)));
    run(&rotator(&fake), T0).await;
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr(&thing),
    };
    let new = expect_issued(
        issuer(&fake)
            .handle(&thing, &old, &message, T0 + 60)
            .await
            .expect("issued"),
    );
    fake.with(|w| {
        w.take_up_jobs(T0);
        w.calls.clear();
    });
    (fake, job_id, new)
}

/// The device reports SUCCEEDED naming the new certificate (IoT refuses
/// the update once the execution has ended, e.g. canceled).
fn device_succeeds(fake: &Fake, job_id: &str, new: &str) {
    fake.with(|w| {
        if w.jobs[job_id].status == "IN_PROGRESS" {
            w.set_job(job_id, "SUCCEEDED", Some(new));
        }
    });
}

/// The device is never stranded: exactly one of its certificates is
/// ACTIVE, attached to the thing and carrying the policy, and it holds
/// the thing-name claim; a retired rotation means the new one, anything
/// else the old one (and then the new one is not ACTIVE).
fn assert_working(fake: &Fake, new: &str, label: &str) -> RotationState {
    fake.with(|w| {
        let thing = thing(0);
        let old = old_id(&thing);
        let r = w.rotation_of(&thing);
        let works = |id: &str| {
            w.certs.get(id).is_some_and(|c| {
                c.status == CertificateStatus::Active
                    && c.thing.as_deref() == Some(thing.as_str())
                    && c.policies.contains(POLICY)
            })
        };
        let working: Vec<&str> = [old.as_str(), new].into_iter().filter(|id| works(id)).collect();
        assert_eq!(working.len(), 1, "{label}: working certificates {working:?}; {r:?}");
        assert_eq!(
            w.claims.get(&thing).map(String::as_str),
            Some(working[0]),
            "{label}: claim"
        );
        if r.state == RotationState::Retired {
            assert_eq!(working[0], new, "{label}: retired onto the new certificate");
        } else {
            assert_eq!(working[0], old, "{label}: {r:?}");
            assert_eq!(r.state, RotationState::Failed, "{label}: {r:?}");
            assert!(!r.is_failing(), "{label}: clean-up finished: {r:?}");
            assert_ne!(w.cert(new).status, CertificateStatus::Active, "{label}");
        }
        r.state
    })
}

/// After a race: the SUCCEEDED event redelivered until handled, then the
/// rotator's next runs, as in production.
async fn converge(fake: &Fake, job_id: &str, new: &str, at: i64) {
    let succeeded = event(job_id, &thing(0), "SUCCEEDED", Some(new));
    let completer = completer(fake);
    retry(|| completer.handle(&succeeded, at)).await;
    run_until_clean(&rotator(fake), at + 60).await;
}

/// Arms `hook` before the k-th port call; runs it after `first` if the
/// call never came.
async fn interleaved<X>(fake: &Fake, k: usize, hook: Hook, first: impl Future<Output = X>) {
    fake.with(|w| w.interleave = Some((k, hook)));
    let _ = first.await;
    if let Some((_, hook)) = fake.with(|w| w.interleave.take()) {
        hook();
    }
}

#[tokio::test]
async fn success_racing_the_deadline_leaves_a_working_certificate_in_every_interleaving() {
    let deadline = RotationPolicy::default().job_deadline(T0);
    let (probe, _, _) = delivered_in_progress().await;
    let _ = rotator(&probe).run(deadline).await;
    let calls = probe.with(|w| w.calls.len());
    assert!(calls > 10, "{calls}");
    let mut ends = BTreeMap::new();
    // The device's SUCCEEDED and the completer's whole handling at each
    // point of the rotator's run at the deadline.
    for k in 0..=calls {
        let (fake, job_id, new) = delivered_in_progress().await;
        let (f, j, n) = (fake.clone(), job_id.clone(), new.clone());
        let hook: Hook = Box::new(move || {
            device_succeeds(&f, &j, &n);
            let succeeded = event(&j, &thing(0), "SUCCEEDED", Some(&n));
            let _ = run_now(completer(&f).handle(&succeeded, deadline));
        });
        interleaved(&fake, k, hook, async { rotator(&fake).run(deadline).await }).await;
        converge(&fake, &job_id, &new, deadline + 30).await;
        let label = format!("completer before call {k} of the rotator's run");
        *ends.entry(assert_working(&fake, &new, &label).as_str()).or_insert(0) += 1;
    }
    // Both ends are reached: the race is real, and neither strands.
    assert!(ends.contains_key("RETIRED") && ends.contains_key("FAILED"), "{ends:?}");
}

/// IoT's reads are eventually consistent: the rotator may fail an
/// attempt on a stale IN_PROGRESS while the completer acts on the
/// device's SUCCEEDED. Each runs whole at each point of the other.
#[tokio::test]
async fn a_stale_failure_and_a_confirmation_exclude_each_other_in_every_interleaving() {
    let deadline = RotationPolicy::default().job_deadline(T0);
    async fn fail(fake: Fake) -> Result<(), RotationError> {
        let policy = RotationPolicy::default();
        let r = fake.with(|w| w.rotation_of(&thing(0)));
        let rotator = rotator(&fake);
        let detail = "job execution still IN_PROGRESS past its deadline";
        rotator
            .ops()
            .fail(r, FailureReason::JobTimedOut, detail, &policy, policy.job_deadline(T0))
            .await
            .map(|_| ())
    }
    async fn complete(fake: Fake, job_id: String, new: String) -> Result<(), RotationError> {
        let succeeded = event(&job_id, &thing(0), "SUCCEEDED", Some(&new));
        let deadline = RotationPolicy::default().job_deadline(T0);
        completer(&fake).handle(&succeeded, deadline).await.map(|_| ())
    }
    let count = |fut_calls: &Fake| fut_calls.with(|w| w.calls.len());
    let (probe, job_id, new) = delivered_in_progress().await;
    device_succeeds(&probe, &job_id, &new);
    let _ = fail(probe.clone()).await;
    let fail_calls = count(&probe);
    let (probe, job_id, new) = delivered_in_progress().await;
    device_succeeds(&probe, &job_id, &new);
    let _ = complete(probe.clone(), job_id, new).await;
    let complete_calls = count(&probe);
    assert!(fail_calls > 3 && complete_calls > 10, "{fail_calls} {complete_calls}");

    let mut ends = BTreeMap::new();
    for (fail_first, calls) in [(true, fail_calls), (false, complete_calls)] {
        for k in 0..=calls {
            let (fake, job_id, new) = delivered_in_progress().await;
            device_succeeds(&fake, &job_id, &new);
            let (f, j, n) = (fake.clone(), job_id.clone(), new.clone());
            if fail_first {
                let hook: Hook = Box::new(move || drop(run_now(complete(f, j, n))));
                interleaved(&fake, k, hook, fail(fake.clone())).await;
            } else {
                let hook: Hook = Box::new(move || drop(run_now(fail(f))));
                interleaved(&fake, k, hook, complete(fake.clone(), job_id.clone(), new.clone())).await;
            }
            converge(&fake, &job_id, &new, deadline + 30).await;
            let label = if fail_first {
                format!("completer before call {k} of the fail path")
            } else {
                format!("fail path before call {k} of the completer")
            };
            *ends.entry(assert_working(&fake, &new, &label).as_str()).or_insert(0) += 1;
        }
    }
    assert!(ends.contains_key("RETIRED") && ends.contains_key("FAILED"), "{ends:?}");
}

/// The same races, each workflow also crashing once at each of its calls
/// (a fresh world per point): still never stranded.
#[tokio::test]
async fn success_racing_the_deadline_with_a_crash_anywhere_leaves_a_working_certificate() {
    let deadline = RotationPolicy::default().job_deadline(T0);
    let (probe, _, _) = delivered_in_progress().await;
    let _ = rotator(&probe).run(deadline).await;
    let calls = probe.with(|w| w.calls.len());
    for k in (0..=calls).step_by(2) {
        for crash in 0..calls + 12 {
            for inject in [Inject::Before(crash), Inject::After(crash)] {
                let (fake, job_id, new) = delivered_in_progress().await;
                let (f, j, n) = (fake.clone(), job_id.clone(), new.clone());
                let hook: Hook = Box::new(move || {
                    device_succeeds(&f, &j, &n);
                    let succeeded = event(&j, &thing(0), "SUCCEEDED", Some(&n));
                    let _ = run_now(completer(&f).handle(&succeeded, deadline));
                });
                fake.with(|w| w.inject = Some(inject));
                interleaved(&fake, k, hook, async { rotator(&fake).run(deadline).await }).await;
                fake.with(|w| w.inject = None);
                converge(&fake, &job_id, &new, deadline + 30).await;
                let label = format!("completer before call {k}, {inject:?}");
                assert_working(&fake, &new, &label);
            }
        }
    }
}

// --- the completer trusts IoT, not the message ---------------------------------

#[tokio::test]
async fn a_completer_message_with_a_forged_status_or_certificate_changes_nothing() {
    let (fake, job_id, new) = delivered_in_progress().await;
    let thing = thing(0);
    let before = end_state(&fake, &thing);
    let forged_id = "f".repeat(64);
    // IoT says IN_PROGRESS: no message body moves the rotation.
    for (status, confirmed) in [
        ("SUCCEEDED", Some(new.as_str())),
        ("SUCCEEDED", Some(forged_id.as_str())),
        ("FAILED", None),
        ("REJECTED", None),
        ("TIMED_OUT", None),
        ("CANCELED", None),
    ] {
        let forged = event(&job_id, &thing, status, confirmed);
        let outcome = completer(&fake).handle(&forged, T0 + 120).await.expect("handled");
        assert_eq!(
            outcome,
            CompletionOutcome::Ignored {
                reason: IgnoreReason::NothingToDo
            },
            "{status}"
        );
        assert_eq!(end_state(&fake, &thing), before, "a forged {status} changed something");
    }
    assert!(
        !fake.with(|w| w.calls.iter().any(|c| matches!(*c, "set_status" | "put_rotation"))),
        "no write, no certificate change"
    );
    // IoT says SUCCEEDED naming the new certificate; a message naming
    // another (and claiming FAILED) completes with IoT's, and only it.
    device_succeeds(&fake, &job_id, &new);
    let forged = event(&job_id, &thing, "FAILED", Some(&forged_id));
    let outcome = completer(&fake).handle(&forged, T0 + 130).await.expect("completed");
    assert_eq!(
        outcome,
        CompletionOutcome::Completed {
            thing_name: thing.clone(),
            old_certificate_id: old_id(&thing),
            new_certificate_id: new.clone(),
        }
    );
    assert_working(&fake, &new, "IoT's SUCCEEDED");
}

#[tokio::test]
async fn the_old_certificate_is_not_retired_unless_iot_shows_the_new_one_usable() {
    for (what, spoil) in [
        (
            "its policy detached",
            (|c: &mut FakeCert| c.policies.clear()) as fn(&mut FakeCert),
        ),
        ("detached from the thing", |c: &mut FakeCert| c.thing = None),
        ("INACTIVE", |c: &mut FakeCert| c.status = CertificateStatus::Inactive),
    ] {
        let (fake, job_id, new) = delivered_in_progress().await;
        let thing = thing(0);
        fake.with(|w| spoil(w.certs.get_mut(&new).expect("new")));
        device_succeeds(&fake, &job_id, &new);
        let result = completer(&fake)
            .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 120)
            .await;
        assert!(
            matches!(result, Err(RotationError::NewCertificateNotReady { .. })),
            "{what}: {result:?}"
        );
        fake.with(|w| {
            let old = w.cert(&old_id(&thing));
            assert_eq!(old.status, CertificateStatus::Active, "{what}");
            assert_eq!(old.thing.as_deref(), Some(thing.as_str()), "{what}");
            assert!(old.policies.contains(POLICY), "{what}");
            assert_eq!(w.claims.get(&thing), Some(&old_id(&thing)), "{what}");
        });
    }
}

// --- the execution's own timeline ------------------------------------------------

#[tokio::test]
async fn an_offline_device_waits_up_to_the_queued_timeout() {
    let fake = Fake::new(Strategy::Csr, 1);
    let rotator = rotator(&fake);
    let thing = thing(0);
    let policy = RotationPolicy::default();
    run(&rotator, T0).await;
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    // The job stays QUEUED: the device is offline.
    let deadline = policy.job_deadline(T0);
    let report = run(&rotator, deadline).await;
    assert_eq!((report.failed, report.waiting), (0, 1), "{report:?}");
    let limit = T0 + i64::from(policy.queued_timeout_days) * DAY;
    let mut at = deadline;
    while at < limit {
        let due = fake.with(|w| w.rotation_of(&thing).due_at).expect("due");
        assert!(due <= limit && due <= at + DAY, "looked at daily, not past the limit");
        at = due;
        let report = run(&rotator, at).await;
        if at < limit {
            assert_eq!(report.failed, 0, "{report:?} at {at}");
            assert_eq!(fake.with(|w| w.jobs[&job_id].status.clone()), "QUEUED");
        } else {
            assert_eq!(report.failed, 1, "{report:?}");
        }
    }
    fake.with(|w| {
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.reason),
            (RotationState::Failed, Some(FailureReason::JobTimedOut))
        );
        assert_eq!(w.jobs[&job_id].status, "CANCELED");
        assert_eq!(w.cert(&old_id(&thing)).status, CertificateStatus::Active);
    });
    // Never past the old certificate's notAfter.
    let mut r = fake.with(|w| w.rotation_of(&thing));
    r.old_not_after = T0 + 3 * DAY;
    let queued = JobExecution {
        status: "QUEUED".into(),
        status_details: BTreeMap::new(),
        queued_at: Some(T0),
        started_at: None,
        last_updated_at: None,
    };
    assert_eq!(policy.execution_deadline(&r, &queued), T0 + 3 * DAY);
}

#[tokio::test]
async fn the_in_progress_timeout_counts_from_when_the_device_started() {
    let fake = Fake::new(Strategy::Csr, 1);
    let rotator = rotator(&fake);
    let thing = thing(0);
    let policy = RotationPolicy::default();
    run(&rotator, T0).await;
    // The device comes online and takes the job up 50 minutes in.
    let started = T0 + 50 * 60;
    fake.with(|w| w.take_up_jobs(started));
    let report = run(&rotator, policy.job_deadline(T0)).await;
    assert_eq!((report.failed, report.waiting), (0, 1), "{report:?}");
    assert_eq!(
        fake.with(|w| w.rotation_of(&thing).due_at),
        Some(policy.job_deadline(started))
    );
    let report = run(&rotator, policy.job_deadline(started)).await;
    assert_eq!(report.failed, 1, "{report:?}");
}

// --- CSR keys, deny-list, CA binding -----------------------------------------------

#[tokio::test]
async fn an_ed25519_csr_is_refused_at_once() {
    let fake = Fake::new(Strategy::Csr, 1);
    let (thing, old) = (thing(0), old_id(&thing(0)));
    run(&rotator(&fake), T0).await;
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, thing.as_str());
    let pem = params.serialize_request(&key).expect("CSR").pem().expect("PEM");
    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: pem,
    };
    let outcome = issuer(&fake)
        .handle(&thing, &old, &message, T0 + 60)
        .await
        .expect("handled");
    let CsrOutcome::Refused { rejection, .. } = outcome else {
        panic!("expected REFUSED, got {outcome:?}");
    };
    assert_eq!(rejection.reason.code(), "UNSUPPORTED_KEY");
    assert!(rejection.detail.contains("Ed25519"), "{}", rejection.detail);
    fake.with(|w| {
        let answers = w.answers(&thing);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0]["status"], "REFUSED");
        assert_eq!(answers[0]["reasonCode"], "UNSUPPORTED_KEY");
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.reason),
            (RotationState::Failed, Some(FailureReason::CsrRefused))
        );
        assert!(
            !w.calls.contains(&"certificate_from_csr"),
            "nothing asked of CreateCertificateFromCsr"
        );
        assert_eq!(w.jobs[&job_id].status, "CANCELED", "nothing left to time out");
    });
}

#[tokio::test]
async fn a_denied_device_or_an_unbound_ca_gets_no_new_certificate() {
    // Denied before the run: no attempt starts.
    let fake = Fake::new(Strategy::Csr, 2);
    fake.with(|w| {
        w.denied.insert(old_id("dev-0"));
        w.records.get_mut(&old_id("dev-1")).expect("record").ca_certificate_id = "unbound-ca".into();
    });
    let report = run(&rotator(&fake), T0).await;
    assert_eq!((report.started, report.skipped_denied), (0, 2), "{report:?}");
    assert!(fake.with(|w| w.jobs.is_empty() && w.rotations.is_empty()));

    // Denied after the attempt started: the CSR is refused, nothing issued.
    let fake = Fake::new(Strategy::Csr, 1);
    let (thing, old) = (thing(0), old_id(&thing(0)));
    run(&rotator(&fake), T0).await;
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    fake.with(|w| {
        w.denied.insert(old.clone());
    });
    let message = CsrMessage {
        job_id: job_id.clone(),
        csr: csr(&thing),
    };
    let outcome = issuer(&fake)
        .handle(&thing, &old, &message, T0 + 60)
        .await
        .expect("handled");
    assert!(
        matches!(&outcome, CsrOutcome::Refused { rejection, .. } if rejection.reason.code() == "FINGERPRINT_DENIED"),
        "{outcome:?}"
    );
    fake.with(|w| {
        assert!(!w.calls.contains(&"certificate_from_csr"));
        assert_eq!(w.certs.len(), 1, "no certificate made");
        let r = w.rotation_of(&thing);
        assert_eq!(
            (r.state, r.reason, r.due_at),
            (RotationState::Failed, Some(FailureReason::Denied), None),
            "never retried"
        );
    });

    // Denied while a failed attempt waits for its retry: given up.
    let fake = Fake::new(Strategy::Csr, 1);
    let rotator = rotator(&fake);
    let policy = RotationPolicy::default();
    run(&rotator, T0).await;
    fake.with(|w| w.take_up_jobs(T0));
    let deadline = policy.job_deadline(T0);
    assert_eq!(run(&rotator, deadline).await.failed, 1);
    fake.with(|w| {
        w.denied.insert(old_id("dev-0"));
    });
    let report = run(&rotator, policy.retry_at(deadline, 1).expect("retry")).await;
    assert_eq!((report.retried, report.gave_up), (0, 1), "{report:?}");
    assert_eq!(fake.with(|w| w.jobs.len()), 1, "no second job");
}

// --- a device denied during its rotation ----------------------------------

/// Denied (`onboard deny add`, or revoked) after its new certificate was
/// issued: the device's confirmation completes nothing, the new certificate
/// is revoked, and the attempt fails for good.
#[tokio::test]
async fn a_confirmation_from_a_device_denied_meanwhile_completes_nothing() {
    let (fake, job_id, new) = delivered_in_progress().await;
    let (thing, old) = (thing(0), old_id(&thing(0)));
    fake.with(|w| {
        w.denied.insert(old.clone());
    });
    device_succeeds(&fake, &job_id, &new);
    let outcome = completer(&fake)
        .handle(&event(&job_id, &thing, "SUCCEEDED", Some(&new)), T0 + 120)
        .await
        .expect("handled");
    assert!(
        matches!(
            outcome,
            CompletionOutcome::Failed {
                reason: FailureReason::Denied,
                retry_at: None,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(fake.with(|w| w.cert(&new).status), CertificateStatus::Revoked);
    assert_eq!(
        fake.with(|w| w.cert(&old).status),
        CertificateStatus::Active,
        "the old one untouched"
    );
    assert_eq!(fake.with(|w| w.claims[&thing].clone()), old);
}

// --- the fleet's own CA (`kmsCa`) -------------------------------------------

/// One device with a CSR rotation requested; returns the fake, the thing,
/// its old certificate and the CSR message.
async fn kms_requested() -> (Fake, String, String, CsrMessage, String) {
    let fake = Fake::new(Strategy::Csr, 1);
    let ca = fake.enable_kms_ca();
    run_until_clean(&rotator(&fake), T0).await;
    let (thing, old) = (thing(0), old_id(&thing(0)));
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let message = CsrMessage {
        job_id,
        csr: csr(&thing),
    };
    (fake, thing, old, message, ca)
}

/// Nothing issued, nothing signed, nothing answered, the attempt open.
fn assert_nothing_issued(fake: &Fake, thing: &str, label: &str) {
    fake.with(|w| {
        assert_eq!(w.rotation_of(thing).state, RotationState::Requested, "{label}");
        assert_eq!(w.certs.len(), 1, "{label}: only the old certificate");
        assert!(w.answers(thing).is_empty(), "{label}");
        assert!(!w.calls.contains(&"register_certificate"), "{label}");
    });
    assert_eq!(
        fake.kms_signer().signs.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "{label}: nothing signed"
    );
}

#[tokio::test]
async fn a_kms_key_the_deployment_does_not_allow_is_refused_before_anything_is_signed() {
    let (fake, thing, old, message, ca) = kms_requested().await;
    // The profile names another key than the one the deployment allows.
    fake.with(|w| {
        let mut p = profile(Strategy::Csr);
        p.rotation.issuer = crate::policy::rotation::Issuer::KmsCa {
            ca_certificate_id: ca.clone(),
            kms_key_arn: KMS_KEY_ARN.replace("1234abcd-", "9999abcd-"),
            validity_days: 30,
        };
        w.set_profile(p);
    });
    let err = issuer(&fake)
        .handle(&thing, &old, &message, T0 + 60)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), "issuer_unusable", "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("9999abcd"), "{err}");
    assert_nothing_issued(&fake, &thing, "key not allowed");

    // A deployment without any kmsCa issuer (the default) refuses it too.
    fake.with(|w| {
        let mut p = profile(Strategy::Csr);
        p.rotation.issuer = crate::policy::rotation::Issuer::KmsCa {
            ca_certificate_id: ca.clone(),
            kms_key_arn: KMS_KEY_ARN.into(),
            validity_days: 30,
        };
        w.set_profile(p);
    });
    let settings = CsrIssuerSettings {
        cache_ttl: Duration::ZERO,
        ..CsrIssuerSettings::default()
    };
    let plain = CsrIssuer::new(fake.clone(), fake.clone(), fake.clone(), settings);
    let err = plain
        .handle(&thing, &old, &message, T0 + 60)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), "issuer_unusable", "{err}");
    assert_nothing_issued(&fake, &thing, "no kmsCa issuer deployed");
}

#[tokio::test]
async fn a_ca_missing_not_active_or_not_the_profiles_is_refused_before_anything_is_signed() {
    let (fake, thing, old, message, ca) = kms_requested().await;
    let issuer = issuer(&fake);
    for (label, change) in [
        (
            "inactive",
            (|w: &mut World, ca: &str| {
                w.cas.get_mut(ca).expect("CA").status = CertificateStatus::Inactive;
            }) as fn(&mut World, &str),
        ),
        ("revoked", |w, ca| {
            w.cas.get_mut(ca).expect("CA").status = CertificateStatus::Revoked
        }),
        ("missing", |w, ca| {
            w.cas.remove(ca);
        }),
        // IoT's answer under this id carries another certificate's PEM.
        ("a device certificate", |w, ca| {
            let other = w.cert(&old_id("dev-0")).pem;
            w.cas.get_mut(ca).expect("CA").pem = other;
        }),
    ] {
        let saved = fake.with(|w| w.cas.clone());
        fake.with(|w| change(w, &ca));
        let err = issuer.handle(&thing, &old, &message, T0 + 60).await.expect_err(label);
        assert_eq!(err.kind(), "issuer_unusable", "{label}: {err}");
        assert_nothing_issued(&fake, &thing, label);
        fake.with(|w| w.cas = saved);
    }
    // Another CA registered ACTIVE, for the same key: IoT's answer for the
    // profile's CA id carrying it is refused (it would chain and register).
    let other_pem = {
        let key = rcgen::KeyPair::try_from(fake.kms_signer().pkcs8_der()).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "Another CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        validity(&mut params);
        params.self_signed(&key).expect("CA").pem()
    };
    let saved = fake.with(|w| w.cas.clone());
    fake.with(|w| {
        let other_id = crate::model::certificate::Certificate::from_pem(&other_pem)
            .expect("CA")
            .fingerprint;
        let mut other = w.cas[&ca].clone();
        other.certificate_id = other_id.clone();
        other.pem = other_pem.clone();
        w.cas.insert(other_id, other);
        w.cas.get_mut(&ca).expect("CA").pem = other_pem.clone();
    });
    let err = issuer
        .handle(&thing, &old, &message, T0 + 60)
        .await
        .expect_err("another CA");
    assert_eq!(err.kind(), "issuer_unusable", "{err}");
    assert!(err.to_string().contains("another certificate"), "{err}");
    assert_nothing_issued(&fake, &thing, "another CA");
    fake.with(|w| w.cas = saved);

    // Restored, the same message is answered.
    let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
    assert_issued_by(&fake, &new, Some(&ca));
}

#[tokio::test]
async fn a_kms_failure_issues_nothing_and_the_retry_issues() {
    let (fake, thing, old, message, ca) = kms_requested().await;
    let issuer = issuer(&fake);
    for kind in [
        crate::ports::PortErrorKind::Transient,
        crate::ports::PortErrorKind::AccessDenied,
    ] {
        *fake.kms_signer().fail.lock().expect("lock") = Some(kind);
        let err = issuer
            .handle(&thing, &old, &message, T0 + 60)
            .await
            .expect_err("KMS failed");
        assert_eq!(
            err.is_transient(),
            kind == crate::ports::PortErrorKind::Transient,
            "{err}"
        );
        fake.with(|w| {
            assert_eq!(w.rotation_of(&thing).state, RotationState::Requested);
            assert_eq!(w.certs.len(), 1);
        });
    }
    // A signature that does not verify is never registered nor handed out.
    *fake.kms_signer().fail.lock().expect("lock") = None;
    fake.kms_signer()
        .corrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = issuer
        .handle(&thing, &old, &message, T0 + 60)
        .await
        .expect_err("bad signature");
    assert_eq!(err.kind(), "issuer_unusable", "{err}");
    assert_eq!(fake.with(|w| w.certs.len()), 1);
    fake.kms_signer()
        .corrupt
        .store(false, std::sync::atomic::Ordering::SeqCst);

    let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
    assert_issued_by(&fake, &new, Some(&ca));
    fake.with(|w| {
        let c = w.cert(&new);
        assert_eq!((c.status, c.thing), (CertificateStatus::Active, Some(thing.clone())));
        assert_eq!(w.rotation_of(&thing).state, RotationState::Delivered);
        // Valid for the profile's 365 days from issuance, less the backdate.
        let issued = crate::model::certificate::Certificate::from_pem(&c.pem).expect("pem");
        assert_eq!(issued.not_after, T0 + 60 + 365 * DAY);
    });
}

/// A certificate of the fleet's own CA is recorded with that CA as its
/// issuer (the onboarding CA still binds the device to its profile), so a
/// serial denied under the fleet CA, as AWS IoT and `onboard deny serial
/// --ca` name it, stops the device's next rotation. Looked up under the
/// onboarding CA (the record's binding), the entry would be missed.
#[tokio::test]
async fn a_serial_denied_under_the_fleet_ca_stops_the_next_rotation() {
    let (fake, thing, old, message, ca) = kms_requested().await;
    let onboarding_ca = fake.with(|w| w.records[&old].ca_certificate_id.clone());
    assert_ne!(onboarding_ca, ca);
    let new = expect_issued(
        issuer(&fake)
            .handle(&thing, &old, &message, T0 + 60)
            .await
            .expect("issued"),
    );
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    fake.with(|w| w.set_job(&job_id, "SUCCEEDED", Some(&new)));
    let succeeded = event(&job_id, &thing, "SUCCEEDED", Some(&new));
    let completer = completer(&fake);
    let outcome = retry(|| completer.handle(&succeeded, T0 + 120)).await;
    assert!(matches!(outcome.label(), "completed" | "duplicate"), "{outcome:?}");

    let (record, config) = fake.with(|w| (w.records[&new].clone(), w.config.clone()));
    assert_eq!(record.ca_certificate_id, onboarding_ca, "the binding CA is kept");
    assert_eq!(record.issuer_ca_certificate_id.as_deref(), Some(ca.as_str()));
    assert_eq!(record.serial_ca(), ca);
    assert_eq!(rotation_allowed(&config, &fake, &record).await.expect("lookup"), Ok(()));

    let serial = record.serial.clone().expect("serial");
    fake.with(|w| w.denied.insert(format!("{ca}#{serial}")));
    let refused = rotation_allowed(&config, &fake, &record)
        .await
        .expect("lookup")
        .expect_err("denied");
    assert_eq!(refused.reason, RejectReason::SerialDenied, "{refused:?}");

    // An amazon-issued (or onboarding) record names no other issuer: its
    // serial stays under the onboarding CA, as before.
    let onboarding = fake.with(|w| w.records[&old].clone());
    assert_eq!(onboarding.issuer_ca_certificate_id, None);
    assert_eq!(onboarding.serial_ca(), onboarding_ca);
}

/// `CreateCertificateFromCsr` is answered by whatever signs for the account
/// (an account-wide certificate provider may): a certificate for another
/// key than the CSR's is never attached, recorded or handed out, and is
/// revoked; the attempt stays open and a good answer is then delivered.
#[tokio::test]
async fn a_certificate_issued_for_another_key_is_revoked_and_never_handed_out() {
    let fake = Fake::new(Strategy::Csr, 1);
    let (rotator, issuer) = (rotator(&fake), issuer(&fake));
    let (thing, old) = (thing(0), old_id(&thing(0)));
    run_until_clean(&rotator, T0).await;
    let (job_id, _) = fake.with(|w| w.current_job(&thing));
    let message = CsrMessage {
        job_id,
        csr: csr(&thing),
    };

    fake.with(|w| w.issue_for_another_key = true);
    let err = issuer
        .handle(&thing, &old, &message, T0 + 60)
        .await
        .expect_err("another key");
    assert_eq!(err.kind(), "issuer_unusable", "{err}");
    assert!(err.to_string().contains("another key"), "{err}");
    fake.with(|w| {
        let issued: Vec<&FakeCert> = w.certs.iter().filter(|(id, _)| **id != old).map(|(_, c)| c).collect();
        assert_eq!(issued.len(), 1);
        assert_eq!(issued[0].status, CertificateStatus::Revoked);
        assert_eq!(issued[0].thing, None, "never attached");
        assert_eq!(w.records.len(), 1, "never recorded");
        assert!(w.answers(&thing).is_empty(), "never handed out");
        assert_eq!(w.rotation_of(&thing).state, RotationState::Requested);
        assert_eq!(w.cert(&old).status, CertificateStatus::Active);
    });

    fake.with(|w| w.issue_for_another_key = false);
    let new = expect_issued(issuer.handle(&thing, &old, &message, T0 + 60).await.expect("issued"));
    fake.with(|w| assert_eq!(w.cert(&new).status, CertificateStatus::Active));
}
