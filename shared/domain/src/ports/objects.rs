//! The credentials bucket.

use std::future::Future;

use crate::model::plan::CredentialsRecord;
use crate::ports::PortResult;

/// The credentials bucket.
pub trait CredentialsStore: Send + Sync {
    /// Stores the record under its key, encrypted with the configured KMS key.
    fn put_credentials(&self, key: &str, record: &CredentialsRecord) -> impl Future<Output = PortResult<()>> + Send;
}

/// The credentials bucket as server-keygen rotation uses it.
pub trait RotationObjects: Send + Sync {
    /// Stores one object under SSE-KMS.
    fn put_object(&self, key: &str, body: &[u8]) -> impl Future<Output = PortResult<()>> + Send;
    /// Deletes one object; succeeds when it is already gone.
    fn delete_object(&self, key: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// The bucket's name, for the job document's presigned-URL placeholders.
    fn bucket(&self) -> &str;
}
