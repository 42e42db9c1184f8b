//! Retirement over the rotation fake (extended with things, groups and
//! billing groups), including every crash point.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::policy::rotation::{RotationPolicy, Strategy};
use crate::testing::rotation::*;
use crate::workflows::rotation::rotator::{Rotator, RotatorSettings};

const GROUPS: [&str; 2] = ["fleet", "sensors-eu"];
const BILLING: &str = "billing-a";
const REASON: &str = "decommissioned: site closed";
const NOW: i64 = T0 + 3600;

type TestRetirement = Retirement<Fake, Fake, Fake, Fake, FakePacer>;

fn workflow(fake: &Fake) -> (TestRetirement, FakePacer) {
    let pacer = FakePacer::new();
    let retirement = Retirement::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        pacer.clone(),
        RetirementSettings::default(),
    );
    (retirement, pacer)
}

fn request(revoke: bool, keep_thing: bool) -> RetireRequest {
    RetireRequest {
        reason: REASON.into(),
        revoke,
        keep_thing,
    }
}

fn credentials_key(id: &str) -> String {
    format!("credentials/{}/{id}.json", thing(0))
}

/// Device `dev-0`: its first certificate (ACTIVE, with its credentials
/// record in the bucket) and a server-keygen rotation in progress (a
/// second certificate ACTIVE and attached, its key material in the bucket,
/// a queued job); in two thing groups and a billing group; IoT slow to see
/// the detachments (two "still attached" answers). Returns the two
/// certificate ids.
async fn device() -> (Fake, String, String) {
    let fake = Fake::new(Strategy::ServerKeygen, 1);
    let rotator = Rotator::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        FakePacer::new(),
        RotatorSettings::default(),
    );
    let mut started = false;
    for _ in 0..5 {
        if let Ok(report) = rotator.run(T0).await
            && report.errors == 0
        {
            started = true;
            break;
        }
    }
    assert!(started, "the rotation started");
    let old = old_id(&thing(0));
    let new = fake.with(|w| {
        let r = w.rotation_of(&thing(0));
        assert_eq!(r.state, RotationState::Issued, "{r:?}");
        let new = r.new_certificate_id.clone().expect("a new certificate");
        let key = credentials_key(&old);
        w.objects.insert(key.clone(), b"{}".to_vec());
        w.records.get_mut(&old).expect("record").credentials_key = Some(key);
        let t = w.things.get_mut(&thing(0)).expect("the thing");
        t.groups = GROUPS.iter().map(|g| g.to_string()).collect();
        t.billing_group = Some(BILLING.into());
        w.delete_lag = 2;
        w.calls.clear();
        new
    });
    assert_eq!(
        fake.with(|w| w
            .certs
            .values()
            .filter(|c| c.thing.as_deref() == Some(&thing(0)))
            .count()),
        2,
        "two certificates attached"
    );
    (fake, old, new)
}

/// A record: certificate label, status, detail, updated at, activated at.
type RecordView = (String, RecordStatus, Option<String>, i64, Option<i64>);

/// Everything a retirement can leave behind, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EndState {
    /// Certificates still in IoT: id, status, thing, policies.
    certs: Vec<(String, String, Option<String>, Vec<String>)>,
    thing: Option<FakeThing>,
    claim: Option<String>,
    tickets: usize,
    objects: Vec<String>,
    jobs: Vec<String>,
    /// Records: id, status, detail, updated_at, activated_at.
    records: Vec<RecordView>,
    /// The rotation: state, reason, due.
    rotation: (RotationState, Option<FailureReason>, Option<i64>),
}

trait SortedByLabel {
    fn sorted(self) -> Self;
}

impl<A: Ord + Clone, B, C, D> SortedByLabel for Vec<(A, B, C, D)> {
    fn sorted(mut self) -> Self {
        self.sort_by(|x, y| x.0.cmp(&y.0));
        self
    }
}

impl<A: Ord + Clone, B, C, D, E> SortedByLabel for Vec<(A, B, C, D, E)> {
    fn sorted(mut self) -> Self {
        self.sort_by(|x, y| x.0.cmp(&y.0));
        self
    }
}

