//! The inventory as the registrar and the other functions use it
//! ([`Inventory`], [`DenyList`]): certificate records, thing-name claims,
//! deny-list entries, and the workflows' saved cursors.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValuesOnConditionCheckFailure};
use onboarding_domain::DenyKey;
use onboarding_domain::Rejection;
use onboarding_domain::normalize_serial;
use onboarding_domain::rfc3339;
use onboarding_domain::{CertificateRecord, OnboardingConfig, PortError, PortErrorKind};
use onboarding_domain::{DenyList, Inventory, NameClaim, PortResult};

use super::DynamoInventory;
use super::batch::{Retry, UnprocessedRetry};
use super::config::{add_config_item, config_items};
use super::items::{get_s, new_record_item, parse_record, record_update, s};
use super::keys::{
    CERTIFICATE_SK, CLAIM_SK, CONFIG_PK, DENY_SK, certificate_pk, cursor_sk, deny_pk, is_legacy_deny_sk,
    legacy_deny_sk, parse_deny_key, thing_pk,
};
use crate::error::{classify, is_conditional_failure, won};

/// Unprocessed deny-list keys are asked again at once, five calls in all.
const DENY_LOOKUP: UnprocessedRetry = UnprocessedRetry {
    operation: "BatchGetItem",
    calls: 5,
    pause: UnprocessedRetry::no_pause,
};

impl DynamoInventory {
    /// Writes a record unless the certificate has one already (`false` then):
    /// the record's fields, its optional ones when present, and `extra`
    /// attributes. A `PROVISIONED` record with a `notAfter` enters the expiry
    /// index, so the rotator covers it.
    pub(crate) async fn put_new_record(&self, record: &CertificateRecord, extra: &[(&str, &str)]) -> PortResult<bool> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(new_record_item(record, extra)))
            .condition_expression("attribute_not_exists(pk)");
        won("PutItem", request.send().await)
    }

    /// A workflow's saved position between runs (`pk` names the workflow).
    pub(crate) async fn load_cursor(&self, pk: &str, name: &str) -> PortResult<Option<String>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(cursor_sk(name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| get_s(item, "cursor"))
            .map(str::to_string))
    }

    /// Saves a workflow's position, or forgets it (`None`: the pass is done).
    pub(crate) async fn store_cursor(&self, pk: &str, name: &str, cursor: Option<&str>, now: i64) -> PortResult<()> {
        match cursor {
            Some(cursor) => {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(pk))
                    .item("sk", s(cursor_sk(name)))
                    .item("cursor", s(cursor))
                    .item("updatedAt", s(rfc3339(now)))
                    .send()
                    .await
                    .map_err(|e| classify("PutItem", e))?;
            }
            None => {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(pk))
                    .key("sk", s(cursor_sk(name)))
                    .send()
                    .await
                    .map_err(|e| classify("DeleteItem", e))?;
            }
        }
        Ok(())
    }

    /// Writes a record with SET for present fields and REMOVE for absent ones,
    /// keeping the first write's `createdAt`.
    async fn write_record(&self, record: &CertificateRecord, indexed: bool, condition: Option<&str>) -> PortResult<()> {
        let values = record_update(record, indexed);
        let mut set = vec!["#createdAt = if_not_exists(#createdAt, :updatedAt)".to_string()];
        let mut remove = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(certificate_pk(&record.certificate_id)))
            .key("sk", s(CERTIFICATE_SK))
            .expression_attribute_names("#createdAt", "createdAt");
        for (name, value) in values {
            request = request.expression_attribute_names(format!("#{name}"), name);
            match value {
                Some(v) => {
                    set.push(format!("#{name} = :{name}"));
                    request = request.expression_attribute_values(format!(":{name}"), v);
                }
                None => remove.push(format!("#{name}")),
            }
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        request = request.update_expression(expression);
        if let Some(condition) = condition {
            request = request
                .condition_expression(condition)
                .expression_attribute_values(":provisioned", s("PROVISIONED"));
        }
        request.send().await.map_err(|e| classify("UpdateItem", e))?;
        Ok(())
    }
}

