//! What the rotation run reads, as the inventory grows and the number of
//! expiring certificates stays fixed.
//!
//! For each inventory size N: a fresh emulator world (the inventory table with
//! its sparse `expiry` index), N provisioned certificate records bulk-loaded,
//! of which `--expiring` expire in 10 to 20 days and the others 300 days or
//! more ahead; then
//! - the expiry scan alone: `DynamoInventory::expiring_with_stats(now + 30
//!   days)` paged to the end, its `ScanStats` summed;
//! - a whole `Rotator::run(now)`, built as the `cert-rotator` Lambda builds it
//!   (`build_rotator`), with the world's profile given a 30-day rotation
//!   window; its scans counted by `take_scan_totals()` (reset before it), and every
//!   request it makes counted by a recording proxy (no added latency). The
//!   certificates do not exist in IoT, so the rotator skips them as inactive
//!   after the per-candidate lookups: what is measured is the reading.
//!
//! Records are loaded with `BatchWriteItem` (25 items a request, several in
//! flight) of items built exactly as `Inventory::record_provisioned` writes
//! them: before each load, a probe record is written through
//! `record_provisioned` and its stored item compared with the hand-built one,
//! and after the load a sample is read back through `certificate_record` and
//! the scan must find exactly the expiring ids. `--loader record` loads
//! through `record_provisioned` itself instead (slower, for comparison).
//!
//! The expiring certificates come first from a seeded generator, so every
//! size has the same expiring ids and dates (and so the same per-shard
//! layout, which decides the number of Queries).
//!
//! The capacity units are the emulator's (`ReturnConsumedCapacity: TOTAL`);
//! the "DynamoDB rules" column recomputes them from the item sizes (0.5 RCU
//! per 4 KB read, eventually consistent; strongly consistent `GetItem` 1 RCU).
//!
//! `cargo run --release -p onboarding-bench --bin rotation-scan -- --sizes 10000,100000 --expiring 100`

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use cert_rotator::FromEnv;
use futures::{StreamExt, TryStreamExt};
use onboarding_aws::{CERTIFICATE_SK, certificate_pk, expiry_key, expiry_shard};
use onboarding_aws::{DynamoInventory, ScanStats, take_scan_totals};
use onboarding_bench::{Args, BenchError, BenchResult, Table, f, ms, operation_name};
use onboarding_domain::Inventory;
use onboarding_domain::RunReport;
use onboarding_domain::rfc3339;
use onboarding_domain::{CertificateRecord, RecordStatus};
use onboarding_test_support::emulator::sdk_config_for;
use onboarding_test_support::proxy::Proxy;
use onboarding_test_support::world::{self, BUCKET, PROFILE, TABLE, World};
use serde_json::{Value, json};

const USAGE: &str = "rotation-scan: what the rotation run reads, by inventory size

usage: rotation-scan [--sizes N,N,...] [--expiring K] [--loader batch|record] [--concurrency C]
                     [--page-size P] [--seed S] [--json]

  --sizes N,...     inventory sizes, one fresh emulator each (default 10000,100000)
  --expiring K      certificates expiring in 10 to 20 days, in every size (default 100)
  --loader L        batch: BatchWriteItem, 25 items a request (default);
                    record: Inventory::record_provisioned, one UpdateItem each
  --concurrency C   requests in flight while loading (default 8)
  --page-size P     limit per expiring_with_stats page in the scan alone (default 50, as the rotator)
  --seed S          seed of the ids and dates (default 1)
  --json            one JSON document on stdout instead of the tables";

const DAY: i64 = 86_400;
/// The rotation window the profile is given, and the scan's horizon.
const WINDOW_DAYS: i64 = 30;
/// `BatchWriteItem` takes at most 25 requests.
const BATCH_WRITE_MAX: usize = 25;
/// Rounds of `UnprocessedItems` before the load gives up.
const BATCH_WRITE_ROUNDS: u32 = 8;
/// DynamoDB's read unit.
const READ_UNIT_BYTES: u64 = 4_096;
/// Per-entry storage overhead DynamoDB adds to index entries; counted here to
/// stay on the safe side when checking that a Query reads under 4 KB.
const INDEX_ENTRY_OVERHEAD: u64 = 100;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
    Batch,
    Record,
}

