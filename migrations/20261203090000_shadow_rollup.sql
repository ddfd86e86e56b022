-- The shadow comparison (champion vs challenger on the same requests) from hourly rollups, like
-- traffic and accuracy: shadow prices are written by an UPDATE after the row committed, so a
-- statement trigger on UPDATE keeps the sums and a histogram of the differences in step (rows
-- whose shadow price changes are taken out with their old values and added with the new).

create table shadow_hourly (
    hour                        timestamptz not null,
    model_name                  text not null,
    model_version               text not null,
    shadow_model_name           text not null,
    shadow_model_version        text not null,
    predictions                 bigint not null,
    difference_sum              double precision not null,
    abs_difference_sum          double precision not null,
    abs_relative_difference_sum double precision not null,
    price_sum                   double precision not null,
    shadow_price_sum            double precision not null,
    price_sq_sum                double precision not null,
    shadow_price_sq_sum         double precision not null,
    product_sum                 double precision not null,
    primary key (model_name, model_version, shadow_model_name, shadow_model_version, hour)
);
comment on table shadow_hourly is 'Rollup of prediction_log: sums over ok rows with a shadow price, per hour, model version and shadow model version (v_shadow_comparison, shadowComparison).';
comment on column shadow_hourly.hour is 'UTC hour of the rows'' created_at.';
comment on column shadow_hourly.model_name is 'Answering model name.';
comment on column shadow_hourly.model_version is 'Answering model version.';
comment on column shadow_hourly.shadow_model_name is 'Shadow model name.';
comment on column shadow_hourly.shadow_model_version is 'Shadow model version.';
comment on column shadow_hourly.predictions is 'Rows with both prices.';
comment on column shadow_hourly.difference_sum is 'Sum of shadow_price - price, USD.';
comment on column shadow_hourly.abs_difference_sum is 'Sum of |shadow_price - price|, USD.';
comment on column shadow_hourly.abs_relative_difference_sum is 'Sum of |shadow_price - price| / price (prices are positive).';
comment on column shadow_hourly.price_sum is 'Sum of price (for the correlation).';
comment on column shadow_hourly.shadow_price_sum is 'Sum of shadow_price.';
comment on column shadow_hourly.price_sq_sum is 'Sum of price^2.';
comment on column shadow_hourly.shadow_price_sq_sum is 'Sum of shadow_price^2.';
comment on column shadow_hourly.product_sum is 'Sum of price * shadow_price.';

-- Differences are signed: bin 0 holds 0, bin ±(histogram_bin(|d|) + 1) holds d of that sign, so
-- ordering by bin orders by difference, and a median read from the bins is within 2.19 % of the
-- exact one (within 1 USD for differences under 1 USD).
create function shadow_difference_bin(d double precision) returns integer
language sql immutable parallel safe as $$
    select case when d is null then null when d = 0 then 0 else sign(d)::int * (histogram_bin(abs(d)) + 1) end
$$;
comment on function shadow_difference_bin is 'Signed log-spaced bin of a shadow - champion price difference (see histogram_bin).';
create function shadow_difference_value(bin integer) returns double precision
language sql immutable parallel safe as $$
    select case when bin = 0 then 0 else sign(bin) * histogram_value(abs(bin) - 1) end
$$;
comment on function shadow_difference_value is 'The difference a shadow_difference_bin stands for.';

create table shadow_difference_hourly (
    hour                 timestamptz not null,
    model_name           text not null,
    model_version        text not null,
    shadow_model_name    text not null,
    shadow_model_version text not null,
    first_bin            integer not null,
    counts               int8[] not null,
    primary key (model_name, model_version, shadow_model_name, shadow_model_version, hour)
);
comment on table shadow_difference_hourly is 'Rollup of prediction_log: histogram of shadow_price - price per hour, model version and shadow model version.';
comment on column shadow_difference_hourly.hour is 'UTC hour of the rows'' created_at.';
comment on column shadow_difference_hourly.model_name is 'Answering model name.';
comment on column shadow_difference_hourly.model_version is 'Answering model version.';
comment on column shadow_difference_hourly.shadow_model_name is 'Shadow model name.';
comment on column shadow_difference_hourly.shadow_model_version is 'Shadow model version.';
comment on column shadow_difference_hourly.first_bin is 'shadow_difference_bin of counts[1]; counts[i] is the count of bin first_bin + i - 1.';
comment on column shadow_difference_hourly.counts is 'Rows per shadow_difference_bin(shadow_price - price), from first_bin on (as histogram_hourly).';

