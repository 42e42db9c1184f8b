//! One device's credentials.

/// A device: its name (thing name and MQTT client id) and credentials.
#[derive(Clone)]
pub struct Device {
    pub name: String,
    pub cert_pem: String,
    /// Never in debug output.
    pub key_pem: String,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &onboarding_domain::REDACTED)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_debug_output_hides_its_key() {
        let device = Device {
            name: "sensor-1".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n".into(),
        };
        let shown = format!("{device:?}");
        assert!(!shown.contains("PRIVATE KEY") && !shown.contains("secret"), "{shown}");
        assert!(shown.contains("sensor-1") && shown.contains("<redacted>"), "{shown}");
    }
}
