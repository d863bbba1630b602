//! Exact t-SNE to two dimensions with scikit-learn's (≥ 1.2) defaults and PCA initialisation
//! (spec structured-and-analysis.md §2.3, Decision d): perplexity 30, early exaggeration 12 for
//! the first 250 iterations at momentum 0.5, then momentum 0.8 up to 1000 iterations, learning
//! rate max(n/12/4, 50), per-coordinate gains (min 0.01), progress checked every 50 iterations
//! (stop after 300 without progress, or when the gradient norm drops below 1e-7).
//!
//! Invariants: everything is f64; there is no randomness (PCA by exact SVD with scikit-learn's
//! sign convention) and every reduction has a fixed order, so the embedding is a function of the
//! input. The O(n²) exact gradient replaces the library's Barnes–Hut approximation (fine for
//! n ≤ 2000). Affinities are computed with libtorch on the input's device; the descent runs on
//! the host as one fused parallel pass over the pairs per iteration (tensor ops materialised
//! five n × n temporaries per step and were 50× slower on the CPU).

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

const MACHINE_EPSILON: f64 = f64::EPSILON;
const EXPLORATION_ITERATIONS: i64 = 250;
const CHECK_EVERY: i64 = 50;
const PERPLEXITY_TOLERANCE: f64 = 1e-5;
const PERPLEXITY_STEPS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub perplexity: f64,
    pub early_exaggeration: f64,
    pub max_iter: i64,
    pub iterations_without_progress: i64,
    pub min_grad_norm: f64,
    pub min_gain: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            perplexity: 30.0,
            early_exaggeration: 12.0,
            max_iter: 1000,
            iterations_without_progress: 300,
            min_grad_norm: 1e-7,
            min_gain: 0.01,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TsneError {
    #[error("t-SNE needs more points than 3·perplexity ({perplexity}), got {points}")]
    TooFewPoints { points: i64, perplexity: f64 },
}

/// The embedding and the final KL divergence.
pub struct Embedding {
    pub points: Tensor,
    pub kl_divergence: f64,
    pub iterations: i64,
}

/// Embeds `x` (`[n, D]`) in two dimensions.
pub fn embed(x: &Tensor, settings: Settings) -> Result<Embedding, TsneError> {
    let _g = tch::no_grad_guard();
    let x = x.to_kind(Kind::Double);
    let n = x.size()[0];
    // scikit-learn's own check (perplexity must be below the number of samples).
    if (n as f64) <= settings.perplexity {
        return Err(TsneError::TooFewPoints {
            points: n,
            perplexity: settings.perplexity,
        });
    }
    let p = joint_probabilities(&squared_distances(&x), settings.perplexity);
    let y = pca_init(&x);
    let host = |t: Tensor| Vec::<f64>::try_from(t.to_device(Device::Cpu).flatten(0, -1));
    let learning_rate = (n as f64 / settings.early_exaggeration / 4.0).max(50.0);
    let mut descent = Descent {
        p: host(p).expect("f64 probabilities convert"),
        n: n as usize,
        y: host(y).expect("f64 embedding converts"),
        exaggeration: settings.early_exaggeration,
        learning_rate,
        settings,
    };
    let (_, last) = descent.run(0, EXPLORATION_ITERATIONS, 0.5, EXPLORATION_ITERATIONS);
    descent.exaggeration = 1.0;
    let (kl_divergence, last) = descent.run(
        last + 1,
        settings.max_iter,
        0.8,
        settings.iterations_without_progress,
    );
    Ok(Embedding {
        points: Tensor::from_slice(&descent.y).view([n, 2]),
        kl_divergence,
        iterations: last + 1,
    })
}

/// `‖xᵢ − xⱼ‖²` for every pair (f64).
fn squared_distances(x: &Tensor) -> Tensor {
    let sq = x.square().sum_dim_intlist(1, true, Kind::Double);
    (&sq + sq.tr() - x.matmul(&x.tr()) * 2.0).clamp_min(0.0)
}

/// Conditional probabilities with a per-point bandwidth found by bisection on β = 1/(2σ²) to
/// the target perplexity (scikit-learn's `_binary_search_perplexity`, vectorised over rows: a
/// row stops updating once within tolerance), then symmetrised and normalised.
fn joint_probabilities(d2: &Tensor, perplexity: f64) -> Tensor {
    let n = d2.size()[0];
    let opts = (Kind::Double, d2.device());
    let off_diagonal = Tensor::eye(n, opts).logical_not();
    let desired_entropy = perplexity.ln();
    let mut beta = Tensor::ones([n, 1], opts);
    let mut beta_min = Tensor::full([n, 1], f64::NEG_INFINITY, opts);
    let mut beta_max = Tensor::full([n, 1], f64::INFINITY, opts);
    let mut active = Tensor::ones([n, 1], (Kind::Bool, d2.device()));
    let mut conditional = Tensor::zeros([n, n], opts);
    for _ in 0..PERPLEXITY_STEPS {
        let p = (-(d2 * &beta)).exp() * &off_diagonal;
        let sum = p.sum_dim_intlist(1, true, Kind::Double).clamp_min(1e-8);
        let p = p / &sum;
        let entropy = sum.log() + &beta * (d2 * &p).sum_dim_intlist(1, true, Kind::Double);
        let diff = entropy - desired_entropy;
        conditional = p.where_self(&active, &conditional);
        let converged = diff.abs().le(PERPLEXITY_TOLERANCE);
        active = active.logical_and(&converged.logical_not());
        if !bool::try_from(active.any()).expect("scalar bool") {
            break;
        }
        // Entropy too high → narrower kernel (larger β), else wider.
        let high = diff.gt(0.0).logical_and(&active);
        let low = diff.le(0.0).logical_and(&active);
        beta_min = beta.where_self(&high, &beta_min);
        beta_max = beta.where_self(&low, &beta_max);
        let up = (&beta * 2.0).where_self(&beta_max.isinf(), &((&beta + &beta_max) / 2.0));
        let down = (&beta / 2.0).where_self(&beta_min.isinf(), &((&beta + &beta_min) / 2.0));
        beta = up.where_self(&high, &down.where_self(&low, &beta));
    }
    let p = &conditional + conditional.tr();
    let total = p.sum(Kind::Double).clamp_min(MACHINE_EPSILON);
    (p / total).clamp_min(MACHINE_EPSILON) * off_diagonal
}

