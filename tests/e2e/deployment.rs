//! `infra/template.yaml` deployed into a fresh emulator the way `sam deploy`
//! does it: the functions' cargo-lambda zips uploaded to a bucket, each
//! `CodeUri` pointed at its zip (what `sam package` does), then CloudFormation
//! `CreateStack` with the SAM transform and the parameters' defaults.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::{Capability, StackStatus};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use onboarding_test_support::TestCa;
use onboarding_test_support::emulator::{Emulator, s3_client, workspace_root};
use onboarding_test_support::world::{Item, WorldError, certificate_status, inventory_record, register_ca};

const ARTIFACTS: &str = "deployment-artifacts";
const STACK: &str = "iot-onboarding";

/// The directory holding `<function>/bootstrap.zip` from
/// `cargo lambda build --release --output-format zip --lambda-dir <dir>`.
pub fn lambda_dir() -> PathBuf {
    std::env::var_os("ONBOARDING_LAMBDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/lambda/x86_64"))
}

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
}

impl Deployment {
    pub async fn new() -> Result<Self, WorldError> {
        let emulator = Emulator::start().await?;
        let sdk = emulator.sdk_config().await;
        let s3 = s3_client(&sdk);
        let cloudformation = aws_sdk_cloudformation::Client::new(&sdk);
        let template = std::fs::read_to_string(workspace_root().join("infra/template.yaml"))?;
        s3.create_bucket().bucket(ARTIFACTS).send().await?;
        let template = package(&s3, &template).await?;
        cloudformation
            .create_stack()
            .stack_name(STACK)
            .template_body(template)
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityAutoExpand)
            .send()
            .await?;
        let stack = wait_for_stack(&cloudformation).await?;
        let outputs: HashMap<String, String> = stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key.clone()?, o.output_value.clone()?)))
            .collect();

        let iot = aws_sdk_iot::Client::new(&sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        // After deploying: register the CA with auto-registration and bind it
        // to the default profile, as the README's deployment steps say.
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

/// Uploads each function's zip and points its `CodeUri` at it, as `sam package` does.
async fn package(s3: &aws_sdk_s3::Client, template: &str) -> Result<String, WorldError> {
    let mut packaged = Vec::new();
    for line in template.lines() {
        let Some((indent, function)) = line.split_once("CodeUri: ../functions/") else {
            packaged.push(line.to_string());
            continue;
        };
        let function = function.trim();
        let zip = lambda_dir().join(function).join("bootstrap.zip");
        let bytes = std::fs::read(&zip).map_err(|e| {
            format!(
                "{}: {e}. Build the Lambda zips first: cargo lambda build --release --output-format zip --lambda-dir target/lambda/x86_64 (scripts/test.sh does)",
                zip.display()
            )
        })?;
        let key = format!("{function}.zip");
        s3.put_object()
            .bucket(ARTIFACTS)
            .key(&key)
            .body(ByteStream::from(bytes))
            .send()
            .await?;
        packaged.push(format!("{indent}CodeUri: s3://{ARTIFACTS}/{key}"));
    }
    Ok(packaged.join("\n"))
}

async fn wait_for_stack(
    cloudformation: &aws_sdk_cloudformation::Client,
) -> Result<aws_sdk_cloudformation::types::Stack, WorldError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stacks = cloudformation.describe_stacks().stack_name(STACK).send().await?;
        let stack = stacks
            .stacks
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or("stack vanished")?;
        match stack.stack_status() {
            Some(StackStatus::CreateComplete) => return Ok(stack),
            Some(StackStatus::CreateInProgress) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => {
                let events = cloudformation.describe_stack_events().stack_name(STACK).send().await?;
                let failures: Vec<String> = events
                    .stack_events()
                    .iter()
                    .filter(|e| e.resource_status().is_some_and(|s| s.as_str().contains("FAILED")))
                    .map(|e| format!("{:?}: {:?}", e.logical_resource_id(), e.resource_status_reason()))
                    .collect();
                return Err(format!("stack ended {other:?}: {failures:?}").into());
            }
        }
    }
}
