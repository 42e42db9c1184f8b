//! The workflows, generic over the ports.

pub(crate) mod config_cache;
pub(crate) mod import;
pub(crate) mod jitp;
pub(crate) mod provisioning_hook;
pub(crate) mod reconciler;
pub(crate) mod registrar;
pub(crate) mod rotation;
