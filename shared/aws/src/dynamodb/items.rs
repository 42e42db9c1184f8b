//! Items ↔ domain values: the attributes each item carries (their keys come
//! from [`super::keys`]) and how they read back.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use onboarding_domain::{
    AllowEntry, CertificateRecord, FailureReason, RecordStatus, RejectReason, Rotation, RotationState, Strategy,
    Supersession,
};
use onboarding_domain::{parse_rfc3339, rfc3339};

use super::keys::{CERTIFICATE_SK, ROTATION_SK, certificate_pk, due_shard, expiry_key, expiry_shard};

/// An item as DynamoDB returns it.
pub type Item = HashMap<String, AttributeValue>;

/// The string attributes of an item, by name (other types left out): an
/// item as an operator reads it.
pub type Attributes = BTreeMap<String, String>;

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_time(item: &Item, name: &str) -> Option<i64> {
    get_s(item, name).and_then(parse_rfc3339)
}

/// The string attributes of `item`.
pub(crate) fn string_attributes(item: &Item) -> Attributes {
    item.iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
        .collect()
}

/// The primary key of an index entry (the index projects the table's keys).
pub(crate) fn table_key(entry: &Item) -> Option<Item> {
    Some(HashMap::from([
        ("pk".to_string(), entry.get("pk")?.clone()),
        ("sk".to_string(), entry.get("sk")?.clone()),
    ]))
}

/// `(pk, sk)` of an item.
pub(crate) fn key_of(item: &Item) -> Option<(String, String)> {
    Some((get_s(item, "pk")?.to_string(), get_s(item, "sk")?.to_string()))
}

// --- certificate records ----------------------------------------------------

/// A new certificate record: the record's fields, its optional ones when
/// present, and `extra` attributes. A `PROVISIONED` record with a `notAfter`
/// enters the expiry index.
pub(crate) fn new_record_item(record: &CertificateRecord, extra: &[(&str, &str)]) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".to_string(), s(certificate_pk(&record.certificate_id))),
        ("sk".to_string(), s(CERTIFICATE_SK)),
        ("certificateId".to_string(), s(&record.certificate_id)),
        ("caCertificateId".to_string(), s(&record.ca_certificate_id)),
        ("status".to_string(), s(record.status.as_str())),
        ("fingerprint".to_string(), s(&record.fingerprint)),
        ("createdAt".to_string(), s(rfc3339(record.updated_at))),
        ("updatedAt".to_string(), s(rfc3339(record.updated_at))),
    ]);
    for (name, value) in [
        ("certificateStatus", record.certificate_status.clone()),
        ("thingName", record.thing_name.clone()),
        ("reasonDetail", record.detail.clone()),
        ("profile", record.profile.clone()),
        ("serial", record.serial.clone()),
        ("issuerCaCertificateId", record.issuer_ca_certificate_id.clone()),
        ("notBefore", record.not_before.map(rfc3339)),
        ("notAfter", record.not_after.map(rfc3339)),
    ] {
        if let Some(value) = value {
            item.insert(name.to_string(), s(value));
        }
    }
    // A provisioned record with a known expiry is rotated like the registrar's.
    if let (RecordStatus::Provisioned, Some(not_after)) = (record.status, record.not_after) {
        item.insert("expiryShard".to_string(), s(expiry_shard(&record.certificate_id)));
        item.insert(
            "expiryKey".to_string(),
            s(expiry_key(not_after, &record.certificate_id)),
        );
    }
    for (name, value) in extra {
        item.insert((*name).to_string(), s(*value));
    }
    item
}

