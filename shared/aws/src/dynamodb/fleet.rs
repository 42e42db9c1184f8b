//! Operators' views of the inventory: fleet-wide counts ([`fleet_status`])
//! and what the table holds about one thing (`onboard fleet inspect`).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use onboarding_domain::RecordStatus;
use onboarding_domain::rfc3339;
use onboarding_domain::{PortResult, Rotation, RotationState};

use super::DynamoInventory;
use super::items::{Attributes, Item, get_s, parse_rotation, s, string_attributes};
use super::keys::{
    CERTIFICATE_PK_PREFIX, CERTIFICATE_SK, CLAIM_SK, DUE_PREFIX, EXPIRING_PREFIX, EXPIRY_INDEX, EXPIRY_SHARDS,
    ROTATION_SK, certificate_id_of_pk, certificate_pk, shard_key, thing_pk,
};
use crate::error::{OperatorError, classify};

/// Every rotation state, in the order a rotation goes through them.
pub const ROTATION_STATES: [RotationState; 6] = [
    RotationState::Requested,
    RotationState::Issued,
    RotationState::Delivered,
    RotationState::Confirmed,
    RotationState::Retired,
    RotationState::Failed,
];

/// Counts over the certificate records and the rotation items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetStatus {
    /// Records by status (`PROVISIONED`, `REJECTED`, `OBSERVED`, `ROTATED`).
    pub by_status: BTreeMap<String, u64>,
    /// Rejections by reason code.
    pub rejections: BTreeMap<String, u64>,
    /// Provisioned certificates already past notAfter.
    pub expired: u64,
    /// Provisioned certificates expiring within each number of days.
    pub expiring_within: BTreeMap<u32, u64>,
    pub rotations: RotationCounts,
}

/// Counts over the rotation items (one per certificate ever rotated: its
/// current attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationCounts {
    /// Rotations by state; every state of [`ROTATION_STATES`] is present,
    /// zero included (`UNKNOWN` too when an item's state is unreadable).
    pub by_state: BTreeMap<String, u64>,
    /// `FAILED` rotations by reason code.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// `FAILED` rotations with nothing left due: no retry, an operator decides.
    pub given_up: u64,
    /// Rotations whose `dueAt` is now or past: the rotator's next run looks at
    /// them (job deadlines, retries, old certificates to delete).
    pub due_now: u64,
    /// Certificate records with status `ROTATED` (retired by a rotation).
    pub rotated_certificates: u64,
}

impl Default for RotationCounts {
    fn default() -> Self {
        Self {
            by_state: ROTATION_STATES.iter().map(|s| (s.as_str().to_string(), 0)).collect(),
            failed_by_reason: BTreeMap::new(),
            given_up: 0,
            due_now: 0,
            rotated_certificates: 0,
        }
    }
}

impl RotationCounts {
    /// Rotation items counted, whatever their state.
    pub fn total(&self) -> u64 {
        self.by_state.values().sum()
    }
}

fn get(item: &Item, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}

impl FleetStatus {
    /// Counts one item of the Scan: a certificate record or a rotation.
    fn count(&mut self, item: &Item) {
        match get(item, "sk").as_deref() {
            Some(ROTATION_SK) => self.count_rotation(item),
            _ => self.count_record(item),
        }
    }

    fn count_record(&mut self, item: &Item) {
        let record_status = get(item, "status").unwrap_or_else(|| "UNKNOWN".into());
        if record_status == RecordStatus::Rejected.as_str() {
            *self
                .rejections
                .entry(get(item, "reasonCode").unwrap_or_else(|| "UNKNOWN".into()))
                .or_default() += 1;
        } else if record_status == RecordStatus::Rotated.as_str() {
            self.rotations.rotated_certificates += 1;
        }
        *self.by_status.entry(record_status).or_default() += 1;
    }

    fn count_rotation(&mut self, item: &Item) {
        let rotations = &mut self.rotations;
        let state = get(item, "state").and_then(|s| RotationState::parse(&s));
        let key = state.map_or("UNKNOWN", RotationState::as_str);
        *rotations.by_state.entry(key.to_string()).or_default() += 1;
        if state == Some(RotationState::Failed) {
            *rotations
                .failed_by_reason
                .entry(get(item, "reasonCode").unwrap_or_else(|| "UNKNOWN".into()))
                .or_default() += 1;
            if !item.contains_key("dueAt") {
                rotations.given_up += 1;
            }
        }
    }
}

