//! The rotation workflows.

pub(crate) mod ops;
pub(crate) mod rotator;
