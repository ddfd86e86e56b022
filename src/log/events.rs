//! The `predictionLogged` feed: committed `prediction_log` rows, read from PostgreSQL by every
//! replica in one order ([`crate::db::feed`] says how and why), so a subscriber sees the rows of
//! every replica and can resume after the last row it saw.

use sqlx::PgConnection;

use super::record::PredictionRecord;
use super::store;
use crate::db::feed::{Feed, Position, Source};

/// `prediction_log` as a feed source.
pub struct LoggedRows;

impl Source for LoggedRows {
    type Item = PredictionRecord;

    async fn page(
        &self,
        conn: &mut PgConnection,
        after: Position,
        horizon: i64,
        limit: usize,
    ) -> sqlx::Result<Vec<(Position, PredictionRecord)>> {
        store::events_page(conn, after, horizon, limit).await
    }
}

/// The running `predictionLogged` feed.
pub type PredictionFeed = Feed<LoggedRows>;
