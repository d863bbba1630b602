//! The architecture's import rules, checked on the source: the orchestration half never touches
//! libtorch or the ML side, the leaf imports nothing internal, and only `cli` wires stages in.

use std::path::Path;

fn sources(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn layers_import_only_what_they_may() {
    let rules: &[(&str, &[&str])] = &[
        ("util", &["crate::", "tch::"]),
        (
            "manifest",
            &[
                "tch::",
                "crate::plan",
                "crate::cache",
                "crate::exec",
                "crate::stages",
                "crate::cli",
            ],
        ),
        (
            "plan",
            &[
                "tch::",
                "crate::cache",
                "crate::exec",
                "crate::stages",
                "crate::cli",
            ],
        ),
        (
            "cache",
            &["tch::", "crate::exec", "crate::stages", "crate::cli"],
        ),
        (
            "exec",
            &["tch::", "crate::stages", "crate::cli", "crate::tables"],
        ),
        ("report", &["tch::", "crate::stages", "crate::cli"]),
        (
            "tables",
            &["tch::", "crate::exec", "crate::stages", "crate::cli"],
        ),
        ("stages", &["crate::exec", "crate::report", "crate::cli"]),
    ];
    // The ML core never reaches into the orchestration half; the orchestration half never
    // reaches into the ML core.
    const ORCHESTRATION: &[&str] = &[
        "crate::manifest",
        "crate::plan",
        "crate::cache",
        "crate::exec",
        "crate::report",
        "crate::tables",
        "crate::stages",
        "crate::cli",
    ];
    const ML_CORE: &[&str] = &[
        "crate::model",
        "crate::data",
        "crate::prune",
        "crate::analysis",
        "crate::train",
    ];
    let mut rules = rules.to_vec();
    for dir in ["model", "data", "prune", "analysis", "train"] {
        rules.push((dir, ORCHESTRATION));
    }
    for dir in [
        "manifest", "plan", "cache", "exec", "report", "tables", "util",
    ] {
        rules.push((dir, ML_CORE));
    }
    let mut violations = Vec::new();
    for (dir, forbidden) in &rules {
        for (path, text) in sources(dir) {
            for word in *forbidden {
                if text
                    .lines()
                    .any(|l| !l.trim_start().starts_with("//") && l.contains(word))
                {
                    violations.push(format!("{path} uses `{word}`"));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
