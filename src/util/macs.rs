//! The multiply-accumulate cost model (spec structured-and-analysis.md §3.4, Kwon et al.'s
//! `efficiency/mac.py`): per attention head `3·s·d·d_h + 2·s²·d_h + s·d_h·d`, per MLP neuron
//! `2·s·d`, with `s` tokens, width `d` and head width `d_h`. Biases, LayerNorms, softmax,
//! activations, embeddings and projections are excluded, as the reference excludes them; the
//! whole-tower count ([`tower`]) adds the patch embedding and the output projection, for the
//! efficiency columns.
//!
//! Pure integer arithmetic, shared by the planner (budget checks) and the pruning and
//! evaluation stages. `s` is always an argument: the token count comes from the model config
//! (`(image_size / patch_size)² + 1`), never from a constant.

use super::clip_config::LayerShape;

/// The cost of one attention head and one MLP neuron at a token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitCost {
    pub head: i64,
    pub neuron: i64,
}

/// Unit costs for `tokens` tokens of width `d` with heads `head_dim` wide.
pub fn unit_cost(tokens: i64, d: i64, head_dim: i64) -> UnitCost {
    let s = tokens;
    UnitCost {
        head: 3 * s * d * head_dim + 2 * s * s * head_dim + s * head_dim * d,
        neuron: 2 * s * d,
    }
}

/// The encoder's cost with `heads` and `neurons` kept in total (the §3.4 count over all layers).
pub fn encoder(cost: UnitCost, heads: i64, neurons: i64) -> i64 {
    heads * cost.head + neurons * cost.neuron
}

/// One encoder layer of any shape: Q, K, V and `out_proj` over its inner width, the two
/// attention products, and `fc1` + `fc2`.
pub fn layer(tokens: i64, d: i64, shape: &LayerShape) -> i64 {
    let s = tokens;
    let inner = shape.heads * shape.head_dim;
    4 * s * d * inner + 2 * s * s * inner + 2 * s * d * shape.intermediate_size
}

/// A tower per input: its encoder layers plus `extra` (the patch embedding and the projection of
/// the pooled row), for a model as it runs (after depth or structured pruning).
pub fn tower(tokens: i64, d: i64, shapes: &[LayerShape], extra: i64) -> i64 {
    shapes.iter().map(|s| layer(tokens, d, s)).sum::<i64>() + extra
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(tokens: i64) -> (UnitCost, i64) {
        let c = unit_cost(tokens, 768, 64);
        (c, encoder(c, 12 * 12, 12 * 3072))
    }

    /// Spec §7.2: the table of §3.4, exactly.
    #[test]
    fn reproduces_the_reference_table() {
        for (s, head, neuron, all) in [
            (50, 10_150_400, 76_800, 4_292_812_800),
            (197, 43_699_328, 302_592, 17_447_454_720),
            (200, 44_441_600, 307_200, 17_724_211_200),
        ] {
            let (c, f) = full(s);
            assert_eq!((c.head, c.neuron, f), (head, neuron, all), "s = {s}");
            // ratio = 128 + s/12 for d = 768, d_h = 64
            let ratio = c.head as f64 / c.neuron as f64;
            assert!((ratio - (128.0 + s as f64 / 12.0)).abs() < 1e-9);
        }
        let share = |s| {
            let (c, f) = full(s);
            144.0 * c.head as f64 / f as f64
        };
        assert_eq!(format!("{:.1}", 100.0 * share(50)), "34.0");
        assert_eq!(format!("{:.1}", 100.0 * share(200)), "36.1");
        assert_eq!(format!("{:.1}", 100.0 * share(197)), "36.1");
    }

    /// The per-layer count of a whole layer is the unit model's count of its heads and neurons.
    #[test]
    fn a_layer_is_its_heads_and_neurons() {
        let shape = LayerShape {
            heads: 5,
            head_dim: 64,
            intermediate_size: 1000,
            attention_scale: None,
        };
        let c = unit_cost(50, 768, 64);
        assert_eq!(layer(50, 768, &shape), encoder(c, 5, 1000));
    }
}
