//! Client-side pacing of AWS IoT control-plane calls: one token bucket per
//! API action in each container, refilled at the account's quota for that
//! action divided by the containers that share it.
//!
//! AWS IoT's control-plane quotas are per account and Region, per second,
//! per action (DescribeCertificate and UpdateCertificate 10 by default). A
//! burst of registrations sent as fast as the containers can go spends most
//! of its calls on throttling errors and retries, and a retry budget that
//! runs out returns the event to the queue. Paced, each container sends at
//! most its share, and the SDK's retries are left for the throttles that
//! other callers in the account cause.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// AWS IoT's default control-plane quotas (requests per second, per account
/// and Region) for the calls this project makes: the same table as the test
/// quota proxy's (`onboarding_test_support::quota`), from the AWS IoT Core
/// and Device Management quota pages
/// (<https://docs.aws.amazon.com/general/latest/gr/iot-core.html>) as the
/// project's notes record them (none could be read on a stored copy of the
/// page: check Service Quotas for your account). Actions not listed are not
/// paced; raised quotas, and quotas for other actions, are given with
/// [`ApiQuotas::parse`].
pub const IOT_DEFAULT_QUOTAS: &[(&str, f64)] = &[
    ("DescribeCertificate", 10.0),
    ("UpdateCertificate", 10.0),
    ("DescribeCACertificate", 10.0),
    ("ListThingPrincipals", 10.0),
    ("AttachPolicy", 15.0),
    ("CreateThing", 100.0),
    ("AttachThingPrincipal", 100.0),
    ("AddThingToThingGroup", 100.0),
    ("ListCertificatesByCA", 10.0),
    ("CreateCertificateFromCsr", 15.0),
    ("CreateKeysAndCertificate", 10.0),
    ("CreateJob", 10.0),
    ("DescribeJobExecution", 10.0),
    ("RegisterThing", 10.0),
    // Retirement (`onboard device retire`), as the notes record them
    // (unconfirmed: check Service Quotas).
    ("DescribeThing", 350.0),
    ("ListThingGroupsForThing", 10.0),
    ("ListAttachedPolicies", 10.0),
    ("ListPrincipalThings", 10.0),
    ("DetachPolicy", 15.0),
    ("DetachThingPrincipal", 100.0),
    ("DeleteCertificate", 10.0),
    ("RemoveThingFromThingGroup", 100.0),
    ("RemoveThingFromBillingGroup", 30.0),
    ("DeleteThing", 100.0),
    ("CancelJob", 10.0),
    // The bulk import's registrations: about 10 per second each by the
    // project's notes, unconfirmed like the rest of this table (the API
    // reference lists ThrottlingException for both, and no rate).
    ("RegisterCertificate", 10.0),
    ("RegisterCertificateWithoutCA", 10.0),
];

/// Quotas per action (requests per second).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiQuotas(HashMap<String, f64>);

/// A quota list that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}: expected Action=PerSecond pairs separated by commas, e.g. DescribeCertificate=50,UpdateCertificate=50")]
pub struct QuotaSyntax(String);

impl Default for ApiQuotas {
    fn default() -> Self {
        Self(
            IOT_DEFAULT_QUOTAS
                .iter()
                .map(|(action, quota)| ((*action).to_string(), *quota))
                .collect(),
        )
    }
}

impl ApiQuotas {
    /// AWS's defaults with `overrides` (`Action=PerSecond,...`, e.g. an
    /// account's raised quotas) on top; an empty text keeps the defaults.
    ///
    /// # Errors
    /// [`QuotaSyntax`] for a pair that is not `Action=N` with N > 0.
    pub fn parse(overrides: &str) -> Result<Self, QuotaSyntax> {
        let mut quotas = Self::default();
        for pair in overrides.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (action, value) = pair.split_once('=').ok_or_else(|| QuotaSyntax(pair.to_string()))?;
            let action = action.trim();
            let value: f64 = value.trim().parse().map_err(|_| QuotaSyntax(pair.to_string()))?;
            if action.is_empty()
                || !action.chars().all(|c| c.is_ascii_alphanumeric())
                || !value.is_finite()
                || value <= 0.0
            {
                return Err(QuotaSyntax(pair.to_string()));
            }
            quotas.0.insert(action.to_string(), value);
        }
        Ok(quotas)
    }

    /// The quota of `action`, if it has one.
    pub fn get(&self, action: &str) -> Option<f64> {
        self.0.get(action).copied()
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// One token bucket per action, each refilled at its quota ÷ `share` and
/// holding at most one second of it (at least one call), so that `share`
/// containers together stay at or under the quota. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ApiPacer {
    buckets: Arc<HashMap<String, Mutex<Bucket>>>,
}

