//! Wanda (spec §5): score `|W_ij| · √a_j` with `a_j = (1/N) Σ_n Σ_t x²`, compared within each
//! output row (or each aligned n:m group of a row).

use super::mask::{self, Pattern};
use tch::Tensor;

/// The mask of `w` (`[R, C]`) given the input statistic `a` (`[C]`).
pub fn mask(w: &Tensor, a: &Tensor, pattern: Pattern) -> Tensor {
    let scores = w.abs() * a.sqrt().view([1, -1]);
    match pattern {
        Pattern::Unstructured(s) => mask::per_row(&scores, s),
        Pattern::NM { n, m } => mask::n_of_m(&scores, n, m),
    }
}
