#!/usr/bin/env python3
"""Lints the CloudWatch dashboard of the SAM template against what the
functions emit and what the template deploys.

For every AWS::CloudWatch::Dashboard, its DashboardBody is substituted as
CloudFormation would (`${Resource}` and `${Resource.Attr}` become markers that
name the template's resources, `${AWS::Region}` the stack's region) and then:

- it is dashboard JSON: widgets with type, x, y, width, height and
  properties, inside the 24-column grid, none overlapping; metric widgets
  with the stack's own region, a view, a statistic, a period, and metrics
  rows that are [namespace, name, (dimension, value)...,{options}] (the
  "." shorthand of CloudWatch is expanded);
- every metric of the project's namespace (the template's
  METRICS_NAMESPACE) is one a function emits, with its Function dimension
  and its extra dimension: the catalogue is read from the functions' source
  (functions/*/src, every call of onboarding_lambda::emf, the EMF builder
  every function uses), so a new function's metrics are known without
  changing this script;
- every value of a Reason, ErrorKind or Check dimension is a code of the
  domain (read from shared/domain/src), and the widgets that chart a metric
  "by" such a dimension chart all of its codes;
- every AWS/Lambda metric names a function of the template and every AWS/SQS
  metric a queue of the template (never a hard-coded name), every queue's
  depth and every function's throttles are charted.

Usage: .venv-infra/bin/python scripts/check-dashboard.py [--self-test] [infra/template.yaml]
Exit 1 with one line per problem; 0 when the dashboard is sound.
--self-test first proves that the check catches the mistakes it is for.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
GRID_WIDTH = 24
REGION = "<region>"

# The codes a dimension's values come from, per (Function, dimension):
# (file under the repository, the type, its method whose arms return the codes).
VALUE_SOURCES = {
    ("jitr-registrar", "Reason"): [("shared/domain/src/model/reason.rs", "RejectReason", "code")],
    ("provisioning-hook", "Reason"): [
        ("shared/domain/src/model/reason.rs", "RejectReason", "code"),
        ("shared/domain/src/workflows/provisioning_hook.rs", "Refusal", "code"),
    ],
    ("rotation", "Reason"): [("shared/domain/src/policy/rotation/state.rs", "FailureReason", "code")],
    ("jitr-registrar", "ErrorKind"): [
        ("shared/domain/src/ports/mod.rs", "PortErrorKind", "code"),
        ("shared/domain/src/workflows/registrar.rs", "ProvisioningError", "kind"),
    ],
    ("fleet-auditor", "Check"): [("shared/domain/src/checks/audit/mod.rs", "AuditCheck", "code")],
}
# Metrics charted "by" a dimension: every code of the dimension is charted.
COMPLETE = [
    ("jitr-registrar", "Rejected", "Reason"),
    ("provisioning-hook", "ProvisioningRefused", "Reason"),
    ("rotation", "RotationFailed", "Reason"),
    ("fleet-auditor", "AuditFindings", "Check"),
]
# Metrics of a function that is being added on another branch: accepted until
# it is emitted; once functions/*/src emits it, the entry must go.
PENDING: list[tuple[str, str, str]] = []

LAMBDA_METRICS = {"Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions", "DeadLetterErrors",
                  "DestinationDeliveryFailures", "IteratorAge", "AsyncEventAge", "AsyncEventsDropped",
                  "AsyncEventsReceived"}
SQS_METRICS = {"ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible",
               "ApproximateNumberOfMessagesDelayed", "ApproximateAgeOfOldestMessage", "NumberOfMessagesSent",
               "NumberOfMessagesReceived", "NumberOfMessagesDeleted", "NumberOfEmptyReceives", "SentMessageSize"}
FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}
VIEWS = {"timeSeries", "singleValue", "bar", "pie", "gauge", "table"}
STATS = re.compile(r"^(SampleCount|Average|Sum|Minimum|Maximum|IQM|(p|tm|wm|tc|ts|pr)\d{1,2}(\.\d+)?)$")
OPTIONS = {"label", "yAxis", "color", "stat", "period", "id", "visible", "region", "accountId"}
WIDGET_TYPES = {"metric", "text", "alarm", "log", "explorer"}
UNITS = {"Count", "Milliseconds", "Seconds", "Microseconds", "None", "Bytes", "Percent", "Count/Second"}


# ----------------------------------------------------------- Rust source scanning

TOKEN = re.compile(
    r"""(?P<ws>\s+)|(?P<comment>//[^\n]*|/\*.*?\*/)|(?P<rawstr>r(?P<hashes>\#*)"(?P<raw>.*?)"(?P=hashes))"""
    r"""|(?P<str>"(?P<body>(?:\\.|[^"\\])*)")|(?P<char>'(?:\\.|[^'\\])')|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|(?P<num>\d[\w.]*)|(?P<punct>::|=>|->|.)""",
    re.S,
)


