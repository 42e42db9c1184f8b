//! `infra/template.yaml` deployed into an emulator the way `sam deploy` does
//! it: each function's cargo-lambda zip uploaded to an artifacts bucket, each
//! `CodeUri` pointed at its zip (what `sam package` does), then CloudFormation
//! `CreateStack` with the SAM transform and the parameters' defaults.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_cloudformation::error::DisplayErrorContext;
use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use aws_sdk_s3::primitives::ByteStream;

use crate::{s3_client, workspace_root};

/// The SAM template, as built into this binary.
pub const TEMPLATE: &str = include_str!("../../../infra/template.yaml");

/// The bucket `sam package` would upload the functions' zips to.
const ARTIFACTS: &str = "deployment-artifacts";

/// How long a stack may take to create.
const CREATE_TIMEOUT: Duration = Duration::from_secs(180);

/// Why the stack is not there.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "{path}: {problem}. Build the Lambda zips first: cargo lambda build --release --output-format zip --lambda-dir {dir}, with -p for each crate under functions/ (scripts/demo.sh and scripts/test.sh do)",
        dir = .lambda_dir.display()
    )]
    MissingZip {
        path: String,
        problem: String,
        lambda_dir: PathBuf,
    },
    #[error("{operation} failed: {message}")]
    Aws { operation: &'static str, message: String },
    #[error("stack {stack} ended {status}: {failures}")]
    Failed {
        stack: String,
        status: String,
        failures: String,
    },
}

fn aws<E: std::error::Error>(operation: &'static str) -> impl FnOnce(E) -> StackError {
    move |e| StackError::Aws {
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// The directory holding `<function>/bootstrap.zip` from `cargo lambda build
/// --release --output-format zip --lambda-dir <dir>`: `$ONBOARDING_LAMBDA_DIR`,
/// else `target/lambda/x86_64` in the workspace.
pub fn lambda_dir() -> PathBuf {
    std::env::var_os("ONBOARDING_LAMBDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/lambda/x86_64"))
}

/// The functions a template deploys (its `CodeUri: ../functions/<name>` lines).
pub fn functions(template: &str) -> Vec<String> {
    template
        .lines()
        .filter_map(code_uri)
        .map(|(_, function)| function.to_string())
        .collect()
}

/// A `CodeUri: ../functions/<name>` line: its indentation and the function's name.
fn code_uri(line: &str) -> Option<(&str, &str)> {
    let (indent, function) = line.split_once("CodeUri: ../functions/")?;
    Some((indent, function.trim().trim_end_matches('/')))
}

/// Checks that every function's zip is built, before anything is started.
///
/// # Errors
/// [`StackError::MissingZip`] for the first one missing.
pub fn check_zips(template: &str, lambda_dir: &Path) -> Result<(), StackError> {
    for function in functions(template) {
        let zip = lambda_dir.join(&function).join("bootstrap.zip");
        if !zip.is_file() {
            return Err(StackError::MissingZip {
                path: zip.display().to_string(),
                problem: "not found".into(),
                lambda_dir: lambda_dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// A deployed stack.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub stack: String,
    pub outputs: HashMap<String, String>,
    /// False when a complete stack of that name was already there and was reused.
    pub created: bool,
}

impl Deployed {
    /// One output, or a message naming it.
    ///
    /// # Errors
    /// When the stack has no such output.
    pub fn output(&self, key: &str) -> Result<&str, StackError> {
        self.outputs
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| StackError::Failed {
                stack: self.stack.clone(),
                status: "without output".into(),
                failures: key.to_string(),
            })
    }
}

/// Deploys `template` as `stack` (or reuses a complete stack of that name),
/// with the functions' zips from `lambda_dir` and parameter overrides.
///
/// # Errors
/// [`StackError`] with the failed resources when creation fails.
pub async fn deploy(
    sdk: &SdkConfig,
    stack: &str,
    template: &str,
    lambda_dir: &Path,
    parameters: &[(&str, &str)],
) -> Result<Deployed, StackError> {
    let cloudformation = aws_sdk_cloudformation::Client::new(sdk);
    if let Some(existing) = describe(&cloudformation, stack).await?
        && existing.stack_status() == Some(&StackStatus::CreateComplete)
    {
        enable_job_events(sdk).await?;
        return Ok(Deployed {
            stack: stack.to_string(),
            outputs: outputs(&existing),
            created: false,
        });
    }
    let s3 = s3_client(sdk);
    // Zips are read before anything is created, so a missing build fails fast.
    let template = package(&s3, template, lambda_dir).await?;
    // Templates over CloudFormation's 51,200-byte body limit go through S3,
    // as `sam deploy` uploads them: always, so size never decides.
    s3.put_object()
        .bucket(ARTIFACTS)
        .key(format!("{stack}.template.yaml"))
        .body(ByteStream::from(template.into_bytes()))
        .send()
        .await
        .map_err(aws("PutObject"))?;
    let template_url = format!("https://s3.amazonaws.com/{ARTIFACTS}/{stack}.template.yaml");
    let mut request = cloudformation
        .create_stack()
        .stack_name(stack)
        .template_url(template_url)
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityAutoExpand);
    for (key, value) in parameters {
        request = request.parameters(Parameter::builder().parameter_key(*key).parameter_value(*value).build());
    }
    request.send().await.map_err(aws("CreateStack"))?;
    let created = wait_for(&cloudformation, stack).await?;
    enable_job_events(sdk).await?;
    Ok(Deployed {
        stack: stack.to_string(),
        outputs: outputs(&created),
        created: true,
    })
}

/// The deploy-time step the stack cannot take itself (CloudFormation has no
/// resource for the account's event configuration, and no function role may
/// change it): job-execution events on, as `onboard events --enable` does.
async fn enable_job_events(sdk: &SdkConfig) -> Result<(), StackError> {
    onboarding_aws::enable_job_execution_events(&aws_sdk_iot::Client::new(sdk))
        .await
        .map_err(|e| StackError::Aws {
            operation: e.operation,
            message: e.to_string(),
        })?;
    Ok(())
}

fn outputs(stack: &aws_sdk_cloudformation::types::Stack) -> HashMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key.clone()?, o.output_value.clone()?)))
        .collect()
}