impl ApiPacer {
    /// A pacer for `share` containers calling under `quotas`.
    pub fn new(quotas: &ApiQuotas, share: u32) -> Self {
        let share = f64::from(share.max(1));
        let now = Instant::now();
        let buckets = quotas
            .0
            .iter()
            .map(|(action, quota)| {
                let rate = quota / share;
                let capacity = rate.max(1.0);
                let bucket = Bucket {
                    rate,
                    capacity,
                    // Start with one call's worth: a fresh container must
                    // not add a second of burst to the ones already busy.
                    tokens: 1.0,
                    at: now,
                };
                (action.clone(), Mutex::new(bucket))
            })
            .collect();
        Self {
            buckets: Arc::new(buckets),
        }
    }

    /// Waits until `action` may be called (at once for an action without a quota).
    pub async fn ready(&self, action: &str) {
        let Some(bucket) = self.buckets.get(action) else {
            return;
        };
        loop {
            let wait = bucket.lock().await.take(Instant::now());
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// The rate `action` is paced at (calls per second), if it is paced.
    pub async fn rate(&self, action: &str) -> Option<f64> {
        Some(self.buckets.get(action)?.lock().await.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(text: &str) -> ApiQuotas {
        ApiQuotas::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn overrides_replace_defaults_and_bad_pairs_are_refused() {
        let quotas = quotas(" DescribeCertificate=100, UpdateCertificate = 50 ,");
        assert_eq!(quotas.get("DescribeCertificate"), Some(100.0));
        assert_eq!(quotas.get("UpdateCertificate"), Some(50.0));
        assert_eq!(quotas.get("AttachPolicy"), Some(15.0), "defaults kept");
        assert_eq!(super::ApiQuotas::parse(""), Ok(ApiQuotas::default()));
        for bad in [
            "DescribeCertificate",
            "DescribeCertificate=0",
            "=5",
            "Describe Certificate=5",
            "X=-1",
            "X=abc",
        ] {
            assert!(ApiQuotas::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_container_keeps_to_its_share_of_the_quota() {
        // Two containers share DescribeCertificate's 10/s: 5/s each.
        let pacer = ApiPacer::new(&ApiQuotas::default(), 2);
        assert_eq!(pacer.rate("DescribeCertificate").await, Some(5.0));
        let start = Instant::now();
        for _ in 0..51 {
            pacer.ready("DescribeCertificate").await;
        }
        // One call at once, then 50 at 5/s.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((elapsed - 10.0).abs() < 0.01, "{elapsed}");
        // Another action has its own bucket; an action without a quota waits for nothing.
        let before = Instant::now();
        pacer.ready("AttachPolicy").await;
        pacer.ready("ListThings").await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_bucket() {
        let pacer = ApiPacer::new(&quotas("UpdateCertificate=20"), 1);
        let start = Instant::now();
        let calls = (0..41).map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move { pacer.ready("UpdateCertificate").await })
        });
        for call in futures::future::join_all(calls).await {
            assert!(call.is_ok());
        }
        // 41 calls at 20/s after the first: two seconds, never faster.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((elapsed - 2.0).abs() < 0.01, "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_holds_at_most_one_second() {
        let pacer = ApiPacer::new(&ApiQuotas::default(), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        // 10 at once (a full second's worth), then 10/s.
        for _ in 0..20 {
            pacer.ready("UpdateCertificate").await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!((elapsed - 1.0).abs() < 0.01, "{elapsed}");
    }
}
