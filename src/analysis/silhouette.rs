//! Silhouette score and SLS depth selection (spec structured-and-analysis.md §2.2–2.3).
//!
//! sᵢ = (bᵢ − aᵢ)/max(aᵢ, bᵢ) with aᵢ the mean Euclidean distance to the other members of i's
//! class and bᵢ the smallest mean distance to another class; sᵢ = 0 in a singleton class. The
//! score is the mean over all samples. f64 throughout, exact (no sampling).

use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SilhouetteError {
    #[error(
        "the silhouette needs 2 ≤ classes ≤ samples − 1; got {classes} classes over {samples} samples"
    )]
    ClassCount { classes: usize, samples: usize },
    #[error("the last block's silhouette score is {0:.4} < 0: no depth passes the criterion")]
    NegativeLastScore(f64),
}

/// Per-sample silhouette values of points `z` (`[n, k]`) under integer `labels` (`[n]`).
pub fn samples(z: &Tensor, labels: &[i64]) -> Result<Vec<f64>, SilhouetteError> {
    let _g = tch::no_grad_guard();
    let n = labels.len();
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() < 2 || classes.len() > n - 1 {
        return Err(SilhouetteError::ClassCount {
            classes: classes.len(),
            samples: n,
        });
    }
    let device = z.device();
    let z = z.to_kind(Kind::Double);
    let dense: Vec<i64> = labels
        .iter()
        .map(|l| classes.binary_search(l).expect("label listed") as i64)
        .collect();
    let y = Tensor::from_slice(&dense).to_device(device);
    let onehot = y.one_hot(classes.len() as i64).to_kind(Kind::Double);
    let d = Tensor::cdist(&z, &z, 2.0, 2);
    // Σ distance from each sample to each class, and class sizes.
    let sums = d.matmul(&onehot);
    let counts = onehot.sum_dim_intlist(0, false, Kind::Double);
    let own = y.view([-1, 1]);
    let own_count = counts.gather(0, &y, false);
    let intra = sums.gather(1, &own, false).view([-1]) / (&own_count - 1.0).clamp_min(1.0);
    let inter = (&sums / counts.view([1, -1]))
        .scatter_value(1, &own, f64::INFINITY)
        .amin(1, false);
    let s = (&inter - &intra) / intra.maximum(&inter);
    // Singletons score 0; so does a sample with a = b = 0 (NaN in the ratio).
    let s = s
        .nan_to_num(0.0, None, None)
        .masked_fill(&own_count.le(1.0), 0.0);
    Ok(Vec::<f64>::try_from(s.to_device(tch::Device::Cpu)).expect("f64 scores convert"))
}

/// The mean silhouette value.
pub fn score(z: &Tensor, labels: &[i64]) -> Result<f64, SilhouetteError> {
    let s = samples(z, labels)?;
    Ok(s.iter().sum::<f64>() / s.len() as f64)
}

/// Each column mapped to [0, 1] by (z − min)/(max − min) (SLS's per-axis scaling; a constant
/// column maps to 0).
pub fn min_max(z: &Tensor) -> Tensor {
    let min = z.amin(0, true);
    let range = z.amax(0, true) - &min;
    let range = range.where_self(&range.gt(0.0), &range.ones_like());
    (z - min) / range
}

/// SLS's depth (§2.2 step 3): scanning from the last block down, every block whose score is
/// ≥ α · the last block's score is reached; the depth is the shallowest block reached (blocks
/// 1…D kept). `scores[l]` belongs to block l + 1.
pub fn sls_depth(scores: &[f64], alpha: f64) -> Result<usize, SilhouetteError> {
    let last = *scores.last().expect("at least one block");
    if last < 0.0 {
        return Err(SilhouetteError::NegativeLastScore(last));
    }
    let threshold = alpha * last;
    let mut depth = scores.len();
    for (l, &s) in scores.iter().enumerate().rev().skip(1) {
        if s < threshold {
            break;
        }
        depth = l + 1;
    }
    Ok(depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_points() -> Tensor {
        let z = [
            0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 10.0, 10.0, 11.0, 10.0, 10.0, 14.0, 5.0, 30.0,
        ];
        Tensor::from_slice(&z).view([7, 2])
    }

    const LABELS: [i64; 7] = [0, 0, 0, 1, 1, 1, 2];

    #[test]
    fn spec_check_values() {
        let z = spec_points();
        assert!((score(&z, &LABELS).unwrap() - 0.7184882257950612).abs() < 1e-9);
        let scaled = min_max(&z);
        assert!((score(&scaled, &LABELS).unwrap() - 0.7466996600725846).abs() < 1e-9);
        let want = [
            0.922357, 0.890658, 0.909562, 0.861044, 0.853557, 0.78972, 0.0,
        ];
        for (got, want) in samples(&scaled, &LABELS).unwrap().iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn class_counts_are_checked() {
        let z = spec_points();
        assert!(samples(&z, &[0; 7]).is_err());
        assert!(samples(&z, &[0, 1, 2, 3, 4, 5, 6]).is_err());
    }

    #[test]
    fn depth_scan_stops_at_the_first_failure() {
        // Last 0.5 → threshold 0.15: blocks 12…9 pass, block 8 fails; block 5 would pass again.
        let mut s = vec![0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.2, 0.3, 0.4, 0.5];
        assert_eq!(sls_depth(&s, 0.3).unwrap(), 9);
        s[8] = 0.15;
        assert_eq!(
            sls_depth(&s, 0.3).unwrap(),
            9,
            "equal to the threshold passes"
        );
        assert_eq!(sls_depth(&s, 0.0).unwrap(), 1);
        s[11] = -0.01;
        assert!(sls_depth(&s, 0.3).is_err());
    }
}
