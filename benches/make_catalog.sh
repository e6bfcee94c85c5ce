#!/usr/bin/env bash
# Builds the bench catalog once (never committed): the dataset models plus
# FILES generated tori of sizes cycling 2k..60k triangles (~1 GB for 1000),
# each with a distinct header, so no input duplicates another.
#
#   benches/make_catalog.sh FILES WORKDIR STRATA_BINARY
#
# The catalog is WORKDIR/catalog; a marker file keeps it for the next run.
set -euo pipefail
files="$1"; work="$2"; strata="$3"
root="$(cd "$(dirname "$0")/.." && pwd)"
datasets="${STRATA_DATASETS:-$root/../shared/datasets}"
cat="$work/catalog"
if [ ! -f "$cat/.complete-$files" ]; then
  rm -rf "$cat"; mkdir -p "$cat/generated"
  cp -r "$datasets" "$cat/dataset" 2>/dev/null || true
  sizes=(2000 5000 10000 20000 30000 40000 60000)
  for i in $(seq 1 "$files"); do
    n=${sizes[$((i % ${#sizes[@]}))]}
    f="$cat/generated/torus_$i.stl"
    "$strata" generate torus "$f" --triangles "$n"
    printf 'bench torus %06d' "$i" | dd of="$f" bs=1 seek=0 conv=notrunc status=none
  done
  touch "$cat/.complete-$files"
fi
