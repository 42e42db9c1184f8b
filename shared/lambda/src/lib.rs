//! What every Lambda of the project shares: the start ([`init`]: logs, then
//! settings from the environment, failing init with the variable's name),
//! the runtime loop ([`run`]: a function's `handle` given to the Lambda
//! runtime, its [`InvocationFailure`] reported as Lambda's error), JSON logs,
//! event decoding, and CloudWatch embedded-metric-format (EMF) lines.
//!
//! Every function has the same shape: `main.rs` is
//!
//! ```ignore
//! let settings: Settings = onboarding_lambda::init()?;
//! let sdk = settings.sdk.load().await;
//! let handler = build(&settings, &sdk);
//! onboarding_lambda::run(|payload| handler.handle(payload)).await
//! ```
//!
//! and its `lib.rs` holds `Settings` (`settings.rs`), `build`, the
//! `Handler` with its testable `handle` and the typed `InvocationError`
//! (`handler.rs`), and its metrics (`metrics.rs`).

use std::future::Future;
use std::io::Write;

use onboarding_domain::DeviceProfile;
use onboarding_domain::is_certificate_id;
use serde_json::{Value, json};

/// A configuration problem; init fails with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// Settings read from the environment once at init.
pub trait FromEnv: Sized {
    /// Reads the settings through `env`.
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable at fault.
    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, SettingsError>;

    /// Reads the process environment.
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable at fault.
    fn from_env() -> Result<Self, SettingsError> {
        Self::read(&process_env())
    }

    /// Reads settings through `lookup` (a map in tests).
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable at fault.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Self::read(&Env::new(lookup))
    }

    /// Reads settings from `(name, value)` pairs (tests).
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable at fault.
    fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, SettingsError> {
        Self::from_lookup(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string()))
    }
}

/// Environment lookup with typed, named errors. Empty values count as unset.
pub struct Env<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

/// The process environment.
pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env::new(|name: &str| std::env::var(name).ok())
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// The trimmed value, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// # Errors
    /// [`SettingsError::Missing`].
    pub fn required(&self, name: &'static str) -> Result<String, SettingsError> {
        self.get(name).ok_or(SettingsError::Missing(name))
    }

    /// A number, `default` when unset.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when it does not parse.
    pub fn number<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, SettingsError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| SettingsError::Invalid {
                name,
                problem: format!("{v:?} is not a number"),
            }),
        }
    }

    /// A number of at least 1, `default` when unset.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when it does not parse or is 0.
    pub fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, SettingsError> {
        let value = self.number(name, default)?;
        if value < T::from(1) {
            return Err(SettingsError::Invalid {
                name,
                problem: "must be at least 1".into(),
            });
        }
        Ok(value)
    }

    /// `SDK_MAX_ATTEMPTS` (attempts per AWS call), default 6.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when it does not parse or is 0.
    pub fn sdk_max_attempts(&self) -> Result<u32, SettingsError> {
        self.positive("SDK_MAX_ATTEMPTS", 6)
    }

    /// `METRICS_NAMESPACE`, default `IotOnboarding`.
    pub fn metrics_namespace(&self) -> String {
        self.get("METRICS_NAMESPACE").unwrap_or_else(|| "IotOnboarding".into())
    }

    /// `true`, `1` or `yes`.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name).as_deref(), Some("true" | "1" | "yes"))
    }

    /// `DEFAULT_PROFILE` (a device profile as JSON) and the CA ids of
    /// `DEFAULT_PROFILE_CA_IDS` bound to it.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] for a profile that does not validate, CA ids
    /// that are not certificate ids, or CA ids without a profile.
    pub fn default_profile(&self) -> Result<Option<(DeviceProfile, Vec<String>)>, SettingsError> {
        let Some(json) = self.get("DEFAULT_PROFILE") else {
            if self.get("DEFAULT_PROFILE_CA_IDS").is_some() {
                return Err(SettingsError::Invalid {
                    name: "DEFAULT_PROFILE_CA_IDS",
                    problem: "is set but DEFAULT_PROFILE is not".into(),
                });
            }
            return Ok(None);
        };
        let profile = DeviceProfile::parse(&json).map_err(|e| SettingsError::Invalid {
            name: "DEFAULT_PROFILE",
            problem: e.to_string(),
        })?;
        let cas: Vec<String> = self
            .get("DEFAULT_PROFILE_CA_IDS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = cas.iter().find(|ca| !is_certificate_id(ca)) {
            return Err(SettingsError::Invalid {
                name: "DEFAULT_PROFILE_CA_IDS",
                problem: format!("{bad:?} is not a 64-character lowercase hexadecimal CA certificate id"),
            });
        }
        Ok(Some((profile, cas)))
    }
}

