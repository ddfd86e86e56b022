-- Model registry support: imputed features, the resolved feature vector, shadow scoring, and
-- model lifecycle events.

-- Features the model needed but the client did not send (filled from the model card).
alter table prediction_log add column imputed_features text[] not null default '{}';
-- Every feature value the model used after imputation, keyed by API name
-- ({"squareFeet": 1500, "neighborhood": "Gilbert", ...}); null for rejected rows. Drift analysis
-- reads this (client-sent values are in raw_input).
alter table prediction_log add column features jsonb;
-- The shadow (challenger) model's price for the same input, written after the row committed by a
-- background scorer, so it never delays an answer. Null when no shadow is configured, for
-- rejected rows, or when the scorer was saturated (counted in shadow_skipped_total).
alter table prediction_log add column shadow_price double precision;
alter table prediction_log add column shadow_model_name text;
alter table prediction_log add column shadow_model_version text;
alter table prediction_log add column shadow_scored_at timestamptz;

-- Model lifecycle: what was loaded, when, by whom, and failed reloads.
create table model_events (
    id            bigint generated always as identity primary key,
    occurred_at   timestamptz not null default now(),
    -- 'loaded' (startup), 'reloaded', 'reload_failed'.
    event         text not null check (event in ('loaded', 'reloaded', 'reload_failed')),
    -- 'startup', 'sighup' or 'api' (the reloadModels mutation).
    trigger       text not null check (trigger in ('startup', 'sighup', 'api')),
    -- For 'api': the first 12 hex digits of the API key's sha256 (never the key).
    actor         text,
    -- name@version of every model in the set now serving (after the event).
    models        text[] not null,
    -- name@version added and removed by a reload.
    added         text[] not null default '{}',
    removed       text[] not null default '{}',
    default_model text not null,
    shadow_model  text,
    -- Why a reload failed (the previous set kept serving).
    error         text
);

create index model_events_occurred_at_idx on model_events (occurred_at);

comment on table model_events is 'Model set loads and reloads (including failed ones that kept the previous set).';

-- Champion vs shadow on live traffic, per day.
create view v_shadow_comparison as
select
    date_trunc('day', created_at, 'UTC')                           as day,
    model_name,
    model_version,
    shadow_model_name,
    shadow_model_version,
    count(*)                                                       as predictions,
    avg(shadow_price - price)                                      as mean_difference,
    avg(abs(shadow_price - price))                                 as mean_abs_difference,
    avg(abs(shadow_price - price) / nullif(price, 0))              as mean_abs_relative_difference,
    percentile_cont(0.5) within group (order by shadow_price - price) as median_difference,
    corr(price, shadow_price)                                      as correlation
from prediction_log
where status = 'ok' and shadow_price is not null
group by 1, 2, 3, 4, 5;

comment on view v_shadow_comparison is 'Daily difference between the answering model and the shadow model on the same requests.';
