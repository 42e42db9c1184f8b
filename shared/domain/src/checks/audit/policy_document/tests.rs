use super::*;

/// infra/template.yaml's `DevicePolicy` document as AWS IoT holds it once
/// deployed (`!Sub` resolved, `${!…}` left as the policy variable).
const TEMPLATE_DEVICE_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ConnectAsOwnThing",
      "Effect": "Allow",
      "Action": "iot:Connect",
      "Resource": "arn:aws:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.ThingName}",
      "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    },
    {
      "Sid": "PublishAndReceiveOwnTopics",
      "Effect": "Allow",
      "Action": ["iot:Publish", "iot:Receive"],
      "Resource": [
        "arn:aws:iot:eu-west-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:eu-west-1:123456789012:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"
      ]
    },
    {
      "Sid": "SubscribeOwnTopics",
      "Effect": "Allow",
      "Action": "iot:Subscribe",
      "Resource": [
        "arn:aws:iot:eu-west-1:123456789012:topicfilter/devices/${iot:Connection.Thing.ThingName}/*",
        "arn:aws:iot:eu-west-1:123456789012:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"
      ]
    }
  ]
}"#;

const ARN: &str = "arn:aws:iot:eu-west-1:123456789012";

fn facts(document: &str, things: &[&str]) -> PolicyFacts {
    PolicyFacts {
        policy_name: "device-policy".into(),
        document: document.into(),
        things: things.iter().map(|t| t.to_string()).collect(),
    }
}

fn check(document: &str, things: &[&str]) -> Option<Finding> {
    let mut findings = policies_overly_permissive(&[facts(document, things)]);
    assert!(findings.len() <= 1, "{findings:#?}");
    findings.pop()
}

fn flagged(document: &str, things: &[&str]) -> Finding {
    check(document, things).unwrap_or_else(|| panic!("not flagged: {document}"))
}

/// One Allow statement.
fn allow(action: &str, resource: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":{action},"Resource":{resource}}}}}"#)
}

fn quoted(s: &str) -> String {
    serde_json::Value::String(s.into()).to_string()
}

#[test]
fn the_templates_device_policy_produces_no_finding() {
    assert_eq!(check(TEMPLATE_DEVICE_POLICY, &[]), None);
    assert_eq!(check(TEMPLATE_DEVICE_POLICY, &["sensor-1"]), None);
    assert_eq!(check(TEMPLATE_DEVICE_POLICY, &["sensor-1", "sensor-2"]), None);
}

/// The copy above is the template's policy: every action and resource the
/// template's `DevicePolicy` names (with `!Sub` resolved) is in the copy, and
/// the copy has no more statements, so a template that broadens its policy
/// fails here until the copy (and its verdict) is brought up to date.
#[test]
fn the_copy_is_the_templates_device_policy() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml"))
        .unwrap_or_else(|e| panic!("infra/template.yaml: {e}"));
    let start = template
        .find("\n  DevicePolicy:\n")
        .unwrap_or_else(|| panic!("no DevicePolicy in the template"));
    let block: Vec<&str> = template[start + 1..]
        .lines()
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .collect();
    let copy: serde_json::Value = serde_json::from_str(TEMPLATE_DEVICE_POLICY).unwrap_or_else(|e| panic!("{e}"));
    let statements = copy["Statement"].as_array().map_or(0, Vec::len);
    assert_eq!(
        block.iter().filter(|l| l.trim_start().starts_with("- Sid:")).count(),
        statements
    );
    let mut named = 0;
    for line in &block {
        let line = line.trim_start().trim_start_matches("- ");
        if let Some(arn) = line
            .strip_prefix("!Sub ")
            .or_else(|| line.strip_prefix("Resource: !Sub "))
        {
            let resolved = arn
                .trim_matches('"')
                .replace("${AWS::Partition}", "aws")
                .replace("${AWS::Region}", "eu-west-1")
                .replace("${AWS::AccountId}", "123456789012")
                .replace("${!", "${");
            assert!(
                TEMPLATE_DEVICE_POLICY.contains(&format!("\"{resolved}\"")),
                "{resolved} is not in the copy"
            );
            named += 1;
        }
        if let Some(actions) = line.strip_prefix("Action: ") {
            for action in actions.trim_matches(['[', ']']).split(',') {
                assert!(
                    TEMPLATE_DEVICE_POLICY.contains(&format!("\"{}\"", action.trim())),
                    "{action}"
                );
            }
        }
    }
    assert_eq!(named, 5, "{block:#?}");
}

