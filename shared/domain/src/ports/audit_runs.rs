//! The scheduled fleet audit's own items in the inventory table: the run in
//! progress (one item, only ever written by a conditional write on its
//! version, so two overlapping invocations never both start a run or both
//! advance the same step), the findings of each run (keyed by run, check and
//! resource: a retried page overwrites instead of duplicating), and the
//! latest completed run's summary (what `onboard fleet audit --last` reads).
//! Also how much time the invocation has left.

use std::future::Future;

use crate::checks::audit::Finding;
use crate::ports::{Page, PortResult};

/// The run state item as stored: the domain's JSON text and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditRun {
    /// The state, JSON, as the domain wrote it (and as anyone with write
    /// access to the table may have rewritten it: the domain checks it).
    pub state: String,
    /// Incremented by every write; the condition of the next one.
    pub version: u64,
}

/// The scheduled audit's items in the inventory.
pub trait AuditRunStore: Send + Sync {
    /// The run state item; `None` when no run ever started.
    fn audit_run(&self) -> impl Future<Output = PortResult<Option<StoredAuditRun>>> + Send;
    /// Writes `state` as version `expected + 1` (1 when `expected` is
    /// `None`) on condition that the stored version is still `expected`
    /// (`None`: no item at all). `false` when the condition failed: another
    /// invocation wrote first, and this one must stop.
    fn save_audit_run(&self, expected: Option<u64>, state: &str) -> impl Future<Output = PortResult<bool>> + Send;
    /// Writes findings of run `run_id`, each keyed by its check, resource
    /// kind and resource id (written again, it overwrites), expiring (TTL)
    /// at `expires_at` (Unix seconds).
    fn put_audit_findings(
        &self,
        run_id: i64,
        findings: &[Finding],
        expires_at: i64,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// The stored findings of run `run_id`, one page of at most `limit`
    /// from the opaque `cursor` on.
    fn audit_findings_page(
        &self,
        run_id: i64,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<Finding>>> + Send;
    /// The latest completed run's summary (JSON, as the domain wrote it).
    fn latest_audit(&self) -> impl Future<Output = PortResult<Option<String>>> + Send;
    /// Stores `summary` as the latest completed run's, unless the summary of
    /// a later run (a larger `run_id`) is already stored: then `false`.
    fn save_latest_audit(&self, run_id: i64, summary: &str) -> impl Future<Output = PortResult<bool>> + Send;
}

/// Whether the invocation may start another step (the Lambda's remaining
/// time, less a margin for the step's own calls). The function implements it
/// from the invocation's deadline; the domain reads no clock.
pub trait TimeLeft: Send + Sync {
    fn time_left(&self) -> bool;
}
