//! The spool's own row type: what one prediction-log row looks like on disk.
//!
//! It is deliberately not [`PredictionRecord`]: the in-memory row changes with every new column,
//! while a segment written by one build must be drained by the next (an operator restarts after
//! an outage with a non-empty spool, and that is exactly when an upgrade is rolled out).
//!
//! # Rules for changing it (format version 1)
//!
//! Rows are JSON objects keyed by field name, so:
//! - **Adding a column**: add a field here with `#[serde(default)]` (an `Option`, an empty list,
//!   `[]`), fill it in [`SpoolRow::of`] and read it in [`SpoolRow::into_record`]. Segments written
//!   before the field existed drain with the default. No version change.
//!   `tests/api/spool_upgrade.rs` drains the committed fixtures written before later columns
//!   existed, and `every_field_added_after_version_1_has_a_default` below fails for a new field
//!   without a default.
//! - **Renaming, removing or retyping a field** (or a new field that cannot have a default): bump
//!   [`super::format::FORMAT_VERSION`], keep this type as the reader of the old version (moved to
//!   `v<N>.rs`, converting to the new one), and commit fixture segments of the new version.
//! - Never edit a committed fixture segment.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::record::{PredictionRecord, PredictionStatus};

/// One spooled row (format version 1). Field names are the format: never rename one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolRow<'a> {
    /// `prediction_log.id`.
    pub id: Uuid,
    /// `prediction_log.request_id`.
    pub request_id: Cow<'a, str>,
    /// `prediction_log.item_index`.
    pub item_index: Option<i32>,
    /// `prediction_log.created_at`.
    pub created_at: DateTime<Utc>,
    /// `prediction_log.route`.
    pub route: Cow<'a, str>,
    /// `prediction_log.operation`.
    pub operation: Option<Cow<'a, str>>,
    /// `prediction_log.client`.
    pub client: Option<Cow<'a, str>>,
    /// `prediction_log.status`.
    pub status: PredictionStatus,
    /// `prediction_log.error_code`.
    pub error_code: Option<Cow<'a, str>>,
    /// `prediction_log.error_field`.
    pub error_field: Option<Cow<'a, str>>,
    /// `prediction_log.error_message`.
    pub error_message: Option<Cow<'a, str>>,
    /// `prediction_log.square_feet`.
    pub square_feet: Option<f64>,
    /// `prediction_log.bedrooms`.
    pub bedrooms: Option<i32>,
    /// `prediction_log.bathrooms`.
    pub bathrooms: Option<f64>,
    /// `prediction_log.raw_input`.
    pub raw_input: Cow<'a, serde_json::Value>,
    /// `prediction_log.price`.
    pub price: Option<f64>,
    /// `prediction_log.model_name`.
    pub model_name: Option<Cow<'a, str>>,
    /// `prediction_log.model_version`.
    pub model_version: Option<Cow<'a, str>>,
    /// `prediction_log.latency_us`.
    pub latency_us: i64,
    /// `prediction_log.imputed_features`.
    #[serde(default)]
    pub imputed_features: Cow<'a, [String]>,
    /// `prediction_log.features`.
    #[serde(default)]
    pub features: Option<Cow<'a, serde_json::Value>>,
    /// `prediction_log.warnings`.
    #[serde(default = "no_warnings")]
    pub warnings: Cow<'a, serde_json::Value>,
    /// (feature, reference bin) pairs: the drain writes the drift counters with the rows.
    #[serde(default)]
    pub drift_bins: Vec<(Cow<'a, str>, i32)>,
    /// `prediction_log.interval_low`.
    #[serde(default)]
    pub interval_low: Option<f64>,
    /// `prediction_log.interval_high`.
    #[serde(default)]
    pub interval_high: Option<f64>,
    /// `prediction_log.estimated_error`.
    #[serde(default)]
    pub estimated_error: Option<f64>,
    /// `prediction_log.api_key_id`.
    #[serde(default)]
    pub api_key_id: Option<Cow<'a, str>>,
    /// `prediction_log.trace_id`.
    #[serde(default)]
    pub trace_id: Option<Cow<'a, str>>,
}

fn no_warnings() -> Cow<'static, serde_json::Value> {
    Cow::Owned(serde_json::Value::Array(Vec::new()))
}

