//! Shared pieces of the benchmarks in `src/bin/`: command-line options,
//! summary statistics, markdown tables, the classification of recorded AWS
//! requests into operations and sequential rounds, and a minimal local Lambda
//! Runtime API (`runtime_api`).

pub mod runtime_api;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use onboarding_test_support::proxy::RecordedRequest;

/// Any error a benchmark reports before exiting non-zero.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
pub type BenchResult<T = ()> = Result<T, BenchError>;

/// The exit of a benchmark: its error, if any, on stderr (displayed, not
/// debug-printed, so that multi-line messages read well) and a failure status.
pub fn exit(name: &str, result: BenchResult) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--name value` / `--name=value` options.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses the process arguments; `known` lists the option names without
    /// dashes. `--help` prints `usage` and exits.
    ///
    /// # Errors
    /// An unknown option or a missing value.
    pub fn parse(usage: &str, known: &[&str]) -> BenchResult<Self> {
        Self::parse_from(std::env::args().skip(1), usage, known)
    }

    /// Parses `args` (without the program name).
    ///
    /// # Errors
    /// An unknown option or a missing value.
    pub fn parse_from(args: impl IntoIterator<Item = String>, usage: &str, known: &[&str]) -> BenchResult<Self> {
        let mut values = HashMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(option) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}\n\n{usage}").into());
            };
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => {
                    let value = args
                        .next()
                        .ok_or_else(|| format!("--{option} needs a value\n\n{usage}"))?;
                    (option.to_string(), value)
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}\n\n{usage}").into());
            }
            values.insert(name, value);
        }
        Ok(Self { values })
    }

    /// A numeric option, or `default`.
    ///
    /// # Errors
    /// When the value does not parse.
    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> BenchResult<T> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: {v:?} is not a valid number").into()),
        }
    }

    /// A text option.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// Summary statistics of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

/// Summarises a sample; `None` when it is empty.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(Summary {
        n,
        mean: sorted.iter().sum::<f64>() / n as f64,
        p50: percentile(&sorted, 50.0),
        p99: percentile(&sorted, 99.0),
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// The `p`-th percentile of a sorted, non-empty sample, interpolating
/// linearly between closest ranks (the median of an even sample is the mean
/// of the two middle values).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let rank = (p / 100.0).clamp(0.0, 1.0) * last as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    let weight = rank - low as f64;
    sorted[low] * (1.0 - weight) + sorted[high.min(last)] * weight
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A markdown table whose columns are padded for reading in a terminal.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these headers; columns whose header starts with `>` are
    /// right-aligned (the `>` is not shown).
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.trim_start_matches('>').to_string()).collect(),
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as markdown.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count().max(3)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..columns)
                .map(|i| {
                    let cell = cells.get(i).map(String::as_str).unwrap_or_default();
                    if self.right[i] {
                        format!("{cell:>width$}", width = widths[i])
                    } else {
                        format!("{cell:<width$}", width = widths[i])
                    }
                })
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        let rule: Vec<String> = (0..columns)
            .map(|i| {
                if self.right[i] {
                    format!("{}:", "-".repeat(widths[i] - 1))
                } else {
                    "-".repeat(widths[i])
                }
            })
            .collect();
        let mut out = vec![line(&self.headers), format!("| {} |", rule.join(" | "))];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

/// Formats a float with `decimals` decimals.
pub fn f(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// `a` when `a == b`, else `a–b`.
pub fn range(a: usize, b: usize) -> String {
    if a == b { a.to_string() } else { format!("{a}–{b}") }
}

/// Groups requests into waves of concurrent calls: ordered by arrival, a
/// request belongs to the current wave if it arrived less than `latency / 2`
/// after the wave's first request. With an added latency `L` per request,
/// each wave is one sequential round of AWS calls.
pub fn waves(requests: &[RecordedRequest], latency: Duration) -> Vec<Vec<RecordedRequest>> {
    let mut sorted = requests.to_vec();
    sorted.sort_by_key(|r| r.received);
    let threshold = latency / 2;
    let mut waves: Vec<Vec<RecordedRequest>> = Vec::new();
    for request in sorted {
        match waves.last_mut() {
            Some(wave)
                if wave
                    .first()
                    .is_some_and(|first| request.received.saturating_sub(first.received) < threshold) =>
            {
                wave.push(request);
            }
            _ => waves.push(vec![request]),
        }
    }
    waves
}

/// A readable AWS operation name for a request the proxy recorded: the
/// DynamoDB target with the item-key prefix it touches, the IoT or S3 REST
/// operation behind a method and path.
pub fn operation_name(request: &RecordedRequest) -> String {
    if request.header("x-amz-target").is_some() {
        let operation = request.operation();
        return match dynamodb_key_prefix(&request.body) {
            Some(prefix) => format!("{operation}({prefix})"),
            None => operation,
        };
    }
    let path = request.target.split('?').next().unwrap_or_default();
    let query = request.target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method.as_str();
    let name = match (method, segments.as_slice()) {
        ("GET", ["certificates", _]) => "DescribeCertificate".to_string(),
        ("PUT", ["certificates", _]) => match query.split('&').find_map(|p| p.strip_prefix("newStatus=")) {
            Some(status) => format!("UpdateCertificate({status})"),
            None => "UpdateCertificate".to_string(),
        },
        ("GET", ["cacertificate", _]) => "DescribeCACertificate".to_string(),
        ("POST", ["things", _]) => "CreateThing".to_string(),
        ("GET", ["things", _]) => "DescribeThing".to_string(),
        ("PATCH", ["things", _]) => "UpdateThing".to_string(),
        ("GET", ["things", _, "principals" | "principals-v2"]) => "ListThingPrincipals".to_string(),
        ("PUT", ["things", _, "principals"]) => "AttachThingPrincipal".to_string(),
        ("DELETE", ["things", _, "principals"]) => "DetachThingPrincipal".to_string(),
        ("PUT", ["thing-groups", "addThingToThingGroup"]) => "AddThingToThingGroup".to_string(),
        ("PUT", ["billing-groups", "addThingToBillingGroup"]) => "AddThingToBillingGroup".to_string(),
        ("PUT", ["target-policies", _]) => "AttachPolicy".to_string(),
        ("PUT", [_bucket, _, ..]) => "S3 PutObject".to_string(),
        ("GET", [_bucket, _, ..]) => "S3 GetObject".to_string(),
        ("HEAD", [_bucket, _, ..]) => "S3 HeadObject".to_string(),
        _ => format!("{method} {path}"),
    };
    // Two adds to thing groups look alike: name the group.
    if name == "AddThingToThingGroup"
        && let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body)
        && let Some(group) = body.get("thingGroupName").and_then(serde_json::Value::as_str)
    {
        return format!("{name}({group})");
    }
    name
}

/// The partition-key prefix (`CONFIG`, `CERT#`, `THING#`...) a DynamoDB
/// request addresses.
fn dynamodb_key_prefix(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    let pk = body
        .pointer("/Key/pk/S")
        .or_else(|| body.pointer("/Item/pk/S"))
        .or_else(|| body.pointer("/ExpressionAttributeValues/:pk/S"))
        .and_then(serde_json::Value::as_str)?;
    Some(match pk.split_once('#') {
        Some((prefix, _)) => format!("{prefix}#"),
        None => pk.to_string(),
    })
}

