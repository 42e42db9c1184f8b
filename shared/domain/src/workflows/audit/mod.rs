//! The fleet audit's collector (`onboard fleet audit`): gathers the
//! [`AuditFacts`] from AWS IoT and the inventory through ports, then runs
//! every check ([`run_audit_checks`]). Read-only: it changes nothing.
//!
//! What one run reads, in order:
//! 1. the inventory, one paginated pass over the certificate records and
//!    rotations ([`AuditInventory::inventory_page`]);
//! 2. per bound CA: `DescribeCACertificate` (its status and `notAfter`), then
//!    `ListCertificatesByCA`, every page;
//! 3. per certificate (listed under a bound CA, or recorded in the inventory
//!    but listed under none: rotated certificates from
//!    `CreateCertificateFromCsr`, records of unbound CAs, deleted ones):
//!    `DescribeCertificate` (status, PEM: `notAfter`, serial, fingerprint;
//!    `creationDate`), `ListPrincipalThings` and `ListAttachedPolicies`
//!    (one page each for a device's usual one thing and one policy), and for
//!    an `ACTIVE` one the deny-list lookup (one `BatchGetItem`);
//! 4. per distinct policy attached to a device certificate: `GetPolicy`.
//!
//! The work is bounded by [`AuditLimits`]: more certificates or inventory
//! items than the limits allow end the run with an error before any check
//! runs, never with a partial answer that would report every unlisted
//! record's certificate as missing. Every port error ends the run too: a
//! failed deny-list lookup is never read as "not denied".

use std::collections::{BTreeMap, BTreeSet};

use crate::checks::audit::run_audit_checks;
use crate::checks::audit::{AuditFacts, AuditFindings, AuditThresholds, AuditedCa, AuditedCertificate, PolicyFacts};
use crate::model::certificate::Certificate;
use crate::model::record::CertificateRecord;
use crate::model::status::CertificateStatus;
use crate::policy::rotation::state::Rotation;
use crate::ports::{AuditInventory, AuditIot, CaCertificates, DenyList, InventoryItem, PortError, PortErrorKind};

/// How much one audit may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// Items per listing page (`ListCertificatesByCA` allows 1 to 250) and per inventory page.
    pub page_size: usize,
    /// Certificates described, at most (listed under the bound CAs, plus
    /// those only the inventory names).
    pub max_certificates: usize,
    /// Inventory items (records and rotations) read, at most.
    pub max_inventory_items: usize,
}

impl Default for AuditLimits {
    fn default() -> Self {
        Self {
            page_size: 250,
            max_certificates: 10_000,
            max_inventory_items: 50_000,
        }
    }
}

/// The calls one run made, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditReads {
    pub inventory_pages: u64,
    pub ca_descriptions: u64,
    pub certificate_pages: u64,
    pub certificate_descriptions: u64,
    pub principal_things: u64,
    pub attached_policies: u64,
    pub deny_lookups: u64,
    pub policy_documents: u64,
    /// The scheduled audit's point reads, which replace the one-shot's
    /// in-memory joins: a certificate's inventory record (`GetItem`),
    #[serde(default)]
    pub record_reads: u64,
    /// a thing's certificates (`ListThingPrincipals`),
    #[serde(default)]
    pub thing_principals: u64,
    /// and a rotation item (`GetItem`).
    #[serde(default)]
    pub rotation_reads: u64,
    /// Pages of the run's stored findings read back to count them (`Query`).
    #[serde(default)]
    pub finding_pages: u64,
}

impl AuditReads {
    /// Every call counted.
    pub fn total(&self) -> u64 {
        self.inventory_pages
            + self.ca_descriptions
            + self.certificate_pages
            + self.certificate_descriptions
            + self.principal_things
            + self.attached_policies
            + self.deny_lookups
            + self.policy_documents
            + self.record_reads
            + self.thing_principals
            + self.rotation_reads
            + self.finding_pages
    }
}