/// "Now" (Unix seconds) from a scheduled event's `time` (EventBridge), or
/// from `{"time": …}` when invoked by hand: a scheduled run can be made as of
/// any date.
///
/// # Errors
/// A message when `time` is missing or not RFC 3339.
pub fn event_time(event: &Value) -> Result<i64, String> {
    let text = event.get("time").and_then(Value::as_str).ok_or("missing")?;
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(time::OffsetDateTime::unix_timestamp)
        .map_err(|e| format!("{text:?}: {e}"))
}

/// One message of an SQS batch: its id, and its body decoded to JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsMessage {
    pub message_id: String,
    /// The body as JSON, or why it is not.
    pub body: Result<Value, String>,
    /// How many times SQS has handed this message out, this time included
    /// (`attributes.ApproximateReceiveCount`; 1 when absent).
    pub receive_count: u32,
}

/// The messages of an SQS batch (Lambda event-source mapping); `None` when
/// the payload is not one. A body is JSON, that JSON in base64 (an IoT rule
/// SQS action with `useBase64`), or an IoT rule error-action report carrying
/// the original message in `base64OriginalPayload` (so that an operator can
/// redrive a dead-letter queue into the main queue); each is unwrapped.
pub fn sqs_messages(payload: &Value) -> Option<Vec<SqsMessage>> {
    let records = payload.get("Records")?.as_array()?;
    if !records
        .iter()
        .any(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
    {
        return None;
    }
    Some(
        records
            .iter()
            .map(|record| SqsMessage {
                message_id: record
                    .get("messageId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                body: decode_body(record.get("body").and_then(Value::as_str).unwrap_or_default()),
                receive_count: record
                    .pointer("/attributes/ApproximateReceiveCount")
                    .and_then(Value::as_str)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            })
            .collect(),
    )
}

fn decode_body(body: &str) -> Result<Value, String> {
    let value = match serde_json::from_str::<Value>(body) {
        Ok(value) => value,
        Err(e) => match aws_smithy_types::base64::decode(body.trim()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| format!("not JSON: {e}"))?,
            Err(_) => return Err(format!("not JSON: {e}")),
        },
    };
    match value.get("base64OriginalPayload").and_then(Value::as_str) {
        Some(original) => {
            let bytes =
                aws_smithy_types::base64::decode(original).map_err(|e| format!("base64OriginalPayload: {e}"))?;
            serde_json::from_slice(&bytes).map_err(|e| format!("base64OriginalPayload is not JSON: {e}"))
        }
        None => Ok(value),
    }
}

/// The answer to an SQS batch: the messages to retry (`ReportBatchItemFailures`).
pub fn batch_response(failed_message_ids: impl IntoIterator<Item = String>) -> Value {
    let failures: Vec<Value> = failed_message_ids
        .into_iter()
        .map(|id| json!({ "itemIdentifier": id }))
        .collect();
    json!({ "batchItemFailures": failures })
}

/// How the function logs: the filter and the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// An `EnvFilter` directive, e.g. `info` or `warn,onboarding=debug`.
    pub filter: String,
    /// One JSON object per line (CloudWatch's JSON log format), else text.
    pub json: bool,
}

impl LogSettings {
    /// From Lambda's advanced logging controls, which Lambda passes to the
    /// function as `AWS_LAMBDA_LOG_LEVEL` (the template's
    /// `ApplicationLogLevel`: `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR` or
    /// `FATAL`) and `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`). `RUST_LOG`, when
    /// set, is a finer filter and wins over the level. Unset or unknown
    /// values fall back to `info` and JSON.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let level = lookup("AWS_LAMBDA_LOG_LEVEL").and_then(|level| {
            Some(
                match level.trim().to_ascii_uppercase().as_str() {
                    "TRACE" => "trace",
                    "DEBUG" => "debug",
                    "INFO" => "info",
                    "WARN" => "warn",
                    "ERROR" | "FATAL" => "error",
                    _ => return None,
                }
                .to_string(),
            )
        });
        let filter = lookup("RUST_LOG")
            .filter(|f| !f.trim().is_empty())
            .or(level)
            .unwrap_or_else(|| "info".to_string());
        let json = !lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.trim().eq_ignore_ascii_case("text"));
        Self { filter, json }
    }
}

