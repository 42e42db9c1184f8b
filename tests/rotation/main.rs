//! The rotation functions (`cert-rotator`, `rotation-issuer`,
//! `rotation-completer`) in-process against the emulator (AUTH=true), their
//! AWS calls through a proxy that fails one chosen call: a crash between any
//! two steps of either function converges when the event is handled (or the
//! rotator run) again. One emulator per test; each failure point gets a
//! fresh device and rotation.

#![recursion_limit = "256"]

mod common;
mod completer;
mod issuer;
mod kms_ca;
mod rotator;