/// One audit's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRun {
    pub findings: AuditFindings,
    /// Certificates that exist and were audited.
    pub certificates: usize,
    /// Bound CAs registered in AWS IoT and audited.
    pub cas: usize,
    /// Bound CAs AWS IoT does not have (nothing under them can be listed).
    pub missing_cas: Vec<String>,
    pub records: usize,
    pub rotations: usize,
    pub reads: AuditReads,
}

/// Why an audit ended without an answer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A port call failed (AWS IoT, the inventory, the deny-list).
    #[error(transparent)]
    Port(#[from] PortError),
    /// More certificates than [`AuditLimits::max_certificates`].
    #[error("the audit would describe more than {limit} certificates: raise the limit to audit this fleet")]
    TooManyCertificates { limit: usize },
    /// More inventory items than [`AuditLimits::max_inventory_items`].
    #[error("the inventory holds more than {limit} records and rotations: raise the limit to audit this fleet")]
    TooManyInventoryItems { limit: usize },
    /// AWS IoT gave a certificate whose PEM does not parse.
    #[error("the PEM AWS IoT gives for certificate {certificate_id} does not parse: {detail}")]
    UnreadableCertificate { certificate_id: String, detail: String },
}

/// Audits the fleet of the bound CAs `ca_ids` as of `now` (Unix seconds).
///
/// # Errors
/// [`AuditError`]: a failed port call, a limit exceeded, a PEM that does not parse.
#[allow(clippy::too_many_arguments)]
pub async fn audit_fleet<L, I, D, V>(
    listing: &L,
    iot: &I,
    deny: &D,
    inventory: &V,
    ca_ids: &[String],
    now: i64,
    thresholds: AuditThresholds,
    limits: AuditLimits,
) -> Result<AuditRun, AuditError>
where
    L: CaCertificates,
    I: AuditIot,
    D: DenyList,
    V: AuditInventory,
{
    let page_size = limits.page_size.clamp(1, 250);
    let mut reads = AuditReads::default();

    // 1. The inventory.
    let (records, rotations) = read_inventory(inventory, page_size, limits.max_inventory_items, &mut reads).await?;

    // 2. The bound CAs and the certificates under them (certificate id → CA).
    let mut cas = Vec::new();
    let mut missing_cas = Vec::new();
    let mut to_audit: BTreeMap<String, Option<String>> = BTreeMap::new();
    let bound: BTreeSet<&str> = ca_ids.iter().map(String::as_str).collect();
    for ca in bound {
        reads.ca_descriptions += 1;
        let Some(registered) = iot.audited_ca(ca).await? else {
            missing_cas.push(ca.to_string());
            continue;
        };
        let parsed = parse(ca, &registered.pem)?;
        cas.push(AuditedCa {
            certificate_id: registered.certificate_id,
            status: registered.status,
            not_after: parsed.not_after,
        });
        let mut cursor: Option<String> = None;
        loop {
            reads.certificate_pages += 1;
            let page = listing.certificates_of_ca(ca, cursor.as_deref(), page_size).await?;
            for listed in page.items {
                to_audit.insert(listed.certificate_id, Some(ca.to_string()));
                if to_audit.len() > limits.max_certificates {
                    return Err(AuditError::TooManyCertificates {
                        limit: limits.max_certificates,
                    });
                }
            }
            match page.cursor {
                Some(next) => cursor = Some(next_cursor(cursor.as_deref(), next, "ListCertificatesByCA")?),
                None => break,
            }
        }
    }
    // 3. Certificates only the inventory names (rotated ones, unbound CAs', deleted ones).
    for record in &records {
        if !to_audit.contains_key(&record.certificate_id) {
            let ca = Some(record.ca_certificate_id.clone()).filter(|c| !c.is_empty());
            to_audit.insert(record.certificate_id.clone(), ca);
            if to_audit.len() > limits.max_certificates {
                return Err(AuditError::TooManyCertificates {
                    limit: limits.max_certificates,
                });
            }
        }
    }

    let mut certificates = Vec::new();
    let mut denials = BTreeMap::new();
    let mut policy_things: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (certificate_id, known_ca) in &to_audit {
        reads.certificate_descriptions += 1;
        let Some(described) = iot.audited_certificate(certificate_id).await? else {
            continue; // Gone: a record of it is reported by RECORD_CERT_MISSING.
        };
        let registered = described.certificate;
        let parsed = parse(certificate_id, &registered.pem)?;
        reads.principal_things += 1;
        let things = iot.things_of_certificate(&registered.certificate_arn).await?;
        reads.attached_policies += 1;
        for policy in iot.policies_of_certificate(&registered.certificate_arn).await? {
            policy_things.entry(policy).or_default().extend(things.iter().cloned());
        }
        let ca = registered.ca_certificate_id.clone().or_else(|| known_ca.clone());
        if registered.status == CertificateStatus::Active {
            reads.deny_lookups += 1;
            let denial = deny
                .denial(ca.as_deref().unwrap_or_default(), &parsed.serial, &parsed.fingerprint)
                .await?;
            if let Some(denial) = denial {
                denials.insert(certificate_id.clone(), denial);
            }
        }
        certificates.push(AuditedCertificate {
            certificate_id: certificate_id.clone(),
            ca_certificate_id: ca,
            status: registered.status,
            not_after: parsed.not_after,
            // No creation date from IoT: the certificate's own notBefore.
            created_at: described.created_at.unwrap_or(parsed.not_before),
            things,
        });
    }

    // 4. The policies on device certificates.
    let mut policies = Vec::new();
    for (policy_name, things) in policy_things {
        reads.policy_documents += 1;
        if let Some(document) = iot.policy_document(&policy_name).await? {
            policies.push(PolicyFacts {
                policy_name,
                document,
                things: things.into_iter().collect(),
            });
        }
    }

    let facts = AuditFacts {
        certificates,
        cas,
        records,
        rotations,
        denials,
        policies,
    };
    Ok(AuditRun {
        findings: run_audit_checks(&facts, now, thresholds),
        certificates: facts.certificates.len(),
        cas: facts.cas.len(),
        missing_cas,
        records: facts.records.len(),
        rotations: facts.rotations.len(),
        reads,
    })
}

