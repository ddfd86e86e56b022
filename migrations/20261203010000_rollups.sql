-- Hourly rollups for the monitoring reads: `performance`, `traffic` and the views that share
-- their functions read these small tables instead of scanning prediction_log, so their cost
-- depends on the window's hours, not on the rows logged in it.
--
-- They are kept in step with the rows by triggers, in the transaction that writes the rows:
-- one statement-level trigger per insert statement into prediction_log (a group-commit batch, a
-- drained spool chunk, an analyst's COPY: every path counts), and a row trigger on
-- prediction_outcomes (the API's recordOutcome and an analyst's \copy or UPDATE alike). The
-- insert is idempotent on the row id and a transition table holds only the rows actually
-- inserted, so a retried batch counts nothing twice (as drift_counts).

-- Histogram bins shared by every distribution kept here (latency, price): 16 bins per doubling.
-- Bin b > 0 holds values in (2^((b-1)/16), 2^(b/16)]; bin 0 holds values <= 1. A bin stands for
-- its geometric midpoint 2^((b-0.5)/16), within 2^(1/32) - 1 = 2.19 % of any value in it, so a
-- percentile read from the histogram is within 2.19 % of the exact nearest-rank percentile.
create function histogram_bin(v double precision) returns integer
language sql immutable parallel safe as $$
    select case when v is null then null when v <= 1 then 0 else ceil(16 * ln(v) / ln(2::float8))::int end
$$;
comment on function histogram_bin is 'Log-spaced histogram bin of a value: 16 bins per doubling, bin 0 for values <= 1.';

create function histogram_value(bin integer) returns double precision
language sql immutable parallel safe as $$
    select case when bin <= 0 then 1 else power(2::float8, (bin - 0.5) / 16) end
$$;
comment on function histogram_value is 'The value a histogram bin stands for (its geometric midpoint): within 2.19 % of every value in the bin.';

-- Requests per hour, model version, status and error.
create table traffic_hourly (
    -- UTC hour of created_at.
    hour          timestamptz not null,
    -- The answering model (null for requests refused before a model was chosen).
    model_name    text,
    model_version text,
    -- ok / rejected / failed.
    status        text not null,
    -- extensions.code and offending field of rejected and failed requests.
    error_code    text,
    error_field   text,
    -- Logged rows.
    requests      bigint not null,
    -- Sum of price over the rows (null when none has one): mean price = price_sum / ok requests.
    price_sum     double precision,
    constraint traffic_hourly_key unique nulls not distinct (hour, model_name, model_version, status, error_code, error_field)
);
comment on table traffic_hourly is 'Rollup of prediction_log: rows per hour, model version, status and error, kept in step by a trigger.';
comment on column traffic_hourly.hour is 'UTC hour of the rows'' created_at.';
comment on column traffic_hourly.model_name is 'Answering model name; null for requests refused before a model was chosen.';
comment on column traffic_hourly.model_version is 'Answering model version.';
comment on column traffic_hourly.status is 'ok, rejected or failed.';
comment on column traffic_hourly.error_code is 'extensions.code of rejected and failed rows.';
comment on column traffic_hourly.error_field is 'Offending field of rejected rows.';
comment on column traffic_hourly.requests is 'Rows logged.';
comment on column traffic_hourly.price_sum is 'Sum of the rows'' predicted prices, USD.';

-- Distributions per hour and model version, as log-spaced histograms (see histogram_bin).
create table histogram_hourly (
    hour          timestamptz not null,
    model_name    text,
    model_version text,
    -- latency_us (every row) or price (ok rows).
    metric        text not null,
    bin           integer not null,
    n             bigint not null,
    constraint histogram_hourly_key unique nulls not distinct (hour, model_name, model_version, metric, bin)
);
comment on table histogram_hourly is 'Rollup of prediction_log: histograms of latency_us (every row) and price (ok rows) per hour and model version.';
comment on column histogram_hourly.hour is 'UTC hour of the rows'' created_at.';
comment on column histogram_hourly.model_name is 'Answering model name; null for requests refused before a model was chosen.';
comment on column histogram_hourly.model_version is 'Answering model version.';
comment on column histogram_hourly.metric is 'latency_us or price.';
comment on column histogram_hourly.bin is 'histogram_bin(value): 16 log-spaced bins per doubling.';
comment on column histogram_hourly.n is 'Rows with a value in the bin.';

-- Accuracy sums per hour (of the prediction) and model version, over labelled predictions.
create table accuracy_hourly (
    hour              timestamptz not null,
    model_name        text not null,
    model_version     text not null,
    labelled          bigint not null,
    abs_error_sum     double precision not null,
    sq_error_sum      double precision not null,
    abs_pct_error_sum double precision not null,
    error_sum         double precision not null,
    primary key (model_name, model_version, hour)
);
comment on table accuracy_hourly is 'Rollup of prediction_outcomes joined with prediction_log: error sums per prediction hour and model version, kept in step by a trigger on outcomes.';
comment on column accuracy_hourly.hour is 'UTC hour of the predictions'' created_at.';
comment on column accuracy_hourly.model_name is 'Answering model name.';
comment on column accuracy_hourly.model_version is 'Answering model version.';
comment on column accuracy_hourly.labelled is 'Predictions with a recorded outcome.';
comment on column accuracy_hourly.abs_error_sum is 'Sum of |price - actual_price|, USD.';
comment on column accuracy_hourly.sq_error_sum is 'Sum of (price - actual_price)^2, USD^2.';
comment on column accuracy_hourly.abs_pct_error_sum is 'Sum of |price - actual_price| / actual_price.';
comment on column accuracy_hourly.error_sum is 'Sum of price - actual_price, USD.';

-- Adds the rows of one insert statement to the traffic and histogram rollups.
create function rollup_inserted_rows() returns trigger
language plpgsql as $$
begin
    insert into traffic_hourly as t (hour, model_name, model_version, status, error_code, error_field, requests, price_sum)
    select date_trunc('hour', created_at, 'UTC'), model_name, model_version, status, error_code, error_field,
           count(*), sum(price)
      from inserted
     group by 1, 2, 3, 4, 5, 6
     -- A fixed lock order: concurrent batches upserting the same keys cannot deadlock.
     order by 1, 2, 3, 4, 5, 6
    on conflict on constraint traffic_hourly_key do update
       set requests = t.requests + excluded.requests,
           price_sum = case when excluded.price_sum is null then t.price_sum
                            else coalesce(t.price_sum, 0) + excluded.price_sum end;
    insert into histogram_hourly as h (hour, model_name, model_version, metric, bin, n)
    select hour, model_name, model_version, metric, bin, count(*)
      from (select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version,
                   'latency_us' as metric, histogram_bin(latency_us) as bin
              from inserted
            union all
            select date_trunc('hour', created_at, 'UTC'), model_name, model_version, 'price', histogram_bin(price)
              from inserted where price is not null) v
     group by 1, 2, 3, 4, 5
     order by 1, 2, 3, 4, 5
    on conflict on constraint histogram_hourly_key do update set n = h.n + excluded.n;
    return null;
end
$$;

create trigger prediction_log_rollups after insert on prediction_log
    referencing new table as inserted for each statement execute function rollup_inserted_rows();

-- Adds (sign 1) or takes out (sign -1) one outcome of an ok prediction in accuracy_hourly.
create function rollup_outcome_value(p_prediction_id uuid, p_actual double precision, p_sign integer) returns void
language sql as $$
    insert into accuracy_hourly as a
           (hour, model_name, model_version, labelled, abs_error_sum, sq_error_sum, abs_pct_error_sum, error_sum)
    select date_trunc('hour', l.created_at, 'UTC'), l.model_name, l.model_version, p_sign,
           p_sign * abs(l.price - p_actual), p_sign * (l.price - p_actual) ^ 2,
           p_sign * abs(l.price - p_actual) / p_actual, p_sign * (l.price - p_actual)
      from prediction_log l
     where l.id = p_prediction_id and l.status = 'ok'
    on conflict (model_name, model_version, hour) do update
       set labelled = a.labelled + excluded.labelled,
           abs_error_sum = a.abs_error_sum + excluded.abs_error_sum,
           sq_error_sum = a.sq_error_sum + excluded.sq_error_sum,
           abs_pct_error_sum = a.abs_pct_error_sum + excluded.abs_pct_error_sum,
           error_sum = a.error_sum + excluded.error_sum
$$;

-- An outcome recorded, corrected or deleted: the old value out, the new one in.
create function rollup_outcome() returns trigger
language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        perform rollup_outcome_value(old.prediction_id, old.actual_price, -1);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform rollup_outcome_value(new.prediction_id, new.actual_price, 1);
    end if;
    return null;
end
$$;

create trigger prediction_outcomes_rollup after insert or update of actual_price or delete on prediction_outcomes
    for each row execute function rollup_outcome();

-- What was logged before this migration.
insert into traffic_hourly (hour, model_name, model_version, status, error_code, error_field, requests, price_sum)
select date_trunc('hour', created_at, 'UTC'), model_name, model_version, status, error_code, error_field, count(*), sum(price)
  from prediction_log group by 1, 2, 3, 4, 5, 6;
insert into histogram_hourly (hour, model_name, model_version, metric, bin, n)
select hour, model_name, model_version, metric, bin, count(*)
  from (select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version, 'latency_us' as metric,
               histogram_bin(latency_us) as bin from prediction_log
        union all
        select date_trunc('hour', created_at, 'UTC'), model_name, model_version, 'price', histogram_bin(price)
          from prediction_log where price is not null) v
 group by 1, 2, 3, 4, 5;
insert into accuracy_hourly (hour, model_name, model_version, labelled, abs_error_sum, sq_error_sum, abs_pct_error_sum, error_sum)
select date_trunc('hour', l.created_at, 'UTC'), l.model_name, l.model_version, count(*),
       sum(abs(l.price - o.actual_price)), sum((l.price - o.actual_price) ^ 2),
       sum(abs(l.price - o.actual_price) / o.actual_price), sum(l.price - o.actual_price)
  from prediction_outcomes o join prediction_log l on l.id = o.prediction_id
 where l.status = 'ok'
 group by 1, 2, 3;

-- The metric functions now read the rollups (same signatures and columns, so the views that call
-- them are unchanged). Windows are whole UTC hours: `p_from` is rounded down to its hour.
-- Percentiles are nearest-rank over the histogram bins, within 2.19 % (see histogram_bin).
create or replace function performance_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null, p_by_model boolean default true)
returns table (start timestamptz, model_name text, model_version text, predictions bigint, labelled bigint,
               mae double precision, rmse double precision, mape double precision, mean_error double precision)
