//! The serialized model: a postcard-encoded, versioned envelope around a [`Pipeline`] (feature
//! encoding + smartcore estimator).
//!
//! postcard is a plain serde data format: decoding cannot execute code (unlike pickle), and the
//! checksum in the card is verified *before* decoding, so a tampered or truncated file is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::linear_regression::LinearRegression;
use smartcore::linear::ridge_regression::RidgeRegression;
use smartcore::xgboost::XGRegressor;

use super::features::{Feature, FeatureValue, HouseFeatures, InvalidFeature};
use super::forest::Forest;

/// Bumped whenever the envelope's encoding changes, so old artifacts fail loudly instead of
/// decoding into garbage.
pub const ARTIFACT_FORMAT: u32 = 3;

/// smartcore ordinary least squares on dense f64 rows.
pub type LinearModel = LinearRegression<f64, f64, DenseMatrix<f64>, Vec<f64>>;
/// smartcore ridge regression.
pub type RidgeModel = RidgeRegression<f64, f64, DenseMatrix<f64>, Vec<f64>>;
/// smartcore gradient-boosted trees.
pub type BoostedModel = XGRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;

/// A fitted estimator. New model families are added as variants.
#[derive(Debug, Serialize, Deserialize)]
pub enum Estimator {
    /// Ordinary least squares.
    Linear(LinearModel),
    /// L2-regularised least squares.
    Ridge(RidgeModel),
    /// Gradient-boosted regression trees.
    Boosted(BoostedModel),
    /// A weighted sum of estimators fitted on the same columns and target (weights sum to 1).
    Blend(Vec<BlendPart>),
}

/// An [`Estimator`] as the service evaluates it (built at load): boosted trees through
/// [`Forest`], which gives smartcore's outputs bit for bit at a fraction of the cost; linear
/// models through smartcore.
#[derive(Debug)]
pub enum Compiled {
    /// Least squares or ridge: smartcore's `predict`.
    Additive,
    /// Boosted trees.
    Trees(Forest),
    /// A weighted sum, member by member.
    Blend(Vec<(f64, Compiled)>),
}

impl Compiled {
    /// The compiled form of `estimator`.
    pub fn of(estimator: &Estimator) -> Result<Self, ArtifactError> {
        Ok(match estimator {
            Estimator::Linear(_) | Estimator::Ridge(_) => Compiled::Additive,
            Estimator::Boosted(model) => Compiled::Trees(Forest::of(model)?),
            Estimator::Blend(parts) => {
                Compiled::Blend(parts.iter().map(|p| Ok((p.weight, Compiled::of(&p.estimator)?))).collect::<Result<
                    _,
                    ArtifactError,
                >>(
                )?)
            }
        })
    }

    /// `estimator`'s outputs (the one this was compiled from) for encoded rows.
    pub fn predict(&self, estimator: &Estimator, rows: &[Vec<f64>]) -> Result<Vec<f64>, ArtifactError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match (self, estimator) {
            (Compiled::Trees(forest), _) => Ok(rows.iter().map(|row| forest.predict(row)).collect()),
            (Compiled::Blend(parts), Estimator::Blend(members)) if parts.len() == members.len() => {
                let mut sum = vec![0.0; rows.len()];
                for ((weight, part), member) in parts.iter().zip(members) {
                    for (s, p) in sum.iter_mut().zip(part.predict(&member.estimator, rows)?) {
                        *s += weight * p;
                    }
                }
                Ok(sum)
            }
            (Compiled::Additive, _) => estimator.predict(&dense(rows)?),
            (Compiled::Blend(_), _) => Err(ArtifactError::Predict("compiled form and estimator disagree".into())),
        }
    }
}

/// One member of an [`Estimator::Blend`].
#[derive(Debug, Serialize, Deserialize)]
pub struct BlendPart {
    /// Its weight.
    pub weight: f64,
    /// The member.
    pub estimator: Estimator,
}

impl Estimator {
    /// Raw outputs (on the target's scale: `ln(price)` for log models) of each row of `x`.
    pub fn predict(&self, x: &DenseMatrix<f64>) -> Result<Vec<f64>, ArtifactError> {
        let failed = |e: smartcore::error::Failed| ArtifactError::Predict(e.to_string());
        match self {
            Estimator::Linear(m) => m.predict(x).map_err(failed),
            Estimator::Ridge(m) => m.predict(x).map_err(failed),
            Estimator::Boosted(m) => m.predict(x).map_err(failed),
            Estimator::Blend(parts) => {
                let mut sum = vec![0.0; x.shape().0];
                for part in parts {
                    for (s, p) in sum.iter_mut().zip(part.estimator.predict(x)?) {
                        *s += part.weight * p;
                    }
                }
                Ok(sum)
            }
        }
    }
}

