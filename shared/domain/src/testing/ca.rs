//! An in-memory fake of the ports the CA rotation workflows use
//! (`CaCertificates`, `CaRegistry`), with failure injection over every call
//! and a hook that runs right before the first change to a CA.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};

use crate::model::status::CertificateStatus;
use crate::ports::{
    CaCertificates, CaRegistry, CaState, ListedCertificate, Page, PortError, PortErrorKind, PortResult,
};
use crate::testing::reconciler::{arn, page};

pub const OLD: &str = "ca-old";
pub const NEW: &str = "ca-new";
/// The fake's "now" for the CAs it makes (the old CA expires 30 days after it).
pub const FAKE_NOW: i64 = 1_800_000_000;

pub use crate::testing::inject::Inject;
use crate::testing::inject::call_with_injection;

type Hook = Box<dyn FnOnce(&mut World) + Send>;

#[derive(Default)]
pub struct World {
    pub cas: BTreeMap<String, CaState>,
    /// Device certificates by id: (CA, status, created_at).
    pub certs: BTreeMap<String, (String, CertificateStatus, Option<i64>)>,
    pub calls: usize,
    pub listings: usize,
    pub updates: Vec<String>,
    pub inject: Option<Inject>,
    /// The listing hands back the cursor it was given.
    pub stuck_cursor: bool,
    pub before_update: Option<Hook>,
}

#[derive(Clone, Default)]
pub struct CaFake(Arc<StdMutex<World>>);

/// A self-signed CA's PEM valid until `now + days` days.
pub fn ca_pem(now: i64, days: i64) -> String {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap_or_else(|e| panic!("{e}"));
    params.not_before = at(now - 86_400 * 400);
    params.not_after = at(now + 86_400 * days);
    params.self_signed(&key).unwrap_or_else(|e| panic!("{e}")).pem()
}

impl CaFake {
    /// A fake holding the ACTIVE CA `id` (expiring 30 days after [`FAKE_NOW`]).
    pub fn with_ca(id: &str, auto_registration: bool) -> Self {
        let fake = Self::default();
        fake.with(|w| {
            w.cas.insert(
                id.into(),
                CaState {
                    certificate_id: id.into(),
                    status: CertificateStatus::Active,
                    auto_registration,
                    pem: ca_pem(FAKE_NOW, 30),
                },
            )
        });
        fake
    }
    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut world = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut world)
    }
    pub fn cert(&self, id: &str, ca: &str, status: CertificateStatus, created_at: Option<i64>) {
        self.with(|w| w.certs.insert(id.into(), (ca.into(), status, created_at)));
    }
    pub fn state(&self, ca: &str) -> CaState {
        self.with(|w| w.cas.get(ca).cloned())
            .unwrap_or_else(|| panic!("no CA {ca}"))
    }
    pub fn updates(&self) -> Vec<String> {
        self.with(|w| w.updates.clone())
    }
    pub fn calls(&self) -> usize {
        self.with(|w| w.calls)
    }
    pub fn listings(&self) -> usize {
        self.with(|w| w.listings)
    }
    /// Runs `hook` right before the first change to a CA.
    pub fn before_update(&self, hook: impl FnOnce(&mut World) + Send + 'static) {
        self.with(|w| w.before_update = Some(Box::new(hook)));
    }

    /// One call: counted, failed as injected, `effect` applied.
    fn call<R>(&self, operation: &'static str, effect: impl FnOnce(&mut World) -> PortResult<R>) -> PortResult<R> {
        self.with(|w| {
            let n = w.calls;
            w.calls += 1;
            call_with_injection(w, |w| &mut w.inject, n, operation, effect)
        })
    }
}

impl CaCertificates for CaFake {
    async fn certificates_of_ca(
        &self,
        ca: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> PortResult<Page<ListedCertificate>> {
        self.call("ListCertificatesByCA", |w| {
            w.listings += 1;
            let keyed = w
                .certs
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
            let mut found = page(keyed, cursor, limit);
            if w.stuck_cursor && cursor.is_some() {
                found.cursor = cursor.map(str::to_string);
            }
            Ok(found)
        })
    }
}

impl CaRegistry for CaFake {
    async fn ca_state(&self, ca: &str) -> PortResult<Option<CaState>> {
        self.call("DescribeCACertificate", |w| Ok(w.cas.get(ca).cloned()))
    }
    async fn set_ca_auto_registration(&self, ca: &str, enabled: bool) -> PortResult<()> {
        self.call("UpdateCACertificate", |w| {
            if let Some(hook) = w.before_update.take() {
                hook(w);
            }
            let state = w
                .cas
                .get_mut(ca)
                .ok_or_else(|| PortError::new("UpdateCACertificate", PortErrorKind::MissingResource, ca))?;
            state.auto_registration = enabled;
            w.updates
                .push(format!("auto-registration {}", if enabled { "on" } else { "off" }));
            Ok(())
        })
    }
    async fn set_ca_status(&self, ca: &str, status: &CertificateStatus) -> PortResult<()> {
        self.call("UpdateCACertificate", |w| {
            if let Some(hook) = w.before_update.take() {
                hook(w);
            }
            let state = w
                .cas
                .get_mut(ca)
                .ok_or_else(|| PortError::new("UpdateCACertificate", PortErrorKind::MissingResource, ca))?;
            state.status = status.clone();
            w.updates.push(status.as_str().to_string());
            Ok(())
        })
    }
}
