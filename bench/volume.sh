#!/usr/bin/env bash
# Volume benchmark (issue 18): the log filled to 10 M and then 20 M rows over the last 7 days, by
# a generator that writes through COPY (1 M rows per statement, so the rollup triggers run as they
# do for any bulk load); at each size, p50/p99 of every monitoring read, dashboard call and history
# filter (bench/volume_reads.py) and the SQL views; the logging throughput of a release server
# (GraphQL predictPrice, durable, 64 connections) on the empty log and at 20 M rows; the time to
# drop one day's partition as retention does (src/log/partitions.rs drop_day); bytes per row and
# rollup sizes.
#
#   DATABASE_URL=... bench/volume.sh           (make bench-volume sets DATABASE_URL up)
#   BENCH_SIZES="10 20" BENCH_DURATION=10 bench/volume.sh
#
# Takes about half an hour and ~15 GB of disk. Do not run it while cargo builds.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

: "${DATABASE_URL:?set DATABASE_URL (make bench-volume does)}"
SIZES=${BENCH_SIZES:-10 20}
DURATION=${BENCH_DURATION:-10}
PORT=${BENCH_PORT:-18004}
DB=house_price_volume
ensure_wrk
[ -x "$BIN" ] || cargo build --release --locked
URL=$(scratch_db $DB)
SERVER=
start_server() {
  RUST_LOG=warn MONITOR_INTERVAL_MS=0 SPOOL_DIR=bench/out/volume-spool taskset -c 0 "$BIN" serve \
    --database-url "$URL" --listen-addr "127.0.0.1:$PORT" &
  SERVER=$!
  wait_ready "$PORT"
}
stop_server() { kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true; }
trap stop_server EXIT

throughput() {  # $1: label
  taskset -c 1 wrk -t1 -c64 -d3s -s bench/predict.lua "http://127.0.0.1:$PORT/graphql" >/dev/null
  local out
  out=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency -s bench/predict.lua "http://127.0.0.1:$PORT/graphql")
  printf '%-34s %10s req/s   p99 %s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$out")"
}

start_server
echo "== logging throughput, GraphQL predictPrice durable @64, ${DURATION} s"
throughput "empty log"
stop_server

rows_now() { psql "$URL" -At -c "select count(*) from prediction_log"; }