/// Certificate ids as `old` (the device's first) or `new` (the rotation's,
/// made afresh in each run).
fn label(id: &str) -> String {
    if id == old_id(&thing(0)) {
        "old".into()
    } else {
        "new".into()
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
                    c.status.as_str().to_string(),
                    c.thing.clone(),
                    c.policies.iter().cloned().collect(),
                )
            })
            .collect::<Vec<_>>()
            .sorted(),
        thing: w.things.get(&thing(0)).cloned(),
        claim: w.claims.get(&thing(0)).map(|id| label(id)),
        tickets: w.retirements.len(),
        objects: w.objects.keys().cloned().collect(),
        jobs: w.jobs.values().map(|j| j.status.clone()).collect(),
        records: w
            .records
            .values()
            .map(|r| {
                (
                    label(&r.certificate_id),
                    r.status,
                    r.detail.clone(),
                    r.updated_at,
                    r.activated_at,
                )
            })
            .collect::<Vec<_>>()
            .sorted(),
        rotation: {
            let r = w.rotation_of(&thing(0));
            (r.state, r.reason, r.due_at)
        },
    })
}

/// Runs the retirement until it succeeds (at most ten runs), as an
/// operator runs the command again.
async fn retire_until_done(fake: &Fake, request: &RetireRequest) -> RetireOutcome {
    let (retirement, _) = workflow(fake);
    for _ in 0..10 {
        if let Ok(outcome) = retirement.retire(&thing(0), request, NOW).await {
            return outcome;
        }
    }
    panic!("the retirement did not converge");
}

async fn scenario(request: RetireRequest, inject: Option<Inject>) -> (EndState, Vec<&'static str>) {
    let (fake, _, _) = device().await;
    fake.with(|w| w.inject = inject);
    retire_until_done(&fake, &request).await;
    let calls = fake.with(|w| w.calls.clone());
    (end_state(&fake), calls)
}

/// Every call of a retirement fails once, before its effect and after it,
/// and the retirement is run again: the end state is the uninterrupted one.
async fn crash_anywhere_converges(request: RetireRequest) -> EndState {
    let (reference, calls) = scenario(request.clone(), None).await;
    assert!(calls.len() > 25, "{calls:?}");
    for (n, op) in calls.iter().enumerate() {
        for inject in [Inject::Before(n), Inject::After(n)] {
            let (end, _) = scenario(request.clone(), Some(inject)).await;
            assert_eq!(end, reference, "failure {inject:?} of {op}");
        }
    }
    reference
}

fn assert_retired_records(end: &EndState) {
    let expected = vec![
        (
            "new".to_string(),
            RecordStatus::Retired,
            Some(REASON.to_string()),
            NOW,
            None,
        ),
        (
            "old".to_string(),
            RecordStatus::Retired,
            Some(REASON.to_string()),
            NOW,
            None,
        ),
    ];
    assert_eq!(end.records, expected, "both records RETIRED with time and reason");
    assert_eq!(
        end.rotation,
        (RotationState::Failed, Some(FailureReason::Retired), None),
        "the rotation failed RETIRED, never due again"
    );
    assert!(end.jobs.iter().all(|s| s == "CANCELED"), "{:?}", end.jobs);
    assert_eq!(
        end.objects,
        Vec::<String>::new(),
        "credentials and key material deleted"
    );
    assert_eq!(end.tickets, 0, "the retirement is finished");
}

#[tokio::test]
async fn a_retirement_interrupted_at_any_step_converges_on_nothing_but_retired_records() {
    let end = crash_anywhere_converges(request(false, false)).await;
    assert_retired_records(&end);
    assert_eq!(end.certs, Vec::new(), "every certificate deleted in IoT");
    assert_eq!(end.thing, None, "the thing deleted");
    assert_eq!(end.claim, None, "the name released");
}

#[tokio::test]
async fn a_keep_thing_retirement_interrupted_at_any_step_converges() {
    let end = crash_anywhere_converges(request(false, true)).await;
    assert_retired_records(&end);
    assert_eq!(end.certs, Vec::new(), "the credentials are cut");
    assert_eq!(
        end.thing,
        Some(FakeThing {
            groups: GROUPS.iter().map(|g| g.to_string()).collect(),
            billing_group: Some(BILLING.into()),
        }),
        "the thing keeps its groups"
    );
    assert_eq!(end.claim.as_deref(), Some("old"), "the name stays claimed");
}

#[tokio::test]
async fn a_revoking_retirement_interrupted_at_any_step_converges_on_revoked_detached_certificates() {
    let end = crash_anywhere_converges(request(true, false)).await;
    assert_retired_records(&end);
    let expected = vec![
        ("new".to_string(), "REVOKED".to_string(), None, Vec::new()),
        ("old".to_string(), "REVOKED".to_string(), None, Vec::new()),
    ];
    assert_eq!(end.certs, expected, "kept REVOKED, attached to nothing");
    assert_eq!((end.thing, end.claim), (None, None));
}