class Tok:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line

    def __repr__(self):
        return f"{self.kind}:{self.text}"


def tokenize(source):
    """Rust source as tokens: string literals (their content), identifiers,
    numbers and punctuation; whitespace and comments dropped."""
    tokens, line = [], 1
    for m in TOKEN.finditer(source):
        kind = next(k for k in ("ws", "comment", "rawstr", "str", "char", "ident", "num", "punct") if m.group(k) is not None)
        if kind == "str":
            tokens.append(Tok("str", m.group("body"), line))
        elif kind == "rawstr":
            tokens.append(Tok("str", m.group("raw"), line))
        elif kind in ("ident", "num", "punct", "char"):
            tokens.append(Tok(kind, m.group(0), line))
        line += m.group(0).count("\n")
    return tokens


def matching(tokens, i):
    """The index of the bracket closing the one at i."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for j in range(i, len(tokens)):
        t = tokens[j].text if tokens[j].kind == "punct" else None
        if t in pairs:
            stack.append(pairs[t])
        elif t in (")", "]", "}"):
            if not stack or stack.pop() != t:
                return None
            if not stack:
                return j
    return None


def without_tests(tokens):
    """The tokens outside #[cfg(test)] items."""
    out, i = [], 0
    while i < len(tokens):
        if [t.text for t in tokens[i:i + 7]] == ["#", "[", "cfg", "(", "test", ")", "]"]:
            j = i + 7
            while j < len(tokens) and tokens[j].text not in ("{", ";"):
                j += 1
            end = matching(tokens, j) if j < len(tokens) and tokens[j].text == "{" else j
            i = (end if end is not None else len(tokens)) + 1
            continue
        out.append(tokens[i])
        i += 1
    return out


def split_top(tokens):
    """Comma-separated parts of a bracket's content."""
    parts, current, depth = [], [], 0
    for t in tokens:
        if t.kind == "punct" and t.text in "([{":
            depth += 1
        elif t.kind == "punct" and t.text in ")]}":
            depth -= 1
        if depth == 0 and t.kind == "punct" and t.text == ",":
            parts.append(current)
            current = []
        else:
            current.append(t)
    if current:
        parts.append(current)
    return parts


def tuples(tokens):
    """Every parenthesized group in tokens (nested ones too), as its parts."""
    for i, t in enumerate(tokens):
        if t.kind == "punct" and t.text == "(":
            end = matching(tokens, i)
            if end is not None:
                yield split_top(tokens[i + 1:end])


def functions_of(tokens):
    """(name, parameters as token lists, body span) of every fn with a body."""
    found = []
    for i, t in enumerate(tokens):
        if t.kind == "ident" and t.text == "fn" and i + 1 < len(tokens) and tokens[i + 1].kind == "ident":
            j = i + 2
            while j < len(tokens) and tokens[j].text != "(":
                j += 1
            close = matching(tokens, j) if j < len(tokens) else None
            if close is None:
                continue
            all_params = split_top(tokens[j + 1:close])
            k = close + 1
            while k < len(tokens) and tokens[k].text not in ("{", ";"):
                k += 1
            if k < len(tokens) and tokens[k].text == "{":
                end = matching(tokens, k)
                if end is not None:
                    found.append((tokens[i + 1].text, all_params, (k, end)))
    return found


def param_names(params):
    """Parameter names in order, without `self` (a method is called as
    `receiver.name(args)`, its arguments in the same positions)."""
    names = []
    for p in params:
        idents = [t.text for t in p if t.kind == "ident" and t.text not in ("mut",)]
        names.append(idents[0] if idents else "")
    return [n for n in names if n != "self"]


def enclosing(fns, index):
    inner = None
    for fn in fns:
        start, end = fn[2]
        if start <= index <= end and (inner is None or start >= inner[2][0]):
            inner = fn
    return inner


def is_camel(text):
    return bool(re.fullmatch(r"[A-Z][A-Za-z0-9]*", text))


