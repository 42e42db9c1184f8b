//! The scheduled audit's own items ([`AuditRunStore`] for
//! [`DynamoInventory`]):
//!
//! | item | pk | sk | main attributes |
//! |---|---|---|---|
//! | the run in progress (or the last, `DONE`) | `AUDIT` | `RUN` | `state` (the domain's JSON), `version` (N), updatedAt |
//! | the latest completed run | `AUDIT` | `LATEST` | `runId` (N), `summary` (the domain's JSON), updatedAt |
//! | one finding of a run | `AUDIT#<runId>` | `<check>#<resourceKind>#<resourceId>` | runId (N), check, severity, resourceKind, resourceId, detail, `expiresAt` (N, TTL) |
//!
//! The run item is only ever written on condition of the version read (or
//! of its absence), so two invocations never both advance one step. A run's
//! findings share one partition, read back with `Query` (no scan), and
//! carry `expiresAt` for the table's TTL (the emulator ignores TTL: there
//! old runs' findings stay until deleted by hand; `--last` never reads them,
//! since it reads the partition of the run the `LATEST` item names).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use onboarding_domain::{
    AuditCheck, AuditRunStore, Finding, Page, PortResult, ResourceKind, Severity, StoredAuditRun, rfc3339,
};

use super::DynamoInventory;
use super::batch::UnprocessedRetry;
use super::items::{Item, get_s, n, s};
use super::keys::{AUDIT_LATEST_SK, AUDIT_PK, AUDIT_RUN_SK, audit_finding_sk, audit_findings_pk};
use crate::error::{classify, invalid, won};

/// Unprocessed finding writes are sent again with a growing pause, six calls in all.
const FINDING_WRITES: UnprocessedRetry = UnprocessedRetry {
    operation: "BatchWriteItem",
    calls: 6,
    pause: |call| Duration::from_millis(50 << call.min(5)),
};
/// `BatchWriteItem` takes at most 25 requests.
const BATCH_MAX: usize = 25;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn version_of(item: &Item, operation: &'static str) -> PortResult<u64> {
    match item.get("version") {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| invalid(operation, format!("the audit run item's version {v:?} is not a count"))),
        _ => Err(invalid(operation, "the audit run item has no numeric version")),
    }
}

fn finding_item(run_id: i64, f: &Finding, expires_at: i64) -> Item {
    let mut item = Item::new();
    item.insert("pk".into(), s(audit_findings_pk(run_id)));
    item.insert(
        "sk".into(),
        s(audit_finding_sk(
            f.check.code(),
            f.resource_kind.as_str(),
            &f.resource_id,
        )),
    );
    item.insert("runId".into(), n(run_id));
    item.insert("check".into(), s(f.check.code()));
    item.insert("severity".into(), s(f.severity.as_str()));
    item.insert("resourceKind".into(), s(f.resource_kind.as_str()));
    item.insert("resourceId".into(), s(&f.resource_id));
    item.insert("detail".into(), s(&f.detail));
    item.insert("expiresAt".into(), n(expires_at));
    item
}

/// A stored finding read back; `None` when any attribute is missing or unknown.
fn parse_finding(item: &Item) -> Option<Finding> {
    let check = AuditCheck::from_code(get_s(item, "check")?)?;
    Some(Finding {
        check,
        severity: get_s(item, "severity")?.parse::<Severity>().ok()?,
        resource_kind: ResourceKind::parse(get_s(item, "resourceKind")?)?,
        resource_id: get_s(item, "resourceId")?.to_string(),
        detail: get_s(item, "detail")?.to_string(),
        remedy: check.remedy().to_string(),
    })
}

fn decode_cursor(run_id: i64, cursor: &str) -> PortResult<Item> {
    let sk: String = serde_json::from_str(cursor)
        .map_err(|e| invalid("Query", format!("unreadable findings cursor {cursor:?}: {e}")))?;
    Ok(Item::from([
        ("pk".to_string(), s(audit_findings_pk(run_id))),
        ("sk".to_string(), s(sk)),
    ]))
}

