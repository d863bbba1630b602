//! The analysis core against known dimensions and independent references (spec
//! structured-and-analysis.md §7 checks 10–12): TwoNN on linear subspaces and spheres, and
//! against a numpy/scipy implementation of the same estimators; t-SNE on separated clusters,
//! deterministic; the SLS depth against scikit-learn's pipeline on the same features.

mod common;
use common::run_reference;
use orchestrate::analysis::{silhouette, tsne, twonn};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// libtorch's generator is global and the tests run in parallel: every seeded draw holds this.
fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    f()
}

/// A random orthonormal map from `k` to `dim` dimensions (rows orthonormal).
fn embedding(k: i64, dim: i64) -> Tensor {
    let (q, _) = Tensor::linalg_qr(&Tensor::randn([dim, k], F64), "reduced");
    q.tr()
}

/// `n` Gaussian points of a `k`-dimensional linear subspace of R^`dim`.
fn subspace(n: i64, k: i64, dim: i64) -> Tensor {
    Tensor::randn([n, k], F64).matmul(&embedding(k, dim))
}

/// `n` uniform points of the unit `k`-sphere (in R^(k+1)), embedded in R^`dim`.
fn sphere(n: i64, k: i64, dim: i64) -> Tensor {
    let g = Tensor::randn([n, k + 1], F64);
    let s = &g / g.norm_scalaropt_dim(2.0, [1], true);
    s.matmul(&embedding(k + 1, dim))
}

fn raw_f64(t: &Tensor) -> Vec<u8> {
    let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn reference(args: &[&str]) -> String {
    run_reference("analysis_reference.py", args)
}

#[test]
fn twonn_finds_the_dimension_of_subspaces_and_spheres_and_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (n, dim) = (2000, 128);
    for k in [2i64, 5, 10] {
        for (shape, points) in [
            ("subspace", seeded(k, || subspace(n, k, dim))),
            ("sphere", seeded(100 + k, || sphere(n, k, dim))),
        ] {
            let m = twonn::measure(&points, twonn::Estimator::Reference { fraction: 0.9 }).unwrap();
            let err = (m.dimension - k as f64).abs() / k as f64;
            assert!(err < 0.1, "{shape} k={k}: estimated {:.3}", m.dimension);

            let file = dir.path().join(format!("{shape}{k}.f64"));
            std::fs::write(&file, raw_f64(&points)).unwrap();
            let line = reference(&[
                "twonn",
                file.to_str().unwrap(),
                &n.to_string(),
                &dim.to_string(),
            ]);
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|s| s.parse().unwrap())
                .collect();
            assert!(
                (m.dimension - v[0]).abs() < 1e-6,
                "{shape} k={k}: {} vs {}",
                m.dimension,
                v[0]
            );
            assert_eq!(m.fit.kept as f64, v[2]);
            let idvl = twonn::measure(&points, twonn::Estimator::Idvl { seed: 0 }).unwrap();
            assert!(
                (idvl.fit.dimension - v[1]).abs() < 1e-6,
                "{shape} k={k}: idvl {} vs {}",
                idvl.fit.dimension,
                v[1]
            );
            assert!(idvl.std.unwrap() > 0.0);
        }
    }
}

/// `per` points around each of `centres` (`[c, dim]`), unit noise.
fn clusters(centres: &Tensor, per: i64) -> (Tensor, Vec<i64>) {
    let (c, dim) = centres.size2().unwrap();
    let x = centres.repeat_interleave_self_int(per, 0, None) + Tensor::randn([c * per, dim], F64);
    let labels = (0..c)
        .flat_map(|l| std::iter::repeat_n(l, per as usize))
        .collect();
    (x, labels)
}

#[test]
fn tsne_separates_clusters_deterministically() {
    let (x, labels) = seeded(7, || clusters(&(Tensor::randn([4, 50], F64) * 6.0), 75));
    let settings = tsne::Settings::default();
    let a = tsne::embed(&x, settings).unwrap();
    let b = tsne::embed(&x, settings).unwrap();
    assert!(a.points.equal(&b.points), "same input, same embedding");
    assert_eq!(a.points.size(), [300, 2]);
    let raw = silhouette::score(&a.points, &labels).unwrap();
    let scaled = silhouette::score(&silhouette::min_max(&a.points), &labels).unwrap();
    assert!(
        raw > 0.8 && scaled > 0.8,
        "silhouette {raw:.3} / {scaled:.3}"
    );
    assert!(a.kl_divergence.is_finite() && a.kl_divergence > 0.0);
}

#[test]
fn sls_depth_equals_the_scikit_learn_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (blocks, classes, per, dim) = (6i64, 3i64, 100i64, 32i64);
    // Blocks 1–2 carry no class structure; from block 3 up the classes separate more and more.
    let separation = [0.0, 0.0, 2.0, 3.0, 4.5, 6.0];
    let (feats, labels) = seeded(11, || {
        let directions = Tensor::randn([classes, dim], F64);
        let mut labels = vec![];
        let feats: Vec<Tensor> = separation
            .iter()
            .map(|&s| {
                let (x, l) = clusters(&(&directions * s), per);
                labels = l;
                x
            })
            .collect();
        (feats, labels)
    });
    let scores: Vec<f64> = feats
        .iter()
        .map(|f| {
            let z = tsne::embed(f, tsne::Settings::default()).unwrap().points;
            silhouette::score(&silhouette::min_max(&z), &labels).unwrap()
        })
        .collect();
    let depth = silhouette::sls_depth(&scores, 0.3).unwrap();

    let f32s: Vec<u8> = feats
        .iter()
        .flat_map(|f| Vec::<f32>::try_from(f.to_kind(Kind::Float).flatten(0, -1)).unwrap())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (ff, lf) = (
        dir.path().join("features.f32"),
        dir.path().join("labels.i64"),
    );
    std::fs::write(&ff, f32s).unwrap();
    std::fs::write(
        &lf,
        labels
            .iter()
            .flat_map(|l| l.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let n = (classes * per).to_string();
    let out = reference(&[
        "sls",
        ff.to_str().unwrap(),
        lf.to_str().unwrap(),
        &blocks.to_string(),
        &n,
        &dim.to_string(),
    ]);
    let want: usize = out.lines().next().unwrap().trim().parse().unwrap();
    assert_eq!(
        depth, want,
        "ours {scores:?}\nscikit-learn (top down) {out}"
    );
    assert_eq!(depth, 3);
}
