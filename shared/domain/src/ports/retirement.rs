//! What retiring a device needs beyond the rotation ports: the thing's
//! groups and billing group, deleting the thing, and the inventory's
//! retirement writes (the retirement's claim and the RETIRED records).

use std::collections::BTreeSet;
use std::future::Future;

use crate::ports::PortResult;

/// The groups a thing is in, as AWS IoT lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThingMembership {
    /// Static thing groups (`ListThingGroupsForThing`).
    pub thing_groups: Vec<String>,
    /// `DescribeThing`'s `billingGroupName`.
    pub billing_group: Option<String>,
}

/// AWS IoT as retirement uses it, beyond [`crate::ports::RotationIot`].
pub trait RetirementIot: Send + Sync {
    /// The thing's groups and billing group; `None` when the thing does not exist.
    fn thing_membership(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<ThingMembership>>> + Send;
    /// `ListThingPrincipals` (every page); `None` when the thing does not exist.
    fn attached_principals(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<Vec<String>>>> + Send;
    /// `ListPrincipalThings` (every page): the things a certificate is
    /// attached to; empty when the certificate does not exist.
    fn principal_things(&self, principal_arn: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    /// `RemoveThingFromThingGroup`; succeeds when the thing or the group is gone.
    fn leave_thing_group(&self, thing_name: &str, group: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `RemoveThingFromBillingGroup`; succeeds when the thing or the group is gone.
    fn leave_billing_group(&self, thing_name: &str, group: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// `DeleteThing`; succeeds when the thing is gone.
    ///
    /// # Errors
    /// `Conflict` while IoT still sees principals attached (eventually
    /// consistent after `DetachThingPrincipal`): the caller retries.
    fn delete_thing(&self, thing_name: &str) -> impl Future<Output = PortResult<()>> + Send;
}

/// A claimed retirement: the conditional write that authorizes every
/// destructive step, and the certificates it covers (every one ever found
/// for the thing, so that a run resumed after they were deleted in IoT
/// still knows them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetirementTicket {
    pub thing_name: String,
    /// The operator's reason, recorded on each RETIRED record.
    pub reason: String,
    /// Unix seconds of the claim.
    pub requested_at: i64,
    /// Certificates go REVOKED (and stay in IoT, revoked) rather than INACTIVE and deleted.
    pub revoke: bool,
    /// The thing, its groups and its name claim stay; only the credentials are cut.
    pub keep_thing: bool,
    pub certificate_ids: BTreeSet<String>,
}

/// The inventory as retirement uses it.
pub trait RetirementInventory: Send + Sync {
    /// The thing's retirement in progress, if any.
    fn retirement(&self, thing_name: &str) -> impl Future<Output = PortResult<Option<RetirementTicket>>> + Send;
    /// Writes the ticket unless the thing has one (conditional write); false
    /// when one exists (the caller reads it and resumes it).
    fn claim_retirement(&self, ticket: &RetirementTicket) -> impl Future<Output = PortResult<bool>> + Send;
    /// Adds certificates to the thing's ticket (a set union; idempotent).
    ///
    /// # Errors
    /// `Conflict` when the thing has no ticket.
    fn add_retiring_certificates(
        &self,
        thing_name: &str,
        certificate_ids: &BTreeSet<String>,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// The certificate's record becomes RETIRED (written bare when it has
    /// none), with the time and reason, out of the expiry index; the rest of
    /// the record (thing, CA, credentials key) is kept. Idempotent: a record
    /// already RETIRED keeps its first time and reason.
    ///
    /// # Errors
    /// `Conflict` when the record names another thing (conditional write):
    /// the certificate is not this device's to retire.
    fn record_retired(
        &self,
        certificate_id: &str,
        thing_name: &str,
        reason: &str,
        now: i64,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Deletes the ticket: the retirement is complete.
    fn finish_retirement(&self, thing_name: &str) -> impl Future<Output = PortResult<()>> + Send;
}
