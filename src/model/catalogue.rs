//! The feature catalogue: everything the service knows about each input feature, in one table.
//!
//! Each line is one feature: its Rust field, its API name (GraphQL `HouseInput`, model cards, the
//! log's `features` JSON), its name in the seed's REST body, whether clients must send it, its
//! value type, unit, plausibility range, the Ames column(s) it is read from, and what it means.
//! Everything else is generated from or reads this table:
//! - [`super::features::Feature`] (the enum, names, kinds, ranges: the validation),
//! - `graphql::types::HouseInput` (its fields, types and schema descriptions),
//! - `From<HouseInput> for HouseFeatures`,
//! - [`super::dataset`] (how each feature is read from the CSV),
//! - the cards' `features` (unit, source, description), written by training.
//!
//! It is a macro because the GraphQL descriptions must be string literals: each consumer passes
//! the name of its own `macro_rules!` and receives the table. To add a feature: a line here, a
//! `make train` (the cards carry it), `make schema`; ARCHITECTURE.md "Where to add".
//!
//! Line format: `Variant field "apiName" "rest_name" required|optional float|int|bool|label
//! "unit" [min, max]|[] source "description"`, where source is `column("X")`,
//! `baths("Full", "Half")` (full + 0.5 × half) or `yes("X")` (1 when the column is `Y`).

/// Invokes `$consumer! { <the table> }`.
macro_rules! feature_catalogue {
    ($consumer:ident) => {
        $consumer! {
            SquareFeet square_feet "squareFeet" "square_feet" required float "sq ft" [100, 100000] column("Gr_Liv_Area") "Above-ground living area",
            Bedrooms bedrooms "bedrooms" "num_bedrooms" required int "count" [0, 50] column("Bedroom_AbvGr") "Bedrooms above grade",
            Bathrooms bathrooms "bathrooms" "num_bathrooms" required float "count" [0, 50] baths("Full_Bath", "Half_Bath") "Bathrooms above grade, a half bath counting 0.5",
            LotArea lot_area "lotArea" "lotArea" optional float "sq ft" [0, 10000000] column("Lot_Area") "Lot size",
            YearBuilt year_built "yearBuilt" "yearBuilt" optional int "year" [1600, 2100] column("Year_Built") "Original construction year",
            YearRemodeled year_remodeled "yearRemodeled" "yearRemodeled" optional int "year" [1600, 2100] column("Year_Remod_Add") "Remodel year (construction year if never remodelled)",
            BasementSqFt basement_sq_ft "basementSqFt" "basementSqFt" optional float "sq ft" [0, 100000] column("Total_Bsmt_SF") "Total basement area",
            BasementBathrooms basement_bathrooms "basementBathrooms" "basementBathrooms" optional float "count" [0, 20] baths("Bsmt_Full_Bath", "Bsmt_Half_Bath") "Basement bathrooms, a half bath counting 0.5",
            GarageCars garage_cars "garageCars" "garageCars" optional int "count" [0, 20] column("Garage_Cars") "Garage size in car capacity",
            GarageArea garage_area "garageArea" "garageArea" optional float "sq ft" [0, 100000] column("Garage_Area") "Garage area",
            Fireplaces fireplaces "fireplaces" "fireplaces" optional int "count" [0, 20] column("Fireplaces") "Number of fireplaces",
            Kitchens kitchens "kitchens" "kitchens" optional int "count" [0, 20] column("Kitchen_AbvGr") "Kitchens above grade",
            CentralAir central_air "centralAir" "centralAir" optional bool "yes/no" [] yes("Central_Air") "Central air conditioning",
            OverallCondition overall_condition "overallCondition" "overallCondition" optional label "label" [] column("Overall_Cond") "Overall condition rating of the house",
            Neighborhood neighborhood "neighborhood" "neighborhood" optional label "label" [] column("Neighborhood") "Neighbourhood within Ames city limits",
            HouseStyle house_style "houseStyle" "houseStyle" optional label "label" [] column("House_Style") "Style of dwelling",
            BuildingType building_type "buildingType" "buildingType" optional label "label" [] column("Bldg_Type") "Type of dwelling",
            HeatingQuality heating_quality "heatingQuality" "heatingQuality" optional label "label" [] column("Heating_QC") "Heating quality and condition",
            Foundation foundation "foundation" "foundation" optional label "label" [] column("Foundation") "Type of foundation",
            SaleCondition sale_condition "saleCondition" "saleCondition" optional label "label" [] column("Sale_Condition") "Condition of sale",
        }
    };
}
pub(crate) use feature_catalogue;

/// The monitored "feature" that is the prediction itself: its drift counters and reference
/// distribution go by this name, which no input feature can have.
pub const PRICE_FEATURE: &str = "_price";

