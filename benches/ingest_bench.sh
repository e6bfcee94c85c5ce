#!/usr/bin/env bash
# The catalog benchmark: builds a synthetic catalog at bench time (never
# committed): the dataset models plus generated tori of various sizes,
# at least 1,000 files and about 1 GB, then ingests it with 1 and 2 jobs
# into fresh stores and reports models/s, MB/s, peak RSS and the speed-up.
#
#   benches/ingest_bench.sh [FILES] [WORKDIR]
#   SWEEP="250 500 1000 2000" benches/ingest_bench.sh   # RSS as the catalog grows
#
# FILES defaults to 1000 (sizes cycle 2k..60k triangles, ~1 GB in all).
# Peak RSS comes from /usr/bin/time (GNU time). Each run prints its stage
# times (`--timings`): wall time against the sum of the core's stages.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
files="${1:-1000}"
work="${2:-/tmp/strata-ingest-bench}"
datasets="${STRATA_DATASETS:-$root/../shared/datasets}"
(cd "$root" && cargo build --release --quiet)
if [ -n "${SWEEP:-}" ]; then
  for n in $SWEEP; do SWEEP= "$0" "$n" "$work-$n" | grep -E "catalog|jobs 2"; done
  exit 0
fi
strata="$root/target/release/strata"
cat="$work/catalog"
if [ ! -f "$cat/.complete-$files" ]; then
  rm -rf "$cat"; mkdir -p "$cat/generated"
  cp -r "$datasets" "$cat/dataset" 2>/dev/null || true
  sizes=(2000 5000 10000 20000 30000 40000 60000)
  for i in $(seq 1 "$files"); do
    n=${sizes[$((i % ${#sizes[@]}))]}
    f="$cat/generated/torus_$i.stl"
    "$strata" generate torus "$f" --triangles "$n"
    # A distinct header per file: distinct bytes, so no input is a
    # duplicate of another (the work per file is real).
    printf 'bench torus %06d' "$i" | dd of="$f" bs=1 seek=0 conv=notrunc status=none
  done
  touch "$cat/.complete-$files"
fi
echo "catalog: $(find "$cat" -type f \( -iname '*.stl' -o -iname '*.obj' -o -iname '*.3mf' \) | wc -l) files, $(du -sm "$cat" | cut -f1) MB"
for jobs in 1 2; do
  rm -rf "$work/data-$jobs"
  /usr/bin/time -f "jobs $jobs: wall %e s, peak RSS %M KiB" \
    "$strata" ingest "$cat" --data "$work/data-$jobs" --jobs "$jobs" --report "$work/report-$jobs.json" --timings 2>&1 \
    | grep -v '^failed:'
done
