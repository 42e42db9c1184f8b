//! AWS's per-action request quotas, as the test proxy enforces them.
//!
//! AWS limits each control-plane API action of an account and region to a
//! number of requests per second. The proxy models that with one token
//! bucket per action ([`TokenBucket`]): it refills at the quota, holds at
//! most one second's worth (burst = quota), and starts full. A request that
//! finds its bucket empty is answered by the proxy itself with the service's
//! own throttling error ([`throttle_response`]) and never reaches the
//! emulator. Actions without a quota are not limited, but are counted.
//!
//! Every function here takes the time as an argument (a [`Duration`] since
//! some origin; the proxy uses its start), so that tests can drive the
//! buckets with an injected clock.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::faults::{FaultCounts, FaultKind};

/// One API action: the SigV4 signing name of its service (`iot`,
/// `dynamodb`, `s3`…) and its operation name (`DescribeCertificate`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Action {
    pub service: String,
    pub operation: String,
}

impl Action {
    pub fn new(service: &str, operation: &str) -> Self {
        Self {
            service: service.to_string(),
            operation: operation.to_string(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.operation)
    }
}

/// A default quota and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefaultQuota {
    pub service: &'static str,
    pub operation: &'static str,
    /// Requests per second, per account and region.
    pub per_second: f64,
    /// The page that states it.
    pub source: &'static str,
    /// False when the value was not read on `source` itself but taken from
    /// the team's notes on AWS IoT (kept outside this repository: a 2019
    /// table, with the later values reported there); see docs/testing.md.
    pub confirmed: bool,
}

/// AWS IoT Core endpoints and quotas, "AWS IoT Core API throttling".
pub const IOT_CORE_QUOTAS: &str = "https://docs.aws.amazon.com/general/latest/gr/iot-core.html#throttling-limits";
/// AWS IoT Device Management endpoints and quotas (the Jobs API rates);
/// linked from the Jobs limits page,
/// <https://docs.aws.amazon.com/iot/latest/developerguide/job-limits.html>.
pub const IOT_DEVICE_MANAGEMENT_QUOTAS: &str =
    "https://docs.aws.amazon.com/general/latest/gr/iot_device_management.html#iot_device_management_quotas";

