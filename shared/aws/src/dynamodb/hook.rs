//! The fleet-provisioning allow-list in the inventory table, the hook's
//! inventory port ([`HookInventory`]), and the supersessions a reset leaves
//! for the reconciler ([`SupersessionStore`]). The hook's IoT ports are in
//! [`crate::iot`].
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | `ALLOW#<serial>` | `ALLOW` | `serial`, `profile` (optional), `thingName` (optional binding), `usedBy`, `usedAt` (the certificate that used the entry), `replaces` (string set: earlier certificates a reset lets the next one supersede), `addedAt`, `resetAt` |
//! | `SUPERSEDE` | `<old certificate id>#<new certificate id>` | `oldCertificateId`, `newCertificateId`, `thingName`, `serial`, `recordedAt`, `state` (`PENDING`, `REVOKING`) |

use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, ReturnValuesOnConditionCheckFailure, WriteRequest};
use futures::StreamExt;
use onboarding_domain::rfc3339;
use onboarding_domain::{AllowEntry, Consumption, HookInventory, Supersession, SupersessionStore};
use onboarding_domain::{CertificateRecord, OnboardingConfig};
use onboarding_domain::{Inventory, PortResult};

use super::DynamoInventory;
use super::batch::UnprocessedRetry;
use super::items::{get_s, parse_allow_entry, parse_supersession, s};
use super::keys::{ALLOW_SK, SUPERSEDE_PK, allow_pk, supersede_sk};
use crate::error::{classify, invalid, is_conditional_failure, won};

/// Who wrote a fleet-provisioning record.
pub const RECORDED_BY: &str = "provisioning-hook";

/// Unprocessed allow-list writes are sent again with a growing pause, nine
/// calls in all.
const ALLOW_LIST_WRITES: UnprocessedRetry = UnprocessedRetry {
    operation: "BatchWriteItem",
    calls: 9,
    pause: |call| Duration::from_millis(50 << call.min(6)),
};

fn unbuildable(e: aws_sdk_dynamodb::error::BuildError) -> onboarding_domain::PortError {
    invalid("BatchWriteItem", e.to_string())
}

/// What `onboard allow add` did with one serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AllowResult {
    /// Written (new, or an unused entry replaced).
    Allowed,
    /// Used by a certificate already: left as it is (`onboard allow reset`).
    AlreadyUsed,
}

/// What `onboard allow reset` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetResult {
    /// The entry is unused again; the certificate that used it is superseded
    /// by the next one.
    Reset { superseded: String },
    /// Not used since it was added or last reset: nothing to do.
    Unused,
    /// No such entry.
    Missing,
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
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(output.item.as_ref().and_then(parse_allow_entry))
    }

    async fn use_allow_entry(
        &self,
        serial: &str,
        certificate_id: &str,
        previous: Option<&str>,
        now: i64,
    ) -> PortResult<Consumption> {
        let mut condition = "attribute_exists(pk) AND (attribute_not_exists(usedBy) OR usedBy = :me".to_string();
        let mut request = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(allow_pk(serial)))
            .key("sk", s(ALLOW_SK))
            .update_expression("SET usedBy = :me, usedAt = :now")
            .expression_attribute_values(":me", s(certificate_id))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(previous) = previous {
            condition.push_str(" OR usedBy = :previous");
            request = request.expression_attribute_values(":previous", s(previous));
        }
        condition.push(')');
        match request.condition_expression(condition).send().await {
            Ok(_) => Ok(Consumption::Used),
            Err(e) if is_conditional_failure(&e) => {
                let old = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item().cloned(),
                    _ => None,
                };
                let old = match old {
                    Some(old) => Some(old),
                    // Not returned: read it.
                    None => {
                        self.client()
                            .get_item()
                            .table_name(self.table())
                            .key("pk", s(allow_pk(serial)))
                            .key("sk", s(ALLOW_SK))
                            .consistent_read(true)
                            .send()
                            .await
                            .map_err(|e| classify("GetItem", e))?
                            .item
                    }
                };
                Ok(match old.as_ref().and_then(|item| get_s(item, "usedBy")) {
                    Some(holder) => Consumption::UsedBy(holder.to_string()),
                    None => Consumption::Missing,
                })
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn restore_allow_entry(&self, serial: &str, certificate_id: &str, previous: Option<&str>) -> PortResult<()> {
        let mut request = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(allow_pk(serial)))
            .key("sk", s(ALLOW_SK))
            .condition_expression("usedBy = :me")
            .expression_attribute_values(":me", s(certificate_id));
        request = match previous {
            Some(previous) => request
                .update_expression("SET usedBy = :previous")
                .expression_attribute_values(":previous", s(previous)),
            None => request.update_expression("REMOVE usedBy, usedAt"),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn record_allowed(&self, record: &CertificateRecord) -> PortResult<bool> {
        self.put_new_record(record, &[("foundBy", RECORDED_BY)]).await
    }

    async fn record_supersession(&self, supersession: &Supersession) -> PortResult<()> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(SUPERSEDE_PK))
            .item(
                "sk",
                s(supersede_sk(
                    &supersession.old_certificate_id,
                    &supersession.new_certificate_id,
                )),
            )
            .item("oldCertificateId", s(&supersession.old_certificate_id))
            .item("newCertificateId", s(&supersession.new_certificate_id))
            .item("thingName", s(&supersession.thing_name))
            .item("serial", s(&supersession.serial))
            .item("recordedAt", s(rfc3339(supersession.recorded_at)))
            .item("state", s("PENDING"))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(classify("PutItem", e)),
        }
    }
}

