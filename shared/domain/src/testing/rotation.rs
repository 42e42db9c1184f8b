//! An in-memory fake of every port the rotation workflows use, with fault
//! injection (a call failing before or after its effect) and hooks that run
//! between calls, for the crash-safety and interleaving tests.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::model::certificate::Certificate;
use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::{DenyKey, OnboardingConfig};
use crate::policy::profile::DeviceProfile;
use crate::policy::rotation::protocol::{CONFIRMATION_FIELD, JobDocument, JobExecution, answer_topic};
use crate::policy::rotation::state::{Rotation, RotationState};
use crate::policy::rotation::{DAY, Issuer, Strategy};
use crate::ports::{CaSigners, CertificateImport, CertificateRegistry, RegisteredCa, Registration};
use crate::ports::{
    Connections, DenyList, Inventory, IssuedCertificate, NameClaim, Pacer, Page, PortError, PortErrorKind, PortResult,
    RegisteredCertificate, RetirementInventory, RetirementIot, RetirementTicket, RevocationStore, RotationInventory,
    RotationIot, RotationObjects, ThingMembership,
};
use crate::testing::signer::MemorySigner;

pub const T0: i64 = 1_900_000_000;
pub const PROFILE: &str = "sensors";
pub const POLICY: &str = "device-policy";
pub const CA: &str = "ca-1";
pub const BUCKET: &str = "credentials-bucket";

// --- in-memory ports ----------------------------------------------------

pub use crate::testing::inject::Inject;
use crate::testing::inject::call_with_injection;

#[derive(Debug, Clone)]
pub struct FakeCert {
    pub arn: String,
    pub status: CertificateStatus,
    pub pem: String,
    pub thing: Option<String>,
    pub policies: BTreeSet<String>,
    /// The CA it was registered under (`caCertificateId`); `None` for the
    /// fake's own certificates, as for `CreateCertificateFromCsr`'s.
    pub ca: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FakeJob {
    pub thing: String,
    pub document: JobDocument,
    pub status: String,
    pub details: BTreeMap<String, String>,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
}

/// A thing in the fake registry: its static groups and billing group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeThing {
    pub groups: BTreeSet<String>,
    pub billing_group: Option<String>,
}

#[derive(Default)]
pub struct World {
    /// Things by name (retirement); rotation alone never reads them.
    pub things: BTreeMap<String, FakeThing>,
    /// Retirements under way, by thing.
    pub retirements: BTreeMap<String, RetirementTicket>,
    /// Other things a certificate is attached to as well (non-exclusive
    /// attachments; `FakeCert::thing` holds one).
    pub also_attached: BTreeMap<String, Vec<String>>,
    /// `DeleteThing` answers "still attached" this many more times after
    /// the last principal is detached (IoT's eventual consistency).
    pub delete_lag: usize,
    pub config: OnboardingConfig,
    pub records: BTreeMap<String, CertificateRecord>,
    pub claims: BTreeMap<String, String>,
    pub rotations: BTreeMap<String, Rotation>,
    pub cursors: BTreeMap<String, String>,
    pub certs: BTreeMap<String, FakeCert>,
    pub jobs: BTreeMap<String, FakeJob>,
    pub objects: BTreeMap<String, Vec<u8>>,
    pub published: Vec<(String, Vec<u8>)>,
    pub calls: Vec<&'static str>,
    pub inject: Option<Inject>,
    /// Denied fingerprints, and `<ca>#<serial>` of denied serials.
    pub denied: BTreeSet<String>,
    /// Thing names held for a revoked certificate: no transfer moves them.
    pub held: BTreeSet<String>,
    /// CA certificates registered with IoT (`kmsCa` issuers), by id.
    pub cas: BTreeMap<String, RegisteredCa>,
    /// Client ids with an open MQTT connection.
    pub connected: BTreeSet<String>,
    /// `DeleteConnection` is refused (no permission).
    pub disconnect_denied: bool,
    /// `CreateCertificateFromCsr` answers with a certificate for another key
    /// than the CSR's (an account-wide certificate provider gone wrong).
    pub issue_for_another_key: bool,
    /// Runs another workflow to its end right before the n-th port call
    /// (another Lambda invocation or rotator run, interleaved there).
    pub interleave: Option<(usize, Hook)>,
}

pub type Hook = Box<dyn FnOnce() + Send>;

