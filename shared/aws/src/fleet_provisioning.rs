//! The fleet-provisioning allow-list in the inventory table, and the hook's
//! inventory port.
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | `ALLOW#<serial>` | `ALLOW` | `serial`, `profile` (optional), `addedAt` |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use onboarding_domain::fleet_provisioning::{AllowEntry, HookInventory};
use onboarding_domain::ports::{Inventory, PortResult};
use onboarding_domain::time_fmt::rfc3339;
use onboarding_domain::{CertificateRecord, OnboardingConfig};

use crate::dynamodb::{DynamoInventory, get_s, s};
use crate::error::{classify, invalid};

/// Sort key of allow-list items.
pub const ALLOW_SK: &str = "ALLOW";

/// Partition key of a serial's allow-list item.
pub fn allow_pk(serial: &str) -> String {
    format!("ALLOW#{serial}")
}

/// Who wrote a fleet-provisioning record.
pub const RECORDED_BY: &str = "provisioning-hook";

fn unbuildable(e: aws_sdk_dynamodb::error::BuildError) -> onboarding_domain::PortError {
    invalid("BatchWriteItem", e.to_string())
}

fn parse_entry(item: &HashMap<String, AttributeValue>) -> Option<AllowEntry> {
    Some(AllowEntry {
        serial: get_s(item, "serial")?.to_string(),
        profile: get_s(item, "profile").map(str::to_string),
    })
}

impl HookInventory for DynamoInventory {
    async fn load_config(&self) -> PortResult<OnboardingConfig> {
        Inventory::load_config(self).await
    }

    async fn allow_entry(&self, serial: &str) -> PortResult<Option<AllowEntry>> {
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(allow_pk(serial)))
            .key("sk", s(ALLOW_SK))
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(output.item.as_ref().and_then(parse_entry))
    }

    async fn record_allowed(&self, record: &CertificateRecord) -> PortResult<bool> {
        self.put_new_record(record, &[("foundBy", RECORDED_BY)]).await
    }
}

impl DynamoInventory {
    /// Puts serials on the allow-list (replacing their entries), 25 per batch,
    /// retrying what DynamoDB leaves unprocessed.
    ///
    /// # Errors
    /// SDK failures, classified.
    pub async fn allow_serials(&self, serials: &[String], profile: Option<&str>, now: i64) -> PortResult<()> {
        self.write_serials(serials, |serial| {
            let mut put = PutRequest::builder()
                .item("pk", s(allow_pk(serial)))
                .item("sk", s(ALLOW_SK))
                .item("serial", s(serial))
                .item("addedAt", s(rfc3339(now)));
            if let Some(profile) = profile {
                put = put.item("profile", s(profile));
            }
            Ok(WriteRequest::builder()
                .put_request(put.build().map_err(unbuildable)?)
                .build())
        })
        .await
    }

    /// Takes serials off the allow-list (absent ones are ignored).
    ///
    /// # Errors
    /// SDK failures, classified.
    pub async fn disallow_serials(&self, serials: &[String]) -> PortResult<()> {
        self.write_serials(serials, |serial| {
            let delete = DeleteRequest::builder()
                .key("pk", s(allow_pk(serial)))
                .key("sk", s(ALLOW_SK))
                .build()
                .map_err(unbuildable)?;
            Ok(WriteRequest::builder().delete_request(delete).build())
        })
        .await
    }

    /// One write per serial, 25 per BatchWriteItem.
    async fn write_serials(
        &self,
        serials: &[String],
        write: impl Fn(&str) -> PortResult<WriteRequest>,
    ) -> PortResult<()> {
        for chunk in serials.chunks(25) {
            let requests = chunk
                .iter()
                .map(|serial| write(serial))
                .collect::<PortResult<Vec<_>>>()?;
            self.batch_write(requests).await?;
        }
        Ok(())
    }

    async fn batch_write(&self, mut requests: Vec<WriteRequest>) -> PortResult<()> {
        let mut attempt = 0u32;
        while !requests.is_empty() {
            let output = self
                .client()
                .batch_write_item()
                .request_items(self.table(), requests)
                .send()
                .await
                .map_err(|e| classify("BatchWriteItem", e))?;
            requests = output
                .unprocessed_items
                .and_then(|mut items| items.remove(self.table()))
                .unwrap_or_default();
            if !requests.is_empty() {
                attempt += 1;
                if attempt > 8 {
                    return Err(onboarding_domain::PortError::new(
                        "BatchWriteItem",
                        onboarding_domain::PortErrorKind::Transient,
                        format!("{} writes still unprocessed after {attempt} attempts", requests.len()),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(6))).await;
            }
        }
        Ok(())
    }

    /// The whole allow-list, by serial (a Scan: an operator's listing).
    ///
    /// # Errors
    /// SDK failures, classified.
    pub async fn allow_list(&self) -> PortResult<Vec<AllowEntry>> {
        let mut entries = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client()
                .scan()
                .table_name(self.table())
                .filter_expression("sk = :allow")
                .expression_attribute_values(":allow", s(ALLOW_SK))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("Scan", e))?;
            entries.extend(output.items().iter().filter_map(parse_entry));
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        entries.sort_by(|a, b| a.serial.cmp(&b.serial));
        Ok(entries)
    }
}
