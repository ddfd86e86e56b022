-- histogram_hourly keeps one row per (hour, model version, metric) with the bin counts as an
-- array, instead of one row per bin: a week of hourly latency histograms is ~1,000 rows to read
-- rather than ~30,000, and the service merges them itself (src/monitoring/traffic.rs), so the
-- dashboard's traffic reads stay in milliseconds at any log size. counts[i] is the count of bin
-- first_bin + i - 1 (histogram_bin: 16 log-spaced bins per doubling).

alter table histogram_hourly rename to histogram_hourly_bins;
alter table histogram_hourly_bins rename constraint histogram_hourly_key to histogram_hourly_bins_key;

create table histogram_hourly (
    hour          timestamptz not null,
    model_name    text,
    model_version text,
    metric        text not null,
    first_bin     integer not null,
    counts        int8[] not null,
    constraint histogram_hourly_key unique nulls not distinct (hour, model_name, model_version, metric)
);
comment on table histogram_hourly is 'Rollup of prediction_log: histograms of latency_us (every row) and price (ok rows) per hour and model version, as arrays of bin counts.';
comment on column histogram_hourly.hour is 'UTC hour of the rows'' created_at.';
comment on column histogram_hourly.model_name is 'Answering model name; null for requests refused before a model was chosen.';
comment on column histogram_hourly.model_version is 'Answering model version.';
comment on column histogram_hourly.metric is 'latency_us or price.';
comment on column histogram_hourly.first_bin is 'histogram_bin of counts[1]; counts[i] is the count of bin first_bin + i - 1.';
comment on column histogram_hourly.counts is 'Rows per bin (histogram_bin: 16 log-spaced bins per doubling), from first_bin on.';

-- The element-wise sum of two histograms (first bin, counts).
create function histogram_merge(a_first integer, a int8[], b_first integer, b int8[],
                                out first_bin integer, out counts int8[])
language sql immutable parallel safe as $$
    select least(a_first, b_first),
           array_agg(coalesce(a[i - a_first + 1], 0) + coalesce(b[i - b_first + 1], 0) order by i)
      from generate_series(least(a_first, b_first),
                           greatest(a_first + cardinality(a), b_first + cardinality(b)) - 1) i
$$;
comment on function histogram_merge is 'Element-wise sum of two histograms given as (first bin, counts).';

-- Each histogram of `h` (key, bin, n rows) packed into one array row.
insert into histogram_hourly (hour, model_name, model_version, metric, first_bin, counts)
select k.hour, k.model_name, k.model_version, k.metric, k.lo,
       (select array_agg(coalesce(b.n, 0) order by i)
          from generate_series(k.lo, k.hi) i
          left join histogram_hourly_bins b
            on b.hour = k.hour and b.model_name is not distinct from k.model_name
           and b.model_version is not distinct from k.model_version and b.metric = k.metric and b.bin = i)
  from (select hour, model_name, model_version, metric, min(bin) as lo, max(bin) as hi
          from histogram_hourly_bins group by 1, 2, 3, 4) k;
drop table histogram_hourly_bins;

create or replace function rollup_inserted_rows() returns trigger
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

-- The percentiles of the views, from the arrays.
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
               h.metric, h.first_bin + e.ord::int - 1 as bin, sum(e.n) as n
          from histogram_hourly h, unnest(h.counts) with ordinality e(n, ord)
         where (p_model_name is null or h.model_name = p_model_name)
           and (p_model_version is null or h.model_version = p_model_version)
           and h.hour >= date_trunc('hour', p_from, 'UTC') and h.hour < p_to
           and e.n > 0
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
