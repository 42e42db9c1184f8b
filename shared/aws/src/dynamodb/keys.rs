//! Every key of the inventory table: partition and sort keys of each item,
//! the expiry index's shards and sort keys, and the prefixes that read them
//! back. Nothing else in the crate writes key text.

use onboarding_domain::{DenyKey, normalize_serial, rfc3339};

// --- certificate records, name claims, configuration -------------------------

/// Partition of configuration items.
pub const CONFIG_PK: &str = "CONFIG";

/// Prefix of every certificate's partition (`CERT#<certificateId>`), for
/// `begins_with` filters.
pub const CERTIFICATE_PK_PREFIX: &str = "CERT#";

pub fn certificate_pk(certificate_id: &str) -> String {
    format!("{CERTIFICATE_PK_PREFIX}{certificate_id}")
}

/// The certificate id of a `CERT#<certificateId>` partition key.
pub fn certificate_id_of_pk(pk: &str) -> Option<&str> {
    pk.strip_prefix(CERTIFICATE_PK_PREFIX)
}

pub const CERTIFICATE_SK: &str = "CERT";
pub fn thing_pk(thing_name: &str) -> String {
    format!("THING#{thing_name}")
}
pub const CLAIM_SK: &str = "CLAIM";
/// Sort key of a thing's retirement under way (its partition is the thing's).
pub const RETIREMENT_SK: &str = "RETIREMENT";

const PROFILE_SK_PREFIX: &str = "PROFILE#";
const BINDING_SK_PREFIX: &str = "CA#";

pub fn profile_sk(name: &str) -> String {
    format!("{PROFILE_SK_PREFIX}{name}")
}
pub fn binding_sk(ca_certificate_id: &str) -> String {
    format!("{BINDING_SK_PREFIX}{ca_certificate_id}")
}

/// The profile name of a `PROFILE#<name>` sort key.
pub fn profile_of_sk(sk: &str) -> Option<&str> {
    sk.strip_prefix(PROFILE_SK_PREFIX)
}

/// The CA certificate id of a `CA#<caCertificateId>` sort key.
pub fn ca_of_binding_sk(sk: &str) -> Option<&str> {
    sk.strip_prefix(BINDING_SK_PREFIX)
}

// --- deny list ----------------------------------------------------------------

/// The sort key of every deny-list entry.
pub const DENY_SK: &str = "DENY";

/// The partition key of a deny-list entry.
pub fn deny_pk(key: &DenyKey) -> String {
    match key {
        DenyKey::Serial {
            ca_certificate_id,
            serial,
        } => format!("DENY#SERIAL#{ca_certificate_id}#{serial}"),
        DenyKey::Fingerprint(fingerprint) => format!("DENY#FINGERPRINT#{fingerprint}"),
    }
}

/// The sort key a deny-list entry had in the earlier layout (`pk = CONFIG`).
/// Still honoured; moved to [`deny_pk`] when the configuration is read.
pub fn legacy_deny_sk(key: &DenyKey) -> String {
    deny_pk(key)
}

/// Whether a sort key of the `CONFIG` partition is a deny-list entry of the
/// earlier layout.
pub fn is_legacy_deny_sk(sk: &str) -> bool {
    sk.starts_with("DENY#")
}

/// Reads a deny-list key back from `DENY#SERIAL#<ca>#<serial>` or
/// `DENY#FINGERPRINT#<sha256>` (either layout), normalising what an operator
/// wrote by hand; `None` when unreadable.
pub fn parse_deny_key(text: &str) -> Option<DenyKey> {
    if let Some(rest) = text.strip_prefix("DENY#SERIAL#") {
        let (ca, serial) = rest.split_once('#')?;
        Some(DenyKey::Serial {
            ca_certificate_id: ca.to_string(),
            serial: normalize_serial(serial)?,
        })
    } else {
        let fingerprint = text.strip_prefix("DENY#FINGERPRINT#")?;
        DenyKey::fingerprint(fingerprint).ok()
    }
}

// --- workflow cursors ---------------------------------------------------------

/// The sort key of a workflow's saved cursor.
pub fn cursor_sk(name: &str) -> String {
    format!("CURSOR#{name}")
}

