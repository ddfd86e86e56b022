//! Drift of live traffic against a model version's training reference, from the hourly
//! `drift_counts` (kept by the log writer), so a report costs a few hundred counters whatever the
//! number of logged rows.

use std::collections::BTreeMap;

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, DurationRound, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::stats;
use crate::model::card::Distribution;
use crate::model::{LoadedModel, PRICE_FEATURE};

/// PSI at or above this is `WARN` (the customary "moderate shift").
pub const PSI_WARN: f64 = 0.1;
/// PSI at or above this is `DRIFT` (the customary "significant shift").
pub const PSI_DRIFT: f64 = 0.25;
/// Wasserstein distance in reference standard deviations at or above this is `WARN`.
pub const WASSERSTEIN_WARN: f64 = 0.1;
/// Wasserstein distance in reference standard deviations at or above this is `DRIFT`.
pub const WASSERSTEIN_DRIFT: f64 = 0.25;
/// Below this many live values a feature is reported but always `OK`: too few to judge.
pub const MIN_SAMPLE: i64 = 50;

/// Drift verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Enum)]
#[serde(rename_all = "UPPERCASE")]
pub enum DriftStatus {
    /// No meaningful shift.
    Ok,
    /// A moderate shift: look at it.
    Warn,
    /// A significant shift: the model sees traffic unlike its training data.
    Drift,
}

impl DriftStatus {
    /// As stored in `monitoring_reports.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Drift => "DRIFT",
        }
    }

    /// A stored status ([`Self::as_str`]). The tables' check constraints admit only those three;
    /// anything else reads as the most severe, never as OK.
    pub fn parse(stored: &str) -> Self {
        match stored {
            "OK" => Self::Ok,
            "WARN" => Self::Warn,
            _ => Self::Drift,
        }
    }

    fn from_thresholds(value: f64, warn: f64, drift: f64) -> Self {
        if value >= drift {
            Self::Drift
        } else if value >= warn {
            Self::Warn
        } else {
            Self::Ok
        }
    }
}

/// One bin of a feature's comparison.
#[derive(Debug, Clone, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct DriftBin {
    /// The bin: `[lower, upper)` for numbers, the label for categories.
    pub label: String,
    /// Share of training rows in the bin.
    pub reference_share: f64,
    /// Share of live values in the bin.
    pub live_share: f64,
}

/// Drift of one feature (or of the prediction, `_price`).
#[derive(Debug, Clone, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDrift {
    /// Feature name (`_price` for the model's prediction).
    pub feature: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    /// Training rows behind the reference distribution.
    pub reference_size: i64,
    /// Live values in the window (client-sent values only: imputed ones are not counted).
    pub sample_size: i64,
    /// Requests in the window whose value was out of the training range or an unseen label.
    pub warnings: i64,
    /// Population stability index over the reference bins (null without live values).
    pub psi: Option<f64>,
    /// Jensen-Shannon distance (base 2) over the reference bins (null without live values).
    pub js_distance: Option<f64>,
    /// Kolmogorov-Smirnov statistic over the reference bins (numeric features).
    pub ks_statistic: Option<f64>,
    /// Asymptotic KS p-value (numeric). With large samples it flags any shift, so it does not set the status.
    pub ks_p_value: Option<f64>,
    /// Wasserstein-1 distance over bin centres, in reference standard deviations (numeric).
    pub wasserstein_normalized: Option<f64>,
    /// Chi-square goodness of fit to the reference shares (categorical).
    pub chi_square: Option<f64>,
    /// Its p-value (categorical); informative only, like the KS p-value.
    pub chi_square_p_value: Option<f64>,
    /// Verdict from PSI (and, for numbers, the normalised Wasserstein distance).
    pub status: DriftStatus,
    /// Reference and live shares per bin.
    pub bins: Vec<DriftBin>,
}

/// The thresholds behind the statuses (see README "Monitoring" for why these).
#[derive(Debug, Clone, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct DriftThresholds {
    /// PSI from which a feature is `WARN`.
    pub psi_warn: f64,
    /// PSI from which a feature is `DRIFT`.
    pub psi_drift: f64,
    /// Normalised Wasserstein distance from which a numeric feature is `WARN`.
    pub wasserstein_warn: f64,
    /// Normalised Wasserstein distance from which a numeric feature is `DRIFT`.
    pub wasserstein_drift: f64,
    /// Live values below which a feature is always `OK`.
    pub min_sample: i64,
}

impl DriftThresholds {
    /// The thresholds in force.
    pub fn current() -> Self {
        Self {
            psi_warn: PSI_WARN,
            psi_drift: PSI_DRIFT,
            wasserstein_warn: WASSERSTEIN_WARN,
            wasserstein_drift: WASSERSTEIN_DRIFT,
            min_sample: MIN_SAMPLE,
        }
    }
}

