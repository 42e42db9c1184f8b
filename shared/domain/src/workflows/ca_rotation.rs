//! The manufacturer CA's rotation, as an operator runs it (`onboard ca
//! rotate | status | retire`) and as the reconciler watches it:
//!
//! - [`ca_usage`]: IoT's own count of the device certificates that chain to
//!   a CA (`ListCertificatesByCA`, every page), by status, with the newest
//!   creation date and the first certificates that keep the CA in use;
//! - [`ca_report`]: a CA's status, auto-registration, expiry and usage;
//! - [`retire_ca`]: the old CA set `INACTIVE` only when no device still
//!   depends on it, decided on a listing made at the moment of the call,
//!   after auto-registration was turned off so that no new device can slip
//!   in between the check and the change;
//! - [`ca_expiry`]: the reconciler's view of a bound CA's expiry.
//!
//! Which CA may replace which is a check ([`crate::check_ca_rotation`]).

use crate::checks::ca_rotation::{days_to_expiry, expires_within};
use crate::model::certificate::Certificate;
use crate::model::status::CertificateStatus;
use crate::ports::{CaCertificates, CaRegistry, ListedCertificate, PortError, PortErrorKind, PortResult, RegisteredCa};

/// Certificates asked for per `ListCertificatesByCA` page (its maximum).
pub const CA_LISTING_PAGE: usize = 250;
/// Days before a CA's expiry from which the reconciler warns, by default.
pub const DEFAULT_CA_EXPIRY_WARNING_DAYS: i64 = 90;

/// What IoT says of the device certificates that chain to one CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaUsage {
    pub active: u64,
    pub pending_activation: u64,
    pub inactive: u64,
    pub revoked: u64,
    /// Any other status (`PENDING_TRANSFER`, `REGISTER_INACTIVE`, unknown).
    pub other: u64,
    /// The newest certificate's creation date (Unix seconds), any status:
    /// whether the CA still gets registrations.
    pub newest_created_at: Option<i64>,
    /// The first certificates (in listing order) that keep the CA in use:
    /// `ACTIVE`, or `PENDING_ACTIVATION` (a registration in flight, which the
    /// registrar may activate any moment).
    pub in_use_sample: Vec<ListedCertificate>,
}

impl CaUsage {
    /// Devices that still depend on the CA: `ACTIVE` and `PENDING_ACTIVATION`.
    pub fn in_use(&self) -> u64 {
        self.active + self.pending_activation
    }

    /// Every certificate listed.
    pub fn total(&self) -> u64 {
        self.active + self.pending_activation + self.inactive + self.revoked + self.other
    }

    fn count(&mut self, certificate: &ListedCertificate, sample: usize) {
        match certificate.status {
            CertificateStatus::Active => self.active += 1,
            CertificateStatus::PendingActivation => self.pending_activation += 1,
            CertificateStatus::Inactive => self.inactive += 1,
            CertificateStatus::Revoked => self.revoked += 1,
            _ => self.other += 1,
        }
        if matches!(
            certificate.status,
            CertificateStatus::Active | CertificateStatus::PendingActivation
        ) && self.in_use_sample.len() < sample
        {
            self.in_use_sample.push(certificate.clone());
        }
        if let Some(created) = certificate.created_at {
            self.newest_created_at = Some(self.newest_created_at.map_or(created, |n| n.max(created)));
        }
    }
}

/// Every device certificate of `ca` as IoT lists it now (all pages), counted
/// by status, with the first `sample` that keep it in use.
///
/// # Errors
/// The listing's failure, or a listing that hands back the cursor it was
/// given (it would never end).
pub async fn ca_usage<L: CaCertificates>(listing: &L, ca: &str, sample: usize) -> PortResult<CaUsage> {
    let mut usage = CaUsage::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = listing
            .certificates_of_ca(ca, cursor.as_deref(), CA_LISTING_PAGE)
            .await?;
        for certificate in &page.items {
            usage.count(certificate, sample);
        }
        match page.cursor {
            None => return Ok(usage),
            Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                return Err(PortError::new(
                    "ListCertificatesByCA",
                    PortErrorKind::Invalid,
                    format!("the listing of CA {ca} returned the same marker twice"),
                ));
            }
            next => cursor = next,
        }
    }
}

