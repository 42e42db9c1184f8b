//! The configuration as a container keeps it between invocations.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::lock::Mutex;

use crate::policy::config::OnboardingConfig;
use crate::policy::profile::DeviceProfile;
use crate::ports::PortResult;

/// The configuration as a container keeps it between invocations: loaded at
/// most once per TTL, with the environment's default profile (and the CAs
/// bound to it) merged in.
pub struct ConfigCache {
    ttl: Duration,
    default_profile: Option<(DeviceProfile, Vec<String>)>,
    cached: Mutex<Option<(Instant, Arc<OnboardingConfig>)>>,
}

impl ConfigCache {
    pub fn new(ttl: Duration, default_profile: Option<(DeviceProfile, Vec<String>)>) -> Self {
        Self {
            ttl,
            default_profile,
            cached: Mutex::new(None),
        }
    }

    /// The configuration, and whether it came from the cache; `fresh`
    /// bypasses the cache (and refills it). `load` reads the stored one.
    ///
    /// # Errors
    /// What `load` fails with.
    pub async fn get<F>(&self, fresh: bool, load: impl FnOnce() -> F) -> PortResult<(Arc<OnboardingConfig>, bool)>
    where
        F: Future<Output = PortResult<OnboardingConfig>>,
    {
        let mut cached = self.cached.lock().await;
        if !fresh
            && let Some((at, config)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok((config.clone(), true));
        }
        let mut config = load().await?;
        if let Some((profile, cas)) = &self.default_profile {
            config.merge_default(profile.clone(), cas);
        }
        let config = Arc::new(config);
        *cached = Some((Instant::now(), config.clone()));
        Ok((config, false))
    }
}
