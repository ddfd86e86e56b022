//! smartcore's boosted trees as the service evaluates them: read once, at load, through the
//! fitted model's serde form (smartcore keeps the nodes private), then walked without allocating.
//! smartcore's own `predict` copies each row into a new vector for every tree, which made a
//! 800-tree model cost ~250 µs per house; the walk here costs a few µs and gives the same bits
//! (the same comparisons, and the same sum in the same order: checked by a test).

use serde::Deserialize;

use super::artifact::{ArtifactError, BoostedModel};

/// One tree node; a leaf has no children. Other serialized fields are ignored.
#[derive(Debug, Deserialize)]
pub struct Node {
    /// Left child: rows with `row[split_feature_idx] <= threshold`.
    pub left: Option<Box<Node>>,
    /// Right child.
    pub right: Option<Box<Node>>,
    /// Output of a leaf.
    pub value: f64,
    /// Split threshold.
    pub threshold: f64,
    /// Split column.
    pub split_feature_idx: usize,
}

impl Node {
    /// The value of the leaf `row` reaches.
    pub fn leaf_value(&self, row: &[f64]) -> f64 {
        let mut node = self;
        while let (Some(left), Some(right)) = (&node.left, &node.right) {
            node = if row[node.split_feature_idx] <= node.threshold { left } else { right };
        }
        node.value
    }
}

/// A fitted `XGRegressor`: `base_score + Σ learning_rate · tree(row)`.
#[derive(Debug)]
pub struct Forest {
    /// Starting prediction.
    pub base_score: f64,
    /// Shrinkage applied to every tree.
    pub learning_rate: f64,
    /// The trees, in fitting order.
    pub trees: Vec<Node>,
}

#[derive(Deserialize)]
struct BoostedForm {
    regressors: Option<Vec<Node>>,
    parameters: Option<BoostedParameters>,
}

#[derive(Deserialize)]
struct BoostedParameters {
    learning_rate: f64,
    base_score: f64,
}

impl Forest {
    /// Reads `model`'s trees.
    pub fn of(model: &BoostedModel) -> Result<Self, ArtifactError> {
        let unreadable = |why: String| ArtifactError::Predict(format!("cannot read the boosted trees: {why}"));
        let value = serde_json::to_value(model).map_err(|e| unreadable(e.to_string()))?;
        let form: BoostedForm = serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
        match (form.regressors, form.parameters) {
            (Some(trees), Some(p)) => Ok(Self { base_score: p.base_score, learning_rate: p.learning_rate, trees }),
            _ => Err(unreadable("the model is not fitted".into())),
        }
    }

    /// The model's output for one encoded row, summed in smartcore's order.
    pub fn predict(&self, row: &[f64]) -> f64 {
        let mut prediction = self.base_score;
        for tree in &self.trees {
            prediction += self.learning_rate * tree.leaf_value(row);
        }
        prediction
    }
}
