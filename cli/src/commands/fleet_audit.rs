//! `onboard fleet audit`: one audit of the fleet for an operator, from AWS
//! IoT's own description of the bound CAs, their certificates and the
//! policies on them, and from the inventory (the domain's `audit_fleet`).
//! Prints the findings (check, severity, resource, remedy) and their counts,
//! or JSON; exits 4 when a finding is at or above `--fail-on`.

use std::collections::BTreeMap;
use std::str::FromStr;

use onboarding_aws::{ApiPacer, ApiQuotas, DynamoInventory, IotAdapter};
use onboarding_domain::{
    AuditCheck, AuditError, AuditLimits, AuditRun, AuditThresholds, Inventory, Severity, audit_fleet,
};
use serde_json::{Value, json};

use crate::Cli;
use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Exit 4 when a finding is at or above this severity (low, medium,
    /// high, critical); default: never.
    #[arg(long, value_name = "SEVERITY")]
    pub fail_on: Option<String>,
    /// DEVICE_CERT_EXPIRING below this many whole days left.
    #[arg(long, value_name = "N", default_value_t = 30, allow_negative_numbers = true)]
    pub expiring_days: i64,
    /// CA_CERT_EXPIRING below this many whole days left.
    #[arg(long, value_name = "N", default_value_t = 90, allow_negative_numbers = true)]
    pub ca_expiring_days: i64,
    /// DEVICE_CERT_OLD beyond this many days since creation.
    #[arg(long, value_name = "N", default_value_t = 365, allow_negative_numbers = true)]
    pub max_age_days: i64,
    /// Refuse to audit more certificates than this (each costs about four
    /// reads; see docs/audit.md).
    #[arg(long, value_name = "N", default_value_t = AuditLimits::default().max_certificates)]
    pub max_certificates: usize,
    /// IoT quotas above AWS's defaults (`Action=PerSecond,...`), as the
    /// functions' IOT_API_QUOTAS; the audit paces every IoT read to them.
    #[arg(long, default_value = "", value_name = "QUOTAS")]
    pub iot_quotas: String,
    /// How many callers share the quotas (the audit takes 1/N of each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub iot_share: u32,
}

pub async fn run(args: &AuditArgs, cli: &Cli) -> Result<(), CliError> {
    // Every argument is checked before any call.
    let fail_on = args
        .fail_on
        .as_deref()
        .map(Severity::from_str)
        .transpose()
        .map_err(|e| CliError::Input(e.to_string()))?;
    let thresholds = AuditThresholds::new(args.expiring_days, args.ca_expiring_days, args.max_age_days)
        .map_err(|e| CliError::Input(e.to_string()))?;
    if args.max_certificates == 0 {
        return Err(CliError::Input("--max-certificates must be at least 1".into()));
    }
    let limits = AuditLimits {
        max_certificates: args.max_certificates,
        max_inventory_items: args.max_certificates.saturating_mul(5),
        ..AuditLimits::default()
    };
    let quotas = ApiQuotas::parse(&args.iot_quotas).map_err(|e| CliError::Input(e.to_string()))?;
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.paced_sdk_config().await;
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let iot = IotAdapter::paced(aws_sdk_iot::Client::new(&sdk), ApiPacer::new(&quotas, args.iot_share));
    let config = inventory.load_config().await?;
    let cas: Vec<String> = config.bound_ca_ids().map(str::to_string).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let run = audit_fleet(&iot, &iot, &inventory, &inventory, &cas, now, thresholds, limits)
        .await
        .map_err(|e| match e {
            AuditError::Port(e) => CliError::from(e),
            e @ AuditError::UnreadableCertificate { .. } => CliError::Aws(e.to_string()),
            e @ (AuditError::TooManyCertificates { .. } | AuditError::TooManyInventoryItems { .. }) => {
                CliError::Input(format!("{e} (--max-certificates)"))
            }
        })?;
    if cli.json {
        println!("{}", report_json(&run, fail_on));
    } else {
        print_table(&run, cas.len());
    }
    match fail_on {
        Some(threshold) if run.findings.fails(threshold) => Err(CliError::Findings(format!(
            "{} findings at or above {threshold}",
            run.findings.at_or_above(threshold)
        ))),
        _ => Ok(()),
    }
}