#[tokio::test]
async fn a_resumed_retirement_keeps_the_flags_it_was_claimed_with() {
    // Where the claim is in an uninterrupted run.
    let (_, calls) = scenario(request(false, true), None).await;
    let claim = calls.iter().position(|c| *c == "claim_retirement").expect("a claim");
    let (fake, _, _) = device().await;
    // Interrupted right after the claim of a keep-thing retirement...
    fake.with(|w| w.inject = Some(Inject::After(claim)));
    let (retirement, _) = workflow(&fake);
    assert!(retirement.retire(&thing(0), &request(false, true), NOW).await.is_err());
    assert_eq!(fake.with(|w| w.calls[claim]), "claim_retirement");
    assert_eq!(fake.with(|w| w.retirements.len()), 1, "claimed");
    // ...and run again without --keep-thing: the claim's flags win.
    let outcome = retirement
        .retire(&thing(0), &request(false, false), NOW + 60)
        .await
        .expect("resumed");
    assert_eq!(outcome.label(), "resumed");
    let end = end_state(&fake);
    assert!(end.thing.is_some(), "the thing kept, as first asked");
    assert_eq!(end.claim.as_deref(), Some("old"));
}

#[tokio::test]
async fn the_thing_is_deleted_after_iot_stops_reporting_principals_with_bounded_backoff() {
    let (fake, _, _) = device().await;
    fake.with(|w| w.delete_lag = 3);
    let (retirement, pacer) = workflow(&fake);
    let outcome = retirement
        .retire(&thing(0), &request(false, false), NOW)
        .await
        .expect("retired");
    assert!(matches!(
        outcome,
        RetireOutcome::Retired {
            thing_deleted: true,
            ..
        }
    ));
    assert_eq!(
        pacer.sleeps(),
        vec![
            Duration::from_millis(250),
            Duration::from_millis(500),
            Duration::from_millis(1000)
        ]
    );

    // IoT never catches up within one run: the run stops (retryable), a
    // later one finishes.
    let (fake, _, _) = device().await;
    fake.with(|w| w.delete_lag = 100);
    let (retirement, pacer) = workflow(&fake);
    let error = retirement
        .retire(&thing(0), &request(false, false), NOW)
        .await
        .expect_err("still attached");
    assert!(
        matches!(error, RetirementError::StillAttached { attempts: 8, .. }),
        "{error}"
    );
    assert!(error.is_transient());
    assert_eq!(pacer.sleeps().len(), 7);
    assert!(pacer.sleeps().iter().all(|d| *d <= Duration::from_secs(4)));
    assert_eq!(
        fake.with(|w| w.retirements.len()),
        1,
        "still claimed: a later run resumes it"
    );
    fake.with(|w| w.delete_lag = 0);
    let outcome = retirement
        .retire(&thing(0), &request(false, false), NOW)
        .await
        .expect("retired");
    assert_eq!(outcome.label(), "resumed");
    assert_eq!(end_state(&fake).thing, None);
}

#[tokio::test]
async fn the_plan_lists_everything_and_changes_nothing() {
    let (fake, old, new) = device().await;
    let before = end_state(&fake);
    let (retirement, _) = workflow(&fake);
    let plan = retirement.plan(&thing(0)).await.expect("plan");
    assert_eq!(end_state(&fake), before, "nothing changed");
    let ops: BTreeSet<&str> = fake.with(|w| w.calls.iter().copied().collect());
    let reads = [
        "retirement",
        "attached_principals",
        "principal_things",
        "rotation",
        "thing_membership",
        "certificate",
        "certificate_record",
        "policies",
    ];
    assert!(ops.iter().all(|op| reads.contains(op)), "only reads: {ops:?}");

    let ids: Vec<&str> = plan.certificates.iter().map(|c| c.certificate_id.as_str()).collect();
    let mut expected = vec![old.as_str(), new.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        plan.certificates
            .iter()
            .all(|c| c.status == Some(CertificateStatus::Active)
                && c.policies == vec![POLICY.to_string()]
                && c.record_status == Some("PROVISIONED"))
    );
    let membership = plan.membership.clone().expect("the thing exists");
    assert_eq!(membership.thing_groups, GROUPS.to_vec());
    assert_eq!(membership.billing_group.as_deref(), Some(BILLING));
    assert_eq!(plan.rotations.len(), 1);
    assert!(plan.rotations[0].to_stop && plan.rotations[0].state == RotationState::Issued);
    assert!(plan.objects.contains(&credentials_key(&old)));
    assert_eq!(
        plan.objects.len(),
        3,
        "credentials record and the rotation's two objects: {:?}",
        plan.objects
    );
    assert!(!plan.is_empty() && plan.in_progress.is_none() && plan.shared.is_empty());
}

