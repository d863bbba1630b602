//! Planner: expansion counts and sharing, key stability across checkouts, minimal invalidation.

mod common;
use common::*;
use orchestrate::manifest;
use orchestrate::plan::{self, StageKind, fingerprint::FingerprintCache};
use std::collections::BTreeSet;
use std::path::Path;

fn plan_of(path: &Path) -> plan::Plan {
    let exp = manifest::load(path, orchestrate::stages::methods::specs())
        .unwrap_or_else(|e| panic!("{e}"));
    plan::build(&exp, &mut FingerprintCache::in_memory()).unwrap()
}

fn keys(p: &plan::Plan) -> BTreeSet<String> {
    p.nodes.iter().map(|n| n.key.clone()).collect()
}

#[test]
fn expansion_counts_and_sharing() {
    let project = Project::new();
    let m = project.write("sweep.toml", SWEEP);
    let exp = manifest::load(&m, orchestrate::stages::methods::specs()).unwrap();
    assert_eq!(exp.points.len(), 2 * 2 * 3 * 2 * 2);
    let p = plan::build(&exp, &mut FingerprintCache::in_memory()).unwrap();
    // One calibration per (model, dataset, size, seed), shared by wanda and sparsegpt.
    assert_eq!(p.count(StageKind::Calibrate), 2 * 2 * 2);
    // Magnitude reads no calibration data: one prune per (model, sparsity) for every dataset and
    // size; wanda and sparsegpt: one per (model, dataset, sparsity, size).
    assert_eq!(p.count(StageKind::Prune), 2 * 2 + 2 * (2 * 2 * 2 * 2));
    // One dense evaluation per (model, dataset) + pruned evaluations.
    assert_eq!(p.count(StageKind::Evaluate), 4 + 2 * 2 * 2 + 2 * 16);
    assert_eq!(p.dense.len(), 4);
    assert_eq!(p.nodes.len(), 88);
    for (point, nodes) in exp.points.iter().zip(&p.points) {
        assert_eq!(nodes.calibrate.is_some(), point.method != "magnitude");
        let eval = &p.nodes[nodes.evaluate.unwrap()];
        assert_eq!(eval.upstream, vec![nodes.prune.unwrap()]);
    }
    // Nodes come after their upstream nodes.
    for (id, n) in p.nodes.iter().enumerate() {
        assert!(n.upstream.iter().all(|&u| u < id));
    }
}

#[test]
fn optional_stages_add_nodes() {
    let project = Project::new();
    let text = format!(
        "{SWEEP}\n[stages]\nretrain = {{ trainable = \"vision\" }}\nintrinsic_dimension = true\nfinetune = true\n"
    );
    let p = plan_of(&project.write("s.toml", &text));
    assert_eq!(p.count(StageKind::Finetune), 4);
    assert_eq!(
        p.count(StageKind::Retrain),
        p.count(StageKind::Evaluate) - 4
    );
    assert_eq!(
        p.count(StageKind::IntrinsicDimension),
        p.count(StageKind::Evaluate)
    );
    // Fine-tuning makes a per-dataset model, so magnitude prunes are no longer shared across datasets.
    assert_eq!(p.count(StageKind::Prune), 2 * 2 * 2 + 2 * 16);
}

#[test]
fn zip_exclude_include() {
    let project = Project::new();
    let text = SWEEP.replace("calibration_size = [8, 16]", "calibration_size = [8, 16]\nzip = [[\"sparsity\", \"calibration_size\"]]\n[[grid.exclude]]\nmethod = \"magnitude\"\nmodel = \"b\"\n[[grid.include]]\nmodel = \"a\"\ndataset = \"d1\"\nmethod = \"sg\"\nsparsity = 0.9\ncalibration_size = 32\nparams = { blocksize = 16 }\n");
    let exp = manifest::load(
        &project.write("z.toml", &text),
        orchestrate::stages::methods::specs(),
    )
    .unwrap();
    // zip: (0.5, 8), (2:4, 16) → 2 × 2 × 3 × 2 = 24; exclude magnitude on b (2 × 2 = 4); include 1.
    assert_eq!(exp.points.len(), 24 - 4 + 1);
    let extra = exp.points.last().unwrap();
    assert_eq!(
        extra.overrides.get("blocksize").and_then(|v| v.as_i64()),
        Some(16)
    );
    let p = plan::build(&exp, &mut FingerprintCache::in_memory()).unwrap();
    let prune = &p.nodes[p.points.last().unwrap().prune.unwrap()];
    assert_eq!(prune.params_json()["params"]["blocksize"], 16);
}

