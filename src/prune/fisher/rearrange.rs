//! Per-layer mask rearrangement (spec structured-and-analysis.md §3.6, KW `greedy_rearrange`):
//! keeps a layer's unit count and swaps which units are pruned, greedily lowering the
//! second-order loss increase `½‖Σ_{j∈P} v_j‖²` of the pruned set `P`, where `v_j` is unit `j`'s
//! vector of mini-batch gradients.

/// The new kept flags of one layer. `grads[b][j]` is the gradient of batch `b` for unit `j`;
/// `kept` gives the count only (which units the search picked does not matter, as in the
/// reference). f64 throughout; ties go to the first unit in the reference's list order.
pub fn rearrange(kept: &[bool], grads: &[Vec<f64>]) -> Vec<bool> {
    let units = kept.len();
    let n_prune = kept.iter().filter(|k| !**k).count();
    if n_prune == 0 || n_prune == units {
        return kept.to_vec();
    }
    let nb = grads.len();
    // One gradient vector per unit.
    let v: Vec<Vec<f64>> = (0..units)
        .map(|j| grads.iter().map(|g| g[j]).collect())
        .collect();
    let norm2 = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>();
    let mut order: Vec<usize> = (0..units).collect();
    order.sort_by(|&a, &b| norm2(&v[a]).total_cmp(&norm2(&v[b])));
    let mut pruned: Vec<usize> = order[..n_prune].to_vec();
    let mut sum = vec![0.0; nb];
    for &j in &pruned {
        for (s, x) in sum.iter_mut().zip(&v[j]) {
            *s += x;
        }
    }
    for &candidate in &order[n_prune..] {
        pruned.push(candidate);
        for (s, x) in sum.iter_mut().zip(&v[candidate]) {
            *s += x;
        }
        // The cost of pruning P∖{j}: ‖Σ_P v − v_j‖².
        let (mut best, mut best_cost) = (0, f64::INFINITY);
        for (pos, &j) in pruned.iter().enumerate() {
            let cost: f64 = sum.iter().zip(&v[j]).map(|(s, x)| (s - x) * (s - x)).sum();
            if cost < best_cost {
                (best, best_cost) = (pos, cost);
            }
        }
        let removed = pruned.remove(best);
        for (s, x) in sum.iter_mut().zip(&v[removed]) {
            *s -= x;
        }
    }
    let mut out = vec![true; units];
    for j in pruned {
        out[j] = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §7.7.
    #[test]
    fn toy_from_the_spec() {
        let grads = vec![
            vec![0.9, -0.85, 0.1, 0.3, -0.25, 0.05],
            vec![0.7, -0.9, 0.2, -0.3, 0.30, 0.02],
            vec![-0.8, 0.7, 0.1, 0.2, -0.20, -0.04],
            vec![0.6, -0.6, -0.3, 0.1, 0.35, 0.01],
        ];
        let fisher: Vec<f64> = (0..6)
            .map(|j| grads.iter().map(|g| g[j] * g[j]).sum())
            .collect();
        for (f, want) in fisher.iter().zip([2.3, 2.3825, 0.15, 0.23, 0.315, 0.0046]) {
            assert!((f - want).abs() < 1e-12, "{fisher:?}");
        }
        let kept = [true, true, false, false, true, false];
        assert_eq!(
            rearrange(&kept, &grads),
            [true, true, false, false, false, true]
        );
        // Nothing to swap when a layer keeps everything or nothing.
        assert_eq!(rearrange(&[true; 6], &grads), [true; 6]);
        assert_eq!(rearrange(&[false; 6], &grads), [false; 6]);
    }
}
