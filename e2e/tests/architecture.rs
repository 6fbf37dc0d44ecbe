//! The invariants of ARCHITECTURE.md that a build does not check by itself: what the operator links, how large a
//! crate may grow, and that no crate's modules import each other in a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every workspace crate with its `src/` directory (members of the root manifest).
fn crates() -> Vec<(String, PathBuf)> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("root Cargo.toml");
    let start = manifest.find("members = [").expect("workspace members");
    let list = &manifest[start..start + manifest[start..].find(']').expect("end of members")];
    let members: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 10, "{members:?}");
    members.iter().map(|m| (m.to_string(), root().join(m).join("src"))).filter(|(_, src)| src.is_dir()).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_operator_links_no_storage_engine_or_dataset_tooling() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["tree", "-p", "skein-operator", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains("skein-config") && crates.contains("kube"), "not the operator's tree: {crates:?}");
    let linked: Vec<&&str> =
        ["fjall", "lsm-tree", "csv", "indicatif", "plotters"].iter().filter(|c| crates.contains(**c)).collect();
    assert!(linked.is_empty(), "skein-operator links {linked:?}");
}

#[test]
fn no_crate_source_exceeds_8000_lines() {
    let mut sizes = BTreeMap::new();
    for (name, src) in crates() {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let lines: usize =
            files.iter().map(|f| std::fs::read_to_string(f).expect("readable source").lines().count()).sum();
        sizes.insert(name, lines);
    }
    let too_large: Vec<_> = sizes.iter().filter(|(_, lines)| **lines > 8000).collect();
    assert!(too_large.is_empty(), "crates over 8,000 lines of src/: {too_large:?} (all: {sizes:?})");
}

/// The top-level module a source file belongs to (`src/foo.rs` and `src/foo/**` are `foo`); `None` for the crate
/// root and binaries.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
}

/// The top-level modules `text` names through `crate::…` (or `super::…` in a file directly under `src/`), outside
/// comments (an intra-doc link is not an import).
fn referenced(text: &str, top_level_file: bool, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let text = code.as_str();
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if top_level_file {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (i, _) in text.match_indices(prefix) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + prefix.len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `crate::{a, b::c}`: the first segment of each item.
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(',')
                    .filter_map(|item| item.trim().split("::").next())
                    .collect(),
                None => rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).take(1).collect(),
            };
            out.extend(names.into_iter().filter(|n| modules.contains(*n)).map(str::to_string));
        }
    }
    out
}

/// A cycle in `graph`, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn cycle_finder_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c")])), None);
    let cycle = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    let modules: BTreeSet<String> = ["wal", "assembly"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::{assembly::Batch, metrics};\nuse super::wal::Wal;\nlet x = my_crate::wal;\n/// [`crate::x`]";
    assert_eq!(referenced(text, true, &modules), modules);
    assert!(referenced(text, false, &modules).contains("assembly"));
    assert!(!referenced(text, false, &modules).contains("wal"));
    let modules: BTreeSet<String> = ["x".to_string()].into();
    assert!(referenced(text, true, &modules).is_empty(), "a doc link is not an import");
}

/// Modules the crate root declares under `#[cfg(test)]` (test fixtures shared by several modules' tests).
fn test_only_modules(src: &Path) -> BTreeSet<String> {
    let root = ["lib.rs", "main.rs"].iter().find_map(|f| std::fs::read_to_string(src.join(f)).ok()).unwrap_or_default();
    let lines: Vec<&str> = root.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| w[1].trim_start_matches("pub ").strip_prefix("mod ")?.strip_suffix(';').map(str::to_string))
        .collect()
}

/// Production code only: test files (`tests.rs`, `*_tests.rs`) and test-only modules may import anything.
#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    for (name, src) in crates() {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let test_only = test_only_modules(&src);
        let modules: BTreeSet<String> =
            files.iter().filter_map(|f| top_module(&src, f)).filter(|m| !test_only.contains(m)).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(module) = top_module(&src, file).filter(|m| modules.contains(m)) else { continue };
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem == "tests" || stem.ends_with("_tests") {
                continue;
            }
            let text = std::fs::read_to_string(file).expect("readable source");
            let top_level_file = file.parent() == Some(src.as_path());
            let mut uses = referenced(&text, top_level_file, &modules);
            uses.remove(&module);
            graph.entry(module).or_default().extend(uses);
        }
        assert_eq!(find_cycle(&graph), None, "{name}: modules import each other in a cycle; graph: {graph:?}");
    }
}
