//! Ground truth: the true sale price of predicted houses, recorded idempotently with an audit
//! trail of corrections (the trigger in the migration keeps the replaced values).

use std::collections::HashMap;

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::AppError;
use crate::log::store;

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum OutcomeChange {
    /// First value for this prediction.
    Created,
    /// A different value replaced the previous one (kept in `prediction_outcome_history`).
    Updated,
    /// The same value was already recorded; nothing changed (idempotent retry).
    Unchanged,
}

/// A recorded outcome.
#[derive(Debug, Clone, SimpleObject)]
pub struct Outcome {
    /// The prediction's id.
    pub prediction_id: async_graphql::ID,
    /// True sale price, USD.
    pub actual_price: f64,
    /// When the price was observed.
    pub observed_at: DateTime<Utc>,
    /// 1 for the first value, +1 per correction.
    pub revision: i32,
    /// What this call did.
    pub change: OutcomeChange,
}

/// One outcome to record.
#[derive(Debug, Clone)]
pub struct NewOutcome {
    /// The prediction (`Prediction.id`).
    pub prediction_id: String,
    /// True sale price, USD.
    pub actual_price: f64,
    /// When it was observed; default: now for a new outcome, unchanged for an existing one.
    pub observed_at: Option<DateTime<Utc>>,
}

/// Records `items`, each succeeding or failing on its own; `field` names an item in errors
/// (e.g. `|i| format!("outcomes[{i}]")`).
#[tracing::instrument(name = "outcomes.record", skip_all, fields(items = items.len()))]
pub async fn record(
    pool: &PgPool,
    items: &[NewOutcome],
    field: impl Fn(usize) -> String,
) -> Result<Vec<Result<Outcome, AppError>>, AppError> {
    let mut results: Vec<Option<Result<Outcome, AppError>>> = (0..items.len()).map(|_| None).collect();
    let mut ids: Vec<(usize, Uuid)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match Uuid::parse_str(&item.prediction_id) {
            Err(_) => {
                results[i] =
                    Some(Err(AppError::invalid(format!("{}.predictionId", field(i)), "is not a prediction id")));
            }
            // Two values for one prediction in one call would make "which one counts" ambiguous.
            Ok(id) if ids.iter().any(|(_, seen)| *seen == id) => {
                results[i] = Some(Err(AppError::invalid(
                    format!("{}.predictionId", field(i)),
                    format!("prediction {id} appears more than once in this call"),
                )));
            }
            Ok(_) if !(item.actual_price.is_finite() && item.actual_price > 0.0) => {
                results[i] = Some(Err(AppError::invalid(
                    format!("{}.actualPrice", field(i)),
                    format!("must be a positive number of dollars, got {}", item.actual_price),
                )));
            }
            Ok(id) => match store::check_time(format!("{}.observedAt", field(i)), item.observed_at) {
                Ok(()) => ids.push((i, id)),
                Err(err) => results[i] = Some(Err(err)),
            },
        }
    }
    let mut tx = pool.begin().await?;
    let mut lookup: Vec<Uuid> = ids.iter().map(|(_, id)| *id).collect();
    // Locking the predictions (in id order, so concurrent calls cannot deadlock) serialises
    // concurrent records of the same outcome, including the very first one.
    lookup.sort_unstable();
    let statuses: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
        "select id, status from prediction_log where id = any($1) order by id for update",
    )
    .bind(&lookup)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let existing: HashMap<Uuid, (f64, DateTime<Utc>, i32)> = sqlx::query_as::<_, (Uuid, f64, DateTime<Utc>, i32)>(
        "select prediction_id, actual_price, observed_at, revision from prediction_outcomes where prediction_id = any($1)",
    )
    .bind(&lookup)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(id, p, o, r)| (id, (p, o, r)))
    .collect();

    let now = Utc::now().trunc_subsecs(6);
    let mut writes: Vec<(usize, Uuid, f64, DateTime<Utc>, OutcomeChange, i32)> = Vec::new();
    for (i, id) in ids {
        let item = &items[i];
        match statuses.get(&id).map(String::as_str) {
            None => results[i] = Some(Err(AppError::NotFound(format!("no prediction with id {id}")))),
            Some("ok") => {
                // PostgreSQL keeps microseconds: compare at that precision, or a retry never matches.
                let observed_at = item.observed_at.map(|t| t.trunc_subsecs(6));
                let (change, observed, revision) = match existing.get(&id) {
                    None => (OutcomeChange::Created, observed_at.unwrap_or(now), 1),
                    Some((price, observed, revision)) => {
                        let observed_new = observed_at.unwrap_or(*observed);
                        if *price == item.actual_price && *observed == observed_new {
                            (OutcomeChange::Unchanged, *observed, *revision)
                        } else {
                            (OutcomeChange::Updated, observed_new, revision + 1)
                        }
                    }
                };
                writes.push((i, id, item.actual_price, observed, change, revision));
            }
            Some(status) => {
                results[i] = Some(Err(AppError::invalid(
                    format!("{}.predictionId", field(i)),
                    format!("prediction {id} was not priced (status {status}); it cannot have an outcome"),
                )));
            }
        }
    }
    let changed: HashMap<Uuid, (f64, DateTime<Utc>)> =
        writes.iter().filter(|w| w.4 != OutcomeChange::Unchanged).map(|w| (w.1, (w.2, w.3))).collect();
    if !changed.is_empty() {
        let (ids, rest): (Vec<Uuid>, Vec<(f64, DateTime<Utc>)>) = changed.into_iter().unzip();
        let (prices, observed): (Vec<f64>, Vec<DateTime<Utc>>) = rest.into_iter().unzip();
        // Upsert; the trigger audits and bumps the revision of real changes.
        sqlx::query(
            "insert into prediction_outcomes (prediction_id, actual_price, observed_at)
             select * from unnest($1::uuid[], $2::float8[], $3::timestamptz[])
             on conflict (prediction_id) do update
                set actual_price = excluded.actual_price, observed_at = excluded.observed_at",
        )
        .bind(&ids)
        .bind(&prices)
        .bind(&observed)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for (i, id, price, observed, change, revision) in writes {
        results[i] = Some(Ok(Outcome {
            prediction_id: async_graphql::ID(id.to_string()),
            actual_price: price,
            observed_at: observed,
            revision,
            change,
        }));
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(AppError::Internal(anyhow::anyhow!("unprocessed outcome")))))
        .collect())
}
