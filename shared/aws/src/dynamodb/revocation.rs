//! What an emergency revocation writes ([`RevocationStore`]): the claim on a
//! certificate's record (`status = REVOKED`, conditional), deny-list entries
//! in the layout every lookup reads, and the thing-name claim held for the
//! revoked certificate (`heldFor`), which
//! [`NameClaims::transfer_thing_name`](onboarding_domain::NameClaims::transfer_thing_name)
//! refuses to move.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use onboarding_domain::{
    CertificateRecord, CertificateStatus, DenyKey, NameClaim, PortResult, RevocationStore, rfc3339,
};

use super::DynamoInventory;
use super::items::{get_s, s};
use super::keys::{CERTIFICATE_SK, CLAIM_SK, certificate_pk, thing_pk};
use crate::error::{classify, is_conditional_failure, won};

/// The attribute that marks a thing-name claim held for a revoked
/// certificate (its value: `REVOKED`). A transfer requires it absent.
pub const HELD_FOR: &str = "heldFor";

impl RevocationStore for DynamoInventory {
    async fn claim_revocation(&self, record: &CertificateRecord, reason: &str, now: i64) -> PortResult<bool> {
        // An existing record keeps its fields (only the status, the reason
        // and the times change); a missing one is created from `record`.
        let mut set = vec![
            "#status = :revoked",
            "revocationReason = :reason",
            "reasonDetail = :reason",
            "revokedAt = :now",
            "updatedAt = :now",
            "certificateStatus = :revokedStatus",
            "createdAt = if_not_exists(createdAt, :now)",
            "certificateId = if_not_exists(certificateId, :id)",
            "caCertificateId = if_not_exists(caCertificateId, :ca)",
            "fingerprint = if_not_exists(fingerprint, :fingerprint)",
        ];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(certificate_pk(&record.certificate_id)))
            .key("sk", s(CERTIFICATE_SK))
            .condition_expression("attribute_not_exists(pk) OR #status <> :revoked")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":revoked", s("REVOKED"))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .expression_attribute_values(":revokedStatus", s(CertificateStatus::Revoked.as_str()))
            .expression_attribute_values(":id", s(&record.certificate_id))
            .expression_attribute_values(":ca", s(&record.ca_certificate_id))
            .expression_attribute_values(":fingerprint", s(&record.fingerprint));
        if let Some(thing) = &record.thing_name {
            set.push("thingName = if_not_exists(thingName, :thing)");
            request = request.expression_attribute_values(":thing", s(thing));
        }
        if let Some(serial) = &record.serial {
            set.push("serial = if_not_exists(serial, :serial)");
            request = request.expression_attribute_values(":serial", s(serial));
        }
        // Out of the expiry index: a revoked certificate is never rotated.
        let expression = format!("SET {} REMOVE reasonCode, expiryShard, expiryKey", set.join(", "));
        won("UpdateItem", request.update_expression(expression).send().await)
    }

    async fn deny(&self, key: &DenyKey, reason: &str, now: i64) -> PortResult<()> {
        self.put_deny_entry(key, Some(reason), now).await
    }

    async fn name_holder(&self, thing_name: &str) -> PortResult<Option<String>> {
        self.name_claim_holder(thing_name).await
    }

    async fn hold_thing_name(&self, thing_name: &str, certificate_id: &str, now: i64) -> PortResult<NameClaim> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(thing_pk(thing_name)))
            .key("sk", s(CLAIM_SK))
            .update_expression(
                "SET thingName = :thing, certificateId = :me, #heldFor = :revoked, heldAt = if_not_exists(heldAt, :now)",
            )
            .condition_expression("attribute_not_exists(pk) OR certificateId = :me")
            .expression_attribute_names("#heldFor", HELD_FOR)
            .expression_attribute_values(":thing", s(thing_name))
            .expression_attribute_values(":me", s(certificate_id))
            .expression_attribute_values(":revoked", s("REVOKED"))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(NameClaim::Claimed),
            Err(e) if is_conditional_failure(&e) => {
                let holder = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => c
                        .item()
                        .and_then(|item| get_s(item, "certificateId"))
                        .map(str::to_string),
                    _ => None,
                };
                match holder {
                    Some(holder) => Ok(NameClaim::HeldBy(holder)),
                    // Not returned: read it (a claim never disappears but by a retirement).
                    None => match self.name_holder(thing_name).await? {
                        Some(holder) => Ok(NameClaim::HeldBy(holder)),
                        None => Err(onboarding_domain::PortError::new(
                            "UpdateItem",
                            onboarding_domain::PortErrorKind::Transient,
                            format!("claim on {thing_name} changed during the call"),
                        )),
                    },
                }
            }
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }
}
