//! Operations the rotation workflows share.

use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::CertificateRecord;
use crate::policy::config::{CaTrust, OnboardingConfig};
use crate::ports::{DenyList, PortResult};

/// Whether the device of an old certificate may still get a new one: its
/// CA bound to a valid profile, and neither its fingerprint nor its serial
/// (for that CA) on the deny-list (looked up by key, never cached). Checked
/// before an attempt starts and before a certificate is issued.
///
/// # Errors
/// [`crate::PortError`] when the deny-list lookup fails (the caller must
/// not go on: fail closed). Inside, a [`Rejection`]: `CA_NOT_BOUND`,
/// `FINGERPRINT_DENIED` or `SERIAL_DENIED`.
pub async fn rotation_allowed(
    config: &OnboardingConfig,
    deny_list: &impl DenyList,
    record: &CertificateRecord,
) -> PortResult<Result<(), Rejection>> {
    let ca = record.ca_certificate_id.as_str();
    match config.trust(ca) {
        CaTrust::Bound(_) => {}
        CaTrust::Unbound => {
            return Ok(Err(Rejection::new(
                RejectReason::CaNotBound,
                format!("CA {ca} of the old certificate is bound to no profile"),
            )));
        }
        CaTrust::Misconfigured { profile, problem } => {
            return Ok(Err(Rejection::new(
                RejectReason::CaNotBound,
                format!("CA {ca} of the old certificate is bound to profile {profile:?}, which {problem}"),
            )));
        }
    }
    let fingerprint = if record.fingerprint.is_empty() {
        record.certificate_id.as_str()
    } else {
        record.fingerprint.as_str()
    };
    let serial = record.serial.as_deref().unwrap_or_default();
    Ok(match deny_list.denial(ca, serial, fingerprint).await? {
        Some(rejection) => Err(rejection),
        None => Ok(()),
    })
}
