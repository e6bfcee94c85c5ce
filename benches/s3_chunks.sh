#!/usr/bin/env bash
# Chunk serving with blobs in the data directory against blobs in an
# S3-compatible bucket (issue 19): 200 printers (wrk -t2 -c200) walking the
# chunks of one stream, for SECONDS each, one server at a time:
#   1. local blobs, chunk cache off (every chunk read from the file);
#   2. blobs in the bucket, streamed through the server, cache off (every
#      chunk a GET to the object store);
#   3. blobs in the bucket, cache on (the default: 256 MiB);
#   4. blobs in the bucket with --presign-chunks-secs: the 307 answers
#      (token check + signing), then the printers' GETs of the presigned
#      URLs straight from the object store.
# The object store is s3s-fs on loopback (examples/s3_server.rs, SigV4
# checked), on the same 2 cores as the server and wrk: it measures Strata's
# overhead per request against a local file, not a real bucket's latency.
#
#   benches/s3_chunks.sh [SECONDS] [WORKDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
secs="${1:-10}"
work="${2:-/tmp/strata-s3-bench}"
datasets="${STRATA_DATASETS:-$root/../shared/datasets}"
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example s3_server)
strata="$root/target/release/strata"
rm -rf "$work"; mkdir -p "$work/s3/bench"
port=18191; s3_port=18192; base="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret-0123456789 AWS_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true

"$root/target/release/examples/s3_server" "$work/s3" "$s3_port" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$work/s3.log" 2>&1 &
s3_pid=$!
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  kill "$s3_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q "s3 on" "$work/s3.log" && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
model_file="$datasets/3DBenchy.3mf"
if [ ! -f "$model_file" ]; then
  model_file="$work/torus.stl"; "$strata" generate torus "$model_file" --triangles 400000
fi

# Starts a server with FLAGS on a fresh data directory, uploads the model,
# and sets $token and $chunks.
start() { # NAME FLAGS...
  local name="$1"; shift
  local data="$work/data-$name"
  "$strata" serve --listen "127.0.0.1:$port" --data "$data" --requests-per-key-per-minute 0 --requests-per-ip-per-minute 0 "$@" >"$work/serve-$name.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
  local partner user pass key loc up
  partner="$("$strata" admin create-partner Bench --email bench@example.com --data "$data" --json)"
  user="$(echo "$partner" | json '["username"]')"; pass="$(echo "$partner" | json '["password"]')"
  key="$(echo "$partner" | json '["api_key"]')"
  curl -sf -c "$work/jar" -H 'content-type: application/json' -d "{\"username\":\"$user\",\"password\":\"$pass\"}" "$base/sessions" >/dev/null
  read -r loc up < <(curl -sf -b "$work/jar" -D - -o /dev/null -H 'content-type: application/json' \
    -d '{"name":"bench","callback":{"url":"","method":"POST"}}' "$base/models" |
    tr -d '\r' | awk 'tolower($1)=="location:"{l=$2} tolower($1)=="x-upload-location:"{u=$2} END{print l, u}')
  curl -sf -X PUT -H 'content-type: application/octet-stream' --data-binary "@$model_file" "$up" >/dev/null
  for _ in $(seq 600); do
    [ "$(curl -sf -b "$work/jar" "$loc" | json '["status"]')" != processing ] && break; sleep 0.2
  done
  token="$(curl -sf -H 'content-type: application/json' \
    -d "{\"api_key\":\"$key\",\"receiver_email\":\"p@example.com\",\"model\":\"$loc\"}" "$base/tokens" | json '["token"]')"
  chunks="$(curl -sf "$base/streams/$token/manifest" | json '["chunks"].__len__()')"
}
stop() { kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=""; }

walk() { # the chunks of $token in turn, per connection
  cat >"$work/chunks.lua" <<EOF
local n = $chunks
local i = 0
request = function()
  i = (i + 1) % n
  return wrk.format("GET", "/streams/$token/chunks/" .. i)
end
EOF
  echo "$work/chunks.lua"
}
measure() { # LABEL URL [SCRIPT]
  local args=(-t2 -c200 -d"${secs}s" --latency)
  [ -n "${3:-}" ] && args+=(-s "$3")
  wrk "${args[@]}" "$2" >"$work/wrk.out" 2>&1
  printf '%-46s %10s req/s  %9s/s  p99 %8s  %s\n' "$1" \
    "$(awk '/Requests\/sec/{print $2}' "$work/wrk.out")" \
    "$(awk '/Transfer\/sec/{print $2}' "$work/wrk.out")" \
    "$(awk '/ 99%/{print $2}' "$work/wrk.out")" \
    "$(grep -E 'Non-2xx|Socket errors' "$work/wrk.out" | tr -s ' ' | tr '\n' ' ' || true)"
}

echo "model $(basename "$model_file"); wrk -t2 -c200, ${secs}s each, one server at a time"
start local --chunk-cache-mib 0
echo "stream: $chunks chunks"
measure "local blobs, no chunk cache" "$base/streams/$token/chunks/0" "$(walk)"
stop
start s3 --blobs s3://bench/strata --chunk-cache-mib 0
measure "bucket, streamed, no chunk cache" "$base/streams/$token/chunks/0" "$(walk)"
stop
start s3cache --blobs s3://bench/cached
measure "bucket, streamed, chunk cache 256 MiB" "$base/streams/$token/chunks/0" "$(walk)"
stop
start s3redirect --blobs s3://bench/redirect --presign-chunks-secs 300
measure "bucket, 307 to a presigned URL (answers only)" "$base/streams/$token/chunks/0" "$(walk)"
presigned="$(curl -s -o /dev/null -w '%{redirect_url}' "$base/streams/$token/chunks/0")"
stop
measure "the presigned GET from the object store" "$presigned"