/// One CA as `onboard ca status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaReport {
    pub ca_certificate_id: String,
    pub status: CertificateStatus,
    pub auto_registration: bool,
    /// From the CA's own PEM; `None` when IoT's PEM does not parse.
    pub not_after: Option<i64>,
    pub days_to_expiry: Option<i64>,
    pub usage: CaUsage,
}

impl CaReport {
    /// New devices can still register under the CA (`ACTIVE`, auto-registration on).
    pub fn accepts_registrations(&self) -> bool {
        self.status == CertificateStatus::Active && self.auto_registration
    }
}

/// A CA's state (from `DescribeCACertificate`) and usage (from
/// `ListCertificatesByCA`) as of `now`; `None` when IoT has no such CA.
///
/// # Errors
/// The first failing call.
pub async fn ca_report<L: CaCertificates, R: CaRegistry>(
    listing: &L,
    registry: &R,
    ca: &str,
    now: i64,
    sample: usize,
) -> PortResult<Option<CaReport>> {
    let Some(state) = registry.ca_state(ca).await? else {
        return Ok(None);
    };
    let not_after = Certificate::from_pem(&state.pem).ok().map(|c| c.not_after);
    let usage = ca_usage(listing, ca, sample).await?;
    Ok(Some(CaReport {
        ca_certificate_id: state.certificate_id,
        status: state.status,
        auto_registration: state.auto_registration,
        not_after,
        days_to_expiry: not_after.map(|n| days_to_expiry(n, now)),
        usage,
    }))
}

// --- retirement -----------------------------------------------------------------

/// What [`retire_ca`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRetireOutcome {
    /// Set `INACTIVE` now, auto-registration off. `usage` is IoT's listing
    /// made after auto-registration was turned off, the one the decision
    /// rested on: with `forced`, its in-use certificates are cut off.
    Retired { usage: CaUsage, forced: bool },
    /// It was `INACTIVE` already (auto-registration made sure off).
    AlreadyInactive,
    /// Refused: devices still depend on the CA; nothing was changed.
    /// `raced`: they appeared on the second listing (auto-registration was
    /// turned back on, as it was found).
    Refused { usage: CaUsage, raced: bool },
}

/// Why [`retire_ca`] could not decide.
#[derive(Debug, thiserror::Error)]
pub enum CaRetireError {
    #[error("no CA {0} is registered in AWS IoT")]
    UnknownCa(String),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Retires `ca`: sets it `INACTIVE` only when IoT lists no `ACTIVE` or
/// `PENDING_ACTIVATION` certificate under it, unless `force`.
///
/// The steps, each idempotent (a retire interrupted anywhere finishes when
/// run again):
/// 1. `DescribeCACertificate`: unknown → error; `INACTIVE` → make sure
///    auto-registration is off, done;
/// 2. list its certificates: in use and not `force` → refused, nothing changed;
/// 3. turn auto-registration off, so that no device registers from here on
///    (JITR registers a certificate only under a CA with auto-registration);
/// 4. list again: a registration that raced the first listing is seen now;
///    in use and not `force` → auto-registration back on (as found) and refused;
/// 5. `INACTIVE`.
///
/// # Errors
/// [`CaRetireError::UnknownCa`], or the first failing call.
pub async fn retire_ca<L: CaCertificates, R: CaRegistry>(
    listing: &L,
    registry: &R,
    ca: &str,
    force: bool,
    sample: usize,
) -> Result<CaRetireOutcome, CaRetireError> {
    let state = registry
        .ca_state(ca)
        .await?
        .ok_or_else(|| CaRetireError::UnknownCa(ca.to_string()))?;
    if state.status == CertificateStatus::Inactive {
        if state.auto_registration {
            registry.set_ca_auto_registration(ca, false).await?;
        }
        return Ok(CaRetireOutcome::AlreadyInactive);
    }
    let first = ca_usage(listing, ca, sample).await?;
    if first.in_use() > 0 && !force {
        return Ok(CaRetireOutcome::Refused {
            usage: first,
            raced: false,
        });
    }
    if state.auto_registration {
        registry.set_ca_auto_registration(ca, false).await?;
    }
    let second = ca_usage(listing, ca, sample).await?;
    if second.in_use() > 0 && !force {
        if state.auto_registration {
            registry.set_ca_auto_registration(ca, true).await?;
        }
        return Ok(CaRetireOutcome::Refused {
            usage: second,
            raced: true,
        });
    }
    registry.set_ca_status(ca, &CertificateStatus::Inactive).await?;
    Ok(CaRetireOutcome::Retired {
        usage: second,
        forced: force,
    })
}

// --- expiry -----------------------------------------------------------------------

/// A bound CA's expiry, as the reconciler records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaExpiry {
    pub ca_certificate_id: String,
    pub active: bool,
    pub not_after: i64,
    pub days_to_expiry: i64,
    /// `ACTIVE` and within the warning window (or past): a retired CA's
    /// expiry warns no one.
    pub expiring_soon: bool,
}

