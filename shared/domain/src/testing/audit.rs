//! An in-memory fake of the scheduled audit's ports: the reconciler's
//! [`Fake`] fleet (IoT, inventory, deny-list) behind a counter of every call,
//! with the crash-point injection of the other fakes ([`Inject`]), and the
//! audit's own items (run state with its version, findings by run, latest
//! summary).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Poll, Waker};

use crate::checks::audit::Finding;
use crate::model::reason::Rejection;
use crate::model::record::CertificateRecord;
use crate::policy::config::OnboardingConfig;
use crate::policy::rotation::state::Rotation;
use crate::ports::{
    AuditInventory, AuditIot, AuditRunStore, CaCertificates, DenyList, DescribedCertificate, Inventory, InventoryItem,
    ListedCertificate, NameClaim, NameClaims, Page, PortError, PortErrorKind, PortResult, RegisteredCa, StoredAuditRun,
    TimeLeft,
};
use crate::testing::inject::Inject;
use crate::testing::reconciler::{Fake, page};

/// The audit's own items and the call log.
#[derive(Default)]
pub struct AuditStore {
    pub run: Option<StoredAuditRun>,
    /// Findings by run id, by key (check, kind, resource id).
    pub findings: BTreeMap<i64, BTreeMap<String, Finding>>,
    /// The latest summary: (run id, JSON).
    pub latest: Option<(i64, String)>,
    /// Every call, by operation, in order.
    pub calls: Vec<&'static str>,
    pub inject: Option<Inject>,
    /// Saves of the run state that wait for one another (a rendezvous of
    /// two overlapping invocations); 0: none wait.
    pub rendezvous: usize,
    arrived: usize,
    waiting: Vec<Waker>,
}

/// The fleet and the audit's items, cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct AuditFake {
    pub fleet: Fake,
    pub store: Arc<StdMutex<AuditStore>>,
}

/// The key a finding is stored under.
pub fn finding_key(f: &Finding) -> String {
    format!("{}#{}#{}", f.check.code(), f.resource_kind.as_str(), f.resource_id)
}

/// Always time left, or never.
pub struct Time(pub bool);

impl TimeLeft for Time {
    fn time_left(&self) -> bool {
        self.0
    }
}

