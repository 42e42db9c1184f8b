//! Outcomes as CloudWatch embedded-metric-format (EMF) lines on stdout.
//!
//! Metrics (namespace `METRICS_NAMESPACE`, dimension `Function`):
//! `Provisioned`, `Duplicate`, `Recorded`, `Ignored`, `Rejected` (also by
//! `Reason`), `LeftAlone` (also by `Reason`: `CA_MISMATCH` or `CA_NOT_BOUND`,
//! a certificate not this deployment's to judge), `Failed` (also by
//! `ErrorKind`), `MalformedEvent`, and `DurationMs`; per batch,
//! `Redelivered`: messages SQS handed out more than once (a failed
//! attempt's retry, or a visibility timeout that ran out).

use serde_json::Value;

/// What one event came to, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured<'a> {
    Provisioned,
    Duplicate,
    /// ACTIVE before onboarding (JITP, by hand), checked and recorded.
    Recorded,
    Ignored,
    Rejected {
        reason: &'a str,
    },
    /// Not this deployment's to judge: left untouched.
    LeftAlone {
        reason: &'a str,
    },
    Failed {
        kind: &'a str,
    },
    MalformedEvent,
}

/// Builds the EMF document for one outcome.
pub fn emf(namespace: &str, function: &str, measured: Measured<'_>, duration_ms: f64, timestamp_ms: i64) -> Value {
    let (metric, extra): (&str, Option<(&str, &str)>) = match measured {
        Measured::Provisioned => ("Provisioned", None),
        Measured::Duplicate => ("Duplicate", None),
        Measured::Recorded => ("Recorded", None),
        Measured::Ignored => ("Ignored", None),
        Measured::Rejected { reason } => ("Rejected", Some(("Reason", reason))),
        Measured::LeftAlone { reason } => ("LeftAlone", Some(("Reason", reason))),
        Measured::Failed { kind } => ("Failed", Some(("ErrorKind", kind))),
        Measured::MalformedEvent => ("MalformedEvent", None),
    };
    onboarding_lambda::emf(
        namespace,
        function,
        &[(metric, 1.0, "Count"), ("DurationMs", duration_ms, "Milliseconds")],
        extra.as_slice(),
        timestamp_ms,
    )
}

/// The EMF document counting a batch's messages received more than once.
pub fn redelivered(namespace: &str, function: &str, count: usize, timestamp_ms: i64) -> Value {
    onboarding_lambda::emf(
        namespace,
        function,
        &[("Redelivered", count as f64, "Count")],
        &[],
        timestamp_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejected_carries_reason_dimension() {
        let doc = emf(
            "ns",
            "jitr-registrar",
            Measured::Rejected { reason: "EXPIRED" },
            12.5,
            1_700_000_000_000,
        );
        assert_eq!(doc["Rejected"], 1.0);
        assert_eq!(doc["Reason"], "EXPIRED");
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ns");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1],
            json!(["Function", "Reason"])
        );
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "Rejected");
        let left = emf("ns", "f", Measured::LeftAlone { reason: "CA_NOT_BOUND" }, 1.0, 0);
        assert_eq!(left["LeftAlone"], 1.0);
        assert_eq!(left["Reason"], "CA_NOT_BOUND");
        let again = redelivered("ns", "f", 2, 0);
        assert_eq!(again["Redelivered"], 2.0);
        assert_eq!(
            again["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "Redelivered"
        );
        let provisioned = emf("ns", "f", Measured::Provisioned, 1.0, 0);
        assert_eq!(
            provisioned["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }
}
