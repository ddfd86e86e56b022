//! SQL over `prediction_log`: the batched insert and the history reads.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DurationRound;
use chrono::{DateTime, Datelike, Utc};
use std::collections::HashMap;
use std::sync::LazyLock;

use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::record::{INSERTED_COLUMNS, PredictionRecord, PredictionStatus, SELECTED_SHADOW_COLUMNS, bind_inserted};
use crate::db::feed::Position;
use crate::error::AppError;

/// Inserts all rows and adds their drift bins to the hourly `drift_counts`, in one statement
/// (one round trip, one commit, counters and rows atomically together), by unnesting one array
/// per column. Unlike a multi-row VALUES list, the statement text does not depend on the row
/// count, so it is prepared once, and it has no 65,535-parameter ceiling.
///
/// `groups` splits `rows` (in order, by length) into groups that earlier statements wrote all or
/// nothing of: the rows of one earlier batch. A fresh batch is one group; a drained chunk has one
/// per spooled batch. The counters are summed here, per group, into a few hundred
/// (hour, model, feature, bin) increments; a group's increments are applied only if its first row
/// is inserted now. So a retried batch whose first commit did succeed inserts nothing the second
/// time and counts nothing twice, without PostgreSQL joining every (row, feature) pair.
#[tracing::instrument(name = "log.insert_batch", skip_all, fields(rows = rows.len()))]
pub async fn insert_batch(conn: &mut PgConnection, rows: &[&PredictionRecord], groups: &[usize]) -> sqlx::Result<()> {
    debug_assert_eq!(groups.iter().sum::<usize>(), rows.len(), "groups must cover the rows");
    let counts = DriftIncrements::of(rows, groups);
    let query = sqlx::query(sqlx::AssertSqlSafe(INSERT_SQL.as_str()));
    bind_inserted(query, rows)
        .bind(counts.first_ids)
        .bind(counts.hours)
        .bind(counts.names)
        .bind(counts.versions)
        .bind(counts.features)
        .bind(counts.bins)
        .bind(counts.n)
        .execute(conn)
        .await?;
    Ok(())
}

/// The insert, generated once from [`INSERTED_COLUMNS`] (constants only: no client text).
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = INSERTED_COLUMNS.iter().map(|c| c.name).collect();
    let selected: Vec<&str> = INSERTED_COLUMNS.iter().map(|c| c.select).collect();
    let arrays: Vec<String> =
        INSERTED_COLUMNS.iter().enumerate().map(|(i, c)| format!("${}::{}[]", i + 1, c.pg_type)).collect();
    let b = INSERTED_COLUMNS.len();
    format!(
        "with inserted as (
             insert into prediction_log ({names})
             select {selected}
             from unnest({arrays}) as t({names})
             -- A retried batch whose first commit did succeed must not fail on its own rows.
             on conflict (id, created_at) do nothing
             returning id
         )
         insert into drift_counts (hour, model_name, model_version, feature, bin, n)
         select c.hour, c.model_name, c.model_version, c.feature, c.bin, sum(c.n)::int8
           from unnest(${b1}::uuid[], ${b2}::timestamptz[], ${b3}::text[], ${b4}::text[], ${b5}::text[],
                       ${b6}::int4[], ${b7}::int8[])
                  as c(first_id, hour, model_name, model_version, feature, bin, n)
          where c.first_id in (select id from inserted)
          -- Two groups of a drained chunk may share a counter: one upsert each.
          group by 1, 2, 3, 4, 5
          -- A fixed lock order: concurrent upserts of the same counters cannot deadlock.
          order by 2, 3, 1, 4, 5
         on conflict (model_name, model_version, hour, feature, bin) do update set n = drift_counts.n + excluded.n",
        names = names.join(", "),
        selected = selected.join(", "),
        arrays = arrays.join(", "),
        b1 = b + 1,
        b2 = b + 2,
        b3 = b + 3,
        b4 = b + 4,
        b5 = b + 5,
        b6 = b + 6,
        b7 = b + 7,
    )
});

