//! Rotation adapters: the inventory's rotation items and expiry scans
//! (DynamoDB, [`RotationInventory`] for [`DynamoInventory`]), the IoT calls a
//! rotation makes ([`RotationIotAdapter`]: control plane, Jobs and the data
//! plane), and the credentials objects of server-keygen rotations
//! ([`S3RotationObjects`]).
//!
//! Items this module adds to the inventory table (see [`crate::dynamodb`]):
//!
//! | item | pk | sk | main attributes |
//! |---|---|---|---|
//! | rotation | `CERT#<oldCertificateId>` | `ROTATION` | state, attempt, jobId, strategy, thingName, profile, newCertificateId, objectKeys, reasonCode, detail, oldNotAfter, requestedAt … oldDeletedAt, dueAt, updatedAt |
//! | job pointer | `JOB#<jobId>` | `JOB` | oldCertificateId |
//! | rotator cursor | `ROTATOR` | `CURSOR#<name>` | cursor |
//!
//! A rotation with a `dueAt` is in the sparse `expiry` index too, under
//! `expiryShard` = `DUE#<first hex digit of the old certificate id>` and
//! `expiryKey` = `<dueAt RFC 3339>#<oldCertificateId>`; without one it is not.
//! Certificate records are there under `EXP#<digit>` (written by the
//! registrar's path).
//!
//! # Scans and what they cost
//!
//! [`RotationInventory::expiring`] and [`RotationInventory::due_rotations`]
//! Query the 16 shards of one prefix in turn (`0` to `f`), each oldest first
//! (order is per shard, not global; bounds inclusive: notAfter ≤ until,
//! dueAt ≤ now), and fetch the items behind the index
//! entries with `BatchGetItem` (the index projects keys only; entries that
//! already carry their attributes are used as they are). The cursor is JSON
//! naming the prefix, the shard and DynamoDB's `LastEvaluatedKey` in it. A
//! page may hold fewer than `limit` items (entries whose item changed since
//! the index saw it are dropped); only a `None` cursor means the scan is done.
//!
//! Every call asks for `ReturnConsumedCapacity: TOTAL`. A benchmark reads the
//! cost in either of two ways:
//! - per call: [`DynamoInventory::expiring_with_stats`] and
//!   [`DynamoInventory::due_rotations_with_stats`] return the page with its
//!   [`ScanStats`];
//! - cumulatively, when the scans run through the port (inside a function):
//!   [`scan_totals`] sums every scan of the process, [`take_scan_totals`]
//!   returns the sum and starts again from zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity, KeysAndAttributes, ReturnConsumedCapacity};
use aws_sdk_iot::types::{JobStatus, PresignedUrlConfig, TargetSelection, TimeoutConfig};
use onboarding_domain::{CertificateRecord, PortError, PortErrorKind, RecordStatus};
use onboarding_domain::{
    CertificateRegistry, CertificateStatus, Inventory, PortResult, RegisteredCertificate, ThingRegistry,
};
use onboarding_domain::{
    FailureReason, IssuedCertificate, JobDocument, JobExecution, Page, Rotation, RotationInventory, RotationIot,
    RotationObjects, RotationState, Strategy,
};
use onboarding_domain::{parse_rfc3339, rfc3339};
use serde::{Deserialize, Serialize};

use crate::dynamodb::{
    CERTIFICATE_SK, DynamoInventory, EXPIRY_INDEX, EXPIRY_SHARDS, certificate_pk, expiry_key, get_s, parse_record, s,
};
use crate::error::{classify, incomplete, invalid, is_conditional_failure, is_not_found, service_code};
use crate::iot::IotAdapter;