#[tokio::test]
async fn a_certificate_shared_with_another_thing_is_only_detached() {
    let (fake, old, _) = device().await;
    // A certificate attached by hand to dev-0 and, non-exclusively, to dev-9.
    let shared = "5".repeat(64);
    fake.with(|w| {
        w.certs.insert(
            shared.clone(),
            FakeCert {
                arn: arn(&shared),
                status: CertificateStatus::Active,
                pem: "shared".into(),
                thing: Some(thing(0)),
                policies: BTreeSet::from([POLICY.to_string()]),
                ca: None,
            },
        );
        w.also_attached.insert(shared.clone(), vec!["dev-9".into()]);
    });
    // And one IoT attaches to dev-0 only, but the inventory records for dev-8.
    let recorded_elsewhere = "6".repeat(64);
    fake.with(|w| {
        w.certs.insert(
            recorded_elsewhere.clone(),
            FakeCert {
                arn: arn(&recorded_elsewhere),
                status: CertificateStatus::Active,
                pem: "elsewhere".into(),
                thing: Some(thing(0)),
                policies: BTreeSet::from([POLICY.to_string()]),
                ca: None,
            },
        );
        let mut record = CertificateRecord::bare(&recorded_elsewhere, CA, RecordStatus::Provisioned, T0);
        record.thing_name = Some("dev-8".into());
        w.records.insert(recorded_elsewhere.clone(), record);
    });
    let (retirement, _) = workflow(&fake);
    let plan = retirement.plan(&thing(0)).await.expect("plan");
    let mut expected = vec![
        (shared.clone(), vec!["dev-9".to_string()]),
        (recorded_elsewhere.clone(), vec!["dev-8".to_string()]),
    ];
    expected.sort();
    let mut found = plan.shared.clone();
    found.sort();
    assert_eq!(found, expected);
    let ids: Vec<&str> = plan.certificates.iter().map(|c| c.certificate_id.as_str()).collect();
    assert!(!ids.contains(&shared.as_str()), "not the device's alone: {ids:?}");

    retire_until_done(&fake, &request(false, false)).await;
    fake.with(|w| {
        let kept = w.certs.get(&shared).expect("the shared certificate is kept");
        assert_eq!(kept.status, CertificateStatus::Active, "the other thing is not cut off");
        assert_eq!(kept.thing, None, "detached from the retired thing");
        assert_eq!(kept.policies, BTreeSet::from([POLICY.to_string()]));
        assert!(!w.records.contains_key(&shared), "no RETIRED record for it");
        let elsewhere = w.certs.get(&recorded_elsewhere).expect("kept");
        assert_eq!(
            (elsewhere.status.clone(), elsewhere.thing.clone()),
            (CertificateStatus::Active, None)
        );
        assert_eq!(w.records[&recorded_elsewhere].status, RecordStatus::Provisioned);
        assert!(!w.certs.contains_key(&old), "the device's own certificate deleted");
        assert_eq!(w.records[&old].status, RecordStatus::Retired);
        assert!(!w.things.contains_key(&thing(0)), "the thing deleted");
    });
}

#[tokio::test]
async fn an_unknown_thing_is_nothing_to_retire_and_nothing_is_written() {
    let (fake, _, _) = device().await;
    let before = end_state(&fake);
    let (retirement, _) = workflow(&fake);
    let outcome = retirement
        .retire("no-such-thing", &request(false, false), NOW)
        .await
        .expect("answered");
    assert_eq!(outcome.label(), "nothing_to_retire");
    assert!(retirement.plan("no-such-thing").await.expect("plan").is_empty());
    assert_eq!(end_state(&fake), before);
    // A finished retirement run again finds nothing more to do.
    retire_until_done(&fake, &request(false, false)).await;
    let after = end_state(&fake);
    assert_eq!(
        retire_until_done(&fake, &request(false, false)).await.label(),
        "nothing_to_retire"
    );
    assert_eq!(end_state(&fake), after);
}

