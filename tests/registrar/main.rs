//! The JITR registrar against the emulator (AUTH=true): devices connect over
//! MQTT with mutual TLS, IoT auto-registers their certificates, and the
//! handler runs on the events.

#![recursion_limit = "256"]

mod adoption;
mod common;
mod provisioning;
mod rejections;
mod resilience;
mod trust;
