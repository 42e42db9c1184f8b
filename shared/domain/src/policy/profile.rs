//! Device profiles: how the certificates of a CA are provisioned.
//!
//! A profile is JSON (camelCase). It is stored in the inventory table as the
//! `profile` attribute of a `CONFIG` / `PROFILE#<name>` item, or passed in the
//! `DEFAULT_PROFILE` environment variable. [`DeviceProfile::parse`] validates it
//! and names the field at fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::certificate::{Subject, SubjectField};
use crate::model::naming;
use crate::model::plan::DroppedAttribute;
use crate::model::status::RejectionAction;
use crate::policy::rotation::RotationPolicy;

/// What to do with a mapped attribute value that does not fit AWS's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnfitAttribute {
    /// Reject the certificate with `ATTRIBUTE_INVALID` (default).
    #[default]
    Reject,
    /// Leave the attribute out; the outcome and inventory list what was dropped.
    Drop,
}

/// How a device is provisioned. See docs/profiles-and-inventory.md for the item format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceProfile {
    /// Profile name, `[a-zA-Z0-9:_-]{1,128}`.
    pub name: String,
    /// Thing type given to new things; must exist in IoT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_type: Option<String>,
    /// Naming rule: a template of literal text and `{FIELD}` placeholders,
    /// where FIELD is one of CN, O, OU, serialNumber, C, ST, dnQualifier.
    #[serde(default = "default_naming")]
    pub thing_name: String,
    /// Thing attribute name → subject field.
    #[serde(default)]
    pub attributes: BTreeMap<String, SubjectField>,
    /// What to do with an attribute value that does not fit.
    #[serde(default)]
    pub unfit_attribute: UnfitAttribute,
    /// Static thing groups (they must exist).
    #[serde(default)]
    pub thing_groups: Vec<String>,
    /// Optional billing group (must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_group: Option<String>,
    /// IoT policy attached to the certificate.
    pub policy_name: String,
    /// Minimum remaining validity at onboarding, in days.
    #[serde(default = "default_min_remaining_days")]
    pub min_remaining_days: u32,
    /// Status given to rejected certificates.
    #[serde(default)]
    pub rejection_action: RejectionAction,
    /// How this profile's certificates are rotated before they expire.
    #[serde(default)]
    pub rotation: RotationPolicy,
}

fn default_naming() -> String {
    "{CN}".to_string()
}

fn default_min_remaining_days() -> u32 {
    30
}

/// A profile that does not hold up, with the field at fault.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("profile is not valid JSON or has a wrong field: {0}")]
    Json(String),
    #[error("profile field `{field}`: {problem}")]
    Field { field: String, problem: String },
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> ProfileError {
    ProfileError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// One piece of a naming template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Field(SubjectField),
}

/// Why the naming rule yields no valid name for a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The subject lacks a field the rule uses.
    Missing(SubjectField),
    /// The built name is not `[a-zA-Z0-9:_-]{1,128}`.
    Invalid(String),
}

/// Attributes built for a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedAttributes {
    pub values: BTreeMap<String, String>,
    pub dropped: Vec<DroppedAttribute>,
}

impl DeviceProfile {
    /// Parses and validates a profile from JSON text.
    ///
    /// # Errors
    /// [`ProfileError`] naming the field at fault.
    pub fn parse(json: &str) -> Result<Self, ProfileError> {
        let profile: DeviceProfile = serde_json::from_str(json).map_err(|e| ProfileError::Json(e.to_string()))?;
        profile.validate()?;
        Ok(profile)
    }

    /// A minimal profile: CN naming, no attributes, no groups.
    pub fn minimal(name: &str, policy_name: &str) -> Self {
        Self {
            name: name.to_string(),
            thing_type: None,
            thing_name: default_naming(),
            attributes: BTreeMap::new(),
            unfit_attribute: UnfitAttribute::default(),
            thing_groups: Vec::new(),
            billing_group: None,
            policy_name: policy_name.to_string(),
            min_remaining_days: default_min_remaining_days(),
            rejection_action: RejectionAction::default(),
            rotation: RotationPolicy::default(),
        }
    }

