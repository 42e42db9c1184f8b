//! AWS adapters behind the domain's ports, one module per service:
//!
//! - [`sdk`](crate::SdkSettings): SDK configuration and client construction;
//! - `iot`: the IoT control plane (certificates, things, groups, policies,
//!   CAs), and what operators do with it;
//! - `iot_jobs`: IoT Jobs and the data plane (how a rotation reaches a
//!   device) and the account's job-execution events;
//! - `s3`: the credentials bucket (SSE-KMS);
//! - `kms`: a CA key held in KMS, signing device certificates;
//! - `dynamodb`: the inventory table (records, configuration, deny list,
//!   name claims, rotations, the reconciler's and the provisioning hook's
//!   items), its keys and items each in one place;
//! - `error`: SDK errors as the domain's [`PortError`](onboarding_domain::PortError)
//!   classes, or as messages for operators ([`OperatorError`]).
//!
//! Adapters take clients and names in their constructors and never read the
//! environment. Every public name is re-exported here: users import
//! `onboarding_aws::X`, never a module path, so the modules may move.

mod dynamodb;
mod error;
mod fleet_ca;
mod iot;
mod iot_jobs;
mod kms;
mod pacing;
mod s3;
mod sdk;

pub use dynamodb::DynamoInventory;
pub use dynamodb::config::{ConfigAdmin, StoredProfile};
pub use dynamodb::fleet::{FleetStatus, ROTATION_STATES, RotationCounts, ThingHistoryItem, fleet_status};
pub use dynamodb::hook::{AllowResult, RECORDED_BY, ResetResult};
pub use dynamodb::items::{Attributes, parse_rotation};
pub use dynamodb::keys::{
    CERTIFICATE_SK, CLAIM_SK, DENY_SK, RECONCILER_PK, ROTATION_SK, binding_sk, certificate_pk, deny_pk, expiry_key,
    expiry_shard, legacy_deny_sk, profile_sk, thing_pk,
};
pub use dynamodb::rotations::{ScanStats, scan_totals, take_scan_totals};
pub use error::OperatorError;
pub use fleet_ca::FleetCaAdapter;
pub use iot::IotAdapter;
pub use iot::operator::{CaProvisioning, ca_provisioning};
pub use iot::operator::{
    CertificateLookup, ClaimCertificate, JitpRegistration, ListedCa, TemplatePut, ThingDetails, attached_policy_names,
    ca_is_registered, certificate_status, create_claim_certificate, describe_thing, list_cas, lookup_certificate,
    put_provisioning_template, register_ca_certificate, registration_code, thing_group_names, thing_principal_arns,
};
pub use iot_jobs::{
    PRESIGNED_URL_SECONDS, RotationIotAdapter, enable_job_execution_events, job_execution_events_enabled,
};
pub use kms::KmsSigner;
pub use kms::{CaKeySpec, create_ca_key};
pub use pacing::{ApiPacer, ApiQuotas, IOT_DEFAULT_QUOTAS, QuotaSyntax};
pub use s3::{S3CredentialsStore, S3RotationObjects};
pub use sdk::{SdkSettings, iot_data_client, s3_client};
