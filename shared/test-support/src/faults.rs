//! Faults the test proxy injects into a fraction of the calls it forwards.
//!
//! AWS answers a small share of calls with a server error, lets some time
//! out, and resets some connections; the SDK retries them, and a call it
//! gives up on, or one whose answer was lost after the service applied it,
//! reaches the caller. [`Faults`] makes the proxy do the same to a fraction
//! ([`Faults::rate`]) of the calls it would forward, chosen by a
//! pseudo-random sequence from [`Faults::seed`]: the same seed gives the
//! same sequence of decisions, so the n-th call the proxy admits is faulted
//! in every run alike (which request is the n-th depends on the order
//! concurrent callers arrive in). Each [`FaultKind`] is a failure an AWS SDK
//! client really sees: a 5xx answer in the service's own error shape, an
//! attempt timeout, a connection reset; the timeouts and resets either
//! before the call is forwarded (it had no effect) or after (it took effect
//! and its answer is lost).

use std::fmt;
use std::time::Duration;

use crate::proxy::{Matcher, RecordedRequest};
use crate::quota::{ErrorProtocol, error_answer};

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Answered HTTP 500 in the service's own error shape, not forwarded
    /// (IoT `InternalFailureException`, DynamoDB `InternalServerError`, S3
    /// `InternalError`, KMS `KMSInternalException`, other JSON services
    /// `InternalFailure`).
    InternalError,
    /// Answered HTTP 503 in the service's own error shape, not forwarded
    /// (IoT `ServiceUnavailableException`, S3 and the JSON services
    /// `ServiceUnavailable`).
    Unavailable,
    /// Held without an answer for [`Faults::hold`] (longer than the SDK's
    /// attempt timeout), then the connection is closed; never forwarded.
    TimeoutBeforeForward,
    /// Forwarded (the emulator applies it), its answer dropped, the
    /// connection held silent for [`Faults::hold`] from its arrival, then
    /// closed.
    TimeoutAfterForward,
    /// The connection reset (`SO_LINGER` 0: a TCP RST) without an answer;
    /// never forwarded.
    ResetBeforeForward,
    /// Forwarded (the emulator applies it), its answer dropped, then the
    /// connection reset.
    ResetAfterForward,
}

impl FaultKind {
    /// Every kind, in the order of [`FaultCounts`]' fields.
    pub const ALL: [Self; 6] = [
        Self::InternalError,
        Self::Unavailable,
        Self::TimeoutBeforeForward,
        Self::TimeoutAfterForward,
        Self::ResetBeforeForward,
        Self::ResetAfterForward,
    ];

    /// Whether the emulator receives (and applies) the call.
    pub fn forwards(self) -> bool {
        matches!(self, Self::TimeoutAfterForward | Self::ResetAfterForward)
    }

    /// A short name: `500`, `503`, `timeout-before`, `timeout-after`,
    /// `reset-before`, `reset-after`.
    pub fn name(self) -> &'static str {
        match self {
            Self::InternalError => "500",
            Self::Unavailable => "503",
            Self::TimeoutBeforeForward => "timeout-before",
            Self::TimeoutAfterForward => "timeout-after",
            Self::ResetBeforeForward => "reset-before",
            Self::ResetAfterForward => "reset-after",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which calls a proxy faults, and how.
///
/// `Faults::new(0.05, 7)` faults 5% of the calls, the six kinds evenly (so
/// a third each of 5xx answers, timeouts and resets, half of the timeouts
/// and resets after forwarding); [`Faults::kinds`] and [`Faults::only`]
/// narrow it, [`Faults::hold`] sets how long a timeout holds the call.
#[derive(Debug, Clone)]
pub struct Faults {
    /// The fraction of the admitted calls faulted, 0 to 1 (clamped).
    pub rate: f64,
    /// The seed of the pseudo-random sequence of decisions.
    pub seed: u64,
    /// The kinds and their weights: a faulted call is of a kind with
    /// probability weight ÷ total. Kinds of weight 0, or absent, never occur.
    pub kinds: Vec<(FaultKind, u32)>,
    /// How long a timeout holds a call before closing its connection:
    /// longer than the client's attempt timeout.
    pub hold: Duration,
    /// The calls that may be faulted (`None`: all). Calls outside it draw
    /// no decision.
    pub only: Option<Matcher>,
}

impl Faults {
    /// The default [`Faults::hold`]: 6 s, over the functions' SDK attempt
    /// timeout of 5 s (`onboarding_aws::SdkSettings`).
    pub const DEFAULT_HOLD: Duration = Duration::from_secs(6);

    /// `rate` of the calls faulted, every kind evenly, from `seed`.
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            kinds: FaultKind::ALL.iter().map(|k| (*k, 1)).collect(),
            hold: Self::DEFAULT_HOLD,
            only: None,
        }
    }