/// Builds the fleet status as of `now` (Unix seconds).
///
/// What it reads:
/// - one paginated Scan of the table (an operator's query, not a hot path),
///   filtered to certificate records and rotation items and projecting five
///   attributes: the record counts by status and reason, and the rotation
///   counts by state and reason, in the same pass;
/// - Queries with `Select: COUNT` on the sparse `expiry` index, 16 shards
///   each: the expiry counts (`EXP#` shards) and the rotations due now
///   (`DUE#` shards), whose cost grows with the number of certificates
///   expiring and of rotations due, not with the fleet.
///
/// # Errors
/// SDK failures, classified.
pub async fn fleet_status(client: &Client, table: &str, now: i64, windows_days: &[u32]) -> PortResult<FleetStatus> {
    let mut status = FleetStatus::default();
    let mut pages = client
        .scan()
        .table_name(table)
        .filter_expression("begins_with(pk, :cert) AND (sk = :record OR sk = :rotation)")
        .expression_attribute_values(":cert", s(CERTIFICATE_PK_PREFIX))
        .expression_attribute_values(":record", AttributeValue::S(CERTIFICATE_SK.into()))
        .expression_attribute_values(":rotation", AttributeValue::S(ROTATION_SK.into()))
        // `status` and `state` are DynamoDB reserved words.
        .projection_expression("sk, #status, #state, reasonCode, dueAt")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#state", "state")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("Scan", e))?;
        for item in page.items() {
            status.count(item);
        }
    }
    let now_key = rfc3339(now);
    status.expired = count_expiring(client, table, None, &now_key).await?;
    for days in windows_days {
        let until = rfc3339(now + i64::from(*days) * 86_400);
        let count = count_expiring(client, table, Some(&now_key), &until).await?;
        status.expiring_within.insert(*days, count);
    }
    status.rotations.due_now = count_due(client, table, now).await?;
    Ok(status)
}

/// Provisioned certificates whose notAfter is in `[from, until)` (RFC 3339;
/// `from = None` means from the beginning of time), counted shard by shard.
///
/// # Errors
/// SDK failures, classified.
pub async fn count_expiring(client: &Client, table: &str, from: Option<&str>, until: &str) -> PortResult<u64> {
    count_index(client, table, EXPIRING_PREFIX, from, until).await
}

/// Rotations due at or before `now` (Unix seconds): the `DUE#` entries of
/// the expiry index with dueAt ≤ now, counted shard by shard (one
/// `Select: COUNT` Query per shard, more only past 1 MB of entries).
///
/// # Errors
/// SDK failures, classified.
pub async fn count_due(client: &Client, table: &str, now: i64) -> PortResult<u64> {
    // `expiryKey` is `<dueAt>#<id>`, and `~` sorts after `#`: rotations due
    // at `now` itself are included.
    count_index(client, table, DUE_PREFIX, None, &format!("{}~", rfc3339(now))).await
}

/// Entries of the `<prefix>#<digit>` shards with `expiryKey` in
/// `[from, until)` (`from = None`: from the start), all 16 shards.
async fn count_index(client: &Client, table: &str, prefix: &str, from: Option<&str>, until: &str) -> PortResult<u64> {
    let mut total = 0u64;
    for shard in 0..EXPIRY_SHARDS {
        let mut request = client
            .query()
            .table_name(table)
            .index_name(EXPIRY_INDEX)
            .select(Select::Count)
            .expression_attribute_values(":shard", s(shard_key(prefix, shard)))
            .expression_attribute_values(":until", AttributeValue::S(until.to_string()));
        request = match from {
            Some(from) => request
                .key_condition_expression("expiryShard = :shard AND expiryKey BETWEEN :from AND :until")
                .expression_attribute_values(":from", AttributeValue::S(from.to_string())),
            None => request.key_condition_expression("expiryShard = :shard AND expiryKey < :until"),
        };
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("Query", e))?;
            total += u64::try_from(page.count()).unwrap_or(0);
        }
    }
    Ok(total)
}

// --- one thing ------------------------------------------------------------------

/// An item of the table that names a thing (`onboard fleet inspect --history`).
#[derive(Debug, Clone, PartialEq)]
pub enum ThingHistoryItem {
    /// A certificate record, its string attributes as stored.
    Record {
        certificate_id: String,
        attributes: Attributes,
    },
    /// A rotation of the certificate (`None`: the item is unreadable).
    Rotation {
        certificate_id: String,
        rotation: Option<Box<Rotation>>,
    },
}

