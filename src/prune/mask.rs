//! Which weights a method removes, given its scores (spec pruning-unstructured.md §5, §7): the
//! selection rules the methods share, and bit-packing for storage.
//!
//! Masks are boolean tensors shaped like the weight, `true` = pruned. Ties always resolve to the
//! lower column index (stable sorts), so masks are deterministic.

use rayon::prelude::*;
use std::cmp::Ordering;
use tch::{Device, Kind, Tensor};

/// Target sparsity pattern of a prune.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// A fraction `0 < s < 1` of the weights.
    Unstructured(f64),
    /// `n` zeros in every aligned group of `m` input columns.
    NM { n: i64, m: i64 },
}

impl Pattern {
    /// The fraction the pattern removes (n/m for n:m).
    pub fn fraction(self) -> f64 {
        match self {
            Pattern::Unstructured(s) => s,
            Pattern::NM { n, m } => n as f64 / m as f64,
        }
    }
}

/// `int(count · s)` exactly as Python truncates it (spec conventions).
pub fn int_fraction(count: i64, s: f64) -> i64 {
    ((count as f64) * s) as i64
}

/// Per-matrix threshold: prune every entry scoring ≤ the score at sorted index `int(count·s)`
/// (magnitude §7; `int(count·s) + 1` entries without ties).
pub fn threshold(scores: &Tensor, s: f64) -> Tensor {
    let flat = scores.flatten(0, -1);
    let k = int_fraction(flat.size()[0], s);
    let (sorted, _) = flat.sort(0, false);
    scores.le_tensor(&sorted.get(k))
}

/// Per output row: prune the `int(C·s)` lowest scores of every row (Wanda §5.3).
pub fn per_row(scores: &Tensor, s: f64) -> Tensor {
    let c = scores.size()[1];
    let k = int_fraction(c, s);
    lowest(scores, k)
}

/// In every row and every aligned group `[g, g+m)` of columns, prune the `n` lowest scores
/// (§5.4). The caller guarantees `C mod m = 0`.
pub fn n_of_m(scores: &Tensor, n: i64, m: i64) -> Tensor {
    let (r, c) = scores.size2().expect("scores are [R, C]");
    debug_assert_eq!(c % m, 0);
    lowest(&scores.view([r, c / m, m]), n).view([r, c])
}

/// The `k` lowest entries along the last dimension, ties to the lower index.
///
/// On the CPU a per-row selection (`select_nth`, linear time, rows in parallel) replaces the
/// full stable sort, which was a third of Wanda's run time on ViT-B/32; both give the same mask.
fn lowest(scores: &Tensor, k: i64) -> Tensor {
    if scores.device() == Device::Cpu {
        lowest_by_selection(scores, k)
    } else {
        lowest_by_sort(scores, k)
    }
}

fn lowest_by_sort(scores: &Tensor, k: i64) -> Tensor {
    let (_, order) = scores.sort_stable(true, -1, false);
    let mut mask = Tensor::zeros(scores.size(), (Kind::Bool, scores.device()));
    if k > 0 {
        let _ = mask.scatter_value_(-1, &order.narrow(-1, 0, k), 1);
    }
    mask
}

fn lowest_by_selection(scores: &Tensor, k: i64) -> Tensor {
    let shape = scores.size();
    let len = *shape.last().expect("scores have a last dimension") as usize;
    let values = Vec::<f32>::try_from(scores.to_kind(Kind::Float).contiguous().view([-1]))
        .expect("float scores convert to a vector");
    let mut mask = vec![false; values.len()];
    let k = k.clamp(0, len as i64) as usize;
    if k > 0 && len > 0 {
        // Tasks of whole rows, large enough that n:m's 4-wide groups do not drown in overhead.
        let rows_per_task = (1 << 14) / len + 1;
        mask.par_chunks_mut(len * rows_per_task)
            .zip(values.par_chunks(len * rows_per_task))
            .for_each(|(mask, values)| {
                let (mut keys, mut scratch) = (Vec::with_capacity(len), Vec::with_capacity(len));
                for (mask, row) in mask.chunks_mut(len).zip(values.chunks(len)) {
                    keys.clear();
                    keys.extend(row.iter().map(|&v| order_key(v)));
                    mark_lowest(&keys, k, mask, &mut scratch);
                }
            });
    }
    Tensor::from_slice(&mask).view(shape.as_slice())
}

/// An integer with the order of `f32::total_cmp` (sign-magnitude bits mapped to an unsigned
/// order), so the selection compares integers. `-0.0` maps to the key of `0.0`: the sort ties
/// them.
fn order_key(v: f32) -> u32 {
    let b = (v + 0.0).to_bits();
    if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
}

