//! The inventory as the reconciler uses it ([`ReconcileInventory`] for
//! [`DynamoInventory`]); a CA's certificates in AWS IoT are in
//! [`crate::iot`].
//!
//! Items and attributes this module adds to the inventory table (see
//! [`crate::dynamodb`]):
//!
//! | item | pk | sk | main attributes |
//! |---|---|---|---|
//! | certificate record, found by the reconciler | `CERT#<certificateId>` | `CERT` | status `OBSERVED`, certificateStatus `ACTIVE`, thingName, reasonDetail, foundBy |
//! | certificate record, certificate gone | `CERT#<certificateId>` | `CERT` | certificateStatus `NOT_FOUND`, certificateMissingAt |
//! | reconciler cursor | `RECONCILER` | `CURSOR#<name>` | cursor |
//! | a bound CA's expiry, as last read | `RECONCILER` | `CAEXPIRY#<caCertificateId>` | caCertificateId, notAfter (RFC 3339), notAfterEpoch (N), checkedAt |
//!
//! # What the record scan costs
//!
//! The table has no index by CA, so [`ReconcileInventory::records_of_ca`] is
//! a `Scan` with a filter on `caCertificateId`: DynamoDB reads (and bills)
//! every item of the table, whatever the filter keeps. One full pass over one
//! CA's records reads the whole table once (≈ table size / 4 KB read units,
//! halved by the eventually consistent read); with N CAs, N times. A page
//! reads at most `limit` items, so the reconciler's page budget bounds the
//! read cost of a run to `pages × page_size` items, and the cursor (DynamoDB's
//! `LastEvaluatedKey`, as JSON) spreads a pass over several runs. Should that
//! become too dear, a sparse index keyed by `caCertificateId` would make it a
//! Query.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use onboarding_domain::rfc3339;
use onboarding_domain::{CertificateRecord, NOT_FOUND_STATUS, Page, PortResult, ReconcileInventory};
use serde::{Deserialize, Serialize};

use super::DynamoInventory;
use super::items::{Item, parse_record, s};
use super::keys::{CERTIFICATE_SK, RECONCILER_PK, ca_expiry_sk, certificate_pk};
use crate::error::{classify, invalid, won};

/// Where a record scan stands: the CA and DynamoDB's `LastEvaluatedKey`.
#[derive(Debug, Serialize, Deserialize)]
struct RecordsCursor {
    ca: String,
    after: BTreeMap<String, String>,
}

fn decode_cursor(ca_certificate_id: &str, cursor: &str) -> PortResult<Item> {
    let bad = |why: String| invalid("Scan", format!("unreadable record cursor {cursor:?}: {why}"));
    let parsed: RecordsCursor = serde_json::from_str(cursor).map_err(|e| bad(e.to_string()))?;
    if parsed.ca != ca_certificate_id {
        return Err(bad(format!("it belongs to the scan of CA {}", parsed.ca)));
    }
    Ok(parsed.after.into_iter().map(|(k, v)| (k, s(v))).collect())
}

fn encode_cursor(ca_certificate_id: &str, after: &Item) -> PortResult<String> {
    let after = after
        .iter()
        .map(|(k, v)| match v.as_s() {
            Ok(v) => Ok((k.clone(), v.clone())),
            Err(_) => Err(invalid(
                "Scan",
                format!("LastEvaluatedKey attribute {k} is not a string"),
            )),
        })
        .collect::<PortResult<BTreeMap<_, _>>>()?;
    let cursor = RecordsCursor {
        ca: ca_certificate_id.to_string(),
        after,
    };
    serde_json::to_string(&cursor).map_err(|e| invalid("Scan", e.to_string()))
}

impl ReconcileInventory for DynamoInventory {
    async fn records_of_ca(
        &self,
        ca_certificate_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> PortResult<Page<CertificateRecord>> {
        let start = cursor.map(|c| decode_cursor(ca_certificate_id, c)).transpose()?;
        let output = self
            .client()
            .scan()
            .table_name(self.table())
            .filter_expression("#sk = :sk AND #ca = :ca")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_names("#ca", "caCertificateId")
            .expression_attribute_values(":sk", s(CERTIFICATE_SK))
            .expression_attribute_values(":ca", s(ca_certificate_id))
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("Scan", e))?;
        tracing::debug!(
            ca = ca_certificate_id,
            scanned = output.scanned_count,
            matched = output.count,
            capacity = output.consumed_capacity.as_ref().and_then(|c| c.capacity_units),
            "inventory scan by CA"
        );
        let items = output
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(parse_record)
            .collect();
        let cursor = match output.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(key) => Some(encode_cursor(ca_certificate_id, &key)?),
            None => None,
        };
        Ok(Page { items, cursor })
    }

    async fn mark_certificate_missing(&self, certificate_id: &str, now: i64) -> PortResult<bool> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(certificate_pk(certificate_id)))
            .key("sk", s(CERTIFICATE_SK))
            .update_expression("SET #missingAt = :now, #certificateStatus = :notFound, #updatedAt = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(#missingAt)")
            .expression_attribute_names("#missingAt", "certificateMissingAt")
            .expression_attribute_names("#certificateStatus", "certificateStatus")
            .expression_attribute_names("#updatedAt", "updatedAt")
            .expression_attribute_values(":now", s(rfc3339(now)))
            .expression_attribute_values(":notFound", s(NOT_FOUND_STATUS))
            .send()
            .await;
        // No record, or already marked.
        won("UpdateItem", result)
    }

    async fn reconcile_cursor(&self, name: &str) -> PortResult<Option<String>> {
        self.load_cursor(RECONCILER_PK, name).await
    }

    async fn save_reconcile_cursor(&self, name: &str, cursor: Option<&str>) -> PortResult<()> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.store_cursor(RECONCILER_PK, name, cursor, now).await
    }

    async fn record_ca_expiry(&self, ca_certificate_id: &str, not_after: i64, checked_at: i64) -> PortResult<()> {
        self.client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(RECONCILER_PK))
            .item("sk", s(ca_expiry_sk(ca_certificate_id)))
            .item("caCertificateId", s(ca_certificate_id))
            .item("notAfter", s(rfc3339(not_after)))
            .item("notAfterEpoch", AttributeValue::N(not_after.to_string()))
            .item("checkedAt", s(rfc3339(checked_at)))
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }
}