#[test]
fn keys_are_stable_across_checkouts_and_change_minimally() {
    let a = Project::new();
    let b = Project::new();
    let base = keys(&plan_of(&a.write("sweep.toml", SWEEP)));
    // Same manifest, other directory, other file name: same keys.
    assert_eq!(
        base,
        keys(&plan_of(&b.write("deep/elsewhere/renamed.toml", SWEEP)))
    );

    // One method parameter: exactly its prune nodes and their evaluations change.
    let changed = plan_of(&a.write(
        "bs.toml",
        &SWEEP.replace("blocksize = 64", "blocksize = 32"),
    ));
    let new: BTreeSet<String> = keys(&changed).difference(&base).cloned().collect();
    let kinds: Vec<StageKind> = changed
        .nodes
        .iter()
        .filter(|n| new.contains(&n.key))
        .map(|n| n.kind)
        .collect();
    assert_eq!(new.len(), 32);
    assert_eq!(kinds.iter().filter(|k| **k == StageKind::Prune).count(), 16);
    assert_eq!(
        kinds.iter().filter(|k| **k == StageKind::Evaluate).count(),
        16
    );
    assert_eq!(base.difference(&keys(&changed)).count(), 32);

    // One dataset option: everything downstream of d2 changes, magnitude prunes do not.
    let d2 = plan_of(&a.write("d2.toml", &SWEEP.replace("classes = 6", "classes = 7")));
    for n in &d2.nodes {
        let touches_d2 = n.label.contains("/d2");
        assert_eq!(
            !base.contains(&n.key),
            touches_d2 && !(n.kind == StageKind::Prune && n.label.contains("magnitude")),
            "{}",
            n.label
        );
    }
}

/// A real (tiny) model: `plan` reads its config and checkpoint headers.
fn tiny_model(dir: &Path, seed: i64) {
    orchestrate::model::create::create(dir, "tiny", seed).unwrap();
}

fn model_dir(root: &Path, name: &str, weights: &[u8]) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"projection_dim\": 8}").unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
}

const FILE_MANIFEST: &str = r#"
[experiment]
name = "files"
[models.m1]
path = "models/m1"
[models.m2]
path = "models/m2"
[datasets.d]
kind = "imagefolder"
path = "data/d"
[grid]
model = ["m1", "m2"]
dataset = "d"
method = ["magnitude", "wanda"]
sparsity = 0.5
"#;

#[test]
fn input_files_are_fingerprinted_by_content() {
    let a = Project::new();
    let b = Project::new();
    for p in [&a, &b] {
        tiny_model(&p.path().join("models/m1"), 1);
        tiny_model(&p.path().join("models/m2"), 2);
        p.write("data/d/cat/0.png", "not really a png");
        p.write("data/d/dog/0.png", "nor this");
    }
    let ka = keys(&plan_of(&a.write("f.toml", FILE_MANIFEST)));
    assert_eq!(
        ka,
        keys(&plan_of(&b.write("f.toml", FILE_MANIFEST))),
        "content, not paths, decides keys"
    );

    // Change m2's weights: exactly m2's nodes change.
    std::fs::remove_dir_all(b.path().join("models/m2")).unwrap();
    tiny_model(&b.path().join("models/m2"), 3);
    let pb = plan_of(&b.path().join("f.toml"));
    for n in &pb.nodes {
        assert_eq!(ka.contains(&n.key), !n.label.contains("m2/"), "{}", n.label);
    }
    // Change a dataset file: everything reading the dataset changes; magnitude prunes do not.
    b.write("data/d/dog/0.png", "changed");
    let pb2 = plan_of(&b.path().join("f.toml"));
    let kb = keys(&pb);
    for n in &pb2.nodes {
        let reads_dataset = !(n.kind == StageKind::Prune && n.label.contains("magnitude"));
        assert_eq!(kb.contains(&n.key), !reads_dataset, "{}", n.label);
    }
}

