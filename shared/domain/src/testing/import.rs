//! An in-memory AWS for the bulk import: IoT certificates and CAs, things,
//! groups and policies, the credentials bucket, the inventory (records, name
//! claims, the deny-list) and the state file, with the failure injection of
//! the rotation fakes ([`Inject`]: the n-th call fails before its effect or
//! after it). The real [`crate::Registrar`] runs over it, so the import's
//! tests drive the very provisioning the Lambda runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::model::plan::{CredentialsRecord, ProvisioningPlan};
use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::OnboardingConfig;
use crate::ports::{
    CertificateImport, CertificateRegistry, CredentialsStore, DenyList, ExistingThing, ImportJournal, Inventory,
    NameClaim, PortError, PortErrorKind, PortResult, RegisteredCa, RegisteredCertificate, Registration, ThingCreation,
    ThingRegistry,
};
pub use crate::testing::inject::Inject;
use crate::testing::inject::call_with_injection;

#[derive(Debug, Clone)]
pub struct FakeCert {
    pub status: CertificateStatus,
    pub pem: String,
    pub ca: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeThing {
    pub thing_type: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub principals: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

#[derive(Default)]
pub struct World {
    pub config: OnboardingConfig,
    pub cas: BTreeMap<String, RegisteredCa>,
    pub certs: BTreeMap<String, FakeCert>,
    pub things: BTreeMap<String, FakeThing>,
    /// Policies by certificate ARN.
    pub policies: BTreeMap<String, BTreeSet<String>>,
    pub credentials: BTreeMap<String, CredentialsRecord>,
    pub records: BTreeMap<String, CertificateRecord>,
    pub claims: BTreeMap<String, String>,
    /// Denied fingerprints, and `<ca>#<serial>` of denied serials.
    pub denied: BTreeSet<String>,
    /// The state file's lines.
    pub journal: Vec<String>,
    /// Successful registrations, by certificate id (never more than one each).
    pub registrations: BTreeMap<String, usize>,
    /// `UpdateCertificate` to ACTIVE, by certificate id.
    pub activations: BTreeMap<String, usize>,
    /// Activations of a certificate that was not fully provisioned yet.
    pub early_activations: Vec<String>,
    pub calls: Vec<&'static str>,
    pub inject: Option<Inject>,
}

impl World {
    /// A device is fully provisioned: ACTIVE, attached to its thing, with
    /// its policy, groups, record and credentials record.
    pub fn fully_provisioned(&self, id: &str, policy: &str, groups: &[&str]) -> bool {
        let Some(record) = self.records.get(id) else {
            return false;
        };
        let Some(name) = &record.thing_name else { return false };
        let Some(thing) = self.things.get(name) else {
            return false;
        };
        self.certs
            .get(id)
            .is_some_and(|c| c.status == CertificateStatus::Active)
            && record.status == RecordStatus::Provisioned
            && thing.principals.contains(&arn(id))
            && groups.iter().all(|g| thing.groups.contains(*g))
            && self.policies.get(&arn(id)).is_some_and(|p| p.contains(policy))
            && record
                .credentials_key
                .as_ref()
                .is_some_and(|k| self.credentials.contains_key(k))
            && self.claims.get(name).map(String::as_str) == Some(id)
    }
}

#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<World>>);

pub fn arn(id: &str) -> String {
    format!("arn:aws:iot:eu-west-1:123456789012:cert/{id}")
}

fn id_of(certificate_arn: &str) -> String {
    certificate_arn.rsplit('/').next().unwrap_or_default().to_string()
}

impl Fake {
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn with<X>(&self, f: impl FnOnce(&mut World) -> X) -> X {
        f(&mut self.lock())
    }

    /// One port call: logged, and failed if injected.
    fn call<X>(&self, op: &'static str, f: impl FnOnce(&mut World) -> PortResult<X>) -> PortResult<X> {
        let mut w = self.lock();
        let n = w.calls.len();
        w.calls.push(op);
        call_with_injection(&mut *w, |w| &mut w.inject, n, op, f)
    }
}

impl CertificateRegistry for Fake {
    async fn describe_certificate(&self, id: &str) -> PortResult<Option<RegisteredCertificate>> {
        self.call("DescribeCertificate", |w| {
            Ok(w.certs.get(id).map(|c| RegisteredCertificate {
                certificate_id: id.into(),
                certificate_arn: arn(id),
                ca_certificate_id: c.ca.clone(),
                status: c.status.clone(),
                pem: c.pem.clone(),
            }))
        })
    }

    async fn describe_ca_certificate(&self, id: &str) -> PortResult<Option<RegisteredCa>> {
        self.call("DescribeCACertificate", |w| Ok(w.cas.get(id).cloned()))
    }

    async fn set_certificate_status(&self, id: &str, status: &CertificateStatus) -> PortResult<()> {
        self.call("UpdateCertificate", |w| {
            if *status == CertificateStatus::Active {
                *w.activations.entry(id.into()).or_default() += 1;
                let record = w.records.get(id).cloned();
                let complete = record.is_some_and(|r| {
                    r.status == RecordStatus::Provisioned
                        && r.thing_name.as_ref().is_some_and(|name| {
                            w.things.get(name).is_some_and(|t| t.principals.contains(&arn(id)))
                                && w.claims.get(name).map(String::as_str) == Some(id)
                        })
                        && w.policies.get(&arn(id)).is_some_and(|p| !p.is_empty())
                        && r.credentials_key
                            .as_ref()
                            .is_some_and(|k| w.credentials.contains_key(k))
                });
                if !complete {
                    w.early_activations.push(id.into());
                }
            }
            let cert = w
                .certs
                .get_mut(id)
                .ok_or_else(|| PortError::new("UpdateCertificate", PortErrorKind::MissingResource, id))?;
            cert.status = status.clone();
            Ok(())
        })
    }
}

impl CertificateImport for Fake {
    async fn register_certificate(&self, pem: &str, registration: Registration<'_>) -> PortResult<String> {
        let op = match registration {
            Registration::UnderCa { .. } => "RegisterCertificate",
            Registration::WithoutCa => "RegisterCertificateWithoutCA",
        };
        self.call(op, |w| {
            let cert = crate::model::certificate::Certificate::from_pem(pem)
                .map_err(|e| PortError::new(op, PortErrorKind::Invalid, e.to_string()))?;
            let id = cert.fingerprint.clone();
            if w.certs.contains_key(&id) {
                return Err(PortError::new(
                    op,
                    PortErrorKind::Conflict,
                    "ResourceAlreadyExistsException",
                ));
            }
            // As IoT: under a CA, that CA must be registered and have signed it.
            let ca = match registration {
                Registration::WithoutCa => None,
                Registration::UnderCa { ca_pem } => {
                    let ca = w
                        .cas
                        .values()
                        .find(|ca| ca.pem == ca_pem)
                        .ok_or_else(|| PortError::new(op, PortErrorKind::Invalid, "CA not registered"))?;
                    let parsed = crate::model::certificate::Certificate::from_pem(ca_pem)
                        .map_err(|e| PortError::new(op, PortErrorKind::Invalid, e.to_string()))?;
                    if !cert.is_signed_by(&parsed) {
                        return Err(PortError::new(op, PortErrorKind::Invalid, "not signed by the CA"));
                    }
                    Some(ca.certificate_id.clone())
                }
            };
            w.certs.insert(
                id.clone(),
                FakeCert {
                    status: CertificateStatus::Inactive,
                    pem: pem.to_string(),
                    ca,
                },
            );
            *w.registrations.entry(id.clone()).or_default() += 1;
            Ok(id)
        })
    }
}

impl ThingRegistry for Fake {
    async fn create_thing(&self, plan: &ProvisioningPlan) -> PortResult<ThingCreation> {
        self.call("CreateThing", |w| {
            let thing = w.things.entry(plan.thing_name.clone()).or_insert_with(|| FakeThing {
                thing_type: plan.thing_type.clone(),
                attributes: plan.attributes.clone(),
                ..FakeThing::default()
            });
            Ok(
                match thing.thing_type == plan.thing_type && thing.attributes == plan.attributes {
                    true => ThingCreation::Ready,
                    false => ThingCreation::ExistsDifferently,
                },
            )
        })
    }

    async fn describe_thing(&self, name: &str) -> PortResult<Option<ExistingThing>> {
        self.call("DescribeThing", |w| {
            Ok(w.things.get(name).map(|t| ExistingThing {
                thing_type: t.thing_type.clone(),
                attributes: t.attributes.clone(),
                billing_group: None,
            }))
        })
    }

    async fn merge_thing_attributes(&self, plan: &ProvisioningPlan) -> PortResult<()> {
        self.call("UpdateThing", |w| {
            if let Some(t) = w.things.get_mut(&plan.thing_name) {
                t.attributes.extend(plan.attributes.clone());
            }
            Ok(())
        })
    }

    async fn add_to_billing_group(&self, _: &str, _: &str) -> PortResult<()> {
        self.call("AddThingToBillingGroup", |_| Ok(()))
    }

    async fn thing_principals(&self, name: &str) -> PortResult<Option<Vec<String>>> {
        self.call("ListThingPrincipals", |w| {
            Ok(w.things.get(name).map(|t| t.principals.iter().cloned().collect()))
        })
    }

    async fn attach_certificate_exclusively(&self, name: &str, certificate_arn: &str) -> PortResult<()> {
        self.call("AttachThingPrincipal", |w| {
            let attached_elsewhere = w
                .things
                .iter()
                .any(|(n, t)| n != name && t.principals.contains(certificate_arn));
            if attached_elsewhere {
                return Err(PortError::new(
                    "AttachThingPrincipal",
                    PortErrorKind::Invalid,
                    "exclusive",
                ));
            }
            let thing = w
                .things
                .get_mut(name)
                .ok_or_else(|| PortError::new("AttachThingPrincipal", PortErrorKind::MissingResource, name))?;
            thing.principals.insert(certificate_arn.to_string());
            Ok(())
        })
    }

    async fn add_to_thing_group(&self, name: &str, group: &str) -> PortResult<()> {
        self.call("AddThingToThingGroup", |w| {
            let thing = w
                .things
                .get_mut(name)
                .ok_or_else(|| PortError::new("AddThingToThingGroup", PortErrorKind::MissingResource, name))?;
            thing.groups.insert(group.to_string());
            Ok(())
        })
    }

    async fn attach_policy(&self, policy: &str, certificate_arn: &str) -> PortResult<()> {
        self.call("AttachPolicy", |w| {
            if !w.certs.contains_key(&id_of(certificate_arn)) {
                return Err(PortError::new(
                    "AttachPolicy",
                    PortErrorKind::MissingResource,
                    certificate_arn,
                ));
            }
            w.policies
                .entry(certificate_arn.to_string())
                .or_default()
                .insert(policy.to_string());
            Ok(())
        })
    }
}

impl CredentialsStore for Fake {
    async fn put_credentials(&self, key: &str, record: &CredentialsRecord) -> PortResult<()> {
        self.call("PutObject", |w| {
            w.credentials.insert(key.to_string(), record.clone());
            Ok(())
        })
    }
}

impl Inventory for Fake {
    async fn load_config(&self) -> PortResult<OnboardingConfig> {
        self.call("load_config", |w| Ok(w.config.clone()))
    }

    async fn certificate_record(&self, id: &str) -> PortResult<Option<CertificateRecord>> {
        self.call("certificate_record", |w| Ok(w.records.get(id).cloned()))
    }

    async fn record_provisioned(&self, record: &CertificateRecord) -> PortResult<()> {
        self.call("record_provisioned", |w| {
            let mut record = record.clone();
            record.activated_at = w.records.get(&record.certificate_id).and_then(|r| r.activated_at);
            w.records.insert(record.certificate_id.clone(), record);
            Ok(())
        })
    }

    async fn record_activated(&self, id: &str, at: i64) -> PortResult<()> {
        self.call("record_activated", |w| {
            if let Some(r) = w.records.get_mut(id)
                && r.status == RecordStatus::Provisioned
            {
                r.activated_at = Some(at);
            }
            Ok(())
        })
    }

    async fn record_rejected(&self, record: &CertificateRecord) -> PortResult<()> {
        self.call("record_rejected", |w| {
            w.records.insert(record.certificate_id.clone(), record.clone());
            Ok(())
        })
    }

    async fn record_observed(&self, record: &CertificateRecord) -> PortResult<()> {
        self.call("record_observed", |w| {
            w.records
                .entry(record.certificate_id.clone())
                .or_insert_with(|| record.clone());
            Ok(())
        })
    }
}

impl crate::ports::NameClaims for Fake {
    async fn claim_thing_name(&self, name: &str, id: &str) -> PortResult<NameClaim> {
        self.call("claim_thing_name", |w| {
            let holder = w.claims.entry(name.into()).or_insert_with(|| id.into());
            Ok(match holder == id {
                true => NameClaim::Claimed,
                false => NameClaim::HeldBy(holder.clone()),
            })
        })
    }

    async fn transfer_thing_name(&self, name: &str, from: &str, to: &str) -> PortResult<bool> {
        self.call("transfer_thing_name", |w| match w.claims.get(name) {
            Some(holder) if holder == from => {
                w.claims.insert(name.into(), to.into());
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    async fn release_thing_name(&self, name: &str, id: &str) -> PortResult<()> {
        self.call("release_thing_name", |w| {
            if w.claims.get(name).map(String::as_str) == Some(id) {
                w.claims.remove(name);
            }
            Ok(())
        })
    }
}

impl DenyList for Fake {
    async fn denial(&self, ca: &str, serial: &str, fingerprint: &str) -> PortResult<Option<Rejection>> {
        self.call("denial", |w| {
            Ok(if w.denied.contains(fingerprint) {
                Some(Rejection::new(RejectReason::FingerprintDenied, "denied"))
            } else if w.denied.contains(&format!("{ca}#{serial}")) {
                Some(Rejection::new(RejectReason::SerialDenied, "denied"))
            } else {
                None
            })
        })
    }
}

impl ImportJournal for Fake {
    async fn append(&self, line: &str) -> PortResult<()> {
        self.call("journal", |w| {
            w.journal.push(line.to_string());
            Ok(())
        })
    }
}
