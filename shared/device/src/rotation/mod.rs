//! The certificate-rotation agent: the device's side of the rotation
//! protocol (`onboarding_domain`'s `JobDocument`, `CsrMessage`, `CsrAnswer`)
//! over MQTT.
//!
//! It takes the next pending job through the AWS IoT Jobs MQTT API, obtains
//! new credentials (a CSR answered on the device's answer topic, or the
//! presigned URLs of a server-keygen job), stages them beside the current
//! ones, proves them with a new connection under the same client id, and only
//! then swaps the files and confirms the job over the new connection. Any
//! failure leaves `cert.pem` / `key.pem` as they were (rollback), and the job
//! is reported FAILED with a reason code where the device can still say so.

mod agent;
mod csr;
mod download;
mod store;

use std::path::PathBuf;
use std::time::Duration;

use onboarding_domain::{Certificate, Strategy};

use crate::{Broker, Device};

pub use store::{CERT, CERT_NEW, CERT_OLD, KEY, KEY_NEW, KEY_OLD, write_all_new};

/// Deliberate misbehaviour, for tests of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehave {
    /// Take the job and stay silent until the deadline.
    NeverAnswer,
    /// Report the job FAILED at once.
    Fail,
    /// Send a CSR whose CN is this name.
    ForeignCsr(String),
}

/// How a rotation ended, with what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Rotated,
    /// The backend refused the CSR.
    Refused(String),
    /// The rotation failed on the device's side (reported FAILED where possible).
    Failed(String),
    /// No rotation job came before the deadline.
    NoJob(String),
    TimedOut(String),
    /// AWS refused a request (the Jobs API, a download, the broker).
    Aws(String),
}

impl Outcome {
    /// A short outcome word for summaries (`Aws` is `failed` too).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Refused(_) => "refused",
            Self::Failed(_) | Self::Aws(_) => "failed",
            Self::NoJob(_) => "no_job",
            Self::TimedOut(_) => "timed_out",
        }
    }

    /// What went wrong, unless the rotation succeeded.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Rotated => None,
            Self::Refused(m) | Self::Failed(m) | Self::NoJob(m) | Self::TimedOut(m) | Self::Aws(m) => Some(m),
        }
    }
}

/// What a run found out, for the summary.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    pub thing: String,
    pub job_id: Option<String>,
    pub strategy: Option<Strategy>,
    /// The certificate the job replaces.
    pub old_certificate_id: String,
    /// The certificate the device has (or would have had) after the rotation.
    pub new_certificate_id: Option<String>,
}

/// One device's rotation agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The device directory: `cert.pem` and `key.pem` (replaced on success;
    /// the previous pair is kept as `cert.old.pem` / `key.old.pem`).
    pub dir: PathBuf,
    pub broker: Broker,
    /// The credentials in `dir`; `name` is the thing name and MQTT client id.
    pub device: Device,
    /// `device.cert_pem`, parsed.
    pub certificate: Certificate,
    /// Give up after this long: waiting for a job, or for the answer to the CSR.
    pub patience: Duration,
    pub misbehave: Option<Misbehave>,
}

impl Agent {
    /// Takes the next rotation job and carries it out, telling `progress`
    /// one human line per step. `config` is the TLS configuration of the
    /// current credentials.
    pub async fn run(&self, config: std::sync::Arc<rustls::ClientConfig>, progress: &dyn Fn(&str)) -> Report {
        agent::Run::new(self, progress).rotate(config).await
    }
}
