//! The scheduled audit over the in-memory fakes: a run split over many
//! tiny-budget invocations finds what the one-shot `audit_fleet` finds;
//! every crash point converges to the same stored findings and counts; two
//! overlapping invocations never both start or advance; a state item this
//! code did not write is refused.

#![allow(clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use super::*;
use crate::checks::audit::Severity;
use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::RecordStatus;
use crate::policy::rotation::RotationPolicy;
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState};
use crate::ports::{RegisteredCa, StoredAuditRun};
use crate::testing::audit::{AuditFake, Time, finding_key};
use crate::testing::ca::ca_pem;
use crate::testing::inject::Inject;
use crate::testing::reconciler::{BOUND, Fake, NOW};
use crate::workflows::audit::{AuditLimits, audit_fleet};

const DAY: i64 = 86_400;
const OFF: &str = "ca-off";
const OWN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}]}"#;
const WIDE_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;
/// A policy naming one thing's client id: own for that one thing only.
const NAMED_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/t-named"}]}"#;

/// PEMs made once: (valid 200 days, valid 3 days, a CA valid 1,000 days, one valid 20 days).
struct Pems {
    long: String,
    short: String,
    ca: String,
    ca_short: String,
}

fn pems() -> &'static Pems {
    static PEMS: std::sync::OnceLock<Pems> = std::sync::OnceLock::new();
    PEMS.get_or_init(|| Pems {
        long: ca_pem(NOW, 200),
        short: ca_pem(NOW, 3),
        ca: ca_pem(NOW, 1_000),
        ca_short: ca_pem(NOW, 20),
    })
}

struct Device<'a> {
    id: &'a str,
    ca: &'a str,
    status: CertificateStatus,
    things: &'a [&'a str],
    policies: &'a [&'a str],
    record: Option<RecordStatus>,
}

fn d<'a>(
    id: &'a str,
    ca: &'a str,
    status: CertificateStatus,
    things: &'a [&'a str],
    policies: &'a [&'a str],
    record: Option<RecordStatus>,
) -> Device<'a> {
    Device {
        id,
        ca,
        status,
        things,
        policies,
        record,
    }
}

fn device(fake: &Fake, d: &Device<'_>, pem: &str, created: i64) {
    fake.cert(d.id, d.ca, d.status.clone(), Some(created));
    fake.with(|w| {
        w.pems.insert(d.id.into(), pem.to_string());
        w.attached_things
            .insert(d.id.into(), d.things.iter().map(|t| t.to_string()).collect());
        w.attached_policies
            .insert(d.id.into(), d.policies.iter().map(|p| p.to_string()).collect());
    });
    if let Some(status) = d.record {
        let record_ca = if d.ca.is_empty() { BOUND } else { d.ca };
        fake.record(d.id, record_ca, status);
        fake.with(|w| {
            if let Some(r) = w.records.get_mut(d.id) {
                r.thing_name = d.things.first().map(|t| t.to_string());
            }
        });
    }
}

