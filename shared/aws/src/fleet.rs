//! Fleet-wide views of the inventory for operators.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use onboarding_domain::ports::PortResult;
use onboarding_domain::time_fmt::rfc3339;

use crate::dynamodb::{EXPIRY_INDEX, EXPIRY_SHARDS};
use crate::error::classify;

/// Counts over the certificate records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetStatus {
    /// Records by status (`PROVISIONED`, `REJECTED`, `OBSERVED`).
    pub by_status: BTreeMap<String, u64>,
    /// Rejections by reason code.
    pub rejections: BTreeMap<String, u64>,
    /// Provisioned certificates already past notAfter.
    pub expired: u64,
    /// Provisioned certificates expiring within each number of days.
    pub expiring_within: BTreeMap<u32, u64>,
}

/// Builds the fleet status as of `now` (Unix seconds). The status and reason
/// counts read every certificate record (a paginated Scan projecting two
/// attributes: an operator's query, not a hot path); the expiry counts are
/// Queries on the sparse `expiry` index, whose cost grows with the number of
/// certificates expiring.
///
/// # Errors
/// SDK failures, classified.
pub async fn fleet_status(client: &Client, table: &str, now: i64, windows_days: &[u32]) -> PortResult<FleetStatus> {
    let mut status = FleetStatus::default();
    let mut pages = client
        .scan()
        .table_name(table)
        .filter_expression("begins_with(pk, :cert)")
        .expression_attribute_values(":cert", AttributeValue::S("CERT#".into()))
        .projection_expression("#s, reasonCode")
        .expression_attribute_names("#s", "status")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("Scan", e))?;
        for item in page.items() {
            let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            let record_status = get("status").unwrap_or_else(|| "UNKNOWN".into());
            if record_status == "REJECTED" {
                *status
                    .rejections
                    .entry(get("reasonCode").unwrap_or_else(|| "UNKNOWN".into()))
                    .or_default() += 1;
            }
            *status.by_status.entry(record_status).or_default() += 1;
        }
    }
    let now_key = rfc3339(now);
    status.expired = count_expiring(client, table, None, &now_key).await?;
    for days in windows_days {
        let until = rfc3339(now + i64::from(*days) * 86_400);
        let count = count_expiring(client, table, Some(&now_key), &until).await?;
        status.expiring_within.insert(*days, count);
    }
    Ok(status)
}

/// Provisioned certificates whose notAfter is in `[from, until)` (RFC 3339;
/// `from = None` means from the beginning of time), counted shard by shard.
///
/// # Errors
/// SDK failures, classified.
pub async fn count_expiring(client: &Client, table: &str, from: Option<&str>, until: &str) -> PortResult<u64> {
    let mut total = 0u64;
    for shard in 0..EXPIRY_SHARDS {
        let shard_key = format!("EXP#{shard:x}");
        let mut request = client
            .query()
            .table_name(table)
            .index_name(EXPIRY_INDEX)
            .select(Select::Count)
            .expression_attribute_values(":shard", AttributeValue::S(shard_key))
            .expression_attribute_values(":until", AttributeValue::S(until.to_string()));
        request = match from {
            Some(from) => request
                .key_condition_expression("expiryShard = :shard AND expiryKey BETWEEN :from AND :until")
                .expression_attribute_values(":from", AttributeValue::S(from.to_string())),
            None => request.key_condition_expression("expiryShard = :shard AND expiryKey < :until"),
        };
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("Query", e))?;
            total += u64::try_from(page.count()).unwrap_or(0);
        }
    }
    Ok(total)
}
