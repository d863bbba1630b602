//! SparseGPT (spec §6): OBS-style pruning with the lazy block update, given the layer-input
//! Hessian `H = (2/N) Σ_n X_nᵀ X_n`. Operates on one `[R, C]` matrix; fp32.

use super::mask::{self, Pattern};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Column block size `B` (for n:m rounded down to a multiple of m, Decision 2).
    pub blocksize: i64,
    /// Damping as a fraction of the mean Hessian diagonal.
    pub percdamp: f64,
}

/// The effective block size: `B` for unstructured, `m·⌊B/m⌋` (at least `m`) for n:m.
pub fn effective_blocksize(blocksize: i64, pattern: Pattern) -> i64 {
    match pattern {
        Pattern::Unstructured(_) => blocksize,
        Pattern::NM { m, .. } => (m * (blocksize / m)).max(m),
    }
}

/// Prunes `w` (`[R, C]`) with Hessian `h` (`[C, C]`). Returns the updated weights (pruned
/// entries exactly 0; so are dead columns, which the mask does not count) and the mask. `Err` when `H` is not positive definite
/// even after damping.
pub fn prune(
    w: &Tensor,
    h: &Tensor,
    pattern: Pattern,
    settings: Settings,
) -> Result<(Tensor, Tensor), String> {
    let (r, c) = w.size2().expect("weight is [R, C]");
    let mut w = w.to_kind(Kind::Float).copy();
    let h = h.to_kind(Kind::Float).copy();
    // Dead inputs (a feature that is always 0): unit diagonal, and the column is zeroed.
    let dead = h.diagonal(0, 0, 1).eq(0.0);
    let _ = h.diagonal(0, 0, 1).masked_fill_(&dead, 1.0);
    let _ = w.masked_fill_(&dead.view([1, c]), 0.0);
    let damp = settings.percdamp * h.diagonal(0, 0, 1).mean(Kind::Float).double_value(&[]);
    let _ = h.diagonal(0, 0, 1).g_add_scalar_(damp);
    let (lower, info) = h.linalg_cholesky_ex(false, false);
    if info.int64_value(&[]) != 0 {
        return Err(format!(
            "the Hessian is not positive definite after {} damping (Cholesky failed at column {})",
            settings.percdamp,
            info.int64_value(&[])
        ));
    }
    let hinv = lower.cholesky_inverse(false);
    let (u, info) = hinv.linalg_cholesky_ex(true, false);
    if info.int64_value(&[]) != 0 {
        return Err("the inverse Hessian is not positive definite".into());
    }
    let mask_all = Tensor::zeros([r, c], (Kind::Bool, w.device()));
    let b = effective_blocksize(settings.blocksize, pattern);
    let mut i1 = 0;
    while i1 < c {
        let i2 = (i1 + b).min(c);
        let width = i2 - i1;
        let w1 = w.narrow(1, i1, width).copy();
        let q1 = Tensor::zeros([r, width], (Kind::Float, w.device()));
        let e1 = Tensor::zeros([r, width], (Kind::Float, w.device()));
        let u1 = u.narrow(0, i1, width).narrow(1, i1, width);
        let d = u1.diagonal(0, 0, 1).copy();
        let d2 = d.square().view([1, width]);
        let mask1 = match pattern {
            Pattern::Unstructured(s) => {
                let saliency = w1.square() / &d2;
                let (sorted, _) = saliency.flatten(0, -1).sort(0, false);
                let theta = sorted.get(mask::int_fraction(r * width, s));
                saliency.le_tensor(&theta)
            }
            Pattern::NM { .. } => Tensor::zeros([r, width], (Kind::Bool, w.device())),
        };
        let diag: Vec<f32> = Vec::try_from(&d).expect("diagonal to host");
        for col in 0..width {
            if let Pattern::NM { n, m } = pattern
                && col % m == 0
            {
                let saliency = w1.narrow(1, col, m).square() / d2.narrow(1, col, m);
                let _ = mask1
                    .narrow(1, col, m)
                    .logical_or_(&mask::n_of_m(&saliency, n, m));
            }
            let v = w1.select(1, col);
            let q = v.masked_fill(&mask1.select(1, col), 0.0);
            let e = (&v - &q) / f64::from(diag[col as usize]);
            q1.select(1, col).copy_(&q);
            let rest = width - col;
            let _ = w1
                .narrow(1, col, rest)
                .g_sub_(&e.outer(&u1.select(0, col).narrow(0, col, rest)));
            e1.select(1, col).copy_(&e);
        }
        w.narrow(1, i1, width).copy_(&q1);
        mask_all.narrow(1, i1, width).copy_(&mask1);
        if i2 < c {
            let _ = w
                .narrow(1, i2, c - i2)
                .g_sub_(&e1.matmul(&u.narrow(0, i1, width).narrow(1, i2, c - i2)));
        }
        i1 = i2;
    }
    Ok((w, mask_all))
}