impl Loader {
    fn label(self) -> &'static str {
        match self {
            Self::Batch => "BatchWriteItem",
            Self::Record => "record_provisioned",
        }
    }
}

struct Options {
    sizes: Vec<usize>,
    expiring: usize,
    loader: Loader,
    concurrency: usize,
    page_size: usize,
    seed: u64,
    json: bool,
}

fn options() -> BenchResult<Options> {
    // `--json` is a flag; the shared parser wants a value for every option.
    let mut json = false;
    let rest: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| {
            let flag = a == "--json";
            json |= flag;
            !flag
        })
        .collect();
    let args = Args::parse_from(
        rest,
        USAGE,
        &["sizes", "expiring", "loader", "concurrency", "page-size", "seed"],
    )?;
    let sizes = match args.text("sizes") {
        None => vec![10_000, 100_000],
        Some(text) => text
            .split(',')
            .map(|s| s.trim().replace('_', "").parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("--sizes: {text:?} is not a list of numbers"))?,
    };
    let expiring: usize = args.number("expiring", 100)?;
    if let Some(small) = sizes.iter().find(|&&n| n < expiring) {
        return Err(format!("--sizes: {small} is smaller than --expiring {expiring}").into());
    }
    let loader = match args.text("loader").unwrap_or("batch") {
        "batch" => Loader::Batch,
        "record" => Loader::Record,
        other => return Err(format!("--loader: {other:?} is neither batch nor record").into()),
    };
    let concurrency: usize = args.number("concurrency", 8)?;
    let page_size: usize = args.number("page-size", 50)?;
    if concurrency == 0 || page_size == 0 {
        return Err("--concurrency and --page-size must be positive".into());
    }
    Ok(Options {
        sizes,
        expiring,
        loader,
        concurrency,
        page_size,
        seed: args.number("seed", 1)?,
        json,
    })
}

// --- records ------------------------------------------------------------------

/// SplitMix64: a small seeded generator, enough for ids and dates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn hex(&mut self, words: usize) -> String {
        (0..words).map(|_| format!("{:016x}", self.next())).collect()
    }

    /// Uniform enough in `[low, low + span)`.
    fn between(&mut self, low: i64, span: i64) -> i64 {
        low + (self.next() % span.max(1) as u64) as i64
    }
}

/// `size` provisioned records: the first `expiring` expire in 10 to 20 days,
/// the others in 300 to 700 days.
fn records(size: usize, expiring: usize, seed: u64, ca_id: &str, now: i64) -> Vec<CertificateRecord> {
    let mut rng = Rng(seed);
    (0..size)
        .map(|i| {
            let certificate_id = rng.hex(4);
            let not_after = if i < expiring {
                rng.between(now + 10 * DAY, 10 * DAY)
            } else {
                rng.between(now + 300 * DAY, 400 * DAY)
            };
            let thing_name = format!("rot-{i:06}");
            CertificateRecord {
                ca_certificate_id: ca_id.to_string(),
                issuer_ca_certificate_id: None,
                status: RecordStatus::Provisioned,
                profile: Some(PROFILE.to_string()),
                serial: Some(rng.hex(1)),
                fingerprint: certificate_id.clone(),
                not_before: Some(not_after - 365 * DAY),
                not_after: Some(not_after),
                reason: None,
                detail: None,
                certificate_status: Some("ACTIVE".to_string()),
                dropped_attributes: Vec::new(),
                credentials_key: Some(format!("credentials/{thing_name}/{certificate_id}.json")),
                thing_name: Some(thing_name),
                certificate_id,
                updated_at: now,
                activated_at: None,
            }
        })
        .collect()
}

