//! What the fleet audit reads beyond the existing listings: a certificate's
//! description with its creation date, the things and policies attached to
//! it, a policy's document, and one pass over the inventory's records and
//! rotations. Read-only: the audit changes nothing.

use std::future::Future;

use crate::model::record::CertificateRecord;
use crate::policy::rotation::state::Rotation;
use crate::ports::{Page, PortResult, RegisteredCa, RegisteredCertificate};

/// A certificate as `DescribeCertificate` gives it, with its `creationDate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedCertificate {
    pub certificate: RegisteredCertificate,
    /// `creationDate`, Unix seconds; `None` when IoT did not say.
    pub created_at: Option<i64>,
}

/// AWS IoT as the fleet audit reads it.
pub trait AuditIot: Send + Sync {
    /// `DescribeCertificate`; `None` when it does not exist.
    fn audited_certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<DescribedCertificate>>> + Send;
    /// `DescribeCACertificate`; `None` when it does not exist.
    fn audited_ca(&self, ca_certificate_id: &str) -> impl Future<Output = PortResult<Option<RegisteredCa>>> + Send;
    /// `ListPrincipalThings`, every page: the things the certificate is attached to.
    fn things_of_certificate(&self, certificate_arn: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    /// `ListAttachedPolicies`, every page: the policies attached to the certificate.
    fn policies_of_certificate(&self, certificate_arn: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    /// `GetPolicy`: the policy's default version's document; `None` when the
    /// policy does not exist (deleted since it was listed).
    fn policy_document(&self, policy_name: &str) -> impl Future<Output = PortResult<Option<String>>> + Send;
    /// `ListThingPrincipals`, every page: the ids of the certificates
    /// attached to the thing (other principals left out); none when the
    /// thing does not exist.
    fn certificates_of_thing(&self, thing_name: &str) -> impl Future<Output = PortResult<Vec<String>>> + Send;
}

/// One item of the inventory the audit reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryItem {
    Record(CertificateRecord),
    Rotation(Rotation),
}

/// The inventory as the fleet audit reads it.
pub trait AuditInventory: Send + Sync {
    /// Certificate records and rotations, one page of at most `limit` items
    /// *read* from the opaque `cursor` on (a page may hold fewer, even none;
    /// only a `None` cursor ends the scan).
    fn inventory_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<InventoryItem>>> + Send;
    /// One certificate's record (`GetItem`); an item that cannot be read is
    /// an error, never "no record".
    fn audited_record(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = PortResult<Option<CertificateRecord>>> + Send;
    /// The rotation of one old certificate (`GetItem`); an item that cannot
    /// be read is an error.
    fn audited_rotation(&self, old_certificate_id: &str) -> impl Future<Output = PortResult<Option<Rotation>>> + Send;
}