class Crate:
    """A function crate's non-test source, tokenized per file."""

    def __init__(self, directory):
        self.directory = directory
        self.files = []
        for path in sorted((directory / "src").rglob("*.rs")):
            tokens = without_tests(tokenize(path.read_text()))
            self.files.append((path, tokens, functions_of(tokens)))

    def string_constant(self, name):
        """Values of `const|static NAME: ... = "..."` or `let NAME = "..."`."""
        values = set()
        for _, tokens, _ in self.files:
            for i, t in enumerate(tokens):
                if t.kind == "ident" and t.text in ("const", "static", "let") and i + 1 < len(tokens) and tokens[i + 1].text == name:
                    j = i + 2
                    while j < len(tokens) and tokens[j].text not in ("=", ";"):
                        j += 1
                    if j + 2 < len(tokens) and tokens[j].text == "=" and tokens[j + 1].kind == "str" and tokens[j + 2].text == ";":
                        values.add(tokens[j + 1].text)
        return values

    def calls_of(self, fn_name):
        """The argument lists of every call of fn_name (not its definition)."""
        for _, tokens, fns in self.files:
            for i, t in enumerate(tokens):
                if t.kind == "ident" and t.text == fn_name and i + 1 < len(tokens) and tokens[i + 1].text == "(" and (i == 0 or tokens[i - 1].text != "fn"):
                    if i >= 2 and tokens[i - 2].text == "onboarding_lambda":
                        continue  # the EMF builder itself, not this crate's function of the same name
                    end = matching(tokens, i + 1)
                    if end is not None:
                        yield split_top(tokens[i + 2:end]), fns, i

    def resolve(self, arg, fns, index, depth=0):
        """The string values an argument can take; None when unknown."""
        idents = [t for t in arg if t.kind == "ident"]
        if len(arg) == 1 and arg[0].kind == "str":
            return {arg[0].text}
        if depth > 3 or len(idents) != 1:
            return None
        name = idents[0].text
        constant = self.string_constant(name)
        if constant:
            return constant
        fn = enclosing(fns, index)
        if fn is None:
            return None
        names = param_names(fn[1])
        if name not in names:
            return None
        position = names.index(name)
        values = set()
        for args, caller_fns, at in self.calls_of(fn[0]):
            if position >= len(args):
                return None
            inner = self.resolve(args[position], caller_fns, at, depth + 1)
            if inner is None:
                return None
            values |= inner
        return values or None


def emitted(functions_dir):
    """The catalogue: (Function value, metric names, extra dimension names,
    where) for every emf call of every function crate; and problems."""
    catalogue, problems = [], []
    for directory in sorted(p for p in functions_dir.iterdir() if (p / "src").is_dir()):
        crate = Crate(directory)
        for path, tokens, fns in crate.files:
            for i, t in enumerate(tokens):
                if t.text == "use":
                    end = next((j for j in range(i, len(tokens)) if tokens[j].text == ";"), len(tokens))
                    if any(u.text == "emf" for u in tokens[i:end]) and any(u.text == "onboarding_lambda" for u in tokens[i:end]):
                        problems.append(f"{path}:{t.line}: call onboarding_lambda::emf by its path, not imported, so that this lint finds its metrics")
            for i in range(len(tokens) - 3):
                if [t.text for t in tokens[i:i + 4]] != ["onboarding_lambda", "::", "emf", "("]:
                    continue
                where = f"{path.relative_to(functions_dir.parent) if functions_dir.parent in path.parents else path}:{tokens[i].line}"
                end = matching(tokens, i + 3)
                args = split_top(tokens[i + 4:end]) if end else []
                if len(args) != 5:
                    problems.append(f"{where}: onboarding_lambda::emf call with {len(args)} arguments, expected 5")
                    continue
                function = crate.resolve(args[1], fns, i)
                if not function:
                    problems.append(f"{where}: cannot tell the Function dimension of this emf call (a string literal, a const, or a parameter its callers pass one to)")
                    continue
                fn = enclosing(fns, i)
                body = tokens[fn[2][0]:fn[2][1]] if fn else []
                names, dims = set(), set()
                for parts in tuples(args[2]):
                    if len(parts) == 3 and parts[2] and parts[2][0].kind == "str" and parts[2][0].text in UNITS:
                        first = parts[0]
                        if len(first) == 1 and first[0].kind == "str":
                            names.add(first[0].text)
                        else:
                            # A name chosen by a match: ("Name", None | Some(extra)) arms.
                            for inner in tuples(body):
                                if len(inner) == 2 and len(inner[0]) == 1 and inner[0][0].kind == "str" and is_camel(inner[0][0].text) and inner[1] and inner[1][0].text in ("None", "Some"):
                                    names.add(inner[0][0].text)
                # A slice literal names its dimensions; anything else (a
                # value built by a match) takes them from the function's
                # ("Dimension", value) tuples that are not ("Metric", None |
                # Some(..)) arms.
                if [t.text for t in args[3][:2]] == ["&", "["]:
                    for parts in tuples(args[3]):
                        if len(parts) == 2 and len(parts[0]) == 1 and parts[0][0].kind == "str":
                            dims.add(parts[0][0].text)
                else:
                    for parts in tuples(body):
                        if len(parts) == 2 and len(parts[0]) == 1 and parts[0][0].kind == "str" and is_camel(parts[0][0].text) and parts[1] and parts[1][0].text not in ("None", "Some") and parts[1][0].kind != "str":
                            dims.add(parts[0][0].text)
                if not names:
                    # Metrics built before the call (a vec of tuples): the
                    # function's ("Name", value, "Unit") tuples.
                    for parts in tuples(body):
                        if len(parts) == 3 and len(parts[0]) == 1 and parts[0][0].kind == "str" and parts[2] and parts[2][0].kind == "str" and parts[2][0].text in UNITS:
                            names.add(parts[0][0].text)
                if not names:
                    problems.append(f"{where}: cannot read the metric names of this emf call")
                    continue
                catalogue.append((function, names, dims, where))
    return catalogue, problems