/// How many of `ids` AWS IoT holds under `ca_id`, by status (every page of
/// `ListCertificatesByCA`); those it does not hold count as `NOT_REGISTERED`.
pub async fn statuses_under_ca(
    iot: &aws_sdk_iot::Client,
    ca_id: &str,
    ids: impl IntoIterator<Item = &str>,
) -> BenchResult<BTreeMap<String, usize>> {
    let ours: HashSet<&str> = ids.into_iter().collect();
    let mut statuses = BTreeMap::new();
    let mut marker = None;
    loop {
        let page = iot
            .list_certificates_by_ca()
            .ca_certificate_id(ca_id)
            .page_size(250)
            .set_marker(marker)
            .send()
            .await?;
        for c in page.certificates() {
            if c.certificate_id().is_some_and(|id| ours.contains(id)) {
                let status = c.status().map_or("NONE".to_string(), |s| s.as_str().to_string());
                *statuses.entry(status).or_default() += 1;
            }
        }
        marker = page.next_marker;
        if marker.is_none() {
            break;
        }
    }
    let missing = ours.len() - statuses.values().sum::<usize>();
    if missing > 0 {
        statuses.insert("NOT_REGISTERED".into(), missing);
    }
    Ok(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, at_ms: u64) -> RecordedRequest {
        RecordedRequest {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            received: Duration::from_millis(at_ms),
        }
    }

    #[test]
    fn percentiles_interpolate() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap_or_else(|| panic!("empty"));
        assert!((s.p50 - 2.5).abs() < 1e-9);
        assert!((s.mean - 2.5).abs() < 1e-9);
        assert!((s.min - 1.0).abs() < 1e-9 && (s.max - 4.0).abs() < 1e-9);
        assert!((percentile(&[1.0, 2.0, 3.0], 50.0) - 2.0).abs() < 1e-9);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn waves_split_on_half_the_latency() {
        let l = Duration::from_millis(50);
        let requests = [
            request("GET", "/a", 0),
            request("GET", "/b", 3),
            request("GET", "/c", 24),
            request("GET", "/d", 60),
            request("GET", "/e", 70),
            request("GET", "/f", 130),
        ];
        let sizes: Vec<usize> = waves(&requests, l).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 2, 1]);
    }

    #[test]
    fn operations_are_named() {
        let id = "a".repeat(64);
        assert_eq!(
            operation_name(&request("GET", &format!("/certificates/{id}"), 0)),
            "DescribeCertificate"
        );
        assert_eq!(
            operation_name(&request("PUT", &format!("/certificates/{id}?newStatus=ACTIVE"), 0)),
            "UpdateCertificate(ACTIVE)"
        );
        assert_eq!(
            operation_name(&request("PUT", "/bucket/credentials/x/y.json", 0)),
            "S3 PutObject"
        );
        let mut put = request("POST", "/", 0);
        put.headers = vec![("x-amz-target".into(), "DynamoDB_20120810.PutItem".into())];
        put.body = br#"{"Item":{"pk":{"S":"THING#sensor-1"}}}"#.to_vec();
        assert_eq!(operation_name(&put), "PutItem(THING#)");
    }

    #[test]
    fn options_parse() -> BenchResult {
        let args = Args::parse_from(
            ["--iterations", "10", "--latency-ms=5"].map(String::from),
            "usage",
            &["iterations", "latency-ms"],
        )?;
        assert_eq!(args.number("iterations", 0usize)?, 10);
        assert_eq!(args.number("latency-ms", 0u64)?, 5);
        assert_eq!(args.number("other", 7u64)?, 7);
        assert!(Args::parse_from(["--nope", "1"].map(String::from), "usage", &["iterations"]).is_err());
        Ok(())
    }
}
