//! TwoNN intrinsic dimension (spec structured-and-analysis.md §1, Decision c).
//!
//! For every point μ = r₂/r₁, the ratio of its second- to its first-nearest-neighbour distance,
//! is Pareto with exponent d, so `−ln(1 − F(μ)) = d·ln μ`; d is the slope of a least-squares line
//! through the origin on the empirical CDF.
//!
//! Invariants:
//! - Distances are direct differences accumulated in f64 (§1.5): the Gram shortcut loses
//!   precision and turns exact duplicates into tiny non-zero distances.
//! - Duplicates (r₁ = 0) and degenerate points (r₁ = r₂) are dropped from the fit by exact
//!   comparison, but stay in the distance matrix as neighbours of the others (§1.3).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Which estimator (§1.1 and §1.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimator {
    /// One fit on the `fraction` of points with the smallest μ (the reference: 0.9).
    Reference { fraction: f64 },
    /// The ID-pruning repository's: every point in the fit, averaged over a block analysis of
    /// 1…20 disjoint blocks (a seeded permutation), with the spread at 20 blocks.
    Idvl { seed: u64 },
}

/// Blocks of the IDVL block analysis: 1, 2, …, 20.
pub const IDVL_BLOCKS: usize = 20;

/// The result of one fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub dimension: f64,
    /// Points left after dropping duplicates and degenerate points.
    pub kept: usize,
    pub duplicates: usize,
    pub degenerate: usize,
    /// Pairs the line was fitted on.
    pub fitted: usize,
}

/// A layer's measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub dimension: f64,
    /// Standard deviation over the 20 blocks (IDVL only).
    pub std: Option<f64>,
    /// The fit on all points (for IDVL, its block-1 fit).
    pub fit: Fit,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TwoNnError {
    #[error(
        "no pair left to fit: {kept} of {points} points remain after dropping {duplicates} duplicates and {degenerate} degenerate points"
    )]
    NothingToFit {
        points: usize,
        kept: usize,
        duplicates: usize,
        degenerate: usize,
    },
    #[error("at least 3 points are needed, got {0}")]
    TooFewPoints(usize),
    #[error(
        "the IDVL block analysis cuts the {points} samples into {blocks} blocks of {block} points, and one kept only {kept} distinct points where the fit needs 4: measure at least {needed} samples (`n`)"
    )]
    BlockTooSmall {
        points: usize,
        blocks: usize,
        block: usize,
        kept: usize,
        needed: usize,
    },
}

impl TwoNnError {
    /// Whether the representations themselves collapse (rather than too few samples).
    pub fn is_collapse(&self) -> bool {
        matches!(self, TwoNnError::NothingToFit { .. })
    }
}

