//! Certificate statuses as AWS IoT spells them, and the status a rejection sets.

use serde::{Deserialize, Serialize};

/// An IoT certificate status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertificateStatus {
    Active,
    Inactive,
    Revoked,
    PendingActivation,
    PendingTransfer,
    RegisterInactive,
    /// A status this code does not know.
    Unknown(String),
}

impl CertificateStatus {
    /// The IoT API spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "ACTIVE",
            Self::Inactive => "INACTIVE",
            Self::Revoked => "REVOKED",
            Self::PendingActivation => "PENDING_ACTIVATION",
            Self::PendingTransfer => "PENDING_TRANSFER",
            Self::RegisterInactive => "REGISTER_INACTIVE",
            Self::Unknown(s) => s,
        }
    }

    /// Parses the IoT API spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "ACTIVE" => Self::Active,
            "INACTIVE" => Self::Inactive,
            "REVOKED" => Self::Revoked,
            "PENDING_ACTIVATION" => Self::PendingActivation,
            "PENDING_TRANSFER" => Self::PendingTransfer,
            "REGISTER_INACTIVE" => Self::RegisterInactive,
            other => Self::Unknown(other.to_string()),
        }
    }
}

/// What happens to a rejected certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectionAction {
    /// Revoked: the certificate can never be used again (default).
    #[default]
    Revoked,
    /// Inactive: an operator may reactivate it after review.
    Inactive,
}

impl RejectionAction {
    /// The IoT certificate status this action sets.
    pub fn status(self) -> CertificateStatus {
        match self {
            Self::Revoked => CertificateStatus::Revoked,
            Self::Inactive => CertificateStatus::Inactive,
        }
    }
}