/// How one input feature becomes model columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Column {
    /// One column: the value (or `impute` when missing), optionally `ln(1 + x)`.
    Numeric {
        /// The input.
        feature: Feature,
        /// Used when the client did not send the feature (training median, or mode for flags).
        impute: f64,
        /// Whether to take `ln(1 + x)` (skewed areas, for linear models).
        log1p: bool,
    },
    /// One 0/1 column per level; an unknown label is imputed (and reported as unseen).
    OneHot {
        /// The input.
        feature: Feature,
        /// Levels seen in training, in column order.
        levels: Vec<String>,
        /// Used when the client did not send the feature (training mode).
        impute: String,
    },
}

impl Column {
    /// The input feature.
    pub fn feature(&self) -> Feature {
        match self {
            Column::Numeric { feature, .. } | Column::OneHot { feature, .. } => *feature,
        }
    }

    /// Appends `value`'s encoding in this column to `row`.
    fn push(&self, value: &FeatureValue, row: &mut Vec<f64>) -> Result<(), InvalidFeature> {
        let feature = self.feature();
        match (self, value) {
            (Column::Numeric { log1p, .. }, FeatureValue::Number(x)) => {
                row.push(if *log1p { x.max(0.0).ln_1p() } else { *x });
            }
            (Column::OneHot { levels, .. }, FeatureValue::Category(label)) => {
                row.extend(levels.iter().map(|level| if level == label { 1.0 } else { 0.0 }));
            }
            (Column::Numeric { .. }, FeatureValue::Category(_)) => {
                return Err(InvalidFeature { feature, message: "must be a number".to_owned() });
            }
            (Column::OneHot { levels, .. }, FeatureValue::Number(_)) => {
                return Err(InvalidFeature { feature, message: format!("must be one of: {}", levels.join(", ")) });
            }
        }
        Ok(())
    }

    /// The imputation value, as stored in the card.
    pub fn imputation(&self) -> FeatureValue {
        match self {
            Column::Numeric { impute, .. } => FeatureValue::Number(*impute),
            Column::OneHot { impute, .. } => FeatureValue::Category(impute.clone()),
        }
    }
}

/// Turns houses into estimator rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    /// Input columns in estimator order.
    pub columns: Vec<Column>,
}

/// Encoding + estimator: everything needed to turn a [`HouseFeatures`] into a price.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pipeline {
    /// Feature encoding.
    pub encoder: Encoder,
    /// Whether the estimator predicts `ln(price)`.
    pub log_target: bool,
    /// The fitted estimator.
    pub estimator: Estimator,
    /// Estimates `|actual - price|` (USD) from the encoded row followed by the price: see
    /// [`crate::model::card::ErrorModelInfo`].
    pub error_model: Estimator,
}

/// One house, encoded for the estimator.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Estimator input row.
    pub row: Vec<f64>,
    /// Features the model needed but the client did not send (imputed from the card).
    pub imputed: Vec<Feature>,
    /// The value of every feature the model used, after imputation (logged for drift analysis).
    pub values: BTreeMap<Feature, FeatureValue>,
    /// Labels the client sent that the model never saw (imputed instead), by feature.
    pub unseen: Vec<(Feature, String)>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    pipeline: Pipeline,
}