impl SupersessionStore for DynamoInventory {
    async fn pending_supersessions(&self, limit: usize) -> PortResult<Vec<Supersession>> {
        let mut found = Vec::new();
        let mut pages = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(SUPERSEDE_PK))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("Query", e))?;
            found.extend(page.items().iter().filter_map(parse_supersession));
            if found.len() >= limit {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn claim_revocation(&self, supersession: &Supersession, now: i64) -> PortResult<bool> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(SUPERSEDE_PK))
            .key(
                "sk",
                s(supersede_sk(
                    &supersession.old_certificate_id,
                    &supersession.new_certificate_id,
                )),
            )
            .update_expression("SET #state = :revoking, claimedAt = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":revoking", s("REVOKING"))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .send()
            .await;
        won("UpdateItem", result)
    }

    async fn finish_supersession(&self, supersession: &Supersession) -> PortResult<()> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(allow_pk(&supersession.serial)))
            .key("sk", s(ALLOW_SK))
            .update_expression("DELETE replaces :old")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(
                ":old",
                AttributeValue::Ss(vec![supersession.old_certificate_id.clone()]),
            )
            .send()
            .await;
        match result {
            Ok(_) => {}
            // The entry was removed meanwhile: nothing to take off.
            Err(e) if is_conditional_failure(&e) => {}
            Err(e) => return Err(classify("UpdateItem", e)),
        }
        self.drop_supersession(supersession).await
    }

    async fn drop_supersession(&self, supersession: &Supersession) -> PortResult<()> {
        self.client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(SUPERSEDE_PK))
            .key(
                "sk",
                s(supersede_sk(
                    &supersession.old_certificate_id,
                    &supersession.new_certificate_id,
                )),
            )
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e))?;
        Ok(())
    }
}

impl DynamoInventory {
    /// Puts serials on the allow-list, each optionally bound to one thing
    /// name. An unused entry is replaced; a used one is left alone (a device
    /// already got its certificate: `onboard allow reset` lets it in again).
    /// One conditional write per serial, eight at a time.
    ///
    /// # Errors
    /// SDK failures, classified.
    pub async fn allow_serials(
        &self,
        serials: &[(String, Option<String>)],
        profile: Option<&str>,
        now: i64,
    ) -> PortResult<Vec<(String, AllowResult)>> {
        let results: Vec<PortResult<(String, AllowResult)>> = futures::stream::iter(serials)
            .map(|(serial, thing)| async move {
                let mut put = self
                    .client()
                    .put_item()
                    .table_name(self.table())
                    .item("pk", s(allow_pk(serial)))
                    .item("sk", s(ALLOW_SK))
                    .item("serial", s(serial))
                    .item("addedAt", s(rfc3339(now)))
                    .condition_expression("attribute_not_exists(usedBy)");
                if let Some(profile) = profile {
                    put = put.item("profile", s(profile));
                }
                if let Some(thing) = thing {
                    put = put.item("thingName", s(thing));
                }
                match put.send().await {
                    Ok(_) => Ok((serial.clone(), AllowResult::Allowed)),
                    Err(e) if is_conditional_failure(&e) => Ok((serial.clone(), AllowResult::AlreadyUsed)),
                    Err(e) => Err(classify("PutItem", e)),
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut results = results.into_iter().collect::<PortResult<Vec<_>>>()?;
        results.sort();
        Ok(results)
    }

    /// Lets a device whose entry was used in again: the certificate that used
    /// it joins the entry's `replaces` (the next certificate supersedes it,
    /// and it is revoked once that one is ACTIVE), and the entry is unused.
    /// One conditional write on the use it read.
    ///
    /// # Errors
    /// SDK failures, classified; a conflict when the entry changed meanwhile.
    pub async fn reset_serial(&self, serial: &str, now: i64) -> PortResult<ResetResult> {
        let Some(entry) = HookInventory::allow_entry(self, serial).await? else {
            return Ok(ResetResult::Missing);
        };
        let Some(used_by) = entry.used_by else {
            return Ok(ResetResult::Unused);
        };
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(allow_pk(serial)))
            .key("sk", s(ALLOW_SK))
            .update_expression("ADD replaces :old SET resetAt = :now REMOVE usedBy, usedAt")
            .condition_expression("usedBy = :used")
            .expression_attribute_values(":old", AttributeValue::Ss(vec![used_by.clone()]))
            .expression_attribute_values(":used", s(&used_by))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ResetResult::Reset { superseded: used_by }),
            Err(e) if is_conditional_failure(&e) => Err(onboarding_domain::PortError::new(
                "UpdateItem",
                onboarding_domain::PortErrorKind::Conflict,
                format!("the entry of {serial} changed while it was being reset; run the command again"),
            )),
            Err(e) => Err(classify("UpdateItem", e)),
        }
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
            self.batch_write(requests, &ALLOW_LIST_WRITES, "writes").await?;
        }
        Ok(())
    }

    /// The whole allow-list, by serial (a Scan: an operator's listing).
    ///
    /// # Errors
    /// SDK failures, classified.
    pub async fn allow_list(&self) -> PortResult<Vec<AllowEntry>> {
        let mut entries = Vec::new();
        let mut pages = self
            .client()
            .scan()
            .table_name(self.table())
            .filter_expression("sk = :allow")
            .expression_attribute_values(":allow", s(ALLOW_SK))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("Scan", e))?;
            entries.extend(page.items().iter().filter_map(parse_allow_entry));
        }
        entries.sort_by(|a, b| a.serial.cmp(&b.serial));
        Ok(entries)
    }
}