#[tokio::test]
async fn confirmed_and_failed_rotations_are_stopped_too() {
    // A confirmed rotation (the device confirmed, the completion not yet run).
    let (fake, old, _) = device().await;
    fake.with(|w| {
        let r = w.rotation_of(&thing(0));
        let confirmed = r.confirmed(T0 + 60).expect("confirmable");
        w.rotations.insert(old.clone(), confirmed);
    });
    retire_until_done(&fake, &request(false, false)).await;
    let end = end_state(&fake);
    assert_retired_records(&end);
    assert_eq!((end.certs, end.thing, end.claim), (Vec::new(), None, None));

    // A failed rotation waiting for its retry: given up, never due again.
    let (fake, old, new) = device().await;
    fake.with(|w| {
        let r = w.rotation_of(&thing(0));
        let failed = r
            .failed(
                FailureReason::JobFailed,
                "device said no",
                &RotationPolicy::default(),
                T0 + 60,
            )
            .expect("failable");
        assert!(failed.due_at.is_some(), "a retry is pending");
        w.rotations.insert(old.clone(), failed);
        // Its clean-up already ran: the new certificate revoked and detached.
        let cert = w.certs.get_mut(&new).expect("new");
        cert.status = CertificateStatus::Revoked;
        cert.thing = None;
        cert.policies.clear();
    });
    retire_until_done(&fake, &request(false, false)).await;
    let r = fake.with(|w| w.rotation_of(&thing(0)));
    assert_eq!(
        (r.state, r.reason, r.due_at),
        (RotationState::Failed, Some(FailureReason::JobFailed), None)
    );
    assert!(r.detail.as_deref().is_some_and(|d| d.contains("retired")), "{r:?}");
    let records: BTreeMap<String, RecordStatus> =
        fake.with(|w| w.records.iter().map(|(id, r)| (id.clone(), r.status)).collect());
    assert_eq!(records.get(&old), Some(&RecordStatus::Retired));
    assert_eq!(
        records.get(&new),
        Some(&RecordStatus::Retired),
        "found through the rotation though detached"
    );
    assert!(fake.with(|w| w.certs.is_empty()));
}

/// Two operators retiring the same device at once: a second retirement
/// runs to its end right before each call of the first; the first then
/// finishes (run again if it failed). The end state is the one of a single
/// uninterrupted retirement.
#[tokio::test]
async fn two_retirements_of_one_device_at_once_converge() {
    let (reference, calls) = scenario(request(false, false), None).await;
    for (k, op) in calls.iter().enumerate() {
        let (fake, _, _) = device().await;
        let other = fake.clone();
        let hook: Hook = Box::new(move || {
            let (second, _) = workflow(&other);
            let outcome = run_now(second.retire(&thing(0), &request(false, false), NOW));
            assert!(outcome.is_ok(), "the second retirement, before call {k}: {outcome:?}");
        });
        fake.with(|w| w.interleave = Some((k, hook)));
        let (first, _) = workflow(&fake);
        let _ = first.retire(&thing(0), &request(false, false), NOW).await;
        assert!(fake.with(|w| w.interleave.is_none()), "the second ran before call {k}");
        retire_until_done(&fake, &request(false, false)).await;
        assert_eq!(end_state(&fake), reference, "second retirement before call {k} ({op})");
    }
}

/// A device revoked in an emergency is retired later: the retirement takes
/// the revoked certificates as they are (never back to `INACTIVE`), stops
/// nothing twice, releases the name the revocation held, and leaves only
/// RETIRED records; the deny-list entries stay, so the certificates stay
/// refused everywhere.
#[tokio::test]
async fn a_revoked_device_retired_later_frees_its_name_and_keeps_its_denials() {
    use crate::workflows::revocation::{Revocation, RevocationTarget};
    let (fake, _, _) = device().await;
    let revocation = Revocation::new(fake.clone(), fake.clone(), fake.clone(), fake.clone(), FakePacer::new());
    revocation
        .revoke(&RevocationTarget::Thing(thing(0)), "key stolen", NOW - 60)
        .await
        .expect("revoked");
    let denied = fake.with(|w| {
        assert!(w.held.contains(&thing(0)), "the revocation holds the name");
        assert!(
            w.certs.values().all(|c| c.status == CertificateStatus::Revoked),
            "every certificate REVOKED"
        );
        w.denied.clone()
    });
    assert!(!denied.is_empty(), "the revocation denied the certificates");

    retire_until_done(&fake, &request(false, false)).await;
    let end = end_state(&fake);
    assert_eq!(end.certs, Vec::new(), "every certificate deleted in IoT");
    assert_eq!(end.thing, None, "the thing deleted");
    assert_eq!(end.claim, None, "the held name released by the retirement");
    assert_eq!(end.tickets, 0, "the retirement is finished");
    assert!(
        end.records.iter().all(|r| r.1 == RecordStatus::Retired),
        "{:?}",
        end.records
    );
    fake.with(|w| {
        assert!(!w.held.contains(&thing(0)), "no hold left on the name");
        assert_eq!(w.denied, denied, "the deny-list entries stay");
    });
}