/// Marks the `k` lowest values of `row` (ties to the lower index) in `mask`.
fn mark_lowest(row: &[u32], k: usize, mask: &mut [bool], scratch: &mut Vec<u32>) {
    scratch.clear();
    scratch.extend_from_slice(row);
    let kth = *scratch.select_nth_unstable(k - 1).1;
    let below = row.iter().filter(|&&v| v < kth).count();
    let mut ties = k - below;
    for (m, v) in mask.iter_mut().zip(row) {
        match v.cmp(&kth) {
            Ordering::Less => *m = true,
            Ordering::Equal if ties > 0 => {
                *m = true;
                ties -= 1;
            }
            _ => {}
        }
    }
}

/// A boolean mask → `ceil(numel / 8)` bytes, element `i` (row-major) in bit `i % 8` of byte
/// `i / 8`.
pub fn pack(mask: &Tensor) -> Tensor {
    let flat = mask.flatten(0, -1).to_kind(Kind::Uint8);
    let n = flat.size()[0];
    let padded = Tensor::cat(
        &[
            flat,
            Tensor::zeros([(8 - n % 8) % 8], (Kind::Uint8, mask.device())),
        ],
        0,
    );
    let weights = Tensor::from_slice(&[1u8, 2, 4, 8, 16, 32, 64, 128]).to_device(mask.device());
    (padded.view([-1, 8]) * weights)
        .sum_dim_intlist(1, false, Kind::Int64)
        .to_kind(Kind::Uint8)
}

/// Inverse of [`pack`] for a mask of `shape`.
pub fn unpack(packed: &Tensor, shape: &[i64]) -> Tensor {
    let numel: i64 = shape.iter().product();
    let weights = Tensor::from_slice(&[1u8, 2, 4, 8, 16, 32, 64, 128]).to_device(packed.device());
    packed
        .view([-1, 1])
        .bitwise_and_tensor(&weights.view([1, 8]))
        .ne(0)
        .flatten(0, -1)
        .narrow(0, 0, numel)
        .view(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
    }

    fn bools(m: &Tensor) -> Vec<bool> {
        Vec::<bool>::try_from(m.flatten(0, -1)).unwrap()
    }

    #[test]
    fn threshold_prunes_int_count_plus_one_and_ties() {
        let s = t(&[&[5.0, 1.0, 3.0, 2.0], &[4.0, 7.0, 6.0, 0.5]]);
        // int(8·0.5) = 4 → sorted[4] = 4.0: prunes 0.5, 1, 2, 3, 4.
        assert_eq!(
            bools(&threshold(&s, 0.5)),
            [false, true, true, true, true, false, false, true]
        );
        let ties = t(&[&[1.0, 1.0, 1.0, 2.0]]);
        assert_eq!(bools(&threshold(&ties, 0.25)), [true, true, true, false]);
    }

    #[test]
    fn per_row_breaks_ties_by_lower_column() {
        let s = t(&[&[2.0, 1.0, 1.0, 1.0], &[0.0, 3.0, 2.0, 1.0]]);
        assert_eq!(
            bools(&per_row(&s, 0.5)),
            [false, true, true, false, true, false, false, true]
        );
    }

    #[test]
    fn n_of_m_groups_are_aligned() {
        let s = t(&[&[4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 9.0, 0.0]]);
        assert_eq!(
            bools(&n_of_m(&s, 2, 4)),
            [false, false, true, true, true, false, false, true]
        );
    }

    #[test]
    fn selection_equals_the_stable_sort() {
        tch::manual_seed(3);
        for (shape, k) in [
            ([64i64, 768], 384),
            ([3, 4], 2),
            ([5, 7], 0),
            ([5, 7], 7),
            ([9, 33], 1),
        ] {
            // Few distinct values (and signed zeros) so ties are everywhere.
            let s = (Tensor::rand(shape, (Kind::Float, Device::Cpu)) * 4.0).floor() - 1.0;
            let s = s.abs() * Tensor::randn(shape, (Kind::Float, Device::Cpu)).sign();
            assert!(
                lowest_by_selection(&s, k).equal(&lowest_by_sort(&s, k)),
                "{shape:?} k={k}"
            );
        }
    }

    #[test]
    fn pack_round_trips_odd_sizes() {
        tch::manual_seed(1);
        for shape in [[3i64, 5], [8, 8], [1, 1], [7, 13]] {
            let m = Tensor::rand(shape, (Kind::Float, tch::Device::Cpu)).lt(0.4);
            let p = pack(&m);
            assert_eq!(p.size()[0], (shape[0] * shape[1] + 7) / 8);
            assert!(unpack(&p, &shape).equal(&m));
        }
        // Bit order: element 0 → bit 0.
        let m = Tensor::from_slice(&[true, false, false, true, false, false, false, false, true]);
        assert_eq!(Vec::<u8>::try_from(pack(&m)).unwrap(), [0b1001, 1]);
    }
}
