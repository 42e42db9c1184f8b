//! [`RetirementInventory`]: a thing's retirement ticket (`THING#<name>` /
//! `RETIREMENT`, claimed with a conditional put, deleted when the
//! retirement is complete) and the RETIRED certificate records.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use onboarding_domain::{PortError, PortErrorKind, PortResult, RecordStatus, RetirementInventory, RetirementTicket};
use onboarding_domain::{parse_rfc3339, rfc3339};

use super::DynamoInventory;
use super::items::{Item, get_s, s};
use super::keys::{CERTIFICATE_SK, RETIREMENT_SK, certificate_pk, thing_pk};
use crate::error::{classify, is_conditional_failure, won};

fn ticket_item(ticket: &RetirementTicket) -> Item {
    let mut item = Item::from([
        ("pk".to_string(), s(thing_pk(&ticket.thing_name))),
        ("sk".to_string(), s(RETIREMENT_SK)),
        ("thingName".to_string(), s(&ticket.thing_name)),
        ("reason".to_string(), s(&ticket.reason)),
        ("requestedAt".to_string(), s(rfc3339(ticket.requested_at))),
        ("revoke".to_string(), AttributeValue::Bool(ticket.revoke)),
        ("keepThing".to_string(), AttributeValue::Bool(ticket.keep_thing)),
    ]);
    // A string set cannot be empty.
    if !ticket.certificate_ids.is_empty() {
        item.insert(
            "certificateIds".to_string(),
            AttributeValue::Ss(ticket.certificate_ids.iter().cloned().collect()),
        );
    }
    item
}

pub(crate) fn parse_ticket(item: &Item) -> Option<RetirementTicket> {
    let flag = |name: &str| item.get(name).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
    Some(RetirementTicket {
        thing_name: get_s(item, "thingName")?.to_string(),
        reason: get_s(item, "reason").unwrap_or_default().to_string(),
        requested_at: get_s(item, "requestedAt").and_then(parse_rfc3339)?,
        revoke: flag("revoke"),
        keep_thing: flag("keepThing"),
        certificate_ids: item
            .get("certificateIds")
            .and_then(|v| v.as_ss().ok())
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default(),
    })
}

impl RetirementInventory for DynamoInventory {
    async fn retirement(&self, thing_name: &str) -> PortResult<Option<RetirementTicket>> {
        const OP: &str = "GetItem";
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(thing_pk(thing_name)))
            .key("sk", s(RETIREMENT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        match output.item {
            None => Ok(None),
            Some(item) => parse_ticket(&item).map(Some).ok_or_else(|| {
                PortError::new(
                    OP,
                    PortErrorKind::Invalid,
                    format!("the retirement item of thing {thing_name} is unreadable"),
                )
            }),
        }
    }

    async fn claim_retirement(&self, ticket: &RetirementTicket) -> PortResult<bool> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(ticket_item(ticket)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        won("PutItem", result)
    }

    async fn add_retiring_certificates(&self, thing_name: &str, certificate_ids: &BTreeSet<String>) -> PortResult<()> {
        if certificate_ids.is_empty() {
            return Ok(());
        }
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(thing_pk(thing_name)))
            .key("sk", s(RETIREMENT_SK))
            .update_expression("ADD certificateIds :ids")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":ids", AttributeValue::Ss(certificate_ids.iter().cloned().collect()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Err(PortError::new(
                "UpdateItem",
                PortErrorKind::Conflict,
                format!("thing {thing_name} has no retirement under way"),
            )),
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn record_retired(&self, certificate_id: &str, thing_name: &str, reason: &str, now: i64) -> PortResult<()> {
        // One update: idempotent, the first time kept, the record's other
        // fields (CA, credentials key…) kept, out of the expiry index; a
        // certificate without a record gets a bare one. Conditional: never a
        // record of another thing's certificate.
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(certificate_pk(certificate_id)))
            .key("sk", s(CERTIFICATE_SK))
            .update_expression(
                "SET #status = :retired, certificateId = :id, \
                 thingName = if_not_exists(thingName, :thing), \
                 caCertificateId = if_not_exists(caCertificateId, :none), \
                 fingerprint = if_not_exists(fingerprint, :id), \
                 retiredAt = if_not_exists(retiredAt, :now), \
                 retiredReason = if_not_exists(retiredReason, :reason), \
                 reasonDetail = :reason, updatedAt = :now, \
                 createdAt = if_not_exists(createdAt, :now) \
                 REMOVE expiryShard, expiryKey, activatedAt",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":retired", s(RecordStatus::Retired.as_str()))
            .expression_attribute_values(":id", s(certificate_id))
            .expression_attribute_values(":thing", s(thing_name))
            .expression_attribute_values(":none", s(""))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .expression_attribute_values(":reason", s(reason))
            .condition_expression("attribute_not_exists(pk) OR attribute_not_exists(thingName) OR thingName = :thing")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Err(PortError::new(
                "UpdateItem",
                PortErrorKind::Conflict,
                format!("certificate {certificate_id} is recorded for another thing than {thing_name}: not retired"),
            )),
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn finish_retirement(&self, thing_name: &str) -> PortResult<()> {
        self.client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(thing_pk(thing_name)))
            .key("sk", s(RETIREMENT_SK))
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_reads_back_as_written() {
        for ids in [BTreeSet::new(), BTreeSet::from(["a".repeat(64), "b".repeat(64)])] {
            let ticket = RetirementTicket {
                thing_name: "dev-1".into(),
                reason: "site closed".into(),
                requested_at: 1_900_000_000,
                revoke: true,
                keep_thing: false,
                certificate_ids: ids,
            };
            assert_eq!(parse_ticket(&ticket_item(&ticket)), Some(ticket));
        }
    }
}
