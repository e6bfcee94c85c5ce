#!/usr/bin/env bash
# The bulk upload benchmark: `strata upload` of the ingest bench's catalog
# (the dataset models plus generated tori, FILES of them, ~1 GB for 1000)
# to a `strata serve` on loopback with a fresh data directory, then the
# same again (everything already there: the cost of the skip check).
# Prints files/s and MB/s from the upload report, and the server's peak RSS.
#
#   benches/upload_bench.sh [FILES] [WORKDIR]
#
# Upload and processing share this machine's 2 cores with the server, so
# the figure is end to end: hashing on the client, the HTTP upload, the
# server's processing of every model, and the client following each one
# to `processed`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
files="${1:-1000}"
work="${2:-/tmp/strata-ingest-bench}"
jobs="${JOBS:-4}"
(cd "$root" && cargo build --release --quiet)
strata="$root/target/release/strata"
cat="$work/catalog"
"$here/make_catalog.sh" "$files" "$work" "$strata"
data="$work/upload-data-$$"
rm -rf "$data"
key=$("$strata" admin create-partner "Bench Shop" --email bench@example.com --data "$data" --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
log="$work/upload-serve-$$.log"
/usr/bin/time -v -o "$work/upload-serve-$$.time" "$strata" serve --listen 127.0.0.1:0 --data "$data" \
  --queue-per-partner 100000 > "$work/upload-serve-$$.out" 2> "$log" &
server=$!
for _ in $(seq 1 100); do grep -q listening "$work/upload-serve-$$.out" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[^ ]*' "$work/upload-serve-$$.out" | head -1)
summary() {
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["summary"]
mb = r["bytes_uploaded"] / 1e6
print(f"{sys.argv[2]}: {r['total']} files ({mb:.0f} MB sent) in {r['wall_seconds']:.2f} s: "
      f"{r['total'] / r['wall_seconds']:.1f} files/s, {mb / r['wall_seconds']:.1f} MB/s; "
      f"uploaded {r['uploaded']}, already there {r['already_there']}, processed {r['processed']}, "
      f"error {r['error']}, failed {r['failed']}")
PY
}
STRATA_API_KEY="$key" "$strata" upload "$cat" --server "$base" --jobs "$jobs" --report "$work/upload-1.json" > /dev/null
summary "$work/upload-1.json" "first upload (jobs $jobs)"
STRATA_API_KEY="$key" "$strata" upload "$cat" --server "$base" --jobs "$jobs" --report "$work/upload-2.json" > /dev/null
summary "$work/upload-2.json" "second run (all there)"
# GNU time ignores SIGINT while it waits: the signal goes to the server.
pkill -INT -P "$server" || true; wait "$server" || true
echo "server peak RSS: $(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$work/upload-serve-$$.time") KB"
rm -rf "$data" "$log" "$work/upload-serve-$$.out" "$work/upload-serve-$$.time"