/// The item `Inventory::record_provisioned` stores for a new record (checked
/// against the adapter by [`check_item_format`]).
fn provisioned_item(r: &CertificateRecord) -> Item {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let updated_at = rfc3339(r.updated_at);
    let mut item: Item = [
        ("pk", s(&certificate_pk(&r.certificate_id))),
        ("sk", s(CERTIFICATE_SK)),
        ("certificateId", s(&r.certificate_id)),
        ("caCertificateId", s(&r.ca_certificate_id)),
        ("status", s(r.status.as_str())),
        ("fingerprint", s(&r.fingerprint)),
        ("updatedAt", s(&updated_at)),
        ("createdAt", s(&updated_at)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let optional = [
        ("thingName", r.thing_name.clone()),
        ("profile", r.profile.clone()),
        ("serial", r.serial.clone()),
        ("notBefore", r.not_before.map(rfc3339)),
        ("notAfter", r.not_after.map(rfc3339)),
        ("reasonCode", r.reason.map(|x| x.code().to_string())),
        ("reasonDetail", r.detail.clone()),
        ("certificateStatus", r.certificate_status.clone()),
        ("credentialsKey", r.credentials_key.clone()),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.to_string(), AttributeValue::S(value));
        }
    }
    if !r.dropped_attributes.is_empty() {
        item.insert(
            "droppedAttributes".to_string(),
            AttributeValue::L(r.dropped_attributes.iter().map(|d| s(d)).collect()),
        );
    }
    if let Some(not_after) = r.not_after {
        item.insert("expiryShard".to_string(), s(&expiry_shard(&r.certificate_id)));
        item.insert("expiryKey".to_string(), s(&expiry_key(not_after, &r.certificate_id)));
    }
    item
}

/// Writes a probe record through `record_provisioned`, compares the stored
/// item with [`provisioned_item`], and deletes it.
async fn check_item_format(world: &World, inventory: &DynamoInventory, now: i64) -> BenchResult {
    let mut probe = records(1, 1, 0x5eed, &world.ca_id, now).remove(0);
    probe.dropped_attributes = vec!["model".to_string()];
    inventory.record_provisioned(&probe).await?;
    let stored = world
        .inventory_record(&probe.certificate_id)
        .await?
        .ok_or("the probe record was not stored")?;
    let built = provisioned_item(&probe);
    world
        .dynamodb
        .delete_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(certificate_pk(&probe.certificate_id)))
        .key("sk", AttributeValue::S(CERTIFICATE_SK.to_string()))
        .send()
        .await
        .map_err(|e| format!("DeleteItem: {}", DisplayErrorContext(&e)))?;
    if stored != built {
        let names: BTreeSet<&String> = stored.keys().chain(built.keys()).collect();
        let differ: Vec<&str> = names
            .into_iter()
            .filter(|k| stored.get(*k) != built.get(*k))
            .map(String::as_str)
            .collect();
        return Err(format!(
            "hand-built items differ from what record_provisioned stores, in: {}",
            differ.join(", ")
        )
        .into());
    }
    Ok(())
}