    /// Checks every field against AWS's rules.
    ///
    /// # Errors
    /// [`ProfileError::Field`] for the first field that does not hold up.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if !naming::is_valid_thing_name(&self.name) {
            return Err(field_error("name", "must match [a-zA-Z0-9:_-]{1,128}"));
        }
        if let Some(t) = &self.thing_type
            && !naming::is_valid_thing_name(t)
        {
            return Err(field_error("thingType", "must match [a-zA-Z0-9:_-]{1,128}"));
        }
        let pieces = parse_template(&self.thing_name).map_err(|p| field_error("thingName", p))?;
        if !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
            return Err(field_error(
                "thingName",
                "must use at least one subject field placeholder such as {CN}, or every device would share one name",
            ));
        }
        for piece in &pieces {
            if let Piece::Text(text) = piece
                && !text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
            {
                return Err(field_error(
                    "thingName",
                    format!("literal text {text:?} has characters not allowed in thing names"),
                ));
            }
        }
        let max = if self.thing_type.is_some() {
            naming::ATTRIBUTES_MAX_WITH_TYPE
        } else {
            naming::ATTRIBUTES_MAX_WITHOUT_TYPE
        };
        if self.attributes.len() > max {
            return Err(field_error(
                "attributes",
                format!(
                    "{} attributes, but a thing {} at most {max}",
                    self.attributes.len(),
                    if self.thing_type.is_some() {
                        "with a thing type has"
                    } else {
                        "without a thing type has"
                    }
                ),
            ));
        }
        for key in self.attributes.keys() {
            if !naming::is_valid_attribute_key(key) {
                return Err(field_error(
                    format!("attributes.{key}"),
                    "attribute name must match [a-zA-Z0-9_.,@/:#-]{1,128}",
                ));
            }
        }
        if self.thing_groups.len() > naming::THING_GROUPS_MAX {
            return Err(field_error(
                "thingGroups",
                format!("a thing is in at most {} groups", naming::THING_GROUPS_MAX),
            ));
        }
        for (i, group) in self.thing_groups.iter().enumerate() {
            if !naming::is_valid_thing_name(group) {
                return Err(field_error(
                    format!("thingGroups[{i}]"),
                    "must match [a-zA-Z0-9:_-]{1,128}",
                ));
            }
            if self.thing_groups[..i].contains(group) {
                return Err(field_error(
                    format!("thingGroups[{i}]"),
                    format!("{group:?} is listed twice"),
                ));
            }
        }
        if let Some(b) = &self.billing_group
            && !naming::is_valid_thing_name(b)
        {
            return Err(field_error("billingGroup", "must match [a-zA-Z0-9:_-]{1,128}"));
        }
        if !naming::is_valid_resource_name(&self.policy_name) {
            return Err(field_error("policyName", "must match [a-zA-Z0-9:_+=.,@-]{1,128}"));
        }
        if self.min_remaining_days > 36_500 {
            return Err(field_error("minRemainingDays", "must be at most 36500"));
        }
        if let Some((field, problem)) = self.rotation.problem() {
            return Err(field_error(field, problem));
        }
        Ok(())
    }

    /// The subject fields the naming rule uses.
    pub fn naming_fields(&self) -> Vec<SubjectField> {
        parse_template(&self.thing_name)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| match p {
                Piece::Field(f) => Some(f),
                Piece::Text(_) => None,
            })
            .collect()
    }

    /// Builds the thing name for a subject. Never rewrites: a missing field or
    /// an invalid result is an error.
    ///
    /// # Errors
    /// [`NameError`] when the subject lacks a field or the name is invalid.
    pub fn thing_name_for(&self, subject: &Subject) -> Result<String, NameError> {
        let pieces = parse_template(&self.thing_name).map_err(|_| NameError::Invalid(self.thing_name.clone()))?;
        let mut name = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => name.push_str(t),
                Piece::Field(f) => match subject.get(f) {
                    Some(v) if !v.is_empty() => name.push_str(v),
                    _ => return Err(NameError::Missing(f)),
                },
            }
        }
        if naming::is_valid_thing_name(&name) {
            Ok(name)
        } else {
            Err(NameError::Invalid(name))
        }
    }

    /// Builds the attributes for a subject. A field the subject lacks gives no
    /// attribute. An unfit value is dropped or is an error, per the profile.
    ///
    /// # Errors
    /// The first unfit attribute (its name and field) under [`UnfitAttribute::Reject`].
    pub fn attributes_for(&self, subject: &Subject) -> Result<MappedAttributes, DroppedAttribute> {
        let mut mapped = MappedAttributes::default();
        for (name, field) in &self.attributes {
            let Some(value) = subject.get(*field) else { continue };
            if naming::is_valid_attribute_value(value) {
                mapped.values.insert(name.clone(), value.to_string());
            } else {
                let unfit = DroppedAttribute {
                    name: name.clone(),
                    field: *field,
                };
                match self.unfit_attribute {
                    UnfitAttribute::Reject => return Err(unfit),
                    UnfitAttribute::Drop => mapped.dropped.push(unfit),
                }
            }
        }
        Ok(mapped)
    }
}

