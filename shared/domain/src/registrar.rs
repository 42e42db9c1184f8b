//! The JITR registrar workflow: from a certificate-registered event to an
//! activated device or a recorded rejection.
//!
//! Fail-closed and idempotent. Every step tolerates having run before, the
//! certificate is set ACTIVE only after every other step succeeded, and an
//! error anywhere leaves it PENDING_ACTIVATION for the retry to converge.
//!
//! Critical path, with configuration and CA cached (five sequential rounds):
//! 1. `DescribeCertificate` (on a cold container, concurrently with the
//!    configuration query and `DescribeCACertificate`);
//! 2. the deny-list lookup for the certificate's serial and fingerprint (one
//!    `BatchGetItem`): it needs the serial, which only the certificate holds,
//!    and it comes before round 3 so that nothing (no claim, no thing) is
//!    ever created for a denied certificate;
//! 3. claim the thing name ‖ list the thing's principals ‖ `CreateThing`;
//! 4. attach the certificate exclusively ‖ add to each group ‖ attach the
//!    policy ‖ store the credentials record ‖ write the inventory record;
//! 5. set the certificate ACTIVE.
//!
//! `CreateThing` may run before the collision verdict because it can only
//! create a thing that did not exist, and then no other certificate can hold
//! that identity; for an existing thing it changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, try_join, try_join_all};
use futures::lock::Mutex;