# One million generated rows, in time order (as the service appends them): chunk $1 of $CHUNKS covers
# every $CHUNKS-th minute of the last 7 days (so every size covers the whole week, and an hour's rows
# lie in a few contiguous runs), shaped like the service's: 97 % ok,
# 2 % rejected, 1 % failed; 70 % gradient-boosting (20 features), 30 % baseline-linear (3);
# UUIDv7 ids carrying their created_at (so prediction(id:) prunes as for real rows).
generate_million() {
  psql "$URL" -q -v ON_ERROR_STOP=1 -c "copy (
    select (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 14, 3) || '-' || substr(r, 17, 4) || '-' || substr(r, 21, 12))::uuid,
           'bench-' || $1 || '-' || g, null, t, 'graphql', null, 'bench', s,
           case s when 'rejected' then 'BAD_USER_INPUT' when 'failed' then 'INTERNAL' end,
           case s when 'rejected' then 'input.bedrooms' end,
           case s when 'rejected' then 'bedrooms must be between 0 and 20' when 'failed' then 'internal error' end,
           sq, bed, bath, jsonb_build_object('squareFeet', sq, 'bedrooms', bed, 'bathrooms', bath),
           case when s = 'ok' then exp(11.0 + sq / 3000.0 + random() * 0.4) end,
           case when s <> 'rejected' or g % 2 = 0 then m end, case when s <> 'rejected' or g % 2 = 0 then '2.0.0' end,
           (60 + 400 * random() ^ 4)::int8, '{}'::text[],
           case when s = 'ok' and m = 'gradient-boosting' then jsonb_build_object('squareFeet', sq, 'bedrooms', bed, 'bathrooms', bath,
               'lotArea', round(4000 + random() * 12000), 'yearBuilt', 1900 + floor(random() * 110),
               'yearRemodeled', 1950 + floor(random() * 60), 'basementSqFt', round(random() * 2000),
               'basementBathrooms', floor(random() * 2), 'garageCars', floor(random() * 4),
               'garageArea', round(random() * 900), 'fireplaces', floor(random() * 3), 'kitchens', 1,
               'centralAir', case when random() < 0.93 then 1 else 0 end,
               'overallCondition', (array['Average','Above_Average','Good','Very_Good','Below_Average'])[1 + floor(random() * 5)::int],
               'neighborhood', (array['North_Ames','College_Creek','Old_Town','Edwards','Somerset','Gilbert'])[1 + floor(random() * 6)::int],
               'houseStyle', (array['One_Story','Two_Story','One_and_Half_Fin'])[1 + floor(random() * 3)::int],
               'buildingType', 'OneFam', 'heatingQuality', (array['Excellent','Typical','Good'])[1 + floor(random() * 3)::int],
               'foundation', (array['PConc','CBlock','BrkTil'])[1 + floor(random() * 3)::int], 'saleCondition', 'Normal')
             when s = 'ok' then jsonb_build_object('squareFeet', sq, 'bedrooms', bed, 'bathrooms', bath) end,
           '[]'::jsonb
      from generate_series(1, 1000000) g,
           lateral (select g / 1000000.0 * (10080.0 / $CHUNKS) as p) q,
           lateral (select now() - interval '7 days'
                             + (($1 - 1) + $CHUNKS * floor(q.p) + (q.p - floor(q.p))) * interval '1 minute' as t,
                           replace(gen_random_uuid()::text, '-', '') as r,
                           case when g % 100 < 97 then 'ok' when g % 100 < 99 then 'rejected' else 'failed' end as s,
                           case when g % 10 < 7 then 'gradient-boosting' else 'baseline-linear' end as m,
                           600 + random() * 2600 as sq, 1 + floor(random() * 4)::int as bed,
                           1 + floor(random() * 4) / 2 as bath) v,
           lateral (select lpad(to_hex((extract(epoch from v.t) * 1000)::int8), 12, '0') as h) i
    ) to stdout" | psql "$URL" -q -v ON_ERROR_STOP=1 -c "copy prediction_log (id, request_id, item_index, created_at, route,
        operation, client, status, error_code, error_field, error_message, square_feet, bedrooms, bathrooms, raw_input,
        price, model_name, model_version, latency_us, imputed_features, features, warnings) from stdin"
}

CHUNKS=$(tr ' ' '\n' <<<"$SIZES" | sort -n | tail -1)
psql "$URL" -q -v ON_ERROR_STOP=1 -c "select ensure_prediction_log_partition(((now() - d * interval '1 day') at time zone 'UTC')::date) from generate_series(0, 8) d" >/dev/null
filled=0
for size in $SIZES; do
  echo "== filling the log to $size M rows through COPY"
  start=$(date +%s)
  while [ "$filled" -lt "$size" ]; do
    filled=$((filled + 1))
    generate_million "$filled"
  done
  echo "   $(( $(date +%s) - start )) s; $(rows_now) rows"
  echo "== drift counters and outcomes for the generated rows (what the writer and recordOutcome keep)"
  psql "$URL" -q -v ON_ERROR_STOP=1 <<'SQL'
truncate drift_counts;
insert into drift_counts (hour, model_name, model_version, feature, bin, n)
select date_trunc('hour', l.created_at, 'UTC'), l.model_name, l.model_version, r.feature,
       case when r.feature = '_price' then width_bucket(l.price, r.edges)
            when r.kind = 'bins' then width_bucket((l.features ->> r.feature)::float8, r.edges)
            else array_position(r.labels, l.features ->> r.feature) - 1 end,
       count(*)
  from prediction_log l
  join model_references r on r.model_name = l.model_name and r.model_version = l.model_version
 where l.status = 'ok' and (r.feature = '_price' or l.features ? r.feature)
 group by 1, 2, 3, 4, 5;
