//! Where rows the writer committed go next: the shadow scorer. (`predictionLogged` subscribers
//! read committed rows from PostgreSQL instead, so they see every replica's: [`super::events`].)

use super::record::PredictionRecord;
use super::shadow::ShadowScorer;

/// The outlet of committed rows.
pub struct Committed {
    shadow: Option<ShadowScorer>,
}

impl Committed {
    /// `ok` rows go to `shadow` when given.
    pub fn new(shadow: Option<ShadowScorer>) -> Self {
        Self { shadow }
    }

    /// Rows the writer committed directly are shadow-scored (their parsed input is still in
    /// memory). Rows drained from the spool are not: their parsed input was not spooled.
    pub fn written(&self, records: &[PredictionRecord]) {
        if let Some(shadow) = &self.shadow {
            shadow.submit(records.iter().filter_map(|r| Some((r.id, r.created_at, r.house.clone()?))));
        }
    }
}