impl<'a> SpoolRow<'a> {
    /// The on-disk form of `record`, borrowing its text.
    pub fn of(record: &'a PredictionRecord) -> Self {
        Self {
            id: record.id,
            request_id: Cow::Borrowed(&record.request_id),
            item_index: record.item_index,
            created_at: record.created_at,
            route: Cow::Borrowed(&record.route),
            operation: record.operation.as_deref().map(Cow::Borrowed),
            client: record.client.as_deref().map(Cow::Borrowed),
            status: record.status,
            error_code: record.error_code.as_deref().map(Cow::Borrowed),
            error_field: record.error_field.as_deref().map(Cow::Borrowed),
            error_message: record.error_message.as_deref().map(Cow::Borrowed),
            square_feet: record.square_feet,
            bedrooms: record.bedrooms,
            bathrooms: record.bathrooms,
            raw_input: Cow::Borrowed(&record.raw_input),
            price: record.price,
            model_name: record.model_name.as_deref().map(Cow::Borrowed),
            model_version: record.model_version.as_deref().map(Cow::Borrowed),
            latency_us: record.latency_us,
            imputed_features: Cow::Borrowed(&record.imputed_features),
            features: record.features.as_ref().map(Cow::Borrowed),
            warnings: Cow::Borrowed(&record.warnings),
            drift_bins: record.drift_bins.iter().map(|&(f, bin)| (Cow::Borrowed(f), bin)).collect(),
            interval_low: record.interval_low,
            interval_high: record.interval_high,
            estimated_error: record.estimated_error,
            api_key_id: record.api_key_id.as_deref().map(Cow::Borrowed),
            trace_id: record.trace_id.as_deref().map(Cow::Borrowed),
        }
    }

    /// The row to insert. Feature names get their `&'static` form (a name this build does not
    /// know is interned once).
    pub fn into_record(self) -> PredictionRecord {
        let text = |s: Cow<'_, str>| s.into_owned();
        PredictionRecord {
            id: self.id,
            request_id: text(self.request_id),
            item_index: self.item_index,
            created_at: self.created_at,
            route: text(self.route),
            operation: self.operation.map(text),
            client: self.client.map(text),
            api_key_id: self.api_key_id.map(text),
            trace_id: self.trace_id.map(text),
            status: self.status,
            error_code: self.error_code.map(text),
            error_field: self.error_field.map(text),
            error_message: self.error_message.map(text),
            square_feet: self.square_feet,
            bedrooms: self.bedrooms,
            bathrooms: self.bathrooms,
            raw_input: self.raw_input.into_owned(),
            price: self.price,
            model_name: self.model_name.map(text),
            model_version: self.model_version.map(text),
            latency_us: self.latency_us,
            imputed_features: self.imputed_features.into_owned(),
            features: self.features.map(Cow::into_owned),
            shadow_price: None,
            shadow_model_name: None,
            shadow_model_version: None,
            warnings: self.warnings.into_owned(),
            interval_low: self.interval_low,
            interval_high: self.interval_high,
            estimated_error: self.estimated_error,
            house: None,
            drift_bins: self
                .drift_bins
                .into_iter()
                .map(|(name, bin)| (crate::model::features::static_name(&name), bin))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::sample as row;

    /// The fields every version-1 segment has: the columns of the first release of the format.
    /// Every other field must read as its default from a segment written before it existed.
    const VERSION_1_FIELDS: &[&str] = &[
        "id",
        "request_id",
        "item_index",
        "created_at",
        "route",
        "operation",
        "client",
        "status",
        "error_code",
        "error_field",
        "error_message",
        "square_feet",
        "bedrooms",
        "bathrooms",
        "raw_input",
        "price",
        "model_name",
        "model_version",
        "latency_us",
    ];

    #[test]
    fn a_row_survives_the_round_trip() {
        let record = row(7);
        let json = serde_json::to_vec(&SpoolRow::of(&record)).unwrap();
        let back: SpoolRow<'static> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.into_record(), record);
    }

    #[test]
    fn every_field_added_after_version_1_has_a_default() {
        let record = row(1);
        let full = serde_json::to_value(SpoolRow::of(&record)).unwrap();
        let serde_json::Value::Object(full) = full else { panic!("a row is an object") };
        for field in full.keys().filter(|k| !VERSION_1_FIELDS.contains(&k.as_str())) {
            let mut older = full.clone();
            older.remove(field);
            let read: Result<SpoolRow<'static>, _> = serde_json::from_value(serde_json::Value::Object(older));
            assert!(
                read.is_ok(),
                "a segment written before `{field}` existed cannot be read: give it #[serde(default)]"
            );
        }
        let mut oldest = full.clone();
        oldest.retain(|k, _| VERSION_1_FIELDS.contains(&k.as_str()));
        let read: SpoolRow<'static> = serde_json::from_value(serde_json::Value::Object(oldest)).unwrap();
        let read = read.into_record();
        assert_eq!(read.warnings, serde_json::json!([]), "warnings default to none, as the column does");
        assert!(read.imputed_features.is_empty() && read.features.is_none() && read.drift_bins.is_empty());
    }

    #[test]
    fn unknown_fields_from_a_newer_build_are_ignored() {
        let mut value = serde_json::to_value(SpoolRow::of(&row(2))).unwrap();
        value["a_column_of_the_future"] = serde_json::json!(1);
        let read: SpoolRow<'static> = serde_json::from_value(value).unwrap();
        assert_eq!(read.request_id, "r2");
    }
}
