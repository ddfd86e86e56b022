//! The house features the API accepts, their plausibility limits, and how each is read from the
//! Ames data.
//!
//! Three inputs are required (the seed service's: living area, bedrooms, bathrooms); the others are
//! optional, and a model that needs one the client did not send uses the imputation value from its
//! card and reports it. Validation here is about *plausibility* (no negative areas, no 500-bedroom
//! houses), not the training range: a plausible house outside what the model saw is still priced.
//! Categorical values are checked by the model that answers (each knows its own categories).

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// How a feature's values look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A number; the range is its plausibility limit.
    Numeric,
    /// A yes/no flag, encoded 1/0.
    Boolean,
    /// One of a fixed set of labels (the training data's).
    Categorical,
}

/// One input feature. The declaration order is the catalogue order used everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Feature {
    /// Above-ground living area (Ames `Gr_Liv_Area`), square feet. Required.
    SquareFeet,
    /// Bedrooms above grade (`Bedroom_AbvGr`). Required.
    Bedrooms,
    /// Full baths + 0.5 × half baths above grade (`Full_Bath`, `Half_Bath`). Required.
    Bathrooms,
    /// Lot size (`Lot_Area`), square feet.
    LotArea,
    /// Original construction year (`Year_Built`).
    YearBuilt,
    /// Remodel year, the construction year if never remodelled (`Year_Remod_Add`).
    YearRemodeled,
    /// Basement area (`Total_Bsmt_SF`), square feet.
    BasementSqFt,
    /// Basement full baths + 0.5 × half baths.
    BasementBathrooms,
    /// Garage size in cars (`Garage_Cars`).
    GarageCars,
    /// Garage area (`Garage_Area`), square feet.
    GarageArea,
    /// Number of fireplaces (`Fireplaces`).
    Fireplaces,
    /// Kitchens above grade (`Kitchen_AbvGr`).
    Kitchens,
    /// Whether the house has central air conditioning (`Central_Air`).
    CentralAir,
    /// Overall condition rating (`Overall_Cond`), `Very_Poor` … `Excellent`.
    OverallCondition,
    /// Neighbourhood within Ames (`Neighborhood`).
    Neighborhood,
    /// Style of dwelling (`House_Style`), e.g. `One_Story`.
    HouseStyle,
    /// Type of dwelling (`Bldg_Type`), e.g. `OneFam`.
    BuildingType,
    /// Heating quality (`Heating_QC`).
    HeatingQuality,
    /// Foundation type (`Foundation`).
    Foundation,
    /// Sale condition (`Sale_Condition`), e.g. `Normal`, `Partial` (new construction).
    SaleCondition,
}

/// A feature's value: numbers (and booleans as 1/0) or a category label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// Numeric or boolean.
    Number(f64),
    /// Category label.
    Category(String),
}

/// The `&'static` name of a feature (or of [`super::PRICE_FEATURE`]) given as text, for rows
/// read back from the spool. A name this build does not know (a spool written by another
/// version) is leaked once per distinct name: there are only ever a handful.
pub fn static_name(name: &str) -> &'static str {
    static UNKNOWN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    if name == super::PRICE_FEATURE {
        return super::PRICE_FEATURE;
    }
    if let Some(feature) = Feature::ALL.iter().find(|f| f.name() == name) {
        return feature.name();
    }
    let mut unknown = UNKNOWN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = unknown.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    unknown.push(leaked);
    leaked
}

impl Feature {
    /// Every feature, in catalogue order.
    pub const ALL: [Feature; 20] = [
        Feature::SquareFeet,
        Feature::Bedrooms,
        Feature::Bathrooms,
        Feature::LotArea,
        Feature::YearBuilt,
        Feature::YearRemodeled,
        Feature::BasementSqFt,
        Feature::BasementBathrooms,
        Feature::GarageCars,
        Feature::GarageArea,
        Feature::Fireplaces,
        Feature::Kitchens,
        Feature::CentralAir,
        Feature::OverallCondition,
        Feature::Neighborhood,
        Feature::HouseStyle,
        Feature::BuildingType,
        Feature::HeatingQuality,
        Feature::Foundation,
        Feature::SaleCondition,
    ];

    /// The seed service's three inputs, always required.
    pub const REQUIRED: [Feature; 3] = [Feature::SquareFeet, Feature::Bedrooms, Feature::Bathrooms];

