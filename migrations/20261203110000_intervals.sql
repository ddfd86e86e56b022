-- Prices with intervals and an estimate of their error (issue: prices people can trust).
--
-- Every ok row stores the 90 % prediction interval it was served with and the error model's
-- estimate of |price - actual|. Once outcomes arrive, accuracy_hourly counts how many actual
-- prices fell inside their interval (realized coverage) and the interval widths; before they
-- arrive, traffic_hourly's estimated error sums give an estimated MAE per bucket.

alter table prediction_log
    add column interval_low double precision,
    add column interval_high double precision,
    add column estimated_error double precision;
comment on column prediction_log.interval_low is 'Lower bound of the 90 % split-conformal prediction interval served with the price, USD (null for rows before intervals, and for non-positive prices).';
comment on column prediction_log.interval_high is 'Upper bound of the 90 % prediction interval served with the price, USD.';
comment on column prediction_log.estimated_error is 'The answering model''s error model estimate of |price - actual_price|, USD: an estimate made before the sale is known.';

alter table traffic_hourly
    add column estimated_rows bigint not null default 0,
    add column estimated_error_sum double precision not null default 0;
comment on column traffic_hourly.estimated_rows is 'Rows with an estimated_error.';
comment on column traffic_hourly.estimated_error_sum is 'Sum of estimated_error, USD.';

alter table accuracy_hourly
    add column interval_labelled bigint not null default 0,
    add column covered bigint not null default 0,
    add column interval_width_sum double precision not null default 0;
comment on column accuracy_hourly.interval_labelled is 'Predictions with a recorded outcome and a stored 90 % interval.';
comment on column accuracy_hourly.covered is 'Of those, how many actual prices lay inside the interval (bounds included).';
comment on column accuracy_hourly.interval_width_sum is 'Sum of interval_high - interval_low over those, USD.';

create or replace function rollup_inserted_rows() returns trigger
language plpgsql as $$
begin
    insert into traffic_hourly as t (hour, model_name, model_version, status, error_code, error_field, requests, price_sum,
                                     estimated_rows, estimated_error_sum)
    select date_trunc('hour', created_at, 'UTC'), model_name, model_version, status, error_code, error_field,
           count(*), sum(price), count(estimated_error), coalesce(sum(estimated_error), 0)
      from inserted
     group by 1, 2, 3, 4, 5, 6
     -- A fixed lock order: concurrent batches upserting the same keys cannot deadlock.
     order by 1, 2, 3, 4, 5, 6
    on conflict on constraint traffic_hourly_key do update
       set requests = t.requests + excluded.requests,
           price_sum = case when excluded.price_sum is null then t.price_sum
                            else coalesce(t.price_sum, 0) + excluded.price_sum end,
           estimated_rows = t.estimated_rows + excluded.estimated_rows,
           estimated_error_sum = t.estimated_error_sum + excluded.estimated_error_sum;
    with v as (
        select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version,
               'latency_us' as metric, histogram_bin(latency_us) as bin
          from inserted
        union all
        select date_trunc('hour', created_at, 'UTC'), model_name, model_version, 'price', histogram_bin(price)
          from inserted where price is not null
    ), binned as (
        select hour, model_name, model_version, metric, bin, count(*) as n from v group by 1, 2, 3, 4, 5
    ), keyed as (
        select hour, model_name, model_version, metric, min(bin) as lo, max(bin) as hi,
               jsonb_object_agg(bin, n) as ns
          from binned group by 1, 2, 3, 4
    )
    insert into histogram_hourly as h (hour, model_name, model_version, metric, first_bin, counts)
    select hour, model_name, model_version, metric, lo,
           (select array_agg(coalesce((ns ->> i::text)::int8, 0) order by i) from generate_series(lo, hi) i)
      from keyed
     order by 1, 2, 3, 4
    on conflict on constraint histogram_hourly_key do update
       set (first_bin, counts) = (select m.first_bin, m.counts
                                    from histogram_merge(h.first_bin, h.counts, excluded.first_bin, excluded.counts) m);
    return null;
end
$$;


create or replace function rollup_outcome_value(p_prediction_id uuid, p_created_at timestamptz, p_actual double precision,
                                                p_sign integer) returns void
language sql as $$
    insert into accuracy_hourly as a
           (hour, model_name, model_version, labelled, abs_error_sum, sq_error_sum, abs_pct_error_sum, error_sum,
            interval_labelled, covered, interval_width_sum)
    select date_trunc('hour', l.created_at, 'UTC'), l.model_name, l.model_version, p_sign,
           p_sign * abs(l.price - p_actual), p_sign * (l.price - p_actual) ^ 2,
           p_sign * abs(l.price - p_actual) / p_actual, p_sign * (l.price - p_actual),
           case when l.interval_low is not null then p_sign else 0 end,
           case when p_actual between l.interval_low and l.interval_high then p_sign else 0 end,
           coalesce(p_sign * (l.interval_high - l.interval_low), 0)
      from prediction_log l
     where l.id = p_prediction_id and l.created_at = p_created_at and l.status = 'ok'
    on conflict (model_name, model_version, hour) do update
       set labelled = a.labelled + excluded.labelled,
           abs_error_sum = a.abs_error_sum + excluded.abs_error_sum,
           sq_error_sum = a.sq_error_sum + excluded.sq_error_sum,
           abs_pct_error_sum = a.abs_pct_error_sum + excluded.abs_pct_error_sum,
           error_sum = a.error_sum + excluded.error_sum,
           interval_labelled = a.interval_labelled + excluded.interval_labelled,
           covered = a.covered + excluded.covered,
           interval_width_sum = a.interval_width_sum + excluded.interval_width_sum