/// Sort key of a rotation item (its partition is the old certificate's).
pub const ROTATION_SK: &str = "ROTATION";
/// Sort key of a job pointer.
pub const JOB_SK: &str = "JOB";
/// Partition of the rotator's runtime state (never `CONFIG`, which the
/// registrar loads whole).
pub const ROTATOR_PK: &str = "ROTATOR";
/// Shard prefix of provisioned certificates in the expiry index.
pub const EXPIRING_PREFIX: &str = "EXP";
/// Shard prefix of due rotations in the expiry index.
pub const DUE_PREFIX: &str = "DUE";
/// Lifetime of the URLs AWS IoT presigns for server-keygen credentials (its maximum).
pub const PRESIGNED_URL_SECONDS: i64 = 3_600;

const SHARD_DIGITS: &[u8; 16] = b"0123456789abcdef";
/// `BatchGetItem` takes at most 100 keys.
const BATCH_GET_MAX: usize = 100;
/// Rounds of `UnprocessedKeys` before a scan gives up (transient).
const BATCH_GET_ROUNDS: u32 = 8;

/// `JOB#<jobId>`: the partition of a job pointer.
pub fn job_pk(job_id: &str) -> String {
    format!("JOB#{job_id}")
}

/// `DUE#<0-f>`: the shard of a rotation in the expiry index.
pub fn due_shard(old_certificate_id: &str) -> String {
    format!("{DUE_PREFIX}#{}", old_certificate_id.chars().next().unwrap_or('0'))
}

// --- scan statistics --------------------------------------------------------

/// What one scan (or the sum of several) read and consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScanStats {
    /// `Query` calls on the expiry index.
    pub queries: u64,
    /// Index entries the queries read (DynamoDB's `ScannedCount`).
    pub index_items: u64,
    /// `BatchGetItem` calls that fetched the items behind the entries.
    pub batch_gets: u64,
    /// Items the `BatchGetItem` calls returned.
    pub items_fetched: u64,
    /// Capacity units consumed by all those calls (`ReturnConsumedCapacity: TOTAL`).
    pub capacity_units: f64,
}

impl ScanStats {
    const ZERO: Self = Self {
        queries: 0,
        index_items: 0,
        batch_gets: 0,
        items_fetched: 0,
        capacity_units: 0.0,
    };

    /// Index entries plus fetched items.
    pub fn items_read(&self) -> u64 {
        self.index_items + self.items_fetched
    }

    fn add(&mut self, other: &Self) {
        self.queries += other.queries;
        self.index_items += other.index_items;
        self.batch_gets += other.batch_gets;
        self.items_fetched += other.items_fetched;
        self.capacity_units += other.capacity_units;
    }

    fn consumed(&mut self, capacity: Option<&ConsumedCapacity>) {
        self.capacity_units += capacity.and_then(ConsumedCapacity::capacity_units).unwrap_or_default();
    }
}

static TOTALS: Mutex<ScanStats> = Mutex::new(ScanStats::ZERO);

