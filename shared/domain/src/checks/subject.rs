//! Checks of a subject against a profile: the thing name and attributes its
//! rules build, and the fields a JITP template needs.

use std::collections::BTreeMap;

use crate::model::certificate::{Certificate, Subject, SubjectField};
use crate::model::naming;
use crate::model::plan::Approval;
use crate::model::reason::{RejectReason, Rejection};
use crate::policy::profile::{DeviceProfile, NameError};

/// Builds the thing name and attributes by the profile's rules.
///
/// # Errors
/// `THING_NAME_MISSING`, `THING_NAME_INVALID` or `ATTRIBUTE_INVALID`.
pub fn approve_naming(cert: &Certificate, profile: &DeviceProfile) -> Result<Approval, Rejection> {
    approve_subject(&cert.subject, profile)
}

/// Builds the thing name and attributes from subject fields, wherever they
/// come from (a certificate, a fleet-provisioning request).
///
/// # Errors
/// `THING_NAME_MISSING`, `THING_NAME_INVALID` or `ATTRIBUTE_INVALID`.
pub fn approve_subject(subject: &Subject, profile: &DeviceProfile) -> Result<Approval, Rejection> {
    let thing_name = profile.thing_name_for(subject).map_err(|e| match e {
        NameError::Missing(field) => Rejection::new(
            RejectReason::ThingNameMissing,
            format!(
                "subject has no {field}, which the naming rule {:?} uses",
                profile.thing_name
            ),
        ),
        NameError::Invalid(name) => Rejection::new(
            RejectReason::ThingNameInvalid,
            format!("{:?} does not match [a-zA-Z0-9:_-]{{1,128}}", truncate(&name, 140)),
        ),
    })?;
    let mapped = profile.attributes_for(subject).map_err(|unfit| {
        Rejection::new(
            RejectReason::AttributeInvalid,
            format!(
                "attribute {} from {} does not fit [a-zA-Z0-9_.,@/:#=\\[\\]-]{{0,800}}",
                unfit.name, unfit.field
            ),
        )
    })?;
    Ok(Approval {
        thing_name,
        attributes: mapped.values,
        dropped_attributes: mapped.dropped,
    })
}

/// What an import row says about its device, over the profile's rules: a
/// thing name of its own and attributes of its own (both untrusted input,
/// checked here against AWS IoT's naming rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportNaming {
    /// The thing name the row names; `None`: the profile's naming rule.
    pub thing_name: Option<String>,
    /// Attributes set on the thing over the ones the profile maps.
    pub attributes: BTreeMap<String, String>,
}

/// The thing name and attributes of an imported certificate: the row's
/// thing name if it gives one (it must pass AWS IoT's thing-name rule),
/// otherwise the profile's naming rule, as for any other certificate; the
/// profile's mapped attributes with the row's on top (each key and value
/// must pass AWS IoT's rules, and the total must fit the thing's limit).
///
/// # Errors
/// `THING_NAME_MISSING`, `THING_NAME_INVALID` or `ATTRIBUTE_INVALID`.
pub fn approve_import_naming(
    cert: &Certificate,
    profile: &DeviceProfile,
    naming: &ImportNaming,
) -> Result<Approval, Rejection> {
    let mut approval = match &naming.thing_name {
        None => approve_subject(&cert.subject, profile)?,
        Some(name) => {
            if !naming::is_valid_thing_name(name) {
                return Err(Rejection::new(
                    RejectReason::ThingNameInvalid,
                    format!("{:?} does not match [a-zA-Z0-9:_-]{{1,128}}", truncate(name, 140)),
                ));
            }
            let mapped = profile.attributes_for(&cert.subject).map_err(|unfit| {
                Rejection::new(
                    RejectReason::AttributeInvalid,
                    format!(
                        "attribute {} from {} does not fit [a-zA-Z0-9_.,@/:#=\\[\\]-]{{0,800}}",
                        unfit.name, unfit.field
                    ),
                )
            })?;
            Approval {
                thing_name: name.clone(),
                attributes: mapped.values,
                dropped_attributes: mapped.dropped,
            }
        }
    };
    for (key, value) in &naming.attributes {
        if !naming::is_valid_attribute_key(key) || !naming::is_valid_attribute_value(value) {
            return Err(Rejection::new(
                RejectReason::AttributeInvalid,
                format!(
                    "attribute {:?}={:?} does not fit AWS IoT's rules",
                    truncate(key, 140),
                    truncate(value, 140)
                ),
            ));
        }
        approval.attributes.insert(key.clone(), value.clone());
    }
    let limit = match profile.thing_type {
        Some(_) => naming::ATTRIBUTES_MAX_WITH_TYPE,
        None => naming::ATTRIBUTES_MAX_WITHOUT_TYPE,
    };
    if approval.attributes.len() > limit {
        return Err(Rejection::new(
            RejectReason::AttributeInvalid,
            format!(
                "{} attributes, a thing {} a thing type holds at most {limit}",
                approval.attributes.len(),
                if profile.thing_type.is_some() {
                    "with"
                } else {
                    "without"
                }
            ),
        ));
    }
    Ok(approval)
}

/// The subject fields a certificate must carry for the profile's template:
/// the naming rule's, then the mapped attributes' (in attribute-name order),
/// each once.
pub fn required_fields(profile: &DeviceProfile) -> Vec<SubjectField> {
    let mut fields = Vec::new();
    for field in profile
        .naming_fields()
        .into_iter()
        .chain(profile.attributes.values().copied())
    {
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    fields
}

/// Checks that a subject carries every field the profile's template declares.
///
/// # Errors
/// The first required field (in `required_fields` order) that the subject
/// lacks or has empty.
pub fn check_subject(profile: &DeviceProfile, subject: &Subject) -> Result<(), SubjectField> {
    match required_fields(profile)
        .into_iter()
        .find(|f| subject.get(*f).is_none_or(str::is_empty))
    {
        Some(missing) => Err(missing),
        None => Ok(()),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> DeviceProfile {
        DeviceProfile::parse(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn subject(pairs: &[(SubjectField, &str)]) -> Subject {
        Subject::from_pairs(pairs.iter().map(|(f, v)| (*f, v.to_string())))
    }

    #[test]
    fn required_fields_are_deduplicated_in_a_stable_order() {
        let p = profile(
            r#"{"name":"p","policyName":"pol","thingName":"{O}-{CN}-{O}",
                "attributes":{"b":"serialNumber","a":"CN","c":"O"}}"#,
        );
        assert_eq!(
            required_fields(&p),
            vec![
                SubjectField::Organization,
                SubjectField::CommonName,
                SubjectField::SerialNumber
            ]
        );
        assert_eq!(
            required_fields(&DeviceProfile::minimal("p", "pol")),
            vec![SubjectField::CommonName]
        );
    }

    #[test]
    fn check_subject_names_the_first_missing_field() {
        let p = profile(r#"{"name":"p","policyName":"pol","attributes":{"maker":"O","serial":"serialNumber"}}"#);
        let full = subject(&[
            (SubjectField::CommonName, "dev-1"),
            (SubjectField::Organization, "Acme"),
            (SubjectField::SerialNumber, "SN1"),
        ]);
        assert_eq!(check_subject(&p, &full), Ok(()));
        let no_org = subject(&[(SubjectField::CommonName, "dev-1"), (SubjectField::SerialNumber, "SN1")]);
        assert_eq!(check_subject(&p, &no_org), Err(SubjectField::Organization));
        let empty_cn = subject(&[(SubjectField::CommonName, "")]);
        assert_eq!(check_subject(&p, &empty_cn), Err(SubjectField::CommonName));
    }
}