async fn describe(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<Option<aws_sdk_cloudformation::types::Stack>, StackError> {
    match cloudformation.describe_stacks().stack_name(stack).send().await {
        Ok(out) => Ok(out.stacks.unwrap_or_default().into_iter().next()),
        // CloudFormation answers a missing stack with a ValidationError.
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("ValidationError") => Ok(None),
        Err(e) => Err(aws("DescribeStacks")(e)),
    }
}

/// Uploads each function's zip and points its `CodeUri` at it, as `sam package` does.
async fn package(s3: &aws_sdk_s3::Client, template: &str, lambda_dir: &Path) -> Result<String, StackError> {
    let mut zips = Vec::new();
    let mut packaged = Vec::new();
    for line in template.lines() {
        let Some((indent, function)) = code_uri(line) else {
            packaged.push(line.to_string());
            continue;
        };
        let zip = lambda_dir.join(function).join("bootstrap.zip");
        let bytes = std::fs::read(&zip).map_err(|e| StackError::MissingZip {
            path: zip.display().to_string(),
            problem: e.to_string(),
            lambda_dir: lambda_dir.to_path_buf(),
        })?;
        let key = format!("{function}.zip");
        packaged.push(format!("{indent}CodeUri: s3://{ARTIFACTS}/{key}"));
        zips.push((key, bytes));
    }
    match s3.create_bucket().bucket(ARTIFACTS).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) => {}
        Err(e) => return Err(aws("CreateBucket")(e)),
    }
    for (key, bytes) in zips {
        s3.put_object()
            .bucket(ARTIFACTS)
            .key(&key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(aws("PutObject"))?;
    }
    Ok(packaged.join("\n"))
}

async fn wait_for(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<aws_sdk_cloudformation::types::Stack, StackError> {
    let deadline = Instant::now() + CREATE_TIMEOUT;
    loop {
        let current = describe(cloudformation, stack)
            .await?
            .ok_or_else(|| StackError::Failed {
                stack: stack.to_string(),
                status: "deleted".into(),
                failures: "the stack vanished while being created".into(),
            })?;
        match current.stack_status() {
            Some(StackStatus::CreateComplete) => return Ok(current),
            Some(StackStatus::CreateInProgress) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => {
                let events = cloudformation
                    .describe_stack_events()
                    .stack_name(stack)
                    .send()
                    .await
                    .map_err(aws("DescribeStackEvents"))?;
                let failures: Vec<String> = events
                    .stack_events()
                    .iter()
                    .filter(|e| e.resource_status().is_some_and(|s| s.as_str().contains("FAILED")))
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.logical_resource_id().unwrap_or("?"),
                            e.resource_status_reason().unwrap_or("no reason given")
                        )
                    })
                    .collect();
                return Err(StackError::Failed {
                    stack: stack.to_string(),
                    status: other.map_or_else(|| "without a status".to_string(), |s| s.as_str().to_string()),
                    failures: if failures.is_empty() {
                        format!("not complete after {CREATE_TIMEOUT:?}")
                    } else {
                        failures.join("; ")
                    },
                });
            }
        }
    }
}
