//! The CSR issuer: answers the CSR a device publishes with a new
//! certificate (or a refusal).

use std::future::Future;
use std::time::Duration;

use crate::checks::csr::check_csr;
use crate::model::certificate::{Certificate, CertificateRequest};
use crate::model::reason::Rejection;
use crate::model::status::CertificateStatus;
use crate::policy::profile::DeviceProfile;
use crate::policy::rotation::protocol::{CsrAnswer, CsrMessage, answer_topic};
use crate::policy::rotation::state::{FailureReason, Rotation, RotationState};
use crate::policy::rotation::{Issuer, RotationPolicy, Strategy};
use crate::ports::{
    CaSigners, CertificateImport, CertificateRegistry, CertificateSigner, DenyList, Inventory, IssuedCertificate,
    PortError, PortErrorKind, PortResult, RegisteredCa, RegisteredCertificate, Registration, RotationInventory,
    RotationIot, RotationObjects, SigningKey,
};
use crate::workflows::issuance::{IssuanceError, IssuanceSettings, issue_device_certificate};
use crate::workflows::rotation::ops::rotation_allowed;
use crate::workflows::rotation::ops::{IgnoreReason, MAX_TRIES, OldCertificate, Ops, ProfileCache, RotationError};

// --- CSR issuer -------------------------------------------------------------

/// CSR issuer settings.
#[derive(Debug, Clone)]
pub struct CsrIssuerSettings {
    /// How long the configuration is cached in the container.
    pub cache_ttl: Duration,
    /// A default profile and the CA ids bound to it, from the environment.
    pub default_profile: Option<(DeviceProfile, Vec<String>)>,
}

impl Default for CsrIssuerSettings {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            default_profile: None,
        }
    }
}

/// What the issuer did with one CSR message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrOutcome {
    /// The certificate was published on the answer topic; `resent` when it
    /// had been issued before (the device asked again).
    Issued {
        thing_name: String,
        new_certificate_id: String,
        resent: bool,
    },
    /// The CSR failed a check: refused on the answer topic, attempt failed.
    Refused {
        thing_name: String,
        rejection: Rejection,
    },
    /// The attempt failed while the certificate was being delivered; the
    /// certificate is revoked.
    Superseded {
        thing_name: String,
    },
    Ignored {
        reason: IgnoreReason,
    },
}

impl CsrOutcome {
    /// `issued`, `resent`, `refused`, `superseded` or `ignored`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Issued { resent: false, .. } => "issued",
            Self::Issued { resent: true, .. } => "resent",
            Self::Refused { .. } => "refused",
            Self::Superseded { .. } => "superseded",
            Self::Ignored { .. } => "ignored",
        }
    }
}

/// No objects: the CSR strategy has none (its rotations never name any).
struct NoObjects;

impl RotationObjects for NoObjects {
    fn put_object(&self, _key: &str, _body: &[u8]) -> impl Future<Output = PortResult<()>> + Send {
        std::future::ready(Err(no_objects("PutObject")))
    }

    fn delete_object(&self, _key: &str) -> impl Future<Output = PortResult<()>> + Send {
        std::future::ready(Err(no_objects("DeleteObject")))
    }

    fn bucket(&self) -> &str {
        ""
    }
}

fn no_objects(operation: &'static str) -> PortError {
    PortError::new(
        operation,
        PortErrorKind::Invalid,
        "the CSR issuer has no credentials bucket",
    )
}

/// No CA of the fleet's own: a deployment without a `kmsCa` issuer. It
/// allows no key, so a profile naming one is refused before any call (and
/// its other ports are never reached).
pub struct NoOwnCa;

fn no_own_ca(operation: &'static str) -> PortError {
    PortError::new(
        operation,
        PortErrorKind::AccessDenied,
        "this deployment has no kmsCa issuer",
    )
}

impl CaSigners for NoOwnCa {
    type Signer = NoOwnCa;

    fn signer(&self, _key_arn: &str) -> Option<&NoOwnCa> {
        None
    }
}

impl CertificateSigner for NoOwnCa {
    fn signing_key(&self) -> impl Future<Output = PortResult<SigningKey>> + Send {
        std::future::ready(Err(no_own_ca("GetPublicKey")))
    }

    fn sign(&self, _message: &[u8]) -> impl Future<Output = PortResult<Vec<u8>>> + Send {
        std::future::ready(Err(no_own_ca("Sign")))
    }
}

