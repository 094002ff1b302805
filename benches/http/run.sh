#!/usr/bin/env bash
# HTTP figures for jobq serve on loopback: list (count=100) and count with 32
# keep-alive connections, and durable pushes with 32 concurrent connections,
# against a store of N jobs (default 100000). Needs wrk (apt-get install wrk)
# and a release build (cargo build --release). Every run is bounded (DURATION).
set -euo pipefail
N=${N:-100000}
DURATION=${DURATION:-20s}
PORT=${PORT:-7099}
BIN=${BIN:-target/release/jobq}
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 benches/http/gen_jobs.py "$N" 53 > "$WORK/jobs.jsonl"
"$BIN" import --data "$WORK/data" "$WORK/jobs.jsonl"
"$BIN" serve --data "$WORK/data" --listen "127.0.0.1:$PORT" --api-key bench=BENCHKEY 2> "$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do grep -q "jobq serving" "$WORK/server.log" && break; sleep 0.1; done
AUTH="Authorization: Basic $(printf 'BENCHKEY:' | base64)"
URL="http://127.0.0.1:$PORT"
echo "== machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for target in "/jobq/53/list?count=100" "/jobq/53/count" "/jobq/53/count?has_tag=tag1&has_tag=tag2&lacks_tag=tag3&spider=spider1" "/jobq/53/list?count=100&state=finished&has_tag=tag7&start=2000"; do
  echo "== GET $target"
  wrk -t2 -c32 -d"$DURATION" --latency -H "$AUTH" "$URL$target" | grep -E "Latency|Requests/sec|50%|99%|Non-2xx|Socket errors"
done
echo "== POST /jobq/54/push (one job per request, durable)"
wrk -t2 -c32 -d"$DURATION" --latency -H "$AUTH" -s benches/http/push.lua "$URL" | grep -E "Latency|Requests/sec|50%|99%|Non-2xx|Socket errors"
echo "== jobs stored by the push run: $(curl -s -H "$AUTH" "$URL/jobq/54/count?state=pending")"
echo "== machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