    /// `rate` of the calls faulted, all of one kind.
    pub fn of_kind(kind: FaultKind, rate: f64, seed: u64) -> Self {
        Self::new(rate, seed).kinds(&[(kind, 1)])
    }

    /// The kinds and their weights (replacing the even mix).
    #[must_use]
    pub fn kinds(mut self, kinds: &[(FaultKind, u32)]) -> Self {
        self.kinds = kinds.to_vec();
        self
    }

    /// How long a timeout holds a call.
    #[must_use]
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Only the calls `matcher` selects may be faulted.
    #[must_use]
    pub fn only(mut self, matcher: impl Into<Matcher>) -> Self {
        self.only = Some(matcher.into());
        self
    }

    /// Whether `request` is one of the calls that may be faulted.
    pub fn applies_to(&self, request: &RecordedRequest) -> bool {
        self.only.as_ref().is_none_or(|m| m.matches(request))
    }

    /// The first `n` decisions a proxy with these faults makes, in order
    /// (`None`: not faulted): what a run of `n` calls gets.
    pub fn decisions(&self, n: usize) -> Vec<Option<FaultKind>> {
        let mut dice = FaultDice::new(self.clone());
        (0..n).map(|_| dice.roll()).collect()
    }
}

/// The proxy's running sequence of decisions for one [`Faults`].
#[derive(Debug, Clone)]
pub struct FaultDice {
    faults: Faults,
    state: u64,
}

impl FaultDice {
    /// The sequence from the start of `faults.seed`.
    pub fn new(faults: Faults) -> Self {
        let state = faults.seed;
        Self { faults, state }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The next decision. Every call draws twice (whether, and which kind),
    /// so that the sequence at one rate is the same calls' sequence at
    /// another: with one seed, the calls faulted at 1% are among those
    /// faulted at 5%.
    pub fn roll(&mut self) -> Option<FaultKind> {
        let whether = unit(self.next());
        let which = unit(self.next());
        if whether >= self.faults.rate.clamp(0.0, 1.0) {
            return None;
        }
        let total: u64 = self.faults.kinds.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        // Truncation is the point: a uniform index in 0..total.
        let mut pick = ((which * total as f64) as u64).min(total - 1);
        for (kind, weight) in &self.faults.kinds {
            let weight = u64::from(*weight);
            if pick < weight {
                return Some(*kind);
            }
            pick -= weight;
        }
        None
    }

    /// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and good enough
    /// to pick calls.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A draw as a number in [0, 1), from its top 53 bits.
fn unit(draw: u64) -> f64 {
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub internal_error: u64,
    pub unavailable: u64,
    pub timeout_before_forward: u64,
    pub timeout_after_forward: u64,
    pub reset_before_forward: u64,
    pub reset_after_forward: u64,
}

impl FaultCounts {
    /// The count of one kind.
    pub fn get(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::InternalError => self.internal_error,
            FaultKind::Unavailable => self.unavailable,
            FaultKind::TimeoutBeforeForward => self.timeout_before_forward,
            FaultKind::TimeoutAfterForward => self.timeout_after_forward,
            FaultKind::ResetBeforeForward => self.reset_before_forward,
            FaultKind::ResetAfterForward => self.reset_after_forward,
        }
    }

    /// Counts one more of `kind`.
    pub fn add(&mut self, kind: FaultKind) {
        let count = match kind {
            FaultKind::InternalError => &mut self.internal_error,
            FaultKind::Unavailable => &mut self.unavailable,
            FaultKind::TimeoutBeforeForward => &mut self.timeout_before_forward,
            FaultKind::TimeoutAfterForward => &mut self.timeout_after_forward,
            FaultKind::ResetBeforeForward => &mut self.reset_before_forward,
            FaultKind::ResetAfterForward => &mut self.reset_after_forward,
        };
        *count += 1;
    }

    /// Every kind's count added up.
    pub fn total(&self) -> u64 {
        FaultKind::ALL.iter().map(|k| self.get(*k)).sum()
    }

    /// The faults whose call reached the emulator (timeouts and resets after forwarding).
    pub fn forwarded(&self) -> u64 {
        FaultKind::ALL
            .iter()
            .filter(|k| k.forwards())
            .map(|k| self.get(*k))
            .sum()
    }

    /// Counts of the kinds in `decisions` (what [`Faults::decisions`] returns).
    pub fn of(decisions: &[Option<FaultKind>]) -> Self {
        let mut counts = Self::default();
        for kind in decisions.iter().flatten() {
            counts.add(*kind);
        }
        counts
    }
}

impl std::ops::AddAssign for FaultCounts {
    fn add_assign(&mut self, other: Self) {
        self.internal_error += other.internal_error;
        self.unavailable += other.unavailable;
        self.timeout_before_forward += other.timeout_before_forward;
        self.timeout_after_forward += other.timeout_after_forward;
        self.reset_before_forward += other.reset_before_forward;
        self.reset_after_forward += other.reset_after_forward;
    }
}

/// `500/503/timeout-before/timeout-after/reset-before/reset-after`, or `0`
/// when there were none (one table cell).
impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total() == 0 {
            return f.write_str("0");
        }
        let counts: Vec<String> = FaultKind::ALL.iter().map(|k| self.get(*k).to_string()).collect();
        f.write_str(&counts.join("/"))
    }
}

