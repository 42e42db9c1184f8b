//! Time that passes: the pacing clock of the rotator.

use std::future::Future;
use std::time::{Duration, Instant};

/// Waits between IoT calls. The function implements it with
/// `tokio::time::sleep` (the domain has no runtime).
pub trait Pacer: Send + Sync {
    /// A monotonic clock.
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}