-- Takes out the old values of updated rows that had a shadow price and adds the new ones.
create function rollup_shadow_prices() returns trigger
language plpgsql as $$
begin
    with v as (
        select created_at, model_name, model_version, shadow_model_name, shadow_model_version,
               price, shadow_price, -1 as sign
          from old_rows where status = 'ok' and price is not null and shadow_price is not null
        union all
        select created_at, model_name, model_version, shadow_model_name, shadow_model_version,
               price, shadow_price, 1
          from new_rows where status = 'ok' and price is not null and shadow_price is not null
    )
    insert into shadow_hourly as s (hour, model_name, model_version, shadow_model_name, shadow_model_version,
                                    predictions, difference_sum, abs_difference_sum, abs_relative_difference_sum,
                                    price_sum, shadow_price_sum, price_sq_sum, shadow_price_sq_sum, product_sum)
    select date_trunc('hour', created_at, 'UTC'), model_name, model_version, shadow_model_name, shadow_model_version,
           sum(sign), sum(sign * (shadow_price - price)), sum(sign * abs(shadow_price - price)),
           sum(sign * abs(shadow_price - price) / price),
           sum(sign * price), sum(sign * shadow_price), sum(sign * price * price),
           sum(sign * shadow_price * shadow_price), sum(sign * price * shadow_price)
      from v
     group by 1, 2, 3, 4, 5
     order by 2, 3, 4, 5, 1
    on conflict (model_name, model_version, shadow_model_name, shadow_model_version, hour) do update
       set predictions = s.predictions + excluded.predictions,
           difference_sum = s.difference_sum + excluded.difference_sum,
           abs_difference_sum = s.abs_difference_sum + excluded.abs_difference_sum,
           abs_relative_difference_sum = s.abs_relative_difference_sum + excluded.abs_relative_difference_sum,
           price_sum = s.price_sum + excluded.price_sum,
           shadow_price_sum = s.shadow_price_sum + excluded.shadow_price_sum,
           price_sq_sum = s.price_sq_sum + excluded.price_sq_sum,
           shadow_price_sq_sum = s.shadow_price_sq_sum + excluded.shadow_price_sq_sum,
           product_sum = s.product_sum + excluded.product_sum;

    with v as (
        select created_at, model_name, model_version, shadow_model_name, shadow_model_version,
               shadow_difference_bin(shadow_price - price) as bin, -1 as sign
          from old_rows where status = 'ok' and price is not null and shadow_price is not null
        union all
        select created_at, model_name, model_version, shadow_model_name, shadow_model_version,
               shadow_difference_bin(shadow_price - price), 1
          from new_rows where status = 'ok' and price is not null and shadow_price is not null
    )
    , binned as (
        select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version, shadow_model_name,
               shadow_model_version, bin, sum(sign) as n
          from v group by 1, 2, 3, 4, 5, 6
    ), keyed as (
        select hour, model_name, model_version, shadow_model_name, shadow_model_version,
               min(bin) as lo, max(bin) as hi, jsonb_object_agg(bin, n) as ns
          from binned group by 1, 2, 3, 4, 5
    )
    insert into shadow_difference_hourly as h (hour, model_name, model_version, shadow_model_name,
                                               shadow_model_version, first_bin, counts)
    select hour, model_name, model_version, shadow_model_name, shadow_model_version, lo,
           (select array_agg(coalesce((ns ->> i::text)::int8, 0) order by i) from generate_series(lo, hi) i)
      from keyed
     order by 2, 3, 4, 5, 1
    on conflict (model_name, model_version, shadow_model_name, shadow_model_version, hour) do update
       set (first_bin, counts) = (select m.first_bin, m.counts
                                    from histogram_merge(h.first_bin, h.counts, excluded.first_bin, excluded.counts) m);
    return null;
end
$$;

create trigger prediction_log_shadow_rollup after update on prediction_log
    referencing old table as old_rows new table as new_rows
    for each statement execute function rollup_shadow_prices();

-- The rows already shadow-scored.
insert into shadow_hourly (hour, model_name, model_version, shadow_model_name, shadow_model_version,
                           predictions, difference_sum, abs_difference_sum, abs_relative_difference_sum,
                           price_sum, shadow_price_sum, price_sq_sum, shadow_price_sq_sum, product_sum)
select date_trunc('hour', created_at, 'UTC'), model_name, model_version, shadow_model_name, shadow_model_version,
       count(*), sum(shadow_price - price), sum(abs(shadow_price - price)), sum(abs(shadow_price - price) / price),
       sum(price), sum(shadow_price), sum(price * price), sum(shadow_price * shadow_price), sum(price * shadow_price)
  from prediction_log
 where status = 'ok' and price is not null and shadow_price is not null
 group by 1, 2, 3, 4, 5;