#[test]
fn fingerprint_cache_reuses_hashes_until_the_file_changes() {
    let p = Project::new();
    model_dir(&p.path().join("models"), "m1", b"abc");
    let cache_path = p.path().join("fp.json");
    let mut fp = FingerprintCache::open(&cache_path);
    let first = fp.fingerprint(&p.path().join("models/m1")).unwrap();
    fp.save().unwrap();
    let saved = std::fs::read_to_string(&cache_path).unwrap();
    assert!(saved.contains("model.safetensors"));
    let mut again = FingerprintCache::open(&cache_path);
    assert_eq!(
        again.fingerprint(&p.path().join("models/m1")).unwrap(),
        first
    );

    // Rewritten in place with the same size and its old timestamp (`touch -r`): the inode
    // change time still tells, and the content is hashed again.
    let file = p.path().join("models/m1/model.safetensors");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, b"abd").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    let mut stale = FingerprintCache::open(&cache_path);
    assert_ne!(
        stale.fingerprint(&p.path().join("models/m1")).unwrap(),
        first
    );

    // `--verify` hashes again even when nothing in the metadata moved: a cache entry that lies
    // (here: edited to claim the old content) is not believed.
    let mut fp = FingerprintCache::open(&cache_path);
    let now = fp.fingerprint(&p.path().join("models/m1")).unwrap();
    fp.save().unwrap();
    let lying = std::fs::read_to_string(&cache_path).unwrap();
    let real = orchestrate::util::hash::sha256_hex(b"abd");
    let fake = orchestrate::util::hash::sha256_hex(b"abc");
    std::fs::write(&cache_path, lying.replace(&real, &fake)).unwrap();
    let mut trusting = FingerprintCache::open(&cache_path);
    assert_ne!(
        trusting.fingerprint(&p.path().join("models/m1")).unwrap(),
        now
    );
    let mut verifying = FingerprintCache::open(&cache_path).rehashing(true);
    assert_eq!(
        verifying.fingerprint(&p.path().join("models/m1")).unwrap(),
        now
    );
}