language sql stable parallel safe as $$
    with t as (
        select date_trunc(p_unit, t.hour, 'UTC') as start,
               case when p_by_model then t.model_name end as model_name,
               case when p_by_model then t.model_version end as model_version,
               sum(t.requests)::bigint as predictions
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
               sum(a.error_sum) as error_sum
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
           a.error_sum / nullif(a.labelled, 0)
      from t
      left join a on a.start = t.start and a.model_name is not distinct from t.model_name
                 and a.model_version is not distinct from t.model_version
$$;

create or replace function traffic_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null, p_by_model boolean default true)
returns table (start timestamptz, model_name text, model_version text, requests bigint, ok bigint,
               rejected bigint, failed bigint, mean_price double precision, median_price double precision,
               p50_latency_us double precision, p99_latency_us double precision)
language sql stable parallel safe as $$
    with t as (
        select date_trunc(p_unit, t.hour, 'UTC') as start,
               case when p_by_model then t.model_name end as model_name,
               case when p_by_model then t.model_version end as model_version,
               sum(t.requests)::bigint as requests,
               coalesce(sum(t.requests) filter (where t.status = 'ok'), 0)::bigint as ok,
               coalesce(sum(t.requests) filter (where t.status = 'rejected'), 0)::bigint as rejected,
               coalesce(sum(t.requests) filter (where t.status = 'failed'), 0)::bigint as failed,
               sum(t.price_sum) as price_sum
          from traffic_hourly t
         where (p_model_name is null or t.model_name = p_model_name)
           and (p_model_version is null or t.model_version = p_model_version)
           and t.hour >= date_trunc('hour', p_from, 'UTC') and t.hour < p_to
         group by 1, 2, 3
    ), h as (
        select date_trunc(p_unit, h.hour, 'UTC') as start,
               case when p_by_model then h.model_name end as model_name,
               case when p_by_model then h.model_version end as model_version,
               h.metric, h.bin, sum(h.n) as n
          from histogram_hourly h
         where (p_model_name is null or h.model_name = p_model_name)
           and (p_model_version is null or h.model_version = p_model_version)
           and h.hour >= date_trunc('hour', p_from, 'UTC') and h.hour < p_to
         group by 1, 2, 3, 4, 5
    ), c as (
        select h.*, sum(h.n) over w as cumulative, sum(h.n) over (partition by h.start, h.model_name, h.model_version, h.metric) as total
          from h
        window w as (partition by h.start, h.model_name, h.model_version, h.metric order by h.bin)
    ), p as (
        select c.start, c.model_name, c.model_version,
               histogram_value(min(c.bin) filter (where c.metric = 'price' and c.cumulative >= ceil(0.5 * c.total))) as median_price,
               histogram_value(min(c.bin) filter (where c.metric = 'latency_us' and c.cumulative >= ceil(0.5 * c.total))) as p50_latency_us,
               histogram_value(min(c.bin) filter (where c.metric = 'latency_us' and c.cumulative >= ceil(0.99 * c.total))) as p99_latency_us
          from c
         group by 1, 2, 3
    )
    select t.start, t.model_name, t.model_version, t.requests, t.ok, t.rejected, t.failed,
           t.price_sum / nullif(t.ok, 0), p.median_price, p.p50_latency_us, p.p99_latency_us
      from t
      left join p on p.start = t.start and p.model_name is not distinct from t.model_name
                 and p.model_version is not distinct from t.model_version
$$;

create or replace function rejection_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null)
returns table (start timestamptz, error_code text, error_field text, rejected bigint)
language sql stable parallel safe as $$
    select date_trunc(p_unit, hour, 'UTC'), error_code, error_field, sum(requests)::bigint
      from traffic_hourly
     where status <> 'ok'
       and (p_model_name is null or model_name = p_model_name)
       and (p_model_version is null or model_version = p_model_version)
       and hour >= date_trunc('hour', p_from, 'UTC') and hour < p_to
     group by 1, 2, 3
$$;
