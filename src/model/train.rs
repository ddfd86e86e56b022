//! `house-price-api train`: fits the models on the Ames sales and writes artifact + card.
//!
//! The holdout split is a ChaCha8 shuffle of the row indices with a fixed seed, so every run on the
//! same data gives the same split, the same fit and byte-identical artifacts.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::linear_regression::{LinearRegression, LinearRegressionParameters, LinearRegressionSolverName};

use super::artifact::{Estimator, sha256_hex};
use super::card::{ArtifactInfo, CARD_FILE, FeatureSpec, Metrics, ModelCard, TargetSpec, TrainingInfo};
use super::features::{Feature, HouseFeatures};
use super::registry::LoadedModel;

/// Houses above this living area are excluded, as De Cock (2011) recommends: three of the five are
/// partial sales at prices unrelated to their size.
pub const MAX_TRAINING_SQUARE_FEET: f64 = 4000.0;
/// Artifact file name inside a version directory.
pub const ARTIFACT_FILE: &str = "model.postcard";
/// The version `train` writes for the baseline; bump it when the recipe changes.
pub const BASELINE_VERSION: &str = "1.0.0";
/// Name of the seed-compatible three-feature linear model.
pub const BASELINE_NAME: &str = "baseline-linear";

/// What to train on and where to write.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The Ames CSV.
    pub data: PathBuf,
    /// Root model directory; versions go to `<out>/<name>/<version>/`.
    pub out_dir: PathBuf,
    /// Seed of the holdout shuffle.
    pub seed: u64,
    /// Fraction of rows held out for the metrics.
    pub holdout_fraction: f64,
    /// Timestamp written into the card (defaults to now); pass it to reproduce a card byte for byte.
    pub trained_at: Option<DateTime<Utc>>,
}

/// The columns of `ames_housing.csv` the models use; other columns are ignored.
#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct AmesRow {
    Gr_Liv_Area: f64,
    Bedroom_AbvGr: i64,
    Full_Bath: f64,
    Half_Bath: f64,
    Sale_Price: f64,
}

/// A parsed data set: features, prices and provenance.
struct Dataset {
    houses: Vec<HouseFeatures>,
    prices: Vec<f64>,
    rows_total: usize,
    sha256: String,
}

fn read_dataset(path: &Path) -> anyhow::Result<Dataset> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read training data {}", path.display()))?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let mut houses = Vec::new();
    let mut prices = Vec::new();
    let mut rows_total = 0;
    for (line, row) in reader.deserialize::<AmesRow>().enumerate() {
        let row = row.with_context(|| format!("{}: bad row {}", path.display(), line + 2))?;
        rows_total += 1;
        if row.Gr_Liv_Area > MAX_TRAINING_SQUARE_FEET {
            continue;
        }
        houses.push(HouseFeatures {
            square_feet: row.Gr_Liv_Area,
            bedrooms: row.Bedroom_AbvGr,
            bathrooms: row.Full_Bath + 0.5 * row.Half_Bath,
        });
        prices.push(row.Sale_Price);
    }
    if houses.is_empty() {
        bail!("{} has no usable rows", path.display());
    }
    Ok(Dataset { houses, prices, rows_total, sha256: sha256_hex(&bytes) })
}

/// Splits row indices into (train, holdout) with a seeded shuffle.
pub fn holdout_split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_holdout = ((n as f64) * fraction).round() as usize;
    let holdout = indices[..n_holdout].to_vec();
    let train = indices[n_holdout..].to_vec();
    (train, holdout)
}

/// Holdout metrics of `predicted` against `actual`.
pub fn regression_metrics(actual: &[f64], predicted: &[f64]) -> Metrics {
    let y = actual.to_vec();
    let p = predicted.to_vec();
    let mse = smartcore::metrics::mean_squared_error(&y, &p);
    let msle = actual.iter().zip(predicted).map(|(a, p)| (p.max(0.0).ln_1p() - a.ln_1p()).powi(2)).sum::<f64>()
        / actual.len() as f64;
    Metrics {
        mae: smartcore::metrics::mean_absolute_error(&y, &p),
        rmse: mse.sqrt(),
        rmsle: msle.sqrt(),
        r2: smartcore::metrics::r2(&y, &p),
    }
}

fn feature_spec(feature: Feature, values: impl Iterator<Item = f64> + Clone) -> FeatureSpec {
    let (source, unit, description) = match feature {
        Feature::SquareFeet => ("Gr_Liv_Area", "sq ft", "Above-ground living area"),
        Feature::Bedrooms => ("Bedroom_AbvGr", "count", "Bedrooms above grade"),
        Feature::Bathrooms => {
            ("Full_Bath + 0.5 * Half_Bath", "count", "Bathrooms above grade, a half bath counting 0.5")
        }
    };
    let n = values.clone().count() as f64;
    FeatureSpec {
        name: feature.graphql_name().to_owned(),
        source: source.to_owned(),
        unit: unit.to_owned(),
        description: description.to_owned(),
        min: values.clone().fold(f64::INFINITY, f64::min),
        max: values.clone().fold(f64::NEG_INFINITY, f64::max),
        mean: values.sum::<f64>() / n,
    }
}