/// Why an artifact could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes do not hash to what the card says.
    #[error("checksum mismatch: the card expects sha256 {expected}, the file has {actual}")]
    ChecksumMismatch {
        /// From the card.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// The bytes are not a valid envelope.
    #[error("cannot decode the artifact")]
    Decode(#[source] postcard::Error),
    /// Written by an incompatible version of this program.
    #[error("artifact format {found} is not supported (this build reads format {ARTIFACT_FORMAT}); retrain the model")]
    UnsupportedFormat {
        /// Format number found in the file.
        found: u32,
    },
    /// smartcore refused to predict.
    #[error("the estimator failed to predict: {0}")]
    Predict(String),
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Encoder {
    /// The typical house encoded: every column at its imputation value.
    pub fn baseline_row(&self) -> Vec<f64> {
        let mut row = Vec::new();
        for column in &self.columns {
            // An imputation value always fits its own column.
            let _ = column.push(&column.imputation(), &mut row);
        }
        row
    }

    /// Each feature's columns in the encoded row, in column order.
    pub fn spans(&self) -> Vec<(Feature, std::ops::Range<usize>)> {
        let mut start = 0;
        self.columns
            .iter()
            .map(|column| {
                let width = match column {
                    Column::Numeric { .. } => 1,
                    Column::OneHot { levels, .. } => levels.len(),
                };
                start += width;
                (column.feature(), start - width..start)
            })
            .collect()
    }

    /// Input features the model uses, in column order.
    pub fn features(&self) -> Vec<Feature> {
        self.columns.iter().map(Column::feature).collect()
    }

    /// Encodes one house: imputes missing features and labels the model never saw (reported in
    /// [`Encoded::unseen`]); refuses a value of the wrong kind.
    pub fn encode(&self, house: &HouseFeatures) -> Result<Encoded, InvalidFeature> {
        let mut row = Vec::with_capacity(self.columns.len());
        let mut imputed = Vec::new();
        let mut values = BTreeMap::new();
        let mut unseen = Vec::new();
        for column in &self.columns {
            let feature = column.feature();
            let value = match (house.get(feature), column) {
                // A label the model never saw carries no information for it: impute, and say so.
                (Some(FeatureValue::Category(label)), Column::OneHot { levels, .. }) if !levels.contains(&label) => {
                    unseen.push((feature, label));
                    imputed.push(feature);
                    column.imputation()
                }
                (Some(value), _) => value,
                (None, _) => {
                    imputed.push(feature);
                    column.imputation()
                }
            };
            column.push(&value, &mut row)?;
            values.insert(feature, value);
        }
        Ok(Encoded { row, imputed, values, unseen })
    }
}

impl Pipeline {
    /// Encodes the pipeline; the same fitted model always gives the same bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        #[derive(Serialize)]
        struct EnvelopeRef<'a> {
            format: u32,
            pipeline: &'a Pipeline,
        }
        postcard::to_allocvec(&EnvelopeRef { format: ARTIFACT_FORMAT, pipeline: self })
    }

    /// Verifies `bytes` against `expected_sha256`, then decodes them.
    pub fn from_verified_bytes(bytes: &[u8], expected_sha256: &str) -> Result<Self, ArtifactError> {
        let actual = sha256_hex(bytes);
        if !actual.eq_ignore_ascii_case(expected_sha256) {
            return Err(ArtifactError::ChecksumMismatch { expected: expected_sha256.to_owned(), actual });
        }
        // The format number is the envelope's first field: read it alone first, so an artifact of
        // another format is reported as such rather than as a decoding error.
        let (format, _) = postcard::take_from_bytes::<u32>(bytes).map_err(ArtifactError::Decode)?;
        if format != ARTIFACT_FORMAT {
            return Err(ArtifactError::UnsupportedFormat { found: format });
        }
        let envelope: Envelope = postcard::from_bytes(bytes).map_err(ArtifactError::Decode)?;
        Ok(envelope.pipeline)
    }

    /// Encodes one house (see [`Encoder::encode`]).
    pub fn encode(&self, house: &HouseFeatures) -> Result<Encoded, InvalidFeature> {
        self.encoder.encode(house)
    }

    /// Prices encoded rows (all of the pipeline's width).
    pub fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, ArtifactError> {
        Ok(self.predict_raw(rows)?.into_iter().map(|raw| self.to_price(raw)).collect())
    }

    /// The estimator's outputs for encoded rows, on its own scale (`ln(price)` for log models).
    pub fn predict_raw(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, ArtifactError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.estimator.predict(&dense(rows)?)
    }

    /// A raw estimator output as a price in USD.
    pub fn to_price(&self, raw: f64) -> f64 {
        if self.log_target { raw.exp() } else { raw }
    }

    /// The error model's estimate of `|actual - price|` (USD, never negative) for each encoded row
    /// and the price the model gave it.
    pub fn estimate_errors(&self, rows: &[Vec<f64>], prices: &[f64]) -> Result<Vec<f64>, ArtifactError> {
        estimate_errors_with(rows, prices, |input| self.error_model.predict(&dense(input)?))
    }
}

/// The error model's estimates of `|actual - price|` (USD, never negative) for encoded rows and
/// their prices; `evaluate` runs the error model on its input rows (smartcore's or the compiled form).
pub fn estimate_errors_with(
    rows: &[Vec<f64>],
    prices: &[f64],
    evaluate: impl FnOnce(&[Vec<f64>]) -> Result<Vec<f64>, ArtifactError>,
) -> Result<Vec<f64>, ArtifactError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let input: Vec<Vec<f64>> = rows.iter().zip(prices).map(|(row, &price)| error_model_row(row, price)).collect();
    Ok(evaluate(&input)?.into_iter().map(|e| e.max(0.0)).collect())
}

/// The error model's input: the encoded row, then the predicted price.
pub fn error_model_row(row: &[f64], price: f64) -> Vec<f64> {
    let mut extended = Vec::with_capacity(row.len() + 1);
    extended.extend_from_slice(row);
    extended.push(price);
    extended
}

/// Rows as a smartcore matrix.
pub fn dense(rows: &[Vec<f64>]) -> Result<DenseMatrix<f64>, ArtifactError> {
    let ncols = rows.first().map_or(0, Vec::len);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    DenseMatrix::new(rows.len(), ncols, flat, false).map_err(|e| ArtifactError::Predict(e.to_string()))
}