$$;

-- performance_buckets gains four columns, so the function and its view are re-created (the
-- view keeps its columns and adds the new ones at the end).
drop view v_performance_daily;
drop function performance_buckets(text, timestamptz, timestamptz, text, text, boolean);
create function performance_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null, p_by_model boolean default true)
returns table (start timestamptz, model_name text, model_version text, predictions bigint, labelled bigint,
               mae double precision, rmse double precision, mape double precision, mean_error double precision,
               interval_labelled bigint, coverage double precision, mean_interval_width double precision,
               estimated_mae double precision)
language sql stable parallel safe as $$
    with t as (
        select date_trunc(p_unit, t.hour, 'UTC') as start,
               case when p_by_model then t.model_name end as model_name,
               case when p_by_model then t.model_version end as model_version,
               sum(t.requests)::bigint as predictions,
               sum(t.estimated_rows)::bigint as estimated_rows,
               sum(t.estimated_error_sum) as estimated_error_sum
          from traffic_hourly t
         where t.status = 'ok'
           and (p_model_name is null or t.model_name = p_model_name)
           and (p_model_version is null or t.model_version = p_model_version)
           and t.hour >= date_trunc('hour', p_from, 'UTC') and t.hour < p_to
         group by 1, 2, 3
    ), a as (
        select date_trunc(p_unit, a.hour, 'UTC') as start,
               case when p_by_model then a.model_name end as model_name,
               case when p_by_model then a.model_version end as model_version,
               sum(a.labelled)::bigint as labelled, sum(a.abs_error_sum) as abs_error_sum,
               sum(a.sq_error_sum) as sq_error_sum, sum(a.abs_pct_error_sum) as abs_pct_error_sum,
               sum(a.error_sum) as error_sum, sum(a.interval_labelled)::bigint as interval_labelled,
               sum(a.covered)::bigint as covered, sum(a.interval_width_sum) as interval_width_sum
          from accuracy_hourly a
         where (p_model_name is null or a.model_name = p_model_name)
           and (p_model_version is null or a.model_version = p_model_version)
           and a.hour >= date_trunc('hour', p_from, 'UTC') and a.hour < p_to
         group by 1, 2, 3
    )
    select t.start, t.model_name, t.model_version, t.predictions, coalesce(a.labelled, 0),
           a.abs_error_sum / nullif(a.labelled, 0),
           sqrt(greatest(a.sq_error_sum, 0) / nullif(a.labelled, 0)),
           a.abs_pct_error_sum / nullif(a.labelled, 0),
           a.error_sum / nullif(a.labelled, 0),
           coalesce(a.interval_labelled, 0),
           a.covered::double precision / nullif(a.interval_labelled, 0),
           a.interval_width_sum / nullif(a.interval_labelled, 0),
           t.estimated_error_sum / nullif(t.estimated_rows, 0)
      from t
      left join a on a.start = t.start and a.model_name is not distinct from t.model_name
                 and a.model_version is not distinct from t.model_version
$$;
comment on function performance_buckets is
    'Predictions, labelled count, MAE, RMSE, MAPE, mean error, realized 90 % interval coverage and mean width, and the estimated MAE per bucket (and model version): v_performance_daily and the API''s performance.';

create view v_performance_daily as
select start as day, model_name, model_version, predictions, labelled, mae, rmse, mape, mean_error,
       interval_labelled, coverage, mean_interval_width, estimated_mae
  from performance_buckets('day', '-infinity', 'infinity');
comment on view v_performance_daily is 'Per day and model version: predictions; over those with an outcome: MAE, RMSE, MAPE, bias (mean error), and the realized coverage and mean width of the 90 % intervals; over all: the estimated MAE (the error model''s, known before any sale).';

-- The set in force names the three-input model too (replicas compare routing as well).
alter table model_set_in_force add column three_input_model text;
comment on column model_set_in_force.three_input_model is 'name@version answering requests that send only the three required inputs (THREE_INPUT_MODEL); null: the default model answers them.';

-- Coverage alerts travel with the drift alerts (pseudo-feature _coverage).
alter table drift_alerts add column coverage double precision;
comment on column drift_alerts.coverage is 'For _coverage alerts: realized coverage of the 90 % intervals over the last 30 days of predictions with an outcome (psi is 0 for them).';