async fn read_inventory<V: AuditInventory>(
    inventory: &V,
    page_size: usize,
    max_items: usize,
    reads: &mut AuditReads,
) -> Result<(Vec<CertificateRecord>, Vec<Rotation>), AuditError> {
    let mut records = Vec::new();
    let mut rotations = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        reads.inventory_pages += 1;
        let page = inventory.inventory_page(cursor.as_deref(), page_size).await?;
        for item in page.items {
            match item {
                InventoryItem::Record(r) => records.push(r),
                InventoryItem::Rotation(r) => rotations.push(r),
            }
        }
        if records.len() + rotations.len() > max_items {
            return Err(AuditError::TooManyInventoryItems { limit: max_items });
        }
        match page.cursor {
            Some(next) => cursor = Some(next_cursor(cursor.as_deref(), next, "Scan")?),
            None => break,
        }
    }
    Ok((records, rotations))
}

/// The next page's cursor; the same cursor again would read the same page
/// forever, and stopping there would audit part of the fleet as if whole.
fn next_cursor(previous: Option<&str>, next: String, operation: &'static str) -> Result<String, AuditError> {
    if previous == Some(next.as_str()) {
        return Err(AuditError::Port(PortError::new(
            operation,
            PortErrorKind::Invalid,
            format!("the same page cursor {next:?} came back twice"),
        )));
    }
    Ok(next)
}

fn parse(certificate_id: &str, pem: &str) -> Result<Certificate, AuditError> {
    Certificate::from_pem(pem).map_err(|e| AuditError::UnreadableCertificate {
        certificate_id: certificate_id.to_string(),
        detail: e.to_string(),
    })
}

mod scheduled;

pub use scheduled::{
    AUDIT_POLICIES_MAX, AuditInvocation, AuditPhase, AuditRunState, AuditStop, AuditSummary, CaFacts, ScheduledAudit,
    ScheduledAuditError, ScheduledAuditSettings,
};

#[cfg(test)]
mod tests;