/// A fault the proxy injected at random.
#[derive(Debug, Clone)]
pub struct InjectedFault {
    pub request: RecordedRequest,
    pub kind: FaultKind,
}

/// The HTTP answer of an injected [`FaultKind::InternalError`] (`status`
/// 500) or [`FaultKind::Unavailable`] (503) to `request`, in the shape its
/// service uses, so that the AWS SDK for Rust reads the service's own code:
///
/// | service | 500 | 503 |
/// |---|---|---|
/// | JSON protocols (`X-Amz-Target`), DynamoDB | `__type` `com.amazonaws.dynamodb.v20120810#InternalServerError` | `…#ServiceUnavailable` |
/// | KMS | `KMSInternalException` | `ServiceUnavailable` |
/// | other JSON (SQS…) | `InternalFailure` | `ServiceUnavailable` |
/// | S3 (REST-XML) | `<Code>InternalError</Code>` | `<Code>ServiceUnavailable</Code>` |
/// | REST-JSON (IoT, IoT data, IoT jobs data) | `x-amzn-ErrorType: InternalFailureException` | `ServiceUnavailableException` |
///
/// Either status is transient to the SDK's retry classifier (and to
/// `onboarding_aws`'s error mapping).
pub fn server_error_response(request: &RecordedRequest, status: u16) -> Vec<u8> {
    const MESSAGE: &str = "fault injected by the test proxy";
    let unavailable = status == 503;
    let service = request.service().unwrap_or_default();
    let protocol = ErrorProtocol::of(service, request.json_protocol());
    let code = match (protocol, service, unavailable) {
        (ErrorProtocol::Json { .. }, "dynamodb", false) => "com.amazonaws.dynamodb.v20120810#InternalServerError",
        (ErrorProtocol::Json { .. }, "dynamodb", true) => "com.amazonaws.dynamodb.v20120810#ServiceUnavailable",
        (ErrorProtocol::Json { .. }, "kms", false) => "KMSInternalException",
        (ErrorProtocol::Json { .. }, _, false) => "InternalFailure",
        (ErrorProtocol::Json { .. } | ErrorProtocol::S3, _, true) => "ServiceUnavailable",
        (ErrorProtocol::S3, _, false) => "InternalError",
        (ErrorProtocol::RestJson, _, false) => "InternalFailureException",
        (ErrorProtocol::RestJson, _, true) => "ServiceUnavailableException",
    };
    let reason = if unavailable {
        "503 Service Unavailable"
    } else {
        "500 Internal Server Error"
    };
    error_answer(protocol, &request.method, reason, code, MESSAGE, "proxy-fault")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let faults = Faults::new(0.2, 42);
        assert_eq!(faults.decisions(1000), faults.decisions(1000));
        assert_ne!(faults.decisions(1000), Faults::new(0.2, 43).decisions(1000));
        assert!(Faults::new(0.0, 1).decisions(1000).iter().all(Option::is_none));
        assert!(Faults::new(1.0, 1).decisions(1000).iter().all(Option::is_some));
    }

    #[test]
    fn the_rate_and_the_mix_hold_over_many_calls() {
        let n = 60_000;
        for rate in [0.01, 0.05, 0.2] {
            let counts = FaultCounts::of(&Faults::new(rate, 9).decisions(n));
            let expected = rate * n as f64;
            // Within 5 standard deviations of a binomial.
            let sigma = (expected * (1.0 - rate)).sqrt();
            assert!(
                (counts.total() as f64 - expected).abs() < 5.0 * sigma,
                "{rate}: {counts:?}"
            );
            for kind in FaultKind::ALL {
                let share = counts.get(kind) as f64 / counts.total() as f64;
                assert!((share - 1.0 / 6.0).abs() < 0.05, "{rate} {kind}: {counts:?}");
            }
        }
    }

    #[test]
    fn a_lower_rate_faults_a_subset_of_the_same_calls() {
        let low = Faults::new(0.01, 5).decisions(5000);
        let high = Faults::new(0.05, 5).decisions(5000);
        for (l, h) in low.iter().zip(&high) {
            if l.is_some() {
                assert_eq!(l, h);
            }
        }
    }

    #[test]
    fn weights_choose_the_kinds() {
        let only = FaultCounts::of(&Faults::of_kind(FaultKind::ResetAfterForward, 1.0, 3).decisions(500));
        assert_eq!(only.reset_after_forward, 500);
        assert_eq!(only.forwarded(), 500);
        let mix = Faults::new(1.0, 3).kinds(&[(FaultKind::InternalError, 3), (FaultKind::TimeoutBeforeForward, 1)]);
        let counts = FaultCounts::of(&mix.decisions(4000));
        assert_eq!(counts.total(), 4000);
        assert_eq!(counts.internal_error + counts.timeout_before_forward, 4000);
        assert!((2800..3200).contains(&counts.internal_error), "{counts:?}");
        assert!(Faults::new(1.0, 3).kinds(&[]).decisions(10).iter().all(Option::is_none));
        assert_eq!(
            counts.to_string(),
            format!("{}/0/{}/0/0/0", counts.internal_error, counts.timeout_before_forward)
        );
        assert_eq!(FaultCounts::default().to_string(), "0");
    }

    fn request(method: &str, target: &str, service: &str, amz_target: Option<&str>) -> RecordedRequest {
        let mut headers = vec![(
            "authorization".to_string(),
            format!("AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/{service}/aws4_request, Signature=x"),
        )];
        if let Some(t) = amz_target {
            headers.push(("x-amz-target".into(), t.into()));
            headers.push(("content-type".into(), "application/x-amz-json-1.0".into()));
        }
        RecordedRequest {
            method: method.into(),
            target: target.into(),
            headers,
            body: Vec::new(),
            received: Duration::ZERO,
        }
    }

    #[test]
    fn server_errors_in_each_services_shape() {
        let text =
            |r: &RecordedRequest, status| String::from_utf8(server_error_response(r, status)).unwrap_or_default();
        let iot = request("GET", "/certificates/c", "iot", None);
        let a = text(&iot, 500);
        assert!(a.starts_with("HTTP/1.1 500 "), "{a}");
        assert!(a.contains("x-amzn-errortype: InternalFailureException\r\n"), "{a}");
        let a = text(&iot, 503);
        assert!(a.starts_with("HTTP/1.1 503 "), "{a}");
        assert!(a.contains("x-amzn-errortype: ServiceUnavailableException\r\n"), "{a}");
        let ddb = request("POST", "/", "dynamodb", Some("DynamoDB_20120810.PutItem"));
        let a = text(&ddb, 500);
        assert!(
            a.contains("\"__type\":\"com.amazonaws.dynamodb.v20120810#InternalServerError\""),
            "{a}"
        );
        let kms = request("POST", "/", "kms", Some("TrentService.Encrypt"));
        assert!(text(&kms, 500).contains("\"__type\":\"KMSInternalException\""));
        let sqs = request("POST", "/", "sqs", Some("AmazonSQS.SendMessage"));
        assert!(text(&sqs, 503).contains("\"__type\":\"ServiceUnavailable\""));
        let s3 = request("PUT", "/b/k", "s3", None);
        assert!(text(&s3, 500).contains("<Code>InternalError</Code>"));
        assert!(text(&s3, 503).contains("<Code>ServiceUnavailable</Code>"));
        let head = request("HEAD", "/b/k", "s3", None);
        assert!(text(&head, 500).contains("content-length: 0\r\n"));
    }
}
