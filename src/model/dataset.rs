//! The Ames sales as the models see them: reading `data/ames_housing.csv` (with the documented
//! exclusions) and the seeded holdout split. Shared by training, which fits on one side of the
//! split, and the replay tool, which sends the other side through the API.

use std::path::Path;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::artifact::sha256_hex;
use super::features::{Feature, FeatureValue, HouseFeatures};

/// Houses above this living area are excluded, as De Cock (2011) recommends: three of the five are
/// partial sales at prices unrelated to their size.
pub const MAX_TRAINING_SQUARE_FEET: f64 = 4000.0;
/// The columns of `ames_housing.csv` the models use; other columns are ignored.
#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct AmesRow {
    Gr_Liv_Area: f64,
    Bedroom_AbvGr: i64,
    Full_Bath: f64,
    Half_Bath: f64,
    Lot_Area: f64,
    Year_Built: f64,
    Year_Remod_Add: f64,
    Total_Bsmt_SF: f64,
    Bsmt_Full_Bath: f64,
    Bsmt_Half_Bath: f64,
    Garage_Cars: f64,
    Garage_Area: f64,
    Fireplaces: f64,
    Kitchen_AbvGr: f64,
    Central_Air: String,
    Overall_Cond: String,
    Neighborhood: String,
    House_Style: String,
    Bldg_Type: String,
    Heating_QC: String,
    Foundation: String,
    Sale_Condition: String,
    Sale_Price: f64,
}

impl AmesRow {
    fn house(self) -> HouseFeatures {
        use FeatureValue::{Category as C, Number as N};
        let values = [
            (Feature::LotArea, N(self.Lot_Area)),
            (Feature::YearBuilt, N(self.Year_Built)),
            (Feature::YearRemodeled, N(self.Year_Remod_Add)),
            (Feature::BasementSqFt, N(self.Total_Bsmt_SF)),
            (Feature::BasementBathrooms, N(self.Bsmt_Full_Bath + 0.5 * self.Bsmt_Half_Bath)),
            (Feature::GarageCars, N(self.Garage_Cars)),
            (Feature::GarageArea, N(self.Garage_Area)),
            (Feature::Fireplaces, N(self.Fireplaces)),
            (Feature::Kitchens, N(self.Kitchen_AbvGr)),
            (Feature::CentralAir, N(if self.Central_Air == "Y" { 1.0 } else { 0.0 })),
            (Feature::OverallCondition, C(self.Overall_Cond)),
            (Feature::Neighborhood, C(self.Neighborhood)),
            (Feature::HouseStyle, C(self.House_Style)),
            (Feature::BuildingType, C(self.Bldg_Type)),
            (Feature::HeatingQuality, C(self.Heating_QC)),
            (Feature::Foundation, C(self.Foundation)),
            (Feature::SaleCondition, C(self.Sale_Condition)),
        ];
        HouseFeatures {
            square_feet: self.Gr_Liv_Area,
            bedrooms: self.Bedroom_AbvGr,
            bathrooms: self.Full_Bath + 0.5 * self.Half_Bath,
            optional: values.into_iter().collect(),
        }
    }
}

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

/// Reads the Ames CSV, applying the documented exclusions.
pub fn read_dataset(path: &Path) -> anyhow::Result<Dataset> {
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
        prices.push(row.Sale_Price);
        houses.push(row.house());
    }
    if houses.is_empty() {
        bail!("{} has no usable rows", path.display());
    }
    Ok(Dataset { houses, prices, rows_total, sha256: sha256_hex(&bytes) })
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
