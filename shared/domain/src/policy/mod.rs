//! What an operator configures: device profiles, the rotation policy (with the
//! rotation state machine and protocol it drives), and the onboarding
//! configuration that binds CAs to profiles.

pub(crate) mod config;
pub(crate) mod plan;
pub(crate) mod profile;
pub(crate) mod rotation;