-- A shadow model priced a tenth of gradient-boosting's answers (written by UPDATE, as the shadow
-- scorer does: the shadow rollups count updates).
update prediction_log set shadow_price = price * (0.9 + random() * 0.2), shadow_model_name = 'baseline-linear',
                          shadow_model_version = '2.0.0', shadow_scored_at = created_at
 where status = 'ok' and model_name = 'gradient-boosting' and request_id like '%0' and shadow_price is null;
-- 1 % of the predictions get a sale price (through the outcome trigger, as recordOutcome does).
insert into prediction_outcomes (prediction_id, prediction_created_at, actual_price)
select id, created_at, price * (0.8 + random() * 0.4) from prediction_log
 where status = 'ok' and request_id like '%00' and not exists (select 1 from prediction_outcomes o where o.prediction_id = prediction_log.id);
analyze;
SQL
  start_server
  echo "== reads at $(rows_now) rows (client wall time, 100 runs each)"
  python3 bench/volume_reads.py "http://127.0.0.1:$PORT" 100
  echo "== SQL views (psql, whole view, best of 5)"
  for view in v_predictions_hourly v_rejections_daily v_performance_daily v_drift_psi_daily v_shadow_comparison; do
    best=$(for _ in 1 2 3 4 5; do
      psql "$URL" -q -c '\timing on' -c "select count(*) from $view" | awk '/^Time/ {print $2}'
    done | sort -n | head -1)
    printf '%-24s %8s ms\n' "$view" "$best"
  done
  stop_server
done

start_server
echo "== logging throughput at $(rows_now) rows, GraphQL predictPrice durable @64, ${DURATION} s"
throughput "at $(rows_now) rows"
stop_server

echo "== sizes"
psql "$URL" -At -F ' ' <<'SQL'
select 'prediction_log', pg_size_pretty(sum(pg_total_relation_size(c.oid))), round(sum(pg_total_relation_size(c.oid)) / (select count(*) from prediction_log)) || ' bytes/row (with indexes)'
  from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'prediction_log'::regclass;
select relname, pg_size_pretty(pg_total_relation_size(oid)), (select reltuples::int8 from pg_class c2 where c2.oid = c.oid) || ' rows'
  from pg_class c where relname in ('traffic_hourly', 'histogram_hourly', 'accuracy_hourly', 'drift_counts', 'shadow_hourly', 'shadow_difference_hourly') order by 1;
SQL

echo "== dropping the oldest day as retention does (src/log/partitions.rs drop_day), under load"
day=$(psql "$URL" -At -c "select min(created_at)::date from prediction_log")
part=prediction_log_p$(date -d "$day" +%Y%m%d)
rows=$(psql "$URL" -At -c "select count(*) from $part")
start_server
taskset -c 1 wrk -t1 -c16 -d20s --latency -s bench/predict.lua "http://127.0.0.1:$PORT/graphql" >bench/out/volume-drop-wrk.txt &
WRK=$!
sleep 5
psql "$URL" -q -v ON_ERROR_STOP=1 <<SQL | awk '/^Time/ {print "   " $2 " ms"}'
\timing on
begin;
set local house_price.retention = 'on';
delete from prediction_outcomes where prediction_created_at >= '$day' and prediction_created_at < '$day'::date + 1;
commit;
alter table prediction_log detach partition $part concurrently;
drop table $part;
SQL
wait $WRK
echo "   (outcomes delete + commit, DETACH CONCURRENTLY, DROP) of $day, $rows rows; the load meanwhile:"
grep -E "Requests/sec|99%|Max" bench/out/volume-drop-wrk.txt | sed 's/^/   /'
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^prediction_log_rows_spooled_total" | sed 's/^/   /' || true
stop_server