/// A fleet with every check's problem planted, and clean devices around them.
fn fleet() -> AuditFake {
    use CertificateStatus::{Active, Inactive};
    use RecordStatus::{Provisioned, Rotated};
    let p = pems();
    let fake = AuditFake::default();
    let f = &fake.fleet;
    f.with(|w| {
        w.cas.insert(
            BOUND.into(),
            RegisteredCa {
                certificate_id: BOUND.into(),
                status: Active,
                pem: p.ca_short.clone(), // CA_CERT_EXPIRING (20 days < 90)
                jitp: false,
            },
        );
        w.cas.insert(
            OFF.into(),
            RegisteredCa {
                certificate_id: OFF.into(),
                status: Inactive,
                pem: p.ca.clone(),
                jitp: false,
            },
        );
        w.policy_documents.insert("device".into(), OWN_POLICY.into());
        w.policy_documents.insert("wide".into(), WIDE_POLICY.into());
        w.policy_documents.insert("named".into(), NAMED_POLICY.into());
    });
    let recent = NOW - 10 * DAY;
    for i in 0..6 {
        let (id, thing) = (format!("clean{i}"), format!("t-clean{i}"));
        device(
            f,
            &d(&id, BOUND, Active, &[thing.as_str()], &["device"], Some(Provisioned)),
            &p.long,
            recent,
        );
    }
    device(
        f,
        &d("shared", BOUND, Active, &["t-a", "t-b"], &["device"], Some(Provisioned)),
        &p.long,
        recent,
    );
    device(
        f,
        &d("stray", BOUND, Active, &["t-stray"], &["wide"], None),
        &p.long,
        recent,
    );
    device(
        f,
        &d("expiring", BOUND, Active, &["t-exp"], &["device"], Some(Provisioned)),
        &p.short,
        recent,
    );
    device(
        f,
        &d("aged", BOUND, Active, &["t-aged"], &["device"], Some(Provisioned)),
        &p.long,
        NOW - 400 * DAY,
    );
    device(
        f,
        &d("named1", BOUND, Active, &["t-named"], &["named"], Some(Provisioned)),
        &p.long,
        recent,
    );
    // Two ACTIVE certificates on one thing, no rotation.
    device(
        f,
        &d("twin1", BOUND, Active, &["t-twin"], &["device"], Some(Provisioned)),
        &p.long,
        recent,
    );
    device(
        f,
        &d("twin2", BOUND, Active, &["t-twin"], &["device"], Some(Provisioned)),
        &p.long,
        recent,
    );
    // A rotation in progress: old and new ACTIVE on the thing, excused.
    device(
        f,
        &d("rot-old", BOUND, Active, &["t-rot"], &["device"], Some(Rotated)),
        &p.long,
        recent,
    );
    device(
        f,
        &d("rot-new", "", Active, &["t-rot"], &["device"], Some(Provisioned)),
        &p.long,
        recent,
    );
    // A denied ACTIVE certificate.
    device(
        f,
        &d("denied", BOUND, Active, &["t-denied"], &["device"], Some(Provisioned)),
        &p.long,
        recent,
    );
    // Certificates under the INACTIVE CA, ACTIVE (7: more than are named).
    for i in 0..7 {
        let (id, thing) = (format!("off{i}"), format!("t-off{i}"));
        device(
            f,
            &d(&id, OFF, Active, &[thing.as_str()], &["device"], Some(Provisioned)),
            &p.long,
            recent,
        );
    }
    // A record whose certificate is gone.
    f.record("deleted", BOUND, Provisioned);
    // A failed rotation, given up; and the in-progress one.
    let policy = RotationPolicy::default();
    let old = CertificateRecord::bare("old-failed", BOUND, Rotated, NOW);
    let mut failed = Rotation::requested(&old, "t-failed", "p", &policy, 1, NOW - DAY);
    failed.state = RotationState::Failed;
    failed.reason = Some(FailureReason::CsrRefused);
    failed.due_at = None;
    let rot_old = CertificateRecord::bare("rot-old", BOUND, Rotated, NOW);
    let mut open = Rotation::requested(&rot_old, "t-rot", "p", &policy, 1, NOW - DAY);
    open.state = RotationState::Issued;
    open.new_certificate_id = Some("rot-new".into());
    f.with(|w| {
        w.rotations.insert("old-failed".into(), failed);
        w.rotations.insert("rot-old".into(), open);
    });
    fake
}

/// The fleet's deny-list denies one certificate: the fake answers by
/// fingerprint, and every test certificate shares one PEM, so the
/// "denied" device gets a PEM of its own.
fn deny_one(fake: &AuditFake) {
    let pem = ca_pem(NOW, 200);
    let fingerprint = Certificate::from_pem(&pem).map(|c| c.fingerprint).expect("pem");
    fake.fleet.with(|w| {
        w.pems.insert("denied".into(), pem);
        w.denied
            .insert(fingerprint, Rejection::new(RejectReason::FingerprintDenied, "stolen"));
    });
}