    /// Field name in the GraphQL `HouseInput`, in model cards and in the log's `features` JSON.
    pub fn name(self) -> &'static str {
        match self {
            Feature::SquareFeet => "squareFeet",
            Feature::Bedrooms => "bedrooms",
            Feature::Bathrooms => "bathrooms",
            Feature::LotArea => "lotArea",
            Feature::YearBuilt => "yearBuilt",
            Feature::YearRemodeled => "yearRemodeled",
            Feature::BasementSqFt => "basementSqFt",
            Feature::BasementBathrooms => "basementBathrooms",
            Feature::GarageCars => "garageCars",
            Feature::GarageArea => "garageArea",
            Feature::Fireplaces => "fireplaces",
            Feature::Kitchens => "kitchens",
            Feature::CentralAir => "centralAir",
            Feature::OverallCondition => "overallCondition",
            Feature::Neighborhood => "neighborhood",
            Feature::HouseStyle => "houseStyle",
            Feature::BuildingType => "buildingType",
            Feature::HeatingQuality => "heatingQuality",
            Feature::Foundation => "foundation",
            Feature::SaleCondition => "saleCondition",
        }
    }

    /// Field name in the seed-compatible REST body (`POST /prever_precos/`), which has only the three
    /// required inputs.
    pub fn rest_name(self) -> &'static str {
        match self {
            Feature::SquareFeet => "square_feet",
            Feature::Bedrooms => "num_bedrooms",
            Feature::Bathrooms => "num_bathrooms",
            other => other.name(),
        }
    }

    /// Value type.
    pub fn kind(self) -> FeatureKind {
        match self {
            Feature::CentralAir => FeatureKind::Boolean,
            Feature::OverallCondition
            | Feature::Neighborhood
            | Feature::HouseStyle
            | Feature::BuildingType
            | Feature::HeatingQuality
            | Feature::Foundation
            | Feature::SaleCondition => FeatureKind::Categorical,
            _ => FeatureKind::Numeric,
        }
    }

    /// Plausibility limits of numeric features (inclusive); `None` for other kinds.
    pub fn plausible_range(self) -> Option<RangeInclusive<f64>> {
        Some(match self {
            // A tiny house is ~100 sq ft; the largest private homes are ~60,000.
            Feature::SquareFeet => 100.0..=100_000.0,
            Feature::Bedrooms | Feature::Bathrooms => 0.0..=50.0,
            Feature::LotArea => 0.0..=10_000_000.0,
            Feature::YearBuilt | Feature::YearRemodeled => 1600.0..=2100.0,
            Feature::BasementSqFt | Feature::GarageArea => 0.0..=100_000.0,
            Feature::BasementBathrooms | Feature::GarageCars | Feature::Fireplaces | Feature::Kitchens => 0.0..=20.0,
            _ => return None,
        })
    }

    /// Unit, for cards and docs.
    pub fn unit(self) -> &'static str {
        match self {
            Feature::SquareFeet | Feature::LotArea | Feature::BasementSqFt | Feature::GarageArea => "sq ft",
            Feature::YearBuilt | Feature::YearRemodeled => "year",
            Feature::CentralAir => "yes/no",
            f if f.kind() == FeatureKind::Categorical => "label",
            _ => "count",
        }
    }

    /// Ames column(s) the feature is read from.
    pub fn source(self) -> &'static str {
        match self {
            Feature::SquareFeet => "Gr_Liv_Area",
            Feature::Bedrooms => "Bedroom_AbvGr",
            Feature::Bathrooms => "Full_Bath + 0.5 * Half_Bath",
            Feature::LotArea => "Lot_Area",
            Feature::YearBuilt => "Year_Built",
            Feature::YearRemodeled => "Year_Remod_Add",
            Feature::BasementSqFt => "Total_Bsmt_SF",
            Feature::BasementBathrooms => "Bsmt_Full_Bath + 0.5 * Bsmt_Half_Bath",
            Feature::GarageCars => "Garage_Cars",
            Feature::GarageArea => "Garage_Area",
            Feature::Fireplaces => "Fireplaces",
            Feature::Kitchens => "Kitchen_AbvGr",
            Feature::CentralAir => "Central_Air = 'Y'",
            Feature::OverallCondition => "Overall_Cond",
            Feature::Neighborhood => "Neighborhood",
            Feature::HouseStyle => "House_Style",
            Feature::BuildingType => "Bldg_Type",
            Feature::HeatingQuality => "Heating_QC",
            Feature::Foundation => "Foundation",
            Feature::SaleCondition => "Sale_Condition",
        }
    }

    /// One-line meaning, for cards.
    pub fn description(self) -> &'static str {
        match self {
            Feature::SquareFeet => "Above-ground living area",
            Feature::Bedrooms => "Bedrooms above grade",
            Feature::Bathrooms => "Bathrooms above grade, a half bath counting 0.5",
            Feature::LotArea => "Lot size",
            Feature::YearBuilt => "Original construction year",
            Feature::YearRemodeled => "Remodel year (construction year if never remodelled)",
            Feature::BasementSqFt => "Total basement area",
            Feature::BasementBathrooms => "Basement bathrooms, a half bath counting 0.5",
            Feature::GarageCars => "Garage size in car capacity",
            Feature::GarageArea => "Garage area",
            Feature::Fireplaces => "Number of fireplaces",
            Feature::Kitchens => "Kitchens above grade",
            Feature::CentralAir => "Central air conditioning",
            Feature::OverallCondition => "Overall condition rating of the house",
            Feature::Neighborhood => "Neighbourhood within Ames city limits",
            Feature::HouseStyle => "Style of dwelling",
            Feature::BuildingType => "Type of dwelling",
            Feature::HeatingQuality => "Heating quality and condition",
            Feature::Foundation => "Type of foundation",
            Feature::SaleCondition => "Condition of sale",
        }
    }

    /// Parses an API name.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A feature value that failed validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{feature} {message}")]
