-- prediction_log partitioned by day on created_at, so old days are dropped whole
-- (LOG_RETENTION_DAYS) instead of deleted row by row, and time-bounded reads touch only their
-- days. This migration converts the existing table with its rows.
--
-- Partitions are named prediction_log_pYYYYMMDD and cover one UTC day. The service creates them
-- ahead (and the writer creates one on demand for a row of a day that has none, e.g. an old row
-- drained from the spool); there is no default partition, which would forbid DETACH CONCURRENTLY.
-- The primary key is (id, created_at): a partitioned table's unique keys include the partition key.
-- UUIDv7 ids carry their time (uuid_v7_time), so a lookup by id is pruned to its days.

-- The millisecond timestamp of a UUIDv7; null for other versions.
create function uuid_v7_time(u uuid) returns timestamptz
language sql immutable parallel safe as $$
    select case when substr(u::text, 15, 1) = '7'
                then to_timestamp(('x' || lpad(substr(replace(u::text, '-', ''), 1, 12), 16, '0'))::bit(64)::bigint / 1000.0)
           end
$$;
comment on function uuid_v7_time is 'The timestamp a UUIDv7 carries (milliseconds); null for other UUID versions.';

create function prediction_log_partition_name(day date) returns text
language sql immutable parallel safe as $$ select 'prediction_log_p' || to_char(day, 'YYYYMMDD') $$;
comment on function prediction_log_partition_name is 'Name of the prediction_log partition holding the UTC day.';

-- Creates the partition of one UTC day if it does not exist; safe to race from several replicas.
create function ensure_prediction_log_partition(day date) returns text
language plpgsql as $$
declare
    name text := prediction_log_partition_name(day);
begin
    if to_regclass(name) is null then
        begin
            execute format('create table %I partition of prediction_log for values from (%L) to (%L)',
                           name, (day::timestamp at time zone 'UTC'), ((day + 1)::timestamp at time zone 'UTC'));
        exception when duplicate_table or unique_violation then
            null; -- another replica created it first
        end;
    end if;
    return name;
end
$$;
comment on function ensure_prediction_log_partition is 'Creates the prediction_log partition of a UTC day unless it exists; returns its name.';

-- The old table steps aside with its indexes and its rollup trigger.
drop trigger prediction_log_rollups on prediction_log;
alter table prediction_outcomes drop constraint prediction_outcomes_prediction_id_fkey;
alter table prediction_log rename to prediction_log_unpartitioned;
do $$
declare
    idx text;
begin
    for idx in select indexname from pg_indexes where schemaname = current_schema() and tablename = 'prediction_log_unpartitioned'
    loop
        execute format('alter index %I rename to %I', idx, idx || '_unpartitioned');
    end loop;
end
$$;

create table prediction_log (
    like prediction_log_unpartitioned including defaults including constraints including comments,
    primary key (id, created_at)
) partition by range (created_at);
comment on table prediction_log is 'One row per prediction request (per item for batches), including rejected inputs. Partitioned by UTC day of created_at (prediction_log_pYYYYMMDD).';
create index prediction_log_created_at_id_idx on prediction_log (created_at desc, id desc);
create index prediction_log_request_id_idx on prediction_log (request_id);
create index prediction_log_model_created_at_idx on prediction_log (model_name, model_version, created_at);

-- A partition for every day that has rows, and for the days around today.
select ensure_prediction_log_partition((day at time zone 'UTC')::date)
  from (select distinct date_trunc('day', created_at, 'UTC') as day from prediction_log_unpartitioned
        union
        select generate_series(date_trunc('day', now(), 'UTC') - interval '1 day',
                               date_trunc('day', now(), 'UTC') + interval '7 days', interval '1 day')) d;
insert into prediction_log select * from prediction_log_unpartitioned;

-- The rollups already count these rows: the trigger is created after the copy.
create trigger prediction_log_rollups after insert on prediction_log
    referencing new table as inserted for each statement execute function rollup_inserted_rows();

-- Outcomes keep their enforced link: the prediction's key is (id, created_at). Clients and
-- analysts still give only the prediction id; a trigger looks its time up.
alter table prediction_outcomes add column prediction_created_at timestamptz;
comment on column prediction_outcomes.prediction_created_at is 'created_at of the prediction (its partition key); filled from prediction_log when not given.';
update prediction_outcomes o set prediction_created_at = l.created_at from prediction_log l where l.id = o.prediction_id;
alter table prediction_outcomes alter column prediction_created_at set not null;
alter table prediction_outcomes add constraint prediction_outcomes_prediction_fkey
    foreign key (prediction_id, prediction_created_at) references prediction_log (id, created_at);

create function prediction_outcomes_prediction_time() returns trigger
language plpgsql as $$
begin
    if new.prediction_created_at is null then
        select l.created_at into new.prediction_created_at
          from prediction_log l
         where l.id = new.prediction_id
           and (uuid_v7_time(new.prediction_id) is null
                or l.created_at between uuid_v7_time(new.prediction_id) - interval '1 day'
                                    and uuid_v7_time(new.prediction_id) + interval '1 day');
        if new.prediction_created_at is null then
            select l.created_at into new.prediction_created_at from prediction_log l where l.id = new.prediction_id;
        end if;
    end if;
    return new;
end
$$;
create trigger prediction_outcomes_prediction_time before insert on prediction_outcomes
    for each row execute function prediction_outcomes_prediction_time();

-- Outcome rollups look the prediction up by its full key (one partition).
drop function rollup_outcome_value(uuid, double precision, integer);
create function rollup_outcome_value(p_prediction_id uuid, p_created_at timestamptz, p_actual double precision,
                                     p_sign integer) returns void
language sql as $$
    insert into accuracy_hourly as a
           (hour, model_name, model_version, labelled, abs_error_sum, sq_error_sum, abs_pct_error_sum, error_sum)
    select date_trunc('hour', l.created_at, 'UTC'), l.model_name, l.model_version, p_sign,
           p_sign * abs(l.price - p_actual), p_sign * (l.price - p_actual) ^ 2,
           p_sign * abs(l.price - p_actual) / p_actual, p_sign * (l.price - p_actual)
      from prediction_log l
     where l.id = p_prediction_id and l.created_at = p_created_at and l.status = 'ok'
    on conflict (model_name, model_version, hour) do update
       set labelled = a.labelled + excluded.labelled,
           abs_error_sum = a.abs_error_sum + excluded.abs_error_sum,
           sq_error_sum = a.sq_error_sum + excluded.sq_error_sum,
           abs_pct_error_sum = a.abs_pct_error_sum + excluded.abs_pct_error_sum,
           error_sum = a.error_sum + excluded.error_sum
$$;

-- Retention deletes the outcomes of the days it drops: the accuracy rollups keep their sums
-- (house_price.retention is set for that transaction only).
create or replace function rollup_outcome() returns trigger
language plpgsql as $$
begin
    if current_setting('house_price.retention', true) = 'on' then
        return null;
    end if;
    if tg_op in ('UPDATE', 'DELETE') then
        perform rollup_outcome_value(old.prediction_id, old.prediction_created_at, old.actual_price, -1);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform rollup_outcome_value(new.prediction_id, new.prediction_created_at, new.actual_price, 1);
    end if;
    return null;
end
$$;

-- Views that read the table itself are re-created on the new one.
drop view v_shadow_comparison;
drop table prediction_log_unpartitioned;
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
