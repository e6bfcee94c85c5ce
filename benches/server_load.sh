#!/usr/bin/env bash
# The server's load benchmark, in one go (release build, loopback):
#   1. 200 concurrent printers pulling the chunks of one stream from
#      `strata serve`, then the same chunk files served by nginx (Debian's
#      package) as the physical reference: requests/s and bytes/s, and the
#      ratio (goal: at least 0.8x nginx);
#   2. the upload of a generated ~200 MB binary STL over loopback, three
#      times (goal: at least 300 MB/s);
#   3. the status endpoints' requests/s: GET /tokens/{token} (the partner
#      polling, 200 and 304), GET /prints/{token} (the widget polling) and
#      POST /prints/{token}/status (printers reporting, one row update each);
#   4. chunk and status requests from 50 legitimate clients while the
#      connection attack of scripts/attack.sh (silent sockets, stalled
#      HTTP/2 prefaces, dripping headers and bodies) runs beside them
#      (goal: no errors, p99 under 50 ms).
# The per-key and per-address rate limits are turned off: one wrk client
# stands in for many printers and partners here.
#
#   benches/server_load.sh [SECONDS] [WORKDIR]
#
# Needs wrk, nginx and curl (apt-get install wrk nginx curl). Both servers
# and wrk share the machine's cores; the figures are for comparison on the
# same machine, not absolute.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
secs="${1:-10}"
work="${2:-/tmp/strata-server-bench}"
datasets="${STRATA_DATASETS:-$root/../shared/datasets}"
for tool in wrk nginx curl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
(cd "$root" && cargo build --release --quiet)
strata="$root/target/release/strata"
rm -rf "$work"; mkdir -p "$work"
port=18181; nginx_port=18182; base="http://127.0.0.1:$port"

"$strata" serve --listen "127.0.0.1:$port" --data "$work/data" --upload-limit-mib 1024 --requests-per-key-per-minute 0 --requests-per-ip-per-minute 0 >"$work/serve.log" 2>&1 &
serve_pid=$!
nginx_pid=""
cleanup() {
  kill "$serve_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
partner="$("$strata" admin create-partner Bench --email bench@example.com --data "$work/data" --json)"
user="$(echo "$partner" | json '["username"]')"
pass="$(echo "$partner" | json '["password"]')"
key="$(echo "$partner" | json '["api_key"]')"
curl -sf -c "$work/jar" -H 'content-type: application/json' \
  -d "{\"username\":\"$user\",\"password\":\"$pass\"}" "$base/sessions" >/dev/null

# Creates a model; prints "LOCATION UPLOAD_URL".
new_model() {
  curl -sf -b "$work/jar" -D - -o /dev/null -H 'content-type: application/json' \
    -d "{\"name\":\"$1\",\"callback\":{\"url\":\"\",\"method\":\"POST\"}}" "$base/models" |
    tr -d '\r' | awk 'tolower($1)=="location:"{l=$2} tolower($1)=="x-upload-location:"{u=$2} END{print l, u}'
}
wait_processed() {
  for _ in $(seq 600); do
    s="$(curl -sf -b "$work/jar" "$1" | json '["status"]')"
    [ "$s" != processing ] && { echo "$s"; return; }
    sleep 0.2
  done
  echo timeout
}

# The stream: 3DBenchy from the shared dataset (240 layers, several
# chunks), or a generated torus when the dataset is not beside us.
model_file="$datasets/3DBenchy.3mf"
if [ ! -f "$model_file" ]; then
  model_file="$work/torus.stl"; "$strata" generate torus "$model_file" --triangles 400000
fi
read -r loc up < <(new_model stream)
curl -sf -X PUT -H 'content-type: application/octet-stream' --data-binary "@$model_file" "$up" >/dev/null
echo "model $(basename "$model_file"): $(wait_processed "$loc")"
token="$(curl -sf -H 'content-type: application/json' \
  -d "{\"api_key\":\"$key\",\"receiver_email\":\"p@example.com\",\"model\":\"$loc\",\"print_value\":\"1.00\"}" \
  "$base/tokens" | json '["token"]')"
curl -sf "$base/streams/$token/manifest" >"$work/manifest.json"
chunks="$(json '["chunks"].__len__()' <"$work/manifest.json")"
bytes="$(python3 -c "import json; m=json.load(open('$work/manifest.json')); print(sum(c['bytes'] for c in m['chunks']))")"
echo "stream: $chunks chunks, $bytes bytes"

# nginx serves the very same bytes under the same paths.
mkdir -p "$work/www/streams/$token/chunks" "$work/nginx"
for i in $(seq 0 $((chunks - 1))); do
  curl -sf "$base/streams/$token/chunks/$i" -o "$work/www/streams/$token/chunks/$i"
done
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  etag on;
  default_type application/zstd;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/www;
  }
}
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
nginx_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$nginx_port/streams/$token/chunks/0" -o /dev/null && break; sleep 0.1; done