#[test]
fn explicit_calibration_indices_define_only_the_calibration() {
    let project = Project::new();
    project.write(
        "idx.txt",
        "[3, 1, 4, 15,\n 9 2 6 5 35 8 97 93 23 84 62 64]\n",
    );
    let with = |list: &str| {
        SWEEP.replace(
            "classes = 4\n",
            &format!("classes = 4\ncalibration_indices = {list}\n"),
        )
    };
    let from_file = plan_of(&project.write("f.toml", &with("\"idx.txt\"")));
    let inline = plan_of(&project.write(
        "i.toml",
        &with("[3, 1, 4, 15, 9, 2, 6, 5, 35, 8, 97, 93, 23, 84, 62, 64]"),
    ));
    assert_eq!(
        keys(&from_file),
        keys(&inline),
        "a file and a list are the same input"
    );
    let calibrations: Vec<_> = from_file
        .nodes
        .iter()
        .filter(|n| n.kind == StageKind::Calibrate && n.label.contains("/d1 "))
        .map(|n| n.params_json())
        .collect();
    assert_eq!(calibrations.len(), 2 * 2, "(model, size); no seed axis");
    for params in &calibrations {
        let n = params["size"].as_u64().unwrap() as usize;
        let want = [3, 1, 4, 15, 9, 2, 6, 5, 35, 8, 97, 93, 23, 84, 62, 64];
        assert_eq!(params["indices"], serde_json::json!(want[..n]));
        assert!(params.get("seed").is_none());
    }
    // Other lists change the calibrations and what depends on them, never the dense stages.
    let other = plan_of(&project.write(
        "o.toml",
        &with("[7, 1, 4, 15, 9, 2, 6, 5, 35, 8, 97, 93, 23, 84, 62, 64, 0]"),
    ));
    let plain = plan_of(&project.write("p.toml", SWEEP));
    for p in [&other, &plain] {
        for dense in &p.dense {
            let same = from_file
                .dense
                .iter()
                .find(|d| (&d.model, &d.dataset) == (&dense.model, &dense.dataset))
                .unwrap();
            assert_eq!(
                p.nodes[dense.nodes.evaluate.unwrap()].key,
                from_file.nodes[same.nodes.evaluate.unwrap()].key
            );
        }
        let changed = |k: StageKind| {
            p.nodes
                .iter()
                .filter(|n| n.kind == k)
                .filter(|n| !keys(&from_file).contains(&n.key))
                .count()
        };
        assert_eq!(changed(StageKind::Calibrate), 4);
    }
}

#[test]
fn convpass_scales_of_vtab_datasets_enter_the_retrain_keys() {
    let project = Project::new();
    let text = SWEEP
        .replace("classes = 4\n", "classes = 10\nprompts = \"eurosat\"\n")
        .replace("classes = 6\n", "classes = 10\nprompts = \"svhn\"\n")
        + "\n[stages]\nretrain = true\n";
    let p = plan_of(&project.write("c.toml", &text));
    let mut seen = BTreeSet::new();
    for n in p.nodes.iter().filter(|n| n.kind == StageKind::Retrain) {
        let train = &n.params_json()["train"];
        let want = if n.label.contains("/d1 ") {
            (10.0, false)
        } else {
            (100.0, true)
        };
        assert_eq!(
            (
                train["convpass_scale"].as_f64().unwrap(),
                train["convpass_xavier"].as_bool().unwrap()
            ),
            want
        );
        seen.insert(n.label.contains("/d1 "));
    }
    assert_eq!(seen.len(), 2);
}

/// The keys of a fixed manifest, pinned. A change of the key encoding or of a stage's version
/// invalidates every user's cache: it must be a deliberate edit of these values (with the stage
/// version bumped where the stage's output changed), never a side effect.
#[test]
fn golden_keys_pin_the_key_encoding() {
    use sha2::{Digest, Sha256};
    let project = Project::new();
    let text = format!(
        "{SWEEP}\n[stages]\nretrain = {{ trainable = \"vision\" }}\nintrinsic_dimension = true\nfinetune = true\n"
    );
    let p = plan_of(&project.write("golden.toml", &text));
    let mut lines: Vec<String> = p
        .nodes
        .iter()
        .map(|n| format!("{} {}", n.key, n.label))
        .collect();
    lines.sort();
    let digest = hex::encode(Sha256::digest(lines.join("\n").as_bytes()));
    let first = &p.nodes[0];
    assert_eq!(
        (first.label.as_str(), first.key.as_str(), digest.as_str()),
        (GOLDEN_FIRST.0, GOLDEN_FIRST.1, GOLDEN_DIGEST),
        "the key encoding changed"
    );
}

