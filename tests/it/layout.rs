//! The shape of the source tree, checked: files stay small, top-level modules depend
//! on each other one way only, and the repository stands on its own documents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut paths = Vec::new();
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut paths);
    paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn no_source_file_is_over_500_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > 500)
        .map(|(p, text)| format!("{} ({} lines)", p.display(), text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

/// `crate::<module>` paths per top-level module (a module's own tests included).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources() {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "main" || module == "lib" {
            continue;
        }
        let uses = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                uses.insert(name);
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_form_no_import_cycle() {
    let graph = module_graph();
    // Depth-first search for a back edge; the path found is reported.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let mut path = Vec::new();
        // `done` is per start: a node finished from another start may still close a
        // cycle through this one.
        done.clear();
        if let Some(cycle) = visit(node, &graph, &mut path, &mut done) {
            panic!("import cycle: {}\n{graph:#?}", cycle.join(" → "));
        }
    }
    assert!(graph["agent"].contains("upstream") && !graph["upstream"].contains("agent"), "{graph:#?}");
}

#[test]
fn the_repository_cites_no_outside_document() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    for dir in ["src", "tests", "bench", "config", "docs"] {
        files(&root.join(dir), &mut paths);
    }
    paths.extend(["README.md", "CONFIG.md", "ARCHITECTURE.md", "Cargo.toml"].map(|f| root.join(f)));
    let needle = ["SPEC", " §"].concat();
    let citing: Vec<String> = paths
        .iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|text| text.contains(&needle)))
        .map(|p| p.display().to_string())
        .collect();
    assert!(citing.is_empty(), "these cite the product spec instead of standing alone: {citing:?}");
}