impl DynamoInventory {
    /// The audit's item `AUDIT`/`sk`, read strongly consistent.
    async fn audit_item(&self, sk: &str) -> PortResult<Option<Item>> {
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(AUDIT_PK))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        Ok(output.item)
    }
}

impl AuditRunStore for DynamoInventory {
    async fn audit_run(&self) -> PortResult<Option<StoredAuditRun>> {
        const OP: &str = "GetItem";
        let Some(item) = self.audit_item(AUDIT_RUN_SK).await? else {
            return Ok(None);
        };
        let state = get_s(&item, "state")
            .ok_or_else(|| invalid(OP, "the audit run item has no state"))?
            .to_string();
        Ok(Some(StoredAuditRun {
            state,
            version: version_of(&item, OP)?,
        }))
    }

    async fn save_audit_run(&self, expected: Option<u64>, state: &str) -> PortResult<bool> {
        let next = expected.map_or(1, |v| v.saturating_add(1));
        let request = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(AUDIT_PK))
            .item("sk", s(AUDIT_RUN_SK))
            .item("state", s(state))
            .item("version", n(next))
            .item("updatedAt", s(rfc3339(now())));
        let request = match expected {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(v) => request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(v)),
        };
        won("PutItem", request.send().await)
    }

    async fn put_audit_findings(&self, run_id: i64, findings: &[Finding], expires_at: i64) -> PortResult<()> {
        // One request per key: a batch may not name a key twice.
        let items: BTreeMap<String, Item> = findings
            .iter()
            .map(|f| {
                let item = finding_item(run_id, f, expires_at);
                (get_s(&item, "sk").unwrap_or_default().to_string(), item)
            })
            .collect();
        let requests = items
            .into_values()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| invalid("BatchWriteItem", e.to_string()))
            })
            .collect::<PortResult<Vec<_>>>()?;
        for chunk in requests.chunks(BATCH_MAX) {
            self.batch_write(chunk.to_vec(), &FINDING_WRITES, "finding writes")
                .await?;
        }
        Ok(())
    }

    async fn audit_findings_page(&self, run_id: i64, cursor: Option<&str>, limit: usize) -> PortResult<Page<Finding>> {
        const OP: &str = "Query";
        let start = cursor.map(|c| decode_cursor(run_id, c)).transpose()?;
        let output = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(audit_findings_pk(run_id)))
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit.clamp(1, 1_000)).unwrap_or(1_000))
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        let items = output
            .items()
            .iter()
            .map(|item| {
                parse_finding(item).ok_or_else(|| {
                    invalid(
                        OP,
                        format!(
                            "unreadable audit finding {:?} of run {run_id}",
                            get_s(item, "sk").unwrap_or_default()
                        ),
                    )
                })
            })
            .collect::<PortResult<Vec<_>>>()?;
        let cursor = match output.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(key) => {
                let sk = get_s(&key, "sk").ok_or_else(|| invalid(OP, "LastEvaluatedKey has no sort key"))?;
                Some(serde_json::to_string(sk).map_err(|e| invalid(OP, e.to_string()))?)
            }
            None => None,
        };
        Ok(Page { items, cursor })
    }

    async fn latest_audit(&self) -> PortResult<Option<String>> {
        const OP: &str = "GetItem";
        match self.audit_item(AUDIT_LATEST_SK).await? {
            None => Ok(None),
            Some(item) => Ok(Some(
                get_s(&item, "summary")
                    .ok_or_else(|| invalid(OP, "the latest audit item has no summary"))?
                    .to_string(),
            )),
        }
    }

    async fn save_latest_audit(&self, run_id: i64, summary: &str) -> PortResult<bool> {
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(AUDIT_PK))
            .item("sk", s(AUDIT_LATEST_SK))
            .item("runId", n(run_id))
            .item("summary", s(summary))
            .item("updatedAt", s(rfc3339(now())))
            .condition_expression("attribute_not_exists(pk) OR #runId <= :runId")
            .expression_attribute_names("#runId", "runId")
            .expression_attribute_values(":runId", n(run_id))
            .send()
            .await;
        won("PutItem", result)
    }
}
