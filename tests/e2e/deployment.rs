//! `infra/template.yaml` deployed into a fresh emulator as `sam deploy` does
//! it (see `onboarding_emulator::stack`), and a CA registered and bound.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use onboarding_test_support::TestCa;
use onboarding_test_support::emulator::{Emulator, stack};
use onboarding_test_support::proxy::{Proxy, ProxyOptions};
use onboarding_test_support::quota::Quotas;
use onboarding_test_support::world::{Item, WorldError, certificate_status, inventory_record, register_ca};

const STACK: &str = "iot-onboarding";

/// The stack, its outputs, and a CA registered and bound to the default profile.
pub struct Deployment {
    pub emulator: Emulator,
    pub iot: aws_sdk_iot::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub outputs: HashMap<String, String>,
    pub ca: TestCa,
    pub ca_id: String,
    pub server_ca_pem: String,
    /// The quota proxy the deployed functions call AWS through, if any.
    pub proxy: Option<Proxy>,
}

impl Deployment {
    pub async fn new() -> Result<Self, WorldError> {
        Self::start(None).await
    }

    /// The stack with its Lambda functions calling AWS through a proxy that
    /// enforces `quotas` (the tests' own calls go straight to the emulator).
    pub async fn behind_quotas(quotas: Quotas) -> Result<Self, WorldError> {
        Self::start(Some(quotas)).await
    }

    async fn start(quotas: Option<Quotas>) -> Result<Self, WorldError> {
        let (emulator, proxy) = match quotas {
            None => (Emulator::start().await?, None),
            Some(quotas) => {
                // The proxy first (the emulator hands its address to the
                // functions it runs), then pointed at the emulator.
                let proxy = Proxy::start_with(
                    0,
                    ProxyOptions {
                        latency: std::time::Duration::ZERO,
                        quotas: Some(quotas),
                        faults: None,
                    },
                )
                .await?;
                let emulator = Emulator::start_with(&[("AWS_ENDPOINT_URL", proxy.endpoint().as_str())]).await?;
                proxy.set_upstream(emulator.gateway_port);
                (emulator, Some(proxy))
            }
        };
        let sdk = emulator.sdk_config().await;
        let stuck_after = super::STUCK_AFTER.as_secs().to_string();
        let outputs = stack::deploy(
            &sdk,
            STACK,
            stack::TEMPLATE,
            &stack::lambda_dir(),
            &[("StuckAfterSeconds", stuck_after.as_str())],
        )
        .await?
        .outputs;

        let iot = aws_sdk_iot::Client::new(&sdk);
        let s3 = onboarding_test_support::emulator::s3_client(&sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        // After deploying: register the CA with auto-registration and bind it
        // to the default profile, as docs/deploying.md says.
        let ca = TestCa::new("Acme Device CA")?;
        let ca_id = register_ca(&iot, &ca).await?;
        let deployment = Self {
            server_ca_pem: emulator.server_ca_pem().await?,
            emulator,
            iot,
            s3,
            dynamodb,
            sqs,
            outputs,
            ca,
            ca_id,
            proxy,
        };
        deployment.bind(&deployment.ca_id, "default").await?;
        Ok(deployment)
    }

    pub fn output(&self, key: &str) -> Result<&str, WorldError> {
        self.outputs
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("stack output {key} is missing").into())
    }

    pub async fn bind(&self, ca_id: &str, profile: &str) -> Result<(), WorldError> {
        self.dynamodb
            .put_item()
            .table_name(self.output("InventoryTableName")?)
            .item("pk", AttributeValue::S("CONFIG".into()))
            .item("sk", AttributeValue::S(format!("CA#{ca_id}")))
            .item("profile", AttributeValue::S(profile.into()))
            .send()
            .await?;
        Ok(())
    }

    pub async fn certificate_status(&self, certificate_id: &str) -> Result<Option<String>, WorldError> {
        certificate_status(&self.iot, certificate_id).await
    }

    pub async fn inventory_record(&self, certificate_id: &str) -> Result<Item, WorldError> {
        inventory_record(&self.dynamodb, self.output("InventoryTableName")?, certificate_id)
            .await?
            .ok_or_else(|| format!("no inventory record for {certificate_id}").into())
    }

    /// Messages waiting in a queue (visible and in flight).
    pub async fn queue_depth(&self, output: &str) -> Result<u64, WorldError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.output(output)?)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        Ok(attributes.values().filter_map(|v| v.parse::<u64>().ok()).sum())
    }
}
