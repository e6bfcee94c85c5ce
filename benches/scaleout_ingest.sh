#!/usr/bin/env bash
# Ingest throughput through the HTTP API (`strata upload --jobs 64` of the
# bench catalog, waiting for every model to be processed), one run at a
# time, REPEAT rounds of each set-up:
#
#   alone     one `strata serve` (SQLite, local blobs, jobs in-process)
#   1 worker  `serve --no-workers` + 1 `strata worker --jobs 2`
#   2 workers `serve --no-workers` + 2 `strata worker --jobs 1`
#
# The shared set-ups use PostgreSQL (scripts/test-services.sh) and s3s-fs
# (examples/s3_server.rs, SigV4 checked) on loopback. Everything, the
# uploading client included, shares this machine's cores, so the figures
# are the cost of the shared set-up on one machine, not a fleet's.
#
#   benches/scaleout_ingest.sh [FILES] [WORKDIR]      (REPEAT=2 by default)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
files="${1:-300}"
work="${2:-/tmp/strata-scaleout}"
repeat="${REPEAT:-2}"
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example s3_server)
strata="$root/target/release/strata"
mkdir -p "$work"
"$here/make_catalog.sh" "$files" "$work" "$strata"
eval "$("$root/scripts/test-services.sh" start)"
pg="$STRATA_TEST_POSTGRES"
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret-0123456789 AWS_REGION=us-east-1
s3_port=18194
export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
rm -rf "$work/s3"; mkdir -p "$work/s3/bench"
"$root/target/release/examples/s3_server" "$work/s3" "$s3_port" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$work/s3.log" 2>&1 &
pids=($!)
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "s3 on" "$work/s3.log" && break; sleep 0.1; done

# Starts `strata ARGS...` in the background, waits for its first line.
start() {
  local log="$1"; shift
  "$strata" "$@" >"$log" 2>"$log.err" &
  pids+=($!)
  for _ in $(seq 300); do [ -s "$log" ] && return; sleep 0.05; done
  echo "did not start: $*" >&2; cat "$log.err" >&2; exit 1
}

run() {
  local setup="$1" round="$2" workers="$3" jobs="$4"
  local dir="$work/run-$setup-$round"; rm -rf "$dir"; mkdir -p "$dir"
  local shared=() database=()
  if [ "$workers" -gt 0 ]; then
    local db="bench_${setup}_$round"
    psql -q "$pg" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
    database=(--database "${pg%/*}/$db")
    shared=("${database[@]}" --blobs "s3://bench/$setup-$round" --secrets "$dir")
  fi
  key=$("$strata" admin create-partner Bench --email b@example.com --data "$dir/a" --json "${database[@]}" \
        | sed 's/.*"api_key":"\([^"]*\)".*/\1/')
  local serve_flags=(); [ "$workers" -gt 0 ] && serve_flags=(--no-workers)
  start "$dir/serve.log" serve --listen 127.0.0.1:0 --data "$dir/a" "${shared[@]}" "${serve_flags[@]}" \
        --queue-per-partner 1000
  local base; base=$(grep -o 'http://[0-9.:]*' "$dir/serve.log" | head -1)
  for w in $(seq "$workers"); do
    start "$dir/w$w.log" worker --data "$dir/w$w" "${shared[@]}" --public-url "$base" --jobs "$jobs"
  done
  /usr/bin/time -f "%e" -o "$dir/time" \
    "$strata" upload "$work/catalog" --server "$base" --api-key "$key" --jobs "${UPLOAD_JOBS:-64}" --report "$dir/report.json" \
    >"$dir/upload.out" 2>&1 || true
  local secs; secs=$(cat "$dir/time")
  python3 - "$dir/report.json" "$setup" "$round" "$secs" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
secs = float(sys.argv[4])
print(f"{sys.argv[2]:<9} round {sys.argv[3]}: {s['total']} files ({s['processed']} processed, "
      f"{s['error']} error, {s['failed']} failed) in {secs:.1f} s = {s['total'] / secs:.1f} models/s")
PY
  for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
  pids=("${pids[0]}")
  sleep 0.5
}

for round in $(seq "$repeat"); do
  run alone "$round" 0 0
  run 1worker "$round" 1 2
  run 2workers "$round" 2 1
done