/// The full Euclidean distance matrix of `points` (`[n, D]`), f64, by direct differences in
/// row blocks (memory: one `[rows, n, D]`-free pass per block; libtorch's non-matmul `cdist`).
pub fn distances(points: &Tensor) -> Tensor {
    let _g = tch::no_grad_guard();
    let x = points.to_kind(Kind::Double);
    let n = x.size()[0];
    let rows = 256;
    let parts: Vec<Tensor> = (0..n)
        .step_by(rows as usize)
        .map(|s| {
            // compute_mode 2 = "donot_use_mm_for_euclid_dist".
            Tensor::cdist(&x.narrow(0, s, rows.min(n - s)), &x, 2.0, 2)
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// (r₁, r₂) of every point of a square distance matrix: entries 1 and 2 of each sorted row
/// (entry 0 is the point itself).
pub fn neighbours(distances: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let (smallest, _) = distances.topk(3, 1, false, true);
    let col = |j: i64| {
        Vec::<f64>::try_from(smallest.select(1, j).to_device(Device::Cpu))
            .expect("f64 distances convert")
    };
    (col(1), col(2))
}

/// Fits the dimension from the neighbour distances (§1.1 steps 2–6; §1.2 for IDVL).
pub fn fit(r1: &[f64], r2: &[f64], estimator: Estimator) -> Result<Fit, TwoNnError> {
    let points = r1.len();
    let (mut duplicates, mut degenerate) = (0, 0);
    let mut mu: Vec<f64> = Vec::with_capacity(points);
    for (&a, &b) in r1.iter().zip(r2) {
        if a == 0.0 {
            duplicates += 1;
        } else if a == b {
            degenerate += 1;
        } else {
            mu.push(b / a);
        }
    }
    let kept = mu.len();
    mu.sort_by(f64::total_cmp);
    let pairs = kept.saturating_sub(2);
    let fitted = match estimator {
        Estimator::Reference { fraction } => ((kept as f64 * fraction).floor() as usize).min(pairs),
        Estimator::Idvl { .. } => {
            if kept <= 3 {
                0
            } else {
                pairs
            }
        }
    };
    if fitted == 0 {
        return Err(TwoNnError::NothingToFit {
            points,
            kept,
            duplicates,
            degenerate,
        });
    }
    let (mut xy, mut xx) = (0.0, 0.0);
    for (j, m) in mu.iter().take(fitted).enumerate() {
        let x = m.ln();
        let y = -(1.0 - (j + 1) as f64 / kept as f64).ln();
        xy += x * y;
        xx += x * x;
    }
    Ok(Fit {
        dimension: xy / xx,
        kept,
        duplicates,
        degenerate,
        fitted,
    })
}

/// The estimator on `points` (`[n, D]`).
pub fn measure(points: &Tensor, estimator: Estimator) -> Result<Measurement, TwoNnError> {
    let n = points.size()[0] as usize;
    if n < 3 {
        return Err(TwoNnError::TooFewPoints(n));
    }
    let d = distances(points);
    let (r1, r2) = neighbours(&d);
    let all = fit(&r1, &r2, estimator)?;
    let Estimator::Idvl { seed } = estimator else {
        return Ok(Measurement {
            dimension: all.dimension,
            std: None,
            fit: all,
        });
    };
    let (dims, std) = block_analysis(&d, seed)?;
    Ok(Measurement {
        dimension: dims.iter().sum::<f64>() / dims.len() as f64,
        std: Some(std),
        fit: all,
    })
}

/// §1.2 block analysis: for b = 1…20, a seeded permutation cut into b blocks of ⌊n/b⌋ points,
/// the IDVL fit on each block's sub-matrix. Returns the mean dimension per b and the standard
/// deviation (population, as numpy's default) over the blocks at b = 20.
pub fn block_analysis(distances: &Tensor, seed: u64) -> Result<(Vec<f64>, f64), TwoNnError> {
    let n = distances.size()[0] as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut dims = Vec::with_capacity(IDVL_BLOCKS);
    let mut last_std = 0.0;
    for b in 1..=IDVL_BLOCKS {
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let size = n / b;
        let mut per_block = Vec::with_capacity(b);
        for block in order.chunks_exact(size.max(1)).take(b) {
            let idx = Tensor::from_slice(block).to_device(distances.device());
            let sub = distances.index_select(0, &idx).index_select(1, &idx);
            let (r1, r2) = neighbours(&sub);
            let fitted = match fit(&r1, &r2, Estimator::Idvl { seed }) {
                Ok(f) => f,
                // Too small a block: say how many samples the whole analysis needs, scaling the
                // 4 points a fit needs by the fraction of the block that survived.
                Err(TwoNnError::NothingToFit { kept, .. }) if kept > 0 => {
                    let per_block = (4 * size).div_ceil(kept).max(4);
                    return Err(TwoNnError::BlockTooSmall {
                        points: n,
                        blocks: b,
                        block: size,
                        kept,
                        needed: per_block * IDVL_BLOCKS,
                    });
                }
                Err(e) => return Err(e),
            };
            per_block.push(fitted.dimension);
        }
        let mean = per_block.iter().sum::<f64>() / b as f64;
        last_std = (per_block.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / b as f64).sqrt();
        dims.push(mean);
    }
    Ok((dims, last_std))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_samples_for_the_block_analysis_says_how_many_are_needed() {
        // 60 distinct points: 20 blocks of 3, and a fit needs 4 kept points.
        let points = Tensor::randn([60, 5], (tch::Kind::Double, Device::Cpu));
        let e = measure(&points, Estimator::Idvl { seed: 0 }).unwrap_err();
        assert!(!e.is_collapse());
        let text = e.to_string();
        assert!(text.contains("measure at least 80 samples"), "{text}");
        assert!(
            measure(
                &Tensor::randn([80, 5], (tch::Kind::Double, Device::Cpu)),
                Estimator::Idvl { seed: 0 }
            )
            .is_ok()
        );
    }

    /// The spec's LCG (§1.6): the first value uses the state after one step from `seed`.
    fn lcg_points(seed: u64, n: usize, a: &[&[f64]]) -> Tensor {
        let mut s = seed;
        let k = a.len();
        let mut u = Vec::with_capacity(n * k);
        for _ in 0..n * k {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            u.push((s >> 11) as f64 / (1u64 << 53) as f64);
        }
        let a: Vec<f64> = a.iter().flat_map(|r| r.iter().copied()).collect();
        let dim = a.len() / k;
        Tensor::from_slice(&u)
            .view([n as i64, k as i64])
            .matmul(&Tensor::from_slice(&a).view([k as i64, dim as i64]))
    }

    fn plane() -> Tensor {
        lcg_points(
            42,
            500,
            &[&[1.0, 0.0, 1.0, 1.0, 0.5], &[0.0, 1.0, 1.0, -2.0, 0.0]],
        )
    }

    fn cube() -> Tensor {
        lcg_points(
            7,
            1000,
            &[
                &[1.0, 0.0, 0.0, 1.0, 0.0, 0.3],
                &[0.0, 1.0, 0.0, 0.0, 1.0, 0.7],
                &[0.0, 0.0, 1.0, 1.0, -1.0, 0.0],
            ],
        )
    }

    fn first_row(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.get(0)).unwrap()
    }

    #[test]
    fn spec_check_values() {
        let reference = Estimator::Reference { fraction: 0.9 };
        for (points, first, want_ref, want_idvl, kept, m) in [
            (
                plane(),
                vec![0.56823, 0.225463, 0.793694, 0.117303, 0.284115],
                1.894992,
                1.913849,
                500,
                450,
            ),
            (
                cube(),
                vec![0.493212, 0.95566, 0.906576, 1.399788, 0.049084, 0.816925],
                2.939809,
                2.879985,
                1000,
                900,
            ),
        ] {
            for (got, want) in first_row(&points).iter().zip(&first) {
                assert!((got - want).abs() < 1e-6, "{got} vs {want}");
            }
            let d = distances(&points);
            let (r1, r2) = neighbours(&d);
            let f = fit(&r1, &r2, reference).unwrap();
            assert_eq!((f.kept, f.fitted), (kept, m));
            assert!((f.dimension - want_ref).abs() < 1e-6, "{}", f.dimension);
            let f = fit(&r1, &r2, Estimator::Idvl { seed: 0 }).unwrap();
            assert_eq!(f.fitted, kept - 2);
            assert!((f.dimension - want_idvl).abs() < 1e-6, "{}", f.dimension);
        }
    }

    #[test]
    fn duplicates_are_neighbours_but_not_fitted() {
        let p = plane();
        // Rows 0 and 1 duplicated: four points with r₁ = 0; a point whose two nearest
        // neighbours are one such pair has r₁ = r₂ (degenerate).
        let with = Tensor::cat(&[p.shallow_clone(), p.narrow(0, 0, 2)], 0);
        let m = measure(&with, Estimator::Reference { fraction: 0.9 }).unwrap();
        assert_eq!(m.fit.duplicates, 4);
        assert_eq!(m.fit.kept + m.fit.degenerate, 498);
        let d = distances(&with);
        let (r1, r2) = neighbours(&d);
        let degenerate = (0..502).filter(|&i| r1[i] != 0.0 && r1[i] == r2[i]).count();
        assert_eq!(m.fit.degenerate, degenerate);
        // All copies of one point: nothing to fit, an error, not NaN.
        let same = Tensor::ones([5, 3], (Kind::Double, Device::Cpu));
        assert!(matches!(
            measure(&same, Estimator::Reference { fraction: 0.9 }),
            Err(TwoNnError::NothingToFit { duplicates: 5, .. })
        ));
    }

    #[test]
    fn idvl_block_one_equals_the_single_estimate() {
        let p = plane();
        let d = distances(&p);
        let (dims, std) = block_analysis(&d, 3).unwrap();
        assert_eq!(dims.len(), IDVL_BLOCKS);
        assert!((dims[0] - 1.913849).abs() < 1e-6);
        assert!(std > 0.0 && std.is_finite());
        // Seeded: the same seed gives the same blocks.
        assert_eq!(block_analysis(&d, 3).unwrap().0, dims);
    }
}
