//! DynamoDB adapter: the inventory table.
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
//! | thing-name claim | `THING#<thingName>` | `CLAIM` | certificateId |
//!
//! Deny-list entries live outside the `CONFIG` partition, one partition each,
//! so that the configuration query never reads them and a lookup is one
//! `BatchGetItem` by key, whatever the deny-list's size. Serials are stored
//! normalised (lowercase hex, whole bytes, no leading zero byte) and
//! fingerprints as 64 lowercase hex digits ([`DenyKey`]).
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

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValuesOnConditionCheckFailure};
use onboarding_domain::DenyKey;
use onboarding_domain::Rejection;
use onboarding_domain::normalize_serial;
use onboarding_domain::{
    CertificateRecord, DeviceProfile, OnboardingConfig, PortError, PortErrorKind, ProfileError, RecordStatus,
    RejectReason,
};
use onboarding_domain::{DenyList, Inventory, NameClaim, PortResult};
use onboarding_domain::{parse_rfc3339, rfc3339};

use crate::error::{classify, is_conditional_failure};

/// Partition of configuration items.
pub const CONFIG_PK: &str = "CONFIG";
/// Name of the expiry index.
pub const EXPIRY_INDEX: &str = "expiry";
/// Number of expiry shards.
pub const EXPIRY_SHARDS: u32 = 16;

pub fn certificate_pk(certificate_id: &str) -> String {
    format!("CERT#{certificate_id}")
}
pub const CERTIFICATE_SK: &str = "CERT";
pub fn thing_pk(thing_name: &str) -> String {
    format!("THING#{thing_name}")
}
pub const CLAIM_SK: &str = "CLAIM";
pub fn profile_sk(name: &str) -> String {
    format!("PROFILE#{name}")
}
pub fn binding_sk(ca_certificate_id: &str) -> String {
    format!("CA#{ca_certificate_id}")
}
/// The sort key of every deny-list entry.
pub const DENY_SK: &str = "DENY";

/// The partition key of a deny-list entry.
pub fn deny_pk(key: &DenyKey) -> String {
    match key {
        DenyKey::Serial {
            ca_certificate_id,
            serial,
        } => format!("DENY#SERIAL#{ca_certificate_id}#{serial}"),
        DenyKey::Fingerprint(fingerprint) => format!("DENY#FINGERPRINT#{fingerprint}"),
    }
}

/// The sort key a deny-list entry had in the earlier layout (`pk = CONFIG`).
/// Still honoured; moved to [`deny_pk`] when the configuration is read.
pub fn legacy_deny_sk(key: &DenyKey) -> String {
    deny_pk(key)
}

/// Reads a deny-list key back from `DENY#SERIAL#<ca>#<serial>` or
/// `DENY#FINGERPRINT#<sha256>` (either layout), normalising what an operator
/// wrote by hand; `None` when unreadable.
pub fn parse_deny_key(text: &str) -> Option<DenyKey> {
    if let Some(rest) = text.strip_prefix("DENY#SERIAL#") {
        let (ca, serial) = rest.split_once('#')?;
        Some(DenyKey::Serial {
            ca_certificate_id: ca.to_string(),
            serial: normalize_serial(serial)?,
        })
    } else {
        let fingerprint = text.strip_prefix("DENY#FINGERPRINT#")?;
        DenyKey::fingerprint(fingerprint).ok()
    }
}
/// The sort key of a workflow's saved cursor.
pub fn cursor_sk(name: &str) -> String {
    format!("CURSOR#{name}")
}

/// `<time>#<certificate id>`: the sort key of the index (an expiry, a due time).
pub fn expiry_key(unix_seconds: i64, certificate_id: &str) -> String {
    format!("{}#{certificate_id}", rfc3339(unix_seconds))
}

/// `EXP#<0-f>`: the shard of a certificate in the expiry index.
pub fn expiry_shard(certificate_id: &str) -> String {
    format!("EXP#{}", certificate_id.chars().next().unwrap_or('0'))
}

/// The inventory table.
#[derive(Debug, Clone)]
pub struct DynamoInventory {
    client: Client,
    table: String,
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
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