# Each wrk connection is a printer walking the chunks in turn.
cat >"$work/chunks.lua" <<EOF
local n = $chunks
local i = 0
request = function()
  i = (i + 1) % n
  return wrk.format("GET", "/streams/$token/chunks/" .. i)
end
EOF
run_wrk() { # URL [SCRIPT] [HEADER] -> "req/s MB/s"
  local args=(-t2 -c200 -d"${secs}s" --latency)
  [ -n "${2:-}" ] && args+=(-s "$2")
  [ -n "${3:-}" ] && args+=(-H "$3")
  wrk "${args[@]}" "$1" >"$work/wrk.out" 2>&1
  local rps mb
  rps="$(awk '/Requests\/sec/{print $2}' "$work/wrk.out")"
  mb="$(awk '/Transfer\/sec/{v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) sub("MB","",v); else if (v ~ /KB/) {sub("KB","",v); v/=1024}; print v}' "$work/wrk.out")"
  local p99; p99="$(awk '/ 99%/{print $2}' "$work/wrk.out")"
  local errs; errs="$(grep -E 'Non-2xx|Socket errors' "$work/wrk.out" | tr '\n' ' ' || true)"
  echo "$rps $mb $p99 ${errs:-no errors}"
}
echo
echo "== 200 printers pulling chunks (${secs}s each, wrk -t2 -c200) =="
read -r s_rps s_mb s_p99 s_err < <(run_wrk "$base/streams/$token/chunks/0" "$work/chunks.lua")
echo "strata: $s_rps req/s, $s_mb MB/s, p99 $s_p99 ($s_err)"
read -r n_rps n_mb n_p99 n_err < <(run_wrk "http://127.0.0.1:$nginx_port/streams/$token/chunks/0" "$work/chunks.lua")
echo "nginx:  $n_rps req/s, $n_mb MB/s, p99 $n_p99 ($n_err)"
python3 -c "print(f'strata / nginx: {$s_rps/$n_rps:.2f}x requests/s, {$s_mb/$n_mb:.2f}x bytes/s (goal >= 0.80x)')"

echo
echo "== status endpoints (${secs}s each, wrk -t2 -c200) =="
curl -sf -X POST -H 'content-type: application/json' -d '{"printing_job_status":"WARMING_UP"}' "$base/prints/$token/status" >/dev/null
etag="$(curl -sf -D - -o /dev/null "$base/tokens/$token?api_key=$key" | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')"
read -r rps _ p99 err < <(run_wrk "$base/tokens/$token?api_key=$key")
echo "GET /tokens/{token} (partner, 200):         $rps req/s, p99 $p99 ($err)"
read -r rps _ p99 err < <(run_wrk "$base/tokens/$token?api_key=$key" "" "If-None-Match: $etag")
echo "GET /tokens/{token} (partner, 304):         $rps req/s, p99 $p99 ($err)"
read -r rps _ p99 err < <(run_wrk "$base/prints/$token")
echo "GET /prints/{token} (widget, 200):          $rps req/s, p99 $p99 ($err)"

# Printers reporting progress: 400 tokens of the model, each warming up,
# each request a PRINTING report for the next token in turn (one row
# update per request; two reports racing for one token would be a 409).
for i in $(seq 400); do
  t="$(curl -sf -H 'content-type: application/json' \
    -d "{\"api_key\":\"$key\",\"model\":\"$loc\",\"print_value\":\"1.00\"}" "$base/tokens" | json '["token"]')"
  curl -sf -X POST -H 'content-type: application/json' -d '{"printing_job_status":"WARMING_UP"}' \
    "$base/prints/$t/status" >/dev/null
  echo "\"$t\","
