//! The model card: everything a user (or the server) needs to know about one trained model version,
//! stored as `card.json` next to the artifact.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalogue::PRICE_FEATURE;
use super::features::{FeatureKind, FeatureValue};

/// File name of the card inside a model version directory.
pub const CARD_FILE: &str = "card.json";

/// Metadata of one trained model version (`models/<name>/<version>/card.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Stable model name, e.g. `baseline-linear`; clients select models by it.
    pub name: String,
    /// Semantic version of this artifact; a retrain with other data or parameters bumps it.
    pub version: String,
    /// One sentence on what the model is.
    pub description: String,
    /// The estimator, e.g. `smartcore LinearRegression (QR)`, and whether it fits `ln(price)`.
    pub algorithm: String,
    /// What is predicted.
    pub target: TargetSpec,
    /// Input features in the artifact's column order, with the range seen in training.
    pub features: Vec<FeatureInfo>,
    /// Holdout metrics (never computed on training rows).
    pub metrics: Metrics,
    /// Holdout metrics when clients send only the three required inputs (the rest imputed): what
    /// seed-compatible clients (`POST /prever_precos/`) get.
    pub required_inputs_metrics: Metrics,
    /// 5-fold cross-validation of the same recipe over every used row (train and holdout), so
    /// the luck of the one holdout split is visible next to its metrics.
    pub cross_validation: Option<CrossValidation>,
    /// Split-conformal prediction intervals, calibrated on rows kept out of fitting.
    pub intervals: Intervals,
    /// The model of this model's absolute error, which estimates accuracy before outcomes exist.
    pub error_model: ErrorModelInfo,
    /// How the model was trained (data, split, parameters), enough to reproduce it.
    pub training: TrainingInfo,
    /// The serialized estimator and its checksum.
    pub artifact: ArtifactInfo,
    /// Distribution of the model's predictions on its training rows, the reference for drift.
    pub prediction_reference: Distribution,
    /// When `train` produced this version.
    pub trained_at: DateTime<Utc>,
}

/// The predicted quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// Source column in the training data.
    pub column: String,
    /// Unit of the prediction, e.g. `USD`.
    pub unit: String,
}

/// One input feature of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureInfo {
    /// API name (the `HouseInput` field).
    pub name: String,
    /// Value type.
    pub kind: FeatureKind,
    /// Whether clients must send it (the seed's three inputs); others are imputed when missing.
    pub required: bool,
    /// How the feature is derived from the training data's columns.
    pub source: String,
    /// Unit of the value.
    pub unit: String,
    /// What the feature means.
    pub description: String,
    /// Smallest training value (numeric and boolean features).
    pub min: Option<f64>,
    /// Largest training value (numeric and boolean features).
    pub max: Option<f64>,
    /// Mean training value (numeric and boolean features).
    pub mean: Option<f64>,
    /// Labels seen in training (categorical features); others are imputed with a warning.
    pub categories: Option<Vec<String>>,
    /// Value used when a client does not send the feature: the training median (numeric), mode
    /// (boolean, categorical).
    pub imputation: FeatureValue,
    /// Distribution of the feature over the training rows, the reference for drift analysis.
    pub reference: Distribution,
}

/// A reference distribution: quantile bins for numbers, label counts for categories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Distribution {
    /// `edges` are the inner bin edges (training deciles, duplicates removed). Bin `i` holds values
    /// `v` with `edges[i-1] <= v < edges[i]` (PostgreSQL's `width_bucket(v, edges)`), so there are
    /// `edges.len() + 1` bins; values below `min` or above `max` fall in the outer bins.
    Bins {
        /// Inner bin edges, ascending.
        edges: Vec<f64>,
        /// Training rows per bin.
        counts: Vec<u64>,
        /// Smallest training value.
        min: f64,
        /// Largest training value.
        max: f64,
        /// Standard deviation of the training values (normalises the Wasserstein distance).
        std: f64,
        /// Mean training value in each bin (where the Wasserstein distance puts each bin's mass;
        /// the midpoint of the bin's range when it is empty).
        means: Vec<f64>,
    },
    /// Training rows per label.
    Categories {
        /// Label → rows.
        counts: std::collections::BTreeMap<String, u64>,
    },
}