impl DynamoInventory {
    /// Writes a deny-list entry (replacing one with the same key).
    ///
    /// # Errors
    /// SDK failures, classified.
    pub async fn put_deny_entry(&self, key: &DenyKey, reason: Option<&str>, now: i64) -> PortResult<()> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(deny_pk(key)))
            .item("sk", s(DENY_SK))
            .item("addedAt", s(rfc3339(now)));
        if let Some(reason) = reason {
            put = put.item("reason", s(reason));
        }
        put.send().await.map_err(|e| classify("PutItem", e))?;
        Ok(())
    }

    /// Removes a deny-list entry (in either layout); true when there was one.
    ///
    /// # Errors
    /// SDK failures, classified.
    pub async fn delete_deny_entry(&self, key: &DenyKey) -> PortResult<bool> {
        let mut removed = false;
        for (pk, sk) in [
            (deny_pk(key), DENY_SK.to_string()),
            (CONFIG_PK.to_string(), legacy_deny_sk(key)),
        ] {
            let out = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                .send()
                .await
                .map_err(|e| classify("DeleteItem", e))?;
            removed |= out.attributes.is_some_and(|a| !a.is_empty());
        }
        Ok(removed)
    }

    /// Moves an entry of the earlier layout (`pk = CONFIG`, `sk = DENY#…`)
    /// to its own partition: the new item first, the old one deleted second.
    /// An entry whose key cannot be read stays (and is reported).
    async fn migrate_legacy_deny_item(&self, item: &HashMap<String, AttributeValue>) -> PortResult<()> {
        let Some(sk) = get_s(item, "sk") else { return Ok(()) };
        let Some(key) = parse_deny_key(sk) else {
            tracing::error!(
                sk,
                "deny-list item with an unreadable key: it denies nothing; fix or delete it"
            );
            return Ok(());
        };
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(deny_pk(&key)))
            .item("sk", s(DENY_SK))
            .item("migratedFrom", s(sk));
        for name in ["reason", "addedAt"] {
            if let Some(value) = get_s(item, name) {
                put = put.item(name, s(value));
            }
        }
        put.send().await.map_err(|e| classify("PutItem", e))?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(CONFIG_PK))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e))?;
        tracing::info!(
            sk,
            pk = deny_pk(&key),
            "deny-list item moved out of the configuration partition"
        );
        Ok(())
    }
}

impl Inventory for DynamoInventory {
    async fn load_config(&self) -> PortResult<OnboardingConfig> {
        let mut config = OnboardingConfig::default();
        for item in config_items(&self.client, &self.table).await? {
            if get_s(&item, "sk").is_some_and(is_legacy_deny_sk) {
                match self.migrate_legacy_deny_item(&item).await {
                    Ok(()) => {}
                    // A function whose role may not write the table leaves
                    // the move to the registrar; the lookup still reads the
                    // old key meanwhile.
                    Err(e) if e.kind == PortErrorKind::AccessDenied => {
                        tracing::warn!(error = %e, "deny-list item of the earlier layout left in place");
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            add_config_item(&mut config, &item);
        }
        Ok(config)
    }

    async fn certificate_record(&self, certificate_id: &str) -> PortResult<Option<CertificateRecord>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(certificate_pk(certificate_id)))
            .key("sk", s(CERTIFICATE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(output.item.as_ref().and_then(parse_record))
    }

    async fn record_provisioned(&self, record: &CertificateRecord) -> PortResult<()> {
        // A certificate never moves to another thing: a provisioned record
        // naming a different thing fails the condition (a provisioned record
        // always names its thing, so `:thingName` is always bound).
        let condition = "attribute_not_exists(pk) OR #status <> :provisioned OR #thingName = :thingName";
        self.write_record(record, true, Some(condition)).await
    }

    async fn record_activated(&self, certificate_id: &str, at: i64) -> PortResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(certificate_pk(certificate_id)))
            .key("sk", s(CERTIFICATE_SK))
            .update_expression("SET #activatedAt = :at")
            .condition_expression("#status = :provisioned")
            .expression_attribute_names("#activatedAt", "activatedAt")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":at", s(rfc3339(at)))
            .expression_attribute_values(":provisioned", s("PROVISIONED"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // No record, or not (or no longer) provisioned: nothing to mark.
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(classify("UpdateItem", e)),
        }
    }

    async fn record_rejected(&self, record: &CertificateRecord) -> PortResult<()> {
        self.write_record(record, false, None).await
    }

    async fn record_observed(&self, record: &CertificateRecord) -> PortResult<()> {
        // Already recorded (a rejection, an earlier observation): keep it.
        self.put_new_record(record, &[]).await.map(|_| ())
    }
}

impl onboarding_domain::NameClaims for DynamoInventory {
    async fn claim_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<NameClaim> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(thing_pk(thing_name)))
            .item("sk", s(CLAIM_SK))
            .item("thingName", s(thing_name))
            .item("certificateId", s(certificate_id))
            .condition_expression("attribute_not_exists(pk) OR certificateId = :me")
            .expression_attribute_values(":me", s(certificate_id))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(NameClaim::Claimed),
            Err(e) if is_conditional_failure(&e) => {
                let holder = match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => c
                        .item()
                        .and_then(|item| get_s(item, "certificateId"))
                        .map(str::to_string),
                    _ => None,
                };
                match holder {
                    Some(holder) => Ok(NameClaim::HeldBy(holder)),
                    None => self.claim_holder(thing_name).await,
                }
            }
            Err(e) => Err(classify("PutItem", e)),
        }
    }

    async fn transfer_thing_name(&self, thing_name: &str, from: &str, to: &str) -> PortResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(thing_pk(thing_name)))
            .key("sk", s(CLAIM_SK))
            .update_expression("SET certificateId = :to")
            // A name held for a revoked device stays with it until retired.
            .condition_expression("certificateId = :from AND attribute_not_exists(heldFor)")
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":from", s(from))
            .send()
            .await;
        won("UpdateItem", result)
    }

    async fn release_thing_name(&self, thing_name: &str, certificate_id: &str) -> PortResult<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(thing_pk(thing_name)))
            .key("sk", s(CLAIM_SK))
            .condition_expression("certificateId = :me")
            .expression_attribute_values(":me", s(certificate_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(classify("DeleteItem", e)),
        }
    }
}

