//! One module per `onboard` subcommand: each parses its arguments (clap),
//! calls the adapters (`onboarding-aws`) or the device side
//! (`onboarding-device`), and prints. None builds an AWS request itself.

pub mod allow;
pub mod ca;
pub mod ca_rotation;
pub mod claim;
pub mod demo;
pub mod deny;
pub mod device;
pub mod events;
pub mod fleet;
pub mod fleet_audit;
pub mod fleet_import;
pub mod profile;