/// AWS's default quotas for the actions of the onboarding and rotation paths,
/// in requests per second per account and region.
///
/// Sources: each row's `source`. None of the numbers could be read on those
/// pages from this session (the stored copies hold the pages' endpoint
/// tables, not their throttling tables), so every row is `confirmed: false`:
/// the values are the project's notes (2019 table, with the raised values
/// reported since for CreateThing, AttachThingPrincipal and
/// AddThingToThingGroup) and, for the three actions the notes lack
/// (ListThingPrincipals, CreateKeysAndCertificate, DescribeJobExecution),
/// the value the same pages give their neighbours, 10. Check the Service
/// Quotas console of the account before relying on one.
pub const AWS_DEFAULTS: &[DefaultQuota] = &[
    // The JITR path: one DescribeCertificate and one UpdateCertificate per device.
    DefaultQuota {
        service: "iot",
        operation: "DescribeCertificate",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    DefaultQuota {
        service: "iot",
        operation: "UpdateCertificate",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    DefaultQuota {
        service: "iot",
        operation: "DescribeCACertificate",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    // Also 15 in https://github.com/aws-samples/aws-iot-chat-example/issues/37
    // (2020), which quotes the IoT Core quotas page.
    DefaultQuota {
        service: "iot",
        operation: "AttachPolicy",
        per_second: 15.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    // 15 in the 2019 table; 100 reported since.
    DefaultQuota {
        service: "iot",
        operation: "CreateThing",
        per_second: 100.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    // 15 in the 2019 table; 100 reported since.
    DefaultQuota {
        service: "iot",
        operation: "AttachThingPrincipal",
        per_second: 100.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    // Not in the notes.
    DefaultQuota {
        service: "iot",
        operation: "ListThingPrincipals",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    // 60 in the 2019 table; 100 reported since.
    DefaultQuota {
        service: "iot",
        operation: "AddThingToThingGroup",
        per_second: 100.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    DefaultQuota {
        service: "iot",
        operation: "RegisterThing",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    // Not in the notes.
    DefaultQuota {
        service: "iot",
        operation: "CreateKeysAndCertificate",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    DefaultQuota {
        service: "iot",
        operation: "CreateCertificateFromCsr",
        per_second: 15.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    DefaultQuota {
        service: "iot",
        operation: "CreateJob",
        per_second: 10.0,
        source: IOT_DEVICE_MANAGEMENT_QUOTAS,
        confirmed: false,
    },
    // The bulk import's registrations (`onboard fleet import`): about 10 per
    // second each by the project's notes.
    DefaultQuota {
        service: "iot",
        operation: "RegisterCertificate",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    DefaultQuota {
        service: "iot",
        operation: "RegisterCertificateWithoutCA",
        per_second: 10.0,
        source: IOT_CORE_QUOTAS,
        confirmed: false,
    },
    // The control-plane call (signing name `iot`); the jobs data plane's
    // DescribeJobExecution (`iot-jobs-data`) is not limited here. Not in the notes.
    DefaultQuota {
        service: "iot",
        operation: "DescribeJobExecution",
        per_second: 10.0,
        source: IOT_DEVICE_MANAGEMENT_QUOTAS,
        confirmed: false,
    },
];

/// The quota of each limited action, in requests per second.
///
/// Built from [`Quotas::aws_defaults`] or [`Quotas::none`], then adjusted:
/// [`Quotas::scaled`] multiplies every quota set so far (an account whose
/// quotas were raised), [`Quotas::with`] sets one action's quota to an
/// absolute value, [`Quotas::without`] lifts one. The calls apply in order:
/// `aws_defaults().scaled(10.0).with("iot", "DescribeCertificate", 50.0)` is
/// ten times every default except DescribeCertificate, which is 50.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quotas {
    limits: BTreeMap<Action, f64>,
}

impl Quotas {
    /// No action limited.
    pub fn none() -> Self {
        Self::default()
    }

    /// AWS's default quotas, [`AWS_DEFAULTS`].
    pub fn aws_defaults() -> Self {
        AWS_DEFAULTS
            .iter()
            .fold(Self::none(), |q, d| q.with(d.service, d.operation, d.per_second))
    }

    /// Every quota set so far multiplied by `factor`.
    #[must_use]
    pub fn scaled(mut self, factor: f64) -> Self {
        for limit in self.limits.values_mut() {
            *limit *= factor;
        }
        self
    }

    /// `service:operation` limited to `per_second` requests per second
    /// (burst: the same number). A quota of 0 or less throttles every call.
    #[must_use]
    pub fn with(mut self, service: &str, operation: &str, per_second: f64) -> Self {
        self.limits.insert(Action::new(service, operation), per_second);
        self
    }

    /// `service:operation` not limited.
    #[must_use]
    pub fn without(mut self, service: &str, operation: &str) -> Self {
        self.limits.remove(&Action::new(service, operation));
        self
    }

    /// The quota of an action, `None` when it is not limited.
    pub fn limit(&self, service: &str, operation: &str) -> Option<f64> {
        self.limits.get(&Action::new(service, operation)).copied()
    }

    /// Every limited action and its quota.
    pub fn iter(&self) -> impl Iterator<Item = (&Action, f64)> {
        self.limits.iter().map(|(a, l)| (a, *l))
    }
}

/// A token bucket: `capacity` tokens at most, refilled at `rate` tokens per
/// second; each admitted request takes one. Starts full.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(rate: f64, capacity: f64, now: Duration) -> Self {
        let capacity = capacity.max(0.0);
        Self {
            rate: rate.max(0.0),
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// The bucket AWS's quota of `per_second` implies: refilled at the quota,
    /// burst of one second's worth (at least one request, so that a quota
    /// under 1/s still admits a call now and then; none for a quota of 0).
    pub fn for_quota(per_second: f64, now: Duration) -> Self {
        let capacity = if per_second > 0.0 { per_second.max(1.0) } else { 0.0 };
        Self::new(per_second, capacity, now)
    }

    /// Takes a token if there is one at time `now`. Times earlier than the
    /// last one seen count as that one (concurrent callers may read the
    /// clock out of order).
    pub fn try_take(&mut self, now: Duration) -> bool {
        self.refill(now);
        // The tolerance absorbs the rounding of many small refills.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Tokens available at time `now`.
    pub fn available(&mut self, now: Duration) -> f64 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let elapsed = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
            self.last = now;
        }
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the quota (or not limited): forward it.
    Admit,
    /// Over the quota: answer with the service's throttling error.
    Throttle,
}

/// The counters of one action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionReport {
    pub action: Action,
    /// The quota in force when the report was taken, `None` if not limited.
    pub quota: Option<f64>,
    /// Requests admitted: forwarded to the emulator (unless an injected
    /// failure or fault then stopped them).
    pub calls: u64,
    /// Requests answered with a throttling error.
    pub throttled: u64,
    /// The most calls admitted in any sliding one-second window.
    pub peak_per_second: u64,
    /// Of the calls admitted, those the proxy's random faults
    /// ([`crate::faults::Faults`]) failed, by kind.
    pub faults: FaultCounts,
}

/// A snapshot of every action's counters, sorted by action.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaReport {
    pub actions: Vec<ActionReport>,
}

impl QuotaReport {
    /// The counters of one action, if it was called.
    pub fn get(&self, service: &str, operation: &str) -> Option<&ActionReport> {
        self.actions
            .iter()
            .find(|a| a.action.service == service && a.action.operation == operation)
    }

    /// Calls admitted over all actions.
    pub fn total_calls(&self) -> u64 {
        self.actions.iter().map(|a| a.calls).sum()
    }

    /// Throttling errors returned over all actions.
    pub fn total_throttled(&self) -> u64 {
        self.actions.iter().map(|a| a.throttled).sum()
    }

    /// Faults injected over all actions, by kind.
    pub fn total_faults(&self) -> FaultCounts {
        let mut total = FaultCounts::default();
        for a in &self.actions {
            total += a.faults;
        }
        total
    }
}

/// A Markdown table: action, quota, calls, throttles, peak calls/s, and
/// the faults injected (`0`, or the count of each kind,
/// `500/503/timeout-before/timeout-after/reset-before/reset-after`).
impl fmt::Display for QuotaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| action | quota/s | calls | throttled | peak calls/s | faults (500/503/timeout-before/timeout-after/reset-before/reset-after) |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|")?;
        for a in &self.actions {
            let quota = a.quota.map_or_else(|| "-".to_string(), |q| format!("{q}"));
            writeln!(
                f,
                "| {} | {quota} | {} | {} | {} | {} |",
                a.action, a.calls, a.throttled, a.peak_per_second, a.faults
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Counters {
    calls: u64,
    throttled: u64,
    peak: u64,
    faults: FaultCounts,
    /// Admission times within the last second.
    window: VecDeque<Duration>,
}

impl Counters {
    fn admitted(&mut self, now: Duration) {
        self.calls += 1;
        while self
            .window
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= Duration::from_secs(1))
        {
            self.window.pop_front();
        }
        self.window.push_back(now);
        self.peak = self.peak.max(self.window.len() as u64);
    }
}

/// The quotas in force, a bucket per limited action, and every action's
/// counters. Driven by the caller's clock.
#[derive(Debug, Default)]
pub struct Limiter {
    quotas: Option<Quotas>,
    buckets: BTreeMap<Action, TokenBucket>,
    counters: BTreeMap<Action, Counters>,
}

impl Limiter {
    /// A limiter enforcing `quotas` (`None`: counting only).
    pub fn new(quotas: Option<Quotas>) -> Self {
        Self {
            quotas,
            ..Self::default()
        }
    }

    /// Replaces the quotas; buckets start again full, counters are kept.
    pub fn set_quotas(&mut self, quotas: Option<Quotas>) {
        self.quotas = quotas;
        self.buckets.clear();
    }

    /// Forgets the counters.
    pub fn clear_counters(&mut self) {
        self.counters.clear();
    }

    /// Decides one request for `action` at time `now`, and counts it.
    pub fn admit(&mut self, action: &Action, now: Duration) -> Verdict {
        let limit = self
            .quotas
            .as_ref()
            .and_then(|q| q.limit(&action.service, &action.operation));
        let verdict = match limit {
            None => Verdict::Admit,
            Some(per_second) => {
                let bucket = self
                    .buckets
                    .entry(action.clone())
                    .or_insert_with(|| TokenBucket::for_quota(per_second, now));
                if bucket.try_take(now) {
                    Verdict::Admit
                } else {
                    Verdict::Throttle
                }
            }
        };
        let counters = self.counters.entry(action.clone()).or_default();
        match verdict {
            Verdict::Admit => counters.admitted(now),
            Verdict::Throttle => counters.throttled += 1,
        }
        verdict
    }

    /// Counts a fault of `kind` injected into an admitted call of `action`.
    pub fn faulted(&mut self, action: &Action, kind: FaultKind) {
        self.counters.entry(action.clone()).or_default().faults.add(kind);
    }

    /// A snapshot of the counters.
    pub fn report(&self) -> QuotaReport {
        QuotaReport {
            actions: self
                .counters
                .iter()
                .map(|(action, c)| ActionReport {
                    action: action.clone(),
                    quota: self
                        .quotas
                        .as_ref()
                        .and_then(|q| q.limit(&action.service, &action.operation)),
                    calls: c.calls,
                    throttled: c.throttled,
                    peak_per_second: c.peak,
                    faults: c.faults,
                })
                .collect(),
        }
    }
}

/// The operation name of a REST request of `service` (`iot`,
/// `iot-jobs-data`, `s3`) from its method and path, for the operations this
/// project calls; `None` for any other.
pub fn rest_operation(service: &str, method: &str, path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = (method, segments.as_slice());
    let name = match service {
        "iot" => match route {
            ("GET", ["certificates", _]) => "DescribeCertificate",
            ("PUT", ["certificates", _]) => "UpdateCertificate",
            ("DELETE", ["certificates", _]) => "DeleteCertificate",
            ("POST", ["certificates"]) => "CreateCertificateFromCsr",
            ("POST", ["certificate", "register"]) => "RegisterCertificate",
            ("POST", ["certificate", "register-no-ca"]) => "RegisterCertificateWithoutCA",
            ("GET", ["cacertificate", _]) => "DescribeCACertificate",
            ("GET", ["cacertificates"]) => "ListCACertificates",
            ("GET", ["certificates-by-ca", _]) => "ListCertificatesByCA",
            ("PUT", ["target-policies", _]) => "AttachPolicy",
            ("POST", ["target-policies", _]) => "DetachPolicy",
            ("POST", ["attached-policies", _]) => "ListAttachedPolicies",
            ("POST", ["things"]) => "RegisterThing",
            ("POST", ["things", _]) => "CreateThing",
            ("GET", ["things", _]) => "DescribeThing",
            ("PATCH", ["things", _]) => "UpdateThing",
            ("DELETE", ["things", _]) => "DeleteThing",
            ("PUT", ["things", _, "principals"]) => "AttachThingPrincipal",
            ("GET", ["things", _, "principals"]) => "ListThingPrincipals",
            ("DELETE", ["things", _, "principals"]) => "DetachThingPrincipal",
            ("GET", ["things", _, "jobs", _]) => "DescribeJobExecution",
            ("GET", ["principals", "things"]) => "ListPrincipalThings",
            ("PUT", ["thing-groups", "addThingToThingGroup"]) => "AddThingToThingGroup",
            ("PUT", ["thing-groups", "removeThingFromThingGroup"]) => "RemoveThingFromThingGroup",
            ("POST", ["keys-and-certificate"]) => "CreateKeysAndCertificate",
            ("PUT", ["jobs", _]) => "CreateJob",
            ("GET", ["jobs", _]) => "DescribeJob",
            ("GET", ["jobs"]) => "ListJobs",
            _ => return None,
        },
        "iot-jobs-data" => match route {
            ("GET", ["things", _, "jobs", _]) => "DescribeJobExecution",
            ("POST", ["things", _, "jobs", _]) => "UpdateJobExecution",
            ("PUT", ["things", _, "jobs", "$next"]) => "StartNextPendingJobExecution",
            ("GET", ["things", _, "jobs"]) => "GetPendingJobExecutions",
            _ => return None,
        },
        // Path-style addressing (the emulator's): /bucket/key.
        "s3" => match route {
            ("PUT", [_, _, ..]) => "PutObject",
            ("GET", [_, _, ..]) => "GetObject",
            ("HEAD", [_, _, ..]) => "HeadObject",
            ("DELETE", [_, _, ..]) => "DeleteObject",
            ("PUT", [_]) => "CreateBucket",
            ("GET", [_]) => "ListObjects",
            _ => return None,
        },
        _ => return None,
    };
    Some(name)
}

/// For an unnamed REST route: the method, the first path segment, and `*`
/// for every later one (`GET /widgets/*`), so that ids do not make an
/// action each.
pub fn rest_route_pattern(method: &str, path: &str) -> String {
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or_default();
    let rest: String = segments.map(|_| "/*").collect();
    format!("{method} /{first}{rest}")
}

/// The HTTP answer AWS gives a throttled request of `service`, in the form
/// the AWS SDK for Rust reads its error code from:
///
/// - JSON protocols (`X-Amz-Target`; DynamoDB, KMS…): HTTP 400 with
///   `__type` in the body, the DynamoDB one namespaced
///   (`com.amazonaws.dynamodb.v20120810#ThrottlingException`);
/// - S3 (REST-XML): HTTP 503 `SlowDown`;
/// - REST-JSON (IoT, IoT data, IoT jobs data): HTTP 429 with
///   `x-amzn-ErrorType: ThrottlingException` and `{"message": "Rate exceeded"}`.
///
/// Each code is in the SDK's own list of throttling errors
/// (`aws_runtime::retries::classifiers::THROTTLING_ERRORS`), which its retry
/// classifier and `onboarding_aws`'s error mapping both use.
pub fn throttle_response(service: &str, method: &str, json_protocol: Option<&str>) -> Vec<u8> {
    let protocol = ErrorProtocol::of(service, json_protocol);
    let (status, code, message) = match protocol {
        ErrorProtocol::Json { .. } if service == "dynamodb" => (
            "400 Bad Request",
            "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            "Rate exceeded",
        ),
        ErrorProtocol::Json { .. } => ("400 Bad Request", "ThrottlingException", "Rate exceeded"),
        ErrorProtocol::S3 => ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
        ErrorProtocol::RestJson => ("429 Too Many Requests", "ThrottlingException", "Rate exceeded"),
    };
    error_answer(protocol, method, status, code, message, "proxy-throttled")
}

/// Where a service's error answer carries its code, by protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorProtocol<'a> {
    /// JSON protocols (`X-Amz-Target`; DynamoDB, KMS…): `__type` in the body,
    /// the body in the request's own content type.
    Json { content_type: &'a str },
    /// S3 (REST-XML): `<Error><Code>…</Code>` in an XML body.
    S3,
    /// REST-JSON (IoT, IoT data, IoT jobs data): the `x-amzn-ErrorType` header.
    RestJson,
}

impl<'a> ErrorProtocol<'a> {
    /// The protocol of a request to `service`; `json_protocol` is its JSON
    /// content type when it names an `X-Amz-Target`.
    pub fn of(service: &str, json_protocol: Option<&'a str>) -> Self {
        match json_protocol {
            Some(content_type) => Self::Json { content_type },
            None if service == "s3" => Self::S3,
            None => Self::RestJson,
        }
    }
}

/// An error answer as AWS sends it in `protocol`: the `status` line, the
/// error `code` where the protocol carries it, `message`, and a request id
/// (no body for `HEAD`).
pub fn error_answer(
    protocol: ErrorProtocol<'_>,
    method: &str,
    status: &str,
    code: &str,
    message: &str,
    request_id: &str,
) -> Vec<u8> {
    let (content_type, error_type, body) = match protocol {
        ErrorProtocol::Json { content_type } => (
            content_type,
            None,
            serde_json::json!({"__type": code, "message": message}).to_string(),
        ),
        ErrorProtocol::S3 => (
            "application/xml",
            None,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
            ),
        ),
        ErrorProtocol::RestJson => (
            "application/json",
            Some(code),
            serde_json::json!({"message": message}).to_string(),
        ),
    };
    let body = if method == "HEAD" { String::new() } else { body };
    let error_type = error_type.map_or_else(String::new, |t| format!("x-amzn-errortype: {t}\r\n"));
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{error_type}\
         x-amzn-requestid: {request_id}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = TokenBucket::for_quota(10.0, ms(0));
        let burst = (0..25).filter(|_| bucket.try_take(ms(0))).count();
        assert_eq!(burst, 10, "a full bucket holds one second's worth");
        assert!(!bucket.try_take(ms(0)));
        assert!(!bucket.try_take(ms(99)), "0.99 of a token after 99 ms");
        assert!(bucket.try_take(ms(100)), "one token per 100 ms at 10/s");
        assert!(!bucket.try_take(ms(150)));
        // Over the next 10 s, one request every 10 ms: 100 admitted, one per 100 ms.
        let admitted = (1..=1000).filter(|i| bucket.try_take(ms(100 + i * 10))).count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn a_bucket_never_holds_more_than_its_capacity() {
        let mut bucket = TokenBucket::for_quota(15.0, ms(0));
        assert!((bucket.available(ms(0)) - 15.0).abs() < 1e-9);
        for _ in 0..15 {
            assert!(bucket.try_take(ms(0)));
        }
        assert!((bucket.available(Duration::from_secs(3600)) - 15.0).abs() < 1e-9);
        let burst = (0..40).filter(|_| bucket.try_take(Duration::from_secs(3600))).count();
        assert_eq!(burst, 15);
    }

    #[test]
    fn a_clock_read_out_of_order_adds_no_tokens() {
        let mut bucket = TokenBucket::for_quota(1.0, ms(1000));
        assert!(bucket.try_take(ms(1000)));
        assert!(!bucket.try_take(ms(500)), "earlier than the last reading");
        assert!(!bucket.try_take(ms(1999)));
        assert!(bucket.try_take(ms(2000)));
    }

    #[test]
    fn a_fractional_or_zero_quota() {
        let mut half = TokenBucket::new(0.5, 1.0, ms(0));
        assert!(half.try_take(ms(0)));
        assert!(!half.try_take(ms(1999)));
        assert!(half.try_take(ms(2000)));
        let mut slow = TokenBucket::for_quota(0.1, ms(0));
        assert!(slow.try_take(ms(0)), "a burst of at least one");
        assert!(!slow.try_take(ms(9999)));
        assert!(slow.try_take(ms(10_000)));
        let mut zero = TokenBucket::for_quota(0.0, ms(0));
        assert!(!zero.try_take(ms(0)));
        assert!(!zero.try_take(Duration::from_secs(1000)));
    }

    #[test]
    fn the_defaults_can_be_scaled_and_overridden() {
        let defaults = Quotas::aws_defaults();
        assert_eq!(defaults.iter().count(), AWS_DEFAULTS.len());
        assert_eq!(defaults.limit("iot", "DescribeCertificate"), Some(10.0));
        assert_eq!(defaults.limit("iot", "AttachPolicy"), Some(15.0));
        assert_eq!(defaults.limit("dynamodb", "PutItem"), None);
        let raised = Quotas::aws_defaults()
            .scaled(10.0)
            .with("iot", "DescribeCertificate", 50.0)
            .with("dynamodb", "PutItem", 1000.0)
            .without("iot", "CreateThing");
        assert_eq!(raised.limit("iot", "UpdateCertificate"), Some(100.0));
        assert_eq!(raised.limit("iot", "DescribeCertificate"), Some(50.0));
        assert_eq!(raised.limit("dynamodb", "PutItem"), Some(1000.0));
        assert_eq!(raised.limit("iot", "CreateThing"), None);
        assert_eq!(Quotas::none().iter().count(), 0);
        for d in AWS_DEFAULTS {
            assert!(
                d.per_second > 0.0 && d.source.starts_with("https://docs.aws.amazon.com/"),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_limiter_throttles_per_action_and_counts() {
        let mut limiter = Limiter::new(Some(Quotas::none().with("iot", "DescribeCertificate", 10.0)));
        let describe = Action::new("iot", "DescribeCertificate");
        let put = Action::new("dynamodb", "PutItem");
        // 40 at once: 10 admitted.
        let admitted = (0..40)
            .filter(|_| limiter.admit(&describe, ms(0)) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
        // Unlimited actions are counted, never throttled.
        for _ in 0..40 {
            assert_eq!(limiter.admit(&put, ms(0)), Verdict::Admit);
        }
        // 1.5 s later, 10 more: the bucket is full again.
        let admitted = (0..10)
            .filter(|_| limiter.admit(&describe, ms(1500)) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
        let report = limiter.report();
        let d = report.get("iot", "DescribeCertificate").cloned();
        let d = d.unwrap_or_else(|| panic!("no DescribeCertificate in {report}"));
        assert_eq!(
            (d.calls, d.throttled, d.peak_per_second, d.quota),
            (20, 30, 10, Some(10.0))
        );
        let p = report
            .get("dynamodb", "PutItem")
            .map(|p| (p.calls, p.throttled, p.quota));
        assert_eq!(p, Some((40, 0, None)));
        assert_eq!((report.total_calls(), report.total_throttled()), (60, 30));
        let table = report.to_string();
        assert!(
            table.contains("| iot:DescribeCertificate | 10 | 20 | 30 | 10 |"),
            "{table}"
        );
        assert!(table.contains("| dynamodb:PutItem | - | 40 | 0 | 40 |"), "{table}");
        limiter.clear_counters();
        assert!(limiter.report().actions.is_empty());
    }

    #[test]
    fn the_peak_is_the_most_calls_in_any_one_second_window() {
        let mut limiter = Limiter::new(None);
        let action = Action::new("iot", "UpdateCertificate");
        // 5 calls at 0..400 ms, 5 at 900..1300 ms. The window ending at a
        // call holds the calls of the second before it, (t - 1 s, t].
        for t in [0, 100, 200, 300, 400, 900, 1000, 1100, 1200, 1300] {
            limiter.admit(&action, ms(t));
        }
        // [0, 900] holds 6 (0..400 and 900), and so does every later
        // window: (300, 1300] holds 400 and 900..1300.
        let peak = limiter
            .report()
            .get("iot", "UpdateCertificate")
            .map(|a| a.peak_per_second);
        assert_eq!(peak, Some(6));
        // A steady 10/s for 5 s never shows more than 10 in a second.
        let mut limiter = Limiter::new(Some(Quotas::none().with("iot", "UpdateCertificate", 10.0)));
        for i in 0..500 {
            limiter.admit(&action, ms(i * 10));
        }
        let a = limiter.report().get("iot", "UpdateCertificate").cloned();
        let a = a.unwrap_or_else(|| panic!("no report"));
        // The full bucket's burst of 10 at the start plus the refill
        // within the first second: at most 2× the quota, less one.
        assert!(a.peak_per_second <= 19, "{a:?}");
        assert_eq!(a.calls, 10 + 49, "burst, then one per 100 ms");
        assert_eq!(a.calls + a.throttled, 500);
    }

    #[test]
    fn new_quotas_refill_the_buckets_and_keep_the_counters() {
        let action = Action::new("iot", "AttachPolicy");
        let mut limiter = Limiter::new(Some(Quotas::aws_defaults()));
        let admitted = (0..20)
            .filter(|_| limiter.admit(&action, ms(0)) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 15);
        limiter.set_quotas(Some(Quotas::aws_defaults().scaled(10.0)));
        let admitted = (0..200)
            .filter(|_| limiter.admit(&action, ms(0)) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 150);
        limiter.set_quotas(None);
        assert_eq!(limiter.admit(&action, ms(0)), Verdict::Admit);
        let a = limiter
            .report()
            .get("iot", "AttachPolicy")
            .map(|a| (a.calls, a.throttled, a.quota));
        assert_eq!(a, Some((166, 55, None)));
    }

    #[test]
    fn faults_are_counted_by_kind_beside_the_calls() {
        let mut limiter = Limiter::new(None);
        let put = Action::new("dynamodb", "PutItem");
        for _ in 0..10 {
            limiter.admit(&put, ms(0));
        }
        limiter.faulted(&put, FaultKind::InternalError);
        limiter.faulted(&put, FaultKind::ResetAfterForward);
        limiter.faulted(&put, FaultKind::ResetAfterForward);
        let report = limiter.report();
        let faults = report.get("dynamodb", "PutItem").map(|a| (a.calls, a.faults));
        let expected = FaultCounts {
            internal_error: 1,
            reset_after_forward: 2,
            ..FaultCounts::default()
        };
        assert_eq!(faults, Some((10, expected)));
        assert_eq!(report.total_faults().total(), 3);
        assert_eq!(report.total_faults().forwarded(), 2);
        let table = report.to_string();
        assert!(
            table.contains("| dynamodb:PutItem | - | 10 | 0 | 10 | 1/0/0/0/0/2 |"),
            "{table}"
        );
    }

    #[test]
    fn rest_routes_name_their_operations() {
        let cases = [
            ("iot", "GET", "/certificates/abc", Some("DescribeCertificate")),
            ("iot", "PUT", "/certificates/abc", Some("UpdateCertificate")),
            ("iot", "POST", "/certificates", Some("CreateCertificateFromCsr")),
            ("iot", "GET", "/cacertificate/ca1", Some("DescribeCACertificate")),
            ("iot", "PUT", "/target-policies/p", Some("AttachPolicy")),
            ("iot", "POST", "/things/t1", Some("CreateThing")),
            ("iot", "POST", "/things", Some("RegisterThing")),
            ("iot", "PUT", "/things/t1/principals", Some("AttachThingPrincipal")),
            ("iot", "GET", "/things/t1/principals", Some("ListThingPrincipals")),
            (
                "iot",
                "PUT",
                "/thing-groups/addThingToThingGroup",
                Some("AddThingToThingGroup"),
            ),
            ("iot", "POST", "/keys-and-certificate", Some("CreateKeysAndCertificate")),
            ("iot", "PUT", "/jobs/j1", Some("CreateJob")),
            ("iot", "GET", "/things/t1/jobs/j1", Some("DescribeJobExecution")),
            (
                "iot-jobs-data",
                "GET",
                "/things/t1/jobs/j1",
                Some("DescribeJobExecution"),
            ),
            (
                "iot-jobs-data",
                "POST",
                "/things/t1/jobs/j1",
                Some("UpdateJobExecution"),
            ),
            ("s3", "PUT", "/bucket/a/b.json", Some("PutObject")),
            ("iot", "GET", "/widgets/w1", None),
        ];
        for (service, method, path, expected) in cases {
            assert_eq!(
                rest_operation(service, method, path),
                expected,
                "{service} {method} {path}"
            );
        }
        assert_eq!(rest_route_pattern("GET", "/widgets/w1/parts"), "GET /widgets/*/*");
    }

    #[test]
    fn throttling_answers_in_each_protocol() {
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap_or_default();
        let iot = text(throttle_response("iot", "GET", None));
        assert!(iot.starts_with("HTTP/1.1 429 "), "{iot}");
        assert!(iot.contains("x-amzn-errortype: ThrottlingException\r\n"), "{iot}");
        assert!(iot.ends_with("{\"message\":\"Rate exceeded\"}"), "{iot}");
        let ddb = text(throttle_response(
            "dynamodb",
            "POST",
            Some("application/x-amz-json-1.0"),
        ));
        assert!(ddb.starts_with("HTTP/1.1 400 "), "{ddb}");
        assert!(
            ddb.contains("\"__type\":\"com.amazonaws.dynamodb.v20120810#ThrottlingException\""),
            "{ddb}"
        );
        let s3 = text(throttle_response("s3", "PUT", None));
        assert!(s3.starts_with("HTTP/1.1 503 "), "{s3}");
        assert!(s3.contains("<Code>SlowDown</Code>"), "{s3}");
        let head = text(throttle_response("s3", "HEAD", None));
        assert!(head.contains("content-length: 0\r\n"), "{head}");
    }
}