#[test]
fn iot_star_is_critical_with_the_checks_id_and_remedy() {
    let finding = flagged(&allow(r#""iot:*""#, r#""*""#), &["t"]);
    assert_eq!(finding.check, AuditCheck::PolicyOverlyPermissive);
    assert_eq!(finding.severity, Severity::Critical);
    assert_eq!(finding.resource_kind, ResourceKind::Policy);
    assert_eq!(finding.resource_id, "device-policy");
    assert_eq!(finding.remedy, AuditCheck::PolicyOverlyPermissive.remedy());
    assert!(
        finding.detail.contains("every IoT action (iot:*)"),
        "{}",
        finding.detail
    );
}

#[test]
fn attack_every_action_hidden_in_an_array_in_another_case_or_as_a_pattern() {
    for action in [
        r#"["iot:Publish", "iot:*"]"#,
        r#""*""#,
        r#""IOT:*""#,
        r#"["iot*"]"#,
        r#""*:*""#,
        r#"" iot:* ""#,
    ] {
        let resource = quoted(&format!("{ARN}:topic/devices/${{iot:Connection.Thing.ThingName}}/*"));
        let finding = flagged(&allow(action, &resource), &["t"]);
        assert_eq!(finding.severity, Severity::Critical, "{action}: {}", finding.detail);
    }
}

#[test]
fn attack_a_wildcard_client_id_is_flagged_in_any_spelling() {
    for resource in [
        "arn:aws:iot:*:*:client/*",
        "*",
        "arn:aws:iot:eu-west-1:123456789012:client/*",
        "arn:aws:iot:eu-west-1:123456789012:*",
        "arn:aws:iot:eu-west-1:123456789012:cl*/${iot:Connection.Thing.ThingName}",
        "arn:aws:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.ThingName}*",
        "arn:aws:iot:eu-west-1:123456789012:client/${iot:ClientId}",
        "arn:aws:*:eu-west-1:123456789012:client/*",
        "not an arn",
    ] {
        let finding = flagged(&allow(r#""iot:Connect""#, &quoted(resource)), &["t"]);
        assert_eq!(finding.severity, Severity::High, "{resource}");
        assert!(
            finding.detail.contains("iot:Connect on"),
            "{resource}: {}",
            finding.detail
        );
        assert!(finding.detail.contains("client id"), "{}", finding.detail);
    }
}

#[test]
fn a_connect_scoped_to_the_thing_in_any_region_or_account_is_own() {
    let resource = quoted("arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}");
    assert_eq!(check(&allow(r#""iot:Connect""#, &resource), &["t"]), None);
}

#[test]
fn topics_beyond_the_devices_own_are_flagged_for_each_action() {
    for (action, resource) in [
        ("iot:Publish", format!("{ARN}:topic/*")),
        ("iot:Publish", format!("{ARN}:topic/devices/*")),
        ("iot:Receive", format!("{ARN}:topic/devices/other-thing/*")),
        ("iot:RetainPublish", format!("{ARN}:topic/#")),
        ("iot:Subscribe", format!("{ARN}:topicfilter/#")),
        ("iot:Subscribe", format!("{ARN}:topicfilter/devices/+/telemetry")),
        ("iot:Publish", format!("{ARN}:topic/devices/${{iot:ClientId}}/x")),
    ] {
        let finding = flagged(&allow(&quoted(action), &quoted(&resource)), &["t"]);
        assert_eq!(finding.severity, Severity::High, "{action} {resource}");
        assert!(
            finding.detail.contains(&format!("allows {action} on")),
            "{}",
            finding.detail
        );
    }
}

#[test]
fn attack_a_wildcard_before_the_thing_name_reaches_other_devices_topics() {
    for resource in [
        format!("{ARN}:topic/*/${{iot:Connection.Thing.ThingName}}/*"),
        format!("{ARN}:topic/devices/+/${{iot:Connection.Thing.ThingName}}"),
        format!("{ARN}:*/devices/${{iot:Connection.Thing.ThingName}}/*"),
        format!("{ARN}:topic/devices/${{iot:Connection.Thing.ThingName}}*"),
    ] {
        assert!(
            check(&allow(r#""iot:Publish""#, &quoted(&resource)), &["t"]).is_some(),
            "{resource}"
        );
    }
}

#[test]
fn the_things_own_literal_name_is_own_only_for_a_policy_of_that_one_thing() {
    let document = allow(
        r#"["iot:Connect", "iot:Publish"]"#,
        &format!(r#"["{ARN}:client/sensor-1", "{ARN}:topic/devices/sensor-1/*"]"#),
    );
    assert_eq!(check(&document, &["sensor-1"]), None);
    assert_eq!(check(&document, &["sensor-1", "sensor-1"]), None);
    // The same policy on a second thing hands that thing sensor-1's identity.
    let finding = flagged(&document, &["sensor-1", "sensor-2"]);
    assert!(finding.detail.contains("iot:Connect on"), "{}", finding.detail);
    assert!(finding.detail.contains("iot:Publish on"), "{}", finding.detail);
    assert!(check(&document, &["sensor-2"]).is_some());
    assert!(check(&document, &[]).is_some());
    // A name that only contains the thing's name is not its own.
    let prefix = allow(r#""iot:Connect""#, &quoted(&format!("{ARN}:client/sensor-10")));
    assert!(check(&prefix, &["sensor-1"]).is_some());
}

#[test]
fn attack_a_deny_statement_grants_nothing_and_hides_nothing() {
    let deny_only = r#"{"Statement":{"Effect":"Deny","Action":"iot:*","Resource":"*"}}"#;
    assert_eq!(check(deny_only, &["t"]), None);
    // A Deny beside an Allow iot:* does not take the Allow back in this check.
    let both = r#"{"Statement":[
        {"Effect":"Deny","Action":"iot:Publish","Resource":"*"},
        {"Effect":"Allow","Action":["iot:*"],"Resource":"*"}]}"#;
    assert_eq!(flagged(both, &["t"]).severity, Severity::Critical);
}

#[test]
fn attack_not_action_and_not_resource_allow_nearly_everything() {
    let not_action = r#"{"Statement":{"Effect":"Allow","NotAction":"iot:DeleteThingShadow","Resource":"*"}}"#;
    let finding = flagged(not_action, &["t"]);
    assert_eq!(finding.severity, Severity::Critical);
    assert!(
        finding.detail.contains("every action but iot:DeleteThingShadow"),
        "{}",
        finding.detail
    );
    let not_resource =
        format!(r#"{{"Statement":{{"Effect":"Allow","Action":"iot:Publish","NotResource":"{ARN}:topic/admin/*"}}}}"#);
    let finding = flagged(&not_resource, &["t"]);
    assert_eq!(finding.severity, Severity::High);
    assert!(finding.detail.contains("every resource but"), "{}", finding.detail);
}

#[test]
fn an_allow_spelled_in_another_case_still_counts() {
    let document = r#"{"Statement":{"Effect":"ALLOW","Action":"iot:*","Resource":"*"}}"#;
    assert_eq!(flagged(document, &["t"]).severity, Severity::Critical);
}

#[test]
fn action_patterns_are_judged_for_the_actions_they_match() {
    // `iot:Pub*` is iot:Publish on every topic.
    let finding = flagged(&allow(r#""iot:Pub*""#, &quoted(&format!("{ARN}:topic/*"))), &["t"]);
    assert_eq!(finding.severity, Severity::High);
    assert!(finding.detail.contains("iot:Publish on"), "{}", finding.detail);
    // Actions this check does not judge (shadows, jobs) raise nothing.
    let shadow = allow(r#""iot:GetThingShadow""#, &quoted(&format!("{ARN}:thing/*")));
    assert_eq!(check(&shadow, &["t"]), None);
    // A Connect on a topic ARN grants no connection.
    let connect_topic = allow(r#""iot:Connect""#, &quoted(&format!("{ARN}:topic/*")));
    assert_eq!(check(&connect_topic, &["t"]), None);
}

#[test]
fn the_worst_problem_sets_the_severity_and_every_problem_is_listed() {
    let document = format!(
        r#"{{"Statement":[
            {{"Sid":"A","Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/*"}},
            {{"Sid":"B","Effect":"Allow","Action":"*","Resource":"*"}}]}}"#
    );
    let finding = flagged(&document, &["t"]);
    assert_eq!(finding.severity, Severity::Critical);
    assert!(
        finding.detail.contains(r#"statement "A" allows iot:Connect"#),
        "{}",
        finding.detail
    );
    assert!(
        finding.detail.contains(r#"statement "B" allows every IoT action"#),
        "{}",
        finding.detail
    );
}

#[test]
fn an_unreadable_document_is_reported_never_passed() {
    for document in [
        "",
        "{",
        "[]",
        r#"{"Statement":"Allow"}"#,
        r#"{"Statement":["x"]}"#,
        r#"{"Statement":{"Action":"iot:*","Resource":"*"}}"#,
        r#"{"Statement":{"Effect":"Allow","Action":42,"Resource":"*"}}"#,
        r#"{"Statement":{"Effect":"Allow","Action":["iot:Publish",1],"Resource":"*"}}"#,
        r#"{"Statement":{"Effect":"Allow","Action":"iot:Publish","Resource":{"a":1}}}"#,
    ] {
        let finding = flagged(document, &["t"]);
        assert_eq!(finding.severity, Severity::High, "{document}");
        assert!(
            finding.detail.contains("cannot be read"),
            "{document}: {}",
            finding.detail
        );
    }
}

#[test]
fn a_document_granting_nothing_raises_nothing() {
    assert_eq!(check(r#"{"Version":"2012-10-17"}"#, &["t"]), None);
    assert_eq!(check(r#"{"Statement":[]}"#, &["t"]), None);
}

#[test]
fn glob_matches_like_iam_patterns() {
    assert!(glob("iot:*", "iot:connect"));
    assert!(glob("iot:conn?ct", "iot:connect"));
    assert!(glob("*", "iot:publish"));
    assert!(glob("iot:*publish", "iot:retainpublish"));
    assert!(!glob("iot:pub", "iot:publish"));
    assert!(!glob("iot:publish?", "iot:publish"));
    assert!(!glob("greengrass:*", "iot:publish"));
}