impl DynamoInventory {
    /// A certificate's record, its string attributes as stored (an eventually
    /// consistent read: an operator's view).
    ///
    /// # Errors
    /// The SDK failure, as `GetItem failed: …`.
    pub async fn record_attributes(&self, certificate_id: &str) -> Result<Option<Attributes>, OperatorError> {
        self.attributes_of(certificate_pk(certificate_id), CERTIFICATE_SK).await
    }

    /// The claim on a thing name, its string attributes as stored
    /// (`certificateId`: the holder).
    ///
    /// # Errors
    /// The SDK failure, as `GetItem failed: …`.
    pub async fn name_claim_attributes(&self, thing_name: &str) -> Result<Option<Attributes>, OperatorError> {
        self.attributes_of(thing_pk(thing_name), CLAIM_SK).await
    }

    async fn attributes_of(&self, pk: String, sk: &str) -> Result<Option<Attributes>, OperatorError> {
        Ok(self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| OperatorError::terse("GetItem", &e))?
            .item
            .as_ref()
            .map(string_attributes))
    }

    /// Every certificate record and rotation item that names the thing (a
    /// filtered Scan of the whole table), in the Scan's order.
    ///
    /// # Errors
    /// The SDK failure, as `Scan failed: …`.
    pub async fn thing_history(&self, thing_name: &str) -> Result<Vec<ThingHistoryItem>, OperatorError> {
        let mut history = Vec::new();
        // Certificate records and rotation items both carry `thingName`.
        let mut pages = self
            .client()
            .scan()
            .table_name(self.table())
            .filter_expression("begins_with(pk, :cert) AND thingName = :thing")
            .expression_attribute_values(":cert", s(CERTIFICATE_PK_PREFIX))
            .expression_attribute_values(":thing", s(thing_name))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| OperatorError::terse("Scan", &e))?;
            for item in page.items() {
                let Some(id) = get_s(item, "pk").and_then(certificate_id_of_pk) else {
                    continue;
                };
                let certificate_id = id.to_string();
                match get_s(item, "sk") {
                    Some(CERTIFICATE_SK) => history.push(ThingHistoryItem::Record {
                        certificate_id,
                        attributes: string_attributes(item),
                    }),
                    Some(ROTATION_SK) => history.push(ThingHistoryItem::Rotation {
                        certificate_id,
                        rotation: parse_rotation(item).map(Box::new),
                    }),
                    _ => {}
                }
            }
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
            .collect()
    }

    #[test]
    fn records_and_rotations_are_counted_apart() {
        let mut status = FleetStatus::default();
        for i in [
            item(&[("sk", "CERT"), ("status", "PROVISIONED")]),
            item(&[("sk", "CERT"), ("status", "ROTATED")]),
            item(&[("sk", "CERT"), ("status", "REJECTED"), ("reasonCode", "WEAK_KEY")]),
            item(&[("sk", "ROTATION"), ("state", "ISSUED")]),
            item(&[
                ("sk", "ROTATION"),
                ("state", "FAILED"),
                ("reasonCode", "JOB_TIMED_OUT"),
                ("dueAt", "x"),
            ]),
            item(&[("sk", "ROTATION"), ("state", "FAILED"), ("reasonCode", "CSR_REFUSED")]),
            item(&[("sk", "ROTATION"), ("state", "nonsense")]),
        ] {
            status.count(&i);
        }
        assert_eq!(status.by_status.len(), 3, "{:?}", status.by_status);
        assert_eq!(status.rejections.get("WEAK_KEY"), Some(&1));
        let r = &status.rotations;
        assert_eq!(r.by_state.get("ISSUED"), Some(&1));
        assert_eq!(r.by_state.get("FAILED"), Some(&2));
        assert_eq!(r.by_state.get("REQUESTED"), Some(&0), "every state is present");
        assert_eq!(r.by_state.get("UNKNOWN"), Some(&1));
        assert_eq!(r.failed_by_reason.get("JOB_TIMED_OUT"), Some(&1));
        assert_eq!(r.failed_by_reason.get("CSR_REFUSED"), Some(&1));
        assert_eq!((r.given_up, r.rotated_certificates, r.total()), (1, 1, 4));
    }
}
