//! `infra/template.yaml` deployed into a fresh emulator as `sam deploy` does
//! it (see `onboarding_emulator::stack`), and a CA registered and bound.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::TestCa;
use crate::emulator::{Emulator, stack};
use crate::proxy::{Proxy, ProxyOptions};
use crate::quota::Quotas;
use crate::world::{Item, WorldError, certificate_status, inventory_record, register_ca};

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

/// How a [`Deployment`] starts.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Template parameters (name, value).
    pub parameters: Vec<(String, String)>,
    /// Put a proxy with these options between the deployed functions and
    /// the emulator (the caller's own clients go straight to the emulator).
    pub proxy: Option<ProxyOptions>,
}

impl DeployOptions {
    /// With one more template parameter.
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.parameters.push((name.to_string(), value.to_string()));
        self
    }

    /// Behind a proxy that enforces `quotas`.
    pub fn behind_quotas(mut self, quotas: Quotas) -> Self {
        self.proxy = Some(ProxyOptions {
            quotas: Some(quotas),
            ..ProxyOptions::default()
        });
        self
    }
}

impl Deployment {
    pub async fn new(options: DeployOptions) -> Result<Self, WorldError> {
        let (emulator, proxy) = match options.proxy {
            None => (Emulator::start().await?, None),
            Some(proxy_options) => {
                // The proxy first (the emulator hands its address to the
                // functions it runs), then pointed at the emulator.
                let proxy = Proxy::start_with(0, proxy_options).await?;
                let emulator = Emulator::start_with(&[("AWS_ENDPOINT_URL", proxy.endpoint().as_str())]).await?;
                proxy.set_upstream(emulator.gateway_port);
                (emulator, Some(proxy))
            }
        };
        let sdk = emulator.sdk_config().await;
        let parameters: Vec<(&str, &str)> = options
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let outputs = stack::deploy(&sdk, STACK, stack::TEMPLATE, &stack::lambda_dir(), &parameters)
            .await?
            .outputs;

        let iot = aws_sdk_iot::Client::new(&sdk);
        let s3 = crate::emulator::s3_client(&sdk);
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