impl Distribution {
    /// Checks the shape: `counts` and `means` one longer than the ascending, finite `edges`.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Distribution::Bins { edges, counts, means, min, max, std } => {
                if counts.len() != edges.len() + 1 || means.len() != counts.len() {
                    return Err(format!("{} edges need {} counts and means", edges.len(), edges.len() + 1));
                }
                if !edges.windows(2).all(|w| w[0] < w[1]) {
                    return Err("edges must be strictly ascending".into());
                }
                if !edges.iter().chain(means).chain([min, max, std]).all(|v| v.is_finite()) {
                    return Err("values must be finite".into());
                }
                Ok(())
            }
            Distribution::Categories { counts } if counts.is_empty() => Err("no categories".into()),
            Distribution::Categories { .. } => Ok(()),
        }
    }

    /// Reference rows per bin, in bin order.
    pub fn counts(&self) -> Vec<u64> {
        match self {
            Distribution::Bins { counts, .. } => counts.clone(),
            Distribution::Categories { counts } => counts.values().copied().collect(),
        }
    }

    /// The bin of a number (`width_bucket` semantics); `None` for categorical distributions.
    pub fn bin_of_number(&self, value: f64) -> Option<usize> {
        match self {
            Distribution::Bins { edges, .. } => Some(edges.partition_point(|e| *e <= value)),
            Distribution::Categories { .. } => None,
        }
    }

    /// The bin of a label; `None` if it was not seen in training.
    pub fn bin_of_label(&self, label: &str) -> Option<usize> {
        match self {
            Distribution::Categories { counts } => counts.keys().position(|l| l == label),
            Distribution::Bins { .. } => None,
        }
    }

    /// Where each bin's mass sits for the Wasserstein distance: the training mean of the bin.
    /// (Midpoints would be far off for open-ended outer bins of skewed features such as lot area.)
    pub fn bin_centers(&self) -> Option<Vec<f64>> {
        match self {
            Distribution::Bins { means, .. } => Some(means.clone()),
            Distribution::Categories { .. } => None,
        }
    }
}

/// Regression metrics on the holdout set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean absolute error, USD.
    pub mae: f64,
    /// Root mean squared error, USD.
    pub rmse: f64,
    /// Root mean squared logarithmic error, `sqrt(mean((ln(1+max(p,0)) - ln(1+y))²))`.
    pub rmsle: f64,
    /// Coefficient of determination.
    pub r2: f64,
}

/// Cross-validated metrics: the mean and standard deviation over the folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    /// Number of folds (rows shuffled with the split seed).
    pub folds: usize,
    /// Rows over which the folds were drawn (every used row).
    pub rows: usize,
    /// Mean metrics over the folds.
    pub mean: Metrics,
    /// Standard deviation of each metric over the folds.
    pub std: Metrics,
}

/// Split-conformal intervals on the log scale: with `q` the calibration quantile of
/// `|ln(actual) - ln(predicted)|` for a level, the interval of a price `p` is `[p·e^-q, p·e^q]`.
/// It covers the level's share of future sales exchangeable with the calibration rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intervals {
    /// The conformity score.
    pub score: String,
    /// Calibration rows: a seeded slice of the training rows the estimator was not fitted on.
    pub calibration_rows: usize,
    /// One quantile per supported level, ascending by level.
    pub quantiles: Vec<IntervalQuantile>,
    /// Holdout coverage and mean width of each level (rows never used to fit or calibrate).
    pub holdout: Vec<IntervalCheck>,
}

/// The calibrated half-width, on the log scale, of one level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalQuantile {
    /// Nominal coverage, e.g. 0.9.
    pub level: f64,
    /// The `ceil((n+1)·level)`-th smallest calibration score.
    pub q: f64,
}

/// How one level did on the holdout rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalCheck {
    /// Nominal coverage.
    pub level: f64,
    /// Share of holdout prices inside their interval.
    pub coverage: f64,
    /// Mean of `high - low`, USD.
    pub mean_width: f64,
}