/// Drives a future whose every await is ready (the fake's ports are).
pub fn run_now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1_000_000 {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("an interleaved workflow never finished");
}

pub fn arn(id: &str) -> String {
    format!("arn:aws:iot:eu-west-1:123456789012:cert/{id}")
}

pub fn id_of(arn: &str) -> String {
    arn.rsplit_once(":cert/")
        .map(|(_, id)| id.to_string())
        .unwrap_or_default()
}

pub fn thing(i: usize) -> String {
    format!("dev-{i}")
}

pub fn old_id(thing: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, thing.as_bytes()))
}

pub fn conflict(op: &'static str, detail: &str) -> PortError {
    PortError::new(op, PortErrorKind::Conflict, detail)
}

pub fn profile(strategy: Strategy) -> DeviceProfile {
    let mut p = DeviceProfile::minimal(PROFILE, POLICY);
    p.rotation.strategy = strategy;
    p
}

impl World {
    pub fn set_profile(&mut self, p: DeviceProfile) {
        let mut config = OnboardingConfig::default();
        config.add_profile(p.name.clone(), Ok(p.clone()));
        config.bind(CA.into(), p.name);
        self.config = config;
    }

    pub fn add_device(&mut self, thing: &str, not_after: i64) {
        let id = old_id(thing);
        self.certs.insert(
            id.clone(),
            FakeCert {
                arn: arn(&id),
                status: CertificateStatus::Active,
                pem: "old".into(),
                thing: Some(thing.into()),
                policies: BTreeSet::from([POLICY.to_string()]),
                ca: None,
            },
        );
        self.things.entry(thing.into()).or_default();
        let mut record = CertificateRecord::bare(&id, CA, RecordStatus::Provisioned, T0 - 300 * DAY);
        record.thing_name = Some(thing.into());
        record.profile = Some(PROFILE.into());
        record.not_after = Some(not_after);
        self.records.insert(id.clone(), record);
        self.claims.insert(thing.into(), id);
    }

    pub fn rotation_of(&self, thing: &str) -> Rotation {
        self.rotations.get(&old_id(thing)).cloned().expect("a rotation")
    }

    pub fn cert(&self, id: &str) -> FakeCert {
        self.certs.get(id).cloned().expect("a certificate")
    }

    /// The job the device works on (queued or in progress).
    pub fn current_job(&self, thing: &str) -> (String, FakeJob) {
        let open: Vec<_> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.thing == thing && matches!(j.status.as_str(), "QUEUED" | "IN_PROGRESS"))
            .collect();
        assert_eq!(open.len(), 1, "one open job for {thing}");
        let (id, job) = open[0];
        (id.clone(), job.clone())
    }

    pub fn set_job(&mut self, job_id: &str, status: &str, confirmed: Option<&str>) {
        let job = self.jobs.get_mut(job_id).expect("the job");
        job.status = status.into();
        if let Some(c) = confirmed {
            job.details.insert(CONFIRMATION_FIELD.into(), c.into());
        }
    }

    /// Every device takes up its queued job at `at` (IN_PROGRESS).
    pub fn take_up_jobs(&mut self, at: i64) {
        for job in self.jobs.values_mut().filter(|j| j.status == "QUEUED") {
            job.status = "IN_PROGRESS".into();
            job.started_at = Some(at);
        }
    }

    pub fn answers(&self, thing: &str) -> Vec<serde_json::Value> {
        self.published
            .iter()
            .filter(|(topic, _)| *topic == answer_topic(thing))
            .map(|(_, payload)| serde_json::from_slice(payload).expect("JSON answer"))
            .collect()
    }
}