/// The sum of every scan this process made through [`DynamoInventory`] since
/// it started or since the last [`take_scan_totals`].
pub fn scan_totals() -> ScanStats {
    *TOTALS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Returns [`scan_totals`] and resets them to zero.
pub fn take_scan_totals() -> ScanStats {
    std::mem::take(&mut *TOTALS.lock().unwrap_or_else(PoisonError::into_inner))
}

fn add_to_totals(stats: &ScanStats) {
    TOTALS.lock().unwrap_or_else(PoisonError::into_inner).add(stats);
}

// --- cursors ----------------------------------------------------------------

/// Where a scan stands: the next shard to read and the position in it.
#[derive(Debug, Serialize, Deserialize)]
struct ScanCursor {
    prefix: String,
    shard: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<BTreeMap<String, String>>,
}

type Item = HashMap<String, AttributeValue>;

fn decode_cursor(prefix: &str, cursor: Option<&str>) -> PortResult<(u32, Option<Item>)> {
    let Some(cursor) = cursor else { return Ok((0, None)) };
    let bad = |why: String| invalid("Query", format!("unreadable scan cursor {cursor:?}: {why}"));
    let parsed: ScanCursor = serde_json::from_str(cursor).map_err(|e| bad(e.to_string()))?;
    if parsed.prefix != prefix {
        return Err(bad(format!("it belongs to the {} scan", parsed.prefix)));
    }
    if parsed.shard >= EXPIRY_SHARDS {
        return Err(bad("no such shard".into()));
    }
    let after = parsed
        .after
        .map(|key| key.into_iter().map(|(k, v)| (k, s(v))).collect());
    Ok((parsed.shard, after))
}

fn encode_cursor(prefix: &str, shard: u32, after: Option<&Item>) -> PortResult<String> {
    let after = match after {
        Some(key) => Some(
            key.iter()
                .map(|(k, v)| match v.as_s() {
                    Ok(v) => Ok((k.clone(), v.clone())),
                    Err(_) => Err(invalid(
                        "Query",
                        format!("LastEvaluatedKey attribute {k} is not a string"),
                    )),
                })
                .collect::<PortResult<BTreeMap<_, _>>>()?,
        ),
        None => None,
    };
    let cursor = ScanCursor {
        prefix: prefix.to_string(),
        shard,
        after,
    };
    serde_json::to_string(&cursor).map_err(|e| invalid("Query", e.to_string()))
}

// --- rotation items ---------------------------------------------------------

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_time(item: &Item, name: &str) -> Option<i64> {
    get_s(item, name).and_then(parse_rfc3339)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The whole rotation item (a `PutItem` replaces the stored one, so absent
/// fields, `expiryShard` and `expiryKey` included, are removed).
fn rotation_item(r: &Rotation, updated_at: i64) -> Item {
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

/// The primary key of an index entry (the index projects the table's keys).
fn table_key(entry: &Item) -> Option<Item> {
    Some(HashMap::from([
        ("pk".to_string(), entry.get("pk")?.clone()),
        ("sk".to_string(), entry.get("sk")?.clone()),
    ]))
}

fn key_of(item: &Item) -> Option<(String, String)> {
    Some((get_s(item, "pk")?.to_string(), get_s(item, "sk")?.to_string()))
}

impl DynamoInventory {
    /// [`RotationInventory::expiring`] with what the scan read and consumed.
    ///
    /// # Errors
    /// SDK failures, classified; `Invalid` for a cursor this scan did not make.
    pub async fn expiring_with_stats(
        &self,
        until: i64,
        cursor: Option<&str>,
        limit: usize,
    ) -> PortResult<(Page<CertificateRecord>, ScanStats)> {
        // `~` sorts after `#`: certificates expiring at `until` itself are included.
        let upper = format!("{}~", rfc3339(until));
        self.scan_index(
            EXPIRING_PREFIX,
            upper,
            cursor,
            limit,
            parse_record,
            |r: &CertificateRecord| r.status == RecordStatus::Provisioned && r.not_after.is_some_and(|t| t <= until),
        )
        .await
    }

    /// [`RotationInventory::due_rotations`] with what the scan read and consumed.
    ///
    /// # Errors
    /// SDK failures, classified; `Invalid` for a cursor this scan did not make.
    pub async fn due_rotations_with_stats(
        &self,
        now: i64,
        cursor: Option<&str>,
        limit: usize,
    ) -> PortResult<(Page<Rotation>, ScanStats)> {
        let upper = format!("{}~", rfc3339(now));
        self.scan_index(DUE_PREFIX, upper, cursor, limit, parse_rotation, |r: &Rotation| {
            r.due_at.is_some_and(|t| t <= now)
        })
        .await
    }

    /// Reads up to `limit` index entries of `<prefix>#<digit>` shards with
    /// `expiryKey < upper`, from the cursor on, and the items behind them.
    async fn scan_index<T>(
        &self,
        prefix: &'static str,
        upper: String,
        cursor: Option<&str>,
        limit: usize,
        parse: fn(&Item) -> Option<T>,
        keep: impl Fn(&T) -> bool,
    ) -> PortResult<(Page<T>, ScanStats)> {
        let (mut shard, mut after) = decode_cursor(prefix, cursor)?;
        let limit = limit.max(1);
        let mut stats = ScanStats::default();
        let mut items = Vec::new();
        let mut read = 0usize;
        let result = loop {
            if shard >= EXPIRY_SHARDS {
                break Ok(None);
            }
            let digit = char::from(SHARD_DIGITS[shard as usize]);
            let output = self
                .client()
                .query()
                .table_name(self.table())
                .index_name(EXPIRY_INDEX)
                .key_condition_expression("#shard = :shard AND #key < :upper")
                .expression_attribute_names("#shard", "expiryShard")
                .expression_attribute_names("#key", "expiryKey")
                .expression_attribute_values(":shard", s(format!("{prefix}#{digit}")))
                .expression_attribute_values(":upper", s(upper.as_str()))
                .set_exclusive_start_key(after.take())
                .limit(i32::try_from(limit - read).unwrap_or(i32::MAX))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            let output = match output {
                Ok(output) => output,
                Err(e) => break Err(classify("Query", e)),
            };
            stats.queries += 1;
            stats.index_items += u64::try_from(output.scanned_count).unwrap_or_default();
            stats.consumed(output.consumed_capacity.as_ref());
            let entries = output.items.unwrap_or_default();
            read += entries.len();
            match self.resolve(entries, parse, &mut stats).await {
                Ok(found) => items.extend(found.into_iter().filter(|item| keep(item))),
                Err(e) => break Err(e),
            }
            match output.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(key) if read >= limit => break encode_cursor(prefix, shard, Some(&key)).map(Some),
                Some(key) => after = Some(key),
                None => {
                    shard += 1;
                    if read >= limit && shard < EXPIRY_SHARDS {
                        break encode_cursor(prefix, shard, None).map(Some);
                    }
                }
            }
        };
        add_to_totals(&stats);
        Ok((Page { items, cursor: result? }, stats))
    }

    /// Parses index entries, fetching those that do not carry their
    /// attributes (a keys-only index), in the entries' order.
    async fn resolve<T>(
        &self,
        entries: Vec<Item>,
        parse: fn(&Item) -> Option<T>,
        stats: &mut ScanStats,
    ) -> PortResult<Vec<T>> {
        let mut parsed: Vec<Result<T, Item>> = Vec::with_capacity(entries.len());
        let mut missing = Vec::new();
        for entry in entries {
            match parse(&entry) {
                Some(value) => parsed.push(Ok(value)),
                None => {
                    if let Some(key) = table_key(&entry) {
                        missing.push(key);
                    }
                    parsed.push(Err(entry));
                }
            }
        }
        let mut fetched = if missing.is_empty() {
            HashMap::new()
        } else {
            self.batch_get(missing, stats).await?
        };
        Ok(parsed
            .into_iter()
            .filter_map(|p| match p {
                Ok(value) => Some(value),
                Err(entry) => {
                    let item = key_of(&entry).and_then(|key| fetched.remove(&key))?;
                    let value = parse(&item);
                    if value.is_none() {
                        tracing::warn!(
                            pk = get_s(&item, "pk"),
                            sk = get_s(&item, "sk"),
                            "unreadable item in the expiry index is skipped"
                        );
                    }
                    value
                }
            })
            .collect())
    }

    /// `BatchGetItem` of table keys, retrying unprocessed keys with backoff.
    async fn batch_get(&self, keys: Vec<Item>, stats: &mut ScanStats) -> PortResult<HashMap<(String, String), Item>> {
        const OP: &str = "BatchGetItem";
        let mut found = HashMap::new();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = chunk.to_vec();
            let mut round = 0;
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .build()
                    .map_err(|e| invalid(OP, e.to_string()))?;
                let output = self
                    .client()
                    .batch_get_item()
                    .request_items(self.table(), request)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(|e| classify(OP, e))?;
                stats.batch_gets += 1;
                for capacity in output.consumed_capacity.as_deref().unwrap_or_default() {
                    stats.consumed(Some(capacity));
                }
                let items = output
                    .responses
                    .and_then(|mut r| r.remove(self.table()))
                    .unwrap_or_default();
                stats.items_fetched += items.len() as u64;
                for item in items {
                    if let Some(key) = key_of(&item) {
                        found.insert(key, item);
                    }
                }
                pending = output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(self.table()))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
                    round += 1;
                    if round >= BATCH_GET_ROUNDS {
                        return Err(PortError::new(
                            OP,
                            PortErrorKind::Transient,
                            format!("{} keys still unprocessed after {round} rounds", pending.len()),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(25 << round)).await;
                }
            }
        }
        Ok(found)
    }

    /// Writes the job pointer (idempotent: a job id names one rotation attempt).
    async fn put_job_pointer(&self, job_id: &str, old_certificate_id: &str) -> PortResult<()> {
        self.client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(job_pk(job_id)))
            .item("sk", s(JOB_SK))
            .item("jobId", s(job_id))
            .item("oldCertificateId", s(old_certificate_id))
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }
}