fn settings(certificates: usize, page: usize) -> ScheduledAuditSettings {
    ScheduledAuditSettings {
        certificates_per_invocation: certificates,
        page_size: page,
        default_ca_ids: vec![BOUND.to_string(), OFF.to_string()],
        ..ScheduledAuditSettings::default()
    }
}

type Audit = ScheduledAudit<AuditFake, AuditFake, AuditFake, AuditFake, AuditFake>;

fn auditor(fake: &AuditFake, s: ScheduledAuditSettings) -> Audit {
    ScheduledAudit::new(fake.clone(), fake.clone(), fake.clone(), fake.clone(), fake.clone(), s)
}

/// Invokes until the run is DONE (errors are retried by the next
/// invocation, as the schedule would); the invocations it took.
async fn until_done(audit: &Audit, fake: &AuditFake, now: i64) -> usize {
    for n in 1..=2_000 {
        let _ = audit.invoke(now, &Time(true)).await;
        let done = fake.with_store(|s| {
            s.run
                .as_ref()
                .and_then(|r| AuditRunState::from_json(&r.state, now).ok())
                .is_some_and(|st| st.phase == AuditPhase::Done)
        });
        if done {
            return n;
        }
    }
    panic!("the run never completed");
}

fn stored(fake: &AuditFake, run: i64) -> Vec<Finding> {
    fake.with_store(|s| {
        s.findings
            .get(&run)
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default()
    })
}

fn latest(fake: &AuditFake) -> AuditSummary {
    fake.with_store(|s| AuditSummary::from_json(&s.latest.as_ref().expect("a summary").1).expect("summary"))
}

async fn one_shot(fake: &AuditFake) -> crate::workflows::audit::AuditRun {
    let f = &fake.fleet;
    audit_fleet(
        f,
        f,
        f,
        f,
        &[BOUND.to_string(), OFF.to_string()],
        NOW,
        AuditThresholds::default(),
        AuditLimits::default(),
    )
    .await
    .expect("one-shot audit")
}

fn sorted(findings: &[Finding]) -> Vec<Finding> {
    let mut all = findings.to_vec();
    all.sort_by_key(finding_key);
    all
}

#[tokio::test]
async fn a_run_over_many_tiny_invocations_finds_what_the_one_shot_audit_finds() {
    let fake = fleet();
    deny_one(&fake);
    let run = one_shot(&fake).await;
    let expected = run.findings.clone();
    // Every check has something to find.
    let found: std::collections::BTreeSet<AuditCheck> = expected.findings().iter().map(|f| f.check).collect();
    assert_eq!(found.len(), AuditCheck::ALL.len(), "{:#?}", expected.findings());

    let audit = auditor(&fake, settings(1, 1));
    let invocations = until_done(&audit, &fake, NOW).await;
    assert!(invocations > 30, "one certificate per invocation: {invocations}");
    assert_eq!(sorted(&stored(&fake, NOW)), sorted(expected.findings()));
    let summary = latest(&fake);
    assert_eq!(summary.run_id, NOW);
    let by_check: Vec<(AuditCheck, u64)> = expected.by_check().into_iter().map(|(c, n)| (c, n as u64)).collect();
    assert_eq!(summary.by_check(), by_check);
    assert_eq!(summary.counts.len(), AuditCheck::ALL.len());
    assert_eq!(
        (summary.certificates, summary.cas, summary.records, summary.rotations),
        (
            run.certificates as u64,
            run.cas as u64,
            run.records as u64,
            run.rotations as u64
        )
    );
    // Every read of the fleet is counted: all calls but the run's own
    // writes, its state read once per invocation and the configuration once.
    let (calls, writes) = fake.with_store(|s| {
        let writes = s
            .calls
            .iter()
            .filter(|c| matches!(**c, "PutItem" | "BatchWriteItem"))
            .count();
        (s.calls.len(), writes)
    });
    assert_eq!(summary.reads.total() as usize, calls - writes - invocations - 1);

    // A larger budget: fewer invocations, the same findings.
    let fake2 = fleet();
    deny_one(&fake2);
    let audit2 = auditor(&fake2, settings(10, 3));
    let fewer = until_done(&audit2, &fake2, NOW).await;
    assert!(fewer < invocations);
    assert_eq!(sorted(&stored(&fake2, NOW)), sorted(expected.findings()));
}