/// A drift report for one model version and window.
#[derive(Debug, Clone, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Window start, rounded down to the hour (counters are hourly).
    pub from: DateTime<Utc>,
    /// Window end (exclusive), rounded up to the hour.
    pub to: DateTime<Utc>,
    /// Accepted predictions in the window.
    pub predictions: i64,
    /// Worst status over the input features (the prediction is reported separately).
    pub status: DriftStatus,
    /// One entry per input feature of the model.
    pub features: Vec<FeatureDrift>,
    /// Drift of the predicted price.
    pub prediction: FeatureDrift,
    /// The thresholds the statuses were judged with.
    pub thresholds: DriftThresholds,
}

/// Live counts per feature and bin (bin -1: warnings) for a model version and window.
pub async fn live_counts(
    conn: &mut PgConnection,
    model: &LoadedModel,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<BTreeMap<String, BTreeMap<i32, i64>>> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "select feature, bin, sum(n)::bigint from drift_counts
          where model_name = $1 and model_version = $2 and hour >= $3 and hour < $4
          group by 1, 2",
    )
    .bind(&model.card.name)
    .bind(&model.card.version)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for (feature, bin, n) in rows {
        counts.entry(feature).or_default().insert(bin, n);
    }
    Ok(counts)
}

/// Compares one feature's live counts with its reference.
pub fn feature_drift(feature: &str, reference: &Distribution, live: Option<&BTreeMap<i32, i64>>) -> FeatureDrift {
    let empty = BTreeMap::new();
    let live = live.unwrap_or(&empty);
    let reference_counts = reference.counts();
    let live_counts: Vec<u64> =
        (0..reference_counts.len()).map(|b| live.get(&(b as i32)).copied().unwrap_or(0).max(0) as u64).collect();
    let sample_size = live_counts.iter().sum::<u64>() as i64;
    let psi = stats::psi(&reference_counts, &live_counts);
    let js = stats::jensen_shannon_distance(&reference_counts, &live_counts);
    let ref_total: u64 = reference_counts.iter().sum();
    let share = |c: u64, t: u64| if t > 0 { c as f64 / t as f64 } else { 0.0 };
    let (kind, labels, mut ks, mut wasserstein, mut chi) = match reference {
        Distribution::Bins { edges, min, max, std, .. } => {
            let (d, p) = stats::kolmogorov_smirnov(&reference_counts, &live_counts);
            let centers = reference.bin_centers().unwrap_or_default();
            let w = stats::wasserstein(&centers, &reference_counts, &live_counts);
            let w = if *std > 0.0 { w / std } else { 0.0 };
            let mut grid = vec![*min];
            grid.extend(edges.iter().copied());
            grid.push(*max);
            let last = grid.len() - 2;
            let labels = grid
                .windows(2)
                .enumerate()
                .map(|(i, w)| match (i, i == last) {
                    (0, true) => "(-inf, +inf)".to_owned(),
                    (0, false) => format!("(-inf, {})", w[1]),
                    (_, true) => format!("[{}, +inf)", w[0]),
                    _ => format!("[{}, {})", w[0], w[1]),
                })
                .collect::<Vec<_>>();
            ("numeric", labels, Some((d, p)), Some(w), None)
        }
        Distribution::Categories { counts } => {
            let (c, p, _) = stats::chi_square(&reference_counts, &live_counts);
            ("categorical", counts.keys().cloned().collect(), None, None, Some((c, p)))
        }
    };
    let (mut psi, mut js) = (Some(psi), Some(js));
    if sample_size == 0 {
        // Nothing to compare (e.g. a feature clients never send): no statistic, not a huge one.
        (psi, js, ks, wasserstein, chi) = (None, None, None, None, None);
    }
    let mut status = DriftStatus::from_thresholds(psi.unwrap_or(0.0), PSI_WARN, PSI_DRIFT);
    if let Some(w) = wasserstein {
        status = status.max(DriftStatus::from_thresholds(w, WASSERSTEIN_WARN, WASSERSTEIN_DRIFT));
    }
    if sample_size < MIN_SAMPLE {
        status = DriftStatus::Ok;
    }
    FeatureDrift {
        feature: feature.to_owned(),
        kind: kind.to_owned(),
        reference_size: ref_total as i64,
        sample_size,
        warnings: live.get(&-1).copied().unwrap_or(0),
        psi,
        js_distance: js,
        ks_statistic: ks.map(|k| k.0),
        ks_p_value: ks.map(|k| k.1),
        wasserstein_normalized: wasserstein,
        chi_square: chi.map(|c| c.0),
        chi_square_p_value: chi.map(|c| c.1),
        status,
        bins: labels
            .into_iter()
            .zip(reference_counts.iter().zip(&live_counts))
            .map(|(label, (&r, &l))| DriftBin {
                label,
                reference_share: share(r, ref_total),
                live_share: share(l, sample_size as u64),
            })
            .collect(),
    }
}