/// Trains every model and writes `<out>/<name>/<version>/{model.postcard,card.json}`.
/// Returns the cards written.
pub fn train(options: &TrainOptions) -> anyhow::Result<Vec<ModelCard>> {
    if !(0.0..1.0).contains(&options.holdout_fraction) || options.holdout_fraction == 0.0 {
        bail!("holdout fraction must be in (0, 1), got {}", options.holdout_fraction);
    }
    let data = read_dataset(&options.data)?;
    let (train_idx, holdout_idx) = holdout_split(data.houses.len(), options.holdout_fraction, options.seed);
    tracing::info!(
        rows = data.rows_total,
        used = data.houses.len(),
        train = train_idx.len(),
        holdout = holdout_idx.len(),
        "training data loaded"
    );

    let train_houses: Vec<HouseFeatures> = train_idx.iter().map(|&i| data.houses[i]).collect();
    let train_prices: Vec<f64> = train_idx.iter().map(|&i| data.prices[i]).collect();
    let rows: Vec<f64> = train_houses.iter().flat_map(HouseFeatures::to_row).collect();
    let x = DenseMatrix::new(train_houses.len(), Feature::ALL.len(), rows, false)
        .map_err(|e| anyhow::anyhow!("cannot build the training matrix: {e}"))?;
    let parameters = LinearRegressionParameters::default().with_solver(LinearRegressionSolverName::QR);
    let fitted = LinearRegression::fit(&x, &train_prices, parameters)
        .map_err(|e| anyhow::anyhow!("linear regression fit failed: {e}"))?;
    let estimator = Estimator::Linear(fitted);
    let bytes = estimator.to_bytes().context("cannot serialize the model")?;

    let features = Feature::ALL
        .iter()
        .enumerate()
        .map(|(col, &f)| feature_spec(f, train_houses.iter().map(move |h| h.to_row()[col])))
        .collect();
    let card = ModelCard {
        name: BASELINE_NAME.to_owned(),
        version: BASELINE_VERSION.to_owned(),
        description: "Ordinary least squares on the seed service's three inputs; the reference to beat.".to_owned(),
        algorithm: "smartcore LinearRegression (QR)".to_owned(),
        target: TargetSpec { column: "Sale_Price".to_owned(), unit: "USD".to_owned() },
        features,
        metrics: Metrics { mae: 0.0, rmse: 0.0, rmsle: 0.0, r2: 0.0 },
        training: TrainingInfo {
            data_file: options.data.display().to_string(),
            data_sha256: data.sha256.clone(),
            rows_total: data.rows_total,
            rows_used: data.houses.len(),
            rows_train: train_idx.len(),
            rows_holdout: holdout_idx.len(),
            exclusions: format!("Gr_Liv_Area > {MAX_TRAINING_SQUARE_FEET} (De Cock 2011)"),
            split_seed: options.seed,
            holdout_fraction: options.holdout_fraction,
            hyper_parameters: serde_json::json!({ "solver": "QR" }),
            smartcore_version: SMARTCORE_VERSION.to_owned(),
        },
        artifact: ArtifactInfo {
            file: ARTIFACT_FILE.to_owned(),
            format: "postcard".to_owned(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        },
        trained_at: options.trained_at.unwrap_or_else(Utc::now),
    };

    // Evaluate through the same code path the server uses.
    let model = LoadedModel::from_parts(card, estimator);
    let holdout_houses: Vec<HouseFeatures> = holdout_idx.iter().map(|&i| data.houses[i]).collect();
    let holdout_prices: Vec<f64> = holdout_idx.iter().map(|&i| data.prices[i]).collect();
    let predicted = model.predict(&holdout_houses).context("cannot evaluate the model")?;
    let mut card = model.card.clone();
    card.metrics = regression_metrics(&holdout_prices, &predicted);

    let dir = options.out_dir.join(&card.name).join(&card.version);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(ARTIFACT_FILE), &bytes).with_context(|| format!("cannot write {}", dir.display()))?;
    let mut json = serde_json::to_vec_pretty(&card)?;
    json.push(b'\n');
    std::fs::write(dir.join(CARD_FILE), json).with_context(|| format!("cannot write {}", dir.display()))?;
    tracing::info!(
        model = %card.id(),
        mae = card.metrics.mae,
        rmse = card.metrics.rmse,
        rmsle = card.metrics.rmsle,
        r2 = card.metrics.r2,
        dir = %dir.display(),
        "model written"
    );
    Ok(vec![card])
}

/// The smartcore version this binary links (artifacts are tied to it).
pub const SMARTCORE_VERSION: &str = env!("SMARTCORE_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_deterministic_and_disjoint() {
        let (a_train, a_hold) = holdout_split(100, 0.2, 42);
        let (b_train, b_hold) = holdout_split(100, 0.2, 42);
        assert_eq!((a_train.clone(), a_hold.clone()), (b_train, b_hold));
        assert_eq!(a_hold.len(), 20);
        let mut all: Vec<usize> = a_train.into_iter().chain(a_hold).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(holdout_split(100, 0.2, 43).1, holdout_split(100, 0.2, 42).1);
    }

    #[test]
    fn metrics_match_a_hand_computation() {
        // actual 100, 200, 300; predicted 110, 190, 330 → errors 10, -10, 30
        let m = regression_metrics(&[100.0, 200.0, 300.0], &[110.0, 190.0, 330.0]);
        assert!((m.mae - 50.0 / 3.0).abs() < 1e-9);
        assert!((m.rmse - (1100.0f64 / 3.0).sqrt()).abs() < 1e-9);
        // ss_res = 1100, ss_tot = 20000 → r2 = 1 - 1100/20000
        assert!((m.r2 - (1.0 - 1100.0 / 20000.0)).abs() < 1e-9);
        let msle = [(111f64, 101f64), (191.0, 201.0), (331.0, 301.0)]
            .iter()
            .map(|(p, a)| (p.ln() - a.ln()).powi(2))
            .sum::<f64>()
            / 3.0;
        assert!((m.rmsle - msle.sqrt()).abs() < 1e-12);
    }
}
