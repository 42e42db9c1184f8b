//! The fleet's own CA as the rotation issuer reaches it (`kmsCa` profiles):
//! the one KMS key the deployment allows, `DescribeCACertificate` and
//! `RegisterCertificate`. A profile naming any other key gets no signer.

use onboarding_domain::{
    CaSigners, CertificateImport, CertificateRegistry, CertificateStatus, PortResult, RegisteredCa,
    RegisteredCertificate, Registration,
};

use crate::{IotAdapter, KmsSigner};

/// The deployment's fleet CA key (if any) and IoT's CA and registration calls.
pub struct FleetCaAdapter {
    iot: IotAdapter,
    /// The allowed key's ARN and its signer; `None`: no `kmsCa` issuer.
    key: Option<(String, KmsSigner)>,
}

impl FleetCaAdapter {
    /// `allowed_key_arn`: the one KMS key ARN `kmsCa` profiles may name
    /// (compared exactly); `None` allows none.
    pub fn new(iot: aws_sdk_iot::Client, kms: aws_sdk_kms::Client, allowed_key_arn: Option<String>) -> Self {
        Self {
            iot: IotAdapter::new(iot),
            key: allowed_key_arn.map(|arn| {
                let signer = KmsSigner::new(kms, arn.clone());
                (arn, signer)
            }),
        }
    }
}

impl CaSigners for FleetCaAdapter {
    type Signer = KmsSigner;

    fn signer(&self, key_arn: &str) -> Option<&KmsSigner> {
        self.key
            .as_ref()
            .filter(|(allowed, _)| allowed == key_arn)
            .map(|(_, signer)| signer)
    }
}

impl CertificateImport for FleetCaAdapter {
    async fn register_certificate(&self, pem: &str, registration: Registration<'_>) -> PortResult<String> {
        self.iot.register_certificate(pem, registration).await
    }
}

impl CertificateRegistry for FleetCaAdapter {
    async fn describe_certificate(&self, certificate_id: &str) -> PortResult<Option<RegisteredCertificate>> {
        self.iot.describe_certificate(certificate_id).await
    }

    async fn describe_ca_certificate(&self, ca_certificate_id: &str) -> PortResult<Option<RegisteredCa>> {
        self.iot.describe_ca_certificate(ca_certificate_id).await
    }

    async fn set_certificate_status(&self, certificate_id: &str, status: &CertificateStatus) -> PortResult<()> {
        self.iot.set_certificate_status(certificate_id, status).await
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::config::{BehaviorVersion, Region};

    use super::*;

    const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn adapter(allowed: Option<&str>) -> FleetCaAdapter {
        let iot = aws_sdk_iot::Client::from_conf(
            aws_sdk_iot::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("eu-west-1"))
                .build(),
        );
        let kms = aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("eu-west-1"))
                .build(),
        );
        FleetCaAdapter::new(iot, kms, allowed.map(str::to_string))
    }

    #[test]
    fn only_the_allowed_key_gets_a_signer() {
        let a = adapter(Some(KEY));
        assert_eq!(a.signer(KEY).map(KmsSigner::key_id), Some(KEY));
        // Another key, the same key by alias or bare id, a prefix: none.
        for other in [
            "arn:aws:kms:eu-west-1:123456789012:key/9999abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:123456789012:alias/fleet-ca",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            &KEY[..KEY.len() - 1],
            "",
        ] {
            assert!(a.signer(other).is_none(), "{other}");
        }
        assert!(adapter(None).signer(KEY).is_none());
    }
}
