//! Where committed rows go once they are in PostgreSQL: `predictionLogged` subscribers and, for
//! rows the writer committed directly, the shadow scorer.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::record::PredictionRecord;
use super::shadow::ShadowScorer;

/// Committed rows kept for slow subscribers before they skip ahead.
const EVENT_CAPACITY: usize = 4_096;

/// The outlets of committed rows.
pub struct Committed {
    events: broadcast::Sender<Arc<PredictionRecord>>,
    shadow: Option<ShadowScorer>,
}

impl Committed {
    /// Outlets with no subscriber yet; `ok` rows go to `shadow` when given.
    pub fn new(shadow: Option<ShadowScorer>) -> Self {
        Self { events: broadcast::channel(EVENT_CAPACITY).0, shadow }
    }

    /// A receiver of every row committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PredictionRecord>> {
        self.events.subscribe()
    }

    /// Rows the writer committed directly: shadow-scored (the parsed input is still in memory),
    /// then published.
    pub fn written(&self, records: Vec<PredictionRecord>) {
        if let Some(shadow) = &self.shadow {
            shadow.submit(records.iter().filter_map(|r| Some((r.id, r.house.clone()?))));
        }
        self.publish(records);
    }

    /// Sends committed rows to `predictionLogged` subscribers. With none (the usual case under
    /// load), the rows are not moved into `Arc`s at all; a subscriber arriving meanwhile is one
    /// that subscribed a moment later. Rows drained from the spool come here directly: their
    /// parsed input was not spooled, so they are not shadow-scored.
    pub fn publish(&self, records: Vec<PredictionRecord>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        for record in records {
            let _ = self.events.send(Arc::new(record));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::sample as row;

    #[test]
    fn subscribers_receive_committed_rows_in_order() {
        let committed = Committed::new(None);
        let mut rx = committed.subscribe();
        let (a, b) = (row(1), row(2));
        committed.written(vec![a.clone()]);
        committed.publish(vec![b.clone()]);
        assert_eq!(*rx.try_recv().unwrap(), a);
        assert_eq!(*rx.try_recv().unwrap(), b);
        assert!(rx.try_recv().is_err());
    }
}