impl RotationInventory for DynamoInventory {
    async fn expiring(&self, until: i64, cursor: Option<&str>, limit: usize) -> PortResult<Page<CertificateRecord>> {
        Ok(self.expiring_with_stats(until, cursor, limit).await?.0)
    }

    async fn due_rotations(&self, now: i64, cursor: Option<&str>, limit: usize) -> PortResult<Page<Rotation>> {
        Ok(self.due_rotations_with_stats(now, cursor, limit).await?.0)
    }

    async fn rotation(&self, old_certificate_id: &str) -> PortResult<Option<Rotation>> {
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(certificate_pk(old_certificate_id)))
            .key("sk", s(ROTATION_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        match output.item {
            None => Ok(None),
            Some(item) => parse_rotation(&item).map(Some).ok_or_else(|| {
                invalid(
                    "GetItem",
                    format!("the rotation item of {old_certificate_id} is unreadable"),
                )
            }),
        }
    }

    /// The rotation whose current attempt is this job; `None` for an unknown
    /// job and for a job of an earlier attempt.
    async fn rotation_by_job(&self, job_id: &str) -> PortResult<Option<Rotation>> {
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(job_pk(job_id)))
            .key("sk", s(JOB_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", e))?;
        let Some(old) = output.item.as_ref().and_then(|item| get_s(item, "oldCertificateId")) else {
            return Ok(None);
        };
        Ok(self.rotation(old).await?.filter(|r| r.job_id == job_id))
    }

    async fn put_rotation(&self, rotation: &Rotation, expected: Option<(RotationState, u32)>) -> PortResult<bool> {
        // The job id is a function of the old certificate and the attempt:
        // the pointer is written when a rotation or an attempt starts, before
        // the rotation, so that it exists whenever a stored rotation names the job.
        let new_attempt = expected.is_none_or(|(_, attempt)| attempt != rotation.attempt);
        if new_attempt {
            self.put_job_pointer(&rotation.job_id, &rotation.old_certificate_id)
                .await?;
        }
        let mut request = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(rotation_item(rotation, now())));
        request = match expected {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some((state, attempt)) => request
                .condition_expression("#state = :state AND #attempt = :attempt")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#attempt", "attempt")
                .expression_attribute_values(":state", s(state.as_str()))
                .expression_attribute_values(":attempt", n(attempt)),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(classify("PutItem", e)),
        }
    }

    /// Writes the record through [`Inventory::record_provisioned`] (status
    /// `PROVISIONED`, indexed under `EXP#`). The record must name its thing
    /// and carry its notAfter.
    async fn record_rotated_in(&self, record: &CertificateRecord) -> PortResult<()> {
        if record.thing_name.is_none() || record.not_after.is_none() {
            return Err(invalid(
                "UpdateItem",
                format!(
                    "the rotated-in record of {} needs its thing name and notAfter",
                    record.certificate_id
                ),
            ));
        }
        let mut record = record.clone();
        record.status = RecordStatus::Provisioned;
        self.record_provisioned(&record).await
    }

    async fn record_rotated_out(&self, old_certificate_id: &str, new_certificate_id: &str, now: i64) -> PortResult<()> {
        self.client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(certificate_pk(old_certificate_id)))
            .key("sk", s(CERTIFICATE_SK))
            .update_expression(
                "SET #status = :rotated, #rotatedTo = :new, #updatedAt = :now, \
                 #certificateId = if_not_exists(#certificateId, :id), #createdAt = if_not_exists(#createdAt, :now) \
                 REMOVE #expiryShard, #expiryKey",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#rotatedTo", "rotatedTo")
            .expression_attribute_names("#updatedAt", "updatedAt")
            .expression_attribute_names("#certificateId", "certificateId")
            .expression_attribute_names("#createdAt", "createdAt")
            .expression_attribute_names("#expiryShard", "expiryShard")
            .expression_attribute_names("#expiryKey", "expiryKey")
            .expression_attribute_values(":rotated", s(RecordStatus::Rotated.as_str()))
            .expression_attribute_values(":new", s(new_certificate_id))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .expression_attribute_values(":id", s(old_certificate_id))
            .send()
            .await
            .map_err(|e| classify("UpdateItem", e))?;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> PortResult<Option<String>> {
        self.load_cursor(ROTATOR_PK, name).await
    }

    async fn save_cursor(&self, name: &str, cursor: Option<&str>) -> PortResult<()> {
        self.store_cursor(ROTATOR_PK, name, cursor, now()).await
    }
}

// --- IoT --------------------------------------------------------------------

/// AWS IoT as rotation uses it: certificates, things and policies (control
/// plane), Jobs, and publishing to devices (data plane).
///
/// Publishing needs the account's own `iot:Data-ATS` endpoint: build the
/// data-plane client with [`crate::iot_data_client`] (the issuer does; the
/// rotator and the completer never publish).
#[derive(Debug, Clone)]
pub struct RotationIotAdapter {
    certificates: IotAdapter,
    iot: aws_sdk_iot::Client,
    data: aws_sdk_iotdataplane::Client,
    presign_role_arn: Option<String>,
}

impl RotationIotAdapter {
    /// `presign_role_arn` is the role AWS IoT assumes to presign the
    /// server-keygen credentials URLs (`presignedUrlConfig`); without it,
    /// server-keygen jobs are refused.
    pub fn new(iot: aws_sdk_iot::Client, data: aws_sdk_iotdataplane::Client, presign_role_arn: Option<String>) -> Self {
        Self {
            certificates: IotAdapter::new(iot.clone()),
            iot,
            data,
            presign_role_arn,
        }
    }
}

impl RotationIot for RotationIotAdapter {
    async fn create_job(
        &self,
        job_id: &str,
        thing_name: &str,
        document: &JobDocument,
        timeout_minutes: u32,
    ) -> PortResult<()> {
        const OP: &str = "CreateJob";
        let presigned = match (document.strategy, &self.presign_role_arn) {
            (Strategy::Csr, _) => None,
            (Strategy::ServerKeygen, Some(role)) => Some(
                PresignedUrlConfig::builder()
                    .role_arn(role)
                    .expires_in_sec(PRESIGNED_URL_SECONDS)
                    .build(),
            ),
            (Strategy::ServerKeygen, None) => {
                return Err(invalid(
                    OP,
                    "a server-keygen job needs a presign role (presignedUrlConfig), and none is configured",
                ));
            }
        };
        let body = serde_json::to_string(document).map_err(|e| invalid(OP, format!("job document: {e}")))?;
        let thing_arn = match self.iot.describe_thing().thing_name(thing_name).send().await {
            Ok(output) => output
                .thing_arn
                .ok_or_else(|| incomplete("DescribeThing", "thingArn"))?,
            Err(e) if is_not_found(&e) => {
                return Err(PortError::new(
                    "DescribeThing",
                    PortErrorKind::MissingResource,
                    format!("thing {thing_name} does not exist"),
                ));
            }
            Err(e) => return Err(classify("DescribeThing", e)),
        };
        let result = self
            .iot
            .create_job()
            .job_id(job_id)
            .targets(thing_arn)
            .target_selection(TargetSelection::Snapshot)
            .document(body)
            .description("certificate rotation")
            .timeout_config(
                TimeoutConfig::builder()
                    .in_progress_timeout_in_minutes(i64::from(timeout_minutes))
                    .build(),
            )
            .set_presigned_url_config(presigned)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The same attempt's job, created by an earlier try.
            Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => Ok(()),
            Err(e) => Err(classify(OP, e)),
        }
    }

    async fn job_execution(&self, job_id: &str, thing_name: &str) -> PortResult<Option<JobExecution>> {
        let output = match self
            .iot
            .describe_job_execution()
            .job_id(job_id)
            .thing_name(thing_name)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(classify("DescribeJobExecution", e)),
        };
        let seconds = |t: Option<&aws_sdk_iot::primitives::DateTime>| t.map(aws_sdk_iot::primitives::DateTime::secs);
        Ok(output.execution.map(|execution| JobExecution {
            status: execution
                .status
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            queued_at: seconds(execution.queued_at.as_ref()),
            started_at: seconds(execution.started_at.as_ref()),
            last_updated_at: seconds(execution.last_updated_at.as_ref()),
            status_details: execution
                .status_details
                .and_then(|d| d.details_map)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }))
    }

