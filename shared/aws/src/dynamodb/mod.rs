//! DynamoDB adapter: the inventory table, one [`DynamoInventory`] behind
//! every inventory port, module by module:
//!
//! - [`keys`]: every partition and sort key (and the expiry index's);
//! - [`items`]: items ↔ records, rotations, allow-list entries;
//! - [`inventory`]: records, name claims, the deny list, cursors
//!   ([`Inventory`](onboarding_domain::Inventory), [`DenyList`](onboarding_domain::DenyList));
//! - [`config`]: profiles and CA bindings ([`ConfigAdmin`](config::ConfigAdmin) for operators);
//! - [`rotations`]: rotation items, job pointers and the expiry scans;
//! - [`reconcile`]: the reconciler's record scan and marks;
//! - [`hook`]: the fleet-provisioning allow-list and supersessions;
//! - [`fleet`]: operators' views of the whole table (counts, one thing);
//! - [`batch`]: the retry of unprocessed batch items.
//!
//! One table, generic keys `pk` (S) and `sk` (S):
//!
//! | item | pk | sk | main attributes |
//! |---|---|---|---|
//! | certificate record | `CERT#<certificateId>` | `CERT` | status, thingName, caCertificateId, serial, fingerprint, notBefore, notAfter, profile, reasonCode, … |
//! | device profile | `CONFIG` | `PROFILE#<name>` | `profile` (JSON text) |
//! | CA binding | `CONFIG` | `CA#<caCertificateId>` | `profile` (name) |
//! | denied serial | `DENY#SERIAL#<caCertificateId>#<serialHex>` | `DENY` | `reason` (optional), `addedAt` |
//! | denied fingerprint | `DENY#FINGERPRINT#<sha256Hex>` | `DENY` | `reason` (optional), `addedAt` |
//! | retirement under way | `THING#<thingName>` | `RETIREMENT` | reason, requestedAt, revoke, keepThing, certificateIds (SS) |
//! | thing-name claim | `THING#<thingName>` | `CLAIM` | certificateId, `heldFor` (`REVOKED`: held for a revoked device, never transferred) |
//!
//! Deny-list entries live outside the `CONFIG` partition, one partition each,
//! so that the configuration query never reads them and a lookup is one
//! `BatchGetItem` by key, whatever the deny-list's size. Serials are stored
//! normalised (lowercase hex, whole bytes, no leading zero byte) and
//! fingerprints as 64 lowercase hex digits
//! ([`DenyKey`](onboarding_domain::DenyKey)).
//!
//! Entries of the earlier layout (`pk = CONFIG`, `sk = DENY#…`) still deny:
//! the lookup reads their (normalised) keys too, and the configuration query,
//! which sees them in the `CONFIG` partition, moves each to the new layout
//! (new item written first, old one deleted second, so a crash in between
//! leaves both and never neither).
//!
//! The sparse global secondary index `expiry` (`expiryShard`, `expiryKey`)
//! holds provisioned certificates only: `expiryShard` is `EXP#<first hex digit
//! of the certificate id>` (16 shards, so no single partition takes the write
//! burst) and `expiryKey` is `<notAfter RFC 3339>#<certificateId>`. "Expiring
//! before T" is 16 Queries with `expiryKey < T`: its cost grows with the number
//! expiring, never with the fleet.

use aws_sdk_dynamodb::Client;

pub(crate) mod audit;
pub(crate) mod audit_runs;
pub(crate) mod batch;
pub(crate) mod config;
pub(crate) mod fleet;
pub(crate) mod hook;
pub(crate) mod inventory;
pub(crate) mod items;
pub(crate) mod keys;
pub(crate) mod reconcile;
pub(crate) mod retirement;
pub(crate) mod revocation;
pub(crate) mod rotations;

/// The inventory table.
#[derive(Debug, Clone)]
pub struct DynamoInventory {
    client: Client,
    table: String,
}

impl DynamoInventory {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}