pub struct Signer(rcgen::Issuer<'static, rcgen::KeyPair>);

#[derive(Clone)]
pub struct Fake {
    pub world: Arc<StdMutex<World>>,
    pub signer: Arc<Signer>,
    /// The fleet CA's KMS key (`kmsCa` issuers) and the one ARN the
    /// deployment allows for it, once [`Fake::enable_kms_ca`] ran.
    pub kms: Arc<std::sync::OnceLock<(String, MemorySigner)>>,
}

/// The KMS key ARN the fake deployment allows.
pub const KMS_KEY_ARN: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

impl Fake {
    pub fn new(strategy: Strategy, devices: usize) -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Fake Amazon CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let fake = Self {
            world: Arc::default(),
            signer: Arc::new(Signer(rcgen::Issuer::new(params, key))),
            kms: Arc::default(),
        };
        fake.with(|w| {
            w.set_profile(profile(strategy));
            for i in 0..devices {
                w.add_device(&thing(i), T0 + 20 * DAY + i as i64);
            }
        });
        fake
    }

    /// A fleet CA whose key is a P-256 [`MemorySigner`] allowed as
    /// [`KMS_KEY_ARN`], registered ACTIVE, and the profile's issuer set to
    /// it (365 days). Returns the CA's certificate id.
    pub fn enable_kms_ca(&self) -> String {
        let signer = MemorySigner::generate(crate::ports::SignatureAlgorithm::EcdsaP256Sha256);
        let key = rcgen::KeyPair::try_from(signer.pkcs8_der()).expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "Fleet CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2029, 1, 1);
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        let id = Certificate::from_pem(&pem).expect("CA parses").fingerprint;
        assert!(self.kms.set((KMS_KEY_ARN.to_string(), signer)).is_ok(), "enabled twice");
        self.with(|w| {
            w.cas.insert(
                id.clone(),
                RegisteredCa {
                    certificate_id: id.clone(),
                    status: CertificateStatus::Active,
                    pem,
                    jitp: false,
                },
            );
            let mut p = w.config.profile(PROFILE).cloned().expect("profile");
            p.rotation.issuer = Issuer::KmsCa {
                ca_certificate_id: id.clone(),
                kms_key_arn: KMS_KEY_ARN.to_string(),
                validity_days: 365,
            };
            w.set_profile(p);
        });
        id
    }

    /// The fleet CA's signer, once enabled.
    pub fn kms_signer(&self) -> &MemorySigner {
        &self.kms.get().expect("kms CA enabled").1
    }

    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn with<X>(&self, f: impl FnOnce(&mut World) -> X) -> X {
        f(&mut self.lock())
    }

    /// One port call: logged, and failed if injected.
    pub fn call<X>(&self, op: &'static str, f: impl FnOnce(&mut World) -> PortResult<X>) -> PortResult<X> {
        let hook = {
            let mut w = self.lock();
            let n = w.calls.len();
            match w.interleave.take() {
                Some((k, hook)) if k == n => Some(hook),
                other => {
                    w.interleave = other;
                    None
                }
            }
        };
        if let Some(hook) = hook {
            hook();
        }
        let mut w = self.lock();
        let n = w.calls.len();
        w.calls.push(op);
        call_with_injection(&mut *w, |w| &mut w.inject, n, op, f)
    }

    pub fn issue(&self, w: &mut World, pem: String, private_key_pem: Option<String>) -> PortResult<IssuedCertificate> {
        let id = Certificate::from_pem(&pem)
            .map_err(|e| PortError::new("issue", PortErrorKind::Invalid, e.to_string()))?
            .fingerprint;
        w.certs.insert(
            id.clone(),
            FakeCert {
                arn: arn(&id),
                status: CertificateStatus::PendingActivation,
                pem: pem.clone(),
                thing: None,
                policies: BTreeSet::new(),
                ca: None,
            },
        );
        Ok(IssuedCertificate {
            certificate_arn: arn(&id),
            certificate_id: id,
            certificate_pem: pem,
            private_key_pem,
        })
    }
}

pub fn validity(params: &mut rcgen::CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2029, 1, 1);
    params.not_after = rcgen::date_time_ymd(2031, 1, 1);
}

pub fn page<T: Clone>(mut keyed: Vec<(String, T)>, cursor: Option<&str>, limit: usize) -> Page<T> {
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let after: Vec<_> = keyed
        .into_iter()
        .filter(|(key, _)| cursor.is_none_or(|c| key.as_str() > c))
        .collect();
    let more = after.len() > limit;
    let taken: Vec<_> = after.into_iter().take(limit).collect();
    Page {
        cursor: more.then(|| taken.last().map(|(k, _)| k.clone())).flatten(),
        items: taken.into_iter().map(|(_, item)| item).collect(),
    }
}

impl RotationInventory for Fake {
    async fn expiring(&self, until: i64, cursor: Option<&str>, limit: usize) -> PortResult<Page<CertificateRecord>> {
        self.call("expiring", |w| {
            let keyed = w
                .records
                .values()
                .filter(|r| r.status == RecordStatus::Provisioned && r.not_after.is_some_and(|n| n < until))
                .map(|r| {
                    (
                        format!("{:012}#{}", r.not_after.unwrap_or(0), r.certificate_id),
                        r.clone(),
                    )
                })
                .collect();
            Ok(page(keyed, cursor, limit))
        })
    }