/// Every attribute an update of a record sets (`Some`) or removes (`None`),
/// `createdAt` aside; in the expiry index when `indexed` and the record has
/// a `notAfter`.
pub(crate) fn record_update(record: &CertificateRecord, indexed: bool) -> Vec<(&'static str, Option<AttributeValue>)> {
    let mut values: Vec<(&str, Option<AttributeValue>)> = vec![
        ("certificateId", Some(s(&record.certificate_id))),
        ("caCertificateId", Some(s(&record.ca_certificate_id))),
        ("status", Some(s(record.status.as_str()))),
        ("fingerprint", Some(s(&record.fingerprint))),
        ("thingName", record.thing_name.as_ref().map(s)),
        ("profile", record.profile.as_ref().map(s)),
        ("serial", record.serial.as_ref().map(s)),
        ("issuerCaCertificateId", record.issuer_ca_certificate_id.as_ref().map(s)),
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
    values
}

pub(crate) fn parse_record(item: &Item) -> Option<CertificateRecord> {
    Some(CertificateRecord {
        certificate_id: get_s(item, "certificateId")?.to_string(),
        ca_certificate_id: get_s(item, "caCertificateId").unwrap_or_default().to_string(),
        issuer_ca_certificate_id: get_s(item, "issuerCaCertificateId").map(str::to_string),
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
        activated_at: get_s(item, "activatedAt").and_then(parse_rfc3339),
    })
}

// --- rotations ----------------------------------------------------------------

/// The whole rotation item (a `PutItem` replaces the stored one, so absent
/// fields, `expiryShard` and `expiryKey` included, are removed).
pub(crate) fn rotation_item(r: &Rotation, updated_at: i64) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".to_string(), s(certificate_pk(&r.old_certificate_id))),
        ("sk".to_string(), s(ROTATION_SK)),
        ("oldCertificateId".to_string(), s(&r.old_certificate_id)),
        ("thingName".to_string(), s(&r.thing_name)),
        ("profile".to_string(), s(&r.profile)),
        ("strategy".to_string(), s(r.strategy.as_str())),
        ("attempt".to_string(), n(r.attempt)),
        ("jobId".to_string(), s(&r.job_id)),
        ("state".to_string(), s(r.state.as_str())),
        (
            "objectKeys".to_string(),
            AttributeValue::L(r.object_keys.iter().map(s).collect()),
        ),
        ("oldNotAfter".to_string(), s(rfc3339(r.old_not_after))),
        ("requestedAt".to_string(), s(rfc3339(r.requested_at))),
        ("updatedAt".to_string(), s(rfc3339(updated_at))),
    ]);
    let optional = [
        ("newCertificateId", r.new_certificate_id.clone()),
        ("reasonCode", r.reason.map(|x| x.code().to_string())),
        ("detail", r.detail.clone()),
        ("issuedAt", r.issued_at.map(rfc3339)),
        ("deliveredAt", r.delivered_at.map(rfc3339)),
        ("confirmedAt", r.confirmed_at.map(rfc3339)),
        ("retiredAt", r.retired_at.map(rfc3339)),
        ("failedAt", r.failed_at.map(rfc3339)),
        ("oldDeletedAt", r.old_deleted_at.map(rfc3339)),
        ("dueAt", r.due_at.map(rfc3339)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.to_string(), s(value));
        }
    }
    if let Some(due_at) = r.due_at {
        item.insert("expiryShard".to_string(), s(due_shard(&r.old_certificate_id)));
        item.insert("expiryKey".to_string(), s(expiry_key(due_at, &r.old_certificate_id)));
    }
    item
}

/// A rotation item as read from the table; `None` when it is not one.
pub fn parse_rotation(item: &Item) -> Option<Rotation> {
    Some(Rotation {
        old_certificate_id: get_s(item, "oldCertificateId")?.to_string(),
        thing_name: get_s(item, "thingName")?.to_string(),
        profile: get_s(item, "profile")?.to_string(),
        strategy: Strategy::parse(get_s(item, "strategy")?)?,
        attempt: item.get("attempt")?.as_n().ok()?.parse().ok()?,
        job_id: get_s(item, "jobId")?.to_string(),
        state: RotationState::parse(get_s(item, "state")?)?,
        new_certificate_id: get_s(item, "newCertificateId").map(str::to_string),
        object_keys: item
            .get("objectKeys")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        reason: get_s(item, "reasonCode").and_then(FailureReason::from_code),
        detail: get_s(item, "detail").map(str::to_string),
        old_not_after: get_time(item, "oldNotAfter")?,
        requested_at: get_time(item, "requestedAt")?,
        issued_at: get_time(item, "issuedAt"),
        delivered_at: get_time(item, "deliveredAt"),
        confirmed_at: get_time(item, "confirmedAt"),
        retired_at: get_time(item, "retiredAt"),
        failed_at: get_time(item, "failedAt"),
        old_deleted_at: get_time(item, "oldDeletedAt"),
        due_at: get_time(item, "dueAt"),
    })
}

// --- fleet provisioning ---------------------------------------------------------

pub(crate) fn parse_allow_entry(item: &Item) -> Option<AllowEntry> {
    let mut replaces: Vec<String> = item
        .get("replaces")
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    replaces.sort();
    Some(AllowEntry {
        serial: get_s(item, "serial")?.to_string(),
        profile: get_s(item, "profile").map(str::to_string),
        thing_name: get_s(item, "thingName").map(str::to_string),
        used_by: get_s(item, "usedBy").map(str::to_string),
        replaces,
    })
}

pub(crate) fn parse_supersession(item: &Item) -> Option<Supersession> {
    Some(Supersession {
        old_certificate_id: get_s(item, "oldCertificateId")?.to_string(),
        new_certificate_id: get_s(item, "newCertificateId")?.to_string(),
        thing_name: get_s(item, "thingName")?.to_string(),
        serial: get_s(item, "serial")?.to_string(),
        recorded_at: get_s(item, "recordedAt").and_then(parse_rfc3339).unwrap_or_default(),
    })
}
