//! The rotations table (in the inventory) as the rotation workflows use it.

use std::future::Future;

use crate::model::record::CertificateRecord;
use crate::policy::rotation::state::{Rotation, RotationState};
use crate::ports::{Page, PortResult};

/// The inventory as rotation uses it.
pub trait RotationInventory: Send + Sync {
    /// Provisioned certificates whose notAfter is before `until`, oldest
    /// first, from the sparse expiry index: the cost follows the number
    /// expiring, not the fleet.
    fn expiring(
        &self,
        until: i64,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<CertificateRecord>>> + Send;
    /// Rotations due at or before `now` (job deadlines, retries, deletions).
    fn due_rotations(
        &self,
        now: i64,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PortResult<Page<Rotation>>> + Send;
    fn rotation(&self, old_certificate_id: &str) -> impl Future<Output = PortResult<Option<Rotation>>> + Send;
    fn rotation_by_job(&self, job_id: &str) -> impl Future<Output = PortResult<Option<Rotation>>> + Send;
    /// Writes a rotation if the stored one is still `expected` (state and
    /// attempt; `None`: no rotation stored). False when another writer won.
    fn put_rotation(
        &self,
        rotation: &Rotation,
        expected: Option<(RotationState, u32)>,
    ) -> impl Future<Output = PortResult<bool>> + Send;
    /// The new certificate's record: provisioned for the same thing, in the expiry index.
    fn record_rotated_in(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<()>> + Send;
    /// The old certificate's record: retired, out of the expiry index.
    fn record_rotated_out(
        &self,
        old_certificate_id: &str,
        new_certificate_id: &str,
        now: i64,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// The rotator's saved position between runs.
    fn cursor(&self, name: &str) -> impl Future<Output = PortResult<Option<String>>> + Send;
    fn save_cursor(&self, name: &str, cursor: Option<&str>) -> impl Future<Output = PortResult<()>> + Send;
}
