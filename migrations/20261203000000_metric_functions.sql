-- One definition per metric. The SQL contract's views and the API's `performance` and `traffic`
-- (src/monitoring/performance.rs, traffic.rs) read the same functions, so an analyst in psql and
-- a client of the API cannot get different numbers for the same bucket. Plain SQL functions,
-- STABLE: PostgreSQL inlines them into the calling query, so a view over one filters and plans
-- as if it were written out.
--
-- Every function takes the bucket width (`hour`, `day`, `week`: date_trunc units, UTC), the
-- window [p_from, p_to), optionally a model name and version, and whether to keep model versions
-- apart (`p_by_model`) or add them up per bucket (the API does when no version is asked for).

-- Accuracy of accepted predictions against their recorded outcomes.
create function performance_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null, p_by_model boolean default true)
returns table (start timestamptz, model_name text, model_version text, predictions bigint, labelled bigint,
               mae double precision, rmse double precision, mape double precision, mean_error double precision)
language sql stable parallel safe as $$
    select date_trunc(p_unit, l.created_at, 'UTC'),
           case when p_by_model then l.model_name end,
           case when p_by_model then l.model_version end,
           count(*),
           count(o.actual_price),
           avg(abs(l.price - o.actual_price)),
           sqrt(avg((l.price - o.actual_price) ^ 2)),
           avg(abs(l.price - o.actual_price) / o.actual_price),
           avg(l.price - o.actual_price)
      from prediction_log l
      left join prediction_outcomes o on o.prediction_id = l.id
     where l.status = 'ok'
       and (p_model_name is null or l.model_name = p_model_name)
       and (p_model_version is null or l.model_version = p_model_version)
       and l.created_at >= p_from and l.created_at < p_to
     group by 1, 2, 3
$$;
comment on function performance_buckets is
    'Predictions, labelled count, MAE, RMSE, MAPE and mean error per bucket (and model version): v_performance_daily and the API''s performance.';

-- Requests by outcome, price and latency percentiles (continuous percentiles over the rows).
create function traffic_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null, p_by_model boolean default true)
returns table (start timestamptz, model_name text, model_version text, requests bigint, ok bigint,
               rejected bigint, failed bigint, mean_price double precision, median_price double precision,
               p50_latency_us double precision, p99_latency_us double precision)
language sql stable parallel safe as $$
    select date_trunc(p_unit, created_at, 'UTC'),
           case when p_by_model then model_name end,
           case when p_by_model then model_version end,
           count(*),
           count(*) filter (where status = 'ok'),
           count(*) filter (where status = 'rejected'),
           count(*) filter (where status = 'failed'),
           avg(price),
           percentile_cont(0.5) within group (order by price),
           percentile_cont(0.5) within group (order by latency_us),
           percentile_cont(0.99) within group (order by latency_us)
      from prediction_log
     where (p_model_name is null or model_name = p_model_name)
       and (p_model_version is null or model_version = p_model_version)
       and created_at >= p_from and created_at < p_to
     group by 1, 2, 3
$$;
comment on function traffic_buckets is
    'Requests by status, mean/median price and p50/p99 latency per bucket (and model version): v_predictions_hourly and the API''s traffic.';

-- Refused and failed requests by error code and field.
create function rejection_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null)
returns table (start timestamptz, error_code text, error_field text, rejected bigint)
language sql stable parallel safe as $$
    select date_trunc(p_unit, created_at, 'UTC'), error_code, error_field, count(*)
      from prediction_log
     where status <> 'ok'
       and (p_model_name is null or model_name = p_model_name)
       and (p_model_version is null or model_version = p_model_version)
       and created_at >= p_from and created_at < p_to
     group by 1, 2, 3
$$;
comment on function rejection_buckets is
    'Rejected and failed requests per bucket, error code and field: v_rejections_daily and the API''s traffic errors.';

-- The views keep their names, columns and types (the contract); only their definition moves.
create or replace view v_performance_daily as
select start as day, model_name, model_version, predictions, labelled, mae, rmse, mape, mean_error
  from performance_buckets('day', '-infinity', 'infinity');

create or replace view v_predictions_hourly as
select start as hour, model_name, model_version, requests, ok, rejected, failed, mean_price, median_price,
       p50_latency_us, p99_latency_us
  from traffic_buckets('hour', '-infinity', 'infinity');

create or replace view v_rejections_daily as
select start as day, error_code, error_field, rejected
  from rejection_buckets('day', '-infinity', 'infinity');