/// Splits a naming template into literal text and subject-field placeholders
/// (the JITP template renderer builds its `ThingName` from the same pieces).
pub(crate) fn parse_template(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                pieces.push(Piece::Text(rest));
                break;
            }
            Some(i) if rest.as_bytes()[i] == b'}' => return Err("has a `}` without a matching `{`".into()),
            Some(i) => {
                if i > 0 {
                    pieces.push(Piece::Text(&rest[..i]));
                }
                let after = &rest[i + 1..];
                let end = after.find('}').ok_or("has a `{` without a matching `}`")?;
                let name = &after[..end];
                let field = SubjectField::from_short_name(name).ok_or_else(|| {
                    format!("unknown placeholder {{{name}}}; use one of CN, O, OU, serialNumber, C, ST, dnQualifier")
                })?;
                pieces.push(Piece::Field(field));
                rest = &after[end + 1..];
            }
        }
    }
    if pieces.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(pairs: &[(SubjectField, &str)]) -> Subject {
        Subject::from_pairs(pairs.iter().map(|(f, v)| (*f, v.to_string())))
    }

    fn field(err: Result<DeviceProfile, ProfileError>) -> String {
        match err {
            Err(ProfileError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn parses_full_profile_with_defaults() {
        let p = DeviceProfile::parse(
            r#"{"name":"sensors","thingType":"sensor","attributes":{"org":"O","serial":"serialNumber"},
                "thingGroups":["fleet","eu"],"policyName":"device-policy"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.thing_name, "{CN}");
        assert_eq!(p.min_remaining_days, 30);
        assert_eq!(p.rejection_action, RejectionAction::Revoked);
        assert_eq!(p.unfit_attribute, UnfitAttribute::Reject);
        assert_eq!(p.attributes.get("serial"), Some(&SubjectField::SerialNumber));
        let back = serde_json::to_string(&p).unwrap_or_default();
        assert_eq!(DeviceProfile::parse(&back), Ok(p));
    }

    #[test]
    fn errors_point_at_the_field() {
        assert!(
            matches!(DeviceProfile::parse(r#"{"name":"x","policyName":"p","colour":"red"}"#), Err(ProfileError::Json(m)) if m.contains("colour"))
        );
        assert!(
            matches!(DeviceProfile::parse(r#"{"name":"x"}"#), Err(ProfileError::Json(m)) if m.contains("policyName"))
        );
        assert_eq!(
            field(DeviceProfile::parse(r#"{"name":"bad name","policyName":"p"}"#)),
            "name"
        );
        assert_eq!(
            field(DeviceProfile::parse(
                r#"{"name":"x","policyName":"p","thingName":"{XX}"}"#
            )),
            "thingName"
        );
        assert_eq!(
            field(DeviceProfile::parse(
                r#"{"name":"x","policyName":"p","thingName":"fixed"}"#
            )),
            "thingName"
        );
        assert_eq!(
            field(DeviceProfile::parse(
                r#"{"name":"x","policyName":"p","thingName":"a b{CN}"}"#
            )),
            "thingName"
        );
        assert_eq!(
            field(DeviceProfile::parse(
                r#"{"name":"x","policyName":"p","thingName":"{CN"}"#
            )),
            "thingName"
        );
        assert_eq!(
            field(DeviceProfile::parse(
                r#"{"name":"x","policyName":"p","attributes":{"a b":"CN"}}"#
            )),
            "attributes.a b"
        );
        assert_eq!(
            field(DeviceProfile::parse(
                r#"{"name":"x","policyName":"p","attributes":{"a":"CN","b":"O","c":"OU","d":"C"}}"#
            )),
            "attributes"
        );
        assert_eq!(
            field(DeviceProfile::parse(
                r#"{"name":"x","policyName":"p","thingGroups":["a","a"]}"#
            )),
            "thingGroups[1]"
        );
        assert_eq!(
            field(DeviceProfile::parse(r#"{"name":"x","policyName":"p p"}"#)),
            "policyName"
        );
    }

    #[test]
    fn naming_rule_builds_or_refuses_never_rewrites() {
        let mut p = DeviceProfile::minimal("x", "p");
        p.thing_name = "acme-{serialNumber}".into();
        let s = subject(&[
            (SubjectField::CommonName, "dev 1"),
            (SubjectField::SerialNumber, "SN42"),
        ]);
        assert_eq!(p.thing_name_for(&s), Ok("acme-SN42".into()));
        p.thing_name = "{CN}".into();
        assert_eq!(p.thing_name_for(&s), Err(NameError::Invalid("dev 1".into())));
        assert_eq!(
            p.thing_name_for(&Subject::default()),
            Err(NameError::Missing(SubjectField::CommonName))
        );
        assert_eq!(p.naming_fields(), vec![SubjectField::CommonName]);
    }

    #[test]
    fn unfit_attributes_reject_or_drop() {
        let mut p = DeviceProfile::minimal("x", "p");
        p.thing_type = Some("t".into());
        p.attributes = [
            ("org".to_string(), SubjectField::Organization),
            ("cn".to_string(), SubjectField::CommonName),
            ("c".to_string(), SubjectField::Country),
        ]
        .into();
        let s = subject(&[
            (SubjectField::CommonName, "dev-1"),
            (SubjectField::Organization, "Acme Corp"),
        ]);
        assert_eq!(
            p.attributes_for(&s),
            Err(DroppedAttribute {
                name: "org".into(),
                field: SubjectField::Organization
            })
        );
        p.unfit_attribute = UnfitAttribute::Drop;
        let mapped = p.attributes_for(&s).unwrap_or_default();
        assert_eq!(mapped.values.get("cn").map(String::as_str), Some("dev-1"));
        assert!(!mapped.values.contains_key("org"));
        assert!(!mapped.values.contains_key("c"), "missing fields give no attribute");
        assert_eq!(
            mapped.dropped,
            vec![DroppedAttribute {
                name: "org".into(),
                field: SubjectField::Organization
            }]
        );
    }
}
