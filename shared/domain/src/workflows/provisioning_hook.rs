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
//!
//! A claim certificate is shared, so the hook also guards identities: it
//! claims the thing name with the registrar's conditional claim and refuses
//! with `IDENTITY_COLLISION` when another live certificate holds the name or
//! is attached ACTIVE to the thing; it uses up the serial's allow-list entry
//! with a conditional write (one certificate per serial, unless an operator
//! resets the entry, which lets the next certificate supersede the earlier
//! ones); and it refuses any parameter the device has no business sending.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::checks::certificate::{check_extensions, check_key, check_validity};
use crate::checks::subject::approve_subject;
use crate::model::certificate::{Certificate, Subject, SubjectField};
use crate::model::reason::{RejectReason, Rejection};
use crate::model::record::{CertificateRecord, RecordStatus};
use crate::model::status::CertificateStatus;
use crate::policy::config::OnboardingConfig;
use crate::policy::profile::{DeviceProfile, ProfileError};
use crate::ports::{
    AllowEntry, Consumption, HookIdentity, HookInventory, NameClaim, PortResult, Supersession, SupersessionIot,
    SupersessionStore,
};
use crate::workflows::config_cache::ConfigCache;
use crate::workflows::jitp::{CERTIFICATE_ID_PARAMETER, template_document};
use crate::workflows::registrar::certificate_id_of_arn;

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

/// The parameters a device of this profile sends: its `SerialNumber` and the
/// subject fields the profile's naming rule and attributes read. Anything
/// else in a request is refused.
pub fn device_parameters(profile: &DeviceProfile) -> BTreeSet<&'static str> {
    let mut names = BTreeSet::from([SERIAL_PARAMETER]);
    names.extend(profile.naming_fields().into_iter().map(device_parameter));
    names.extend(profile.attributes.values().map(|field| device_parameter(*field)));
    names
}

/// Renders the fleet-provisioning template of a profile: a thing named and
/// typed by the hook, with the profile's attribute names; the certificate
/// `ACTIVE`; the hook's policy attached. It declares exactly the device's
/// parameters (`device_parameters`) and the ones the hook sets; a thing
/// type or groups only when the profile sets them, so a device's value for
/// them has nowhere to go. For a thing that exists already (a device let in
/// again by `onboard allow reset`, after the hook checked that nobody else
/// holds the name), attributes are merged, groups kept, and a different thing
/// type fails the request instead of being replaced.
///
/// # Errors
/// The profile's own problem when it is invalid.
pub fn render_template(profile: &DeviceProfile) -> Result<Value, ProfileError> {
    profile.validate()?;
    let string = || json!({ "Type": "String" });
    let reference = |name: &str| json!({ "Ref": name });
    let mut parameters = Map::new();
    for name in device_parameters(profile) {
        parameters.insert(name.into(), string());
    }
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
        overrides.insert("ThingTypeName".into(), json!("FAIL"));
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

/// A request the hook allows: what the template will be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub serial: String,
    pub profile: String,
    pub thing_name: String,
    pub overrides: BTreeMap<String, String>,
    pub not_before: i64,
    pub not_after: i64,
    /// Earlier certificates this one supersedes (the entry's `replaces`).
    pub supersedes: Vec<String>,
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
    // The template declares these for the device; anything else is refused,
    // never silently dropped or overwritten.
    let accepted = device_parameters(profile);
    if let Some(name) = request.parameters.keys().find(|name| !accepted.contains(name.as_str())) {
        return Err(rejected(
            RejectReason::ParametersInvalid,
            format!(
                "parameter {name} is not declared for devices by the template of profile {} (it takes {})",
                profile.name,
                accepted.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        ));
    }

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
    if let Some(bound) = entry.thing_name.as_deref()
        && bound != approval.thing_name
    {
        return Err(rejected(
            RejectReason::SerialNotAllowed,
            format!(
                "serial {serial} is allowed only as thing {bound}, not {}",
                approval.thing_name
            ),
        ));
    }
    // Every parameter the template declares is set here, the device's own
    // ones to the values the hook checked.
    let mut overrides = BTreeMap::new();
    for name in &accepted {
        if let Some(Value::String(value)) = request.parameters.get(*name) {
            overrides.insert((*name).to_string(), value.clone());
        }
    }
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
        supersedes: entry.replaces.clone(),
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

// --- the workflow ------------------------------------------------------------

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
            clock_skew_secs: crate::checks::certificate::DEFAULT_CLOCK_SKEW_SECS,
        }
    }
}

