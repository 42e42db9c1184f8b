//! Fleet provisioning by claim: the provisioning template a device profile
//! becomes, and the pre-provisioning hook's decision.
//!
//! A device holding a shared claim certificate asks AWS IoT for its own
//! certificate (`CreateKeysAndCertificate` over MQTT), then asks for the
//! template to be applied (`RegisterThing`) with parameters of its own: its
//! `SerialNumber` and the subject-like fields the profile names things and
//! attributes by (`CommonName`, `Organization`...). Before applying the
//! template AWS IoT calls the hook, which must answer within 5 seconds.
//!
//! The hook decides everything that matters for security: the serial must be
//! on the allow-list (the inventory table), the new certificate must pass the
//! checks that apply to a certificate AWS IoT made (key, extensions,
//! validity), and the thing name, attributes, thing type, groups and policy
//! all come from the device's profile through `parameterOverrides` — a device
//! names none of them itself. The template only places them: the same
//! template body serves any profile with the same attribute names.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::certificate::{Certificate, Subject, SubjectField};
use crate::checks::{approve_subject, check_extensions, check_key, check_validity};
use crate::config::{ConfigCache, OnboardingConfig};
use crate::jitp::{CERTIFICATE_ID_PARAMETER, template_document};
use crate::ports::PortResult;
use crate::profile::{DeviceProfile, ProfileError};
use crate::reason::{RejectReason, Rejection};
use crate::record::{CertificateRecord, RecordStatus};

/// The only hook payload version AWS IoT supports.
pub const HOOK_PAYLOAD_VERSION: &str = "2020-04-01";
/// AWS IoT gives up on a hook after this long; the hook answers well within it.
pub const HOOK_LIMIT_MILLIS: u64 = 5_000;
/// The `caCertificateId` of inventory records of fleet-provisioned
/// certificates: AWS IoT signs them with its own CA, registered nowhere.
pub const FLEET_PROVISIONING_CA: &str = "FLEET_PROVISIONING";
/// The device's serial number: the allow-list key.
pub const SERIAL_PARAMETER: &str = "SerialNumber";
/// Set by the hook from the profile's naming rule.
pub const THING_NAME_PARAMETER: &str = "ThingName";
/// Set by the hook: the profile's policy.
pub const POLICY_PARAMETER: &str = "PolicyName";
/// Set by the hook: the profile's thing type.
pub const THING_TYPE_PARAMETER: &str = "ThingTypeName";
/// Set by the hook: the profile's groups, comma-separated.
pub const THING_GROUPS_PARAMETER: &str = "ThingGroups";
/// Longest serial accepted.
pub const SERIAL_MAX: usize = 64;

/// The template parameter that carries one mapped attribute.
pub fn attribute_parameter(attribute: &str) -> String {
    format!("Attribute:{attribute}")
}

/// The request parameter a device sends for a subject field.
pub fn device_parameter(field: SubjectField) -> &'static str {
    match field {
        SubjectField::CommonName => "CommonName",
        SubjectField::Organization => "Organization",
        SubjectField::OrganizationalUnit => "OrganizationalUnit",
        SubjectField::SerialNumber => SERIAL_PARAMETER,
        SubjectField::Country => "Country",
        SubjectField::State => "StateName",
        SubjectField::DnQualifier => "DistinguishedNameQualifier",
    }
}