    /// Writes a record unless the certificate has one already (`false` then):
    /// the record's fields, its optional ones when present, and `extra`
    /// attributes. A `PROVISIONED` record with a `notAfter` enters the expiry
    /// index, so the rotator covers it.
    pub(crate) async fn put_new_record(&self, record: &CertificateRecord, extra: &[(&str, &str)]) -> PortResult<bool> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(certificate_pk(&record.certificate_id)))
            .item("sk", s(CERTIFICATE_SK))
            .item("certificateId", s(&record.certificate_id))
            .item("caCertificateId", s(&record.ca_certificate_id))
            .item("status", s(record.status.as_str()))
            .item("fingerprint", s(&record.fingerprint))
            .item("createdAt", s(rfc3339(record.updated_at)))
            .item("updatedAt", s(rfc3339(record.updated_at)))
            .condition_expression("attribute_not_exists(pk)");
        for (name, value) in [
            ("certificateStatus", record.certificate_status.clone()),
            ("thingName", record.thing_name.clone()),
            ("reasonDetail", record.detail.clone()),
            ("profile", record.profile.clone()),
            ("serial", record.serial.clone()),
            ("notBefore", record.not_before.map(rfc3339)),
            ("notAfter", record.not_after.map(rfc3339)),
        ] {
            if let Some(value) = value {
                request = request.item(name, s(value));
            }
        }
        // A provisioned record with a known expiry is rotated like the registrar's.
        if let (RecordStatus::Provisioned, Some(not_after)) = (record.status, record.not_after) {
            request = request
                .item("expiryShard", s(expiry_shard(&record.certificate_id)))
                .item("expiryKey", s(expiry_key(not_after, &record.certificate_id)));
        }
        for (name, value) in extra {
            request = request.item(*name, s(*value));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(classify("PutItem", e)),
        }
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
        let mut values: Vec<(&str, Option<AttributeValue>)> = vec![
            ("certificateId", Some(s(&record.certificate_id))),
            ("caCertificateId", Some(s(&record.ca_certificate_id))),
            ("status", Some(s(record.status.as_str()))),
            ("fingerprint", Some(s(&record.fingerprint))),
            ("thingName", record.thing_name.as_ref().map(s)),
            ("profile", record.profile.as_ref().map(s)),
            ("serial", record.serial.as_ref().map(s)),
            ("notBefore", record.not_before.map(|t| s(rfc3339(t)))),
            ("notAfter", record.not_after.map(|t| s(rfc3339(t)))),
            ("reasonCode", record.reason.map(|r| s(r.code()))),
            ("reasonDetail", record.detail.as_ref().map(s)),
            ("certificateStatus", record.certificate_status.as_ref().map(s)),
            (
                "droppedAttributes",
                (!record.dropped_attributes.is_empty())
                    .then(|| AttributeValue::L(record.dropped_attributes.iter().map(s).collect())),
            ),
            ("credentialsKey", record.credentials_key.as_ref().map(s)),
            ("updatedAt", Some(s(rfc3339(record.updated_at)))),
        ];
        let expiry = match (indexed, record.not_after) {
            (true, Some(not_after)) => (
                Some(s(expiry_shard(&record.certificate_id))),
                Some(s(expiry_key(not_after, &record.certificate_id))),
            ),
            _ => (None, None),
        };
        values.push(("expiryShard", expiry.0));
        values.push(("expiryKey", expiry.1));

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

