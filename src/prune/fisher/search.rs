//! The MAC-constrained mask search (spec structured-and-analysis.md §3.5, KW `search_mac`): rank
//! every head and every neuron of the tower globally by Fisher information; for each head count
//! `n_h`, spend the rest of the budget on the top neurons; keep the candidate with the largest
//! summed Fisher information (strict improvement, so ties keep the fewest heads).
//!
//! Project rule (§6a): only head counts whose heads alone fit the budget are considered, and a
//! search with no feasible or no informative candidate is an error. [`Feasibility::Reference`]
//! reproduces the reference, which clamps the neuron count at 0 and can return an over-budget
//! model (parity tests only).

use crate::util::macs::{self, UnitCost};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feasibility {
    /// Head counts over the budget are skipped (the project's rule).
    Project,
    /// The reference's loop: the neuron count clamps at 0, the result may exceed the budget.
    Reference,
}

/// The search's choice: which units are kept (row-major `[L, H]` and `[L, I]` flags) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub heads: Vec<bool>,
    pub neurons: Vec<bool>,
    pub kept_heads: usize,
    pub kept_neurons: usize,
    /// Summed Fisher information of the kept units.
    pub importance: f64,
    /// The encoder MACs of the kept units.
    pub macs: i64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SearchError {
    #[error("the MAC constraint must be in (0, 1), got {0}")]
    Constraint(f64),
    #[error(
        "a budget of {budget:.0} MACs cannot hold even one attention head ({head} MACs): the smallest model keeps one head"
    )]
    Infeasible { budget: f64, head: i64 },
    #[error(
        "every head and neuron has zero Fisher information: the loss does not depend on the masks"
    )]
    NoInformation,
}

/// Indices sorted by descending value; ties keep index order.
fn ranked(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order
}

fn prefix_sums(values: &[f64], order: &[usize]) -> Vec<f64> {
    let mut sums = Vec::with_capacity(order.len() + 1);
    sums.push(0.0);
    for &i in order {
        sums.push(sums.last().unwrap() + values[i]);
    }
    sums
}

/// Searches masks for `head_fisher` (`[L·H]`) and `neuron_fisher` (`[L·I]`) that keep at most
/// `constraint` of the full encoder's MACs.
pub fn search(
    head_fisher: &[f64],
    neuron_fisher: &[f64],
    cost: UnitCost,
    constraint: f64,
    feasibility: Feasibility,
) -> Result<Selection, SearchError> {
    if !(constraint > 0.0 && constraint < 1.0) {
        return Err(SearchError::Constraint(constraint));
    }
    let full = macs::encoder(cost, head_fisher.len() as i64, neuron_fisher.len() as i64);
    let budget = constraint * full as f64;
    let (head_order, neuron_order) = (ranked(head_fisher), ranked(neuron_fisher));
    let (head_sums, neuron_sums) = (
        prefix_sums(head_fisher, &head_order),
        prefix_sums(neuron_fisher, &neuron_order),
    );
    let mut best: Option<(usize, usize, f64)> = None;
    let mut feasible = false;
    for (n_h, head_sum) in head_sums.iter().enumerate().skip(1) {
        let heads_mac = (n_h as i64 * cost.head) as f64;
        if feasibility == Feasibility::Project && heads_mac > budget {
            break;
        }
        feasible = true;
        // The reference truncates toward zero and clamps at 0 and at the neuron count.
        let n_n = (((budget - heads_mac) / cost.neuron as f64) as i64).max(0) as usize;
        let n_n = n_n.min(neuron_fisher.len());
        let importance = head_sum + neuron_sums[n_n];
        if importance > best.map_or(0.0, |b| b.2) {
            best = Some((n_h, n_n, importance));
        }
    }
    if !feasible {
        return Err(SearchError::Infeasible {
            budget,
            head: cost.head,
        });
    }
    let (n_h, n_n, importance) = best.ok_or(SearchError::NoInformation)?;
    let flags = |len: usize, order: &[usize], n: usize| {
        let mut kept = vec![false; len];
        for &i in &order[..n] {
            kept[i] = true;
        }
        kept
    };
    Ok(Selection {
        heads: flags(head_fisher.len(), &head_order, n_h),
        neurons: flags(neuron_fisher.len(), &neuron_order, n_n),
        kept_heads: n_h,
        kept_neurons: n_n,
        importance,
        macs: macs::encoder(cost, n_h as i64, n_n as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADS: [f64; 4] = [5.0, 1.0, 0.5, 3.0];
    const NEURONS: [f64; 8] = [0.9, 0.8, 0.1, 0.05, 0.6, 0.4, 0.3, 0.2];
    const COST: UnitCost = UnitCost {
        head: 10,
        neuron: 3,
    };

    fn kept(flags: &[bool]) -> Vec<usize> {
        flags
            .iter()
            .enumerate()
            .filter_map(|(i, &k)| k.then_some(i))
            .collect()
    }

    /// Spec §7.6 at c = 0.5: both rules agree.
    #[test]
    fn toy_at_half_the_budget() {
        for rule in [Feasibility::Project, Feasibility::Reference] {
            let s = search(&HEADS, &NEURONS, COST, 0.5, rule).unwrap();
            assert_eq!(kept(&s.heads), [0, 3]);
            assert_eq!(kept(&s.neurons), [0, 1, 4, 5]);
            assert!((s.importance - 10.7).abs() < 1e-12);
            assert_eq!(s.macs, 32);
        }
    }

    /// Spec §7.6 at c = 0.3: the project stays within budget; the reference does not.
    #[test]
    fn toy_at_a_tight_budget() {
        let s = search(&HEADS, &NEURONS, COST, 0.3, Feasibility::Project).unwrap();
        assert_eq!(kept(&s.heads), [0]);
        assert_eq!(kept(&s.neurons), [0, 1, 4]);
        assert!((s.importance - 7.3).abs() < 1e-12);
        assert_eq!(s.macs, 19);
        let r = search(&HEADS, &NEURONS, COST, 0.3, Feasibility::Reference).unwrap();
        assert_eq!((r.kept_heads, r.kept_neurons), (4, 0));
        assert!((r.importance - 9.5).abs() < 1e-12);
        assert_eq!(r.macs, 40);
    }

    #[test]
    fn impossible_budgets_and_no_information_are_errors() {
        assert_eq!(
            search(&HEADS, &NEURONS, COST, 0.1, Feasibility::Project),
            Err(SearchError::Infeasible {
                budget: 6.4,
                head: 10
            })
        );
        assert!(matches!(
            search(&[0.0; 4], &[0.0; 8], COST, 0.5, Feasibility::Project),
            Err(SearchError::NoInformation)
        ));
        assert!(matches!(
            search(&HEADS, &NEURONS, COST, 1.0, Feasibility::Project),
            Err(SearchError::Constraint(_))
        ));
    }
}