/// Renders the fleet-provisioning template of a profile: a thing named and
/// typed by the hook, with the profile's attribute names; the certificate
/// `ACTIVE`; the hook's policy attached.
///
/// # Errors
/// The profile's own problem when it is invalid.
pub fn render_template(profile: &DeviceProfile) -> Result<Value, ProfileError> {
    profile.validate()?;
    let string = || json!({ "Type": "String" });
    let reference = |name: &str| json!({ "Ref": name });
    let mut parameters = Map::new();
    parameters.insert(SERIAL_PARAMETER.into(), string());
    parameters.insert(THING_NAME_PARAMETER.into(), string());
    parameters.insert(POLICY_PARAMETER.into(), string());
    let mut properties = Map::new();
    let mut overrides = Map::new();
    properties.insert("ThingName".into(), reference(THING_NAME_PARAMETER));
    if !profile.attributes.is_empty() {
        let mut payload = Map::new();
        for name in profile.attributes.keys() {
            let parameter = attribute_parameter(name);
            payload.insert(name.clone(), reference(&parameter));
            parameters.insert(parameter, string());
        }
        properties.insert("AttributePayload".into(), Value::Object(payload));
        overrides.insert("AttributePayload".into(), json!("MERGE"));
    }
    if profile.thing_type.is_some() {
        parameters.insert(THING_TYPE_PARAMETER.into(), string());
        properties.insert("ThingTypeName".into(), reference(THING_TYPE_PARAMETER));
        overrides.insert("ThingTypeName".into(), json!("REPLACE"));
    }
    if !profile.thing_groups.is_empty() {
        parameters.insert(THING_GROUPS_PARAMETER.into(), string());
        properties.insert(
            "ThingGroups".into(),
            json!({ "Fn::Split": [",", reference(THING_GROUPS_PARAMETER)] }),
        );
        overrides.insert("ThingGroups".into(), json!("DO_NOTHING"));
    }
    parameters.insert(CERTIFICATE_ID_PARAMETER.into(), string());
    Ok(template_document(
        parameters,
        properties,
        overrides,
        reference(POLICY_PARAMETER),
        "Active",
    ))
}

/// What AWS IoT sends the pre-provisioning hook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    #[serde(default)]
    pub claim_certificate_id: Option<String>,
    pub certificate_id: String,
    #[serde(default)]
    pub certificate_pem: Option<String>,
    #[serde(default)]
    pub template_arn: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// The device's `RegisterThing` parameters.
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

impl HookRequest {
    /// The template's name, the last part of its ARN.
    pub fn template_name(&self) -> Option<&str> {
        self.template_arn.as_deref().and_then(|arn| arn.rsplit('/').next())
    }
}

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    pub allow_provisioning: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameter_overrides: BTreeMap<String, String>,
}

impl HookResponse {
    pub fn refuse() -> Self {
        Self {
            allow_provisioning: false,
            parameter_overrides: BTreeMap::new(),
        }
    }
}

/// A serial on the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub serial: String,
    /// The profile its device is provisioned with (`None`: the default profile).
    pub profile: Option<String>,
}

/// A request the hook allows: what the template will be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub serial: String,
    pub profile: String,
    pub thing_name: String,
    pub overrides: BTreeMap<String, String>,
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a request is refused: the device's fault, or the configuration's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The device or its certificate does not qualify.
    Rejected(Rejection),
    /// The serial's profile is missing or invalid: an operator must fix it.
    Misconfigured { profile: String, problem: String },
}

impl Refusal {
    /// A stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(rejection) => rejection.reason.code(),
            Self::Misconfigured { .. } => "PROFILE_UNAVAILABLE",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Self::Rejected(rejection) => rejection.detail.clone(),
            Self::Misconfigured { profile, problem } => format!("profile {profile:?}: {problem}"),
        }
    }
}

fn rejected(reason: RejectReason, detail: impl Into<String>) -> Refusal {
    Refusal::Rejected(Rejection::new(reason, detail))
}

/// The device's serial parameter, checked for shape.
///
/// # Errors
/// `PARAMETERS_INVALID` when it is absent, not a string, empty, too long or
/// outside `[A-Za-z0-9._:-]`.
pub fn serial_of(request: &HookRequest) -> Result<&str, Refusal> {
    let serial = match request.parameters.get(SERIAL_PARAMETER) {
        Some(Value::String(serial)) => serial.as_str(),
        Some(_) => {
            return Err(rejected(
                RejectReason::ParametersInvalid,
                "SerialNumber is not a string",
            ));
        }
        None => {
            return Err(rejected(
                RejectReason::ParametersInvalid,
                "the request has no SerialNumber parameter",
            ));
        }
    };
    if serial.is_empty()
        || serial.len() > SERIAL_MAX
        || !serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(rejected(
            RejectReason::ParametersInvalid,
            format!("SerialNumber {serial:?} is not 1 to {SERIAL_MAX} characters of [A-Za-z0-9._:-]"),
        ));
    }
    Ok(serial)
}

