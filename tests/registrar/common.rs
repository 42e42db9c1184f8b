//! Shared set-up: a world per test and a handler pointed at it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use jitr_registrar::{FromEnv, Handler, Settings};
use onboarding_test_support::proxy::Proxy;
use onboarding_test_support::world::{World, WorldError};

pub type TestResult = Result<(), WorldError>;

/// A fresh emulator and world.
pub async fn world() -> World {
    match World::new().await {
        Ok(world) => world,
        Err(e) => panic!("could not build the test world: {e}"),
    }
}

/// A handler as the Lambda builds it, with the world's settings plus `extra`.
pub fn handler(world: &World, extra: &[(&str, &str)]) -> Handler {
    let mut env: HashMap<String, String> = world.registrar_env().into_iter().collect();
    for (k, v) in extra {
        env.insert((*k).to_string(), (*v).to_string());
    }
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_or_else(|e| panic!("settings: {e}"));
    jitr_registrar::build(&settings, &world.sdk)
}

/// A handler whose AWS calls go through a recording proxy in front of the emulator.
pub async fn handler_via_proxy(world: &World) -> (Handler, Proxy) {
    let proxy = Proxy::start(world.emulator.gateway_port, std::time::Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("proxy: {e}"));
    let env: HashMap<String, String> = world.registrar_env().into_iter().collect();
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap_or_else(|e| panic!("settings: {e}"));
    let sdk = onboarding_test_support::emulator::sdk_config_for(&proxy.endpoint()).await;
    (jitr_registrar::build(&settings, &sdk), proxy)
}

/// A string attribute of an inventory record.
pub fn attr<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}