#[tokio::test]
async fn every_crash_point_converges_to_the_same_findings_and_counts() {
    let clean = fleet();
    deny_one(&clean);
    let audit = auditor(&clean, settings(4, 2));
    until_done(&audit, &clean, NOW).await;
    let expected = sorted(&stored(&clean, NOW));
    let expected_counts = latest(&clean).counts;
    let calls = clean.with_store(|s| s.calls.len());
    assert!(calls > 100, "{calls}");
    for n in 0..calls + 5 {
        for inject in [Inject::Before(n), Inject::After(n)] {
            let fake = fleet();
            deny_one(&fake);
            fake.with_store(|s| s.inject = Some(inject));
            let audit = auditor(&fake, settings(4, 2));
            until_done(&audit, &fake, NOW).await;
            assert_eq!(sorted(&stored(&fake, NOW)), expected, "{inject:?}");
            assert_eq!(latest(&fake).counts, expected_counts, "{inject:?}");
        }
    }
}

#[tokio::test]
async fn two_overlapping_invocations_never_both_start_a_run() {
    let fake = fleet();
    deny_one(&fake);
    fake.with_store(|s| s.rendezvous = 2);
    let a = auditor(&fake, settings(1_000, 100));
    let b = auditor(&fake, settings(1_000, 100));
    let (ra, rb) = futures::join!(a.invoke(NOW, &Time(true)), b.invoke(NOW + 1, &Time(true)));
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!(
        [ra.started, rb.started].iter().filter(|s| **s).count(),
        1,
        "{ra:?} {rb:?}"
    );
    let lost = if ra.started { &rb } else { &ra };
    assert_eq!((lost.stop, lost.steps), (AuditStop::Lost, 0));
    // The winner's run completed, under the winner's start time only.
    let winner = if ra.started { &ra } else { &rb };
    assert_eq!(winner.stop, AuditStop::Completed);
    let run = winner.run_id.expect("run");
    assert_eq!(
        fake.with_store(|s| s.findings.keys().copied().collect::<Vec<_>>()),
        vec![run]
    );
}

#[tokio::test]
async fn two_overlapping_invocations_never_both_advance_the_same_step() {
    let fake = fleet();
    deny_one(&fake);
    // The run starts, and the invocation has no time for a step.
    let first = auditor(&fake, settings(1_000, 2))
        .invoke(NOW, &Time(false))
        .await
        .expect("start");
    assert_eq!((first.started, first.stop, first.steps), (true, AuditStop::TimeUp, 0));
    fake.with_store(|s| s.rendezvous = 2);
    let a = auditor(&fake, settings(1_000, 2));
    let b = auditor(&fake, settings(1_000, 2));
    let (ra, rb) = futures::join!(a.invoke(NOW + 5, &Time(true)), b.invoke(NOW + 5, &Time(true)));
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    let (winner, loser) = if ra.stop == AuditStop::Lost {
        (&rb, &ra)
    } else {
        (&ra, &rb)
    };
    assert_eq!((loser.stop, loser.steps), (AuditStop::Lost, 0), "{ra:?} {rb:?}");
    assert_eq!(winner.stop, AuditStop::Completed);
    // Version 1 (the start) plus the winner's steps: the loser saved nothing.
    let version = fake.with_store(|s| s.run.as_ref().map(|r| r.version));
    assert_eq!(version, Some(1 + u64::from(winner.steps)));
    // What both read and wrote for the contested step is the same: the
    // findings are those of a run alone.
    let alone = fleet();
    deny_one(&alone);
    until_done(&auditor(&alone, settings(1_000, 2)), &alone, NOW).await;
    assert_eq!(sorted(&stored(&fake, NOW)), sorted(&stored(&alone, NOW)));
    assert_eq!(latest(&fake).counts, latest(&alone).counts);
}

