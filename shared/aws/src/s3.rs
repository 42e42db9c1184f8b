//! S3 adapter: the credentials bucket, written by the registrar
//! ([`S3CredentialsStore`]) and by server-keygen rotations
//! ([`S3RotationObjects`]).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use onboarding_domain::{CredentialsRecord, PortError, PortErrorKind, RotationObjects};
use onboarding_domain::{CredentialsStore, PortResult};

use crate::error::{classify, service_code};

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

/// The credentials objects of server-keygen rotations, in the credentials
/// bucket: each put requests SSE-KMS with the configured key explicitly and an
/// S3 Bucket Key, as [`crate::S3CredentialsStore`] does.
#[derive(Debug, Clone)]
pub struct S3RotationObjects {
    client: aws_sdk_s3::Client,
    bucket: String,
    kms_key_id: String,
}

impl S3RotationObjects {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, kms_key_id: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            kms_key_id: kms_key_id.into(),
        }
    }
}

impl RotationObjects for S3RotationObjects {
    async fn put_object(&self, key: &str, body: &[u8]) -> PortResult<()> {
        put_sse_kms(
            &self.client,
            &self.bucket,
            key,
            &self.kms_key_id,
            body.to_vec(),
            "application/x-pem-file",
        )
        .await
    }

    /// The bucket is versioned: a plain delete would only hide a private key
    /// behind a delete marker. Every version of the key (and any marker) is
    /// deleted for good.
    async fn delete_object(&self, key: &str) -> PortResult<()> {
        let versions = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| classify("ListObjectVersions", e))?;
        let mut ids: Vec<Option<String>> = versions
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .map(|v| v.version_id().map(str::to_string))
            .chain(
                versions
                    .delete_markers()
                    .iter()
                    .filter(|m| m.key() == Some(key))
                    .map(|m| m.version_id().map(str::to_string)),
            )
            .collect();
        if ids.is_empty() {
            // An unversioned bucket, or nothing listed: delete by key.
            ids.push(None);
        }
        for version in ids {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if matches!(service_code(&e), Some("NoSuchKey" | "NotFound" | "NoSuchVersion")) => {}
                Err(e) => return Err(classify("DeleteObject", e)),
            }
        }
        Ok(())
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }
}
