//! The workflows, generic over the ports.

pub(crate) mod audit;
pub(crate) mod ca_rotation;
pub(crate) mod config_cache;
pub(crate) mod import;
pub(crate) mod issuance;
pub(crate) mod jitp;
pub(crate) mod provisioning_hook;
pub(crate) mod reconciler;
pub(crate) mod registrar;
pub(crate) mod retirement;
pub(crate) mod revocation;
pub(crate) mod rotation;