#[tokio::test]
async fn a_new_run_starts_only_after_the_interval_and_keeps_the_old_findings_apart() {
    let fake = fleet();
    deny_one(&fake);
    let s = settings(1_000, 100);
    let interval = s.interval_secs;
    let audit = auditor(&fake, s);
    let done = audit.invoke(NOW, &Time(true)).await.expect("run");
    assert_eq!((done.stop, done.run_id), (AuditStop::Completed, Some(NOW)));
    let writes = fake.with_store(|s| s.calls.len());
    let idle = audit.invoke(NOW + interval - 1, &Time(true)).await.expect("idle");
    assert_eq!((idle.stop, idle.run_id), (AuditStop::NotDue, None));
    // Only the state was read.
    assert_eq!(fake.with_store(|s| s.calls[writes..].to_vec()), vec!["GetItem"]);

    // The next run: one problem fixed (the stray certificate revoked).
    fake.fleet.with(|w| {
        if let Some(c) = w.iot.get_mut("stray") {
            c.1 = CertificateStatus::Revoked;
        }
    });
    let later = NOW + interval;
    let next = audit.invoke(later, &Time(false)).await.expect("start");
    assert_eq!((next.started, next.run_id), (true, Some(later)));
    // Until it completes, the latest summary is still the first run's.
    assert_eq!(latest(&fake).run_id, NOW);
    until_done(&audit, &fake, later).await;
    let summary = latest(&fake);
    assert_eq!(summary.run_id, later);
    let unrecorded = |run| {
        stored(&fake, run)
            .iter()
            .filter(|f| f.check == AuditCheck::ActiveCertUnrecorded)
            .count()
    };
    assert_eq!((unrecorded(NOW), unrecorded(later)), (1, 0));
    assert_eq!(summary.counts["ACTIVE_CERT_UNRECORDED"], 0);
}

#[tokio::test]
async fn the_budget_bounds_each_invocation_and_time_up_stops_before_a_step() {
    let fake = fleet();
    let audit = auditor(&fake, settings(3, 100));
    let mut saw_budget = false;
    for _ in 0..100 {
        let r = audit.invoke(NOW, &Time(true)).await.expect("invocation");
        assert!(r.certificates <= 3, "{r:?}");
        saw_budget |= r.stop == AuditStop::Budget;
        if r.stop == AuditStop::Completed {
            break;
        }
    }
    assert!(saw_budget);
    assert!(fake.with_store(|s| s.latest.is_some()));
}

#[tokio::test]
async fn a_failed_deny_list_lookup_ends_the_invocation_and_is_never_read_as_not_denied() {
    let fake = fleet();
    deny_one(&fake);
    fake.fleet.with(|w| w.failing_operations.insert("BatchGetItem"));
    let audit = auditor(&fake, settings(1_000, 100));
    for _ in 0..5 {
        let error = audit.invoke(NOW, &Time(true)).await.expect_err("fails closed");
        assert!(
            matches!(error, ScheduledAuditError::Port(ref e) if e.operation == "BatchGetItem"),
            "{error}"
        );
    }
    // Stuck at the first page of certificates, with no finding about any of them.
    let state = fake.with_store(|s| AuditRunState::from_json(&s.run.as_ref().expect("run").state, NOW).expect("state"));
    assert_eq!(
        (state.phase, state.ca_index, state.cursor.as_deref()),
        (AuditPhase::Certificates, 0, None)
    );
    assert!(
        stored(&fake, NOW)
            .iter()
            .all(|f| f.resource_kind != crate::checks::audit::ResourceKind::Certificate)
    );
    fake.fleet.with(|w| w.failing_operations.clear());
    until_done(&audit, &fake, NOW).await;
    assert!(
        stored(&fake, NOW)
            .iter()
            .any(|f| f.check == AuditCheck::ActiveCertDenied
                && f.resource_id == "denied"
                && f.severity == Severity::Critical)
    );
}