/// Logs for CloudWatch as [`LogSettings::from_lookup`] reads them from the
/// process environment: JSON (one object per line) unless the function's log
/// format is `Text`, at the function's application log level (the SDK's own
/// per-attempt logs stay at their debug level).
pub fn init_logging() {
    let settings = LogSettings::from_lookup(|name| std::env::var(name).ok());
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_target(false).with_env_filter(filter);
    if settings.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        // CloudWatch adds its own timestamp; colours would be noise there.
        builder.with_ansi(false).without_time().init();
    }
}

/// What every function does first: logs as [`init_logging`] sets them up,
/// then its settings from the process environment. An invalid setting is
/// logged and fails the init, with the variable's name.
///
/// # Errors
/// [`SettingsError`] naming the variable at fault.
pub fn init<S: FromEnv>() -> Result<S, SettingsError> {
    init_logging();
    S::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))
}

/// Why an invocation failed, as Lambda reports it: an error's `errorType`
/// tells the reader (and the retry's owner) whether retrying can help.
pub trait InvocationFailure: std::error::Error {
    /// The `errorType` of the invocation's error, e.g. `MalformedEvent`
    /// (permanent) or `Retryable.transient`.
    fn error_type(&self) -> String;

    /// The error as the Lambda runtime reports it: [`Self::error_type`] and
    /// the error's message.
    fn diagnostic(&self) -> lambda_runtime::Diagnostic {
        lambda_runtime::Diagnostic {
            error_type: self.error_type(),
            error_message: self.to_string(),
        }
    }
}

/// Hands `handle` to the Lambda runtime until the container ends: each
/// event's payload (JSON) in, the answer (JSON) out; an error fails the
/// invocation with its [`InvocationFailure::diagnostic`].
///
/// # Errors
/// When the runtime cannot talk to the Lambda Runtime API.
pub async fn run<F, Fut, E>(handle: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
    E: InvocationFailure,
{
    let handle = &handle;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| async move {
            handle(event.payload).await.map_err(|e| e.diagnostic())
        },
    ))
    .await
}

/// One EMF document: `metrics` (name, value, unit) under dimension
/// `Function`, plus one extra dimension set per `(name, value)` in `extra`.
pub fn emf(
    namespace: &str,
    function: &str,
    metrics: &[(&str, f64, &str)],
    extra: &[(&str, &str)],
    timestamp_ms: i64,
) -> Value {
    let mut doc = json!({ "Function": function });
    let mut dimensions = vec![json!(["Function"])];
    for (name, value) in extra {
        dimensions.push(json!(["Function", name]));
        doc[*name] = json!(value);
    }
    for (name, value, _) in metrics {
        doc[*name] = json!(value);
    }
    doc["_aws"] = json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": dimensions,
            "Metrics": metrics.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
        }],
    });
    doc
}