/// The subject fields the device sent, each a string.
fn subject_of(request: &HookRequest) -> Result<Subject, Refusal> {
    let mut pairs = Vec::new();
    for field in SubjectField::ALL {
        let name = device_parameter(field);
        match request.parameters.get(name) {
            None => {}
            Some(Value::String(value)) => pairs.push((field, value.clone())),
            Some(_) => {
                return Err(rejected(
                    RejectReason::ParametersInvalid,
                    format!("parameter {name} is not a string"),
                ));
            }
        }
    }
    Ok(Subject::from_pairs(pairs))
}

/// Everything the decision needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct HookContext<'a> {
    /// The serial's allow-list entry, if it has one.
    pub allowed: Option<&'a AllowEntry>,
    pub config: &'a OnboardingConfig,
    /// The profile of entries that name none.
    pub default_profile: &'a str,
    /// Unix seconds.
    pub now: i64,
    pub clock_skew_secs: i64,
}

/// Decides a hook request: the allow-list, the certificate, the profile's
/// naming and attributes, in that order; the first failure refuses.
///
/// # Errors
/// The [`Refusal`], with a reason code and detail.
pub fn decide(request: &HookRequest, ctx: &HookContext<'_>) -> Result<Allowed, Refusal> {
    let serial = serial_of(request)?;
    let Some(entry) = ctx.allowed else {
        return Err(rejected(
            RejectReason::SerialNotAllowed,
            format!("serial {serial} is not on the allow-list"),
        ));
    };
    let profile_name = entry.profile.as_deref().unwrap_or(ctx.default_profile);
    let profile = ctx
        .config
        .profile(profile_name)
        .map_err(|problem| Refusal::Misconfigured {
            profile: profile_name.to_string(),
            problem: problem.to_string(),
        })?;

    let Some(pem) = request.certificate_pem.as_deref() else {
        return Err(rejected(
            RejectReason::CertificateMalformed,
            "the request carries no certificatePem",
        ));
    };
    let certificate = Certificate::from_pem(pem)
        .map_err(|e| Refusal::Rejected(Rejection::new(RejectReason::CertificateMalformed, e.0)))?;
    if certificate.fingerprint != request.certificate_id.to_ascii_lowercase() {
        return Err(rejected(
            RejectReason::CertificateMismatch,
            format!(
                "certificatePem is certificate {}, not {}",
                certificate.fingerprint, request.certificate_id
            ),
        ));
    }
    check_key(&certificate.key).map_err(Refusal::Rejected)?;
    check_extensions(&certificate).map_err(Refusal::Rejected)?;
    check_validity(&certificate, ctx.now, ctx.clock_skew_secs, profile.min_remaining_days)
        .map_err(Refusal::Rejected)?;

    let subject = subject_of(request)?;
    let approval = approve_subject(&subject, profile).map_err(Refusal::Rejected)?;
    let mut overrides = BTreeMap::new();
    for name in profile.attributes.keys() {
        match approval.attributes.get(name) {
            Some(value) => {
                overrides.insert(attribute_parameter(name), value.clone());
            }
            None => {
                let field = profile
                    .attributes
                    .get(name)
                    .copied()
                    .unwrap_or(SubjectField::CommonName);
                return Err(rejected(
                    RejectReason::AttributeInvalid,
                    format!(
                        "attribute {name} needs a valid {} parameter: the template sets every attribute of profile {}",
                        device_parameter(field),
                        profile.name
                    ),
                ));
            }
        }
    }
    overrides.insert(THING_NAME_PARAMETER.into(), approval.thing_name.clone());
    overrides.insert(POLICY_PARAMETER.into(), profile.policy_name.clone());
    if let Some(thing_type) = &profile.thing_type {
        overrides.insert(THING_TYPE_PARAMETER.into(), thing_type.clone());
    }
    if !profile.thing_groups.is_empty() {
        overrides.insert(THING_GROUPS_PARAMETER.into(), profile.thing_groups.join(","));
    }
    Ok(Allowed {
        serial: serial.to_string(),
        profile: profile.name.clone(),
        thing_name: approval.thing_name,
        overrides,
        not_before: certificate.not_before,
        not_after: certificate.not_after,
    })
}

impl Allowed {
    /// The answer that lets AWS IoT apply the template.
    pub fn response(&self) -> HookResponse {
        HookResponse {
            allow_provisioning: true,
            parameter_overrides: self.overrides.clone(),
        }
    }

