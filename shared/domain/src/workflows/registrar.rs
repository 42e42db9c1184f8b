//! The JITR registrar workflow: from a certificate-registered event to an
//! activated device or a recorded rejection.
//!
//! Fail-closed and idempotent. Every step tolerates having run before, the
//! certificate is set ACTIVE only after every other step succeeded, and an
//! error anywhere leaves it PENDING_ACTIVATION for the retry to converge.
//!
//! Critical path, with configuration and CA cached (six sequential rounds
//! until the device can connect, one more after):
//! 1. this deployment's record of the certificate (one `GetItem`; on a cold
//!    container concurrently with the configuration query and
//!    `DescribeCACertificate`): a record provisioned and marked activated
//!    ends a duplicate event here, without a `DescribeCertificate`, the
//!    scarcest call of the account (10 per second by default);
//! 2. `DescribeCertificate`;
//! 3. the deny-list lookup for the certificate's serial and fingerprint (one
//!    `BatchGetItem`): it needs the serial, which only the certificate holds,
//!    and it comes before round 4 so that nothing (no claim, no thing) is
//!    ever created for a denied certificate;
//! 4. claim the thing name ‖ list the thing's principals ‖ `CreateThing`;
//! 5. attach the certificate exclusively ‖ add to each group ‖ attach the
//!    policy ‖ store the credentials record ‖ write the inventory record;
//! 6. set the certificate ACTIVE;
//! 7. mark the record activated (only after IoT accepted round 6).
//!
//! `CreateThing` may run before the collision verdict because it can only
//! create a thing that did not exist, and then no other certificate can hold
//! that identity; for an existing thing it changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, try_join, try_join_all};
use futures::lock::Mutex;

use crate::checks::certificate::{
    CaVerdict, CheckContext, check_ca, check_certificate_facts, check_device_certificate,
};
use crate::checks::subject::{ImportNaming, approve_import_naming};
use crate::model::certificate::{Certificate, MalformedCertificate};
use crate::model::event::JitrEvent;
use crate::model::plan::ProvisioningPlan;
use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::{CertificateRecord, Outcome, RecordStatus};
use crate::model::status::{CertificateStatus, RejectionAction};
use crate::policy::config::OnboardingConfig;
use crate::policy::profile::DeviceProfile;
use crate::ports::{
    CertificateRegistry, CredentialsStore, DenyList, Inventory, NameClaim, PortError, RegisteredCa,
    RegisteredCertificate, ThingCreation, ThingRegistry,
};
use crate::workflows::config_cache::ConfigCache;

/// How many bound CAs [`Registrar::warm_up`] describes ahead of the first event.
pub const WARM_UP_CAS: usize = 16;

/// Registrar settings, read from the environment by the function.
#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    /// Tolerance on notBefore.
    pub clock_skew_secs: i64,
    /// How long configuration and CA descriptions are cached in the container.
    pub cache_ttl: Duration,
    /// Key prefix of credentials records in the bucket.
    pub credentials_prefix: String,
    /// A default profile and the CA ids bound to it, from the environment.
    pub default_profile: Option<(DeviceProfile, Vec<String>)>,
    /// Revoke certificates that are not this deployment's to judge: those
    /// whose CA (as IoT records it) is bound to no profile here, and those
    /// whose event names a CA other than the certificate's. Off by default:
    /// the registration rule sees every CA in the account, and another system
    /// may own some of them; such certificates are then left alone, logged
    /// and counted.
    pub revoke_foreign: bool,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        Self {
            clock_skew_secs: crate::checks::certificate::DEFAULT_CLOCK_SKEW_SECS,
            cache_ttl: Duration::from_secs(60),
            credentials_prefix: "credentials/".to_string(),
            default_profile: None,
            revoke_foreign: false,
        }
    }
}

/// Why an event could not be processed now. The event must be retried.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(
        "CA {ca_certificate_id} is bound to profile {profile:?}, which {problem}; fix the profile, the event will be retried"
    )]
    ProfileMisconfigured {
        ca_certificate_id: String,
        profile: String,
        problem: String,
    },
    #[error("CA {ca_certificate_id} is registered in IoT but its certificate does not parse: {problem}")]
    CaUnreadable { ca_certificate_id: String, problem: String },
    #[error("thing name {thing_name} changed hands while being claimed; retrying")]
    ClaimRace { thing_name: String },
}

impl ProvisioningError {
    /// Throttling and races: expected under bursts, logged as warnings.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Port(e) => e.is_transient(),
            Self::ClaimRace { .. } => true,
            Self::ProfileMisconfigured { .. } | Self::CaUnreadable { .. } => false,
        }
    }

    /// A short stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Port(e) => e.kind.code(),
            Self::ProfileMisconfigured { .. } => "profile_misconfigured",
            Self::CaUnreadable { .. } => "ca_unreadable",
            Self::ClaimRace { .. } => "claim_race",
        }
    }
}

