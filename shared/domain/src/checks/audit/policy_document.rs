//! `POLICY_OVERLY_PERMISSIVE`: an IoT policy document read as AWS IoT reads
//! it, and what its `Allow` statements grant a device beyond its own client
//! id and topics.
//!
//! A resource is the device's own when its name is, or (for topics) has as a
//! path segment preceded only by literal segments,
//! `${iot:Connection.Thing.ThingName}` or the name of the one thing the
//! policy serves. Anything that cannot be read is reported, never passed.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{AuditCheck, Finding, ResourceKind, Severity};

/// The policy variable a device's own resources are named with.
const THING_NAME_VARIABLE: &str = "${iot:Connection.Thing.ThingName}";
/// Characters that make a policy resource or action match more than itself
/// (`+` and `#` in a `topicfilter` let a device subscribe to a whole subtree).
const WILDCARDS: &[char] = &['*', '?', '+', '#'];

/// An IoT policy attached to device certificates, as AWS IoT holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFacts {
    pub policy_name: String,
    /// The policy document (`GetPolicy`'s `policyDocument`), JSON.
    pub document: String,
    /// The things the certificates carrying the policy are attached to.
    pub things: Vec<String>,
}

/// The kind of resource an MQTT action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Client,
    Topic,
    TopicFilter,
}

impl Target {
    fn arn_type(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Topic => "topic",
            Self::TopicFilter => "topicfilter",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Client => "client id",
            Self::Topic => "topics",
            Self::TopicFilter => "topic filters",
        }
    }
}

/// The MQTT actions this check judges, lowercase, with what they apply to.
const MQTT_ACTIONS: &[(&str, Target)] = &[
    ("iot:connect", Target::Client),
    ("iot:publish", Target::Topic),
    ("iot:retainpublish", Target::Topic),
    ("iot:receive", Target::Topic),
    ("iot:subscribe", Target::TopicFilter),
];

/// `POLICY_OVERLY_PERMISSIVE`: one finding per policy whose `Allow`
/// statements grant any of: every action (`*`, `iot:*`, or a pattern
/// matching every MQTT action), everything but some actions (`NotAction`:
/// `Critical`); every resource but some (`NotResource`), `iot:Connect` on a
/// client id other than the device's own, or publish, receive or subscribe
/// beyond the device's own topics (`High`). A document that cannot be read
/// is reported (`High`) for review by hand. `Deny` statements grant nothing
/// and are not counted; conditions are not counted as limits. The finding's
/// severity is its worst problem's, its detail lists them all.
pub fn policies_overly_permissive(policies: &[PolicyFacts]) -> Vec<Finding> {
    policies.iter().filter_map(policy_overly_permissive).collect()
}

fn policy_overly_permissive(policy: &PolicyFacts) -> Option<Finding> {
    let things: BTreeSet<&str> = policy.things.iter().map(String::as_str).collect();
    let problems = match problems(&policy.document, &things) {
        Ok(problems) => problems,
        Err(why) => vec![(
            Severity::High,
            format!("the policy document cannot be read ({why}): review it by hand"),
        )],
    };
    let severity = problems.iter().map(|(s, _)| *s).max()?;
    let detail = problems.into_iter().map(|(_, p)| p).collect::<Vec<_>>().join("; ");
    Some(Finding::new(
        AuditCheck::PolicyOverlyPermissive,
        severity,
        ResourceKind::Policy,
        &policy.policy_name,
        detail,
    ))
}

/// A string or an array of strings (`Action`, `Resource`); `None` when absent.
fn strings<'a>(statement: &'a serde_json::Map<String, Value>, key: &str) -> Result<Option<Vec<&'a str>>, String> {
    match statement.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("{key} holds a value that is not a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{key} is neither a string nor an array of strings")),
    }
}