impl AuditFake {
    pub fn with_store<R>(&self, f: impl FnOnce(&mut AuditStore) -> R) -> R {
        let mut store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut store)
    }

    /// Call number `n` of `op`, failed where the injection says, before.
    fn before(&self, op: &'static str) -> PortResult<usize> {
        self.with_store(|s| {
            let n = s.calls.len();
            s.calls.push(op);
            if s.inject == Some(Inject::Before(n)) {
                s.inject = None;
                return Err(PortError::new(
                    op,
                    PortErrorKind::Transient,
                    format!("injected before call {n}"),
                ));
            }
            Ok(n)
        })
    }

    fn after(&self, n: usize, op: &'static str) -> PortResult<()> {
        self.with_store(|s| {
            if s.inject == Some(Inject::After(n)) {
                s.inject = None;
                return Err(PortError::new(
                    op,
                    PortErrorKind::Transient,
                    format!("injected after call {n}"),
                ));
            }
            Ok(())
        })
    }

    async fn call<T>(&self, op: &'static str, effect: impl Future<Output = PortResult<T>>) -> PortResult<T> {
        let n = self.before(op)?;
        let value = effect.await?;
        self.after(n, op)?;
        Ok(value)
    }

    /// Waits, while a rendezvous is set, until as many saves arrived.
    async fn rendezvous(&self) {
        let wanted = self.with_store(|s| {
            if s.rendezvous == 0 {
                return None;
            }
            s.arrived += 1;
            for w in s.waiting.drain(..) {
                w.wake();
            }
            Some(s.rendezvous)
        });
        let Some(wanted) = wanted else { return };
        futures::future::poll_fn(|cx| {
            self.with_store(|s| {
                if s.arrived >= wanted {
                    s.rendezvous = 0;
                    for w in s.waiting.drain(..) {
                        w.wake();
                    }
                    Poll::Ready(())
                } else {
                    s.waiting.push(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
    }
}

impl CaCertificates for AuditFake {
    async fn certificates_of_ca(
        &self,
        ca: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> PortResult<Page<ListedCertificate>> {
        self.call("ListCertificatesByCA", self.fleet.certificates_of_ca(ca, cursor, limit))
            .await
    }
}

impl AuditIot for AuditFake {
    async fn audited_certificate(&self, id: &str) -> PortResult<Option<DescribedCertificate>> {
        self.call("DescribeCertificate", self.fleet.audited_certificate(id))
            .await
    }
    async fn audited_ca(&self, id: &str) -> PortResult<Option<RegisteredCa>> {
        self.call("DescribeCACertificate", self.fleet.audited_ca(id)).await
    }
    async fn things_of_certificate(&self, arn: &str) -> PortResult<Vec<String>> {
        self.call("ListPrincipalThings", self.fleet.things_of_certificate(arn))
            .await
    }
    async fn policies_of_certificate(&self, arn: &str) -> PortResult<Vec<String>> {
        self.call("ListAttachedPolicies", self.fleet.policies_of_certificate(arn))
            .await
    }
    async fn policy_document(&self, name: &str) -> PortResult<Option<String>> {
        self.call("GetPolicy", self.fleet.policy_document(name)).await
    }
    async fn certificates_of_thing(&self, thing: &str) -> PortResult<Vec<String>> {
        self.call("ListThingPrincipals", self.fleet.certificates_of_thing(thing))
            .await
    }
}

impl DenyList for AuditFake {
    async fn denial(&self, ca: &str, serial: &str, fingerprint: &str) -> PortResult<Option<Rejection>> {
        self.call("BatchGetItem", self.fleet.denial(ca, serial, fingerprint))
            .await
    }
}

impl AuditInventory for AuditFake {
    async fn inventory_page(&self, cursor: Option<&str>, limit: usize) -> PortResult<Page<InventoryItem>> {
        self.call("Scan", self.fleet.inventory_page(cursor, limit)).await
    }
    async fn audited_record(&self, id: &str) -> PortResult<Option<CertificateRecord>> {
        self.call("GetItem", self.fleet.audited_record(id)).await
    }
    async fn audited_rotation(&self, id: &str) -> PortResult<Option<Rotation>> {
        self.call("GetItem", self.fleet.audited_rotation(id)).await
    }
}

impl NameClaims for AuditFake {
    async fn claim_thing_name(&self, thing: &str, id: &str) -> PortResult<NameClaim> {
        self.fleet.claim_thing_name(thing, id).await
    }
    async fn transfer_thing_name(&self, thing: &str, from: &str, to: &str) -> PortResult<bool> {
        self.fleet.transfer_thing_name(thing, from, to).await
    }
    async fn release_thing_name(&self, thing: &str, id: &str) -> PortResult<()> {
        self.fleet.release_thing_name(thing, id).await
    }
}

impl Inventory for AuditFake {
    async fn load_config(&self) -> PortResult<OnboardingConfig> {
        self.call("Query", self.fleet.load_config()).await
    }
    async fn certificate_record(&self, id: &str) -> PortResult<Option<CertificateRecord>> {
        self.fleet.certificate_record(id).await
    }
    async fn record_provisioned(&self, r: &CertificateRecord) -> PortResult<()> {
        self.fleet.record_provisioned(r).await
    }
    async fn record_activated(&self, id: &str, at: i64) -> PortResult<()> {
        self.fleet.record_activated(id, at).await
    }
    async fn record_rejected(&self, r: &CertificateRecord) -> PortResult<()> {
        self.fleet.record_rejected(r).await
    }
    async fn record_observed(&self, r: &CertificateRecord) -> PortResult<()> {
        self.fleet.record_observed(r).await
    }
}

impl AuditRunStore for AuditFake {
    async fn audit_run(&self) -> PortResult<Option<StoredAuditRun>> {
        let n = self.before("GetItem")?;
        let run = self.with_store(|s| s.run.clone());
        self.after(n, "GetItem")?;
        Ok(run)
    }

    async fn save_audit_run(&self, expected: Option<u64>, state: &str) -> PortResult<bool> {
        self.rendezvous().await;
        let n = self.before("PutItem")?;
        let saved = self.with_store(|s| {
            if s.run.as_ref().map(|r| r.version) != expected {
                return false;
            }
            s.run = Some(StoredAuditRun {
                state: state.to_string(),
                version: expected.map_or(1, |v| v + 1),
            });
            true
        });
        self.after(n, "PutItem")?;
        Ok(saved)
    }

    async fn put_audit_findings(&self, run_id: i64, findings: &[Finding], _expires_at: i64) -> PortResult<()> {
        let n = self.before("BatchWriteItem")?;
        self.with_store(|s| {
            let run = s.findings.entry(run_id).or_default();
            for f in findings {
                run.insert(finding_key(f), f.clone());
            }
        });
        self.after(n, "BatchWriteItem")
    }

    async fn audit_findings_page(&self, run_id: i64, cursor: Option<&str>, limit: usize) -> PortResult<Page<Finding>> {
        let n = self.before("Query")?;
        let result = self.with_store(|s| {
            let keyed = s
                .findings
                .get(&run_id)
                .map(|run| run.iter().map(|(k, f)| (k.clone(), f.clone())).collect())
                .unwrap_or_default();
            page(keyed, cursor, limit)
        });
        self.after(n, "Query")?;
        Ok(result)
    }

    async fn latest_audit(&self) -> PortResult<Option<String>> {
        let n = self.before("GetItem")?;
        let latest = self.with_store(|s| s.latest.as_ref().map(|(_, j)| j.clone()));
        self.after(n, "GetItem")?;
        Ok(latest)
    }

    async fn save_latest_audit(&self, run_id: i64, summary: &str) -> PortResult<bool> {
        let n = self.before("PutItem")?;
        let saved = self.with_store(|s| {
            if s.latest.as_ref().is_some_and(|(r, _)| *r > run_id) {
                return false;
            }
            s.latest = Some((run_id, summary.to_string()));
            true
        });
        self.after(n, "PutItem")?;
        Ok(saved)
    }
}
