//! In-memory fakes of the ports, for the domain's tests.

pub(crate) mod rotation;