#[tokio::test]
async fn a_state_item_this_code_did_not_write_is_refused_and_left_alone() {
    let valid = AuditRunState::new(NOW - 100, vec![BOUND.to_string()]);
    let mut future = valid.clone();
    future.run_id = NOW + 30 * DAY; // would hold off every run for a month
    let mut beyond = valid.clone();
    beyond.phase = AuditPhase::Certificates;
    beyond.ca_index = 7;
    let mut foreign = valid.clone();
    foreign.ca_facts.push(CaFacts {
        certificate_id: "ca-attacker".into(),
        status: "INACTIVE".into(),
        not_after: 0,
        active_certificates: 0,
        active_named: Default::default(),
    });
    let mut counted = valid.clone();
    counted.counts.insert("NO_SUCH_CHECK".into(), 1);
    let mut done_early = valid.clone();
    done_early.phase = AuditPhase::Done;
    let cases = [
        ("not JSON".to_string(), "not a run state"),
        (
            r#"{"runId":1,"phase":"CAS","cas":[],"extra":1}"#.to_string(),
            "unknown field",
        ),
        (future.to_json().expect("json"), "after now"),
        (beyond.to_json().expect("json"), "CA index 7"),
        (foreign.to_json().expect("json"), "ca-attacker"),
        (counted.to_json().expect("json"), "NO_SUCH_CHECK"),
        (done_early.to_json().expect("json"), "finished_at"),
    ];
    for (state, why) in cases {
        let fake = fleet();
        fake.with_store(|s| {
            s.run = Some(StoredAuditRun {
                state: state.clone(),
                version: 9,
            })
        });
        let error = auditor(&fake, settings(1_000, 100))
            .invoke(NOW, &Time(true))
            .await
            .expect_err("refused");
        let text = error.to_string();
        assert!(
            matches!(error, ScheduledAuditError::BadState { item: "run state", .. }),
            "{text}"
        );
        assert!(text.contains(why), "{why}: {text}");
        // Nothing written: the item is as the attacker left it.
        assert_eq!(fake.with_store(|s| s.calls.clone()), vec!["GetItem"]);
        assert_eq!(fake.with_store(|s| s.run.as_ref().map(|r| r.version)), Some(9));
    }
    // The same checks hold the summary `--last` reads.
    assert!(AuditSummary::from_json(r#"{"runId":1}"#).is_err());
    let ok = valid.to_json().expect("json");
    assert_eq!(AuditRunState::from_json(&ok, NOW).expect("valid"), valid);
}

#[tokio::test]
async fn a_summary_of_a_later_run_written_by_someone_else_fails_the_finish_instead_of_hiding_every_run() {
    let fake = fleet();
    // An attacker's summary of a run a century away: every real summary
    // would lose to it.
    fake.with_store(|s| s.latest = Some((NOW + 100 * 365 * DAY, "{}".into())));
    let audit = auditor(&fake, settings(1_000, 100));
    let error = audit.invoke(NOW, &Time(true)).await.expect_err("refused");
    assert!(
        matches!(
            error,
            ScheduledAuditError::BadState {
                item: "latest summary",
                ..
            }
        ),
        "{error}"
    );
    // The run is not marked DONE: once the item is deleted, it finishes.
    fake.with_store(|s| s.latest = None);
    let done = audit.invoke(NOW, &Time(true)).await.expect("finishes");
    assert_eq!(done.stop, AuditStop::Completed);
    assert_eq!(latest(&fake).run_id, NOW);
}

#[tokio::test]
async fn the_run_id_is_the_now_given_and_every_check_is_judged_as_of_the_start() {
    let fake = fleet();
    let audit = auditor(&fake, settings(2, 2));
    let start = audit.invoke(NOW, &Time(true)).await.expect("start");
    assert_eq!(start.run_id, Some(NOW));
    // Invocations a year later continue the same run, judged as of its start:
    // nothing more expires.
    until_done(&audit, &fake, NOW + 365 * DAY).await;
    assert_eq!(latest(&fake).run_id, NOW);
    let expected = one_shot(&fake).await.findings;
    assert_eq!(sorted(&stored(&fake, NOW)), sorted(expected.findings()));
}

#[test]
fn the_counts_of_a_summary_name_every_check() {
    let summary = AuditSummary {
        run_id: 1,
        started_at: 1,
        finished_at: 2,
        counts: BTreeMap::from([("CERT_SHARED".to_string(), 2)]),
        certificates: 0,
        cas: 0,
        missing_cas: Vec::new(),
        records: 0,
        rotations: 0,
        policies_unaudited: 0,
        reads: AuditReads::default(),
    };
    let by_check = summary.by_check();
    assert_eq!(by_check.len(), AuditCheck::ALL.len());
    assert!(by_check.contains(&(AuditCheck::CertShared, 2)));
    let text = summary.to_json().expect("json");
    assert_eq!(AuditSummary::from_json(&text).expect("parses"), summary);
}

#[tokio::test]
async fn a_clean_device_costs_the_documented_reads() {
    // Ten devices, each ACTIVE, recorded, on one thing with one policy:
    // docs/audit.md's table, per device.
    let fake = AuditFake::default();
    let f = &fake.fleet;
    f.with(|w| {
        w.cas.insert(
            BOUND.into(),
            RegisteredCa {
                certificate_id: BOUND.into(),
                status: CertificateStatus::Active,
                pem: pems().ca.clone(),
                jitp: false,
            },
        );
        w.policy_documents.insert("device".into(), OWN_POLICY.into());
    });
    for i in 0..10 {
        let (id, thing) = (format!("c{i}"), format!("t{i}"));
        device(
            f,
            &d(
                &id,
                BOUND,
                CertificateStatus::Active,
                &[thing.as_str()],
                &["device"],
                Some(RecordStatus::Provisioned),
            ),
            &pems().long,
            NOW - DAY,
        );
    }
    let s = ScheduledAuditSettings {
        page_size: 5,
        default_ca_ids: vec![BOUND.to_string()],
        ..ScheduledAuditSettings::default()
    };
    let done = auditor(&fake, s).invoke(NOW, &Time(true)).await.expect("run");
    let summary = done.completed.expect("completed in one invocation");
    assert!(stored(&fake, NOW).is_empty());
    let r = summary.reads;
    // Per device: DescribeCertificate twice (listed, then its record),
    // ListPrincipalThings, ListAttachedPolicies, ListThingPrincipals, the
    // deny-list lookup and the record's GetItem.
    assert_eq!(
        (
            r.certificate_descriptions,
            r.principal_things,
            r.attached_policies,
            r.thing_principals,
            r.deny_lookups,
            r.record_reads,
            r.rotation_reads
        ),
        (20, 10, 10, 10, 10, 10, 0)
    );
    // Per page of 5: one listing page, one scan page; per CA and policy: one read.
    assert_eq!(
        (
            r.certificate_pages,
            r.inventory_pages,
            r.ca_descriptions,
            r.policy_documents,
            r.finding_pages
        ),
        (2, 2, 1, 1, 1)
    );
}
