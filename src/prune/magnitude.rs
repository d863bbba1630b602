//! Magnitude pruning (spec §7): per matrix, no calibration data.

use super::mask::{self, Pattern};
use tch::Tensor;

/// The mask of `w` (`[R, C]`): the smallest `|W|` of the matrix, or per aligned n:m group.
pub fn mask(w: &Tensor, pattern: Pattern) -> Tensor {
    let scores = w.abs();
    match pattern {
        Pattern::Unstructured(s) => mask::threshold(&scores, s),
        Pattern::NM { n, m } => mask::n_of_m(&scores, n, m),
    }
}
