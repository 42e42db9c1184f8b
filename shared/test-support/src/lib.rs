//! Test support: the local AWS emulator launcher, a CA and device certificate
//! factory, and a device's first MQTT-over-mTLS connection (`onboarding_device`'s).

pub mod activation;
pub mod certs;
pub mod deployment;
pub mod faults;
pub mod jobs_data;
pub mod mqtt;
pub mod proxy;
pub mod quota;
pub mod world;

pub use certs::{DeviceCert, KeyAlg, TestCa};
pub use onboarding_emulator as emulator;
pub use onboarding_emulator::Emulator;
pub use rcgen;