pub(crate) fn parse_record(item: &HashMap<String, AttributeValue>) -> Option<CertificateRecord> {
    Some(CertificateRecord {
        certificate_id: get_s(item, "certificateId")?.to_string(),
        ca_certificate_id: get_s(item, "caCertificateId").unwrap_or_default().to_string(),
        status: RecordStatus::parse(get_s(item, "status")?)?,
        thing_name: get_s(item, "thingName").map(str::to_string),
        profile: get_s(item, "profile").map(str::to_string),
        serial: get_s(item, "serial").map(str::to_string),
        fingerprint: get_s(item, "fingerprint").unwrap_or_default().to_string(),
        not_before: get_s(item, "notBefore").and_then(parse_rfc3339),
        not_after: get_s(item, "notAfter").and_then(parse_rfc3339),
        reason: get_s(item, "reasonCode").and_then(RejectReason::from_code),
        detail: get_s(item, "reasonDetail").map(str::to_string),
        certificate_status: get_s(item, "certificateStatus").map(str::to_string),
        dropped_attributes: item
            .get("droppedAttributes")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        credentials_key: get_s(item, "credentialsKey").map(str::to_string),
        updated_at: get_s(item, "updatedAt").and_then(parse_rfc3339).unwrap_or_default(),
    })
}

/// Every configuration item (`pk = CONFIG`), all pages.
///
/// # Errors
/// SDK failures, classified.
pub async fn config_items(client: &Client, table: &str) -> PortResult<Vec<HashMap<String, AttributeValue>>> {
    let mut items = Vec::new();
    let mut pages = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s(CONFIG_PK))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        items.extend(page.map_err(|e| classify("Query", e))?.items.unwrap_or_default());
    }
    Ok(items)
}

/// Reads one configuration item into the snapshot.
fn add_config_item(config: &mut OnboardingConfig, item: &HashMap<String, AttributeValue>) {
    let Some(sk) = get_s(item, "sk") else { return };
    if let Some(name) = sk.strip_prefix("PROFILE#") {
        let profile = match get_s(item, "profile") {
            Some(json) => DeviceProfile::parse(json).and_then(|p| {
                if p.name == name {
                    Ok(p)
                } else {
                    Err(ProfileError::Field {
                        field: "name".into(),
                        problem: format!("is {:?} but the item key says {name:?}", p.name),
                    })
                }
            }),
            None => Err(ProfileError::Field {
                field: "profile".into(),
                problem: "attribute is missing or not a string".into(),
            }),
        };
        if let Err(e) = &profile {
            tracing::warn!(profile = name, error = %e, "invalid device profile in the inventory table");
        }
        config.add_profile(name.to_string(), profile);
    } else if let Some(ca) = sk.strip_prefix("CA#") {
        config.bind(ca.to_string(), get_s(item, "profile").unwrap_or_default().to_string());
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
            if get_s(&item, "sk").is_some_and(|sk| sk.starts_with("DENY#")) {
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

    async fn record_rejected(&self, record: &CertificateRecord) -> PortResult<()> {
        self.write_record(record, false, None).await
    }

    async fn record_observed(&self, record: &CertificateRecord) -> PortResult<()> {
        // Already recorded (a rejection, an earlier observation): keep it.
        self.put_new_record(record, &[]).await.map(|_| ())
    }

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
            .condition_expression("certificateId = :from")
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":from", s(from))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(classify("UpdateItem", e)),
        }
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
        match output.item.as_ref().and_then(|item| get_s(item, "certificateId")) {
            Some(holder) => Ok(NameClaim::HeldBy(holder.to_string())),
            // Released in between: the retry claims it.
            None => Err(PortError::new(
                "PutItem",
                PortErrorKind::Transient,
                format!("claim on {thing_name} changed during the call"),
            )),
        }
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
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(wanted.keys().map(key_item).collect()))
                .consistent_read(true)
                .projection_expression("pk, sk, reason")
                .build()
                .map_err(|e| crate::error::invalid(OP, e.to_string()))?,
        );
        let mut found: Vec<(DenyKey, Option<String>)> = Vec::new();
        // Unprocessed keys (throttling) are asked again, a bounded number of times.
        for _ in 0..5 {
            let Some(keys) = request.take() else { break };
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
            request = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys().is_empty());
        }
        if request.is_some() {
            return Err(PortError::new(
                OP,
                PortErrorKind::Transient,
                "deny-list keys left unprocessed after 5 attempts",
            ));
        }
        // A denied fingerprint is reported before a denied serial.
        found.sort_by_key(|(key, _)| matches!(key, DenyKey::Serial { .. }));
        Ok(found.first().map(|(key, reason)| key.rejection(reason.as_deref())))
    }
}
