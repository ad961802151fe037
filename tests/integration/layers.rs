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

/// `crate::a::b` and `use crate::{a, b::c}` → the first segments.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let grouped = rest.starts_with('{');
        let body: &str = if grouped {
            &rest[1..rest.find('}').unwrap_or(rest.len())]
        } else {
            rest
        };
        let heads: Vec<&str> = if grouped {
            body.split(',').collect()
        } else {
            vec![body]
        };
        for head in heads {
            let name: String = head
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
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
        for target in crate_paths(&code) {
            if target == own {
                continue;
            }
            // Macros exported at the crate root by `report` (`out!`, `outln!`).
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
    assert_eq!(code_of("a // crate::x\n\"http://y\""), "a \n\"http://y\"");
}
