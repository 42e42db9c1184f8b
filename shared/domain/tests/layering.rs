//! The domain's layers depend one way only:
//!
//! `model` → `policy` → `checks` → `ports` → `workflows`
//!
//! A module may import (`crate::<layer>::…`) from its own layer or an earlier
//! one, never a later one. `testing` (the in-memory fakes) comes last and may
//! be imported only by test code. Every top-level module declared in `lib.rs`
//! must be given a layer here, and code inside the crate must not go through
//! the root re-exports (`crate::Certificate`), which would hide the edge.
//!
//! A plain check over the sources: test code is a file named `tests.rs` or
//! whatever follows the first `#[cfg(test)]` in a file.

use std::path::{Path, PathBuf};

/// The layers, in dependency order.
const LAYERS: &[&str] = &["model", "policy", "checks", "ports", "workflows", "testing"];
/// The layer only test code may import.
const TEST_ONLY: &str = "testing";

fn layer(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == name)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (doc comments included). Good enough
/// for this code base: no `//` inside the string literals of `use` lines.
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The first path segment after each `crate::` in `text`, expanding
/// `crate::{a::…, b::…}` groups.
fn crate_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        // `onboarding_crate::` or `some_crate::` are not `crate::`.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                if depth >= 1 {
                    item.push(c);
                }
            }
            items.push(item);
            for item in items {
                let first: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !first.is_empty() {
                    out.push(first);
                }
            }
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

/// Every violation in the sources under `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();

    // Every top-level module has a layer.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_else(|e| panic!("lib.rs: {e}"));
    for line in lib.lines().map(code) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "mod") {
            let name = words.get(i + 1).map(|n| n.trim_end_matches(';')).unwrap_or_default();
            if layer(name).is_none() {
                found.push(format!(
                    "lib.rs: module `{name}` is not assigned a layer (add it to LAYERS)"
                ));
            }
        }
    }

    let mut files = Vec::new();
    rust_files(src, &mut files);
    for file in files {
        let relative = file.strip_prefix(src).unwrap_or(&file);
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" {
            continue; // the root re-exports every layer
        }
        let Some(own) = layer(&top) else {
            found.push(format!(
                "{}: top-level module `{top}` is not assigned a layer",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut is_test = file.file_name().is_some_and(|n| n == "tests.rs");
        // A `use` may span lines: check statement by statement, keeping line numbers.
        let mut statement = String::new();
        let mut start = 0;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                is_test = true;
            }
            if statement.is_empty() {
                start = n + 1;
            }
            statement.push_str(code(line));
            statement.push('\n');
            let open = statement.matches('{').count() > statement.matches('}').count();
            if open && statement.trim_start().starts_with("use ") {
                continue;
            }
            for target in crate_targets(&statement) {
                let at = format!("{}:{start}", relative.display());
                match layer(&target) {
                    None => found.push(format!(
                        "{at}: `crate::{target}` is not a layer (import from the module that defines it)"
                    )),
                    Some(_) if target == TEST_ONLY && !is_test && own != layer(TEST_ONLY).unwrap_or_default() => {
                        found.push(format!("{at}: `{top}` imports `crate::{target}` outside test code"))
                    }
                    Some(t) if t > own && !(target == TEST_ONLY && is_test) => found.push(format!(
                        "{at}: `{top}` imports `crate::{target}`, a later layer ({})",
                        LAYERS.join(" → ")
                    )),
                    Some(_) => {}
                }
            }
            statement.clear();
        }
    }
    found
}

#[test]
fn layers_depend_one_way_only() {
    let found = violations(&src());
    assert!(found.is_empty(), "layering violations:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_every_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for layer in LAYERS {
        assert!(
            files
                .iter()
                .any(|f| f.strip_prefix(src()).is_ok_and(|r| r.starts_with(layer))),
            "no sources under src/{layer}: the check would pass vacuously"
        );
    }
}

#[test]
fn crate_paths_are_parsed() {
    assert_eq!(crate_targets("use crate::model::plan::Approval;"), ["model"]);
    assert_eq!(
        crate_targets("use crate::{model::x::A, ports::{B, C}};"),
        ["model", "ports"]
    );
    assert_eq!(crate_targets("fn f() -> crate::ports::PortResult<()>"), ["ports"]);
    assert!(crate_targets("use onboarding_crate::x;").is_empty());
}

#[test]
fn a_back_edge_is_caught() {
    let dir = std::env::temp_dir().join(format!("domain-layering-{}", std::process::id()));
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&dir)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    };
    write("lib.rs", "mod model;\nmod ports;\nmod extra;\n");
    write("model/mod.rs", "use crate::ports::PortResult;\n");
    write("ports/mod.rs", "use crate::model::Thing;\nuse crate::Thing;\n");
    write(
        "workflows/x.rs",
        "use crate::testing::Fake;\n#[cfg(test)]\nmod tests { use crate::testing::Fake; }\n",
    );
    let found = violations(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let has = |needle: &str| found.iter().any(|v| v.contains(needle));
    assert!(has("model/mod.rs:1: `model` imports `crate::ports`"), "{found:#?}");
    assert!(has("module `extra` is not assigned a layer"), "{found:#?}");
    assert!(has("`crate::Thing` is not a layer"), "{found:#?}");
    assert!(
        has("workflows/x.rs:1: `workflows` imports `crate::testing` outside test code"),
        "{found:#?}"
    );
    assert_eq!(found.len(), 4, "{found:#?}");
}
