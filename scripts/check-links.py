#!/usr/bin/env python3
"""Checks the relative links of the project's Markdown files.

Every link `[text](target)` (and every reference definition `[name]: target`)
outside code whose target is not a URL must name a file or folder that exists,
relative to the Markdown file; a `#fragment` must name a heading of the target
Markdown file (or of the file itself, for `#fragment` alone), as GitHub makes
anchors of headings: lowercased, punctuation dropped, spaces made hyphens, a
repeated heading suffixed `-1`, `-2`...

With --code-paths it also checks that every path in backticks that starts with
one of the workspace's top-level folders (`shared/domain/src/checks/`,
`cli/tests/rotation.rs`...) exists: the documentation names code by path.

Usage: python3 scripts/check-links.py [--code-paths] [FILE.md ...]
Without files: README.md, ARCHITECTURE.md and docs/**/*.md at the root of the
repository. Exit 1 with one line per problem; 0 when every link resolves.
Python 3 standard library only.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP_FOLDERS = ("shared/", "functions/", "cli/", "tests/", "bench/", "scripts/", "infra/", "events/", ".ci/", "docs/")

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def lines_outside_fences(text):
    """(line number, line) for every line outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.split("\n"), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading):
    """The anchor GitHub gives a heading (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # punctuation, `, *, ', ( ) ...
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen = {}
        found = set()
        text = path.read_text(encoding="utf-8")
        for _, line in lines_outside_fences(text):
            for name in HTML_ANCHOR.findall(line):
                found.add(name)
            match = HEADING.match(line)
            if not match:
                continue
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        cache[path] = found
    return cache[path]


def is_external(target):
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None  # http:, https:, mailto:...


def check_file(path, code_paths):
    problems = []
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT)
    for number, line in lines_outside_fences(text):
        spans = [m.group(2) for m in CODE_SPAN.finditer(line)]
        bare = CODE_SPAN.sub("", line)
        targets = INLINE_LINK.findall(bare)
        definition = REFERENCE_DEF.match(bare)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            if not target or is_external(target):
                continue
            file_part, _, fragment = target.partition("#")
            destination = path if not file_part else (path.parent / file_part).resolve()
            if not destination.exists():
                problems.append(f"{where}:{number}: {target}: no such file")
                continue
            if fragment and destination.suffix == ".md" and destination.is_file():
                if fragment not in anchors(destination):
                    problems.append(f"{where}:{number}: {target}: no heading with anchor #{fragment}")
        if code_paths:
            for span in spans:
                candidate = span.strip().rstrip(",.;:")
                if candidate.startswith(TOP_FOLDERS) and re.fullmatch(r"[\w./{}*-]+", candidate):
                    if any(c in candidate for c in "{}*<>"):
                        continue  # a pattern, not a path
                    if not (ROOT / candidate).exists():
                        problems.append(f"{where}:{number}: `{candidate}`: no such path in the repository")
    return problems


def main(argv):
    code_paths = "--code-paths" in argv
    names = [a for a in argv if a != "--code-paths"]
    if names:
        files = [pathlib.Path(n).resolve() for n in names]
    else:
        files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("**/*.md"))]
        files = [f for f in files if f.exists()]
    problems = []
    links = 0
    for path in files:
        problems += check_file(path, code_paths)
        links += sum(len(INLINE_LINK.findall(CODE_SPAN.sub("", l))) for _, l in lines_outside_fences(path.read_text(encoding="utf-8")))
    for problem in problems:
        print(problem)
    print(f"{len(files)} files, {links} links, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
