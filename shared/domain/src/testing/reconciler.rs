//! An in-memory fake of the ports the reconciler uses (and of the registrar
//! it hands stuck certificates to).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex as StdMutex};

use crate::model::event::JitrEvent;
use crate::model::reason::Rejection;
use crate::model::record::{CertificateRecord, Outcome, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::OnboardingConfig;
use crate::policy::rotation::state::Rotation;
use crate::ports::{AuditInventory, AuditIot, DenyList, DescribedCertificate, InventoryItem};
use crate::ports::{
    CaCertificates, CertificateRegistry, Inventory, ListedCertificate, NameClaim, Page, PortError, PortErrorKind,
    PortResult, ReconcileInventory, RegisteredCa, RegisteredCertificate,
};
use crate::workflows::reconciler::{NOT_FOUND_STATUS, StuckHandler};
use crate::workflows::registrar::ProvisioningError;

pub const NOW: i64 = 1_900_000_000;
pub const BOUND: &str = "ca-bound";
pub const DEFAULT: &str = "ca-default";
pub const UNBOUND: &str = "ca-unbound";

#[derive(Default)]
pub struct World {
    pub config: OnboardingConfig,
    /// IoT certificates by id: (CA, status, created_at).
    pub iot: BTreeMap<String, (String, CertificateStatus, Option<i64>)>,
    pub records: BTreeMap<String, CertificateRecord>,
    pub cursors: BTreeMap<String, String>,
    pub listed: Vec<(String, Option<String>, usize)>,
    pub stuck: Vec<JitrEvent>,
    pub marks: u32,
    /// Certificate ids whose stuck handling fails transiently.
    pub failing: BTreeSet<String>,
    /// CA certificates by id (`DescribeCACertificate`).
    pub cas: BTreeMap<String, RegisteredCa>,
    /// Recorded CA expiries: CA id → (notAfter, checked at).
    pub ca_expiries: BTreeMap<String, (i64, i64)>,
    /// The fleet audit's facts: certificate PEMs by id (`DescribeCertificate`).
    pub pems: BTreeMap<String, String>,
    /// Things attached to each certificate, by id.
    pub attached_things: BTreeMap<String, Vec<String>>,
    /// Policies attached to each certificate, by id.
    pub attached_policies: BTreeMap<String, Vec<String>>,
    /// Policy documents by name.
    pub policy_documents: BTreeMap<String, String>,
    /// Rotations in the inventory, by old certificate id.
    pub rotations: BTreeMap<String, Rotation>,
    /// The deny-list's answers by fingerprint.
    pub denied: BTreeMap<String, Rejection>,
    /// Operations that fail (transiently) from now on, by name (`GetPolicy`, `BatchGetItem`, …).
    pub failing_operations: BTreeSet<&'static str>,
    /// Every audit call made, by operation name, in order.
    pub audit_calls: Vec<&'static str>,
}

#[derive(Clone, Default)]
pub struct Fake(Arc<StdMutex<World>>);

impl Fake {
    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut world = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut world)
    }
    pub fn cert(&self, id: &str, ca: &str, status: CertificateStatus, created_at: Option<i64>) {
        self.with(|w| w.iot.insert(id.into(), (ca.into(), status, created_at)));
    }
    pub fn record(&self, id: &str, ca: &str, status: RecordStatus) {
        let record = CertificateRecord::bare(id, ca, status, NOW - 1_000);
        self.with(|w| w.records.insert(id.into(), record));
    }
}

pub fn arn(id: &str) -> String {
    format!("arn:aws:iot:eu-west-1:123456789012:cert/{id}")
}