/// Writes one EMF line to stdout (Lambda ships stdout to CloudWatch Logs,
/// which extracts the metrics).
pub fn emit(doc: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{doc}");
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String> + use<>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::new(move |k: &str| map.get(k).cloned())
    }

    fn log_settings(pairs: &[(&str, &str)]) -> LogSettings {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LogSettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn log_level_and_format_follow_lambdas_logging_controls() {
        assert_eq!(
            log_settings(&[]),
            LogSettings {
                filter: "info".into(),
                json: true
            }
        );
        // The template's ApplicationLogLevel, as Lambda passes it.
        assert_eq!(log_settings(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]).filter, "debug");
        assert_eq!(log_settings(&[("AWS_LAMBDA_LOG_LEVEL", "warn")]).filter, "warn");
        assert_eq!(log_settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]).filter, "error");
        assert_eq!(log_settings(&[("AWS_LAMBDA_LOG_LEVEL", "LOUD")]).filter, "info");
        // RUST_LOG is the finer tool and wins.
        assert_eq!(
            log_settings(&[("AWS_LAMBDA_LOG_LEVEL", "ERROR"), ("RUST_LOG", "warn,onboarding=debug")]).filter,
            "warn,onboarding=debug"
        );
        assert!(!log_settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).json);
        assert!(log_settings(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).json);
    }

    #[test]
    fn values_are_trimmed_and_typed() {
        let e = env(&[("A", " x "), ("N", "5"), ("Z", "0"), ("BAD", "soon"), ("EMPTY", " ")]);
        assert_eq!(e.get("A").as_deref(), Some("x"));
        assert_eq!(e.get("EMPTY"), None);
        assert_eq!(e.required("MISSING"), Err(SettingsError::Missing("MISSING")));
        assert_eq!(e.number("N", 1u32), Ok(5));
        assert_eq!(e.number("UNSET", 7u32), Ok(7));
        assert!(matches!(
            e.number::<u32>("BAD", 1),
            Err(SettingsError::Invalid { name: "BAD", .. })
        ));
        assert!(matches!(
            e.positive::<u32>("Z", 1),
            Err(SettingsError::Invalid { name: "Z", .. })
        ));
    }

    #[test]
    fn default_profile_and_its_cas() {
        let ca = "a".repeat(64);
        let profile = r#"{"name":"default","policyName":"device-policy"}"#;
        let e = env(&[("DEFAULT_PROFILE", profile), ("DEFAULT_PROFILE_CA_IDS", &ca)]);
        let (p, cas) = e
            .default_profile()
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no profile"));
        assert_eq!(p.name, "default");
        assert_eq!(cas, vec![ca.clone()]);
        let invalid = |pairs: &[(&str, &str)], name: &str| matches!(env(pairs).default_profile(), Err(SettingsError::Invalid { name: n, .. }) if n == name);
        assert!(invalid(
            &[("DEFAULT_PROFILE", r#"{"name":"default"}"#)],
            "DEFAULT_PROFILE"
        ));
        assert!(invalid(&[("DEFAULT_PROFILE_CA_IDS", &ca)], "DEFAULT_PROFILE_CA_IDS"));
        assert!(invalid(
            &[("DEFAULT_PROFILE", profile), ("DEFAULT_PROFILE_CA_IDS", "nope")],
            "DEFAULT_PROFILE_CA_IDS"
        ));
    }

    #[test]
    fn sqs_bodies_are_unwrapped() {
        let inner = r#"{"jobId":"rotate-x-1","status":"FAILED"}"#;
        let b64 = aws_smithy_types::base64::encode(inner);
        let report = json!({"base64OriginalPayload": b64, "failures": []}).to_string();
        let batch = json!({"Records": [
            {"messageId": "1", "eventSource": "aws:sqs", "body": inner},
            {"messageId": "2", "eventSource": "aws:sqs", "body": b64},
            {"messageId": "3", "eventSource": "aws:sqs", "body": report},
            {"messageId": "4", "eventSource": "aws:sqs", "body": "{nope",
             "attributes": {"ApproximateReceiveCount": "3"}},
        ]});
        let messages = sqs_messages(&batch).unwrap_or_default();
        assert_eq!(messages.len(), 4);
        for m in &messages[..3] {
            assert_eq!(
                m.body.as_ref().ok().map(|v| v["jobId"].clone()),
                Some(json!("rotate-x-1"))
            );
        }
        assert!(messages[3].body.is_err());
        assert_eq!(
            messages.iter().map(|m| m.receive_count).collect::<Vec<_>>(),
            [1, 1, 1, 3],
            "a redelivered message counts its receives"
        );
        assert!(sqs_messages(&json!({"jobId": "x"})).is_none());
        assert_eq!(
            batch_response(vec!["4".to_string()]),
            json!({"batchItemFailures": [{"itemIdentifier": "4"}]})
        );
    }

    #[derive(Debug, thiserror::Error)]
    enum Failure {
        #[error("the event has no time")]
        Malformed,
    }

    impl InvocationFailure for Failure {
        fn error_type(&self) -> String {
            "MalformedEvent".into()
        }
    }

    #[test]
    fn a_failure_is_reported_with_its_type_and_message() {
        let diagnostic = Failure::Malformed.diagnostic();
        assert_eq!(diagnostic.error_type, "MalformedEvent");
        assert_eq!(diagnostic.error_message, "the event has no time");
    }

    #[test]
    fn emf_carries_every_metric_and_dimension() {
        let doc = emf(
            "ns",
            "cert-rotator",
            &[("RotationStarted", 3.0, "Count"), ("DurationMs", 12.5, "Milliseconds")],
            &[("Strategy", "csr")],
            1_700_000_000_000,
        );
        assert_eq!(doc["RotationStarted"], 3.0);
        assert_eq!(doc["Strategy"], "csr");
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "ns");
        assert_eq!(cw["Dimensions"][1], json!(["Function", "Strategy"]));
        assert_eq!(cw["Metrics"][1]["Unit"], "Milliseconds");
    }
}