/// The drift report of `model` over `[from, to)`.
#[tracing::instrument(name = "drift.report", skip_all, fields(model = %model.id()))]
pub async fn report(
    conn: &mut PgConnection,
    model: &LoadedModel,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<DriftReport> {
    let (from, to) = whole_hours(from, to);
    let counts = live_counts(conn, model, from, to).await?;
    let features: Vec<FeatureDrift> =
        model.card.features.iter().map(|f| feature_drift(&f.name, &f.reference, counts.get(&f.name))).collect();
    let prediction = feature_drift(PRICE_FEATURE, &model.card.prediction_reference, counts.get(PRICE_FEATURE));
    Ok(DriftReport {
        model_name: model.card.name.clone(),
        model_version: model.card.version.clone(),
        from,
        to,
        predictions: prediction.sample_size,
        status: features.iter().map(|f| f.status).max().unwrap_or(DriftStatus::Ok),
        features,
        prediction,
        thresholds: DriftThresholds::current(),
    })
}

/// PSI of one feature (or `_price`) of a model version on one UTC day.
#[derive(Debug, Clone, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct DriftPoint {
    /// The day (UTC midnight).
    pub day: DateTime<Utc>,
    /// Feature name (`_price` for the prediction).
    pub feature: String,
    /// Live values that day.
    pub sample_size: i64,
    /// PSI against the training reference (as in `v_drift_psi_daily`).
    pub psi: Option<f64>,
    /// Verdict from the PSI thresholds (OK below `minSample` values).
    pub status: DriftStatus,
}

/// Daily PSI of every feature of `model` over the days `[from, to)` touches, oldest first: the
/// `v_drift_psi_daily` view, so the API, the dashboard and SQL agree.
#[tracing::instrument(name = "drift.history", skip_all, fields(model = %model.id()))]
pub async fn history(
    conn: &mut PgConnection,
    model: &LoadedModel,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<DriftPoint>> {
    let rows: Vec<(DateTime<Utc>, String, i64, Option<f64>)> = sqlx::query_as(
        "select day, feature, n::bigint, psi from v_drift_psi_daily
          where model_name = $1 and model_version = $2
            and day >= date_trunc('day', $3::timestamptz, 'UTC') and day < $4
          order by day, feature",
    )
    .bind(&model.card.name)
    .bind(&model.card.version)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(day, feature, sample_size, psi)| {
            let status = match psi {
                Some(psi) if sample_size >= MIN_SAMPLE => DriftStatus::from_thresholds(psi, PSI_WARN, PSI_DRIFT),
                _ => DriftStatus::Ok,
            };
            DriftPoint { day, feature, sample_size, psi, status }
        })
        .collect())
}

/// `[from, to)` widened to whole UTC hours, the counters' granularity.
fn whole_hours(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let hour = chrono::TimeDelta::hours(1);
    let from = from.duration_trunc(hour).unwrap_or(from);
    let down = to.duration_trunc(hour).unwrap_or(to);
    (from, if down == to { to } else { down + hour })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins() -> Distribution {
        Distribution::Bins {
            edges: vec![10.0, 20.0],
            counts: vec![100, 100, 100],
            min: 0.0,
            max: 30.0,
            std: 8.0,
            means: vec![5.0, 15.0, 25.0],
        }
    }

    #[test]
    fn identical_traffic_is_ok_and_a_shift_is_drift() {
        let same: BTreeMap<i32, i64> = [(0, 100), (1, 100), (2, 100)].into();
        let d = feature_drift("x", &bins(), Some(&same));
        assert_eq!((d.status, d.sample_size), (DriftStatus::Ok, 300));
        assert!(d.psi.unwrap().abs() < 1e-12);
        let shifted: BTreeMap<i32, i64> = [(1, 50), (2, 250), (-1, 7)].into();
        let d = feature_drift("x", &bins(), Some(&shifted));
        assert_eq!(d.status, DriftStatus::Drift, "{d:?}");
        assert_eq!(d.warnings, 7);
        assert_eq!(d.bins[2].label, "[20, +inf)");
        assert_eq!(d.bins[0].label, "(-inf, 10)");
    }

    #[test]
    fn windows_widen_to_whole_hours() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            whole_hours(t("2026-11-24T10:30:00Z"), t("2026-11-24T12:05:00Z")),
            (t("2026-11-24T10:00:00Z"), t("2026-11-24T13:00:00Z"))
        );
        assert_eq!(whole_hours(t("2026-11-24T10:00:00Z"), t("2026-11-24T12:00:00Z")).1, t("2026-11-24T12:00:00Z"));
    }

    #[test]
    fn a_feature_without_live_values_has_no_statistics() {
        let d = feature_drift("x", &bins(), None);
        assert_eq!((d.sample_size, d.psi, d.ks_statistic, d.status), (0, None, None, DriftStatus::Ok));
    }

    #[test]
    fn too_few_values_are_never_flagged() {
        let tiny: BTreeMap<i32, i64> = [(2, 10)].into();
        assert_eq!(feature_drift("x", &bins(), Some(&tiny)).status, DriftStatus::Ok);
    }
}
