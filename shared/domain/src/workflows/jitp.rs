//! Just-in-time provisioning (JITP): the provisioning template a device
//! profile becomes when AWS IoT itself provisions a CA's devices, and what
//! the registrar does that such a template cannot.
//!
//! The template is attached to the CA as `registrationConfig.templateBody`.
//! Its parameters come from the device certificate's subject; AWS IoT fails
//! the provisioning of a certificate that lacks a declared parameter, so
//! [`crate::checks::subject::check_subject`] lets an operator try a sample certificate first.

use serde_json::{Map, Value, json};

use crate::checks::subject::required_fields;
use crate::model::certificate::SubjectField;
use crate::policy::profile::{DeviceProfile, Piece, ProfileError, UnfitAttribute, parse_template};

/// The largest template body this renderer produces, in characters
/// (`RegistrationConfig.templateBody` is limited to 10,240 by AWS IoT).
pub const TEMPLATE_BODY_MAX: usize = 10_240;

/// The JITP parameter that carries the certificate id.
pub const CERTIFICATE_ID_PARAMETER: &str = "AWS::IoT::Certificate::Id";

/// Why a profile yields no JITP template.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JitpError {
    /// The profile itself does not hold up.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The rendered body is longer than AWS IoT accepts.
    #[error(
        "the JITP template for profile {profile} is {chars} characters, more than the {max} AWS IoT accepts; map fewer attributes or use shorter attribute names"
    )]
    TooLarge { profile: String, chars: usize, max: usize },
}

/// A rendered JITP template and what it cannot do that the registrar does.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The template document (`Parameters`, `Resources`).
    pub template: Value,
    /// Short, operator-facing notes on the registrar's behaviour JITP lacks.
    pub warnings: Vec<String>,
}

impl Rendered {
    /// The template as the compact JSON text `registrationConfig.templateBody` takes.
    pub fn to_template_body(&self) -> String {
        self.template.to_string()
    }
}

/// The JITP parameter name of a subject field, e.g.
/// `AWS::IoT::Certificate::CommonName` for `CN`.
pub fn parameter_name(field: SubjectField) -> &'static str {
    match field {
        SubjectField::CommonName => "AWS::IoT::Certificate::CommonName",
        SubjectField::Organization => "AWS::IoT::Certificate::Organization",
        SubjectField::OrganizationalUnit => "AWS::IoT::Certificate::OrganizationalUnit",
        SubjectField::SerialNumber => "AWS::IoT::Certificate::SerialNumber",
        SubjectField::Country => "AWS::IoT::Certificate::Country",
        SubjectField::State => "AWS::IoT::Certificate::StateName",
        SubjectField::DnQualifier => "AWS::IoT::Certificate::DistinguishedNameQualifier",
    }
}

fn reference(name: &str) -> Value {
    json!({ "Ref": name })
}

/// Renders the profile as a JITP template: a thing named by the naming rule,
/// with the mapped attributes, thing type and groups; the certificate set
/// `ACTIVE`; the profile's policy attached.
///
/// # Errors
/// [`JitpError::Profile`] when the profile is invalid, [`JitpError::TooLarge`]
/// when the body exceeds [`TEMPLATE_BODY_MAX`].
pub fn render(profile: &DeviceProfile) -> Result<Rendered, JitpError> {
    profile.validate()?;
    let pieces = parse_template(&profile.thing_name).map_err(|problem| ProfileError::Field {
        field: "thingName".into(),
        problem,
    })?;

    let mut parameters = Map::new();
    for field in required_fields(profile) {
        parameters.insert(parameter_name(field).into(), json!({ "Type": "String" }));
    }
    parameters.insert(CERTIFICATE_ID_PARAMETER.into(), json!({ "Type": "String" }));

    let thing_name = match pieces.as_slice() {
        [Piece::Field(field)] => reference(parameter_name(*field)),
        _ => {
            let parts: Vec<Value> = pieces
                .iter()
                .map(|piece| match piece {
                    Piece::Text(text) => Value::String((*text).to_string()),
                    Piece::Field(field) => reference(parameter_name(*field)),
                })
                .collect();
            json!({ "Fn::Join": ["", parts] })
        }
    };

    let mut properties = Map::new();
    let mut overrides = Map::new();
    properties.insert("ThingName".into(), thing_name);
    if !profile.attributes.is_empty() {
        let payload: Map<String, Value> = profile
            .attributes
            .iter()
            .map(|(name, field)| (name.clone(), reference(parameter_name(*field))))
            .collect();
        properties.insert("AttributePayload".into(), Value::Object(payload));
        overrides.insert("AttributePayload".into(), json!("MERGE"));
    }
    if let Some(thing_type) = &profile.thing_type {
        properties.insert("ThingTypeName".into(), json!(thing_type));
        overrides.insert("ThingTypeName".into(), json!("REPLACE"));
    }
    if !profile.thing_groups.is_empty() {
        properties.insert("ThingGroups".into(), json!(profile.thing_groups));
        overrides.insert("ThingGroups".into(), json!("DO_NOTHING"));
    }
    let template = template_document(parameters, properties, overrides, json!(profile.policy_name), "ACTIVE");
    let rendered = Rendered {
        template,
        warnings: warnings(profile),
    };
    let chars = rendered.to_template_body().chars().count();
    if chars > TEMPLATE_BODY_MAX {
        return Err(JitpError::TooLarge {
            profile: profile.name.clone(),
            chars,
            max: TEMPLATE_BODY_MAX,
        });
    }
    Ok(rendered)
}