impl CertificateImport for NoOwnCa {
    fn register_certificate(
        &self,
        _pem: &str,
        _registration: Registration<'_>,
    ) -> impl Future<Output = PortResult<String>> + Send {
        std::future::ready(Err(no_own_ca("RegisterCertificate")))
    }
}

impl CertificateRegistry for NoOwnCa {
    fn describe_certificate(
        &self,
        _certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<RegisteredCertificate>>> + Send {
        std::future::ready(Err(no_own_ca("DescribeCertificate")))
    }

    fn describe_ca_certificate(
        &self,
        _ca_certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<RegisteredCa>>> + Send {
        std::future::ready(Err(no_own_ca("DescribeCACertificate")))
    }

    fn set_certificate_status(
        &self,
        _certificate_id: &str,
        _status: &CertificateStatus,
    ) -> impl Future<Output = PortResult<()>> + Send {
        std::future::ready(Err(no_own_ca("UpdateCertificate")))
    }
}

/// Seconds a `kmsCa` certificate's notBefore is set back, for device clocks
/// running behind.
const KMS_CA_BACKDATE_SECS: i64 = 3_600;

/// Answers devices' CSRs, generic over its ports. `K` is the fleet's own CA
/// (`kmsCa` issuers): its signers by key ARN, `DescribeCACertificate` and
/// `RegisterCertificate`; [`NoOwnCa`] when the deployment has none.
pub struct CsrIssuer<R, T, I, K = NoOwnCa> {
    rotations: R,
    iot: T,
    inventory: I,
    own_ca: K,
    profiles: ProfileCache,
}

impl<R, T, I> CsrIssuer<R, T, I, NoOwnCa>
where
    R: RotationInventory,
    T: RotationIot,
    I: Inventory + DenyList,
{
    pub fn new(rotations: R, iot: T, inventory: I, settings: CsrIssuerSettings) -> Self {
        Self {
            rotations,
            iot,
            inventory,
            own_ca: NoOwnCa,
            profiles: ProfileCache::new(settings.cache_ttl, settings.default_profile),
        }
    }

    /// The same issuer, issuing for `kmsCa` profiles through `own_ca`.
    pub fn with_own_ca<K>(self, own_ca: K) -> CsrIssuer<R, T, I, K>
    where
        K: CaSigners + CertificateImport + CertificateRegistry,
    {
        CsrIssuer {
            rotations: self.rotations,
            iot: self.iot,
            inventory: self.inventory,
            own_ca,
            profiles: self.profiles,
        }
    }
}

impl<R, T, I, K> CsrIssuer<R, T, I, K>
where
    R: RotationInventory,
    T: RotationIot,
    I: Inventory + DenyList,
    K: CaSigners + CertificateImport + CertificateRegistry,
{
    fn ops(&self) -> Ops<'_, R, T, NoObjects, I> {
        Ops {
            rotations: &self.rotations,
            iot: &self.iot,
            objects: &NoObjects,
            inventory: &self.inventory,
        }
    }

    /// Handles one CSR published on `devices/<thing_name>/rotation/csr` by
    /// the certificate `principal_certificate_id` (both authenticated by AWS
    /// IoT: the topic by the policy, the principal by TLS).
    ///
    /// Steps for a `requested` attempt: the CSR checked; the certificate made
    /// (inactive); `issued` recorded (conditional on `requested`); attached,
    /// the old certificate's policies attached, its record written, `ACTIVE`;
    /// the answer published; `delivered` recorded. Recording `issued` before
    /// anything is attached means a failure path always knows the certificate
    /// to revoke; a certificate made but not recorded stays inactive and
    /// unattached. A device asking again with the same key gets the same
    /// certificate (the steps after `issued` are idempotent).
    ///
    /// # Errors
    /// [`RotationError`] when the message must be retried (transient) or an
    /// operator must look (profile gone, records missing).
    pub async fn handle(
        &self,
        thing_name: &str,
        principal_certificate_id: &str,
        message: &CsrMessage,
        now: i64,
    ) -> Result<CsrOutcome, RotationError> {
        let ignored = |reason| {
            tracing::info!(thing = thing_name, job = %message.job_id, reason = IgnoreReason::code(reason), "CSR ignored");
            Ok(CsrOutcome::Ignored { reason })
        };
        let mut last = None;
        for _ in 0..MAX_TRIES {
            let Some(r) = self.rotations.rotation_by_job(&message.job_id).await? else {
                return ignored(IgnoreReason::UnknownJob);
            };
            if r.job_id != message.job_id {
                return ignored(IgnoreReason::UnknownJob);
            }
            // Never act on another thing's rotation: a device could otherwise
            // fail its neighbours' attempts.
            if r.thing_name != thing_name {
                return ignored(IgnoreReason::OtherThing);
            }
            if r.strategy != Strategy::Csr {
                return ignored(IgnoreReason::NotCsrStrategy);
            }
            let by_new = r.new_certificate_id.as_deref() == Some(principal_certificate_id);
            if principal_certificate_id != r.old_certificate_id && !by_new {
                return ignored(IgnoreReason::NotOurPrincipal);
            }
            last = Some(r.old_certificate_id.clone());
            match r.state {
                RotationState::Requested => match self.issue(r, message, now).await? {
                    Some(outcome) => return Ok(outcome),
                    // Lost a race: look again.
                    None => continue,
                },
                RotationState::Issued | RotationState::Delivered => return self.resend(r, message, now).await,
                RotationState::Confirmed | RotationState::Retired | RotationState::Failed => {
                    return ignored(IgnoreReason::NotAwaitingCsr);
                }
            }
        }
        Err(RotationError::Race {
            old_certificate_id: last.unwrap_or_default(),
        })
    }

    /// A `requested` attempt: check, then issue or refuse. `None` when
    /// another writer changed the rotation first.
    async fn issue(&self, r: Rotation, message: &CsrMessage, now: i64) -> Result<Option<CsrOutcome>, RotationError> {
        let ops = self.ops();
        let snapshot = self.profiles.snapshot(&self.inventory).await?;
        let profile = snapshot
            .profiles
            .get(&r.profile)
            .ok_or_else(|| RotationError::ProfileMissing {
                profile: r.profile.clone(),
                thing_name: r.thing_name.clone(),
            })?;
        let policy = profile.rotation.clone();
        if let Err(rejection) = check_csr(&message.csr, profile, &r.thing_name) {
            let outcome = self
                .refuse(r, rejection, FailureReason::CsrRefused, &policy, now)
                .await?;
            return Ok(Some(outcome));
        }
        let old = ops.old_certificate(&r).await?;
        if old.cert.status != CertificateStatus::Active {
            return Ok(Some(CsrOutcome::Ignored {
                reason: IgnoreReason::OldCertificateInactive,
            }));
        }
        // Decided on the configuration as it is now: a device denied (or
        // whose CA was unbound) since its attempt started gets nothing.
        if let Err(rejection) = rotation_allowed(&snapshot.config, &self.inventory, &old.record).await? {
            let outcome = self.refuse(r, rejection, FailureReason::Denied, &policy, now).await?;
            return Ok(Some(outcome));
        }
        let issued = match &policy.issuer {
            Issuer::Amazon {} => self.iot.certificate_from_csr(&message.csr).await?,
            Issuer::KmsCa { .. } => self.issue_from_own_ca(&r, &policy.issuer, &message.csr, now).await?,
        };
        // Whatever signed it (Amazon's CA, an account-wide certificate
        // provider, the fleet CA), the certificate is handed out only for
        // the CSR's own key. Nobody holds one for another key yet: revoked.
        if let Err(problem) = carries_csr_key(&issued.certificate_pem, &message.csr) {
            self.iot
                .set_status(&issued.certificate_id, &CertificateStatus::Revoked)
                .await?;
            return Err(RotationError::IssuerUnusable {
                profile: r.profile.clone(),
                problem: format!("certificate {}: {problem}", issued.certificate_id),
            });
        }
        let next = r.issued(&issued.certificate_id, Vec::new(), now)?;
        // A failed write may still have been applied (its answer lost), so
        // the certificate is left alone: revoking it could revoke the one the
        // retry then finds recorded. Unrecorded, it stays inactive and
        // unattached.
        if !self
            .rotations
            .put_rotation(&next, Some((RotationState::Requested, r.attempt)))
            .await?
        {
            // Another delivery of the CSR (or a failure) came first: this
            // certificate is never used.
            self.iot
                .set_status(&issued.certificate_id, &CertificateStatus::Revoked)
                .await?;
            return Ok(None);
        }
        // The CA that signed it, as AWS IoT names it: the fleet CA it was
        // registered under; none for Amazon's CA.
        let signed_by = match &policy.issuer {
            Issuer::Amazon {} => None,
            Issuer::KmsCa { ca_certificate_id, .. } => Some(ca_certificate_id.clone()),
        };
        let new = RegisteredCertificate {
            certificate_id: issued.certificate_id,
            certificate_arn: issued.certificate_arn,
            ca_certificate_id: signed_by,
            status: CertificateStatus::PendingActivation,
            pem: issued.certificate_pem,
        };
        self.deliver(next, &new, &old, false, now).await.map(Some)
    }

    /// A `kmsCa` issuer: the CA certificate as IoT describes it (ACTIVE, the
    /// profile's CA), the certificate built from the checked CSR and signed
    /// with the profile's key, registered under the CA (`INACTIVE`, as
    /// `CreateCertificateFromCsr` leaves its certificates; the install
    /// activates it). Nothing is recorded here: a crash after the
    /// registration leaves an unrecorded INACTIVE certificate, unattached, as
    /// a crash after `CreateCertificateFromCsr` does, and the retry issues
    /// another (a new serial).
    async fn issue_from_own_ca(
        &self,
        r: &Rotation,
        issuer: &Issuer,
        csr_pem: &str,
        now: i64,
    ) -> Result<IssuedCertificate, RotationError> {
        let Issuer::KmsCa {
            ca_certificate_id,
            kms_key_arn,
            validity_days,
        } = issuer
        else {
            return Err(RotationError::IssuerUnusable {
                profile: r.profile.clone(),
                problem: "not a kmsCa issuer".into(),
            });
        };
        let unusable = |problem: String| RotationError::IssuerUnusable {
            profile: r.profile.clone(),
            problem,
        };
        // Refused before anything is read or signed: the deployment decides
        // which keys its functions may use, not a profile.
        let signer = self.own_ca.signer(kms_key_arn).ok_or_else(|| {
            unusable(format!(
                "KMS key {kms_key_arn} is not the key this deployment allows (the stack's fleet CA key parameter)"
            ))
        })?;
        let ca = self
            .own_ca
            .describe_ca_certificate(ca_certificate_id)
            .await?
            .ok_or_else(|| {
                unusable(format!(
                    "CA certificate {ca_certificate_id} is not registered with AWS IoT"
                ))
            })?;
        if ca.status != CertificateStatus::Active {
            return Err(unusable(format!(
                "CA certificate {ca_certificate_id} is {}, not ACTIVE",
                ca.status.as_str()
            )));
        }
        let ca_certificate = Certificate::from_pem(&ca.pem)
            .map_err(|e| unusable(format!("CA certificate {ca_certificate_id} does not parse: {e}")))?;
        // IoT's certificate id is the SHA-256 of the DER: the PEM IoT gave is
        // the profile's CA, not another one.
        if ca.certificate_id != *ca_certificate_id || ca_certificate.fingerprint != *ca_certificate_id {
            return Err(unusable(format!(
                "IoT's answer for CA {ca_certificate_id} is another certificate"
            )));
        }
        let csr = CertificateRequest::from_pem(csr_pem).map_err(|e| unusable(format!("CSR does not parse: {e}")))?;
        let settings = IssuanceSettings {
            validity_days: *validity_days,
            backdate_secs: KMS_CA_BACKDATE_SECS,
        };
        let certificate = issue_device_certificate(signer, &ca_certificate, &csr, now, &settings)
            .await
            .map_err(|e| match e {
                IssuanceError::Signer(port) => RotationError::Port(port),
                other => unusable(other.to_string()),
            })?;
        let pem = certificate.to_pem();
        let certificate_id = self
            .own_ca
            .register_certificate(&pem, Registration::UnderCa { ca_pem: &ca.pem })
            .await?;
        // The ARN as IoT names it (and the id it took), read back.
        let registered =
            self.iot
                .certificate(&certificate_id)
                .await?
                .ok_or_else(|| RotationError::CertificateMissing {
                    certificate_id: certificate_id.clone(),
                    thing_name: r.thing_name.clone(),
                })?;
        tracing::info!(thing = %r.thing_name, ca = %ca_certificate_id, certificate = %certificate_id, "certificate issued by the fleet CA");
        Ok(IssuedCertificate {
            certificate_id,
            certificate_arn: registered.certificate_arn,
            certificate_pem: pem,
            private_key_pem: None,
        })
    }

    /// Refuses a CSR: the reason published on the answer topic, then the
    /// attempt failed. Published first: a retry after an interruption
    /// publishes again, which the device tolerates.
    async fn refuse(
        &self,
        r: Rotation,
        rejection: Rejection,
        reason: FailureReason,
        policy: &RotationPolicy,
        now: i64,
    ) -> Result<CsrOutcome, RotationError> {
        let answer = CsrAnswer::Refused {
            job_id: r.job_id.clone(),
            reason_code: rejection.reason.code().to_string(),
            detail: rejection.detail.clone(),
        };
        self.publish(&r.thing_name, &answer).await?;
        let detail = format!("{}: {}", rejection.reason.code(), rejection.detail);
        let thing_name = r.thing_name.clone();
        self.ops().fail(r, reason, &detail, policy, now).await?;
        Ok(CsrOutcome::Refused { thing_name, rejection })
    }

    /// An `issued` or `delivered` attempt asked again: the same certificate
    /// if the CSR carries its key.
    async fn resend(&self, r: Rotation, message: &CsrMessage, now: i64) -> Result<CsrOutcome, RotationError> {
        let new_id = r
            .new_certificate_id
            .clone()
            .ok_or_else(|| RotationError::NewCertificateUnknown {
                old_certificate_id: r.old_certificate_id.clone(),
                state: r.state.as_str(),
            })?;
        let new = self
            .iot
            .certificate(&new_id)
            .await?
            .ok_or_else(|| RotationError::CertificateMissing {
                certificate_id: new_id.clone(),
                thing_name: r.thing_name.clone(),
            })?;
        let issued_key = Certificate::from_pem(&new.pem)
            .map_err(|e| RotationError::CertificateUnreadable {
                certificate_id: new_id.clone(),
                problem: e.to_string(),
            })?
            .public_key_der();
        let same_key = CertificateRequest::from_pem(&message.csr)
            .is_ok_and(|csr| csr.signature_valid && csr.public_key_der == issued_key);
        if !same_key {
            return Ok(CsrOutcome::Ignored {
                reason: IgnoreReason::KeyMismatch,
            });
        }
        let old = self.ops().old_certificate(&r).await?;
        let snapshot = self.profiles.snapshot(&self.inventory).await?;
        if let Err(rejection) = rotation_allowed(&snapshot.config, &self.inventory, &old.record).await? {
            let policy = snapshot
                .profiles
                .get(&r.profile)
                .map(|p| p.rotation.clone())
                .unwrap_or_default();
            return self.refuse(r, rejection, FailureReason::Denied, &policy, now).await;
        }
        // Only a delivered certificate was answered before; an issued one is
        // a retry after a crash, its first answer.
        let resent = r.state == RotationState::Delivered;
        self.deliver(r, &new, &old, resent, now).await
    }

    /// Installs the certificate, publishes it, records `delivered`.
    async fn deliver(
        &self,
        r: Rotation,
        new: &RegisteredCertificate,
        old: &OldCertificate,
        resent: bool,
        now: i64,
    ) -> Result<CsrOutcome, RotationError> {
        let ops = self.ops();
        ops.install(&r, new, old, now).await?;
        let answer = CsrAnswer::Issued {
            job_id: r.job_id.clone(),
            certificate_id: new.certificate_id.clone(),
            certificate_pem: new.pem.clone(),
        };
        self.publish(&r.thing_name, &answer).await?;
        if r.state == RotationState::Issued {
            let next = r.delivered(now)?;
            if !self
                .rotations
                .put_rotation(&next, Some((RotationState::Issued, r.attempt)))
                .await?
            {
                // The attempt failed meanwhile, perhaps before this
                // certificate became ACTIVE: make sure it is revoked.
                if ops.revoke_if_superseded(&r, &new.certificate_id).await? {
                    return Ok(CsrOutcome::Superseded {
                        thing_name: r.thing_name,
                    });
                }
            }
        }
        tracing::info!(thing = %r.thing_name, new_certificate = %new.certificate_id, resent, "rotation certificate issued");
        Ok(CsrOutcome::Issued {
            thing_name: r.thing_name,
            new_certificate_id: new.certificate_id.clone(),
            resent,
        })
    }

    async fn publish(&self, thing_name: &str, answer: &CsrAnswer) -> PortResult<()> {
        // Strings only: serialization cannot fail.
        let payload = serde_json::to_vec(answer).unwrap_or_default();
        self.iot.publish(&answer_topic(thing_name), &payload).await
    }
}

/// Whether an issued certificate carries the CSR's public key.
fn carries_csr_key(certificate_pem: &str, csr_pem: &str) -> Result<(), String> {
    let certificate =
        Certificate::from_pem(certificate_pem).map_err(|e| format!("the issued certificate does not parse: {e}"))?;
    let csr = CertificateRequest::from_pem(csr_pem).map_err(|e| format!("the CSR does not parse: {e}"))?;
    if certificate.public_key_der() != csr.public_key_der {
        return Err("the issuer returned a certificate for another key than the CSR's".into());
    }
    Ok(())
}
