-- Events for every replica (predictionLogged, driftAlert): each replica reads new rows from
-- these tables in the order of the transactions that wrote them. A row's position is
-- (logged_xid, id); rows of transactions older than the oldest one still running are final, so
-- a reader that moves its cursor only up to that horizon misses none (src/db/feed.rs).

-- Rows logged before this migration have no position (they are history, not events). Adding the
-- column without a default and setting the default afterwards leaves the existing rows untouched
-- (no table rewrite).
alter table prediction_log add column logged_xid xid8;
alter table prediction_log alter column logged_xid set default pg_current_xact_id();
comment on column prediction_log.logged_xid is 'Transaction that wrote the row (pg_current_xact_id()); with id, its position in the predictionLogged feed. Null for rows logged before feeds existed.';
create index prediction_log_logged_xid_idx on prediction_log (logged_xid, id);

-- Drift alerts as rows: raised by the one evaluator (the lease holder), delivered by every
-- replica. Unique per report and feature, so a moment of two evaluators raises each alert once.
create table drift_alerts (
    id            uuid primary key,
    logged_xid    xid8 not null default pg_current_xact_id(),
    report_id     bigint not null references monitoring_reports (id) on delete cascade,
    evaluated_at  timestamptz not null,
    model_name    text not null,
    model_version text not null,
    feature       text not null,
    status        text not null check (status in ('WARN', 'DRIFT')),
    previous      text not null check (previous in ('OK', 'WARN', 'DRIFT')),
    psi           double precision not null,
    sample_size   bigint not null,
    unique (report_id, feature)
);
comment on table drift_alerts is 'A feature of a model version whose drift status changed to WARN or DRIFT at an evaluator run (the driftAlert subscription).';
comment on column drift_alerts.id is 'Alert id (UUIDv7, made by the evaluator).';
comment on column drift_alerts.report_id is 'The monitoring report (evaluator run) that raised it.';
comment on column drift_alerts.evaluated_at is 'End of the evaluated window (when the evaluation ran).';
comment on column drift_alerts.model_name is 'Model name.';
comment on column drift_alerts.model_version is 'Model version.';
comment on column drift_alerts.status is 'New status: WARN or DRIFT.';
comment on column drift_alerts.logged_xid is 'Transaction that wrote the alert; with id, its position in the driftAlert feed.';
comment on column drift_alerts.feature is 'The feature, or _price for the prediction.';
comment on column drift_alerts.previous is 'Status at the previous evaluation (OK at the first).';
comment on column drift_alerts.psi is 'Population stability index over the window.';
comment on column drift_alerts.sample_size is 'Live values in the window.';
create index drift_alerts_logged_xid_idx on drift_alerts (logged_xid, id);
create index drift_alerts_model_idx on drift_alerts (model_name, model_version, evaluated_at);
