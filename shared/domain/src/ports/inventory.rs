//! The inventory table: configuration, certificate records, name claims, the
//! deny-list, the allow-list and supersessions, as each workflow uses it.

use std::future::Future;

use crate::model::reason::Rejection;
use crate::model::record::CertificateRecord;
use crate::policy::config::OnboardingConfig;
use crate::ports::{Page, PortResult};

/// The result of claiming a thing name for a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClaim {
    /// The name is this certificate's (newly or already).
    Claimed,
    /// Another certificate holds the name.
    HeldBy(String),
}

/// A serial on the allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowEntry {
    pub serial: String,
    /// The profile its device is provisioned with (`None`: the default profile).
    pub profile: Option<String>,
    /// The only thing name this serial may be provisioned as (`None`: the
    /// name the profile's naming rule gives).
    pub thing_name: Option<String>,
    /// The certificate that used the entry up (entries are single-use).
    pub used_by: Option<String>,
    /// Earlier certificates of this serial, put here by `onboard allow
    /// reset`: the next certificate may take over their thing and name, and
    /// they are revoked once it is ACTIVE.
    pub replaces: Vec<String>,
}

/// What the conditional write that uses up an allow-list entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumption {
    /// The entry is this certificate's now (or was already).
    Used,
    /// Another certificate used it first.
    UsedBy(String),
    /// The entry is gone (taken off the allow-list meanwhile).
    Missing,
}

/// One earlier certificate of a serial that a new one supersedes: revoked
/// once the new one is ACTIVE and attached to the thing ([`crate::workflows::provisioning_hook::retire_superseded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supersession {
    pub old_certificate_id: String,
    pub new_certificate_id: String,
    pub thing_name: String,
    pub serial: String,
    /// Unix seconds.
    pub recorded_at: i64,
}

