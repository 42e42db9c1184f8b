//! `onboard fleet audit`: one audit of the fleet for an operator, from AWS
//! IoT's own description of the bound CAs, their certificates and the
//! policies on them, and from the inventory (the domain's `audit_fleet`).
//! Prints the findings (check, severity, resource, remedy) and their counts,
//! or JSON; exits 4 when a finding is at or above `--fail-on`.
//!
//! `--last` audits nothing: it shows the latest run the scheduled
//! `fleet-auditor` completed, read from the inventory table (its summary and
//! its stored findings), in the same table or JSON and with the same exit
//! codes.

use std::collections::BTreeMap;
use std::str::FromStr;

use onboarding_aws::{ApiPacer, ApiQuotas, DynamoInventory, IotAdapter};
use onboarding_domain::{
    AuditCheck, AuditError, AuditFindings, AuditLimits, AuditRun, AuditRunState, AuditRunStore, AuditSummary,
    AuditThresholds, Inventory, Severity, audit_fleet, rfc3339,
};
use serde_json::{Value, json};

use crate::Cli;
use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Audit nothing: show the latest run the scheduled fleet-auditor
    /// completed (its stored findings), and whether a newer one is under way.
    #[arg(long)]
    pub last: bool,
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
    if args.last {
        return last(cli, fail_on).await;
    }
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

/// Findings read back per page (a `Query` page is at most 1 MB anyway).
const FINDINGS_PAGE: usize = 1_000;

/// `--last`: the latest completed run of the scheduled audit, from its
/// summary and its stored findings; no IoT call.
async fn last(cli: &Cli, fail_on: Option<Severity>) -> Result<(), CliError> {
    let table = cli.aws.table()?.to_string();
    let sdk = cli.aws.sdk_config().await;
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let bad = |e: onboarding_domain::ScheduledAuditError| CliError::Aws(e.to_string());
    let summary = inventory
        .latest_audit()
        .await?
        .map(|text| AuditSummary::from_json(&text))
        .transpose()
        .map_err(bad)?;
    // A run under way (newer than the summary's, or the first one).
    let in_progress = inventory
        .audit_run()
        .await?
        .map(|stored| AuditRunState::from_json(&stored.state, now))
        .transpose()
        .map_err(bad)?
        .filter(|state| state.phase != onboarding_domain::AuditPhase::Done);
    let progress_json = in_progress.as_ref().map(|state| {
        json!({
            "runId": state.run_id,
            "startedAt": rfc3339(state.run_id),
            "phase": state.phase.as_str(),
            "certificates": state.certificates,
        })
    });
    let Some(summary) = summary else {
        let message = match &in_progress {
            Some(state) => format!(
                "no fleet audit run has completed yet; one started at {} is in progress (phase {}, {} certificates so far)",
                rfc3339(state.run_id),
                state.phase.as_str(),
                state.certificates
            ),
            None => "no fleet audit run has completed yet, and none is in progress: is the fleet-auditor deployed and \
                     scheduled?"
                .to_string(),
        };
        if cli.json {
            println!("{}", json!({ "run": null, "inProgress": progress_json }));
        }
        return Err(CliError::Input(message));
    };
    if summary.started_at > now.saturating_add(300) {
        return Err(CliError::Aws(format!(
            "the stored latest audit summary starts at {}, in the future: this code did not write it; delete the \
             item (pk AUDIT, sk LATEST) and let the fleet-auditor run again",
            rfc3339(summary.started_at)
        )));
    }
    let mut findings = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = inventory
            .audit_findings_page(summary.run_id, cursor.as_deref(), FINDINGS_PAGE)
            .await?;
        findings.extend(page.items);
        match page.cursor {
            Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
            Some(next) => {
                return Err(CliError::Aws(format!(
                    "the findings' page cursor {next:?} came back twice"
                )));
            }
            None => break,
        }
    }
    let run = AuditRun {
        findings: AuditFindings::new(findings),
        certificates: usize::try_from(summary.certificates).unwrap_or(usize::MAX),
        cas: usize::try_from(summary.cas).unwrap_or(usize::MAX),
        missing_cas: summary.missing_cas.clone(),
        records: usize::try_from(summary.records).unwrap_or(usize::MAX),
        rotations: usize::try_from(summary.rotations).unwrap_or(usize::MAX),
        reads: summary.reads,
    };
    let newer = in_progress.filter(|state| state.run_id > summary.run_id);
    if cli.json {
        let mut report = report_json(&run, fail_on);
        report["run"] = json!({
            "runId": summary.run_id,
            "startedAt": rfc3339(summary.started_at),
            "finishedAt": rfc3339(summary.finished_at),
            "certificates": summary.certificates,
            "policiesUnaudited": summary.policies_unaudited,
            "counts": summary.counts,
        });
        report["inProgress"] = newer.as_ref().and(progress_json).unwrap_or(Value::Null);
        println!("{report}");
    } else {
        println!(
            "latest completed fleet audit: started {}, finished {}; {} certificates audited",
            rfc3339(summary.started_at),
            rfc3339(summary.finished_at),
            summary.certificates
        );
        if let Some(state) = &newer {
            println!(
                "a newer run started at {} is in progress (phase {}, {} certificates so far)",
                rfc3339(state.run_id),
                state.phase.as_str(),
                state.certificates
            );
        }
        if summary.policies_unaudited > 0 {
            println!(
                "warning: {} attachments of policies beyond the first {} were not judged",
                summary.policies_unaudited,
                onboarding_domain::AUDIT_POLICIES_MAX
            );
        }
        print_table(&run, run.cas + run.missing_cas.len());
    }
    match fail_on {
        Some(threshold) if run.findings.fails(threshold) => Err(CliError::Findings(format!(
            "{} findings at or above {threshold} in the latest fleet audit run",
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
            "recordReads": reads.record_reads,
            "thingPrincipals": reads.thing_principals,
            "rotationReads": reads.rotation_reads,
            "findingPages": reads.finding_pages,
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
