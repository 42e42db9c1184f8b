#!/usr/bin/env python3
"""Checks every AWS IoT action the SAM template grants against the resource
types the AWS Service Authorization Reference lists for it.

An identity policy statement only authorizes an action on a resource ARN of a
type the action supports; an action that supports no resource type is
authorized only by `Resource: "*"`. A statement naming only ARNs of other
types looks least-privileged but fails with AccessDenied on AWS (the local
emulator cannot tell). The reference's data comes with cfn-lint
(cfnlint/data/AdditionalSpecs/Policies.json, generated from
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiot.html).

Usage: .venv-infra/bin/python scripts/check-iam.py [--self-test] infra/template.yaml
Exit 1 with one line per problem; 0 when every grant can take effect.
--self-test first proves that the check catches the grants it is for.
"""
import json
import pathlib
import re
import sys

import cfnlint
from cfnlint.decode import decode

SERVICES = ("iot",)
# Account-wide settings shared with every other system in the account: no
# role of the stack may change them (an operator does, at deploy time).
FORBIDDEN = {
    "iot:updateeventconfigurations": "rewrites the account-wide IoT event configuration; `onboard events --enable` does it at deploy time",
    "iot:*": "grants every IoT action",
    "*": "grants every action",
}


def reference():
    path = pathlib.Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    data = json.loads(path.read_text())
    return {
        service: {name.lower(): [r.lower() for r in spec.get("Resources", [])] for name, spec in data[service]["Actions"].items()}
        for service in SERVICES
    }


def statements(node, where):
    """Every policy statement in the template, with where it is."""
    if isinstance(node, dict):
        if "Statement" in node:
            found = node["Statement"]
            for i, statement in enumerate(found if isinstance(found, list) else [found]):
                # A statement under a condition (!If [cond, statement,
                # AWS::NoValue]) is checked as if the condition held.
                if isinstance(statement, dict) and list(statement) == ["Fn::If"]:
                    for branch in statement["Fn::If"][1:]:
                        if isinstance(branch, dict) and "Effect" in branch:
                            yield f"{where}.Statement[{i}]", branch
                    continue
                yield f"{where}.Statement[{i}]", statement
        for key, value in node.items():
            if key != "Statement":
                yield from statements(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from statements(value, f"{where}[{i}]")


def text(value):
    """A resource as text: a plain string, or the string of a !Sub."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if key == "Fn::Sub":
            return inner if isinstance(inner, str) else inner[0]
        return f"<{key}>"
    return str(value)


def resource_type(arn, service):
    """`cert` for arn:...:iot:...:cert/*; None for another service's ARN."""
    # ${AWS::Partition} and the like hold colons: take them out first.
    parts = re.sub(r"\$\{[^}]*\}", "x", arn).split(":", 5)
    if len(parts) < 6 or parts[2] != service:
        return None
    return parts[5].split("/", 1)[0].lower()


def main(path):
    template, matches = decode(path)
    if matches:
        for match in matches:
            print(f"{path}: cannot parse: {match}")
        return 1
    ref = reference()
    problems = []
    checked = 0
    # AWS::IoT::Policy documents are IoT policies for devices, not IAM.
    iam = {name: r for name, r in template.get("Resources", {}).items() if r.get("Type") != "AWS::IoT::Policy"}
    for where, statement in statements(iam, "Resources"):
        if statement.get("Effect") != "Allow" or "Resource" not in statement:
            continue
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        resources = statement["Resource"]
        resources = [text(r) for r in (resources if isinstance(resources, list) else [resources])]
        sid = statement.get("Sid", "")
        for action in actions:
            if isinstance(action, str) and action.lower() in FORBIDDEN:
                problems.append(f"{where} ({sid}): {action} {FORBIDDEN[action.lower()]}")
                continue
            if not isinstance(action, str) or ":" not in action:
                continue
            service, name = action.split(":", 1)
            if service not in ref:
                continue
            if name.lower() not in ref[service]:
                # Device-policy actions (iot:Connect, Publish...) live in IoT
                # policies, not IAM; an unknown name is a typo.
                problems.append(f"{where} ({sid}): {action} is not an action of the reference")
                continue
            checked += 1
            types = ref[service][name.lower()]
            if "*" in resources:
                continue
            if not types:
                problems.append(
                    f"{where} ({sid}): {action} supports no resource type; it needs Resource \"*\", has {resources}"
                )
                continue
            if not any(resource_type(r, service) in types for r in resources):
                problems.append(
                    f"{where} ({sid}): {action} is authorized on {', '.join(types)}; the statement names only {resources}"
                )
    for problem in problems:
        print(problem)
    print(f"check-iam: {checked} IoT grants checked, {len(problems)} problem(s)")
    return 1 if problems else 0


SELF_TEST = """
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: p
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: [iot:ListAttachedPolicies, iot:AttachThingPrincipal, iot:UpdateEventConfigurations]
                Resource: !Sub "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:thing/*"
              - !If
                - Cond
                - Effect: Allow
                  Action: iot:RegisterCertificate
                  Resource: !Sub "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:cert/*"
                - !Ref AWS::NoValue
"""


def self_test():
    """The two mistakes the check exists for must be reported."""
    import contextlib
    import io
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(SELF_TEST)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(f.name)
    pathlib.Path(f.name).unlink()
    text_out = out.getvalue()
    ok = code == 1 and "ListAttachedPolicies supports no resource type" in text_out and "AttachThingPrincipal is authorized on cert" in text_out and "UpdateEventConfigurations rewrites" in text_out and "RegisterCertificate supports no resource type" in text_out
    print(f"check-iam self-test: {'passed' if ok else 'FAILED'}")
    if not ok:
        print(text_out)
    return ok


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        args = args[1:]
        if not self_test():
            sys.exit(1)
    sys.exit(main(args[0] if args else "infra/template.yaml"))