/// A batch's drift counter increments, summed per group, as unnest columns: one entry per
/// (group, hour, model, version, feature, bin), tagged with the id of the group's first row.
#[derive(Default)]
struct DriftIncrements<'a> {
    first_ids: Vec<Uuid>,
    hours: Vec<DateTime<Utc>>,
    names: Vec<&'a str>,
    versions: Vec<&'a str>,
    features: Vec<&'a str>,
    bins: Vec<i32>,
    n: Vec<i64>,
}

/// A drift counter's key: (hour, model name, model version, feature, bin).
type CounterKey<'a> = (DateTime<Utc>, &'a str, &'a str, &'static str, i32);

impl<'a> DriftIncrements<'a> {
    fn of(rows: &[&'a PredictionRecord], groups: &[usize]) -> Self {
        let mut out = Self::default();
        let mut sums: HashMap<CounterKey<'a>, i64> = HashMap::new();
        let mut start = 0;
        for &len in groups {
            let Some(group) = rows.get(start..start + len) else { break };
            start += len;
            let Some(first) = group.first() else { continue };
            for row in group.iter().filter(|r| r.status == PredictionStatus::Ok) {
                let (Some(name), Some(version)) = (&row.model_name, &row.model_version) else { continue };
                let hour = row.created_at.duration_trunc(chrono::TimeDelta::hours(1)).unwrap_or(row.created_at);
                for &(feature, bin) in &row.drift_bins {
                    *sums.entry((hour, name, version, feature, bin)).or_default() += 1;
                }
            }
            for ((hour, name, version, feature, bin), n) in sums.drain() {
                out.first_ids.push(first.id);
                out.hours.push(hour);
                out.names.push(name);
                out.versions.push(version);
                out.features.push(feature);
                out.bins.push(bin);
                out.n.push(n);
            }
        }
        out
    }
}

/// `select <every column PredictionRecord reads>`, from the same column list.
static SELECTED: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> =
        INSERTED_COLUMNS.iter().map(|c| c.name).chain(SELECTED_SHADOW_COLUMNS.iter().copied()).collect();
    format!("select {}", columns.join(", "))
});

/// `select <every column PredictionRecord reads> from prediction_log`.
static SELECT_COLUMNS: LazyLock<String> = LazyLock::new(|| format!("{} from prediction_log", SELECTED.as_str()));

/// Records shadow prices for committed rows, given by key (id, `created_at`: each update reads
/// only its row's partition), in one statement per batch.
#[tracing::instrument(name = "log.set_shadow_prices", skip_all, fields(rows = keys.len()))]
pub async fn set_shadow_prices(
    pool: &PgPool,
    keys: &[(Uuid, DateTime<Utc>)],
    prices: &[f64],
    model_name: &str,
    model_version: &str,
) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "update prediction_log l
            set shadow_price = s.price, shadow_model_name = $4, shadow_model_version = $5, shadow_scored_at = now()
           from unnest($1::uuid[], $2::timestamptz[], $3::float8[]) as s(id, created_at, price)
          where l.id = s.id and l.created_at = s.created_at",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(prices)
    .bind(model_name)
    .bind(model_version)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// One row by id. A UUIDv7 carries the time the row was made, a little after its `created_at`
/// (the request's arrival): the lookup is limited to the day around it, so it reads only the
/// partitions of that time; another id is looked up everywhere.
#[tracing::instrument(name = "log.find", skip(conn))]
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<PredictionRecord>> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_COLUMNS.as_str());
    query.push(" where id = ").push_bind(id);
    if let Some(made) = uuid_v7_time(id) {
        query.push(" and created_at between ").push_bind(made - chrono::TimeDelta::days(1));
        query.push(" and ").push_bind(made + chrono::TimeDelta::days(1));
    }
    query.build_query_as().fetch_optional(&mut *conn).await
}