const GOLDEN_FIRST: (&str, &str) = (
    "finetune a/d1",
    "cc3747f7a43896578903f0ef9e5625f18de974bba303d865063fcccfff38a813",
);
/// sha256 of every `key label` line of the plan, sorted. History: prune stage version 2
/// (entries declare their artifact kind) changed it from caae7bd1…; the evaluate stage's
/// `timing` and `timing_repeats` parameters (efficiency columns) from 6c0b84c2…; finetune and
/// retrain version 2 (resumable, checkpointed) from ad21d4fc…; retraining's UPop parameters
/// (`accumulation`, `alpha`, `momentum`, `queue_size`, `search_epochs`) from c6888c72…; the
/// intrinsic-dimension stage's `layers` from de0d0a8b….
const GOLDEN_DIGEST: &str = "81216ea7c9a77747a105f783c00ab56e445bac971e66bcd117fd2c1670557ee5";

/// What a method declares it reads becomes part of the plan: a method that trains on the
/// training split has the dataset in its key; one scored by the dense model's intrinsic
/// dimension reads the per-Linear measurement of that model when its `use_id` is on (planned
/// even when the manifest does not enable the stage).
#[test]
fn declared_method_inputs_become_keys_and_edges() {
    use orchestrate::manifest::params::p;
    use orchestrate::manifest::schema::{DefaultValue, ParamType};
    use orchestrate::manifest::schema::{MethodInput, MethodSpec, SparsityAxis};
    static USE_ID: [orchestrate::manifest::schema::ParamSpec; 1] = [p(
        "use_id",
        ParamType::Bool,
        DefaultValue::Bool(true),
        "read the ID",
    )];
    static SCORED: MethodSpec = MethodSpec {
        name: "scored",
        doc: "a method that trains and reads the dense model's intrinsic dimension",
        params: &USE_ID,
        inputs: &[
            MethodInput::TrainingSplit,
            MethodInput::DenseIntrinsicDimension,
        ],
        sparsity: SparsityAxis::Weights,
        check: None,
    };
    let mut registry: Vec<&'static MethodSpec> = orchestrate::stages::methods::specs().to_vec();
    registry.push(&SCORED);
    let registry: &'static [&'static MethodSpec] = Box::leak(registry.into_boxed_slice());
    let project = Project::new();
    let text = SWEEP.replace(
        "method = [\"magnitude\", \"wanda\", \"sg\"]",
        "method = [\"magnitude\", \"scored\"]",
    );
    let plan_with = |text: &str, name: &str| {
        let exp = manifest::load(&project.write(name, text), registry).unwrap();
        plan::build(&exp, &mut FingerprintCache::in_memory()).unwrap()
    };
    let p = plan_with(&text, "a.toml");
    let exp = manifest::load(&project.write("a.toml", &text), registry).unwrap();
    for (point, nodes) in exp.points.iter().zip(&p.points) {
        let prune = &p.nodes[nodes.prune.unwrap()];
        let params = prune.params_json();
        let kinds: Vec<StageKind> = prune.upstream.iter().map(|&u| p.nodes[u].kind).collect();
        if point.method == "scored" {
            assert!(params.get("dataset").is_some(), "{params}");
            assert_eq!(kinds, vec![StageKind::IntrinsicDimension]);
            let id = &p.nodes[prune.upstream[0]];
            let measure = &id.params_json()["measure"];
            assert_eq!(
                (&measure["layers"], &measure["towers"]),
                (&"linears".into(), &"both".into())
            );
            assert!(
                id.label.contains(&format!(
                    "{}/{} dense per Linear",
                    point.model, point.dataset
                )),
                "{}",
                id.label
            );
        } else {
            assert!(params.get("dataset").is_none() && kinds.is_empty());
        }
    }
    // The dataset defines the training-based prune, not the data-free one.
    let q = plan_with(&text.replace("classes = 6", "classes = 7"), "b.toml");
    let changed: BTreeSet<String> = keys(&q).difference(&keys(&p)).cloned().collect();
    assert!(q.nodes.iter().any(|n| n.kind == StageKind::Prune
        && n.label.contains("scored")
        && n.label.contains("/d2")
        && changed.contains(&n.key)));
    assert!(!q.nodes.iter().any(|n| n.kind == StageKind::Prune
        && n.label.contains("magnitude")
        && changed.contains(&n.key)));
}