/// Thing-name claims: one certificate holds a name at a time, by conditional
/// write. The registrar and the provisioning hook claim through the same
/// items, so a name taken by one path is held against the other.
pub trait NameClaims: Send + Sync {
    /// Claims a thing name for a certificate (conditional write).
    fn claim_thing_name(
        &self,
        thing_name: &str,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<NameClaim>> + Send;
    /// Moves a claim from a retired certificate; false when the holder changed meanwhile.
    fn transfer_thing_name(
        &self,
        thing_name: &str,
        from: &str,
        to: &str,
    ) -> impl Future<Output = PortResult<bool>> + Send;
    /// Releases a claim held by this certificate.
    fn release_thing_name(&self, thing_name: &str, certificate_id: &str)
    -> impl Future<Output = PortResult<()>> + Send;
}

/// The inventory table: configuration, certificate records, name claims.
pub trait Inventory: NameClaims {
    /// Loads profiles and bindings (never the deny-list: see [`DenyList`]).
    fn load_config(&self) -> impl Future<Output = PortResult<OnboardingConfig>> + Send;
    /// The record of one certificate.
    fn certificate_record(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<CertificateRecord>>> + Send;
    /// Writes a provisioned record. Idempotent; never moves a certificate to another thing.
    fn record_provisioned(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
    /// Marks a provisioned record as activated at `at` (Unix seconds), after
    /// AWS IoT accepted the certificate's activation; a record in another
    /// status, or none, is left as it is.
    fn record_activated(&self, certificate_id: &str, at: i64) -> impl Future<Output = PortResult<()>> + Send;
    /// Writes a rejection (overwrites any earlier decision, keeps `createdAt`).
    fn record_rejected(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
    /// Writes an observation (status not PENDING_ACTIVATION) unless a record exists.
    fn record_observed(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
}

/// The deny-list, looked up by key for one certificate at a time (never
/// loaded whole, never cached: an entry added now applies to the next lookup).
pub trait DenyList: Send + Sync {
    /// The rejection of a certificate whose fingerprint (`FINGERPRINT_DENIED`,
    /// checked first) or whose serial under this CA (`SERIAL_DENIED`) is on the
    /// deny-list; `None` when neither is. `serial` and `fingerprint` are in the
    /// form [`crate::Certificate`] gives them.
    ///
    /// # Errors
    /// [`crate::ports::PortError`] when the lookup fails: the caller must not treat the
    /// certificate as allowed (fail closed).
    fn denial(
        &self,
        ca_certificate_id: &str,
        serial: &str,
        fingerprint: &str,
    ) -> impl Future<Output = PortResult<Option<Rejection>>> + Send;
}

/// The inventory as the reconciler uses it, beyond [`Inventory`].
pub trait ReconcileInventory: Send + Sync {
    /// Certificate records of one CA, one page from the opaque `cursor` on.
    /// `limit` bounds the items *read*, not returned: a page may hold fewer
    /// records, even none, and only a `None` cursor ends the scan.
    fn records_of_ca(
        &self,
        ca_certificate_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<CertificateRecord>>> + Send;
    /// Marks the record of a certificate that no longer exists in IoT
    /// (`certificateStatus` = `NOT_FOUND`, `certificateMissingAt` = `now`).
    /// True when marked now; false when already marked or there is no record.
    fn mark_certificate_missing(&self, certificate_id: &str, now: i64)
    -> impl Future<Output = PortResult<bool>> + Send;
    /// The reconciler's saved position between runs.
    fn reconcile_cursor(&self, name: &str) -> impl Future<Output = PortResult<Option<String>>> + Send;
    /// Saves a position; `None` deletes it.
    fn save_reconcile_cursor(&self, name: &str, cursor: Option<&str>) -> impl Future<Output = PortResult<()>> + Send;
    /// Records a bound CA's `notAfter` (Unix seconds), read from its
    /// certificate in IoT at `checked_at`; the latest reading replaces the
    /// previous one.
    fn record_ca_expiry(
        &self,
        ca_certificate_id: &str,
        not_after: i64,
        checked_at: i64,
    ) -> impl Future<Output = PortResult<()>> + Send;
}

/// What the hook reads and writes in the inventory.
pub trait HookInventory: NameClaims {
    fn load_config(&self) -> impl Future<Output = PortResult<OnboardingConfig>> + Send;
    /// The serial's allow-list entry, if any.
    fn allow_entry(&self, serial: &str) -> impl Future<Output = PortResult<Option<AllowEntry>>> + Send;
    /// Uses the entry up for this certificate with one conditional write:
    /// it succeeds only when the entry exists and is unused, used by this
    /// certificate already, or used by `previous` (a certificate the hook
    /// found dead in IoT).
    fn use_allow_entry(
        &self,
        serial: &str,
        certificate_id: &str,
        previous: Option<&str>,
        now: i64,
    ) -> impl Future<Output = PortResult<Consumption>> + Send;
    /// Gives a refused certificate's use back (to `previous`, or unused),
    /// only if this certificate still holds it.
    fn restore_allow_entry(
        &self,
        serial: &str,
        certificate_id: &str,
        previous: Option<&str>,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Writes the record of an allowed certificate unless it has one; true when written.
    fn record_allowed(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<bool>> + Send;
    /// Records that a new certificate supersedes an earlier one (idempotent).
    fn record_supersession(&self, supersession: &Supersession) -> impl Future<Output = PortResult<()>> + Send;
}

/// Where supersessions wait for their new certificate to be ACTIVE.
pub trait SupersessionStore: Send + Sync {
    /// Supersessions not finished yet, at most `limit`.
    fn pending_supersessions(&self, limit: usize) -> impl Future<Output = PortResult<Vec<Supersession>>> + Send;
    /// Claims the revocation with a conditional write (the supersession
    /// still exists, for this new certificate); false when it is gone.
    fn claim_revocation(&self, supersession: &Supersession, now: i64) -> impl Future<Output = PortResult<bool>> + Send;
    /// Done: the old certificate is revoked. Takes it off the entry's
    /// `replaces` and deletes the supersession.
    fn finish_supersession(&self, supersession: &Supersession) -> impl Future<Output = PortResult<()>> + Send;
    /// The new certificate never became ACTIVE: the supersession is dropped
    /// (the old certificate stays in the entry's `replaces`).
    fn drop_supersession(&self, supersession: &Supersession) -> impl Future<Output = PortResult<()>> + Send;
}