use crate::certificate::{Certificate, MalformedCertificate};
use crate::checks::{CaVerdict, CheckContext, check_ca, check_device_certificate};
use crate::config::{ConfigCache, OnboardingConfig};
use crate::event::JitrEvent;
use crate::plan::ProvisioningPlan;
use crate::ports::{
    CertificateRegistry, CertificateStatus, CredentialsStore, DenyList, Inventory, NameClaim, PortError, RegisteredCa,
    RegisteredCertificate, ThingCreation, ThingRegistry,
};
use crate::profile::{DeviceProfile, RejectionAction};
use crate::reason::{RejectReason, Rejection};
use crate::record::{CertificateRecord, Outcome, RecordStatus};

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
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        Self {
            clock_skew_secs: crate::checks::DEFAULT_CLOCK_SKEW_SECS,
            cache_ttl: Duration::from_secs(60),
            credentials_prefix: "credentials/".to_string(),
            default_profile: None,
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
    Rejected {
        rejection: Rejection,
        action: RejectionAction,
        record: CertificateRecord,
    },
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
    /// [`WARM_UP_CAS`]), so that the first event finds warm caches and open
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
        // Round 1. Configuration and the CA come from the cache when warm.
        let (cert, ((config, config_cached), (ca, ca_cached))) = try_join(
            async { Ok::<_, ProvisioningError>(self.certificates.describe_certificate(&event.certificate_id).await?) },
            try_join(self.config(false), self.ca(&event.ca_certificate_id, false)),
        )
        .await?;
        let Some(cert) = cert else {
            return Ok(Outcome::Ignored {
                certificate_status: "NOT_FOUND".to_string(),
            });
        };
        let active = match &cert.status {
            CertificateStatus::PendingActivation => false,
            CertificateStatus::Active => match self.inventory.certificate_record(&event.certificate_id).await? {
                Some(record) if record.status == RecordStatus::Provisioned => {
                    return Ok(Outcome::AlreadyProvisioned {
                        thing_name: record.thing_name,
                    });
                }
                // Recorded otherwise (a rejection an operator reversed, an
                // observation): the record stands.
                Some(_) => return self.observe(event, &CertificateStatus::Active, None, now).await,
                // ACTIVE and unknown: provisioned by JITP or by hand.
                None => true,
            },
            other => return self.observe(event, other, None, now).await,
        };
        // Round 2: the deny-list, by key (never cached).
        let device = Certificate::from_pem(&cert.pem);
        let denial = self.denial(&cert, device.as_ref().ok()).await?;
        let mut verdict = self.verdict(event, &cert, &device, denial.as_ref(), ca.as_deref(), &config, now)?;
        if matches!(verdict, Verdict::Rejected { .. }) && (config_cached || ca_cached) {
            // A rejection cannot be undone (a revoked certificate never comes
            // back), so it is never decided on cached configuration: a CA
            // bound, a profile fixed or a CA activated a moment ago counts.
            let ((config, _), (ca, _)) = try_join(self.config(true), self.ca(&event.ca_certificate_id, true)).await?;
            verdict = self.verdict(event, &cert, &device, denial.as_ref(), ca.as_deref(), &config, now)?;
        }
        let jitp = ca.as_ref().is_some_and(|ca| ca.registered.jitp);
        match verdict {
            Verdict::Rejected {
                rejection,
                action,
                record,
            } if !active || jitp => self.reject(&cert, rejection, action, record, None).await,
            // Made by hand, not by the CA's template: an operator's decision,
            // recorded with the check it fails, never revoked.
            Verdict::Rejected { rejection, .. } => {
                let detail = format!(
                    "ACTIVE without onboarding; fails {}: {}",
                    rejection.reason, rejection.detail
                );
                self.observe(event, &CertificateStatus::Active, Some(detail), now).await
            }
            Verdict::Approved(plan) if active => self.adopt(event, &cert, &plan, now).await,
            Verdict::Approved(plan) => self.provision(&cert, &plan, now).await,
        }
    }

    /// An ACTIVE certificate that passes every check: recorded as provisioned
    /// when it is attached to the thing its profile names (what the CA's JITP
    /// template, rendered from the same profile, makes), observed otherwise.
    async fn adopt(
        &self,
        event: &JitrEvent,
        cert: &RegisteredCertificate,
        plan: &ProvisioningPlan,
        now: i64,
    ) -> Result<Outcome, ProvisioningError> {
        let name = plan.thing_name.as_str();
        let principals = self.things.thing_principals(name).await?.unwrap_or_default();
        if !principals.iter().any(|arn| arn == &cert.certificate_arn) {
            let detail = format!("ACTIVE without onboarding; not attached to thing {name}, which its profile names");
            return self.observe(event, &CertificateStatus::Active, Some(detail), now).await;
        }
        // The name is this certificate's from now on, unless another holds it.
        self.inventory.claim_thing_name(name, &plan.certificate_id).await?;
        let mut record = CertificateRecord::provisioned(plan, String::new(), now);
        record.credentials_key = None;
        record.detail = Some("ACTIVE before onboarding (JITP or made by hand): checked and recorded".into());
        self.inventory.record_provisioned(&record).await?;
        Ok(Outcome::Recorded {
            thing_name: name.to_string(),
        })
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
        cert: &RegisteredCertificate,
        device: &Result<Certificate, MalformedCertificate>,
        denial: Option<&Rejection>,
        ca: Option<&CachedCa>,
        config: &OnboardingConfig,
        now: i64,
    ) -> Result<Verdict, ProvisioningError> {
        let ca_id = event.ca_certificate_id.as_str();
        let bare = CertificateRecord::bare(&cert.certificate_id, ca_id, RecordStatus::Rejected, now);
        let ca_status = ca.map(|ca| &ca.registered.status);
        let profile = match check_ca(ca_id, cert.ca_certificate_id.as_deref(), ca_status, config) {
            CaVerdict::Trusted(profile) => profile,
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
        match check_device_certificate(device, &ctx) {
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
        now: i64,
    ) -> Result<Outcome, ProvisioningError> {
        let name = plan.thing_name.as_str();
        // Round 3.
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
        if let Some(rejection) = self.collision(plan, &claim, principals.as_deref()).await? {
            if claim == NameClaim::Claimed {
                self.inventory.release_thing_name(name, &plan.certificate_id).await?;
            }
            return self
                .reject(cert, rejection, plan.rejection_action, rejected_record(), Some(name))
                .await;
        }
        if creation == ThingCreation::ExistsDifferently
            && let Some(rejection) = self.reconcile_existing_thing(plan).await?
        {
            self.inventory.release_thing_name(name, &plan.certificate_id).await?;
            return self
                .reject(cert, rejection, plan.rejection_action, rejected_record(), Some(name))
                .await;
        }
        // Round 4.
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
        // Round 5: last, and only after everything above succeeded.
        self.certificates
            .set_certificate_status(&plan.certificate_id, &CertificateStatus::Active)
            .await?;
        Ok(Outcome::Provisioned {
            thing_name: plan.thing_name.clone(),
            profile: plan.profile.clone(),
            dropped_attributes: record.dropped_attributes,
        })
    }

    /// Another certificate owns this identity if it holds the name claim and is
    /// ACTIVE or still being onboarded, or if it is attached to the thing and ACTIVE.
    async fn collision(
        &self,
        plan: &ProvisioningPlan,
        claim: &NameClaim,
        principals: Option<&[String]>,
    ) -> Result<Option<Rejection>, ProvisioningError> {
        let name = plan.thing_name.as_str();
        if let NameClaim::HeldBy(holder) = claim {
            let status = self.certificates.describe_certificate(holder).await?.map(|c| c.status);
            match status {
                Some(CertificateStatus::Active | CertificateStatus::PendingActivation) => {
                    return Ok(Some(Rejection::new(
                        RejectReason::IdentityCollision,
                        format!("thing name {name} belongs to certificate {holder}"),
                    )));
                }
                // The holder is retired (revoked, inactive or deleted): the name is free.
                _ => {
                    if !self
                        .inventory
                        .transfer_thing_name(name, holder, &plan.certificate_id)
                        .await?
                    {
                        return Err(ProvisioningError::ClaimRace {
                            thing_name: name.to_string(),
                        });
                    }
                }
            }
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
                return Ok(Some(Rejection::new(
                    RejectReason::IdentityCollision,
                    format!("thing {name} already has ACTIVE certificate {id} attached"),
                )));
            }
        }
        Ok(None)
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

    async fn observe(
        &self,
        event: &JitrEvent,
        status: &CertificateStatus,
        detail: Option<String>,
        now: i64,
    ) -> Result<Outcome, ProvisioningError> {
        let mut record = CertificateRecord::bare(
            &event.certificate_id,
            &event.ca_certificate_id,
            RecordStatus::Observed,
            now,
        );
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
    crate::event::is_certificate_id(id).then_some(id)
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