/// `ca`'s expiry as of `now`; `None` when its PEM does not parse.
pub fn ca_expiry(ca: &RegisteredCa, now: i64, warning_days: i64) -> Option<CaExpiry> {
    let not_after = Certificate::from_pem(&ca.pem).ok()?.not_after;
    let active = ca.status == CertificateStatus::Active;
    Some(CaExpiry {
        ca_certificate_id: ca.certificate_id.clone(),
        active,
        not_after,
        days_to_expiry: days_to_expiry(not_after, now),
        expiring_soon: active && expires_within(not_after, now, warning_days),
    })
}

/// Every bound CA's expiry from one reconciler run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaExpiryReport {
    pub cas: Vec<CaExpiry>,
    /// Bound CAs that could not be read (missing in IoT, unparseable PEM, a
    /// failed call); logged.
    pub errors: u32,
}

impl CaExpiryReport {
    /// `ACTIVE` bound CAs within the warning window.
    pub fn expiring_soon(&self) -> u32 {
        u32::try_from(self.cas.iter().filter(|c| c.expiring_soon).count()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ca::{CaFake, Inject, NEW, OLD, ca_pem};

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn fake_with_devices(active: usize, pending: usize, revoked: usize) -> CaFake {
        let fake = CaFake::with_ca(OLD, true);
        for i in 0..active {
            fake.cert(
                &format!("a{i:03}"),
                OLD,
                CertificateStatus::Active,
                Some(NOW - 1_000 + i as i64),
            );
        }
        for i in 0..pending {
            fake.cert(
                &format!("p{i:03}"),
                OLD,
                CertificateStatus::PendingActivation,
                Some(NOW - 10),
            );
        }
        for i in 0..revoked {
            fake.cert(&format!("r{i:03}"), OLD, CertificateStatus::Revoked, Some(NOW - 5_000));
        }
        fake.cert("other-ca", NEW, CertificateStatus::Active, Some(NOW));
        fake
    }

    #[tokio::test]
    async fn usage_counts_every_page_by_status() {
        let fake = fake_with_devices(600, 2, 3);
        let usage = ca_usage(&fake, OLD, 5).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((usage.active, usage.pending_activation, usage.revoked), (600, 2, 3));
        assert_eq!((usage.in_use(), usage.total()), (602, 605));
        assert_eq!(usage.newest_created_at, Some(NOW - 10));
        let sample: Vec<&str> = usage.in_use_sample.iter().map(|c| c.certificate_id.as_str()).collect();
        assert_eq!(sample, ["a000", "a001", "a002", "a003", "a004"]);
        assert_eq!(fake.listings(), 3, "605 certificates, pages of 250");
    }

    #[tokio::test]
    async fn a_listing_that_repeats_its_marker_is_an_error_not_a_loop() {
        let fake = fake_with_devices(300, 0, 0);
        fake.with(|w| w.stuck_cursor = true);
        let error = ca_usage(&fake, OLD, 0)
            .await
            .err()
            .unwrap_or_else(|| panic!("no error"));
        assert_eq!(error.kind, PortErrorKind::Invalid);
    }

    #[tokio::test]
    async fn report_reads_expiry_from_the_pem() {
        let fake = fake_with_devices(1, 0, 0);
        let report = ca_report(&fake, &fake, OLD, NOW, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no report"));
        assert_eq!(report.days_to_expiry, Some(30), "the fake's OLD CA expires in 30 days");
        assert!(report.accepts_registrations());
        assert_eq!(report.usage.active, 1);
        assert_eq!(ca_report(&fake, &fake, "nope", NOW, 10).await.ok(), Some(None));
    }

    #[tokio::test]
    async fn retire_refuses_while_devices_remain_and_changes_nothing() {
        for (active, pending) in [(1, 0), (0, 1), (3, 2)] {
            let fake = fake_with_devices(active, pending, 4);
            let outcome = retire_ca(&fake, &fake, OLD, false, 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let CaRetireOutcome::Refused { usage, raced: false } = outcome else {
                panic!("{outcome:?}");
            };
            assert_eq!(usage.in_use(), (active + pending) as u64);
            let state = fake.state(OLD);
            assert_eq!(
                (state.status, state.auto_registration),
                (CertificateStatus::Active, true)
            );
            assert!(fake.updates().is_empty());
        }
    }

    #[tokio::test]
    async fn retire_of_an_unused_ca_turns_auto_registration_off_then_sets_inactive() {
        let fake = fake_with_devices(0, 0, 2);
        let outcome = retire_ca(&fake, &fake, OLD, false, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(outcome, CaRetireOutcome::Retired { forced: false, .. }),
            "{outcome:?}"
        );
        assert_eq!(fake.updates(), ["auto-registration off", "INACTIVE"]);
        let state = fake.state(OLD);
        assert_eq!(
            (state.status, state.auto_registration),
            (CertificateStatus::Inactive, false)
        );
        // Again: nothing more to do.
        let again = retire_ca(&fake, &fake, OLD, false, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, CaRetireOutcome::AlreadyInactive);
        assert_eq!(fake.updates().len(), 2);
    }

    #[tokio::test]
    async fn a_registration_racing_the_check_is_caught_by_the_second_listing() {
        let fake = fake_with_devices(0, 0, 0);
        // A device's certificate is registered right after the first listing,
        // before auto-registration is off.
        fake.before_update(|w| {
            w.certs.insert(
                "late".into(),
                (OLD.into(), CertificateStatus::PendingActivation, Some(NOW)),
            );
        });
        let outcome = retire_ca(&fake, &fake, OLD, false, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let CaRetireOutcome::Refused { usage, raced: true } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(usage.in_use_sample[0].certificate_id, "late");
        let state = fake.state(OLD);
        assert_eq!(
            (state.status, state.auto_registration),
            (CertificateStatus::Active, true),
            "left as found"
        );
        assert_eq!(fake.updates(), ["auto-registration off", "auto-registration on"]);
    }

    #[tokio::test]
    async fn a_ca_without_auto_registration_is_left_so_when_refused() {
        let fake = fake_with_devices(0, 0, 0);
        fake.with(|w| {
            if let Some(ca) = w.cas.get_mut(OLD) {
                ca.auto_registration = false;
            }
        });
        fake.before_update(|_| {});
        fake.cert("x", OLD, CertificateStatus::Active, None);
        let outcome = retire_ca(&fake, &fake, OLD, false, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(outcome, CaRetireOutcome::Refused { raced: false, .. }));
        assert!(fake.updates().is_empty());
    }

    #[tokio::test]
    async fn force_retires_and_reports_what_it_cut_off() {
        let fake = fake_with_devices(3, 1, 0);
        let outcome = retire_ca(&fake, &fake, OLD, true, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let CaRetireOutcome::Retired { usage, forced: true } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!((usage.in_use(), usage.in_use_sample.len()), (4, 2));
        assert_eq!(fake.state(OLD).status, CertificateStatus::Inactive);
        // Only the CA changed: its devices' certificates are untouched.
        assert_eq!(
            fake.with(|w| w.certs.get("a000").map(|c| c.1.clone())),
            Some(CertificateStatus::Active)
        );
    }

    #[tokio::test]
    async fn an_unknown_ca_is_an_error() {
        let fake = CaFake::with_ca(OLD, true);
        assert!(matches!(
            retire_ca(&fake, &fake, NEW, false, 10).await,
            Err(CaRetireError::UnknownCa(id)) if id == NEW
        ));
    }

    /// A retire interrupted at every call (before its effect, or after it
    /// with the answer lost) finishes when run again, and never sets a CA
    /// in use INACTIVE.
    #[tokio::test]
    async fn an_interrupted_retire_converges_from_every_crash_point() {
        for in_use in [false, true] {
            let calls = {
                let fake = fake_with_devices(usize::from(in_use), 0, 1);
                let _ = retire_ca(&fake, &fake, OLD, false, 10).await;
                fake.calls()
            };
            for n in 0..calls {
                for inject in [Inject::Before(n), Inject::After(n)] {
                    let fake = fake_with_devices(usize::from(in_use), 0, 1);
                    fake.with(|w| w.inject = Some(inject));
                    let first = retire_ca(&fake, &fake, OLD, false, 10).await;
                    assert!(first.is_err(), "{inject:?}: the injected failure surfaces");
                    fake.with(|w| w.inject = None);
                    let outcome = retire_ca(&fake, &fake, OLD, false, 10)
                        .await
                        .unwrap_or_else(|e| panic!("{inject:?}: {e}"));
                    let state = fake.state(OLD);
                    if in_use {
                        assert!(
                            matches!(outcome, CaRetireOutcome::Refused { .. }),
                            "{inject:?}: {outcome:?}"
                        );
                        assert_eq!(state.status, CertificateStatus::Active, "{inject:?}");
                    } else {
                        assert!(
                            matches!(
                                outcome,
                                CaRetireOutcome::Retired { .. } | CaRetireOutcome::AlreadyInactive
                            ),
                            "{inject:?}: {outcome:?}"
                        );
                        assert_eq!(
                            (state.status, state.auto_registration),
                            (CertificateStatus::Inactive, false),
                            "{inject:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn expiry_warns_for_active_cas_within_the_window_only() {
        let registered = |status: CertificateStatus, days: i64| RegisteredCa {
            certificate_id: "ca".into(),
            status,
            pem: ca_pem(NOW, days),
            jitp: false,
        };
        let soon = ca_expiry(&registered(CertificateStatus::Active, 30), NOW, 90).unwrap_or_else(|| panic!());
        assert_eq!((soon.days_to_expiry, soon.expiring_soon, soon.active), (30, true, true));
        let later = ca_expiry(&registered(CertificateStatus::Active, 400), NOW, 90).unwrap_or_else(|| panic!());
        assert!(!later.expiring_soon);
        let retired = ca_expiry(&registered(CertificateStatus::Inactive, 30), NOW, 90).unwrap_or_else(|| panic!());
        assert!(!retired.expiring_soon && !retired.active);
        let expired = ca_expiry(&registered(CertificateStatus::Active, -2), NOW, 90).unwrap_or_else(|| panic!());
        assert!(expired.expiring_soon && expired.days_to_expiry < 0);
        let broken = RegisteredCa {
            pem: "not a pem".into(),
            ..registered(CertificateStatus::Active, 30)
        };
        assert_eq!(ca_expiry(&broken, NOW, 90), None);
        let report = CaExpiryReport {
            cas: vec![soon, later, retired, expired],
            errors: 0,
        };
        assert_eq!(report.expiring_soon(), 2);
        let _ = DAY;
    }
}
