//! SparseGPT (spec §6): OBS-style pruning with the lazy block update, given the layer-input
//! Hessian `H = (2/N) Σ_n X_nᵀ X_n`. Operates on one `[R, C]` matrix; fp32.

use super::mask::{self, Pattern};
use rayon::prelude::*;
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

/// §6.2: `W` as fp32 with dead columns zeroed, and the upper Cholesky factor `U` of the damped
/// `H⁻¹`. `Err` when `H` is not positive definite even after damping.
pub fn prepare(w: &Tensor, h: &Tensor, percdamp: f64) -> Result<(Tensor, Tensor), String> {
    let c = w.size2().expect("weight is [R, C]").1;
    let mut w = w.to_kind(Kind::Float).copy();
    let h = h.to_kind(Kind::Float).copy();
    // Dead inputs (a feature that is always 0): unit diagonal, and the column is zeroed.
    let dead = h.diagonal(0, 0, 1).eq(0.0);
    let _ = h.diagonal(0, 0, 1).masked_fill_(&dead, 1.0);
    let _ = w.masked_fill_(&dead.view([1, c]), 0.0);
    let damp = percdamp * h.diagonal(0, 0, 1).mean(Kind::Float).double_value(&[]);
    let _ = h.diagonal(0, 0, 1).g_add_scalar_(damp);
    let (lower, info) = h.linalg_cholesky_ex(false, false);
    if info.int64_value(&[]) != 0 {
        return Err(format!(
            "the Hessian is not positive definite after {percdamp} damping (Cholesky failed at column {})",
            info.int64_value(&[])
        ));
    }
    let hinv = lower.cholesky_inverse(false);
    let (u, info) = hinv.linalg_cholesky_ex(true, false);
    if info.int64_value(&[]) != 0 {
        return Err("the inverse Hessian is not positive definite".into());
    }
    Ok((w, u))
}

/// Prunes `w` (`[R, C]`) with Hessian `h` (`[C, C]`). Returns the updated weights (pruned
/// entries exactly 0; so are dead columns, which the mask does not count) and the mask. `Err`
/// when `H` is not positive definite even after damping.
pub fn prune(
    w: &Tensor,
    h: &Tensor,
    pattern: Pattern,
    settings: Settings,
) -> Result<(Tensor, Tensor), String> {
    let (r, c) = w.size2().expect("weight is [R, C]");
    let (w, u) = prepare(w, h, settings.percdamp)?;
    let device = w.device();
    let mask_all = Tensor::zeros([r, c], (Kind::Bool, device));
    let b = effective_blocksize(settings.blocksize, pattern);
    let mut i1 = 0;
    while i1 < c {
        let i2 = (i1 + b).min(c);
        let width = i2 - i1;
        let mut block = Block {
            w: host(&w.narrow(1, i1, width)),
            u: host(&u.narrow(0, i1, width).narrow(1, i1, width)),
            width: width as usize,
            mask: vec![false; (r * width) as usize],
            errors: vec![0.0; (r * width) as usize],
        };
        block.prune(pattern);
        let on_device = |v: &[f32]| Tensor::from_slice(v).view([r, width]).to_device(device);
        w.narrow(1, i1, width).copy_(&on_device(&block.w));
        let mask = Tensor::from_slice(&block.mask).view([r, width]);
        mask_all.narrow(1, i1, width).copy_(&mask);
        if i2 < c {
            let rest = u.narrow(0, i1, width).narrow(1, i2, c - i2);
            let _ = w
                .narrow(1, i2, c - i2)
                .g_sub_(&on_device(&block.errors).matmul(&rest));
        }
        i1 = i2;
    }
    Ok((w, mask_all))
}

/// A tensor's values, row-major, on the host.
fn host(t: &Tensor) -> Vec<f32> {
    Vec::try_from(t.contiguous().view([-1]).to_device(tch::Device::Cpu))
        .expect("float tensor to host")
}

/// One column block (§6.3 steps 2–3) on the host, row-major `[R, width]`.
///
/// Within a block a row's error only ever updates that row, so rows run independently and in
/// parallel; the reference's per-column tensor loop (kept as `make bench`'s baseline) spent most
/// of SparseGPT's time in per-column tensor calls. Each value is computed with the reference's
/// operations in its order (no fused multiply-add), so the results are the same bit for bit.
struct Block {
    /// `W₁`, left holding `Q₁`.
    w: Vec<f32>,
    /// `U₁`, `[width, width]`.
    u: Vec<f32>,
    width: usize,
    mask: Vec<bool>,
    /// `E₁`.
    errors: Vec<f32>,
}

impl Block {
    fn prune(&mut self, pattern: Pattern) {
        let width = self.width;
        let d: Vec<f32> = (0..width).map(|j| self.u[j * width + j]).collect();
        let d2: Vec<f32> = d.iter().map(|d| d * d).collect();
        let saliency = |v: f32, j: usize| (v * v) / d2[j];
        if let Pattern::Unstructured(s) = pattern {
            // Everything scoring at most the value at sorted index int(R·w·s) of the block's
            // saliencies. They are ≥ 0, so their bit patterns order as their values do.
            let bits: Vec<u32> = (self.w.chunks(width))
                .flat_map(|row| {
                    row.iter()
                        .enumerate()
                        .map(|(j, &v)| saliency(v, j).to_bits())
                })
                .collect();
            let k = mask::int_fraction(bits.len() as i64, s) as usize;
            let theta = *bits.clone().select_nth_unstable(k).1;
            for (m, b) in self.mask.iter_mut().zip(&bits) {
                *m = *b <= theta;
            }
        }
        let u = &self.u;
        self.w
            .par_chunks_mut(width)
            .zip(self.mask.par_chunks_mut(width))
            .zip(self.errors.par_chunks_mut(width))
            .for_each(|((w, mask), errors)| {
                for col in 0..width {
                    if let Pattern::NM { n, m } = pattern
                        && col as i64 % m == 0
                    {
                        let mut order: Vec<usize> = (col..col + m as usize).collect();
                        // Stable: ties go to the lower column.
                        order.sort_by(|&a, &b| saliency(w[a], a).total_cmp(&saliency(w[b], b)));
                        for &j in &order[..n as usize] {
                            mask[j] = true;
                        }
                    }
                    let v = w[col];
                    let q = if mask[col] { 0.0 } else { v };
                    let e = (v - q) / d[col];
                    let later = &u[col * width + col + 1..(col + 1) * width];
                    for (wj, uj) in w[col + 1..].iter_mut().zip(later) {
                        *wj -= e * uj;
                    }
                    w[col] = q;
                    errors[col] = e;
                }
            });
    }
}
