//! The fleet audit collector over the in-memory fake: what it finds, what it
//! reads, its bounds, and that every failed read fails the audit.

#![allow(clippy::expect_used)]

use super::*;
use crate::checks::audit::{AuditCheck, Severity};
use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::RecordStatus;
use crate::policy::rotation::RotationPolicy;
use crate::policy::rotation::state::{FailureReason, RotationState};
use crate::ports::RegisteredCa;
use crate::testing::ca::ca_pem;
use crate::testing::reconciler::{BOUND, Fake, NOW};

const DAY: i64 = 86_400;
const OWN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/devices/${iot:Connection.Thing.ThingName}/*"}]}"#;
const WIDE_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;

fn bound_ca(fake: &Fake, id: &str, status: CertificateStatus) {
    fake.with(|w| {
        w.cas.insert(
            id.into(),
            RegisteredCa {
                certificate_id: id.into(),
                status,
                pem: ca_pem(NOW, 1_000),
                jitp: false,
            },
        )
    });
}

/// A certificate in IoT under `ca` ("" for none), valid 200 more days,
/// created 10 days ago, attached to `things` and to `policies`.
fn device(fake: &Fake, id: &str, ca: &str, status: CertificateStatus, things: &[&str], policies: &[&str]) -> String {
    let pem = ca_pem(NOW, 200);
    fake.cert(id, ca, status, Some(NOW - 10 * DAY));
    fake.with(|w| {
        w.pems.insert(id.into(), pem.clone());
        w.attached_things
            .insert(id.into(), things.iter().map(|t| t.to_string()).collect());
        w.attached_policies
            .insert(id.into(), policies.iter().map(|p| p.to_string()).collect());
        w.policy_documents.insert("device".into(), OWN_POLICY.into());
        w.policy_documents.insert("wide".into(), WIDE_POLICY.into());
    });
    Certificate::from_pem(&pem).map(|c| c.fingerprint).unwrap_or_default()
}

fn record(fake: &Fake, id: &str, ca: &str, status: RecordStatus, thing: &str) {
    fake.record(id, ca, status);
    fake.with(|w| {
        if let Some(r) = w.records.get_mut(id) {
            r.thing_name = Some(thing.into());
        }
    });
}

/// A clean device: ACTIVE, recorded, one thing, its own policy.
fn clean(fake: &Fake, id: &str, thing: &str) {
    device(fake, id, BOUND, CertificateStatus::Active, &[thing], &["device"]);
    record(fake, id, BOUND, RecordStatus::Provisioned, thing);
}

async fn audit(fake: &Fake, limits: AuditLimits) -> Result<AuditRun, AuditError> {
    audit_fleet(
        fake,
        fake,
        fake,
        fake,
        &[BOUND.to_string()],
        NOW,
        AuditThresholds::default(),
        limits,
    )
    .await
}

fn found(run: &AuditRun) -> Vec<(&'static str, String)> {
    let mut found: Vec<_> = run
        .findings
        .findings()
        .iter()
        .map(|f| (f.check.code(), f.resource_id.clone()))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_clean_fleet_has_no_finding_and_costs_the_documented_reads() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Active);
    clean(&fake, "c1", "t1");
    clean(&fake, "c2", "t2");
    let run = audit(&fake, AuditLimits::default()).await.expect("audit");
    assert_eq!(found(&run), Vec::<(&str, String)>::new());
    assert_eq!((run.certificates, run.cas, run.records), (2, 1, 2));
    // Per certificate: describe, things, policies, deny-list; per CA: describe,
    // one listing page; one inventory page; one GetPolicy per distinct policy.
    let reads = run.reads;
    assert_eq!(
        (
            reads.certificate_descriptions,
            reads.principal_things,
            reads.attached_policies,
            reads.deny_lookups
        ),
        (2, 2, 2, 2)
    );
    assert_eq!(
        (
            reads.ca_descriptions,
            reads.certificate_pages,
            reads.inventory_pages,
            reads.policy_documents
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        reads.total() as usize,
        fake.with(|w| w.audit_calls.len() + w.listed.len())
    );
}

#[tokio::test]
async fn planted_problems_are_found_with_their_check_ids() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Active);
    clean(&fake, "clean", "t-clean");
    // A certificate attached to two things.
    device(
        &fake,
        "shared",
        BOUND,
        CertificateStatus::Active,
        &["t-a", "t-b"],
        &["device"],
    );
    record(&fake, "shared", BOUND, RecordStatus::Provisioned, "t-a");
    // An ACTIVE certificate with no record.
    device(&fake, "stray", BOUND, CertificateStatus::Active, &["t-stray"], &[]);
    // A wildcard policy on a device certificate.
    device(
        &fake,
        "broad",
        BOUND,
        CertificateStatus::Active,
        &["t-broad"],
        &["wide"],
    );
    record(&fake, "broad", BOUND, RecordStatus::Provisioned, "t-broad");
    // A record whose certificate was deleted.
    record(&fake, "deleted", BOUND, RecordStatus::Provisioned, "t-deleted");
    // A denied ACTIVE certificate.
    let fingerprint = device(&fake, "denied", BOUND, CertificateStatus::Active, &["t-denied"], &[]);
    record(&fake, "denied", BOUND, RecordStatus::Provisioned, "t-denied");
    fake.with(|w| {
        w.denied
            .insert(fingerprint, Rejection::new(RejectReason::FingerprintDenied, "stolen"))
    });

    let run = audit(&fake, AuditLimits::default()).await.expect("audit");
    assert_eq!(
        found(&run),
        vec![
            ("ACTIVE_CERT_DENIED", "denied".to_string()),
            ("ACTIVE_CERT_UNRECORDED", "stray".to_string()),
            ("CERT_SHARED", "shared".to_string()),
            ("POLICY_OVERLY_PERMISSIVE", "wide".to_string()),
            ("RECORD_CERT_MISSING", "deleted".to_string()),
        ]
    );
    assert!(run.findings.fails(Severity::High));
    // The deleted certificate was looked up by id, once, and found gone.
    assert_eq!(run.reads.certificate_descriptions, 6);
    assert_eq!(run.certificates, 5);
}

#[tokio::test]
async fn rotated_certificates_outside_every_ca_are_described_by_id() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Active);
    // The old certificate under the CA, rotated; its successor from
    // CreateCertificateFromCsr, under no CA, on the same thing, shared too.
    device(&fake, "old", BOUND, CertificateStatus::Inactive, &["t1"], &["device"]);
    record(&fake, "old", BOUND, RecordStatus::Rotated, "t1");
    device(&fake, "new", "", CertificateStatus::Active, &["t1", "t2"], &["device"]);
    record(&fake, "new", BOUND, RecordStatus::Provisioned, "t1");
    // A failed rotation, given up.
    let policy = RotationPolicy::default();
    let old = crate::model::record::CertificateRecord::bare("old", BOUND, RecordStatus::Rotated, NOW);
    let mut rotation = Rotation::requested(&old, "t1", "p", &policy, 1, NOW - DAY);
    rotation.state = RotationState::Failed;
    rotation.reason = Some(FailureReason::CsrRefused);
    rotation.due_at = None;
    fake.with(|w| w.rotations.insert("old".into(), rotation));

    let run = audit(&fake, AuditLimits::default()).await.expect("audit");
    assert_eq!(
        found(&run),
        vec![
            ("CERT_SHARED", "new".to_string()),
            ("ROTATION_FAILED", "old".to_string()),
        ]
    );
    assert_eq!((run.certificates, run.rotations), (2, 1));
    // The new certificate, listed under no CA, was never reported missing.
    assert!(
        !run.findings
            .findings()
            .iter()
            .any(|f| f.check == AuditCheck::RecordCertMissing)
    );
}

#[tokio::test]
async fn every_page_is_read_and_the_limits_end_the_run_with_an_error() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Active);
    for i in 0..7 {
        clean(&fake, &format!("c{i}"), &format!("t{i}"));
    }
    let small = AuditLimits {
        page_size: 2,
        max_certificates: 7,
        max_inventory_items: 7,
    };
    let run = audit(&fake, small).await.expect("audit");
    assert_eq!(run.certificates, 7);
    assert_eq!(run.reads.certificate_pages, 4);
    assert_eq!(run.reads.inventory_pages, 4);
    assert!(run.findings.is_empty());

    let fewer = AuditLimits {
        max_certificates: 6,
        ..small
    };
    assert!(matches!(
        audit(&fake, fewer).await,
        Err(AuditError::TooManyCertificates { limit: 6 })
    ));
    let fewer_items = AuditLimits {
        max_inventory_items: 6,
        ..small
    };
    assert!(matches!(
        audit(&fake, fewer_items).await,
        Err(AuditError::TooManyInventoryItems { limit: 6 })
    ));
    // A record beyond the listing counts towards the certificates too.
    record(&fake, "gone", BOUND, RecordStatus::Provisioned, "t-gone");
    let listed_only = AuditLimits {
        max_inventory_items: 8,
        ..small
    };
    assert!(matches!(
        audit(&fake, listed_only).await,
        Err(AuditError::TooManyCertificates { limit: 7 })
    ));
}

#[tokio::test]
async fn a_failed_deny_list_lookup_fails_the_audit_instead_of_passing_the_certificate() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Active);
    let fingerprint = device(&fake, "denied", BOUND, CertificateStatus::Active, &["t"], &[]);
    record(&fake, "denied", BOUND, RecordStatus::Provisioned, "t");
    fake.with(|w| {
        w.denied
            .insert(fingerprint, Rejection::new(RejectReason::FingerprintDenied, "stolen"));
        w.failing_operations.insert("BatchGetItem");
    });
    let error = audit(&fake, AuditLimits::default()).await.expect_err("fails closed");
    assert!(
        matches!(error, AuditError::Port(ref e) if e.operation == "BatchGetItem"),
        "{error}"
    );
}

#[tokio::test]
async fn every_failed_read_fails_the_audit() {
    for operation in [
        "Scan",
        "DescribeCACertificate",
        "DescribeCertificate",
        "ListPrincipalThings",
        "ListAttachedPolicies",
        "GetPolicy",
        "BatchGetItem",
    ] {
        let fake = Fake::default();
        bound_ca(&fake, BOUND, CertificateStatus::Active);
        clean(&fake, "c1", "t1");
        fake.with(|w| w.failing_operations.insert(operation));
        match audit(&fake, AuditLimits::default()).await {
            Err(AuditError::Port(e)) => assert_eq!(e.operation, operation),
            other => panic!("{operation}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_inactive_ca_and_an_unregistered_one_are_reported() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Inactive);
    clean(&fake, "c1", "t1");
    let run = audit_fleet(
        &fake,
        &fake,
        &fake,
        &fake,
        &[BOUND.to_string(), "ca-gone".to_string()],
        NOW,
        AuditThresholds::default(),
        AuditLimits::default(),
    )
    .await
    .expect("audit");
    assert_eq!(found(&run), vec![("INACTIVE_CA_ACTIVE_CERTS", BOUND.to_string())]);
    assert_eq!(run.missing_cas, vec!["ca-gone".to_string()]);
}

#[tokio::test]
async fn a_certificate_pem_that_does_not_parse_fails_the_audit() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Active);
    clean(&fake, "c1", "t1");
    fake.with(|w| w.pems.insert("c1".into(), "not a pem".into()));
    assert!(matches!(
        audit(&fake, AuditLimits::default()).await,
        Err(AuditError::UnreadableCertificate { ref certificate_id, .. }) if certificate_id == "c1"
    ));
}

/// A listing that hands back the cursor it was given: a page read forever.
struct StuckListing;

impl CaCertificates for StuckListing {
    async fn certificates_of_ca(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> crate::ports::PortResult<crate::ports::Page<crate::ports::ListedCertificate>> {
        Ok(crate::ports::Page {
            items: Vec::new(),
            cursor: Some("again".into()),
        })
    }
}

#[tokio::test]
async fn a_listing_that_repeats_its_cursor_fails_instead_of_auditing_part_of_the_fleet() {
    let fake = Fake::default();
    bound_ca(&fake, BOUND, CertificateStatus::Active);
    let result = audit_fleet(
        &StuckListing,
        &fake,
        &fake,
        &fake,
        &[BOUND.to_string()],
        NOW,
        AuditThresholds::default(),
        AuditLimits::default(),
    )
    .await;
    assert!(
        matches!(result, Err(AuditError::Port(ref e)) if e.operation == "ListCertificatesByCA"),
        "{result:?}"
    );
}