/// The rows of the `predictionLogged` feed: positioned after `after` and written by
/// transactions below `horizon`, in position order (the index on (logged_xid, id)).
#[tracing::instrument(name = "log.events_page", skip(conn))]
pub async fn events_page(
    conn: &mut PgConnection,
    after: Position,
    horizon: i64,
    limit: usize,
) -> sqlx::Result<Vec<(Position, PredictionRecord)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        logged_xid: i64,
        #[sqlx(flatten)]
        record: PredictionRecord,
    }
    let mut query = QueryBuilder::<Postgres>::new(SELECTED.as_str());
    query.push(", logged_xid::text::int8 as logged_xid from prediction_log where (logged_xid, id) > (");
    query.push_bind(after.xid).push("::int8::text::xid8, ").push_bind(after.id);
    query.push(") and logged_xid < ").push_bind(horizon).push("::int8::text::xid8");
    query.push(" order by logged_xid, id limit ").push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows: Vec<Row> = query.build_query_as().fetch_all(conn).await?;
    Ok(rows.into_iter().map(|r| (Position { xid: r.logged_xid, id: r.record.id }, r.record)).collect())
}

/// The feed position of the row `id` (to resume `predictionLogged` after it); `None` if there is
/// no such row, or it was written before rows had positions.
#[tracing::instrument(name = "log.position_of", skip(pool))]
pub async fn position_of(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Position>> {
    let mut query = QueryBuilder::<Postgres>::new("select logged_xid::text::int8 from prediction_log where id = ");
    query.push_bind(id);
    if let Some(made) = uuid_v7_time(id) {
        query.push(" and created_at between ").push_bind(made - chrono::TimeDelta::days(1));
        query.push(" and ").push_bind(made + chrono::TimeDelta::days(1));
    }
    let xid: Option<Option<i64>> = query.build_query_scalar().fetch_optional(pool).await?;
    Ok(xid.flatten().map(|xid| Position { xid, id }))
}

/// The time a UUIDv7 carries; `None` for other versions.
fn uuid_v7_time(id: Uuid) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    (id.get_version_num() == 7).then(|| DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)).flatten()
}

// Also the GraphQL input `PredictionFilter`: the doc comments are its schema descriptions.
/// Filters for `predictions`; all optional, combined with AND.
#[derive(Debug, Clone, Default, async_graphql::InputObject)]
pub struct PredictionFilter {
    /// Only rows created at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only rows created before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Only rows answered by this model name.
    pub model_name: Option<String>,
    /// Only rows answered by this model version.
    pub model_version: Option<String>,
    /// Only rows with this outcome.
    pub status: Option<PredictionStatus>,
    /// Only rows priced at or above this (USD); excludes unpriced rows. No index serves prices
    /// (one would slow every insert): give `from` and `to` at most 1 hour apart with it.
    pub min_price: Option<f64>,
    /// Only rows priced at or below this (USD); excludes unpriced rows. Like `minPrice`, needs
    /// `from` and `to` at most 1 hour apart.
    pub max_price: Option<f64>,
    /// Only rows of this `x-request-id`.
    pub request_id: Option<String>,
}

/// Longest window a price filter may scan: prices have no index, so the rows of the window are
/// read (a few hundred thousand at most at a typical rate, in tens of milliseconds).
pub const PRICE_FILTER_SPAN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

impl PredictionFilter {
    /// `BAD_USER_INPUT` for a filter the indexes cannot serve within a request's time: a price
    /// filter without a window of at most [`PRICE_FILTER_SPAN`].
    pub fn check_bounds(&self) -> Result<(), AppError> {
        let field = match (self.min_price, self.max_price) {
            (None, None) => return Ok(()),
            (Some(_), _) => "filter.minPrice",
            (None, Some(_)) => "filter.maxPrice",
        };
        let why = "needs filter.from and filter.to at most 1 hour apart (prices are not indexed)";
        match (self.from, self.to) {
            (Some(from), Some(to)) if to - from <= PRICE_FILTER_SPAN => Ok(()),
            _ => Err(AppError::invalid(field, why)),
        }
    }
}