/// The name the default profile goes by when the environment defines none.
pub const DEFAULT_PROFILE_NAME: &str = "default";

/// A certificate that still stands for an identity: ACTIVE, or on its way
/// there (the registrar's rule for a name claim's holder).
fn is_live(status: Option<&CertificateStatus>) -> bool {
    matches!(
        status,
        Some(CertificateStatus::Active | CertificateStatus::PendingActivation)
    )
}

/// The pre-provisioning hook.
///
/// DynamoDB and IoT rounds of an allowed request, each round's calls in
/// parallel: (1) the allow-list entry ‖ the configuration (cached); (2) the
/// entry used up ‖ the name claimed ‖ the thing's principals; (3) only when
/// another certificate holds the name or is attached to the thing: their
/// status, then the claim moved from a retired or superseded holder; (4) the
/// inventory record ‖ the supersessions of a reset. A new device takes
/// rounds 1, 2 and 4.
pub struct ProvisioningHook<I, D> {
    inventory: I,
    identity: D,
    settings: HookSettings,
    config: ConfigCache,
}

/// What a refusal after the conditional writes gives back.
struct Taken<'a> {
    serial: &'a str,
    certificate_id: &'a str,
    previous: Option<&'a str>,
    thing_name: &'a str,
    claimed: bool,
}

impl<I: HookInventory, D: HookIdentity> ProvisioningHook<I, D> {
    pub fn new(inventory: I, identity: D, settings: HookSettings) -> Self {
        let default_profile = settings.default_profile.clone().map(|profile| (profile, Vec::new()));
        Self {
            config: ConfigCache::new(settings.cache_ttl, default_profile),
            inventory,
            identity,
            settings,
        }
    }

    /// Decides one request; never fails: anything but a clean allow refuses.
    pub async fn handle(&self, request: &HookRequest, now: i64) -> HookOutcome {
        match self.try_handle(request, now).await {
            Ok(outcome) => outcome,
            Err(e) => HookOutcome::Unavailable(e.to_string()),
        }
    }