/// A certificate an import registered (`INACTIVE`), handed to the registrar
/// to be checked again and provisioned as a JITR device is
/// ([`Registrar::handle_import`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    pub certificate_id: String,
    /// The bound CA the import verified the certificate's signature with.
    pub ca_certificate_id: String,
    /// Registered with `RegisterCertificateWithoutCA`: IoT records no CA for
    /// it, and `ca_certificate_id` (the operator's choice, a bound CA) stands
    /// in for IoT's record; the signature is still verified against that
    /// CA's certificate as IoT holds it.
    pub without_ca: bool,
    /// The profile the row names; `None`: the one the CA is bound to.
    pub profile: Option<String>,
    pub naming: ImportNaming,
}

struct CachedCa {
    registered: RegisteredCa,
    parsed: Result<Certificate, String>,
}

/// The registrar, generic over its ports.
pub struct Registrar<C, T, S, I> {
    certificates: C,
    things: T,
    credentials: S,
    inventory: I,
    settings: RegistrarSettings,
    config: ConfigCache,
    ca_cache: Mutex<HashMap<String, (Instant, Arc<CachedCa>)>>,
}

// Short-lived and returned once per event: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Verdict {
    Approved(Box<ProvisioningPlan>),
    /// Not this deployment's certificate to judge (see [`CaVerdict::Foreign`]).
    Foreign {
        rejection: Rejection,
        record: CertificateRecord,
    },
    Rejected {
        rejection: Rejection,
        action: RejectionAction,
        record: CertificateRecord,
    },
}

/// What acting on a verdict came to.
enum Step {
    Done(Outcome),
    /// A rejection found while acting (an identity collision, a thing type
    /// mismatch) was decided on cached configuration: everything it changed
    /// is undone, and the certificate is decided again on fresh configuration.
    Redecide,
}