    /// The inventory record of the certificate, written when the hook allows
    /// it: AWS IoT activates the certificate in the same request, once the
    /// template is applied.
    pub fn record(&self, certificate_id: &str, template: Option<&str>, now: i64) -> CertificateRecord {
        let mut record = CertificateRecord::bare(certificate_id, FLEET_PROVISIONING_CA, RecordStatus::Provisioned, now);
        record.thing_name = Some(self.thing_name.clone());
        record.profile = Some(self.profile.clone());
        record.serial = Some(self.serial.clone());
        record.not_before = Some(self.not_before);
        record.not_after = Some(self.not_after);
        record.detail = Some(format!(
            "allowed by the pre-provisioning hook; template {}",
            template.unwrap_or("(unnamed)")
        ));
        record
    }
}

// --- port and workflow -----------------------------------------------------

/// What the hook reads and writes in the inventory.
pub trait HookInventory: Send + Sync {
    fn load_config(&self) -> impl Future<Output = PortResult<OnboardingConfig>> + Send;
    /// The serial's allow-list entry, if any.
    fn allow_entry(&self, serial: &str) -> impl Future<Output = PortResult<Option<AllowEntry>>> + Send;
    /// Writes the record of an allowed certificate unless it has one; true when written.
    fn record_allowed(&self, record: &CertificateRecord) -> impl Future<Output = PortResult<bool>> + Send;
}

/// What the hook did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Allowed(Allowed),
    Refused(Refusal),
    /// The inventory could not be read or written in time: refused, the
    /// device retries.
    Unavailable(String),
}

impl HookOutcome {
    /// The answer to AWS IoT.
    pub fn response(&self) -> HookResponse {
        match self {
            Self::Allowed(allowed) => allowed.response(),
            Self::Refused(_) | Self::Unavailable(_) => HookResponse::refuse(),
        }
    }

    /// `allowed`, `refused` or `unavailable`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allowed(_) => "allowed",
            Self::Refused(_) => "refused",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// The hook's settings.
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// The profile of allow-list entries that name none, from the
    /// environment (table items of the same name win).
    pub default_profile: Option<DeviceProfile>,
    pub cache_ttl: std::time::Duration,
    pub clock_skew_secs: i64,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self {
            default_profile: None,
            cache_ttl: std::time::Duration::from_secs(60),
            clock_skew_secs: crate::checks::DEFAULT_CLOCK_SKEW_SECS,
        }
    }
}

/// The name the default profile goes by when the environment defines none.
pub const DEFAULT_PROFILE_NAME: &str = "default";

/// The pre-provisioning hook: one allow-list read, the configuration (cached
/// for a short TTL), the decision, and on success one conditional write.
pub struct ProvisioningHook<I> {
    inventory: I,
    settings: HookSettings,
    config: ConfigCache,
}

impl<I: HookInventory> ProvisioningHook<I> {
    pub fn new(inventory: I, settings: HookSettings) -> Self {
        let default_profile = settings.default_profile.clone().map(|profile| (profile, Vec::new()));
        Self {
            config: ConfigCache::new(settings.cache_ttl, default_profile),
            inventory,
            settings,
        }
    }