    async fn due_rotations(&self, now: i64, cursor: Option<&str>, limit: usize) -> PortResult<Page<Rotation>> {
        self.call("due_rotations", |w| {
            let keyed = w
                .rotations
                .values()
                .filter_map(|r| r.due_at.filter(|d| *d <= now).map(|d| (d, r)))
                .map(|(d, r)| (format!("{d:012}#{}", r.old_certificate_id), r.clone()))
                .collect();
            Ok(page(keyed, cursor, limit))
        })
    }

    async fn rotation(&self, old_certificate_id: &str) -> PortResult<Option<Rotation>> {
        self.call("rotation", |w| Ok(w.rotations.get(old_certificate_id).cloned()))
    }

    async fn rotation_by_job(&self, job_id: &str) -> PortResult<Option<Rotation>> {
        self.call("rotation_by_job", |w| {
            Ok(w.rotations.values().find(|r| r.job_id == job_id).cloned())
        })
    }

    async fn put_rotation(&self, rotation: &Rotation, expected: Option<(RotationState, u32)>) -> PortResult<bool> {
        self.call("put_rotation", |w| {
            let stored = w
                .rotations
                .get(&rotation.old_certificate_id)
                .map(|r| (r.state, r.attempt));
            if stored != expected {
                return Ok(false);
            }
            w.rotations
                .insert(rotation.old_certificate_id.clone(), rotation.clone());
            Ok(true)
        })
    }

    async fn record_rotated_in(&self, record: &CertificateRecord) -> PortResult<()> {
        self.call("record_rotated_in", |w| {
            w.records.insert(record.certificate_id.clone(), record.clone());
            Ok(())
        })
    }

    async fn record_rotated_out(&self, old_certificate_id: &str, _new: &str, now: i64) -> PortResult<()> {
        self.call("record_rotated_out", |w| {
            if let Some(r) = w.records.get_mut(old_certificate_id) {
                r.status = RecordStatus::Rotated;
                r.updated_at = now;
            }
            Ok(())
        })
    }

    async fn cursor(&self, name: &str) -> PortResult<Option<String>> {
        self.call("cursor", |w| Ok(w.cursors.get(name).cloned()))
    }

    async fn save_cursor(&self, name: &str, cursor: Option<&str>) -> PortResult<()> {
        self.call("save_cursor", |w| {
            match cursor {
                Some(c) => w.cursors.insert(name.into(), c.into()),
                None => w.cursors.remove(name),
            };
            Ok(())
        })
    }
}

impl Inventory for Fake {
    async fn load_config(&self) -> PortResult<OnboardingConfig> {
        self.call("load_config", |w| Ok(w.config.clone()))
    }

    async fn certificate_record(&self, certificate_id: &str) -> PortResult<Option<CertificateRecord>> {
        self.call("certificate_record", |w| Ok(w.records.get(certificate_id).cloned()))
    }

    async fn record_provisioned(&self, record: &CertificateRecord) -> PortResult<()> {
        self.call("record_provisioned", |w| {
            w.records.insert(record.certificate_id.clone(), record.clone());
            Ok(())
        })
    }

    async fn record_activated(&self, certificate_id: &str, at: i64) -> PortResult<()> {
        self.call("record_activated", |w| {
            if let Some(record) = w.records.get_mut(certificate_id)
                && record.status == crate::model::record::RecordStatus::Provisioned
            {
                record.activated_at = Some(at);
            }
            Ok(())
        })
    }

    async fn record_rejected(&self, record: &CertificateRecord) -> PortResult<()> {
        self.record_provisioned(record).await
    }

    async fn record_observed(&self, record: &CertificateRecord) -> PortResult<()> {
        self.record_provisioned(record).await
    }
}

impl crate::ports::NameClaims for Fake {
    async fn claim_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<NameClaim> {
        self.call("claim_thing_name", |w| {
            let holder = w
                .claims
                .entry(thing_name.into())
                .or_insert_with(|| certificate_id.into());
            Ok(if holder == certificate_id {
                NameClaim::Claimed
            } else {
                NameClaim::HeldBy(holder.clone())
            })
        })
    }

