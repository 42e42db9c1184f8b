//! The rotation protocol devices speak: the job document, the topics, the
//! CSR message and its answer.

use serde::{Deserialize, Serialize};

use crate::policy::rotation::Strategy;
use crate::policy::rotation::state::Rotation;

/// The topic a device publishes its CSR on.
pub fn csr_topic(thing_name: &str) -> String {
    format!("devices/{thing_name}/rotation/csr")
}

/// The topic a device receives the answer to its CSR on.
pub fn answer_topic(thing_name: &str) -> String {
    format!("devices/{thing_name}/rotation/certificate")
}

/// The `operation` of a rotation job document.
pub const JOB_OPERATION: &str = "rotate-certificate";

/// The job document devices receive (see docs/rotation.md for the device's steps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDocument {
    /// Always [`JOB_OPERATION`].
    pub operation: String,
    /// Protocol version, `1`.
    pub version: String,
    pub strategy: Strategy,
    /// The certificate being replaced (the one the device uses now).
    pub old_certificate_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<CsrInstructions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_keygen: Option<ServerKeygenInstructions>,
}

/// CSR strategy: where to send the CSR and where the answer comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrInstructions {
    pub request_topic: String,
    pub answer_topic: String,
}

/// Server-keygen strategy: the new credentials, as URLs AWS IoT presigns.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerKeygenInstructions {
    pub new_certificate_id: String,
    pub certificate_url: String,
    /// Once presigned, whoever holds it can fetch the key: never in debug
    /// output beyond its path.
    pub private_key_url: String,
}

impl std::fmt::Debug for ServerKeygenInstructions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.private_key_url.split('?').next().unwrap_or_default();
        let shown = if path.len() == self.private_key_url.len() {
            self.private_key_url.clone()
        } else {
            format!("{path}?{REDACTED}")
        };
        f.debug_struct("ServerKeygenInstructions")
            .field("new_certificate_id", &self.new_certificate_id)
            .field("certificate_url", &self.certificate_url)
            .field("private_key_url", &shown)
            .finish()
    }
}

impl JobDocument {
    pub fn csr(rotation: &Rotation) -> Self {
        Self {
            operation: JOB_OPERATION.into(),
            version: "1".into(),
            strategy: Strategy::Csr,
            old_certificate_id: rotation.old_certificate_id.clone(),
            csr: Some(CsrInstructions {
                request_topic: csr_topic(&rotation.thing_name),
                answer_topic: answer_topic(&rotation.thing_name),
            }),
            server_keygen: None,
        }
    }

    /// `bucket` and the object keys become `${aws:iot:s3-presigned-url:…}`
    /// placeholders, which AWS IoT replaces with presigned URLs when it hands
    /// the document to the device (the job's `presignedUrlConfig` names the role).
    pub fn server_keygen(
        rotation: &Rotation,
        new_certificate_id: &str,
        bucket: &str,
        certificate_key: &str,
        private_key_key: &str,
    ) -> Self {
        let url = |key: &str| format!("${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{bucket}/{key}}}");
        Self {
            operation: JOB_OPERATION.into(),
            version: "1".into(),
            strategy: Strategy::ServerKeygen,
            old_certificate_id: rotation.old_certificate_id.clone(),
            csr: None,
            server_keygen: Some(ServerKeygenInstructions {
                new_certificate_id: new_certificate_id.to_string(),
                certificate_url: url(certificate_key),
                private_key_url: url(private_key_key),
            }),
        }
    }
}

/// What a device publishes on its CSR topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrMessage {
    pub job_id: String,
    /// PEM `CERTIFICATE REQUEST`.
    pub csr: String,
}

/// The answer on the device's answer topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status", rename_all_fields = "camelCase")]
pub enum CsrAnswer {
    #[serde(rename = "ISSUED")]
    Issued {
        job_id: String,
        certificate_id: String,
        certificate_pem: String,
    },
    #[serde(rename = "REFUSED")]
    Refused {
        job_id: String,
        reason_code: String,
        detail: String,
    },
}

/// What the device reports in the job execution's `statusDetails` on success.
pub const CONFIRMATION_FIELD: &str = "newCertificateId";

/// A job execution as AWS IoT reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobExecution {
    pub status: String,
    pub status_details: std::collections::BTreeMap<String, String>,
    /// Unix seconds IoT queued the execution, started it (`IN_PROGRESS`),
    /// and last updated it; `None` when IoT does not say.
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub last_updated_at: Option<i64>,
}

/// What debug output shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::CertificateRecord;
    use crate::policy::rotation::RotationPolicy;

    #[test]
    fn debug_output_never_shows_a_presigned_key_url() {
        let instructions = ServerKeygenInstructions {
            new_certificate_id: "n".into(),
            certificate_url: "https://b.s3/rotation/t/n/certificate.pem".into(),
            private_key_url: "https://b.s3/rotation/t/n/private.key?X-Amz-Signature=abc123".into(),
        };
        let shown = format!("{instructions:?}");
        assert!(!shown.contains("abc123"), "{shown}");
        assert!(shown.contains("rotation/t/n/private.key?<redacted>"), "{shown}");
    }

    fn record(id: &str, not_after: i64) -> CertificateRecord {
        let mut r = CertificateRecord::bare(id, "ca", crate::model::record::RecordStatus::Provisioned, 0);
        r.not_after = Some(not_after);
        r
    }

    #[test]
    fn job_documents_serialize_as_documented() {
        let p = RotationPolicy::default();
        let r = Rotation::requested(&record("d", 0), "t-9", "p", &p, 1, 0);
        let doc = serde_json::to_value(JobDocument::csr(&r)).unwrap_or_default();
        assert_eq!(doc["operation"], "rotate-certificate");
        assert_eq!(doc["strategy"], "csr");
        assert_eq!(doc["csr"]["requestTopic"], "devices/t-9/rotation/csr");
        assert_eq!(doc["csr"]["answerTopic"], "devices/t-9/rotation/certificate");
        let doc = serde_json::to_value(JobDocument::server_keygen(&r, "n", "bkt", "k/c.pem", "k/key.pem"))
            .unwrap_or_default();
        assert_eq!(doc["strategy"], "serverKeygen");
        assert_eq!(
            doc["serverKeygen"]["privateKeyUrl"],
            "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/bkt/k/key.pem}"
        );
        let answer = serde_json::to_value(CsrAnswer::Refused {
            job_id: "j".into(),
            reason_code: "WEAK_KEY".into(),
            detail: "d".into(),
        })
        .unwrap_or_default();
        assert_eq!(answer["status"], "REFUSED");
        assert_eq!(answer["reasonCode"], "WEAK_KEY");
    }
}
