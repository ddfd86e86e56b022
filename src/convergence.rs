//! Every replica on the model set in force. A replica records the set it loads (at start, or by a
//! reload) in `model_set_in_force`; every replica checks that row every second and, when its
//! revision changes, rescans its own `MODEL_DIR` the way a reload does. A replica that then does
//! not serve exactly the set in force (a version missing from its `MODEL_DIR`, another artifact,
//! another default or shadow model) says so in `/health/ready`, in `model_events` (`diverged`,
//! once per revision and difference) and in the `model_set_converged` gauge, and rescans every
//! [`RESCAN_INTERVAL`] until it does: files that arrive late are picked up.
//!
//! A diverged replica stays ready: it still answers correctly with the models it has (a client
//! asking for a version it lacks gets `BAD_USER_INPUT`), and taking it out of rotation could take
//! every replica out at once after one bad reload. Alert on the gauge instead.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::events;
use crate::model::in_force::{self, InForce, SetDigest};
use crate::service::AppState;

/// How often each replica reads the set in force.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often a diverged replica rescans its `MODEL_DIR`.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Where a replica stands relative to the set in force.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// Revision of the set in force this replica last followed (None: not known yet).
    pub revision: Option<i64>,
    /// Why this replica's set is not the set in force (empty: it is).
    pub differences: Vec<String>,
    /// When the set in force was last read.
    pub checked_at: Option<DateTime<Utc>>,
}

/// [`SyncState`], shared between the checker, reloads and readiness.
#[derive(Debug, Default)]
pub struct SyncStatus(Mutex<SyncState>);

impl SyncStatus {
    /// A copy of the current state.
    pub fn get(&self) -> SyncState {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// This replica now follows `revision`, with these `differences`.
    pub fn followed(&self, revision: Option<i64>, differences: Vec<String>) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.revision = revision;
        metrics::gauge!("model_set_converged").set(if differences.is_empty() { 1.0 } else { 0.0 });
        if let Some(revision) = revision {
            #[allow(clippy::cast_precision_loss)] // revisions stay far below 2^53
            metrics::gauge!("model_set_revision").set(revision as f64);
        }
        state.differences = differences;
        state.checked_at = Some(Utc::now());
    }

    fn checked(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).checked_at = Some(Utc::now());
    }
}

/// Records the set this replica loaded at start as the set in force (the replica that started
/// last defines it: in a rolling deploy, the new version's set).
pub async fn record_startup(state: &AppState) {
    let set = state.models.snapshot();
    let revision = match in_force::record(&state.pool, &set, &state.replica, "startup").await {
        Ok(revision) => Some(revision),
        Err(err) => {
            tracing::error!(error = %err, "cannot record the model set in force; the checker follows the recorded one");
            None
        }
    };
    state.model_sync.followed(revision, Vec::new());
    let change = events::Change {
        event: "loaded",
        trigger: "startup",
        added: &set.ids(),
        replica: &state.replica,
        revision,
        ..Default::default()
    };
    events::record(&state.pool, &set, change).await;
}

/// Checks the set in force every [`CHECK_INTERVAL`] until shutdown.
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = state.shutdown.cancelled() => return,
            }
            let in_force = match in_force::read(&state.pool).await {
                Ok(Some(in_force)) => in_force,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the model set in force");
                    continue;
                }
            };
            state.model_sync.checked();
            let known = state.model_sync.get();
            let changed = known.revision != Some(in_force.revision);
            let rescan = !known.differences.is_empty() && last_scan.elapsed() >= RESCAN_INTERVAL;
            if changed || rescan {
                last_scan = tokio::time::Instant::now();
                follow(&state, &in_force, &known.differences).await;
            }
        }
    });
}

/// Rescans `MODEL_DIR` (as a reload) and compares the result with `in_force`; records a
/// `reloaded` event when the served set changed and a `diverged` one when the differences did.
async fn follow(state: &AppState, in_force: &InForce, before: &[String]) {
    let _serialised = state.reloads.lock().await;
    // A reload in this replica may have recorded a newer revision meanwhile.
    if state.model_sync.get().revision.is_some_and(|r| r > in_force.revision) {
        return;
    }
    let previous = SetDigest::of(&state.models.snapshot());
    let revision = Some(in_force.revision);
    let differences = match state.scan_and_install().await {
        Ok(Ok(outcome)) => {
            if SetDigest::of(&outcome.set) != previous {
                tracing::info!(revision = in_force.revision, by = %in_force.changed_by, "following the model set in force");
                let change = events::Change {
                    event: "reloaded",
                    trigger: "replica",
                    added: &outcome.added,
                    removed: &outcome.removed,
                    replica: &state.replica,
                    revision,
                    ..Default::default()
                };
                events::record(&state.pool, &outcome.set, change).await;
            }
            SetDigest::of(&outcome.set).differences(&in_force.digest)
        }
        Ok(Err(message)) => vec![format!("this replica's MODEL_DIR does not load: {message}")],
        Err(err) => vec![format!("rescanning MODEL_DIR failed: {err}")],
    };
    if !differences.is_empty() && differences != before {
        let message = differences.join("; ");
        tracing::error!(revision = in_force.revision, by = %in_force.changed_by, differences = %message,
                        "this replica cannot serve the model set in force");
        let change = events::Change {
            event: "diverged",
            trigger: "replica",
            error: Some(&message),
            replica: &state.replica,
            revision,
            ..Default::default()
        };
        events::record(&state.pool, &state.models.snapshot(), change).await;
    }
    state.model_sync.followed(revision, differences);
}
