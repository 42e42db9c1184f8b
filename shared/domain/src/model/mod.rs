//! Value types: no policy, no I/O.

pub(crate) mod certificate;
pub(crate) mod event;
pub(crate) mod manifest;
pub(crate) mod naming;
pub(crate) mod plan;
pub(crate) mod reason;
pub(crate) mod record;
pub(crate) mod status;
pub(crate) mod time;