impl DynamoInventory {
    /// The current holder of a name claim, read consistently (fallback when the
    /// condition failure did not return the old item).
    async fn claim_holder(&self, thing_name: &str) -> PortResult<NameClaim> {
        match self.name_claim_holder(thing_name).await? {
            Some(holder) => Ok(NameClaim::HeldBy(holder)),
            // Released in between: the retry claims it.
            None => Err(PortError::new(
                "PutItem",
                PortErrorKind::Transient,
                format!("claim on {thing_name} changed during the call"),
            )),
        }
    }

    /// The certificate holding `thing_name`'s claim now (a consistent read).
    pub(crate) async fn name_claim_holder(&self, thing_name: &str) -> PortResult<Option<String>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(thing_pk(thing_name)))
            .key("sk", s(CLAIM_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| get_s(item, "certificateId"))
            .map(str::to_string))
    }
}

impl DenyList for DynamoInventory {
    async fn denial(&self, ca_certificate_id: &str, serial: &str, fingerprint: &str) -> PortResult<Option<Rejection>> {
        const OP: &str = "BatchGetItem";
        let mut keys = vec![DenyKey::Fingerprint(fingerprint.to_lowercase())];
        if let Some(serial) = normalize_serial(serial) {
            keys.push(DenyKey::Serial {
                ca_certificate_id: ca_certificate_id.to_string(),
                serial,
            });
        }
        // Each key in both layouts: (pk, sk) → the entry it stands for.
        let mut wanted: HashMap<(String, String), DenyKey> = HashMap::new();
        for key in keys {
            wanted.insert((deny_pk(&key), DENY_SK.to_string()), key.clone());
            wanted.insert((CONFIG_PK.to_string(), legacy_deny_sk(&key)), key);
        }
        let key_item =
            |(pk, sk): &(String, String)| HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))]);
        let request = KeysAndAttributes::builder()
            .set_keys(Some(wanted.keys().map(key_item).collect()))
            .consistent_read(true)
            .projection_expression("pk, sk, reason")
            .build()
            .map_err(|e| crate::error::invalid(OP, e.to_string()))?;
        let mut found: Vec<(DenyKey, Option<String>)> = Vec::new();
        // Unprocessed keys (throttling) are asked again, a bounded number of times.
        let mut retry = Retry::new(&DENY_LOOKUP);
        let mut pending = Some(request);
        while let Some(keys) = pending.take() {
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(|e| classify(OP, e))?;
            for item in output
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default()
            {
                let id = (
                    get_s(&item, "pk").unwrap_or_default().to_string(),
                    get_s(&item, "sk").unwrap_or_default().to_string(),
                );
                if let Some(key) = wanted.get(&id) {
                    found.push((key.clone(), get_s(&item, "reason").map(str::to_string)));
                }
            }
            let unprocessed = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys().is_empty());
            pending = retry
                .again(unprocessed, |_, calls| {
                    format!("deny-list keys left unprocessed after {calls} attempts")
                })
                .await?;
        }
        // A denied fingerprint is reported before a denied serial.
        found.sort_by_key(|(key, _)| matches!(key, DenyKey::Serial { .. }));
        Ok(found.first().map(|(key, reason)| key.rejection(reason.as_deref())))
    }
}