/// Partition of the reconciler's runtime state (never `CONFIG`, which the
/// registrar loads whole).
pub const RECONCILER_PK: &str = "RECONCILER";

/// The sort key, under [`RECONCILER_PK`], of a bound CA's recorded expiry.
pub fn ca_expiry_sk(ca_certificate_id: &str) -> String {
    format!("CAEXPIRY#{ca_certificate_id}")
}

/// Partition of the rotator's runtime state (never `CONFIG`, which the
/// registrar loads whole).
pub const ROTATOR_PK: &str = "ROTATOR";

// --- expiry index ---------------------------------------------------------------

/// Name of the expiry index.
pub const EXPIRY_INDEX: &str = "expiry";
/// Number of expiry shards.
pub const EXPIRY_SHARDS: u32 = 16;
/// Shard prefix of provisioned certificates in the expiry index.
pub const EXPIRING_PREFIX: &str = "EXP";
/// Shard prefix of due rotations in the expiry index.
pub const DUE_PREFIX: &str = "DUE";

/// `<time>#<certificate id>`: the sort key of the index (an expiry, a due time).
pub fn expiry_key(unix_seconds: i64, certificate_id: &str) -> String {
    format!("{}#{certificate_id}", rfc3339(unix_seconds))
}

/// `EXP#<0-f>`: the shard of a certificate in the expiry index.
pub fn expiry_shard(certificate_id: &str) -> String {
    format!("EXP#{}", certificate_id.chars().next().unwrap_or('0'))
}

/// `DUE#<0-f>`: the shard of a rotation in the expiry index.
pub fn due_shard(old_certificate_id: &str) -> String {
    format!("{DUE_PREFIX}#{}", old_certificate_id.chars().next().unwrap_or('0'))
}

/// `<prefix>#<0-f>`: shard number `shard` (below [`EXPIRY_SHARDS`]) of the
/// expiry index.
pub fn shard_key(prefix: &str, shard: u32) -> String {
    format!("{prefix}#{shard:x}")
}

// --- rotations --------------------------------------------------------------------

/// Sort key of a rotation item (its partition is the old certificate's).
pub const ROTATION_SK: &str = "ROTATION";
/// Sort key of a job pointer.
pub const JOB_SK: &str = "JOB";

/// `JOB#<jobId>`: the partition of a job pointer.
pub fn job_pk(job_id: &str) -> String {
    format!("JOB#{job_id}")
}

// --- fleet provisioning -----------------------------------------------------------

/// Sort key of allow-list items.
pub const ALLOW_SK: &str = "ALLOW";

/// Partition key of a serial's allow-list item.
pub fn allow_pk(serial: &str) -> String {
    format!("ALLOW#{serial}")
}

/// Partition of the supersessions waiting for their new certificate.
pub const SUPERSEDE_PK: &str = "SUPERSEDE";

/// Sort key of one supersession.
pub fn supersede_sk(old: &str, new: &str) -> String {
    format!("{old}#{new}")
}

// --- the scheduled fleet audit ------------------------------------------------------

/// Partition of the scheduled audit's run state and latest summary (never
/// `CONFIG`). Every item the `fleet-auditor` writes has a partition key
/// `AUDIT` or `AUDIT#…`, so its role's writes are limited to them
/// (`dynamodb:LeadingKeys`).
pub const AUDIT_PK: &str = "AUDIT";
/// Sort key of the run in progress (or the last one, `DONE`).
pub const AUDIT_RUN_SK: &str = "RUN";
/// Sort key of the latest completed run's summary.
pub const AUDIT_LATEST_SK: &str = "LATEST";

/// `AUDIT#<runId>`: the partition of one run's findings.
pub fn audit_findings_pk(run_id: i64) -> String {
    format!("{AUDIT_PK}#{run_id}")
}

/// `<check>#<resourceKind>#<resourceId>`: a finding's sort key, the same for
/// the same finding written again.
pub fn audit_finding_sk(check: &str, resource_kind: &str, resource_id: &str) -> String {
    format!("{check}#{resource_kind}#{resource_id}")
}
