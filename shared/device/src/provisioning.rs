//! Fleet provisioning by claim, from the device's side, over a connection
//! made with the claim certificate: `CreateKeysAndCertificate`, then
//! `RegisterThing` with a provisioning template (the AWS IoT fleet
//! provisioning MQTT API).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::mqtt::Conn;

/// Where `CreateKeysAndCertificate` is asked for.
pub const CREATE_KEYS_TOPIC: &str = "$aws/certificates/create/json";

/// Where `RegisterThing` is asked for, for one template.
pub fn register_thing_topic(template: &str) -> String {
    format!("$aws/provisioning-templates/{template}/provision/json")
}

/// The answer to `CreateKeysAndCertificate`: the device's own credentials,
/// not active until `RegisterThing` accepts them.
#[derive(Clone)]
pub struct CreatedCredentials {
    pub certificate_id: String,
    pub cert_pem: String,
    /// Never in debug output.
    pub key_pem: String,
    pub ownership_token: String,
}

impl std::fmt::Debug for CreatedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedCredentials")
            .field("certificate_id", &self.certificate_id)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &onboarding_domain::REDACTED)
            .field("ownership_token", &onboarding_domain::REDACTED)
            .finish()
    }
}

/// The answer to `RegisterThing`.
#[derive(Debug, Clone)]
pub struct Registered {
    pub thing_name: String,
    /// The template's `deviceConfiguration`, as sent.
    pub device_configuration: Value,
}

/// A fleet-provisioning request that did not get the device its credentials
/// or its thing.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    /// `CreateKeysAndCertificate` failed or was refused.
    #[error("CreateKeysAndCertificate: {0}")]
    Create(String),
    /// `CreateKeysAndCertificate` answered without a field.
    #[error("CreateKeysAndCertificate answered without {0}")]
    CreateIncomplete(&'static str),
    /// `RegisterThing` failed or was refused (the certificate stays inactive).
    #[error("{0}")]
    Register(String),
    /// `RegisterThing` answered without a thing name.
    #[error("RegisterThing answered without a thingName")]
    RegisterIncomplete,
}

/// `CreateKeysAndCertificate` over the claim connection.
///
/// # Errors
/// [`ProvisioningError::Create`] or [`ProvisioningError::CreateIncomplete`].
pub async fn create_keys_and_certificate(
    conn: &mut Conn,
    deadline: Instant,
) -> Result<CreatedCredentials, ProvisioningError> {
    let created = request(conn, CREATE_KEYS_TOPIC, &json!({}), deadline)
        .await
        .map_err(ProvisioningError::Create)?;
    let field = |name: &'static str| {
        created[name]
            .as_str()
            .map(str::to_string)
            .ok_or(ProvisioningError::CreateIncomplete(name))
    };
    Ok(CreatedCredentials {
        certificate_id: field("certificateId")?,
        cert_pem: field("certificatePem")?,
        key_pem: field("privateKey")?,
        ownership_token: field("certificateOwnershipToken")?,
    })
}

/// `RegisterThing` with `template`, the certificate's ownership token and
/// the template's parameters.
///
/// # Errors
/// [`ProvisioningError::Register`] or [`ProvisioningError::RegisterIncomplete`].
pub async fn register_thing(
    conn: &mut Conn,
    template: &str,
    ownership_token: &str,
    parameters: &BTreeMap<String, String>,
    deadline: Instant,
) -> Result<Registered, ProvisioningError> {
    let registered = request(
        conn,
        &register_thing_topic(template),
        &json!({"certificateOwnershipToken": ownership_token, "parameters": parameters}),
        deadline,
    )
    .await
    .map_err(ProvisioningError::Register)?;
    let thing_name = registered["thingName"]
        .as_str()
        .map(str::to_string)
        .ok_or(ProvisioningError::RegisterIncomplete)?;
    Ok(Registered {
        thing_name,
        device_configuration: registered["deviceConfiguration"].clone(),
    })
}

/// One request: subscribe to the exact answer topics, publish, wait for one
/// of them.
async fn request(conn: &mut Conn, topic: &str, payload: &Value, deadline: Instant) -> Result<Value, String> {
    let accepted = format!("{topic}/accepted");
    let rejected = format!("{topic}/rejected");
    conn.subscribe(&[accepted.clone(), rejected.clone()], deadline)
        .await
        .map_err(|e| e.to_string())?;
    conn.publish(topic, payload.to_string().into_bytes(), deadline)
        .await
        .map_err(|e| e.to_string())?;
    match conn
        .next_on(&[&accepted, &rejected], deadline)
        .await
        .map_err(|e| e.to_string())?
    {
        Some((t, body)) if t == accepted => serde_json::from_slice(&body).map_err(|e| format!("{accepted}: {e}")),
        Some((_, body)) => Err(format!("refused: {}", rejection(&body))),
        None => Err(format!("no answer on {accepted} or {rejected} in time")),
    }
}

/// A fleet-provisioning request answered on `rejected`, in words.
fn rejection(payload: &[u8]) -> String {
    match serde_json::from_slice::<Value>(payload) {
        Ok(doc) => format!(
            "{} ({}): {}",
            doc["errorCode"].as_str().unwrap_or("?"),
            doc["statusCode"],
            doc["errorMessage"].as_str().unwrap_or("no message")
        ),
        Err(_) => String::from_utf8_lossy(payload).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_read_as_aws_sends_them() {
        let body = br#"{"statusCode":403,"errorCode":"AccessDenied","errorMessage":"not allowed"}"#;
        assert_eq!(rejection(body), "AccessDenied (403): not allowed");
        assert_eq!(rejection(b"{}"), "? (null): no message");
        assert_eq!(rejection(b"plain text"), "plain text");
    }

    #[test]
    fn topics_follow_the_fleet_provisioning_api() {
        assert_eq!(
            register_thing_topic("fleet"),
            "$aws/provisioning-templates/fleet/provision/json"
        );
        assert_eq!(CREATE_KEYS_TOPIC, "$aws/certificates/create/json");
    }

    #[test]
    fn created_credentials_hide_the_key_and_the_token() {
        let created = CreatedCredentials {
            certificate_id: "abc".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nsecret".into(),
            ownership_token: "token-secret".into(),
        };
        let shown = format!("{created:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("abc"), "{shown}");
    }
}