    async fn try_handle(&self, request: &HookRequest, now: i64) -> PortResult<HookOutcome> {
        let serial = match serial_of(request) {
            Ok(serial) => serial,
            Err(refusal) => return Ok(HookOutcome::Refused(refusal)),
        };
        // Round 1.
        let (entry, (config, _)) = futures::try_join!(
            self.inventory.allow_entry(serial),
            self.config.get(false, || self.inventory.load_config())
        )?;
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
            Err(refusal) => return Ok(HookOutcome::Refused(refusal)),
        };
        let certificate_id = request.certificate_id.to_ascii_lowercase();
        let certificate_id = certificate_id.as_str();
        let entry = entry.unwrap_or_default();
        // Single use: another certificate's use stands unless IoT says that
        // certificate is gone or retired (a request that failed after the hook).
        let previous = match entry.used_by.as_deref() {
            Some(holder) if holder != certificate_id => {
                if is_live(self.identity.certificate_status(holder).await?.as_ref()) {
                    return Ok(HookOutcome::Refused(used_by(serial, holder)));
                }
                Some(holder)
            }
            _ => None,
        };
        let name = allowed.thing_name.as_str();
        // Round 2: the two conditional writes and IoT's view of the thing.
        let (consumption, claim, principals) = futures::try_join!(
            self.inventory.use_allow_entry(serial, certificate_id, previous, now),
            self.inventory.claim_thing_name(name, certificate_id),
            self.identity.thing_principals(name),
        )?;
        let taken = Taken {
            serial,
            certificate_id,
            previous,
            thing_name: name,
            claimed: claim == NameClaim::Claimed,
        };
        let refusal = match &consumption {
            Consumption::Used => None,
            Consumption::UsedBy(holder) => Some(used_by(serial, holder)),
            Consumption::Missing => Some(rejected(
                RejectReason::SerialNotAllowed,
                format!("serial {serial} was taken off the allow-list"),
            )),
        };
        if let Some(refusal) = refusal {
            // Nothing of the entry to give back: it was not ours.
            if taken.claimed {
                self.inventory.release_thing_name(name, certificate_id).await?;
            }
            return Ok(HookOutcome::Refused(refusal));
        }
        match self
            .collision(&allowed, certificate_id, &claim, principals.as_deref())
            .await
        {
            Ok(None) => {}
            Ok(Some(rejection)) => {
                self.give_back(&taken).await?;
                return Ok(HookOutcome::Refused(Refusal::Rejected(rejection)));
            }
            Err(e) => {
                self.give_back(&taken).await?;
                return Err(e);
            }
        }
        if let NameClaim::HeldBy(holder) = &claim
            && !self.inventory.transfer_thing_name(name, holder, certificate_id).await?
        {
            self.give_back(&taken).await?;
            // Still the same holder: the name is held for a revoked device
            // (`onboard device revoke`) until it is retired.
            if self.inventory.claim_thing_name(name, certificate_id).await? == claim {
                return Ok(HookOutcome::Refused(Refusal::Rejected(Rejection::new(
                    RejectReason::IdentityCollision,
                    format!("thing name {name} is held for revoked certificate {holder} until the device is retired"),
                ))));
            }
            return Ok(HookOutcome::Unavailable(format!(
                "the claim on {name} changed hands during the request; the device retries"
            )));
        }
        // Last round: the record (and what a reset supersedes), then the answer.
        let record = allowed.record(certificate_id, request.template_name(), now);
        let supersessions: Vec<Supersession> = allowed
            .supersedes
            .iter()
            .filter(|old| old.as_str() != certificate_id)
            .map(|old| Supersession {
                old_certificate_id: old.clone(),
                new_certificate_id: certificate_id.to_string(),
                thing_name: name.to_string(),
                serial: serial.to_string(),
                recorded_at: now,
            })
            .collect();
        let written = futures::try_join!(
            self.inventory.record_allowed(&record),
            futures::future::try_join_all(supersessions.iter().map(|s| self.inventory.record_supersession(s))),
        );
        if let Err(e) = written {
            // Allowing a device the inventory does not know would lose it.
            // (A claim moved from a retired holder stays with this
            // certificate, which holds nothing live: a retry takes it.)
            self.give_back(&taken).await?;
            return Err(e);
        }
        Ok(HookOutcome::Allowed(allowed))
    }

    /// Another certificate owns this identity (the registrar's rule): it
    /// holds the name claim and is ACTIVE or being onboarded, or it is
    /// attached to the thing and ACTIVE. The certificates a reset put in the
    /// entry's `replaces` are exempt: the new one supersedes them.
    async fn collision(
        &self,
        allowed: &Allowed,
        certificate_id: &str,
        claim: &NameClaim,
        principals: Option<&[String]>,
    ) -> PortResult<Option<Rejection>> {
        let name = allowed.thing_name.as_str();
        let superseded = |id: &str| allowed.supersedes.iter().any(|old| old == id);
        let holder = match claim {
            NameClaim::HeldBy(holder) if holder != certificate_id && !superseded(holder) => Some(holder.as_str()),
            _ => None,
        };
        let attached: Vec<&str> = principals
            .unwrap_or_default()
            .iter()
            .filter_map(|arn| certificate_id_of_arn(arn))
            .filter(|id| *id != certificate_id && !superseded(id) && Some(*id) != holder)
            .collect();
        let (holder_status, attached_status) = futures::try_join!(
            async {
                match holder {
                    Some(holder) => self.identity.certificate_status(holder).await,
                    None => Ok(None),
                }
            },
            futures::future::try_join_all(attached.iter().map(|id| self.identity.certificate_status(id))),
        )?;
        if let Some(holder) = holder
            && is_live(holder_status.as_ref())
        {
            return Ok(Some(Rejection::new(
                RejectReason::IdentityCollision,
                format!("thing name {name} belongs to certificate {holder}"),
            )));
        }
        for (id, status) in attached.iter().zip(attached_status) {
            if status == Some(CertificateStatus::Active) {
                return Ok(Some(Rejection::new(
                    RejectReason::IdentityCollision,
                    format!("thing {name} already has ACTIVE certificate {id} attached"),
                )));
            }
        }
        Ok(None)
    }

    /// Undoes this request's conditional writes after a refusal: the entry's
    /// use and a claim it made. (A claim it found held stays with its holder.)
    async fn give_back(&self, taken: &Taken<'_>) -> PortResult<()> {
        futures::try_join!(
            self.inventory
                .restore_allow_entry(taken.serial, taken.certificate_id, taken.previous),
            async {
                if taken.claimed {
                    self.inventory
                        .release_thing_name(taken.thing_name, taken.certificate_id)
                        .await?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }
}

fn used_by(serial: &str, holder: &str) -> Refusal {
    rejected(
        RejectReason::SerialNotAllowed,
        format!(
            "serial {serial} was used by certificate {holder} (entries are single-use; `onboard allow reset {serial}` lets the device in again)"
        ),
    )
}

// --- superseded certificates -------------------------------------------------

/// What one pass over the supersessions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupersessionReport {
    /// Old certificates revoked now.
    pub revoked: u32,
    /// New certificates not ACTIVE and attached yet: kept for the next pass.
    pub waiting: u32,
    /// New certificates gone or retired: nothing revoked, supersession dropped.
    pub dropped: u32,
    pub errors: u32,
}

/// How long a supersession whose new certificate is still `PENDING_ACTIVATION`
/// is kept: AWS IoT applies the template seconds after the hook answers.
pub const SUPERSESSION_PENDING_SECS: i64 = 24 * 3600;

/// Revokes the certificates a reset superseded, each only once IoT itself
/// says its successor is ACTIVE and attached to the thing, and only after
/// the revocation was claimed with a conditional write. Converges from any
/// crash point: every step is idempotent.
pub async fn retire_superseded<S: SupersessionStore, T: SupersessionIot>(
    store: &S,
    iot: &T,
    now: i64,
    limit: usize,
) -> PortResult<SupersessionReport> {
    let mut report = SupersessionReport::default();
    for supersession in store.pending_supersessions(limit).await? {
        match retire_one(store, iot, &supersession, now).await {
            Ok(Retirement::Revoked) => report.revoked += 1,
            Ok(Retirement::Waiting) => report.waiting += 1,
            Ok(Retirement::Dropped) => report.dropped += 1,
            Err(e) => {
                tracing::warn!(old = supersession.old_certificate_id, new = supersession.new_certificate_id, error = %e, "superseded certificate not retired; the next run retries");
                report.errors += 1;
            }
        }
    }
    Ok(report)
}

enum Retirement {
    Revoked,
    Waiting,
    Dropped,
}

async fn retire_one<S: SupersessionStore, T: SupersessionIot>(
    store: &S,
    iot: &T,
    s: &Supersession,
    now: i64,
) -> PortResult<Retirement> {
    let (new, principals) = futures::try_join!(
        iot.certificate(&s.new_certificate_id),
        iot.thing_principals(&s.thing_name)
    )?;
    match new {
        Some((CertificateStatus::Active, arn)) => {
            if !principals.unwrap_or_default().contains(&arn) {
                return Ok(Retirement::Waiting);
            }
        }
        Some((CertificateStatus::PendingActivation, _)) if now - s.recorded_at < SUPERSESSION_PENDING_SECS => {
            return Ok(Retirement::Waiting);
        }
        _ => {
            tracing::warn!(
                old = s.old_certificate_id,
                new = s.new_certificate_id,
                "the superseding certificate never became ACTIVE: the old one is left alone"
            );
            store.drop_supersession(s).await?;
            return Ok(Retirement::Dropped);
        }
    }
    if !store.claim_revocation(s, now).await? {
        return Ok(Retirement::Dropped);
    }
    match iot.certificate(&s.old_certificate_id).await? {
        Some((CertificateStatus::Revoked, _)) | None => {}
        Some(_) => iot.revoke(&s.old_certificate_id).await?,
    }
    store.finish_supersession(s).await?;
    tracing::info!(
        old = s.old_certificate_id,
        new = s.new_certificate_id,
        thing = s.thing_name,
        serial = s.serial,
        "superseded certificate revoked"
    );
    Ok(Retirement::Revoked)
}

#[cfg(test)]
mod tests {

    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

    use super::*;

    use crate::testing::provisioning_hook::{Inventory, Iot};

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
            ..AllowEntry::default()
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
            ("OrganizationalUnit", "m2"),
            ("PolicyName", "device-policy"),
            ("SerialNumber", "SN-1"),
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
    fn a_device_cannot_send_a_parameter_the_template_does_not_take_from_it() {
        let cert = certificate(3650, false);
        let ou = ("OrganizationalUnit", json!("m2"));
        // Set by the hook, or not declared at all (a minimal profile declares
        // no type and no groups), or reserved for AWS IoT, or unknown.
        for name in [
            "ThingName",
            "PolicyName",
            "ThingTypeName",
            "ThingGroups",
            "Attribute:model",
            "Attribute:admin",
            "AWS::IoT::Certificate::Id",
            "CommonName",
            "Location",
        ] {
            let request = request(json!("SN-1"), &[ou.clone(), (name, json!("x"))], &cert);
            let refusal = decide_with(&request, entry("SN-1", None)).err();
            assert!(
                matches!(&refusal, Some(r) if r.code() == "PARAMETERS_INVALID" && r.detail().contains(name)),
                "{name}: {refusal:?}"
            );
        }
        let minimal = profile(r#"{"name":"minimal","thingName":"{CN}","policyName":"p"}"#);
        let mut config = config();
        config.add_profile("minimal".into(), Ok(minimal.clone()));
        for name in ["ThingTypeName", "ThingGroups", "Attribute:location"] {
            let request = request(
                json!("SN-1"),
                &[("CommonName", json!("dev-1")), (name, json!("x"))],
                &cert,
            );
            let refusal = decide(
                &request,
                &HookContext {
                    allowed: entry("SN-1", Some("minimal")).as_ref(),
                    config: &config,
                    default_profile: "default",
                    now: NOW,
                    clock_skew_secs: 300,
                },
            )
            .err();
            assert_eq!(refusal.map(|r| r.code()), Some("PARAMETERS_INVALID"), "{name}");
        }
        let declared = render_template(&minimal).unwrap_or_default();
        assert_eq!(
            declared["Parameters"]
                .as_object()
                // Sorted: serde_json keeps insertion order when a crate in
                // the build enables its preserve_order feature.
                .map(|p| {
                    let mut keys = p.keys().cloned().collect::<Vec<_>>();
                    keys.sort();
                    keys
                }),
            Some(vec![
                "AWS::IoT::Certificate::Id".to_string(),
                "CommonName".into(),
                "PolicyName".into(),
                "SerialNumber".into(),
                "ThingName".into()
            ])
        );
    }

    #[test]
    fn a_serial_bound_to_a_thing_gets_that_thing_only() {
        let profile_json = r#"{"name":"cn","thingName":"{CN}","policyName":"p"}"#;
        let mut config = config();
        config.add_profile("cn".into(), Ok(profile(profile_json)));
        let cert = certificate(3650, false);
        let bound = |thing: &str| AllowEntry {
            serial: "SN-1".into(),
            profile: Some("cn".into()),
            thing_name: Some(thing.into()),
            ..AllowEntry::default()
        };
        let ctx = |entry: &AllowEntry| -> Result<Allowed, Refusal> {
            decide(
                &request(json!("SN-1"), &[("CommonName", json!("dev-1"))], &cert),
                &HookContext {
                    allowed: Some(entry),
                    config: &config,
                    default_profile: "default",
                    now: NOW,
                    clock_skew_secs: 300,
                },
            )
        };
        assert_eq!(reason(ctx(&bound("dev-2"))), "SERIAL_NOT_ALLOWED");
        let allowed = ctx(&bound("dev-1")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(allowed.thing_name, "dev-1");
        assert_eq!(allowed.overrides["CommonName"], "dev-1");
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
                allowed.overrides.contains_key(name) || name == CERTIFICATE_ID_PARAMETER,
                "{name} is never set"
            );
        }
        // A minimal profile declares no type, groups or attributes.
        let minimal = render_template(&DeviceProfile::minimal("p", "pol")).unwrap_or_else(|e| panic!("{e}"));
        assert!(minimal["Parameters"].get("ThingTypeName").is_none());
        assert!(minimal["Resources"]["thing"].get("OverrideSettings").is_none());
        // An existing thing of another type fails the request; it is never retyped.
        assert_eq!(
            template["Resources"]["thing"]["OverrideSettings"],
            json!({"AttributePayload": "MERGE", "ThingTypeName": "FAIL", "ThingGroups": "DO_NOTHING"})
        );
    }

    fn hook(inventory: Inventory, iot: Iot) -> ProvisioningHook<Inventory, Iot> {
        ProvisioningHook::new(
            inventory,
            iot,
            HookSettings {
                default_profile: Some(default_profile()),
                ..HookSettings::default()
            },
        )
    }

    fn allow(serial: &str) -> AllowEntry {
        AllowEntry {
            serial: serial.into(),
            ..AllowEntry::default()
        }
    }

    fn device_request(serial: &str, cert: &(String, String)) -> HookRequest {
        request(json!(serial), &[("OrganizationalUnit", json!("m2"))], cert)
    }

    fn code(outcome: &HookOutcome) -> String {
        match outcome {
            HookOutcome::Allowed(_) => "allowed".into(),
            HookOutcome::Refused(refusal) => refusal.code().into(),
            HookOutcome::Unavailable(why) => format!("unavailable: {why}"),
        }
    }

    #[tokio::test]
    async fn the_hook_records_what_it_allows_and_refuses_when_the_inventory_fails() {
        let hook = hook(Inventory::with(&[allow("SN-1")]), Iot::default());
        let cert = certificate(3650, false);
        let outcome = hook.handle(&device_request("SN-1", &cert), NOW).await;
        assert_eq!(outcome.label(), "allowed");
        assert!(outcome.response().allow_provisioning);
        let other = certificate(3650, false);
        let refused = hook.handle(&device_request("SN-9", &other), NOW).await;
        assert!(matches!(&refused, HookOutcome::Refused(r) if r.code() == "SERIAL_NOT_ALLOWED"));
        assert!(!refused.response().allow_provisioning);
        assert_eq!(
            serde_json::to_value(refused.response()).unwrap_or_default(),
            json!({"allowProvisioning": false})
        );
        {
            let state = hook.inventory.state();
            assert_eq!(state.records.len(), 1);
            assert_eq!(state.records[0].certificate_id, cert.0);
            assert_eq!(state.entries["SN-1"].used_by.as_deref(), Some(cert.0.as_str()));
            assert_eq!(state.claims.get("acme-SN-1"), Some(&cert.0));
        }
        // AWS IoT may ask again for the same certificate: the same answer.
        let again = hook.handle(&device_request("SN-1", &cert), NOW).await;
        assert_eq!(code(&again), "allowed");

        let failing = ProvisioningHook::new(
            Inventory {
                fail_reads: true,
                ..Inventory::with(&[allow("SN-1")])
            },
            Iot::default(),
            HookSettings {
                default_profile: Some(default_profile()),
                ..HookSettings::default()
            },
        );
        let outcome = failing.handle(&device_request("SN-1", &cert), NOW).await;
        assert_eq!(outcome.label(), "unavailable");
        assert!(!outcome.response().allow_provisioning);
    }

    #[tokio::test]
    async fn an_entry_is_single_use_and_a_second_certificate_is_refused() {
        let first = certificate(3650, false);
        let second = certificate(3650, false);
        let iot = Iot::with(&[(first.0.as_str(), CertificateStatus::Active)], &[]);
        let hook = hook(Inventory::with(&[allow("SN-1")]), iot);
        assert_eq!(
            code(&hook.handle(&device_request("SN-1", &first), NOW).await),
            "allowed"
        );
        let outcome = hook.handle(&device_request("SN-1", &second), NOW).await;
        assert_eq!(code(&outcome), "SERIAL_NOT_ALLOWED");
        let HookOutcome::Refused(refusal) = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            refusal.detail().contains("onboard allow reset SN-1"),
            "{}",
            refusal.detail()
        );
        let state = hook.inventory.state();
        assert_eq!(state.entries["SN-1"].used_by.as_deref(), Some(first.0.as_str()));
        assert_eq!(state.claims.get("acme-SN-1"), Some(&first.0));
        assert_eq!(state.records.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_serial_let_exactly_one_certificate_in() {
        let certs: Vec<_> = (0..4).map(|_| certificate(3650, false)).collect();
        let statuses: Vec<(&str, CertificateStatus)> = certs
            .iter()
            .map(|c| (c.0.as_str(), CertificateStatus::PendingActivation))
            .collect();
        let hook = hook(Inventory::with(&[allow("SN-1")]), Iot::with(&statuses, &[]));
        let requests: Vec<HookRequest> = certs.iter().map(|c| device_request("SN-1", c)).collect();
        let outcomes = futures::future::join_all(requests.iter().map(|r| hook.handle(r, NOW))).await;
        let allowed: Vec<_> = outcomes.iter().filter(|o| o.label() == "allowed").collect();
        assert_eq!(allowed.len(), 1, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .filter(|o| o.label() != "allowed")
                .all(|o| code(o) == "SERIAL_NOT_ALLOWED" || code(o) == "IDENTITY_COLLISION"),
            "{outcomes:?}"
        );
        assert_eq!(hook.inventory.state().records.len(), 1);
    }

    #[tokio::test]
    async fn a_name_held_by_a_live_certificate_is_refused_and_everything_given_back() {
        let victim = "9".repeat(64);
        let cert = certificate(3650, false);
        for (status, attached_only) in [
            (CertificateStatus::Active, false),
            (CertificateStatus::PendingActivation, false),
            (CertificateStatus::Active, true),
        ] {
            let inventory = Inventory::with(&[allow("SN-1")]);
            if !attached_only {
                inventory.state().claims.insert("acme-SN-1".into(), victim.clone());
            }
            let iot = Iot::with(
                &[(victim.as_str(), status.clone())],
                &[("acme-SN-1", &[victim.as_str()])],
            );
            let hook = hook(inventory, iot);
            let outcome = hook.handle(&device_request("SN-1", &cert), NOW).await;
            assert_eq!(
                code(&outcome),
                "IDENTITY_COLLISION",
                "{status:?} attached only: {attached_only}"
            );
            let state = hook.inventory.state();
            // The entry is not used up, the name is not taken, nothing recorded.
            assert_eq!(state.entries["SN-1"].used_by, None);
            assert_eq!(
                state.claims.get("acme-SN-1"),
                (!attached_only).then_some(&victim),
                "{status:?}"
            );
            assert!(state.records.is_empty());
        }
    }

    #[tokio::test]
    async fn a_retired_holder_gives_up_its_name() {
        let old = "a".repeat(64);
        let cert = certificate(3650, false);
        let inventory = Inventory::with(&[allow("SN-1")]);
        inventory.state().claims.insert("acme-SN-1".into(), old.clone());
        let iot = Iot::with(
            &[(old.as_str(), CertificateStatus::Revoked)],
            &[("acme-SN-1", &[old.as_str()])],
        );
        let hook = hook(inventory, iot);
        assert_eq!(code(&hook.handle(&device_request("SN-1", &cert), NOW).await), "allowed");
        assert_eq!(hook.inventory.state().claims.get("acme-SN-1"), Some(&cert.0));
    }

    #[tokio::test]
    async fn a_name_held_for_a_revoked_device_is_refused_not_taken_over() {
        let old = "a".repeat(64);
        let cert = certificate(3650, false);
        let inventory = Inventory::with(&[allow("SN-1")]);
        inventory.state().claims.insert("acme-SN-1".into(), old.clone());
        inventory.state().held.insert("acme-SN-1".into());
        let iot = Iot::with(
            &[(old.as_str(), CertificateStatus::Revoked)],
            &[("acme-SN-1", &[old.as_str()])],
        );
        let hook = hook(inventory, iot);
        assert_eq!(
            code(&hook.handle(&device_request("SN-1", &cert), NOW).await),
            "IDENTITY_COLLISION"
        );
        let state = hook.inventory.state();
        assert_eq!(state.claims.get("acme-SN-1"), Some(&old));
        assert_eq!(state.entries["SN-1"].used_by, None, "the entry is given back");
        assert!(state.records.is_empty());
    }

    #[tokio::test]
    async fn a_reset_lets_the_next_certificate_supersede_the_earlier_one() {
        let old = "b".repeat(64);
        let cert = certificate(3650, false);
        let inventory = Inventory::with(&[AllowEntry {
            replaces: vec![old.clone()],
            ..allow("SN-1")
        }]);
        inventory.state().claims.insert("acme-SN-1".into(), old.clone());
        let iot = Iot::with(
            &[(old.as_str(), CertificateStatus::Active)],
            &[("acme-SN-1", &[old.as_str()])],
        );
        let hook = hook(inventory, iot);
        let outcome = hook.handle(&device_request("SN-1", &cert), NOW).await;
        assert_eq!(code(&outcome), "allowed");
        let state = hook.inventory.state();
        assert_eq!(state.claims.get("acme-SN-1"), Some(&cert.0));
        assert_eq!(
            state.supersessions,
            vec![Supersession {
                old_certificate_id: old.clone(),
                new_certificate_id: cert.0.clone(),
                thing_name: "acme-SN-1".into(),
                serial: "SN-1".into(),
                recorded_at: NOW,
            }]
        );
        // Nothing is revoked by the hook: the new certificate is not ACTIVE yet.
        assert_eq!(hook.identity.status(&old), Some(CertificateStatus::Active));
    }

    #[tokio::test]
    async fn an_entry_used_by_a_certificate_that_never_became_active_can_be_used_again() {
        let lost = "c".repeat(64);
        let cert = certificate(3650, false);
        let used = AllowEntry {
            used_by: Some(lost.clone()),
            ..allow("SN-1")
        };
        // Not in IoT any more: taken over.
        let hook_gone = hook(Inventory::with(std::slice::from_ref(&used)), Iot::default());
        assert_eq!(
            code(&hook_gone.handle(&device_request("SN-1", &cert), NOW).await),
            "allowed"
        );
        assert_eq!(
            hook_gone.inventory.state().entries["SN-1"].used_by.as_deref(),
            Some(cert.0.as_str())
        );
        // Still pending (AWS IoT may be applying the template): refused.
        let pending = hook(
            Inventory::with(&[used]),
            Iot::with(&[(lost.as_str(), CertificateStatus::PendingActivation)], &[]),
        );
        assert_eq!(
            code(&pending.handle(&device_request("SN-1", &cert), NOW).await),
            "SERIAL_NOT_ALLOWED"
        );
    }

    #[tokio::test]
    async fn a_failed_record_gives_the_entry_and_the_name_back() {
        let cert = certificate(3650, false);
        let hook = hook(
            Inventory {
                fail_record: true,
                ..Inventory::with(&[allow("SN-1")])
            },
            Iot::default(),
        );
        assert_eq!(
            hook.handle(&device_request("SN-1", &cert), NOW).await.label(),
            "unavailable"
        );
        let state = hook.inventory.state();
        assert_eq!(state.entries["SN-1"].used_by, None);
        assert!(state.claims.is_empty());
    }

    #[tokio::test]
    async fn a_superseded_certificate_is_revoked_only_once_its_successor_is_active_and_attached() {
        let (old, new) = ("d".repeat(64), "e".repeat(64));
        let supersession = Supersession {
            old_certificate_id: old.clone(),
            new_certificate_id: new.clone(),
            thing_name: "dev-1".into(),
            serial: "SN-1".into(),
            recorded_at: NOW,
        };
        let store = |s: &Supersession| {
            let inventory = Inventory::with(&[AllowEntry {
                replaces: vec![s.old_certificate_id.clone()],
                ..allow("SN-1")
            }]);
            inventory.state().supersessions.push(s.clone());
            inventory
        };
        // Successor pending, or ACTIVE but not attached: wait, revoke nothing.
        for (status, attached) in [
            (CertificateStatus::PendingActivation, true),
            (CertificateStatus::Active, false),
        ] {
            let inventory = store(&supersession);
            let things: &[&str] = if attached { &[new.as_str()] } else { &[] };
            let iot = Iot::with(
                &[(old.as_str(), CertificateStatus::Active), (new.as_str(), status)],
                &[("dev-1", things)],
            );
            let report = retire_superseded(&inventory, &iot, NOW + 60, 10)
                .await
                .unwrap_or_default();
            assert_eq!(report.waiting, 1);
            assert_eq!(iot.status(&old), Some(CertificateStatus::Active));
            assert_eq!(inventory.state().supersessions.len(), 1);
        }
        // Successor gone, or retired: dropped, the old one kept.
        for status in [None, Some(CertificateStatus::Revoked)] {
            let inventory = store(&supersession);
            let mut statuses = vec![(old.as_str(), CertificateStatus::Active)];
            if let Some(status) = status {
                statuses.push((new.as_str(), status));
            }
            let iot = Iot::with(&statuses, &[("dev-1", &[old.as_str()])]);
            let report = retire_superseded(&inventory, &iot, NOW + 60, 10)
                .await
                .unwrap_or_default();
            assert_eq!(report.dropped, 1);
            assert_eq!(iot.status(&old), Some(CertificateStatus::Active));
            let state = inventory.state();
            assert!(state.supersessions.is_empty());
            assert_eq!(state.entries["SN-1"].replaces, vec![old.clone()]);
        }
        // Successor ACTIVE and attached: revoked, and taken off the entry.
        let inventory = store(&supersession);
        let iot = Iot::with(
            &[
                (old.as_str(), CertificateStatus::Active),
                (new.as_str(), CertificateStatus::Active),
            ],
            &[("dev-1", &[new.as_str()])],
        );
        let report = retire_superseded(&inventory, &iot, NOW + 60, 10)
            .await
            .unwrap_or_default();
        assert_eq!(report.revoked, 1);
        assert_eq!(iot.status(&old), Some(CertificateStatus::Revoked));
        {
            let state = inventory.state();
            assert!(state.supersessions.is_empty());
            assert!(state.entries["SN-1"].replaces.is_empty());
            assert_eq!(state.revoking, vec![old.clone()]);
        }
        // Run again (a crash after the revocation): nothing more to do.
        let again = retire_superseded(&inventory, &iot, NOW + 120, 10)
            .await
            .unwrap_or_default();
        assert_eq!(again, SupersessionReport::default());
    }
}