/// Every problem of a document.
///
/// # Errors
/// Why the document cannot be read.
fn problems(document: &str, things: &BTreeSet<&str>) -> Result<Vec<(Severity, String)>, String> {
    let root: Value = serde_json::from_str(document).map_err(|e| format!("not JSON: {e}"))?;
    let root = root.as_object().ok_or("not a JSON object")?;
    let statements: Vec<&Value> = match root.get("Statement") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err("Statement is neither an object nor an array".into()),
    };
    let mut out = Vec::new();
    for (index, statement) in statements.into_iter().enumerate() {
        let statement = statement.as_object().ok_or("a statement is not an object")?;
        let name = statement.get("Sid").and_then(Value::as_str).map_or_else(
            || format!("statement {}", index + 1),
            |sid| format!("statement {sid:?}"),
        );
        let effect = match statement.get("Effect") {
            Some(Value::String(effect)) => effect,
            _ => return Err(format!("{name} has no Effect string")),
        };
        // Only Allow grants. An unknown effect would be refused by AWS IoT;
        // reading it as Deny cannot hide a grant from this check.
        if !effect.eq_ignore_ascii_case("allow") {
            continue;
        }
        if let Some(excepted) = strings(statement, "NotAction")? {
            out.push((
                Severity::Critical,
                format!("{name} allows every action but {}", excepted.join(", ")),
            ));
        }
        if let Some(excepted) = strings(statement, "NotResource")? {
            out.push((
                Severity::High,
                format!("{name} allows every resource but {}", excepted.join(", ")),
            ));
        }
        let actions = strings(statement, "Action")?.unwrap_or_default();
        let resources = strings(statement, "Resource")?.unwrap_or_default();
        for action in actions {
            let lower = action.trim().to_ascii_lowercase();
            let covered: Vec<(&str, Target)> = MQTT_ACTIONS
                .iter()
                .copied()
                .filter(|(known, _)| glob(&lower, known))
                .collect();
            if covered.len() == MQTT_ACTIONS.len() {
                out.push((Severity::Critical, format!("{name} allows every IoT action ({action})")));
                continue;
            }
            for (known, target) in covered {
                for resource in &resources {
                    if !own(resource, target, things) {
                        out.push((
                            Severity::High,
                            format!(
                                "{name} allows {} on {resource}, beyond the device's own {}",
                                display_action(known),
                                target.noun()
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `iot:Connect` for `iot:connect`.
fn display_action(lower: &str) -> &'static str {
    match lower {
        "iot:connect" => "iot:Connect",
        "iot:publish" => "iot:Publish",
        "iot:retainpublish" => "iot:RetainPublish",
        "iot:receive" => "iot:Receive",
        _ => "iot:Subscribe",
    }
}

/// True when `resource` grants the MQTT `target` nothing beyond the device's
/// own: a resource of another literal type (an ARN that cannot name a client
/// when the action is `iot:Connect`, say) grants nothing to judge.
fn own(resource: &str, target: Target, things: &BTreeSet<&str>) -> bool {
    let resource = resource.trim();
    let parts: Vec<&str> = resource.splitn(6, ':').collect();
    let [arn, _partition, service, _region, _account, rest] = parts.as_slice() else {
        return false;
    };
    if *arn != "arn" {
        return false;
    }
    if !has_wildcard(service) && !service.eq_ignore_ascii_case("iot") {
        return true;
    }
    let Some((kind, name)) = rest.split_once('/') else {
        return !has_wildcard(rest);
    };
    if has_wildcard(kind) {
        return false;
    }
    if !kind.eq_ignore_ascii_case(target.arn_type()) {
        return true;
    }
    let is_own = |segment: &str| segment == THING_NAME_VARIABLE || (things.len() == 1 && things.contains(segment));
    match target {
        Target::Client => is_own(name),
        Target::Topic | Target::TopicFilter => {
            for segment in name.split('/') {
                if is_own(segment) {
                    return true;
                }
                if has_wildcard(segment) {
                    return false;
                }
            }
            false
        }
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(WILDCARDS)
}

/// An IAM-style action pattern (`*` any run, `?` one character) against a
/// lowercase action name.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests;
