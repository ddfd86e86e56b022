#!/usr/bin/env bash
# Drift benchmark: 1,000,000 logged predictions for one model version over the last 24 hours,
# then the time of the `drift` GraphQL query (and of the SQL view) over that window.
#
#   DATABASE_URL=... bench/drift.sh        (make bench-drift sets DATABASE_URL up)
#   BENCH_ROWS=1000000 bench/drift.sh
#
# The rows are synthetic but shaped like Ames traffic; their drift counters are built with the
# same binning the log writer uses (width_bucket over the card's reference edges), by one SQL
# statement that is also timed: that full scan is what the counters save each report.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

: "${DATABASE_URL:?set DATABASE_URL (make bench-drift does)}"
ROWS=${BENCH_ROWS:-1000000}
PORT=${BENCH_PORT:-18002}
RUNS=${BENCH_RUNS:-20}
DB=house_price_drift_bench
[ -x "$BIN" ] || cargo build --release --locked
URL=$(scratch_db $DB)
RUST_LOG=warn MONITOR_INTERVAL_MS=0 "$BIN" serve --database-url "$URL" --listen-addr "127.0.0.1:$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_ready "$PORT"

echo "== seeding $ROWS predictions of gradient-boosting@2.0.0 over the last 24 h"
time psql "$URL" -q -v ON_ERROR_STOP=1 -v rows="$ROWS" <<'SQL'
-- The daily partitions the rows fall in (the server makes them too, but maybe not yet).
select ensure_prediction_log_partition(((now() - d * interval '1 day') at time zone 'UTC')::date) from generate_series(0, 1) d;
insert into prediction_log (id, request_id, created_at, route, status, square_feet, bedrooms, bathrooms,
                            raw_input, price, model_name, model_version, latency_us, features)
select gen_random_uuid(), 'bench-' || g, now() - random() * interval '24 hours', 'graphql', 'ok',
       f.sq, f.bed, f.bath, '{}'::jsonb, exp(11.0 + f.sq / 3000.0 + random() * 0.4),
       'gradient-boosting', '2.0.0', 100,
       jsonb_build_object('squareFeet', f.sq, 'bedrooms', f.bed, 'bathrooms', f.bath,
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
from generate_series(1, :rows) g,
     lateral (select 600 + random() * 2600 as sq, 1 + floor(random() * 4)::int as bed, 1 + floor(random() * 4) / 2 as bath) f;
SQL

echo "== building the drift counters from the rows (a full scan: what each report would cost without them)"
time psql "$URL" -q -v ON_ERROR_STOP=1 <<'SQL'
insert into drift_counts (hour, model_name, model_version, feature, bin, n)
select date_trunc('hour', l.created_at), l.model_name, l.model_version, r.feature,
       case when r.feature = '_price' then width_bucket(l.price, r.edges)
            when r.kind = 'bins' then width_bucket((l.features ->> r.feature)::float8, r.edges)
            else array_position(r.labels, l.features ->> r.feature) - 1 end,
       count(*)
from prediction_log l
join model_references r on r.model_name = l.model_name and r.model_version = l.model_version
where l.status = 'ok' and (r.feature = '_price' or l.features ? r.feature)
group by 1, 2, 3, 4, 5;
analyze drift_counts;
SQL
psql "$URL" -At -c "select count(*) || ' logged rows, ' || (select count(*) from drift_counts) || ' counters' from prediction_log"

QUERY='{"query":"{ drift(model: \"gradient-boosting@2.0.0\") { predictions status features { feature psi ksStatistic wassersteinNormalized status } prediction { psi status } } }"}'
echo "== drift query over the last 24 h, $RUNS runs (seconds, curl time_total)"
for _ in $(seq 1 "$RUNS"); do
  curl -s -o /tmp/drift-bench.json -w '%{time_total}\n' "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' -d "$QUERY"
done | sort -n | awk '{a[NR]=$1} END {printf "min %.4f  median %.4f  max %.4f\n", a[1], a[int((NR+1)/2)], a[NR]}'
python3 -c "import json; r=json.load(open('/tmp/drift-bench.json'))['data']['drift']; print('predictions in report:', r['predictions'], 'status:', r['status'])"

echo "== SQL view v_drift_psi_daily (all days, all features)"
psql "$URL" -q -c '\timing on' -c "select count(*) from v_drift_psi_daily" | grep -E "Time|^ *[0-9]"

kill -TERM $SERVER && wait $SERVER || true
trap - EXIT
