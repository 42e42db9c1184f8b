//! In-memory fakes of the ports, for the domain's tests (one module per
//! workflow family: each fake implements every port its workflows use).

pub(crate) mod provisioning_hook;
pub(crate) mod reconciler;
pub(crate) mod rotation;
