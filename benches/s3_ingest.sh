#!/usr/bin/env bash
# `strata ingest --jobs 2` of the bench catalog (benches/make_catalog.sh)
# into local blobs and into an S3-compatible bucket (s3s-fs on loopback,
# examples/s3_server.rs, SigV4 checked), alternating, REPEAT rounds each,
# one run at a time. The bucket's server shares the 2 cores with the
# ingest: the figure is Strata's cost of a bucket plus that server's.
#
#   benches/s3_ingest.sh [FILES] [WORKDIR]      (REPEAT=3 by default)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
files="${1:-1000}"
work="${2:-/tmp/strata-s3-ingest}"
repeat="${REPEAT:-3}"
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example s3_server)
strata="$root/target/release/strata"
mkdir -p "$work"
"$here/make_catalog.sh" "$files" "$work" "$strata"
rm -rf "$work"/data-* "$work/s3"; mkdir -p "$work/s3/bench"; sync
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret-0123456789 AWS_REGION=us-east-1
s3_port=18193
export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
"$root/target/release/examples/s3_server" "$work/s3" "$s3_port" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$work/s3.log" 2>&1 &
s3_pid=$!
trap 'kill "$s3_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "s3 on" "$work/s3.log" && break; sleep 0.1; done
for round in $(seq "$repeat"); do
  for where in local bucket; do
    flags=(); [ "$where" = bucket ] && flags=(--blobs "s3://bench/round$round")
    /usr/bin/time -f "%e s wall, %M KB peak RSS" -o "$work/time" \
      "$strata" ingest --data "$work/data-$where-$round" --jobs 2 "${flags[@]}" "$work/catalog" >"$work/out" 2>&1
    printf '%-6s round %d: %s; %s\n' "$where" "$round" "$(grep -o '[0-9]* models in .*/s)' "$work/out")" "$(cat "$work/time")"
  done
done
