//! The rotation workflows, generic over the rotation ports:
//!
//! - [`rotator::Rotator`]: one scheduled run. Follows up the rotations that are due
//!   (job deadlines, retries, deletions after the grace period), then starts
//!   rotations of certificates entering their profile's window. Bounded work,
//!   resumed from saved cursors, `CreateJob` paced.
//! - [`issuer::CsrIssuer`]: answers the CSR a device publishes on
//!   `devices/<thing>/rotation/csr` with a new certificate (or a refusal).
//! - [`completer::Completer`]: acts on a job-execution event: a confirmed new certificate
//!   retires the old one; a failed, rejected, timed-out or canceled job fails
//!   the attempt.
//!
//! The "complete" and "fail" procedures are shared: the rotator runs them too
//! when it finds a job ended past its deadline (events can be lost).
//!
//! # Convergence
//!
//! Every step is idempotent or guarded by a conditional write of the rotation
//! (state and attempt), so a run interrupted between any two steps and run
//! again reaches the same end state:
//!
//! - Records are written *before* the effects they announce become visible:
//!   an attempt is `requested` before its job exists; a new certificate is
//!   recorded on the rotation before it is attached or made `ACTIVE`; the
//!   failure of an attempt is recorded only *after* its new certificate is
//!   revoked and detached, so `failed` implies clean.
//! - An attempt whose job is not out yet is "starting" (due at once, see
//!   [`crate::policy::rotation::state::Rotation::starting`]): the next run finds it among the due rotations and
//!   resumes the start.
//! - A writer that loses a conditional write reads the rotation again and
//!   continues from what it finds; one that finds the attempt failed under it
//!   revokes the certificate it was activating (whichever of the two writers
//!   comes second leaves the certificate revoked).
//! - Retiring moves the thing-name claim to the new certificate *before* the
//!   old one becomes `INACTIVE`: the registrar treats a claim held by an
//!   inactive certificate as free, so the name is never up for grabs.

pub(crate) mod completer;
pub(crate) mod issuer;
pub(crate) mod ops;
pub(crate) mod rotator;

#[cfg(test)]
mod tests;