/// The counts by check, each by severity, every check listed.
fn counts(run: &AuditRun) -> BTreeMap<&'static str, BTreeMap<&'static str, usize>> {
    let mut counts: BTreeMap<&'static str, BTreeMap<&'static str, usize>> =
        AuditCheck::ALL.iter().map(|c| (c.code(), BTreeMap::new())).collect();
    for ((check, severity), n) in run.findings.by_check_and_severity() {
        counts.entry(check.code()).or_default().insert(severity.as_str(), n);
    }
    counts
}

fn report_json(run: &AuditRun, fail_on: Option<Severity>) -> Value {
    let findings: Vec<Value> = run
        .findings
        .findings()
        .iter()
        .map(|f| {
            json!({
                "check": f.check.code(),
                "severity": f.severity.as_str(),
                "resourceKind": f.resource_kind.as_str(),
                "resourceId": f.resource_id,
                "detail": f.detail,
                "remedy": f.remedy,
            })
        })
        .collect();
    let by_severity: BTreeMap<&str, usize> = run
        .findings
        .by_severity()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let reads = run.reads;
    json!({
        "findings": findings,
        "counts": { "byCheck": counts(run), "bySeverity": by_severity },
        "audited": {
            "cas": run.cas,
            "missingCas": run.missing_cas,
            "certificates": run.certificates,
            "records": run.records,
            "rotations": run.rotations,
        },
        "reads": {
            "inventoryPages": reads.inventory_pages,
            "caDescriptions": reads.ca_descriptions,
            "certificatePages": reads.certificate_pages,
            "certificateDescriptions": reads.certificate_descriptions,
            "principalThings": reads.principal_things,
            "attachedPolicies": reads.attached_policies,
            "denyLookups": reads.deny_lookups,
            "policyDocuments": reads.policy_documents,
            "total": reads.total(),
        },
        "failOn": fail_on.map(Severity::as_str),
        "failed": fail_on.is_some_and(|t| run.findings.fails(t)),
    })
}

fn print_table(run: &AuditRun, bound: usize) {
    println!(
        "audited {} of {bound} bound CAs, {} certificates, {} inventory records, {} rotations ({} reads)",
        run.cas,
        run.certificates,
        run.records,
        run.rotations,
        run.reads.total()
    );
    for ca in &run.missing_cas {
        println!("warning: bound CA {ca} is not registered in AWS IoT: nothing under it was audited");
    }
    if run.findings.is_empty() {
        println!("no findings");
        return;
    }
    println!("{:<28} {:<9} {:<60} remedy", "check", "severity", "resource");
    for f in run.findings.findings() {
        let resource = format!("{} {}", f.resource_kind.as_str(), f.resource_id);
        println!(
            "{:<28} {:<9} {resource:<60} {}",
            f.check.code(),
            f.severity.as_str(),
            f.remedy
        );
        println!("{:<38} {}", "", f.detail);
    }
    println!("findings by check");
    for (check, by_severity) in counts(run) {
        let total: usize = by_severity.values().sum();
        if total == 0 {
            continue;
        }
        let detail: Vec<String> = Severity::ALL
            .iter()
            .rev()
            .filter_map(|s| by_severity.get(s.as_str()).map(|n| format!("{n} {s}")))
            .collect();
        println!("  {check:<28} {total:>6}  ({})", detail.join(", "));
    }
    println!("findings by severity");
    for (severity, n) in run.findings.by_severity() {
        println!("  {:<28} {n:>6}", severity.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_severity_and_a_threshold_out_of_range_are_bad_input() {
        assert!(Severity::from_str("severe").is_err());
        assert_eq!(Severity::from_str(" HIGH "), Ok(Severity::High));
        assert!(AuditThresholds::new(-1, 90, 365).is_err());
    }

    #[test]
    fn every_check_is_counted_even_without_findings() {
        let run = AuditRun {
            findings: onboarding_domain::AuditFindings::default(),
            certificates: 0,
            cas: 0,
            missing_cas: Vec::new(),
            records: 0,
            rotations: 0,
            reads: onboarding_domain::AuditReads::default(),
        };
        let report = report_json(&run, Some(Severity::High));
        assert_eq!(report["counts"]["byCheck"].as_object().map(|m| m.len()), Some(11));
        assert_eq!(report["failed"], false);
        assert_eq!(report["failOn"], "high");
    }
}
