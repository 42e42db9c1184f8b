//! The just-in-time-registration event, parsed leniently.
//!
//! AWS documents `certificateRegistrationTimestamp` as a number, but real
//! payloads carry `null` or a string of digits, and extra fields such as
//! `sourceIp` appear. Unknown fields are ignored; timestamps accept numbers,
//! digit strings and null. The two identifiers are required and validated.

use serde::{Deserialize, Deserializer};

/// A `$aws/events/certificates/registered/<caCertificateId>` payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JitrEvent {
    pub certificate_id: String,
    pub ca_certificate_id: String,
    /// When IoT published the event, in epoch milliseconds.
    #[serde(default, deserialize_with = "lenient_millis")]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub certificate_status: Option<String>,
    #[serde(default)]
    pub aws_account_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_millis")]
    pub certificate_registration_timestamp: Option<i64>,
}

/// Why an event could not be used. Permanent: retrying cannot fix it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MalformedEvent {
    #[error("event is not valid JSON: {0}")]
    NotJson(String),
    #[error("event does not have the certificate-registered shape: {0}")]
    Shape(String),
    #[error("{field} must be a 64-character hexadecimal certificate id, got {value:?}")]
    BadIdentifier { field: &'static str, value: String },
}

impl JitrEvent {
    /// Parses an event from raw JSON text.
    ///
    /// # Errors
    /// [`MalformedEvent`] when the text is not JSON, lacks the identifiers, or
    /// carries identifiers that are not certificate ids.
    pub fn from_json_str(text: &str) -> Result<Self, MalformedEvent> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| MalformedEvent::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Parses an event from an already decoded JSON value.
    ///
    /// # Errors
    /// As [`JitrEvent::from_json_str`].
    pub fn from_value(value: serde_json::Value) -> Result<Self, MalformedEvent> {
        let event: JitrEvent = serde_json::from_value(value).map_err(|e| MalformedEvent::Shape(e.to_string()))?;
        check_id("certificateId", &event.certificate_id)?;
        check_id("caCertificateId", &event.ca_certificate_id)?;
        Ok(event)
    }
}

/// Certificate ids are the SHA-256 fingerprint of the DER, in lowercase hex.
pub fn is_certificate_id(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_id(field: &'static str, value: &str) -> Result<(), MalformedEvent> {
    if is_certificate_id(value) {
        Ok(())
    } else {
        Err(MalformedEvent::BadIdentifier {
            field,
            value: value.chars().take(80).collect(),
        })
    }
}

fn lenient_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }
    Ok(match Option::<Raw>::deserialize(deserializer)? {
        None => None,
        Some(Raw::Int(v)) => Some(v),
        // Float-to-int `as` saturates; a timestamp this far out is nonsense either way.
        Some(Raw::Float(v)) if v.is_finite() => Some(v as i64),
        Some(Raw::Float(_)) => None,
        Some(Raw::Text(s)) => s.trim().parse::<i64>().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const CA: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn event(extra: &str) -> String {
        format!(r#"{{"certificateId":"{CERT}","caCertificateId":"{CA}"{extra}}}"#)
    }

    #[test]
    fn parses_documented_payload() {
        let e = JitrEvent::from_json_str(&event(
            r#","timestamp":1690000000000,"certificateStatus":"PENDING_ACTIVATION","awsAccountId":"123456789012","certificateRegistrationTimestamp":1690000000001"#,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.certificate_id, CERT);
        assert_eq!(e.ca_certificate_id, CA);
        assert_eq!(e.timestamp, Some(1_690_000_000_000));
        assert_eq!(e.certificate_registration_timestamp, Some(1_690_000_000_001));
    }

    #[test]
    fn accepts_null_string_timestamps_and_extra_fields() {
        let e = JitrEvent::from_json_str(&event(
            r#","timestamp":"1690000000000","certificateRegistrationTimestamp":null,"sourceIp":"10.0.0.1","x":{"y":1}"#,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.timestamp, Some(1_690_000_000_000));
        assert_eq!(e.certificate_registration_timestamp, None);
        let e = JitrEvent::from_json_str(&event(r#","certificateRegistrationTimestamp":"not-a-number""#))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.certificate_registration_timestamp, None);
    }

    #[test]
    fn rejects_malformed_events() {
        assert!(matches!(JitrEvent::from_json_str("{"), Err(MalformedEvent::NotJson(_))));
        assert!(matches!(JitrEvent::from_json_str("[]"), Err(MalformedEvent::Shape(_))));
        assert!(matches!(
            JitrEvent::from_json_str(&format!(r#"{{"certificateId":"{CERT}"}}"#)),
            Err(MalformedEvent::Shape(_))
        ));
        assert!(matches!(
            JitrEvent::from_json_str(&format!(r#"{{"certificateId":"../etc","caCertificateId":"{CA}"}}"#)),
            Err(MalformedEvent::BadIdentifier {
                field: "certificateId",
                ..
            })
        ));
        assert!(matches!(
            JitrEvent::from_json_str(&format!(
                r#"{{"certificateId":"{}","caCertificateId":"{CA}"}}"#,
                CERT.to_uppercase()
            )),
            Err(MalformedEvent::BadIdentifier { .. })
        ));
    }
}
