//! The house features a client sends, and their plausibility limits.
//!
//! Validation here is about *plausibility* (no negative areas, no 500-bedroom houses), not about the
//! training range: a plausible house outside the range the model saw is still priced. Limits are
//! deliberately generous so they only catch typos and unit mistakes (square metres vs feet, cents vs
//! dollars are not our concern here, but `squareFeet: 0` or `bedrooms: -1` are).

use std::fmt;
use std::ops::RangeInclusive;

/// Plausible living area above ground, in square feet. A tiny house is ~100 sq ft; the largest
/// private homes are ~60,000.
pub const SQUARE_FEET_RANGE: RangeInclusive<f64> = 100.0..=100_000.0;
/// Plausible bedroom count (0 is a studio).
pub const BEDROOMS_RANGE: RangeInclusive<i64> = 0..=50;
/// Plausible bathroom count; a half bath counts 0.5.
pub const BATHROOMS_RANGE: RangeInclusive<f64> = 0.0..=50.0;

/// One of the client-facing input features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Above-ground living area (Ames `Gr_Liv_Area`), square feet.
    SquareFeet,
    /// Bedrooms above grade (Ames `Bedroom_AbvGr`).
    Bedrooms,
    /// Full baths + 0.5 × half baths above grade (Ames `Full_Bath`, `Half_Bath`).
    Bathrooms,
}

impl Feature {
    /// Every feature, in the column order the models are trained on.
    pub const ALL: [Feature; 3] = [Feature::SquareFeet, Feature::Bedrooms, Feature::Bathrooms];

    /// Field name in the GraphQL `HouseInput` and in model cards.
    pub fn graphql_name(self) -> &'static str {
        match self {
            Feature::SquareFeet => "squareFeet",
            Feature::Bedrooms => "bedrooms",
            Feature::Bathrooms => "bathrooms",
        }
    }

    /// Field name in the seed-compatible REST body (`POST /prever_precos/`).
    pub fn rest_name(self) -> &'static str {
        match self {
            Feature::SquareFeet => "square_feet",
            Feature::Bedrooms => "num_bedrooms",
            Feature::Bathrooms => "num_bathrooms",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.graphql_name())
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
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HouseFeatures {
    /// Above-ground living area in square feet.
    pub square_feet: f64,
    /// Bedrooms above grade. `i64` so that out-of-range values from REST clients are reported, not truncated.
    pub bedrooms: i64,
    /// Full baths + 0.5 × half baths.
    pub bathrooms: f64,
}

impl HouseFeatures {
    /// Checks every field against its plausibility range and reports the first failure in
    /// [`Feature::ALL`] order, so the same bad input always names the same field.
    pub fn validate(&self) -> Result<(), InvalidFeature> {
        check_float(Feature::SquareFeet, self.square_feet, &SQUARE_FEET_RANGE, "square feet")?;
        if !BEDROOMS_RANGE.contains(&self.bedrooms) {
            return Err(InvalidFeature {
                feature: Feature::Bedrooms,
                message: format!(
                    "must be between {} and {} bedrooms, got {}",
                    BEDROOMS_RANGE.start(),
                    BEDROOMS_RANGE.end(),
                    self.bedrooms
                ),
            });
        }
        check_float(Feature::Bathrooms, self.bathrooms, &BATHROOMS_RANGE, "bathrooms")
    }

    /// The model's input row, in [`Feature::ALL`] order.
    pub fn to_row(&self) -> Vec<f64> {
        vec![self.square_feet, self.bedrooms as f64, self.bathrooms]
    }
}

fn check_float(feature: Feature, value: f64, range: &RangeInclusive<f64>, unit: &str) -> Result<(), InvalidFeature> {
    if !value.is_finite() {
        return Err(InvalidFeature { feature, message: format!("must be a finite number, got {value}") });
    }
    if !range.contains(&value) {
        return Err(InvalidFeature {
            feature,
            message: format!("must be between {} and {} {unit}, got {value}", range.start(), range.end()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn house() -> HouseFeatures {
        HouseFeatures { square_feet: 1500.0, bedrooms: 3, bathrooms: 2.0 }
    }

    #[test]
    fn a_typical_house_is_valid() {
        assert_eq!(house().validate(), Ok(()));
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
        ];
        for (input, feature) in cases {
            let err = input.validate().expect_err("must be rejected");
            assert_eq!(err.feature, feature, "{input:?}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let edge = HouseFeatures { square_feet: 100.0, bedrooms: 0, bathrooms: 0.0 };
        assert_eq!(edge.validate(), Ok(()));
        let edge = HouseFeatures { square_feet: 100_000.0, bedrooms: 50, bathrooms: 50.0 };
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn the_message_says_what_was_received() {
        let err = HouseFeatures { bedrooms: 99, ..house() }.validate().unwrap_err();
        assert_eq!(err.to_string(), "bedrooms must be between 0 and 50 bedrooms, got 99");
    }
}