def codes(root, path, type_name, method):
    """The string literals the arms of type_name::method return."""
    file = root / path
    if not file.is_file():
        return None
    tokens = without_tests(tokenize(file.read_text()))
    for i in range(len(tokens) - 2):
        if tokens[i].text == "impl" and tokens[i + 1].text == type_name and tokens[i + 2].text == "{":
            end = matching(tokens, i + 2)
            for fn_name, _, (start, stop) in functions_of(tokens[i:end]):
                if fn_name == method:
                    body = tokens[i:end][start:stop]
                    return {body[k + 1].text for k in range(len(body) - 1) if body[k].text == "=>" and body[k + 1].kind == "str"}
    return None


# ----------------------------------------------------------- the template

def substitute(value, resources, parameters, problems, where):
    """The DashboardBody as CloudFormation would deploy it, with markers."""
    if isinstance(value, str):
        text, variables = value, {}
    elif isinstance(value, dict) and list(value) == ["Fn::Sub"]:
        inner = value["Fn::Sub"]
        text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
    else:
        problems.append(f"{where}: DashboardBody must be a string or a !Sub of one")
        return None

    def replace(m):
        name = m.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            return f"<var:{name}>"
        if name == "AWS::Region":
            return REGION
        if name.startswith("AWS::"):
            return f"<{name}>"
        base, _, attribute = name.partition(".")
        if base in resources:
            return f"<getatt:{base}.{attribute}>" if attribute else f"<ref:{base}>"
        if base in parameters and not attribute:
            return f"<param:{base}>"
        problems.append(f"{where}: ${{{name}}} names nothing in the template")
        return f"<unknown:{name}>"

    return re.sub(r"\$\{([^}]*)\}", replace, text)


def check_widgets(widgets, where, problems):
    boxes = []
    for n, widget in enumerate(widgets):
        at = f"{where}.widgets[{n}]"
        if not isinstance(widget, dict):
            problems.append(f"{at}: not an object")
            continue
        if widget.get("type") not in WIDGET_TYPES:
            problems.append(f"{at}: type {widget.get('type')!r} is not a dashboard widget type")
        geometry = {k: widget.get(k) for k in ("x", "y", "width", "height")}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in geometry.values()):
            problems.append(f"{at}: x, y, width and height must be integers, got {geometry}")
            continue
        if geometry["x"] < 0 or geometry["y"] < 0 or geometry["width"] < 1 or geometry["height"] < 1 or geometry["x"] + geometry["width"] > GRID_WIDTH:
            problems.append(f"{at}: {geometry} is outside the {GRID_WIDTH}-column grid")
        if not isinstance(widget.get("properties"), dict):
            problems.append(f"{at}: no properties")
        for other, box in boxes:
            if geometry["x"] < box["x"] + box["width"] and box["x"] < geometry["x"] + geometry["width"] and geometry["y"] < box["y"] + box["height"] and box["y"] < geometry["y"] + geometry["height"]:
                problems.append(f"{at}: overlaps {other}")
        boxes.append((at, geometry))


