//! `onboard fleet status`.

use clap::Subcommand;

use crate::Cli;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Counts by status, rejections by reason, and certificates expiring
    /// within 30, 60 and 90 days.
    Status,
    /// One thing: its type and attributes, certificates (status, policies),
    /// groups, name claim and inventory records.
    Inspect {
        /// Thing name.
        thing: String,
        /// Also every inventory record that ever named this thing (reads the
        /// whole table: a filtered Scan).
        #[arg(long)]
        history: bool,
    },
}

pub async fn run(command: &FleetCommand, cli: &Cli) -> Result<(), CliError> {
    match command {
        FleetCommand::Inspect { thing, history } => inspect(cli, thing, *history).await,
        FleetCommand::Status => {
            let table = cli.aws.table()?.to_string();
            let sdk = cli.aws.sdk_config().await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let status = onboarding_aws::fleet::fleet_status(&client, &table, now, &[30, 60, 90]).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "byStatus": status.by_status,
                        "rejectionsByReason": status.rejections,
                        "expired": status.expired,
                        "expiringWithinDays": status.expiring_within.iter().map(|(d, c)| (d.to_string(), *c)).collect::<std::collections::BTreeMap<_, _>>(),
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
            Ok(())
        }
    }
}

fn attr(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    key: &str,
) -> serde_json::Value {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map_or(serde_json::Value::Null, |s| serde_json::json!(s))
}

fn record_json(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> serde_json::Value {
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
        "createdAt",
        "updatedAt",
    ] {
        let value = attr(item, key);
        if !value.is_null() {
            record.insert(key.to_string(), value);
        }
    }
    serde_json::Value::Object(record)
}

async fn inspect(cli: &Cli, thing: &str, history: bool) -> Result<(), CliError> {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    let iot = aws_sdk_iot::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let described = match iot.describe_thing().thing_name(thing).send().await {
        Ok(d) => Some(d),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(e) => return Err(CliError::aws("DescribeThing", e)),
    };
    let mut certificates = Vec::new();
    let mut groups = Vec::new();
    if described.is_some() {
        let principals = iot
            .list_thing_principals()
            .thing_name(thing)
            .send()
            .await
            .map_err(|e| CliError::aws("ListThingPrincipals", e))?
            .principals
            .unwrap_or_default();
        for arn in principals {
            let Some(id) = onboarding_domain::registrar::certificate_id_of_arn(&arn) else {
                continue;
            };
            let status = iot
                .describe_certificate()
                .certificate_id(id)
                .send()
                .await
                .map_err(|e| CliError::aws("DescribeCertificate", e))?
                .certificate_description
                .and_then(|d| d.status)
                .map(|s| s.as_str().to_string());
            let policies: Vec<String> = iot
                .list_attached_policies()
                .target(&arn)
                .send()
                .await
                .map_err(|e| CliError::aws("ListAttachedPolicies", e))?
                .policies
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.policy_name)
                .collect();
            let record = dynamodb
                .get_item()
                .table_name(&table)
                .key("pk", A::S(format!("CERT#{id}")))
                .key("sk", A::S("CERT".into()))
                .send()
                .await
                .map_err(|e| CliError::Aws(format!("GetItem failed: {e}")))?
                .item
                .map(|i| record_json(&i));
            certificates.push(
                serde_json::json!({"certificateId": id, "status": status, "policies": policies, "inventory": record}),
            );
        }
        groups = iot
            .list_thing_groups_for_thing()
            .thing_name(thing)
            .send()
            .await
            .map_err(|e| CliError::aws("ListThingGroupsForThing", e))?
            .thing_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| g.group_name)
            .collect();
    }
    let claim = dynamodb
        .get_item()
        .table_name(&table)
        .key("pk", A::S(format!("THING#{thing}")))
        .key("sk", A::S("CLAIM".into()))
        .send()
        .await
        .map_err(|e| CliError::Aws(format!("GetItem failed: {e}")))?
        .item
        .map(|i| attr(&i, "certificateId"));
    let mut records = Vec::new();
    if history {
        let mut pages = dynamodb
            .scan()
            .table_name(&table)
            .filter_expression("begins_with(pk, :cert) AND thingName = :thing")
            .expression_attribute_values(":cert", A::S("CERT#".into()))
            .expression_attribute_values(":thing", A::S(thing.to_string()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CliError::Aws(format!("Scan failed: {e}")))?;
            records.extend(page.items().iter().map(record_json));
        }
        records.sort_by_key(|r| r["createdAt"].as_str().unwrap_or_default().to_string());
    }
    if described.is_none() && claim.is_none() && records.is_empty() {
        return Err(CliError::Input(format!(
            "no thing named {thing} and nothing about it in the inventory"
        )));
    }
    let thing_json = described.as_ref().map(|d| {
        serde_json::json!({"thingType": d.thing_type_name, "attributes": d.attributes, "billingGroup": d.billing_group_name, "version": d.version})
    });
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"thing": thing, "exists": described.is_some(), "details": thing_json, "certificates": certificates,
                "groups": groups, "nameClaimedBy": claim, "history": if history { Some(records) } else { None }})
        );
        return Ok(());
    }
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
    }
    if history {
        println!("inventory history:");
        for r in &records {
            println!("  {}", r);
        }
    }
    Ok(())
}