    async fn transfer_thing_name(&self, thing_name: &str, from: &str, to: &str) -> PortResult<bool> {
        self.call("transfer_thing_name", |w| match w.claims.get_mut(thing_name) {
            Some(holder) if holder == from && !w.held.contains(thing_name) => {
                *holder = to.into();
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    async fn release_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<()> {
        self.call("release_thing_name", |w| {
            if w.claims.get(thing_name).is_some_and(|h| h == certificate_id) {
                w.claims.remove(thing_name);
                w.held.remove(thing_name);
            }
            Ok(())
        })
    }
}

impl DenyList for Fake {
    async fn denial(&self, ca: &str, serial: &str, fingerprint: &str) -> PortResult<Option<Rejection>> {
        self.call("denial", |w| {
            Ok(if w.denied.contains(fingerprint) {
                Some(Rejection::new(RejectReason::FingerprintDenied, fingerprint))
            } else if w.denied.contains(&format!("{ca}#{serial}")) {
                Some(Rejection::new(RejectReason::SerialDenied, serial))
            } else {
                None
            })
        })
    }
}

/// The deny-list key the fake's lookup reads: the fingerprint, or `<ca>#<serial>`.
pub fn denied_key(key: &DenyKey) -> String {
    match key {
        DenyKey::Fingerprint(fingerprint) => fingerprint.clone(),
        DenyKey::Serial {
            ca_certificate_id,
            serial,
        } => format!("{ca_certificate_id}#{serial}"),
    }
}

impl RevocationStore for Fake {
    async fn claim_revocation(&self, record: &CertificateRecord, reason: &str, now: i64) -> PortResult<bool> {
        self.call("claim_revocation", |w| {
            let stored = w
                .records
                .entry(record.certificate_id.clone())
                .or_insert_with(|| record.clone());
            if stored.status == RecordStatus::Revoked && stored.detail.is_some() {
                return Ok(false);
            }
            stored.status = RecordStatus::Revoked;
            stored.detail = Some(reason.into());
            stored.reason = None;
            stored.certificate_status = Some(CertificateStatus::Revoked.as_str().into());
            stored.updated_at = now;
            Ok(true)
        })
    }

    async fn deny(&self, key: &DenyKey, _reason: &str, _now: i64) -> PortResult<()> {
        self.call("deny", |w| {
            w.denied.insert(denied_key(key));
            Ok(())
        })
    }

    async fn name_holder(&self, thing_name: &str) -> PortResult<Option<String>> {
        self.call("name_holder", |w| Ok(w.claims.get(thing_name).cloned()))
    }

    async fn hold_thing_name(&self, thing_name: &str, certificate_id: &str, _now: i64) -> PortResult<NameClaim> {
        self.call("hold_thing_name", |w| {
            let holder = w
                .claims
                .entry(thing_name.into())
                .or_insert_with(|| certificate_id.into())
                .clone();
            if holder != certificate_id {
                return Ok(NameClaim::HeldBy(holder));
            }
            w.held.insert(thing_name.into());
            Ok(NameClaim::Claimed)
        })
    }
}

impl Connections for Fake {
    async fn disconnect(&self, client_id: &str) -> PortResult<bool> {
        self.call("disconnect", |w| {
            if w.disconnect_denied {
                return Err(PortError::new(
                    "DeleteConnection",
                    PortErrorKind::AccessDenied,
                    "not authorized to perform iot:DeleteConnection",
                ));
            }
            Ok(w.connected.remove(client_id))
        })
    }
}

impl RotationIot for Fake {
    async fn create_job(
        &self,
        job_id: &str,
        thing_name: &str,
        document: &JobDocument,
        _timeout_minutes: u32,
    ) -> PortResult<()> {
        self.call("create_job", |w| {
            w.jobs.entry(job_id.into()).or_insert_with(|| FakeJob {
                thing: thing_name.into(),
                document: document.clone(),
                status: "QUEUED".into(),
                details: BTreeMap::new(),
                queued_at: None,
                started_at: None,
            });
            Ok(())
        })
    }

    async fn job_execution(&self, job_id: &str, thing_name: &str) -> PortResult<Option<JobExecution>> {
        self.call("job_execution", |w| {
            Ok(w.jobs
                .get(job_id)
                .filter(|j| j.thing == thing_name)
                .map(|j| JobExecution {
                    status: j.status.clone(),
                    status_details: j.details.clone(),
                    queued_at: j.queued_at,
                    started_at: j.started_at,
                    last_updated_at: None,
                }))
        })
    }

    async fn cancel_job(&self, job_id: &str) -> PortResult<()> {
        // As the adapter: a missing or ended job is fine.
        self.call("cancel_job", |w| {
            if let Some(job) = w.jobs.get_mut(job_id)
                && matches!(job.status.as_str(), "QUEUED" | "IN_PROGRESS")
            {
                job.status = "CANCELED".into();
            }
            Ok(())
        })
    }

    async fn certificate_from_csr(&self, csr_pem: &str) -> PortResult<IssuedCertificate> {
        self.call("certificate_from_csr", |w| {
            let invalid =
                |e: rcgen::Error| PortError::new("certificate_from_csr", PortErrorKind::Invalid, e.to_string());
            let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(invalid)?;
            validity(&mut csr.params);
            let pem = if w.issue_for_another_key {
                let key = rcgen::KeyPair::generate().map_err(invalid)?;
                csr.params.signed_by(&key, &self.signer.0).map_err(invalid)?.pem()
            } else {
                csr.signed_by(&self.signer.0).map_err(invalid)?.pem()
            };
            self.issue(w, pem, None)
        })
    }

    async fn keys_and_certificate(&self) -> PortResult<IssuedCertificate> {
        self.call("keys_and_certificate", |w| {
            let invalid =
                |e: rcgen::Error| PortError::new("keys_and_certificate", PortErrorKind::Invalid, e.to_string());
            let key = rcgen::KeyPair::generate().map_err(invalid)?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "AWS IoT Certificate");
            validity(&mut params);
            let pem = params.signed_by(&key, &self.signer.0).map_err(invalid)?.pem();
            self.issue(w, pem, Some(key.serialize_pem()))
        })
    }

    async fn certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
        self.call("certificate", |w| {
            Ok(w.certs.get(certificate_id).map(|c| RegisteredCertificate {
                certificate_id: certificate_id.into(),
                certificate_arn: c.arn.clone(),
                ca_certificate_id: c.ca.clone(),
                status: c.status.clone(),
                pem: c.pem.clone(),
            }))
        })
    }

    async fn set_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        self.call("set_status", |w| {
            let cert = w
                .certs
                .get_mut(certificate_id)
                .ok_or_else(|| PortError::new("set_status", PortErrorKind::MissingResource, "no such certificate"))?;
            if cert.status == CertificateStatus::Revoked && *status != CertificateStatus::Revoked {
                return Err(conflict("set_status", "a revoked certificate stays revoked"));
            }
            cert.status = status.clone();
            Ok(())
        })
    }

    async fn thing_principals(&self, thing_name: &str) -> PortResult<Vec<String>> {
        self.call("thing_principals", |w| {
            Ok(w.certs
                .values()
                .filter(|c| c.thing.as_deref() == Some(thing_name))
                .map(|c| c.arn.clone())
                .collect())
        })
    }

    async fn attach_to_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.call("attach_to_thing", |w| {
            let cert = w.certs.get_mut(&id_of(certificate_arn)).ok_or_else(|| {
                PortError::new("attach_to_thing", PortErrorKind::MissingResource, "no such certificate")
            })?;
            match &cert.thing {
                Some(other) if other != thing_name => Err(conflict("attach_to_thing", "exclusive to another thing")),
                _ => {
                    cert.thing = Some(thing_name.into());
                    Ok(())
                }
            }
        })
    }