/// The first two principal components, signs fixed as scikit-learn's `svd_flip` (largest
/// loading positive), scaled so the first coordinate has standard deviation 1e-4.
fn pca_init(x: &Tensor) -> Tensor {
    let centred = x - x.mean_dim(0, true, Kind::Double);
    let (u, s, v) = centred.svd(true, true);
    let (u, s, vt) = (u.narrow(1, 0, 2), s.narrow(0, 0, 2), v.narrow(1, 0, 2).tr());
    let largest = vt.abs().argmax(1, true);
    let signs = vt.gather(1, &largest, false).sign().view([1, 2]);
    let y = u * s.view([1, 2]) * signs;
    let std = y.select(1, 0).std(false);
    y / std * 1e-4
}

/// The optimisation state on the host: P (`n × n`, zero diagonal), the embedding (`n × 2`,
/// row-major) and the learning rate.
struct Descent {
    p: Vec<f64>,
    n: usize,
    y: Vec<f64>,
    exaggeration: f64,
    learning_rate: f64,
    settings: Settings,
}

/// One row's share of the gradient: Σⱼ pᵢⱼwᵢⱼ(yᵢ − yⱼ), Σⱼ wᵢⱼ²(yᵢ − yⱼ), Σⱼ wᵢⱼ, and for the
/// error Σⱼ pᵢⱼ(ln pᵢⱼ − ln wᵢⱼ) and Σⱼ pᵢⱼ.
#[derive(Default, Clone, Copy)]
struct RowTerms {
    attraction: [f64; 2],
    repulsion: [f64; 2],
    z: f64,
    entropy: f64,
    mass: f64,
}

impl Descent {
    /// KL(P‖Q) (when asked) and its gradient, with Student-t affinities wᵢⱼ = 1/(1 + ‖yᵢ − yⱼ‖²)
    /// and Q = w / Σw: ∂KL/∂yᵢ = 4 Σⱼ (pᵢⱼ − qᵢⱼ) wᵢⱼ (yᵢ − yⱼ). One parallel pass over the pairs.
    fn objective(&self, error: bool) -> (f64, Vec<f64>) {
        let (n, y, e) = (self.n, &self.y, self.exaggeration);
        let rows: Vec<RowTerms> = (0..n)
            .into_par_iter()
            .map(|i| {
                let (yi0, yi1) = (y[2 * i], y[2 * i + 1]);
                let prow = &self.p[i * n..(i + 1) * n];
                let mut t = RowTerms::default();
                for j in (0..n).filter(|&j| j != i) {
                    let (d0, d1) = (yi0 - y[2 * j], yi1 - y[2 * j + 1]);
                    let w = 1.0 / (1.0 + d0 * d0 + d1 * d1);
                    let p = prow[j] * e;
                    t.attraction[0] += p * w * d0;
                    t.attraction[1] += p * w * d1;
                    t.repulsion[0] += w * w * d0;
                    t.repulsion[1] += w * w * d1;
                    t.z += w;
                    if error {
                        t.entropy += p * (p.ln() - w.ln());
                        t.mass += p;
                    }
                }
                t
            })
            .collect();
        let z: f64 = rows.iter().map(|t| t.z).sum();
        let kl = if error {
            rows.iter().map(|t| t.entropy).sum::<f64>()
                + z.ln() * rows.iter().map(|t| t.mass).sum::<f64>()
        } else {
            f64::NAN
        };
        let grad = rows
            .iter()
            .flat_map(|t| (0..2).map(move |k| 4.0 * (t.attraction[k] - t.repulsion[k] / z)))
            .collect();
        (kl, grad)
    }

    /// Gradient descent with momentum and gains from iteration `start` to `end` (exclusive), as
    /// scikit-learn's `_gradient_descent`; returns the last error computed and the last
    /// iteration run.
    fn run(&mut self, start: i64, end: i64, momentum: f64, patience: i64) -> (f64, i64) {
        let mut update = vec![0.0; self.y.len()];
        let mut gains = vec![1.0; self.y.len()];
        let (mut best_error, mut best_iter) = (f64::MAX, start);
        let mut error = f64::MAX;
        let mut i = start;
        while i < end {
            let check = (i + 1) % CHECK_EVERY == 0;
            let (kl, mut grad) = self.objective(check || i == end - 1);
            for k in 0..grad.len() {
                // A gain grows while the step keeps reversing the gradient's sign, else shrinks.
                let gain: f64 = if update[k] * grad[k] < 0.0 {
                    gains[k] + 0.2
                } else {
                    gains[k] * 0.8
                };
                gains[k] = gain.max(self.settings.min_gain);
                grad[k] *= gains[k];
                update[k] = momentum * update[k] - self.learning_rate * grad[k];
                self.y[k] += update[k];
            }
            if check || i == end - 1 {
                error = kl;
            }
            if check {
                if error < best_error {
                    (best_error, best_iter) = (error, i);
                } else if i - best_iter > patience {
                    break;
                }
                let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
                if norm <= self.settings.min_grad_norm {
                    break;
                }
            }
            i += 1;
        }
        (error, i.min(end - 1))
    }
}
