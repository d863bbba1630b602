//! The architecture's import rules, checked on the source: the orchestration half never touches
//! libtorch or the ML core, the ML core never reaches into the orchestration half, the leaf
//! imports nothing internal, and the top-level modules import each other without cycles.
//!
//! References are found the way the compiler resolves them: `crate::a`, every name of a grouped
//! `use crate::{a, b::{c, d}}`, and `super::` chains that climb to the crate root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module of `src/`, with the references of its files.
fn modules() -> BTreeMap<String, Vec<(String, BTreeSet<String>, bool)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(&src)
        .into_iter()
        .filter_map(Result::ok)
    {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel: Vec<String> = path
            .strip_prefix(&src)
            .unwrap()
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if rel.len() == 1 && (rel[0] == "lib.rs" || rel[0] == "main.rs") {
            continue;
        }
        let module = rel[0].trim_end_matches(".rs").to_string();
        // How many `super::` steps stay inside the module.
        let levels = rel.len() - 1 - usize::from(rel.last().unwrap() == "mod.rs");
        let text = std::fs::read_to_string(path).unwrap();
        let code = strip_comments(&text);
        let refs = references(&code, levels);
        let uses_tch = code.contains("tch::") || code.contains("torch_sys");
        out.entry(module)
            .or_default()
            .push((path.display().to_string(), refs, uses_tch));
    }
    out
}

/// The text with `//` comments (line and doc) removed; string literals are kept.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string (a URL, say) is rare in this code base; a line whose
            // comment starts after a quote is kept whole to stay on the safe side.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules referred to from a file `levels` modules below its top-level module.
fn references(code: &str, levels: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let preceded_by_ident = i > 0
            && (bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b'$');
        let after_root = if preceded_by_ident {
            None
        } else if let Some(r) = rest.strip_prefix("crate::") {
            Some(r)
        } else if rest.starts_with("super::") {
            let mut r = rest;
            let mut steps = 0;
            while let Some(next) = r.strip_prefix("super::") {
                r = next;
                steps += 1;
            }
            i += rest.len() - r.len() - 1;
            (steps > levels).then_some(r)
        } else {
            None
        };
        if let Some(r) = after_root {
            collect_first_segments(r, &mut out);
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out.remove("self");
    out
}

/// `a::…` → {a}; `{a, b::c, d::{e}}` → {a, b, d}.
fn collect_first_segments(r: &str, out: &mut BTreeSet<String>) {
    let Some(group) = r.strip_prefix('{') else {
        let name = ident(r);
        if !name.is_empty() {
            out.insert(name.to_string());
        }
        return;
    };
    let mut depth = 0;
    let mut start = 0;
    for (j, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                let item = group[start..j].trim();
                if !item.is_empty() {
                    out.insert(ident(item).to_string());
                }
                return;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let item = group[start..j].trim();
                if !item.is_empty() {
                    out.insert(ident(item).to_string());
                }
                start = j + 1;
            }
            _ => {}
        }
    }
}

const ORCHESTRATION: &[&str] = &[
    "manifest", "plan", "cache", "exec", "progress", "tables", "report",
];
const ML_CORE: &[&str] = &["model", "data", "prune", "analysis", "train"];

/// What each module must never refer to (besides the rules for its half).
fn forbidden(module: &str) -> (Vec<&'static str>, bool) {
    let mut no: Vec<&'static str> = vec!["cli"];
    let mut no_tch = false;
    if module == "util" {
        no.extend(ORCHESTRATION);
        no.extend(ML_CORE);
        no.push("stages");
        no_tch = true;
    } else if ORCHESTRATION.contains(&module) {
        no.extend(ML_CORE);
        no.push("stages");
        no_tch = true;
    } else if ML_CORE.contains(&module) {
        no.extend(ORCHESTRATION);
        no.push("stages");
    } else if module == "stages" {
        no.extend(["exec", "progress"]);
    }
    (no, no_tch)
}

/// A cycle in the module graph, if any, as a path `a → b → … → a`.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn layers_import_only_what_they_may_and_without_cycles() {
    let modules = modules();
    for m in ORCHESTRATION
        .iter()
        .chain(ML_CORE)
        .chain(&["util", "stages", "cli"])
    {
        assert!(
            modules.contains_key(*m),
            "module {m} is listed but does not exist"
        );
    }
    let mut violations = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, files) in &modules {
        assert!(
            ORCHESTRATION.contains(&module.as_str())
                || ML_CORE.contains(&module.as_str())
                || ["util", "stages", "cli"].contains(&module.as_str()),
            "module {module} has no place in the layer table"
        );
        let (no, no_tch) = forbidden(module);
        for (path, refs, uses_tch) in files {
            for r in refs {
                if r != module && modules.contains_key(r) {
                    graph.entry(module.clone()).or_default().insert(r.clone());
                }
                if no.contains(&r.as_str()) {
                    violations.push(format!("{path} uses crate::{r}"));
                }
            }
            if no_tch && *uses_tch {
                violations.push(format!("{path} uses libtorch"));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(
        find_cycle(&graph),
        None,
        "modules import each other in a cycle"
    );
}

/// The checker itself: grouped imports, nested groups, `super::` to the root, comments.
#[test]
fn the_checker_sees_every_form_of_import() {
    let refs = references(
        "use crate::{plan, cache::{Cache, Lookup}, self};\nlet x = crate::util::hash(1);\nuse super::super::exec::Event;\nmycrate::nope;\n",
        1,
    );
    assert_eq!(
        refs,
        ["cache", "exec", "plan", "util"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    // One `super::` from a second-level file stays in its module.
    assert!(references("use super::store::Cache;", 1).is_empty());
    assert!(references(&strip_comments("// use crate::stages;\n"), 0).is_empty());
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    assert_eq!(find_cycle(&g), None);
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}
