#!/usr/bin/env python3
"""Times every monitoring read, dashboard call and history filter of a running service.

    bench/volume_reads.py http://127.0.0.1:18004 [runs]

Each request is sent `runs` times (default 100) one after another over one keep-alive connection;
prints p50 / p99 / max in milliseconds (client-side wall time) and the rows or buckets returned.
Python standard library only.
"""
import datetime as dt
import http.client
import json
import math
import sys
import time
import urllib.parse

base = urllib.parse.urlparse(sys.argv[1])
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
conn = http.client.HTTPConnection(base.hostname, base.port, timeout=60)


def gql(query, variables=None):
    body = json.dumps({"query": query, "variables": variables or {}})
    conn.request("POST", "/graphql", body, {"content-type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    if answer.get("errors"):
        raise SystemExit(f"error in {query[:60]}: {answer['errors']}")
    return answer["data"]


now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
iso = lambda t: t.isoformat().replace("+00:00", "Z")
ago = lambda **kw: iso(now - dt.timedelta(**kw))
TRAFFIC = """query($model: String, $from: DateTime, $to: DateTime, $bucket: Bucket!) {
  traffic(model: $model, from: $from, to: $to, bucket: $bucket) { start requests ok rejected failed errors { code count } latencyP50Us latencyP99Us } }"""
PERF = """query($model: String!, $from: DateTime, $to: DateTime, $bucket: Bucket!) {
  performance(model: $model, from: $from, to: $to, bucket: $bucket) { start predictions labelled mae rmse mape meanError } }"""
FEATURE = "feature kind referenceSize sampleSize warnings psi jsDistance ksStatistic wassersteinNormalized status bins { label referenceShare liveShare }"
DRIFT = f"""query($model: String!, $from: DateTime, $to: DateTime) {{
  drift(model: $model, from: $from, to: $to) {{ predictions status features {{ {FEATURE} }} prediction {{ {FEATURE} }} }} }}"""
HISTORY_DASH = """query($model: String!, $from: DateTime, $to: DateTime) {
  driftHistory(model: $model, from: $from, to: $to) { day feature sampleSize psi status }
  driftReports(model: $model, from: $from, to: $to, first: 50) { id evaluatedAt status drifting } }"""
MODELS = "{ models { name version isDefault isShadow metrics { mae r2 } } }"
EVENTS = "{ modelEvents(first: 50) { id occurredAt event trigger models error } }"
SHADOW = """query($from: DateTime) { shadowComparison(from: $from, bucket: DAY) { start predictions meanDifference medianDifference correlation } }"""
PAGE = """query($filter: PredictionFilter, $after: String) {
  predictions(filter: $filter, first: 20, after: $after) { edges { node { id price status requestId createdAt } } pageInfo { endCursor } } }"""
ONE = "query($id: ID!) { prediction(id: $id) { id price createdAt } }"
GB = "gradient-boosting@2.0.0"

# Resume points and ids for the point lookups, from the data itself.
first = gql(PAGE)["predictions"]
some = first["edges"][-1]["node"]
deep = None
after = None
for _ in range(50):  # the 51st page: 1,000 rows deep
    after = gql(PAGE, {"after": after})["predictions"]["pageInfo"]["endCursor"]
deep = after
middle = gql(PAGE, {"filter": {"to": ago(days=3)}})["predictions"]["edges"][0]["node"]
hour_from, hour_to = now - dt.timedelta(days=2, hours=1), now - dt.timedelta(days=2)

cases = [
    ("dashboard: traffic 24 h by hour", TRAFFIC, {"from": ago(hours=24), "to": iso(now), "bucket": "HOUR"}),
    ("dashboard: traffic 7 d by hour", TRAFFIC, {"from": ago(days=7), "to": iso(now), "bucket": "HOUR"}),
    ("dashboard: traffic 30 d by day", TRAFFIC, {"from": ago(days=30), "to": iso(now), "bucket": "DAY"}),
    ("traffic of one model 7 d by hour", TRAFFIC, {"model": GB, "from": ago(days=7), "to": iso(now), "bucket": "HOUR"}),
    ("dashboard: performance 24 h by hour", PERF, {"model": GB, "from": ago(hours=24), "to": iso(now), "bucket": "HOUR"}),
    ("dashboard: performance 7 d by day", PERF, {"model": GB, "from": ago(days=7), "to": iso(now), "bucket": "DAY"}),
    ("dashboard: performance 30 d by day", PERF, {"model": GB, "from": ago(days=30), "to": iso(now), "bucket": "DAY"}),
    ("dashboard: drift 24 h", DRIFT, {"model": GB, "from": ago(hours=24), "to": iso(now)}),
    ("dashboard: drift 7 d", DRIFT, {"model": GB, "from": ago(days=7), "to": iso(now)}),
    ("dashboard: drift history + reports 30 d", HISTORY_DASH, {"model": GB, "from": ago(days=30), "to": iso(now)}),
    ("dashboard: models", MODELS, {}),
    ("dashboard: model events", EVENTS, {}),
    ("shadow comparison 7 d by day", SHADOW, {"from": ago(days=7)}),
    ("history: newest page", PAGE, {}),
    ("history: page 1,000 rows deep", PAGE, {"after": deep}),
    ("history: status REJECTED", PAGE, {"filter": {"status": "REJECTED"}}),
    ("history: status FAILED, 3 days back", PAGE, {"filter": {"status": "FAILED", "to": ago(days=3)}}),
    ("history: model name + version", PAGE, {"filter": {"modelName": "baseline-linear", "modelVersion": "2.0.0"}}),
    ("history: a model with no rows (none)", PAGE, {"filter": {"modelName": "ridge-log"}}),
    ("history: requestId with no rows (none)", PAGE, {"filter": {"requestId": "no-such-request"}}),
    ("history: from/to window 3 days back", PAGE, {"filter": {"from": ago(days=3, hours=1), "to": ago(days=3)}}),
    ("history: requestId", PAGE, {"filter": {"requestId": some["requestId"]}}),
    ("history: price > 10 M USD in 1 h (none)", PAGE, {"filter": {"minPrice": 1e7, "from": iso(hour_from), "to": iso(hour_to)}}),
    ("history: price band in 1 h", PAGE, {"filter": {"minPrice": 150000, "maxPrice": 160000, "from": iso(hour_from), "to": iso(hour_to)}}),
    ("prediction(id:), 3 days old", ONE, {"id": middle["id"]}),
]

print(f"{'request':44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for name, query, variables in cases:
    gql(query, variables)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        gql(query, variables)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p = lambda q: times[max(1, math.ceil(q * len(times))) - 1]  # nearest rank
    print(f"{name:44} {p(0.5):8.2f} {p(0.99):8.2f} {times[-1]:8.2f}", flush=True)
