//! `onboard fleet status` and `onboard fleet inspect` (`onboard fleet import` is in `fleet_import.rs`).

use std::collections::BTreeMap;

use clap::Subcommand;
use onboarding_aws::DynamoInventory;
use onboarding_aws::ROTATION_STATES;
use onboarding_aws::ThingHistoryItem;
use onboarding_domain::rfc3339;
use onboarding_domain::{Rotation, RotationInventory, RotationState};
use serde_json::{Value, json};

use crate::Cli;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Counts by status, rejections by reason, certificates expiring within
    /// 30, 60 and 90 days, and rotations: by state, failures by reason, given
    /// up, due for a follow-up now.
    Status,
    /// One thing: its type and attributes, certificates (status, policies,
    /// rotation), groups, name claim and inventory records.
    Inspect {
        /// Thing name.
        thing: String,
        /// Also every inventory record that ever named this thing, with its
        /// rotation (reads the whole table: a filtered Scan).
        #[arg(long)]
        history: bool,
    },
    /// Import existing device certificates (a migration, a batch bought in
    /// advance): each checked and provisioned as the registrar provisions a
    /// JITR device; paced, resumable from a state file, with a report.
    Import(Box<crate::commands::fleet_import::ImportArgs>),
    /// Audit the fleet once: shared, unrecorded, denied, expiring or old
    /// certificates, inactive or expiring CAs, overly broad policies, failed
    /// rotations, records whose certificate is gone (docs/audit.md). Exits 4
    /// when a finding is at or above `--fail-on`. `--last`: the latest run
    /// the scheduled fleet-auditor completed, without auditing again.
    Audit(crate::commands::fleet_audit::AuditArgs),
}

pub async fn run(command: &FleetCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        FleetCommand::Inspect { thing, history } => inspect(cli, thing, *history).await,
        FleetCommand::Status => status(cli).await,
        FleetCommand::Import(args) => crate::commands::fleet_import::run(args, cli).await,
        FleetCommand::Audit(args) => crate::commands::fleet_audit::run(args, cli).await,
    }
}

async fn status(cli: &Cli) -> Result<(), CliError> {
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let status = onboarding_aws::fleet_status(&client, &table, now, &[30, 60, 90]).await?;
    let rotations = &status.rotations;
    if cli.json {
        let expiring: BTreeMap<String, u64> = status
            .expiring_within
            .iter()
            .map(|(d, c)| (d.to_string(), *c))
            .collect();
        println!(
            "{}",
            json!({
                "byStatus": status.by_status,
                "rejectionsByReason": status.rejections,
                "expired": status.expired,
                "expiringWithinDays": expiring,
                "rotations": {
                    "byState": rotations.by_state,
                    "failedByReason": rotations.failed_by_reason,
                    "givenUp": rotations.given_up,
                    "dueNow": rotations.due_now,
                    "rotatedCertificates": rotations.rotated_certificates,
                },
            })
        );
        return Ok(());
    }
    println!("certificates by status");
    if status.by_status.is_empty() {
        println!("  (none yet)");
    }
    for (s, n) in &status.by_status {
        println!("  {s:<14} {n:>8}");
    }
    if !status.rejections.is_empty() {
        println!("rejections by reason");
        for (reason, n) in &status.rejections {
            println!("  {reason:<34} {n:>8}");
        }
    }
    println!("provisioned certificates expiring");
    println!("  {:<14} {:>8}", "already", status.expired);
    for (days, n) in &status.expiring_within {
        println!("  {:<14} {n:>8}", format!("within {days} d"));
    }
    println!("rotations by state");
    if rotations.total() == 0 && rotations.due_now == 0 && rotations.rotated_certificates == 0 {
        println!("  (none yet)");
        return Ok(());
    }
    // The state machine's order, then anything unreadable.
    let known: Vec<&str> = ROTATION_STATES.iter().map(|s| s.as_str()).collect();
    let unknown = rotations
        .by_state
        .keys()
        .map(String::as_str)
        .filter(|s| !known.contains(s));
    for state in known.iter().copied().chain(unknown) {
        let n = rotations.by_state.get(state).copied().unwrap_or_default();
        println!("  {state:<14} {n:>8}");
    }
    if !rotations.failed_by_reason.is_empty() {
        println!("failed rotations by reason");
        for (reason, n) in &rotations.failed_by_reason {
            println!("  {reason:<34} {n:>8}");
        }
    }
    println!("rotations to follow");
    println!("  {:<34} {:>8}", "due now", rotations.due_now);
    println!("  {:<34} {:>8}", "given up (failed, no retry left)", rotations.given_up);
    println!(
        "  {:<34} {:>8}",
        "old certificates retired (ROTATED)", rotations.rotated_certificates
    );
    Ok(())
}

