//! Every manifest in `tests/bad_manifests/` must be rejected with exit status 2, a message naming
//! `file:line:column` and the expected fragment, and no panic or backtrace.

mod common;
use common::*;

#[test]
fn bad_manifests_are_rejected_with_location() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_manifests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "the corpus has at least 20 bad manifests"
    );
    let project = Project::new();
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .expect("first line: # expect: LINE:COL | fragment");
        let (location, fragment) = expect.split_once(" | ").unwrap();
        let out = project
            .cmd(&["plan", file.to_str().unwrap()])
            .env("HF_HUB_CACHE", project.path().join("empty-hub"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let located = format!("{}:{location}:", file.display());
        let ok = out.status.code() == Some(2)
            && stderr.contains(&located)
            && stderr.contains(fragment)
            && !stderr.contains("panicked")
            && !stderr.contains("stack backtrace");
        if !ok {
            failures.push(format!(
                "{}: expected exit 2 with `{located}` and `{fragment}`\n{}",
                file.display(),
                text_of(&out)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}

#[test]
fn every_error_is_reported_at_once() {
    let project = Project::new();
    let m = project.write(
        "many.toml",
        r#"[experiment]
name = "x"
[models.clip]
test = true
[datasets.syn]
kind = "synthetic"
[grid]
model = "clip"
dataset = ["syn", "nope"]
method = "magnitude"
sparsity = [1.2, "3:2"]
calibration_size = 0
"#,
    );
    let out = project.run(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for loc in [":9:19:", ":11:13:", ":11:18:", ":12:20:"] {
        assert!(stderr.contains(loc), "missing {loc} in\n{stderr}");
    }
    assert!(stderr.contains("4 errors in manifest"), "{stderr}");
}

#[test]
fn unreadable_manifest_is_bad_input() {
    let project = Project::new();
    let out = project.run(&["plan", "does-not-exist.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("does-not-exist.toml:1:1: cannot read manifest"),
        "{}",
        text(&out)
    );
}

/// The paper manifests are valid: on a machine without the models and datasets, the only errors
/// are the missing downloads (Hugging Face files, Karpathy-layout data), each named.
#[test]
fn paper_manifests_fail_only_on_missing_downloads() {
    let project = Project::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for name in [
        "table2",
        "table2_calibration",
        "id_layers",
        "sls",
        "fisher",
        "upop",
        "platon_id",
    ] {
        let file = dir.join(format!("{name}.toml"));
        let out = project
            .cmd(&["plan", file.to_str().unwrap()])
            .env("HF_HUB_CACHE", project.path().join("empty-hub"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(!errors.is_empty(), "{name}");
        for e in errors {
            // Models and parquet datasets from the HF cache, Karpathy-layout data under data/.
            assert!(
                e.contains("is not in the local Hugging Face cache")
                    || (e.contains("experiments/data/") && e.contains("does not exist")),
                "{name}: {e}"
            );
        }
    }
}

/// An index file that is a FIFO is refused at once (opening it would block `plan` forever).
#[test]
fn an_index_file_that_is_a_fifo_is_refused() {
    let project = Project::new();
    let fifo = project.path().join("indices.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let m = project.write(
        "fifo.toml",
        r#"[experiment]
name = "x"
[models.clip]
test = true
[datasets.syn]
kind = "synthetic"
calibration_indices = "indices.fifo"
[grid]
model = "clip"
dataset = "syn"
method = "wanda"
sparsity = 0.5
calibration_size = 2
"#,
    );
    let out = project.run(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a regular file"),
        "{}",
        text(&out)
    );
}

/// The point limit is the user's to raise.
#[test]
fn max_points_bounds_the_grid() {
    let project = Project::new();
    let with = |n: u32| {
        SWEEP.replace(
            "name = \"sweep\"",
            &format!("name = \"sweep\"\nmax_points = {n}"),
        )
    };
    let over = project.write("over.toml", &with(47));
    let out = project.run(&["plan", over.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the grid expands to 48 points, more than the limit of 47"),
        "{}",
        text(&out)
    );
    let fits = project.write("fits.toml", &with(48));
    assert!(
        project
            .run(&["plan", fits.to_str().unwrap()])
            .status
            .success()
    );
}

/// Parquet datasets are checked at plan time, footers only: a truncated file and a missing
/// column are both reported (exit 2), naming the file.
#[test]
fn broken_parquet_splits_are_found_by_plan() {
    use polars::prelude::*;
    let project = Project::new();
    let dir = project.path().join("data/d");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |path: &std::path::Path| {
        let bytes = Series::new("bytes".into(), vec![Some(&b"png"[..]); 3]);
        let paths = Series::new("path".into(), vec![None::<&str>; 3]);
        let image = StructChunked::from_series("image".into(), 3, [bytes, paths].iter())
            .unwrap()
            .into_series();
        let label = Series::new("label".into(), vec![0i64, 1, 0]);
        let mut df = DataFrame::new(3, vec![image.into(), label.into()]).unwrap();
        ParquetWriter::new(std::fs::File::create(path).unwrap())
            .finish(&mut df)
            .unwrap();
    };
    let test = dir.join("test-00000-of-00001.parquet");
    let train = dir.join("train-00000-of-00001.parquet");
    write(&test);
    write(&train);
    let full = std::fs::read(&train).unwrap();
    std::fs::write(&train, &full[..full.len() / 2]).unwrap();
    let m = project.write(
        "parquet.toml",
        r#"[experiment]
name = "x"
[models.clip]
test = true
[datasets.d]
path = "data/d"
label_column = "fine_label"
classnames = ["a", "b"]
templates = ["a photo of a {c}."]
[grid]
model = "clip"
dataset = "d"
method = "wanda"
sparsity = 0.5
"#,
    );
    let out = project.run(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "test-00000-of-00001.parquet: no column `fine_label` (columns: image, label)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("train-00000-of-00001.parquet: not a readable parquet file"),
        "{stderr}"
    );
}