/// One `BatchWriteItem` of up to 25 items, retrying unprocessed ones.
async fn batch_write(client: &aws_sdk_dynamodb::Client, items: Vec<Item>) -> BenchResult {
    let mut pending = items
        .into_iter()
        .map(|item| {
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map(|put| WriteRequest::builder().put_request(put).build())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut round = 0;
    while !pending.is_empty() {
        let output = client
            .batch_write_item()
            .request_items(TABLE, pending)
            .send()
            .await
            .map_err(|e| format!("BatchWriteItem: {}", DisplayErrorContext(&e)))?;
        pending = output
            .unprocessed_items
            .and_then(|mut u| u.remove(TABLE))
            .unwrap_or_default();
        if !pending.is_empty() {
            round += 1;
            if round >= BATCH_WRITE_ROUNDS {
                return Err(format!("{} items still unprocessed after {round} rounds", pending.len()).into());
            }
            tokio::time::sleep(Duration::from_millis(25 << round)).await;
        }
    }
    Ok(())
}

async fn load(
    world: &World,
    inventory: &DynamoInventory,
    records: &[CertificateRecord],
    options: &Options,
) -> BenchResult<Duration> {
    let started = Instant::now();
    match options.loader {
        Loader::Batch => {
            futures::stream::iter(records.chunks(BATCH_WRITE_MAX))
                .map(|chunk| batch_write(&world.dynamodb, chunk.iter().map(provisioned_item).collect()))
                .buffer_unordered(options.concurrency)
                .try_collect::<Vec<()>>()
                .await?;
        }
        Loader::Record => {
            futures::stream::iter(records)
                .map(|record| inventory.record_provisioned(record))
                .buffer_unordered(options.concurrency)
                .try_collect::<Vec<()>>()
                .await?;
        }
    }
    Ok(started.elapsed())
}

async fn item_count(world: &World) -> BenchResult<i64> {
    let output = world
        .dynamodb
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .map_err(|e| format!("DescribeTable: {}", DisplayErrorContext(&e)))?;
    Ok(output.table.and_then(|t| t.item_count).unwrap_or_default())
}

/// A sample of the loaded records, read back through the adapter.
async fn check_sample(inventory: &DynamoInventory, records: &[CertificateRecord], expiring: usize) -> BenchResult {
    let picks = [
        0,
        expiring / 2,
        expiring.saturating_sub(1),
        expiring,
        records.len() / 2,
        records.len().saturating_sub(1),
    ];
    for &i in &picks {
        let Some(expected) = records.get(i) else { continue };
        let read = inventory.certificate_record(&expected.certificate_id).await?;
        if read.as_ref() != Some(expected) {
            return Err(format!(
                "record {} reads back as {read:?}, expected {expected:?}",
                expected.certificate_id
            )
            .into());
        }
    }
    Ok(())
}

// --- sizes ----------------------------------------------------------------------

/// DynamoDB's size of an item: attribute names plus values (strings as UTF-8).
fn item_bytes(item: &Item) -> u64 {
    fn value(v: &AttributeValue) -> u64 {
        match v {
            AttributeValue::S(s) => s.len() as u64,
            AttributeValue::N(n) => (n.len() as u64).div_ceil(2) + 1,
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<u64>(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() as u64 + value(v)).sum()
}

/// The index entry of an item (the `expiry` index projects keys only).
fn index_entry_bytes(item: &Item) -> u64 {
    let keys: Item = ["pk", "sk", "expiryShard", "expiryKey"]
        .into_iter()
        .filter_map(|k| item.get(k).map(|v| (k.to_string(), v.clone())))
        .collect();
    item_bytes(&keys)
}

fn read_units(bytes: u64) -> u64 {
    bytes.div_ceil(READ_UNIT_BYTES).max(1)
}

// --- measurement ------------------------------------------------------------------

fn plus(a: &ScanStats, b: &ScanStats) -> ScanStats {
    ScanStats {
        queries: a.queries + b.queries,
        index_items: a.index_items + b.index_items,
        batch_gets: a.batch_gets + b.batch_gets,
        items_fetched: a.items_fetched + b.items_fetched,
        capacity_units: a.capacity_units + b.capacity_units,
    }
}

/// Capacity of scans by DynamoDB's rules: each Query at least one 4 KB read
/// unit (exact while no Query reads more than 4 KB of entries, which
/// [`Measured::queries_under_4kb`] tells), each fetched item its own 4 KB
/// units; eventually consistent, so half a unit each.
fn dynamodb_scan_rcu(stats: &ScanStats, item_bytes: u64) -> f64 {
    0.5 * stats.queries as f64 + 0.5 * (read_units(item_bytes) * stats.items_fetched) as f64
}

struct Measured {
    size: usize,
    expiring: usize,
    loader: Loader,
    concurrency: usize,
    load: Duration,
    table_items: i64,
    /// Expiring certificates in the fullest shard.
    max_per_shard: usize,
    item_bytes: u64,
    entry_bytes: u64,
    scan: ScanStats,
    scan_pages: u32,
    scan_time: Duration,
    run: RunReport,
    run_scans: ScanStats,
    run_time: Duration,
    /// Requests the run made, by operation.
    run_requests: BTreeMap<String, usize>,
}

impl Measured {
    /// Whether every Query reads under 4 KB of index entries (then the
    /// DynamoDB-rules figures are exact, not lower bounds).
    fn queries_under_4kb(&self) -> bool {
        self.max_per_shard as u64 * (self.entry_bytes + INDEX_ENTRY_OVERHEAD) <= READ_UNIT_BYTES
    }

    fn requests(&self, prefix: &str) -> usize {
        self.run_requests
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// The run's reads by DynamoDB's rules: its scans, plus its `GetItem`s
    /// (strongly consistent, items under 4 KB: 1 RCU each, found or not) and
    /// the configuration Query (eventually consistent, under 4 KB: 0.5).
    fn run_rcu(&self) -> f64 {
        dynamodb_scan_rcu(&self.run_scans, self.item_bytes)
            + self.requests("GetItem") as f64
            + 0.5 * self.requests("Query(CONFIG)") as f64
    }

    fn skipped(&self) -> u32 {
        let r = &self.run;
        r.skipped_open + r.skipped_not_due + r.skipped_no_profile + r.skipped_inactive
    }

    fn json(&self) -> Value {
        let stats = |s: &ScanStats| {
            json!({
                "queries": s.queries,
                "indexItems": s.index_items,
                "batchGets": s.batch_gets,
                "itemsFetched": s.items_fetched,
                "itemsRead": s.items_read(),
                "capacityUnits": s.capacity_units,
                "dynamodbRulesRcu": dynamodb_scan_rcu(s, self.item_bytes),
            })
        };
        json!({
            "inventory": self.size,
            "expiring": self.expiring,
            "tableItems": self.table_items,
            "load": {
                "loader": self.loader.label(),
                "concurrency": self.concurrency,
                "seconds": self.load.as_secs_f64(),
                "recordsPerSecond": self.size as f64 / self.load.as_secs_f64(),
            },
            "itemBytes": self.item_bytes,
            "indexEntryBytes": self.entry_bytes,
            "maxExpiringPerShard": self.max_per_shard,
            "queriesUnder4KB": self.queries_under_4kb(),
            "scan": {
                "pages": self.scan_pages,
                "ms": ms(self.scan_time),
                "stats": stats(&self.scan),
            },
            "run": {
                "ms": ms(self.run_time),
                "examined": self.run.examined,
                "started": self.run.started,
                "skippedOpen": self.run.skipped_open,
                "skippedNotDue": self.run.skipped_not_due,
                "skippedNoProfile": self.run.skipped_no_profile,
                "skippedInactive": self.run.skipped_inactive,
                "followedUp": self.run.followed_up,
                "errors": self.run.errors,
                "budgetExhausted": self.run.budget_exhausted,
                "interrupted": self.run.interrupted,
                "scans": stats(&self.run_scans),
                "dynamodbRulesRcu": self.run_rcu(),
                "requests": self.run_requests,
            },
        })
    }
}

async fn measure(size: usize, options: &Options) -> BenchResult<Measured> {
    let log = |what: String| {
        eprintln!("rotation-scan [{size}]: {what}");
    };
    log("starting the emulator and the world…".into());
    let world = World::new().await?;
    let mut profile = world::default_profile();
    profile["rotation"] = json!({ "windowDays": WINDOW_DAYS });
    world.put_profile(&profile).await?;
    let inventory = DynamoInventory::new(world.dynamodb.clone(), TABLE);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;

    if options.loader == Loader::Batch {
        check_item_format(&world, &inventory, now).await?;
    }
    let records = records(size, options.expiring, options.seed, &world.ca_id, now);
    let before = item_count(&world).await?;
    log(format!(
        "loading {size} records ({}, {} in flight)…",
        options.loader.label(),
        options.concurrency
    ));
    let load_time = load(&world, &inventory, &records, options).await?;
    let table_items = item_count(&world).await? - before;
    log(format!(
        "loaded in {:.1} s ({:.0} records/s); {table_items} new items in the table",
        load_time.as_secs_f64(),
        size as f64 / load_time.as_secs_f64()
    ));
    if table_items != size as i64 {
        return Err(format!("{table_items} items were added to the table, not {size}").into());
    }
    check_sample(&inventory, &records, options.expiring).await?;
    let expiring = &records[..options.expiring];
    let mut per_shard: HashMap<String, usize> = HashMap::new();
    for r in expiring {
        *per_shard.entry(expiry_shard(&r.certificate_id)).or_default() += 1;
    }
    let sample = match expiring.first() {
        Some(r) => provisioned_item(r),
        None => Item::new(),
    };

    // (a) The expiry scan alone.
    let until = now + WINDOW_DAYS * DAY;
    let mut scan = ScanStats::default();
    let mut found = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let started = Instant::now();
    loop {
        let (page, stats) = inventory
            .expiring_with_stats(until, cursor.as_deref(), options.page_size)
            .await?;
        pages += 1;
        scan = plus(&scan, &stats);
        found.extend(page.items.into_iter().map(|r| r.certificate_id));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let scan_time = started.elapsed();
    let wanted: BTreeSet<String> = expiring.iter().map(|r| r.certificate_id.clone()).collect();
    if found != wanted {
        return Err(format!(
            "the scan found {} certificates, {} of them expiring ones; expected the {} expiring",
            found.len(),
            found.intersection(&wanted).count(),
            wanted.len()
        )
        .into());
    }
    log(format!("scan: {} pages, {:.1} ms", pages, ms(scan_time)));

    // (b) A whole rotator run, as the Lambda builds it, through a recording proxy.
    let proxy = Proxy::start(world.emulator.gateway_port, Duration::ZERO).await?;
    let env: HashMap<&str, String> = HashMap::from([
        ("INVENTORY_TABLE", TABLE.to_string()),
        ("CREDENTIALS_BUCKET", BUCKET.to_string()),
        ("CREDENTIALS_KMS_KEY_ID", world.kms_key_arn.clone()),
        ("S3_FORCE_PATH_STYLE", "true".to_string()),
    ]);
    let settings = cert_rotator::Settings::from_lookup(|k| env.get(k).cloned())?;
    let handler = cert_rotator::build(&settings, &sdk_config_for(&proxy.endpoint()).await);
    let rotator = handler.rotator();
    // The run's scans alone: what came before is dropped.
    take_scan_totals();
    let started = Instant::now();
    let run = rotator.run(now).await?;
    let run_time = started.elapsed();
    let run_scans = take_scan_totals();
    let mut run_requests = BTreeMap::new();
    for request in proxy.requests() {
        *run_requests.entry(operation_name(&request)).or_insert(0) += 1;
    }
    log(format!("run: {:.1} ms, {run:?}", ms(run_time)));

    Ok(Measured {
        size,
        expiring: options.expiring,
        loader: options.loader,
        concurrency: options.concurrency,
        load: load_time,
        table_items,
        max_per_shard: per_shard.values().copied().max().unwrap_or_default(),
        item_bytes: item_bytes(&sample),
        entry_bytes: index_entry_bytes(&sample),
        scan,
        scan_pages: pages,
        scan_time,
        run,
        run_scans,
        run_time,
        run_requests,
    })
}

// --- output -----------------------------------------------------------------------

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_tables(results: &[Measured], options: &Options) {
    println!();
    println!("## rotation-scan");
    println!();
    println!(
        "{} build; the expiry scan alone = expiring_with_stats(now + {WINDOW_DAYS} days), pages of {}; \
         the run = cert_rotator::build(…).rotator().run(now), profile window {WINDOW_DAYS} days. \
         Capacity units as the emulator reports them (ReturnConsumedCapacity TOTAL); \
         RCU by DynamoDB's rules recomputed from the item sizes.",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        options.page_size
    );
    println!();
    let mut table = Table::new(&[
        ">inventory",
        ">expiring",
        ">index items read",
        ">items fetched",
        ">queries",
        ">batch gets",
        ">capacity units",
        ">RCU, DynamoDB rules",
        ">run: examined",
        ">started",
        ">skipped",
        ">run: scan capacity units",
        ">run: RCU, DynamoDB rules",
        ">load s",
        ">scan ms",
        ">run ms",
    ]);
    for m in results {
        let bound = if m.queries_under_4kb() { "" } else { "≥ " };
        table.row(vec![
            thousands(m.size),
            m.expiring.to_string(),
            m.scan.index_items.to_string(),
            m.scan.items_fetched.to_string(),
            m.scan.queries.to_string(),
            m.scan.batch_gets.to_string(),
            f(m.scan.capacity_units, 1),
            format!("{bound}{}", f(dynamodb_scan_rcu(&m.scan, m.item_bytes), 1)),
            m.run.examined.to_string(),
            m.run.started.to_string(),
            m.skipped().to_string(),
            f(m.run_scans.capacity_units, 1),
            format!("{bound}{}", f(m.run_rcu(), 1)),
            f(m.load.as_secs_f64(), 1),
            f(ms(m.scan_time), 1),
            f(ms(m.run_time), 1),
        ]);
    }
    println!("{}", table.render());
    println!();

    println!("### The run's scans (scan_totals) and requests, by operation");
    println!();
    let mut headers = vec!["".to_string()];
    headers.extend(results.iter().map(|m| format!(">{}", thousands(m.size))));
    let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new(&refs);
    let mut row = |label: &str, cell: &dyn Fn(&Measured) -> String| {
        let mut cells = vec![label.to_string()];
        cells.extend(results.iter().map(cell));
        table.row(cells);
    };
    row("scans: queries (DUE# and EXP# shards)", &|m| {
        m.run_scans.queries.to_string()
    });
    row("scans: index items read", &|m| m.run_scans.index_items.to_string());
    row("scans: batch gets / items fetched", &|m| {
        format!("{} / {}", m.run_scans.batch_gets, m.run_scans.items_fetched)
    });
    row("scans: capacity units (emulator)", &|m| {
        f(m.run_scans.capacity_units, 1)
    });
    row("skipped inactive / errors", &|m| {
        format!("{} / {}", m.run.skipped_inactive, m.run.errors)
    });
    let operations: BTreeSet<&String> = results.iter().flat_map(|m| m.run_requests.keys()).collect();
    for op in operations {
        row(&format!("requests: {op}"), &|m| {
            m.run_requests.get(op).copied().unwrap_or_default().to_string()
        });
    }
    println!("{}", table.render());
    println!();

    if let Some(m) = results.first() {
        println!(
            "Item sizes (DynamoDB's rules): a certificate record {} bytes, its keys-only index entry {} bytes; \
             at most {} expiring certificates share a shard, so {}.",
            m.item_bytes,
            m.entry_bytes,
            m.max_per_shard,
            if m.queries_under_4kb() {
                "no Query reads 4 KB of entries and the RCU figures are exact"
            } else {
                "a Query may read more than 4 KB of entries and the RCU figures (≥) are lower bounds"
            }
        );
        println!(
            "Loading: {} with {} in flight; {}.",
            m.loader.label(),
            m.concurrency,
            results
                .iter()
                .map(|m| format!(
                    "{} records in {:.1} s ({:.0}/s)",
                    thousands(m.size),
                    m.load.as_secs_f64(),
                    m.size as f64 / m.load.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let same = results.windows(2).all(|w| {
        let (a, b) = (&w[0], &w[1]);
        a.expiring != b.expiring
            || (a.scan == b.scan
                && a.run_scans.items_read() == b.run_scans.items_read()
                && a.run_scans.capacity_units == b.run_scans.capacity_units
                && a.run_requests == b.run_requests)
    });
    println!(
        "{}",
        if same {
            "Every size read the same items, made the same requests and consumed the same capacity."
        } else {
            "The sizes differ in what they read (see above)."
        }
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    onboarding_bench::exit("rotation-scan", run().await)
}

async fn run() -> BenchResult {
    let options = options()?;
    let mut results = Vec::with_capacity(options.sizes.len());
    for &size in &options.sizes {
        results.push(measure(size, &options).await?);
    }
    if options.json {
        let doc = json!({
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "windowDays": WINDOW_DAYS,
            "pageSize": options.page_size,
            "seed": options.seed,
            "results": results.iter().map(Measured::json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(BenchError::from)?);
    } else {
        print_tables(&results, &options);
    }
    Ok(())
}