def metric_rows(properties, at, problems):
    """(where, namespace, name, {dimension: value}) of a metric widget's rows."""
    rows = properties.get("metrics")
    if not isinstance(rows, list) or not rows:
        problems.append(f"{at}: metrics must be a non-empty list")
        return []
    found, previous = [], []
    for n, row in enumerate(rows):
        here = f"{at}.metrics[{n}]"
        if not isinstance(row, list) or not row:
            problems.append(f"{here}: a metrics row is a non-empty list")
            continue
        options = row[-1] if isinstance(row[-1], dict) else {}
        fields = row[:-1] if isinstance(row[-1], dict) else row
        unknown = set(options) - OPTIONS - {"expression"}
        if unknown:
            problems.append(f"{here}: unknown rendering options {sorted(unknown)}")
        if options.get("yAxis") not in (None, "left", "right"):
            problems.append(f"{here}: yAxis must be left or right")
        if "stat" in options and not STATS.match(str(options["stat"])):
            problems.append(f"{here}: stat {options['stat']!r} is not a CloudWatch statistic")
        if "expression" in options:
            if fields:
                problems.append(f"{here}: an expression row has no metric fields")
            if "SEARCH" in str(options["expression"]).upper():
                problems.append(f"{here}: SEARCH expressions are not checked by this lint; chart each metric")
            continue
        if not all(isinstance(f, str) for f in fields):
            problems.append(f"{here}: namespace, name, dimensions and values must be strings")
            continue
        fields = [previous[k] if f == "." and k < len(previous) else f for k, f in enumerate(fields)]
        previous = fields
        if len(fields) < 2 or len(fields) % 2:
            problems.append(f"{here}: expected [namespace, metric, (dimension, value)...], got {fields}")
            continue
        dims = dict(zip(fields[2::2], fields[3::2]))
        if len(dims) != (len(fields) - 2) // 2:
            problems.append(f"{here}: a dimension is named twice")
        found.append((here, fields[0], fields[1], dims))
    return found