done >"$work/tokens.part"
{
  echo "local tokens = {"; cat "$work/tokens.part"; echo "}"
  cat <<'LUA'
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"printing_job_status":"PRINTING","printing_percentage":42.5,"minutes_left":12}'
request = function()
  i = i + 1
  return wrk.format(nil, "/prints/" .. tokens[(i % #tokens) + 1] .. "/status")
end
LUA
} >"$work/status.lua"
read -r rps _ p99 err < <(run_wrk "$base/prints/$token/status" "$work/status.lua")
echo "POST /prints/{token}/status (printers):    $rps req/s, p99 $p99 ($err)"

echo
echo "== legitimate clients while scripts/attack.sh's connection attack runs (${secs}s each, wrk -t1 -c50) =="
# The attacker keeps, for the whole section, 300 silent sockets, 50 stalled
# HTTP/2 prefaces, 50 requests whose headers drip a byte a second and 20
# JSON bodies dripping on /sessions, opening a new one whenever the server
# closes one (its first-byte, header and body deadlines). Goal: no errors
# and p99 under 50 ms for chunk and status requests.
python3 - "$port" "$work/attack.stop" >"$work/attack.log" 2>&1 <<'PY' &
import socket, sys, threading, time, os
port, stop = int(sys.argv[1]), sys.argv[2]
opened = [0]
def keep(kind):
    while not os.path.exists(stop):
        try:
            # From 127.0.0.2: an attacker's own address, with its own
            # per-address limits, as it would be on the internet.
            s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
            opened[0] += 1
            if kind == "preface":
                s.sendall(b"PRI * HTTP/2.0\r\n")
            elif kind == "headers":
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            elif kind == "body":
                s.sendall(b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            s.settimeout(1)
            while not os.path.exists(stop):
                try:
                    if not s.recv(4096):
                        break
                except socket.timeout:
                    if kind in ("headers", "body"):
                        s.sendall(b" " if kind == "body" else b"X")
            s.close()
        except OSError:
            pass
        time.sleep(0.2)  # bounded: at most five new connections a second per thread
for kind, n in (("silent", 300), ("preface", 50), ("headers", 50), ("body", 20)):
    for _ in range(n):
        threading.Thread(target=keep, args=(kind,), daemon=True).start()
while not os.path.exists(stop):
    time.sleep(0.5)
print(f"attacker opened {opened[0]} connections")
PY
attacker=$!
sleep 3
under() { # LABEL URL [SCRIPT]
  local args=(-t1 -c50 -d"${secs}s" --latency)
  [ -n "${3:-}" ] && args+=(-s "$3")
  wrk "${args[@]}" "$2" >"$work/wrk.out" 2>&1
  local rps p99 errs
  rps="$(awk '/Requests\/sec/{print $2}' "$work/wrk.out")"
  p99="$(awk '/ 99%/{print $2}' "$work/wrk.out")"
  errs="$(grep -E 'Non-2xx|Socket errors' "$work/wrk.out" | tr '\n' ' ' || true)"
  echo "$1 $rps req/s, p99 $p99 (${errs:-no errors})"
}
under "chunks (printers):                " "$base/streams/$token/chunks/0" "$work/chunks.lua"
under "GET /prints/{token} (widget):     " "$base/prints/$token"
under "POST /prints/{token}/status:      " "$base/prints/$token/status" "$work/status.lua"
touch "$work/attack.stop"; wait "$attacker" || true
cat "$work/attack.log"
echo "server log lines for refused connections: $(grep -c 'connection refused' "$work/serve.log" || true)"

echo
echo "== upload of a ~200 MB STL over loopback (3 runs) =="
big="$work/big.stl"
"$strata" generate torus "$big" --triangles 4000000
size="$(stat -c %s "$big")"
echo "file: $((size / 1000000)) MB"
for run in 1 2 3; do
  read -r loc up < <(new_model "big $run")
  t="$(curl -sf -o /dev/null -w '%{time_total}' -X PUT -H 'content-type: application/octet-stream' \
       -T "$big" "$up")"
  python3 -c "print(f'run $run: {$size/1e6/$t:.0f} MB/s ({$t:.2f} s)')"
  wait_processed "$loc" >/dev/null
done
