//! The inventory's rotation items and expiry scans ([`RotationInventory`]
//! for [`DynamoInventory`]). The IoT calls a rotation makes are in
//! [`crate::iot_jobs`], its credentials objects in [`crate::s3`].
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

use aws_sdk_dynamodb::types::{ConsumedCapacity, KeysAndAttributes, ReturnConsumedCapacity};
use onboarding_domain::rfc3339;
use onboarding_domain::{CertificateRecord, Inventory, PortResult, RecordStatus};
use onboarding_domain::{Page, Rotation, RotationInventory, RotationState};
use serde::{Deserialize, Serialize};

use super::DynamoInventory;
use super::batch::{Retry, UnprocessedRetry};
use super::items::{Item, get_s, key_of, n, parse_record, parse_rotation, rotation_item, s, table_key};
use super::keys::{
    CERTIFICATE_SK, DUE_PREFIX, EXPIRING_PREFIX, EXPIRY_INDEX, EXPIRY_SHARDS, JOB_SK, ROTATION_SK, ROTATOR_PK,
    certificate_pk, job_pk, shard_key,
};
use crate::error::{classify, invalid, won};

/// `BatchGetItem` takes at most 100 keys.
const BATCH_GET_MAX: usize = 100;
/// Unprocessed keys of the scans' `BatchGetItem` are asked again with a
/// growing pause, eight calls in all, then the scan fails (transient).
const SCAN_BATCH_GET: UnprocessedRetry = UnprocessedRetry {
    operation: "BatchGetItem",
    calls: 8,
    pause: |call| Duration::from_millis(25 << call),
};

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

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
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
            let output = self
                .client()
                .query()
                .table_name(self.table())
                .index_name(EXPIRY_INDEX)
                .key_condition_expression("#shard = :shard AND #key < :upper")
                .expression_attribute_names("#shard", "expiryShard")
                .expression_attribute_names("#key", "expiryKey")
                .expression_attribute_values(":shard", s(shard_key(prefix, shard)))
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
            let mut retry = Retry::new(&SCAN_BATCH_GET);
            let mut pending = Some(chunk.to_vec());
            while let Some(keys) = pending.take() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
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
                let unprocessed = output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(self.table()))
                    .map(|k| k.keys)
                    .filter(|keys| !keys.is_empty());
                pending = retry
                    .again(unprocessed, |keys, calls| {
                        format!("{} keys still unprocessed after {calls} rounds", keys.len())
                    })
                    .await?;
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
        won("PutItem", request.send().await)
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