type Item = onboarding_aws::Attributes;

fn attr(item: &Item, key: &str) -> Value {
    item.get(key).map_or(Value::Null, |s| json!(s))
}

fn record_json(item: &Item) -> Value {
    let mut record = serde_json::Map::new();
    for key in [
        "certificateId",
        "status",
        "reasonCode",
        "reasonDetail",
        "profile",
        "serial",
        "notBefore",
        "notAfter",
        "rotatedTo",
        "createdAt",
        "updatedAt",
    ] {
        let value = attr(item, key);
        if !value.is_null() {
            record.insert(key.to_string(), value);
        }
    }
    Value::Object(record)
}

/// A rotation as `fleet inspect` shows it: every field, timestamps in RFC
/// 3339, `null` for what has not happened.
fn rotation_json(r: &Rotation) -> Value {
    json!({
        "state": r.state.as_str(),
        "strategy": r.strategy.as_str(),
        "attempt": r.attempt,
        "jobId": r.job_id,
        "profile": r.profile,
        "newCertificateId": r.new_certificate_id,
        "reasonCode": r.reason.map(|x| x.code()),
        "detail": r.detail,
        "givenUp": r.state == RotationState::Failed && r.due_at.is_none(),
        "oldNotAfter": rfc3339(r.old_not_after),
        "requestedAt": rfc3339(r.requested_at),
        "issuedAt": r.issued_at.map(rfc3339),
        "deliveredAt": r.delivered_at.map(rfc3339),
        "confirmedAt": r.confirmed_at.map(rfc3339),
        "retiredAt": r.retired_at.map(rfc3339),
        "failedAt": r.failed_at.map(rfc3339),
        "oldDeletedAt": r.old_deleted_at.map(rfc3339),
        "dueAt": r.due_at.map(rfc3339),
    })
}

/// The human lines of a [`rotation_json`] value; `now` in RFC 3339.
fn print_rotation(indent: &str, r: &Value, now: &str) {
    let text = |key: &str| r[key].as_str().unwrap_or("-").to_string();
    println!(
        "{indent}rotation {} attempt {} ({}) job {}",
        text("state"),
        r["attempt"],
        text("strategy"),
        text("jobId")
    );
    println!("{indent}  {:<15} {}", "new certificate", text("newCertificateId"));
    if !r["reasonCode"].is_null() || !r["detail"].is_null() {
        println!("{indent}  {:<15} {}: {}", "reason", text("reasonCode"), text("detail"));
    }
    for (label, key) in [
        ("requested", "requestedAt"),
        ("issued", "issuedAt"),
        ("delivered", "deliveredAt"),
        ("confirmed", "confirmedAt"),
        ("retired", "retiredAt"),
        ("failed", "failedAt"),
        ("old deleted", "oldDeletedAt"),
    ] {
        if let Some(at) = r[key].as_str() {
            println!("{indent}  {label:<15} {at}");
        }
    }
    let due = match (r["dueAt"].as_str(), r["givenUp"].as_bool()) {
        // RFC 3339 UTC to the second: the text order is the time order.
        (Some(at), _) if at <= now => format!("{at} (due now: the rotator's next run takes it up)"),
        (Some(at), _) => at.to_string(),
        (None, Some(true)) => "- (given up: no retry left, an operator decides)".to_string(),
        (None, _) => "- (nothing left to do)".to_string(),
    };
    println!("{indent}  {:<15} {due}", "due");
}

/// The rotation of a certificate (it being the old one), as JSON; `null` when none.
async fn rotation_of(inventory: &DynamoInventory, id: &str) -> Result<Value, CliError> {
    Ok(inventory
        .rotation(id)
        .await?
        .as_ref()
        .map_or(Value::Null, rotation_json))
}