/// The error model: boosted trees fitted on the calibration rows, from the encoded features and
/// the model's own price to `|actual - predicted|` in USD. The mean of its estimates over a set of
/// predictions estimates their MAE before any sale is known. It sees only what the model sees:
/// a shift in something the model has no input for goes unnoticed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorModelInfo {
    /// Estimator and parameters.
    pub algorithm: String,
    /// Mean estimated absolute error over the holdout rows, USD.
    pub holdout_estimated_mae: f64,
    /// The realized holdout MAE it estimates, USD.
    pub holdout_mae: f64,
}

/// Provenance of the training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// Data file, relative to the project root.
    pub data_file: String,
    /// sha256 of the data file's bytes.
    pub data_sha256: String,
    /// Rows in the data file.
    pub rows_total: usize,
    /// Rows left after the documented exclusions.
    pub rows_used: usize,
    /// Rows the served estimator was fitted on (the split's side that is not holdout).
    pub rows_train: usize,
    /// Of those, the calibration slice: the intervals and the error model are calibrated on it
    /// with a model of the same recipe fitted on the other training rows.
    pub rows_calibration: usize,
    /// Rows held out for the metrics.
    pub rows_holdout: usize,
    /// Rows removed before splitting, and why.
    pub exclusions: String,
    /// Seed of the ChaCha8 shuffle that makes the holdout split.
    pub split_seed: u64,
    /// Fraction of used rows in the holdout set.
    pub holdout_fraction: f64,
    /// Estimator parameters, as given to smartcore.
    pub hyper_parameters: serde_json::Value,
    /// smartcore version the artifact was written with (artifacts are not portable across versions).
    pub smartcore_version: String,
}

/// The serialized estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// File name inside the version directory.
    pub file: String,
    /// Serialization format (`postcard`, a serde format; never pickle-like code execution).
    pub format: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of the file; verified on every load.
    pub sha256: String,
}

impl Intervals {
    /// The quantile of `level` (matched to 1e-9), if this model was calibrated for it.
    pub fn quantile(&self, level: f64) -> Option<f64> {
        self.quantiles.iter().find(|q| (q.level - level).abs() < 1e-9).map(|q| q.q)
    }

    /// The supported levels, ascending.
    pub fn levels(&self) -> Vec<f64> {
        self.quantiles.iter().map(|q| q.level).collect()
    }
}

impl ModelCard {
    /// `name@version`, the identifier stored in every log row.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Every reference distribution: one per input feature, then the prediction's ([`PRICE_FEATURE`]).
    pub fn references(&self) -> impl Iterator<Item = (&str, &Distribution)> {
        self.features
            .iter()
            .map(|f| (f.name.as_str(), &f.reference))
            .chain(std::iter::once((PRICE_FEATURE, &self.prediction_reference)))
    }
}

/// The README's model table: one row per card (see [`crate::model::registry::read_cards`]).
pub fn markdown_table(cards: &[ModelCard]) -> String {
    let mut out = String::from(
        "| model | version | algorithm | features | MAE (USD) | RMSLE | R² | 5-fold CV R² | R² with only the 3 required inputs | 90 % interval coverage, mean width (USD) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in cards {
        let m = &c.metrics;
        let features = if c.features.len() <= 3 {
            c.features.iter().map(|f| format!("`{}`", f.name)).collect::<Vec<_>>().join(", ")
        } else {
            format!("{} (3 required, {} optional)", c.features.len(), c.features.len() - 3)
        };
        let cv = c
            .cross_validation
            .as_ref()
            .map_or_else(|| "–".to_owned(), |cv| format!("{:.4} ± {:.4}", cv.mean.r2, cv.std.r2));
        let interval = c.intervals.holdout.iter().find(|h| (h.level - 0.9).abs() < 1e-9);
        let interval = interval.map_or_else(|| "–".to_owned(), |h| format!("{:.3}, {:.0}", h.coverage, h.mean_width));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.4} | {:.4} | {} | {:.4} | {} |",
            c.name, c.version, c.algorithm, features, m.mae, m.rmsle, m.r2, cv, c.required_inputs_metrics.r2, interval
        );
    }
    out
}
