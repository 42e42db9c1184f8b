//! The `fleet-reconciler` Lambda: one scheduled run of the domain's
//! [`Reconciler`] as of the wall clock ([`wall_clock_now`]; the scheduled
//! event's `time` is only logged: an invoker must not be able to move "now"
//! and have valid certificates judged expired). A stuck certificate is
//! processed by the registrar itself, built exactly as `jitr-registrar`
//! builds it (same settings, same adapters).
//!
//! It reads every variable of `jitr-registrar` (the registrar's settings)
//! and:
//!
//! | variable | required | default | meaning |
//! |---|---|---|---|
//! | `STUCK_AFTER_SECONDS` | no | `600` | age after which a `PENDING_ACTIVATION` certificate is processed |
//! | `MAX_CERTIFICATES_PER_RUN` | no | `1000` | IoT certificates examined per run (all CAs) |
//! | `MAX_RECORDS_PER_RUN` | no | `500` | inventory records checked against IoT per run |
//! | `MAX_RECORD_PAGES_PER_RUN` | no | `20` | inventory scan pages (100 items each) read per run |

use onboarding_aws::{DynamoInventory, IotAdapter};
use onboarding_domain::PortResult;
use onboarding_domain::SupersessionReport;
use onboarding_domain::{ReconcileReport, Reconciler, ReconcilerSettings};
pub use onboarding_lambda::FromEnv;
use onboarding_lambda::{Env, SettingsError};
use serde_json::{Value, json};

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub registrar: jitr_registrar::Settings,
    pub reconciler: ReconcilerSettings,
}

impl FromEnv for Settings {
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError> {
        let registrar = jitr_registrar::Settings::read(env)?;
        let default_ca_ids = registrar
            .registrar
            .default_profile
            .as_ref()
            .map(|(_, cas)| cas.clone())
            .unwrap_or_default();
        Ok(Self {
            reconciler: ReconcilerSettings {
                stuck_after_secs: env.positive("STUCK_AFTER_SECONDS", 600)?,
                max_examined_per_run: env.positive("MAX_CERTIFICATES_PER_RUN", 1_000)?,
                max_records_per_run: env.positive("MAX_RECORDS_PER_RUN", 500)?,
                max_record_pages_per_run: env.positive("MAX_RECORD_PAGES_PER_RUN", 20)?,
                default_ca_ids,
                ..ReconcilerSettings::default()
            },
            registrar,
        })
    }
}

/// The reconciler with the AWS adapters and the registrar.
pub type AwsReconciler = Reconciler<IotAdapter, IotAdapter, DynamoInventory, jitr_registrar::AwsRegistrar>;

/// Builds the reconciler, with the registrar as `jitr-registrar` builds it.
pub fn build_reconciler(settings: &Settings, sdk: &aws_config::SdkConfig) -> AwsReconciler {
    let iot = IotAdapter::new(aws_sdk_iot::Client::new(sdk));
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.registrar.inventory_table);
    let registrar = jitr_registrar::build_registrar(&settings.registrar, sdk);
    Reconciler::new(iot.clone(), iot, inventory, registrar, settings.reconciler.clone())
}

/// Now, in Unix seconds, from the system clock: the only "now" a run uses.
pub fn wall_clock_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Supersessions (from `onboard allow reset`) handled per run.
pub const SUPERSESSIONS_PER_RUN: usize = 100;

/// Revokes the fleet-provisioned certificates an `onboard allow reset`
/// superseded, each once IoT says its successor is ACTIVE and attached to the
/// thing (the domain's [`retire_superseded`]), as of the wall clock.
///
/// # Errors
/// When the supersessions cannot be listed; one that fails is counted and
/// retried next run.
pub async fn retire_superseded(sdk: &aws_config::SdkConfig, settings: &Settings) -> PortResult<SupersessionReport> {
    let iot = IotAdapter::new(aws_sdk_iot::Client::new(sdk));
    let inventory = DynamoInventory::new(aws_sdk_dynamodb::Client::new(sdk), &settings.registrar.inventory_table);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    onboarding_domain::retire_superseded(&inventory, &iot, now, SUPERSESSIONS_PER_RUN).await
}

/// EMF metrics of the superseded certificates' pass.
pub fn supersession_metrics(namespace: &str, report: &SupersessionReport, timestamp_ms: i64) -> Value {
    onboarding_lambda::emf(
        namespace,
        "fleet-reconciler",
        &[
            ("SupersededRevoked", f64::from(report.revoked), "Count"),
            ("SupersessionsWaiting", f64::from(report.waiting), "Count"),
            ("SupersessionsDropped", f64::from(report.dropped), "Count"),
            ("SupersessionErrors", f64::from(report.errors), "Count"),
        ],
        &[],
        timestamp_ms,
    )
}

/// The run's report as the invocation's answer.
pub fn report_json(report: &ReconcileReport, now: i64) -> Value {
    json!({
        "now": now,
        "cas": report.cas,
        "examined": report.examined,
        "stuckProcessed": report.stuck_processed,
        "pendingRecent": report.pending_recent,
        "recordedActive": report.recorded_active,
        "recordsExamined": report.records_examined,
        "markedMissing": report.marked_missing,
        "recordPages": report.record_pages,
        "errors": report.errors,
        "budgetExhausted": report.budget_exhausted,
        "interrupted": report.interrupted,
    })
}

/// EMF metrics of one run: a count per kind of finding.
pub fn report_metrics(namespace: &str, report: &ReconcileReport, timestamp_ms: i64) -> Value {
    onboarding_lambda::emf(
        namespace,
        "fleet-reconciler",
        &[
            ("StuckRecovered", f64::from(report.stuck_processed), "Count"),
            ("UnrecordedActiveFound", f64::from(report.recorded_active), "Count"),
            (
                "RecordsOfMissingCertificates",
                f64::from(report.marked_missing),
                "Count",
            ),
            ("ReconcilerErrors", f64::from(report.errors), "Count"),
        ],
        &[],
        timestamp_ms,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn settings_build_on_the_registrars() {
        assert_eq!(settings(&[]).err(), Some(SettingsError::Missing("INVENTORY_TABLE")));
        let ca = "b".repeat(64);
        let s = settings(&[
            ("INVENTORY_TABLE", "t"),
            ("CREDENTIALS_BUCKET", "b"),
            ("CREDENTIALS_KMS_KEY_ID", "k"),
            ("DEFAULT_PROFILE", r#"{"name":"default","policyName":"p"}"#),
            ("DEFAULT_PROFILE_CA_IDS", &ca),
            ("STUCK_AFTER_SECONDS", "120"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.reconciler.stuck_after_secs, 120);
        assert_eq!(s.reconciler.default_ca_ids, vec![ca]);
        assert_eq!(s.reconciler.max_examined_per_run, 1_000);
    }

    #[test]
    fn every_finding_is_a_metric() {
        let report = ReconcileReport {
            stuck_processed: 2,
            recorded_active: 1,
            marked_missing: 3,
            ..ReconcileReport::default()
        };
        let doc = report_metrics("ns", &report, 0);
        assert_eq!(doc["StuckRecovered"], 2.0);
        assert_eq!(doc["UnrecordedActiveFound"], 1.0);
        assert_eq!(doc["RecordsOfMissingCertificates"], 3.0);
        assert_eq!(report_json(&report, 5)["markedMissing"], 3);
    }
}
