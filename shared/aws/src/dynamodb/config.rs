//! The configuration items of the inventory table (`pk = CONFIG`): device
//! profiles and CA bindings. Every function reads them whole
//! ([`Inventory::load_config`](onboarding_domain::Inventory::load_config));
//! operators write them ([`ConfigAdmin`]).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use onboarding_domain::PortResult;
use onboarding_domain::{DeviceProfile, OnboardingConfig, ProfileError};

use super::items::{Item, get_s, s};
use super::keys::{CONFIG_PK, binding_sk, ca_of_binding_sk, profile_of_sk, profile_sk};
use crate::error::classify;

/// Reads and writes profiles and bindings.
#[derive(Debug, Clone)]
pub struct ConfigAdmin {
    client: Client,
    table: String,
}

/// A stored profile: valid, or the problem that makes it unusable.
pub type StoredProfile = Result<DeviceProfile, String>;

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
            if let Some(name) = profile_of_sk(&sk) {
                let profile = get("profile")
                    .ok_or_else(|| "the profile attribute is missing".to_string())
                    .and_then(|json| DeviceProfile::parse(&json).map_err(|e| e.to_string()));
                profiles.insert(name.to_string(), profile);
            } else if let Some(ca) = ca_of_binding_sk(&sk) {
                bindings.insert(ca.to_string(), get("profile").unwrap_or_default());
            }
        }
        Ok((profiles, bindings))
    }
}

/// Every configuration item (`pk = CONFIG`), all pages.
///
/// # Errors
/// SDK failures, classified.
pub(crate) async fn config_items(client: &Client, table: &str) -> PortResult<Vec<Item>> {
    let mut items = Vec::new();
    let mut pages = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s(CONFIG_PK))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        items.extend(page.map_err(|e| classify("Query", e))?.items.unwrap_or_default());
    }
    Ok(items)
}

/// Reads one configuration item into the snapshot.
pub(crate) fn add_config_item(config: &mut OnboardingConfig, item: &Item) {
    let Some(sk) = get_s(item, "sk") else { return };
    if let Some(name) = profile_of_sk(sk) {
        let profile = match get_s(item, "profile") {
            Some(json) => DeviceProfile::parse(json).and_then(|p| {
                if p.name == name {
                    Ok(p)
                } else {
                    Err(ProfileError::Field {
                        field: "name".into(),
                        problem: format!("is {:?} but the item key says {name:?}", p.name),
                    })
                }
            }),
            None => Err(ProfileError::Field {
                field: "profile".into(),
                problem: "attribute is missing or not a string".into(),
            }),
        };
        if let Err(e) = &profile {
            tracing::warn!(profile = name, error = %e, "invalid device profile in the inventory table");
        }
        config.add_profile(name.to_string(), profile);
    } else if let Some(ca) = ca_of_binding_sk(sk) {
        config.bind(ca.to_string(), get_s(item, "profile").unwrap_or_default().to_string());
    }
}
