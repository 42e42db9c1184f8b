//! The inventory as an emergency revocation writes it: the claim on each
//! certificate's record, the deny-list entries, and the thing name held for
//! the revoked device.

use std::future::Future;

use crate::model::record::CertificateRecord;
use crate::policy::config::DenyKey;
use crate::ports::{NameClaim, PortResult};

/// What a revocation writes to the inventory. Every method is idempotent.
pub trait RevocationStore: Send + Sync {
    /// Claims the revocation of one certificate with a conditional write:
    /// its record (created from `record` when there is none) becomes
    /// `REVOKED`, with `reason` and `now`, and leaves the expiry index. True
    /// when claimed now; false when the record was `REVOKED` already (an
    /// earlier run, which this one resumes).
    fn claim_revocation(
        &self,
        record: &CertificateRecord,
        reason: &str,
        now: i64,
    ) -> impl Future<Output = PortResult<bool>> + Send;
    /// Puts a deny-list entry (replacing one with the same key), in the
    /// notation every lookup ([`crate::ports::DenyList`]) reads.
    fn deny(&self, key: &DenyKey, reason: &str, now: i64) -> impl Future<Output = PortResult<()>> + Send;
    /// The certificate holding a thing name's claim, read consistently.
    fn name_holder(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<String>>> + Send;
    /// Holds a thing name for a revoked certificate: the claim (taken for
    /// `certificate_id` when nobody holds it) is marked so that no transfer
    /// moves it to another certificate, until a retirement releases it.
    /// `HeldBy` when another certificate holds the name (nothing changed).
    fn hold_thing_name(
        &self,
        thing_name: &str,
        certificate_id: &str,
        now: i64,
    ) -> impl Future<Output = PortResult<NameClaim>> + Send;
}