    async fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.call("detach_from_thing", |w| {
            if let Some(cert) = w.certs.get_mut(&id_of(certificate_arn))
                && cert.thing.as_deref() == Some(thing_name)
            {
                cert.thing = None;
            }
            Ok(())
        })
    }

    async fn policies(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        self.call("policies", |w| {
            Ok(w.certs
                .get(&id_of(certificate_arn))
                .map(|c| c.policies.iter().cloned().collect())
                .unwrap_or_default())
        })
    }

    async fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.call("attach_policy", |w| {
            let cert = w.certs.get_mut(&id_of(certificate_arn)).ok_or_else(|| {
                PortError::new("attach_policy", PortErrorKind::MissingResource, "no such certificate")
            })?;
            cert.policies.insert(policy_name.into());
            Ok(())
        })
    }

    async fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.call("detach_policy", |w| {
            if let Some(cert) = w.certs.get_mut(&id_of(certificate_arn)) {
                cert.policies.remove(policy_name);
            }
            Ok(())
        })
    }

    async fn delete_certificate(&self, certificate_id: &str) -> PortResult<()> {
        self.call("delete_certificate", |w| {
            let Some(cert) = w.certs.get(certificate_id) else {
                return Ok(());
            };
            if cert.status == CertificateStatus::Active {
                return Err(conflict("delete_certificate", "certificate is ACTIVE"));
            }
            if cert.thing.is_some() || !cert.policies.is_empty() {
                return Err(conflict("delete_certificate", "certificate is attached"));
            }
            w.certs.remove(certificate_id);
            Ok(())
        })
    }

    async fn publish(&self, topic: &str, payload: &[u8]) -> PortResult<()> {
        self.call("publish", |w| {
            w.published.push((topic.into(), payload.to_vec()));
            Ok(())
        })
    }
}

