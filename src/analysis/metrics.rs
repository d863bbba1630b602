//! Top-k accuracy and retrieval recall@k.

use tch::{Kind, Tensor};

/// Per sample, whether the label is among the `k` largest logits. `logits [N, C]`, `labels [N]`.
pub fn topk_hits(logits: &Tensor, labels: &Tensor, k: i64) -> Tensor {
    let k = k.min(logits.size()[1]);
    let (_, idx) = logits.topk(k, 1, true, true);
    idx.eq_tensor(&labels.unsqueeze(1)).any_dim(1, false)
}

/// Recall@k in both directions for `sim [images, texts]` where text `t` belongs to image
/// `owner[t]`. Image→text: an image counts when any of its captions ranks within the top k;
/// text→image: a caption counts when its image ranks within the top k.
pub fn retrieval_recall(sim: &Tensor, owner: &Tensor, ks: &[i64]) -> (Vec<f64>, Vec<f64>) {
    let (n_img, n_txt) = sim.size2().expect("similarity is [images, texts]");
    let mut i2t = Vec::new();
    let mut t2i = Vec::new();
    for &k in ks {
        let (_, top_t) = sim.topk(k.min(n_txt), 1, true, true); // [I, k] text indices
        let owners = owner
            .index_select(0, &top_t.flatten(0, 1))
            .view([n_img, -1]);
        let images = Tensor::arange(n_img, (Kind::Int64, sim.device())).unsqueeze(1);
        let hit = owners.eq_tensor(&images).any_dim(1, false);
        i2t.push(
            hit.to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[]),
        );
        let (_, top_i) = sim.tr().topk(k.min(n_img), 1, true, true); // [T, k]
        let hit = top_i.eq_tensor(&owner.unsqueeze(1)).any_dim(1, false);
        t2i.push(
            hit.to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[]),
        );
    }
    (i2t, t2i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_counts_ties_and_ranks() {
        let logits = Tensor::from_slice(&[0.1f32, 0.9, 0.0, 0.5, 0.2, 0.3]).view([2, 3]);
        let labels = Tensor::from_slice(&[1i64, 2]);
        let top1: Vec<bool> = Vec::try_from(&topk_hits(&logits, &labels, 1)).unwrap();
        let top2: Vec<bool> = Vec::try_from(&topk_hits(&logits, &labels, 2)).unwrap();
        assert_eq!(top1, vec![true, false]);
        assert_eq!(top2, vec![true, true]);
    }

    #[test]
    fn recall_on_a_known_similarity() {
        // 2 images, 3 captions: captions 0,1 → image 0, caption 2 → image 1.
        let sim = Tensor::from_slice(&[0.9f32, 0.1, 0.8, 0.2, 0.3, 0.1]).view([2, 3]);
        let owner = Tensor::from_slice(&[0i64, 0, 1]);
        let (i2t, t2i) = retrieval_recall(&sim, &owner, &[1, 2]);
        // image 0 top1 = caption 0 (hit); image 1 top1 = caption 1 (miss), top2 adds caption 0 (miss)
        assert_eq!(i2t, vec![0.5, 0.5]);
        // caption 0 → image 0 (hit); caption 1 → image 1 (0.3 > 0.1, miss); caption 2 → image 0 (miss)
        assert_eq!(t2i[0], 1.0 / 3.0);
        assert_eq!(t2i[1], 1.0);
    }
}
