//! What every Lambda of the project shares: reading settings from the
//! environment (failing init with the variable's name), JSON logs, and
//! CloudWatch embedded-metric-format (EMF) lines.

use std::io::Write;

use onboarding_domain::DeviceProfile;
use onboarding_domain::event::is_certificate_id;
use serde_json::{Value, json};

/// A configuration problem; init fails with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
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
        (self.lookup)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
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

/// JSON logs for CloudWatch (one object per line), filtered by `RUST_LOG`
/// (default `info`; the SDK's own per-attempt logs stay at their debug level).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .init();
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

    #[test]
    fn values_are_trimmed_and_typed() {
        let e = env(&[("A", " x "), ("N", "5"), ("Z", "0"), ("BAD", "soon"), ("EMPTY", " ")]);
        assert_eq!(e.get("A").as_deref(), Some("x"));
        assert_eq!(e.get("EMPTY"), None);
        assert_eq!(e.required("MISSING"), Err(SettingsError::Missing("MISSING")));
        assert_eq!(e.number("N", 1u32), Ok(5));
        assert_eq!(e.number("UNSET", 7u32), Ok(7));
        assert!(matches!(e.number::<u32>("BAD", 1), Err(SettingsError::Invalid { name: "BAD", .. })));
        assert!(matches!(e.positive::<u32>("Z", 1), Err(SettingsError::Invalid { name: "Z", .. })));
    }

    #[test]
    fn default_profile_and_its_cas() {
        let ca = "a".repeat(64);
        let profile = r#"{"name":"default","policyName":"device-policy"}"#;
        let e = env(&[("DEFAULT_PROFILE", profile), ("DEFAULT_PROFILE_CA_IDS", &ca)]);
        let (p, cas) = e.default_profile().ok().flatten().unwrap_or_else(|| panic!("no profile"));
        assert_eq!(p.name, "default");
        assert_eq!(cas, vec![ca.clone()]);
        let invalid = |pairs: &[(&str, &str)], name: &str| {
            matches!(env(pairs).default_profile(), Err(SettingsError::Invalid { name: n, .. }) if n == name)
        };
        assert!(invalid(&[("DEFAULT_PROFILE", r#"{"name":"default"}"#)], "DEFAULT_PROFILE"));
        assert!(invalid(&[("DEFAULT_PROFILE_CA_IDS", &ca)], "DEFAULT_PROFILE_CA_IDS"));
        assert!(invalid(
            &[("DEFAULT_PROFILE", profile), ("DEFAULT_PROFILE_CA_IDS", "nope")],
            "DEFAULT_PROFILE_CA_IDS"
        ));
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