impl RotationObjects for Fake {
    async fn put_object(&self, key: &str, body: &[u8]) -> PortResult<()> {
        self.call("put_object", |w| {
            w.objects.insert(key.into(), body.to_vec());
            Ok(())
        })
    }

    async fn delete_object(&self, key: &str) -> PortResult<()> {
        self.call("delete_object", |w| {
            w.objects.remove(key);
            Ok(())
        })
    }

    fn bucket(&self) -> &str {
        BUCKET
    }
}

/// A clock that moves only when slept on.
#[derive(Clone)]
pub struct FakePacer {
    pub start: Instant,
    pub slept: Arc<StdMutex<Vec<Duration>>>,
}

impl Default for FakePacer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakePacer {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            slept: Arc::default(),
        }
    }

    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Pacer for FakePacer {
    fn now(&self) -> Instant {
        self.start + self.sleeps().iter().sum::<Duration>()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        self.slept.lock().unwrap_or_else(PoisonError::into_inner).push(duration);
        std::future::ready(())
    }
}

impl RetirementIot for Fake {
    async fn thing_membership(&self, thing_name: &str) -> PortResult<Option<ThingMembership>> {
        self.call("thing_membership", |w| {
            Ok(w.things.get(thing_name).map(|t| ThingMembership {
                thing_groups: t.groups.iter().cloned().collect(),
                billing_group: t.billing_group.clone(),
            }))
        })
    }

    async fn attached_principals(&self, thing_name: &str) -> PortResult<Option<Vec<String>>> {
        self.call("attached_principals", |w| {
            Ok(w.things.contains_key(thing_name).then(|| {
                w.certs
                    .values()
                    .filter(|c| c.thing.as_deref() == Some(thing_name))
                    .map(|c| c.arn.clone())
                    .collect()
            }))
        })
    }

    async fn principal_things(&self, principal_arn: &str) -> PortResult<Vec<String>> {
        self.call("principal_things", |w| {
            let id = id_of(principal_arn);
            let mut things: Vec<String> = w.certs.get(&id).and_then(|c| c.thing.clone()).into_iter().collect();
            things.extend(w.also_attached.get(&id).cloned().unwrap_or_default());
            Ok(things)
        })
    }

    async fn leave_thing_group(&self, thing_name: &str, group: &str) -> PortResult<()> {
        self.call("leave_thing_group", |w| {
            if let Some(t) = w.things.get_mut(thing_name) {
                t.groups.remove(group);
            }
            Ok(())
        })
    }

    async fn leave_billing_group(&self, thing_name: &str, group: &str) -> PortResult<()> {
        self.call("leave_billing_group", |w| {
            if let Some(t) = w.things.get_mut(thing_name)
                && t.billing_group.as_deref() == Some(group)
            {
                t.billing_group = None;
            }
            Ok(())
        })
    }

    async fn delete_thing(&self, thing_name: &str) -> PortResult<()> {
        self.call("delete_thing", |w| {
            let attached = w.certs.values().any(|c| c.thing.as_deref() == Some(thing_name));
            if attached || (w.things.contains_key(thing_name) && w.delete_lag > 0) {
                w.delete_lag = w.delete_lag.saturating_sub(usize::from(!attached));
                return Err(conflict("delete_thing", "still attached to one or more principals"));
            }
            w.things.remove(thing_name);
            Ok(())
        })
    }
}

impl RetirementInventory for Fake {
    async fn retirement(&self, thing_name: &str) -> PortResult<Option<RetirementTicket>> {
        self.call("retirement", |w| Ok(w.retirements.get(thing_name).cloned()))
    }