impl<C, T, S, I> Registrar<C, T, S, I>
where
    C: CertificateRegistry,
    T: ThingRegistry,
    S: CredentialsStore,
    I: Inventory + DenyList,
{
    pub fn new(certificates: C, things: T, credentials: S, inventory: I, settings: RegistrarSettings) -> Self {
        Self {
            certificates,
            things,
            credentials,
            inventory,
            config: ConfigCache::new(settings.cache_ttl, settings.default_profile.clone()),
            settings,
            ca_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Loads the configuration and describes the bound CAs (at most
    /// `WARM_UP_CAS`), so that the first event finds warm caches and open
    /// connections.
    ///
    /// # Errors
    /// The first failure; the caller may ignore it (events load lazily).
    pub async fn warm_up(&self) -> Result<(), ProvisioningError> {
        let (config, _) = self.config(false).await?;
        let cas: Vec<&str> = config.bound_ca_ids().take(WARM_UP_CAS).collect();
        try_join_all(cas.iter().map(|ca| self.ca(ca, false))).await?;
        Ok(())
    }

    /// Processes one event as of `now` (Unix seconds).
    ///
    /// # Errors
    /// [`ProvisioningError`] when the event must be retried; the certificate is
    /// then not ACTIVE.
    pub async fn handle(&self, event: &JitrEvent, now: i64) -> Result<Outcome, ProvisioningError> {
        self.decide(event, None, now).await
    }

    /// Processes a certificate a bulk import registered, as of `now`: the
    /// same rounds as [`Self::handle`] (every check again, on IoT's own
    /// description of the certificate, then the provisioning with the
    /// activation last), with the import's profile, thing name and
    /// attributes, and with two differences an import needs:
    /// - the certificate is `INACTIVE` (AWS registers no certificate as
    ///   `PENDING_ACTIVATION`): it is provisioned only when this deployment
    ///   has no record of it, or a provisioned record never activated (an
    ///   import interrupted after round 5); any other `INACTIVE`
    ///   certificate, like one `REVOKED`, is left as it is, and nothing is
    ///   recorded for it (`Outcome::Ignored`);
    /// - registered without a CA, IoT records none: the request's CA (which
    ///   must be bound and ACTIVE) takes the place of IoT's record.
    ///
    /// # Errors
    /// As [`Self::handle`].
    pub async fn handle_import(&self, request: &ImportRequest, now: i64) -> Result<Outcome, ProvisioningError> {
        let event = JitrEvent::synthesized(&request.certificate_id, &request.ca_certificate_id, now);
        self.decide(&event, Some(request), now).await
    }

    async fn decide(
        &self,
        event: &JitrEvent,
        import: Option<&ImportRequest>,
        now: i64,
    ) -> Result<Outcome, ProvisioningError> {
        // Round 1: this deployment's record of the certificate.
        // Configuration and the CA come from the cache when warm.
        let (record, ((config, config_cached), (ca, ca_cached))) = try_join(
            async { Ok::<_, ProvisioningError>(self.inventory.certificate_record(&event.certificate_id).await?) },
            try_join(self.config(false), self.ca(&event.ca_certificate_id, false)),
        )
        .await?;
        // Provisioned, and activated after IoT said so: nothing to do, and no
        // DescribeCertificate spent (the account's scarcest call) on the
        // duplicates a burst brings (every connection attempt of a pending
        // certificate publishes its event again; SQS delivers at least once).
        // Not for an import: it may name a certificate deactivated since
        // (retired), which IoT's description tells apart.
        if import.is_none()
            && let Some(record) = &record
            && record.status == RecordStatus::Provisioned
            && record.activated_at.is_some()
        {
            return Ok(Outcome::AlreadyProvisioned {
                thing_name: record.thing_name.clone(),
            });
        }
        // Round 2: IoT's own description of the certificate.
        let Some(mut cert) = self.certificates.describe_certificate(&event.certificate_id).await? else {
            return Ok(Outcome::Ignored {
                certificate_status: "NOT_FOUND".to_string(),
            });
        };
        if let Some(import) = import {
            if import.without_ca && cert.ca_certificate_id.is_none() {
                cert.ca_certificate_id = Some(import.ca_certificate_id.clone());
            }
            match (&cert.status, &record) {
                (CertificateStatus::PendingActivation | CertificateStatus::Active, _) => {}
                (CertificateStatus::Inactive, None) => {}
                (CertificateStatus::Inactive, Some(r))
                    if r.status == RecordStatus::Provisioned && r.activated_at.is_none() => {}
                (other, _) => {
                    return Ok(Outcome::Ignored {
                        certificate_status: other.as_str().to_string(),
                    });
                }
            }
        }
        // A certificate the inventory retired (its device retired, or rotated
        // out) never comes back: deleted in IoT, it is registered again when
        // the device reconnects, and would otherwise be provisioned afresh.
        // It is revoked; its record stays as it is.
        if cert.status == CertificateStatus::PendingActivation
            && let Some(record) = record
                .as_ref()
                .filter(|r| matches!(r.status, RecordStatus::Retired | RecordStatus::Rotated))
        {
            return self.refuse_retired(&cert, record).await;
        }
        // ACTIVE and no record in round 1: another delivery of this event may
        // have provisioned and activated it meanwhile (its record is written
        // before the activation), so the record is read again before the
        // certificate is taken for one made by other means.
        let record = match (&cert.status, record) {
            (CertificateStatus::Active, None) => self.inventory.certificate_record(&event.certificate_id).await?,
            (_, record) => record,
        };
        let active = match &cert.status {
            CertificateStatus::PendingActivation => false,
            // Only an import's, as checked above.
            CertificateStatus::Inactive if import.is_some() => false,
            CertificateStatus::Active => match record {
                // Revoked in an emergency and ACTIVE again (registered anew,
                // set by hand): revoked again while the deny-list denies it.
                Some(record) if record.status == RecordStatus::Revoked => {
                    let device = Certificate::from_pem(&cert.pem);
                    if let Some(rejection) = self.denial(&cert, device.as_ref().ok()).await? {
                        tracing::warn!(
                            certificateId = cert.certificate_id,
                            reasonCode = rejection.reason.code(),
                            "revoked certificate found ACTIVE again: revoked again"
                        );
                        return self
                            .reject(&cert, rejection, RejectionAction::Revoked, record, None)
                            .await;
                    }
                    return self
                        .observe_certificate(event, &cert, &CertificateStatus::Active, None, now)
                        .await;
                }
                Some(record) if record.status == RecordStatus::Provisioned => {
                    // ACTIVE in IoT: mark it so that the next duplicate is
                    // answered from the record (best effort).
                    self.mark_activated(&event.certificate_id, now).await;
                    return Ok(Outcome::AlreadyProvisioned {
                        thing_name: record.thing_name,
                    });
                }
                // Recorded otherwise (a rejection an operator reversed, an
                // observation): the record stands.
                Some(_) => {
                    return self
                        .observe_certificate(event, &cert, &CertificateStatus::Active, None, now)
                        .await;
                }
                // ACTIVE and unknown: provisioned by JITP or by hand.
                None => true,
            },
            other => return self.observe_certificate(event, &cert, other, None, now).await,
        };
        // Round 3: the deny-list, by key (never cached), for a certificate
        // that is the event's CA's in IoT (the others are not judged here).
        let device = Certificate::from_pem(&cert.pem);
        let own = cert.ca_certificate_id.as_deref() == Some(event.ca_certificate_id.as_str());
        let denial = match own {
            true => self.denial(&cert, device.as_ref().ok()).await?,
            false => None,
        };
        let (mut config, mut ca, mut cached) = (config, ca, config_cached || ca_cached);
        loop {
            let verdict = self.verdict(
                event,
                import,
                &cert,
                &device,
                denial.as_ref(),
                ca.as_deref(),
                &config,
                now,
            )?;
            if cached && !matches!(verdict, Verdict::Approved(_)) {
                // A rejection cannot be undone (a revoked certificate never
                // comes back), so it is never decided on cached configuration:
                // a CA bound, a profile fixed or a CA activated a moment ago
                // counts. Nor is a certificate left alone on it.
                (config, ca, cached) = self.fresh(event).await?;
                continue;
            }
            match self
                .act(event, &cert, verdict, active, ca.as_deref(), cached, now)
                .await?
            {
                Step::Done(outcome) => return Ok(outcome),
                Step::Redecide => (config, ca, cached) = self.fresh(event).await?,
            }
        }
    }

    /// Configuration and the event's CA, read again (and cached again).
    async fn fresh(
        &self,
        event: &JitrEvent,
    ) -> Result<(Arc<OnboardingConfig>, Option<Arc<CachedCa>>, bool), ProvisioningError> {
        let ((config, _), (ca, _)) = try_join(self.config(true), self.ca(&event.ca_certificate_id, true)).await?;
        Ok((config, ca, false))
    }

    /// Carries a verdict out. `ca` is the event's CA, described; it is the
    /// certificate's own CA whenever the verdict is not `Foreign`.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        event: &JitrEvent,
        cert: &RegisteredCertificate,
        verdict: Verdict,
        active: bool,
        ca: Option<&CachedCa>,
        cached: bool,
        now: i64,
    ) -> Result<Step, ProvisioningError> {
        // Whether IoT itself provisions this certificate's CA's devices
        // (JITP), from the certificate's own CA, never the event's.
        let jitp = ca.is_some_and(|ca| ca.registered.jitp);
        let outcome = match verdict {
            Verdict::Foreign { rejection, record } if self.settings.revoke_foreign => {
                let own_jitp = match cert.ca_certificate_id.as_deref() {
                    Some(own) if own == event.ca_certificate_id => jitp,
                    Some(own) if active => self.ca(own, false).await?.0.is_some_and(|ca| ca.registered.jitp),
                    _ => false,
                };
                if !active || own_jitp {
                    self.reject(cert, rejection, RejectionAction::default(), record, None)
                        .await?
                } else {
                    self.observe_active_failing(event, cert, &rejection, now).await?
                }
            }
            Verdict::Foreign { rejection, .. } => {
                tracing::warn!(
                    certificateId = cert.certificate_id,
                    eventCaCertificateId = event.ca_certificate_id,
                    caCertificateId = cert.ca_certificate_id.as_deref().unwrap_or("none"),
                    reasonCode = rejection.reason.code(),
                    reason = %rejection.detail,
                    "certificate left alone: not this deployment's to judge"
                );
                Outcome::LeftAlone { rejection }
            }
            Verdict::Rejected {
                rejection,
                action,
                record,
            } if !active || jitp => self.reject(cert, rejection, action, record, None).await?,
            // Made by hand, not by the CA's template: an operator's decision,
            // recorded with the check it fails, never revoked.
            Verdict::Rejected { rejection, .. } => self.observe_active_failing(event, cert, &rejection, now).await?,
            Verdict::Approved(plan) if active => return self.adopt(event, cert, &plan, jitp, cached, now).await,
            Verdict::Approved(plan) => return self.provision(cert, &plan, cached, now).await,
        };
        Ok(Step::Done(outcome))
    }

    /// An ACTIVE certificate made by other means that fails a check: recorded
    /// with the check, never revoked.
    async fn observe_active_failing(
        &self,
        event: &JitrEvent,
        cert: &RegisteredCertificate,
        rejection: &Rejection,
        now: i64,
    ) -> Result<Outcome, ProvisioningError> {
        let detail = format!(
            "ACTIVE without onboarding; fails {}: {}",
            rejection.reason, rejection.detail
        );
        self.observe_certificate(event, cert, &CertificateStatus::Active, Some(detail), now)
            .await
    }

    /// An ACTIVE certificate that passes every check: recorded as provisioned
    /// when it is attached to the thing its profile names (what the CA's JITP
    /// template, rendered from the same profile, makes), observed otherwise.
    ///
    /// The name claim decides as it does for a new certificate: held by
    /// another live certificate, it is an identity collision (revoked under a
    /// JITP CA, observed otherwise); held by a retired one, it is moved here.
    async fn adopt(
        &self,
        event: &JitrEvent,
        cert: &RegisteredCertificate,
        plan: &ProvisioningPlan,
        jitp: bool,
        cached: bool,
        now: i64,
    ) -> Result<Step, ProvisioningError> {
        let name = plan.thing_name.as_str();
        let principals = self.things.thing_principals(name).await?.unwrap_or_default();
        if !principals.iter().any(|arn| arn == &cert.certificate_arn) {
            let detail = format!("ACTIVE without onboarding; not attached to thing {name}, which its profile names");
            return Ok(Step::Done(
                self.observe_certificate(event, cert, &CertificateStatus::Active, Some(detail), now)
                    .await?,
            ));
        }
        // The name is this certificate's from now on, unless another holds it.
        let claim = self.inventory.claim_thing_name(name, &plan.certificate_id).await?;
        let (collision, moved_from) = self.claim_verdict(plan, &claim).await?;
        if let Some(rejection) = collision {
            self.undo_claim(name, &plan.certificate_id, &claim, moved_from.as_deref())
                .await?;
            if cached {
                return Ok(Step::Redecide);
            }
            let outcome = if jitp {
                let mut record = CertificateRecord::provisioned(plan, String::new(), now);
                record.status = RecordStatus::Rejected;
                record.credentials_key = None;
                self.reject(cert, rejection, plan.rejection_action, record, Some(name))
                    .await?
            } else {
                self.observe_active_failing(event, cert, &rejection, now).await?
            };
            return Ok(Step::Done(outcome));
        }
        let mut record = CertificateRecord::provisioned(plan, String::new(), now);
        record.credentials_key = None;
        record.detail = Some("ACTIVE before onboarding (JITP or made by hand): checked and recorded".into());
        self.inventory.record_provisioned(&record).await?;
        Ok(Step::Done(Outcome::Recorded {
            thing_name: name.to_string(),
        }))
    }

    /// The deny-list's answer for a certificate that parses and whose CA IoT
    /// records (one lookup; an error fails the event: never allowed by default).
    async fn denial(
        &self,
        cert: &RegisteredCertificate,
        device: Option<&Certificate>,
    ) -> Result<Option<Rejection>, ProvisioningError> {
        let (Some(device), Some(ca)) = (device, cert.ca_certificate_id.as_deref()) else {
            // Rejected without it: malformed, or no CA (CA_MISMATCH).
            return Ok(None);
        };
        Ok(self.inventory.denial(ca, &device.serial, &device.fingerprint).await?)
    }

    /// The pure part: every check, and the plan if they pass.
    #[allow(clippy::too_many_arguments)]
    fn verdict(
        &self,
        event: &JitrEvent,
        import: Option<&ImportRequest>,
        cert: &RegisteredCertificate,
        device: &Result<Certificate, MalformedCertificate>,
        denial: Option<&Rejection>,
        ca: Option<&CachedCa>,
        config: &OnboardingConfig,
        now: i64,
    ) -> Result<Verdict, ProvisioningError> {
        // IoT's own record of the certificate's CA; the event's is only compared.
        let ca_id = cert
            .ca_certificate_id
            .as_deref()
            .unwrap_or(event.ca_certificate_id.as_str());
        let bare = CertificateRecord::bare(&cert.certificate_id, ca_id, RecordStatus::Rejected, now);
        let ca_status = ca.map(|ca| &ca.registered.status);
        let profile = match check_ca(
            &event.ca_certificate_id,
            cert.ca_certificate_id.as_deref(),
            ca_status,
            config,
        ) {
            CaVerdict::Trusted(profile) => profile,
            CaVerdict::Foreign(rejection) => {
                return Ok(Verdict::Foreign {
                    rejection,
                    record: bare,
                });
            }
            CaVerdict::Rejected(rejection) => {
                return Ok(Verdict::Rejected {
                    rejection,
                    action: RejectionAction::default(),
                    record: bare,
                });
            }
            CaVerdict::Misconfigured { profile, problem } => {
                return Err(ProvisioningError::ProfileMisconfigured {
                    ca_certificate_id: ca_id.to_string(),
                    profile,
                    problem,
                });
            }
        };
        let Some(ca) = ca else {
            return Err(ProvisioningError::CaUnreadable {
                ca_certificate_id: ca_id.to_string(),
                problem: "not described".into(),
            });
        };
        let ca_cert = ca.parsed.as_ref().map_err(|problem| ProvisioningError::CaUnreadable {
            ca_certificate_id: ca_id.to_string(),
            problem: problem.clone(),
        })?;
        // An import may name another profile than the CA's; it must exist.
        let profile = match import.and_then(|i| i.profile.as_deref()) {
            None => profile,
            Some(name) => config
                .profile(name)
                .map_err(|problem| ProvisioningError::ProfileMisconfigured {
                    ca_certificate_id: ca_id.to_string(),
                    profile: name.to_string(),
                    problem: problem.to_string(),
                })?,
        };
        let mut record = bare.clone();
        record.profile = Some(profile.name.clone());
        let device = match device {
            Ok(device) => device,
            Err(e) => {
                let rejection = Rejection::new(RejectReason::CertificateMalformed, e.to_string());
                return Ok(Verdict::Rejected {
                    rejection,
                    action: profile.rejection_action,
                    record,
                });
            }
        };
        record.serial = Some(device.serial.clone());
        record.fingerprint = device.fingerprint.clone();
        record.not_before = Some(device.not_before);
        record.not_after = Some(device.not_after);
        let ctx = CheckContext {
            ca: ca_cert,
            profile,
            denial,
            now,
            clock_skew_secs: self.settings.clock_skew_secs,
        };
        let checked = match import {
            None => check_device_certificate(device, &ctx),
            Some(import) => check_certificate_facts(device, &ctx)
                .and_then(|()| approve_import_naming(device, profile, &import.naming)),
        };
        match checked {
            Ok(approval) => Ok(Verdict::Approved(Box::new(ProvisioningPlan::new(
                &cert.certificate_arn,
                ca_id,
                &cert.pem,
                device,
                profile,
                approval,
            )))),
            Err(rejection) => Ok(Verdict::Rejected {
                rejection,
                action: profile.rejection_action,
                record,
            }),
        }
    }

    async fn provision(
        &self,
        cert: &RegisteredCertificate,
        plan: &ProvisioningPlan,
        cached: bool,
        now: i64,
    ) -> Result<Step, ProvisioningError> {
        let name = plan.thing_name.as_str();
        // Round 4.
        let (claim, principals, creation) = futures::try_join!(
            self.inventory.claim_thing_name(name, &plan.certificate_id),
            self.things.thing_principals(name),
            self.things.create_thing(plan),
        )?;
        let rejected_record = || {
            let mut record = CertificateRecord::provisioned(plan, String::new(), now);
            record.status = RecordStatus::Rejected;
            record.credentials_key = None;
            record
        };
        let (mut rejection, moved_from) = self.collision(plan, &claim, principals.as_deref()).await?;
        if rejection.is_none() && creation == ThingCreation::ExistsDifferently {
            rejection = self.reconcile_existing_thing(plan).await?;
        }
        if let Some(rejection) = rejection {
            // The claim goes back to where it was: released if it was taken
            // now, returned to the retired certificate it was moved from.
            self.undo_claim(name, &plan.certificate_id, &claim, moved_from.as_deref())
                .await?;
            if cached {
                return Ok(Step::Redecide);
            }
            return Ok(Step::Done(
                self.reject(cert, rejection, plan.rejection_action, rejected_record(), Some(name))
                    .await?,
            ));
        }
        // Round 5.
        let key = plan.credentials_key(&self.settings.credentials_prefix);
        let record = CertificateRecord::provisioned(plan, key.clone(), now);
        let credentials = plan.credentials_record();
        futures::try_join!(
            self.things.attach_certificate_exclusively(name, &plan.certificate_arn),
            try_join_all(
                plan.thing_groups
                    .iter()
                    .map(|g| self.things.add_to_thing_group(name, g))
            ),
            self.things.attach_policy(&plan.policy_name, &plan.certificate_arn),
            self.credentials.put_credentials(&key, &credentials),
            self.inventory.record_provisioned(&record),
        )?;
        // Round 6: last, and only after everything above succeeded.
        self.certificates
            .set_certificate_status(&plan.certificate_id, &CertificateStatus::Active)
            .await?;
        // Round 7, after the device can connect: the record says IoT took
        // the activation, so duplicates of this event cost no describe.
        self.mark_activated(&plan.certificate_id, now).await;
        Ok(Step::Done(Outcome::Provisioned {
            thing_name: plan.thing_name.clone(),
            profile: plan.profile.clone(),
            dropped_attributes: record.dropped_attributes,
        }))
    }

    /// Records that IoT accepted the certificate's activation. A failure is
    /// logged and otherwise ignored: the device is in either way, and the
    /// record without the mark only costs a later duplicate one describe.
    async fn mark_activated(&self, certificate_id: &str, now: i64) {
        if let Err(e) = self.inventory.record_activated(certificate_id, now).await {
            tracing::warn!(certificateId = certificate_id, error = %e, "activation not recorded; duplicates of this event will describe the certificate");
        }
    }

    /// Undoes a claim made during a check that then rejected: a claim moved
    /// from a retired certificate goes back to it (conditionally: unless the
    /// holder changed meanwhile), a claim taken now is released.
    async fn undo_claim(
        &self,
        name: &str,
        certificate_id: &str,
        claim: &NameClaim,
        moved_from: Option<&str>,
    ) -> Result<(), ProvisioningError> {
        match moved_from {
            Some(previous) => {
                self.inventory
                    .transfer_thing_name(name, certificate_id, previous)
                    .await?;
            }
            None if *claim == NameClaim::Claimed => {
                self.inventory.release_thing_name(name, certificate_id).await?;
            }
            None => {}
        }
        Ok(())
    }

    /// Another certificate owns this identity if it holds the name claim and is
    /// ACTIVE or still being onboarded, or if it is attached to the thing and ACTIVE.
    ///
    /// Returns the collision, if any, and the retired certificate the claim
    /// was moved from, if it was (so that a rejection can move it back).
    async fn collision(
        &self,
        plan: &ProvisioningPlan,
        claim: &NameClaim,
        principals: Option<&[String]>,
    ) -> Result<(Option<Rejection>, Option<String>), ProvisioningError> {
        let name = plan.thing_name.as_str();
        let (rejection, moved_from) = self.claim_verdict(plan, claim).await?;
        if rejection.is_some() {
            return Ok((rejection, None));
        }
        let others: Vec<&str> = principals
            .unwrap_or_default()
            .iter()
            .filter(|arn| arn.as_str() != plan.certificate_arn)
            .filter_map(|arn| certificate_id_of_arn(arn))
            .collect();
        let described = join_all(others.iter().map(|id| self.certificates.describe_certificate(id))).await;
        for (id, described) in others.iter().zip(described) {
            if described?.is_some_and(|c| c.status == CertificateStatus::Active) {
                let rejection = Rejection::new(
                    RejectReason::IdentityCollision,
                    format!("thing {name} already has ACTIVE certificate {id} attached"),
                );
                return Ok((Some(rejection), moved_from));
            }
        }
        Ok((None, moved_from))
    }

    /// The name claim's side of the collision check: held by another live
    /// certificate (ACTIVE or still being onboarded) is a collision; held by a
    /// retired one (revoked, inactive or deleted), it is moved to this
    /// certificate (conditionally), and that holder is returned.
    async fn claim_verdict(
        &self,
        plan: &ProvisioningPlan,
        claim: &NameClaim,
    ) -> Result<(Option<Rejection>, Option<String>), ProvisioningError> {
        let name = plan.thing_name.as_str();
        let NameClaim::HeldBy(holder) = claim else {
            return Ok((None, None));
        };
        let status = self.certificates.describe_certificate(holder).await?.map(|c| c.status);
        if let Some(CertificateStatus::Active | CertificateStatus::PendingActivation) = status {
            let rejection = Rejection::new(
                RejectReason::IdentityCollision,
                format!("thing name {name} belongs to certificate {holder}"),
            );
            return Ok((Some(rejection), None));
        }
        if !self
            .inventory
            .transfer_thing_name(name, holder, &plan.certificate_id)
            .await?
        {
            // Still the same holder: the name is held for a revoked device
            // (`onboard device revoke`) until it is retired.
            if self.inventory.claim_thing_name(name, &plan.certificate_id).await? == NameClaim::HeldBy(holder.clone()) {
                let rejection = Rejection::new(
                    RejectReason::IdentityCollision,
                    format!("thing name {name} is held for revoked certificate {holder} until the device is retired"),
                );
                return Ok((Some(rejection), None));
            }
            return Err(ProvisioningError::ClaimRace {
                thing_name: name.to_string(),
            });
        }
        Ok((None, Some(holder.clone())))
    }

    /// A thing of this name exists with another configuration: it must have the
    /// profile's thing type; attributes and billing group are brought in line.
    async fn reconcile_existing_thing(&self, plan: &ProvisioningPlan) -> Result<Option<Rejection>, ProvisioningError> {
        let Some(existing) = self.things.describe_thing(&plan.thing_name).await? else {
            // Deleted in between: the retry will create it.
            return Err(ProvisioningError::ClaimRace {
                thing_name: plan.thing_name.clone(),
            });
        };
        if existing.thing_type != plan.thing_type {
            return Ok(Some(Rejection::new(
                RejectReason::ThingTypeMismatch,
                format!(
                    "thing {} exists with type {:?}, the profile requires {:?}",
                    plan.thing_name, existing.thing_type, plan.thing_type
                ),
            )));
        }
        let attributes_missing = plan
            .attributes
            .iter()
            .any(|(k, v)| existing.attributes.get(k) != Some(v));
        let billing_missing = plan.billing_group.is_some() && existing.billing_group != plan.billing_group;
        futures::try_join!(
            async {
                if attributes_missing {
                    self.things.merge_thing_attributes(plan).await?;
                }
                Ok::<_, PortError>(())
            },
            async {
                if let (true, Some(group)) = (billing_missing, &plan.billing_group) {
                    self.things.add_to_billing_group(&plan.thing_name, group).await?;
                }
                Ok(())
            },
        )?;
        Ok(None)
    }

    /// Records the rejection first, then sets the status: if the status change
    /// fails, the retry finds the certificate still pending and converges.
    async fn reject(
        &self,
        cert: &RegisteredCertificate,
        rejection: Rejection,
        action: RejectionAction,
        record: CertificateRecord,
        thing_name: Option<&str>,
    ) -> Result<Outcome, ProvisioningError> {
        let status = action.status();
        let record = record.with_rejection(&rejection, &status);
        self.inventory.record_rejected(&record).await?;
        self.certificates
            .set_certificate_status(&cert.certificate_id, &status)
            .await?;
        Ok(Outcome::Rejected {
            rejection,
            thing_name: thing_name.map(str::to_string).or(record.thing_name),
            status,
        })
    }

    /// A retired or rotated-out certificate registered again: REVOKED
    /// (IoT then refuses it at the handshake, without another event), its
    /// record left as it is.
    async fn refuse_retired(
        &self,
        cert: &RegisteredCertificate,
        record: &CertificateRecord,
    ) -> Result<Outcome, ProvisioningError> {
        let status = CertificateStatus::Revoked;
        self.certificates
            .set_certificate_status(&cert.certificate_id, &status)
            .await?;
        let detail = format!(
            "certificate {} is {} in the inventory{}: it never comes back",
            cert.certificate_id,
            record.status.as_str(),
            record.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        );
        tracing::warn!(
            certificateId = cert.certificate_id,
            thing = ?record.thing_name,
            recordStatus = record.status.as_str(),
            "retired certificate registered again: revoked"
        );
        Ok(Outcome::Rejected {
            rejection: Rejection::new(RejectReason::CertificateRetired, detail),
            thing_name: record.thing_name.clone(),
            status,
        })
    }

    async fn observe_certificate(
        &self,
        event: &JitrEvent,
        cert: &RegisteredCertificate,
        status: &CertificateStatus,
        detail: Option<String>,
        now: i64,
    ) -> Result<Outcome, ProvisioningError> {
        // IoT's record of the CA, never the event's say-so.
        let ca = cert.ca_certificate_id.as_deref().unwrap_or(&event.ca_certificate_id);
        let mut record = CertificateRecord::bare(&event.certificate_id, ca, RecordStatus::Observed, now);
        record.certificate_status = Some(status.as_str().to_string());
        record.detail = detail;
        self.inventory.record_observed(&record).await?;
        Ok(Outcome::Ignored {
            certificate_status: status.as_str().to_string(),
        })
    }

    /// The configuration, and whether it came from the cache; `fresh`
    /// bypasses the cache (and refills it).
    async fn config(&self, fresh: bool) -> Result<(Arc<OnboardingConfig>, bool), ProvisioningError> {
        Ok(self.config.get(fresh, || self.inventory.load_config()).await?)
    }

    /// The CA's description, and whether it came from the cache; `fresh`
    /// bypasses the cache (and refills it).
    async fn ca(
        &self,
        ca_certificate_id: &str,
        fresh: bool,
    ) -> Result<(Option<Arc<CachedCa>>, bool), ProvisioningError> {
        let mut cache = self.ca_cache.lock().await;
        if !fresh
            && let Some((at, ca)) = cache.get(ca_certificate_id)
            && at.elapsed() < self.settings.cache_ttl
        {
            return Ok((Some(ca.clone()), true));
        }
        let Some(registered) = self.certificates.describe_ca_certificate(ca_certificate_id).await? else {
            cache.remove(ca_certificate_id);
            return Ok((None, false));
        };
        let parsed = Certificate::from_pem(&registered.pem).map_err(|e| e.to_string());
        let ca = Arc::new(CachedCa { registered, parsed });
        cache.insert(ca_certificate_id.to_string(), (Instant::now(), ca.clone()));
        Ok((Some(ca), false))
    }
}

/// `arn:aws:iot:<region>:<account>:cert/<id>` → `<id>`.
pub fn certificate_id_of_arn(arn: &str) -> Option<&str> {
    let (_, id) = arn.rsplit_once(":cert/")?;
    crate::model::event::is_certificate_id(id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_arns() {
        let id = "a".repeat(64);
        assert_eq!(
            certificate_id_of_arn(&format!("arn:aws:iot:eu-west-1:123456789012:cert/{id}")),
            Some(id.as_str())
        );
        assert_eq!(
            certificate_id_of_arn("arn:aws:iot:eu-west-1:123456789012:thing/x"),
            None
        );
        assert_eq!(certificate_id_of_arn("arn:aws:iot:eu-west-1:1:cert/short"), None);
    }
}
