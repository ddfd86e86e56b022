//! The house features the API accepts (generated from the catalogue, `catalogue.rs`) and their
//! validation.
//!
//! Three inputs are required (the seed service's: living area, bedrooms, bathrooms); the others are
//! optional, and a model that needs one the client did not send uses the imputation value from its
//! card and reports it. Validation here is about *plausibility* (no negative areas, no 500-bedroom
//! houses), not the training range: a plausible house outside what the model saw is still priced.
//! Categorical values are checked by the model that answers (each knows its own categories).

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::catalogue::{CATALOGUE, FeatureDef, PRICE_FEATURE, Source, ValueType, feature_catalogue};

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

/// A feature's value: numbers (and booleans as 1/0) or a category label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// Numeric or boolean.
    Number(f64),
    /// Category label.
    Category(String),
}

/// Declares [`Feature`] from the catalogue.
macro_rules! feature_enum {
    ($( $variant:ident $field:ident $name:literal $rest:literal $required:ident $value:ident $unit:literal
        $range:tt $source:ident $source_args:tt $description:literal ),* $(,)?) => {
        /// One input feature, in catalogue order (`src/model/catalogue.rs` says what each is).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Feature {
            $(
                #[doc = $description]
                #[serde(rename = $name)]
                $variant,
            )*
        }

        impl Feature {
            /// Every feature, in catalogue order.
            pub const ALL: [Feature; CATALOGUE.len()] = [$(Feature::$variant),*];
        }
    };
}
feature_catalogue!(feature_enum);

/// The `&'static` name of a feature (or of [`PRICE_FEATURE`]) given as text, for rows read back
/// from the spool. A name this build does not know (a spool written by another version) is
/// leaked once per distinct name: there are only ever a handful.
pub fn static_name(name: &str) -> &'static str {
    static UNKNOWN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    if name == PRICE_FEATURE {
        return PRICE_FEATURE;
    }
    if let Some(feature) = Feature::from_name(name) {
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
    /// The seed service's three inputs, always required.
    pub const REQUIRED: [Feature; 3] = [Feature::SquareFeet, Feature::Bedrooms, Feature::Bathrooms];

    /// Its catalogue line.
    pub fn def(self) -> &'static FeatureDef {
        &CATALOGUE[self as usize]
    }

    /// Field name in the GraphQL `HouseInput`, in model cards and in the log's `features` JSON.
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// Field name in the seed-compatible REST body (`POST /prever_precos/`), which has only the three
    /// required inputs.
    pub fn rest_name(self) -> &'static str {
        self.def().rest_name
    }

    /// Value type.
    pub fn kind(self) -> FeatureKind {
        match self.def().value {
            ValueType::Float | ValueType::Int => FeatureKind::Numeric,
            ValueType::Bool => FeatureKind::Boolean,
            ValueType::Label => FeatureKind::Categorical,
        }
    }

    /// Plausibility limits of numeric features (inclusive); `None` for other kinds.
    pub fn plausible_range(self) -> Option<RangeInclusive<f64>> {
        self.def().range.map(|(min, max)| min..=max)
    }

    /// Unit, for cards and docs.
    pub fn unit(self) -> &'static str {
        self.def().unit
    }

    /// Where the feature is read from in the Ames data.
    pub fn source(self) -> Source {
        self.def().source
    }

    /// One-line meaning, for cards.
    pub fn description(self) -> &'static str {
        self.def().description
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

    /// Sets `feature` (one of the three required ones, or an optional one). A required feature
    /// must be a number, and `bedrooms` a whole one.
    pub fn set(&mut self, feature: Feature, value: FeatureValue) -> Result<(), InvalidFeature> {
        let number = |value: FeatureValue| match value {
            FeatureValue::Number(n) => Ok(n),
            FeatureValue::Category(_) => Err(InvalidFeature { feature, message: "must be a number".to_owned() }),
        };
        match feature {
            Feature::SquareFeet => self.square_feet = number(value)?,
            Feature::Bathrooms => self.bathrooms = number(value)?,
            Feature::Bedrooms => {
                let n = number(value)?;
                if n.fract() != 0.0 || !n.is_finite() {
                    return Err(InvalidFeature { feature, message: format!("must be a whole number, got {n}") });
                }
                self.bedrooms = n as i64;
            }
            other => {
                self.optional.insert(other, value);
            }
        }
        Ok(())
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
    fn the_enum_follows_the_catalogue() {
        assert_eq!(Feature::ALL.len(), CATALOGUE.len());
        for (feature, def) in Feature::ALL.into_iter().zip(CATALOGUE) {
            assert_eq!(feature.def(), def);
        }
        assert!(Feature::REQUIRED.iter().all(|f| f.def().required));
    }

    #[test]
    fn names_round_trip_and_serde_uses_them() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
            assert_eq!(serde_json::to_value(f).unwrap(), f.name());
        }
    }
}
