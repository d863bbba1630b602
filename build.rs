//! Build script: an rpath to libtorch so the binary runs without LD_LIBRARY_PATH, and build
//! provenance (git revision, library versions) compiled into the records every stage writes.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    for git in [".git/HEAD", ".git/refs/heads"] {
        if Path::new(git).exists() {
            println!("cargo:rerun-if-changed={git}");
        }
    }
    let mut libtorch_version = "unknown".to_string();
    // torch-sys (links = "tch") exports the libtorch library directory it linked against.
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=ORCHESTRATE_LIBTORCH_LIB={lib}");
        let version_py = Path::new(&lib).join("..").join("version.py");
        if let Ok(text) = std::fs::read_to_string(version_py)
            && let Some(line) = text.lines().find(|l| l.starts_with("__version__"))
        {
            libtorch_version = line
                .split(['\'', '"'])
                .nth(1)
                .unwrap_or("unknown")
                .to_string();
        }
    }
    println!("cargo:rustc-env=ORCHESTRATE_LIBTORCH_VERSION={libtorch_version}");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("tch", "ORCHESTRATE_TCH_VERSION"),
        ("polars", "ORCHESTRATE_POLARS_VERSION"),
    ] {
        println!(
            "cargo:rustc-env={var}={}",
            locked_version(&lock, krate).unwrap_or("unknown")
        );
    }
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ORCHESTRATE_GIT_REVISION={revision}");
}

fn locked_version<'a>(lock: &'a str, krate: &str) -> Option<&'a str> {
    let header = format!("name = \"{krate}\"\nversion = \"");
    let start = lock.find(&header)? + header.len();
    lock[start..].split('"').next()
}
