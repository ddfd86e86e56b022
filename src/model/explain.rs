//! Per-feature contributions: exact Shapley values of the game "the features in S take the
//! house's values, the others the model's typical house" (baseline Shapley, Sundararajan & Najmi
//! 2020). The typical house is the card's imputation values (training medians and modes), its
//! prediction the base value, and by the efficiency axiom
//! `base value + Σ contributions = the model's output` exactly (up to floating-point rounding).
//! A feature the client did not send is imputed with the typical value, so it contributes 0.
//!
//! Contributions are on the estimator's scale: USD for models of the price, `ln(USD)` for models
//! of `ln(price)` (then `price = exp(base value + Σ contributions)`).
//!
//! - Additive estimators (least squares, ridge): the contribution of a feature is the change of
//!   the output when only that feature takes the house's value, one evaluation per feature.
//! - Boosted trees: each leaf is reached by a hybrid row exactly when every feature on its path
//!   that only the house satisfies is taken from the house (set A) and every feature that only the
//!   typical house satisfies is not (set B). That game's Shapley values are closed-form (Lundberg
//!   et al. 2020, interventional TreeSHAP with one reference): `v·(|A|-1)!|B|!/(|A|+|B|)!` for
//!   each feature of A and `-v·|A|!(|B|-1)!/(|A|+|B|)!` for each of B. One pass over the leaves,
//!   independent of the number of features.
//! - Blends: Shapley values are linear in the game, so the weighted sum of the members'.

use super::artifact::{ArtifactError, Compiled, Estimator, Pipeline};
use super::features::{Feature, FeatureValue};
use super::forest::{Forest, Node};

/// What [`Explainer::contributions`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Contributions {
    /// The typical house's output (the estimator's scale).
    pub base_value: f64,
    /// One per model feature, in the encoder's order: the feature, the value the model used
    /// (the client's, or the imputation), and its contribution.
    pub values: Vec<(Feature, Option<FeatureValue>, f64)>,
    /// Whether the scale is `ln(USD)` (else USD).
    pub log_scale: bool,
}

/// What contributions are computed from, built once at load.
#[derive(Debug)]
pub struct Explainer {
    /// Each feature's columns.
    spans: Vec<(Feature, std::ops::Range<usize>)>,
    /// Feature index (into `spans`) of each column.
    feature_of_column: Vec<usize>,
    /// The typical house, encoded.
    baseline: Vec<f64>,
    /// Its output.
    base_value: f64,
    log_scale: bool,
}

/// Adds each feature's contribution under `forest` to `out` (weighted by `weight`).
fn add_trees(forest: &Forest, weight: f64, x: &[f64], z: &[f64], feature_of_column: &[usize], out: &mut [f64]) {
    for tree in &forest.trees {
        walk(tree, x, z, feature_of_column, 0, 0, weight * forest.learning_rate, out);
    }
}

/// Visits the leaves reachable by some hybrid of `x` and `z`. `x_fails` / `z_fails` are bit sets
/// of the features whose value in `x` / `z` fails a condition on the path so far.
#[allow(clippy::too_many_arguments)]
fn walk(
    node: &Node,
    x: &[f64],
    z: &[f64],
    features: &[usize],
    x_fails: u64,
    z_fails: u64,
    scale: f64,
    out: &mut [f64],
) {
    let (Some(left), Some(right)) = (&node.left, &node.right) else {
        let a = z_fails & !x_fails; // only the house satisfies these: they must come from x
        let b = x_fails & !z_fails; // only the typical house does: they must come from z
        let (na, nb) = (a.count_ones(), b.count_ones());
        if na + nb == 0 {
            return; // reached by every hybrid: part of the base value
        }
        let v = scale * node.value;
        let total = factorial(na + nb);
        if na > 0 {
            let share = v * factorial(na - 1) * factorial(nb) / total;
            for_each_bit(a, |j| out[j] += share);
        }
        if nb > 0 {
            let share = v * factorial(na) * factorial(nb - 1) / total;
            for_each_bit(b, |j| out[j] -= share);
        }
        return;
    };
    let column = node.split_feature_idx;
    let bit = 1u64 << features[column];
    let (x_left, z_left) = (x[column] <= node.threshold, z[column] <= node.threshold);
    for (child, goes_left) in [(left, true), (right, false)] {
        let x_f = if x_left == goes_left { x_fails } else { x_fails | bit };
        let z_f = if z_left == goes_left { z_fails } else { z_fails | bit };
        // A feature neither value satisfies makes the subtree unreachable by any hybrid.
        if x_f & z_f == 0 {
            walk(child, x, z, features, x_f, z_f, scale, out);
        }
    }
}

fn factorial(n: u32) -> f64 {
    (1..=n).map(f64::from).product()
}

