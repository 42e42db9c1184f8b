//! AWS adapters behind the domain's ports: IoT (certificates, things,
//! groups, policies), S3 (credentials records under SSE-KMS) and DynamoDB
//! (inventory, configuration, name claims), and the rotation adapters (IoT
//! Jobs and data plane, rotation items and expiry scans, credentials
//! objects). Adapters take clients and names in their constructors and never
//! read the environment.

pub mod admin;
pub mod config;
pub mod dynamodb;
pub mod error;
pub mod events;
pub mod fleet;
pub mod fleet_provisioning;
pub mod iot;
pub mod reconciler;
pub mod rotation;
pub mod s3;

pub use admin::ConfigAdmin;
pub use config::{SdkSettings, iot_data_client, s3_client};
pub use dynamodb::{
    CERTIFICATE_SK, CLAIM_SK, DENY_SK, DynamoInventory, binding_sk, certificate_pk, deny_pk, expiry_key, expiry_shard,
    legacy_deny_sk, profile_sk, thing_pk,
};
pub use events::{enable_job_execution_events, job_execution_events_enabled};
pub use fleet::{ROTATION_STATES, fleet_status};
pub use fleet_provisioning::{AllowResult, ResetResult};
pub use iot::IotAdapter;
pub use reconciler::RECONCILER_PK;
pub use rotation::{
    PRESIGNED_URL_SECONDS, ROTATION_SK, RotationIotAdapter, S3RotationObjects, ScanStats, parse_rotation, scan_totals,
    take_scan_totals,
};
pub use s3::S3CredentialsStore;
