//! S3 adapter: the credentials bucket.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use onboarding_domain::{CredentialsRecord, PortError, PortErrorKind};
use onboarding_domain::{CredentialsStore, PortResult};

use crate::error::classify;

/// Writes credentials records, each put requesting SSE-KMS with the
/// configured key explicitly (never relying on the bucket default), with an
/// S3 Bucket Key to keep KMS request costs flat under bursts.
#[derive(Debug, Clone)]
pub struct S3CredentialsStore {
    client: Client,
    bucket: String,
    kms_key_id: String,
}

impl S3CredentialsStore {
    pub fn new(client: Client, bucket: impl Into<String>, kms_key_id: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            kms_key_id: kms_key_id.into(),
        }
    }
}

impl CredentialsStore for S3CredentialsStore {
    async fn put_credentials(&self, key: &str, record: &CredentialsRecord) -> PortResult<()> {
        let body = serde_json::to_vec(record).map_err(|e| {
            PortError::new(
                "PutObject",
                PortErrorKind::Invalid,
                format!("record does not serialise: {e}"),
            )
        })?;
        put_sse_kms(
            &self.client,
            &self.bucket,
            key,
            &self.kms_key_id,
            body,
            "application/json",
        )
        .await
    }
}

/// `PutObject` requesting SSE-KMS with `kms_key_id` explicitly and an S3
/// Bucket Key (the bucket policy refuses anything else).
///
/// # Errors
/// The SDK failure, classified.
pub(crate) async fn put_sse_kms(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    kms_key_id: &str,
    body: Vec<u8>,
    content_type: &str,
) -> PortResult<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(body))
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(kms_key_id)
        .bucket_key_enabled(true)
        .send()
        .await
        .map_err(|e| classify("PutObject", e))?;
    Ok(())
}
