//! In-memory fakes of the ports, one module per workflow family (each fake
//! implements every port its workflows use). Compiled for the domain's own
//! tests, and for other crates' tests with the `fakes` feature (exported as
//! `rotation_fakes`, `reconciler_fakes` and `hook_fakes`).

pub mod audit;
pub mod ca;
pub mod import;
pub mod inject;
pub mod provisioning_hook;
pub mod reconciler;
pub mod rotation;
pub mod signer;
