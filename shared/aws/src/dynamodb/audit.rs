//! The inventory as the fleet audit reads it ([`AuditInventory`]): one
//! paginated Scan of the certificate records and rotation items, each page
//! bounded by the items it reads.

use std::collections::BTreeMap;

use onboarding_domain::{AuditInventory, CertificateRecord, InventoryItem, Page, PortResult, Rotation};

use super::DynamoInventory;
use super::items::{Item, get_s, parse_record, parse_rotation, s};
use super::keys::{CERTIFICATE_PK_PREFIX, CERTIFICATE_SK, ROTATION_SK, certificate_pk};
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

    async fn audited_record(&self, certificate_id: &str) -> PortResult<Option<CertificateRecord>> {
        self.audited_item(certificate_id, CERTIFICATE_SK, parse_record).await
    }

    async fn audited_rotation(&self, old_certificate_id: &str) -> PortResult<Option<Rotation>> {
        self.audited_item(old_certificate_id, ROTATION_SK, parse_rotation).await
    }
}

impl DynamoInventory {
    /// One item of a certificate's partition (`GetItem`, eventually
    /// consistent: the audit is a snapshot), parsed; an item that does not
    /// parse is an error, never "no item".
    async fn audited_item<T>(
        &self,
        certificate_id: &str,
        sk: &str,
        parse: fn(&Item) -> Option<T>,
    ) -> PortResult<Option<T>> {
        const GET: &str = "GetItem";
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(certificate_pk(certificate_id)))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| classify(GET, e))?;
        match output.item {
            None => Ok(None),
            Some(item) => parse(&item)
                .map(Some)
                .ok_or_else(|| invalid(GET, format!("unreadable inventory item {sk} of {certificate_id:?}"))),
        }
    }
}
