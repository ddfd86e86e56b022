//! The Ames sales as the models see them: reading `data/ames_housing.csv` (with the documented
//! exclusions) and the seeded holdout split. Shared by training, which fits on one side of the
//! split, and the replay tool, which sends the other side through the API.

use std::path::Path;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::artifact::sha256_hex;
use super::catalogue::{Source, ValueType};
use super::features::{Feature, FeatureValue, HouseFeatures};

/// Houses above this living area are excluded, as De Cock (2011) recommends: three of the five are
/// partial sales at prices unrelated to their size.
pub const MAX_TRAINING_SQUARE_FEET: f64 = 4000.0;
/// The column holding the sale price, the target.
pub const TARGET_COLUMN: &str = "Sale_Price";

/// A parsed data set: features, prices and provenance.
pub struct Dataset {
    /// Every used row's features (all 20 set).
    pub houses: Vec<HouseFeatures>,
    /// Sale prices, USD.
    pub prices: Vec<f64>,
    /// Rows in the file before exclusions.
    pub rows_total: usize,
    /// sha256 of the file.
    pub sha256: String,
}

/// Reads the Ames CSV, applying the documented exclusions. Each feature is read from the
/// column(s) its catalogue line names (`catalogue.rs`); other columns are ignored.
pub fn read_dataset(path: &Path) -> anyhow::Result<Dataset> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read training data {}", path.display()))?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers = reader.headers().with_context(|| format!("{}: no header row", path.display()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| format!("{} has no column {name}", path.display()))
    };
    let sources = Feature::ALL
        .into_iter()
        .map(|feature| {
            Ok((feature, feature.source().columns().into_iter().map(column).collect::<Result<Vec<_>, _>>()?))
        })
        .collect::<anyhow::Result<Vec<(Feature, Vec<usize>)>>>()?;
    let price_column = column(TARGET_COLUMN)?;
    let mut houses = Vec::new();
    let mut prices = Vec::new();
    let mut rows_total = 0;
    for (line, record) in reader.records().enumerate() {
        let context = || format!("{}: bad row {}", path.display(), line + 2);
        let record = record.with_context(context)?;
        let text = |i: usize| record.get(i).unwrap_or_default();
        let number = |i: usize| text(i).trim().parse::<f64>().with_context(context);
        rows_total += 1;
        let mut house = HouseFeatures::default();
        for (feature, columns) in &sources {
            let value = match (feature.source(), feature.def().value) {
                (Source::Column(_), ValueType::Label) => FeatureValue::Category(text(columns[0]).to_owned()),
                (Source::Column(_), _) => FeatureValue::Number(number(columns[0])?),
                (Source::Baths(..), _) => FeatureValue::Number(number(columns[0])? + 0.5 * number(columns[1])?),
                (Source::Yes(_), _) => FeatureValue::Number(if text(columns[0]) == "Y" { 1.0 } else { 0.0 }),
            };
            house.set(*feature, value).with_context(context)?;
        }
        if house.square_feet > MAX_TRAINING_SQUARE_FEET {
            continue;
        }
        prices.push(number(price_column)?);
        houses.push(house);
    }
    if houses.is_empty() {
        bail!("{} has no usable rows", path.display());
    }
    Ok(Dataset { houses, prices, rows_total, sha256: sha256_hex(&bytes) })
}

/// Share of the training rows kept out of fitting to calibrate the intervals and the error model.
pub const CALIBRATION_FRACTION: f64 = 0.2;

/// Splits the training rows into (fit, calibration): a second seeded shuffle, so the holdout
/// split (and the replay tool's houses) stay what they were.
pub fn calibration_split(train: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut indices = train.to_vec();
    indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(1)));
    let n_calibration = ((train.len() as f64) * fraction).round() as usize;
    let calibration = indices[..n_calibration].to_vec();
    let fit = indices[n_calibration..].to_vec();
    (fit, calibration)
}

/// Splits `0..n` into `k` folds after a seeded shuffle: the test rows of each fold.
pub fn folds(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(2)));
    (0..k).map(|f| indices.iter().copied().skip(f).step_by(k).collect()).collect()
}

/// Splits row indices into (train, holdout) with a ChaCha8 shuffle of the indices under `seed`:
/// the same split on every machine, for training and replay alike.
pub fn holdout_split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_holdout = ((n as f64) * fraction).round() as usize;
    let holdout = indices[..n_holdout].to_vec();
    let train = indices[n_holdout..].to_vec();
    (train, holdout)
}