pub struct InvalidFeature {
    /// Which input was wrong.
    pub feature: Feature,
    /// Human-readable reason, without the field name (the caller prefixes its own path).
    pub message: String,
}

/// The inputs of one prediction, as the client sent them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HouseFeatures {
    /// Above-ground living area in square feet.
    pub square_feet: f64,
    /// Bedrooms above grade. `i64` so that out-of-range values from REST clients are reported, not truncated.
    pub bedrooms: i64,
    /// Full baths + 0.5 × half baths.
    pub bathrooms: f64,
    /// The optional features the client sent.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub optional: std::collections::BTreeMap<Feature, FeatureValue>,
}

impl HouseFeatures {
    /// A house with only the three required inputs.
    pub fn new(square_feet: f64, bedrooms: i64, bathrooms: f64) -> Self {
        Self { square_feet, bedrooms, bathrooms, optional: std::collections::BTreeMap::default() }
    }

    /// Sets an optional feature (builder style).
    pub fn with(mut self, feature: Feature, value: FeatureValue) -> Self {
        self.optional.insert(feature, value);
        self
    }

    /// The value of `feature`, if sent.
    pub fn get(&self, feature: Feature) -> Option<FeatureValue> {
        match feature {
            Feature::SquareFeet => Some(FeatureValue::Number(self.square_feet)),
            Feature::Bedrooms => Some(FeatureValue::Number(self.bedrooms as f64)),
            Feature::Bathrooms => Some(FeatureValue::Number(self.bathrooms)),
            other => self.optional.get(&other).cloned(),
        }
    }

    /// Checks every numeric value against its plausibility range and reports the first failure in
    /// catalogue order, so the same bad input always names the same field.
    pub fn validate(&self) -> Result<(), InvalidFeature> {
        for feature in Feature::ALL {
            let (Some(range), Some(value)) = (feature.plausible_range(), self.get(feature)) else { continue };
            let FeatureValue::Number(value) = value else {
                return Err(InvalidFeature { feature, message: "must be a number".to_owned() });
            };
            if !value.is_finite() {
                return Err(InvalidFeature { feature, message: format!("must be a finite number, got {value}") });
            }
            if !range.contains(&value) {
                return Err(InvalidFeature {
                    feature,
                    message: format!(
                        "must be between {} and {} ({}), got {value}",
                        range.start(),
                        range.end(),
                        feature.unit()
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn house() -> HouseFeatures {
        HouseFeatures::new(1500.0, 3, 2.0)
    }

    #[test]
    fn a_typical_house_is_valid() {
        assert_eq!(house().validate(), Ok(()));
        let full = house()
            .with(Feature::YearBuilt, FeatureValue::Number(1995.0))
            .with(Feature::Neighborhood, FeatureValue::Category("Gilbert".into()));
        assert_eq!(full.validate(), Ok(()));
    }

    #[test]
    fn each_field_is_named_when_out_of_range() {
        let cases = [
            (HouseFeatures { square_feet: 0.0, ..house() }, Feature::SquareFeet),
            (HouseFeatures { square_feet: -5.0, ..house() }, Feature::SquareFeet),
            (HouseFeatures { square_feet: 1e9, ..house() }, Feature::SquareFeet),
            (HouseFeatures { square_feet: f64::NAN, ..house() }, Feature::SquareFeet),
            (HouseFeatures { bedrooms: -1, ..house() }, Feature::Bedrooms),
            (HouseFeatures { bedrooms: 51, ..house() }, Feature::Bedrooms),
            (HouseFeatures { bathrooms: -0.5, ..house() }, Feature::Bathrooms),
            (HouseFeatures { bathrooms: f64::INFINITY, ..house() }, Feature::Bathrooms),
            (house().with(Feature::YearBuilt, FeatureValue::Number(1200.0)), Feature::YearBuilt),
            (house().with(Feature::GarageCars, FeatureValue::Number(-1.0)), Feature::GarageCars),
            (house().with(Feature::LotArea, FeatureValue::Category("big".into())), Feature::LotArea),
        ];
        for (input, feature) in cases {
            let err = input.validate().expect_err("must be rejected");
            assert_eq!(err.feature, feature, "{input:?}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        assert_eq!(HouseFeatures::new(100.0, 0, 0.0).validate(), Ok(()));
        assert_eq!(HouseFeatures::new(100_000.0, 50, 50.0).validate(), Ok(()));
    }

    #[test]
    fn the_message_says_what_was_received() {
        let err = HouseFeatures { bedrooms: 99, ..house() }.validate().unwrap_err();
        assert_eq!(err.to_string(), "bedrooms must be between 0 and 50 (count), got 99");
    }

    #[test]
    fn names_round_trip_and_serde_uses_them() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
            assert_eq!(serde_json::to_value(f).unwrap(), f.name());
        }
    }
}