    /// Decides one request; never fails: anything but a clean allow refuses.
    pub async fn handle(&self, request: &HookRequest, now: i64) -> HookOutcome {
        let serial = match serial_of(request) {
            Ok(serial) => serial,
            Err(refusal) => return HookOutcome::Refused(refusal),
        };
        let (entry, config) = match futures::join!(
            self.inventory.allow_entry(serial),
            self.config.get(false, || self.inventory.load_config())
        ) {
            (Ok(entry), Ok((config, _))) => (entry, config),
            (Err(e), _) | (_, Err(e)) => return HookOutcome::Unavailable(e.to_string()),
        };
        let default_profile = self
            .settings
            .default_profile
            .as_ref()
            .map_or(DEFAULT_PROFILE_NAME, |p| p.name.as_str());
        let ctx = HookContext {
            allowed: entry.as_ref(),
            config: &config,
            default_profile,
            now,
            clock_skew_secs: self.settings.clock_skew_secs,
        };
        let allowed = match decide(request, &ctx) {
            Ok(allowed) => allowed,
            Err(refusal) => return HookOutcome::Refused(refusal),
        };
        let record = allowed.record(&request.certificate_id, request.template_name(), now);
        match self.inventory.record_allowed(&record).await {
            Ok(_) => HookOutcome::Allowed(allowed),
            // Allowing a device the inventory does not know would lose it.
            Err(e) => HookOutcome::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

    use super::*;
    use crate::ports::{PortError, PortErrorKind};

    const NOW: i64 = 1_800_000_000;

    fn profile(json: &str) -> DeviceProfile {
        DeviceProfile::parse(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn default_profile() -> DeviceProfile {
        profile(
            r#"{"name":"default","thingType":"sensor","thingName":"acme-{serialNumber}",
                "attributes":{"model":"OU","serial":"serialNumber"},
                "thingGroups":["fleet","eu"],"policyName":"device-policy","minRemainingDays":30}"#,
        )
    }

    /// A certificate as AWS IoT makes them, valid `days` from NOW − 1 day.
    fn certificate(days: i64, ca: bool) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params
            .distinguished_name
            .push(DnType::CommonName, "AWS IoT Certificate");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 86_400).unwrap_or_else(|e| panic!("{e}"));
        params.not_after =
            time::OffsetDateTime::from_unix_timestamp(NOW + days * 86_400).unwrap_or_else(|e| panic!("{e}"));
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let id = Certificate::from_pem(&cert.pem())
            .unwrap_or_else(|e| panic!("{e}"))
            .fingerprint;
        (id, cert.pem())
    }

    fn request(serial: Value, extra: &[(&str, Value)], cert: &(String, String)) -> HookRequest {
        let mut parameters = Map::new();
        if !serial.is_null() {
            parameters.insert(SERIAL_PARAMETER.into(), serial);
        }
        for (name, value) in extra {
            parameters.insert((*name).into(), value.clone());
        }
        HookRequest {
            claim_certificate_id: Some("claim".into()),
            certificate_id: cert.0.clone(),
            certificate_pem: Some(cert.1.clone()),
            template_arn: Some("arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/fleet".into()),
            client_id: Some("client".into()),
            parameters,
        }
    }

    fn config() -> OnboardingConfig {
        let mut config = OnboardingConfig::default();
        config.add_profile("default".into(), Ok(default_profile()));
        config.add_profile("broken".into(), Err(ProfileError::Json("expected value".into())));
        config
    }

    fn decide_with(request: &HookRequest, entry: Option<AllowEntry>) -> Result<Allowed, Refusal> {
        let config = config();
        decide(
            request,
            &HookContext {
                allowed: entry.as_ref(),
                config: &config,
                default_profile: "default",
                now: NOW,
                clock_skew_secs: 300,
            },
        )
    }

    fn entry(serial: &str, profile: Option<&str>) -> Option<AllowEntry> {
        Some(AllowEntry {
            serial: serial.into(),
            profile: profile.map(str::to_string),
        })
    }

    fn reason(result: Result<Allowed, Refusal>) -> String {
        match result {
            Ok(allowed) => panic!("allowed: {allowed:?}"),
            Err(refusal) => refusal.code().to_string(),
        }
    }

    #[test]
    fn an_allowed_serial_gets_every_override_from_its_profile() {
        let cert = certificate(3650, false);
        let request = request(json!("SN-1"), &[("OrganizationalUnit", json!("m2"))], &cert);
        let allowed = decide_with(&request, entry("SN-1", None)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(allowed.thing_name, "acme-SN-1");
        assert_eq!(allowed.profile, "default");
        let expected: BTreeMap<String, String> = [
            ("Attribute:model", "m2"),
            ("Attribute:serial", "SN-1"),
            ("PolicyName", "device-policy"),
            ("ThingGroups", "fleet,eu"),
            ("ThingName", "acme-SN-1"),
            ("ThingTypeName", "sensor"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(allowed.overrides, expected);
        let response = serde_json::to_value(allowed.response()).unwrap_or_default();
        assert_eq!(response["allowProvisioning"], true);
        assert_eq!(response["parameterOverrides"]["ThingName"], "acme-SN-1");
        let record = allowed.record(&cert.0, request.template_name(), NOW);
        assert_eq!(record.ca_certificate_id, FLEET_PROVISIONING_CA);
        assert_eq!(record.status, RecordStatus::Provisioned);
        assert_eq!(record.thing_name.as_deref(), Some("acme-SN-1"));
        assert_eq!(record.not_after, Some(NOW + 3650 * 86_400));
        assert!(record.detail.unwrap_or_default().contains("template fleet"));
    }

    #[test]
    fn a_device_cannot_name_its_own_thing_or_policy() {
        let cert = certificate(3650, false);
        let request = request(
            json!("SN-1"),
            &[
                ("OrganizationalUnit", json!("m2")),
                ("ThingName", json!("someone-else")),
                ("PolicyName", json!("admin")),
            ],
            &cert,
        );
        let allowed = decide_with(&request, entry("SN-1", None)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(allowed.overrides["ThingName"], "acme-SN-1");
        assert_eq!(allowed.overrides["PolicyName"], "device-policy");
    }

    #[test]
    fn refusals_name_their_reason() {
        let cert = certificate(3650, false);
        let ou = [("OrganizationalUnit", json!("m2"))];
        assert_eq!(
            reason(decide_with(&request(json!("SN-2"), &ou, &cert), None)),
            "SERIAL_NOT_ALLOWED"
        );
        assert_eq!(
            reason(decide_with(&request(Value::Null, &ou, &cert), entry("SN-2", None))),
            "PARAMETERS_INVALID"
        );
        assert_eq!(
            reason(decide_with(&request(json!(42), &ou, &cert), entry("42", None))),
            "PARAMETERS_INVALID"
        );
        assert_eq!(
            reason(decide_with(&request(json!("a b"), &ou, &cert), entry("a b", None))),
            "PARAMETERS_INVALID"
        );
        // The attribute's field is missing: the template could not set it.
        assert_eq!(
            reason(decide_with(&request(json!("SN-2"), &[], &cert), entry("SN-2", None))),
            "ATTRIBUTE_INVALID"
        );
        assert_eq!(
            reason(decide_with(
                &request(json!("SN-2"), &[("OrganizationalUnit", json!("bad value"))], &cert),
                entry("SN-2", None)
            )),
            "ATTRIBUTE_INVALID"
        );
        assert_eq!(
            reason(decide_with(
                &request(json!("SN-2"), &ou, &cert),
                entry("SN-2", Some("broken"))
            )),
            "PROFILE_UNAVAILABLE"
        );
        assert_eq!(
            reason(decide_with(
                &request(json!("SN-2"), &ou, &cert),
                entry("SN-2", Some("gone"))
            )),
            "PROFILE_UNAVAILABLE"
        );
        let mut wrong_id = request(json!("SN-2"), &ou, &cert);
        wrong_id.certificate_id = "0".repeat(64);
        assert_eq!(
            reason(decide_with(&wrong_id, entry("SN-2", None))),
            "CERTIFICATE_MISMATCH"
        );
        let mut no_pem = request(json!("SN-2"), &ou, &cert);
        no_pem.certificate_pem = None;
        assert_eq!(
            reason(decide_with(&no_pem, entry("SN-2", None))),
            "CERTIFICATE_MALFORMED"
        );
        let short = certificate(10, false);
        assert_eq!(
            reason(decide_with(&request(json!("SN-2"), &ou, &short), entry("SN-2", None))),
            "INSUFFICIENT_REMAINING_VALIDITY"
        );
        let ca = certificate(3650, true);
        assert_eq!(
            reason(decide_with(&request(json!("SN-2"), &ou, &ca), entry("SN-2", None))),
            "CERTIFICATE_IS_CA"
        );
    }

    #[test]
    fn the_template_places_what_the_hook_decides() {
        let template = render_template(&default_profile()).unwrap_or_else(|e| panic!("{e}"));
        let thing = &template["Resources"]["thing"]["Properties"];
        assert_eq!(thing["ThingName"], json!({"Ref": "ThingName"}));
        assert_eq!(thing["ThingTypeName"], json!({"Ref": "ThingTypeName"}));
        assert_eq!(
            thing["ThingGroups"],
            json!({"Fn::Split": [",", {"Ref": "ThingGroups"}]})
        );
        assert_eq!(
            thing["AttributePayload"],
            json!({"model": {"Ref": "Attribute:model"}, "serial": {"Ref": "Attribute:serial"}})
        );
        assert_eq!(
            template["Resources"]["policy"]["Properties"]["PolicyName"],
            json!({"Ref": "PolicyName"})
        );
        // Every override the hook sends is a declared parameter, and back.
        let cert = certificate(3650, false);
        let request = request(json!("SN-1"), &[("OrganizationalUnit", json!("m2"))], &cert);
        let allowed = decide_with(&request, entry("SN-1", None)).unwrap_or_else(|e| panic!("{e:?}"));
        let declared: Vec<&String> = template["Parameters"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        for name in allowed.overrides.keys() {
            assert!(declared.contains(&name), "{name} is not declared");
        }
        for name in declared {
            assert!(
                allowed.overrides.contains_key(name) || name == SERIAL_PARAMETER || name == CERTIFICATE_ID_PARAMETER,
                "{name} is never set"
            );
        }
        // A minimal profile declares no type, groups or attributes.
        let minimal = render_template(&DeviceProfile::minimal("p", "pol")).unwrap_or_else(|e| panic!("{e}"));
        assert!(minimal["Parameters"].get("ThingTypeName").is_none());
        assert!(minimal["Resources"]["thing"].get("OverrideSettings").is_none());
    }

    struct Inventory {
        config: OnboardingConfig,
        entries: Vec<AllowEntry>,
        fail_reads: bool,
        written: Mutex<Vec<CertificateRecord>>,
    }

    impl HookInventory for Inventory {
        async fn load_config(&self) -> PortResult<OnboardingConfig> {
            Ok(self.config.clone())
        }
        async fn allow_entry(&self, serial: &str) -> PortResult<Option<AllowEntry>> {
            if self.fail_reads {
                return Err(PortError::new("GetItem", PortErrorKind::Transient, "throttled"));
            }
            Ok(self.entries.iter().find(|e| e.serial == serial).cloned())
        }
        async fn record_allowed(&self, record: &CertificateRecord) -> PortResult<bool> {
            let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if written.iter().any(|r| r.certificate_id == record.certificate_id) {
                return Ok(false);
            }
            written.push(record.clone());
            Ok(true)
        }
    }

    #[tokio::test]
    async fn the_hook_records_what_it_allows_and_refuses_when_the_inventory_fails() {
        let inventory = Inventory {
            config: OnboardingConfig::default(),
            entries: vec![AllowEntry {
                serial: "SN-1".into(),
                profile: None,
            }],
            fail_reads: false,
            written: Mutex::new(Vec::new()),
        };
        let hook = ProvisioningHook::new(
            inventory,
            HookSettings {
                default_profile: Some(default_profile()),
                ..HookSettings::default()
            },
        );
        let cert = certificate(3650, false);
        let ou = [("OrganizationalUnit", json!("m2"))];
        let outcome = hook.handle(&request(json!("SN-1"), &ou, &cert), NOW).await;
        assert_eq!(outcome.label(), "allowed");
        assert!(outcome.response().allow_provisioning);
        let other = certificate(3650, false);
        let refused = hook.handle(&request(json!("SN-9"), &ou, &other), NOW).await;
        assert!(matches!(&refused, HookOutcome::Refused(r) if r.code() == "SERIAL_NOT_ALLOWED"));
        assert!(!refused.response().allow_provisioning);
        assert_eq!(
            serde_json::to_value(refused.response()).unwrap_or_default(),
            json!({"allowProvisioning": false})
        );
        let written = hook.inventory.written.lock().map(|w| w.clone()).unwrap_or_default();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].certificate_id, cert.0);

        let failing = ProvisioningHook::new(
            Inventory {
                config: OnboardingConfig::default(),
                entries: Vec::new(),
                fail_reads: true,
                written: Mutex::new(Vec::new()),
            },
            HookSettings {
                default_profile: Some(default_profile()),
                ..HookSettings::default()
            },
        );
        let outcome = failing.handle(&request(json!("SN-1"), &ou, &cert), NOW).await;
        assert_eq!(outcome.label(), "unavailable");
        assert!(!outcome.response().allow_provisioning);
    }
}
