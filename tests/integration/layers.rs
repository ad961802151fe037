//! The layer rule of docs/ARCHITECTURE.md ("The layers: one way down"), checked against the
//! code: every `crate::<module>` path in `src/` names a module on a lower layer than the file's
//! own. The table is read from the document, so the picture and the code cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `module -> layer`, from the table's rows (`| 7 | `cmd` | … |`).
fn layers() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("## The layers: one way down")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a section \"The layers: one way down\"");
    let mut layers = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        for module in cells[2].split(',') {
            let module = module.trim().trim_matches('`');
            assert!(
                layers.insert(module.to_string(), layer).is_none(),
                "{module} is on two rows"
            );
        }
    }
    assert!(layers.len() > 10, "the table was not read: {layers:?}");
    layers
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (doc links may point anywhere).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The code with no whitespace around `::` (`crate ::x`, `crate::\n x`).
fn joined(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            let mut run = String::from(c);
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                run.push(chars.next().unwrap());
            }
            let before_colons = chars.peek() == Some(&':');
            let after_colons = out.ends_with("::");
            if !before_colons && !after_colons {
                out.push_str(&run);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The top-level names of a `{…}` group starting at `body` (after the `{`), nested groups
/// skipped: `{config::{Color}, cmd}` → `config`, `cmd`.
fn group_heads(body: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            _ if start && depth == 0 && !c.is_whitespace() => {
                start = false;
                heads.push(word(&body[i..]));
            }
            _ => {}
        }
    }
    heads
}

fn word(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules a file's code names: `crate::a`, `use crate::{a, b::c}`, and
/// `super::…` chains that reach the crate root from a file `depth` modules down (`src/x.rs`
/// and `src/x/mod.rs` are 1, `src/x/y.rs` is 2), above its `#[cfg(test)]` module. `Err` for a shape the rule cannot check: a
/// renamed crate root (`use crate as …`) or a `#[path]` module.
fn crate_paths_at(code: &str, depth: usize) -> Result<Vec<String>, String> {
    let code = joined(code);
    for refused in ["crate as ", "#[path"] {
        if code.contains(refused) {
            return Err(format!("`{refused}` hides which module is imported"));
        }
    }
    let mut found = Vec::new();
    let mut roots = vec!["crate::".to_string()];
    roots.push("super::".repeat(depth));
    for root in roots {
        // Inside a file's inline `mod tests`, `super::` is the file's own module: chains of
        // `super` are read only above it (`crate::` is read everywhere).
        let mut rest = match root.as_str() {
            "crate::" => code.as_str(),
            _ => code.split("#[cfg(test)]").next().unwrap_or_default(),
        };
        while let Some(i) = rest.find(&root) {
            // `super::super::x` also contains `super::x`: only the full chain counts.
            let whole = root == "crate::" || !rest[..i].ends_with("super::");
            rest = &rest[i + root.len()..];
            if !whole {
                continue;
            }
            match rest.strip_prefix('{') {
                Some(body) => found.extend(group_heads(body)),
                None => found.push(word(rest)),
            }
        }
    }
    found.retain(|name| !name.is_empty() && name != "super");
    Ok(found)
}

/// [`crate_paths_at`] for a file at the crate's top level.
fn crate_paths(code: &str) -> Vec<String> {
    crate_paths_at(code, 1).unwrap()
}

#[test]
fn every_import_runs_down_the_layer_table() {
    let layers = layers();
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut climbs = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let own = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let own_layer = *layers
            .get(&own)
            .unwrap_or_else(|| panic!("src/{own} has no row in the layer table"));
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        // How many modules down the file is: `src/x.rs`, `src/x/mod.rs` 1, `src/x/y.rs` 2.
        let depth =
            rel.components().count() - usize::from(rel.file_name().is_some_and(|n| n == "mod.rs"));
        let paths = crate_paths_at(&code, depth)
            .unwrap_or_else(|why| panic!("src/{}: {why}", rel.display()));
        for target in paths {
            if target == own {
                continue;
            }
            let Some(&layer) = layers.get(&target) else {
                panic!(
                    "src/{}: `crate::{target}` is not in the layer table",
                    rel.display()
                );
            };
            checked += 1;
            if layer >= own_layer {
                climbs.push(format!(
                    "src/{} (layer {own_layer}) -> crate::{target} (layer {layer})",
                    rel.display()
                ));
            }
        }
    }
    assert!(checked > 100, "only {checked} imports were read");
    assert!(
        climbs.is_empty(),
        "imports that do not run down the table:\n{}",
        climbs.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_paths() {
    assert_eq!(
        crate_paths("use crate::{config::X, state};\nlet a = crate::render::f();"),
        ["config", "state", "render"]
    );
    // The shapes a first version missed (found by a hostile review).
    assert_eq!(
        crate_paths("use crate::{config::{Color}, cmd};"),
        ["config", "cmd"]
    );
    assert_eq!(crate_paths("let x = crate ::cmd::run;"), ["cmd"]);
    assert_eq!(crate_paths("let x = crate::\n    cmd::run;"), ["cmd"]);
    assert_eq!(
        crate_paths("use super::cmd;"),
        ["cmd"],
        "super from a top-level file"
    );
    assert_eq!(
        crate_paths_at("use super::super::cmd;", 2).unwrap(),
        ["cmd"]
    );
    assert!(
        crate_paths_at("use super::step::Step;", 2)
            .unwrap()
            .is_empty(),
        "a sibling"
    );
    assert!(crate_paths_at("use crate as root; root::cmd::x();", 1).is_err());
    assert!(crate_paths_at("#[path = \"../cmd/mod.rs\"] mod sneaky;", 1).is_err());
    assert_eq!(code_of("a // crate::x\n\"http://y\""), "a \n\"http://y\"");
}
