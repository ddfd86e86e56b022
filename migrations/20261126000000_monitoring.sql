-- Model monitoring: ground-truth outcomes (with an audit trail), per-request warnings, drift
-- counters maintained with the log, the models' reference distributions, and evaluator reports.

-- Per-request warnings: inputs outside the model's training range or categories it never saw
-- (imputed). [{"feature": "squareFeet", "kind": "out_of_range", "message": "..."}]
alter table prediction_log add column warnings jsonb not null default '[]';

-- The true sale price of a predicted house. One row per prediction; a correction replaces the
-- value (the old one goes to prediction_outcome_history). Load with the API (recordOutcome[s]) or
-- with SQL: \copy prediction_outcomes (prediction_id, actual_price, observed_at) from 'f.csv' csv
create table prediction_outcomes (
    prediction_id uuid primary key references prediction_log (id),
    -- True sale price, USD.
    actual_price  double precision not null check (actual_price > 0),
    -- When the price was observed (the sale date); defaults to when it was recorded.
    observed_at   timestamptz not null default now(),
    -- When this value was recorded.
    recorded_at   timestamptz not null default now(),
    -- 1 for the first value, +1 per correction.
    revision      integer not null default 1
);

-- Every replaced outcome value (corrections keep their history).
create table prediction_outcome_history (
    id            bigint generated always as identity primary key,
    prediction_id uuid not null,
    actual_price  double precision not null,
    observed_at   timestamptz not null,
    recorded_at   timestamptz not null,
    revision      integer not null,
    -- When it was replaced.
    replaced_at   timestamptz not null default now()
);

create index prediction_outcome_history_prediction_idx on prediction_outcome_history (prediction_id);

-- Corrections made by SQL are audited too, not only the API's.
create function prediction_outcomes_audit() returns trigger language plpgsql as $$
begin
    if (new.actual_price, new.observed_at) is distinct from (old.actual_price, old.observed_at) then
        insert into prediction_outcome_history (prediction_id, actual_price, observed_at, recorded_at, revision)
        values (old.prediction_id, old.actual_price, old.observed_at, old.recorded_at, old.revision);
        new.revision := old.revision + 1;
        new.recorded_at := now();
    end if;
    return new;
end $$;

create trigger prediction_outcomes_audit before update on prediction_outcomes
    for each row execute function prediction_outcomes_audit();

-- Reference distributions of each model version (from its card), loaded by the server at start
-- and reload, so SQL can compare live traffic with training. Bin i of a numeric feature holds
-- values v with edges[i-1] <= v < edges[i] (what width_bucket(v, edges) returns); categorical bins
-- follow `labels`. Feature '_price' is the model's prediction.
create table model_references (
    model_name    text not null,
    model_version text not null,
    feature       text not null,
    kind          text not null check (kind in ('bins', 'categories')),
    edges         double precision[],
    labels        text[],
    -- Training rows per bin.
    counts        bigint[] not null,
    -- Training min, max and standard deviation (numeric features).
    min_value     double precision,
    max_value     double precision,
    std_value     double precision,
    primary key (model_name, model_version, feature)
);

-- Live distribution counters: accepted predictions per hour, model version, feature and reference
-- bin, upserted by the log writer in the same transaction as the rows themselves, so drift over any
-- window is a sum of a few hundred counters instead of a scan of millions of rows.
-- Only values the client sent are counted (imputed ones would pile up in the median bin);
-- bin -1 counts warnings (out-of-range values, unseen categories) of the feature.
create table drift_counts (
    hour          timestamptz not null,
    model_name    text not null,
    model_version text not null,
    feature       text not null,
    bin           integer not null,
    n             bigint not null,
    primary key (model_name, model_version, hour, feature, bin)
);

-- Reports of the background evaluator (drift and accuracy per model version and window).
create table monitoring_reports (
    id            bigint generated always as identity primary key,
    evaluated_at  timestamptz not null default now(),
    model_name    text not null,
    model_version text not null,
    window_from   timestamptz not null,
    window_to     timestamptz not null,
    -- Worst status over the features and the prediction: OK, WARN or DRIFT.
    status        text not null check (status in ('OK', 'WARN', 'DRIFT')),
    -- The full drift report and accuracy figures, as returned by the API.
    report        jsonb not null
);

create index monitoring_reports_model_idx on monitoring_reports (model_name, model_version, evaluated_at);

-- Accuracy per day and model version, over predictions that have an outcome.
create view v_performance_daily as
select
    date_trunc('day', l.created_at, 'UTC')                   as day,
    l.model_name,
    l.model_version,
    count(*)                                                 as predictions,
    count(o.actual_price)                                    as labelled,
    avg(abs(l.price - o.actual_price))                       as mae,
    sqrt(avg((l.price - o.actual_price) ^ 2))                as rmse,
    avg(abs(l.price - o.actual_price) / o.actual_price)      as mape,
    avg(l.price - o.actual_price)                            as mean_error
from prediction_log l
left join prediction_outcomes o on o.prediction_id = l.id
where l.status = 'ok'
group by 1, 2, 3;

comment on view v_performance_daily is 'Predictions, labelled count, MAE, RMSE, MAPE and bias (mean error) per day and model version.';

-- Population stability index per day, model version and feature, against the training reference.
-- Shares are smoothed with 1e-4 so empty bins do not divide by zero (the API uses the same rule).
create view v_drift_psi_daily as
with live as (
    select date_trunc('day', hour, 'UTC') as day, model_name, model_version, feature, bin, sum(n) as n
    from drift_counts where bin >= 0
    group by 1, 2, 3, 4, 5
), ref as (
    select r.model_name, r.model_version, r.feature, (c.ord - 1)::int as bin, c.n as ref_n,
           sum(c.n) over (partition by r.model_name, r.model_version, r.feature) as ref_total
    from model_references r cross join lateral unnest(r.counts) with ordinality as c(n, ord)
), days as (
    select distinct day, model_name, model_version, feature from live
), joined as (
    select d.day, d.model_name, d.model_version, d.feature, ref.bin,
           greatest(ref.ref_n::float8 / ref.ref_total, 1e-4) as p_ref,
           coalesce(live.n, 0) as n
    from days d
    join ref using (model_name, model_version, feature)
    left join live on live.day = d.day and live.model_name = d.model_name and live.model_version = d.model_version
                   and live.feature = d.feature and live.bin = ref.bin
), shares as (
    select *, greatest(n::float8 / nullif(sum(n) over (partition by day, model_name, model_version, feature), 0), 1e-4) as p_live,
           sum(n) over (partition by day, model_name, model_version, feature) as live_total
    from joined
)
select day, model_name, model_version, feature, max(live_total) as n,
       sum((p_live - p_ref) * ln(p_live / p_ref)) as psi
from shares
group by 1, 2, 3, 4;

comment on view v_drift_psi_daily is 'PSI of each input feature (and _price, the prediction) per day and model version vs the training reference.';