/// Where a feature's value comes from in the Ames CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One column, as is.
    Column(&'static str),
    /// Full plus half baths: `full + 0.5 × half`.
    Baths(&'static str, &'static str),
    /// 1 when the column is `Y`, else 0.
    Yes(&'static str),
}

impl Source {
    /// The columns read.
    pub fn columns(self) -> Vec<&'static str> {
        match self {
            Source::Column(c) | Source::Yes(c) => vec![c],
            Source::Baths(full, half) => vec![full, half],
        }
    }
}

impl std::fmt::Display for Source {
    /// As the cards' `source` says it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Column(c) => f.write_str(c),
            Source::Baths(full, half) => write!(f, "{full} + 0.5 * {half}"),
            Source::Yes(c) => write!(f, "{c} = 'Y'"),
        }
    }
}

/// The value type of a feature as clients send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// A number with a fraction (GraphQL `Float`).
    Float,
    /// A whole number (GraphQL `Int`).
    Int,
    /// Yes/no (GraphQL `Boolean`), encoded 1/0.
    Bool,
    /// A label (GraphQL `String`).
    Label,
}

/// One catalogue line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureDef {
    /// API name.
    pub name: &'static str,
    /// Name in the seed-compatible REST body.
    pub rest_name: &'static str,
    /// Whether clients must send it.
    pub required: bool,
    /// Value type.
    pub value: ValueType,
    /// Unit, for cards and docs.
    pub unit: &'static str,
    /// Plausibility limits (inclusive) of numeric features.
    pub range: Option<(f64, f64)>,
    /// Where it is read from in the training data.
    pub source: Source,
    /// One-line meaning.
    pub description: &'static str,
}

/// Helpers the consumers' macros use to turn table tokens into values.
#[doc(hidden)]
#[macro_export]
macro_rules! __catalogue_value_type {
    (float) => {
        $crate::model::catalogue::ValueType::Float
    };
    (int) => {
        $crate::model::catalogue::ValueType::Int
    };
    (bool) => {
        $crate::model::catalogue::ValueType::Bool
    };
    (label) => {
        $crate::model::catalogue::ValueType::Label
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __catalogue_required {
    (required) => {
        true
    };
    (optional) => {
        false
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __catalogue_source {
    (column($c:literal)) => {
        $crate::model::catalogue::Source::Column($c)
    };
    (baths($full:literal, $half:literal)) => {
        $crate::model::catalogue::Source::Baths($full, $half)
    };
    (yes($c:literal)) => {
        $crate::model::catalogue::Source::Yes($c)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __catalogue_range {
    ([]) => {
        None
    };
    ([$min:literal, $max:literal]) => {
        Some(($min as f64, $max as f64))
    };
}

/// The table as data, in catalogue order (`Feature as usize` indexes it).
macro_rules! definitions {
    ($( $variant:ident $field:ident $name:literal $rest:literal $required:ident $value:ident $unit:literal
        $range:tt $source:ident $source_args:tt $description:literal ),* $(,)?) => {
        /// Every feature's catalogue line, in catalogue order.
        pub const CATALOGUE: &[FeatureDef] = &[$(FeatureDef {
            name: $name,
            rest_name: $rest,
            required: $crate::__catalogue_required!($required),
            value: $crate::__catalogue_value_type!($value),
            unit: $unit,
            range: $crate::__catalogue_range!($range),
            source: $crate::__catalogue_source!($source $source_args),
            description: $description,
        }),*];
    };
}
feature_catalogue!(definitions);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_distinct_from_the_price() {
        let mut names: Vec<&str> = CATALOGUE.iter().map(|d| d.name).collect();
        names.push(PRICE_FEATURE);
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn the_seed_inputs_are_the_required_ones_with_the_seed_rest_names() {
        let required: Vec<(&str, &str)> =
            CATALOGUE.iter().filter(|d| d.required).map(|d| (d.name, d.rest_name)).collect();
        assert_eq!(
            required,
            [("squareFeet", "square_feet"), ("bedrooms", "num_bedrooms"), ("bathrooms", "num_bathrooms")]
        );
    }

    #[test]
    fn numbers_have_ranges_and_labels_do_not() {
        for d in CATALOGUE {
            let numeric = matches!(d.value, ValueType::Float | ValueType::Int);
            assert_eq!(d.range.is_some(), numeric, "{}", d.name);
            if let Some((min, max)) = d.range {
                assert!(min < max, "{}", d.name);
            }
        }
    }

    #[test]
    fn sources_read_as_the_cards_say() {
        assert_eq!(Source::Baths("Full_Bath", "Half_Bath").to_string(), "Full_Bath + 0.5 * Half_Bath");
        assert_eq!(Source::Yes("Central_Air").to_string(), "Central_Air = 'Y'");
    }
}
