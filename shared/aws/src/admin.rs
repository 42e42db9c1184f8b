//! Operator-side access to the configuration items of the inventory table:
//! device profiles and CA bindings (the formats are in `dynamodb.rs`).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use onboarding_domain::DeviceProfile;
use onboarding_domain::PortResult;

use crate::dynamodb::{CONFIG_PK, binding_sk, config_items, profile_sk};
use crate::error::classify;

/// Reads and writes profiles and bindings.
#[derive(Debug, Clone)]
pub struct ConfigAdmin {
    client: Client,
    table: String,
}

/// A stored profile: valid, or the problem that makes it unusable.
pub type StoredProfile = Result<DeviceProfile, String>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

impl ConfigAdmin {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Writes a (validated) profile, replacing one of the same name.
    pub async fn put_profile(&self, profile: &DeviceProfile) -> PortResult<()> {
        let json = serde_json::to_string(profile).unwrap_or_default();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(CONFIG_PK))
            .item("sk", s(profile_sk(&profile.name)))
            .item("profile", s(json))
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }

    /// Binds a CA to a profile (replacing an earlier binding).
    pub async fn bind(&self, ca_certificate_id: &str, profile: &str) -> PortResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(CONFIG_PK))
            .item("sk", s(binding_sk(ca_certificate_id)))
            .item("profile", s(profile))
            .send()
            .await
            .map_err(|e| classify("PutItem", e))?;
        Ok(())
    }

    /// Removes a CA's binding; true when there was one.
    pub async fn unbind(&self, ca_certificate_id: &str) -> PortResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(CONFIG_PK))
            .key("sk", s(binding_sk(ca_certificate_id)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| classify("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Every profile by name and every binding (CA id → profile name).
    pub async fn load(&self) -> PortResult<(BTreeMap<String, StoredProfile>, BTreeMap<String, String>)> {
        let mut profiles = BTreeMap::new();
        let mut bindings = BTreeMap::new();
        for item in config_items(&self.client, &self.table).await? {
            let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            let Some(sk) = get("sk") else { continue };
            if let Some(name) = sk.strip_prefix("PROFILE#") {
                let profile = get("profile")
                    .ok_or_else(|| "the profile attribute is missing".to_string())
                    .and_then(|json| DeviceProfile::parse(&json).map_err(|e| e.to_string()));
                profiles.insert(name.to_string(), profile);
            } else if let Some(ca) = sk.strip_prefix("CA#") {
                bindings.insert(ca.to_string(), get("profile").unwrap_or_default());
            }
        }
        Ok((profiles, bindings))
    }
}
