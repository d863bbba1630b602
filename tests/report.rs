//! The report end to end: a sweep with a failed point, `orchestrate report`, and the
//! self-contained `report.html` opened in a real headless browser (Chromium from Debian's
//! packages; `make test` installs it): no script error, every figure decoded, every table
//! sortable by a click, a screenshot that is not blank; the failed point listed with its error
//! and log; the manifest and provenance in the page; the figures the sweep supports on disk.

mod common;
use common::{Project, SWEEP, text};
use std::path::Path;
use std::process::Command;

fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name;
        }
    }
    panic!("the report test needs Chromium: `make test` installs it (apt-get install chromium)");
}

fn browser(args: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args([
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=10000",
        ])
        .args(args)
        .output()
        .expect("chromium runs")
}

#[test]
fn report_opens_in_a_browser_with_every_figure_and_sortable_tables() {
    let p = Project::new();
    let published = "\n[[reference]]\nmodel = \"a\"\ndataset = \"d1\"\nmethod = \"wanda\"\nsparsity = \"2:4\"\nvalue = 42.5\nsource = \"A paper, Table 1\"\n";
    p.write("sweep.toml", &(SWEEP.to_string() + published));
    let out = p
        .cmd(&["run", "sweep.toml"])
        .env("ORCHESTRATE_TEST_FAIL", "prune b/d2 sg@0.5 n=16")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = p.run(&["report", "sweep.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = p.results().join("sweep");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();

    // Self-contained: nothing fetched from anywhere.
    for needle in ["http://", "https://", "<link", " src=\"file", "@import"] {
        assert!(!html.contains(needle), "the report refers to {needle}");
    }
    // The failed point, with its error and log; the manifest; provenance.
    assert!(html.contains("simulated failure in prune b/d2 sg@0.5 n=16"));
    assert!(html.contains(".log"));
    assert!(html.contains("[grid]") && html.contains("calibration_size = [8, 16]"));
    assert!(html.contains(env!("CARGO_PKG_VERSION")));

    // The published number, in the report's table and next to ours in the pivot.
    assert!(html.contains("Published numbers") && html.contains("A paper, Table 1"));
    let out = p.run(&["table", "sweep.toml", "--pivot", "md"]);
    let pivot = String::from_utf8_lossy(&out.stdout);
    let wanda = pivot
        .lines()
        .find(|l| l.starts_with("| wanda (n=8) | 2:4 |"))
        .unwrap_or_else(|| panic!("{pivot}"));
    assert!(wanda.contains("(paper 42.50, "), "{wanda}");

    // The figures this sweep supports: accuracy vs sparsity and the calibration ablation.
    let figures: Vec<String> = std::fs::read_dir(dir.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".svg"))
        .collect();
    for f in ["accuracy_vs_sparsity.svg", "calibration_ablation.svg"] {
        assert!(figures.contains(&f.to_string()), "{figures:?}");
    }
    assert_eq!(
        html.matches("data:image/svg+xml;base64,").count(),
        figures.len()
    );
    // Each SVG parses (with no font available: its text is paths) and its PNG is the same size.
    for f in &figures {
        let svg = std::fs::read_to_string(dir.join("figures").join(f)).unwrap();
        let options = resvg::usvg::Options {
            fontdb: std::sync::Arc::new(resvg::usvg::fontdb::Database::new()),
            ..Default::default()
        };
        let tree =
            resvg::usvg::Tree::from_str(&svg, &options).unwrap_or_else(|e| panic!("{f}: {e}"));
        let png = image::open(dir.join("figures").join(f.replace(".svg", ".png"))).unwrap();
        let size = tree.size().to_int_size();
        assert_eq!(
            (png.width(), png.height()),
            (size.width(), size.height()),
            "{f}"
        );
        assert!(!svg.contains("<text"), "{f}");
    }

    // In the browser: the page's self-test (figures decoded, every column sorts both ways, a
    // click sorts, no script error).
    let url = format!("file://{}#selftest", dir.join("report.html").display());
    let out = browser(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let verdict = dom
        .split("<pre id=\"selftest\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("no self-test verdict in the page: {}", text(&out)));
    let lines: Vec<&str> = verdict.lines().collect();
    assert_eq!(lines[0], "ok", "{verdict}");
    let tables = html.matches("<table class=\"sortable\">").count();
    // Two pivot blocks (models a and b), every point, the published numbers, the failed
    // points, time per stage.
    assert_eq!(tables, 6);
    assert_eq!(
        lines[1],
        format!("figures={} tables={tables}", figures.len()),
        "{verdict}"
    );

    // A screenshot of the page as a reader sees it is not blank.
    let shot = p.path().join("shot.png");
    let out = browser(&[
        "--window-size=1280,2000",
        &format!("--screenshot={}", shot.display()),
        &format!("file://{}", dir.join("report.html").display()),
    ]);
    assert!(Path::new(&shot).exists(), "{}", text(&out));
    let png = image::open(&shot).unwrap().to_rgb8();
    let inked = png.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        inked > (png.width() * png.height() / 100) as usize,
        "{inked} non-white pixels"
    );
}