def check(template_path, root=ROOT):
    from cfnlint.decode import decode

    template, matches = decode(str(template_path))
    if matches:
        return [f"{template_path}: cannot parse: {m}" for m in matches], 0
    problems = []
    resources = template.get("Resources", {})
    parameters = template.get("Parameters", {})
    namespace = (template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}).get("METRICS_NAMESPACE"))
    if not isinstance(namespace, str):
        problems.append("Globals.Function.Environment.Variables.METRICS_NAMESPACE must be a plain string")
    functions = {name for name, r in resources.items() if r.get("Type") in FUNCTION_TYPES}
    queues = {name for name, r in resources.items() if r.get("Type") == "AWS::SQS::Queue"}
    dashboards = [name for name, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    if not dashboards:
        problems.append("the template has no AWS::CloudWatch::Dashboard")

    catalogue, scan_problems = emitted(root / "functions")
    problems += scan_problems
    values = {}
    for key, sources in VALUE_SOURCES.items():
        found = set()
        for path, type_name, method in sources:
            literal = codes(root, path, type_name, method)
            if not literal:
                problems.append(f"{path}: no {type_name}::{method} returning codes (update VALUE_SOURCES in {pathlib.Path(__file__).name})")
            else:
                found |= literal
        values[key] = found
    for function, metric, dimension in PENDING:
        if any(function in f and metric in n and dimension in d for f, n, d, _ in catalogue):
            problems.append(f"{metric} by [Function, {dimension}] of {function} is emitted now: remove it from PENDING in {pathlib.Path(__file__).name}")

    checked = 0
    for name in dashboards:
        where = f"Resources.{name}"
        title = resources[name].get("Properties", {}).get("DashboardName")
        if title is not None:
            # The stack's name is [A-Za-z][-A-Za-z0-9]*, up to 128 characters.
            named = substitute(title, resources, parameters, problems, where)
            named = (named or "").replace("<AWS::StackName>", "s" * 128)
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", named):
                problems.append(f"{where}: DashboardName must be 1 to 255 of A-Z, a-z, 0-9, - and _ (with the longest stack name), got {title!r}")
        body = substitute(resources[name].get("Properties", {}).get("DashboardBody"), resources, parameters, problems, where)
        if body is None:
            continue
        try:
            document = json.loads(body)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: DashboardBody is not JSON: {e}")
            continue
        widgets = document.get("widgets") if isinstance(document, dict) else None
        if not isinstance(widgets, list) or not widgets:
            problems.append(f"{where}: DashboardBody has no widgets")
            continue
        check_widgets(widgets, where, problems)
        charted = {}
        lambda_charted, sqs_charted = set(), set()
        for n, widget in enumerate(widgets):
            at = f"{where}.widgets[{n}]"
            properties = widget.get("properties") if isinstance(widget, dict) else None
            if not isinstance(properties, dict):
                continue
            if widget.get("type") == "text":
                if not isinstance(properties.get("markdown"), str):
                    problems.append(f"{at}: a text widget needs markdown")
                continue
            if widget.get("type") != "metric":
                continue
            if properties.get("region") != REGION:
                problems.append(f"{at}: region must be the stack's (${{AWS::Region}}), got {properties.get('region')!r}")
            if properties.get("view", "timeSeries") not in VIEWS:
                problems.append(f"{at}: view {properties.get('view')!r} is not a metric widget view")
            if "stat" in properties and not STATS.match(str(properties["stat"])):
                problems.append(f"{at}: stat {properties['stat']!r} is not a CloudWatch statistic")
            period = properties.get("period", 300)
            if not isinstance(period, int) or period < 1 or (period >= 60 and period % 60) or (period < 60 and period not in (1, 5, 10, 30)):
                problems.append(f"{at}: period {period!r} is not a CloudWatch period")
            if not isinstance(properties.get("title"), str) or not properties["title"]:
                problems.append(f"{at}: a metric widget needs a title")
            for here, ns, metric, dims in metric_rows(properties, at, problems):
                checked += 1
                if ns == namespace:
                    problems += custom_metric(here, metric, dims, catalogue, values, charted)
                elif ns == "AWS/Lambda":
                    value = dims.get("FunctionName", "")
                    target = re.fullmatch(r"<ref:(\w+)>", value)
                    if metric not in LAMBDA_METRICS:
                        problems.append(f"{here}: AWS/Lambda has no metric {metric}")
                    if set(dims) != {"FunctionName"} or not target or target.group(1) not in functions:
                        problems.append(f"{here}: an AWS/Lambda metric is charted by FunctionName = ${{<a function of the template>}}, got {dims}")
                    elif metric == "Throttles":
                        lambda_charted.add(target.group(1))
                elif ns == "AWS/SQS":
                    value = dims.get("QueueName", "")
                    target = re.fullmatch(r"<getatt:(\w+)\.QueueName>", value)
                    if metric not in SQS_METRICS:
                        problems.append(f"{here}: AWS/SQS has no metric {metric}")
                    if set(dims) != {"QueueName"} or not target or target.group(1) not in queues:
                        problems.append(f"{here}: an AWS/SQS metric is charted by QueueName = ${{<a queue of the template>.QueueName}}, got {dims}")
                    elif metric == "ApproximateNumberOfMessagesVisible":
                        sqs_charted.add(target.group(1))
                else:
                    problems.append(f"{here}: namespace {ns!r} is neither the functions' ({namespace}) nor AWS/Lambda or AWS/SQS")
        for queue in sorted(queues - sqs_charted):
            problems.append(f"{where}: queue {queue} has no ApproximateNumberOfMessagesVisible row (queue and DLQ depth)")
        for function in sorted(functions - lambda_charted):
            problems.append(f"{where}: function {function} has no AWS/Lambda Throttles row")
        for function, metric, dimension in COMPLETE:
            shown = charted.get((function, metric, dimension))
            expected = values.get((function, dimension), set())
            if shown is None:
                problems.append(f"{where}: {metric} of {function} is not charted by {dimension}")
            elif shown != expected:
                missing, extra = sorted(expected - shown), sorted(shown - expected)
                problems.append(f"{where}: {metric} of {function} by {dimension} must chart every code: missing {missing}, unknown {extra}")
    return problems, checked


def custom_metric(here, metric, dims, catalogue, values, charted):
    problems = []
    function = dims.get("Function")
    extra = sorted(set(dims) - {"Function"})
    if function is None or len(extra) > 1:
        return [f"{here}: the functions emit their metrics by [Function] and [Function, <one dimension>], got {sorted(dims)}"]
    dimension = extra[0] if extra else None
    emitted_by = [w for f, n, d, w in catalogue if function in f and metric in n and (dimension is None or dimension in d)]
    pending = (function, metric, dimension) in PENDING
    if not emitted_by and not pending:
        known = sorted({m for f, n, _, _ in catalogue if function in f for m in n})
        problems.append(f"{here}: no function emits {metric} by {['Function'] + extra} with Function = {function}" + (f" (it emits {known})" if known else " (no function has that Function dimension)"))
    if dimension is not None:
        allowed = values.get((function, dimension))
        if allowed is None:
            problems.append(f"{here}: the values of {dimension} of {function} are not known to this lint (add them to VALUE_SOURCES)")
        elif dims[dimension] not in allowed:
            problems.append(f"{here}: {dimension} = {dims[dimension]} is not a code of {function}'s {dimension}")
        charted.setdefault((function, metric, dimension), set()).add(dims[dimension])
    return problems


def main(path, root=ROOT):
    problems, checked = check(path, root)
    for problem in problems:
        print(problem)
    print(f"check-dashboard: {checked} metrics checked, {len(problems)} problem(s)")
    return 1 if problems else 0


# ----------------------------------------------------------- self-test

# A function added later (another crate, its own Function value through a
# const and a parameter): its metrics are read from its source.
NEW_FUNCTION = """
//! Audit metrics. ("NotAMetric", 1.0, "Count") in a comment is no metric.
use serde_json::Value;
const FUNCTION: &str = "fleet-auditor";
pub fn check_metric(namespace: &str, check: &str, findings: u32, ts: i64) -> Value {
    line(namespace, FUNCTION, check, findings, ts)
}
fn line(namespace: &str, function: &str, check: &str, findings: u32, ts: i64) -> Value {
    onboarding_lambda::emf(namespace, function, &[("AuditFindings", f64::from(findings), "Count")], &[("Check", check)], ts)
}
pub fn run_metrics(namespace: &str, scanned: u32, ts: i64) -> Value {
    let metrics = vec![("AuditScanned", f64::from(scanned), "Count")];
    onboarding_lambda::emf(namespace, FUNCTION, &metrics, &[], ts)
}
#[cfg(test)]
mod tests {
    fn t() { onboarding_lambda::emf("ns", "test-only", &[("TestOnly", 1.0, "Count")], &[], 0); }
}
"""


def self_test():
    """The mistakes the check exists for must be reported, and the real
    template with a broken body must fail while the real one passes."""
    import contextlib
    import io
    import shutil
    import tempfile

    ok = True

    def expect(label, condition, output=""):
        nonlocal ok
        if not condition:
            ok = False
            print(f"check-dashboard self-test: {label}: FAILED\n{output}")

    # The catalogue of the real functions.
    catalogue, scan_problems = emitted(ROOT / "functions")
    expect("the real functions scan cleanly", not scan_problems, "\n".join(scan_problems))
    index = {(f, m, d) for fs, ns, ds, _ in catalogue for f in fs for m in ns for d in ds | {None}}
    for wanted in [("jitr-registrar", "Rejected", "Reason"), ("jitr-registrar", "Redelivered", None),
                   ("jitr-registrar", "Failed", "ErrorKind"), ("provisioning-hook", "ProvisioningRefused", "Reason"),
                   ("rotation", "RotationStarted", None), ("rotation", "RotationFailed", "Reason"),
                   ("rotation", "CsrIssued", None), ("fleet-reconciler", "CaDaysToExpiry", "CaCertificateId")]:
        expect(f"catalogue has {wanted}", wanted in index, sorted(index, key=str))
    expect("no test-only metric", not any(m == "TestOnly" or f == "f" for f, m, _ in index), sorted(index, key=str))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        shutil.copytree(ROOT / "functions", tmp / "functions", ignore=shutil.ignore_patterns("target"))
        shutil.copytree(ROOT / "shared" / "domain" / "src", tmp / "shared" / "domain" / "src")
        (tmp / "functions" / "fleet-auditor" / "src").mkdir(parents=True, exist_ok=True)
        (tmp / "functions" / "fleet-auditor" / "src" / "metrics.rs").write_text(NEW_FUNCTION)
        catalogue, scan_problems = emitted(tmp / "functions")
        index = {(f, m, d) for fs, ns, ds, _ in catalogue for f in fs for m in ns for d in ds | {None}}
        expect("a new function's metrics are read", {("fleet-auditor", "AuditFindings", "Check"), ("fleet-auditor", "AuditScanned", None)} <= index and not scan_problems, f"{sorted(index, key=str)} {scan_problems}")
        expect("comments and tests are not metrics", not any(m in ("NotAMetric", "TestOnly") for _, m, _ in index), sorted(index, key=str))
        (tmp / "functions" / "hidden" / "src").mkdir(parents=True)
        (tmp / "functions" / "hidden" / "src" / "lib.rs").write_text("use onboarding_lambda::{emf, emit};\n")
        _, scan_problems = emitted(tmp / "functions")
        expect("an imported emf is refused", any("by its path, not imported" in p for p in scan_problems), "\n".join(scan_problems))
        shutil.rmtree(tmp / "functions" / "hidden")
        if PENDING:
            problems, _ = check(ROOT / "infra" / "template.yaml", tmp)
            expect("a pending metric now emitted must leave PENDING", any("remove it from PENDING" in p for p in problems), "\n".join(problems))

        # The real template, broken in the ways the lint is for.
        text = (ROOT / "infra" / "template.yaml").read_text()
        breaks = [
            ('"Provisioned", "Function", "jitr-registrar"', '"Provisoned", "Function", "jitr-registrar"', "no function emits Provisoned"),
            ('"Reason", "CA_NOT_ACTIVE"', '"Reasons", "CA_NOT_ACTIVE"', "no function emits Rejected by ['Function', 'Reasons']"),
            ('"Reason", "WEAK_KEY"', '"Reason", "WEAK_KEYS"', "Reason = WEAK_KEYS is not a code"),
            ('"Function", "jitr-registrar", {"label": "Duplicate events"}', '"Function", "jitr-registar", {"label": "Duplicate events"}', "no function has that Function dimension"),
            ('["IotOnboarding", "AuditFindings", "Function", "fleet-auditor", "Check", "CERT_SHARED", {"label": "CERT_SHARED"}],', "", "missing ['CERT_SHARED']"),
            ("${RotationEventsDeadLetterQueue.QueueName}", "rotation-dlq", "RotationEventsDeadLetterQueue has no ApproximateNumberOfMessagesVisible"),
            ("${IssuerFunction}", "${IssuerFailureQueue}", "is charted by FunctionName"),
            ("${CompleterFunction}", "${NoSuchFunction}", "${NoSuchFunction} names nothing"),
            ('"x": 12, "y": 0,', '"x": 8, "y": 0,', "overlaps"),
            ('"x": 0, "y": 32, "width": 24', '"x": 1, "y": 32, "width": 24', "outside the 24-column grid"),
            ('"width": 12, "height": 6, "properties": {"title": "Retries"', '"width": 12, "properties": {"title": "Retries"', "x, y, width and height must be integers"),
            ('"region": "${AWS::Region}", "stat": "Sum", "period": 300, "metrics": [', '"region": "eu-west-1", "stat": "Sum", "period": 300, "metrics": [', "region must be the stack's"),
            ('"stat": "Maximum", "period": 60', '"stat": "Maximal", "period": 60', "is not a CloudWatch statistic"),
            ('["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", "${RegistrationQueue.QueueName}"', '["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName"', "expected [namespace, metric"),
            ('{"widgets": [', '{"widgets": [,', "is not JSON"),
            ('DashboardName: !Sub "${AWS::StackName}-onboarding"', 'DashboardName: !Sub "${AWS::StackName} onboarding"', "DashboardName must be"),
        ]
        for old, new, message in breaks:
            if old not in text:
                expect(f"the template still holds {old!r}", False)
                continue
            broken = tmp / "template.yaml"
            broken.write_text(text.replace(old, new, 1))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(broken, ROOT)
            expect(f"{old!r} -> {new!r} is reported ({message})", code == 1 and message in out.getvalue(), out.getvalue())
    print(f"check-dashboard self-test: {'passed' if ok else 'FAILED'}")
    return ok


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        args = args[1:]
        if not self_test():
            sys.exit(1)
    sys.exit(main(pathlib.Path(args[0] if args else "infra/template.yaml")))
