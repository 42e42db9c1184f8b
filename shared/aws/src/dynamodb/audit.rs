//! The inventory as the fleet audit reads it ([`AuditInventory`]): one
//! paginated Scan of the certificate records and rotation items, each page
//! bounded by the items it reads.

use std::collections::BTreeMap;

use onboarding_domain::{AuditInventory, InventoryItem, Page, PortResult};

use super::DynamoInventory;
use super::items::{Item, get_s, parse_record, parse_rotation, s};
use super::keys::{CERTIFICATE_PK_PREFIX, CERTIFICATE_SK, ROTATION_SK};
use crate::error::{classify, invalid};

const OP: &str = "Scan";

fn decode_cursor(cursor: &str) -> PortResult<Item> {
    let after: BTreeMap<String, String> = serde_json::from_str(cursor)
        .map_err(|e| invalid(OP, format!("unreadable inventory cursor {cursor:?}: {e}")))?;
    Ok(after.into_iter().map(|(k, v)| (k, s(v))).collect())
}

fn encode_cursor(after: &Item) -> PortResult<String> {
    let after = after
        .iter()
        .map(|(k, v)| match v.as_s() {
            Ok(v) => Ok((k.clone(), v.clone())),
            Err(_) => Err(invalid(OP, format!("LastEvaluatedKey attribute {k} is not a string"))),
        })
        .collect::<PortResult<BTreeMap<_, _>>>()?;
    serde_json::to_string(&after).map_err(|e| invalid(OP, e.to_string()))
}

impl AuditInventory for DynamoInventory {
    async fn inventory_page(&self, cursor: Option<&str>, limit: usize) -> PortResult<Page<InventoryItem>> {
        let start = cursor.map(decode_cursor).transpose()?;
        let output = self
            .client()
            .scan()
            .table_name(self.table())
            .filter_expression("begins_with(pk, :cert) AND (sk = :record OR sk = :rotation)")
            .expression_attribute_values(":cert", s(CERTIFICATE_PK_PREFIX))
            .expression_attribute_values(":record", s(CERTIFICATE_SK))
            .expression_attribute_values(":rotation", s(ROTATION_SK))
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        let mut items = Vec::new();
        for item in output.items() {
            let parsed = match get_s(item, "sk") {
                Some(CERTIFICATE_SK) => parse_record(item).map(InventoryItem::Record),
                Some(ROTATION_SK) => parse_rotation(item).map(InventoryItem::Rotation),
                _ => continue,
            };
            // An item the audit cannot read is an error, never a record skipped.
            items.push(parsed.ok_or_else(|| {
                invalid(
                    OP,
                    format!("unreadable inventory item {:?}", get_s(item, "pk").unwrap_or_default()),
                )
            })?);
        }
        let cursor = match output.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(key) => Some(encode_cursor(&key)?),
            None => None,
        };
        Ok(Page { items, cursor })
    }
}