async fn inspect(cli: &Cli, thing: &str, history: bool) -> Result<(), CliError> {
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), &table);
    let described = onboarding_aws::describe_thing(&iot, thing).await?;
    let mut certificates = Vec::new();
    let mut groups = Vec::new();
    if described.is_some() {
        let principals = onboarding_aws::thing_principal_arns(&iot, thing).await?;
        for arn in principals {
            let Some(id) = onboarding_domain::certificate_id_of_arn(&arn) else {
                continue;
            };
            let status = onboarding_aws::certificate_status(&iot, id).await?;
            let policies = onboarding_aws::attached_policy_names(&iot, &arn).await?;
            let record = inventory.record_attributes(id).await?.map(|i| record_json(&i));
            let rotation = rotation_of(&inventory, id).await?;
            certificates.push(
                json!({"certificateId": id, "status": status, "policies": policies, "inventory": record,
                "rotation": rotation}),
            );
        }
        groups = onboarding_aws::thing_group_names(&iot, thing).await?;
    }
    let claim = inventory
        .name_claim_attributes(thing)
        .await?
        .map(|i| attr(&i, "certificateId"));
    let mut records = Vec::new();
    if history {
        let mut found: BTreeMap<String, Option<Item>> = BTreeMap::new();
        // Rotations as the scan read them (no second read per rotation).
        let mut rotations: BTreeMap<String, Value> = BTreeMap::new();
        for item in inventory.thing_history(thing).await? {
            match item {
                ThingHistoryItem::Record {
                    certificate_id,
                    attributes,
                } => {
                    found.insert(certificate_id, Some(attributes));
                }
                ThingHistoryItem::Rotation {
                    certificate_id,
                    rotation,
                } => {
                    let rotation = rotation.as_deref().map_or(Value::Null, rotation_json);
                    rotations.insert(certificate_id.clone(), rotation);
                    found.entry(certificate_id).or_insert(None);
                }
            }
        }
        for (id, item) in found {
            // A rotation names the thing even where its old certificate's
            // record does not (a record the rotation itself created).
            let item = match item {
                Some(item) => Some(item),
                None => inventory.record_attributes(&id).await?,
            };
            let mut record = item.map_or_else(|| json!({"certificateId": id}), |i| record_json(&i));
            record["rotation"] = rotations.remove(&id).unwrap_or(Value::Null);
            records.push(record);
        }
        records.sort_by_key(|r| r["createdAt"].as_str().unwrap_or_default().to_string());
    }
    if described.is_none() && claim.is_none() && records.is_empty() {
        return Err(CliError::Input(format!(
            "no thing named {thing} and nothing about it in the inventory"
        )));
    }
    let thing_json = described.as_ref().map(|d| {
        json!({"thingType": d.thing_type_name, "attributes": d.attributes, "billingGroup": d.billing_group_name,
            "version": d.version})
    });
    if cli.json {
        println!(
            "{}",
            json!({"thing": thing, "exists": described.is_some(), "details": thing_json, "certificates": certificates,
                "groups": groups, "nameClaimedBy": claim, "history": if history { Some(records) } else { None }})
        );
        return Ok(());
    }
    let now = rfc3339(time::OffsetDateTime::now_utc().unix_timestamp());
    match &described {
        None => println!("thing {thing}: does not exist"),
        Some(d) => {
            println!("thing {thing}: type {}", d.thing_type_name.as_deref().unwrap_or("-"));
            for (k, v) in d.attributes.clone().unwrap_or_default() {
                println!("  attribute {k} = {v}");
            }
        }
    }
    println!(
        "groups: {}",
        if groups.is_empty() {
            "-".to_string()
        } else {
            groups.join(", ")
        }
    );
    println!(
        "name claimed by certificate: {}",
        claim
            .and_then(|c| c.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into())
    );
    for c in &certificates {
        println!(
            "certificate {} {} policies {} inventory {}",
            c["certificateId"].as_str().unwrap_or_default(),
            c["status"].as_str().unwrap_or("?"),
            c["policies"],
            c["inventory"]["status"].as_str().unwrap_or("-")
        );
        if !c["rotation"].is_null() {
            print_rotation("  ", &c["rotation"], &now);
        }
    }
    if history {
        println!("inventory history:");
        for r in &records {
            let mut record = r.clone();
            let rotation = record.as_object_mut().and_then(|o| o.remove("rotation"));
            println!("  {record}");
            if let Some(rotation) = rotation.filter(|r| !r.is_null()) {
                print_rotation("    ", &rotation, &now);
            }
        }
    }
    Ok(())
}
