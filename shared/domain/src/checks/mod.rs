//! The checks: pure functions from a certificate (or CSR) and a profile to
//! an approval or a rejection.

pub(crate) mod audit;
pub(crate) mod ca_rotation;
pub(crate) mod certificate;
pub(crate) mod csr;
pub(crate) mod subject;
