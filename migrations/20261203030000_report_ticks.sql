-- The evaluator runs in one replica at a time (an advisory-lock lease), but a moment of two
-- holders is possible when a lease is lost: each report is keyed by its tick (the evaluation
-- time rounded down to MONITOR_INTERVAL_MS), so the second write of a tick is a no-op, and its
-- alerts are not published twice.
alter table monitoring_reports add column tick timestamptz;
comment on column monitoring_reports.tick is 'Evaluation period (evaluation time rounded down to MONITOR_INTERVAL_MS): one report per model version and tick; null for reports stored before ticks existed.';
create unique index monitoring_reports_tick_idx on monitoring_reports (model_name, model_version, tick);