    async fn cancel_job(&self, job_id: &str) -> PortResult<()> {
        let result = self
            .iot
            .cancel_job()
            .job_id(job_id)
            .force(true)
            .comment("certificate rotation given up")
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => classify("CancelJob", e),
        };
        if !matches!(error.kind, PortErrorKind::Invalid | PortErrorKind::Conflict) {
            return Err(error);
        }
        // A job that has already ended cannot be canceled; the error code for
        // that is not specific, so ask for the job's status.
        match self.iot.describe_job().job_id(job_id).send().await {
            Ok(output) => match output.job.and_then(|j| j.status) {
                Some(JobStatus::Canceled | JobStatus::Completed | JobStatus::DeletionInProgress) => Ok(()),
                _ => Err(error),
            },
            Err(e) if is_not_found(&e) => Ok(()),
            Err(_) => Err(error),
        }
    }

    async fn certificate_from_csr(&self, csr_pem: &str) -> PortResult<IssuedCertificate> {
        const OP: &str = "CreateCertificateFromCsr";
        let output = self
            .iot
            .create_certificate_from_csr()
            .certificate_signing_request(csr_pem)
            .set_as_active(false)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(IssuedCertificate {
            certificate_id: output.certificate_id.ok_or_else(|| incomplete(OP, "certificateId"))?,
            certificate_arn: output.certificate_arn.ok_or_else(|| incomplete(OP, "certificateArn"))?,
            certificate_pem: output.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
            private_key_pem: None,
        })
    }

    async fn keys_and_certificate(&self) -> PortResult<IssuedCertificate> {
        const OP: &str = "CreateKeysAndCertificate";
        let output = self
            .iot
            .create_keys_and_certificate()
            .set_as_active(false)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(IssuedCertificate {
            certificate_id: output.certificate_id.ok_or_else(|| incomplete(OP, "certificateId"))?,
            certificate_arn: output.certificate_arn.ok_or_else(|| incomplete(OP, "certificateArn"))?,
            certificate_pem: output.certificate_pem.ok_or_else(|| incomplete(OP, "certificatePem"))?,
            private_key_pem: Some(
                output
                    .key_pair
                    .and_then(|k| k.private_key)
                    .ok_or_else(|| incomplete(OP, "keyPair.privateKey"))?,
            ),
        })
    }

    async fn certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
        self.certificates.describe_certificate(certificate_id).await
    }

    async fn set_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        self.certificates.set_certificate_status(certificate_id, status).await
    }

    async fn thing_principals(&self, thing_name: &str) -> PortResult<Vec<String>> {
        let mut arns = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .iot
                .list_thing_principals()
                .thing_name(thing_name)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| classify("ListThingPrincipals", e))?;
            arns.extend(page.principals.unwrap_or_default());
            next = page.next_token.filter(|t| !t.is_empty());
            if next.is_none() {
                return Ok(arns);
            }
        }
    }

    async fn attach_to_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        self.certificates
            .attach_certificate_exclusively(thing_name, certificate_arn)
            .await
    }

    async fn detach_from_thing(&self, thing_name: &str, certificate_arn: &str) -> PortResult<()> {
        match self
            .iot
            .detach_thing_principal()
            .thing_name(thing_name)
            .principal(certificate_arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("DetachThingPrincipal", e)),
        }
    }

    async fn policies(&self, certificate_arn: &str) -> PortResult<Vec<String>> {
        let mut names = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iot
                .list_attached_policies()
                .target(certificate_arn)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| classify("ListAttachedPolicies", e))?;
            names.extend(
                page.policies
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.policy_name),
            );
            marker = page.next_marker.filter(|m| !m.is_empty());
            if marker.is_none() {
                return Ok(names);
            }
        }
    }

    async fn attach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        ThingRegistry::attach_policy(&self.certificates, policy_name, certificate_arn).await
    }

    async fn detach_policy(&self, policy_name: &str, certificate_arn: &str) -> PortResult<()> {
        match self
            .iot
            .detach_policy()
            .policy_name(policy_name)
            .target(certificate_arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("DetachPolicy", e)),
        }
    }

    async fn delete_certificate(&self, certificate_id: &str) -> PortResult<()> {
        match self
            .iot
            .delete_certificate()
            .certificate_id(certificate_id)
            .force_delete(false)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify("DeleteCertificate", e)),
        }
    }

    async fn publish(&self, topic: &str, payload: &[u8]) -> PortResult<()> {
        self.data
            .publish()
            .topic(topic)
            .qos(1)
            .payload(aws_smithy_types::Blob::new(payload.to_vec()))
            .send()
            .await
            .map_err(|e| classify("Publish", e))?;
        Ok(())
    }
}