    async fn claim_retirement(&self, ticket: &RetirementTicket) -> PortResult<bool> {
        self.call("claim_retirement", |w| {
            if w.retirements.contains_key(&ticket.thing_name) {
                return Ok(false);
            }
            w.retirements.insert(ticket.thing_name.clone(), ticket.clone());
            Ok(true)
        })
    }

    async fn add_retiring_certificates(&self, thing_name: &str, ids: &BTreeSet<String>) -> PortResult<()> {
        self.call("add_retiring_certificates", |w| {
            let ticket = w
                .retirements
                .get_mut(thing_name)
                .ok_or_else(|| conflict("add_retiring_certificates", "no retirement"))?;
            ticket.certificate_ids.extend(ids.iter().cloned());
            Ok(())
        })
    }

    async fn record_retired(&self, certificate_id: &str, thing_name: &str, reason: &str, now: i64) -> PortResult<()> {
        self.call("record_retired", |w| {
            if let Some(other) = w
                .records
                .get(certificate_id)
                .and_then(|r| r.thing_name.as_deref())
                .filter(|t| *t != thing_name)
            {
                return Err(conflict("record_retired", &format!("recorded for thing {other}")));
            }
            let record = w.records.entry(certificate_id.into()).or_insert_with(|| {
                let mut bare = CertificateRecord::bare(certificate_id, "", RecordStatus::Retired, now);
                bare.thing_name = Some(thing_name.into());
                bare
            });
            if record.status != RecordStatus::Retired || record.detail.is_none() {
                record.status = RecordStatus::Retired;
                record.detail = Some(reason.into());
                record.updated_at = now;
                record.activated_at = None;
            }
            Ok(())
        })
    }

    async fn finish_retirement(&self, thing_name: &str) -> PortResult<()> {
        self.call("finish_retirement", |w| {
            w.retirements.remove(thing_name);
            Ok(())
        })
    }
}

// --- the fleet's own CA (`kmsCa` issuers) -----------------------------------

impl CaSigners for Fake {
    type Signer = MemorySigner;

    fn signer(&self, key_arn: &str) -> Option<&MemorySigner> {
        self.kms.get().filter(|(arn, _)| arn == key_arn).map(|(_, s)| s)
    }
}

impl CertificateImport for Fake {
    /// Registers `INACTIVE` as IoT does: only under a registered, ACTIVE CA
    /// whose key signed the certificate; `Conflict` when it exists.
    async fn register_certificate(&self, pem: &str, registration: Registration<'_>) -> PortResult<String> {
        self.call("register_certificate", |w| {
            let invalid = |d: &str| PortError::new("register_certificate", PortErrorKind::Invalid, d);
            let Registration::UnderCa { ca_pem } = registration else {
                return Err(invalid("rotation registers under its CA only"));
            };
            let ca = Certificate::from_pem(ca_pem).map_err(|e| invalid(&e.to_string()))?;
            if w.cas
                .get(&ca.fingerprint)
                .is_none_or(|c| c.status != CertificateStatus::Active)
            {
                return Err(invalid("the CA is not registered or not ACTIVE"));
            }
            let cert = Certificate::from_pem(pem).map_err(|e| invalid(&e.to_string()))?;
            if !cert.issuer_matches_subject_of(&ca) || !cert.is_signed_by(&ca) {
                return Err(invalid("the certificate is not signed by the CA"));
            }
            if w.certs.contains_key(&cert.fingerprint) {
                return Err(conflict("register_certificate", "already registered"));
            }
            w.certs.insert(
                cert.fingerprint.clone(),
                FakeCert {
                    arn: arn(&cert.fingerprint),
                    status: CertificateStatus::Inactive,
                    pem: pem.to_string(),
                    thing: None,
                    policies: BTreeSet::new(),
                    ca: Some(ca.fingerprint.clone()),
                },
            );
            Ok(cert.fingerprint)
        })
    }
}

impl CertificateRegistry for Fake {
    async fn describe_certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
        RotationIot::certificate(self, certificate_id).await
    }

    async fn describe_ca_certificate(&self, ca_certificate_id: &str) -> PortResult<Option<RegisteredCa>> {
        self.call("describe_ca_certificate", |w| Ok(w.cas.get(ca_certificate_id).cloned()))
    }

    async fn set_certificate_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        RotationIot::set_status(self, certificate_id, status).await
    }
}