/// Position in the newest-first history: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Its `created_at`.
    pub created_at: DateTime<Utc>,
    /// Its `id` (tie-breaker).
    pub id: Uuid,
}

impl Cursor {
    /// The cursor after `row`.
    pub fn after(row: &PredictionRecord) -> Self {
        Self { created_at: row.created_at, id: row.id }
    }

    /// Opaque string form: base64url of `<micros since epoch>:<uuid>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at.timestamp_micros(), self.id))
    }

    /// Parses [`Self::encode`]'s output; `None` if it is not one.
    pub fn decode(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (micros, id) = text.split_once(':')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?).filter(storable)?;
        Some(Self { created_at, id: id.parse().ok()? })
    }
}

/// Whether PostgreSQL's `timestamptz` can hold `t` (years 4713 BC to 294275 AD here). chrono
/// accepts earlier years; a client's time outside this range must be refused as input, not fail
/// as a database error.
pub fn storable(t: &DateTime<Utc>) -> bool {
    (-4712..=294_275).contains(&t.year())
}

/// [`storable`] as input validation: `BAD_USER_INPUT` on `field` for a time PostgreSQL cannot hold.
pub fn check_time(field: impl Into<String>, t: Option<DateTime<Utc>>) -> Result<(), AppError> {
    match t {
        Some(t) if !storable(&t) => {
            Err(AppError::invalid(field, "is outside the supported range (4713 BC to 294275 AD)"))
        }
        _ => Ok(()),
    }
}

/// Up to `limit` rows matching `filter`, newest first, strictly after `after`.
/// Keyset pagination: the index on (created_at desc, id desc) serves it at any depth, and rows
/// inserted meanwhile never shift a page (no duplicates, no gaps), unlike OFFSET.
#[tracing::instrument(name = "log.list", skip_all, fields(limit = limit))]
pub async fn list(
    conn: &mut PgConnection,
    filter: &PredictionFilter,
    after: Option<Cursor>,
    limit: usize,
) -> sqlx::Result<Vec<PredictionRecord>> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_COLUMNS.as_str());
    query.push(" where true");
    if let Some(from) = filter.from {
        query.push(" and created_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        query.push(" and created_at < ").push_bind(to);
    }
    if let Some(name) = &filter.model_name {
        query.push(" and model_name = ").push_bind(name.clone());
    }
    if let Some(version) = &filter.model_version {
        query.push(" and model_version = ").push_bind(version.clone());
    }
    if let Some(status) = filter.status {
        query.push(" and status = ").push_bind(status.as_str());
        if status != PredictionStatus::Ok {
            // Lets the planner use the partial index of the (few) rows that are not OK.
            query.push(" and status <> 'ok'");
        }
    }
    if let Some(min) = filter.min_price {
        query.push(" and price >= ").push_bind(min);
    }
    if let Some(max) = filter.max_price {
        query.push(" and price <= ").push_bind(max);
    }
    if let Some(request_id) = &filter.request_id {
        query.push(" and request_id = ").push_bind(request_id.clone());
    }
    if let Some(cursor) = after {
        query.push(" and (created_at, id) < (").push_bind(cursor.created_at).push(", ").push_bind(cursor.id).push(")");
    }
    query.push(" order by created_at desc, id desc limit ").push_bind(limit as i64);
    query.build_query_as().fetch_all(&mut *conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor =
            Cursor { created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(), id: Uuid::now_v7() };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for bad in ["", "not-base64!", &URL_SAFE_NO_PAD.encode("12:not-a-uuid"), &URL_SAFE_NO_PAD.encode("x")] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