fn for_each_bit(mut bits: u64, mut f: impl FnMut(usize)) {
    while bits != 0 {
        f(bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}

impl Explainer {
    /// Prepares `pipeline` (evaluated as `compiled`) for contributions: prices the typical house.
    pub fn new(pipeline: &Pipeline, compiled: &Compiled) -> Result<Self, ArtifactError> {
        let spans = pipeline.encoder.spans();
        if spans.len() > 64 {
            return Err(ArtifactError::Predict("contributions support at most 64 features".into()));
        }
        let mut feature_of_column = Vec::new();
        for (index, (_, span)) in spans.iter().enumerate() {
            feature_of_column.extend(span.clone().map(|_| index));
        }
        let baseline = pipeline.encoder.baseline_row();
        let base_value = compiled.predict(&pipeline.estimator, std::slice::from_ref(&baseline))?[0];
        Ok(Self { spans, feature_of_column, baseline, base_value, log_scale: pipeline.log_target })
    }

    /// The contributions of the encoded row `x` under `estimator` (compiled as `compiled`: the
    /// pipeline this explainer was built from), with the values the model used.
    pub fn contributions(
        &self,
        compiled: &Compiled,
        estimator: &Estimator,
        x: &[f64],
        values: &std::collections::BTreeMap<Feature, FeatureValue>,
    ) -> Result<Contributions, ArtifactError> {
        let mut out = vec![0.0; self.spans.len()];
        self.add(compiled, estimator, 1.0, x, &mut out)?;
        Ok(Contributions {
            base_value: self.base_value,
            values: self.spans.iter().zip(out).map(|((f, _), c)| (*f, values.get(f).cloned(), c)).collect(),
            log_scale: self.log_scale,
        })
    }

    fn add(
        &self,
        compiled: &Compiled,
        estimator: &Estimator,
        weight: f64,
        x: &[f64],
        out: &mut [f64],
    ) -> Result<(), ArtifactError> {
        match (compiled, estimator) {
            (Compiled::Additive, _) => {
                // Row 0 is the typical house; row 1 + i takes feature i from the house.
                let mut rows = vec![self.baseline.clone()];
                for (_, span) in &self.spans {
                    let mut hybrid = self.baseline.clone();
                    hybrid[span.clone()].copy_from_slice(&x[span.clone()]);
                    rows.push(hybrid);
                }
                let outputs = compiled.predict(estimator, &rows)?;
                for (o, hybrid) in out.iter_mut().zip(&outputs[1..]) {
                    *o += weight * (hybrid - outputs[0]);
                }
            }
            (Compiled::Trees(forest), _) => add_trees(forest, weight, x, &self.baseline, &self.feature_of_column, out),
            (Compiled::Blend(parts), Estimator::Blend(members)) => {
                for ((w, part), member) in parts.iter().zip(members) {
                    self.add(part, &member.estimator, weight * w, x, out)?;
                }
            }
            (Compiled::Blend(_), _) => {
                return Err(ArtifactError::Predict("compiled form and estimator disagree".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(value: f64) -> Node {
        Node { left: None, right: None, value, threshold: 0.0, split_feature_idx: 0 }
    }

    fn split(column: usize, threshold: f64, left: Node, right: Node) -> Node {
        Node {
            left: Some(Box::new(left)),
            right: Some(Box::new(right)),
            value: 0.0,
            threshold,
            split_feature_idx: column,
        }
    }

    fn predict(node: &Node, row: &[f64]) -> f64 {
        node.leaf_value(row)
    }

    /// Shapley values by enumerating every coalition, for a check of the closed form.
    fn brute_force(tree: &Node, x: &[f64], z: &[f64]) -> Vec<f64> {
        let n = x.len();
        let v = |mask: usize| {
            let hybrid: Vec<f64> = (0..n).map(|j| if mask & (1 << j) != 0 { x[j] } else { z[j] }).collect();
            predict(tree, &hybrid)
        };
        (0..n)
            .map(|i| {
                (0..1usize << n)
                    .filter(|s| s & (1 << i) == 0)
                    .map(|s| {
                        let size = s.count_ones();
                        let w = factorial(size) * factorial(n as u32 - size - 1) / factorial(n as u32);
                        w * (v(s | (1 << i)) - v(s))
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn the_closed_form_equals_enumerating_every_coalition() {
        // Depth 3 over three features, one of them used twice on a path.
        let tree = split(
            0,
            5.0,
            split(1, 2.0, split(0, 1.0, leaf(1.0), leaf(2.0)), split(2, 0.5, leaf(4.0), leaf(8.0))),
            split(2, 0.5, split(1, 3.0, leaf(16.0), leaf(32.0)), leaf(64.0)),
        );
        let points = [[0.0, 0.0, 0.0], [3.0, 2.5, 0.2], [6.0, 1.0, 1.0], [6.0, 4.0, 0.0], [0.5, 9.0, 9.0]];
        for x in &points {
            for z in &points {
                let mut out = vec![0.0; 3];
                walk(&tree, x, z, &[0, 1, 2], 0, 0, 1.0, &mut out);
                let expected = brute_force(&tree, x, z);
                for (o, e) in out.iter().zip(&expected) {
                    assert!((o - e).abs() < 1e-12, "x {x:?} z {z:?}: {out:?} vs {expected:?}");
                }
                let total: f64 = out.iter().sum();
                assert!((total - (predict(&tree, x) - predict(&tree, z))).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn columns_of_one_feature_move_together() {
        // Columns 0 and 1 are one one-hot feature; column 2 another.
        let tree = split(0, 0.5, split(1, 0.5, leaf(1.0), leaf(3.0)), split(2, 10.0, leaf(5.0), leaf(7.0)));
        let (x, z) = ([1.0, 0.0, 20.0], [0.0, 1.0, 0.0]);
        let mut out = vec![0.0; 2];
        walk(&tree, &x, &z, &[0, 0, 1], 0, 0, 1.0, &mut out);
        // f(x) = 7, f(z) = 3, f(x0 with z2) = 5, f(z0 with x2) = 3: φ0 = ½(2 + 4), φ1 = ½(0 + 2).
        assert_eq!(out, vec![3.0, 1.0]);
    }
}