with binned as (
    select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version, shadow_model_name,
           shadow_model_version, shadow_difference_bin(shadow_price - price) as bin, count(*) as n
      from prediction_log
     where status = 'ok' and price is not null and shadow_price is not null
     group by 1, 2, 3, 4, 5, 6
), keyed as (
    select hour, model_name, model_version, shadow_model_name, shadow_model_version,
           min(bin) as lo, max(bin) as hi, jsonb_object_agg(bin, n) as ns
      from binned group by 1, 2, 3, 4, 5
)
insert into shadow_difference_hourly (hour, model_name, model_version, shadow_model_name, shadow_model_version,
                                      first_bin, counts)
select hour, model_name, model_version, shadow_model_name, shadow_model_version, lo,
       (select array_agg(coalesce((ns ->> i::text)::int8, 0) order by i) from generate_series(lo, hi) i)
  from keyed;

-- Champion vs shadow per bucket, from the rollups: the shadowComparison query and the view.
create function shadow_buckets(
    p_unit text, p_from timestamptz, p_to timestamptz,
    p_model_name text default null, p_model_version text default null)
returns table (start timestamptz, model_name text, model_version text, shadow_model_name text,
               shadow_model_version text, predictions bigint, mean_difference double precision,
               mean_abs_difference double precision, mean_abs_relative_difference double precision,
               median_difference double precision, correlation double precision)
language sql stable parallel safe as $$
    with s as (
        select date_trunc(p_unit, s.hour, 'UTC') as start, s.model_name, s.model_version,
               s.shadow_model_name, s.shadow_model_version,
               sum(s.predictions)::float8 as n, sum(s.difference_sum) as d, sum(s.abs_difference_sum) as ad,
               sum(s.abs_relative_difference_sum) as ard, sum(s.price_sum) as x, sum(s.shadow_price_sum) as y,
               sum(s.price_sq_sum) as xx, sum(s.shadow_price_sq_sum) as yy, sum(s.product_sum) as xy
          from shadow_hourly s
         where (p_model_name is null or s.model_name = p_model_name)
           and (p_model_version is null or s.model_version = p_model_version)
           and s.hour >= date_trunc('hour', p_from, 'UTC') and s.hour < p_to
         group by 1, 2, 3, 4, 5
        having sum(s.predictions) > 0
    ), h as (
        select date_trunc(p_unit, h.hour, 'UTC') as start, h.model_name, h.model_version,
               h.shadow_model_name, h.shadow_model_version, h.first_bin + e.ord::int - 1 as bin, sum(e.n) as n
          from shadow_difference_hourly h, unnest(h.counts) with ordinality e(n, ord)
         where (p_model_name is null or h.model_name = p_model_name)
           and (p_model_version is null or h.model_version = p_model_version)
           and h.hour >= date_trunc('hour', p_from, 'UTC') and h.hour < p_to and e.n <> 0
         group by 1, 2, 3, 4, 5, 6
        having sum(e.n) > 0
    ), c as (
        select h.*, sum(h.n) over w as cumulative,
               sum(h.n) over (partition by h.start, h.model_name, h.model_version, h.shadow_model_name, h.shadow_model_version) as total
          from h
        window w as (partition by h.start, h.model_name, h.model_version, h.shadow_model_name, h.shadow_model_version order by h.bin)
    ), m as (
        select c.start, c.model_name, c.model_version, c.shadow_model_name, c.shadow_model_version,
               shadow_difference_value(min(c.bin) filter (where c.cumulative >= ceil(0.5 * c.total))) as median_difference
          from c
         group by 1, 2, 3, 4, 5
    )
    select s.start, s.model_name, s.model_version, s.shadow_model_name, s.shadow_model_version, s.n::bigint,
           s.d / s.n, s.ad / s.n, s.ard / s.n, m.median_difference,
           (s.n * s.xy - s.x * s.y) / nullif(sqrt(greatest(s.n * s.xx - s.x * s.x, 0)) * sqrt(greatest(s.n * s.yy - s.y * s.y, 0)), 0)
      from s
      left join m using (start, model_name, model_version, shadow_model_name, shadow_model_version)
$$;
comment on function shadow_buckets is 'Champion vs shadow per time bucket over [p_from, p_to) from shadow_hourly: mean, mean absolute, mean relative and median (within 2.19 %) difference, and correlation.';

create or replace view v_shadow_comparison as
select start as day, model_name, model_version, shadow_model_name, shadow_model_version, predictions,
       mean_difference, mean_abs_difference, mean_abs_relative_difference, median_difference, correlation
  from shadow_buckets('day', '-infinity', 'infinity');