pub fn page<T>(keyed: Vec<(String, T)>, cursor: Option<&str>, limit: usize) -> Page<T> {
    let mut rest: Vec<(String, T)> = keyed
        .into_iter()
        .filter(|(k, _)| cursor.is_none_or(|c| k.as_str() > c))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let cursor = if more {
        rest.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    Page {
        items: rest.into_iter().map(|(_, v)| v).collect(),
        cursor,
    }
}

impl CaCertificates for Fake {
    async fn certificates_of_ca(
        &self,
        ca: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> PortResult<Page<ListedCertificate>> {
        self.with(|w| {
            w.listed.push((ca.into(), cursor.map(str::to_string), limit));
            let keyed = w
                .iot
                .iter()
                .filter(|(_, (c, _, _))| c == ca)
                .map(|(id, (_, status, created_at))| {
                    let listed = ListedCertificate {
                        certificate_id: id.clone(),
                        certificate_arn: arn(id),
                        status: status.clone(),
                        created_at: *created_at,
                    };
                    (id.clone(), listed)
                })
                .collect();
            Ok(page(keyed, cursor, limit))
        })
    }
}

impl CertificateRegistry for Fake {
    async fn describe_certificate(&self, id: &str) -> PortResult<Option<RegisteredCertificate>> {
        self.with(|w| {
            Ok(w.iot.get(id).map(|(ca, status, _)| RegisteredCertificate {
                certificate_id: id.into(),
                certificate_arn: arn(id),
                ca_certificate_id: Some(ca.clone()),
                status: status.clone(),
                pem: String::new(),
            }))
        })
    }
    async fn describe_ca_certificate(&self, id: &str) -> PortResult<Option<RegisteredCa>> {
        self.with(|w| Ok(w.cas.get(id).cloned()))
    }
    async fn set_certificate_status(&self, _: &str, _: &CertificateStatus) -> PortResult<()> {
        Ok(())
    }
}

impl Inventory for Fake {
    async fn load_config(&self) -> PortResult<OnboardingConfig> {
        self.with(|w| Ok(w.config.clone()))
    }
    async fn certificate_record(&self, id: &str) -> PortResult<Option<CertificateRecord>> {
        self.with(|w| Ok(w.records.get(id).cloned()))
    }
    async fn record_provisioned(&self, _: &CertificateRecord) -> PortResult<()> {
        Ok(())
    }
    async fn record_activated(&self, _: &str, _: i64) -> PortResult<()> {
        Ok(())
    }
    async fn record_rejected(&self, _: &CertificateRecord) -> PortResult<()> {
        Ok(())
    }
    async fn record_observed(&self, _: &CertificateRecord) -> PortResult<()> {
        Ok(())
    }
}

impl crate::ports::NameClaims for Fake {
    async fn claim_thing_name(&self, _: &str, _: &str) -> PortResult<NameClaim> {
        Ok(NameClaim::Claimed)
    }

    async fn transfer_thing_name(&self, _: &str, _: &str, _: &str) -> PortResult<bool> {
        Ok(true)
    }

    async fn release_thing_name(&self, _: &str, _: &str) -> PortResult<()> {
        Ok(())
    }
}

impl ReconcileInventory for Fake {
    async fn records_of_ca(&self, ca: &str, cursor: Option<&str>, limit: usize) -> PortResult<Page<CertificateRecord>> {
        self.with(|w| {
            // Like a Scan: `limit` items read, the matching ones returned.
            let mut read: Vec<(String, CertificateRecord)> = w
                .records
                .iter()
                .filter(|(k, _)| cursor.is_none_or(|c| k.as_str() > c))
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect();
            let more = read.len() > limit;
            read.truncate(limit);
            let cursor = if more {
                read.last().map(|(k, _)| k.clone())
            } else {
                None
            };
            let items = read
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r.ca_certificate_id == ca)
                .collect();
            Ok(Page { items, cursor })
        })
    }
    async fn mark_certificate_missing(&self, id: &str, _: i64) -> PortResult<bool> {
        self.with(|w| match w.records.get_mut(id) {
            Some(r) if r.certificate_status.as_deref() != Some(NOT_FOUND_STATUS) => {
                r.certificate_status = Some(NOT_FOUND_STATUS.into());
                w.marks += 1;
                Ok(true)
            }
            _ => Ok(false),
        })
    }
    async fn record_ca_expiry(&self, ca: &str, not_after: i64, checked_at: i64) -> PortResult<()> {
        self.with(|w| {
            w.ca_expiries.insert(ca.to_string(), (not_after, checked_at));
            Ok(())
        })
    }
    async fn reconcile_cursor(&self, name: &str) -> PortResult<Option<String>> {
        self.with(|w| Ok(w.cursors.get(name).cloned()))
    }
    async fn save_reconcile_cursor(&self, name: &str, cursor: Option<&str>) -> PortResult<()> {
        self.with(|w| {
            match cursor {
                Some(c) => w.cursors.insert(name.into(), c.into()),
                None => w.cursors.remove(name),
            };
            Ok(())
        })
    }
}

impl Fake {
    /// Counts an audit call, failing it when `operation` is set to fail.
    fn audit_call(&self, w: &mut World, operation: &'static str) -> PortResult<()> {
        let _ = self;
        w.audit_calls.push(operation);
        if w.failing_operations.contains(operation) {
            return Err(PortError::new(operation, PortErrorKind::Transient, "throttled"));
        }
        Ok(())
    }
}

fn certificate_id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl AuditIot for Fake {
    async fn audited_certificate(&self, id: &str) -> PortResult<Option<DescribedCertificate>> {
        self.with(|w| {
            self.audit_call(w, "DescribeCertificate")?;
            Ok(w.iot.get(id).map(|(ca, status, created_at)| DescribedCertificate {
                certificate: RegisteredCertificate {
                    certificate_id: id.into(),
                    certificate_arn: arn(id),
                    ca_certificate_id: Some(ca.clone()).filter(|c| !c.is_empty()),
                    status: status.clone(),
                    pem: w.pems.get(id).cloned().unwrap_or_default(),
                },
                created_at: *created_at,
            }))
        })
    }
    async fn audited_ca(&self, id: &str) -> PortResult<Option<RegisteredCa>> {
        self.with(|w| {
            self.audit_call(w, "DescribeCACertificate")?;
            Ok(w.cas.get(id).cloned())
        })
    }
    async fn things_of_certificate(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        self.with(|w| {
            self.audit_call(w, "ListPrincipalThings")?;
            Ok(w.attached_things
                .get(certificate_id_of(certificate_arn))
                .cloned()
                .unwrap_or_default())
        })
    }
    async fn policies_of_certificate(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        self.with(|w| {
            self.audit_call(w, "ListAttachedPolicies")?;
            Ok(w.attached_policies
                .get(certificate_id_of(certificate_arn))
                .cloned()
                .unwrap_or_default())
        })
    }
    async fn policy_document(&self, name: &str) -> PortResult<Option<String>> {
        self.with(|w| {
            self.audit_call(w, "GetPolicy")?;
            Ok(w.policy_documents.get(name).cloned())
        })
    }
    async fn certificates_of_thing(&self, thing_name: &str) -> PortResult<Vec<String>> {
        self.with(|w| {
            self.audit_call(w, "ListThingPrincipals")?;
            Ok(w.attached_things
                .iter()
                .filter(|(_, things)| things.iter().any(|t| t == thing_name))
                .map(|(id, _)| id.clone())
                .collect())
        })
    }
}

impl AuditInventory for Fake {
    async fn inventory_page(&self, cursor: Option<&str>, limit: usize) -> PortResult<Page<InventoryItem>> {
        self.with(|w| {
            self.audit_call(w, "Scan")?;
            // Records keyed `C#<id>`, rotations `R#<id>`, like one table's items.
            let keyed = w
                .records
                .iter()
                .map(|(id, r)| (format!("C#{id}"), InventoryItem::Record(r.clone())))
                .chain(
                    w.rotations
                        .iter()
                        .map(|(id, r)| (format!("R#{id}"), InventoryItem::Rotation(r.clone()))),
                )
                .collect();
            Ok(page(keyed, cursor, limit))
        })
    }
    async fn audited_record(&self, id: &str) -> PortResult<Option<CertificateRecord>> {
        self.with(|w| {
            self.audit_call(w, "GetItem")?;
            Ok(w.records.get(id).cloned())
        })
    }
    async fn audited_rotation(&self, id: &str) -> PortResult<Option<Rotation>> {
        self.with(|w| {
            self.audit_call(w, "GetItem")?;
            Ok(w.rotations.get(id).cloned())
        })
    }
}

impl DenyList for Fake {
    async fn denial(&self, _: &str, _: &str, fingerprint: &str) -> PortResult<Option<Rejection>> {
        self.with(|w| {
            self.audit_call(w, "BatchGetItem")?;
            Ok(w.denied.get(fingerprint).cloned())
        })
    }
}

impl StuckHandler for Fake {
    async fn process_stuck(&self, event: &JitrEvent, _: i64) -> Result<Outcome, ProvisioningError> {
        self.with(|w| {
            if w.failing.contains(&event.certificate_id) {
                return Err(PortError::new("UpdateCertificate", PortErrorKind::Transient, "throttled").into());
            }
            w.stuck.push(event.clone());
            let Some(cert) = w.iot.get_mut(&event.certificate_id) else {
                return Ok(Outcome::Ignored {
                    certificate_status: "NOT_FOUND".into(),
                });
            };
            if cert.1 == CertificateStatus::Active {
                // As the registrar would: checked and recorded with its thing.
                let mut record = CertificateRecord::bare(&event.certificate_id, &cert.0, RecordStatus::Provisioned, 0);
                record.thing_name = Some("sensor-1".into());
                w.records.insert(event.certificate_id.clone(), record);
                return Ok(Outcome::Recorded {
                    thing_name: "sensor-1".into(),
                });
            }
            // As the registrar would: the certificate becomes ACTIVE, recorded.
            cert.1 = CertificateStatus::Active;
            let record = CertificateRecord::bare(&event.certificate_id, &cert.0, RecordStatus::Provisioned, 0);
            w.records.insert(event.certificate_id.clone(), record);
            Ok(Outcome::Provisioned {
                thing_name: "t".into(),
                profile: "p".into(),
                dropped_attributes: Vec::new(),
            })
        })
    }
}