// --- S3 ---------------------------------------------------------------------

/// The credentials objects of server-keygen rotations, in the credentials
/// bucket: each put requests SSE-KMS with the configured key explicitly and an
/// S3 Bucket Key, as [`crate::S3CredentialsStore`] does.
#[derive(Debug, Clone)]
pub struct S3RotationObjects {
    client: aws_sdk_s3::Client,
    bucket: String,
    kms_key_id: String,
}

impl S3RotationObjects {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, kms_key_id: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            kms_key_id: kms_key_id.into(),
        }
    }
}

impl RotationObjects for S3RotationObjects {
    async fn put_object(&self, key: &str, body: &[u8]) -> PortResult<()> {
        crate::s3::put_sse_kms(
            &self.client,
            &self.bucket,
            key,
            &self.kms_key_id,
            body.to_vec(),
            "application/x-pem-file",
        )
        .await
    }

    /// The bucket is versioned: a plain delete would only hide a private key
    /// behind a delete marker. Every version of the key (and any marker) is
    /// deleted for good.
    async fn delete_object(&self, key: &str) -> PortResult<()> {
        let versions = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| classify("ListObjectVersions", e))?;
        let mut ids: Vec<Option<String>> = versions
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .map(|v| v.version_id().map(str::to_string))
            .chain(
                versions
                    .delete_markers()
                    .iter()
                    .filter(|m| m.key() == Some(key))
                    .map(|m| m.version_id().map(str::to_string)),
            )
            .collect();
        if ids.is_empty() {
            // An unversioned bucket, or nothing listed: delete by key.
            ids.push(None);
        }
        for version in ids {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if matches!(service_code(&e), Some("NoSuchKey" | "NotFound" | "NoSuchVersion")) => {}
                Err(e) => return Err(classify("DeleteObject", e)),
            }
        }
        Ok(())
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }
}