/// A provisioning template of one thing (with its override settings when
/// any), the certificate set to `status`, and one policy: the shape both the
/// JITP and the fleet-provisioning templates take.
pub(crate) fn template_document(
    parameters: Map<String, Value>,
    thing_properties: Map<String, Value>,
    overrides: Map<String, Value>,
    policy_name: Value,
    status: &str,
) -> Value {
    let mut thing = Map::new();
    thing.insert("Type".into(), json!("AWS::IoT::Thing"));
    if !overrides.is_empty() {
        thing.insert("OverrideSettings".into(), Value::Object(overrides));
    }
    thing.insert("Properties".into(), Value::Object(thing_properties));
    json!({
        "Parameters": parameters,
        "Resources": {
            "thing": thing,
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {
                    "CertificateId": reference(CERTIFICATE_ID_PARAMETER),
                    "Status": status
                }
            },
            "policy": {
                "Type": "AWS::IoT::Policy",
                "Properties": { "PolicyName": policy_name }
            }
        }
    })
}

/// What the registrar would do for this profile that IoT's JITP does not.
fn warnings(profile: &DeviceProfile) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(group) = &profile.billing_group {
        warnings.push(format!(
            "billingGroup {group:?} is not applied: the JITP template sets no billing group"
        ));
    }
    warnings.push(format!(
        "deny-list, key-strength, extension and minRemainingDays ({} days) checks only after the fact: IoT activates every valid certificate the CA signed; the registrar (on its event) or the reconciler then checks it and revokes it if it fails",
        profile.min_remaining_days
    ));
    warnings.push(
        "thing names are not checked beforehand: a name outside [a-zA-Z0-9:_-]{1,128} fails provisioning, with no rejection recorded"
            .into(),
    );
    warnings.push(
        "no identity-collision check: a new certificate whose name matches an existing thing is attached to that thing"
            .into(),
    );
    let naming = profile.naming_fields();
    let mut attribute_only: Vec<&str> = Vec::new();
    for field in profile.attributes.values().filter(|f| !naming.contains(f)) {
        if !attribute_only.contains(&field.short_name()) {
            attribute_only.push(field.short_name());
        }
    }
    if !attribute_only.is_empty() {
        warnings.push(format!(
            "attribute fields become required: a certificate without {} fails provisioning (the registrar leaves the attribute out)",
            attribute_only.join(", ")
        ));
    }
    if !profile.attributes.is_empty() {
        let unfit = match profile.unfit_attribute {
            UnfitAttribute::Reject => "reject",
            UnfitAttribute::Drop => "drop",
        };
        warnings.push(format!(
            "unfitAttribute ({unfit}) cannot apply: a value AWS refuses as an attribute fails provisioning"
        ));
    }
    warnings.push(
        "no credentials record is written; the inventory record and name claim come from the registrar's event or the reconciler's next run"
            .into(),
    );
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> DeviceProfile {
        DeviceProfile::parse(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rendered(p: &DeviceProfile) -> Rendered {
        render(p).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_single_placeholder_name_is_a_bare_ref() {
        let r = rendered(&DeviceProfile::minimal("p", "device-policy"));
        let t = &r.template;
        assert_eq!(
            t["Resources"]["thing"]["Properties"]["ThingName"],
            json!({"Ref": "AWS::IoT::Certificate::CommonName"})
        );
        assert_eq!(
            t["Parameters"],
            json!({
                "AWS::IoT::Certificate::CommonName": {"Type": "String"},
                "AWS::IoT::Certificate::Id": {"Type": "String"}
            })
        );
        assert_eq!(
            t["Resources"]["certificate"],
            json!({"Type": "AWS::IoT::Certificate",
                   "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}})
        );
        assert_eq!(
            t["Resources"]["policy"],
            json!({"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "device-policy"}})
        );
        assert_eq!(t["Resources"]["thing"]["Type"], "AWS::IoT::Thing");
    }

    #[test]
    fn a_mixed_name_is_joined_from_literals_and_refs() {
        let p = profile(r#"{"name":"p","policyName":"pol","thingName":"acme-{O}_{serialNumber}:x"}"#);
        let t = rendered(&p).template;
        assert_eq!(
            t["Resources"]["thing"]["Properties"]["ThingName"],
            json!({"Fn::Join": ["", [
                "acme-",
                {"Ref": "AWS::IoT::Certificate::Organization"},
                "_",
                {"Ref": "AWS::IoT::Certificate::SerialNumber"},
                ":x"
            ]]})
        );
        let declared: Vec<&String> = t["Parameters"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(declared.len(), 3, "{declared:?}");
        assert!(t["Parameters"]["AWS::IoT::Certificate::Organization"].is_object());
        assert!(t["Parameters"]["AWS::IoT::Certificate::SerialNumber"].is_object());
        assert!(
            t["Parameters"]["AWS::IoT::Certificate::CommonName"].is_null(),
            "CN is not used"
        );
    }

    #[test]
    fn attributes_refer_to_their_fields_and_merge() {
        let p = profile(
            r#"{"name":"p","policyName":"pol","thingType":"sensor",
                "attributes":{"manufacturer":"O","model":"OU","region":"ST","qual":"dnQualifier","c":"C"}}"#,
        );
        let t = rendered(&p).template;
        let thing = &t["Resources"]["thing"];
        assert_eq!(
            thing["Properties"]["AttributePayload"],
            json!({
                "manufacturer": {"Ref": "AWS::IoT::Certificate::Organization"},
                "model": {"Ref": "AWS::IoT::Certificate::OrganizationalUnit"},
                "region": {"Ref": "AWS::IoT::Certificate::StateName"},
                "qual": {"Ref": "AWS::IoT::Certificate::DistinguishedNameQualifier"},
                "c": {"Ref": "AWS::IoT::Certificate::Country"}
            })
        );
        assert_eq!(thing["OverrideSettings"]["AttributePayload"], "MERGE");
        for field in SubjectField::ALL
            .into_iter()
            .filter(|f| *f != SubjectField::SerialNumber)
        {
            assert!(t["Parameters"][parameter_name(field)].is_object(), "{field}");
        }
    }

    #[test]
    fn thing_type_and_groups_with_their_overrides() {
        let p = profile(r#"{"name":"p","policyName":"pol","thingType":"sensor","thingGroups":["fleet","eu"]}"#);
        let thing = &rendered(&p).template["Resources"]["thing"];
        assert_eq!(thing["Properties"]["ThingTypeName"], "sensor");
        assert_eq!(thing["Properties"]["ThingGroups"], json!(["fleet", "eu"]));
        assert_eq!(
            thing["OverrideSettings"],
            json!({"ThingTypeName": "REPLACE", "ThingGroups": "DO_NOTHING"})
        );
    }

    #[test]
    fn no_type_no_groups_no_attributes_declares_only_the_name() {
        let thing = &rendered(&DeviceProfile::minimal("p", "pol")).template["Resources"]["thing"];
        assert_eq!(
            thing,
            &json!({"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"}}})
        );
    }

    #[test]
    fn warnings_say_what_jitp_leaves_out() {
        let plain = rendered(&DeviceProfile::minimal("p", "pol"));
        assert!(!plain.warnings.iter().any(|w| w.contains("billingGroup")));
        assert!(!plain.warnings.iter().any(|w| w.contains("unfitAttribute")));
        assert!(
            plain
                .warnings
                .iter()
                .any(|w| w.contains("deny-list") && w.contains("30 days"))
        );
        assert!(plain.warnings.iter().any(|w| w.contains("identity-collision")));

        let p = profile(
            r#"{"name":"p","policyName":"pol","billingGroup":"eu-customers","attributes":{"m":"O","n":"O"},"unfitAttribute":"drop"}"#,
        );
        let r = rendered(&p);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("billingGroup \"eu-customers\" is not applied")),
            "{:?}",
            r.warnings
        );
        assert!(r.warnings.iter().any(|w| w.contains("unfitAttribute (drop)")));
        assert!(r.warnings.iter().any(|w| w.contains("a certificate without O fails")));
        assert!(r.template["Resources"]["thing"]["Properties"]["BillingGroup"].is_null());
    }

    #[test]
    fn the_body_is_json_within_the_size_limit() {
        let p = profile(
            r#"{"name":"sensors","thingType":"sensor","thingName":"acme-{CN}","attributes":{"manufacturer":"O","model":"OU","serial":"serialNumber"},
                "thingGroups":["fleet","sensors-eu"],"policyName":"onboarding-device-policy"}"#,
        );
        let r = rendered(&p);
        let body = r.to_template_body();
        let parsed: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(parsed, r.template);
        assert!(body.len() <= TEMPLATE_BODY_MAX);

        // 50 attributes with 128-character names from the longest parameter cannot fit.
        let mut big = p.clone();
        big.attributes = (0..50)
            .map(|i| (format!("{i:0>128}"), SubjectField::DnQualifier))
            .collect();
        big.validate().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            render(&big),
            Err(JitpError::TooLarge { chars, max: TEMPLATE_BODY_MAX, .. }) if chars > TEMPLATE_BODY_MAX
        ));
    }

    #[test]
    fn an_invalid_profile_is_refused() {
        let mut p = DeviceProfile::minimal("p", "pol");
        p.thing_name = "fixed".into();
        assert!(
            matches!(render(&p), Err(JitpError::Profile(ProfileError::Field { field, .. })) if field == "thingName")
        );
    }
}
